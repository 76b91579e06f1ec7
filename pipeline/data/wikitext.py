"""Find, download and verify WikiText-2, and read it into sentences of whitespace tokens."""
from __future__ import annotations

import itertools
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import SPLITS
from pipeline.core.errors import UserError
from pipeline.core.files import atomic_folder, file_digest

ARCHIVE_URL = "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip"
ARCHIVE_SHA1 = "3c914d17d80b1459be871a5039ac23e752a53cbe"
ARCHIVE_NAME = "wikitext-2-v1.zip"
CACHE_ENV = "BERT_PIPELINE_CACHE"
# Shipped inside the package for machines without internet: the validation and test splits, unchanged
# (CC BY-SA 3.0; see pipeline/sample/README.md and LICENSE).
SAMPLE_ARCHIVE = Path(__file__).resolve().parent.parent / "sample" / "wikitext-2-sample.zip"


class DownloadError(UserError):
    """The official archive could not be fetched (no network, a refused connection, a timeout)."""


def cache_home() -> Path:
    """Where downloads and prepared arrays go: $BERT_PIPELINE_CACHE or ~/.cache/paddle-bert-pipeline."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "paddle-bert-pipeline")


def sha1_of(path: Path) -> str:
    return file_digest(path, "sha1")


def split_file_name(split: str) -> str:
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r} (choose from {', '.join(SPLITS)})")
    return f"wiki.{split}.tokens"


def download(url: str, dest: Path, sha1: str) -> Path:
    """Download `url` to `dest` through a temporary name, with a progress bar; verify its SHA-1.

    A wrong checksum removes the download and raises UserError, so nothing untrusted stays.
    """
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=30) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {dest.name}",
                      disable=None) as bar:
                for block in iter(lambda: response.read(1 << 16), b""):
                    out.write(block)
                    bar.update(len(block))
        actual = sha1_of(tmp)
        if actual != sha1:
            raise UserError(f"download of {url} is corrupt: SHA-1 {actual}, expected {sha1}")
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"cannot download {url} ({getattr(err, 'reason', err)}); without internet, "
                        f"pass --data-dir DIR holding wiki.train.tokens or {ARCHIVE_NAME}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def extract(archive: Path, dest: Path) -> Path:
    """Unpack `archive` into `dest` through a temporary folder renamed at the end."""
    if dest.is_dir():
        return dest
    try:
        with atomic_folder(dest) as tmp, zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                check_member(archive, member)
            zf.extractall(tmp)
    except (zipfile.BadZipFile, OSError) as err:
        raise UserError(f"cannot unpack {archive}: {err}") from None
    return dest


def check_member(archive: Path, member: zipfile.ZipInfo) -> None:
    """Refuse an entry that would land outside the target folder (an absolute path, a `..` step, a
    drive letter) or that is a link: a hostile archive must not write anywhere else (zip-slip)."""
    name = member.filename.replace("\\", "/")
    parts = Path(name).parts
    is_link = (member.external_attr >> 16) & 0o170000 == 0o120000
    if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]) or is_link:
        raise UserError(f"{archive} is not a safe archive: entry {member.filename!r} "
                        f"{'is a link' if is_link else 'points outside the folder'}")


def fetch_official(cache_dir: Path | None = None, url: str = ARCHIVE_URL, sha1: str = ARCHIVE_SHA1) -> Path:
    """Download (once) and unpack the official archive; return the folder with the split files."""
    cache_dir = cache_dir or cache_home()
    archive = cache_dir / ARCHIVE_NAME
    unpacked = cache_dir / "wikitext-2-v1"
    if unpacked.is_dir():
        return _split_folder(unpacked)
    if not archive.is_file() or sha1_of(archive) != sha1:
        download(url, archive, sha1)
    return _split_folder(extract(archive, unpacked))


def official_or_sample(cache_dir: Path | None = None) -> tuple[Path, bool]:
    """The official WikiText-2 (downloaded once), or, where it cannot be downloaded, the sample shipped
    with the package; and whether it is the sample."""
    try:
        return fetch_official(cache_dir), False
    except DownloadError:
        return SAMPLE_ARCHIVE, True


def _split_folder(folder: Path) -> Path:
    """The folder itself or its `wikitext-2/` child, whichever holds wiki.*.tokens files."""
    for candidate in (folder, folder / "wikitext-2"):
        if any((candidate / split_file_name(s)).is_file() for s in SPLITS):
            return candidate
    return folder


def find_split(data_dir: str | Path | None, split: str, cache_dir: Path | None = None) -> Path:
    """Path of `wiki.<split>.tokens`: from `data_dir` (a folder or the zip archive), else downloaded."""
    name = split_file_name(split)
    if data_dir is None:
        folder = fetch_official(cache_dir)
    else:
        given = Path(data_dir).expanduser()
        if not given.exists():
            raise UserError(f"data folder not found: {given}")
        if given.is_dir() and (given / ARCHIVE_NAME).is_file() and not (_split_folder(given) / name).is_file():
            given = given / ARCHIVE_NAME
        if given.is_file():
            if not zipfile.is_zipfile(given):
                raise UserError(f"{given} is neither a folder nor a zip archive of WikiText-2")
            target = (cache_dir or cache_home()) / f"unpacked-{sha1_of(given)[:12]}"
            given = extract(given, target)
        folder = _split_folder(given)
    path = folder / name
    if not path.is_file():
        found = sorted(p.name for p in folder.glob("wiki.*.tokens"))
        raise UserError(f"no {name} in {folder} (found: {', '.join(found) or 'nothing'})")
    return path


@dataclass
class Sentences:
    """A corpus as flat token ids plus sentence and document boundaries (no nested lists); a WikiText
    document is a paragraph (a line of two or more sentences).

    `token_ids` index `words`, the distinct tokens as written; `forms` holds their lower-cased forms
    and `counts` counts the forms. Lower-casing the ~10^4 distinct words instead of every line is what
    the seed's `line.lower()` amounts to, at a fraction of the cost.
    """

    token_ids: np.ndarray  # [num_tokens] int32, indices into `words`
    words: list[str]
    forms: list[str]
    counts: Counter
    sentence_starts: np.ndarray  # [num_sentences + 1] offsets into token_ids
    document_starts: np.ndarray  # [documents + 1] offsets into sentences


class _TokenIds:
    """Turns batches of word strings into int32 ids, numbering words in order of appearance, so only
    one batch of strings is alive at a time (memory stays near the size of the final arrays)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.chunks: list[np.ndarray] = []

    def add(self, words: list[str]) -> None:
        new = set(words).difference(self.ids)
        self.ids.update(zip(new, itertools.count(len(self.ids))))
        self.chunks.append(np.fromiter(map(self.ids.__getitem__, words), dtype=np.int32, count=len(words)))

    def result(self) -> tuple[np.ndarray, list[str]]:
        ids = np.concatenate(self.chunks) if self.chunks else np.zeros(0, dtype=np.int32)
        return ids, list(self.ids)


def read_sentences(path: Path, batch_tokens: int = 1 << 20) -> Sentences:
    """Paragraphs as in the seed: lines with at least two sentences split on ' . ', lower-cased."""
    numbering = _TokenIds()
    pending: list[str] = []
    sentence_lengths: list[int] = []
    document_sizes: list[int] = []
    number = 0
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if " . " not in line:
                    continue
                sentences = line.strip().split(" . ")
                if len(sentences) < 2:
                    continue
                for sentence in sentences:
                    words = sentence.split()
                    pending.extend(words)
                    sentence_lengths.append(len(words))
                document_sizes.append(len(sentences))
                if len(pending) >= batch_tokens:
                    numbering.add(pending)
                    pending = []
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text (line {number + 1})") from None
    except OSError as err:
        raise UserError(f"cannot read {path}: {err.strerror}") from None
    numbering.add(pending)
    if not document_sizes:
        raise UserError(f"{path} holds no paragraph of two or more sentences (' . ' separated)")
    token_ids, words = numbering.result()
    forms = [w.lower() for w in words]
    counts: Counter = Counter()
    for form, n in zip(forms, np.bincount(token_ids, minlength=len(words)).tolist()):
        counts[form] += n
    sentence_starts = np.zeros(len(sentence_lengths) + 1, dtype=np.int64)
    np.cumsum(sentence_lengths, out=sentence_starts[1:])
    document_starts = np.zeros(len(document_sizes) + 1, dtype=np.int64)
    np.cumsum(document_sizes, out=document_starts[1:])
    return Sentences(token_ids, words, forms, counts, sentence_starts, document_starts)
