"""Where the training and held-out data come from, and how they become a tokenizer and batches:
WikiText-2 with the seed's whitespace words (cached arrays, `wikitext_cache.wikitext_examples`), WikiText-2
with WordPiece, your own corpus (prepared into memory maps by `prepare.py`, into the cache or ahead of
time); for the contrastive stage, documents (`contrastive.ContrastiveData`); for fine-tuning, labelled files
(`classify.ClassifyData`); held-out retrieval sets.

Documents of sentences -> token ids through the one tokenizer -> `examples.make_pairs`, the same
vectorised pair building as WikiText's.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.classify import ClassifyData, tokenized
from pipeline.config import Config
from pipeline.contrastive import ContrastiveData, document_units, read_pairs
from pipeline.core.errors import UserError
from pipeline.core.export_format import VOCAB
from pipeline.core.tokenizer import TOKENIZER_FILE, Tokenizer, WhitespaceTokenizer, learn_tokenizer, load_tokenizer
from pipeline.core.vocab import Vocab
from pipeline.data.batches import MappedPretrainingData, PretrainingData
from pipeline.data.labelled import LabelSpace, read_labelled
from pipeline.data.prepared_corpus import FORMAT as PREPARE_FORMAT
from pipeline.data.prepared_corpus import MappedCorpus
from pipeline.data.pretraining_examples import Pairs, encode_documents, make_pairs
from pipeline.data.tagged import read_tagged
from pipeline.data.text_files import find_files, read_documents, text_files
from pipeline.data.wikitext import (
    ARCHIVE_URL,
    SAMPLE_ARCHIVE,
    cache_home,
    find_split,
    official_or_sample,
    read_sentences,
)
from pipeline.data.wikitext_pairs import wikitext_examples
from pipeline.prepare import prepare_corpus
from pipeline.retrieval import RetrievalSet, corpus_articles, retrieval_set, wikitext_articles
from pipeline.tag import TagData, tag_training_data

log = logging.getLogger(__name__)
Documents = list[list[str]]  # documents, each a list of sentences


def corpus_documents(paths: Sequence[str]) -> Documents:
    """Every document of the --corpus files; empty files are skipped with a count."""
    return list(read_documents(text_files(paths)))


def wikitext_documents(path: Path) -> Documents:
    """WikiText paragraphs as documents, sentences as written (case kept: the tokenizer decides)."""
    s = read_sentences(path)
    words = np.array(s.words, dtype=object)
    sentences = [" ".join(words[s.token_ids[a:b]]) for a, b in zip(s.sentence_starts[:-1], s.sentence_starts[1:])]
    return [sentences[a:b] for a, b in zip(s.document_starts[:-1], s.document_starts[1:])]


def documents_to_pairs(documents: Documents, tokenizer: Tokenizer, max_len: int, seed: int, what: str) -> Pairs:
    """NSP pairs (unmasked) of `documents`, drawn within documents as for WikiText."""
    ids, index = encode_documents(documents, tokenizer)
    if not (np.diff(index.document_starts) >= 2).any():
        raise UserError(f"{what} has no document with two sentences: next-sentence pairs need them "
                        f"(separate documents by blank lines, sentences by . ! ? or 。！？)")
    return make_pairs(ids, index, tokenizer.vocab, max_len, np.random.default_rng([seed, 0]))


def data_without_network(cfg: Config) -> tuple[dict[str, str], str | None]:
    """With no data given, WikiText-2 is downloaded; where it cannot be (no internet), train on the sample
    shipped with the package instead: its validation split, evaluated on its test split. Returns the data
    settings that say where the corpus is, and the line that says the sample is used (None otherwise)."""
    d = cfg.data
    if d.data_dir or d.corpus or d.prepared or (d.labels and not (d.eval_split or d.eval_corpus)):
        return {}, None  # fine-tuning reads its labelled files only
    folder, is_sample = official_or_sample(Path(d.cache_dir) if d.cache_dir else None)
    if not is_sample:
        return {"data.data_dir": str(folder)}, None
    split = "valid" if d.split == "train" else d.split
    eval_split = d.eval_split if d.eval_split not in (None, "train") else "test" if split != "test" else "valid"
    notice = (f"no internet (cannot download {ARCHIVE_URL}): training on the WikiText-2 sample shipped with this "
              f"package (split {split}, evaluated on {eval_split}; CC BY-SA 3.0, {SAMPLE_ARCHIVE.parent.name}/"
              f"README.md). For the full corpus, run once with internet or pass --data-dir DIR holding "
              f"wiki.train.tokens")
    return {"data.data_dir": str(SAMPLE_ARCHIVE), "data.split": split, "data.eval_split": eval_split}, notice


def example_cache(cfg: Config) -> Path:
    return Path(cfg.data.cache_dir) if cfg.data.cache_dir else cache_home() / "examples"


def training_data(cfg: Config, output: Path, resume: bool, given: Tokenizer | None = None
                  ) -> tuple[Tokenizer, PretrainingData]:
    """The tokenizer and the training batches: a prepared folder (memory-mapped), your own corpus
    (prepared into the cache first, the same way), WikiText-2 with WordPiece, or WikiText-2 with the
    seed's whitespace words (cached arrays). A `given` tokenizer (a published BERT's) is used as it is."""
    d = cfg.data
    mapped = None
    if d.prepared or d.corpus:
        folder = Path(d.prepared) if d.prepared else corpus_in_cache(cfg, given)
        mapped = MappedCorpus.open(folder)
        if given is not None and mapped.tokenizer.vocab.idx_to_token != given.vocab.idx_to_token:
            raise UserError(f"{folder} was prepared with another tokenizer than --init-from's: prepare it with "
                            f"that tokenizer (train.py --corpus does) or pass --corpus")
        if mapped.index["max_len"] > d.max_len:
            raise UserError(f"{folder} was prepared for data.max_len={mapped.index['max_len']}, longer than "
                            f"data.max_len={d.max_len}: prepare it again with -o data.max_len={d.max_len}")
        tokenizer = mapped.tokenizer
        if not d.dynamic_masking:
            raise UserError("data.dynamic_masking=false (the seed's fixed masks) needs in-memory data: a prepared "
                            "corpus draws new masks for every batch")
    elif d.tokenizer == "whitespace":
        examples = wikitext_examples(find_split(d.data_dir, d.split), d.max_len, d.min_freq, d.seed, example_cache(cfg),
                                     vocab=given.vocab if given is not None else None)
        tokenizer, pairs = WhitespaceTokenizer(examples.vocab), examples.pairs
    else:
        documents = wikitext_documents(find_split(d.data_dir, d.split))
        if given is not None:
            tokenizer = given
        elif resume and (output / TOKENIZER_FILE).is_file():  # WordPiece training is not deterministic
            tokenizer = load_tokenizer(output, Vocab.load(output / VOCAB))
        else:
            sentences = [s for doc in documents for s in doc]
            tokenizer = learn_tokenizer(sentences, d.tokenizer, d.vocab_size, d.lowercase, d.min_freq, len(sentences))
        pairs = documents_to_pairs(documents, tokenizer, d.max_len, d.seed, "the corpus")
    saved_vocab = output / VOCAB
    if resume and saved_vocab.exists() and Vocab.load(saved_vocab).idx_to_token != tokenizer.vocab.idx_to_token:
        raise UserError(f"the corpus gives another vocabulary than {saved_vocab}: resume with the same data")
    continuation = np.array([t.startswith("##") for t in tokenizer.vocab.idx_to_token]) if d.whole_word_mask else None
    if mapped is not None:
        return tokenizer, MappedPretrainingData(mapped, d.max_len, d.mask_prob, d.seed, continuation, d.mask_replace)
    return tokenizer, PretrainingData(pairs, tokenizer.vocab, d.max_len, d.mask_prob, d.dynamic_masking,
                                      d.seed, continuation=continuation, mask_replace=d.mask_replace)


def contrastive_documents(cfg: Config) -> Documents:
    """The documents contrastive positives come from: your corpus's (separated by blank lines), or
    WikiText's paragraphs, as for pretraining (crops from whole articles did worse: 60 articles are too
    few to draw hard batches from; README, contrastive recipe)."""
    d = cfg.data
    if d.prepared:
        raise UserError("train.objective=contrastive reads text: pass --corpus (or a WikiText split), not --prepared")
    if d.corpus:
        return corpus_documents(d.corpus)
    return wikitext_documents(find_split(d.data_dir, d.split))


def contrastive_training_data(cfg: Config, output: Path, resume: bool, given: Tokenizer | None = None
                              ) -> tuple[Tokenizer, ContrastiveData]:
    """The tokenizer (a given one, the run's own on a resume, else one learnt from the text) and the
    contrastive batches of train.positives."""
    d, t = cfg.data, cfg.train
    documents = None if t.positives == "pairs" else contrastive_documents(cfg)
    if given is not None:
        tokenizer = given
    elif resume and (output / VOCAB).is_file():
        tokenizer = load_tokenizer(output, Vocab.load(output / VOCAB))
    else:
        sentences = ([s for doc in documents for s in doc] if documents is not None else
                     Path(d.pairs).read_text(encoding="utf-8").replace("\t", "\n").splitlines())
        tokenizer = learn_tokenizer(sentences, d.tokenizer, d.vocab_size, d.lowercase, d.min_freq, len(sentences))
    if documents is None:
        units, fields = read_pairs(Path(d.pairs), tokenizer)
    else:
        units, fields = document_units(documents, tokenizer, t.positives), 2
    v = tokenizer.vocab
    return tokenizer, ContrastiveData(units, t.positives, d.max_len, v.cls, v.sep, v.pad, d.seed, fields)


def fine_tuning_tokenizer(cfg: Config, output: Path, resume: bool, given: Tokenizer | None,
                          sentences: list[str]) -> Tokenizer:
    """A given tokenizer (--init-from's), the run's own on a resume, else one learnt from the labelled
    `sentences` (the fine-tuning-from-random-weights baseline)."""
    d = cfg.data
    if given is not None:
        return given
    if resume and (output / VOCAB).is_file():
        return load_tokenizer(output, Vocab.load(output / VOCAB))
    return learn_tokenizer(sentences, d.tokenizer, d.vocab_size, d.lowercase, d.min_freq, len(sentences))


def classify_training_data(cfg: Config, output: Path, resume: bool, given: Tokenizer | None = None
                           ) -> tuple[Tokenizer, ClassifyData]:
    """The tokenizer (`fine_tuning_tokenizer`) and the labelled batches of data.labels."""
    d = cfg.data
    train = read_labelled(d.labels)
    tokenizer = fine_tuning_tokenizer(cfg, output, resume, given,
                                      [s for text in train.texts for s in ([text] if isinstance(text, str) else text)])
    space = LabelSpace(tuple(cfg.model.labels), cfg.model.problem_type)
    targets = np.asarray(space.targets(train), dtype=np.float32 if space.regression else np.int64)
    return tokenizer, ClassifyData(tokenized(tokenizer, train, d.max_len), targets, tokenizer, d.seed)


def tagging_training_data(cfg: Config, output: Path, resume: bool, given: Tokenizer | None = None
                          ) -> tuple[Tokenizer, TagData]:
    """The tokenizer (`fine_tuning_tokenizer`) and the windows of data.labels' sentences with their tags."""
    d = cfg.data
    train = read_tagged(d.labels)
    tokenizer = fine_tuning_tokenizer(cfg, output, resume, given, [" ".join(words) for words in train.words])
    return tokenizer, tag_training_data(tokenizer, train, list(cfg.model.labels), d.max_len, d.seed)


def held_out_retrieval(cfg: Config) -> RetrievalSet | None:
    """The same-document retrieval set of data.eval_corpus or data.eval_split; None without held-out text,
    or (said in a log line) when it has too few documents of long paragraphs to measure retrieval."""
    d = cfg.data
    if not (d.eval_corpus or d.eval_split):
        return None
    try:
        if d.eval_corpus:
            return retrieval_set(corpus_articles(d.eval_corpus))
        return retrieval_set(wikitext_articles(find_split(d.data_dir, d.eval_split)))
    except UserError as err:
        log.info("same-document retrieval not measured: %s", err)
        return None


def corpus_in_cache(cfg: Config, tokenizer: Tokenizer | None = None) -> Path:
    """--corpus: prepare.py's preparation into the cache (with `tokenizer` when one is given, else a learnt
    one), keyed by the files (path, size, time), the settings it depends on and the given tokenizer's
    vocabulary; an unchanged corpus is prepared once."""
    d = cfg.data
    files = find_files(d.corpus).files
    given = None if tokenizer is None else tokenizer.vocab.digest()
    key = {"files": [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files],
           "settings": [d.tokenizer, d.vocab_size, d.tokenizer_sample_mb, d.lowercase, d.min_freq, d.max_len, d.seed,
                        PREPARE_FORMAT], "tokenizer": given}
    folder = example_cache(cfg) / f"corpus-{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]}"
    if not (folder / "index.json").is_file():
        prepare_corpus(d.corpus, cfg, folder, tokenizer)
    return folder


def prepared_pairs(folder: Path, tokenizer: Tokenizer, max_len: int) -> Pairs:
    """Every NSP pair of a prepared folder, which must hold `tokenizer`'s vocabulary."""
    mapped = MappedCorpus.open(folder)
    if mapped.tokenizer.vocab.idx_to_token != tokenizer.vocab.idx_to_token:
        raise UserError(f"{folder} was prepared with another tokenizer than the model's: prepare the text again "
                        f"with the model's tokenizer, or pass it with --corpus")
    if mapped.index["max_len"] > max_len:
        raise UserError(f"{folder} was prepared for data.max_len={mapped.index['max_len']}, over the model's {max_len}")
    return mapped.take(np.arange(len(mapped)), max_len)


def held_out_pairs(cfg: Config, tokenizer: Tokenizer) -> Pairs | None:
    """The held-out pairs of data.eval_corpus or data.eval_split, tokenized like the training text."""
    d = cfg.data
    if d.eval_corpus:
        return documents_to_pairs(corpus_documents(d.eval_corpus), tokenizer, d.max_len, d.seed, "--eval-corpus")
    if not d.eval_split:
        return None
    path = find_split(d.data_dir, d.eval_split)
    if d.tokenizer == "whitespace" and not (d.corpus or d.prepared):
        return wikitext_examples(path, d.max_len, d.min_freq, d.seed, example_cache(cfg), vocab=tokenizer.vocab).pairs
    return documents_to_pairs(wikitext_documents(path), tokenizer, d.max_len, d.seed, str(path))
