"""Every GPU path on a CUDA machine, in one command and one table:

    python bench/gpu_check.py [--gpus 0,1] [--steps 30]

1. the CUDA devices PaddlePaddle sees (and whether it was built with TensorRT);
2. a short `fleetrun --gpus ...` pretraining run on the shipped WikiText-2 sample, in fp32 and with AMP
   (fp16 with GradScaler, bf16): exit code, final losses, pairs/s;
3. export of the fp32 run, then the GPU predictor against the CPU predictor on the same inputs (max abs
   difference of the encodings, median latency of a 64 x 64 batch);
4. TensorRT (PIR-TRT, converted and cached by infer/backends/tensorrt.py) in fp32 and fp16: the same comparison.
Every check is a row with a verdict, failed or not: a check that fails or raises is recorded (its last
error line) and the next one runs; the table is always printed and written to bench/results/gpu_check.json,
and the exit code is 1 when any row failed. Send its output with any GPU report. Skips cleanly (exit 0,
one line) where PaddlePaddle has no CUDA or the machine no GPU.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from pipeline.core.runtime import has_cuda_gpu, setup_process_for_paddle  # noqa: E402

setup_process_for_paddle()

from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
import paddle  # noqa: E402

from bench.common import ROOT, print_table, run_measured, write_json  # noqa: E402
from bench.infer import inputs, timed  # noqa: E402
from pipeline.data.wikitext import SAMPLE_ARCHIVE  # noqa: E402


def devices() -> list[str]:
    return [paddle.device.cuda.get_device_name(i) for i in range(paddle.device.cuda.device_count())]


def row(what: str, check: Callable[[], tuple[bool, str]]) -> dict:
    """One row of the table: the check's (ok, detail), or its error; never the end of the run."""
    try:
        ok, detail = check()
    except Exception as err:  # noqa: BLE001 - a check that fails is a row of the table, not the end
        ok, detail = False, f"{type(err).__name__}: {last_line(str(err))}"
    return {"what": what, "ok": bool(ok), "detail": detail}


def report(rows: list[dict]) -> int:
    """Print and write every row; 1 if any failed."""
    print_table(f"GPU paths (paddle {paddle.__version__}, run from {ROOT})", ["check", "ok", "detail"],
                [[r["what"], "yes" if r["ok"] else "NO", r["detail"]] for r in rows])
    write_json("gpu_check", {"rows": rows})
    return 0 if all(r["ok"] for r in rows) else 1


def last_line(text: str) -> str:
    """The last non-empty line of an error or a log, where Paddle and TensorRT put the summary."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines or [""])[-1][:300]


def train(gpus: str, amp: str, steps: int, out: Path) -> tuple[bool, str]:
    """A short fleetrun --gpus run on the sample; its exit code, last losses and speed."""
    result, wall, _ = run_measured([sys.executable, "-m", "paddle.distributed.launch", "--gpus", gpus, "--log_dir",
                                    str(out / "log"), "pipeline/train.py", "--data-dir", str(SAMPLE_ARCHIVE), "--split",
                                    "valid", "--output-dir", str(out), "--steps", str(steps), "-o", f"train.amp={amp}",
                                    "-o", "train.log_every=10"], check=False)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] \
        if (out / "metrics.jsonl").is_file() else []
    if result.returncode != 0 or not metrics:
        return False, f"exit {result.returncode}: {last_line(result.stderr or result.stdout)}"
    last = metrics[-1]
    return True, (f"MLM {last.get('mlm_loss', float('nan')):.3f} NSP {last.get('nsp_loss', float('nan')):.3f}, "
                  f"{last.get('pairs_per_sec', 0):.0f} pairs/s, {wall:.0f} s")


def export(run: Path, target: Path) -> tuple[bool, str]:
    result, _, _ = run_measured([sys.executable, "export/save.py", "--output-dir", str(run), "--export-dir",
                                 str(target)], check=False)
    return result.returncode == 0, last_line(result.stdout if result.returncode == 0 else result.stderr)


def predictor_rows(model_dir: Path) -> list[dict]:
    """GPU and TensorRT predictors against the CPU predictor: max abs difference and a 64 x 64 batch's latency.
    The plain GPU predictors come first, as in a user's process: the first one sets the process-wide folder
    where engines are looked up, and the TensorRT rows check that theirs are found all the same
    (infer/backends/tensorrt.py)."""
    from infer.encoder import Encoder

    cpu = Encoder(model_dir, device="cpu", backend="paddle")
    arrays = inputs(64, 64, len(cpu.vocab))
    (reference,) = cpu.run(arrays)

    def compare(options: dict) -> Callable[[], tuple[bool, str]]:
        def check() -> tuple[bool, str]:
            encoder = Encoder(model_dir, device="gpu", backend="paddle", max_batch=64, **options)
            (got,) = encoder.run(arrays)
            latency = timed(lambda: encoder.run(arrays), 50)["median_ms"]
            tolerance = 1e-1 if options.get("precision") == "fp16" else 1e-2  # encodings are LayerNorm-scaled
            difference = float(np.abs(got - reference).max())
            return (bool(np.isfinite(got).all()) and difference < tolerance,
                    f"max |GPU - CPU| {difference:.2e} (bound {tolerance:g}), 64 x 64 in {latency:.2f} ms")
        return check

    checks = (("GPU predictor fp32", {}), ("GPU predictor fp16", {"precision": "fp16"}),
              ("TensorRT fp32", {"trt": True}), ("TensorRT fp16", {"trt": True, "precision": "fp16"}))
    return [row(name, compare(options)) for name, options in checks]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gpus", default=None, help="GPUs for fleetrun (default: all, e.g. 0,1)")
    parser.add_argument("--steps", type=int, default=30, help="training steps of each run (default 30)")
    args = parser.parse_args()
    if not has_cuda_gpu():
        print(f"skipped: no CUDA GPU here (paddle {paddle.__version__}, compiled with CUDA: "
              f"{paddle.is_compiled_with_cuda()}); run this on a CUDA machine with paddlepaddle-gpu")
        return 0
    from paddle import inference

    found = devices()
    gpus = args.gpus or ",".join(str(i) for i in range(len(found)))
    trt = inference.get_trt_compile_version()
    rows = [row("CUDA devices", lambda: (True, "; ".join(found))),
            row("TensorRT in this build", lambda: (tuple(trt) != (0, 0, 0), f"compiled {trt}, runtime "
                                                                            f"{inference.get_trt_runtime_version()}"))]
    folder = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    for amp in ("none", "fp16", "bf16"):
        rows.append(row(f"fleetrun --gpus {gpus}, train.amp={amp}",
                        lambda amp=amp: train(gpus, amp, args.steps, folder / f"amp-{amp}")))
    rows.append(row("export/save.py", lambda: export(folder / "amp-none", folder / "inference")))
    if rows[-1]["ok"]:
        rows += predictor_rows(folder / "inference")
    return report(rows)


if __name__ == "__main__":
    sys.exit(main())
