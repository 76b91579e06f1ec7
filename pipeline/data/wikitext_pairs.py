"""WikiText with the seed's whitespace words: a split's vocabulary and unmasked NSP pairs, cached on disk
(an .npz keyed by the text and the settings; no pickle), so a second run starts at once."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import UserError
from pipeline.core.vocab import Vocab
from pipeline.data.pretraining_examples import Pairs, make_pairs
from pipeline.data.wikitext import read_sentences

log = logging.getLogger(__name__)
CACHE_FORMAT = 3


@dataclass
class WikiTextExamples:
    """A WikiText split as the seed's whitespace vocabulary and its unmasked NSP pairs."""

    vocab: Vocab
    pairs: Pairs


def _cache_key(corpus: bytes, settings: dict) -> str:
    digest = hashlib.sha256(corpus)
    digest.update(json.dumps({**settings, "format": CACHE_FORMAT}, sort_keys=True).encode())
    return digest.hexdigest()


def _load_cache(path: Path, key: str, max_len: int) -> WikiTextExamples | None:
    """The cached arrays if the file is intact and was made from the same corpus and settings."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {name: f[name] for name in f.files}
        if str(arrays["key"]) != key:
            return None
        n = len(arrays["valid_length"])
        shapes_ok = (arrays["input_ids"].shape == (n, max_len) and arrays["token_type_ids"].shape == (n, max_len)
                     and arrays["nsp_labels"].shape == (n,))
        if not shapes_ok:
            return None
        pairs = Pairs(arrays["input_ids"], arrays["token_type_ids"], arrays["valid_length"], arrays["nsp_labels"])
        return WikiTextExamples(Vocab(arrays["vocab"].tolist()), pairs)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        log.warning("ignoring damaged example cache %s (%s); rebuilding it", path, err)
        return None


def _save_cache(path: Path, key: str, examples: WikiTextExamples) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            p = examples.pairs
            np.savez(f, key=np.array(key), vocab=np.array(examples.vocab.idx_to_token),
                     input_ids=p.input_ids, token_type_ids=p.token_type_ids, valid_length=p.valid_length,
                     nsp_labels=p.nsp_labels)
        os.replace(tmp, path)
    except OSError as err:
        log.warning("could not write the example cache %s (%s); continuing without it", path, err)


def wikitext_examples(corpus_path: Path, max_len: int, min_freq: int, seed: int, cache_dir: Path | None,
                      vocab: Vocab | None = None) -> WikiTextExamples:
    """Text -> vocabulary and unmasked NSP pairs; served from `cache_dir` when already made.

    Pass the training `vocab` to make a held-out split's examples with the same ids.
    """
    try:
        corpus = corpus_path.read_bytes()
    except OSError as err:
        raise UserError(f"cannot read {corpus_path}: {err.strerror}") from None
    settings = {"max_len": max_len, "min_freq": min_freq, "seed": seed,
                "vocab": None if vocab is None else vocab.digest()}
    key = _cache_key(corpus, settings)
    cache_file = None if cache_dir is None else cache_dir / f"{corpus_path.stem}-{key[:16]}.npz"
    if cache_file is not None:
        cached = _load_cache(cache_file, key, max_len)
        if cached is not None:
            return cached
    sentences = read_sentences(corpus_path)
    vocab = vocab or Vocab.from_counts(sentences.counts, min_freq)
    ids = vocab.ids_of(sentences.forms)[sentences.token_ids]
    pairs = make_pairs(ids, sentences, vocab, max_len, np.random.default_rng([seed, 0]))
    examples = WikiTextExamples(vocab, pairs)
    if cache_file is not None:
        _save_cache(cache_file, key, examples)
    return examples
