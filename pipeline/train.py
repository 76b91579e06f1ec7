"""Pretrain BERT (masked LM + next sentence prediction) on WikiText-2 or your own text, static graph, fleet.

    fleetrun --gpus 0,1 pipeline/train.py                      # several GPUs (data parallel)
    python pipeline/train.py                                   # one process (CPU or one GPU)
    fleetrun --nproc_per_node 2 --log_dir output/log pipeline/train.py   # several CPU processes
    python pipeline/train.py -c configs/bert_base.yaml -o train.lr=1e-4 --data-dir ~/wikitext-2
    python pipeline/train.py --corpus my_texts/ -o data.tokenizer=wordpiece   # your own text, WordPiece
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
from pathlib import Path
from typing import NamedTuple

if __name__ == "__main__" and not __package__:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from pipeline.core.runtime import setup_process_for_paddle, show_paddle_warnings

setup_process_for_paddle()

import numpy as np  # noqa: E402
import paddle  # noqa: E402
from paddle.distributed import fleet  # noqa: E402

from pipeline import checkpoint  # noqa: E402
from pipeline.config import (  # noqa: E402
    SPLITS,
    Config,
    ModelConfig,
    config_yaml,
    load_config,
    parse_override,
    save_config,
    with_settings,
)
from pipeline.core.errors import UserError, run_cli  # noqa: E402
from pipeline.core.files import FolderLock, write_text_atomic  # noqa: E402
from pipeline.core.runtime import has_cuda_gpu, set_cpu_threads  # noqa: E402
from pipeline.core.tokenizer import Tokenizer  # noqa: E402
from pipeline.data.batches import rows_per_part  # noqa: E402
from pipeline.data.labelled import label_settings  # noqa: E402
from pipeline.data.sources import (  # noqa: E402
    data_without_network,
    held_out_pairs,
    held_out_retrieval,
)
from pipeline.data.tagged import tag_settings  # noqa: E402
from pipeline.data.text_files import find_files  # noqa: E402
from pipeline.data.wikitext import find_split  # noqa: E402
from pipeline.evaluate import evaluate, format_metrics, retrieval_figures_of  # noqa: E402
from pipeline.objectives import objective_of  # noqa: E402
from pipeline.pretrained import Pretrained, open_pretrained  # noqa: E402
from pipeline.progress import keep_metrics_until, plot_losses  # noqa: E402
from pipeline.retrieval import format_retrieval  # noqa: E402
from pipeline.trainer import LoopResult, Trainer, run_loop  # noqa: E402

log = logging.getLogger("pipeline.train")


def build_parser() -> argparse.ArgumentParser:
    default = load_config()  # the defaults shown below are the default config's, not written here by hand
    p = argparse.ArgumentParser(
        description="Pretrain BERT (masked LM + next sentence prediction) on WikiText-2 or your own text with "
                    "PaddlePaddle: static graph (paddle.jit.to_static), data parallel under fleet.",
        epilog="Settings come from the YAML config (-c) and -o overrides (see README, Settings); the short flags are "
               "overrides too. Example: python pipeline/train.py -o train.lr=1e-3 -o model.num_layers=4")
    p.add_argument("-c", "--config", help="YAML config (default: configs/bert_tiny.yaml, the seed's tiny BERT with a "
                                          "recipe that learns; configs/seed.yaml is the book's exact recipe)")
    p.add_argument("-o", "--override", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one setting, value parsed as YAML (repeatable), e.g. -o train.steps=100")
    p.add_argument("--data-dir", help="folder holding wiki.{train,valid,test}.tokens (or wikitext-2-v1.zip); "
                                      "default: download the official archive into the cache")
    p.add_argument("--corpus", action="append", metavar="PATH",
                   help="train on your own text instead of WikiText-2: a UTF-8 file, a folder (its *.txt and *.md, "
                        "recursively) or a glob; repeatable (data.corpus). Documents are separated by blank lines")
    p.add_argument("--prepared", metavar="DIR",
                   help="train on a corpus prepared by pipeline/prepare.py (memory-mapped; data.prepared)")
    p.add_argument("--eval-corpus", action="append", metavar="PATH",
                   help="held-out text of your own, evaluated at the end (data.eval_corpus)")
    p.add_argument("--split", help=f"split to train on: {', '.join(SPLITS)} (data.split, default {default.data.split})")
    p.add_argument("--eval-split", help="split to evaluate on at the end, e.g. test (data.eval_split)")
    p.add_argument("--output-dir", help=f"where config, vocab, metrics, loss.png and checkpoints go "
                                        f"(train.output_dir, default {default.train.output_dir})")
    p.add_argument("--steps", type=int, help=f"total optimizer steps (train.steps, default {default.train.steps})")
    p.add_argument("--init-from", metavar="DIR",
                   help="continue pretraining a published BERT: a Hugging Face folder (config.json, model.safetensors, "
                        "tokenizer.json or vocab.txt) whose settings, weights and tokenizer are used (train.init_from)")
    p.add_argument("--resume", nargs="?", const="yes", choices=("yes", "auto"),
                   help="continue from the newest checkpoint in the output folder; --resume auto: continue if "
                        "there is one, else start fresh (for a job that is simply run again after a failure)")
    p.add_argument("--print-config", action="store_true",
                   help="print the settings this command would train with (every source resolved; the vocabulary "
                        "size, set from the data, shows as 0) as YAML, and exit")
    p.add_argument("--verbose", action="store_true",
                   help="also show PaddlePaddle's own log lines and warnings (fleet set-up, flags, internals)")
    return p


FLAG_SETTINGS = {"data_dir": "data.data_dir", "corpus": "data.corpus", "prepared": "data.prepared",
                 "eval_corpus": "data.eval_corpus",
                 "split": "data.split", "eval_split": "data.eval_split",
                 "output_dir": "train.output_dir", "steps": "train.steps", "init_from": "train.init_from"}


class Resolved(NamedTuple):
    """The run's frozen settings, the --init-from folder it starts from, and the offline-sample notice."""

    cfg: Config
    pretrained: Pretrained | None
    notice: str | None


def resolve_config(args: argparse.Namespace) -> Resolved:
    """The run's settings from every source, each through the config's own setter and cross-checks: the YAML
    config, then -o overrides, then the short flags (used as typed, never re-read as YAML: --output-dir 012
    is the folder "012"), then what the --init-from folder's model is (its architecture, tokenizer and, for
    an embedding model, pooling; an -o model.* that contradicts it is refused), then where the data is (the
    official download, or the shipped sample without a network). The vocabulary's size is set with
    `with_settings` once the data has made the tokenizer."""
    flags = {key: getattr(args, flag) for flag, key in FLAG_SETTINGS.items() if getattr(args, flag) is not None}
    cfg = load_config(args.config, args.override, flags)
    check_data(cfg)  # a wrong folder fails before a download is tried or fleet starts
    pretrained = open_pretrained(cfg.train.init_from) if cfg.train.init_from else None
    adopted = adopted_settings(pretrained, cfg.model, args.override) if pretrained else {}
    located, notice = data_without_network(cfg)
    cfg = with_settings(cfg, {**adopted, **located})
    held = (pretrained.labels, pretrained.problem_type) if pretrained else (cfg.model.labels, cfg.model.problem_type)
    if cfg.train.objective == "classify":  # the labels are settings, read from the files before any work
        held = held if held[1] != "token_classification" else (None, None)
        cfg = with_settings(cfg, label_settings(cfg.data.labels, cfg.data.eval_labels, *held))
    elif cfg.train.objective == "tag":
        cfg = with_settings(cfg, tag_settings(cfg.data.labels, cfg.data.eval_labels,
                                              held[0] if held[1] == "token_classification" else None))
    return Resolved(cfg, pretrained, notice)


def adopted_settings(pretrained: Pretrained, model: ModelConfig, overrides: list[str]) -> dict[str, object]:
    """The settings a published folder fixes; an -o model.* that contradicts it is refused (the values
    compared as the config holds them, after its own parsing)."""
    asked = {f"{section}.{key}" for section, key, _ in map(parse_override, overrides)}
    adopted = {f"model.{key}": value for key, value in pretrained.model.items()}
    for name, value in adopted.items():
        held = getattr(model, name.partition(".")[2])
        if name in asked and held != value:
            raise UserError(f"-o {name}={held} contradicts {pretrained.folder} ({value})")
    if pretrained.pooling is not None and "model.pooling" not in asked:  # a published embedding model's own
        adopted["model.pooling"] = pretrained.pooling
    adopted.update({"data.tokenizer": pretrained.tokenizer.kind, "data.lowercase": pretrained.tokenizer.lowercase})
    return adopted


def init_distributed(cfg: Config, verbose: bool = False) -> tuple[int, int, str]:
    """fleet collective init; returns (rank, world size, device description). Unless `verbose`, fleet's
    INFO lines and the "Modified FLAGS" banner it writes to stderr are not shown."""
    use_gpu = has_cuda_gpu()
    check_amp(cfg.train.amp, use_gpu)
    if use_gpu:
        paddle.set_device(f"gpu:{paddle.distributed.ParallelEnv().dev_id}")
    else:
        paddle.set_device("cpu")
    banner = io.StringIO()
    try:
        with contextlib.redirect_stderr(banner) if not verbose else contextlib.nullcontext():
            fleet.init(is_collective=True, log_level="INFO" if verbose else "WARNING")
    except Exception:
        sys.stderr.write(banner.getvalue())
        raise
    rank, world = fleet.worker_index(), fleet.worker_num()
    rows_per_part(cfg.train.batch_size, world, cfg.train.accumulate_steps)  # refuses an uneven split
    devices = [f"gpu:{i}" for i in range(world)] if use_gpu else ["cpu"] * world
    return rank, world, "[" + ", ".join(f"Place({d})" for d in devices) + "]"


def check_amp(amp: str, use_gpu: bool) -> None:
    """Refuse mixed precision the device cannot run: paddle.amp.auto_cast only warns and trains in fp32 then
    (on CPU; bf16 below compute capability 8.0, V100 or T4; fp16 below 7.0), and those warnings are hidden."""
    if amp == "none":
        return
    if not use_gpu:
        raise UserError(f"train.amp={amp} needs a GPU: PaddlePaddle ignores AMP on CPU without a "
                        f"word, so it is refused here (use train.amp=none)")
    supported = paddle.amp.is_bfloat16_supported() if amp == "bf16" else paddle.amp.is_float16_supported()
    if not supported:
        name = paddle.device.cuda.get_device_name()
        raise UserError(f"train.amp={amp}: this GPU ({name}) has no {amp} arithmetic "
                        f"({'compute capability 8.0 or newer' if amp == 'bf16' else 'compute capability 7.0 or newer'}"
                        f" is needed), so PaddlePaddle would train in fp32; use "
                        f"{'train.amp=fp16' if amp == 'bf16' else 'train.amp=none'}")


def check_data(cfg: Config) -> None:
    """Fail at once on a data folder, split, corpus or --init-from path that is not there (WikiText that is
    to be downloaded is checked when it is)."""
    d = cfg.data
    for paths in (d.corpus, d.eval_corpus):
        if paths:
            find_files(paths)
    if cfg.train.init_from and not Path(cfg.train.init_from).expanduser().is_dir():
        raise UserError(f"--init-from {cfg.train.init_from}: no such folder")
    if d.prepared and not Path(d.prepared).is_dir():
        raise UserError(f"--prepared {d.prepared}: no such folder (make it with pipeline/prepare.py)")
    for split in (None if d.corpus or d.prepared else d.split, d.eval_split):
        if split and d.data_dir is not None:
            find_split(d.data_dir, split)


def check_writable(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.{os.getpid()}"  # one per process: ranks share the folder
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise UserError(f"output folder {folder} is not writable ({err.strerror})") from None


def checkpoint_to_resume(output: Path, resume: str | None) -> checkpoint.Checkpoint | None:
    """The newest checkpoint to continue from: with --resume it must exist, with --resume auto it may,
    without either there must be none (a new run never overwrites an old one)."""
    existing = checkpoint.latest(output)
    if existing is not None and resume is None:
        raise UserError(f"{output} already holds checkpoints (newest {existing.name}): pass --resume (or "
                        f"--resume auto) to continue, or choose another --output-dir")
    if existing is None and resume == "yes":
        raise UserError(f"--resume: no checkpoint in {output / 'checkpoints'} (--resume auto starts fresh then)")
    return checkpoint.load(existing) if existing is not None else None


def main(argv: list[str] | None = None) -> int:
    """Pretrain BERT in five steps:
    1. settings: YAML config + overrides, fleet collective init, CPU threads;
    2. data: corpus -> vocabulary -> NSP pairs (cached) -> masked, sharded batches;
    3. model: BertForPretraining (fresh, resumed, or a published BERT's with --init-from) + losses under
       to_static, then fleet.distributed_model;
    4. loop: steps with progress, metrics, checkpoints, clean stop on SIGTERM/Ctrl-C;
    5. summary: the seed's two lines, loss.png, optional held-out evaluation.
    """
    args = build_parser().parse_args(argv)
    if args.verbose:
        show_paddle_warnings()
    if args.resume == "yes" and (args.init_from or any(o.startswith("train.init_from=") for o in args.override)):
        raise UserError("--init-from starts a new run and --resume continues one: pass one of them (or "
                        "--resume auto, which starts from --init-from only when there is no checkpoint yet)")
    cfg, pretrained, sample_notice = resolve_config(args)
    if args.print_config:
        print(config_yaml(cfg), end="")
        return 0
    output = Path(cfg.train.output_dir)
    check_writable(output)
    # rank 0 (or a lone process) holds the output folder until the end; the kernel frees it if we die
    lock = FolderLock(output, "training run") if os.environ.get("PADDLE_TRAINER_ID", "0") == "0" else None
    rank, world, devices = init_distributed(cfg, args.verbose)
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    if sample_notice:
        log.warning(sample_notice)
    if cfg.train.warmup_steps >= cfg.train.steps:
        log.warning("train.warmup_steps (%d) is not below train.steps (%d): the learning rate never reaches "
                    "train.lr (%g); lower it, e.g. -o train.warmup_steps=%d", cfg.train.warmup_steps,
                    cfg.train.steps, cfg.train.lr, cfg.train.steps // 10)
    local_ranks = int(os.environ.get("PADDLE_LOCAL_SIZE", world))
    threads = set_cpu_threads(cfg.train.threads, local_ranks) if paddle.get_device() == "cpu" else 0
    ckpt = checkpoint_to_resume(output, args.resume)

    given = pretrained.tokenizer if pretrained else None
    objective = objective_of(cfg)
    tokenizer, data = objective.data(cfg, output, ckpt is not None, given)
    cfg = with_settings(cfg, {"model.vocab_size": len(tokenizer.vocab)})
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
    elif pretrained is not None:
        trainer.start_from(pretrained)
    if rank == 0:
        save_config(cfg, output / "config.yaml")
        tokenizer.save(output)  # vocab.json, and tokenizer.json for WordPiece
        keep_metrics_until(output / "metrics.jsonl", trainer.step)
    log.info("%d %s (%d steps/epoch), vocabulary %d, %d rank(s), %d CPU threads, %d parameters",
             len(data), objective.unit, steps_per_epoch, len(tokenizer.vocab), world, threads,
             sum(int(np.prod(p.shape)) for p in trainer.model.parameters()))

    dev = objective.evaluation(cfg, tokenizer) if objective.evaluation else None
    result = run_loop(trainer, data, output, dev)
    if rank == 0:
        report(trainer, tokenizer, devices, result, argv, dev, heads_trained=not (pretrained and pretrained.fresh))
    if lock is not None:
        lock.release()
    return 0


def report_dev(trainer: Trainer, dev) -> None:
    """The best dev evaluation of a fine-tuning run (its line, eval.json, and what its evaluation writes: the
    dev predictions, a confusion matrix) and which checkpoint it is."""
    output = trainer.output
    best = checkpoint.best(output)
    if trainer.best_figures is None:
        if best is not None:
            log.info("best checkpoint (by the dev metric): %s, from before this resume", best)
        return
    figures = trainer.best_figures
    print(f"best checkpoint {best.name if best else '?'} (step {figures['step']}): " + dev.describe(figures))
    metrics = {"best_checkpoint": best.name if best else None, "metric": dev.metric, **figures}
    write_text_atomic(output / "eval.json", json.dumps(metrics, indent=1))
    dev.write(output, trainer.best_logits)


def report(trainer: Trainer, tokenizer: Tokenizer, devices: str, result: LoopResult, argv: list[str] | None,
           dev=None, heads_trained: bool = True) -> None:
    """Rank 0's ending: loss.png, then the resume hint, or the seed's two lines and the evaluation (the
    masked-LM figures only where the heads were ever trained: not from an encoder-only folder)."""
    cfg, output = trainer.cfg, trainer.output
    plot_losses(output / "metrics.jsonl", output / "loss.png")
    if result.stopped:
        cmd = " ".join(["python", "pipeline/train.py", *(argv if argv is not None else sys.argv[1:])])
        print(f"stopped at step {trainer.step} of {cfg.train.steps}; checkpoint saved. Resume with: "
              f"{cmd if '--resume' in cmd else cmd + ' --resume'}")
        return
    if result.out_of_time:
        log.info("train.max_minutes=%g reached at step %d of %d", cfg.train.max_minutes, trainer.step, cfg.train.steps)
    objective = objective_of(cfg)
    if result.steps:
        print(objective.summary(cfg, result.losses, result.steps))
        print(f"{result.pairs / result.seconds:.1f} {objective.unit}/sec on {devices}")
    log.info("%d steps in %.1f s, now at step %d; outputs in %s", result.steps, result.seconds, trainer.step, output)
    if objective.evaluation is not None:  # fine-tuning: its dev file's figures, not pretraining's
        if dev is not None:
            report_dev(trainer, dev)
        return
    metrics: dict = {}
    try:
        pairs = held_out_pairs(cfg, tokenizer) if heads_trained else None
    except UserError as err:  # the run is done and saved: odd held-out text only loses its figures
        log.warning("held-out masked-LM figures not measured: %s", err)
        pairs = None
    if pairs is not None:
        metrics = evaluate(trainer.model, pairs, tokenizer, cfg.data.max_len)
        print(format_metrics(metrics))
    retrieval = held_out_retrieval(cfg)
    if retrieval is not None:
        metrics["retrieval"] = retrieval_figures_of(trainer.model, cfg, tokenizer, retrieval)
        print(format_retrieval(metrics["retrieval"], retrieval, cfg.model.pooling))
    if metrics:
        write_text_atomic(output / "eval.json", json.dumps(metrics, indent=1))


if __name__ == "__main__":
    run_cli(main)
