"""Checkpoints without pickle: safetensors for tensors, JSON for the rest, written atomically.

Layout of `<output>/checkpoints/`:
    step_N/model.safetensors      model weights, keyed by structured names (encoder.layers.0....)
    step_N/optimizer.safetensors  optimizer state, keyed "<structured name>::<slot>"
    step_N/state.json             step, config, scheduler state, SHA-256 of both files
    latest                        the name of the newest complete checkpoint, updated last
    best.json                     fine-tuning: the checkpoint with the best dev metric, kept by pruning
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from pipeline.config import Config, config_from_dict, diff_configs
from pipeline.core.errors import UserError
from pipeline.core.files import atomic_folder, file_digest, write_text_atomic

MODEL_FILE, OPTIMIZER_FILE, STATE_FILE, LATEST = "model.safetensors", "optimizer.safetensors", "state.json", "latest"
BEST = "best.json"


@dataclass
class Checkpoint:
    """A checkpoint read fully into memory and verified; nothing is applied until it is."""

    path: Path
    step: int
    config: Config
    model_state: dict[str, np.ndarray]
    optimizer_state: dict[str, np.ndarray]
    extra: dict[str, Any]


def optimizer_state_by_name(optimizer, named_parameters: list[tuple[str, Any]]) -> dict[str, np.ndarray]:
    """The optimizer's tensors keyed by structured parameter name instead of Paddle's generated one."""
    generated_to_name = {p.name: name for name, p in named_parameters}
    out = {}
    for key, value in optimizer.state_dict().items():
        if not hasattr(value, "numpy"):
            continue  # scheduler state: kept in state.json
        for generated, name in generated_to_name.items():
            if key.startswith(generated + "_"):
                out[f"{name}::{key[len(generated) + 1:]}"] = value.numpy()
                break
        else:
            out[f"::{key}"] = value.numpy()
    return out


def optimizer_state_for(named_parameters: list[tuple[str, Any]], saved: dict[str, np.ndarray]) -> dict[str, Any]:
    """Inverse of optimizer_state_by_name for this process's parameters (as paddle Tensors)."""
    import paddle

    name_to_generated = {name: p.name for name, p in named_parameters}
    out = {}
    for key, value in saved.items():
        name, _, slot = key.partition("::")
        prefix = name_to_generated.get(name) if name else None
        if name and prefix is None:
            raise UserError(f"optimizer state names an unknown parameter {name!r}")
        out[f"{prefix}_{slot}" if name else slot] = paddle.to_tensor(value)
    return out


def save(output_dir: Path, step: int, config: Config, model_state: dict[str, np.ndarray],
         optimizer_state: dict[str, np.ndarray], extra: dict[str, Any], keep: int) -> Path:
    """Write checkpoint `step_<step>` through a temporary folder, then point `latest` at it."""
    root = output_dir / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step}"
    try:
        with atomic_folder(final) as tmp:
            save_file(model_state, str(tmp / MODEL_FILE), metadata={"step": str(step)})
            save_file(optimizer_state, str(tmp / OPTIMIZER_FILE), metadata={"step": str(step)})
            state = {"step": step, "config": config.to_dict(),
                     "sha256": {f: file_digest(tmp / f) for f in (MODEL_FILE, OPTIMIZER_FILE)}, **extra}
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=1), encoding="utf-8")
        write_text_atomic(root / LATEST, final.name + "\n")
    except OSError as err:  # a full disk, a read-only folder: what was there stays as it was
        previous = latest(output_dir)
        raise UserError(f"cannot write checkpoint {final} ({err.strerror or err}); the newest complete "
                        f"checkpoint is {previous or 'none'}") from None
    _prune(root, keep)
    return final


def _prune(root: Path, keep: int) -> None:
    """Keep the newest `keep` checkpoints; clear temporaries a killed run left (one writer per folder,
    held by the training lock, so none of them is being written now)."""
    steps = sorted((int(p.name.split("_")[1]), p) for p in root.glob("step_*") if p.name.split("_")[1].isdigit())
    kept = best(root.parent)
    for _, path in steps[:-keep]:
        if path != kept:
            shutil.rmtree(path, ignore_errors=True)
    for stale in root.glob(".step_*"):
        shutil.rmtree(stale, ignore_errors=True)


def latest(output_dir: Path) -> Path | None:
    """The newest complete checkpoint under `output_dir`, or None."""
    root = Path(output_dir) / "checkpoints"
    try:
        name = (root / LATEST).read_text().strip()
    except OSError:
        return None
    path = root / name
    return path if path.is_dir() else None


def mark_best(output_dir: Path, checkpoint_path: Path, metric: str, value: float) -> None:
    """Name `checkpoint_path` as the best by `metric` (fine-tuning's dev evaluation)."""
    record = {"checkpoint": checkpoint_path.name, "metric": metric, "value": value}
    write_text_atomic(Path(output_dir) / "checkpoints" / BEST, json.dumps(record) + "\n")


def best(output_dir: Path) -> Path | None:
    """The checkpoint `mark_best` named under `output_dir`, or None (no dev evaluation, or it is gone)."""
    root = Path(output_dir) / "checkpoints"
    try:
        path = root / json.loads((root / BEST).read_text(encoding="utf-8"))["checkpoint"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return path if path.is_dir() else None


def load(path: Path) -> Checkpoint:
    """Read and verify a checkpoint folder; a damaged one raises UserError naming it."""
    path = Path(path)
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
        for name, expected in state["sha256"].items():
            if file_digest(path / name) != expected:
                raise UserError(f"checkpoint {path} is corrupt: {name} does not match its recorded SHA-256")
        model_state = load_file(str(path / MODEL_FILE))
        optimizer_state = load_file(str(path / OPTIMIZER_FILE))
        config = config_from_dict(state["config"])
        step = int(state["step"])
    except FileNotFoundError as err:
        raise UserError(f"checkpoint {path} is incomplete: {Path(err.filename).name} is missing") from None
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as err:
        raise UserError(f"checkpoint {path} is corrupt or unreadable ({err})") from None
    extra = {k: v for k, v in state.items() if k not in ("step", "config", "sha256")}
    return Checkpoint(path, step, config, model_state, optimizer_state, extra)


def check_compatible(checkpoint: Checkpoint, config: Config) -> None:
    """Refuse a checkpoint whose model settings differ from `config`, naming the keys."""
    differing = diff_configs(checkpoint.config, config, ("model",))
    if checkpoint.config.data.max_len != config.data.max_len:
        differing.append("data.max_len")
    if differing:
        raise UserError(f"checkpoint {checkpoint.path} was made with other settings: {', '.join(differing)} differ")


def apply_model_state(model, state: dict[str, np.ndarray], source: Path) -> None:
    """Load weights into `model` only if every name and shape matches (never half-load)."""
    import paddle

    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [k for k in own if k in state and list(own[k].shape) != list(state[k].shape)]
    if missing or unexpected or wrong:
        detail = (f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}" if unexpected
                  else f"shape differs for {wrong[:3]}")
        raise UserError(f"checkpoint {source} does not fit this model ({detail})")
    model.set_state_dict({k: paddle.to_tensor(v) for k, v in state.items()})
