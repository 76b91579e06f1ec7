"""The runtimes an export runs on, behind one interface (as text-embeddings-inference's `Backend` trait):
each runs named int64 arrays through a program of the export, clones itself for another thread, and says
what one call costs and how wide it pads a call. `open_backend` is the one place that names a runtime.

    backend = open_backend(folder, "auto", device="cpu")
    (encodings,) = backend.run(arrays)[:1]      # arrays: input name -> [batch, width] int64
"""
from __future__ import annotations

import importlib.util
from typing import Protocol

import numpy as np

from infer.model_folder import ModelFolder
from pipeline.core.errors import UserError
from pipeline.core.export_format import ENCODER, ONNX_FILE
from pipeline.core.runtime import has_cuda_gpu

BACKENDS = ("auto", "paddle", "onnxruntime")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")


class Backend(Protocol):
    """One runtime over one export."""

    name: str  # as --backend spells it
    device: str  # "cpu" or "gpu"
    call_tokens: float  # the fixed cost of one call, in tokens of this model's work (infer/call_cost.py)
    max_rows: int | None  # the most rows one call takes (a TensorRT engine's range), None for any

    def run(self, arrays: dict[str, np.ndarray], program: str = ENCODER) -> list[np.ndarray]:
        """`program`'s outputs, in order, for named int64 inputs."""

    def padded_width(self, rows: int, longest: int) -> int:
        """The width a call of `rows` inputs, the longest `longest` tokens, is padded to."""

    def clone(self) -> "Backend":
        """The same backend for another thread (call from the thread that owns this one)."""


def open_backend(folder: ModelFolder, backend: str = "auto", device: str = "auto", precision: str = "fp32",
                 threads: int = 0, onednn: str = "auto", trt: bool = False, max_batch: int = 64,
                 verbose: bool = False) -> Backend:
    """The runtime `choose_backend` picks, opened over `folder`."""
    if choose_backend(backend, device, folder, precision) == "onnxruntime":
        from infer.backends.onnx_runtime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(folder, precision, threads)
    from infer.backends.paddle_inference import PaddleInferenceBackend

    return PaddleInferenceBackend(folder, device, precision, threads, onednn, trt, max_batch, verbose)


def choose_backend(backend: str, device: str, folder: ModelFolder, precision: str = "fp32") -> str:
    """paddle or onnxruntime for `backend` (one of BACKENDS). Auto picks ONNX Runtime on CPU where the export
    carries encoder.onnx and onnxruntime is installed (faster for small calls, even for batches:
    docs/benchmarks.md); otherwise, on a GPU and in bf16/fp16, Paddle Inference. int8 is ONNX Runtime's."""
    if backend not in BACKENDS:
        raise UserError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if precision == "int8":
        if backend == "paddle":
            raise UserError("--precision int8 runs on ONNX Runtime (--backend onnxruntime or auto), not --backend paddle")
        if device == "gpu":
            raise UserError("--precision int8 is a CPU path (ONNX Runtime); on a GPU use --precision fp16")
        return "onnxruntime"
    if backend == "onnxruntime" and precision != "fp32":
        raise UserError(f"--precision {precision} runs on the Paddle backend only (--backend paddle)")
    if backend != "auto":
        return backend
    if (precision != "fp32" or not (folder.path / ONNX_FILE).is_file()
            or importlib.util.find_spec("onnxruntime") is None or device == "gpu"):
        return "paddle"
    if device == "auto" and has_cuda_gpu():
        return "paddle"
    return "onnxruntime"
