"""encoder.onnx -> encoder.int8.onnx: ONNX Runtime dynamic quantisation (7-bit weights per output channel,
activations quantised per call) after SmoothQuant, for `infer/ --precision int8`, and its agreement with fp32.

The rules, each chosen by measurement (the figures: docs/inference.md, "How the int8 export was chosen"):
- ONNX Runtime's basic graph optimisation runs first, so the quantiser sees paddle2onnx's weights as constants.
- SmoothQuant moves the outlier channels of each LayerNorm's output into the next weights (exact in fp32).
- Weights are 7-bit (`reduce_range`): CPUs without VNNI saturate 8-bit products; the same file serves any CPU.
- The feed-forward output projections of the first third of the layers stay fp32.
"""
from __future__ import annotations

import logging
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np

from pipeline.core.errors import UserError
from pipeline.core.export_format import input_names

# SmoothQuant's migration strength (smooth_activations), the best measured (docs/inference.md)
SMOOTHING = 0.7
# Varied texts the export calibrates and measures the int8 model on (short, long, numbers, punctuation, a
# question, one word): the manifest records the lowest cosine of their embeddings to fp32's.
CHECK_TEXTS = (
    "a crane is flying",
    "The 2019 budget allocated $4.5 million to roads, bridges and public transport.",
    "Who wrote the opera that premiered in Vienna in 1786?",
    "the cat sat on the mat",
    "Photosynthesis converts light energy into chemical energy stored in glucose molecules.",
    "He scored twice in the second half , and the club won the league for the first time since 1954 .",
    "error: connection refused (port 8080)",
    "rain",
    "The committee, after three days of debate, voted 7-2 to postpone the decision until the spring session "
    "so that the engineers could finish their survey of the river banks.",
    "Ships of the line carried between 64 and 120 guns on two or three decks.",
    "I love this song!",
    "quantum entanglement links the states of two particles",
)


def quantize_encoder(source: Path, target: Path, hidden_size: int, ffn_size: int,
                     calibration: list[dict[str, np.ndarray]]) -> list[str]:
    """Write the int8 model of `source` (an fp32 encoder.onnx) to `target`, its activations smoothed as
    `calibration` (encoder feeds) shows them; return the MatMuls kept in fp32."""
    try:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as err:
        raise UserError(f"--int8 needs onnxruntime, onnx and ml_dtypes ({err}): pip install -e '.[onnx]'") from None
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        optimized, smoothed = Path(tmp) / "basic.onnx", Path(tmp) / "smoothed.onnx"
        basic_optimized(source, optimized)
        model = onnx.load(str(optimized))
        smooth_activations(model, calibration)
        onnx.save(model, str(smoothed))
        outputs = feed_forward_outputs(model, hidden_size, ffn_size)
        keep = outputs[:max(1, round(len(outputs) / 3))]
        quiet = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)  # its advice to run a pre-processing step, on every call
        try:
            quantize_dynamic(str(smoothed), str(target), weight_type=QuantType.QInt8, per_channel=True,
                             reduce_range=True,  # 7-bit weights: export_format.INT8_WEIGHT_BITS
                             op_types_to_quantize=["MatMul"], nodes_to_exclude=keep)
        finally:
            logging.getLogger().setLevel(quiet)
    return keep


def basic_optimized(source: Path, target: Path) -> None:
    """ONNX Runtime's basic (exact) graph optimisation of `source`, written to `target`: constants folded,
    so each MatMul reads its weight directly."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    onnxruntime.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])


def normalized_matmuls(model) -> dict[str, list]:
    """MatMuls that read a LayerNormalization's output (each layer's query, key and value projections, and
    its FFN input) with a constant 2-D weight used by no other node, grouped by that output."""
    weights = {init.name: init for init in model.graph.initializer if len(init.dims) == 2}
    normalized = {out for node in model.graph.node if node.op_type == "LayerNormalization" for out in node.output}
    uses = Counter(name for node in model.graph.node for name in node.input)
    groups: dict[str, list] = {}
    for node in model.graph.node:
        if (node.op_type == "MatMul" and node.input[0] in normalized and node.input[1] in weights
                and uses[node.input[1]] == 1):
            groups.setdefault(node.input[0], []).append(node)
    return groups


def activation_maxima(model, names: list[str], feeds: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The largest |value| of each channel (last axis) of the activations `names` over `feeds`."""
    import onnx
    import onnxruntime

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None) for name in names)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    maxima: dict[str, np.ndarray] = {}
    for feed in feeds:
        for name, value in zip(names, session.run(names, feed)):
            channel_max = np.abs(value.reshape(-1, value.shape[-1])).max(0)
            maxima[name] = np.maximum(maxima.get(name, 0), channel_max)
    return maxima


def smooth_activations(model, feeds: list[dict[str, np.ndarray]], alpha: float = SMOOTHING) -> None:
    """SmoothQuant (Xiao et al., 2023) in place, on the MatMuls that read a LayerNorm's output: their input X
    becomes X / s (one inserted Mul per LayerNorm) and each weight W becomes diag(s) W, with
    s_j = max|X_j|^alpha / max|W_j|^(1 - alpha); the product is unchanged, but X's outlier channels no longer
    set the scale of every other channel. (Smoothing the attention and GELU outputs too bought nothing:
    worst cosine 0.9941 against 0.9965 on 600 wiki.test sentences, at 6% less speed.)"""
    from onnx import helper, numpy_helper

    groups = normalized_matmuls(model)
    maxima = activation_maxima(model, list(groups), feeds)
    weights = {init.name: init for init in model.graph.initializer}
    for name, matmuls in groups.items():
        arrays = [numpy_helper.to_array(weights[node.input[1]]) for node in matmuls]
        weight_max = np.max([np.abs(w).max(1) for w in arrays], axis=0)
        scale = np.clip(maxima[name] ** alpha / np.maximum(weight_max, 1e-8) ** (1 - alpha), 1e-3, 1e3)
        for node, w in zip(matmuls, arrays):
            weights[node.input[1]].CopyFrom(numpy_helper.from_array((w * scale[:, None]).astype(np.float32),
                                                                    node.input[1]))
        inverse = numpy_helper.from_array((1 / scale).astype(np.float32), f"{name}.smooth_inverse")
        model.graph.initializer.append(inverse)
        position = list(model.graph.node).index(matmuls[0])
        model.graph.node.insert(position, helper.make_node("Mul", [name, inverse.name], [f"{name}.smoothed"],
                                                           name=f"{name}.smooth"))
        for node in matmuls:
            node.input[0] = f"{name}.smoothed"


def feed_forward_outputs(model, hidden_size: int, ffn_size: int) -> list[str]:
    """Names of the MatMuls whose constant weight is [ffn_size, hidden_size] (each layer's FFN output), in
    graph order, which is layer order."""
    shapes = {init.name: tuple(init.dims) for init in model.graph.initializer}
    return [node.name for node in model.graph.node
            if node.op_type == "MatMul" and shapes.get(node.input[1]) == (ffn_size, hidden_size)]


def min_cosine(fp32: Path, int8: Path, feeds: list[dict[str, np.ndarray]], pool) -> float:
    """The lowest cosine between the two models' embeddings (`pool`: ([tokens, hidden], [tokens] ids) ->
    [hidden]) of each single-row feed."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    sessions = [onnxruntime.InferenceSession(str(p), options, providers=["CPUExecutionProvider"]) for p in (fp32, int8)]
    worst = 1.0
    for feed in feeds:
        length = int(feed[input_names()[2]][0])
        ids = feed[input_names()[0]][0, :length]
        a, b = (pool(s.run(None, feed)[0][0, :length], ids) for s in sessions)
        worst = min(worst, float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)))
    return worst
