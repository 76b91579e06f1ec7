"""The Trainer: the to_static training step under fleet, the optimizer, the loop and checkpoints.

`pipeline/train.py` is the entry point (flags, fleet init, data, the ending); this module trains.
"""
from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import paddle
from paddle.distributed import fleet

from pipeline import checkpoint
from pipeline.config import Config, TrainConfig
from pipeline.contrastive import ContrastiveData
from pipeline.core.errors import UserError
from pipeline.data.batches import PretrainingData
from pipeline.model import CLASSIFIER_PREFIX, TOKEN_WEIGHTS_PREFIX, BertForPretraining
from pipeline.objectives import objective_of
from pipeline.pretrained import Pretrained, complete_state
from pipeline.progress import Progress
from pipeline.watchdog import StallWatchdog

log = logging.getLogger("pipeline.train")


@dataclass
class StepResult:
    """One optimizer step, agreed by all ranks: global mean losses (LOSSES) and whether to stop here."""

    losses: dict[str, float]
    stop_requested: bool  # SIGTERM / Ctrl-C on some rank
    out_of_time: bool  # train.max_minutes reached on some rank


@dataclass
class LoopResult:
    """What a call of `run_loop` did."""

    steps: int
    pairs: int  # sentence pairs (contrastive: rows of anchors) trained on, all ranks together
    losses: dict[str, float]  # means over this run's steps
    seconds: float
    stopped: bool  # by a signal: the run is unfinished and can be resumed
    out_of_time: bool  # by train.max_minutes: the run is finished, at fewer steps than train.steps
    patience_spent: bool = False  # by train.patience: finished early, the dev metric no longer improving


def lr_factor(step: int, tc: TrainConfig, training_seconds: float = 0.0) -> float:
    """The learning rate at `step` (0-based), after `training_seconds` of training, as a fraction of
    train.lr: linear warm-up over train.warmup_steps, then constant or linear decay to 0 at train.steps;
    or, with train.decay_to=max_minutes, the lower of the warm-up line and 1 - time / budget, which is 0
    exactly when the time budget is spent."""
    warm = (step + 1) / tc.warmup_steps if step < tc.warmup_steps else 1.0
    if tc.lr_decay == "none":
        return warm
    if tc.decay_to == "max_minutes":
        return min(warm, max(0.0, 1.0 - training_seconds / (60 * tc.max_minutes)))
    if step < tc.warmup_steps:
        return warm
    return max(0.0, (tc.steps - step) / max(1, tc.steps - tc.warmup_steps))


def build_optimizer(cfg: Config, model: BertForPretraining, clock: Callable[[], float] = lambda: 0.0):
    """Adam (the seed) or AdamW with the lr_factor schedule (`clock`: the training seconds so far, agreed
    by all ranks); clipping by global norm when asked."""
    tc = cfg.train
    lr: float | paddle.optimizer.lr.LRScheduler = tc.lr
    if tc.warmup_steps or tc.lr_decay == "linear":
        lr = paddle.optimizer.lr.LambdaDecay(tc.lr, lambda step: lr_factor(step, tc, clock()))
    clip = paddle.nn.ClipGradByGlobalNorm(tc.grad_clip) if tc.grad_clip > 0 else None
    if tc.optimizer == "adamw":
        no_decay = {p.name for n, p in model.named_parameters()
                    if n.endswith("bias") or "norm" in n or n.startswith(TOKEN_WEIGHTS_PREFIX)}
        opt = paddle.optimizer.AdamW(lr, parameters=model.parameters(), weight_decay=tc.weight_decay, beta2=tc.beta2,
                                     grad_clip=clip, apply_decay_param_fun=lambda name: name not in no_decay)
    else:
        opt = paddle.optimizer.Adam(lr, parameters=model.parameters(), beta2=tc.beta2, grad_clip=clip)
    return opt, (lr if isinstance(lr, paddle.optimizer.lr.LRScheduler) else None)


def micro_batch(array: np.ndarray, name: str, index: int, parts: int) -> np.ndarray:
    """Part `index` of `parts` of one batch field (rows are axis 1 of the dropout masks)."""
    if parts == 1 or name == "mlm_norm":  # the norm counts the whole global batch's predictions
        return array
    # drop_masks are [masks, rows, L, H]: one mask per dropout site first, so the rows are axis 1
    return np.array_split(array, parts, axis=1 if name == "drop_masks" else 0)[index]


class Trainer:
    """Owns the model, optimizer and data of one rank, and runs its steps."""

    def __init__(self, cfg: Config, data: PretrainingData | ContrastiveData, rank: int, world: int, output: Path):
        self.cfg, self.data, self.rank, self.world, self.output = cfg, data, rank, world, output
        paddle.seed(cfg.train.seed)  # the same initial weights on every rank and every run
        self.model = BertForPretraining(cfg.model)
        # training time, resumes included, as all ranks agree on it after each step (train.max_minutes)
        self.training_seconds = 0.0
        self.optimizer, self.scheduler = build_optimizer(cfg, self.model, lambda: self.training_seconds)
        self.objective = objective_of(cfg)
        self.classifier = None  # classify: the SequenceClassifier its step trains (the dev evaluation runs it)
        step_layer, self.input_spec = self.objective.build_step(self)
        if cfg.train.to_static:
            step_layer = paddle.jit.to_static(step_layer, input_spec=self.input_spec, full_graph=True)
        self.step_fn = step_layer
        self.dist_optimizer = self.optimizer
        if world > 1:  # to_static first, then fleet: the reverse order fails in Paddle 3.3
            self.step_fn = fleet.distributed_model(step_layer)
            self.dist_optimizer = fleet.distributed_optimizer(self.optimizer)
        self.scaler = paddle.amp.GradScaler() if cfg.train.amp == "fp16" else None
        self.step = 0
        self.last_lr = cfg.train.lr
        self.stop_requested = False
        # fine-tuning's dev evaluation: the best metric so far, evaluations since, and the figures then
        self.best_value: float | None = None
        self.evals_since_best = 0
        self.best_figures: dict | None = None
        self.best_logits: np.ndarray | None = None
        self._clock_origin = time.perf_counter()  # training_seconds = now - origin (set again by start_clock)

    # -- state --------------------------------------------------------------------------------
    def start_from(self, pretrained: Pretrained) -> None:
        """--init-from: the published weights; the heads the folder lacks keep their fresh initialisation."""
        fresh = {k: v.numpy() for k, v in self.model.state_dict().items()}
        # the pooling is this run's own: weighted keeps the folder's token weights or starts from SIF's, the
        # other poolings leave a weighted folder's aside
        own_weights = [k for k in fresh if k.startswith(TOKEN_WEIGHTS_PREFIX)]
        # a classifier head is the folder's only for the same classes; otherwise (or with none) it starts fresh
        state = {k: v for k, v in complete_state(pretrained, fresh).items()
                 if (not k.startswith(TOKEN_WEIGHTS_PREFIX) or k in own_weights)
                 and (not k.startswith(CLASSIFIER_PREFIX) or (k in fresh and v.shape == fresh[k].shape
                                                               and pretrained.labels == self.cfg.model.labels))}
        state.update({k: v for k, v in fresh.items() if k.startswith(CLASSIFIER_PREFIX) and k not in state})
        checkpoint.apply_model_state(self.model, {**{k: fresh[k] for k in own_weights}, **state}, pretrained.folder)
        heads = sorted({".".join(name.split(".")[:2]) for name in pretrained.fresh})  # e.g. mlm_head.decoder
        log.info("initialised from %s (%d weights)%s", pretrained.folder, len(pretrained.state),
                 f"; not in the folder, starting fresh: {', '.join(heads)}" if heads else "")

    def restore(self, ckpt: checkpoint.Checkpoint) -> None:
        checkpoint.apply_model_state(self.model, ckpt.model_state, ckpt.path)
        named = list(self.model.named_parameters())
        self.optimizer.set_state_dict(checkpoint.optimizer_state_for(named, ckpt.optimizer_state))
        if self.scheduler is not None and "scheduler" in ckpt.extra:
            # the position only: the rate follows this run's train.steps (a resume may extend the run)
            self.scheduler.last_epoch = int(ckpt.extra["scheduler"]["last_epoch"])
        self.training_seconds = float(ckpt.extra.get("training_seconds", 0.0))
        self.best_value = ckpt.extra.get("best_value")
        self.evals_since_best = int(ckpt.extra.get("evals_since_best", 0))
        if self.scheduler is not None:
            self.scheduler.last_lr = self.scheduler.get_lr()
        self.step = ckpt.step

    def start_clock(self) -> None:
        """Training time runs from now on, after the training_seconds already spent (a resume)."""
        self._clock_origin = time.perf_counter() - self.training_seconds

    def save(self) -> Path:
        named = list(self.model.named_parameters())
        extra = {"training_seconds": self.training_seconds, "best_value": self.best_value,
                 "evals_since_best": self.evals_since_best}
        if self.scheduler is not None:
            extra["scheduler"] = self.scheduler.state_dict()
        return checkpoint.save(
            output_dir=self.output, step=self.step, config=self.cfg,
            model_state={k: v.numpy() for k, v in self.model.state_dict().items()},
            optimizer_state=checkpoint.optimizer_state_by_name(self.optimizer, named),
            extra=extra, keep=self.cfg.train.keep_checkpoints)

    def evaluate_dev(self, dev) -> bool:
        """The dev figures of the model as it is now (`dev`: the objective's evaluation), logged in one line;
        True where the task's metric beat every earlier evaluation (then they are kept as the best)."""
        logits = dev.logits(self.classifier)
        figures = dev.figures(logits)
        value = figures[dev.metric]
        log.info("step %d: %s", self.step, dev.describe(figures))
        if self.best_value is not None and value <= self.best_value:
            self.evals_since_best += 1
            return False
        self.best_value, self.evals_since_best = value, 0
        self.best_figures, self.best_logits = {"step": self.step, **figures}, logits
        return True

    # -- one step -----------------------------------------------------------------------------
    def train_step(self, batch: dict[str, np.ndarray]) -> StepResult:
        """Forward, backward (over accumulation micro-batches) and update; the losses and stop flags
        are averaged over all ranks, so every rank takes the same decision."""
        tc = self.cfg.train
        # Paddle's randomness (its dropout) depends on (seed, step, rank) only: resumable, and ranks differ
        paddle.seed((tc.seed * 1_000_003 + self.step) * 1024 + self.rank)
        amp = (paddle.amp.auto_cast(dtype="float16" if tc.amp == "fp16" else "bfloat16")
               if tc.amp != "none" else contextlib.nullcontext())
        losses = self.objective.train_pass(self, batch, amp)
        self.last_lr = float(self.optimizer.get_lr())  # the rate this step used (the scheduler moves on below)
        if self.scaler:
            self.scaler.step(self.dist_optimizer)
            self.scaler.update()
        else:
            self.dist_optimizer.step()
        self.dist_optimizer.clear_grad()
        self.step += 1
        seconds = time.perf_counter() - self._clock_origin
        report = np.array([*losses, float(self.stop_requested), seconds], dtype=np.float32)
        if self.world > 1:
            tensor = paddle.to_tensor(report)
            paddle.distributed.all_reduce(tensor)
            report = tensor.numpy() / self.world
        self.training_seconds = float(report[-1])  # the ranks' mean: the same schedule and ending on every rank
        if self.scheduler is not None:
            self.scheduler.step()  # the next step's rate, from the agreed time
        budget = 60 * tc.max_minutes
        names = self.objective.losses
        return StepResult(dict(zip(names, map(float, report))), bool(report[-2] > 0),
                          budget > 0 and self.training_seconds >= budget)

    def backward(self, loss) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()


PEER_FAILURES = ("gloo", "nccl", "connection reset", "connection closed")  # what a collective says of a lost peer


def peer_checked(step: Callable[[dict], StepResult], batch: dict, rank: int) -> StepResult:
    """`step(batch)`, a collective that failed because a peer died or hung (gloo's 30 s timeout, a reset
    connection, an NCCL error) said in one line instead of a traceback."""
    try:
        return step(batch)
    except RuntimeError as err:
        message = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        if not any(word in str(err).lower() for word in PEER_FAILURES):
            raise
        raise UserError(f"rank {rank}: a collective operation failed ({message[:200]}): a peer rank has died or "
                        f"hangs. Run the same command again with --resume auto to continue from the newest "
                        f"checkpoint") from None


def run_loop(trainer: Trainer, data: PretrainingData, output: Path, dev=None) -> LoopResult:
    """Train to train.steps, until train.max_minutes, or until SIGTERM/Ctrl-C (then stop at the step
    boundary). Rank 0 writes checkpoints: every train.save_every steps and at the end. With a `dev` file,
    the model is evaluated every train.eval_every steps and at the end; a better dev metric is saved and named
    the best checkpoint, and train.patience evaluations without one end the run."""
    cfg = trainer.cfg

    def request_stop(signum, frame):  # noqa: ARG001
        trainer.stop_requested = True
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    progress = Progress(output / "metrics.jsonl", trainer.step, cfg.train.steps, cfg.train.log_every,
                        trainer.rank == 0, trainer.objective.unit.split()[-1])
    names = trainer.objective.losses
    sums, done = dict.fromkeys(names, 0.0), 0
    result = StepResult(dict.fromkeys(names, 0.0), False, False)
    start = time.perf_counter()
    trainer.start_clock()
    pairs = 0
    watchdog = None
    early = False
    try:
        for batch in data.iterate(trainer.step, cfg.train.steps, cfg.train.batch_size, trainer.rank, trainer.world):
            result = peer_checked(trainer.train_step, batch, trainer.rank)
            if watchdog is not None:
                watchdog.beat()
            elif trainer.world > 1 and cfg.train.stall_minutes:  # after the first step, which builds the graph
                watchdog = StallWatchdog(cfg.train.stall_minutes * 60, trainer.rank)
            bad = next((v for v in result.losses.values() if not math.isfinite(v)), None)
            if bad is not None:
                good = checkpoint.latest(output)
                raise UserError(f"loss became {bad} at step {trainer.step}; "
                                f"stopped (last good checkpoint: {good or 'none'}); try a lower train.lr")
            sums = {k: sums[k] + v for k, v in result.losses.items()}
            done += 1
            pairs += data.global_batch_size(trainer.step - 1, cfg.train.batch_size)
            elapsed = time.perf_counter() - start
            progress.update({"step": trainer.step, **result.losses, "lr": trainer.last_lr,
                             "pairs_per_sec": pairs / elapsed, "elapsed": elapsed,
                             "training_seconds": trainer.training_seconds, "time": time.time()})
            ending = result.stop_requested or result.out_of_time
            final = trainer.step == cfg.train.steps or result.out_of_time
            every, eval_every = cfg.train.save_every, cfg.train.eval_every
            evaluated = dev is not None and not result.stop_requested and (
                final or (eval_every and trainer.step % eval_every == 0))
            improved = evaluated and trainer.evaluate_dev(dev)  # every rank: the same weights, the same decision
            patience_spent = evaluated and cfg.train.patience and trainer.evals_since_best >= cfg.train.patience
            due = final or ending or improved or patience_spent or (every and trainer.step % every == 0)
            if trainer.rank == 0 and due:
                saved = trainer.save()
                if improved:
                    checkpoint.mark_best(output, saved, dev.metric, trainer.best_value)
                if watchdog is not None:
                    watchdog.beat()
            if patience_spent and not final:
                log.info("no better dev %s in %d evaluations (train.patience): stopping at step %d", dev.metric,
                         cfg.train.patience, trainer.step)
                early = True
                break
            if ending:
                break
    finally:
        if watchdog is not None:
            watchdog.stop()
        progress.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return LoopResult(done, pairs, {k: v / max(done, 1) for k, v in sums.items()}, time.perf_counter() - start,
                      stopped=result.stop_requested, out_of_time=result.out_of_time and not result.stop_requested,
                      patience_spent=early)
