"""The service's request types and error table: this project's /encode, TEI's /embed, /predict and /rerank,
and OpenAI's /v1/embeddings, each a typed request with its defaults beside its fields (as
text-embeddings-inference's).

Every wrong body becomes a `RequestError` of one kind; `ERROR_STATUS` is the one place where a kind becomes
an HTTP status, so no body can cause a 5xx. No FastAPI here: the parsers take bytes and return dataclasses.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from pipeline.core.export_format import POOLINGS
from pipeline.core.tokenizer import Text, TextTooLong, TokenizationError

ENCODE_POOLINGS = (*POOLINGS, "tokens")  # /encode may also answer every token's vector


class ErrorKind(str, Enum):
    INVALID_BODY = "invalid_body"      # not JSON, nested too deeply
    VALIDATION = "validation"          # JSON of the wrong shape or types
    TOO_LARGE = "too_large"            # over the body or texts-per-request limit
    TOKENIZATION = "tokenization"      # an empty text, a text over the model's maximum
    UNAUTHORIZED = "unauthorized"      # no or a wrong API key
    NOT_FOUND = "not_found"            # no such endpoint
    METHOD_NOT_ALLOWED = "method_not_allowed"
    OVERLOADED = "overloaded"          # the queue is full, or the service is stopping
    NOT_READY = "not_ready"            # the predictors have not run their warm-up call yet
    WRONG_MODEL = "wrong_model_type"   # a route the served model cannot answer (/rerank of a classifier)
    INTERNAL = "internal"              # a bug: logged with its traceback


ERROR_STATUS = {ErrorKind.INVALID_BODY: 400, ErrorKind.VALIDATION: 400, ErrorKind.TOO_LARGE: 413,
                ErrorKind.TOKENIZATION: 422, ErrorKind.UNAUTHORIZED: 401, ErrorKind.NOT_FOUND: 404,
                ErrorKind.METHOD_NOT_ALLOWED: 405, ErrorKind.OVERLOADED: 503, ErrorKind.NOT_READY: 503,
                ErrorKind.WRONG_MODEL: 424, ErrorKind.INTERNAL: 500}
ERROR_HEADERS = {ErrorKind.UNAUTHORIZED: {"WWW-Authenticate": "Bearer"}, ErrorKind.OVERLOADED: {"Retry-After": "1"},
                 ErrorKind.NOT_READY: {"Retry-After": "1"}}


class RequestError(Exception):
    """An error answered to the client: its kind decides the status, the message is one line."""

    def __init__(self, kind: ErrorKind, message: str):
        super().__init__(" ".join(message.split()))
        self.kind = kind


def error_body(kind: ErrorKind, message: str, openai: bool = False) -> dict:
    """TEI's error shape ({"error", "error_type"}), or OpenAI's for its routes."""
    if openai:
        return {"error": {"message": message, "type": kind.value, "param": None, "code": None}}
    return {"error": message, "error_type": kind.value}


def tokenization_error(err: TokenizationError) -> RequestError:
    """The tokenizer's refusal in the words of an HTTP client."""
    if isinstance(err, TextTooLong):
        return RequestError(ErrorKind.TOKENIZATION, f"a text is {err.length} tokens long with <cls>/<sep>, over the "
                                                    f"model's max_len {err.max_len}: shorten it, or send "
                                                    f'"truncate": true (or "windows": true to embed it whole)')
    return RequestError(ErrorKind.TOKENIZATION, str(err))


@dataclass(frozen=True)
class EncodeRequest:
    """POST /encode: this project's own route."""

    texts: list[Text]
    pooling: str  # default: the model's own pooling
    truncate: bool = False


@dataclass(frozen=True)
class EmbedRequest:
    """POST /embed, as text-embeddings-inference: `inputs` is one text or a list; answers [[float]]."""

    texts: list[str]
    normalize: bool = True
    truncate: bool = False
    windows: bool = False  # embed a text over the model's maximum whole, by overlapping windows
    dimensions: int | None = None


@dataclass(frozen=True)
class OpenAIRequest:
    """POST /v1/embeddings, as OpenAI's: the vectors are always normalised, as OpenAI's are."""

    texts: list[str]
    model: str | None = None
    encoding_format: str = "float"
    dimensions: int | None = None
    windows: bool = False


def load_object(body: bytes, example: str) -> dict:
    """The body as a JSON object, or the RequestError that says why not."""
    try:
        request = json.loads(body)
    except (ValueError, UnicodeDecodeError):  # ValueError also covers integers of over 4,300 digits
        raise RequestError(ErrorKind.INVALID_BODY, "the body is not valid JSON") from None
    except RecursionError:  # the C parser's answer to [[[[...]]]]
        raise RequestError(ErrorKind.INVALID_BODY, "the body is nested too deeply") from None
    if not isinstance(request, dict):
        raise RequestError(ErrorKind.VALIDATION, f"the body must be a JSON object like {example}")
    return request


def check_fields(request: dict, known: tuple[str, ...]) -> None:
    unknown = set(request) - set(known)
    if unknown:
        raise RequestError(ErrorKind.VALIDATION, f"unknown field(s): {', '.join(sorted(unknown))[:200]} "
                                                 f"(known: {', '.join(known)})")


def is_unicode(text: str) -> bool:
    """False for a string with a lone surrogate (JSON allows the escape "\\ud800"; UTF-8 cannot hold it)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text_list(value: Any, name: str, max_texts: int, pairs: bool = False) -> list[Text]:
    """A non-empty list of texts (or [A, B] pairs where `pairs`) from a field's value."""
    what = "strings or [text_a, text_b] pairs" if pairs else "strings"
    if not isinstance(value, list) or not value:
        raise RequestError(ErrorKind.VALIDATION, f'"{name}" must be a non-empty list of {what}')
    if len(value) > max_texts:
        raise RequestError(ErrorKind.TOO_LARGE, f'"{name}" holds {len(value)} texts, over the limit of {max_texts} '
                                                f'per request')
    texts: list[Text] = []
    for i, text in enumerate(value):
        ids = isinstance(text, list) and text and all(isinstance(t, int) and not isinstance(t, bool) for t in text)
        if not pairs and ((isinstance(text, int) and not isinstance(text, bool)) or ids):
            raise RequestError(ErrorKind.VALIDATION, f'{name}[{i}]: token ids are not accepted; send text')
        pair = pairs and isinstance(text, list) and len(text) == 2 and all(isinstance(t, str) for t in text)
        if not (isinstance(text, str) or pair):
            raise RequestError(ErrorKind.VALIDATION, f'{name}[{i}] must be a string' +
                               (" or a [text_a, text_b] pair of strings" if pairs else ""))
        if not all(is_unicode(t) for t in ([text] if isinstance(text, str) else text)):
            raise RequestError(ErrorKind.VALIDATION, f"{name}[{i}] holds a lone surrogate escape (\\ud800-\\udfff): "
                                                     f"not Unicode text")
        texts.append(tuple(text) if isinstance(text, list) else text)
    return texts


def flag(request: dict, name: str, default: bool) -> bool:
    value = request.get(name, default)
    if not isinstance(value, bool):
        raise RequestError(ErrorKind.VALIDATION, f'"{name}" must be true or false')
    return value


def dimensions_of(request: dict, hidden: int) -> int | None:
    value = request.get("dimensions")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hidden):
        raise RequestError(ErrorKind.VALIDATION, f'"dimensions" must be a whole number from 1 to {hidden}')
    return value


def parse_encode(body: bytes, max_texts: int, default_pooling: str,
                 poolings: tuple[str, ...] = ENCODE_POOLINGS) -> EncodeRequest:
    request = load_object(body, '{"texts": ["a crane is flying"]}')
    check_fields(request, ("texts", "pooling", "truncate"))
    texts = text_list(request.get("texts"), "texts", max_texts, pairs=True)
    pooling = request.get("pooling", default_pooling)
    if not isinstance(pooling, str) or pooling not in poolings:
        raise RequestError(ErrorKind.VALIDATION, f'"pooling" must be one of {", ".join(poolings)}, '
                                                 f'got {str(pooling)[:40]!r}')
    return EncodeRequest(texts, pooling, flag(request, "truncate", False))


@dataclass(frozen=True)
class PredictRequest:
    """POST /predict (TEI): a text, an [A, B] pair, or a list of either."""

    texts: list[Text]
    batch: bool  # answer a list of answers (the input was a list of texts or pairs)
    raw_scores: bool = False
    truncate: bool = False


@dataclass(frozen=True)
class RerankRequest:
    """POST /rerank (TEI): the texts ranked by their relevance to the query."""

    query: str
    texts: list[str]
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool = False


def truncation_direction(request: dict) -> None:
    if request.get("truncation_direction", "Right") not in ("Right", "right"):
        raise RequestError(ErrorKind.VALIDATION, '"truncation_direction" must be "Right" (texts are cut at the end)')


def parse_predict(body: bytes, max_texts: int, auto_truncate: bool = False) -> PredictRequest:
    """TEI's shapes: "text"; ["a", "b"] (one pair); or a list of texts and [a, b] pairs (a batch)."""
    request = load_object(body, '{"inputs": "a crane is flying"}')
    check_fields(request, ("inputs", "raw_scores", "truncate", "truncation_direction"))
    truncation_direction(request)
    inputs = request.get("inputs")
    one_pair = isinstance(inputs, list) and len(inputs) == 2 and all(isinstance(t, str) for t in inputs)
    single = isinstance(inputs, str) or one_pair
    if not single and isinstance(inputs, list):  # TEI's batch of single texts: [["a"], ["b"]]
        inputs = [t[0] if isinstance(t, list) and len(t) == 1 and isinstance(t[0], str) else t for t in inputs]
    texts = text_list([inputs] if single else inputs, "inputs", max_texts, pairs=True)
    return PredictRequest(texts, not single, flag(request, "raw_scores", False),
                          flag(request, "truncate", auto_truncate))


def parse_rerank(body: bytes, max_texts: int, auto_truncate: bool = False) -> RerankRequest:
    request = load_object(body, '{"query": "what flies?", "texts": ["a crane is flying", "the river bank"]}')
    check_fields(request, ("query", "texts", "raw_scores", "return_text", "truncate", "truncation_direction"))
    truncation_direction(request)
    query = request.get("query")
    if not isinstance(query, str) or not is_unicode(query):
        raise RequestError(ErrorKind.VALIDATION, '"query" must be a string')
    texts = text_list(request.get("texts"), "texts", max_texts)
    return RerankRequest(query, texts, flag(request, "raw_scores", False), flag(request, "return_text", False),
                         flag(request, "truncate", auto_truncate))


@dataclass(frozen=True)
class TokenizeRequest:
    """POST /tokenize (TEI): each text's tokens with their ids and character offsets."""

    texts: list[str]
    add_special_tokens: bool = True


@dataclass(frozen=True)
class DecodeRequest:
    """POST /decode (TEI): token ids back to text, one list per text."""

    ids: list[list[int]]
    batch: bool
    skip_special_tokens: bool = True


def parse_entities(body: bytes, max_texts: int) -> tuple[list[str], bool]:
    """POST /entities: {"inputs": text | [text], "aggregation_strategy": "simple"} -> (texts, whether a list)."""
    request = load_object(body, '{"inputs": "Alice Smith went to Paris"}')
    check_fields(request, ("inputs", "aggregation_strategy", "parameters"))
    strategy = request.get("aggregation_strategy", (request.get("parameters") or {}).get("aggregation_strategy")
                           if isinstance(request.get("parameters"), dict) else None) or "simple"
    if strategy != "simple":
        raise RequestError(ErrorKind.VALIDATION, '"aggregation_strategy" must be "simple" (the one this service '
                                                 'answers)')
    inputs = request.get("inputs")
    return text_list([inputs] if isinstance(inputs, str) else inputs, "inputs", max_texts), not isinstance(inputs, str)


def parse_tokenize(body: bytes, max_texts: int) -> TokenizeRequest:
    request = load_object(body, '{"inputs": "a crane is flying"}')
    check_fields(request, ("inputs", "add_special_tokens", "prompt_name"))
    inputs = request.get("inputs")
    texts = text_list([inputs] if isinstance(inputs, str) else inputs, "inputs", max_texts)
    return TokenizeRequest(texts, flag(request, "add_special_tokens", True))


def parse_decode(body: bytes, max_texts: int, vocab_size: int) -> DecodeRequest:
    request = load_object(body, '{"ids": [101, 1037, 102]}')
    check_fields(request, ("ids", "skip_special_tokens"))
    ids = request.get("ids")
    batch = isinstance(ids, list) and bool(ids) and all(isinstance(row, list) for row in ids)
    rows = ids if batch else [ids]
    if not isinstance(ids, list) or not ids or len(rows) > max_texts:
        raise RequestError(ErrorKind.VALIDATION, f'"ids" must be a non-empty list of token ids (or of such lists, '
                                                 f'at most {max_texts})')
    for row in rows:
        if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < vocab_size for i in row):
            raise RequestError(ErrorKind.VALIDATION, f'"ids" must hold token ids from 0 to {vocab_size - 1}')
    return DecodeRequest(rows, batch, flag(request, "skip_special_tokens", True))


def parse_embed(body: bytes, max_texts: int, hidden: int, auto_truncate: bool = False) -> EmbedRequest:
    request = load_object(body, '{"inputs": "a crane is flying"}')
    check_fields(request, ("inputs", "normalize", "truncate", "truncation_direction", "prompt_name", "dimensions",
                           "windows"))
    inputs = request.get("inputs")
    texts = text_list([inputs] if isinstance(inputs, str) else inputs, "inputs", max_texts)
    truncation_direction(request)
    if request.get("prompt_name") is not None:
        raise RequestError(ErrorKind.VALIDATION, '"prompt_name": this model has no prompts')
    truncate, windows = flag(request, "truncate", auto_truncate), flag(request, "windows", False)
    if windows and request.get("truncate") is True:
        raise RequestError(ErrorKind.VALIDATION, 'give "truncate" or "windows", not both')
    return EmbedRequest(texts, flag(request, "normalize", True), truncate and not windows, windows,
                        dimensions_of(request, hidden))


def parse_openai(body: bytes, max_texts: int, hidden: int) -> OpenAIRequest:
    request = load_object(body, '{"input": "a crane is flying", "model": "..."}')
    check_fields(request, ("input", "model", "encoding_format", "dimensions", "user", "windows"))
    value = request.get("input")
    texts = text_list([value] if isinstance(value, str) else value, "input", max_texts)
    model = request.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError(ErrorKind.VALIDATION, '"model" must be a string')
    encoding_format = request.get("encoding_format", "float")
    if encoding_format not in ("float", "base64"):
        raise RequestError(ErrorKind.VALIDATION, '"encoding_format" must be "float" or "base64"')
    if request.get("user") is not None and not isinstance(request["user"], str):
        raise RequestError(ErrorKind.VALIDATION, '"user" must be a string')
    return OpenAIRequest(texts, model, encoding_format, dimensions_of(request, hidden), flag(request, "windows", False))


def openai_response(vectors: np.ndarray, encoding_format: str, model: str, tokens: int) -> dict:
    """OpenAI's embeddings list (vectors as numpy rows, for serve.VectorsJSON); "base64" is each vector's
    little-endian float32 bytes."""
    def encoded(vector: np.ndarray):
        if encoding_format == "base64":
            return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
        return np.ascontiguousarray(vector, dtype=np.float32)

    return {"object": "list", "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "data": [{"object": "embedding", "index": i, "embedding": encoded(v)} for i, v in enumerate(vectors)]}
