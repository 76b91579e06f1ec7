"""Training speed and memory: the seed's code vs this pipeline (static / dygraph, 1 and 2 ranks).

    python bench/train.py [--data-dir ../shared/data/wikitext-2] [--steps 12] [-o section.key=value ...]

Every run trains the default config (configs/bert_tiny.yaml: the seed's tiny BERT; batch and sizes read back
from each run's own config.yaml, so -o overrides are counted right) on `--split` (default valid) in its own
process; the seed's code runs its own recipe (batch 512). Reports sentence pairs/s (steady state, and including the first steps), seconds from process
start to the first finished step, peak resident memory, and achieved GFLOP/s next to a measured fp32
matmul ceiling. Writes bench/results/train.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.common import DEFAULT_DATA, print_table, run_measured, write_json  # noqa: E402
from pipeline.data.pretraining_examples import max_predictions  # noqa: E402

MATMUL_PROBE = """
import time, numpy as np
from pipeline.core.runtime import setup_process_for_paddle, set_cpu_threads
setup_process_for_paddle()
import paddle
set_cpu_threads(0)
n = 1024
a, b = paddle.randn([4 * n, n]), paddle.randn([n, n])
paddle.matmul(a, b)
t = time.perf_counter()
for _ in range(10): paddle.matmul(a, b).numpy()
paddle_gflops = 10 * 2 * 4 * n ** 3 / (time.perf_counter() - t) / 1e9
x, y = np.random.rand(4 * n, n).astype(np.float32), np.random.rand(n, n).astype(np.float32)
x @ y
t = time.perf_counter()
for _ in range(10): x @ y
print(paddle_gflops, 10 * 2 * 4 * n ** 3 / (time.perf_counter() - t) / 1e9)
"""


def flops_per_pair(hidden: int, layers: int, ffn: int, max_len: int, vocab: int, preds: int) -> float:
    """Matrix-product FLOPs of one training pair (forward x 3 for forward + backward)."""
    per_layer = 8 * max_len * hidden ** 2 + 4 * max_len ** 2 * hidden + 4 * max_len * hidden * ffn
    mlm = 2 * preds * (hidden ** 2 + hidden * vocab)
    nsp = 2 * (hidden ** 2 + 2 * hidden)
    return 3.0 * (layers * per_layer + mlm + nsp)


def run_pipeline(name: str, data_dir: str, split: str, steps: int, overrides: list[str], ranks: int = 1) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    args = ["pipeline/train.py", "--data-dir", data_dir, "--split", split, "--steps", str(steps),
            "--output-dir", str(out), *[x for o in overrides for x in ("-o", o)]]
    launcher = ["-m", "paddle.distributed.launch", "--nproc_per_node", str(ranks), "--log_dir", str(out / "log")]
    cmd = [sys.executable, *(launcher if ranks > 1 else []), *args]
    started = time.time()
    _, wall, peak = run_measured(cmd)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    batch = cfg["train"]["batch_size"]
    warm = min(2, len(records) - 1)
    steady = (len(records) - warm) * batch / (records[-1]["elapsed"] - records[warm - 1]["elapsed"])
    return {"name": name, "pairs_per_sec_steady": steady,
            "pairs_per_sec_all": len(records) * batch / records[-1]["elapsed"],
            "start_to_first_step_s": records[0]["time"] - started, "peak_rss_mb": peak / 2**20, "wall_s": wall,
            "final_mlm_loss": records[-1]["mlm_loss"], "config": cfg}


def run_seed(data_dir: str, split: str, steps: int) -> dict:
    started = time.time()
    result, wall, peak = run_measured([sys.executable, "bench/seed_baseline.py", "--data-dir", data_dir,
                                       "--split", split, "--steps", str(steps), "--threads", "2"])
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    return {"name": "seed code (dygraph, d2l layers)", "pairs_per_sec_steady": stats["steady_pairs_per_sec"],
            "pairs_per_sec_all": stats["pairs_per_sec"], "peak_rss_mb": peak / 2**20, "wall_s": wall,
            "start_to_first_step_s": stats["first_step_done"] - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA), help="folder with wiki.*.tokens")
    parser.add_argument("--split", default="valid", help="split to train on (default valid)")
    parser.add_argument("--steps", type=int, default=12, help="steps per run (default 12)")
    parser.add_argument("--skip-seed", action="store_true", help="do not run the seed baseline")
    parser.add_argument("-o", "--override", action="append", default=[], help="passed to pipeline/train.py")
    args = parser.parse_args()

    probe, _, _ = run_measured([sys.executable, "-c", MATMUL_PROBE])
    paddle_ceiling, numpy_ceiling = map(float, probe.stdout.split())
    runs = [] if args.skip_seed else [run_seed(args.data_dir, args.split, args.steps)]
    runs.append(run_pipeline("pipeline, static (to_static)", args.data_dir, args.split, args.steps, args.override))
    runs.append(run_pipeline("pipeline, dygraph", args.data_dir, args.split, args.steps,
                             args.override + ["train.to_static=false"]))
    runs.append(run_pipeline("pipeline, static, 2 ranks", args.data_dir, args.split, args.steps, args.override, 2))

    m, d = runs[-1]["config"]["model"], runs[-1]["config"]["data"]
    batch = runs[-1]["config"]["train"]["batch_size"]
    flops = flops_per_pair(m["hidden_size"], m["num_layers"], m["ffn_size"], d["max_len"], m["vocab_size"],
                           max_predictions(d["max_len"], d["mask_prob"]))
    base = runs[0]["pairs_per_sec_steady"]
    rows = [[r["name"], r["pairs_per_sec_steady"], r["pairs_per_sec_all"], r["pairs_per_sec_steady"] / base,
             r["pairs_per_sec_steady"] * flops / 1e9, r["start_to_first_step_s"], r["peak_rss_mb"]] for r in runs]
    print_table(f"Training, hidden {m['hidden_size']} x {m['num_layers']} layers, batch {batch} (the seed's code: 512), "
                f"max_len {d['max_len']}, {args.steps} steps on wiki.{args.split} "
                f"({flops / 1e6:.0f} MFLOP per pair; fp32 matmul ceiling: Paddle {paddle_ceiling:.0f}, "
                f"numpy {numpy_ceiling:.0f} GFLOP/s)",
                ["run", "pairs/s steady", "pairs/s all", f"x {runs[0]['name'].split(' (')[0]}", "GFLOP/s",
                 "start->step 1 s", "peak RSS MB"], rows)
    write_json("train", {"steps": args.steps, "split": args.split, "mflop_per_pair": flops / 1e6,
                         "matmul_ceiling_gflops": {"paddle": paddle_ceiling, "numpy": numpy_ceiling}, "runs": runs})


if __name__ == "__main__":
    main()
