"""Quality per minute: held-out MLM accuracy (known words) and perplexity against training wall time,
for this pipeline and for Hugging Face `BertForPreTraining` (PyTorch) of the same size, data, masking
and optimizer, one after the other on this machine.

    python bench/quality.py --data-dir ../shared/data/wikitext-2 [--minutes 10] [--only paddle|huggingface]

This project: `fleetrun --nproc_per_node 2 pipeline/train.py -c configs/bert_tiny_10min.yaml` (2 CPU
processes), a checkpoint every tenth of the budget, each evaluated afterwards on the test split.
Hugging Face: one process with all cores (PyTorch's own threads), the same PretrainingData batches
(same pairs, order and masks), AdamW with the same schedule, evaluated on the same schedule with the
clock paused. Prints a table, writes bench/results/quality.json and bench/results/quality.png.
Needs the bench extra (torch, transformers) for the Hugging Face side.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.common import DEFAULT_DATA, RESULTS, ROOT, print_table, run_measured, write_json  # noqa: E402

CONFIG = ROOT / "configs" / "bert_tiny_10min.yaml"
POINTS = 10  # evaluations per run


def held_out(cfg, data_dir: str, vocab):
    from pipeline.wikitext_cache import wikitext_examples
    from pipeline.wikitext import find_split

    return wikitext_examples(find_split(data_dir, "test"), cfg.data.max_len, cfg.data.min_freq, cfg.data.seed, None,
                   vocab=vocab).pairs


def run_paddle(data_dir: str, minutes: float) -> list[dict]:
    """Train with 2 ranks under the time budget, then evaluate every checkpoint it left."""
    from pipeline.config import load_config

    cfg = load_config(CONFIG)
    out = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    every = max(1, cfg.train.steps // POINTS)
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(out / "log"),
           "pipeline/train.py", "-c", str(CONFIG), "--data-dir", data_dir, "--split", "valid", "--output-dir",
           str(out), "-o", f"train.max_minutes={minutes}", "-o", f"train.save_every={every}",
           "-o", "train.keep_checkpoints=1000"]
    print("running:", " ".join(cmd), flush=True)
    run_measured(cmd, timeout=60 * minutes + 600)
    elapsed = {r["step"]: r["elapsed"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}
    return evaluate_checkpoints(out, data_dir, elapsed)


def evaluate_checkpoints(out: Path, data_dir: str, elapsed: dict[int, float]) -> list[dict]:
    from pipeline.runtime import setup_process_for_paddle

    setup_process_for_paddle()
    from pipeline import checkpoint
    from pipeline.evaluate import evaluate
    from pipeline.model import BertForPretraining
    from pipeline.tokenizer import WhitespaceTokenizer
    from pipeline.vocab import Vocab

    vocab = Vocab.load(out / "vocab.json")
    points, pairs = [], None
    for path in sorted((out / "checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1])):
        ckpt = checkpoint.load(path)
        cfg = ckpt.config
        pairs = pairs if pairs is not None else held_out(cfg, data_dir, vocab)
        model = BertForPretraining(cfg.model)
        checkpoint.apply_model_state(model, ckpt.model_state, path)
        metrics = evaluate(model, pairs, WhitespaceTokenizer(vocab), cfg.data.max_len, mask_prob=cfg.data.mask_prob)
        points.append({"step": ckpt.step, "minutes": elapsed[ckpt.step] / 60, **metrics})
        print(f"  paddle step {ckpt.step:5d} at {points[-1]['minutes']:5.2f} min: known-word accuracy "
              f"{metrics['mlm_accuracy_known']:.3f}, perplexity {metrics['mlm_perplexity']:.1f}", flush=True)
    return points


def huggingface_training(cfg):
    """BertForPreTraining (PyTorch) of cfg's size, with the pipeline's AdamW groups and lr_factor schedule."""
    import torch
    import transformers

    from export.huggingface import bert_config
    from pipeline.trainer import lr_factor

    tc = cfg.train
    torch.manual_seed(tc.seed)
    model = transformers.BertForPreTraining(transformers.BertConfig(**bert_config(cfg)))
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr)
    return model, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, tc))


def attention_mask(lens, width: int):
    import numpy as np
    import torch

    return torch.from_numpy((np.arange(width)[None, :] < lens[:, None]).astype(np.int64))


def huggingface_functions(model):
    """numpy-in, numpy-out views of the model for pipeline.evaluate's figures."""
    import numpy as np
    import torch

    def pretraining(ids, token_type_ids, lens, positions):
        with torch.no_grad():
            out = model(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(token_type_ids),
                        attention_mask=attention_mask(lens, ids.shape[1]))
        mlm = np.take_along_axis(out.prediction_logits.numpy(), positions[..., None], axis=1)
        return mlm, out.seq_relationship_logits.numpy()

    def encoder(ids, token_type_ids, lens):
        with torch.no_grad():
            return model.bert(input_ids=torch.from_numpy(ids), token_type_ids=torch.from_numpy(token_type_ids),
                              attention_mask=attention_mask(lens, ids.shape[1])).last_hidden_state.numpy()
    return pretraining, encoder


def huggingface_step(model, optimizer, scheduler, b: dict, grad_clip: float) -> None:
    """One update on the pipeline's batch `b` (MLM labels -100 where nothing is predicted)."""
    import numpy as np
    import torch

    labels = np.full(b["input_ids"].shape, -100, dtype=np.int64)
    rows, cols = np.nonzero(b["mlm_weights"])
    labels[rows, b["pred_positions"][rows, cols]] = b["mlm_labels"][rows, cols]
    out = model(input_ids=torch.from_numpy(b["input_ids"]), token_type_ids=torch.from_numpy(b["token_type_ids"]),
                attention_mask=attention_mask(b["valid_length"], b["input_ids"].shape[1]),
                labels=torch.from_numpy(labels), next_sentence_label=torch.from_numpy(b["nsp_labels"]))
    out.loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad()
    scheduler.step()


def run_huggingface(data_dir: str, minutes: float) -> list[dict]:
    """BertForPreTraining (PyTorch) on the same batches, schedule and budget; evaluated every tenth."""
    from pipeline.config import load_config
    from pipeline.dataset import PretrainingData
    from pipeline.wikitext_cache import wikitext_examples
    from pipeline.evaluate import encoding_figures, mlm_nsp_figures
    from pipeline.tokenizer import WhitespaceTokenizer
    from pipeline.wikitext import find_split

    cfg = load_config(CONFIG)
    tc, d = cfg.train, cfg.data
    examples = wikitext_examples(find_split(data_dir, "valid"), d.max_len, d.min_freq, d.seed, None)
    vocab = examples.vocab
    cfg.model.vocab_size = len(vocab)
    data = PretrainingData(examples.pairs, vocab, d.max_len, d.mask_prob, d.dynamic_masking, d.seed)
    pairs = held_out(cfg, data_dir, vocab)
    model, optimizer, scheduler = huggingface_training(cfg)
    pretraining, encoder = huggingface_functions(model)

    def evaluate_now(step: int, seconds: float) -> dict:
        model.eval()
        metrics = mlm_nsp_figures(pretraining, pairs, vocab, d.max_len)
        metrics.update(encoding_figures(encoder, pairs, WhitespaceTokenizer(vocab), d.max_len))
        model.train()
        print(f"  huggingface step {step:5d} at {seconds / 60:5.2f} min: known-word accuracy "
              f"{metrics['mlm_accuracy_known']:.3f}, perplexity {metrics['mlm_perplexity']:.1f}", flush=True)
        return {"step": step, "minutes": seconds / 60, **metrics}

    points, trained, step = [], 0.0, 0
    budget = 60 * minutes
    next_eval = budget / POINTS
    model.train()
    while trained < budget and step < tc.steps:
        batch = data.batch(step, tc.batch_size)
        start = time.perf_counter()
        huggingface_step(model, optimizer, scheduler, batch, tc.grad_clip)
        step += 1
        trained += time.perf_counter() - start
        if trained >= next_eval or trained >= budget or step == tc.steps:
            points.append(evaluate_now(step, trained))
            next_eval += budget / POINTS
    return points


def minutes_to_reach(points: list[dict], target: float) -> float | None:
    """First time (linearly interpolated) at which `mlm_accuracy_known` reaches `target`."""
    previous = {"minutes": 0.0, "mlm_accuracy_known": 0.0}
    for p in points:
        if p["mlm_accuracy_known"] >= target:
            span = p["mlm_accuracy_known"] - previous["mlm_accuracy_known"]
            share = (target - previous["mlm_accuracy_known"]) / span if span > 0 else 1.0
            return previous["minutes"] + share * (p["minutes"] - previous["minutes"])
        previous = p
    return None


def plot(runs: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc, ppl) = plt.subplots(1, 2, figsize=(10, 4))
    for name, points in runs.items():
        minutes = [p["minutes"] for p in points]
        acc.plot(minutes, [p["mlm_accuracy_known"] for p in points], marker="o", label=name)
        ppl.plot(minutes, [p["mlm_perplexity"] for p in points], marker="o", label=name)
    baseline = next(iter(runs.values()))[0]["mlm_unigram_baseline_known"]
    acc.axhline(baseline, color="grey", linestyle="--", label="unigram baseline")
    acc.set(xlabel="training minutes", ylabel="held-out MLM accuracy (known words)")
    ppl.set(xlabel="training minutes", ylabel="held-out MLM perplexity", yscale="log")
    acc.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA), help="folder with wiki.valid/test.tokens")
    parser.add_argument("--minutes", type=float, default=10.0, help="training budget of each run (default 10)")
    parser.add_argument("--only", choices=("paddle", "huggingface"), help="run one side only")
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {}
    if args.only != "huggingface":
        runs["paddle (2 ranks)"] = run_paddle(args.data_dir, args.minutes)
    if args.only != "paddle":
        runs["huggingface (torch)"] = run_huggingface(args.data_dir, args.minutes)
    rows = []
    for name, points in runs.items():
        for p in points:
            rows.append([name, f"{p['minutes']:.2f}", p["step"], round(p["mlm_accuracy_known"], 4),
                         round(p["mlm_accuracy_known"] / p["mlm_unigram_baseline_known"], 2),
                         round(p["mlm_perplexity"], 1), round(p["encoding_mean_cosine"], 3), round(p["crane_cosine"], 3)])
    print_table(f"held-out quality against training time ({args.minutes:g} min budget, test split)",
                ["run", "minutes", "step", "acc known", "x unigram", "perplexity", "token cos", "crane cos"], rows)
    summary = {}
    if len(runs) == 2:
        (_, ours), (_, theirs) = runs.items()
        target = theirs[-1]["mlm_accuracy_known"]
        reached = minutes_to_reach(ours, target)
        summary = {"huggingface_final_accuracy_known": target, "paddle_minutes_to_reach_it": reached}
        print(f"\nthis pipeline reaches Hugging Face's final known-word accuracy {target:.4f} after "
              f"{'never' if reached is None else f'{reached:.2f} min'} (Hugging Face: {theirs[-1]['minutes']:.2f} min)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(runs, RESULTS / "quality.png")
    write_json("quality", {"minutes": args.minutes, "runs": runs, **summary})


if __name__ == "__main__":
    main()
