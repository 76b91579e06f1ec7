"""ONNX Runtime on CPU over the export's encoder.onnx (`save.py --onnx`) or encoder.int8.onnx (`--int8`):
one thread for small calls, every core for batches, calls cut where padding costs more than another call."""
from __future__ import annotations

import logging

import numpy as np

from infer.call_cost import call_tokens, small_call_tokens
from infer.model_folder import ModelFolder
from pipeline.core.errors import UserError
from pipeline.core.export_format import ENCODER, INT8_WEIGHT_BITS, ONNX_FILE, ONNX_INT8_FILE, input_names
from pipeline.core.runtime import available_cores, cpu_has_vnni

log = logging.getLogger(__name__)

# The boundary between one thread and every core, for the tiny model (docs/benchmarks.md); larger models
# run even one sentence on every core.
SMALL_CALL_TOKENS = 96
# The fixed cost of one call (~0.5 ms) in matrix work at these CPUs' rate: padding is weighed against it.
CALL_COST_FLOPS = 75e6


class OnnxRuntimeBackend:
    """ONNX Runtime sessions, one per regime; a session may be run from several threads at once."""

    name, device, max_rows = "onnxruntime", "cpu", None

    def __init__(self, folder: ModelFolder, precision: str = "fp32", threads: int = 0):
        try:
            import onnxruntime
        except ImportError:
            raise UserError("--backend onnxruntime needs onnxruntime: pip install onnxruntime") from None
        onnx_file = ONNX_INT8_FILE if precision == "int8" else ONNX_FILE
        self.path = folder.path / onnx_file
        if not self.path.is_file():
            raise UserError(f"{self.path} is missing: export with python export/save.py "
                            f"{'--int8' if precision == 'int8' else '--onnx'}")
        folder.verify(onnx_file)
        if precision == "int8":
            warn_if_int8_saturates(folder.manifest)
        model = folder.manifest["model"]
        self.call_tokens = call_tokens(model, CALL_COST_FLOPS)
        self.small_tokens = small_call_tokens(model, SMALL_CALL_TOKENS)
        self._ort, self.threads = onnxruntime, threads
        self._sessions: dict[str, object] = {}

    def _session(self, regime: str):
        if regime not in self._sessions:
            options = self._ort.SessionOptions()
            options.intra_op_num_threads = self.threads or (1 if regime == "small" else available_cores())
            options.inter_op_num_threads = 1
            options.log_severity_level = 3  # errors only: not its notes on unused initialisers
            self._sessions[regime] = self._ort.InferenceSession(str(self.path), options,
                                                                providers=["CPUExecutionProvider"])
        return self._sessions[regime]

    def run(self, arrays: dict[str, np.ndarray], program: str = ENCODER) -> list[np.ndarray]:
        if program != ENCODER:
            raise UserError("--fill-mask runs on the Paddle backend only (--backend paddle; in Python, "
                            "Encoder(..., backend=\"paddle\"))")
        tokens = arrays[input_names()[0]].size
        session = self._session("small" if tokens <= self.small_tokens else "large")
        return session.run(None, {name: arrays[name] for name in input_names()})

    def padded_width(self, rows: int, longest: int) -> int:
        return longest

    def clone(self) -> "OnnxRuntimeBackend":
        return self  # a session may be run from several threads at once


def warn_if_int8_saturates(manifest: dict) -> None:
    """A warning where an 8-bit int8 export (made before weights were 7-bit) runs on a CPU without VNNI,
    whose AVX2 int8 products saturate: its embeddings drift from fp32's (export/quantize.py)."""
    if manifest.get("int8", {}).get("weight_bits", 8) > INT8_WEIGHT_BITS and not cpu_has_vnni():
        log.warning("this int8 export has 8-bit weights, which saturate on this CPU (no VNNI): its "
                    "embeddings drift from fp32's; export again with python export/save.py --int8")
