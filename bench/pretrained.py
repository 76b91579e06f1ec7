"""Starting from a published BERT (--init-from): import parity and load time, then continued pretraining
speed against Hugging Face on the same batches.

    python bench/pretrained.py [--data-dir ../shared/data/wikitext-2] [--steps 8] [--sizes small,base]

No published weights can be downloaded here, so transformers writes `BertForPreTraining` folders of random
weights with bert-base-uncased's conventions (a small one and a BERT-base-sized one, vocabulary 30,522).
1. Import: seconds to open the folder (config, safetensors, tokenizer) and build this project's model from it,
   and the largest difference of its encodings, MLM and NSP logits from transformers' on the same inputs.
2. Continued pretraining of the BERT-base folder on wiki.valid with `train.py --init-from` (batch 16, length
   128, one process, 2 threads), against transformers' `BertForPreTraining` (PyTorch eager, 2 threads) on
   the same batches, masks and schedule: pairs/s after the first steps.
Needs the bench extra (torch, transformers). Writes bench/results/pretrained.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from pipeline.core.runtime import setup_process_for_paddle  # noqa: E402

setup_process_for_paddle()

import numpy as np  # noqa: E402

from bench.common import DEFAULT_DATA, print_table, run_measured, write_json  # noqa: E402

BATCH, LENGTH = 16, 128


def write_folder(folder: Path, size: str):
    import torch
    import transformers

    from tests.pipeline.test_pretrained import write_transformers_folder

    folder.mkdir(parents=True, exist_ok=True)
    return write_transformers_folder(folder, transformers, torch, size)


def import_parity(folder: Path, hf, vocab: list[str]) -> dict:
    from pipeline.pretrained import open_pretrained
    from tests.helpers.runs import random_inputs
    from tests.pipeline.test_pretrained import outputs, project_model, transformers_outputs

    start = time.perf_counter()
    pretrained = open_pretrained(folder)
    ours = project_model(pretrained, len(vocab))
    load_s = time.perf_counter() - start
    arrays = random_inputs(len(vocab), 4, 64, 0)
    positions = np.tile(np.arange(64), (4, 1))
    encodings, mlm, nsp = outputs(ours, arrays, positions)
    their_encodings, their_mlm, their_nsp = transformers_outputs(hf, arrays)
    worst = {"encodings": 0.0, "mlm": 0.0}
    for row, n in enumerate(arrays["valid_length"]):
        worst["encodings"] = max(worst["encodings"], float(np.abs(encodings[row, :n] - their_encodings[row, :n]).max()))
        worst["mlm"] = max(worst["mlm"], float(np.abs(mlm[row, :n] - their_mlm[row, :n]).max()))
    worst["nsp"] = float(np.abs(nsp - their_nsp).max())
    parameters = sum(p.numel() for p in hf.parameters())
    return {"parameters_m": parameters / 1e6, "load_s": load_s, **{f"max_abs_{k}": v for k, v in worst.items()}}


def pipeline_speed(folder: Path, data_dir: str, steps: int, out: Path) -> float:
    run_measured([sys.executable, "pipeline/train.py", "--init-from", str(folder), "--data-dir", data_dir, "--split",
                  "valid", "--output-dir", str(out), "--steps", str(steps), "-o", f"data.max_len={LENGTH}",
                  "-o", f"train.batch_size={BATCH}", "-o", "train.log_every=1", "-o", "train.warmup_steps=0"])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    first, last = records[1], records[-1]  # after the first step (graph building)
    return (last["step"] - first["step"]) * BATCH / (last["elapsed"] - first["elapsed"])


def huggingface_speed(folder: Path, data_dir: str, steps: int, out: Path) -> float:
    """transformers' BertForPreTraining from the same folder, on the batches the pipeline's run used."""
    import torch
    import transformers

    from bench.quality import huggingface_step
    from pipeline.config import load_config
    from pipeline.data.sources import training_data

    torch.set_num_threads(2)
    cfg = load_config(out / "config.yaml")
    from pipeline.pretrained import open_pretrained

    _, data = training_data(cfg, out, resume=False, given=open_pretrained(folder).tokenizer)
    model = transformers.BertForPreTraining.from_pretrained(str(folder)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    times = []
    for step in range(steps):
        batch = data.batch(step, BATCH)
        start = time.perf_counter()
        huggingface_step(model, optimizer, scheduler, batch, 0.0)
        times.append(time.perf_counter() - start)
    return (steps - 1) * BATCH / sum(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA), help="folder with wiki.valid.tokens")
    parser.add_argument("--steps", type=int, default=8, help="continued-pretraining steps of each side (default 8)")
    parser.add_argument("--sizes", default="small,base", help="folders to import: small, base (default both)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-pretrained-"))
    rows = []
    for size in args.sizes.split(","):
        hf, vocab = write_folder(folder / size, size)
        rows.append({"size": size, **import_parity(folder / size, hf, vocab)})
        del hf
    print_table("Import of a transformers BertForPreTraining folder (random weights): load and parity",
                ["size", "parameters (M)", "open + build s", "max |encodings|", "max |MLM logits|", "max |NSP logits|"],
                [[r["size"], r["parameters_m"], r["load_s"], r["max_abs_encodings"], r["max_abs_mlm"], r["max_abs_nsp"]]
                 for r in rows])
    speed = {}
    if "base" in args.sizes.split(","):
        run = folder / "continued"
        speed["pipeline (train.py --init-from)"] = pipeline_speed(folder / "base", args.data_dir, args.steps, run)
        speed["Hugging Face BertForPreTraining (PyTorch eager)"] = huggingface_speed(folder / "base", args.data_dir,
                                                                                     args.steps, run)
        base = speed["Hugging Face BertForPreTraining (PyTorch eager)"]
        print_table(f"Continued pretraining from the BERT-base folder on wiki.valid, batch {BATCH} x {LENGTH}, "
                    f"{args.steps} steps (the first left out)", ["run", "pairs/s", "x Hugging Face"],
                    [[name, value, value / base] for name, value in speed.items()])
    write_json("pretrained", {"import": rows, "continued_pairs_per_sec": speed, "batch": BATCH, "length": LENGTH})


if __name__ == "__main__":
    main()
