"""export/save.py: what an export holds, its parity with the checkpoint, and a failed export keeping the old one."""
import json
import shutil

import numpy as np
import paddle
import pytest

from infer.encoder import Encoder
from pipeline import checkpoint
from pipeline.core.export_format import VOCAB
from pipeline.model import BertForPretraining
from tests.conftest import run_script
from tests.helpers.checks import assert_user_error
from tests.helpers.runs import random_inputs


@pytest.fixture(scope="module")
def dygraph_model(trained):
    ckpt = checkpoint.load(checkpoint.latest(trained))
    model = BertForPretraining(ckpt.config.model)
    checkpoint.apply_model_state(model, ckpt.model_state, ckpt.path)
    model.eval()
    return model


def test_export_writes_program_weights_vocab_and_manifest(exported, trained):
    names = {p.name for p in exported.iterdir()}
    assert {"encoder.json", "encoder.pdiparams", "vocab.json", "manifest.json",
            "pretraining.json", "pretraining.pdiparams"} <= names
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["checkpoint_step"] == 8 and manifest["max_len"] == 32
    assert [i["name"] for i in manifest["inputs"]] == ["input_ids", "token_type_ids", "valid_length"]
    import hashlib
    assert manifest["sha256"]["encoder.pdiparams"] == hashlib.sha256((exported / "encoder.pdiparams").read_bytes()).hexdigest()
    assert manifest["paddle_version"] == paddle.__version__
    assert manifest["embedding"] == {"pooling": "cls", "normalize": False, "dimensions": 32}


@pytest.mark.parametrize("onednn", ["off", "on"])
def test_predictor_matches_the_trained_model(exported, dygraph_model, onednn):
    """oneDNN has broken BERT-like models on CPU before (Paddle issue #55477): check both."""
    encoder = Encoder(exported, device="cpu", onednn=onednn)
    vocab_size = len(encoder.vocab)
    for rows, length, seed in ((1, 6, 0), (4, 32, 1), (3, 17, 2), (8, 9, 3), (1, 6, 4)):
        arrays = random_inputs(vocab_size, rows, length, seed)
        (predicted,) = encoder.run(arrays)
        with paddle.no_grad():
            expected = dygraph_model.encoder(*(paddle.to_tensor(arrays[k]) for k in
                                               ("input_ids", "token_type_ids", "valid_length"))).numpy()
        for row, n in enumerate(arrays["valid_length"]):
            assert np.abs(predicted[row, :n] - expected[row, :n]).max() < 1e-5


def test_export_errors_and_a_failed_export_keeps_the_old_model(trained, exported, tmp_path, monkeypatch):
    assert_user_error(run_script("export/save.py", "--output-dir", str(tmp_path)), "no checkpoint")
    assert_user_error(run_script("export/save.py", "--checkpoint", str(tmp_path / "nope")), "checkpoint folder not found")
    target = tmp_path / "inference"
    shutil.copytree(exported, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    from export import save

    def broken_save(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(save.paddle.jit, "save", broken_save)
    ckpt = checkpoint.load(checkpoint.latest(trained))
    with pytest.raises(RuntimeError):
        save.export_checkpoint(ckpt, save.Vocab.load(trained / VOCAB), target, with_heads=False)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_export_of_another_model_in_the_default_folder_is_kept_unless_forced(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run, ignore=shutil.ignore_patterns("inference"))
    (run / "inference").mkdir()
    other = {"from_hf": str(tmp_path / "all-MiniLM-L6-v2"), "format": 1}
    (run / "inference" / "manifest.json").write_text(json.dumps(other), encoding="utf-8")
    assert_user_error(run_script("export/save.py", "--output-dir", str(run)),
                      "holds the export of", "--export-dir", "--force")
    assert json.loads((run / "inference" / "manifest.json").read_text()) == other
    result = run_script("export/save.py", "--output-dir", str(run), "--force")
    assert result.returncode == 0, result.stderr
    result = run_script("export/save.py", "--output-dir", str(run))  # the same run again: a plain re-export
    assert result.returncode == 0, result.stderr
    assert "checkpoint" in json.loads((run / "inference" / "manifest.json").read_text())


def test_int8_export_keeps_paddle2onnx_lines_to_itself(exported_int8, trained, tmp_path):
    result = run_script("export/save.py", "--output-dir", str(trained), "--export-dir", str(tmp_path / "q"), "--int8")
    assert result.returncode == 0, result.stderr
    assert "Paddle2ONNX" not in result.stdout + result.stderr and "ONNX model saved" not in result.stdout + result.stderr
