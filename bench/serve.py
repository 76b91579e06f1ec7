"""The HTTP service under load, on the loopback address: throughput, latency, batch sizes, memory.

    python bench/serve.py [--model-dir output/inference] [--seconds 8] [--soak 60] [--backend paddle]
    python bench/serve.py --precision fp32,bf16 --soak 0     # bf16 against fp32 (CPUs with bf16 units)

Starts infer/serve.py on a free 127.0.0.1 port (with --model-dir, or a tiny model of random weights
exported for the run), then for concurrency 1, 8 and 32, sends single sentences and 16-sentence
requests of mixed length (1-40 words) from that many client threads with keep-alive connections, each
scenario bounded by --seconds and --requests. Reports sentences/s, p50/p99 latency per request, the
batch sizes the batcher formed, and the server's memory; then a --soak run at concurrency 8 (mixed)
sampling memory every second. Clients share the 2 cores with the server. Writes bench/results/serve.json.
"""
from __future__ import annotations

import argparse
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

import numpy as np  # noqa: E402

from bench.common import ROOT, print_table, write_json  # noqa: E402

WORDS = ("the a crane is flying over river bank driver came he just left city was built in century by "
         "king and his army during war of north south game played season team").split()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_server(model_dir: str, backend: str, precision: str = "fp32", *flags: str) -> tuple[subprocess.Popen, int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "infer/serve.py", "--model-dir", model_dir, "--port", str(port),
                             "--backend", backend, "--precision", precision, *flags], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for _ in range(600):
        try:
            get(port, "/health")
            return proc, port
        except OSError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("the server did not start: " + proc.communicate()[1][-2000:])


def get(port: int, path: str) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", path)
    body = json.loads(conn.getresponse().read())
    conn.close()
    return body


def make_requests(kind: str, n: int, seed: int) -> list[bytes]:
    rng = np.random.default_rng(seed)
    size = 1 if kind == "single" else 16
    lengths = (lambda: rng.integers(4, 9)) if kind == "single" else (lambda: rng.integers(1, 41))
    return [json.dumps({"texts": [" ".join(rng.choice(WORDS, lengths())) for _ in range(size)]}).encode()
            for _ in range(n)]


def run_scenario(port: int, concurrency: int, kind: str, seconds: float, max_requests: int) -> dict:
    """`kind` ("single" or "16 mixed") requests to /encode from `concurrency` clients."""
    per_request = 1 if kind == "single" else 16
    result = load(port, concurrency, make_requests(kind, max_requests, seed=concurrency), per_request, seconds)
    return {"concurrency": concurrency, "kind": kind, **result}


def load(port: int, concurrency: int, bodies: list[bytes], per_request: int, seconds: float,
         route: str = "/encode") -> dict:
    """POST `bodies` (each of `per_request` texts) to `route` from `concurrency` keep-alive clients, until
    they are sent or `seconds` pass: throughput, latency per request and the batches the server formed."""
    latencies: list[float] = []
    errors = [0]
    next_index = iter(range(len(bodies)))
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.perf_counter() < deadline:
            with lock:
                i = next(next_index, None)
            if i is None:
                break
            start = time.perf_counter()
            conn.request("POST", route, bodies[i], {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            with lock:
                latencies.append(time.perf_counter() - start)
                errors[0] += response.status != 200
        conn.close()

    before = get(port, "/metadata")["batch_sizes"]
    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    after = get(port, "/metadata")["batch_sizes"]
    formed = {int(k): v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
    calls = sum(formed.values())
    lat = np.array(latencies) * 1e3
    return {"requests": len(latencies), "errors": errors[0],
            "sentences_per_sec": len(latencies) * per_request / elapsed, "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "predictor_calls": calls,
            "mean_batch": sum(k * v for k, v in formed.items()) / max(calls, 1), "largest_batch": max(formed, default=0)}


def soak(port: int, pid: int, seconds: float) -> dict:
    samples = [rss_mb(pid)]
    done = threading.Event()
    worker = threading.Thread(target=lambda: (run_scenario(port, 8, "16 mixed", seconds, 10 ** 6), done.set()))
    worker.start()
    while not done.wait(1.0):
        samples.append(rss_mb(pid))
    worker.join()
    samples.append(rss_mb(pid))
    third = max(1, len(samples) // 3)
    return {"seconds": seconds, "rss_start_mb": samples[0], "rss_first_third_max_mb": max(samples[:third]),
            "rss_last_third_max_mb": max(samples[-third:]), "rss_end_mb": samples[-1], "samples_mb": samples}


def random_model() -> str:
    from bench.infer import make_export

    folder = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    return str(make_export("tiny", folder)[1])


def measure(model_dir: str, backend: str, precision: str, args) -> tuple[list[dict], dict]:
    """Every scenario, then the soak, against one server started with `precision`."""
    proc, port = start_server(model_dir, backend, precision)
    try:
        rows = [run_scenario(port, c, kind, args.seconds, args.requests)
                for kind in ("single", "16 mixed") for c in (1, 8, 32)]
        for r in rows:
            r["rss_mb"], r["precision"] = rss_mb(proc.pid), precision
        memory = soak(port, proc.pid, args.soak) if args.soak > 0 else {}
    finally:
        proc.terminate()
        proc.wait(60)
    return rows, memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", help="exported model (default: a tiny model of random weights)")
    parser.add_argument("--backend", default="paddle", choices=("paddle", "onnxruntime", "auto"))
    parser.add_argument("--precision", default="fp32", help="fp32, bf16 or a comma-separated list (default fp32)")
    parser.add_argument("--seconds", type=float, default=8.0, help="time bound of each scenario (default 8)")
    parser.add_argument("--requests", type=int, default=3000, help="request bound of each scenario (default 3000)")
    parser.add_argument("--soak", type=float, default=60.0, help="memory soak seconds (default 60; 0 = skip)")
    args = parser.parse_args()
    model_dir = args.model_dir or random_model()
    rows, memory = [], {}
    for precision in args.precision.split(","):
        measured, memory[precision] = measure(model_dir, args.backend, precision, args)
        rows += measured
    print_table(f"infer/serve.py under load ({args.backend} backend; clients on the same 2 cores)",
                ["precision", "requests of", "concurrency", "sentences/s", "p50 ms", "p99 ms", "p99/p50",
                 "mean batch", "largest", "errors"],
                [[r["precision"], r["kind"], r["concurrency"], round(r["sentences_per_sec"], 1), round(r["p50_ms"], 2),
                  round(r["p99_ms"], 2), round(r["p99_ms"] / r["p50_ms"], 2), round(r["mean_batch"], 1),
                  r["largest_batch"], r["errors"]] for r in rows])
    by = {(r["precision"], r["kind"], r["concurrency"]): r["sentences_per_sec"] for r in rows}
    for precision in args.precision.split(","):
        for kind in ("single", "16 mixed"):
            print(f"{precision} {kind}: throughput at concurrency 32 is "
                  f"{by[precision, kind, 32] / by[precision, kind, 1]:.2f}x that at concurrency 1")
            if precision != "fp32" and ("fp32", kind, 32) in by:
                print(f"{precision} {kind}: {by[precision, kind, 32] / by['fp32', kind, 32]:.2f}x fp32's throughput "
                      f"at concurrency 32")
    for precision, m in memory.items():
        if m:
            print(f"{precision}: memory over a {args.soak:g} s soak: {m['rss_start_mb']:.0f} MB at start, highest "
                  f"{m['rss_first_third_max_mb']:.0f} MB in the first third and "
                  f"{m['rss_last_third_max_mb']:.0f} MB in the last third")
    write_json("serve", {"backend": args.backend, "scenarios": rows, "soak": memory})


if __name__ == "__main__":
    main()
