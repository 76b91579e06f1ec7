"""TensorRT for an exported encoder, the way Paddle 3 documents it for PIR (`.json`) programs ("PIR-TRT"):
convert the saved program ahead of time with `paddle.tensorrt.convert(model_path, TensorRTConfig(...))`,
then load the converted program in a GPU predictor. The old-IR route (`Config.enable_tensorrt_engine` +
`set_trt_dynamic_shape_info`) applies only to legacy `.pdmodel` exports.

The converted program is cached next to the export (`tensorrt-<precision>-b<max_batch>/`), its SHA-256
recorded in the export's manifest, and reused while both match. The shape ranges come from warm-up data
built from the manifest: 1..max_batch rows of 1..max_len tokens, with valid lengths inside each row.
Runs only on a CUDA build of PaddlePaddle with TensorRT; nothing here is importable-tested on CPU except
the warm-up data and the cache checks.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.errors import UserError
from pipeline.export_format import ENCODER, MANIFEST, input_names
from pipeline.files import atomic_folder, file_digest, write_text_atomic
from pipeline.vocab import Vocab

TRT_PRECISIONS = ("fp32", "fp16")


def warmup_data(max_batch: int, max_len: int, vocab: Vocab,
                seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(min, optimal, max) int64 samples of each encoder input, as paddle.tensorrt.Input(warmup_data=...)
    takes them: 1 x 1, max_batch/2 x max_len and max_batch x max_len, each row `<cls> ... <sep>` over
    its valid length (from 1 up to max_len) followed by padding, segment 1 on the second half."""
    rng = np.random.default_rng(seed)
    samples = []
    for rows, width in ((1, 1), (max(1, max_batch // 2), max_len), (max_batch, max_len)):
        valid = np.linspace(1, width, rows).round().astype(np.int64) if rows > 1 else np.array([width])
        ids = np.full((rows, width), vocab.pad, dtype=np.int64)
        segments = np.zeros((rows, width), dtype=np.int64)
        for row, n in enumerate(valid):
            ids[row, :n] = rng.integers(0, len(vocab), n)
            ids[row, 0], ids[row, n - 1] = vocab.cls, vocab.sep
            segments[row, n // 2:n] = 1 if n >= 4 else 0
        samples.append((ids, segments, valid))
    return {name: tuple(sample[i] for sample in samples) for i, name in enumerate(input_names(ENCODER))}


def cache_name(precision: str, max_batch: int) -> str:
    return f"tensorrt-{precision}-b{max_batch}"


def converted_program(folder: Path, manifest: dict, vocab: Vocab, precision: str, max_batch: int) -> tuple[Path, Path]:
    """(program, parameters) of the encoder converted for TensorRT: the cached conversion when its files
    match the manifest's checksums, else a new conversion (cached, and its checksums recorded)."""
    if precision not in TRT_PRECISIONS:
        raise UserError(f"--trt --precision must be one of {', '.join(TRT_PRECISIONS)}, got {precision!r}")
    name = cache_name(precision, max_batch)
    cached = folder / name
    files = (cached / f"{ENCODER}.json", cached / f"{ENCODER}.pdiparams")
    recorded = manifest.get("tensorrt", {}).get(name, {})
    if all(f.is_file() and recorded.get(f.name) == file_digest(f) for f in files):
        return files
    convert(folder, cached, precision, warmup_data(max_batch, int(manifest["max_len"]), vocab))
    manifest.setdefault("tensorrt", {})[name] = {f.name: file_digest(f) for f in files}
    write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=1))
    return files


def convert(folder: Path, target: Path, precision: str, warmup: dict) -> None:
    """paddle.tensorrt.convert of folder/encoder.json into target/encoder.json + .pdiparams (atomically)."""
    try:
        import paddle.tensorrt as trt
    except ImportError:
        raise UserError("--trt: this PaddlePaddle build has no paddle.tensorrt (install paddlepaddle-gpu 3.x "
                        "built with TensorRT)") from None
    inputs = [trt.Input(warmup_data=arrays, input_data_type=None, name=name) for name, arrays in warmup.items()]
    mode = {"fp32": trt.PrecisionMode.FP32, "fp16": trt.PrecisionMode.FP16}[precision]
    with atomic_folder(target) as tmp:
        config = trt.TensorRTConfig(inputs=inputs, precision_mode=mode, save_model_dir=str(tmp / ENCODER))
        trt.convert(str(folder / ENCODER), config)  # writes <save_model_dir>.json + .pdiparams
