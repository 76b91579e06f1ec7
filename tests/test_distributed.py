"""Data parallel under the fleet launcher on CPU (gloo): two ranks stay identical and match one process."""
import numpy as np
import pytest

from tests.conftest import TINY, run_script

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
