"""Recipes one change at a time: the README's main command with `-o` overrides (each row of RECIPES changes
the previous default once), each run alone on this machine, with every held-out figure next to its
baseline and the training-vs-held-out gap.

    python bench/ablation.py --stage select [--recipes default,mask30,...]   # choose: held-back training text
    python bench/ablation.py --stage report [--recipes ...]                  # then: wiki.valid -> wiki.test

`--ranks 2 -- -c configs/bert_tiny_10min.yaml` runs the 10-minute recipe's variants instead.
`select` trains on the first 85% of wiki.valid's articles and evaluates on the other 15%, so recipes are
chosen without looking at wiki.test; `report` trains on all of wiki.valid and evaluates on wiki.test.
Prints a table and writes bench/results/ablation-<stage>.json.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.common import DEFAULT_DATA, RESULTS, print_table, run_measured, write_json  # noqa: E402

SELECT_SHARE = 0.85  # of wiki.valid's articles trained on in the select stage; the rest is held back
ARTICLE_TITLE = re.compile(r"^ = [^=].* = $")  # " = Homarus gammarus = ", not " = = Description = = "

HEADER = ["recipe", "wall s", "steps", "known-word acc (x unigram)", "ppl", "token cos", "crane cos",
          "NSP acc (majority)", "train MLM loss / held-out ln ppl"]
# configs/bert_tiny.yaml before issue 17 (post-LN, ReLU, biases, 15% masking, 800 steps): the rows change it once
PREVIOUS_DEFAULT = ["model.activation=relu", "model.linear_bias=true", "data.mask_prob=0.15", "train.steps=800",
                    "train.warmup_steps=80"]


def one_change(*settings: str) -> list[str]:
    return PREVIOUS_DEFAULT + list(settings)


# name -> overrides of configs/bert_tiny.yaml (or of the config given after --)
RECIPES: dict[str, list[str]] = {
    "default": [],
    "previous-default": one_change(),
    "mask30": one_change("data.mask_prob=0.3"),
    "mask40": one_change("data.mask_prob=0.4"),
    "pre": one_change("model.norm=pre"),
    "nsp-off": one_change("train.nsp=false"),
    "no-bias": one_change("model.linear_bias=false"),
    "gelu": one_change("model.activation=gelu"),
    "gated": one_change("model.gated=true", "model.activation=gelu"),
    "dropout0": one_change("model.dropout=0"),
    "beta98": one_change("train.beta2=0.98"),
    "clip": one_change("train.grad_clip=0.5"),
    "ramp": one_change("train.batch_ramp_steps=200"),
    "time": one_change("train.decay_to=max_minutes", "train.max_minutes=1.8", "train.steps=100000"),
    "default-pre": ["model.norm=pre"],
}


def held_back_folder(data_dir: Path) -> Path:
    """A WikiText folder whose train split is wiki.valid's first articles and valid split the rest."""
    lines = (data_dir / "wiki.valid.tokens").read_text(encoding="utf-8").splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if ARTICLE_TITLE.match(line)]
    cut = starts[int(len(starts) * SELECT_SHARE)]
    folder = Path(tempfile.mkdtemp(prefix="bench-ablation-"))
    (folder / "wiki.train.tokens").write_text("".join(lines[:cut]), encoding="utf-8")
    (folder / "wiki.valid.tokens").write_text("".join(lines[cut:]), encoding="utf-8")
    (folder / "wiki.test.tokens").write_text("(unused)\n", encoding="utf-8")
    return folder


def run_recipe(name: str, overrides: list[str], data_dir: Path, train_split: str, eval_split: str,
               extra: list[str], ranks: int) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"bench-ablation-{name}-"))
    launch = (["-m", "paddle.distributed.launch", "--nproc_per_node", str(ranks), "--log_dir", str(out / "log")]
              if ranks > 1 else [])
    cmd = [sys.executable, *launch, "pipeline/train.py", *extra, *overrides, "--data-dir", str(data_dir), "--split",
           train_split, "--eval-split", eval_split, "--output-dir", str(out)]
    print("running:", " ".join(cmd), flush=True)
    _, wall, _ = run_measured(cmd, timeout=3600)
    metrics = json.loads((out / "eval.json").read_text())
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    tail = steps[-max(1, len(steps) // 10):]  # the last tenth of the run: where training ended up
    train_mlm = sum(s["mlm_loss"] for s in tail) / len(tail)
    return {"recipe": name, "arguments": [*extra, *overrides], "wall_s": wall, "steps": steps[-1]["step"],
            "train_mlm_loss_end": train_mlm, "train_nsp_loss_end": sum(s["nsp_loss"] for s in tail) / len(tail),
            **metrics}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stage", choices=("select", "report"), default="select",
                        help="select: held-back 15%% of wiki.valid; report: wiki.valid -> wiki.test")
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA), help="folder with wiki.valid/test.tokens")
    parser.add_argument("--recipes", default="previous-default,default",
                        help=f"comma-separated, of: {', '.join(RECIPES)}")
    parser.add_argument("--custom", action="append", default=[], metavar="NAME=S.K=V,S.K=V",
                        help="one more recipe (repeatable): a name, then its overrides, comma-separated")
    parser.add_argument("--ranks", type=int, default=1, help="processes per run (fleetrun --nproc_per_node)")
    parser.add_argument("extra", nargs="*", help="train.py arguments for every run, before the recipe's, after --, "
                                                 "e.g. -- -c configs/bert_tiny_10min.yaml")
    parser.add_argument("--table", action="store_true", help="print the stage's stored results, run nothing")
    args = parser.parse_args()
    if args.table:
        stored = json.loads((RESULTS / f"ablation-{args.stage}.json").read_text())["runs"]
        print_markdown([table_row(r) for r in stored])
        return
    data_dir = Path(args.data_dir)
    if args.stage == "select":
        data_dir, train_split, eval_split = held_back_folder(data_dir), "train", "valid"
    else:
        train_split, eval_split = "valid", "test"
    rows, results = [], []
    recipes = [(name, RECIPES[name]) for name in args.recipes.split(",") if name]
    recipes += [(name, settings.split(",")) for name, _, settings in (item.partition("=") for item in args.custom)]
    for name, settings in recipes:
        overrides = [arg for setting in settings for arg in ("-o", setting)]
        results.append(run_recipe(name, overrides, data_dir, train_split, eval_split, args.extra, args.ranks))
        rows.append(table_row(results[-1]))
        print_table(f"ablation, stage {args.stage}", HEADER, rows)
    print_markdown(rows)
    write_json(f"ablation-{args.stage}", {"stage": args.stage, "runs": merged_with_earlier(args.stage, results)})


def table_row(r: dict) -> list:
    crane = "n/a" if r["crane_cosine"] is None else f"{r['crane_cosine']:.3f}"
    return [r["recipe"], f"{r['wall_s']:.0f}", r["steps"],
            f"{r['mlm_accuracy_known']:.3f} ({r['mlm_accuracy_known'] / r['mlm_unigram_baseline_known']:.2f}x)",
            f"{r['mlm_perplexity']:.0f}", f"{r['encoding_mean_cosine']:.3f}", crane,
            f"{r['nsp_accuracy']:.3f} ({r['nsp_majority_baseline']:.3f})",
            f"{r['train_mlm_loss_end']:.2f} / {math.log(r['mlm_perplexity']):.2f}"]


def print_markdown(rows: list[list]) -> None:
    print("\nas a README table:\n")
    print("| " + " | ".join(HEADER) + " |\n|" + " --- |" * len(HEADER))
    for row in rows:
        print("| " + " | ".join(str(c) for c in row) + " |")


def merged_with_earlier(stage: str, results: list[dict]) -> list[dict]:
    """The runs of earlier calls (bench/results/ablation-STAGE.json), those of the same recipe and
    arguments replaced by this call's."""
    path = RESULTS / f"ablation-{stage}.json"
    earlier = json.loads(path.read_text())["runs"] if path.exists() else []
    key = lambda r: (r["recipe"], tuple(r["arguments"]))  # noqa: E731
    fresh = {key(r) for r in results}
    return [r for r in earlier if key(r) not in fresh] + results


if __name__ == "__main__":
    main()
