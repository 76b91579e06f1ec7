"""infer/model_folder.py: incomplete, damaged or mismatched export folders are refused in one line."""
import json
import shutil

from pipeline.core.export_format import VOCAB
from tests.conftest import run_script
from tests.helpers.checks import assert_user_error


def test_broken_model_folders(exported, tmp_path):
    incomplete = tmp_path / "incomplete"
    shutil.copytree(exported, incomplete)
    (incomplete / "encoder.pdiparams").unlink()
    assert_user_error(run_script("infer/encode.py", "--text", "x", "--model-dir", str(incomplete)), "is incomplete")
    mismatch = tmp_path / "mismatch"
    shutil.copytree(exported, mismatch)
    vocab = json.loads((mismatch / VOCAB).read_text())
    vocab["idx_to_token"].append("extra-word")
    (mismatch / VOCAB).write_text(json.dumps(vocab))
    assert_user_error(run_script("infer/encode.py", "--text", "x", "--model-dir", str(mismatch)), "the model expects")
    encoder_only = tmp_path / "encoder_only"
    shutil.copytree(exported, encoder_only)
    for name in ("pretraining.json", "pretraining.pdiparams"):
        (encoder_only / name).unlink()
    assert_user_error(run_script("infer/encode.py", "--fill-mask", "a <mask>", "--model-dir", str(encoder_only)),
                      "--with-heads")
