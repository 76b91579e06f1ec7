"""Paddle Inference predictors over the export's programs: on a GPU (optionally TensorRT), or on CPU in two
regimes, one thread without oneDNN for small calls and oneDNN on every core (fp32 or bf16) for batches."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from infer.backends import PRECISIONS
from infer.backends.tensorrt import converted_program, point_engine_lookup
from infer.call_cost import small_call_tokens
from infer.model_folder import ModelFolder
from pipeline.core.errors import UserError
from pipeline.core.export_format import ENCODER, PRED_POSITIONS, PRETRAINING, input_names
from pipeline.core.runtime import available_cores, cpu_has_bf16, has_cuda_gpu

# Below this much work per call (tokens of the tiny model, scaled by each model's work per token) one thread
# without oneDNN is fastest on CPU; above it oneDNN on every core wins (docs/benchmarks.md).
SMALL_CALL_TOKENS = 512
# Exact inference passes for small CPU calls (no oneDNN): eval-mode dropout removed, matmul + bias [+ act]
# fused into fc. Not for oneDNN batches, where the fused fc was slower (docs/benchmarks.md).
CPU_PASSES = ["identity_op_clean_pass", "matmul_add_act_fuse_pass"]
# oneDNN builds kernels for each input shape and keeps a few: large CPU calls are padded to a multiple of
# this many tokens so that shapes repeat.
SHAPE_STEP = 16


class PaddleInferenceBackend:
    """Predictors per (program, regime), made on first use; not thread-safe (`clone` one per thread)."""

    name = "paddle"
    # oneDNN rebuilds kernels for each new shape, so more, smaller calls cost more than padding: one call a batch
    call_tokens = math.inf

    def __init__(self, folder: ModelFolder, device: str = "auto", precision: str = "fp32", threads: int = 0,
                 onednn: str = "auto", trt: bool = False, max_batch: int = 64, verbose: bool = False):
        from paddle import inference

        self._inference, self.folder = inference, folder
        self.device = resolve_device(device, trt, precision)
        self.precision, self.threads, self.onednn, self.trt, self.verbose = precision, threads, onednn, trt, verbose
        self.max_batch = max_batch
        self.max_rows = max_batch if trt else None  # the TensorRT engine's shape range ends there
        self.small_tokens = small_call_tokens(folder.manifest["model"], SMALL_CALL_TOKENS)
        self._predictors: dict[tuple[str, str], tuple] = {}

    # -- configuration ------------------------------------------------------------------------
    def _config(self, program: str, regime: str):
        model, params = self.folder.program_files(program)
        if self.device == "gpu" and self.trt and program == ENCODER and model.suffix == ".json":
            model, params = self._converted_for_tensorrt()
        config = self._inference.Config(str(model), str(params))
        if not self.verbose:
            config.disable_glog_info()
        if self.device == "gpu":
            half = self.precision == "fp16" and not self.trt  # with TensorRT the conversion set the precision
            config.enable_use_gpu(256, 0, self._inference.PrecisionType.Half if half else
                                  self._inference.PrecisionType.Float32)
            if self.trt and model.suffix == ".pdmodel":
                self._enable_legacy_tensorrt(config, program)
            return config
        config.disable_gpu()
        small = regime == "small"
        # bf16 runs through oneDNN's bf16 kernels (Paddle's plain CPU kernels have none), on large calls only
        bf16 = self.precision == "bf16" and not small
        use_onednn = bf16 or {"on": True, "off": False}.get(self.onednn, not small)
        config.set_cpu_math_library_num_threads(self.threads or (1 if small else available_cores()))
        if use_onednn:
            config.enable_mkldnn()
            config.set_mkldnn_cache_capacity(16)  # bounded cache of shape-specialised kernels
            if bf16:
                config.enable_mkldnn_bfloat16()
        else:
            config.disable_mkldnn()
            config.enable_custom_passes(CPU_PASSES)
        return config

    def _converted_for_tensorrt(self) -> tuple[Path, Path]:
        """PIR-TRT: the program converted ahead of time for this GPU model and TensorRT version, its engine
        folder made the one a predictor made now looks in."""
        import paddle

        gpu = paddle.device.cuda.get_device_name(0)
        trt_version = ".".join(map(str, self._inference.get_trt_runtime_version()))
        model, params = converted_program(self.folder.path, self.folder.manifest, self.folder.vocab,
                                          self.precision, self.max_batch, gpu, trt_version)
        point_engine_lookup(model.parent)
        return model, params

    def _enable_legacy_tensorrt(self, config, program: str) -> None:
        """TensorRT for a legacy (old-IR) .pdmodel export: a subgraph engine built at load time."""
        precision = {"fp32": self._inference.PrecisionType.Float32,
                     "fp16": self._inference.PrecisionType.Half}[self.precision]
        config.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=self.max_batch, min_subgraph_size=3,
                                      precision_mode=precision, use_static=True, use_calib_mode=False)
        ids, segments, lengths = input_names(ENCODER)
        half, max_len = max(1, self.max_batch // 2), self.folder.max_len
        low = {ids: [1, 1], segments: [1, 1], lengths: [1]}
        high = {ids: [self.max_batch, max_len], segments: [self.max_batch, max_len], lengths: [self.max_batch]}
        opt = {ids: [half, max_len], segments: [half, max_len], lengths: [half]}
        if program == PRETRAINING:
            positions = PRED_POSITIONS[0]
            low[positions], high[positions], opt[positions] = [1, 1], [self.max_batch, max_len], [1, 1]
        config.set_trt_dynamic_shape_info(low, high, opt)
        config.set_optim_cache_dir(str(self.folder.path / "_trt_cache"))  # engine reused on the next start

    def _regime(self, tokens_per_call: int) -> str:
        return "large" if self.device == "gpu" or tokens_per_call > self.small_tokens else "small"

    def _predictor(self, program: str, regime: str) -> tuple:
        """(predictor, {input name: handle}, [output handles]) for this program and regime."""
        key = (program, regime)
        if key not in self._predictors:
            self._predictors[key] = with_handles(self._inference.create_predictor(self._config(program, regime)))
        return self._predictors[key]

    # -- the interface ------------------------------------------------------------------------
    def run(self, arrays: dict[str, np.ndarray], program: str = ENCODER) -> list[np.ndarray]:
        predictor, inputs, outputs = self._predictor(program, self._regime(arrays[input_names()[0]].size))
        for name, handle in inputs.items():
            handle.reshape(arrays[name].shape)
            handle.copy_from_cpu(arrays[name])
        predictor.run()
        return [handle.copy_to_cpu() for handle in outputs]

    def padded_width(self, rows: int, longest: int) -> int:
        if self.device == "cpu" and rows * longest > self.small_tokens:
            return min(self.folder.max_len, -(-longest // SHAPE_STEP) * SHAPE_STEP)  # oneDNN: shapes that repeat
        return longest

    def clone(self) -> "PaddleInferenceBackend":
        """Predictors cloned from this one's (clones share the weights); cloning is not thread-safe."""
        twin = object.__new__(PaddleInferenceBackend)
        twin.__dict__.update(self.__dict__)
        twin._predictors = {}
        for regime in ("small", "large") if self.device == "cpu" else ("large",):
            twin._predictors[(ENCODER, regime)] = with_handles(self._predictor(ENCODER, regime)[0].clone())
        return twin


def with_handles(predictor) -> tuple:
    """(predictor, {input name: handle}, [output handles]): handles fetched once, reused every call."""
    inputs = {name: predictor.get_input_handle(name) for name in predictor.get_input_names()}
    return predictor, inputs, [predictor.get_output_handle(name) for name in predictor.get_output_names()]


def resolve_device(device: str, trt: bool, precision: str) -> str:
    """'gpu' or 'cpu' for `device` (auto/gpu/cpu); a GPU or TensorRT request that cannot be met is an error."""
    from paddle import inference

    if device not in ("auto", "gpu", "cpu"):
        raise UserError(f"--device must be auto, gpu or cpu, got {device!r}")
    has_gpu = has_cuda_gpu()
    if device == "gpu" and not has_gpu:
        raise UserError("--device gpu: this PaddlePaddle build or machine has no CUDA GPU "
                        "(install paddlepaddle-gpu on a CUDA machine, or use --device cpu)")
    chosen = "gpu" if device == "gpu" or (device == "auto" and has_gpu) else "cpu"
    if trt:
        if chosen != "gpu":
            raise UserError("--trt needs a CUDA GPU; this machine or PaddlePaddle build has none")
        if tuple(inference.get_trt_compile_version()) == (0, 0, 0):
            raise UserError("--trt: this PaddlePaddle build was compiled without TensorRT")
    check_precision(precision, chosen)
    return chosen


def check_precision(precision: str, device: str) -> None:
    """Refuse a precision that `device` cannot run: fp16 is for GPUs, bf16 for CPUs with bf16 units."""
    if precision not in PRECISIONS:
        raise UserError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp16" and device != "gpu":
        raise UserError("--precision fp16 needs a GPU; on CPU use fp32, or bf16 where the CPU has bf16 units")
    if precision == "bf16" and device != "cpu":
        raise UserError("--precision bf16 is the CPU (oneDNN) path; on a GPU use --precision fp16")
    if precision == "bf16" and not cpu_has_bf16():
        raise UserError("--precision bf16: this CPU has no bf16 units (no avx512_bf16 or amx_bf16 in its flags); "
                        "use fp32")
