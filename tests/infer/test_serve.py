"""infer/serve.py as a real server on a loopback port: answers equal to Encoder.encode, dynamic batching
under concurrent clients with mixed lengths, one-line 4xx errors (also for bodies hypothesis builds),
503 when full, the API key, SIGTERM drains."""
import base64
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from infer.api import ENCODE_POOLINGS as POOLINGS
from infer.encoder import Encoder
from infer.serve import API_KEY_VARIABLE
from tests.conftest import ROOT, run_script
from tests.helpers.checks import assert_user_error
from tests.helpers.service import encode, free_port, request, start, stop

WORDS = "a crane is flying the driver came he just left over river bank".split()


@pytest.fixture(scope="module")
def server(exported):
    proc, url = start(exported, "--workers", "2", "--max-texts", "16", "--max-body-kb", "4", "--max-wait-ms", "5")
    yield url
    code, err = stop(proc)
    assert code == 0, err


@pytest.fixture(scope="module")
def reference(exported):
    return Encoder(exported, device="cpu")


def random_text(rng) -> str:
    return " ".join(rng.choice(WORDS, rng.integers(1, 25)))


@pytest.mark.parametrize("pooling", ["cls", "mean", "max", "tokens"])
def test_answers_equal_the_encoder_in_input_order(server, reference, pooling):
    texts = ["a crane is flying", ["a crane driver came", "he just left"], "flying", "the river bank is over there"]
    status, body, _ = encode(server, texts, pooling)
    assert status == 200, body
    expected = reference.encode([tuple(t) if isinstance(t, list) else t for t in texts])
    assert len(body["results"]) == len(texts)
    for got, want in zip(body["results"], expected):
        assert got["tokens"] == want.tokens
        if pooling == "tokens":
            np.testing.assert_allclose(got["vectors"], want.vectors, atol=1e-4)
        else:
            pooled = {"cls": want.cls, "mean": want.vectors.mean(axis=0), "max": want.vectors.max(axis=0)}[pooling]
            np.testing.assert_allclose(got["embedding"], pooled, atol=1e-4)


def test_health_and_metadata(server):
    assert request(server + "/health")[:2] == (200, {"status": "ok"})
    assert request(server + "/live")[:2] == (200, {"status": "ok"})
    status, meta, _ = request(server + "/metadata")
    assert status == 200 and meta["max_len"] == 32 and meta["model"]["hidden_size"] == 32
    assert [i["name"] for i in meta["inputs"]] == ["input_ids", "token_type_ids", "valid_length"]
    status, info, _ = request(server + "/info")
    assert status == 200 and info["model_type"] == {"embedding": {"pooling": "cls"}}, info
    assert (info["dimensions"], info["max_input_length"], info["max_client_batch_size"]) == (32, 32, 16)
    assert info["model_id"] == "inference" and info["backend"] == "paddle" and info["model_dtype"] == "fp32"


def test_embed_and_openai_routes_pool_and_normalise_as_the_encoder(server, reference):
    texts = ["a crane is flying", "flying", "the river bank is over there"]
    status, vectors, _ = request(server + "/embed", json.dumps({"inputs": texts}).encode())
    assert status == 200, vectors
    pooled = np.array([e.cls for e in reference.encode(texts)])  # the tiny export pools <cls>
    unit = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    np.testing.assert_allclose(vectors, unit, atol=1e-5)  # TEI normalises unless told not to
    status, vectors, _ = request(server + "/embed", json.dumps({"inputs": texts[0], "normalize": False}).encode())
    np.testing.assert_allclose(vectors, pooled[:1], atol=1e-4)
    status, vectors, _ = request(server + "/embed", json.dumps({"inputs": texts, "dimensions": 5}).encode())
    np.testing.assert_allclose(vectors, pooled[:, :5] / np.linalg.norm(pooled[:, :5], axis=1, keepdims=True), atol=1e-5)
    body = {"input": texts, "model": "anything", "encoding_format": "base64"}
    status, answer, _ = request(server + "/v1/embeddings", json.dumps(body).encode())
    assert status == 200 and answer["model"] == "inference", answer  # the served model, whatever was asked
    status, models, _ = request(server + "/v1/models")
    assert status == 200 and [m["id"] for m in models["data"]] == ["inference"], models
    decoded = [np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in answer["data"]]
    np.testing.assert_allclose(decoded, unit, atol=1e-5)
    assert answer["usage"]["prompt_tokens"] == sum(len(e.tokens) for e in reference.encode(texts))


def test_windows_embed_a_long_text_whole(server, reference):
    long_text = " ".join(WORDS * 6)  # 84 words: three windows of the 32-token model
    status, answer, _ = request(server + "/embed", json.dumps({"inputs": [long_text]}).encode())
    assert status == 422 and "windows" in answer["error"]
    status, vectors, _ = request(server + "/embed", json.dumps({"inputs": [long_text], "windows": True,
                                                                "normalize": False}).encode())
    assert status == 200, vectors
    windows = reference.tokenize_for_embedding([long_text], windows=True)[0]
    assert len(windows) >= 3 and all(len(tokens) <= 32 for tokens, _ in windows)
    cls = [v[0] for v in reference.encode_items(windows)]
    weights = np.array([len(tokens) for tokens, _ in windows], dtype=np.float32)
    np.testing.assert_allclose(vectors[0], (np.array(cls) * weights[:, None]).sum(0) / weights.sum(), atol=1e-4)
    np.testing.assert_allclose(reference.embed([long_text], windows=True)[0], vectors[0], atol=1e-4)
    status, short, _ = request(server + "/embed", json.dumps({"inputs": ["a crane"], "windows": True}).encode())
    np.testing.assert_allclose(short, request(server + "/embed", json.dumps({"inputs": ["a crane"]}).encode())[1],
                               atol=1e-6)  # a text that fits is one window


@pytest.mark.parametrize("route, body, status, fragment", [
    ("/embed", {"inputs": []}, 400, "non-empty list"),
    ("/embed", {"inputs": [[1, 2, 3]]}, 400, "token ids"),
    ("/embed", {"inputs": "a", "dimensions": 33}, 400, "from 1 to 32"),
    ("/embed", {"inputs": "a", "dimensions": True}, 400, "dimensions"),
    ("/embed", {"inputs": "a", "normalize": "yes"}, 400, "normalize"),
    ("/embed", {"inputs": "a", "truncation_direction": "Left"}, 400, "Right"),
    ("/embed", {"inputs": "a", "prompt_name": "query"}, 400, "prompts"),
    ("/embed", {"inputs": "a", "truncate": True, "windows": True}, 400, "not both"),
    ("/embed", {"inputs": ["a"] * 17}, 413, "over the limit of 16"),
    ("/embed", {"inputs": [" ".join(["crane"] * 40)]}, 422, "over the model's max_len 32"),
    ("/embed", {"inputs": ["a", "  "]}, 422, "empty text"),
    ("/embed", {"text": "a"}, 400, "unknown field"),
    ("/v1/embeddings", {"input": [1, 2, 3]}, 400, "token ids"),
    ("/v1/embeddings", {"input": "a", "encoding_format": "int8"}, 400, "encoding_format"),
    ("/v1/embeddings", {"input": "a", "model": 3}, 400, "model"),
    ("/v1/embeddings", {"input": "a", "dimensions": 0}, 400, "dimensions"),
    ("/v1/embeddings", {"input": " ".join(["crane"] * 40)}, 422, "max_len"),
])
def test_new_routes_refuse_bad_bodies_in_one_line(server, route, body, status, fragment):
    got, answer, _ = request(server + route, json.dumps(body).encode())
    assert got == status, answer
    message = error_text(answer)
    assert fragment in message and "\n" not in message
    if route.startswith("/v1/"):  # OpenAI's error shape, which its client reads
        assert set(answer["error"]) == {"message", "type", "param", "code"}
    else:
        assert set(answer) == {"error", "error_type"}


def test_metrics_count_requests_batches_and_tokens(server):
    request(server + "/embed", json.dumps({"inputs": ["a crane is flying"]}).encode())
    request(server + "/embed", json.dumps({"inputs": []}).encode())
    request(server + "/nowhere")
    with urllib.request.urlopen(server + "/metrics", timeout=10) as response:
        assert response.headers["content-type"].startswith("text/plain")
        text = response.read().decode()
    samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line and not line.startswith("#")}
    assert samples['embedding_requests_total{route="/embed",status="200"}'] >= 1
    assert samples['embedding_requests_total{route="/embed",status="400"}'] >= 1
    assert samples['embedding_requests_total{route="other",status="404"}'] >= 1
    assert samples['embedding_request_duration_seconds_count{route="/embed"}'] >= 2
    assert samples["embedding_batch_size_count"] >= 1 and samples["embedding_queue_depth"] == 0
    assert samples['embedding_tokens_total{route="/embed"}'] >= 6  # <cls> a crane is flying <sep>


def test_health_is_503_until_every_predictor_has_warmed_up(exported, monkeypatch):
    """Readiness apart from liveness: a predictor whose first call is slow keeps /health at 503."""
    from fastapi.testclient import TestClient

    from infer.serve import create_app

    release = threading.Event()
    encoder = Encoder(exported, device="cpu")
    real_clone = Encoder.clone

    def slow_clone(self):
        twin = real_clone(self)
        real = twin.run_tokenized

        def first_call_waits(items):
            release.wait(30)
            return real(items)
        twin.run_tokenized = first_call_waits
        return twin
    monkeypatch.setattr(Encoder, "clone", slow_clone)
    with TestClient(create_app(encoder, workers=2)) as client:
        answer = client.get("/health")
        assert answer.status_code == 503 and "warming up" in answer.json()["error"]
        assert answer.headers["retry-after"] == "1" and client.get("/live").status_code == 200
        release.set()
        deadline = time.time() + 30
        while client.get("/health").status_code != 200:
            assert time.time() < deadline
            time.sleep(0.05)


@pytest.mark.parametrize("body, status, fragment", [
    (b"{not json", 400, "not valid JSON"),
    (b'["a"]', 400, "JSON object"),
    (b'{"texts": "a crane"}', 400, "non-empty list"),
    (b'{"texts": []}', 400, "non-empty list"),
    (b'{"texts": [3]}', 400, "texts[0] must be a string"),
    (b'{"texts": [["a", "b", "c"]]}', 400, "texts[0]"),
    (b'{"texts": ["a"], "pooling": "sum"}', 400, "pooling"),
    (b'{"texts": ["a"], "truncate": "yes"}', 400, "truncate"),
    (b'{"texts": ["a"], "colour": 1}', 400, "unknown field"),
    (b'{"texts": ' + b"[" * 1500 + b"]" * 1500 + b"}", 400, "nested too deeply"),  # a RecursionError: 500 before
    (b"[" * 2000 + b"]" * 2000, 400, "nested too deeply"),
    (b'{"texts": ["a \\ud800 b"]}', 400, "lone surrogate"),
    (b'{"texts": ["a"], "pooling": ["cls"]}', 400, "pooling"),
    (b'{"texts": ["   "]}', 422, "empty text"),
    (json.dumps({"texts": [" ".join(["crane"] * 40)]}).encode(), 422, "over the model's max_len"),
    (json.dumps({"texts": ["a"] * 17}).encode(), 413, "over the limit of 16"),
    (json.dumps({"texts": ["a " * 3000]}).encode(), 413, "over the limit of 4096 bytes"),
])
def test_bad_requests_get_a_one_line_4xx_and_the_server_lives_on(server, body, status, fragment):
    got, answer, _ = request(server + "/encode", body)
    assert got == status and set(answer) == {"error", "error_type"}, answer
    assert fragment in answer["error"] and "\n" not in answer["error"]
    assert encode(server, ["a crane is flying"])[0] == 200


def test_unknown_paths_and_methods_get_the_same_one_line_errors(server):
    assert request(server + "/nothing")[:2] == (404, {"error": "GET /nothing: Not Found", "error_type": "not_found"})
    status, answer, _ = request(server + "/health", b"{}")
    assert status == 405 and answer["error_type"] == "method_not_allowed"


def json_values():
    """Any JSON value: deep nesting, every type at every level, huge and odd numbers, odd Unicode."""
    scalars = (st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats(allow_nan=False)
               | st.text(max_size=60) | st.sampled_from(["", " ", "\u0000", "\ud83d\ude00", "a" * 500, "<mask>"]))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner,
                                                                                           max_size=4), max_leaves=30)


def request_bodies():
    """(route, body): bodies shaped like each route's requests, with wrong pieces: texts of every type and
    arity, token ids, odd fields and values."""
    text = st.text(max_size=80) | st.sampled_from(["a crane is flying", "   ", " ".join(["crane"] * 40)])
    texts = st.lists(text | st.lists(text, max_size=3) | json_values(), max_size=20) | json_values()
    inputs = text | texts | st.lists(st.integers(-5, 10**6), max_size=5)
    odd = json_values()
    encode_body = st.fixed_dictionaries({"texts": texts}, optional={
        "pooling": st.sampled_from(list(POOLINGS)) | odd, "truncate": st.booleans() | odd, "extra": odd})
    embed_body = st.fixed_dictionaries({"inputs": inputs}, optional={
        "normalize": st.booleans() | odd, "truncate": st.booleans() | odd, "windows": st.booleans() | odd,
        "dimensions": st.integers(-2, 40) | odd, "truncation_direction": st.sampled_from(["Right", "Left"]) | odd,
        "prompt_name": odd})
    openai_body = st.fixed_dictionaries({"input": inputs}, optional={
        "model": st.text(max_size=10) | odd, "encoding_format": st.sampled_from(["float", "base64"]) | odd,
        "dimensions": st.integers(-2, 40) | odd, "user": odd, "windows": st.booleans() | odd})
    flags = {"raw_scores": st.booleans() | odd, "truncate": st.booleans() | odd,
             "truncation_direction": st.sampled_from(["Right", "Left"]) | odd}
    predict_body = st.fixed_dictionaries({"inputs": inputs | st.lists(st.lists(text, max_size=3), max_size=5)},
                                         optional=flags)
    rerank_body = st.fixed_dictionaries({"query": text | odd, "texts": texts},
                                        optional={**flags, "return_text": st.booleans() | odd})
    tokenize_body = st.fixed_dictionaries({"inputs": inputs}, optional={"add_special_tokens": st.booleans() | odd})
    decode_body = st.fixed_dictionaries({"ids": st.lists(st.integers(-5, 40), max_size=8)
                                         | st.lists(st.lists(st.integers(-5, 40), max_size=5), max_size=4) | odd},
                                        optional={"skip_special_tokens": st.booleans() | odd})
    entities_body = st.fixed_dictionaries({"inputs": inputs}, optional={
        "aggregation_strategy": st.sampled_from(["simple", "first"]) | odd, "parameters": odd})
    bodies = {"/encode": encode_body, "/embed": embed_body, "/embed_all": embed_body, "/v1/embeddings": openai_body,
              "/predict": predict_body, "/rerank": rerank_body, "/tokenize": tokenize_body, "/decode": decode_body,
              "/entities": entities_body}
    return st.sampled_from(sorted(bodies)).flatmap(
        lambda route: st.tuples(st.just(route), (bodies[route] | odd).map(lambda v: json.dumps(v).encode())
                                | st.binary(max_size=300)))


def error_text(answer) -> str:
    """The one-line message of an error body: TEI's {"error": str} or OpenAI's {"error": {"message": str}}."""
    error = answer["error"]
    return error["message"] if isinstance(error, dict) else error


@pytest.mark.parametrize("model", ["exported_reranker", "exported_tagger"])
def test_no_body_gets_a_5xx_and_the_service_is_unchanged_after(model, request_fixture):
    """Structural fuzzing of the running service (bodies hypothesis builds for every route, random bytes,
    nesting up to 90,000 deep) of a fine-tuned reranker and a tagger, which between them answer every route:
    every body answers 2xx or a one-line 4xx; afterwards good requests are answered, memory is as before and the
    log holds no traceback."""
    proc, url = start(request_fixture(model))

    @settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(route_and_body=request_bodies())
    def answered_without_5xx(route_and_body):
        route, body = route_and_body
        status, answer, _ = request(url + route, body)
        assert status == 200 or (400 <= status < 500 and "\n" not in error_text(answer)), (status, answer, body[:200])

    try:
        encode(url, ["warm up"])
        before = rss_kb(proc.pid)
        answered_without_5xx()
        depths = np.random.default_rng(1).integers(900, 90000, 40)
        nested = [b'{"texts": ' + b"[" * int(d) + b"]" * int(d) + b"}" for d in depths]
        huge_number = b'{"texts": [' + b"9" * 5000 + b"]}"  # over Python's 4,300-digit limit for int()
        assert {request(url + "/encode", body)[0] for body in nested + [huge_number]} == {400}
        huge_lists = [json.dumps({"texts": ["a"] * 5000}).encode(), json.dumps({"texts": [[]] * 20000}).encode(),
                      json.dumps({"texts": ["a"], "pooling": list(range(50000))}).encode()]
        assert [request(url + "/encode", body)[0] for body in huge_lists] == [413, 413, 400]
        assert encode(url, ["a crane is flying"])[0] == 200
        assert rss_kb(proc.pid) < before * 1.2, (before, rss_kb(proc.pid))
    finally:
        code, err = stop(proc)
    assert code == 0 and "Traceback" not in err, err


@pytest.fixture
def request_fixture(request):
    """A fixture by its name (for parametrized tests over models)."""
    return request.getfixturevalue


def rss_kb(pid: int) -> int:
    from pathlib import Path

    return int(next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if line.startswith("VmRSS")).split()[1])


def test_long_text_is_cut_when_asked(server):
    status, body, _ = encode(server, [" ".join(["crane"] * 40)], truncate=True)
    assert status == 200 and len(body["results"][0]["tokens"]) == 32


def test_concurrent_clients_with_mixed_lengths_get_their_own_answers(server, reference):
    rng = np.random.default_rng(0)
    requests = [[random_text(rng) for _ in range(rng.integers(1, 6))] for _ in range(60)]

    def call(texts):
        status, body, _ = encode(server, texts, "tokens")
        assert status == 200, body
        return body["results"]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(call, requests))
    for texts, results in zip(requests, answers):
        for want, got in zip(reference.encode(texts), results):
            assert got["tokens"] == want.tokens
            np.testing.assert_allclose(got["vectors"], want.vectors, atol=1e-4)


def test_a_full_queue_answers_503_with_retry_after(exported):
    proc, url = start(exported, "--queue-size", "2", "--max-texts", "8")
    try:
        status, body, headers = encode(url, ["a", "b", "c"])
        assert status == 503 and "busy" in body["error"] and headers.get("retry-after") == "1"
        assert encode(url, ["a", "b"])[0] == 200
    finally:
        assert stop(proc)[0] == 0


def test_sigterm_lets_requests_in_flight_finish_then_exits_0(exported):
    proc, url = start(exported, "--max-wait-ms", "400", "--workers", "1")
    answers = []
    clients = [threading.Thread(target=lambda: answers.append(encode(url, ["a crane is flying"])[0])) for _ in range(4)]
    for client in clients:
        client.start()
    time.sleep(0.15)  # the requests are waiting in the batcher
    code, err = stop(proc)
    for client in clients:
        client.join(30)
    assert code == 0, err
    assert answers == [200] * 4


def test_hostile_clients_do_not_stop_the_service(exported):
    """1,000 bodies of random bytes, a client that hangs up mid-request and a slow client holding its
    connection open: every other request is still answered, no worker dies, memory stays bounded."""
    proc, url = start(exported)
    port = int(url.rsplit(":", 1)[1])
    try:
        rss = lambda: rss_kb(proc.pid)  # noqa: E731
        rng = np.random.default_rng(0)
        encode(url, ["warm up"])
        before = rss()
        statuses = set()
        for _ in range(1000):
            statuses.add(request(url + "/encode", rng.bytes(int(rng.integers(0, 400))))[0])
        assert statuses <= {400, 413, 422}, statuses
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"POST /encode HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"texts\": [")  # and waits
        for _ in range(5):
            gone = socket.create_connection(("127.0.0.1", port))
            gone.sendall(b"POST /encode HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n{\"texts\": [\"a crane")
            gone.close()  # hangs up mid-body
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: encode(url, ["a crane is flying", "the bank"])[0], range(40)))
        assert answers == [200] * 40
        slow.close()
        assert rss() < before * 1.5, (before, rss())
    finally:
        assert stop(proc)[0] == 0


KEY = "k3y-for-the-test-0123456789"


def test_with_an_api_key_every_endpoint_but_health_wants_it(exported):
    proc, url = start(exported, env={API_KEY_VARIABLE: KEY})
    try:
        body = json.dumps({"texts": ["a crane is flying"]}).encode()
        assert request(url + "/health")[0] == 200
        for headers in ({}, {"Authorization": "Bearer wrong-key-of-some-length"}, {"Authorization": KEY},
                        {"Authorization": f"Basic {KEY}"}):
            for path, data in (("/encode", body), ("/metadata", None)):
                status, answer, reply_headers = request(url + path, data, headers=headers)
                assert (status, answer["error_type"]) == (401, "unauthorized"), (path, headers, answer)
                assert reply_headers.get("www-authenticate") == "Bearer"
        good = {"Authorization": f"Bearer {KEY}"}
        assert request(url + "/encode", body, headers=good)[0] == 200
        assert request(url + "/metadata", headers=good)[0] == 200
    finally:
        assert stop(proc)[0] == 0


@pytest.mark.parametrize("flags, env, fragment", [
    (["--host", "0.0.0.0"], {}, "opens the service beyond this machine"),
    (["--host", "0.0.0.0", "--api-key", "short"], {}, "at least 16 characters"),
    (["--host", "::"], {}, "set an API key"),
])
def test_listening_beyond_loopback_without_a_key_is_refused_before_binding(exported, flags, env, fragment):
    result = subprocess.run([sys.executable, "infer/serve.py", "--model-dir", str(exported), "--port", str(free_port()),
                             *flags], cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert result.returncode == 2 and fragment in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_port_in_use_is_one_line_before_the_model_loads(exported):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = str(taken.getsockname()[1])
        result = run_script("infer/serve.py", "--model-dir", str(exported), "--port", port)
    assert_user_error(result, f"port {port} on 127.0.0.1 is in use")
    assert "serving" not in result.stdout + result.stderr


def test_tokenize_decode_and_embed_all_show_what_the_model_sees(server, reference):
    status, tokens, _ = request(server + "/tokenize", json.dumps({"inputs": "A crane  w999 flying"}).encode())
    assert status == 200 and len(tokens) == 1
    assert [(t["text"], t["start"], t["stop"], t["special"]) for t in tokens[0]] == [
        ("<cls>", None, None, True), ("a", 0, 1, False), ("crane", 2, 7, False), ("<unk>", 9, 13, False),
        ("flying", 14, 20, False), ("<sep>", None, None, True)]
    ids = [t["id"] for t in tokens[0]]
    status, text, _ = request(server + "/decode", json.dumps({"ids": ids}).encode())
    assert status == 200 and text == "a crane flying"  # <unk> is a special token, skipped as asked
    status, texts, _ = request(server + "/decode", json.dumps({"ids": [ids], "skip_special_tokens": False}).encode())
    assert texts == ["<cls> a crane <unk> flying <sep>"]
    status, vectors, _ = request(server + "/embed_all", json.dumps({"inputs": ["a crane", "is flying over"]}).encode())
    want = reference.encode(["a crane", "is flying over"])
    assert status == 200 and [len(v) for v in vectors] == [4, 5]
    np.testing.assert_allclose(vectors[1], want[1].vectors, atol=1e-5)
    status, answer, _ = request(server + "/predict", json.dumps({"inputs": "a crane"}).encode())
    assert status == 424 and answer["error_type"] == "wrong_model_type"
