"""The exported model's format: file names, input names and meanings, manifest fields.

Written by export/save.py, read by infer/, and the source of the encoder's InputSpecs in model.py.
Imports no Paddle, so the inference side can read it without the training code.
"""
from __future__ import annotations

# the programs: the encoder, and (export/save.py --with-heads) the encoder with its pretraining heads;
# each is <name>.json (or .pdmodel) + <name>.pdiparams
ENCODER, PRETRAINING = "encoder", "pretraining"
MANIFEST, VOCAB = "manifest.json", "vocab.json"
ONNX_FILE = "encoder.onnx"  # the encoder for ONNX Runtime (export/save.py --onnx), same inputs and output
ONNX_INT8_FILE = "encoder.int8.onnx"  # its int8 quantisation (export/save.py --int8, infer/ --precision int8)
INT8_WEIGHT_BITS = 7  # export/quantize.py's reduce_range; manifests without "weight_bits" hold 8-bit weights
MANIFEST_FORMAT = 1

# The encoder's inputs, in order: (name, shape, meaning); all int64, -1 = any size.
ENCODER_INPUTS = (
    ("input_ids", (-1, -1), "token ids, <cls> A <sep> [B <sep>], padded with <pad>"),
    ("token_type_ids", (-1, -1), "0 for <cls> A <sep>, 1 for B <sep>"),
    ("valid_length", (-1,), "real tokens per row (the rest is padding)"),
)
# The heads program takes the encoder's inputs and these positions.
PRED_POSITIONS = ("pred_positions", (-1, -1), "positions (per row) whose masked word is predicted")
PRETRAINING_OUTPUTS = ("mlm_probabilities [B, P, vocab]", "nsp_probabilities [B, 2]")
# How an input's token vectors become one embedding (the manifest's "embedding"): <cls>'s vector, or the
# mean or element-wise max over every token, <cls> and <sep> included (as sentence-transformers pools), or
# their mean weighted by each token's weight in TOKEN_WEIGHTS (sentence-transformers' WordWeights + mean).
POOLINGS = ("cls", "mean", "max", "weighted")
TOKEN_WEIGHTS = "token_weights.npy"  # `weighted` pooling's weight per vocabulary id, float32 [vocab]


def input_names(program: str = ENCODER) -> list[str]:
    """The feed names of `program`, in order."""
    names = [name for name, _, _ in ENCODER_INPUTS]
    return names + [PRED_POSITIONS[0]] if program == PRETRAINING else names


def inputs_manifest() -> list[dict]:
    return [{"name": name, "dtype": "int64", "shape": list(shape), "meaning": meaning}
            for name, shape, meaning in ENCODER_INPUTS]


TOKEN_CLASSIFICATION = "token_classification"  # a tagger's model.problem_type


def outputs_manifest(hidden_size: int, labels: int = 0, per_token: bool = False) -> list[dict]:
    """The encoder program's outputs in order: the encodings, then a head's logits (`labels` > 0): one row per
    input (a classifier's), or one per token (a tagger's, `per_token`)."""
    outputs = [{"name": "encodings", "dtype": "float32", "shape": [-1, -1, hidden_size],
                "meaning": "one vector per token; row 0 (<cls>) represents the whole input"}]
    if labels and per_token:
        outputs.append({"name": "logits", "dtype": "float32", "shape": [-1, -1, labels],
                        "meaning": "one score per tag for every token (a word's tag is its first piece's)"})
    elif labels:
        outputs.append({"name": "logits", "dtype": "float32", "shape": [-1, labels],
                        "meaning": "one score per label (the head's: pooler, classifier), before softmax or sigmoid"})
    return outputs


def head_manifest(labels: list[str], problem_type: str) -> dict:
    """The manifest's "head", what the program's second output means (as TEI's model_type): a classifier
    (several labels; softmax), a reranker (one output; sigmoid) or a tagger (a tag per token), with its labels
    in id order."""
    kind = ("tagger" if problem_type == TOKEN_CLASSIFICATION else "reranker" if len(labels) == 1 else "classifier")
    return {"kind": kind, "labels": list(labels), "problem_type": problem_type}


def embedding_manifest(pooling: str, normalize: bool, hidden_size: int) -> dict:
    """The manifest's "embedding": how encodings become one vector per input, and its length."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    return {"pooling": pooling, "normalize": bool(normalize), "dimensions": hidden_size}
