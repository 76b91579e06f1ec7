"""infer/serve.py as a real server on a loopback port: answers equal to Encoder.encode, dynamic batching
under concurrent clients with mixed lengths, one-line 4xx errors, 503 when full, SIGTERM drains."""
import json
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

from infer.predictor import Encoder
from tests.conftest import ROOT

WORDS = "a crane is flying the driver came he just left over river bank".split()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model_dir, *flags):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "infer/serve.py", "--model-dir", str(model_dir), "--port", str(port), *flags],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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


def request(url, body: bytes | None = None, timeout: float = 30):
    """(status, parsed JSON, headers) of a GET (no body) or a POST."""
    req = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
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


@pytest.mark.parametrize("pooling", ["cls", "mean", "tokens"])
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
            pooled = want.cls if pooling == "cls" else want.vectors.mean(axis=0)
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
    (b'{"texts": ["a"], "pooling": "max"}', 400, "pooling"),
    (b'{"texts": ["a"], "truncate": "yes"}', 400, "truncate"),
    (b'{"texts": ["a"], "colour": 1}', 400, "unknown field"),
    (b'{"texts": ["   "]}', 422, "empty text"),
    (json.dumps({"texts": [" ".join(["crane"] * 40)]}).encode(), 422, "over the model's max_len"),
    (json.dumps({"texts": ["a"] * 17}).encode(), 413, "over the limit of 16"),
    (json.dumps({"texts": ["a " * 3000]}).encode(), 413, "over the limit of 4096 bytes"),
])
def test_bad_requests_get_a_one_line_4xx_and_the_server_lives_on(server, body, status, fragment):
    got, answer, _ = request(server + "/encode", body)
    assert got == status and set(answer) == {"error"}, answer
    assert fragment in answer["error"] and "\n" not in answer["error"]
    assert encode(server, ["a crane is flying"])[0] == 200


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
    from pathlib import Path

    proc, url = start(exported)
    port = int(url.rsplit(":", 1)[1])
    try:
        rss = lambda: int(next(l for l in Path(f"/proc/{proc.pid}/status").read_text().splitlines()  # noqa: E731
                               if l.startswith("VmRSS")).split()[1])
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
