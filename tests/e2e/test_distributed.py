"""Data parallel under the fleet launcher on CPU (gloo): two ranks stay identical and match one process, also
as two nodes (two launchers on the loopback address); a rank killed mid-run ends the job (Paddle 3.3's
launcher restarts nothing without etcd), and the same command run again with --resume auto finishes with
the weights of an unbroken run."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline import checkpoint
from tests.conftest import ROOT, TINY, run_script
from tests.helpers.ranks import final_weights, rank_process, wait_for_checkpoint
from tests.helpers.service import free_port

FLAGS = [*TINY, "-o", "model.dropout=0.0", "--steps", "4"]


@pytest.fixture(scope="module")
def dumps(corpus_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    common = ["--data-dir", str(corpus_dir), *FLAGS]
    launched = run_script("-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(out / "log"),
                          "tests/helpers/train_and_dump.py", str(out), "--output-dir", str(out / "two"), *common)
    logs = "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted((out / "log").glob("workerlog.*")))
    assert launched.returncode == 0, launched.stdout[-3000:] + logs
    single = run_script("tests/helpers/train_and_dump.py", str(out), "--output-dir", str(out / "one"), *common)
    assert single.returncode == 0, single.stderr[-3000:]
    return {name: dict(np.load(out / f"{name}.npz")) for name in ("world2_rank0", "world2_rank1", "world1_rank0")}


def test_ranks_hold_identical_parameters_after_training_on_different_shards(dumps):
    rank0, rank1 = dumps["world2_rank0"], dumps["world2_rank1"]
    assert rank0.keys() == rank1.keys()
    for name in rank0:
        np.testing.assert_array_equal(rank0[name], rank1[name], err_msg=name)


def test_two_ranks_match_one_process_with_the_same_global_batch(dumps):
    two, one = dumps["world2_rank0"], dumps["world1_rank0"]
    for name in one:
        np.testing.assert_allclose(two[name], one[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_gradient_accumulation_equals_one_big_step(corpus_dir, tmp_path, dumps):
    """Two micro-batches of 16 accumulate to the same update as one batch of 32."""
    result = run_script("tests/helpers/train_and_dump.py", str(tmp_path), "--output-dir", str(tmp_path / "acc"),
                        "--data-dir", str(corpus_dir), *FLAGS, "-o", "train.accumulate_steps=2")
    assert result.returncode == 0, result.stderr[-3000:]
    accumulated = dict(np.load(tmp_path / "world1_rank0.npz"))
    for name, value in dumps["world1_rank0"].items():
        np.testing.assert_allclose(accumulated[name], value, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.fixture(scope="module")
def prepared(corpus_dir, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("nodes") / "prepared"
    result = run_script("pipeline/prepare.py", "--corpus", str(corpus_dir / "wiki.train.tokens"), "--output-dir",
                        str(folder), "-o", "data.max_len=32", "-o", "data.min_freq=1")
    assert result.returncode == 0, result.stderr
    return folder


def test_two_nodes_on_the_loopback_address_match_one_process(prepared, tmp_path):
    """Two launchers (--nnodes 2 --master 127.0.0.1:PORT --rank 0|1), one process each, from one prepared
    folder into one output folder (shared storage): the same weights as one process with the same global batch."""
    master, out = f"127.0.0.1:{free_port()}", tmp_path / "two-nodes"
    train_args = ["pipeline/train.py", "--prepared", str(prepared), "--output-dir", str(out), *FLAGS]
    nodes = [subprocess.Popen([sys.executable, "-m", "paddle.distributed.launch", "--nnodes", "2", "--master", master,
                               "--rank", str(rank), "--nproc_per_node", "1", "--log_dir", str(tmp_path / f"log{rank}"),
                               *train_args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"}) for rank in (0, 1)]
    try:
        codes = [node.wait(300) for node in nodes]
    finally:
        for node in nodes:
            node.kill()
    logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in sorted(tmp_path.glob("log*/workerlog.*")))
    assert codes == [0, 0], logs
    single = run_script("pipeline/train.py", "--prepared", str(prepared), "--output-dir", str(tmp_path / "one"), *FLAGS)
    assert single.returncode == 0, single.stderr[-2000:]
    two, one = final_weights(out), final_weights(tmp_path / "one")
    assert two.keys() == one.keys()
    for name in one:
        np.testing.assert_allclose(two[name], one[name], rtol=1e-4, atol=1e-5, err_msg=name)


def test_a_node_that_cannot_reach_the_master_says_so_within_seconds(tmp_path):
    """Paddle's launcher waits for an unreachable master indefinitely, printing "master not ready" every 5 s
    (the README says to bound it with timeout); 127.0.0.2 is a loopback address where nothing listens."""
    node = subprocess.Popen([sys.executable, "-m", "paddle.distributed.launch", "--nnodes", "2", "--master",
                             f"127.0.0.2:{free_port()}", "--rank", "1", "--nproc_per_node", "1", "--log_dir",
                             str(tmp_path / "log"), "pipeline/train.py"], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = node.communicate(timeout=12)
    except subprocess.TimeoutExpired:
        node.kill()
        output, _ = node.communicate()
    assert "master not ready" in output


def test_resume_auto_starts_fresh_without_a_checkpoint_and_continues_with_one(corpus_dir, tmp_path):
    out = tmp_path / "auto"
    for steps in (2, 4):
        result = run_script("pipeline/train.py", "--data-dir", str(corpus_dir), "--output-dir", str(out), *TINY,
                            "--steps", str(steps), "--resume", "auto")
        assert result.returncode == 0, result.stderr
        assert checkpoint.load(checkpoint.latest(out)).step == steps
    refused = run_script("pipeline/train.py", "--data-dir", str(corpus_dir), "--output-dir", str(tmp_path / "new"),
                         *TINY, "--resume")
    assert refused.returncode == 2 and "no checkpoint" in refused.stderr and "--resume auto" in refused.stderr


def test_sigkill_of_one_rank_ends_the_job_and_resume_auto_finishes_it_as_if_unbroken(corpus_dir, tmp_path):
    out = tmp_path / "job"
    launch = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2"]
    job = ["pipeline/train.py", "--data-dir", str(corpus_dir), "--output-dir", str(out), *TINY,
           "-o", "train.save_every=1", "--resume", "auto"]
    launcher = subprocess.Popen([*launch, "--log_dir", str(tmp_path / "log"), *job, "--steps", "100000"], cwd=ROOT,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_checkpoint(out, 3, [launcher])
        victim = rank_process(1, str(out))
        assert victim is not None
        killed_at = time.time()
        os.kill(victim, signal.SIGKILL)
        code = launcher.wait(120)
        took = time.time() - killed_at
    finally:
        launcher.kill()
    print(f"launcher exit code {code}, {took:.1f} s after the kill")
    assert code != 0 and took < 60, (code, took)
    newest = checkpoint.load(checkpoint.latest(out))  # complete: it loads and its hashes match
    steps = str(newest.step + 2)
    again = run_script("-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(tmp_path / "log2"),
                       *job, "--steps", steps)  # the same command, run again
    assert again.returncode == 0, again.stdout[-2000:]
    assert checkpoint.load(checkpoint.latest(out)).step == newest.step + 2
    unbroken = run_script("-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir",
                          str(tmp_path / "log3"), *[str(tmp_path / "unbroken") if a == str(out) else a for a in job],
                          "--steps", steps)
    assert unbroken.returncode == 0, unbroken.stdout[-2000:]
    resumed, whole = final_weights(out), final_weights(tmp_path / "unbroken")
    for name in whole:
        np.testing.assert_allclose(resumed[name], whole[name], rtol=1e-4, atol=1e-6, err_msg=name)


def test_a_rank_whose_peer_on_another_node_hangs_ends_within_the_stall_bound(prepared, tmp_path):
    """Two nodes with an HTTP master: node 1's rank is frozen (SIGSTOP) mid-run. Paddle's launcher of node 0
    is never told, and its rank would wait in the all-reduce for the process group's 30 minutes; the
    project's watchdog (train.stall_minutes=0.1, 6 s) ends it, and node 0's job ends, within the bound."""
    master, out = f"127.0.0.1:{free_port()}", tmp_path / "job"
    train_args = ["pipeline/train.py", "--prepared", str(prepared), "--output-dir", str(out), *FLAGS,
                  "--steps", "100000", "-o", "train.save_every=1", "-o", "train.stall_minutes=0.1", "--resume", "auto"]
    nodes = [subprocess.Popen([sys.executable, "-m", "paddle.distributed.launch", "--nnodes", "2", "--master", master,
                               "--rank", str(rank), "--nproc_per_node", "1", "--log_dir", str(tmp_path / f"log{rank}"),
                               *train_args], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "PYTHONWARNINGS": "ignore"}) for rank in (0, 1)]
    victim = None
    try:
        wait_for_checkpoint(out, 3, nodes)
        victim = rank_process(1, str(out))
        assert victim is not None
        frozen_at = time.time()
        os.kill(victim, signal.SIGSTOP)
        code = nodes[0].wait(60)
        took = time.time() - frozen_at
    finally:
        if victim is not None:
            os.kill(victim, signal.SIGKILL)
        for node in nodes:
            node.kill()
    log = (tmp_path / "log0" / "workerlog.0").read_text(errors="replace")
    print(f"node 0 ended with exit code {code}, {took:.1f} s after its peer froze")
    assert code != 0 and 6 <= took < 30, (code, took)
    assert "no training step finished" in log and "--resume auto" in log
    assert checkpoint.load(checkpoint.latest(out)).step >= 3  # the newest checkpoint is complete


def test_a_collective_that_lost_its_peer_is_said_in_one_line_and_other_errors_are_not_hidden():
    from pipeline.core.errors import UserError
    from pipeline.trainer import peer_checked

    def gloo_timeout(batch):
        raise RuntimeError("[/paddle/third_party/gloo/gloo/transport/tcp/unbound_buffer.cc:80] TIMEOUT self_rank = "
                           "none pair_rank = -1 peer_str = none")

    def bug(batch):
        raise RuntimeError("shape mismatch in matmul")
    with pytest.raises(UserError, match=r"rank 1: a collective operation failed \(.*TIMEOUT.*--resume auto") as caught:
        peer_checked(gloo_timeout, {}, 1)
    assert "\n" not in str(caught.value)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        peer_checked(bug, {}, 0)
