"""Paddle's own restart of a dead rank: the launcher's etcd-based elastic mode (`--master etcd://...
--elastic_level 1 --max_restart N`) with a real etcd on loopback. SIGKILL of one rank of a 2-rank job: the
launcher restarts the pod, training resumes by itself (--resume auto), and the job ends with the weights of
an unbroken run. Needs Debian's etcd-server (.ci/run installs it) and the [elastic] extra (etcd3)."""
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pipeline import checkpoint
from tests.conftest import ROOT, TINY, needs, run_script
from tests.helpers.ranks import final_weights, rank_process, wait_for_checkpoint
from tests.helpers.service import free_port

ELASTIC_ENV = {"PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION": "python"}  # etcd3's generated code predates protobuf 4


@pytest.fixture
def etcd(tmp_path):
    """An etcd server on two free loopback ports, for this test only."""
    needs("etcd3", "elastic", load=False)  # imported by the launcher, under ELASTIC_ENV
    binary = shutil.which("etcd")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("etcd is not installed: .ci/run installs Debian's etcd-server")
        pytest.skip("needs etcd: apt-get install etcd-server")
    client, peer = free_port(), free_port()
    server = subprocess.Popen([binary, "--data-dir", str(tmp_path / "etcd"), "--listen-client-urls",
                               f"http://127.0.0.1:{client}", "--advertise-client-urls", f"http://127.0.0.1:{client}",
                               "--listen-peer-urls", f"http://127.0.0.1:{peer}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    assert server.poll() is None, "etcd did not start"
    yield f"etcd://127.0.0.1:{client}"
    server.kill()
    server.wait()


def test_the_launcher_restarts_a_killed_rank_and_the_job_ends_as_if_unbroken(etcd, corpus_dir, tmp_path):
    out, steps = tmp_path / "job", 30
    job = ["pipeline/train.py", "--data-dir", str(corpus_dir), "--output-dir", str(out), *TINY,
           "-o", "model.dropout=0.0", "-o", "train.save_every=1", "--steps", str(steps), "--resume", "auto"]
    launcher = subprocess.Popen([sys.executable, "-m", "paddle.distributed.launch", "--master", etcd, "--nnodes", "1",
                                 "--nproc_per_node", "2", "--elastic_level", "1", "--max_restart", "3", "--job_id",
                                 "elastic-test", "--log_dir", str(tmp_path / "log"), *job],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONWARNINGS": "ignore", **ELASTIC_ENV})
    try:
        wait_for_checkpoint(out, 5, [launcher], timeout=180)
        victim = rank_process(1, str(out))
        assert victim is not None
        os.kill(victim, signal.SIGKILL)
        output, _ = launcher.communicate(timeout=300)
    finally:
        launcher.kill()
    logs = "\n".join(p.read_text(errors="replace") for p in sorted((tmp_path / "log").glob("workerlog.0*")))
    assert launcher.returncode == 0, output[-3000:]
    assert "resumed from" in logs, logs[-3000:]  # the restarted pod continued from a checkpoint
    assert checkpoint.load(checkpoint.latest(out)).step == steps
    unbroken = run_script("-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
                          str(tmp_path / "log-unbroken"),
                          *[str(tmp_path / "unbroken") if a == str(out) else a for a in job])
    assert unbroken.returncode == 0, unbroken.stdout[-2000:]
    resumed, whole = final_weights(out), final_weights(tmp_path / "unbroken")
    for name in whole:
        np.testing.assert_allclose(resumed[name], whole[name], rtol=1e-4, atol=1e-6, err_msg=name)
