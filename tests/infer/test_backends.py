"""infer/backends/__init__.py: which runtime auto picks."""
from infer.encoder import Encoder


def test_auto_backend_picks_onnxruntime_only_where_the_export_has_it(exported, exported_onnx):
    assert Encoder(exported_onnx, device="cpu", backend="auto").backend == "onnxruntime"
    assert Encoder(exported, device="cpu", backend="auto").backend == "paddle"
