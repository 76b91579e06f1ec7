"""Typed settings (model / data / train), loaded from YAML with `-o section.key=value` overrides.

One source of truth: every setting and its default lives in a dataclass field below; a YAML file (`-c`)
lists only what it changes, and it, command-line overrides (`-o`, values parsed as YAML scalars) and
every other source (flags, a published folder, the vocabulary) go through the same setter and
cross-checks. A Config is frozen: a changed one is a new one (`with_settings`).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.errors import UserError
from pipeline.core.export_format import POOLINGS
from pipeline.core.files import read_utf8, write_text_atomic

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "bert_tiny.yaml"
BASE_KEY = "_BASE_"  # a config file's list of the files it builds on
SECTIONS = ("model", "data", "train")
SPLITS = ("train", "valid", "test")


def setting(default: Any, help: str, choices: tuple | None = None, at_least: float | None = None,
            above: float | None = None, below: float | None = None, at_most: float | None = None) -> Any:
    """A dataclass field that carries its own rules: allowed values or bounds, and a one-line help."""
    rules = {"help": help, "choices": choices, "at_least": at_least, "above": above, "below": below,
             "at_most": at_most}
    return field(default=default, metadata={k: v for k, v in rules.items() if v is not None})


@dataclass(frozen=True)
class ModelConfig:
    """Architecture; `vocab_size` is filled in from the vocabulary at training time."""

    vocab_size: int = setting(0, "set from the vocabulary", at_least=0)
    hidden_size: int = setting(128, "width of every token vector", at_least=1)
    num_layers: int = setting(2, "Transformer blocks", at_least=1)
    num_heads: int = setting(2, "attention heads (divide hidden_size)", at_least=1)
    ffn_size: int = setting(256, "feed-forward width", at_least=1)
    dropout: float = setting(0.1, "dropout after attention and feed-forward", at_least=0.0, below=1.0)
    max_position: int = setting(512, "longest input the position table holds", at_least=5, at_most=65536)
    activation: str = setting("gelu", "feed-forward activation", choices=("relu", "gelu"))
    init_std: float = setting(0.02, "BERT's truncated normal for weights; 0 = Paddle's defaults (the seed)",
                              at_least=0.0)
    zero_position_init: bool = setting(False, "position and segment embeddings start at zero instead of init_std's "
                                              "normal (then learned): a sentence vector starts as the bag of its "
                                              "tokens, not blurred by where each sits (configs/bert_vectors.yaml)")
    layer_norm_eps: float = setting(1e-12, "LayerNorm epsilon (BERT 1e-12, Paddle 1e-5)", above=0.0)
    tie_word_embeddings: bool = setting(False, "the MLM output layer reuses the word embeddings (BERT)")
    norm: str = setting("post", "post: LayerNorm after each residual add (BERT); pre: before each block, with a "
                                "final LayerNorm (cramming, academic-budget BERT)", choices=("post", "pre"))
    linear_bias: bool = setting(False, "biases in the encoder's linear layers (attention, feed-forward), as in BERT; "
                                       "false: none (cramming)")
    gated: bool = setting(False, "gated feed-forward (GLU): activation(x W1) * (x V), then W2 (cramming's gated "
                                 "GELU with model.activation=gelu)")
    labels: list[str] | None = setting(None, "classify / tag: the classes (or tags) in id order (one for a "
                                             "regression or a reranker), set from data.labels or the --init-from "
                                             "folder")
    problem_type: str | None = setting(None, "classify: single_label_classification or regression (one output, "
                                             "mean squared error); tag: token_classification; set from the labels",
                                       choices=(None, "single_label_classification", "regression",
                                                "token_classification"))
    pooling: str = setting("cls", "how token vectors become one embedding: <cls>'s vector, or the mean or "
                                  "element-wise max of every token's, or (weighted) their mean weighted by a weight "
                                  "per vocabulary token, learned by the contrastive stage from SIF's a / (a + p) "
                                  "(contrastive training and the export use it)",
                           choices=POOLINGS)


@dataclass(frozen=True)
class DataConfig:
    """Where the corpus is and how pretraining examples are made from it."""

    data_dir: str | None = setting(None, "folder or zip with wiki.*.tokens; none = download WikiText-2")
    corpus: list[str] | None = setting(None, "your own text instead: files, folders (*.txt, *.md) or globs")
    prepared: str | None = setting(None, "a folder made by pipeline/prepare.py (memory-mapped) instead")
    eval_corpus: list[str] | None = setting(None, "held-out text of your own, evaluated at the end")
    tokenizer: str = setting("whitespace", "whitespace (the seed's words) or wordpiece (trained on the corpus)",
                             choices=("whitespace", "wordpiece"))
    vocab_size: int = setting(8000, "WordPiece vocabulary size, special tokens included", at_least=64)
    tokenizer_sample_mb: float = setting(64.0, "WordPiece: learn the vocabulary from this many MB of the corpus, "
                                               "sampled (0 = all of it)", at_least=0.0)
    lowercase: bool = setting(True, "WordPiece: lower-case and strip accents first")
    whole_word_mask: bool = setting(False, "mask every piece of a chosen word together (WordPiece)")
    split: str = setting("train", "split to train on", choices=SPLITS)
    eval_split: str | None = setting(None, "split to evaluate on at the end", choices=(None, *SPLITS))
    max_len: int = setting(64, "tokens per sentence pair, with <cls>/<sep>", at_least=5)
    min_freq: int = setting(5, "words seen fewer times become <unk>", at_least=1)
    mask_prob: float = setting(0.4, "share of tokens to predict in training (held-out figures always use 0.15)",
                               above=0.0, below=1.0)
    mask_replace: bool = setting(True, "80/10/10: of the chosen tokens 80% masked, 10% random, 10% kept; false: "
                                       "all masked")
    dynamic_masking: bool = setting(True, "new masks every epoch (false: the seed's fixed masks)")
    pairs: str | None = setting(None, "train.positives=pairs: a file of anchor<TAB>positive[<TAB>hard negative] "
                                      "lines")
    labels: str | None = setting(None, "classify: the labelled training file (TSV/CSV with a header: text or "
                                       "sentence1, optional text_pair or sentence2, label; or JSON Lines); tag: the "
                                       "tagged one (CoNLL columns, or JSON Lines of tokens and tags)")
    eval_labels: str | None = setting(None, "classify / tag: the labelled dev file, evaluated every "
                                            "train.eval_every steps and at the end (the best checkpoint is kept)")
    cache_dir: str | None = setting(None, "prepared-example cache; none = ~/.cache/paddle-bert-pipeline")
    seed: int = setting(0, "pairs, masks and order")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, logging and checkpointing."""

    output_dir: str = setting("output", "config, vocab, metrics, loss.png, checkpoints")
    steps: int = setting(700, "optimizer steps", at_least=1)
    batch_size: int = setting(64, "sentence pairs per step, all ranks together", at_least=1)
    optimizer: str = setting("adamw", "adam (the seed) or adamw", choices=("adam", "adamw"))
    lr: float = setting(2e-3, "peak learning rate", above=0.0)
    weight_decay: float = setting(0.01, "AdamW decay (not on biases and LayerNorm)", at_least=0.0)
    warmup_steps: int = setting(70, "linear warm-up from 0", at_least=0)
    lr_decay: str = setting("linear", "after warm-up: none or linear to 0 (at train.decay_to)",
                            choices=("none", "linear"))
    decay_to: str = setting("steps", "where the linear decay reaches 0: at train.steps, or at train.max_minutes of "
                                     "training time (the time budget: warm-up, then min(warm-up, 1 - time / budget))",
                            choices=("steps", "max_minutes"))
    batch_ramp_steps: int = setting(0, "grow the batch linearly from a quarter of train.batch_size to all of it over "
                                       "these first steps (0 = off)", at_least=0)
    beta2: float = setting(0.999, "Adam's second-moment decay (cramming: 0.98)", above=0.0, below=1.0)
    grad_clip: float = setting(0.0, "clip the global gradient norm; 0 = off", at_least=0.0)
    nsp: bool = setting(True, "train next sentence prediction (the seed's); false: masked LM only")
    accumulate_steps: int = setting(1, "micro-batches per step", at_least=1)
    amp: str = setting("none", "mixed precision (GPU only)", choices=("none", "fp16", "bf16"))
    objective: str = setting("mlm", "mlm: masked LM + next sentence (pretraining); contrastive: sentence vectors "
                                    "with in-batch negatives (after mlm, with --init-from); classify: fine-tune "
                                    "on data.labels (classes, pairs or scores); tag: a label per word (entities)",
                             choices=("mlm", "contrastive", "classify", "tag"))
    positives: str = setting("crops", "contrastive positives: crops (two spans of one document, Contriever), "
                                      "dropout (one sentence twice, SimCSE) or pairs (data.pairs)",
                             choices=("crops", "dropout", "pairs"))
    temperature: float = setting(0.05, "contrastive: softmax temperature of the cosine similarities", above=0.0)
    init_from: str | None = setting(None, "a Hugging Face BERT folder to start from: its model settings, weights "
                                          "and tokenizer (continued pretraining)")
    to_static: bool = setting(True, "static graph (false: dygraph)")
    dropout_masks: str = setting("auto", "auto: drawn by the data pipeline on CPU (~10x cheaper), Paddle's dropout "
                                         "on GPU; paddle: Paddle's dropout everywhere (the GPU graph, also on CPU)",
                                 choices=("auto", "data", "paddle"))
    threads: int = setting(0, "CPU threads per process; 0 = its share of the cores", at_least=0)
    max_minutes: float = setting(0.0, "end the run (with a checkpoint) after this much training time, resumes "
                                      "included; 0 = no limit", at_least=0.0)
    stall_minutes: float = setting(10.0, "several ranks: end a rank when no step has finished for this long (a peer "
                                         "died or hangs on another node; rerun with --resume auto); 0 = never",
                                   at_least=0.0)
    eval_every: int = setting(0, "classify: steps between dev evaluations (data.eval_labels); 0 = at the end only",
                              at_least=0)
    patience: int = setting(0, "classify: stop after this many dev evaluations without a better metric; 0 = never",
                            at_least=0)
    log_every: int = setting(100, "steps between progress lines", at_least=1)
    save_every: int = setting(0, "steps between checkpoints; 0 = at the end only", at_least=0)
    keep_checkpoints: int = setting(3, "newest checkpoints kept", at_least=1)
    seed: int = setting(0, "initial weights and dropout")


@dataclass(frozen=True)
class Config:
    """The whole run: model, data and train sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


def _section_fields(section: str) -> dict[str, tuple[dataclasses.Field, Any]]:
    """{name: (field, type)} of one section, types resolved with typing.get_type_hints."""
    cls = type(getattr(Config(), section))
    hints = typing.get_type_hints(cls)
    return {f.name: (f, hints[f.name]) for f in dataclasses.fields(cls)}


def _check_type(where: str, value: Any, annotation: Any) -> Any:
    """Return `value` converted to the type `annotation` (T or T | None), or raise UserError."""
    allowed = typing.get_args(annotation) or (annotation,)
    if value is None and type(None) in allowed:
        return None
    kind = next(t for t in allowed if t is not type(None))
    if typing.get_origin(kind) is list:  # a list of strings; one string is a list of one
        items = [value] if isinstance(value, str) else value
        if isinstance(items, list) and items and all(isinstance(v, str) for v in items):
            return list(items)
        raise UserError(f"setting {where} must be a list of paths, got {value!r}")
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    names = " | ".join("None" if t is type(None) else getattr(t, "__name__", str(t)) for t in allowed)
    raise UserError(f"setting {where} must be {names}, got {value!r}")


def _check_rules(where: str, value: Any, rules: typing.Mapping[str, Any]) -> None:
    """The field's own choices and bounds."""
    choices = rules.get("choices")
    if choices is not None and value not in choices:
        raise UserError(f"setting {where} must be one of {[c for c in choices if c is not None]}, got {value!r}")
    if value is None or isinstance(value, (str, bool, list)):
        return
    bounds = [("at_least", lambda b: value >= b, "at least"), ("above", lambda b: value > b, "above"),
              ("below", lambda b: value < b, "below"), ("at_most", lambda b: value <= b, "at most")]
    for name, holds, words in bounds:
        if name in rules and not holds(rules[name]):
            raise UserError(f"setting {where} must be {words} {rules[name]:g}, got {value}")


Values = dict[str, dict[str, Any]]  # {section: {key: value}}, each value already checked


def _set(values: Values, section: str, key: str, value: Any) -> None:
    """Check one setting (known, of its field's type, within its rules) and record it in `values`."""
    where = f"{section}.{key}"
    if section not in SECTIONS:
        raise UserError(f"unknown config section {section!r} in {where} (known: {', '.join(SECTIONS)})")
    fields = _section_fields(section)
    if key not in fields:
        raise UserError(f"unknown setting {where} (known in {section}: {', '.join(fields)})")
    f, annotation = fields[key]
    value = _check_type(where, value, annotation)
    _check_rules(where, value, f.metadata)
    values.setdefault(section, {})[key] = value


def _set_all(values: Values, settings: typing.Mapping[str, Any]) -> None:
    for name, value in settings.items():
        section, _, key = name.partition(".")
        _set(values, section, key, value)


def _build(values: Values) -> Config:
    """The frozen Config of `values` (the rest at their defaults), cross-checked."""
    cfg = Config(ModelConfig(**values.get("model", {})), DataConfig(**values.get("data", {})),
                 TrainConfig(**values.get("train", {})))
    _check_together(cfg)
    return cfg


def with_settings(cfg: Config, settings: typing.Mapping[str, Any]) -> Config:
    """A new Config: `cfg` with `settings` ({"section.key": value}) through the same setter and cross-checks."""
    values = cfg.to_dict()
    _set_all(values, settings)
    return _build(values)


def _check_together(cfg: Config) -> None:
    """Rules that tie two settings together (each setting's own rules are checked as it is set)."""
    if cfg.model.hidden_size % cfg.model.num_heads:
        raise UserError(f"setting model.hidden_size ({cfg.model.hidden_size}) must be divisible "
                        f"by model.num_heads ({cfg.model.num_heads})")
    if cfg.data.whole_word_mask and cfg.data.tokenizer != "wordpiece":
        raise UserError("setting data.whole_word_mask needs data.tokenizer=wordpiece (whitespace tokens are words)")
    if cfg.train.decay_to == "max_minutes" and not cfg.train.max_minutes:
        raise UserError("setting train.decay_to=max_minutes needs a time budget: set train.max_minutes")
    if cfg.train.decay_to == "max_minutes" and cfg.train.lr_decay != "linear":
        raise UserError("setting train.decay_to=max_minutes needs train.lr_decay=linear (it says where that decay ends)")
    contrastive = cfg.train.objective == "contrastive"
    if (cfg.train.positives == "pairs" and contrastive) != bool(cfg.data.pairs):
        raise UserError("setting data.pairs goes with train.objective=contrastive and train.positives=pairs, "
                        "and they need it")
    if contrastive and cfg.train.accumulate_steps > 1:
        raise UserError("train.objective=contrastive takes no train.accumulate_steps: in-batch negatives need the "
                        "whole batch in one pass (raise train.batch_size or use more ranks)")
    if cfg.train.objective != "mlm" and cfg.train.batch_ramp_steps:
        raise UserError(f"train.objective={cfg.train.objective} takes no train.batch_ramp_steps")
    objective = cfg.train.objective
    fine_tuning = objective in ("classify", "tag")
    if fine_tuning != bool(cfg.data.labels):
        raise UserError(f"train.objective={objective} needs data.labels (a labelled file: -o data.labels=train.tsv), "
                        f"and data.labels goes with train.objective=classify or tag" if fine_tuning else
                        "data.labels goes with train.objective=classify or tag")
    if cfg.data.eval_labels and not fine_tuning:
        raise UserError("data.eval_labels goes with train.objective=classify or tag")
    if (cfg.train.eval_every or cfg.train.patience) and not cfg.data.eval_labels:
        raise UserError("train.eval_every and train.patience need a dev file: set data.eval_labels")
    if fine_tuning and cfg.train.accumulate_steps > 1:
        raise UserError(f"train.objective={objective} takes no train.accumulate_steps (raise train.batch_size instead)")
    if fine_tuning and cfg.model.pooling == "weighted":
        raise UserError(f"train.objective={objective} takes no model.pooling=weighted (it trains no token weights)")
    if cfg.data.max_len > cfg.model.max_position:
        raise UserError(f"setting data.max_len ({cfg.data.max_len}) exceeds model.max_position "
                        f"({cfg.model.max_position})")


def settings_table() -> str:
    """The README's settings table, made from the fields themselves."""
    rows = ["| setting | default | allowed | what it does |", "| --- | --- | --- | --- |"]
    for section in SECTIONS:
        for name, (f, _) in _section_fields(section).items():
            rules = f.metadata
            if "choices" in rules:
                allowed = " / ".join("none" if c is None else str(c) for c in rules["choices"])
            else:
                parts = [f"{words} {rules[k]:g}" for k, words in
                         (("at_least", ">="), ("above", ">"), ("below", "<"), ("at_most", "<=")) if k in rules]
                allowed = ", ".join(parts)
            default = "none" if f.default is None else str(f.default).lower() if isinstance(f.default, bool) \
                else f"{f.default:g}" if isinstance(f.default, float) else str(f.default)
            rows.append(f"| `{section}.{name}` | {default} | {allowed} | {rules['help']} |")
    return "\n".join(rows)


def parse_override(text: str) -> tuple[str, str, Any]:
    """Split `section.key=value` into its parts; the value is parsed as a YAML scalar."""
    name, sep, raw = text.partition("=")
    section, dot, key = name.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise UserError(f"override {text!r} must look like section.key=value (e.g. train.lr=1e-4)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _looks_like_float(value):
        value = float(value)  # YAML 1.1 reads "1e-4" as a string
    return section, key, value


def _looks_like_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return any(c.isdigit() for c in text)


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = (),
                settings: typing.Mapping[str, Any] | None = None) -> Config:
    """Load `path` (default: configs/bert_tiny.yaml) over the files its `_BASE_` list names, then apply
    `section.key=value` overrides (values read as YAML), then `settings` ({"section.key": value}, values
    taken as they are)."""
    values: Values = {}
    _read_config_file(Path(path) if path is not None else DEFAULT_CONFIG, values, ())
    for text in overrides:
        _set(values, *parse_override(text))
    _set_all(values, settings or {})
    return _build(values)


def yaml_problem(err: yaml.YAMLError) -> str:
    """What the YAML parser found wrong, and where (line and column, counted from 1)."""
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    mark = getattr(err, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem


def _read_config_file(path: Path, values: Values, reading: tuple[Path, ...]) -> None:
    """Set `values` from `path`: first from each file of its `_BASE_` list (paths relative to it, in order, as
    PaddleDetection's configs name theirs), then from its own sections, which win."""
    if path.resolve() in reading:
        raise UserError(f"config file {path} names itself among its _BASE_ files (through "
                        f"{' -> '.join(p.name for p in reading)})")
    try:
        raw = yaml.safe_load(read_utf8(path)) or {}
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except yaml.YAMLError as err:
        raise UserError(f"config file {path} is not valid YAML: {yaml_problem(err)}") from None
    except OSError as err:
        raise UserError(f"cannot read config file {path}: {err.strerror or err}") from None
    if not isinstance(raw, dict):
        raise UserError(f"config file {path} must hold sections model/data/train")
    bases = raw.pop(BASE_KEY, [])
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise UserError(f"{BASE_KEY} in {path} must be a list of config files, e.g. {BASE_KEY}: [bert_tiny.yaml]")
    for base in bases:
        _read_config_file(path.parent / base, values, (*reading, path.resolve()))
    for section, given in raw.items():
        if not isinstance(given, dict):
            raise UserError(f"section {section!r} of {path} must be a mapping")
        for key, value in given.items():
            _set(values, str(section), str(key), value)


# the value a saved config (a checkpoint's config.json) without the setting was made with
BEFORE_THE_SETTING = {"model": {"linear_bias": True}}


def config_from_dict(raw: dict[str, dict[str, Any]]) -> Config:
    """Rebuild a Config from `Config.to_dict()` output (e.g. a checkpoint's config.json); a setting newer
    than the checkpoint gets the value the checkpoint was made with (BEFORE_THE_SETTING)."""
    values: Values = {}
    for source in (BEFORE_THE_SETTING, raw):
        for section, given in source.items():
            for key, value in given.items():
                _set(values, section, key, value)
    return _build(values)


def diff_configs(a: Config, b: Config, sections: typing.Iterable[str] = ("model",)) -> list[str]:
    """Names of the settings that differ between `a` and `b` in the given sections."""
    da, db = a.to_dict(), b.to_dict()
    return [f"{s}.{k}" for s in sections for k in da[s] if da[s][k] != db[s][k]]


def config_yaml(cfg: Config) -> str:
    """Every setting of `cfg` as YAML, in the dataclasses' order (what config.yaml holds)."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def save_config(cfg: Config, path: Path) -> None:
    write_text_atomic(path, config_yaml(cfg))
