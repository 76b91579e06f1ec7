"""Pretrain BERT (masked LM + next sentence prediction) on WikiText-2, static graph, fleet collective.

    fleetrun --gpus 0,1 pipeline/train.py                      # several GPUs (data parallel)
    python pipeline/train.py                                   # one process (CPU or one GPU)
    fleetrun --nproc_per_node 2 --log_dir output/log pipeline/train.py   # several CPU processes
    python pipeline/train.py -c configs/bert_base.yaml -o train.lr=1e-4 --data-dir ~/wikitext-2
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path

if __name__ == "__main__" and not __package__:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from pipeline.runtime import quiet_paddle_import

quiet_paddle_import()

import numpy as np  # noqa: E402
import paddle  # noqa: E402
from paddle.distributed import fleet  # noqa: E402

from pipeline import checkpoint  # noqa: E402
from pipeline.config import Config, load_config, save_config  # noqa: E402
from pipeline.dataset import PretrainingData, prepare, step_inputs  # noqa: E402
from pipeline.errors import UserError, run_cli  # noqa: E402
from pipeline.evaluate import evaluate, format_metrics  # noqa: E402
from pipeline.files import write_text_atomic  # noqa: E402
from pipeline.model import BertForPretraining, PretrainingStep, step_input_spec  # noqa: E402
from pipeline.progress import Progress, keep_metrics_until, plot_losses  # noqa: E402
from pipeline.runtime import set_cpu_threads  # noqa: E402
from pipeline.vocab import Vocab  # noqa: E402
from pipeline.wikitext import cache_home, find_split  # noqa: E402

log = logging.getLogger("pipeline.train")
STEP_INPUTS = ("token_ids", "segments", "valid_lens", "mlm_positions", "mlm_labels", "nsp_labels", "mlm_norm")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Pretrain BERT (masked LM + next sentence prediction) on WikiText-2 with "
                    "PaddlePaddle: static graph (paddle.jit.to_static), data parallel under fleet.",
        epilog="Settings come from the YAML config (-c) and -o overrides (see README, Settings); the short flags are "
               "overrides too. Example: python pipeline/train.py -o train.lr=1e-3 -o model.num_layers=4")
    p.add_argument("-c", "--config", help="YAML config (default: configs/bert_tiny.yaml, the seed's tiny BERT)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one setting, value parsed as YAML (repeatable), e.g. -o train.steps=100")
    p.add_argument("--data-dir", help="folder holding wiki.{train,valid,test}.tokens (or wikitext-2-v1.zip); "
                                      "default: download the official archive into the cache")
    p.add_argument("--split", help="split to train on: train, valid or test (data.split, default train)")
    p.add_argument("--eval-split", help="split to evaluate on at the end, e.g. test (data.eval_split)")
    p.add_argument("--output-dir", help="where config, vocab, metrics, loss.png and checkpoints go "
                                        "(train.output_dir, default output)")
    p.add_argument("--steps", type=int, help="total optimizer steps (train.steps, default 50)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in the output folder")
    return p


def resolve_config(args: argparse.Namespace) -> Config:
    overrides = list(args.override)
    for flag, key in (("data_dir", "data.data_dir"), ("split", "data.split"), ("eval_split", "data.eval_split"),
                      ("output_dir", "train.output_dir"), ("steps", "train.steps")):
        value = getattr(args, flag)
        if value is not None:
            overrides.append(f"{key}={value}")
    return load_config(args.config, overrides)


def init_distributed(cfg: Config) -> tuple[int, int, str]:
    """fleet collective init; returns (rank, world size, device description)."""
    use_gpu = paddle.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0
    if cfg.train.amp != "none" and not use_gpu:
        raise UserError(f"train.amp={cfg.train.amp} needs a GPU: PaddlePaddle ignores AMP on CPU without a "
                        f"word, so it is refused here (use train.amp=none)")
    if use_gpu:
        paddle.set_device(f"gpu:{paddle.distributed.ParallelEnv().dev_id}")
    else:
        paddle.set_device("cpu")
    fleet.init(is_collective=True)
    rank, world = fleet.worker_index(), fleet.worker_num()
    if cfg.train.batch_size % (world * cfg.train.accumulate_steps):
        raise UserError(f"train.batch_size={cfg.train.batch_size} is not divisible by {world} ranks x "
                        f"train.accumulate_steps={cfg.train.accumulate_steps}")
    devices = [f"gpu:{i}" for i in range(world)] if use_gpu else ["cpu"] * world
    return rank, world, "[" + ", ".join(f"Place({d})" for d in devices) + "]"


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise UserError(f"output folder {folder} is not writable ({err.strerror})") from None


def build_optimizer(cfg: Config, model: BertForPretraining):
    """Adam (the seed) or AdamW with linear warm-up/decay; clipping by global norm when asked."""
    tc = cfg.train
    lr: float | paddle.optimizer.lr.LRScheduler = tc.lr
    if tc.warmup_steps or tc.lr_decay == "linear":
        def factor(step: int) -> float:
            if step < tc.warmup_steps:
                return (step + 1) / tc.warmup_steps
            if tc.lr_decay == "linear":
                return max(0.0, (tc.steps - step) / max(1, tc.steps - tc.warmup_steps))
            return 1.0
        lr = paddle.optimizer.lr.LambdaDecay(tc.lr, factor)
    clip = paddle.nn.ClipGradByGlobalNorm(tc.grad_clip) if tc.grad_clip > 0 else None
    if tc.optimizer == "adamw":
        no_decay = {p.name for n, p in model.named_parameters() if n.endswith("bias") or "norm" in n}
        opt = paddle.optimizer.AdamW(lr, parameters=model.parameters(), weight_decay=tc.weight_decay,
                                     grad_clip=clip, apply_decay_param_fun=lambda name: name not in no_decay)
    else:
        opt = paddle.optimizer.Adam(lr, parameters=model.parameters(), grad_clip=clip)
    return opt, (lr if isinstance(lr, paddle.optimizer.lr.LRScheduler) else None)


class Trainer:
    """Owns the model, optimizer and data of one rank, and runs the loop."""

    def __init__(self, cfg: Config, data: PretrainingData, rank: int, world: int, output: Path):
        self.cfg, self.data, self.rank, self.world, self.output = cfg, data, rank, world, output
        paddle.seed(cfg.train.seed)  # the same initial weights on every rank and every run
        self.model = BertForPretraining(cfg.model)
        self.optimizer, self.scheduler = build_optimizer(cfg, self.model)
        self.inputs = STEP_INPUTS
        host_dropout = paddle.get_device() == "cpu" and cfg.model.dropout > 0
        if host_dropout:  # numpy's random bytes are ~10x cheaper than Paddle's CPU dropout
            data.use_host_dropout(2 * cfg.model.num_layers, cfg.model.hidden_size, cfg.model.dropout)
            self.inputs = STEP_INPUTS + ("drop_masks",)
        step_layer = PretrainingStep(self.model)
        if cfg.train.to_static:
            step_layer = paddle.jit.to_static(step_layer, input_spec=step_input_spec(host_dropout),
                                              full_graph=True)
        self.step_fn = step_layer
        self.dist_optimizer = self.optimizer
        if world > 1:  # to_static first, then fleet: the reverse order fails in Paddle 3.3
            self.step_fn = fleet.distributed_model(step_layer)
            self.dist_optimizer = fleet.distributed_optimizer(self.optimizer)
        self.scaler = paddle.amp.GradScaler() if cfg.train.amp == "fp16" else None
        self.step = 0
        self.last_lr = cfg.train.lr
        self.stop_requested = False

    # -- state --------------------------------------------------------------------------------
    def restore(self, ckpt: checkpoint.Checkpoint) -> None:
        checkpoint.apply_model_state(self.model, ckpt.model_state, ckpt.path)
        named = list(self.model.named_parameters())
        self.optimizer.set_state_dict(checkpoint.optimizer_state_for(named, ckpt.optimizer_state))
        if self.scheduler is not None and "scheduler" in ckpt.extra:
            # the position only: the rate follows this run's train.steps (a resume may extend the run)
            self.scheduler.last_epoch = int(ckpt.extra["scheduler"]["last_epoch"])
            self.scheduler.last_lr = self.scheduler.get_lr()
        self.step = ckpt.step

    def save(self) -> Path:
        named = list(self.model.named_parameters())
        model_state = {k: v.numpy() for k, v in self.model.state_dict().items()}
        extra = {"data_position": {"epoch_step": self.step, "seed": self.cfg.data.seed}}
        if self.scheduler is not None:
            extra["scheduler"] = self.scheduler.state_dict()
        return checkpoint.save(self.output, self.step, self.cfg, model_state,
                               checkpoint.optimizer_state_by_name(self.optimizer, named), extra,
                               self.cfg.train.keep_checkpoints)

    # -- one step -----------------------------------------------------------------------------
    def train_step(self, batch: dict[str, np.ndarray]) -> tuple[float, float, bool]:
        """Forward, backward (over accumulation micro-batches) and update; returns the global
        (all-rank) MLM and NSP losses and whether any rank asked to stop."""
        tc = self.cfg.train
        paddle.seed(tc.seed * 1_000_003 + self.step)  # randomness depends on (seed, step) only: resumable
        parts = tc.accumulate_steps
        amp = (paddle.amp.auto_cast(dtype="float16" if tc.amp == "fp16" else "bfloat16")
               if tc.amp != "none" else contextlib.nullcontext())
        mlm_total = nsp_total = 0.0
        for i in range(parts):
            part = step_inputs({k: micro_batch(v, k, i, parts) for k, v in batch.items()})
            inputs = [paddle.to_tensor(part[k]) for k in self.inputs]
            sync = (self.step_fn.no_sync() if self.world > 1 and i < parts - 1 else contextlib.nullcontext())
            with sync:
                with amp:
                    mlm, nsp = self.step_fn(*inputs)
                loss = mlm + nsp / parts
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            mlm_total += float(mlm)
            nsp_total += float(nsp) / parts
        self.last_lr = self.current_lr()  # the rate this step used (the scheduler moves on below)
        if self.scaler:
            self.scaler.step(self.dist_optimizer)
            self.scaler.update()
        else:
            self.dist_optimizer.step()
        self.dist_optimizer.clear_grad()
        if self.scheduler is not None:
            self.scheduler.step()
        self.step += 1
        report = np.array([mlm_total, nsp_total, float(self.stop_requested)], dtype=np.float32)
        if self.world > 1:
            tensor = paddle.to_tensor(report)
            paddle.distributed.all_reduce(tensor)
            report = tensor.numpy() / self.world
        return float(report[0]), float(report[1]), bool(report[2] > 0)

    def current_lr(self) -> float:
        return float(self.optimizer.get_lr())


def example_cache(cfg: Config) -> Path:
    return Path(cfg.data.cache_dir) if cfg.data.cache_dir else cache_home() / "examples"


def micro_batch(array: np.ndarray, name: str, index: int, parts: int) -> np.ndarray:
    """Part `index` of `parts` of one batch field (rows are axis 1 of the dropout masks)."""
    if parts == 1 or name == "mlm_norm":
        return array
    return np.array_split(array, parts, axis=1 if name == "drop_masks" else 0)[index]


def prepare_data(cfg: Config, output: Path, resume: bool) -> tuple[Vocab, PretrainingData]:
    prepared = prepare(find_split(cfg.data.data_dir, cfg.data.split), cfg.data.max_len, cfg.data.min_freq,
                       cfg.data.seed, example_cache(cfg))
    saved_vocab = output / "vocab.json"
    if resume and saved_vocab.exists() and Vocab.load(saved_vocab).idx_to_token != prepared.vocab.idx_to_token:
        raise UserError(f"the corpus gives another vocabulary than {saved_vocab}: resume with the same data")
    cfg.model.vocab_size = len(prepared.vocab)
    data = PretrainingData(prepared.pairs, len(prepared.vocab), cfg.data.max_len, cfg.data.mask_prob,
                           cfg.data.dynamic_masking, cfg.data.seed)
    return prepared.vocab, data


def main(argv: list[str] | None = None) -> int:
    """Pretrain BERT in five steps:
    1. settings: YAML config + overrides, fleet collective init, CPU threads;
    2. data: corpus -> vocabulary -> NSP pairs (cached) -> masked, sharded batches;
    3. model: BertForPretraining + losses under to_static, then fleet.distributed_model;
    4. loop: steps with progress, metrics, checkpoints, clean stop on SIGTERM/Ctrl-C;
    5. summary: the seed's two lines, loss.png, optional held-out evaluation.
    """
    args = build_parser().parse_args(argv)
    cfg = resolve_config(args)
    output = Path(cfg.train.output_dir)
    check_writable(output)
    rank, world, devices = init_distributed(cfg)
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    local_ranks = int(os.environ.get("PADDLE_LOCAL_SIZE", world))
    threads = set_cpu_threads(cfg.train.threads, local_ranks) if paddle.get_device() == "cpu" else 0
    existing = checkpoint.latest(output)
    if existing is not None and not args.resume:
        raise UserError(f"{output} already holds checkpoints (newest {existing.name}): pass --resume to "
                        f"continue, or choose another --output-dir")
    ckpt = None
    if args.resume:
        if existing is None:
            raise UserError(f"--resume: no checkpoint in {output / 'checkpoints'}")
        ckpt = checkpoint.load(existing)

    vocab, data = prepare_data(cfg, output, args.resume)
    if ckpt is not None:
        checkpoint.check_compatible(ckpt, cfg)
    steps_per_epoch = data.steps_per_epoch(cfg.train.batch_size)
    trainer = Trainer(cfg, data, rank, world, output)
    if ckpt is not None:
        trainer.restore(ckpt)
        if trainer.step >= cfg.train.steps:
            raise UserError(f"{ckpt.path.name} is already at step {trainer.step} >= train.steps="
                            f"{cfg.train.steps}; raise --steps to train further")
        log.info("resumed from %s", ckpt.path)
    if rank == 0:
        save_config(cfg, output / "config.yaml")
        vocab.save(output / "vocab.json")
        keep_metrics_until(output / "metrics.jsonl", trainer.step)
    log.info("%d sentence pairs (%d steps/epoch), vocabulary %d, %d rank(s), %d CPU threads, %d parameters",
             len(data), steps_per_epoch, len(vocab), world, threads,
             sum(int(np.prod(p.shape)) for p in trainer.model.parameters()))

    done, mlm_mean, nsp_mean, elapsed, stopped = run_loop(trainer, data, output)
    if rank == 0:
        report(trainer, vocab, output, devices, done, mlm_mean, nsp_mean, elapsed, stopped, argv)
    return 0


def run_loop(trainer: Trainer, data: PretrainingData, output: Path) -> tuple[int, float, float, float, bool]:
    """Train to train.steps or until SIGTERM/Ctrl-C; return (steps done, mean MLM and NSP loss, seconds,
    whether it stopped early). Checkpoints are written by rank 0."""
    cfg = trainer.cfg

    def request_stop(signum, frame):  # noqa: ARG001
        trainer.stop_requested = True
    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    progress = Progress(output / "metrics.jsonl", trainer.step, cfg.train.steps, cfg.train.log_every,
                        trainer.rank == 0)
    mlm_sum, nsp_sum, done, stopped = 0.0, 0.0, 0, False
    start = time.perf_counter()
    try:
        for batch in data.iterate(trainer.step, cfg.train.steps, cfg.train.batch_size, trainer.rank, trainer.world):
            mlm, nsp, stopped = trainer.train_step(batch)
            if not (math.isfinite(mlm) and math.isfinite(nsp)):
                good = checkpoint.latest(output)
                raise UserError(f"loss became {mlm if not math.isfinite(mlm) else nsp} at step {trainer.step}; "
                                f"stopped (last good checkpoint: {good or 'none'}); try a lower train.lr")
            mlm_sum, nsp_sum, done = mlm_sum + mlm, nsp_sum + nsp, done + 1
            elapsed = time.perf_counter() - start
            progress.update({"step": trainer.step, "mlm_loss": mlm, "nsp_loss": nsp, "lr": trainer.last_lr,
                             "pairs_per_sec": done * cfg.train.batch_size / elapsed, "elapsed": elapsed,
                             "time": time.time()})
            every = cfg.train.save_every
            due = trainer.step == cfg.train.steps or stopped or (every and trainer.step % every == 0)
            if trainer.rank == 0 and due:
                trainer.save()
            if stopped:
                break
    finally:
        progress.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return done, mlm_sum / max(done, 1), nsp_sum / max(done, 1), time.perf_counter() - start, stopped


def report(trainer: Trainer, vocab: Vocab, output: Path, devices: str, done: int, mlm_mean: float,
           nsp_mean: float, elapsed: float, stopped: bool, argv: list[str] | None) -> None:
    """Rank 0's ending: loss.png, then the resume hint, or the seed's two lines and the evaluation."""
    cfg = trainer.cfg
    plot_losses(output / "metrics.jsonl", output / "loss.png")
    if stopped:
        cmd = " ".join(["python", "pipeline/train.py", *(argv if argv is not None else sys.argv[1:])])
        print(f"stopped at step {trainer.step} of {cfg.train.steps}; checkpoint saved. Resume with: "
              f"{cmd if '--resume' in cmd else cmd + ' --resume'}")
        return
    if done:
        print(f"MLM loss {mlm_mean:.3f}, NSP loss {nsp_mean:.3f}")
        print(f"{done * cfg.train.batch_size / elapsed:.1f} sentence pairs/sec on {devices}")
    log.info("%d steps in %.1f s, now at step %d; outputs in %s", done, elapsed, trainer.step, output)
    if cfg.data.eval_split:
        eval_data = prepare(find_split(cfg.data.data_dir, cfg.data.eval_split), cfg.data.max_len,
                            cfg.data.min_freq, cfg.data.seed, example_cache(cfg), vocab=vocab)
        metrics = evaluate(trainer.model, eval_data.pairs, len(vocab), cfg.data.max_len,
                           mask_prob=cfg.data.mask_prob)
        print(format_metrics(metrics))
        write_text_atomic(output / "eval.json", json.dumps(metrics, indent=1))


if __name__ == "__main__":
    run_cli(main)
