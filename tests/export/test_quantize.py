"""export/quantize.py: the int8 export, its accuracy and its refusals."""
import json

import numpy as np
import pytest

from infer.encoder import Encoder
from pipeline.core.errors import UserError
from tests.conftest import run_script
from tests.helpers.checks import assert_user_error
from tests.helpers.runs import random_inputs


def test_int8_export_is_quantised_and_close_to_fp32(exported_int8):
    import onnx

    manifest = json.loads((exported_int8 / "manifest.json").read_text())
    assert {"encoder.onnx", "encoder.int8.onnx"} <= set(manifest["sha256"])
    assert manifest["int8"]["min_cosine_to_fp32"] >= 0.99 and len(manifest["int8"]["fp32_matmuls"]) == 1
    assert manifest["int8"]["weight_bits"] == 7
    graph = onnx.load(str(exported_int8 / "encoder.int8.onnx")).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("DynamicQuantizeLinear") >= 4 and ops.count("MatMulInteger") >= 4  # 2 layers x 3 inputs
    weights = [onnx.numpy_helper.to_array(init) for init in graph.initializer
               if init.data_type == onnx.TensorProto.INT8]
    assert weights and all(np.abs(w).max() <= 64 for w in weights)  # 7 bits: 255 x 64 x 2 fits int16 without VNNI
    assert max(int(np.abs(w).max()) for w in weights) >= 32  # the 7 bits are used
    fp32, int8 = Encoder(exported_int8, backend="onnxruntime"), Encoder(exported_int8, precision="int8")
    assert int8.backend == "onnxruntime"
    texts = ["a crane is flying", "w1 w2 w3 the a w7 w8 w9 w10", ("the crane", "w4 w5")] * 3
    a, b = fp32.embed(texts, normalize=True), int8.embed(texts, normalize=True)
    cosine = (a * b).sum(1)
    assert cosine.min() >= 0.99 and np.abs(a - b).max() > 1e-4, cosine  # close, and really int8


def test_smoothing_keeps_the_fp32_model_exact(exported_int8, tmp_path):
    import onnx
    import onnxruntime

    from export.quantize import basic_optimized, smooth_activations
    from export.save import convert_to_onnx

    convert_to_onnx(exported_int8, tmp_path / "converted.onnx")  # the graph int8 is made from: paddle2onnx's
    basic_optimized(tmp_path / "converted.onnx", tmp_path / "basic.onnx")
    model = onnx.load(str(tmp_path / "basic.onnx"))
    feeds = [random_inputs(len(Encoder(exported_int8).vocab), 1, 12, seed) for seed in range(3)]
    before = onnxruntime.InferenceSession(model.SerializeToString()).run(None, feeds[0])[0]
    smooth_activations(model, feeds[1:])
    smoothing = [node for node in model.graph.node if node.op_type == "Mul" and node.name.endswith(".smooth")]
    assert len(smoothing) == 2 * 2  # per layer: the attention's input and the FFN's input
    after = onnxruntime.InferenceSession(model.SerializeToString()).run(None, feeds[0])[0]
    np.testing.assert_allclose(after, before, atol=1e-4)


def test_int8_refusals_are_one_line(exported_int8, exported_onnx):
    assert_user_error(run_script("infer/encode.py", "--model-dir", str(exported_int8), "--precision", "int8",
                                 "--backend", "paddle", "--text", "a"), "int8 runs on ONNX Runtime")
    assert_user_error(run_script("infer/encode.py", "--model-dir", str(exported_onnx), "--precision", "int8",
                                 "--text", "a"), "export with python export/save.py --int8")
    with pytest.raises(UserError, match="CPU path"):
        Encoder(exported_int8, device="gpu", precision="int8")
