"""A published BERT (a Hugging Face folder) as this project's settings, weights and tokenizer, to continue
pretraining it (`train.py --init-from DIR`, domain-adaptive pretraining).

The folder, as published or as `export/save.py --format huggingface` writes it: `config.json` (model_type
bert), `model.safetensors` (a `BertForPreTraining`, or a `BertModel`: the encoder alone), and
`tokenizer.json` or `vocab.txt`, with `tokenizer_config.json` / `special_tokens_map.json` for the casing and
the special tokens, which keep their own strings and ids. Weights are mapped by name, the inverse of
`export/huggingface.py`: every matrix transposed; the attention key bias dropped, exactly (it adds the same
number to every score of a query row, which softmax ignores); the value bias kept (this model folds it
into the output bias at run time, the same sum). Heads absent from the folder (a `BertModel`) start fresh.
Pure numpy; never unpickles (a folder with only `pytorch_model.bin` is refused).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.huggingface import name_mapping
from pipeline.errors import UserError
from pipeline.tokenizer import TOKENIZER_FILE, WordPieceTokenizer
from pipeline.vocab import SpecialTokens

CONFIG, WEIGHTS = "config.json", "model.safetensors"
# config.json key -> model.* setting
MODEL_KEYS = {"vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_hidden_layers": "num_layers",
              "num_attention_heads": "num_heads", "intermediate_size": "ffn_size", "hidden_act": "activation",
              "max_position_embeddings": "max_position", "layer_norm_eps": "layer_norm_eps",
              "tie_word_embeddings": "tie_word_embeddings"}
BERT_SPECIALS = SpecialTokens(unk="[UNK]", pad="[PAD]", mask="[MASK]", cls="[CLS]", sep="[SEP]")
# names a published folder may hold besides the mapped ones: all redundant here
IGNORED = ("attention.self.key.bias", "embeddings.position_ids", "cls.predictions.decoder.bias")


@dataclass
class Pretrained:
    """What --init-from takes from a folder."""

    folder: Path
    model: dict  # model.* settings
    state: dict[str, np.ndarray]  # this project's parameter names; the heads a BertModel lacks are absent
    fresh: list[str]  # this project's parameters that start fresh
    tokenizer: WordPieceTokenizer


def open_pretrained(folder: str | Path) -> Pretrained:
    """Read and check a Hugging Face BERT folder; every refusal names the file and what is wrong."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise UserError(f"--init-from {folder}: no such folder")
    model = model_settings(read_json(folder / CONFIG), folder / CONFIG)
    hf_state = read_weights(folder)
    state, fresh = to_project(hf_state, model["num_layers"], model["tie_word_embeddings"], folder / WEIGHTS)
    tokenizer = pretrained_tokenizer(folder)
    if len(tokenizer.vocab) != model["vocab_size"]:
        raise UserError(f"{folder}: the tokenizer has {len(tokenizer.vocab)} tokens but {CONFIG} says vocab_size "
                        f"{model['vocab_size']}")
    return Pretrained(folder, model, state, fresh, tokenizer)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} is missing: --init-from needs a Hugging Face BERT folder") from None
    except (OSError, ValueError) as err:
        raise UserError(f"{path} is unreadable ({err})") from None


def model_settings(config: dict, path: Path) -> dict:
    """model.* settings from a config.json, refusing what this model cannot be."""
    if config.get("model_type") != "bert":
        raise UserError(f"{path}: model_type {config.get('model_type')!r} is not bert")
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise UserError(f"{path}: position_embedding_type {config['position_embedding_type']!r} is not supported "
                        f"(only absolute)")
    if config.get("type_vocab_size", 2) != 2:
        raise UserError(f"{path}: type_vocab_size {config['type_vocab_size']} (this model has 2 segments)")
    if config.get("hidden_act", "gelu") not in ("gelu", "relu"):
        raise UserError(f"{path}: hidden_act {config['hidden_act']!r} is not supported (gelu or relu)")
    missing = [k for k in MODEL_KEYS if k not in config and k != "tie_word_embeddings"]
    if missing:
        raise UserError(f"{path} lacks {', '.join(missing)}")
    settings = {ours: config[theirs] for theirs, ours in MODEL_KEYS.items() if theirs in config}
    settings.setdefault("tie_word_embeddings", True)  # transformers' default
    settings.update(norm="post", linear_bias=True, gated=False)  # what transformers' BERT is
    return settings


def read_weights(folder: Path) -> dict[str, np.ndarray]:
    """model.safetensors as numpy arrays, names as in `BertForPreTraining` (a BertModel's get "bert.")."""
    path = folder / WEIGHTS
    if not path.is_file():
        pickles = [p.name for p in folder.glob("*.bin")]
        hint = (f"; {pickles[0]} is a pickle, which is never loaded here: convert it once with transformers, "
                f"e.g. BertForPreTraining.from_pretrained(DIR).save_pretrained(DIR, safe_serialization=True)"
                if pickles else "")
        raise UserError(f"{path} is missing{hint}")
    from safetensors.numpy import load_file

    try:
        state = load_file(str(path))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        raise UserError(f"{path} is not a safetensors file ({str(err).splitlines()[0]})") from None
    if not any(k.startswith("bert.") for k in state):
        state = {f"bert.{k}": v for k, v in state.items()}
    return {k: v.astype(np.float32) for k, v in state.items()}


def to_project(hf: dict[str, np.ndarray], num_layers: int, tied: bool, path: Path) -> tuple[dict, list[str]]:
    """(this project's state, the parameters that start fresh) from a `BertForPreTraining` state."""
    mapping = name_mapping(num_layers, tied)
    # the heads: cls.* and the pooler (a BertModel may lack them; they then start fresh)
    heads = {ours for hf_name, ours in mapping if not hf_name.startswith("bert.") or "pooler" in hf_name}
    state, fresh = {}, []
    for hf_name, ours in mapping:
        if hf_name in hf:
            value = hf[hf_name]
            state[ours] = np.ascontiguousarray(value.T if value.ndim == 2 and "embeddings" not in ours else value)
        elif ours in heads:
            fresh.append(ours)
    missing = [hf_name for hf_name, ours in mapping if hf_name not in hf and ours not in heads]
    if missing:
        raise UserError(f"{path} lacks {len(missing)} weight(s) of a {num_layers}-layer BERT, "
                        f"e.g. {', '.join(missing[:3])}")
    known = {hf_name for hf_name, _ in mapping} | ({"cls.predictions.decoder.weight"} if tied else set())
    extra = sorted(k for k in hf if k not in known and not k.endswith(IGNORED))
    if extra:
        raise UserError(f"{path} holds {len(extra)} weight(s) a BERT for pretraining does not have, e.g. "
                        f"{', '.join(extra[:3])}")
    return state, fresh


def pretrained_tokenizer(folder: Path) -> WordPieceTokenizer:
    """The folder's own WordPiece tokenizer: tokenizer.json, else one built from vocab.txt as
    BertTokenizer does (its casing from tokenizer_config.json), with the folder's special tokens."""
    config, special_map = (read_json(folder / name) if (folder / name).is_file() else {}
                           for name in ("tokenizer_config.json", "special_tokens_map.json"))

    def special(name: str, default: str) -> str:
        value = special_map.get(f"{name}_token", config.get(f"{name}_token", default))
        return value["content"] if isinstance(value, dict) else value  # the AddedToken form

    specials = SpecialTokens(*(special(n, getattr(BERT_SPECIALS, n)) for n in ("unk", "pad", "mask", "cls", "sep")))
    if (folder / TOKENIZER_FILE).is_file():
        return WordPieceTokenizer.load(folder / TOKENIZER_FILE, specials)
    vocab_file = folder / "vocab.txt"
    if not vocab_file.is_file():
        raise UserError(f"{folder} holds neither {TOKENIZER_FILE} nor vocab.txt: the model's tokenizer is needed")
    from tokenizers import Tokenizer as Backend, decoders, models, normalizers, pre_tokenizers

    tokens = vocab_file.read_text(encoding="utf-8").splitlines()
    backend = Backend(models.WordPiece({t: i for i, t in enumerate(tokens)}, unk_token=specials.unk,
                                       max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=config.get("tokenize_chinese_chars", True),
        strip_accents=config.get("strip_accents"), lowercase=config.get("do_lower_case", True))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    backend.add_special_tokens(list(specials.strings()))  # "[MASK]" in a text is the mask token
    try:
        return WordPieceTokenizer(backend, specials)
    except ValueError as err:
        raise UserError(f"{vocab_file}: {err}") from None


def complete_state(pretrained: Pretrained, fresh_model_state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The imported weights, with the freshly initialised values for the parameters the folder lacks."""
    return {**{k: fresh_model_state[k] for k in pretrained.fresh}, **pretrained.state}
