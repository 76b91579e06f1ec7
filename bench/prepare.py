"""Preparing your own corpus at scale (pipeline/prepare.py) against the bare tokenizer library doing the
same work; what sampling the tokenizer's text costs in quality; WordPiece's held-out <unk> share; and
training speed from the memory maps against in-memory arrays.

    python bench/prepare.py [--data-dir ../shared/data/wikitext-2] [--sizes 50,200,400] [--quality-steps 300]

The corpora are WikiText-2 valid + test as plain text (documents separated by blank lines, sentences
ending in ". "), repeated to each size in MB. For each size, in its own process with its peak RSS (process
tree): pipeline/prepare.py end to end (WordPiece 30k, learnt from a data.tokenizer_sample_mb sample), then
the bare Hugging Face `tokenizers` library doing the same work (the same WordPiece trained on the first
data.tokenizer_sample_mb of text, then `encode_batch_fast` of every line). Then WordPiece 8k learnt from
samples of wiki.valid against all of it: <unk> share on wiki.test and held-out known-word accuracy after
--quality-steps of training. Writes bench/results/prepare.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench.common import DEFAULT_DATA, print_table, run_measured, write_json  # noqa: E402

VOCAB = 30000
BARE_LIBRARY = """
import sys, time
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
corpus, sample_bytes, vocab_size = sys.argv[1], int(float(sys.argv[2]) * 1e6), int(sys.argv[3])
tok = Tokenizer(models.WordPiece(unk_token="<unk>", max_input_chars_per_word=100))
tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
tok.decoder = decoders.WordPiece()
with open(corpus, encoding="utf-8") as f:
    sample = [line for line in f.read(sample_bytes).splitlines() if line.strip()]
trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=["<unk>", "<pad>", "<mask>", "<cls>", "<sep>"],
                                    show_progress=False)
tok.train_from_iterator(sample, trainer)
tokens, batch = 0, []
with open(corpus, encoding="utf-8") as f:
    for line in f:
        if line.strip():
            batch.append(line)
        if len(batch) == 5000:
            tokens += sum(len(e.ids) for e in tok.encode_batch_fast(batch, add_special_tokens=False))
            batch = []
tokens += sum(len(e.ids) for e in tok.encode_batch_fast(batch, add_special_tokens=False))
print(tokens)
"""


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


def bench_prepare(corpus: Path, out: Path, sample_mb: float) -> dict:
    """pipeline/prepare.py end to end, then the bare library's same work, on `corpus`."""
    _, wall, peak = run_measured([sys.executable, "pipeline/prepare.py", "--corpus", str(corpus), "--output-dir",
                                  str(out), "-o", "data.tokenizer=wordpiece", "-o", f"data.vocab_size={VOCAB}",
                                  "-o", f"data.tokenizer_sample_mb={sample_mb}"])
    index = json.loads((out / "index.json").read_text())
    shutil.rmtree(out)
    bare, bare_wall, bare_peak = run_measured([sys.executable, "-c", BARE_LIBRARY, str(corpus), str(sample_mb), str(VOCAB)])
    mb = corpus.stat().st_size / 10 ** 6
    return {"corpus_mb": round(mb, 1), "seconds": wall, "mb_per_sec": mb / wall, "peak_rss_mb": peak / 2 ** 20,
            "tokens": index["tokens"], "pairs": index["pairs"], "bare_seconds": bare_wall,
            "bare_mb_per_sec": mb / bare_wall, "bare_peak_rss_mb": bare_peak / 2 ** 20,
            "bare_tokens": int(bare.stdout.split()[-1]), "pipeline_speed_vs_bare": bare_wall / wall}


def sample_effect(data_dir: Path, folder: Path, steps: int) -> list[dict]:
    """WordPiece 8k learnt from samples of wiki.valid (as plain text) and from all of it: the <unk> share on
    wiki.test and, after `steps` of training, held-out known-word accuracy there."""
    valid, test = folder / "valid.txt", folder / "test.txt"
    valid.write_text(plain_text(data_dir, ("valid",)), encoding="utf-8")
    test.write_text(plain_text(data_dir, ("test",)), encoding="utf-8")
    rows = []
    for sample_mb in (0.25, 0.5, 0.0):
        out = folder / f"sample-{sample_mb}"
        run_measured([sys.executable, "pipeline/train.py", "--corpus", str(valid), "--eval-corpus", str(test),
                      "--output-dir", str(out), "--steps", str(steps), "-o", "data.tokenizer=wordpiece",
                      "-o", "data.vocab_size=8000", "-o", f"data.tokenizer_sample_mb={sample_mb}",
                      "-o", f"data.cache_dir={folder / 'cache'}", "-o", "train.log_every=1000"])
        metrics = json.loads((out / "eval.json").read_text())
        rows.append({"sample_mb": sample_mb or "all (1.1)", "unk_share": metrics["mlm_unk_share"],
                     "known_accuracy": metrics["mlm_accuracy_known"],
                     "x_unigram": metrics["mlm_accuracy_known"] / metrics["mlm_unigram_baseline_known"],
                     "perplexity": metrics["mlm_perplexity"]})
    return rows


def unk_share(data_dir: Path) -> dict:
    from pipeline.core.tokenizer import learn_tokenizer
    from pipeline.data.pretraining_examples import encode_documents
    from pipeline.data.sources import wikitext_documents

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
    parser.add_argument("--sizes", default="50,200,400", help="corpus sizes in MB (default 50,200,400)")
    parser.add_argument("--sample-mb", type=float, default=64.0, help="data.tokenizer_sample_mb (default 64)")
    parser.add_argument("--steps", type=int, default=300, help="training steps for the speed comparison")
    parser.add_argument("--quality-steps", type=int, default=300, help="training steps for the sampling effect")
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    folder = Path(tempfile.mkdtemp(prefix="bench-prepare-"))
    text = plain_text(data_dir)
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        corpus = make_corpus(text, size, folder)
        rows.append(bench_prepare(corpus, folder / f"prepared-{size}", args.sample_mb))
        corpus.unlink()
    print_table(f"Preparing a corpus, WordPiece 30k learnt from {args.sample_mb:g} MB: pipeline/prepare.py against "
                f"the bare tokenizers library (sampled training + encode_batch_fast), same corpus, same run",
                ["corpus MB", "pipeline s", "MB/s", "peak RSS MB", "bare library s", "MB/s", "peak RSS MB",
                 "pipeline speed / bare", "tokens (pipeline / bare)"],
                [[r["corpus_mb"], round(r["seconds"], 1), round(r["mb_per_sec"], 2), round(r["peak_rss_mb"]),
                  round(r["bare_seconds"], 1), round(r["bare_mb_per_sec"], 2), round(r["bare_peak_rss_mb"]),
                  round(r["pipeline_speed_vs_bare"], 2), f"{r['tokens']} / {r['bare_tokens']}"] for r in rows])
    sampling = sample_effect(data_dir, folder, args.quality_steps)
    print_table(f"WordPiece 8k learnt from a sample of wiki.valid or all of it; held out on wiki.test after "
                f"{args.quality_steps} steps", ["tokenizer_sample_mb", "<unk> share", "known-word accuracy",
                                                "x unigram", "perplexity"],
                [[r["sample_mb"], r["unk_share"], r["known_accuracy"], r["x_unigram"], r["perplexity"]] for r in sampling])
    unk = unk_share(data_dir)
    print(f"\nWordPiece (8k, trained on wiki.valid) on wiki.test: {unk['unk_made_by_wordpiece']} <unk> of "
          f"{unk['tokens']} tokens made by the tokenizer ({100 * unk['unk_made_share']:.3f}%), besides "
          f"{unk['literal_unk_in_text']} literal <unk> markers that are in WikiText's text itself")
    speed = training_speed(data_dir, folder, args.steps)
    print_table("training pairs/s, wiki.valid with WordPiece, batch 64", ["data", "pairs/s", "x in-memory"],
                [[k, round(v, 1), round(v / speed["in-memory arrays"], 3)] for k, v in speed.items()])
    write_json("prepare", {"preparation": rows, "sampling": sampling, "unk": unk, "training_pairs_per_sec": speed})
    shutil.rmtree(folder)


if __name__ == "__main__":
    main()
