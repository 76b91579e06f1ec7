"""Preparing your own corpus at scale (pipeline/prepare.py): MB/s and peak memory as the corpus grows,
WordPiece's held-out <unk> share, and training speed from the memory maps against in-memory arrays.

    python bench/prepare.py [--data-dir ../shared/data/wikitext-2] [--sizes 50,200]

The corpora are WikiText-2 valid + test as plain text (documents separated by blank lines, sentences
ending in ". "), repeated to each size in MB. Each preparation runs in its own process (WordPiece, 30k
vocabulary), timed end to end (tokenizer training included) with the peak RSS of the process. Then: the
share of <unk> that WordPiece makes on wiki.test when trained on wiki.valid (WikiText's own literal
<unk> markers counted apart), and pairs/s training from a prepared folder against the same text as
in-memory arrays. Writes bench/results/prepare.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.common import DEFAULT_DATA, print_table, run_measured, write_json  # noqa: E402

VOCAB = 30000


def plain_text(data_dir: Path, splits: tuple[str, ...] = ("valid", "test")) -> str:
    """WikiText splits as a user's corpus would look: blank-line documents, '. ' sentences."""
    docs = []
    for split in splits:
        for line in (data_dir / f"wiki.{split}.tokens").read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("="):
                docs.append(line.replace(" . ", ". ").replace(" @-@ ", "-").replace(" @,@ ", ",").replace(" @.@ ", "."))
    return "\n\n".join(docs) + "\n"


def make_corpus(text: str, megabytes: int, folder: Path) -> Path:
    path = folder / f"corpus-{megabytes}mb.txt"
    block = text.encode("utf-8")
    with open(path, "wb") as out:
        written = 0
        while written < megabytes * 10 ** 6:
            out.write(block + b"\n\n")
            written += len(block) + 2
    return path


def bench_prepare(corpus: Path, out: Path) -> dict:
    result, wall, peak = run_measured([sys.executable, "pipeline/prepare.py", "--corpus", str(corpus), "--output-dir",
                                       str(out), "-o", "data.tokenizer=wordpiece", "-o", f"data.vocab_size={VOCAB}"])
    index = json.loads((out / "index.json").read_text())
    mb = corpus.stat().st_size / 10 ** 6
    return {"corpus_mb": round(mb, 1), "seconds": wall, "mb_per_sec": mb / wall, "peak_rss_mb": peak / 2 ** 20,
            "tokens": index["tokens"], "pairs": index["pairs"]}


def unk_share(data_dir: Path) -> dict:
    from pipeline.sources import wikitext_documents
    from pipeline.tokenizer import encode_documents, learn_tokenizer

    valid = [s for doc in wikitext_documents(data_dir / "wiki.valid.tokens") for s in doc]
    tokenizer = learn_tokenizer(valid, "wordpiece", 8000, True, 5)
    test = wikitext_documents(data_dir / "wiki.test.tokens")
    ids, _ = encode_documents(test, tokenizer)
    literal = sum(s.split().count("<unk>") for doc in test for s in doc)
    made = int((ids == 0).sum()) - literal
    return {"tokens": len(ids), "literal_unk_in_text": literal, "unk_made_by_wordpiece": made,
            "unk_made_share": made / len(ids)}


def training_speed(data_dir: Path, folder: Path, steps: int) -> dict:
    """pairs/s for wiki.valid with WordPiece: in-memory arrays against a prepared folder of the same text."""
    prepared = folder / "valid-prepared"
    valid_text = folder / "valid.txt"
    valid_text.write_text(plain_text(data_dir, ("valid",)), encoding="utf-8")
    flags = ["-o", "data.tokenizer=wordpiece", "-o", "data.vocab_size=8000", "--steps", str(steps), "-o", "train.log_every=1000"]
    run_measured([sys.executable, "pipeline/prepare.py", "--corpus", str(valid_text), "--output-dir", str(prepared),
                  "-o", "data.tokenizer=wordpiece", "-o", "data.vocab_size=8000"])
    rates = {}
    for name, source in (("in-memory arrays", ["--data-dir", str(data_dir), "--split", "valid"]),
                         ("memory maps (--prepared)", ["--prepared", str(prepared)])):
        out = folder / name.split()[0]
        run_measured([sys.executable, "pipeline/train.py", *source, "--output-dir", str(out), *flags])
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        first, last = records[len(records) // 4], records[-1]  # steady state: after the first quarter
        rates[name] = (last["step"] - first["step"]) * 64 / (last["elapsed"] - first["elapsed"])
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA), help="folder with wiki.valid/test.tokens")
    parser.add_argument("--sizes", default="50,200", help="corpus sizes in MB (default 50,200)")
    parser.add_argument("--steps", type=int, default=300, help="training steps for the speed comparison")
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    folder = Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    text = plain_text(data_dir)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        corpus = make_corpus(text, size, folder)
        rows.append(bench_prepare(corpus, folder / f"prepared-{size}"))
        corpus.unlink()
    print_table("pipeline/prepare.py, WordPiece 30k, end to end (tokenizer training included)",
                ["corpus MB", "seconds", "MB/s", "peak RSS MB", "tokens", "pairs"],
                [[r["corpus_mb"], round(r["seconds"], 1), round(r["mb_per_sec"], 2), round(r["peak_rss_mb"]),
                  r["tokens"], r["pairs"]] for r in rows])
    unk = unk_share(data_dir)
    print(f"\nWordPiece (8k, trained on wiki.valid) on wiki.test: {unk['unk_made_by_wordpiece']} <unk> of "
          f"{unk['tokens']} tokens made by the tokenizer ({100 * unk['unk_made_share']:.3f}%), besides "
          f"{unk['literal_unk_in_text']} literal <unk> markers that are in WikiText's text itself")
    speed = training_speed(data_dir, folder, args.steps)
    print_table("training pairs/s, wiki.valid with WordPiece, batch 64", ["data", "pairs/s", "x in-memory"],
                [[k, round(v, 1), round(v / speed["in-memory arrays"], 3)] for k, v in speed.items()])
    write_json("prepare", {"preparation": rows, "unk": unk, "training_pairs_per_sec": speed})


if __name__ == "__main__":
    main()
