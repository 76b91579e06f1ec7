"""Your own text: files, folders and globs of UTF-8 text, read as documents of sentences.

Documents are separated by blank lines; a line holds one or more sentences, split after `.!?` followed
by a space and after the Chinese `。！？` (no space needed). Bad files are refused with one line naming
the file; empty files are skipped and counted.
"""
from __future__ import annotations

import glob
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

from pipeline.core.errors import UserError
from pipeline.core.files import not_utf8

log = logging.getLogger(__name__)
TEXT_SUFFIXES = (".txt", ".md")
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|(?<=[。！？])\s*")


@dataclass
class CorpusFiles:
    """The files a --corpus list names, and how many were skipped as empty."""

    files: list[Path]
    empty: list[Path]


def find_files(paths: Sequence[str | Path]) -> CorpusFiles:
    """Files named directly, the *.txt / *.md files under folders (recursively), or glob matches."""
    found: list[Path] = []
    for given in paths:
        path = Path(given).expanduser()
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        elif path.is_file():
            found.append(path)
        else:
            matches = sorted(Path(m) for m in glob.glob(str(path), recursive=True) if Path(m).is_file())
            if not matches:
                raise UserError(f"--corpus {given}: no such file or folder, and no file matches it")
            found += matches
    files = list(dict.fromkeys(found))  # each file once, in order
    if not files:
        raise UserError(f"--corpus {' '.join(map(str, paths))}: no *.txt or *.md file found")
    empty = [f for f in files if f.stat().st_size == 0]
    return CorpusFiles([f for f in files if f not in empty], empty)


def text_files(paths: Sequence[str | Path]) -> list[Path]:
    """The non-empty files of a --corpus list (`find_files`); empty ones are skipped with a count, and a
    list of nothing but empty files is refused."""
    found = find_files(paths)
    if found.empty:
        log.warning("skipped %d empty file(s), e.g. %s", len(found.empty), found.empty[0])
    if not found.files:
        raise UserError(f"--corpus {' '.join(map(str, paths))}: every file is empty")
    return found.files


def split_sentences(line: str) -> list[str]:
    return [s.strip() for s in SENTENCE_END.split(line) if s and s.strip()]


def file_lines(path: Path, start: int = 0, end: int | None = None) -> Iterator[str]:
    """The lines of `path` (or of its bytes start..end, which begin at a line start), decoded strictly
    as UTF-8; a binary or non-UTF-8 file is refused, naming it and the line."""
    try:
        with open(path, "rb") as f:
            if start == 0 and b"\0" in f.read(8192):
                raise UserError(f"{path} looks binary (it holds NUL bytes): the corpus must be UTF-8 text")
            f.seek(start)
            position, number = start, 0
            for number, raw in enumerate(f, 1):
                if end is not None and position >= end:
                    return
                position += len(raw)
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise not_utf8(path, raw, f"at line {line_number(path, start, number)}") from None
                yield line.lstrip("\ufeff") if position == len(raw) else line  # a BOM opens the file only
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from None


def line_number(path: Path, start: int, number_in_range: int) -> int:
    """The line number in the file of line `number_in_range` of the bytes from `start` (errors only)."""
    with open(path, "rb") as f:
        return f.read(start).count(b"\n") + number_in_range


def file_documents(path: Path, start: int = 0, end: int | None = None) -> Iterator[list[str]]:
    """The documents of one file (or of its bytes start..end, which begin at a document start), read
    line by line: memory bounded by a document, not the file."""
    document: list[str] = []
    for line in file_lines(path, start, end):
        if line.strip():
            document.extend(split_sentences(line))
        elif document:
            yield document
            document = []
    if document:
        yield document


def read_documents(files: Sequence[Path]) -> Iterator[list[str]]:
    for path in files:
        yield from file_documents(path)
