"""The TensorRT path (PIR-TRT) as far as a CPU can check it: the warm-up data that sets the shape ranges,
the cached conversion and its checksums, and clear refusals on a build without CUDA or TensorRT."""
import importlib.util
import json
import shutil

import numpy as np
import pytest

import infer.tensorrt as tensorrt
from pipeline.errors import UserError
from pipeline.vocab import SPECIAL_TOKENS, Vocab
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


def fake_convert(calls):
    def convert(folder, target, precision, warmup):
        calls.append((precision, warmup["input_ids"][2].shape))
        shutil.rmtree(target, ignore_errors=True)  # as atomic_folder replaces it
        target.mkdir()
        (target / "encoder.json").write_text(f"converted {precision}")
        (target / "encoder.pdiparams").write_bytes(b"weights")
    return convert


def test_the_conversion_is_cached_with_its_checksums_and_redone_when_they_differ(exported, tmp_path, monkeypatch):
    folder = tmp_path / "export"
    shutil.copytree(exported, folder)
    calls = []
    monkeypatch.setattr(tensorrt, "convert", fake_convert(calls))
    manifest = json.loads((folder / "manifest.json").read_text())
    program, params = tensorrt.converted_program(folder, manifest, VOCAB, "fp16", 16)
    assert program == folder / "tensorrt-fp16-b16" / "encoder.json" and params.name == "encoder.pdiparams"
    assert calls == [("fp16", (16, 32))]  # max_batch x the export's max_len
    recorded = json.loads((folder / "manifest.json").read_text())["tensorrt"]["tensorrt-fp16-b16"]
    assert set(recorded) == {"encoder.json", "encoder.pdiparams"}
    tensorrt.converted_program(folder, json.loads((folder / "manifest.json").read_text()), VOCAB, "fp16", 16)
    assert len(calls) == 1  # reused
    program.write_text("tampered")  # no longer the file whose checksum was recorded
    tensorrt.converted_program(folder, json.loads((folder / "manifest.json").read_text()), VOCAB, "fp16", 16)
    assert len(calls) == 2 and program.read_text() == "converted fp16"
    with pytest.raises(UserError, match="must be one of fp32, fp16"):
        tensorrt.converted_program(folder, manifest, VOCAB, "bf16", 16)


@pytest.mark.skipif(importlib.util.find_spec("paddle.tensorrt") is not None, reason="this build has paddle.tensorrt")
def test_a_build_without_paddle_tensorrt_is_refused_in_one_line(exported, tmp_path):
    with pytest.raises(UserError, match="no paddle.tensorrt"):
        tensorrt.convert(exported, tmp_path / "trt", "fp32", {})


def test_trt_on_a_machine_without_a_gpu_exits_2(exported):
    for flags in (["--trt"], ["--trt", "--precision", "fp16"], ["--device", "gpu", "--precision", "fp16"]):
        result = run_script("infer/encode.py", "--text", "a crane", "--model-dir", str(exported), *flags)
        assert result.returncode == 2 and "Traceback" not in result.stderr and result.stderr.startswith("error:")
