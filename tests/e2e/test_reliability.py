"""Faults injected for real (signals, a second run, damaged files, a full disk) and hostile input."""
import errno
import hashlib
import json
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline import checkpoint
from pipeline.core.errors import UserError
from pipeline.data import wikitext
from tests.conftest import ROOT, TINY, run_script
from tests.helpers.checks import assert_user_error
from tests.helpers.runs import train

SOURCES = [p for folder in ("pipeline", "export", "infer") for p in (ROOT / folder).rglob("*.py")]


# -- hostile archives ---------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", ["../evil.txt", "/tmp/evil-absolute.txt", "wikitext-2/../../evil.txt"])
def test_an_archive_entry_outside_the_folder_is_refused(tmp_path, entry):
    archive = tmp_path / "wikitext-2-v1.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("wikitext-2/wiki.train.tokens", " a b . c d . \n")
        zf.writestr(zipfile.ZipInfo(entry), "owned")
    with pytest.raises(UserError, match="not a safe archive"):
        wikitext.find_split(archive, "train", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "evil.txt").exists() and not Path("/tmp/evil-absolute.txt").exists()
    assert not list((tmp_path / "cache").glob("unpacked-*")), "nothing unpacked"


def test_a_link_in_an_archive_is_refused(tmp_path):
    archive = tmp_path / "wikitext-2-v1.zip"
    link = zipfile.ZipInfo("wikitext-2/wiki.train.tokens")
    link.external_attr = (0o120777 << 16)  # a symbolic link to /etc/passwd
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(UserError, match="is a link"):
        wikitext.find_split(archive, "train", cache_dir=tmp_path / "cache")


def test_nothing_loads_with_pickle():
    forbidden = [r"\bimport pickle\b", r"\bpickle\.", r"paddle\.load\(", r"yaml\.load\(", r"allow_pickle\s*=\s*True",
                 r"torch\.load\("]
    found = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}" for path in SOURCES
             for n, line in enumerate(path.read_text().splitlines(), 1)
             if any(re.search(p, line) for p in forbidden)]
    assert not found, found


# -- a full disk --------------------------------------------------------------------------------------

def test_a_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(trained, tmp_path, monkeypatch):
    out = tmp_path / "o"
    shutil.copytree(trained, out)
    before = checkpoint.latest(out)
    ckpt = checkpoint.load(before)

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save_file", no_space)
    with pytest.raises(UserError, match=f"No space left on device.*{before.name}"):
        checkpoint.save(output_dir=out, step=9, config=ckpt.config, model_state=ckpt.model_state,
                        optimizer_state=ckpt.optimizer_state, extra={}, keep=3)
    assert checkpoint.latest(out) == before and checkpoint.load(before).step == ckpt.step
    assert not list((out / "checkpoints").glob(".*")), "no temporary folder left"


def test_a_full_disk_while_exporting_keeps_the_previous_export(trained, exported, tmp_path, monkeypatch):
    from export import save
    from pipeline.core import vocab

    target = tmp_path / "inference"
    shutil.copytree(exported, target)
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in target.iterdir()}

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(vocab, "write_text_atomic", no_space)
    with pytest.raises(UserError, match="No space left on device.*previous export is unchanged"):
        save.main(["--output-dir", str(trained), "--export-dir", str(target)])
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in target.iterdir()} == digests
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no temporary folder left"


# -- damaged exports ----------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_export_is_refused_in_one_line(exported, tmp_path, damage):
    target = tmp_path / "inference"
    shutil.copytree(exported, target)
    weights = target / "encoder.pdiparams"
    data = bytearray(weights.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x01
    else:
        data = data[: len(data) // 2]
    weights.write_bytes(bytes(data))
    result = run_script("infer/encode.py", "--model-dir", str(target), "--text", "a crane is flying")
    assert_user_error(result, "does not match the checksum")


def test_the_export_is_hashed_once_at_load_and_never_per_call(exported, monkeypatch):
    """The checksum costs one read of the weights when the model opens (0.33 s for 440 MB, bench/infer.py),
    nothing per request."""
    import infer.model_folder as model_folder
    from infer.encoder import Encoder

    hashed = []
    real = model_folder.file_digest
    monkeypatch.setattr(model_folder, "file_digest", lambda path: hashed.append(path.name) or real(path))
    encoder = Encoder(exported, device="cpu")
    assert hashed == ["encoder.pdiparams"]
    for _ in range(3):
        encoder.encode(["a crane is flying"])
        encoder.embed(["a crane is flying", "flying"])
    assert hashed == ["encoder.pdiparams"]


# -- two runs, one folder; SIGKILL --------------------------------------------------------------------

def start_training(corpus_dir, out, steps, *extra):
    cmd = [sys.executable, "pipeline/train.py", "--data-dir", str(corpus_dir), "--output-dir", str(out),
           "--steps", str(steps), *TINY, *extra]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_steps(out, steps, proc, timeout=120):
    deadline = time.time() + timeout
    metrics = out / "metrics.jsonl"
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= steps:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("training made no progress")


def test_a_second_run_on_the_same_folder_is_refused_and_a_killed_run_does_not_block(corpus_dir, tmp_path):
    out = tmp_path / "o"
    first = start_training(corpus_dir, out, 100000)
    try:
        wait_for_steps(out, 1, first)
        assert_user_error(train(corpus_dir, out, steps=5), "is in use by process", "training run")
        first.send_signal(signal.SIGKILL)
        first.wait(30)
        assert checkpoint.latest(out) is None, "killed before its first checkpoint"
        again = train(corpus_dir, out, steps=3)
        assert again.returncode == 0, again.stderr
    finally:
        first.kill()


def final_parameters(out):
    return checkpoint.load(checkpoint.latest(out)).model_state


def resume_flag(out):
    return ["--resume"] if checkpoint.latest(out) else []


@pytest.mark.parametrize("seed", [0, 1])
def test_sigkill_at_random_moments_then_resume_equals_an_unbroken_run(corpus_dir, tmp_path, seed):
    """Killed three times at random moments (start-up, a step, a checkpoint write: one is written every
    step), the run always has a newest checkpoint that loads, and finishes with an unbroken run's weights."""
    steps, every = 12, ["-o", "train.save_every=1"]
    whole, out = tmp_path / "whole", tmp_path / "killed"
    assert train(corpus_dir, whole, *every, steps=steps).returncode == 0
    rng = np.random.default_rng(seed)
    for _ in range(3):
        proc = start_training(corpus_dir, out, steps, *every, *resume_flag(out))
        time.sleep(rng.uniform(1.0, 4.0))
        if proc.poll() is not None:
            break  # finished before the kill
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        if checkpoint.latest(out) is not None:
            checkpoint.load(checkpoint.latest(out))  # raises if it were half-written
        left = [p.name for p in (out / "checkpoints").iterdir()] if (out / "checkpoints").is_dir() else []
        assert all(re.fullmatch(r"latest|step_\d+|\.(step_\d+|latest)\..*", n) for n in left), left
    if checkpoint.latest(out) is None or checkpoint.load(checkpoint.latest(out)).step < steps:
        finished = train(corpus_dir, out, *every, *resume_flag(out), steps=steps)
        assert finished.returncode == 0, finished.stderr
    want, got = final_parameters(whole), final_parameters(out)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5, err_msg=name)
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".step_")], "stale temporaries cleared"


# -- hostile text -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def encoder(exported):
    from infer.encoder import Encoder

    return Encoder(exported, device="cpu")


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=0, max_size=400))
def test_any_unicode_text_encodes_or_is_refused_clearly(encoder, text):
    try:
        (result,) = encoder.encode([text], truncate=True)
    except UserError as err:
        assert "empty text" in str(err)
        assert not text.split()
        return
    assert result.vectors.shape == (len(result.tokens), 32) and np.isfinite(result.vectors).all()


@pytest.mark.parametrize("stdin, ok", [
    (b"a crane\tis flying\n\nthe bank\n", False),  # an empty line in --file
    (b"\xff\xfe not utf-8\n", False),
    (b"tabs\tand\tmore tabs\n", True),
    (b"\x00\x01 control \x1b[31m characters\n", True),
    (("word " * 5000).encode() + b"\n", False),  # over max_len without --truncate
])
def test_the_cli_on_hostile_input_encodes_or_fails_in_one_line(exported, stdin, ok):
    result = subprocess.run([sys.executable, "infer/encode.py", "--model-dir", str(exported), "--file", "-", "--json"],
                            cwd=ROOT, input=stdin, capture_output=True, timeout=120)
    assert b"Traceback" not in result.stderr
    if ok:
        assert result.returncode == 0, result.stderr
        json.loads(result.stdout.splitlines()[0])
    else:
        assert result.returncode == 2 and result.stderr.decode().startswith("error: ")
