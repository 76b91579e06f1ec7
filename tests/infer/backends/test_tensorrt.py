"""The TensorRT path (PIR-TRT) as far as a CPU can check it: the warm-up data that sets the shape ranges,
the cached conversion and its checksums, and clear refusals on a build without CUDA or TensorRT."""
import importlib.util
import json
import shutil

import numpy as np
import pytest

import infer.backends.tensorrt as tensorrt
from pipeline.core.errors import UserError
from pipeline.core.vocab import SPECIAL_TOKENS, Vocab
from tests.conftest import run_script

VOCAB = Vocab(list(SPECIAL_TOKENS) + [f"w{i}" for i in range(95)])


@pytest.mark.parametrize("max_batch, max_len", [(64, 32), (1, 8), (5, 512)])
def test_warmup_data_spans_the_shape_range_with_valid_lengths_inside_each_row(max_batch, max_len):
    data = tensorrt.warmup_data(max_batch, max_len, VOCAB)
    assert list(data) == ["input_ids", "token_type_ids", "valid_length"]
    ids, segments, valid = (data[name] for name in data)
    assert [a.shape for a in ids] == [(1, 1), (max(1, max_batch // 2), max_len), (max_batch, max_len)]
    assert [len(v) for v in valid] == [1, max(1, max_batch // 2), max_batch]
    assert valid[0][0] == 1 and valid[2].max() == max_len and all(v.dtype == np.int64 for v in valid)
    for rows, types, lengths in zip(ids, segments, valid):
        assert rows.dtype == types.dtype == np.int64 and ((1 <= lengths) & (lengths <= rows.shape[1])).all()
        for row, segment, n in zip(rows, types, lengths):
            assert row[0] == VOCAB.sep if n == 1 else (row[0] == VOCAB.cls and row[n - 1] == VOCAB.sep)
            assert (row[n:] == VOCAB.pad).all() and (segment[n:] == 0).all() and (row < len(VOCAB)).all()
    if max_batch > 2:
        assert len(set(valid[2].tolist())) > 2  # many lengths, not only the extremes


def fake_convert(calls, fail: bool = False):
    """paddle.tensorrt.convert's file layout: <save_model_dir>.json + .pdiparams, engines in <save_model_dir>/."""
    def convert(folder, target, precision, warmup):
        calls.append((precision, warmup["input_ids"][2].shape, target))
        engines = tensorrt.engine_folder(target)
        engines.mkdir(parents=True)
        (engines / "engine_123_0.trt").write_bytes(b"engine")
        if fail:
            raise RuntimeError("the converter died half-way")
        (target / "encoder.json").write_text(f"converted {precision}")
        (target / "encoder.pdiparams").write_bytes(b"weights")
    return convert


def converted(folder, precision="fp16", batch=16, gpu="NVIDIA H200", trt="10.5.0"):
    manifest = json.loads((folder / "manifest.json").read_text())
    return tensorrt.converted_program(folder, manifest, VOCAB, precision, batch, gpu, trt)


def test_the_conversion_is_cached_in_its_final_folder_and_redone_when_it_differs(exported, tmp_path, monkeypatch):
    folder = tmp_path / "export"
    shutil.copytree(exported, folder)
    calls = []
    monkeypatch.setattr(tensorrt, "convert", fake_convert(calls))
    program, params = converted(folder)
    cached = folder / "tensorrt-fp16-b16-nvidia-h200-trt10.5.0"
    assert (program, params) == (cached / "encoder.json", cached / "encoder.pdiparams")
    assert calls == [("fp16", (16, 32), cached)]  # converted where it stays: engine paths recorded stay true
    recorded = json.loads((folder / "manifest.json").read_text())["tensorrt"][cached.name]
    assert set(recorded) == {"encoder.json", "encoder.pdiparams", "encoder/engine_123_0.trt"}
    converted(folder)
    assert len(calls) == 1  # reused
    (cached / "encoder" / "engine_123_0.trt").write_bytes(b"another engine")  # not the engine recorded
    converted(folder)
    assert len(calls) == 2 and (cached / "encoder" / "engine_123_0.trt").read_bytes() == b"engine"
    converted(folder, gpu="Tesla T4")
    converted(folder, trt="8.6.1")
    assert len(calls) == 4 and len(json.loads((folder / "manifest.json").read_text())["tensorrt"]) == 3
    with pytest.raises(UserError, match="must be one of fp32, fp16"):
        converted(folder, precision="bf16")


def test_a_conversion_that_dies_leaves_no_cache_and_is_redone(exported, tmp_path, monkeypatch):
    folder = tmp_path / "export"
    shutil.copytree(exported, folder)
    calls = []
    monkeypatch.setattr(tensorrt, "convert", fake_convert(calls, fail=True))
    with pytest.raises(RuntimeError):
        converted(folder)
    assert not any(p.name.startswith("tensorrt-") for p in folder.iterdir())
    assert "tensorrt" not in json.loads((folder / "manifest.json").read_text())
    monkeypatch.setattr(tensorrt, "convert", fake_convert(calls))
    assert converted(folder)[0].read_text() == "converted fp16" and len(calls) == 2


def test_each_tensorrt_predictor_is_pointed_at_its_own_engines(tmp_path):
    """A plain GPU predictor made first sets the flag to its own program's folder; the TensorRT one resets it."""
    import paddle

    paddle.set_flags({tensorrt.ENGINE_FLAG: str(tmp_path / "export" / "encoder")})  # what the first predictor did
    tensorrt.point_engine_lookup(tmp_path / "export" / "tensorrt-fp16-b16-x-trt10")
    assert paddle.get_flags([tensorrt.ENGINE_FLAG])[tensorrt.ENGINE_FLAG] == \
        str((tmp_path / "export" / "tensorrt-fp16-b16-x-trt10" / "encoder").resolve())


def fake_paddle_tensorrt(monkeypatch, error: Exception | None = None, convert_error: Exception | None = None):
    """Simulate `import paddle.tensorrt` failing with `error`, or a converter whose convert raises."""
    import builtins
    import types

    real_import = builtins.__import__

    def importer(name, *args, **kwargs):
        if name == "paddle.tensorrt" and error is not None:
            raise error
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", importer)
    if convert_error is not None:
        module = types.SimpleNamespace(Input=lambda **kw: kw, TensorRTConfig=lambda **kw: kw,
                                       PrecisionMode=types.SimpleNamespace(FP32=0, FP16=1),
                                       convert=lambda *a: (_ for _ in ()).throw(convert_error))
        monkeypatch.setattr(tensorrt, "import_tensorrt", lambda: module)


@pytest.mark.parametrize("error, fragment", [
    (ModuleNotFoundError("No module named 'tensorrt'", name="tensorrt"), "pip install tensorrt"),
    (ModuleNotFoundError("No module named 'paddle.tensorrt'", name="paddle.tensorrt"), "no paddle.tensorrt"),
    (OSError("libnvinfer.so.10: cannot open shared object file"), "LD_LIBRARY_PATH"),
])
def test_a_missing_tensorrt_package_or_library_says_what_to_install(exported, tmp_path, monkeypatch, error, fragment):
    fake_paddle_tensorrt(monkeypatch, error=error)
    with pytest.raises(UserError, match=fragment) as caught:
        tensorrt.convert(exported, tmp_path / "trt", "fp32", {})
    assert "\n" not in str(caught.value)


def test_a_plugin_library_missing_at_conversion_says_so(exported, tmp_path, monkeypatch):
    fake_paddle_tensorrt(monkeypatch, convert_error=OSError("libnvinfer_plugin.so: cannot open shared object file"))
    with pytest.raises(UserError, match="libnvinfer_plugin.so.*LD_LIBRARY_PATH"):
        tensorrt.convert(exported, tmp_path / "trt", "fp32", tensorrt.warmup_data(2, 8, VOCAB))


def test_batches_over_the_engine_range_are_split(exported):
    from infer.encoder import Encoder

    encoder = Encoder(exported, device="cpu")
    items = encoder.preprocess(["a crane is flying", "flying", "the river bank", "a", "crane"])
    want = encoder.encode_tokenized(items)
    sizes = []
    real_run = encoder.run
    encoder.run = lambda arrays, program="encoder": sizes.append(len(arrays["valid_length"])) or real_run(arrays)
    encoder.runtime.max_rows = 2  # as a TensorRT encoder whose engine takes at most 2 rows
    got = encoder.encode_tokenized(items)
    assert sizes == [2, 2, 1]
    for a, b in zip(want, got):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.skipif(importlib.util.find_spec("paddle.tensorrt") is not None, reason="this build has paddle.tensorrt")
def test_a_build_without_paddle_tensorrt_is_refused_in_one_line(exported, tmp_path):
    with pytest.raises(UserError, match="no paddle.tensorrt"):
        tensorrt.convert(exported, tmp_path / "trt", "fp32", {})


def test_trt_on_a_machine_without_a_gpu_exits_2(exported):
    for flags in (["--trt"], ["--trt", "--precision", "fp16"], ["--device", "gpu", "--precision", "fp16"]):
        result = run_script("infer/encode.py", "--text", "a crane", "--model-dir", str(exported), *flags)
        assert result.returncode == 2 and "Traceback" not in result.stderr and result.stderr.startswith("error:")


def test_gpu_check_records_every_row_failed_or_not_and_always_prints_the_table(tmp_path, monkeypatch, capsys):
    import bench.common
    from bench import gpu_check

    monkeypatch.setattr(bench.common, "RESULTS", tmp_path)

    def broken():
        raise RuntimeError("TRT runtime input shape [65, 64] is invalid\n  at line 3")
    rows = [gpu_check.row("CUDA devices", lambda: (True, "NVIDIA H200")),
            gpu_check.row("TensorRT fp16", broken),
            gpu_check.row("GPU predictor fp32", lambda: (False, "max |GPU - CPU| 3.0e-01 (bound 0.01)")),
            gpu_check.row("export/save.py", lambda: (True, "exported"))]
    assert gpu_check.report(rows) == 1
    table = capsys.readouterr().out
    for name in ("CUDA devices", "TensorRT fp16", "GPU predictor fp32", "export/save.py"):
        assert name in table
    assert "RuntimeError: at line 3" in table
    written = json.loads((tmp_path / "gpu_check.json").read_text())["rows"]
    assert [r["ok"] for r in written] == [True, False, False, True]
    assert gpu_check.report([rows[0], rows[3]]) == 0
