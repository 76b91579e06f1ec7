"""Prepare your corpus ahead of training, streaming, into memory-mapped arrays:

    python pipeline/prepare.py --corpus texts/ --output-dir prepared/ -o data.tokenizer=wordpiece
    python pipeline/train.py --prepared prepared/

1. the tokenizer, learnt from the text as it streams past (WordPiece, or the whitespace vocabulary);
2. token ids, file by file in chunks of sentences, appended to tokens.bin, with the offsets of every
   sentence and document (sentence_starts.bin, document_starts.bin);
3. the NSP pairs (first, second, is_next) chosen document range by document range (pairs.bin);
4. index.json (counts, dtypes, settings, the files read), then the folder is renamed into place.
Memory stays bounded by a chunk, not by the corpus. No pickle: raw little-endian arrays + JSON.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

if __name__ == "__main__" and not __package__:
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import numpy as np

from pipeline.config import Config, load_config
from pipeline.corpus import file_documents, find_files
from pipeline.errors import UserError
from pipeline.examples import Pairs, build_pairs, choose_pairs
from pipeline.files import atomic_folder
from pipeline.tokenizer import Tokenizer, encode_documents, learn_tokenizer, load_tokenizer
from pipeline.vocab import Vocab

log = logging.getLogger("pipeline.prepare")
FORMAT = 1
INDEX = "index.json"
CHUNK_SENTENCES = 20000  # sentences tokenized and written at a time
CHUNK_DOCUMENTS = 50000  # documents paired at a time


def stream_documents(files: list[Path], bar=None) -> Iterator[list[str]]:
    """Documents file by file, line by line, advancing `bar` by each file's bytes when it is read."""
    for path in files:
        yield from file_documents(path)
        if bar is not None:
            bar.update(path.stat().st_size)


def progress(files: list[Path], what: str):
    from tqdm import tqdm

    return tqdm(total=sum(f.stat().st_size for f in files), unit="B", unit_scale=True, desc=what, disable=None)


def tokenizer_from_files(files: list[Path], cfg: Config) -> Tokenizer:
    """Pass 1: the tokenizer, from the text as it streams past."""
    d = cfg.data
    with progress(files, "learning the tokenizer") as bar:
        sentences = (s for doc in stream_documents(files, bar) for s in doc)
        return learn_tokenizer(sentences, d.tokenizer, d.vocab_size, d.lowercase, d.min_freq)


def write_ids(files: list[Path], tokenizer: Tokenizer, folder: Path, dtype: np.dtype) -> tuple[int, int, int]:
    """Pass 2: token ids and the sentence / document offsets, appended chunk by chunk; returns the
    numbers of tokens, sentences and documents."""
    tokens = sentences = docs = 0
    with open(folder / "tokens.bin", "wb") as tok_out, open(folder / "sentence_starts.bin", "wb") as sent_out, \
            open(folder / "document_starts.bin", "wb") as doc_out, progress(files, "tokenizing") as bar:
        sent_out.write(np.int64(0).tobytes())
        doc_out.write(np.int64(0).tobytes())
        pending: list[list[str]] = []

        def flush() -> None:
            nonlocal tokens, sentences, docs
            ids, index = encode_documents(pending, tokenizer)
            tok_out.write(ids.astype(dtype).tobytes())
            sent_out.write((tokens + index.sentence_starts[1:]).astype(np.int64).tobytes())
            doc_out.write((sentences + index.paragraph_starts[1:]).astype(np.int64).tobytes())
            tokens, sentences, docs = tokens + len(ids), sentences + len(index.sentence_starts) - 1, \
                docs + len(index.paragraph_starts) - 1
            pending.clear()

        count = 0
        for doc in stream_documents(files, bar):
            pending.append(doc)
            count += len(doc)
            if count >= CHUNK_SENTENCES:
                flush()
                count = 0
        if pending:
            flush()
    return tokens, sentences, docs


def write_pairs(folder: Path, max_len: int, seed: int) -> int:
    """Pass 3: the NSP pairs, document range by document range, from the offsets alone."""
    sentence_starts, document_starts = (np.fromfile(folder / f"{n}.bin", dtype=np.int64)
                                        for n in ("sentence_starts", "document_starts"))
    count, documents_total = 0, len(document_starts) - 1
    with open(folder / "pairs.bin", "wb") as out:
        for part, lo in enumerate(range(0, documents_total, CHUNK_DOCUMENTS)):
            rng = np.random.default_rng([seed, 0, part])
            first, second, is_next = choose_pairs(sentence_starts, document_starts, max_len, rng,
                                                  slice(lo, min(lo + CHUNK_DOCUMENTS, documents_total)))
            out.write(np.stack([first, second, is_next.astype(np.int64)], axis=1).astype(np.int64).tobytes())
            count += len(first)
    return count


def prepare_corpus(paths: list[str], cfg: Config, output: Path, tokenizer: Tokenizer | None = None) -> Path:
    """The whole preparation of `paths` into `output` (written to a temporary folder, renamed at the end)."""
    found = find_files(paths)
    if found.empty:
        log.warning("skipped %d empty file(s), e.g. %s", len(found.empty), found.empty[0])
    if not found.files:
        raise UserError(f"--corpus {' '.join(paths)}: every file is empty")
    start = time.perf_counter()
    tokenizer = tokenizer or tokenizer_from_files(found.files, cfg)
    dtype = np.dtype(np.uint16 if len(tokenizer.vocab) <= 1 << 16 else np.int32)
    with atomic_folder(output) as tmp:
        tokenizer.save(tmp)
        tokens, sentences, docs = write_ids(found.files, tokenizer, tmp, dtype)
        pairs = write_pairs(tmp, cfg.data.max_len, cfg.data.seed)
        if pairs == 0:
            raise UserError(f"--corpus {' '.join(paths)} makes no sentence pair of at most data.max_len="
                            f"{cfg.data.max_len} tokens: it needs documents of two sentences or more")
        index = {"format": FORMAT, "tokens": tokens, "sentences": sentences, "documents": docs, "pairs": pairs,
                 "token_dtype": dtype.name, "tokenizer": tokenizer.kind, "vocab_size": len(tokenizer.vocab),
                 "max_len": cfg.data.max_len, "seed": cfg.data.seed,
                 "files": [{"path": str(f), "bytes": f.stat().st_size} for f in found.files],
                 "seconds": round(time.perf_counter() - start, 2)}
        (tmp / INDEX).write_text(json.dumps(index, indent=1), encoding="utf-8")
    log.info("%d files, %d documents, %d sentences, %d tokens, %d pairs in %.1f s -> %s", len(found.files), docs,
             sentences, tokens, pairs, index["seconds"], output)
    return output


@dataclass
class MappedCorpus:
    """A prepared folder, memory-mapped: pairs are built row by row when a batch asks for them."""

    folder: Path
    index: dict
    tokenizer: Tokenizer
    tokens: np.ndarray
    sentence_starts: np.ndarray
    pairs: np.ndarray  # [P, 3] int64: first sentence, second sentence, is_next

    @classmethod
    def open(cls, folder: str | Path) -> "MappedCorpus":
        folder = Path(folder)
        try:
            index = json.loads((folder / INDEX).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"{folder} is not a prepared corpus (no {INDEX}): make one with "
                            f"python pipeline/prepare.py --corpus ... --output-dir {folder}") from None
        except (OSError, ValueError) as err:
            raise UserError(f"{folder / INDEX} is unreadable ({err})") from None
        if index.get("format") != FORMAT:
            raise UserError(f"{folder} was prepared by another version (format {index.get('format')}); prepare it again")
        tokenizer = load_tokenizer(folder, Vocab.load(folder / "vocab.json"))

        def mapped(name: str, dtype: str, shape: tuple) -> np.ndarray:
            path = folder / f"{name}.bin"
            expected = int(np.prod(shape)) * np.dtype(dtype).itemsize
            if not path.is_file() or path.stat().st_size != expected:
                raise UserError(f"{path} is missing or has the wrong size (expected {expected} bytes): prepare again")
            return np.memmap(path, dtype=dtype, mode="r", shape=shape)

        return cls(folder, index, tokenizer, mapped("tokens", index["token_dtype"], (index["tokens"],)),
                   mapped("sentence_starts", "int64", (index["sentences"] + 1,)),
                   mapped("pairs", "int64", (index["pairs"], 3)))

    def __len__(self) -> int:
        return len(self.pairs)

    def take(self, rows: np.ndarray, max_len: int) -> Pairs:
        """The padded pairs at `rows` (read from the maps)."""
        chosen = np.asarray(self.pairs[np.sort(rows)])
        order = np.argsort(np.argsort(rows))  # back to the order asked for
        chosen = chosen[order]
        return build_pairs(self.tokens, self.sentence_starts, chosen[:, 0], chosen[:, 1], chosen[:, 2],
                           self.tokenizer.vocab, max_len)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Prepare your own text for pretraining, streaming: tokenizer, token "
                                            "ids and NSP pairs as memory-mapped arrays (then train.py --prepared DIR).")
    p.add_argument("--corpus", action="append", required=True, metavar="PATH",
                   help="UTF-8 text: a file, a folder (*.txt, *.md, recursively) or a glob; repeatable")
    p.add_argument("--output-dir", required=True, help="the prepared folder to write")
    p.add_argument("-c", "--config", help="YAML config (default: configs/bert_tiny.yaml): data.* settings apply")
    p.add_argument("-o", "--override", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="e.g. -o data.tokenizer=wordpiece -o data.vocab_size=30000 -o data.max_len=128")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    cfg = load_config(args.config, args.override)
    prepare_corpus(args.corpus, cfg, Path(args.output_dir))
    return 0


if __name__ == "__main__":
    from pipeline.errors import run_cli

    run_cli(main)
