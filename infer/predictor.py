"""BERT encodings from an exported model: Paddle Inference (GPU, TensorRT, CPU with oneDNN fp32/bf16) or
ONNX Runtime on CPU (`backend`).

    from infer.predictor import Encoder
    encoder = Encoder("output/inference")
    encodings = encoder.encode(["a crane is flying"])
    encodings[0].vectors.shape   # (6, 128): <cls> a crane is flying <sep>
    encoder.embed(["a crane is flying"]).shape   # (1, 128): pooled as the export's manifest says

Preprocess (tokenise like training, pad, sort by length) / infer (predictor) / postprocess (unpad,
restore input order), as in Paddle's own deploy code. Imports no training code (a test checks that
pipeline.examples, model, trainer and dataset stay unloaded): from `pipeline` only the tokenizer, the
vocabulary, the export format, file digests, errors and CPU facts.
"""
from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from infer.embedding import EmbeddingSpec, combine_windows, first_dimensions, normalized
from infer.tensorrt import converted_program, point_engine_lookup
from pipeline.errors import UserError
from pipeline.files import file_digest
from pipeline.pooling import pool
from infer.grouping import padding_groups
from pipeline.export_format import (ENCODER, PRETRAINING, MANIFEST, ONNX_FILE, ONNX_INT8_FILE, PRED_POSITIONS, VOCAB,
                                    INT8_WEIGHT_BITS, TOKEN_WEIGHTS, input_names)
from pipeline.runtime import available_cores, cpu_has_bf16, cpu_has_vnni, has_cuda_gpu
from pipeline.tokenizer import Text, load_tokenizer, pad_batch, tokenize, tokenize_windows
from pipeline.vocab import Vocab

log = logging.getLogger(__name__)

# Below this much work per call one thread without oneDNN is fastest on CPU; above it oneDNN with every
# core wins (bench/infer.py, bench/embed.py). Measured as 512 tokens (batch x length) of the tiny model and
# scaled by each model's work per token: a 6 x 384 encoder's boundary is then 12 tokens (32 short
# sentences, 448 tokens, took 423 ms on one thread without oneDNN and 91 ms with oneDNN on 2 threads).
SMALL_CALL_TOKENS = 512
# ONNX Runtime's boundary between one thread and all cores is lower: 96 tokens of the tiny model (4 x 24:
# 0.40 ms on one thread, 0.37 ms on two; 1 x 24: 0.13 against 0.17), so a 6 x 384 encoder runs even one
# sentence on every core (1 x 6: 1.8 ms against 2.0 ms on one thread).
ONNX_SMALL_CALL_TOKENS = 96
TINY_SHAPE = {"num_layers": 2, "hidden_size": 128, "ffn_size": 256}


def flops_per_token(model: dict) -> int:
    """The encoder's matrix work per token (projections and feed-forward), a model's size for the CPU choice."""
    hidden, layers, ffn = model["hidden_size"], model["num_layers"], model["ffn_size"]
    return 2 * layers * (4 * hidden * hidden + 2 * hidden * ffn)


def small_call_tokens(model: dict, tiny_tokens: int = SMALL_CALL_TOKENS) -> int:
    """Tokens per call up to which this model runs in the small-call regime: `tiny_tokens` for the tiny
    model (and smaller ones, where it was measured), fewer for a larger one, in proportion to its work."""
    return max(1, min(tiny_tokens, tiny_tokens * flops_per_token(TINY_SHAPE) // flops_per_token(model)))
# Inference passes added for small CPU calls (no oneDNN), each exact (max difference 0.0, bench/infer.py):
# eval-mode dropout (an identity) removed, and matmul + bias [+ relu/gelu] fused into one fc op; one
# sentence then runs 72 ops instead of 90, at ~3.5 us of executor time each. Not for oneDNN batches,
# where the fused fc was slower than matmul + add at BERT-base size.
CPU_PASSES = ["identity_op_clean_pass", "matmul_add_act_fuse_pass"]
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
# oneDNN builds its kernels for each input shape and keeps a few (set_mkldnn_cache_capacity): batches of
# every length rebuilt them call after call (2,000 sentences of 5-60 words: 70 sentences/s at a 6 x 384
# size). Large CPU calls are padded to a multiple of this many tokens, so shapes repeat (bench/embed.py).
SHAPE_STEP = 16
# The fixed cost of one predictor call, in matrix work, against which padding is weighed (infer/grouping.py):
# ONNX Runtime's ~0.5 ms per call (75 MFLOP at these CPUs' rate; all-MiniLM-L6-v2, 32-sentence calls of
# WikiText: 114 -> 197 sentences/s). Paddle Inference's oneDNN rebuilds kernels for each new shape, so more,
# smaller calls made it slower (109 -> 70 sentences/s at 20 MFLOP): it keeps one call per batch.
CALL_COST_FLOPS = {"onnxruntime": 75e6, "paddle": float("inf")}


@dataclass
class Encoding:
    """One input's tokens and their vectors ([len(tokens), hidden]); row 0 is <cls>."""

    tokens: list[str]
    segments: list[int]
    vectors: np.ndarray

    @property
    def cls(self) -> np.ndarray:
        return self.vectors[0]


@dataclass
class ModelFolder:
    """An export made by export/save.py, checked for completeness."""

    path: Path
    manifest: dict
    vocab: Vocab

    @classmethod
    def open(cls, path: str | Path) -> "ModelFolder":
        path = Path(path)
        if not path.is_dir():
            raise UserError(f"model folder not found: {path} (make one with: python export/save.py)")
        try:
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"model folder {path} is incomplete: {MANIFEST} is missing") from None
        except (OSError, ValueError) as err:
            raise UserError(f"model folder {path}: {MANIFEST} is unreadable ({err})") from None
        if not (path / VOCAB).is_file():
            raise UserError(f"model folder {path} is incomplete: {VOCAB} is missing")
        vocab = Vocab.load(path / VOCAB)
        expected = manifest.get("model", {}).get("vocab_size")
        if expected != len(vocab):
            raise UserError(f"{VOCAB} in {path} has {len(vocab)} tokens but the model expects {expected}")
        folder = cls(path, manifest, vocab)
        folder.program_files(ENCODER)
        folder.verify(f"{ENCODER}.pdiparams")
        return folder

    def verify(self, name: str) -> None:
        """Refuse a weights file whose SHA-256 is not the one the manifest recorded at export time
        (a truncated copy, a flipped byte, another model's file). Measured: 7 ms for the tiny model, 0.33 s for 440 MB."""
        expected = self.manifest.get("sha256", {}).get(name)
        if expected is None:
            raise UserError(f"model folder {self.path}: the manifest records no checksum for {name}; re-export it")
        if file_digest(self.path / name) != expected:
            raise UserError(f"model folder {self.path}: {name} does not match the checksum in {MANIFEST} "
                            f"(damaged or replaced); re-export it with python export/save.py")

    @property
    def max_len(self) -> int:
        return int(self.manifest["max_len"])

    def token_weights(self) -> np.ndarray | None:
        """`weighted` pooling's weight per vocabulary id (checksummed, read without pickle); None for the
        other poolings."""
        if (self.manifest.get("embedding") or {}).get("pooling") != "weighted":
            return None
        if not (self.path / TOKEN_WEIGHTS).is_file():
            raise UserError(f"model folder {self.path} is incomplete: {TOKEN_WEIGHTS} is missing (its pooling is "
                            f"weighted)")
        self.verify(TOKEN_WEIGHTS)
        weights = np.load(self.path / TOKEN_WEIGHTS, allow_pickle=False)
        if weights.shape != (len(self.vocab),):
            raise UserError(f"model folder {self.path}: {TOKEN_WEIGHTS} holds {weights.shape} weights, not one per "
                            f"token of {VOCAB} ({len(self.vocab)})")
        return weights.astype(np.float32)

    def program_files(self, name: str) -> tuple[Path, Path]:
        """(program, parameters) of `name`: Paddle 3's .json, or a legacy .pdmodel."""
        params = self.path / f"{name}.pdiparams"
        for suffix in (".json", ".pdmodel"):
            program = self.path / f"{name}{suffix}"
            if program.is_file() and params.is_file():
                return program, params
        if name == PRETRAINING:
            raise UserError(f"{self.path} holds the encoder only; --fill-mask needs the heads: "
                            f"re-export with python export/save.py --with-heads")
        raise UserError(f"model folder {self.path} is incomplete: {name}.json/.pdmodel or {name}.pdiparams is missing")


class Encoder:
    """Paddle Inference predictors over an exported model, on GPU (optionally TensorRT) or CPU; or, with
    backend="onnxruntime", ONNX Runtime on CPU over the same export converted by `save.py --onnx`
    (backend="auto", the default as in the commands: ONNX Runtime when the export has it, onnxruntime is
    installed and no GPU is used); precision="int8": ONNX Runtime over `save.py --int8`'s model."""

    def __init__(self, model_dir: str | Path = "output/inference", device: str = "auto", threads: int = 0,
                 onednn: str = "auto", trt: bool = False, precision: str = "fp32", max_batch: int = 64,
                 verbose: bool = False, backend: str = "auto"):
        self.folder = ModelFolder.open(model_dir)
        self.vocab = self.folder.vocab
        self.tokenizer = load_tokenizer(self.folder.path, self.vocab)
        self.max_len = self.folder.max_len
        self.embedding = EmbeddingSpec.from_manifest(self.folder.manifest)
        self.token_weights = self.folder.token_weights()
        self.small_tokens = small_call_tokens(self.folder.manifest["model"])
        self.threads, self.onednn, self.verbose = threads, onednn, verbose
        self.trt, self.precision, self.max_batch = trt, precision, max_batch
        self.backend = choose_backend(backend, device, self.folder.path, precision)
        self.call_tokens = CALL_COST_FLOPS[self.backend] / flops_per_token(self.folder.manifest["model"])
        self._predictors: dict[tuple[str, str], tuple] = {}
        if self.backend == "onnxruntime":
            self.device = "cpu"
            onnx_file = ONNX_INT8_FILE if precision == "int8" else ONNX_FILE
            self._onnx = OnnxEncoder(self.folder.path / onnx_file, threads,
                                     small_call_tokens(self.folder.manifest["model"], ONNX_SMALL_CALL_TOKENS))
            self.folder.verify(onnx_file)
            if precision == "int8":
                warn_if_int8_saturates(self.folder.manifest)
            return
        from paddle import inference

        self.device = resolve_device(device, trt, precision)
        self._inference = inference

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
        cores = available_cores()
        small = regime == "small"
        # bf16 runs through oneDNN's bf16 kernels (Paddle's plain CPU kernels have no bf16 matmul), on
        # large calls only: below, fp32 on one thread without oneDNN is 4x faster (bench/infer.py)
        bf16 = self.precision == "bf16" and not small
        use_onednn = bf16 or {"on": True, "off": False}.get(self.onednn, not small)
        config.set_cpu_math_library_num_threads(self.threads or (1 if small else cores))
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
        model, params = converted_program(self.folder.path, self.folder.manifest, self.vocab, self.precision,
                                          self.max_batch, gpu, trt_version)
        point_engine_lookup(model.parent)
        return model, params

    def _enable_legacy_tensorrt(self, config, program: str) -> None:
        """TensorRT for a legacy (old-IR) .pdmodel export: a subgraph engine built at load time."""
        precision = {"fp32": self._inference.PrecisionType.Float32,
                     "fp16": self._inference.PrecisionType.Half}[self.precision]
        config.enable_tensorrt_engine(workspace_size=1 << 30, max_batch_size=self.max_batch, min_subgraph_size=3,
                                      precision_mode=precision, use_static=True, use_calib_mode=False)
        ids, segments, lengths = input_names(ENCODER)
        half = max(1, self.max_batch // 2)
        low = {ids: [1, 1], segments: [1, 1], lengths: [1]}
        high = {ids: [self.max_batch, self.max_len], segments: [self.max_batch, self.max_len], lengths: [self.max_batch]}
        opt = {ids: [half, self.max_len], segments: [half, self.max_len], lengths: [half]}
        if program == PRETRAINING:
            positions = PRED_POSITIONS[0]
            low[positions], high[positions], opt[positions] = [1, 1], [self.max_batch, self.max_len], [1, 1]
        config.set_trt_dynamic_shape_info(low, high, opt)
        config.set_optim_cache_dir(str(self.folder.path / "_trt_cache"))  # engine reused on the next start

    def _predictor(self, program: str, tokens_per_call: int) -> tuple:
        """(predictor, {input name: handle}, [output handles]) for this program and input size."""
        regime = "large" if self.device == "gpu" or tokens_per_call > self.small_tokens else "small"
        return self._predictor_for(program, regime)

    def _predictor_for(self, program: str, regime: str) -> tuple:
        key = (program, regime)
        if key not in self._predictors:
            self._predictors[key] = _with_handles(self._inference.create_predictor(self._config(program, regime)))
        return self._predictors[key]

    def clone(self) -> "Encoder":
        """An Encoder for another thread: the same settings, its own predictors, cloned from this one's
        (clones share the weights). A predictor is not thread-safe, and neither is cloning one: call this
        from the thread that owns this Encoder, then use each Encoder from one thread only."""
        twin = copy.copy(self)
        twin._predictors = {}
        if self.backend == "onnxruntime":
            return twin  # an ONNX Runtime session may be run from several threads at once
        for regime in ("small", "large") if self.device == "cpu" else ("large",):
            predictor = self._predictor_for(ENCODER, regime)[0]
            twin._predictors[(ENCODER, regime)] = _with_handles(predictor.clone())
        return twin

    # -- running ------------------------------------------------------------------------------
    def run(self, arrays: dict[str, np.ndarray], program: str = ENCODER) -> list[np.ndarray]:
        """Feed named int64 arrays to `program`; return its outputs in order."""
        if self.backend == "onnxruntime":
            if program != ENCODER:
                raise UserError("--fill-mask runs on the Paddle backend only (--backend paddle; in Python, "
                                "Encoder(..., backend=\"paddle\"))")
            return self._onnx.run(arrays)
        predictor, inputs, outputs = self._predictor(program, arrays[input_names()[0]].size)
        for name, handle in inputs.items():
            handle.reshape(arrays[name].shape)
            handle.copy_from_cpu(arrays[name])
        predictor.run()
        return [handle.copy_to_cpu() for handle in outputs]

    def preprocess(self, texts: Sequence[Text], truncate: bool = False) -> list[tuple[list[str], list[int]]]:
        return [tokenize(self.tokenizer, t, self.max_len, truncate) for t in texts]

    def encode(self, texts: Sequence[Text], batch_size: int = 64, truncate: bool = False) -> list[Encoding]:
        """Encodings of `texts` (strings, or (A, B) pairs), batched by length, in input order."""
        if isinstance(texts, (str, tuple)):
            raise TypeError("encode() takes a list of texts")
        items = self.preprocess(texts, truncate)
        return [Encoding(*item, vectors) for item, vectors in zip(items, self.encode_items(items, batch_size))]

    def encode_items(self, items: list[tuple[list[str], list[int]]], batch_size: int = 64) -> list[np.ndarray]:
        """Vectors of tokenized items, in calls of `batch_size` items of similar length, in input order."""
        results: list[np.ndarray | None] = [None] * len(items)
        for chunk in self.call_groups(items, batch_size):
            for i, vectors in zip(chunk, self.encode_tokenized([items[i] for i in chunk])):
                results[i] = vectors
        return results

    def call_groups(self, items: list[tuple[list[str], list[int]]], batch_size: int) -> list[list[int]]:
        """Indices into `items`, one list per predictor call of at most `batch_size`: sorted by length and cut
        where padding costs more than another call (infer/grouping.py, at this backend's cost per call)."""
        order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
        return [order[lo:hi] for lo, hi in
                padding_groups([len(items[i][0]) for i in order], batch_size, self.call_tokens)]

    def tokenize_for_embedding(self, texts: Sequence[Text], truncate: bool = False,
                               windows: bool = False) -> list[list[tuple[list[str], list[int]]]]:
        """Each text's items: one, or with `windows` as many overlapping windows as a long text needs."""
        if windows:
            if any(not isinstance(t, str) for t in texts):
                raise UserError("windows embed single texts, not (A, B) pairs")
            return [tokenize_windows(self.tokenizer, t, self.max_len) for t in texts]
        return [[item] for item in self.preprocess(texts, truncate)]

    def embed(self, texts: Sequence[Text], normalize: bool | None = None, truncate: bool = False,
              windows: bool = False, dimensions: int | None = None, batch_size: int = 64) -> np.ndarray:
        """One vector per text ([len(texts), dimensions]), pooled as the export's manifest says and
        normalised as it says unless `normalize` is given; `windows`: a text over the model's maximum is
        embedded whole, by overlapping windows; `dimensions`: the first n values, renormalised."""
        if isinstance(texts, (str, tuple)):
            raise TypeError("embed() takes a list of texts")
        per_text = self.tokenize_for_embedding(texts, truncate, windows)
        flat = [item for items in per_text for item in items]
        return self.pool_texts(per_text, self.encode_items(flat, batch_size), normalize, dimensions)

    def pool_texts(self, per_text: list[list[tuple[list[str], list[int]]]], vectors: list[np.ndarray],
                   normalize: bool | None = None, dimensions: int | None = None) -> np.ndarray:
        """Token vectors (flat, in the order of `per_text`'s items) -> one embedding per text."""
        pooling = self.embedding.pooling
        out, at = [], 0
        for items in per_text:
            weights = [self.weights_of(tokens) if pooling == "weighted" else None for tokens, _ in items]
            pooled = [pool(v, pooling, w) for v, w in zip(vectors[at:at + len(items)], weights)]
            # a long text's windows count by their tokens, or by their tokens' weights
            mass = [len(tokens) if w is None else float(w.sum()) for (tokens, _), w in zip(items, weights)]
            out.append(combine_windows(pooled, mass, pooling))
            at += len(items)
        result = np.asarray(out, dtype=np.float32).reshape(len(per_text), -1)
        if self.embedding.normalize if normalize is None else normalize:
            result = normalized(result)
        return first_dimensions(result, dimensions)

    def weights_of(self, tokens: list[str]) -> np.ndarray:
        """Each token's weight under `weighted` pooling ([len(tokens)])."""
        if self.token_weights is None:
            raise UserError(f"pooling weighted needs a model trained with it; this one pools {self.embedding.pooling}")
        return self.token_weights[[self.vocab[t] for t in tokens]]

    def pool(self, tokens: list[str], vectors: np.ndarray, pooling: str) -> np.ndarray:
        """One input's vectors ([len(tokens), hidden]) as one, `pooling` (weighted: by this model's weights)."""
        return pool(vectors, pooling, self.weights_of(tokens) if pooling == "weighted" else None)

    def encode_tokenized(self, items: list[tuple[list[str], list[int]]]) -> list[np.ndarray]:
        """Vectors ([len(tokens), hidden]) of tokenized items, in one predictor call padded to the longest
        (with TensorRT, in calls of at most `max_batch` items: the engine's shape range ends there)."""
        if self.trt and len(items) > self.max_batch:
            return [v for lo in range(0, len(items), self.max_batch)
                    for v in self.encode_tokenized(items[lo:lo + self.max_batch])]
        longest = max(len(tokens) for tokens, _ in items)
        width = longest
        if self.backend == "paddle" and self.device == "cpu" and len(items) * longest > self.small_tokens:
            width = min(self.max_len, -(-longest // SHAPE_STEP) * SHAPE_STEP)  # oneDNN: shapes that repeat
        (encodings,) = self.run(pad_batch(self.vocab, items, width))[:1]
        return [encodings[row, :len(tokens)] for row, (tokens, _) in enumerate(items)]

    def fill_mask(self, text: str, top_k: int = 5) -> list[list[tuple[str, float]]]:
        """Top-k words and probabilities for each <mask> in `text` (needs an export --with-heads)."""
        tokens, segments = tokenize(self.tokenizer, text, self.max_len)
        mask = self.vocab.specials.mask
        positions = [i for i, t in enumerate(tokens) if t == mask]
        if not positions:
            raise UserError(f"--fill-mask text has no {mask} token: {text!r}")
        self.folder.program_files(PRETRAINING)
        self.folder.verify(f"{PRETRAINING}.pdiparams")
        arrays = pad_batch(self.vocab, [(tokens, segments)])
        arrays[PRED_POSITIONS[0]] = np.array([positions], dtype=np.int64)
        probabilities = self.run(arrays, PRETRAINING)[0][0]
        out = []
        for row in probabilities:
            best = np.argsort(-row)[:top_k]
            out.append([(self.vocab.idx_to_token[i], float(row[i])) for i in best])
        return out


def warn_if_int8_saturates(manifest: dict) -> None:
    """A warning where an 8-bit int8 export (made before weights were 7-bit) runs on a CPU without VNNI,
    whose AVX2 int8 products saturate: its embeddings drift (worst cosine 0.959 measured, export/quantize.py)."""
    if manifest.get("int8", {}).get("weight_bits", 8) > INT8_WEIGHT_BITS and not cpu_has_vnni():
        log.warning("this int8 export has 8-bit weights, which saturate on this CPU (no VNNI): its "
                    "embeddings drift from fp32's; export again with python export/save.py --int8")


class OnnxEncoder:
    """ONNX Runtime sessions over encoder.onnx: one thread for short inputs, all cores for batches."""

    def __init__(self, path: Path, threads: int = 0, small_tokens: int = ONNX_SMALL_CALL_TOKENS):
        try:
            import onnxruntime
        except ImportError:
            raise UserError("--backend onnxruntime needs onnxruntime: pip install onnxruntime") from None
        if not path.is_file():
            flag = "--int8" if path.name == ONNX_INT8_FILE else "--onnx"
            raise UserError(f"{path} is missing: export with python export/save.py {flag}")
        self._ort, self.path, self.threads, self.small_tokens = onnxruntime, path, threads, small_tokens
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

    def run(self, arrays: dict[str, np.ndarray]) -> list[np.ndarray]:
        tokens = arrays[input_names()[0]].size
        session = self._session("small" if tokens <= self.small_tokens else "large")
        return session.run(None, {name: arrays[name] for name in input_names()})


def choose_backend(backend: str, device: str, folder: Path, precision: str = "fp32") -> str:
    """paddle or onnxruntime for `backend` (paddle, onnxruntime or auto). Auto picks ONNX Runtime on CPU
    where the export carries encoder.onnx: faster for one sentence and about even for a 64 x 64 batch on
    these CPUs (bench/infer.py); otherwise, on a GPU and in bf16/fp16, Paddle Inference. int8 is ONNX
    Runtime's (encoder.int8.onnx), on CPU."""
    import importlib.util

    if backend not in ("paddle", "onnxruntime", "auto"):
        raise UserError(f"--backend must be paddle, onnxruntime or auto, got {backend!r}")
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
    if (precision != "fp32" or not (folder / ONNX_FILE).is_file() or importlib.util.find_spec("onnxruntime") is None
            or device == "gpu"):
        return "paddle"
    if device == "auto" and has_cuda_gpu():
        return "paddle"
    return "onnxruntime"


def _with_handles(predictor) -> tuple:
    """(predictor, {input name: handle}, [output handles]): handles fetched once, reused every call."""
    inputs = {name: predictor.get_input_handle(name) for name in predictor.get_input_names()}
    return predictor, inputs, [predictor.get_output_handle(name) for name in predictor.get_output_names()]


def resolve_device(device: str, trt: bool, precision: str) -> str:
    """'gpu' or 'cpu' for `device` (auto/gpu/cpu); a GPU or TensorRT request that cannot be met is an error."""
    from paddle import inference

    has_gpu = has_cuda_gpu()
    if device not in ("auto", "gpu", "cpu"):
        raise UserError(f"--device must be auto, gpu or cpu, got {device!r}")
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
