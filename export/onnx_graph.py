"""encoder.onnx written straight from a post-LN BERT's weights with ONNX Runtime's fused BERT operators,
the graph its own transformer optimiser makes of Hugging Face's BERT: EmbedLayerNormalization (the three
embeddings, LayerNorm and the padding mask), per layer one Attention (q, k and v as one [H, 3H] product,
the heads, scaling, key mask and softmax in one kernel), SkipLayerNormalization (the residual add, bias and
LayerNorm) after each block, and BiasGelu in the feed-forward.

Why not paddle2onnx's graph: its attention is ~20 nodes per layer (72 Reshapes, 24 Concats and 13
Slice+Squeeze of shape plumbing for all-MiniLM-L6-v2) that ONNX Runtime's optimiser cannot fuse; this graph is
faster at the same encodings (docs/benchmarks.md).

Same inputs and output as the exported program (pipeline/core/export_format.py); rows past `valid_length` are
padding and their vectors are not defined. Pre-LN and gated models keep paddle2onnx's graph (`expressible`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.config import ModelConfig
from pipeline.core.export_format import input_names

MS = "com.microsoft"  # ONNX Runtime's contrib operators


def expressible(model: ModelConfig) -> bool:
    """Whether this graph can be `model`: post-LN, ungated, GELU (erf) or ReLU."""
    return model.norm == "post" and not model.gated and model.activation in ("gelu", "relu")


def write_fused_onnx(encoder_state: dict[str, np.ndarray], model: ModelConfig, path: Path) -> None:
    """`encoder_state` (a BertEncoder's state_dict as numpy, names relative to the encoder) -> `path`."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    hidden, eps = model.hidden_size, model.layer_norm_eps
    zeros = np.zeros(hidden, dtype=np.float32)
    initializers, nodes = [], []

    def weight(name: str, value: np.ndarray | None = None) -> str:
        array = encoder_state[name] if value is None else value
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attributes) -> str:
        domain = MS if op in ("EmbedLayerNormalization", "Attention", "SkipLayerNormalization", "BiasGelu") else ""
        nodes.append(helper.make_node(op, inputs, [output], domain=domain, **attributes))
        return output

    ids, segments, valid = input_names()
    for name, value in (("zero", 0), ("one", 1)):
        initializers.append(numpy_helper.from_array(np.array(value, dtype=np.int64), name))
    initializers.append(numpy_helper.from_array(np.array([1], dtype=np.int64), "axis_1"))
    # the [B, L] 0/1 mask of real tokens, from valid_length: position < valid_length
    length = node("Gather", [node("Shape", [ids], "shape"), "one"], "length", axis=0)
    keep = node("Less", [node("Range", ["zero", length, "one"], "positions"),
                         node("Unsqueeze", [valid, "axis_1"], "valid_column")], "keep")
    e = "embeddings."
    nodes.append(helper.make_node(
        "EmbedLayerNormalization",
        [node("Cast", [ids], "ids_32", to=TensorProto.INT32), node("Cast", [segments], "segments_32", to=TensorProto.INT32),
         weight(e + "word_embeddings.weight"), weight(e + "position_embeddings.weight"),
         weight(e + "token_type_embeddings.weight"), weight(e + "layer_norm.weight"), weight(e + "layer_norm.bias"),
         node("Cast", [keep], "mask_32", to=TensorProto.INT32)],
        ["x_0", "mask_index"], domain=MS, epsilon=eps))  # mask_index [B]: each row's real tokens
    x = "x_0"
    for i in range(model.num_layers):
        p = f"layers.{i}."

        def bias(name: str) -> np.ndarray:
            return encoder_state.get(p + name, zeros)

        qkv = np.concatenate([encoder_state[p + f"attention.{n}.weight"] for n in ("query", "key", "value")], axis=1)
        qkv_bias = np.concatenate([bias("attention.query.bias"), zeros, bias("attention.value.bias")])
        context = node("Attention", [x, weight(p + "qkv.weight", qkv), weight(p + "qkv.bias", qkv_bias), "mask_index"],
                       p + "context", num_heads=model.num_heads)
        attended = node("MatMul", [context, weight(p + "attention.output.weight")], p + "attended")
        h = node("SkipLayerNormalization", [attended, x, weight(p + "attention_norm.weight"),
                                            weight(p + "attention_norm.bias"), weight(p + "attention.output.bias",
                                                                                     bias("attention.output.bias"))],
                 p + "h", epsilon=eps)
        up = node("MatMul", [h, weight(p + "intermediate.weight")], p + "up")
        up_bias = weight(p + "intermediate.bias", encoder_state.get(p + "intermediate.bias",
                                                                   np.zeros(model.ffn_size, dtype=np.float32)))
        if model.activation == "gelu":
            active = node("BiasGelu", [up, up_bias], p + "active")
        else:
            active = node("Relu", [node("Add", [up, up_bias], p + "up_biased")], p + "active")
        down = node("MatMul", [active, weight(p + "output.weight")], p + "down")
        last = i == model.num_layers - 1
        x = node("SkipLayerNormalization", [down, h, weight(p + "output_norm.weight"), weight(p + "output_norm.bias"),
                                            weight(p + "output.bias", bias("output.bias"))],
                 "encodings" if last else f"x_{i + 1}", epsilon=eps)
    graph = helper.make_graph(
        nodes, "bert_encoder",
        [helper.make_tensor_value_info(ids, TensorProto.INT64, ["batch", "length"]),
         helper.make_tensor_value_info(segments, TensorProto.INT64, ["batch", "length"]),
         helper.make_tensor_value_info(valid, TensorProto.INT64, ["batch"])],
        [helper.make_tensor_value_info("encodings", TensorProto.FLOAT, ["batch", "length", hidden])], initializers)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(MS, 1)]),
              str(path))
