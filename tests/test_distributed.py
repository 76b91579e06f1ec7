"""Data parallel under the fleet launcher on CPU (gloo): two ranks stay identical and match one process;
a rank killed mid-run ends the job, which resumes from its last complete checkpoint."""
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


def rank_process(rank: int, marker: str) -> int | None:
    """PID of the training process of `rank` whose command line mentions `marker` (its output folder)."""
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if "pipeline/train.py" in cmdline and marker in cmdline and f"PADDLE_TRAINER_ID={rank}".encode() in environ:
            return int(entry.name) if int(entry.name) != os.getpid() else None
    return None


def test_sigkill_of_one_rank_ends_the_job_and_it_resumes_from_the_last_complete_checkpoint(corpus_dir, tmp_path):
    out = tmp_path / "job"
    args = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(tmp_path / "log"),
            "pipeline/train.py", "--data-dir", str(corpus_dir), "--output-dir", str(out), *TINY,
            "-o", "train.save_every=1", "--steps", "100000"]
    launcher = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while checkpoint.latest(out) is None or checkpoint.load(checkpoint.latest(out)).step < 3:
            assert time.time() < deadline and launcher.poll() is None, "the job made no progress"
            time.sleep(0.2)
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
    resumed = run_script("-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(tmp_path / "log2"),
                         "pipeline/train.py", "--data-dir", str(corpus_dir), "--output-dir", str(out), *TINY,
                         "--resume", "--steps", str(newest.step + 2))
    assert resumed.returncode == 0, resumed.stdout[-2000:]
    assert checkpoint.load(checkpoint.latest(out)).step == newest.step + 2
