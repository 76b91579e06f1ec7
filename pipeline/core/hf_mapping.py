"""The one mapping between this project's BERT parameters and Hugging Face's `BertForPreTraining` (or, for a
fine-tuned classifier, `BertForSequenceClassification`: the same encoder and pooler, and `classifier`), used both
ways: `to_hf` (export/huggingface.py, the Hugging Face export) and `from_hf` (pipeline/pretrained.py,
--init-from and --from-hf). Pure numpy.

Every pair is listed below, with whether the weight is transposed: Paddle keeps a linear layer's weight as
[in, out], PyTorch as [out, in]; embedding tables and LayerNorm parameters are the same both ways. Two of
this project's exact simplifications (model.py): the attention key has no bias (softmax ignores a shift
shared by a query's scores), and the value bias is folded into the output bias at run time; so Hugging
Face's key bias is written as zeros and dropped on reading. Keys Hugging Face writes twice or derives are
declared once (as transformers' `_tied_weights_keys`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.core.errors import UserError

# (Hugging Face name, this project's name, transposed); "{i}" is the layer index.
EMBEDDINGS = [
    ("bert.embeddings.word_embeddings.weight", "encoder.embeddings.word_embeddings.weight", False),
    ("bert.embeddings.position_embeddings.weight", "encoder.embeddings.position_embeddings.weight", False),
    ("bert.embeddings.token_type_embeddings.weight", "encoder.embeddings.token_type_embeddings.weight", False),
    ("bert.embeddings.LayerNorm.weight", "encoder.embeddings.layer_norm.weight", False),
    ("bert.embeddings.LayerNorm.bias", "encoder.embeddings.layer_norm.bias", False),
]
LAYER = [
    ("attention.self.query.weight", "attention.query.weight", True),
    ("attention.self.query.bias", "attention.query.bias", False),
    ("attention.self.key.weight", "attention.key.weight", True),
    ("attention.self.value.weight", "attention.value.weight", True),
    ("attention.self.value.bias", "attention.value.bias", False),
    ("attention.output.dense.weight", "attention.output.weight", True),
    ("attention.output.dense.bias", "attention.output.bias", False),
    ("attention.output.LayerNorm.weight", "attention_norm.weight", False),
    ("attention.output.LayerNorm.bias", "attention_norm.bias", False),
    ("intermediate.dense.weight", "intermediate.weight", True),
    ("intermediate.dense.bias", "intermediate.bias", False),
    ("output.dense.weight", "output.weight", True),
    ("output.dense.bias", "output.bias", False),
    ("output.LayerNorm.weight", "output_norm.weight", False),
    ("output.LayerNorm.bias", "output_norm.bias", False),
]
HEAD_WEIGHTS = [
    ("bert.pooler.dense.weight", "nsp_head.pooler.weight", True),
    ("bert.pooler.dense.bias", "nsp_head.pooler.bias", False),
    ("cls.predictions.transform.dense.weight", "mlm_head.transform.weight", True),
    ("cls.predictions.transform.dense.bias", "mlm_head.transform.bias", False),
    ("cls.predictions.transform.LayerNorm.weight", "mlm_head.layer_norm.weight", False),
    ("cls.predictions.transform.LayerNorm.bias", "mlm_head.layer_norm.bias", False),
    ("cls.seq_relationship.weight", "nsp_head.classifier.weight", True),
    ("cls.seq_relationship.bias", "nsp_head.classifier.bias", False),
]
DECODER = [("cls.predictions.decoder.weight", "mlm_head.decoder.weight", True),
           ("cls.predictions.bias", "mlm_head.decoder.bias", False)]
TIED_DECODER = [("cls.predictions.bias", "mlm_head.decoder_bias", False)]  # the weight is the word embeddings
CLASSIFIER = [("classifier.weight", "classifier.weight", True), ("classifier.bias", "classifier.bias", False)]
POOLER = HEAD_WEIGHTS[:2]  # BertForSequenceClassification keeps the pooler, not the pretraining heads

KEY_BIAS = "bert.encoder.layer.{i}.attention.self.key.bias"  # zeros there, none here
DECODER_BIAS_COPY = ("cls.predictions.decoder.bias", "cls.predictions.bias")  # Hugging Face lists the bias twice
TIED_DECODER_WEIGHT = "cls.predictions.decoder.weight"  # with tied embeddings: the word embeddings again
# what a published folder may hold besides the mapped names, all redundant here
REDUNDANT_SUFFIXES = ("attention.self.key.bias", "embeddings.position_ids", DECODER_BIAS_COPY[0])


def name_mapping(num_layers: int, tied: bool = False, classifier: bool = False) -> list[tuple[str, str, bool]]:
    """Every (Hugging Face name, this project's name, transposed) of a model with `num_layers` layers, whose
    MLM output layer is `tied` to the word embeddings or not; a `classifier` has its layer too."""
    layers = [(f"bert.encoder.layer.{i}.{hf}", f"encoder.layers.{i}.{ours}", transposed)
              for i in range(num_layers) for hf, ours, transposed in LAYER]
    return EMBEDDINGS + layers + HEAD_WEIGHTS + (TIED_DECODER if tied else DECODER) + (CLASSIFIER if classifier else [])


def is_head(hf_name: str) -> bool:
    """The pretraining heads (and the pooler): a `BertModel` folder lacks them."""
    return not hf_name.startswith("bert.") or ".pooler." in hf_name


def to_hf(state: dict[str, np.ndarray], num_layers: int, tied: bool = False, classifier: bool = False,
          pooler: bool = True) -> dict[str, np.ndarray]:
    """This project's model state -> `BertForPreTraining`'s state dict (numpy, float32), or with `classifier`
    `BertForSequenceClassification`'s (encoder, pooler, classifier), or without the `pooler`
    `BertForTokenClassification`'s. A bias this model has not got (model.linear_bias=false) is exactly a zero
    bias there."""
    out = {}
    heads = ((POOLER if pooler else []) + CLASSIFIER if classifier else
             HEAD_WEIGHTS + (TIED_DECODER if tied else DECODER))
    encoder = [m for m in name_mapping(num_layers, tied) if m[0].startswith("bert.") and not is_head(m[0])]
    for hf, ours, transposed in encoder + heads:
        if ours not in state and ours.endswith(".bias"):
            value = np.zeros(state[ours.removesuffix("bias") + "weight"].shape[1], dtype=np.float32)
        else:
            value = state[ours]
        out[hf] = np.ascontiguousarray(value.T if transposed else value, dtype=np.float32)
    if not classifier:
        out[DECODER_BIAS_COPY[0]] = out[DECODER_BIAS_COPY[1]].copy()
    for i in range(num_layers):
        width = state[f"encoder.layers.{i}.attention.key.weight"].shape[1]
        out[KEY_BIAS.format(i=i)] = np.zeros(width, dtype=np.float32)
    return out


def from_hf(hf: dict[str, np.ndarray], num_layers: int, tied: bool, path: Path,
            classifier: bool = False) -> tuple[dict, list[str]]:
    """(this project's state, the parameters that start fresh: the heads a `BertModel` lacks) from a
    `BertForPreTraining` (or, `classifier`, `BertForSequenceClassification`) state; a missing encoder weight or
    an unknown extra one is refused, named."""
    mapping = name_mapping(num_layers, tied, classifier)
    state, fresh = {}, []
    for hf_name, ours, transposed in mapping:
        if hf_name in hf:
            state[ours] = np.ascontiguousarray(hf[hf_name].T if transposed else hf[hf_name])
        elif is_head(hf_name):
            fresh.append(ours)
    missing = [hf_name for hf_name, _, _ in mapping if hf_name not in hf and not is_head(hf_name)]
    if missing:
        raise UserError(f"{path} lacks {len(missing)} weight(s) of a {num_layers}-layer BERT, "
                        f"e.g. {', '.join(missing[:3])}")
    known = {hf_name for hf_name, _, _ in mapping} | ({TIED_DECODER_WEIGHT} if tied else set())
    extra = sorted(k for k in hf if k not in known and not k.endswith(REDUNDANT_SUFFIXES))
    if extra:
        raise UserError(f"{path} holds {len(extra)} weight(s) a BERT for pretraining does not have, e.g. "
                        f"{', '.join(extra[:3])}")
    return state, fresh
