"""A checkpoint as a Hugging Face `BertForPreTraining` folder: config.json, model.safetensors, vocab.

    python export/save.py --format huggingface          # -> output/huggingface
    transformers.BertForPreTraining.from_pretrained("output/huggingface")

Pure numpy (no Paddle, no torch). The name mapping is explicit below. Two of this project's exact
simplifications are written back as their standard form: the attention key has no bias (softmax ignores
a per-row shift), so Hugging Face's key bias is zero; the value bias is stored as trained (this project
folds it into the output bias at run time, which is the same sum). Paddle keeps linear weights as
[in, out], PyTorch as [out, in]: every matrix is transposed.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.config import Config
from pipeline.errors import UserError
from pipeline.tokenizer import TOKENIZER_FILE, Tokenizer

# (Hugging Face name, this project's name); "{i}" is the layer index.
EMBEDDINGS = [
    ("bert.embeddings.word_embeddings.weight", "encoder.embeddings.word_embeddings.weight"),
    ("bert.embeddings.position_embeddings.weight", "encoder.embeddings.position_embeddings.weight"),
    ("bert.embeddings.token_type_embeddings.weight", "encoder.embeddings.token_type_embeddings.weight"),
    ("bert.embeddings.LayerNorm.weight", "encoder.embeddings.layer_norm.weight"),
    ("bert.embeddings.LayerNorm.bias", "encoder.embeddings.layer_norm.bias"),
]
LAYER = [
    ("attention.self.query.weight", "attention.query.weight"),
    ("attention.self.query.bias", "attention.query.bias"),
    ("attention.self.key.weight", "attention.key.weight"),
    ("attention.self.value.weight", "attention.value.weight"),
    ("attention.self.value.bias", "attention.value.bias"),
    ("attention.output.dense.weight", "attention.output.weight"),
    ("attention.output.dense.bias", "attention.output.bias"),
    ("attention.output.LayerNorm.weight", "attention_norm.weight"),
    ("attention.output.LayerNorm.bias", "attention_norm.bias"),
    ("intermediate.dense.weight", "intermediate.weight"),
    ("intermediate.dense.bias", "intermediate.bias"),
    ("output.dense.weight", "output.weight"),
    ("output.dense.bias", "output.bias"),
    ("output.LayerNorm.weight", "output_norm.weight"),
    ("output.LayerNorm.bias", "output_norm.bias"),
]
HEADS = [
    ("bert.pooler.dense.weight", "nsp_head.pooler.weight"),
    ("bert.pooler.dense.bias", "nsp_head.pooler.bias"),
    ("cls.predictions.transform.dense.weight", "mlm_head.transform.weight"),
    ("cls.predictions.transform.dense.bias", "mlm_head.transform.bias"),
    ("cls.predictions.transform.LayerNorm.weight", "mlm_head.layer_norm.weight"),
    ("cls.predictions.transform.LayerNorm.bias", "mlm_head.layer_norm.bias"),
    ("cls.seq_relationship.weight", "nsp_head.classifier.weight"),
    ("cls.seq_relationship.bias", "nsp_head.classifier.bias"),
]
DECODER = [("cls.predictions.decoder.weight", "mlm_head.decoder.weight"), ("cls.predictions.bias", "mlm_head.decoder.bias")]
TIED_DECODER = [("cls.predictions.bias", "mlm_head.decoder_bias")]  # the weight is the word embeddings


def name_mapping(num_layers: int, tied: bool = False) -> list[tuple[str, str]]:
    """Every (Hugging Face name, this project's name) pair of a model with `num_layers` layers, whose
    MLM output layer is `tied` to the word embeddings or not."""
    layers = [(f"bert.encoder.layer.{i}.{hf}", f"encoder.layers.{i}.{ours}")
              for i in range(num_layers) for hf, ours in LAYER]
    return EMBEDDINGS + layers + HEADS + (TIED_DECODER if tied else DECODER)


def to_huggingface(state: dict[str, np.ndarray], num_layers: int, tied: bool = False) -> dict[str, np.ndarray]:
    """This project's model state -> `BertForPreTraining`'s state dict (numpy, float32)."""
    out = {}
    for hf, ours in name_mapping(num_layers, tied):
        if ours not in state and ours.endswith(".bias"):  # model.linear_bias=false: exactly a zero bias there
            value = np.zeros(state[ours.removesuffix("bias") + "weight"].shape[1], dtype=np.float32)
        else:
            value = state[ours]
        is_linear_weight = value.ndim == 2 and "embeddings" not in ours
        out[hf] = np.ascontiguousarray(value.T if is_linear_weight else value, dtype=np.float32)
    # Hugging Face ties the decoder's bias to cls.predictions.bias and lists both names
    out["cls.predictions.decoder.bias"] = out["cls.predictions.bias"].copy()
    for i in range(num_layers):  # no key bias here: exactly a zero bias there
        width = state[f"encoder.layers.{i}.attention.key.weight"].shape[1]
        out[f"bert.encoder.layer.{i}.attention.self.key.bias"] = np.zeros(width, dtype=np.float32)
    return out


def check_expressible(cfg: Config) -> None:
    """Refuse a model transformers' BertForPreTraining cannot be: it is post-LN (LayerNorm after each
    residual add, no final LayerNorm) with an ungated feed-forward. (Missing biases are zero biases there.)"""
    if cfg.model.norm != "post":
        raise UserError(f"model.norm={cfg.model.norm}: transformers' BERT is post-LN, so this model cannot be written "
                        f"as a BertForPreTraining (export it with --format paddle)")
    if cfg.model.gated:
        raise UserError("model.gated=true: transformers' BERT has no gated feed-forward, so this model cannot be "
                        "written as a BertForPreTraining (export it with --format paddle)")


def bert_config(cfg: Config, pad_id: int = 1) -> dict:
    """`config.json` of a `BertForPreTraining` with this project's architecture (`pad_id`: the padding
    token's id, 1 in this project's vocabularies)."""
    m = cfg.model
    return {
        "architectures": ["BertForPreTraining"], "model_type": "bert",
        "vocab_size": m.vocab_size, "hidden_size": m.hidden_size, "num_hidden_layers": m.num_layers,
        "num_attention_heads": m.num_heads, "intermediate_size": m.ffn_size, "hidden_act": m.activation,
        "hidden_dropout_prob": m.dropout, "attention_probs_dropout_prob": 0.0,  # attention is not dropped here
        "max_position_embeddings": m.max_position, "type_vocab_size": 2, "initializer_range": m.init_std or 0.02,
        "layer_norm_eps": m.layer_norm_eps, "pad_token_id": pad_id, "position_embedding_type": "absolute",
        "tie_word_embeddings": m.tie_word_embeddings,
    }


def tokenizer_files(tokenizer: Tokenizer, max_len: int) -> dict[str, str]:
    """vocab.txt and a tokenizer config with this vocabulary's special tokens: BertTokenizerFast over the
    WordPiece tokenizer.json when there is one, else a lower-casing BertTokenizer over the words.
    `do_lower_case` is the tokenizer's own: BertTokenizerFast rebuilds tokenizer.json's normalizer from it,
    so a wrong value would silently lower-case (or not) every transformers user's text."""
    s = tokenizer.vocab.specials
    special = {"unk_token": s.unk, "pad_token": s.pad, "mask_token": s.mask, "cls_token": s.cls, "sep_token": s.sep}
    fast = tokenizer.kind == "wordpiece"
    config = {"tokenizer_class": "BertTokenizerFast" if fast else "BertTokenizer",
              "do_lower_case": tokenizer.lowercase, "strip_accents": None, "tokenize_chinese_chars": True,
              "model_max_length": max_len, **special}
    files = {"vocab.txt": "\n".join(tokenizer.vocab.idx_to_token) + "\n",
             "tokenizer_config.json": json.dumps(config, indent=1),
             "special_tokens_map.json": json.dumps(special, indent=1)}
    if fast:
        files[TOKENIZER_FILE] = tokenizer.backend.to_str()
    return files


def write_folder(folder: Path, cfg: Config, state: dict[str, np.ndarray], tokenizer: Tokenizer) -> None:
    """Write the whole Hugging Face folder into `folder` (an empty, temporary one: the caller renames)."""
    from safetensors.numpy import save_file

    save_file(to_huggingface(state, cfg.model.num_layers, cfg.model.tie_word_embeddings), str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(bert_config(cfg, tokenizer.vocab.pad), indent=1), encoding="utf-8")
    for name, text in tokenizer_files(tokenizer, cfg.data.max_len).items():
        (folder / name).write_text(text, encoding="utf-8")
