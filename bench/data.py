"""Data preparation speed and memory: text -> vocabulary -> NSP pairs -> masked arrays.

    python bench/data.py [--data-dir ../shared/data/wikitext-2] [--big-tokens 10000000]

Corpora: wiki.valid.tokens, and a larger one made by repeating valid + test to about --big-tokens.
For each: seconds cold (no cache: read, vocabulary, pairs, masks, cache written) and warm (cache hit),
whitespace tokens per second cold, peak traced memory against the size of the arrays, and the cost of
re-masking one epoch against that epoch's training time (from bench/results/train.json when present).
The seed's pure-Python preparation (d2l's _read_wiki + _WikiTextDataset, re-typed) is timed alongside.
Writes bench/results/data.json.
"""
from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
import tracemalloc
from collections import Counter
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.common import DEFAULT_DATA, RESULTS, print_table, write_json  # noqa: E402
from pipeline.data.batches import PretrainingData  # noqa: E402
from pipeline.data.wikitext_pairs import wikitext_examples  # noqa: E402

MAX_LEN = 64


def seed_style_prepare(path: Path, max_len: int = MAX_LEN) -> int:
    """The seed's preparation, loop for loop: nested lists, per-example Python. Returns the pair count."""
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    paragraphs = [line.strip().lower().split(" . ") for line in lines if len(line.split(" . ")) >= 2]
    random.shuffle(paragraphs)
    paragraphs = [[sentence.split(" ") for sentence in p] for p in paragraphs]
    counts = Counter(token for p in paragraphs for sentence in p for token in sentence)
    idx_to_token = ["<unk>", "<pad>", "<mask>", "<cls>", "<sep>"] + [t for t, n in counts.most_common() if n >= 5]
    token_to_idx = {t: i for i, t in enumerate(idx_to_token)}
    examples = []
    for p in paragraphs:
        for i in range(len(p) - 1):
            b, is_next = (p[i + 1], True) if random.random() < 0.5 else (random.choice(random.choice(paragraphs)), False)
            if len(p[i]) + len(b) + 3 > max_len:
                continue
            tokens = ["<cls>"] + p[i] + ["<sep>"] + b + ["<sep>"]
            segments = [0] * (len(p[i]) + 2) + [1] * (len(b) + 1)
            candidates = [j for j, t in enumerate(tokens) if t not in ("<cls>", "<sep>")]
            random.shuffle(candidates)
            masked, predictions = list(tokens), []
            for j in candidates[:max(1, round(len(tokens) * 0.15))]:
                r = random.random()
                masked[j] = "<mask>" if r < 0.8 else (tokens[j] if r < 0.9 else random.choice(idx_to_token))
                predictions.append((j, tokens[j]))
            ids = [token_to_idx.get(t, 0) for t in masked]
            examples.append((ids + [1] * (max_len - len(ids)), segments + [0] * (max_len - len(segments)),
                             len(ids), sorted(predictions), is_next))
    return len(examples)


def make_big_corpus(data_dir: Path, tokens: int, folder: Path) -> Path:
    text = (data_dir / "wiki.valid.tokens").read_text(encoding="utf-8") + (data_dir / "wiki.test.tokens").read_text(encoding="utf-8")
    repeats = max(1, round(tokens / len(text.split())))
    path = folder / "wiki.big.tokens"
    path.write_text(text * repeats, encoding="utf-8")
    return path


def measure(path: Path, train_pairs_per_sec: float) -> dict:
    tokens = len(path.read_text(encoding="utf-8").split())
    def cold_run(cache: Path):
        examples = wikitext_examples(path, MAX_LEN, 5, 0, cache)
        data = PretrainingData(examples.pairs, examples.vocab, MAX_LEN)
        return examples, data, data.masks(0)

    tracemalloc.start()  # memory on a run of its own: tracing slows Python allocations several-fold
    cold_run(Path(tempfile.mkdtemp(prefix="bench-data-cache-")))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    cache = Path(tempfile.mkdtemp(prefix="bench-data-cache-"))
    start = time.perf_counter()
    examples, data, masks = cold_run(cache)
    cold = time.perf_counter() - start
    arrays = sum(a.nbytes for a in (*vars(examples.pairs).values(), *vars(masks).values()))
    start = time.perf_counter()
    warm_examples = wikitext_examples(path, MAX_LEN, 5, 0, cache)
    PretrainingData(warm_examples.pairs, warm_examples.vocab, MAX_LEN).masks(0)
    warm = time.perf_counter() - start
    start = time.perf_counter()
    data.masks(1)
    remask = time.perf_counter() - start
    epoch_train = data.steps_per_epoch(512) * 512 / train_pairs_per_sec
    return {"corpus": path.name, "tokens": tokens, "pairs": len(examples.pairs), "cold_s": cold, "warm_s": warm,
            "tokens_per_sec_cold": tokens / cold, "peak_traced_mb": peak / 2**20, "arrays_mb": arrays / 2**20,
            "peak_over_arrays": peak / arrays, "remask_epoch_s": remask, "epoch_train_s": epoch_train,
            "remask_share_of_epoch": remask / epoch_train}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA), help="folder with wiki.valid/test.tokens")
    parser.add_argument("--big-tokens", type=int, default=10_000_000, help="size of the repeated corpus")
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    train_json = RESULTS / "train.json"
    pairs_per_sec = 200.0
    if train_json.exists():
        runs = json.loads(train_json.read_text())["runs"]
        pairs_per_sec = max(r["pairs_per_sec_steady"] for r in runs if r["name"].startswith("pipeline"))
    folder = Path(tempfile.mkdtemp(prefix="bench-data-"))
    corpora = [data_dir / "wiki.valid.tokens", make_big_corpus(data_dir, args.big_tokens, folder)]
    results = [measure(path, pairs_per_sec) for path in corpora]
    for r, path in zip(results, corpora):
        random.seed(0)
        start = time.perf_counter()
        seed_style_prepare(path)
        r["seed_style_s"] = time.perf_counter() - start
        r["speedup_vs_seed_style"] = r["seed_style_s"] / r["cold_s"]
    print_table(f"Data preparation, max_len {MAX_LEN} (re-masking compared with an epoch at {pairs_per_sec:.0f} pairs/s)",
                ["corpus", "tokens", "pairs", "cold s", "warm s", "tokens/s cold", "seed-style s", "x seed",
                 "peak MB", "arrays MB", "peak/arrays", "re-mask s", "re-mask/epoch"],
                [[r["corpus"], r["tokens"], r["pairs"], r["cold_s"], r["warm_s"], r["tokens_per_sec_cold"],
                  r["seed_style_s"], r["speedup_vs_seed_style"], r["peak_traced_mb"], r["arrays_mb"],
                  r["peak_over_arrays"], r["remask_epoch_s"], f"{100 * r['remask_share_of_epoch']:.2f}%"] for r in results])
    write_json("data", {"train_pairs_per_sec": pairs_per_sec, "results": results})


if __name__ == "__main__":
    main()
