"""The training objectives, one entry each (as PaddleNLP's MODEL_CLASSES maps a name to its parts): what data
it reads, the step layer it trains and its losses, what a step counts, and what its export's program outputs.
The trainer, train.py and export/save.py look an objective up here instead of branching on its name.

    mlm          masked LM + next sentence prediction (pretraining)
    contrastive  sentence vectors with in-batch negatives (pipeline/contrastive.py)
    classify     fine-tuning on labelled texts, pairs or scores (pipeline/classify.py)
    tag          a label per word: named entities and other sequence labels (pipeline/tag.py)
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np
import paddle

from pipeline.classify import DevEvaluation
from pipeline.config import Config
from pipeline.contrastive import contrastive_loss, sif_log_weights
from pipeline.core.errors import UserError
from pipeline.data.batches import compact_predictions
from pipeline.data.labelled import LabelSpace, read_labelled
from pipeline.data.sources import (
    classify_training_data,
    contrastive_training_data,
    tagging_training_data,
    training_data,
)
from pipeline.data.tagged import read_tagged
from pipeline.model import (
    ClassifyStep,
    EmbeddingStep,
    PretrainingStep,
    SequenceClassifier,
    TagStep,
    TokenClassifier,
    classify_input_spec,
    encoder_input_spec,
    step_input_spec,
    tag_input_spec,
)
from pipeline.tag import TagEvaluation

if TYPE_CHECKING:
    from pipeline.trainer import Trainer


@dataclass(frozen=True)
class Objective:
    """One objective's parts."""

    name: str
    losses: tuple[str, ...]  # its losses by name, in the order `train_pass` returns them
    unit: str  # what a global batch's rows are, for the rate line ("sentence pairs/sec")
    data: Callable  # (cfg, output, resume, given tokenizer) -> (tokenizer, data)
    build_step: Callable[["Trainer"], tuple[paddle.nn.Layer, list]]  # -> (step layer, its InputSpecs)
    train_pass: Callable[["Trainer", dict, object], list[float]]  # forward + backward of one step -> losses
    summary: Callable[[Config, dict, int], str]  # (cfg, mean losses, steps) -> the run's loss line
    evaluation: Callable[[Config, object], object] | None  # (cfg, tokenizer) -> its dev evaluation, or None
    exports: str  # what the export's program outputs: "encodings", or "encodings and logits"
    normalized: bool  # whether the export's embeddings are normalised (trained on cosines)


def host_dropout(cfg: Config, data) -> bool:
    """Whether the data pipeline draws the encoder's dropout masks (train.dropout_masks; on CPU by default:
    numpy's random bytes are ~10x cheaper than Paddle's CPU dropout), and if so, asks `data` for them."""
    drawn = cfg.model.dropout > 0 and (cfg.train.dropout_masks == "data" or (
        cfg.train.dropout_masks == "auto" and paddle.get_device() == "cpu"))
    if drawn:
        data.use_host_dropout(2 * cfg.model.num_layers, cfg.model.hidden_size, cfg.model.dropout)
    return drawn


def pretraining_step(trainer: "Trainer") -> tuple[paddle.nn.Layer, list]:
    cfg, data, model = trainer.cfg, trainer.data, trainer.model
    if model.token_weights is not None:  # they would be a parameter without a gradient
        raise UserError("setting model.pooling=weighted goes with train.objective=contrastive, which learns "
                        "its token weights (masked LM trains none)")
    if cfg.train.batch_ramp_steps:
        data.ramp_batch(cfg.train.batch_ramp_steps, trainer.world * cfg.train.accumulate_steps)
    return PretrainingStep(model, cfg.train.nsp), step_input_spec(host_dropout(cfg, data))


def pretraining_pass(trainer: "Trainer", batch: dict[str, np.ndarray], amp) -> list[float]:
    """Forward and backward over the accumulation micro-batches; the MLM and NSP losses."""
    from pipeline.trainer import micro_batch

    parts = trainer.cfg.train.accumulate_steps
    names = [spec.name for spec in trainer.input_spec]
    mlm_total = nsp_total = 0.0
    for i in range(parts):
        part = compact_predictions({k: micro_batch(v, k, i, parts) for k, v in batch.items()})
        inputs = [paddle.to_tensor(part[k]) for k in names]
        sync = (trainer.step_fn.no_sync() if trainer.world > 1 and i < parts - 1 else contextlib.nullcontext())
        with sync:
            with amp:
                mlm, nsp = trainer.step_fn(*inputs)
            # MLM is a sum over this part's predictions divided by the global count (mlm_norm), so
            # the parts add up to the global mean without a further division; NSP is a mean per part
            trainer.backward(mlm + nsp / parts)
        mlm_total += float(mlm)
        nsp_total += float(nsp) / parts
    return [mlm_total, nsp_total]


def contrastive_step(trainer: "Trainer") -> tuple[paddle.nn.Layer, list]:
    """The encoder, pooled and normalised; Paddle's dropout makes SimCSE's two views."""
    cfg, data, model = trainer.cfg, trainer.data, trainer.model
    data.check_batch(cfg.train.batch_size, trainer.world)
    if model.token_weights is not None:  # a checkpoint or --init-from folder may replace them later
        model.token_weights.log_weight.set_value(sif_log_weights(data.units, cfg.model.vocab_size,
                                                                 (data.cls, data.sep)))
    return EmbeddingStep(model, cfg.model.pooling), encoder_input_spec()


def contrastive_pass(trainer: "Trainer", batch: dict[str, np.ndarray], amp) -> list[float]:
    """Forward over this rank's rows, the global batch's loss (gathered negatives), backward."""
    inputs = [paddle.to_tensor(batch[spec.name]) for spec in trainer.input_spec]
    with amp:
        vectors = trainer.step_fn(*inputs)
    loss, scale = contrastive_loss(vectors.astype("float32"), trainer.rank, trainer.world, trainer.data.views,
                                   trainer.cfg.train.temperature)
    trainer.backward(loss * scale)
    return [float(loss)]


def classify_step(trainer: "Trainer") -> tuple[paddle.nn.Layer, list]:
    cfg = trainer.cfg
    trainer.data.check_batch(cfg.train.batch_size, trainer.world)
    regression = cfg.model.problem_type == "regression"
    trainer.classifier = SequenceClassifier(trainer.model, cfg.model.dropout)
    return ClassifyStep(trainer.classifier, regression), classify_input_spec(regression, host_dropout(cfg, trainer.data))


def classify_pass(trainer: "Trainer", batch: dict[str, np.ndarray], amp) -> list[float]:
    """Forward and backward of this rank's rows: the step layer's one loss (classify: a mean per rank, equal
    row counts; tag: divided by the global count over the world size), so averaging the ranks' gradients
    gives one process's."""
    inputs = [paddle.to_tensor(batch[spec.name]) for spec in trainer.input_spec]
    with amp:
        loss = trainer.step_fn(*inputs)
    trainer.backward(loss)
    return [float(loss)]


def pretraining_summary(cfg: Config, losses: dict, steps: int) -> str:
    """The seed's line, saying that its losses are the run's means."""
    nsp = f"NSP loss {losses['nsp_loss']:.3f}" if cfg.train.nsp else "NSP off (train.nsp=false)"
    return f"MLM loss {losses['mlm_loss']:.3f}, {nsp} (mean over this run's {steps} steps)"


def contrastive_summary(cfg: Config, losses: dict, steps: int) -> str:
    return (f"contrastive loss {losses['contrastive_loss']:.3f} (train.positives={cfg.train.positives}, mean over "
            f"this run's {steps} steps)")


def tag_step(trainer: "Trainer") -> tuple[paddle.nn.Layer, list]:
    cfg = trainer.cfg
    trainer.data.check_batch(cfg.train.batch_size, trainer.world)
    trainer.classifier = TokenClassifier(trainer.model, cfg.model.dropout)
    return TagStep(trainer.classifier), tag_input_spec(host_dropout(cfg, trainer.data))


def tag_summary(cfg: Config, losses: dict, steps: int) -> str:
    return f"tag loss {losses['tag_loss']:.3f} (cross entropy per word, mean over this run's {steps} steps)"


def classify_evaluation(cfg: Config, tokenizer) -> DevEvaluation | None:
    """Fine-tuning's dev file, tokenized by the run's tokenizer, with its baselines measured once."""
    if not cfg.data.eval_labels:
        return None
    space = LabelSpace(tuple(cfg.model.labels), cfg.model.problem_type)
    return DevEvaluation(read_labelled(cfg.data.labels), read_labelled(cfg.data.eval_labels), space, tokenizer,
                         cfg.data.max_len)


def tag_evaluation(cfg: Config, tokenizer) -> TagEvaluation | None:
    if not cfg.data.eval_labels:
        return None
    return TagEvaluation(read_tagged(cfg.data.labels), read_tagged(cfg.data.eval_labels), list(cfg.model.labels),
                         tokenizer, cfg.data.max_len)


def classify_summary(cfg: Config, losses: dict, steps: int) -> str:
    kind = "mean squared error" if cfg.model.problem_type == "regression" else "cross entropy"
    return f"classify loss {losses['classify_loss']:.3f} ({kind}, mean over this run's {steps} steps)"


OBJECTIVES: dict[str, Objective] = {
    "mlm": Objective("mlm", ("mlm_loss", "nsp_loss"), "sentence pairs", training_data, pretraining_step,
                     pretraining_pass, pretraining_summary, None, exports="encodings", normalized=False),
    "contrastive": Objective("contrastive", ("contrastive_loss",), "anchors", contrastive_training_data,
                             contrastive_step, contrastive_pass, contrastive_summary, None, exports="encodings",
                             normalized=True),
    "classify": Objective("classify", ("classify_loss",), "examples", classify_training_data, classify_step,
                          classify_pass, classify_summary, classify_evaluation, exports="encodings and logits",
                          normalized=False),
    "tag": Objective("tag", ("tag_loss",), "windows", tagging_training_data, tag_step, classify_pass, tag_summary,
                     tag_evaluation, exports="encodings and logits per token", normalized=False),
}


def objective_of(cfg: Config) -> Objective:
    return OBJECTIVES[cfg.train.objective]
