"""A published BERT (a Hugging Face folder) as this project's settings, weights and tokenizer, to continue
pretraining it (`train.py --init-from DIR`, domain-adaptive pretraining).

The folder, as published or as `export/save.py --format huggingface` writes it: `config.json` (model_type
bert), `model.safetensors` (a `BertForPreTraining`, or a `BertModel`: the encoder alone), and
`tokenizer.json` or `vocab.txt`, with `tokenizer_config.json` / `special_tokens_map.json` for the casing and
the special tokens, which keep their own strings and ids. Weights are mapped by name through the one
mapping both directions use (pipeline/core/hf_mapping.py). Heads absent from the folder (a `BertModel`) start fresh.
A sentence-transformers folder (`modules.json`: Transformer, Pooling, optionally Normalize) is read the
same way from its Transformer module's folder; `sentence_embedding` reads how its token vectors become one
vector (pooling, normalisation, longest input), which `export/save.py --from-hf` records in the manifest.
Pure numpy; never unpickles (a folder with only `pytorch_model.bin` is refused).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import UserError
from pipeline.core.export_format import POOLINGS, VOCAB
from pipeline.core.hf_mapping import from_hf
from pipeline.core.tokenizer import TOKENIZER_FILE, Tokenizer, WordPieceTokenizer, load_tokenizer, wordpiece_backend
from pipeline.core.vocab import SpecialTokens, Vocab

CONFIG, WEIGHTS = "config.json", "model.safetensors"
# config.json key -> model.* setting
MODEL_KEYS = {"vocab_size": "vocab_size", "hidden_size": "hidden_size", "num_hidden_layers": "num_layers",
              "num_attention_heads": "num_heads", "intermediate_size": "ffn_size", "hidden_act": "activation",
              "max_position_embeddings": "max_position", "layer_norm_eps": "layer_norm_eps",
              "tie_word_embeddings": "tie_word_embeddings"}
BERT_SPECIALS = SpecialTokens(unk="[UNK]", pad="[PAD]", mask="[MASK]", cls="[CLS]", sep="[SEP]")
# sentence-transformers: modules.json lists the modules; these three are what a BERT embedding model is
MODULES, POOLING_CONFIG, SENTENCE_CONFIG = "modules.json", "config.json", "sentence_bert_config.json"
TRANSFORMER, POOLING, NORMALIZE = "Transformer", "Pooling", "Normalize"
# 1_Pooling/config.json: "pooling_mode": NAME (sentence-transformers 5 and later), or one flag per mode (before)
POOLING_FLAGS = {"pooling_mode_cls_token": "cls", "pooling_mode_mean_tokens": "mean", "pooling_mode_max_tokens": "max",
                 "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
                 "pooling_mode_weightedmean_tokens": "weightedmean", "pooling_mode_lasttoken": "lasttoken"}


@dataclass
class Pretrained:
    """What --init-from takes from a folder."""

    folder: Path
    model: dict  # model.* settings
    state: dict[str, np.ndarray]  # this project's parameter names; the heads a BertModel lacks are absent
    fresh: list[str]  # this project's parameters that start fresh
    tokenizer: Tokenizer
    pooling: str | None = None  # what a published folder declares (model.pooling); None: the run's own choice
    labels: list[str] | None = None  # a fine-tuned classifier's classes in id order (model.labels)
    problem_type: str | None = None  # and its model.problem_type


@dataclass(frozen=True)
class SentenceEmbedding:
    """How a folder's token vectors become one vector, as it declares it."""

    pooling: str  # one of POOLINGS
    normalize: bool  # to unit length (a Normalize module)
    max_len: int  # longest input in tokens, <cls>/<sep> included


def modules_of(folder: Path) -> dict[str, Path]:
    """A sentence-transformers folder's modules, {kind: folder}; {} for a plain Hugging Face folder.
    Any module but Transformer, Pooling and Normalize (a Dense projection, say) is refused."""
    if not (folder / MODULES).is_file():
        return {}
    entries = read_json(folder / MODULES)
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "type" in e for e in entries):
        raise UserError(f"{folder / MODULES} is not a list of modules")
    modules = {}
    for entry in entries:
        kind = str(entry["type"]).rsplit(".", 1)[-1]
        if kind not in (TRANSFORMER, POOLING, NORMALIZE) or kind in modules:
            raise UserError(f"{folder / MODULES}: module {entry['type']!r} is not supported (a BERT embedding model "
                            f"is one Transformer, one Pooling and optionally Normalize)")
        modules[kind] = folder / str(entry.get("path", ""))
    if TRANSFORMER not in modules:
        raise UserError(f"{folder / MODULES} names no Transformer module")
    return modules


def model_folder(folder: Path) -> Path:
    """Where config.json and the weights are: the folder itself, or its Transformer module's folder."""
    return modules_of(folder).get(TRANSFORMER, folder)


def sentence_embedding(folder: str | Path, max_position: int) -> SentenceEmbedding:
    """The pooling, normalisation and longest input a folder declares. A plain BERT folder: <cls>, not
    normalised, up to max_position_embeddings; a sentence-transformers one: its Pooling module, whether it
    has Normalize, and max_seq_length from sentence_bert_config.json (else the tokenizer's model_max_length)."""
    folder = Path(folder).expanduser()
    modules = modules_of(folder)
    if not modules:
        return SentenceEmbedding("cls", False, max_position)
    pooling = declared_pooling(modules[POOLING] / POOLING_CONFIG) if POOLING in modules else "cls"
    folder_of_model = modules[TRANSFORMER]
    sentence_config = folder_of_model / SENTENCE_CONFIG  # the Transformer module's own settings
    sentence = read_json(sentence_config) if sentence_config.is_file() else {}
    tokenizer_config = (read_json(folder_of_model / "tokenizer_config.json")
                        if (folder_of_model / "tokenizer_config.json").is_file() else {})
    # sentence-transformers' own rule: max_seq_length, else the tokenizer's model_max_length within the
    # position table (transformers writes a huge number there when the length is unknown)
    max_len = sentence.get("max_seq_length")
    if max_len is None:
        given = tokenizer_config.get("model_max_length")
        max_len = min(int(given), max_position) if isinstance(given, (int, float)) else max_position
    if not isinstance(max_len, int) or not 5 <= max_len <= max_position:
        raise UserError(f"{sentence_config}: max_seq_length {max_len!r} must be a whole number from 5 to "
                        f"max_position_embeddings ({max_position})")
    if sentence.get("do_lower_case") and not pretrained_tokenizer(folder_of_model).lowercase:
        raise UserError(f"{sentence_config}: do_lower_case on a cased tokenizer is not supported")
    return SentenceEmbedding(pooling, NORMALIZE in modules, max_len)


def declared_pooling(path: Path) -> str:
    """The one pooling a 1_Pooling/config.json declares, in either of its formats."""
    config = read_json(path)
    mode = config.get("pooling_mode")
    modes = [mode] if isinstance(mode, str) else [name for key, name in POOLING_FLAGS.items() if config.get(key)]
    if len(modes) != 1 or modes[0] not in POOLINGS:
        raise UserError(f"{path}: pooling {' + '.join(map(str, modes)) or 'none'} is not supported (exactly one of "
                        f"{', '.join(POOLINGS)})")
    return modes[0]


def open_pretrained(folder: str | Path) -> Pretrained:
    """Read and check a Hugging Face BERT folder (or a sentence-transformers folder's Transformer module);
    every refusal names the file and what is wrong."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        hint = (f"a model id is not read from the Hub here: download it first, e.g. huggingface-cli download {folder} "
                f"--local-dir {folder.name} (or huggingface_hub.snapshot_download), then pass {folder.name}"
                if len(folder.parts) == 2 and not folder.is_absolute() else
                "a Hugging Face or sentence-transformers BERT folder on disk is needed")
        raise UserError(f"{folder}: no such folder ({hint})")
    if (folder / "checkpoints").is_dir():
        return own_run(folder)
    root, folder = folder, model_folder(folder)
    config = read_json(folder / CONFIG)
    model = model_settings(config, folder / CONFIG)
    hf_state = read_weights(folder)
    labels, problem_type = classifier_labels(config, hf_state, folder / CONFIG)
    state, fresh = from_hf(hf_state, model["num_layers"], model["tie_word_embeddings"], folder / WEIGHTS,
                           classifier=labels is not None)
    tokenizer = pretrained_tokenizer(folder)
    if len(tokenizer.vocab) != model["vocab_size"]:
        raise UserError(f"{folder}: the tokenizer has {len(tokenizer.vocab)} tokens but {CONFIG} says vocab_size "
                        f"{model['vocab_size']}")
    return Pretrained(folder, model, state, fresh, tokenizer, sentence_embedding(root, model["max_position"]).pooling,
                      labels, problem_type)


def classifier_labels(config: dict, state: dict, path: Path) -> tuple[list[str] | None, str | None]:
    """A `BertForSequenceClassification` folder's labels in id order (its id2label) and problem type (one
    label without one: a regression, as sentence-transformers' CrossEncoder writes a reranker), a
    `BertForTokenClassification` folder's tags (token_classification); (None, None) for any other BERT."""
    architectures = config.get("architectures") or []
    if "BertForTokenClassification" in architectures:
        id2label = config.get("id2label") or {}
        count = state["classifier.weight"].shape[0] if "classifier.weight" in state else len(id2label)
        return [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(count)], "token_classification"
    if "BertForSequenceClassification" not in architectures and "classifier.weight" not in state:
        return None, None
    count = state["classifier.weight"].shape[0] if "classifier.weight" in state else int(config.get("num_labels", 2))
    id2label = config.get("id2label") or {}
    labels = [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(count)]
    problem_type = config.get("problem_type") or ("regression" if count == 1 else "single_label_classification")
    if problem_type not in ("regression", "single_label_classification"):
        raise UserError(f"{path}: problem_type {problem_type!r} is not supported (single_label_classification or "
                        f"regression)")
    return labels, problem_type


# settings of a run that are not its architecture: the new run's own
NOT_ARCHITECTURE = ("dropout", "init_std", "zero_position_init", "pooling", "labels", "problem_type")


def own_run(folder: Path) -> Pretrained:
    """This project's training output folder: its newest checkpoint's architecture and weights (heads
    included) and the run's tokenizer, e.g. to follow masked-LM pretraining with the contrastive stage."""
    from pipeline import checkpoint

    path = checkpoint.latest(folder)
    if path is None:
        raise UserError(f"{folder}/checkpoints holds no checkpoint to start from")
    ckpt = checkpoint.load(path)
    model = {k: v for k, v in ckpt.config.model.__dict__.items() if k not in NOT_ARCHITECTURE}
    tokenizer = load_tokenizer(folder, Vocab.load(folder / VOCAB))
    m = ckpt.config.model
    return Pretrained(path, model, ckpt.model_state, [], tokenizer, labels=m.labels, problem_type=m.problem_type)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} is missing: a Hugging Face BERT folder is needed") from None
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
    tokens = vocab_file.read_text(encoding="utf-8").splitlines()
    backend = wordpiece_backend({t: i for i, t in enumerate(tokens)}, specials.unk, config.get("do_lower_case", True),
                                config.get("strip_accents"), config.get("tokenize_chinese_chars", True))
    backend.add_special_tokens(list(specials.strings()))  # "[MASK]" in a text is the mask token
    try:
        return WordPieceTokenizer(backend, specials)
    except ValueError as err:
        raise UserError(f"{vocab_file}: {err}") from None


def complete_state(pretrained: Pretrained, fresh_model_state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The imported weights, with the freshly initialised values for the parameters the folder lacks."""
    return {**{k: fresh_model_state[k] for k in pretrained.fresh}, **pretrained.state}
