"""Test helper: infer/serve.py as a real server on a free loopback port, and plain-urllib requests to it."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

from tests.conftest import ROOT


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


def embed(url, body: dict):
    """POST /embed (TEI's route) with `body`."""
    return request(url + "/embed", json.dumps(body).encode())
