"""infer/serve.py as a real server on a loopback port: answers equal to Encoder.encode, dynamic batching
under concurrent clients with mixed lengths, one-line 4xx errors (also for bodies hypothesis builds),
503 when full, the API key, SIGTERM drains."""
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from infer.predictor import Encoder
from infer.api import ENCODE_POOLINGS as POOLINGS
from infer.serve import API_KEY_VARIABLE
from tests.conftest import ROOT

WORDS = "a crane is flying the driver came he just left over river bank".split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model_dir, *flags, env: dict | None = None):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "infer/serve.py", "--model-dir", str(model_dir), "--port", str(port), *flags],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if request(url + "/health")[0] == 200:
                return proc, url
        except OSError:
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1]
    proc.kill()
    raise AssertionError("the server did not start")


def stop(proc) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def request(url, body: bytes | None = None, timeout: float = 30, headers: dict | None = None):
    """(status, parsed JSON, headers) of a GET (no body) or a POST."""
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), dict(err.headers)


def encode(url, texts, pooling="cls", **extra):
    return request(url + "/encode", json.dumps({"texts": texts, "pooling": pooling, **extra}).encode())


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
    status, meta, _ = request(server + "/metadata")
    assert status == 200 and meta["max_len"] == 32 and meta["model"]["hidden_size"] == 32
    assert [i["name"] for i in meta["inputs"]] == ["input_ids", "token_type_ids", "valid_length"]


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
    """Bodies shaped like requests, with wrong pieces: texts of every type and arity, odd fields."""
    text = st.text(max_size=80) | st.sampled_from(["a crane is flying", "   ", " ".join(["crane"] * 40)])
    texts = st.lists(text | st.lists(text, max_size=3) | json_values(), max_size=20) | json_values()
    fields = st.fixed_dictionaries({"texts": texts}, optional={
        "pooling": st.sampled_from(list(POOLINGS)) | json_values(), "truncate": st.booleans() | json_values(),
        "extra": json_values()})
    return (fields | json_values()).map(lambda value: json.dumps(value).encode())


def test_no_body_gets_a_5xx_and_the_service_is_unchanged_after(exported):
    """Structural fuzzing of the running service (bodies hypothesis builds, random bytes, nesting up to 90,000
    deep): every one answers 2xx or a one-line 4xx; afterwards good requests are answered, memory is as
    before and the log holds no traceback."""
    proc, url = start(exported)

    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(body=request_bodies() | st.binary(max_size=300))
    def answered_without_5xx(body):
        status, answer, _ = request(url + "/encode", body)
        assert status == 200 or (400 <= status < 500 and "\n" not in answer["error"]), (status, answer, body[:200])

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
