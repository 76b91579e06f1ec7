"""Encoding speed: Paddle Inference predictor vs the dygraph model vs to_static in-process, and the CLI.

    python bench/infer.py [--sizes tiny,base] [--calls 300]

For each size (tiny = the seed's model, base = BERT-base, random weights), the same weights go through:
the dygraph encoder (eval, no_grad), the to_static encoder in-process, and the exported model in the
predictor (this project's automatic CPU configuration, plus each fixed oneDNN/thread configuration).
Shapes: the seed's sentence (1 x 6) and a batch of 64 sequences of length 64. Median and p90 latency
over many calls after warm-up. Then the one-shot CLI (`python infer/encode.py --text ...`): wall time
and peak memory next to `python -c "import paddle"`. Writes bench/results/infer.json.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from pipeline.core.runtime import setup_process_for_paddle  # noqa: E402

setup_process_for_paddle()

import numpy as np  # noqa: E402
import paddle  # noqa: E402

import infer.backends.paddle_inference as paddle_inference  # noqa: E402
from bench.common import ROOT, print_table, run_measured, write_json  # noqa: E402
from export.save import export_checkpoint  # noqa: E402
from infer.encoder import Encoder  # noqa: E402
from pipeline import checkpoint  # noqa: E402
from pipeline.config import load_config  # noqa: E402
from pipeline.core.runtime import cpu_has_bf16, set_cpu_threads  # noqa: E402
from pipeline.core.tokenizer import WhitespaceTokenizer  # noqa: E402
from pipeline.core.vocab import SPECIAL_TOKENS, Vocab  # noqa: E402
from pipeline.model import BertForPretraining, encoder_input_spec  # noqa: E402

SIZES = {"tiny": "configs/bert_tiny.yaml", "base": "configs/bert_base.yaml"}
VOCAB_SIZE = 4211  # WikiText-2 valid at min_freq 5, as the tiny training run gets


def timed(fn, calls: int) -> dict:
    for _ in range(max(1, min(3, calls // 20))):
        fn()
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    samples.sort()
    return {"median_ms": statistics.median(samples) * 1e3, "p90_ms": samples[int(0.9 * (len(samples) - 1))] * 1e3}


def inputs(rows: int, length: int, vocab_size: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    ids = rng.integers(len(SPECIAL_TOKENS), vocab_size, (rows, length))
    return {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "valid_length": np.full(rows, length)}


def make_export(size: str, folder: Path) -> tuple[BertForPretraining, Path]:
    cfg = load_config(SIZES[size], [f"model.vocab_size={VOCAB_SIZE}"])
    paddle.seed(0)
    model = BertForPretraining(cfg.model)
    model.eval()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    ckpt = checkpoint.Checkpoint(folder / "ckpt", 0, cfg, state, {}, {})
    vocab = Vocab(list(SPECIAL_TOKENS) + [f"w{i}" for i in range(VOCAB_SIZE - len(SPECIAL_TOKENS))])
    return model, export_checkpoint(ckpt, WhitespaceTokenizer(vocab), folder / size, with_heads=False,
                         onnx=has("paddle2onnx") and has("onnxruntime"))


def has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def huggingface_onnx(model: BertForPretraining, cfg_path: str, folder: Path):
    """The same weights as Hugging Face `BertModel`, exported to ONNX by torch: the reference the
    serving issue measured (bench extra: torch, transformers, onnxruntime). None when not installed."""
    if not all(has(m) for m in ("torch", "transformers", "onnxruntime")):
        return None
    import torch
    import transformers

    from export.huggingface import bert_config
    from pipeline.core.hf_mapping import to_hf

    cfg = load_config(cfg_path, [f"model.vocab_size={VOCAB_SIZE}"])
    bert = transformers.BertModel(transformers.BertConfig(**bert_config(cfg)), add_pooling_layer=False).eval()
    state = to_hf({k: v.numpy() for k, v in model.state_dict().items()}, cfg.model.num_layers)
    bert.load_state_dict({k[len("bert."):]: torch.from_numpy(v) for k, v in state.items() if k.startswith("bert.")
                          and not k.startswith("bert.pooler")}, strict=False)

    return export_hidden_states(bert, folder / "hf_bert.onnx")


def export_hidden_states(bert, path: Path) -> Path:
    """A transformers BertModel as ONNX: (input_ids, attention_mask, token_type_ids) -> the last hidden states,
    batch and length dynamic. Called by keyword: BertModel's positional order changes between releases."""
    import torch

    class Encodings(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state

    example = [torch.ones((1, 6), dtype=torch.int64)] * 3
    names = ["input_ids", "attention_mask", "token_type_ids"]
    with torch.no_grad():
        torch.onnx.export(Encodings().eval(), tuple(example), str(path), input_names=names, output_names=["encodings"],
                          dynamic_axes={n: {0: "batch", 1: "length"} for n in names + ["encodings"]},
                          opset_version=17, dynamo=False)
    return path


def onnx_runner(path: Path, arrays: dict, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = threads, 3
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    mask = (np.arange(arrays["input_ids"].shape[1])[None, :] < arrays["valid_length"][:, None]).astype(np.int64)
    feed = {"input_ids": arrays["input_ids"], "attention_mask": mask, "token_type_ids": arrays["token_type_ids"]}
    return lambda: session.run(None, feed)


def bench_size(size: str, calls: int, folder: Path) -> list[dict]:
    model, model_dir = make_export(size, folder)
    reference = huggingface_onnx(model, SIZES[size], folder)
    static = paddle.jit.to_static(model.encoder, input_spec=encoder_input_spec(), full_graph=True)
    rows = []
    for shape, n in ((("sentence 1x6"), calls), (("batch 64x64"), max(3, calls // 20))):
        batch, length = (1, 6) if shape.startswith("sentence") else (64, 64)
        arrays = inputs(batch, length, VOCAB_SIZE)
        tensors = [paddle.to_tensor(arrays[k]) for k in ("input_ids", "token_type_ids", "valid_length")]
        runners = {"dygraph (eval, no_grad)": lambda: model.encoder(*tensors).numpy(),
                   "to_static in-process": lambda: static(*tensors).numpy()}
        encoders = {"predictor (auto config)": Encoder(model_dir, device="cpu", backend="paddle"),
                    "predictor (auto config) without CPU_PASSES": without_cpu_passes(
                        Encoder(model_dir, device="cpu", backend="paddle"), arrays)}
        if cpu_has_bf16():
            encoders["predictor bf16 (oneDNN, auto threads)"] = Encoder(model_dir, device="cpu", precision="bf16")
        for onednn in ("off", "on") if size == "tiny" else ():  # the fixed configurations, tiny only
            for threads in (1, 2):
                encoders[f"predictor oneDNN {onednn}, {threads} thread(s)"] = Encoder(
                    model_dir, device="cpu", onednn=onednn, threads=threads, backend="paddle")
        if (model_dir / "encoder.onnx").exists():
            encoders["onnxruntime backend (paddle2onnx, auto threads)"] = Encoder(model_dir, backend="onnxruntime")
        for name, enc in encoders.items():
            runners[name] = (lambda e: lambda: e.run(arrays))(enc)
        if reference is not None:
            threads = 1 if batch * length <= 512 else 2
            runners[f"reference: HF BertModel in onnxruntime, {threads} thread(s)"] = onnx_runner(reference, arrays, threads)
        with paddle.no_grad():
            results = {name: timed(fn, n) for name, fn in runners.items()}
        base = results["dygraph (eval, no_grad)"]["median_ms"]
        for name, r in results.items():
            rows.append({"size": size, "shape": shape, "runner": name, **r, "speedup_vs_dygraph": base / r["median_ms"],
                         "sequences_per_sec": batch / r["median_ms"] * 1e3})
    return rows


def without_cpu_passes(encoder: Encoder, arrays: dict) -> Encoder:
    """`encoder` with its predictors built before paddle_inference.CPU_PASSES was added (for the comparison)."""
    saved, paddle_inference.CPU_PASSES = paddle_inference.CPU_PASSES, []
    try:
        encoder.run(arrays)
    finally:
        paddle_inference.CPU_PASSES = saved
    return encoder


OPS_PROBE = """
import sys, numpy as np
from pipeline.core.runtime import setup_process_for_paddle; setup_process_for_paddle()
import infer.backends.paddle_inference as p
from infer.encoder import Encoder
if sys.argv[2] == "none": p.CPU_PASSES = []
enc = Encoder(sys.argv[1], device="cpu", backend="paddle")
ids = np.array([[3, 10, 11, 12, 13, 4]])
arrays = {"input_ids": ids, "token_type_ids": np.zeros_like(ids), "valid_length": np.array([6])}
enc.run(arrays)
runtime = enc.runtime
cfg = runtime._config("encoder", "small"); cfg.enable_profile()
runtime._predictors[("encoder", "small")] = p.with_handles(runtime._inference.create_predictor(cfg))
for _ in range(10): enc.run(arrays)
"""


def ops_per_call(model_dir: Path, passes: str) -> float:
    """Ops the predictor executes for one sentence (1 x 6, the small-call configuration), from Paddle's own
    profiler report (printed at exit, summed over 10 calls)."""
    result = subprocess.run([sys.executable, "-c", OPS_PROBE, str(model_dir), passes], cwd=ROOT, capture_output=True,
                            text=True, timeout=300)
    calls = [int(line.split()[1]) for line in (result.stdout + result.stderr).splitlines()
             if line.startswith("thread0::pd_op.")]
    return sum(calls) / 10


def bench_cli(model_dir: Path, runs: int = 5) -> list[dict]:
    out = []
    for name, cmd in (("python -c 'import paddle'", [sys.executable, "-c", "import paddle"]),
                      ("python infer/encode.py --text ...", [sys.executable, "infer/encode.py", "--text",
                                                             "a crane is flying", "--model-dir", str(model_dir)])):
        walls, peaks = [], []
        for _ in range(runs):
            _, wall, peak = run_measured(cmd)
            walls.append(wall)
            peaks.append(peak)
        out.append({"command": name, "median_wall_s": statistics.median(walls), "peak_rss_mb": max(peaks) / 2**20})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="tiny,base", help="comma-separated: tiny, base (default both)")
    parser.add_argument("--calls", type=int, default=300, help="calls per sentence measurement (default 300)")
    args = parser.parse_args()
    set_cpu_threads(0)
    folder = Path(tempfile.mkdtemp(prefix="bench-infer-"))
    rows = []
    for size in args.sizes.split(","):
        calls = args.calls if size == "tiny" else max(20, args.calls // 15)
        rows += bench_size(size, calls, folder)
    print_table("Encoding latency on CPU (median / p90 ms per call; same weights everywhere)",
                ["size", "shape", "runner", "median ms", "p90 ms", "x dygraph", "seq/s"],
                [[r["size"], r["shape"], r["runner"], r["median_ms"], r["p90_ms"], r["speedup_vs_dygraph"],
                  r["sequences_per_sec"]] for r in rows])
    ops = {}
    if (folder / "tiny").exists():
        ops = {"without CPU_PASSES": ops_per_call(folder / "tiny", "none"), "with CPU_PASSES": ops_per_call(folder / "tiny", "")}
        sentence = {r["runner"]: r["median_ms"] for r in rows if r["size"] == "tiny" and r["shape"].startswith("sentence")}
        table = []
        for name, runner in (("without CPU_PASSES", "predictor (auto config) without CPU_PASSES"),
                             ("with CPU_PASSES", "predictor (auto config)")):
            table.append([name, ops[name], sentence[runner], sentence[runner] / ops[name] * 1e3])
        print_table("One sentence (tiny, 1 x 6) through Paddle Inference: ops executed per call",
                    ["inference passes", "ops per call", "median ms", "us per op"], table)
        reference = next((v for k, v in sentence.items() if k.startswith("reference")), None)
        if reference:
            print(f"predictor / Hugging Face BertModel in ONNX Runtime: {sentence['predictor (auto config)'] / reference:.2f}x")
    for size in args.sizes.split(","):
        batch = {r["runner"]: r["median_ms"] for r in rows if r["size"] == size and r["shape"].startswith("batch")}
        if "predictor bf16 (oneDNN, auto threads)" in batch:
            print(f"{size} 64 x 64: bf16 takes {batch['predictor bf16 (oneDNN, auto threads)'] / batch['predictor (auto config)']:.2f}x "
                  f"the time of fp32 oneDNN")
    cli = bench_cli(folder / "tiny") if (folder / "tiny").exists() else []
    if cli:
        print_table("One-shot command line (median of 5 runs)", ["command", "wall s", "peak RSS MB", "x import paddle"],
                    [[c["command"], c["median_wall_s"], c["peak_rss_mb"], c["median_wall_s"] / cli[0]["median_wall_s"]]
                     for c in cli])
    write_json("infer", {"latency": rows, "ops_per_sentence": ops, "cli": cli})


if __name__ == "__main__":
    main()
