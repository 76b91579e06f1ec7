"""TensorRT for an exported encoder, the way Paddle 3 documents it for PIR (`.json`) programs ("PIR-TRT"):
convert the saved program ahead of time with `paddle.tensorrt.convert(model_path, TensorRTConfig(...))`,
then load the converted program in a GPU predictor. The old-IR route (`Config.enable_tensorrt_engine` +
`set_trt_dynamic_shape_info`) applies only to legacy `.pdmodel` exports.

Where the engines are, as Paddle 3.3's own code has it: `paddle.tensorrt.convert` writes the converted
program to `<save_model_dir>.json` and each serialized engine into the folder `<save_model_dir>/`, and
records that engine file's absolute path in the program. A predictor that cannot open the recorded path
looks for the file's name in `FLAGS_trt_engine_serialized_path`, which the first GPU predictor of a process
sets, once, to its own program path without the extension. So the conversion runs in its final folder
(never renamed afterwards: the checksums recorded last in the manifest are what make it complete), and the
flag is pointed at that engine folder before each TensorRT predictor is made (`point_engine_lookup`), so a
moved export, or a plain GPU predictor made first in the process, still finds its engines.

The cache folder's name holds what an engine is tied to: precision, largest batch, the GPU model and the
TensorRT version (`cache_name`). The shape ranges come from warm-up data built from the manifest: 1..max_batch
rows of 1..max_len tokens, with valid lengths inside each row. Runs only on a CUDA build of PaddlePaddle with
TensorRT; the paths, keys, checksums and refusals are tested on CPU with a stand-in converter.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np

from pipeline.core.errors import UserError
from pipeline.core.export_format import ENCODER, MANIFEST, input_names
from pipeline.core.files import file_digest, write_text_atomic
from pipeline.core.vocab import Vocab

TRT_PRECISIONS = ("fp32", "fp16")
ENGINE_FLAG = "FLAGS_trt_engine_serialized_path"


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


def cache_name(precision: str, max_batch: int, gpu: str, trt_version: str) -> str:
    """The cache folder of one engine build: an engine is only valid for the GPU model and TensorRT version
    that built it, at its precision and batch range."""
    def slug(text: str) -> str:
        return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-") or "unknown"

    return f"tensorrt-{precision}-b{max_batch}-{slug(gpu)}-trt{slug(trt_version)}"


def engine_folder(cached: Path) -> Path:
    """Where paddle.tensorrt.convert puts the engines of the program cached/encoder.json."""
    return cached / ENCODER


def cached_files(cached: Path) -> list[Path]:
    """Every file of a conversion: program, parameters and engines."""
    engines = sorted(engine_folder(cached).glob("*")) if engine_folder(cached).is_dir() else []
    return [cached / f"{ENCODER}.json", cached / f"{ENCODER}.pdiparams", *engines]


def converted_program(folder: Path, manifest: dict, vocab: Vocab, precision: str, max_batch: int,
                      gpu: str, trt_version: str) -> tuple[Path, Path]:
    """(program, parameters) of the encoder converted for TensorRT on this GPU and TensorRT version: the
    cached conversion when its files match the manifest's checksums, else a new conversion in the final
    folder, its checksums recorded last."""
    if precision not in TRT_PRECISIONS:
        raise UserError(f"--trt --precision must be one of {', '.join(TRT_PRECISIONS)}, got {precision!r}")
    name = cache_name(precision, max_batch, gpu, trt_version)
    cached = folder / name
    recorded = manifest.get("tensorrt", {}).get(name, {})
    files = cached_files(cached)
    complete = len(files) > 2 and set(recorded) == {str(f.relative_to(cached)) for f in files}
    if not (complete and all(f.is_file() and recorded[str(f.relative_to(cached))] == file_digest(f) for f in files)):
        shutil.rmtree(cached, ignore_errors=True)  # a half-written or stale conversion
        cached.mkdir(parents=True)
        try:
            convert(folder, cached, precision, warmup_data(max_batch, int(manifest["max_len"]), vocab))
        except BaseException:
            shutil.rmtree(cached, ignore_errors=True)
            raise
        files = cached_files(cached)
        manifest.setdefault("tensorrt", {})[name] = {str(f.relative_to(cached)): file_digest(f) for f in files}
        write_text_atomic(folder / MANIFEST, json.dumps(manifest, indent=1))
    return files[0], files[1]


def import_tensorrt():
    """paddle.tensorrt, or one line saying what to install: the `tensorrt` package matching this build's
    TensorRT version, or a build that has paddle.tensorrt at all."""
    import paddle

    wanted = paddle.version.tensorrt() if hasattr(paddle.version, "tensorrt") else None
    try:
        import paddle.tensorrt as trt
    except ModuleNotFoundError as err:
        if err.name == "tensorrt":  # paddle.tensorrt imports NVIDIA's package unguarded
            raise UserError(f"--trt needs NVIDIA's TensorRT Python package: pip install tensorrt=={wanted}"
                            if wanted else "--trt needs NVIDIA's TensorRT Python package: pip install tensorrt "
                                           "(the version this PaddlePaddle was built with)") from None
        raise UserError("--trt: this PaddlePaddle build has no paddle.tensorrt (install paddlepaddle-gpu 3.x "
                        "built with TensorRT)") from None
    except OSError as err:
        raise missing_library(err) from None
    return trt


def missing_library(err: OSError) -> UserError:
    return UserError(f"--trt: a TensorRT library cannot be loaded ({str(err).splitlines()[0]}); add the folder "
                     f"holding libnvinfer.so and libnvinfer_plugin.so (TensorRT's lib/, or the tensorrt_libs folder "
                     f"of the pip package) to LD_LIBRARY_PATH")


def convert(folder: Path, target: Path, precision: str, warmup: dict) -> None:
    """paddle.tensorrt.convert of folder/encoder.json into target/encoder.json + .pdiparams, the engines
    into target/encoder/."""
    trt = import_tensorrt()
    inputs = [trt.Input(warmup_data=arrays, input_data_type=None, name=name) for name, arrays in warmup.items()]
    mode = {"fp32": trt.PrecisionMode.FP32, "fp16": trt.PrecisionMode.FP16}[precision]
    config = trt.TensorRTConfig(inputs=inputs, precision_mode=mode, save_model_dir=str(engine_folder(target)))
    try:
        trt.convert(str(folder / ENCODER), config)  # its converter loads libnvinfer_plugin.so with ctypes
    except OSError as err:
        raise missing_library(err) from None


def point_engine_lookup(cached: Path) -> None:
    """Make a predictor made now find the engines of `cached` even where the recorded paths are stale
    (the flag is process-wide, and the first GPU predictor of a process sets it to its own program path)."""
    import paddle

    paddle.set_flags({ENGINE_FLAG: str(engine_folder(cached).resolve())})
