"""Typed settings (model / data / train), loaded from YAML with `-o section.key=value` overrides.

One source of truth: every setting lives in a dataclass field below; a YAML file (`-c`) and
command-line overrides (`-o`, values parsed as YAML scalars) may only set fields that exist,
with values of the field's type.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import UserError
from pipeline.files import write_text_atomic

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "bert_tiny.yaml"


@dataclass
class ModelConfig:
    """Architecture; `vocab_size` is filled in from the vocabulary at training time."""

    vocab_size: int = 0
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    ffn_size: int = 256
    dropout: float = 0.2
    max_position: int = 512
    activation: str = "relu"
    init_std: float = 0.02  # BERT's truncated normal; 0 = Paddle's default initialisers (the seed)
    layer_norm_eps: float = 1e-12
    tie_word_embeddings: bool = False  # the MLM output layer reuses the word embeddings (BERT); the seed: no


@dataclass
class DataConfig:
    """Where the corpus is and how pretraining examples are made from it."""

    data_dir: str | None = None
    split: str = "train"
    eval_split: str | None = None
    max_len: int = 64
    min_freq: int = 5
    mask_prob: float = 0.15
    dynamic_masking: bool = True
    cache_dir: str | None = None
    seed: int = 0


@dataclass
class TrainConfig:
    """Optimisation, logging and checkpointing."""

    output_dir: str = "output"
    steps: int = 50
    batch_size: int = 512
    optimizer: str = "adam"
    lr: float = 0.01
    weight_decay: float = 0.0
    warmup_steps: int = 0
    lr_decay: str = "none"
    grad_clip: float = 0.0
    accumulate_steps: int = 1
    amp: str = "none"
    to_static: bool = True
    threads: int = 0
    max_minutes: float = 0.0  # stop (finished, with a checkpoint) after this much training time; 0 = no limit
    log_every: int = 10
    save_every: int = 0
    keep_checkpoints: int = 3
    seed: int = 0


@dataclass
class Config:
    """The whole run: model, data and train sections."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def model_hash(self) -> str:
        """Hash of what a checkpoint's weights depend on (model and example shapes)."""
        key = {"model": dataclasses.asdict(self.model), "max_len": self.data.max_len}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


CHOICES = {
    ("model", "activation"): ("relu", "gelu"),
    ("data", "split"): ("train", "valid", "test"),
    ("data", "eval_split"): (None, "train", "valid", "test"),
    ("train", "optimizer"): ("adam", "adamw"),
    ("train", "lr_decay"): ("none", "linear"),
    ("train", "amp"): ("none", "fp16", "bf16"),
}


def _check_type(where: str, value: Any, annotation: str) -> Any:
    """Return `value` converted to the field type named by `annotation`, or raise UserError."""
    allowed = [a.strip() for a in annotation.split("|")]
    if value is None and "None" in allowed:
        return None
    if "bool" in allowed:
        if isinstance(value, bool):
            return value
    elif "int" in allowed:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif "float" in allowed:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif "str" in allowed:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
    raise UserError(f"setting {where} must be {annotation}, got {value!r}")


def _set(cfg: Config, section: str, key: str, value: Any) -> None:
    where = f"{section}.{key}"
    sub = getattr(cfg, section, None)
    if not dataclasses.is_dataclass(sub) or section not in ("model", "data", "train"):
        raise UserError(f"unknown config section {section!r} in {where} (known: model, data, train)")
    fields = {f.name: f for f in dataclasses.fields(sub)}
    if key not in fields:
        raise UserError(f"unknown setting {where} (known in {section}: {', '.join(fields)})")
    value = _check_type(where, value, str(fields[key].type))
    choices = CHOICES.get((section, key))
    if choices is not None and value not in choices:
        raise UserError(f"setting {where} must be one of {[c for c in choices if c]}, got {value!r}")
    setattr(sub, key, value)


def _check_ranges(cfg: Config) -> None:
    positive = {
        "model.hidden_size": cfg.model.hidden_size, "model.num_layers": cfg.model.num_layers,
        "model.num_heads": cfg.model.num_heads, "model.ffn_size": cfg.model.ffn_size,
        "train.batch_size": cfg.train.batch_size, "train.steps": cfg.train.steps,
        "train.accumulate_steps": cfg.train.accumulate_steps, "train.log_every": cfg.train.log_every,
        "train.keep_checkpoints": cfg.train.keep_checkpoints, "data.min_freq": cfg.data.min_freq,
    }
    for name, value in positive.items():
        if value < 1:
            raise UserError(f"setting {name} must be at least 1, got {value}")
    if cfg.model.hidden_size % cfg.model.num_heads:
        raise UserError(f"setting model.hidden_size ({cfg.model.hidden_size}) must be divisible "
                        f"by model.num_heads ({cfg.model.num_heads})")
    if not 0.0 <= cfg.model.dropout < 1.0:
        raise UserError(f"setting model.dropout must be in [0, 1), got {cfg.model.dropout}")
    if not 0.0 < cfg.data.mask_prob < 1.0:
        raise UserError(f"setting data.mask_prob must be in (0, 1), got {cfg.data.mask_prob}")
    if cfg.data.max_len < 5:
        raise UserError(f"setting data.max_len must be at least 5 (room for <cls> a <sep> b <sep>), "
                        f"got {cfg.data.max_len}")
    if cfg.data.max_len > cfg.model.max_position:
        raise UserError(f"setting data.max_len ({cfg.data.max_len}) exceeds model.max_position "
                        f"({cfg.model.max_position})")
    if cfg.train.lr <= 0:
        raise UserError(f"setting train.lr must be positive, got {cfg.train.lr}")
    if cfg.train.max_minutes < 0:
        raise UserError(f"setting train.max_minutes must be 0 (no limit) or positive, got {cfg.train.max_minutes}")
    if cfg.model.init_std < 0:
        raise UserError(f"setting model.init_std must be 0 (Paddle's defaults) or positive, got {cfg.model.init_std}")
    if cfg.model.layer_norm_eps <= 0:
        raise UserError(f"setting model.layer_norm_eps must be positive, got {cfg.model.layer_norm_eps}")


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
    """Load `path` (default: configs/bert_tiny.yaml), then apply `section.key=value` overrides (values
    read as YAML), then `settings` ({"section.key": value}, values taken as they are)."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UserError(f"cannot read config file {path}: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise UserError(f"config file {path} must hold sections model/data/train")
    cfg = Config()
    for section, values in raw.items():
        if not isinstance(values, dict):
            raise UserError(f"section {section!r} of {path} must be a mapping")
        for key, value in values.items():
            _set(cfg, str(section), str(key), value)
    for text in overrides:
        _set(cfg, *parse_override(text))
    for name, value in (settings or {}).items():
        section, _, key = name.partition(".")
        _set(cfg, section, key, value)
    _check_ranges(cfg)
    return cfg


def config_from_dict(raw: dict[str, dict[str, Any]]) -> Config:
    """Rebuild a Config from `Config.to_dict()` output (e.g. a checkpoint's config.json)."""
    cfg = Config()
    for section, values in raw.items():
        for key, value in values.items():
            _set(cfg, section, key, value)
    return cfg


def diff_configs(a: Config, b: Config, sections: typing.Iterable[str] = ("model",)) -> list[str]:
    """Names of the settings that differ between `a` and `b` in the given sections."""
    da, db = a.to_dict(), b.to_dict()
    return [f"{s}.{k}" for s in sections for k in da[s] if da[s][k] != db[s][k]]


def save_config(cfg: Config, path: Path) -> None:
    write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
