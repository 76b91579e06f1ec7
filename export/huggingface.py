"""A checkpoint as a Hugging Face `BertForPreTraining` folder: config.json, model.safetensors, vocab.

    python export/save.py --format huggingface          # -> output/huggingface
    transformers.BertForPreTraining.from_pretrained("output/huggingface")

Pure numpy (no Paddle, no torch). The weights go through the one name mapping that --init-from reads
back with (pipeline/core/hf_mapping.py: names, transposed weights, zero key biases, the tied keys).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pipeline.config import Config
from pipeline.core.errors import UserError
from pipeline.core.export_format import TOKEN_CLASSIFICATION
from pipeline.core.hf_mapping import to_hf
from pipeline.core.tokenizer import TOKENIZER_FILE, Tokenizer


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
        **(classifier_config(m.labels, m.problem_type) if m.labels else {}),
    }


def classifier_config(labels: list[str], problem_type: str) -> dict:
    """What makes config.json a `BertForSequenceClassification`'s (or a tagger's `BertForTokenClassification`):
    its labels both ways and problem type."""
    if problem_type == TOKEN_CLASSIFICATION:  # transformers has no problem_type for tagging
        return {"architectures": ["BertForTokenClassification"],
                "id2label": {str(i): label for i, label in enumerate(labels)},
                "label2id": {label: i for i, label in enumerate(labels)}}
    return {"architectures": ["BertForSequenceClassification"], "problem_type": problem_type,
            "id2label": {str(i): label for i, label in enumerate(labels)},
            "label2id": {label: i for i, label in enumerate(labels)}}


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

    classifier = bool(cfg.model.labels)
    tagger = cfg.model.problem_type == TOKEN_CLASSIFICATION
    save_file(to_hf(state, cfg.model.num_layers, cfg.model.tie_word_embeddings, classifier, pooler=not tagger),
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(bert_config(cfg, tokenizer.vocab.pad), indent=1), encoding="utf-8")
    for name, text in tokenizer_files(tokenizer, cfg.data.max_len).items():
        (folder / name).write_text(text, encoding="utf-8")
