"""Serve BERT embeddings over HTTP: FastAPI + uvicorn around `Encoder` (Paddle Inference or ONNX Runtime).

    python infer/serve.py --model-dir output/inference [--host 127.0.0.1] [--port 8000]
    curl -s localhost:8000/embed -d '{"inputs": ["a crane is flying"]}'

Routes (request types and their defaults in infer/api.py), each pooling as the export's manifest says:
- POST /embed, as text-embeddings-inference: {"inputs": str | [str], "normalize": true, "truncate": false,
  "windows": false, "dimensions": null} -> [[float], ...];
- POST /v1/embeddings, as OpenAI: {"input": str | [str], "model", "encoding_format": "float" | "base64",
  "dimensions"} -> {"object": "list", "data": [{"embedding", "index"}], "model", "usage"}, normalised;
- POST /encode, this project's: {"texts": [text or [text_a, text_b]], "pooling": cls | mean | max | weighted | tokens}
  -> {"results": [{"tokens", "embedding" (or "vectors")}]};
- GET /info (model, dimensions, pooling, limits), /metrics (Prometheus), /health (200 once the predictors
  have run a warm-up call, 503 before), /live (the process answers), /metadata (the manifest).
"windows": a text over the model's maximum is embedded whole, by overlapping windows pooled into one vector.
Requests that arrive together are batched into one predictor call (infer/batcher.py); each worker thread
has its own predictor. Every error answers one line ({"error", "error_type"}; OpenAI's shape under /v1/),
its status taken from one table (`ERROR_STATUS`): no request body can cause a 5xx. With an API key
(`--api-key`, or the BERT_SERVE_API_KEY environment variable) every endpoint but /health and /live wants
`Authorization: Bearer <key>`. SIGTERM (or Ctrl-C) finishes the requests in flight, then exits 0.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import hmac
import ipaddress
import logging
import os
import signal
import socket
import sys
from importlib import metadata as package_metadata
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from pipeline.core.runtime import setup_process_for_paddle

setup_process_for_paddle()

import numpy as np  # noqa: E402
import orjson  # noqa: E402
from fastapi import Depends, FastAPI, Request  # noqa: E402
from fastapi.responses import JSONResponse, Response  # noqa: E402
from starlette.exceptions import HTTPException as StarletteHTTPException  # noqa: E402

from infer.api import (  # noqa: E402
    ENCODE_POOLINGS,
    ERROR_HEADERS,
    ERROR_STATUS,
    ErrorKind,
    RequestError,
    error_body,
    openai_response,
    parse_decode,
    parse_embed,
    parse_encode,
    parse_entities,
    parse_openai,
    parse_predict,
    parse_rerank,
    parse_tokenize,
    tokenization_error,
)
from infer.backends import BACKENDS, PRECISIONS  # noqa: E402
from infer.batcher import Batcher, QueueFull  # noqa: E402
from infer.encoder import Encoder, Output, label_scores  # noqa: E402
from infer.metrics import MetricsMiddleware, ServiceMetrics  # noqa: E402
from pipeline.core.errors import UserError, run_cli  # noqa: E402
from pipeline.core.runtime import available_cores  # noqa: E402
from pipeline.core.tokenizer import TokenizationError  # noqa: E402

API_KEY_VARIABLE = "BERT_SERVE_API_KEY"
ROUTES = frozenset({"/embed", "/embed_all", "/v1/embeddings", "/v1/models", "/encode", "/predict", "/rerank",
                    "/entities", "/tokenize", "/decode", "/info", "/metadata", "/metrics", "/health", "/live"})
log = logging.getLogger("infer.serve")


def package_version() -> str:
    """This project's version, as installed (setup.cfg is the one place it is written)."""
    try:
        return package_metadata.version("paddle-bert-pipeline")
    except package_metadata.PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def error_response(kind: ErrorKind, message: str, path: str = "") -> JSONResponse:
    return JSONResponse(error_body(kind, " ".join(message.split()), openai=path.startswith("/v1/")),
                        status_code=ERROR_STATUS[kind], headers=ERROR_HEADERS.get(kind))


class VectorsJSON(Response):
    """JSON holding numpy arrays, written by orjson: float32 values in their shortest exact form. For 32
    vectors of 384: 0.25 ms and 134 kB, against 4.9 ms and 253 kB for json.dumps of .tolist()."""

    media_type = "application/json"

    def render(self, content) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_result(encoder: Encoder, tokens: list[str], vectors: np.ndarray, pooling: str) -> dict:
    if pooling == "tokens":
        return {"tokens": tokens, "vectors": np.ascontiguousarray(vectors)}
    return {"tokens": tokens, "embedding": np.ascontiguousarray(encoder.pool(tokens, vectors, pooling))}


def encode_poolings(encoder: Encoder) -> tuple[str, ...]:
    """What /encode may ask for: `weighted` only of a model with token weights."""
    return tuple(p for p in ENCODE_POOLINGS if p != "weighted" or encoder.token_weights is not None)


def model_id(encoder: Encoder) -> str:
    """The name clients see: the published folder's, else the export folder's."""
    source = encoder.folder.manifest.get("from_hf")
    return Path(source).name if source else encoder.folder.path.resolve().name


def create_app(encoder: Encoder, workers: int = 2, max_batch: int = 32, max_wait_ms: float = 2.0,
               queue_size: int = 1024, max_texts: int = 256, max_body_bytes: int = 1 << 20,
               api_key: str | None = None, auto_truncate: bool = False):
    """The ASGI app: one Batcher over `workers` clones of `encoder`, started and stopped with the app;
    with `api_key`, every endpoint but /health and /live wants `Authorization: Bearer <api_key>`;
    `auto_truncate`: texts over the model's maximum are cut unless a request says otherwise (TEI's flag)."""
    state: dict = {}
    metrics = ServiceMetrics()
    spec, name = encoder.embedding, model_id(encoder)
    specials = encoder.vocab.specials
    warmup = ([specials.cls, specials.sep], [0, 0])

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher = Batcher([encoder.clone() for _ in range(workers)], max_batch, max_wait_ms, queue_size,
                          warmup=warmup, on_batch=metrics.batch_size.observe)
        metrics.queue_depth.set_function(batcher.jobs.qsize)
        state["batcher"] = batcher
        yield
        batcher.stop()  # uvicorn has let the requests in flight finish; the queue is empty

    app = FastAPI(title="BERT encodings", version=package_version(), lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.add_middleware(MetricsMiddleware, metrics=metrics, routes=ROUTES)

    @app.exception_handler(RequestError)
    async def request_error(request, err: RequestError):
        return error_response(err.kind, str(err), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def routing_error(request, err: StarletteHTTPException):  # unknown path or method
        kind = {404: ErrorKind.NOT_FOUND, 405: ErrorKind.METHOD_NOT_ALLOWED}.get(err.status_code, ErrorKind.VALIDATION)
        return error_response(kind, f"{request.method} {request.url.path}: {err.detail}", request.url.path)

    @app.exception_handler(Exception)
    async def unexpected(request, err):  # never a traceback page or a dead worker
        log.exception("unexpected error")
        return error_response(ErrorKind.INTERNAL, f"internal error: {type(err).__name__}", request.url.path)

    async def authorized(request: Request) -> None:
        if api_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
            raise RequestError(ErrorKind.UNAUTHORIZED, "missing or wrong API key: send Authorization: Bearer <key>")

    async def run(per_text: list[list], route: str) -> list[Output]:
        """The outputs of every item (texts, or their windows): token vectors and a head's logits, through the
        batcher, in order."""
        flat = [item for items in per_text for item in items]
        try:
            futures = state["batcher"].submit(flat)
        except QueueFull as err:
            raise RequestError(ErrorKind.OVERLOADED, f"busy: {err}; retry shortly") from None
        metrics.tokens.labels(route).inc(sum(len(tokens) for tokens, _ in flat))
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))

    def tokenized(texts: list, truncate: bool, windows: bool) -> list[list]:
        try:
            return encoder.tokenize_for_embedding(texts, truncate, windows)
        except TokenizationError as err:
            raise tokenization_error(err) from None

    @app.get("/health")
    async def health():
        """Readiness: 200 once every predictor has run its warm-up call."""
        batcher = state["batcher"]
        if batcher.warmup_error is not None:
            raise RequestError(ErrorKind.NOT_READY, f"the warm-up call failed: {batcher.warmup_error}")
        if not batcher.ready.is_set():
            raise RequestError(ErrorKind.NOT_READY, "warming up: the predictors have not run their first call yet")
        return {"status": "ok"}

    @app.get("/live")
    async def live():
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/info", dependencies=[Depends(authorized)])
    async def info():
        """What TEI's /info tells, plus this project's backend and batching."""
        return {"model_id": name, "version": package_version(), "model_dtype": encoder.precision,
                "model_type": model_type(encoder), "dimensions": spec.dimensions,
                "normalize": spec.normalize, "max_input_length": encoder.max_len, "backend": encoder.backend,
                "device": encoder.device, "tokenizer": encoder.tokenizer.kind, "max_client_batch_size": max_texts,
                "max_batch_requests": max_batch, "max_body_bytes": max_body_bytes,
                "batching": {"workers": workers, "max_batch": max_batch, "max_wait_ms": max_wait_ms,
                             "queue_size": queue_size}}

    @app.get("/metadata", dependencies=[Depends(authorized)])
    async def metadata():
        manifest = encoder.folder.manifest
        return {"version": package_version(), "model": manifest.get("model"), "max_len": encoder.max_len,
                "embedding": spec.__dict__, "backend": encoder.backend, "precision": encoder.precision,
                "tokenizer": encoder.tokenizer.kind, "vocab_size": len(encoder.vocab), "inputs": manifest.get("inputs"),
                "checkpoint_step": manifest.get("checkpoint_step"), "paddle_version": manifest.get("paddle_version"),
                "batching": {"workers": workers, "max_batch": max_batch, "max_wait_ms": max_wait_ms,
                             "queue_size": queue_size, "max_texts": max_texts, "max_body_bytes": max_body_bytes},
                "batch_sizes": dict(sorted(state["batcher"].batch_sizes.items()))}  # predictor calls by size

    @app.get("/metrics", dependencies=[Depends(authorized)])
    async def prometheus():
        return Response(metrics.render(), media_type=metrics.content_type)

    @app.post("/embed", dependencies=[Depends(authorized)])
    async def embed(request: Request):
        """TEI: {"inputs": str | [str], "normalize": true, "truncate": false} -> [[float], ...]."""
        asked = parse_embed(await read_body(request, max_body_bytes), max_texts, spec.dimensions, auto_truncate)
        per_text = tokenized(asked.texts, asked.truncate, asked.windows)
        vectors = encoder.pool_texts(per_text, vectors_of(await run(per_text, "/embed")), asked.normalize,
                                     asked.dimensions)
        return VectorsJSON(np.ascontiguousarray(vectors))

    @app.post("/embed_all", dependencies=[Depends(authorized)])
    async def embed_all(request: Request):
        """TEI: {"inputs": str | [str], "truncate": false} -> one vector per token of each text."""
        asked = parse_embed(await read_body(request, max_body_bytes), max_texts, spec.dimensions, auto_truncate)
        per_text = tokenized(asked.texts, asked.truncate, False)
        return VectorsJSON([np.ascontiguousarray(v) for v in vectors_of(await run(per_text, "/embed_all"))])

    @app.post("/tokenize", dependencies=[Depends(authorized)])
    async def tokenize_route(request: Request):
        """TEI: each text's tokens: {"id", "text", "special", "start", "stop"} (character offsets; null for the
        special tokens), as the model sees them."""
        asked = parse_tokenize(await read_body(request, max_body_bytes), max_texts)
        return [token_list(encoder, text, asked.add_special_tokens) for text in asked.texts]

    @app.post("/decode", dependencies=[Depends(authorized)])
    async def decode(request: Request):
        """TEI: {"ids": [int] | [[int]], "skip_special_tokens": true} -> the text of each list of ids."""
        asked = parse_decode(await read_body(request, max_body_bytes), max_texts, len(encoder.vocab))
        texts = [encoder.tokenizer.decode(ids, asked.skip_special_tokens) for ids in asked.ids]
        return texts if asked.batch else texts[0]

    @app.post("/v1/embeddings", dependencies=[Depends(authorized)])
    async def openai_embeddings(request: Request):
        """OpenAI: {"input": str | [str], "model": ..., "encoding_format": "float" | "base64", "dimensions": n}."""
        asked = parse_openai(await read_body(request, max_body_bytes), max_texts, spec.dimensions)
        per_text = tokenized(asked.texts, auto_truncate and not asked.windows, asked.windows)
        vectors = encoder.pool_texts(per_text, vectors_of(await run(per_text, "/v1/embeddings")), True, asked.dimensions)
        tokens = sum(len(tokens) for items in per_text for tokens, _ in items)
        # one model is served: the answer names it, whatever `model` the client sent (as TEI does)
        return VectorsJSON(openai_response(vectors, asked.encoding_format, name, tokens))

    @app.get("/v1/models", dependencies=[Depends(authorized)])
    async def openai_models():
        """OpenAI: the models this service answers with (one), as clients list them before embedding."""
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0,
                                            "owned_by": "paddle-bert-pipeline"}]}

    @app.post("/encode", dependencies=[Depends(authorized)])
    async def encode(request: Request):
        asked = parse_encode(await read_body(request, max_body_bytes), max_texts, spec.pooling,
                             encode_poolings(encoder))
        per_text = tokenized(asked.texts, asked.truncate, False)
        vectors = vectors_of(await run(per_text, "/encode"))
        return VectorsJSON({"results": [encode_result(encoder, items[0][0], v, asked.pooling)
                                        for items, v in zip(per_text, vectors)]})

    def head() -> dict:
        if encoder.head is None or encoder.head["kind"] == "tagger":
            what = "a tagger (use /entities)" if encoder.head else "an embedding model"
            raise RequestError(ErrorKind.WRONG_MODEL, f"{name} is {what}: it has no classifier or reranker head "
                                                      f"for this route")
        return encoder.head

    @app.post("/predict", dependencies=[Depends(authorized)])
    async def predict(request: Request):
        """TEI: {"inputs": text | [a, b] | [text or [a, b], ...], "raw_scores": false} -> [{"score", "label"}]
        best first (a list of those for a batch)."""
        labels = head()
        asked = parse_predict(await read_body(request, max_body_bytes), max_texts, auto_truncate)
        per_text = tokenized(asked.texts, asked.truncate, False)
        answers = [[{"score": score, "label": label} for label, score in label_scores(o.logits, labels, asked.raw_scores)]
                   for o in await run(per_text, "/predict")]
        return answers if asked.batch else answers[0]

    @app.post("/entities", dependencies=[Depends(authorized)])
    async def entities(request: Request):
        """A tagger's entities, as transformers' token-classification pipeline (and Hugging Face's hosted
        Inference API for that task) answers: {"inputs": text | [text]} -> [{"entity_group", "score", "word",
        "start", "end"}] (a list of those for a list); a text over the maximum is tagged whole, by windows."""
        if encoder.head is None or encoder.head["kind"] != "tagger":
            raise RequestError(ErrorKind.WRONG_MODEL, f"{name} is not a tagger: /entities needs a model fine-tuned "
                                                      f"with train.objective=tag")
        texts, batch = parse_entities(await read_body(request, max_body_bytes), max_texts)
        try:
            spans, owners, items = encoder.tag_windows(texts)
        except TokenizationError as err:
            raise tokenization_error(err) from None
        answers = encoder.group_entities(texts, spans, owners, await run([[item] for item in items], "/entities"))
        return answers if batch else answers[0]

    @app.post("/rerank", dependencies=[Depends(authorized)])
    async def rerank(request: Request):
        """TEI: {"query", "texts", "raw_scores": false, "return_text": false} -> [{"index", "score", "text"?}]
        best first; a one-output model's (a cross-encoder's) scores of each (query, text) pair."""
        labels = head()
        if len(labels["labels"]) != 1:
            raise RequestError(ErrorKind.WRONG_MODEL, f"{name} is a classifier of {len(labels['labels'])} labels, "
                                                      f"not a reranker (one output): use /predict")
        asked = parse_rerank(await read_body(request, max_body_bytes), max_texts, auto_truncate)
        per_text = tokenized([(asked.query, text) for text in asked.texts], asked.truncate, False)
        outputs = await run(per_text, "/rerank")
        scores = [label_scores(o.logits, labels, asked.raw_scores)[0][1] for o in outputs]
        ranked = sorted(range(len(scores)), key=lambda i: -scores[i])
        return [{"index": i, "score": scores[i], **({"text": asked.texts[i]} if asked.return_text else {})}
                for i in ranked]

    return app


def token_list(encoder: Encoder, text: str, specials: bool) -> list[dict]:
    """TEI's tokens of `text`: its pieces with their character offsets, between <cls> and <sep> if asked."""
    vocab = encoder.vocab
    pieces = [{"id": vocab[token], "text": vocab.idx_to_token[vocab[token]], "special": False, "start": start, "stop": stop}
              for token, start, stop in encoder.tokenizer.spans(text)]
    if not specials:
        return pieces
    cls, sep = vocab.specials.cls, vocab.specials.sep
    return ([{"id": vocab[cls], "text": cls, "special": True, "start": None, "stop": None}] + pieces +
            [{"id": vocab[sep], "text": sep, "special": True, "start": None, "stop": None}])


def vectors_of(outputs: list[Output]) -> list[np.ndarray]:
    return [output.vectors for output in outputs]


def model_type(encoder: Encoder) -> dict:
    """TEI's model_type: an embedding model's pooling, or a classifier's, reranker's or tagger's labels."""
    head = encoder.head
    if head is None:
        return {"embedding": {"pooling": encoder.embedding.pooling}}
    id2label = {str(i): label for i, label in enumerate(head["labels"])}
    return {head["kind"]: {"id2label": id2label, "label2id": {label: int(i) for i, label in id2label.items()}}}


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
    p = argparse.ArgumentParser(description="Serve BERT embeddings over HTTP (FastAPI + uvicorn, Paddle Inference or "
                                            "ONNX Runtime, dynamic batching): POST /embed (text-embeddings-inference), "
                                            "POST /v1/embeddings (OpenAI), POST /encode (token vectors); GET /info, "
                                            "/metrics (Prometheus), /health (ready), /live, /metadata.")
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
    p.add_argument("--auto-truncate", action="store_true",
                   help="cut texts over the model's maximum instead of answering 422, unless a request says "
                        '"truncate": false (as TEI\'s flag); /v1/embeddings follows it too')
    p.add_argument("--device", default="auto", choices=("auto", "gpu", "cpu"), help="as in infer/encode.py")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="auto (default): ONNX Runtime on CPU when the export has encoder.onnx (export/save.py "
                        "--onnx) and onnxruntime is installed, else Paddle Inference; or name one")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS,
                   help="as in infer/encode.py: bf16 on CPUs with bf16 units (oneDNN), fp16 with TensorRT on a GPU, "
                        "int8 in ONNX Runtime (export/save.py --int8)")
    access = p.add_argument_group("access")
    access.add_argument("--api-key", help=f"require Authorization: Bearer KEY on every endpoint but /health and /live; "
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


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on host:port, as uvicorn would open it; a port in use (or a host not of this
    machine) is one line."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as err:
        reason = "is in use (another program listens there)" if err.errno == errno.EADDRINUSE else \
            f"cannot be opened ({err.strerror or err})"
        raise UserError(f"port {port} on {host} {reason}: choose another with --port") from None
    sock.set_inheritable(True)
    return sock


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    args = build_parser().parse_args(argv)
    # one log format for every line, whichever runtime loads (Paddle's import sets up logging of its own)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
                        force=True)
    for name in ("max_batch", "queue_size", "max_texts", "max_body_kb"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1")
    if args.workers < 0 or args.max_wait_ms < 0:
        raise UserError("--workers and --max-wait-ms cannot be negative")
    api_key = api_key_of(args)
    listening = listen(args.host, args.port)  # before the model loads: a port in use is one line, at once
    workers = args.workers or max(1, available_cores() // 2)
    # one worker: the Encoder's own choice per call (one thread for small calls, every core for batches);
    # several: each its share of the cores
    threads = max(1, available_cores() // workers) if workers > 1 else 0
    encoder = Encoder(model_dir=args.model_dir, device=args.device, threads=threads, verbose=args.verbose,
                      backend=args.backend, precision=args.precision)
    app = create_app(encoder, workers=workers, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                     queue_size=args.queue_size, max_texts=args.max_texts, max_body_bytes=args.max_body_kb * 1024,
                     api_key=api_key, auto_truncate=args.auto_truncate)
    log.info("serving %s on http://%s:%d (%d worker(s) x %s thread(s), %s, %s)", args.model_dir, args.host, args.port,
             workers, threads or "auto", encoder.precision, "API key required" if api_key else "no API key")
    # uvicorn drains on SIGTERM/SIGINT, then raises the signal again under the handlers found at start:
    # with these, that ends in a normal exit 0 instead of a death by signal
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: None)
    config = uvicorn.Config(app, log_level="info" if args.verbose else "warning", access_log=args.verbose,
                            timeout_graceful_shutdown=30, log_config=None)
    uvicorn.Server(config).run(sockets=[listening])
    log.info("stopped")
    return 0


if __name__ == "__main__":
    run_cli(main)
