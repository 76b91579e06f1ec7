"""pipeline/train.py end to end on the tiny model: outputs, resume, SIGTERM, checkpoints, bad input."""
import json
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from pipeline import checkpoint
from tests.conftest import ROOT, TINY, run_script
from tests.helpers.checks import assert_user_error
from tests.helpers.runs import losses, train


def test_run_writes_every_output_and_the_seeds_summary(trained):
    names = {p.name for p in trained.iterdir()}
    assert {"config.yaml", "vocab.json", "metrics.jsonl", "loss.png", "checkpoints"} <= names
    assert (trained / "checkpoints" / "latest").read_text().strip() == "step_8"
    assert (trained / "loss.png").read_bytes()[:4] == b"\x89PNG"
    records = losses(trained)
    assert [r[0] for r in records] == list(range(1, 9))
    assert np.mean([r[1] for r in records[-3:]]) < np.mean([r[1] for r in records[:3]]), "MLM loss falls"


def test_summary_lines_keep_the_seeds_form(corpus_dir, tmp_path):
    result = train(corpus_dir, tmp_path / "o", "--eval-split", "test", steps=3)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("MLM loss ") and ", NSP loss " in line and "mean over this run's 3 steps" in line
               for line in lines)
    assert any(" sentence pairs/sec on [Place(cpu)]" in line for line in lines)
    assert "never reaches" not in result.stderr  # TINY has no warm-up
    metrics = json.loads((tmp_path / "o" / "eval.json").read_text())
    assert {"mlm_accuracy", "mlm_unigram_baseline", "mlm_accuracy_known", "mlm_unigram_baseline_known",
            "mlm_perplexity", "nsp_accuracy", "nsp_majority_baseline", "encoding_mean_cosine",
            "crane_cosine", "pairs"} <= set(metrics)
    assert 0 <= metrics["mlm_accuracy"] <= 1 and metrics["mlm_perplexity"] > 1 and metrics["pairs"] > 0
    assert -1 <= metrics["encoding_mean_cosine"] <= 1 and -1 <= metrics["crane_cosine"] <= 1.0001
    assert any(line.startswith("encodings: mean token cosine") for line in lines)


def test_only_our_lines_unless_verbose(corpus_dir, tmp_path):
    quiet = train(corpus_dir, tmp_path / "q", steps=1)
    assert quiet.returncode == 0, quiet.stderr
    noise = ("Modified FLAGS", "topology.py", "distributed_strategy.py", "Warning")
    assert not [line for line in (quiet.stdout + quiet.stderr).splitlines() if any(n in line for n in noise)]
    loud = train(corpus_dir, tmp_path / "v", "--verbose", steps=1)
    assert loud.returncode == 0 and "topology.py" in loud.stdout + loud.stderr


def test_checkpoint_loads_without_pickle(trained):
    path = checkpoint.latest(trained)
    for name in (checkpoint.MODEL_FILE, checkpoint.OPTIMIZER_FILE):
        head = (path / name).read_bytes()[:16]
        assert not head.startswith(b"\x80"), "no pickle protocol header"
    ckpt = checkpoint.load(path)
    assert ckpt.step == 8 and "encoder.embeddings.word_embeddings.weight" in ckpt.model_state
    assert any(k.startswith("encoder.layers.0.attention.query.weight::moment1") for k in ckpt.optimizer_state)


@pytest.mark.parametrize("masks", ["auto", "paddle"])
def test_resume_gives_the_same_losses_as_an_unbroken_run(corpus_dir, tmp_path, masks):
    """Also with Paddle's own dropout (train.dropout_masks=paddle), the graph every GPU run uses."""
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    flags = ["-o", f"train.dropout_masks={masks}", "-o", "model.dropout=0.3"]
    assert train(corpus_dir, whole, *flags, steps=6).returncode == 0
    assert train(corpus_dir, parts, *flags, steps=3).returncode == 0
    resumed = train(corpus_dir, parts, "--resume", *flags, steps=6)
    assert resumed.returncode == 0, resumed.stderr
    np.testing.assert_allclose(np.array(losses(parts)), np.array(losses(whole)), rtol=1e-4)


def test_paddles_own_dropout_trains_and_exports_with_parity(corpus_dir, tmp_path):
    """train.dropout_masks=paddle on CPU: F.dropout in the static graph (not the host masks); the loss falls,
    the dropout really drops (other losses than with dropout 0), and the export equals the trained model."""
    from tests.helpers.runs import assert_export_matches_checkpoint

    out, plain = tmp_path / "gpu-form", tmp_path / "no-dropout"
    result = train(corpus_dir, out, "-o", "train.dropout_masks=paddle", "-o", "model.dropout=0.2", steps=12)
    assert result.returncode == 0, result.stderr
    assert train(corpus_dir, plain, "-o", "model.dropout=0", steps=12).returncode == 0
    records = losses(out)
    assert np.mean([r[1] for r in records[-3:]]) < np.mean([r[1] for r in records[:3]])
    assert not np.allclose([r[1] for r in records], [r[1] for r in losses(plain)])
    exported = run_script("export/save.py", "--output-dir", str(out), "--export-dir", str(out / "inference"))
    assert exported.returncode == 0, exported.stderr
    assert_export_matches_checkpoint(out, out / "inference")


def test_sigterm_stops_at_a_step_boundary_with_a_checkpoint_that_resumes(corpus_dir, tmp_path):
    out = tmp_path / "o"
    cmd = [sys.executable, "pipeline/train.py", "--data-dir", str(corpus_dir), "--output-dir", str(out),
           "--steps", "400", *TINY]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not ((out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr
    assert "Resume with:" in stdout and "--resume" in stdout
    stopped_at = checkpoint.load(checkpoint.latest(out)).step
    assert 1 <= stopped_at < 400
    resumed = train(corpus_dir, out, "--resume", steps=stopped_at + 2)
    assert resumed.returncode == 0, resumed.stderr
    assert [r[0] for r in losses(out)] == list(range(1, stopped_at + 3))


def test_a_warm_up_as_long_as_the_run_is_warned_of(corpus_dir, tmp_path):
    result = train(corpus_dir, tmp_path / "o", "-o", "train.warmup_steps=5", steps=3)
    assert result.returncode == 0, result.stderr
    assert "train.warmup_steps (5) is not below train.steps (3)" in result.stderr


def test_bad_settings_and_paths(corpus_dir, tmp_path):
    assert_user_error(train(corpus_dir, tmp_path / "a", "-o", "train.bogus=1"), "unknown setting train.bogus")
    assert_user_error(train(corpus_dir, tmp_path / "a", "-o", "train.steps=x"), "train.steps must be int")
    assert_user_error(train(corpus_dir, tmp_path / "a", "-c", str(tmp_path / "none.yaml")), "config file not found")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_user_error(train(corpus_dir, blocker / "out"), "is not writable")
    assert_user_error(train(tmp_path / "missing", tmp_path / "a"), "data folder not found")
    assert_user_error(train(corpus_dir, tmp_path / "a", "--split", "dev"), "setting data.split must be one of")
    assert_user_error(train(corpus_dir, tmp_path / "a", "-o", "train.amp=bf16"), "needs a GPU")
    assert_user_error(train(corpus_dir, tmp_path / "a", "-o", "train.accumulate_steps=5"), "not divisible")
    assert_user_error(train(corpus_dir, tmp_path / "a", "-o", "data.max_len=6"), "no sentence pair fits")


@pytest.mark.parametrize("amp, bf16, fp16, fragment", [
    ("bf16", False, True, "no bf16 arithmetic"),   # a V100 or T4: auto_cast would only warn, then train in fp32
    ("fp16", False, False, "no fp16 arithmetic"),  # below compute capability 7.0
])
def test_amp_a_gpu_cannot_run_is_refused(monkeypatch, amp, bf16, fp16, fragment):
    import paddle

    from pipeline import train as train_module
    from pipeline.core.errors import UserError

    monkeypatch.setattr(paddle.amp, "is_bfloat16_supported", lambda device=None: bf16)
    monkeypatch.setattr(paddle.amp, "is_float16_supported", lambda device=None: fp16)
    monkeypatch.setattr(paddle.device.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-16GB")
    with pytest.raises(UserError, match=fragment):
        train_module.check_amp(amp, use_gpu=True)
    monkeypatch.setattr(paddle.amp, "is_bfloat16_supported", lambda device=None: True)
    monkeypatch.setattr(paddle.amp, "is_float16_supported", lambda device=None: True)
    train_module.check_amp(amp, use_gpu=True)  # an A100 runs both


def test_bad_resumes(corpus_dir, trained, tmp_path):
    assert_user_error(train(corpus_dir, tmp_path / "empty", "--resume"), "no checkpoint")
    other = tmp_path / "other"
    shutil.copytree(trained, other)
    assert_user_error(train(corpus_dir, other, "--resume", "-o", "model.hidden_size=48", steps=10),
                      "model.hidden_size differ")
    assert_user_error(train(corpus_dir, other, steps=10), "already holds checkpoints", "--resume")
    weights = other / "checkpoints" / "step_8" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF
    weights.write_bytes(bytes(data))
    assert_user_error(train(corpus_dir, other, "--resume", steps=10), "step_8 is corrupt")
    assert data == bytearray(weights.read_bytes()), "a refused checkpoint is left as it was"


def test_nan_loss_stops_with_the_step_and_keeps_the_good_checkpoint(corpus_dir, trained, tmp_path):
    out = tmp_path / "o"
    shutil.copytree(trained, out)
    before = (out / "checkpoints" / "step_8" / "model.safetensors").read_bytes()
    result = train(corpus_dir, out, "--resume", "-o", "train.lr=1e30", steps=30)
    assert_user_error(result, "loss became", "at step", "step_8")
    assert checkpoint.latest(out).name == "step_8"
    assert (out / "checkpoints" / "step_8" / "model.safetensors").read_bytes() == before


def test_max_minutes_ends_the_run_early_with_a_checkpoint(corpus_dir, tmp_path):
    out = tmp_path / "o"
    result = train(corpus_dir, out, "-o", "train.max_minutes=0.001", steps=500)
    assert result.returncode == 0, result.stderr
    assert "MLM loss" in result.stdout and "Resume with" not in result.stdout
    step = checkpoint.load(checkpoint.latest(out)).step
    assert 1 <= step < 500 and len(losses(out)) == step


def test_checkpoints_are_pruned_to_keep_checkpoints(corpus_dir, tmp_path):
    out = tmp_path / "o"
    result = train(corpus_dir, out, "-o", "train.save_every=1", "-o", "train.keep_checkpoints=2", steps=4)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (out / "checkpoints").glob("step_*")) == ["step_3", "step_4"]
    assert not list((out / "checkpoints").glob(".*")), "no temporary folders left behind"


def test_adamw_warmup_decay_and_clipping_resume_exactly(corpus_dir, tmp_path):
    schedule = ["-o", "train.optimizer=adamw", "-o", "train.weight_decay=0.01", "-o", "train.warmup_steps=2",
                "-o", "train.lr_decay=linear", "-o", "train.grad_clip=1.0"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert train(corpus_dir, whole, *schedule, steps=6).returncode == 0
    lrs = [json.loads(line)["lr"] for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert lrs[0] < lrs[1] == lrs[2] > lrs[3] > lrs[4] > lrs[5] > 0, lrs  # warm-up, then linear decay
    assert train(corpus_dir, parts, *schedule, steps=3).returncode == 0
    assert train(corpus_dir, parts, *schedule, "--resume", steps=6).returncode == 0
    np.testing.assert_allclose(np.array(losses(parts)), np.array(losses(whole)), rtol=1e-4)


def test_evaluate_command_reports_held_out_metrics(corpus_dir, trained, tmp_path):
    result = run_script("pipeline/evaluate.py", "--output-dir", str(trained), "--data-dir", str(corpus_dir),
                        "--split", "test")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("held-out MLM accuracy ")
    metrics = json.loads(result.stdout.strip().splitlines()[-1])
    assert 0 <= metrics["mlm_accuracy"] <= 1 and 0 <= metrics["nsp_accuracy"] <= 1 and metrics["pairs"] > 0
    assert_user_error(run_script("pipeline/evaluate.py", "--output-dir", str(tmp_path)), "no checkpoint")


def test_the_time_schedule_decays_to_zero_at_the_budget_and_a_resume_keeps_the_clock(corpus_dir, tmp_path):
    """train.decay_to=max_minutes: warm-up, then the rate falls with training time to 0 at the budget;
    the run ends there with a checkpoint, and a resume counts the time already spent."""
    from pipeline.config import TrainConfig
    from pipeline.trainer import lr_factor

    tc = TrainConfig(warmup_steps=4, decay_to="max_minutes", max_minutes=1.0)
    assert [lr_factor(s, tc, 0.0) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]
    assert lr_factor(100, tc, 30.0) == 0.5 and lr_factor(100, tc, 60.0) == 0.0 and lr_factor(1, tc, 50.0) < 0.2
    assert_user_error(train(corpus_dir, tmp_path / "none", "-o", "train.decay_to=max_minutes"),
                      "train.decay_to=max_minutes needs a time budget")
    assert_user_error(train(corpus_dir, tmp_path / "none", "-o", "train.decay_to=max_minutes", "-o",
                            "train.max_minutes=1"), "needs train.lr_decay=linear")

    out = tmp_path / "o"
    timed = ["-o", "train.decay_to=max_minutes", "-o", "train.lr_decay=linear", "-o", "train.warmup_steps=3"]
    result = train(corpus_dir, out, *timed, "-o", "train.max_minutes=0.12", steps=100000)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in records]
    assert len(lrs) > 6 and lrs[0] < lrs[1] < lrs[2] and lrs[3:] == sorted(lrs[3:], reverse=True), lrs
    assert lrs[-1] < 0.2 * max(lrs), "close to 0 when the budget is spent"
    spent = checkpoint.load(checkpoint.latest(out)).extra["training_seconds"]
    assert 0.12 * 60 <= spent < 0.12 * 60 + 5
    resumed = train(corpus_dir, out, *timed, "-o", "train.max_minutes=0.2", "--resume", steps=100000)
    assert resumed.returncode == 0, resumed.stderr
    after = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()][len(records):]
    assert after and after[0]["training_seconds"] > spent and after[-1]["training_seconds"] >= 0.2 * 60
