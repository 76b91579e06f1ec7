"""Quality per minute: held-out MLM accuracy (known words) and perplexity against training wall time,
for this pipeline's 10-minute recipe, the recipe it replaced, and Hugging Face `BertForPreTraining`
(PyTorch) as users run it, one after the other on this machine.

    python bench/quality.py --data-dir ../shared/data/wikitext-2 [--minutes 10] [--runs new,previous,huggingface]

This project: `fleetrun --nproc_per_node 2 pipeline/train.py -c configs/bert_tiny_10min.yaml` (2 CPU
processes) with train.max_minutes set to the budget, checkpoints every 50 steps, and the checkpoints
nearest each tenth of the budget evaluated afterwards on the test split. `previous` is the same command
with the settings of the recipe before issue 17 (post-LN, 15% masking, a step schedule).
Hugging Face: one process with all cores (PyTorch's own threads), the previous recipe's settings and the
same PretrainingData batches (same pairs, order and masks), AdamW with the same schedule, evaluated on
the same schedule with the clock paused. Prints a table, writes bench/results/quality.json and
bench/quality.png (the README's figure). Needs the bench extra (torch, transformers) for the Hugging Face side.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.common import DEFAULT_DATA, ROOT, print_table, run_measured, write_json  # noqa: E402

CONFIG = ROOT / "configs" / "bert_tiny_10min.yaml"
# configs/bert_tiny_10min.yaml as it was before issue 17: what `previous` and Hugging Face run
PREVIOUS = ["model.norm=post", "model.linear_bias=true", "model.gated=false", "model.activation=relu",
            "model.ffn_size=256", "model.dropout=0.1", "data.mask_prob=0.15", "train.steps=2400",
            "train.batch_size=128", "train.lr=2e-3", "train.warmup_steps=150", "train.decay_to=steps",
            "train.beta2=0.999", "train.grad_clip=0", "train.batch_ramp_steps=0", "train.nsp=true"]
RECIPES = {"new": [], "previous": PREVIOUS}
POINTS = 10  # evaluations per run
SAVE_EVERY = 50  # steps between the checkpoints a run leaves for evaluation


def held_out(cfg, data_dir: str, vocab):
    from pipeline.data.wikitext import find_split
    from pipeline.data.wikitext_pairs import wikitext_examples

    return wikitext_examples(find_split(data_dir, "test"), cfg.data.max_len, cfg.data.min_freq, cfg.data.seed, None,
                             vocab=vocab).pairs


def run_paddle(data_dir: str, minutes: float, overrides: list[str]) -> list[dict]:
    """Train with 2 ranks under the time budget, then evaluate the checkpoints nearest each tenth of it."""
    out = Path(tempfile.mkdtemp(prefix="bench-quality-"))
    settings = [f"train.max_minutes={minutes}", f"train.save_every={SAVE_EVERY}", "train.keep_checkpoints=100000",
                *overrides]
    cmd = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(out / "log"),
           "pipeline/train.py", "-c", str(CONFIG), "--data-dir", data_dir, "--split", "valid", "--output-dir",
           str(out), *(arg for s in settings for arg in ("-o", s))]
    print("running:", " ".join(cmd), flush=True)
    run_measured(cmd, timeout=60 * minutes + 600)
    records = map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
    seconds = {r["step"]: r["training_seconds"] for r in records}
    return evaluate_checkpoints(out, data_dir, seconds, 60 * minutes)


def evaluate_checkpoints(out: Path, data_dir: str, seconds: dict[int, float], budget: float) -> list[dict]:
    """Evaluate, for each tenth of the budget, the first checkpoint saved after it (and the last one)."""
    from pipeline.core.runtime import setup_process_for_paddle

    setup_process_for_paddle()
    from pipeline import checkpoint
    from pipeline.core.export_format import VOCAB
    from pipeline.core.tokenizer import WhitespaceTokenizer
    from pipeline.core.vocab import Vocab
    from pipeline.evaluate import evaluate
    from pipeline.model import BertForPretraining

    saved = sorted((int(p.name.split("_")[1]), p) for p in (out / "checkpoints").glob("step_*"))
    chosen = {next((s, p) for s, p in saved if seconds[s] >= budget * k / POINTS or s == saved[-1][0])
              for k in range(1, POINTS + 1)}
    vocab = Vocab.load(out / VOCAB)
    points, pairs = [], None
    for step, path in sorted(chosen):
        ckpt = checkpoint.load(path)
        cfg = ckpt.config
        pairs = pairs if pairs is not None else held_out(cfg, data_dir, vocab)
        model = BertForPretraining(cfg.model)
        checkpoint.apply_model_state(model, ckpt.model_state, path)
        metrics = evaluate(model, pairs, WhitespaceTokenizer(vocab), cfg.data.max_len)
        points.append({"step": step, "minutes": seconds[step] / 60, **metrics})
        print(f"  paddle step {step:5d} at {points[-1]['minutes']:5.2f} min: known-word accuracy "
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
    from pipeline.core.tokenizer import WhitespaceTokenizer
    from pipeline.data.batches import PretrainingData
    from pipeline.data.wikitext import find_split
    from pipeline.data.wikitext_pairs import wikitext_examples
    from pipeline.evaluate import encoding_figures, mlm_nsp_figures

    d = load_config(CONFIG, PREVIOUS).data
    examples = wikitext_examples(find_split(data_dir, "valid"), d.max_len, d.min_freq, d.seed, None)
    vocab = examples.vocab
    cfg = load_config(CONFIG, PREVIOUS, {"model.vocab_size": len(vocab)})
    tc = cfg.train
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
    parser.add_argument("--runs", default="new,previous,huggingface",
                        help="comma-separated, of: new (configs/bert_tiny_10min.yaml), previous (the recipe before "
                             "issue 17), huggingface (default: all three)")
    args = parser.parse_args()
    names = args.runs.split(",")
    unknown = sorted(set(names) - {*RECIPES, "huggingface"})
    if unknown:
        parser.error(f"unknown run(s): {', '.join(unknown)}")
    runs: dict[str, list[dict]] = {}
    for name in names:
        if name == "huggingface":
            runs["huggingface (torch)"] = run_huggingface(args.data_dir, args.minutes)
        else:
            runs[f"paddle {name} (2 ranks)"] = run_paddle(args.data_dir, args.minutes, RECIPES[name])
    rows = []
    for name, points in runs.items():
        for p in points:
            rows.append([name, f"{p['minutes']:.2f}", p["step"], round(p["mlm_accuracy_known"], 4),
                         round(p["mlm_accuracy_known"] / p["mlm_unigram_baseline_known"], 2),
                         round(p["mlm_perplexity"], 1), round(p["encoding_mean_cosine"], 3),
                         round(p["crane_cosine"], 3),
                         f"{p['nsp_accuracy']:.3f} ({p['nsp_majority_baseline']:.3f})"])
    print_table(f"held-out quality against training time ({args.minutes:g} min budget, test split)",
                ["run", "minutes", "step", "acc known", "x unigram", "perplexity", "token cos", "crane cos",
                 "NSP acc (majority)"], rows)
    summary = {}
    if "huggingface (torch)" in runs:
        theirs = runs["huggingface (torch)"]
        target = theirs[-1]["mlm_accuracy_known"]
        summary = {"huggingface_final_accuracy_known": target, "minutes_to_reach_it": {}}
        for name, points in runs.items():
            reached = minutes_to_reach(points, target)
            summary["minutes_to_reach_it"][name] = reached
            when = "never" if reached is None else f"{reached:.2f} min"
            print(f"{name} reaches Hugging Face's final known-word accuracy {target:.4f} after {when} "
                  f"(Hugging Face: {theirs[-1]['minutes']:.2f} min)")
    plot(runs, ROOT / "bench" / "quality.png")  # the README shows it
    write_json("quality", {"minutes": args.minutes, "runs": runs, **summary})


if __name__ == "__main__":
    main()
