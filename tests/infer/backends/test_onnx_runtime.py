"""infer/backends/onnx_runtime.py: parity with Paddle Inference, its files and int8 warnings."""
import json

import numpy as np
import pytest

from infer.encoder import Encoder
from tests.conftest import needs, run_script
from tests.helpers.runs import random_inputs


def test_onnxruntime_backend_matches_the_paddle_predictor(exported_onnx):
    manifest = json.loads((exported_onnx / "manifest.json").read_text())
    assert "encoder.onnx" in manifest["sha256"] and manifest["onnx_graph"] == "fused"
    paddle_encoder = Encoder(exported_onnx, device="cpu", backend="paddle")
    onnx_encoder = Encoder(exported_onnx, backend="onnxruntime")
    for rows, length, seed in ((1, 6, 0), (4, 32, 1), (3, 17, 2), (64, 20, 3)):
        arrays = random_inputs(len(paddle_encoder.vocab), rows, length, seed)
        (want,), (got,) = paddle_encoder.run(arrays), onnx_encoder.run(arrays)
        for row, n in enumerate(arrays["valid_length"]):
            assert np.abs(got[row, :n] - want[row, :n]).max() < 1e-5
    texts = ["a crane is flying", ("a crane driver came", "he just left")]
    for a, b in zip(paddle_encoder.encode(texts), onnx_encoder.encode(texts)):
        assert a.tokens == b.tokens and np.abs(a.vectors - b.vectors).max() < 1e-5


def test_onnxruntime_backend_needs_the_onnx_file(exported):
    needs("onnxruntime", "onnx")
    result = run_script("infer/encode.py", "--model-dir", str(exported), "--backend", "onnxruntime", "--text", "a")
    assert result.returncode == 2 and "export with python export/save.py --onnx" in result.stderr


@pytest.mark.parametrize("int8, vnni, warned", [({}, False, True), ({}, True, False),
                                                ({"weight_bits": 7}, False, False)])
def test_an_8_bit_int8_export_is_flagged_on_a_cpu_without_vnni(monkeypatch, caplog, int8, vnni, warned):
    import infer.backends.onnx_runtime as onnx_runtime

    monkeypatch.setattr(onnx_runtime, "cpu_has_vnni", lambda: vnni)
    onnx_runtime.warn_if_int8_saturates({"int8": {"file": "encoder.int8.onnx", **int8}})
    assert ("export again with python export/save.py --int8" in caplog.text) == warned
