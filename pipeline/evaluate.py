"""Held-out figures that a degenerate model cannot fake, each next to the baseline it must beat.

    python pipeline/evaluate.py --output-dir output --split test
    python pipeline/evaluate.py --output-dir finetuned --labels test.tsv --predictions predictions.tsv

MLM accuracy over all masked targets and over the known ones (target not `<unk>`, `<unk>` never
predicted), each with the accuracy of always answering the most frequent target of that set; perplexity;
NSP accuracy with the majority-class baseline; and two figures about the encodings themselves: the mean
pairwise cosine of the token encodings within a held-out sentence (1.0 = every token gets the same
vector) and the seed's "crane" test (the same word in two contexts; 1.0 = context is ignored).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Callable

if __name__ == "__main__" and not __package__:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import numpy as np

from pipeline.core.export_format import POOLINGS, VOCAB, input_names
from pipeline.core.tokenizer import Tokenizer, load_tokenizer, pad_batch, tokenize, word_position
from pipeline.core.vocab import Vocab
from pipeline.data.batches import eval_batches
from pipeline.data.pretraining_examples import Pairs
from pipeline.retrieval import EmbedFn, RetrievalSet, retrieval_figures

# (input ids, token_type_ids, valid lengths, [B, P] positions) -> (MLM logits [B, P, V], NSP logits [B, 2])
PretrainingFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
# (input ids, token_type_ids, valid lengths) -> encodings [B, L, H]
EncoderFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

CRANE_TEXTS = ("a crane is flying", ("a crane driver came", "he just left"))  # the seed's two contexts
COSINE_SENTENCES = 512  # held-out pairs whose token encodings are compared
EVAL_MASK_PROB = 0.15  # held-out MLM figures mask 15% whatever the training rate (Wettig et al. 2022)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """In numpy: Paddle 3.3's CPU log_softmax takes seconds on [256, 10, vocab] (measured 6 s)."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def mlm_nsp_figures(pretraining: PretrainingFn, pairs: Pairs, vocab: Vocab, max_len: int,
                    batch_size: int = 256, mask_prob: float = 0.15, seed: int = 0) -> dict[str, float]:
    """MLM and NSP figures over every held-out pair once, with fixed masks, and their baselines."""
    unk, vocab_size = vocab.unk, len(vocab)
    correct = correct_known = nll = nsp_correct = 0.0
    target_counts = np.zeros(vocab_size, dtype=np.int64)
    for b in eval_batches(pairs, vocab, max_len, batch_size, mask_prob, seed):
        mlm_logits, nsp_logits = pretraining(b["input_ids"], b["token_type_ids"], b["valid_length"], b["pred_positions"])
        real = b["mlm_weights"] > 0
        labels = b["mlm_labels"][real]
        log_probs = log_softmax(np.asarray(mlm_logits, dtype=np.float32)[real])
        nll -= float(log_probs[np.arange(len(labels)), labels].sum())
        correct += float((log_probs.argmax(-1) == labels).sum())
        log_probs[:, unk] = -np.inf  # the known-target figure never lets the model answer <unk>
        correct_known += float(((log_probs.argmax(-1) == labels) & (labels != unk)).sum())
        target_counts += np.bincount(labels, minlength=vocab_size)
        nsp_correct += float((np.asarray(nsp_logits).argmax(-1) == b["nsp_labels"]).sum())
    total = int(target_counts.sum())
    known = target_counts.copy()
    known[unk] = 0
    positives = float(pairs.nsp_labels.mean())
    return {
        "mlm_accuracy": correct / total,
        "mlm_unigram_baseline": float(target_counts.max() / total),
        "mlm_accuracy_known": correct_known / max(int(known.sum()), 1),
        "mlm_unigram_baseline_known": float(known.max() / max(int(known.sum()), 1)),
        "mlm_unk_share": float(target_counts[unk] / total),
        "mlm_perplexity": math.exp(nll / total),
        "mlm_targets": total,
        "nsp_accuracy": nsp_correct / len(pairs),
        "nsp_majority_baseline": max(positives, 1.0 - positives),
        "pairs": len(pairs),
    }


def mean_token_cosine(encodings: np.ndarray, valid_length: np.ndarray) -> float:
    """Mean over rows of the mean pairwise cosine between the row's token encodings (<cls>, <sep> and
    padding left out): 1.0 when every token of a sentence gets the same vector."""
    per_row = []
    for row, length in zip(encodings, valid_length):
        vectors = row[1:int(length) - 1]  # drop <cls> and the final <sep>
        if len(vectors) < 2:
            continue
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)
        similarity = unit @ unit.T
        n = len(unit)
        per_row.append((similarity.sum() - np.trace(similarity)) / (n * (n - 1)))
    return float(np.mean(per_row))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))


def crane_cosine(encoder: EncoderFn, tokenizer: Tokenizer, max_len: int, word: str = "crane") -> float | None:
    """Cosine of `word`'s encodings in the seed's two contexts ("a crane is flying" and the pair
    "a crane driver came" / "he just left"); with sub-words, the word's first piece. None when the
    vocabulary does not know the word (a corpus in another language): the figure would mean nothing."""
    if tokenizer.vocab[tokenizer.tokens(word)[0]] == tokenizer.vocab.unk:
        return None
    items = [tokenize(tokenizer, text, max_len) for text in CRANE_TEXTS]
    arrays = pad_batch(tokenizer.vocab, items)
    encodings = encoder(*(arrays[name] for name in input_names()))
    return cosine(*(encodings[row, word_position(tokenizer, tokens, word)] for row, (tokens, _) in enumerate(items)))


def encoding_figures(encoder: EncoderFn, pairs: Pairs, tokenizer: Tokenizer, max_len: int,
                     sentences: int = COSINE_SENTENCES) -> dict[str, float | None]:
    """`encoding_mean_cosine` over the first `sentences` held-out pairs (unmasked) and `crane_cosine`."""
    rows = slice(0, min(sentences, len(pairs)))
    lens = pairs.valid_length[rows].astype(np.int64)
    width = int(lens.max())
    encodings = encoder(pairs.input_ids[rows, :width].astype(np.int64),
                        pairs.token_type_ids[rows, :width].astype(np.int64), lens)
    return {"encoding_mean_cosine": mean_token_cosine(np.asarray(encodings), lens),
            "crane_cosine": crane_cosine(encoder, tokenizer, max_len)}


def sentence_embedder(encoder: EncoderFn, tokenizer: Tokenizer, max_len: int, pooling: str,
                      token_weights: np.ndarray | None = None, batch_size: int = 128) -> EmbedFn:
    """texts -> [N, H] pooled vectors (pipeline.core.pooling.pool: <cls>'s, or the mean, max or weighted mean over
    real tokens, `token_weights` per vocabulary id), texts cut at max_len."""
    from pipeline.core.pooling import pool

    def embed(texts: list[str]) -> np.ndarray:
        items = [tokenize(tokenizer, text, max_len, truncate=True) for text in texts]
        order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
        out: list[np.ndarray | None] = [None] * len(items)
        for lo in range(0, len(order), batch_size):
            chunk = order[lo:lo + batch_size]
            arrays = pad_batch(tokenizer.vocab, [items[i] for i in chunk])
            encodings = encoder(*(arrays[name] for name in input_names()))
            for row, i in enumerate(chunk):
                ids = arrays["input_ids"][row, :len(items[i][0])]
                weights = token_weights[ids] if token_weights is not None else None
                out[i] = pool(encodings[row, :len(ids)], pooling, weights)
        return np.asarray(out, dtype=np.float32)
    return embed


def retrieval_figures_of(model, cfg, tokenizer: Tokenizer, retrieval: RetrievalSet) -> dict[str, dict[str, float]]:
    """Same-document retrieval of `model` (a BertForPretraining, in eval mode), next to tf-idf's and to the
    same architecture's with random weights (initialised as training initialises it)."""
    import paddle

    from pipeline.model import BertForPretraining

    was_training = model.training
    model.eval()
    paddle.seed(cfg.train.seed)
    twin = BertForPretraining(cfg.model)
    twin.eval()
    try:
        embed, random_weights = (
            sentence_embedder(paddle_functions(m)[1], tokenizer, cfg.data.max_len, cfg.model.pooling,
                              m.token_weights.numpy() if m.token_weights is not None else None) for m in (model, twin))
        return retrieval_figures(embed, retrieval, {"random weights": random_weights})
    finally:
        if was_training:
            model.train()


def paddle_functions(model) -> tuple[PretrainingFn, EncoderFn]:
    """numpy-in, numpy-out views of a BertForPretraining for the figures above (eval mode, no grad)."""
    import paddle

    def pretraining(ids, token_type_ids, lens, positions):
        with paddle.no_grad():
            mlm, nsp = model(*(paddle.to_tensor(a) for a in (ids, token_type_ids, lens, positions)))
        return mlm.astype("float32").numpy(), nsp.numpy()

    def encoder(ids, token_type_ids, lens):
        with paddle.no_grad():
            return model.encoder(*(paddle.to_tensor(a) for a in (ids, token_type_ids, lens))).numpy()

    return pretraining, encoder


def evaluate(model, pairs: Pairs, tokenizer: Tokenizer, max_len: int, batch_size: int = 256,
             seed: int = 0) -> dict[str, float]:
    """Every held-out figure for `model` (a BertForPretraining), run in eval mode, with 15% of the tokens
    masked (80/10/10) whatever the training's rate, so that recipes compare."""
    was_training = model.training
    model.eval()
    try:
        pretraining, encoder = paddle_functions(model)
        metrics = mlm_nsp_figures(pretraining, pairs, tokenizer.vocab, max_len, batch_size, EVAL_MASK_PROB, seed)
        metrics.update(encoding_figures(encoder, pairs, tokenizer, max_len))
    finally:
        if was_training:
            model.train()
    return metrics


def format_metrics(metrics: dict[str, float]) -> str:
    """The held-out figures as three lines, each next to what a degenerate model would score."""
    m = metrics
    return "\n".join([
        f"held-out MLM accuracy {m['mlm_accuracy']:.3f} (unigram baseline {m['mlm_unigram_baseline']:.3f}), "
        f"on known words {m['mlm_accuracy_known']:.3f} (baseline {m['mlm_unigram_baseline_known']:.3f}), "
        f"perplexity {m['mlm_perplexity']:.1f}",
        f"held-out NSP accuracy {m['nsp_accuracy']:.3f} (majority baseline {m['nsp_majority_baseline']:.3f}) "
        f"over {m['pairs']} pairs",
        f"encodings: mean token cosine {m['encoding_mean_cosine']:.3f}, 'crane' in two contexts "
        + ("n/a (not in the vocabulary)" if m["crane_cosine"] is None else f"{m['crane_cosine']:.3f}")
        + " (1.0 = collapsed)",
    ])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Evaluate a pretraining checkpoint (or an export) on held-out text, tokenized by its own "
                    "tokenizer (as training's --eval-split/--eval-corpus): a WikiText split, your own files, or "
                    "a prepared folder. Prints the figures next to their baselines, then them as JSON: masked LM "
                    "and NSP (checkpoints), and same-document retrieval next to tf-idf and random weights.")
    parser.add_argument("--output-dir", default="output", help="training output folder (default: output)")
    parser.add_argument("--checkpoint", help="checkpoint folder (default: the newest in --output-dir)")
    parser.add_argument("--export", metavar="DIR",
                        help="evaluate an inference export (export/save.py, --from-hf too) instead: retrieval "
                             "figures with its own pooling and normalisation")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--split", help="WikiText split to evaluate: train, valid or test (default: test)")
    source.add_argument("--corpus", action="append", metavar="PATH",
                        help="your own held-out text: files, folders, globs (repeatable); documents are separated "
                             "by blank lines, their lines are paragraphs")
    source.add_argument("--prepared", metavar="DIR",
                        help="a folder made by pipeline/prepare.py with the same tokenizer (MLM figures only)")
    parser.add_argument("--data-dir", help="with --split: folder or zip with wiki.*.tokens (default: the "
                                           "checkpoint's data.data_dir, else download WikiText-2)")
    parser.add_argument("--pooling", choices=[p for p in POOLINGS if p != "weighted"],
                        help="how a checkpoint's token vectors become a sentence vector for retrieval (default: its "
                             "model.pooling)")
    source.add_argument("--labels", metavar="FILE",
                        help="a fine-tuned classifier's labelled file (TSV/CSV/JSON Lines, as data.labels) or a "
                             "tagger's tagged one (CoNLL, JSON Lines): its figures next to their baselines (a "
                             "checkpoint: its best by default)")
    parser.add_argument("--predictions", metavar="FILE",
                        help="with --labels: also write index<TAB>label<TAB>score per example (run_glue's predict "
                             "file; a tagger: CoNLL columns word, true tag, predicted tag)")
    parser.add_argument("--batch-size", type=int, default=256, help="pairs per forward pass (default: 256)")
    return parser


def classifier_figures(logits_of: Callable[[dict], np.ndarray], tokenizer: Tokenizer, max_len: int, labels: list[str],
                       problem_type: str, labelled: str, training: str | None, predictions: str | None,
                       batch_size: int) -> dict:
    """A fine-tuned classifier on a labelled file: its figures, next to the majority class (or a constant) and
    tf-idf trained on its training file where that file is known (else the evaluated file's own majority)."""
    from pipeline.classify import (
        bag_of_words_figures,
        format_figures,
        predict_logits,
        task_figures,
        tokenized,
        write_predictions,
    )
    from pipeline.classify import predictions as predicted
    from pipeline.data.labelled import LabelSpace, check_dev, read_labelled

    space = LabelSpace(tuple(labels), problem_type)
    data = read_labelled(labelled)
    targets = np.asarray(space.targets(data))
    train = read_labelled(training) if training and Path(training).is_file() else None
    if train is not None:
        check_dev(train, data)
    train_targets = np.asarray(space.targets(train)) if train is not None else targets
    logits = predict_logits(logits_of, tokenizer.vocab, tokenized(tokenizer, data, max_len), batch_size)
    figures = task_figures(targets, predicted(logits, space), space, train_targets)
    if train is not None:
        figures.update(bag_of_words_figures(train, train_targets, data, targets, space))
        print(format_figures(figures, space, len(data)).replace("dev ", "", 1))
    else:
        print(f"{len(data)} examples: " + ", ".join(f"{k} {v:.3f}" for k, v in figures.items()) +
              " (the baselines from this file's own labels: the training file is not known)")
    if predictions:
        write_predictions(Path(predictions), logits, space)
    return figures


def export_retrieval(folder: Path, retrieval: RetrievalSet) -> dict[str, dict[str, float]]:
    """An export's retrieval figures (its program through paddle.jit.load, its tokenizer, its manifest's
    pooling and longest input), next to tf-idf's and to its architecture's with random weights."""
    import paddle

    from pipeline.config import config_from_dict
    from pipeline.core.export_format import ENCODER, MANIFEST, TOKEN_WEIGHTS
    from pipeline.model import BertForPretraining

    manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    tokenizer = load_tokenizer(folder, Vocab.load(folder / VOCAB))
    pooling, max_len = (manifest.get("embedding") or {"pooling": "cls"})["pooling"], int(manifest["max_len"])
    program = paddle.jit.load(str(folder / ENCODER))
    program.eval()

    def exported(ids, token_type_ids, lens):
        with paddle.no_grad():
            return program(*(paddle.to_tensor(a) for a in (ids, token_type_ids, lens))).numpy()

    paddle.seed(0)
    twin = BertForPretraining(config_from_dict({"model": manifest["model"]}).model)
    twin.eval()
    weights = np.load(folder / TOKEN_WEIGHTS, allow_pickle=False) if pooling == "weighted" else None
    twin_weights = twin.token_weights.numpy() if twin.token_weights is not None else None
    embed, random_weights = (sentence_embedder(fn, tokenizer, max_len, pooling, w)
                             for fn, w in ((exported, weights), (paddle_functions(twin)[1], twin_weights)))
    return retrieval_figures(embed, retrieval, {"random weights": random_weights})


def main(argv: list[str] | None = None) -> int:
    from pipeline.core.runtime import setup_process_for_paddle

    setup_process_for_paddle()
    from pipeline import checkpoint
    from pipeline.config import with_settings
    from pipeline.core.errors import UserError
    from pipeline.data.sources import held_out_pairs, prepared_pairs
    from pipeline.data.wikitext import find_split
    from pipeline.model import BertForPretraining
    from pipeline.retrieval import corpus_articles, format_retrieval, retrieval_set, wikitext_articles

    args = build_parser().parse_args(argv)
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")

    def held_out_documents(data_dir: str | None) -> RetrievalSet | None:
        """The retrieval set of the held-out text; None (said in a line) where it cannot be measured."""
        if args.prepared:
            return None
        try:
            if args.corpus:
                return retrieval_set(corpus_articles(args.corpus))
            return retrieval_set(wikitext_articles(find_split(args.data_dir or data_dir, args.split or "test")))
        except UserError as err:
            if args.export:
                raise
            print(f"same-document retrieval not measured: {err}")
            return None

    if args.predictions and not args.labels:
        raise UserError("--predictions goes with --labels")
    if args.labels:
        return evaluate_classifier(args)
    if args.export:
        retrieval = held_out_documents(None)
        if retrieval is None:
            raise UserError("--export is evaluated by retrieval, which needs text with documents: --split or --corpus")
        folder = Path(args.export)
        if not (folder / "manifest.json").is_file():
            raise UserError(f"--export {folder}: no manifest.json there (make an export with python export/save.py)")
        metrics = {"retrieval": export_retrieval(folder, retrieval)}
        pooling = (json.loads((folder / "manifest.json").read_text()).get("embedding") or {"pooling": "cls"})["pooling"]
        print(format_retrieval(metrics["retrieval"], retrieval, pooling))
        print(json.dumps(metrics))
        return 0
    output = Path(args.output_dir)
    path = Path(args.checkpoint) if args.checkpoint else checkpoint.latest(output)
    if path is None:
        raise UserError(f"no checkpoint in {output / 'checkpoints'}; train first or pass --checkpoint")
    ckpt = checkpoint.load(path)
    run_folder = path.parent.parent
    tokenizer = load_tokenizer(run_folder, Vocab.load(run_folder / VOCAB))
    run = ckpt.config
    cfg = with_settings(run, {  # the held-out text asked for, in place of the run's own
        "data.eval_corpus": args.corpus,
        "data.eval_split": None if args.corpus or args.prepared else (args.split or "test"),
        "data.data_dir": args.data_dir or run.data.data_dir, "model.pooling": args.pooling or run.model.pooling})
    d = cfg.data
    pairs = prepared_pairs(Path(args.prepared), tokenizer, d.max_len) if args.prepared else held_out_pairs(cfg, tokenizer)
    model = BertForPretraining(cfg.model)
    checkpoint.apply_model_state(model, ckpt.model_state, path)
    metrics = evaluate(model, pairs, tokenizer, d.max_len, args.batch_size)
    print(format_metrics(metrics))
    retrieval = held_out_documents(d.data_dir)
    if retrieval is not None:
        metrics["retrieval"] = retrieval_figures_of(model, cfg, tokenizer, retrieval)
        print(format_retrieval(metrics["retrieval"], retrieval, cfg.model.pooling))
    print(json.dumps(metrics))
    return 0


def tagger_figures(logits_of: Callable[[dict], np.ndarray], tokenizer: Tokenizer, max_len: int, tags: list[str],
                   tagged: str, training: str | None, predictions: str | None, batch_size: int) -> dict:
    """A tagger on a tagged file: entity-level figures per type next to every-word-O and, where the training
    file is known, its most frequent tag per word."""
    from pipeline.data.tagged import check_tags, read_tagged
    from pipeline.tag import baseline_tags, entity_figures, format_tag_figures, predict_word_tags, write_tag_predictions

    data = read_tagged(tagged)
    check_tags(data, tags)
    predicted = predict_word_tags(logits_of, tokenizer, data, tags, max_len, batch_size)
    figures = entity_figures(data.tags, predicted)
    train = read_tagged(training) if training and Path(training).is_file() else None
    guesses = baseline_tags(train, data) if train is not None else {"all_o": baseline_tags(data, data)["all_o"]}
    figures["baselines"] = {name: {k: v for k, v in entity_figures(data.tags, guess).items() if k != "per_type"}
                            for name, guess in guesses.items()}
    if train is not None:
        print(format_tag_figures(figures, len(data)).replace("dev ", "", 1))
    else:
        print(f"{len(data)} sentences: entity F1 {figures['f1']:.3f} (every word O 0.000; the training file is not "
              f"known, so no most-frequent-tag baseline)")
    if predictions:
        write_tag_predictions(Path(predictions), data, predicted)
    return figures


def evaluate_classifier(args: argparse.Namespace) -> int:
    """--labels: a fine-tuned checkpoint (its best by default) or an export with a head, on a labelled (or, for a
    tagger, tagged) file."""
    import paddle

    from pipeline import checkpoint
    from pipeline.core.errors import UserError
    from pipeline.core.export_format import ENCODER, MANIFEST
    from pipeline.model import BertForPretraining, SequenceClassifier, TokenClassifier

    if args.export:
        folder = Path(args.export)
        try:
            manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise UserError(f"--export {folder}: no readable manifest.json there (python export/save.py)") from None
        head = manifest.get("head")
        if head is None:
            raise UserError(f"--export {folder} is an embedding model: --labels needs a classifier's or tagger's export")
        program = paddle.jit.load(str(folder / ENCODER))
        program.eval()
        run, tokenizer = program, load_tokenizer(folder, Vocab.load(folder / VOCAB))
        labels, problem_type, max_len, training = head["labels"], head["problem_type"], int(manifest["max_len"]), None
    else:
        output = Path(args.output_dir)
        path = Path(args.checkpoint) if args.checkpoint else checkpoint.best(output) or checkpoint.latest(output)
        if path is None:
            raise UserError(f"no checkpoint in {output / 'checkpoints'}; fine-tune first or pass --checkpoint")
        ckpt = checkpoint.load(path)
        m = ckpt.config.model
        if not m.labels:
            raise UserError(f"{path} is not fine-tuned (train.objective=classify or tag): --labels needs such a model")
        model = BertForPretraining(m)
        checkpoint.apply_model_state(model, ckpt.model_state, path)
        run = (TokenClassifier if m.problem_type == "token_classification" else SequenceClassifier)(model, 0.0)
        run.eval()
        tokenizer = load_tokenizer(path.parent.parent, Vocab.load(path.parent.parent / VOCAB))
        labels, problem_type, max_len = m.labels, m.problem_type, ckpt.config.data.max_len
        training = ckpt.config.data.labels
        print(f"evaluating {path}")

    def logits_of(arrays: dict) -> np.ndarray:
        with paddle.no_grad():
            return run(*(paddle.to_tensor(arrays[n]) for n in input_names()))[1].numpy()

    if problem_type == "token_classification":
        figures = tagger_figures(logits_of, tokenizer, max_len, labels, args.labels, training, args.predictions,
                                 args.batch_size)
    else:
        figures = classifier_figures(logits_of, tokenizer, max_len, labels, problem_type, args.labels, training,
                                     args.predictions, args.batch_size)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    from pipeline.core.errors import run_cli

    run_cli(main)
