"""Every GPU path on a CUDA machine, in one command and one table:

    python bench/gpu_check.py [--gpus 0,1] [--steps 30]

1. the CUDA devices PaddlePaddle sees (and whether it was built with TensorRT);
2. a short `fleetrun --gpus ...` pretraining run on the shipped WikiText-2 sample, in fp32 and with AMP
   (fp16 with GradScaler, bf16): exit code, final losses, pairs/s;
3. export of the fp32 run, then the GPU predictor against the CPU predictor on the same inputs (max abs
   difference of the encodings, median latency of a 64 x 64 batch);
4. TensorRT (PIR-TRT, converted and cached by infer/tensorrt.py) in fp32 and fp16: the same comparison.
Skips cleanly (exit 0, one line) where PaddlePaddle has no CUDA or the machine no GPU. Writes
bench/results/gpu_check.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from pipeline.runtime import has_cuda_gpu, setup_process_for_paddle  # noqa: E402

setup_process_for_paddle()

import numpy as np  # noqa: E402
import paddle  # noqa: E402

from bench.common import ROOT, print_table, run_measured, write_json  # noqa: E402
from bench.infer import inputs, timed  # noqa: E402
from pipeline.wikitext import SAMPLE_ARCHIVE  # noqa: E402


def devices() -> list[str]:
    return [paddle.device.cuda.get_device_name(i) for i in range(paddle.device.cuda.device_count())]


def train(gpus: str, amp: str, steps: int, out: Path) -> dict:
    """A short fleetrun --gpus run on the sample; its exit code, last losses and speed."""
    result, wall, _ = run_measured([sys.executable, "-m", "paddle.distributed.launch", "--gpus", gpus, "--log_dir",
                                    str(out / "log"), "pipeline/train.py", "--data-dir", str(SAMPLE_ARCHIVE), "--split",
                                    "valid", "--output-dir", str(out), "--steps", str(steps), "-o", f"train.amp={amp}",
                                    "-o", "train.log_every=10"])
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()] \
        if (out / "metrics.jsonl").is_file() else []
    last = metrics[-1] if metrics else {}
    return {"what": f"fleetrun --gpus {gpus}, train.amp={amp}", "ok": result.returncode == 0,
            "detail": f"MLM {last.get('mlm_loss', float('nan')):.3f} NSP {last.get('nsp_loss', float('nan')):.3f}, "
                      f"{last.get('pairs_per_sec', 0):.0f} pairs/s, {wall:.0f} s" if last else result.stdout[-300:]}


def predictor_rows(model_dir: Path) -> list[dict]:
    """GPU and TensorRT predictors against the CPU predictor: max abs difference and a 64 x 64 batch's latency."""
    from infer.predictor import Encoder

    cpu = Encoder(model_dir, device="cpu", backend="paddle")
    arrays = inputs(64, 64, len(cpu.vocab))
    (reference,) = cpu.run(arrays)
    rows = []
    for name, options in (("GPU predictor fp32", {}), ("GPU predictor fp16", {"precision": "fp16"}),
                          ("TensorRT fp32", {"trt": True}), ("TensorRT fp16", {"trt": True, "precision": "fp16"})):
        try:
            encoder = Encoder(model_dir, device="gpu", backend="paddle", max_batch=64, **options)
            (got,) = encoder.run(arrays)
            latency = timed(lambda: encoder.run(arrays), 50)["median_ms"]
            rows.append({"what": name, "ok": bool(np.isfinite(got).all()),
                         "detail": f"max |GPU - CPU| {np.abs(got - reference).max():.2e}, 64 x 64 in {latency:.2f} ms"})
        except Exception as err:  # noqa: BLE001 - a check that fails is a row of the table, not the end
            rows.append({"what": name, "ok": False, "detail": f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"})
    return rows


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
    rows = [{"what": "CUDA devices", "ok": True, "detail": "; ".join(found)},
            {"what": "TensorRT in this build", "ok": tuple(inference.get_trt_compile_version()) != (0, 0, 0),
             "detail": f"compiled {inference.get_trt_compile_version()}, runtime {inference.get_trt_runtime_version()}"}]
    folder = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    for amp in ("none", "fp16", "bf16"):
        rows.append(train(gpus, amp, args.steps, folder / f"amp-{amp}"))
    exported, _, _ = run_measured([sys.executable, "export/save.py", "--output-dir", str(folder / "amp-none"),
                                   "--export-dir", str(folder / "inference")])
    rows.append({"what": "export/save.py", "ok": exported.returncode == 0, "detail": exported.stderr[-200:].strip()})
    if exported.returncode == 0:
        rows += predictor_rows(folder / "inference")
    print_table(f"GPU paths (paddle {paddle.__version__}, run from {ROOT})", ["check", "ok", "detail"],
                [[r["what"], "yes" if r["ok"] else "NO", r["detail"]] for r in rows])
    write_json("gpu_check", {"rows": rows})
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
