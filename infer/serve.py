"""Serve BERT encodings over HTTP: FastAPI + uvicorn around the Paddle Inference predictor.

    python infer/serve.py --model-dir output/inference [--host 127.0.0.1] [--port 8000]
    curl -s localhost:8000/encode -d '{"texts": ["a crane is flying"], "pooling": "cls"}'

POST /encode {"texts": [text or [text_a, text_b], ...], "pooling": "cls" | "mean" | "tokens",
"truncate": false} answers {"results": [{"tokens": [...], "embedding": [...]}, ...]} in input order
("vectors", one per token, with "tokens" pooling). GET /health, GET /metadata (the export's manifest).
Requests that arrive together are batched into one predictor call (infer/batcher.py); each worker thread
has its own predictor. Bad requests get a 4xx with a one-line JSON error; a full queue a 503 with
Retry-After. SIGTERM (or Ctrl-C) finishes the requests in flight, then exits 0.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from pipeline.runtime import prepare_process_for_paddle

prepare_process_for_paddle()

import numpy as np  # noqa: E402
from fastapi import FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402

from infer.batcher import Batcher, QueueFull  # noqa: E402
from infer.predictor import Encoder  # noqa: E402
from pipeline.errors import UserError, run_cli  # noqa: E402
from pipeline.runtime import available_cores  # noqa: E402
from pipeline.tokenizer import tokenize  # noqa: E402

POOLINGS = ("cls", "mean", "tokens")
VERSION = "0.1.0"
log = logging.getLogger("infer.serve")


class BadRequest(Exception):
    """A client error: answered with `status` and a one-line JSON message."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def parse_request(body: bytes, max_texts: int) -> tuple[list, str, bool]:
    """(texts, pooling, truncate) from a JSON body, or BadRequest saying what is wrong."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the body is not valid JSON") from None
    if not isinstance(request, dict):
        raise BadRequest('the body must be a JSON object like {"texts": ["a crane is flying"]}')
    unknown = set(request) - {"texts", "pooling", "truncate"}
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))} (known: texts, pooling, truncate)")
    texts, pooling, truncate = request.get("texts"), request.get("pooling", "cls"), request.get("truncate", False)
    if not isinstance(texts, list) or not texts:
        raise BadRequest('"texts" must be a non-empty list of strings or [text_a, text_b] pairs')
    if len(texts) > max_texts:
        raise BadRequest(f'"texts" holds {len(texts)} texts, over the limit of {max_texts} per request', 413)
    for i, text in enumerate(texts):
        pair = isinstance(text, list) and len(text) == 2 and all(isinstance(t, str) for t in text)
        if not (isinstance(text, str) or pair):
            raise BadRequest(f'texts[{i}] must be a string or a [text_a, text_b] pair of strings')
    if pooling not in POOLINGS:
        raise BadRequest(f'"pooling" must be one of {", ".join(POOLINGS)}, got {pooling!r}')
    if not isinstance(truncate, bool):
        raise BadRequest('"truncate" must be true or false')
    return [tuple(t) if isinstance(t, list) else t for t in texts], pooling, truncate


def result(tokens: list[str], vectors: np.ndarray, pooling: str) -> dict:
    if pooling == "tokens":
        return {"tokens": tokens, "vectors": vectors.tolist()}
    embedding = vectors[0] if pooling == "cls" else vectors.mean(axis=0)
    return {"tokens": tokens, "embedding": embedding.tolist()}


def create_app(encoder: Encoder, workers: int = 2, max_batch: int = 32, max_wait_ms: float = 2.0,
               queue_size: int = 1024, max_texts: int = 256, max_body_bytes: int = 1 << 20):
    """The ASGI app: one Batcher over `workers` clones of `encoder`, started and stopped with the app."""
    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state["batcher"] = Batcher([encoder.clone() for _ in range(workers)], max_batch, max_wait_ms, queue_size)
        yield
        state["batcher"].stop()  # uvicorn has let the requests in flight finish; the queue is empty

    app = FastAPI(title="BERT encodings", version=VERSION, lifespan=lifespan, docs_url=None, redoc_url=None)

    def error(message: str, status: int, headers: dict | None = None) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.exception_handler(Exception)
    async def unexpected(request, err):  # noqa: ARG001 - never a traceback page or a dead worker
        log.exception("unexpected error")
        return error(f"internal error: {type(err).__name__}", 500)

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metadata")
    async def metadata():
        manifest = encoder.folder.manifest
        return {"version": VERSION, "model": manifest.get("model"), "max_len": encoder.max_len,
                "backend": encoder.backend, "tokenizer": encoder.tokenizer.kind, "vocab_size": len(encoder.vocab), "inputs": manifest.get("inputs"),
                "checkpoint_step": manifest.get("checkpoint_step"), "paddle_version": manifest.get("paddle_version"),
                "batching": {"workers": workers, "max_batch": max_batch, "max_wait_ms": max_wait_ms,
                             "queue_size": queue_size, "max_texts": max_texts, "max_body_bytes": max_body_bytes},
                "batch_sizes": dict(sorted(state["batcher"].batch_sizes.items()))}  # predictor calls by size

    @app.post("/encode")
    async def encode(request: Request):
        try:
            body = await read_body(request, max_body_bytes)
            texts, pooling, truncate = parse_request(body, max_texts)
            try:
                items = [tokenize(encoder.tokenizer, t, encoder.max_len, truncate) for t in texts]
            except UserError as err:
                raise BadRequest(str(err), 422) from None
            futures = state["batcher"].submit(items)
        except BadRequest as err:
            return error(str(err), err.status)
        except QueueFull as err:
            return error(f"busy: {err}; retry shortly", 503, {"Retry-After": "1"})
        vectors = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        return {"results": [result(item[0], v, pooling) for item, v in zip(items, vectors)]}

    return app


async def read_body(request, limit: int) -> bytes:
    """The body, refused (413) once it is over `limit` bytes, declared or not."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise BadRequest(f"the body is over the limit of {limit} bytes", 413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"the body is over the limit of {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Serve BERT encodings over HTTP (FastAPI + uvicorn, Paddle Inference, "
                                            "dynamic batching). POST /encode, GET /health, GET /metadata.")
    p.add_argument("--model-dir", default="output/inference", help="exported model (default: output/inference)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument("--workers", type=int, default=0, help="predictor threads; 0 (default) = one per 2 cores, at least 1")
    p.add_argument("--max-batch", type=int, default=32, help="most texts in one predictor call (default 32)")
    p.add_argument("--max-wait-ms", type=float, default=2.0,
                   help="how long a worker waits for more texts after the first (default 2 ms)")
    p.add_argument("--queue-size", type=int, default=1024, help="texts waiting before requests get 503 (default 1024)")
    p.add_argument("--max-texts", type=int, default=256, help="most texts in one request (default 256)")
    p.add_argument("--max-body-kb", type=int, default=1024, help="largest request body in KiB (default 1024)")
    p.add_argument("--device", default="auto", choices=("auto", "gpu", "cpu"), help="as in infer/encode.py")
    p.add_argument("--backend", default="auto", choices=("auto", "paddle", "onnxruntime"),
                   help="auto (default): ONNX Runtime on CPU when the export has encoder.onnx (export/save.py "
                        "--onnx) and onnxruntime is installed, else Paddle Inference; or name one")
    p.add_argument("--verbose", action="store_true", help="log every request and the predictor's own lines")
    return p


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    args = build_parser().parse_args(argv)
    for name in ("max_batch", "queue_size", "max_texts", "max_body_kb"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if args.workers < 0 or args.max_wait_ms < 0:
        raise UserError("--workers and --max-wait-ms cannot be negative")
    workers = args.workers or max(1, available_cores() // 2)
    threads = max(1, available_cores() // workers)
    encoder = Encoder(model_dir=args.model_dir, device=args.device, threads=threads, verbose=args.verbose,
                      backend=args.backend)
    app = create_app(encoder, workers=workers, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                     queue_size=args.queue_size, max_texts=args.max_texts, max_body_bytes=args.max_body_kb * 1024)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    log.info("serving %s on http://%s:%d (%d worker(s) x %d thread(s))", args.model_dir, args.host, args.port,
             workers, threads)
    # uvicorn drains on SIGTERM/SIGINT, then raises the signal again under the handlers found at start:
    # with these, that ends in a normal exit 0 instead of a death by signal
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    uvicorn.run(app, host=args.host, port=args.port, log_level="info" if args.verbose else "warning",
                access_log=args.verbose, timeout_graceful_shutdown=30)
    log.info("stopped")
    return 0


if __name__ == "__main__":
    run_cli(main)
