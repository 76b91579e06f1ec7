"""Serve BERT encodings over HTTP: FastAPI + uvicorn around `Encoder` (Paddle Inference or ONNX Runtime).

    python infer/serve.py --model-dir output/inference [--host 127.0.0.1] [--port 8000]
    curl -s localhost:8000/encode -d '{"texts": ["a crane is flying"], "pooling": "cls"}'

POST /encode {"texts": [text or [text_a, text_b], ...], "pooling": "cls" | "mean" | "tokens",
"truncate": false} answers {"results": [{"tokens": [...], "embedding": [...]}, ...]} in input order
("vectors", one per token, with "tokens" pooling). GET /health, GET /metadata (the export's manifest).
Requests that arrive together are batched into one predictor call (infer/batcher.py); each worker thread
has its own predictor. Every error answers {"error": one line, "error_type": kind}, its status taken from
one table (`ERROR_STATUS`): no request body can cause a 5xx. With an API key (`--api-key`, or the
BERT_SERVE_API_KEY environment variable) every endpoint but /health wants `Authorization: Bearer <key>`.
SIGTERM (or Ctrl-C) finishes the requests in flight, then exits 0.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import os
import signal
import sys
from enum import Enum
from importlib import metadata as package_metadata
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from pipeline.runtime import setup_process_for_paddle

setup_process_for_paddle()

import numpy as np  # noqa: E402
from fastapi import Depends, FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: E402

from infer.batcher import Batcher, QueueFull  # noqa: E402
from infer.predictor import Encoder  # noqa: E402
from pipeline.errors import UserError, run_cli  # noqa: E402
from pipeline.runtime import available_cores  # noqa: E402
from pipeline.tokenizer import tokenize  # noqa: E402

POOLINGS = ("cls", "mean", "tokens")
API_KEY_VARIABLE = "BERT_SERVE_API_KEY"
log = logging.getLogger("infer.serve")


def package_version() -> str:
    """This project's version, as installed (setup.cfg is the one place it is written)."""
    try:
        return package_metadata.version("paddle-bert-pipeline")
    except package_metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


class ErrorKind(str, Enum):
    INVALID_BODY = "invalid_body"      # not JSON, nested too deeply
    VALIDATION = "validation"          # JSON of the wrong shape or types
    TOO_LARGE = "too_large"            # over the body or texts-per-request limit
    TOKENIZATION = "tokenization"      # an empty text, a text over max_len
    UNAUTHORIZED = "unauthorized"      # no or a wrong API key
    NOT_FOUND = "not_found"            # no such endpoint
    METHOD_NOT_ALLOWED = "method_not_allowed"
    OVERLOADED = "overloaded"          # the queue is full, or the service is stopping
    INTERNAL = "internal"              # a bug: logged with its traceback


# The one place where an error kind becomes an HTTP status (as text-embeddings-inference's ErrorType).
ERROR_STATUS = {ErrorKind.INVALID_BODY: 400, ErrorKind.VALIDATION: 400, ErrorKind.TOO_LARGE: 413,
                ErrorKind.TOKENIZATION: 422, ErrorKind.UNAUTHORIZED: 401, ErrorKind.NOT_FOUND: 404,
                ErrorKind.METHOD_NOT_ALLOWED: 405, ErrorKind.OVERLOADED: 503,
                ErrorKind.INTERNAL: 500}
ERROR_HEADERS = {ErrorKind.UNAUTHORIZED: {"WWW-Authenticate": "Bearer"}, ErrorKind.OVERLOADED: {"Retry-After": "1"}}


class RequestError(Exception):
    """An error answered to the client: its kind decides the status, the message is one line."""

    def __init__(self, kind: ErrorKind, message: str):
        super().__init__(message)
        self.kind = kind


def error_response(kind: ErrorKind, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(message.split()), "error_type": kind.value},
                        status_code=ERROR_STATUS[kind], headers=ERROR_HEADERS.get(kind))


def parse_request(body: bytes, max_texts: int) -> tuple[list, str, bool]:
    """(texts, pooling, truncate) from a JSON body, or a RequestError saying what is wrong."""
    invalid, wrong = ErrorKind.INVALID_BODY, ErrorKind.VALIDATION
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError):  # ValueError also covers integers of over 4,300 digits
        raise RequestError(invalid, "the body is not valid JSON") from None
    except RecursionError:  # the C parser's answer to [[[[...]]]]: a 500 before
        raise RequestError(invalid, "the body is nested too deeply") from None
    if not isinstance(request, dict):
        raise RequestError(wrong, 'the body must be a JSON object like {"texts": ["a crane is flying"]}')
    unknown = set(request) - {"texts", "pooling", "truncate"}
    if unknown:
        raise RequestError(wrong, f"unknown field(s): {', '.join(sorted(unknown))[:200]} (known: texts, pooling, truncate)")
    texts, pooling, truncate = request.get("texts"), request.get("pooling", "cls"), request.get("truncate", False)
    if not isinstance(texts, list) or not texts:
        raise RequestError(wrong, '"texts" must be a non-empty list of strings or [text_a, text_b] pairs')
    if len(texts) > max_texts:
        raise RequestError(ErrorKind.TOO_LARGE, f'"texts" holds {len(texts)} texts, over the limit of {max_texts} per request')
    for i, text in enumerate(texts):
        pair = isinstance(text, list) and len(text) == 2 and all(isinstance(t, str) for t in text)
        if not (isinstance(text, str) or pair):
            raise RequestError(wrong, f'texts[{i}] must be a string or a [text_a, text_b] pair of strings')
        if not all(is_unicode(t) for t in ([text] if isinstance(text, str) else text)):
            raise RequestError(wrong, f"texts[{i}] holds a lone surrogate escape (\\ud800-\\udfff): not Unicode text")
    if not isinstance(pooling, str) or pooling not in POOLINGS:
        raise RequestError(wrong, f'"pooling" must be one of {", ".join(POOLINGS)}, got {str(pooling)[:40]!r}')
    if not isinstance(truncate, bool):
        raise RequestError(wrong, '"truncate" must be true or false')
    return [tuple(t) if isinstance(t, list) else t for t in texts], pooling, truncate


def is_unicode(text: str) -> bool:
    """False for a string with a lone surrogate (JSON allows the escape "\\ud800"; UTF-8 cannot hold it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def result(tokens: list[str], vectors: np.ndarray, pooling: str) -> dict:
    if pooling == "tokens":
        return {"tokens": tokens, "vectors": vectors.tolist()}
    embedding = vectors[0] if pooling == "cls" else vectors.mean(axis=0)
    return {"tokens": tokens, "embedding": embedding.tolist()}


def create_app(encoder: Encoder, workers: int = 2, max_batch: int = 32, max_wait_ms: float = 2.0,
               queue_size: int = 1024, max_texts: int = 256, max_body_bytes: int = 1 << 20,
               api_key: str | None = None):
    """The ASGI app: one Batcher over `workers` clones of `encoder`, started and stopped with the app;
    with `api_key`, every endpoint but /health wants `Authorization: Bearer <api_key>`."""
    state: dict = {}

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state["batcher"] = Batcher([encoder.clone() for _ in range(workers)], max_batch, max_wait_ms, queue_size)
        yield
        state["batcher"].stop()  # uvicorn has let the requests in flight finish; the queue is empty

    app = FastAPI(title="BERT encodings", version=package_version(), lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)

    @app.exception_handler(RequestError)
    async def request_error(request, err: RequestError):  # noqa: ARG001
        return error_response(err.kind, str(err))

    @app.exception_handler(StarletteHTTPException)
    async def routing_error(request, err: StarletteHTTPException):  # noqa: ARG001 - unknown path or method
        kind = {404: ErrorKind.NOT_FOUND, 405: ErrorKind.METHOD_NOT_ALLOWED}.get(err.status_code, ErrorKind.VALIDATION)
        return error_response(kind, f"{request.method} {request.url.path}: {err.detail}")

    @app.exception_handler(Exception)
    async def unexpected(request, err):  # noqa: ARG001 - never a traceback page or a dead worker
        log.exception("unexpected error")
        return error_response(ErrorKind.INTERNAL, f"internal error: {type(err).__name__}")

    async def authorized(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
            raise RequestError(ErrorKind.UNAUTHORIZED, "missing or wrong API key: send Authorization: Bearer <key>")

    @app.get("/health")
    async def health():
        return {"status": "ok"}

    @app.get("/metadata", dependencies=[Depends(authorized)])
    async def metadata():
        manifest = encoder.folder.manifest
        return {"version": package_version(), "model": manifest.get("model"), "max_len": encoder.max_len,
                "backend": encoder.backend, "precision": encoder.precision, "tokenizer": encoder.tokenizer.kind,
                "vocab_size": len(encoder.vocab), "inputs": manifest.get("inputs"),
                "checkpoint_step": manifest.get("checkpoint_step"), "paddle_version": manifest.get("paddle_version"),
                "batching": {"workers": workers, "max_batch": max_batch, "max_wait_ms": max_wait_ms,
                             "queue_size": queue_size, "max_texts": max_texts, "max_body_bytes": max_body_bytes},
                "batch_sizes": dict(sorted(state["batcher"].batch_sizes.items()))}  # predictor calls by size

    @app.post("/encode", dependencies=[Depends(authorized)])
    async def encode(request: Request):
        body = await read_body(request, max_body_bytes)
        texts, pooling, truncate = parse_request(body, max_texts)
        try:
            items = [tokenize(encoder.tokenizer, t, encoder.max_len, truncate) for t in texts]
        except UserError as err:
            raise RequestError(ErrorKind.TOKENIZATION, str(err)) from None
        try:
            futures = state["batcher"].submit(items)
        except QueueFull as err:
            raise RequestError(ErrorKind.OVERLOADED, f"busy: {err}; retry shortly") from None
        vectors = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        return {"results": [result(item[0], v, pooling) for item, v in zip(items, vectors)]}

    return app


async def read_body(request, limit: int) -> bytes:
    """The body, refused (413) once it is over `limit` bytes, declared or not."""
    declared = request.headers.get("content-length")
    too_large = RequestError(ErrorKind.TOO_LARGE, f"the body is over the limit of {limit} bytes")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Serve BERT encodings over HTTP (FastAPI + uvicorn, Paddle Inference or "
                                            "ONNX Runtime, dynamic batching). POST /encode, GET /health, GET /metadata.")
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
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"),
                   help="as in infer/encode.py: bf16 on CPUs with bf16 units (oneDNN), fp16 with TensorRT on a GPU")
    access = p.add_argument_group("access")
    access.add_argument("--api-key", help=f"require Authorization: Bearer KEY on every endpoint but /health; "
                                          f"prefer the {API_KEY_VARIABLE} environment variable, which stays out "
                                          f"of the process list and shell history")
    access.add_argument("--allow-unauthenticated", action="store_true",
                        help="listen beyond loopback (say --host 0.0.0.0) without an API key: anyone who can "
                             "reach the port may call it")
    p.add_argument("--verbose", action="store_true", help="log every request and the predictor's own lines")
    return p


def is_loopback(host: str) -> bool:
    """True for addresses only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def api_key_of(args: argparse.Namespace) -> str | None:
    """The API key from --api-key or the environment; refuses an open port without one."""
    key = args.api_key or os.environ.get(API_KEY_VARIABLE) or None
    if key is not None and (len(key) < 16 or key != key.strip()):
        raise UserError("the API key must be at least 16 characters, without surrounding spaces "
                        "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    if key is None and not is_loopback(args.host) and not args.allow_unauthenticated:
        raise UserError(f"--host {args.host} opens the service beyond this machine: set an API key "
                        f"({API_KEY_VARIABLE}=... or --api-key), or pass --allow-unauthenticated")
    return key


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    args = build_parser().parse_args(argv)
    for name in ("max_batch", "queue_size", "max_texts", "max_body_kb"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if args.workers < 0 or args.max_wait_ms < 0:
        raise UserError("--workers and --max-wait-ms cannot be negative")
    api_key = api_key_of(args)
    workers = args.workers or max(1, available_cores() // 2)
    threads = max(1, available_cores() // workers)
    encoder = Encoder(model_dir=args.model_dir, device=args.device, threads=threads, verbose=args.verbose,
                      backend=args.backend, precision=args.precision)
    app = create_app(encoder, workers=workers, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                     queue_size=args.queue_size, max_texts=args.max_texts, max_body_bytes=args.max_body_kb * 1024,
                     api_key=api_key)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    log.info("serving %s on http://%s:%d (%d worker(s) x %d thread(s), %s, %s)", args.model_dir, args.host, args.port,
             workers, threads, encoder.precision, "API key required" if api_key else "no API key")
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
