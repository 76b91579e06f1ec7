"""Small file helpers: digests, files or folders written atomically (temporary name + rename), and UTF-8 text
read with one clear line for a file in another encoding."""
from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from pipeline.core.errors import UserError


def likely_encoding(raw: bytes) -> str:
    """iconv's name of the encoding that non-UTF-8 `raw` bytes most likely are: UTF-16 by its byte-order mark,
    GB18030 where they decode as mostly CJK text, else Windows-1252 (a superset of Latin-1)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16"
    try:
        text = raw.decode("gb18030")
    except UnicodeDecodeError:
        return "WINDOWS-1252"
    wide = [c for c in text if ord(c) > 127]
    cjk = sum("\u3000" <= c <= "\u9fff" or "\uff00" <= c <= "\uffef" for c in wide)
    return "GB18030" if wide and cjk / len(wide) > 0.9 else "WINDOWS-1252"


def not_utf8(path: Path | str, raw: bytes, where: str) -> UserError:
    """The one-line refusal of a file that is not UTF-8: where the bad byte is and how to convert it."""
    return UserError(f"{path} is not UTF-8 text (invalid byte {where}); convert it, e.g. "
                     f"iconv -f {likely_encoding(raw)} -t UTF-8 {path} > converted.txt")


def read_utf8(path: Path | str) -> str:
    """A text file's content (a UTF-8 byte-order mark dropped); not UTF-8 is `not_utf8`'s one line."""
    raw = Path(path).read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise not_utf8(path, raw, f"at line {line_of(raw, err.start)}") from None


def line_of(raw: bytes, offset: int) -> int:
    """The line (counted from 1) that byte `offset` of `raw` is on."""
    return raw.count(b"\n", 0, offset) + 1


def file_digest(path: Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` so that readers see the old file or the new one, never half of it."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_folder(target: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`, to fill; when the block succeeds it takes
    `target`'s place (an existing `target` is moved aside first and removed only after), when it fails
    it is removed. Readers see the old folder or the new one, never half of one."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    tmp.chmod(0o755)
    try:
        yield tmp
        old = target.with_name(f".{target.name}.old")
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            target.rename(old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class FolderLock:
    """An exclusive lock on a folder (`fcntl.flock` on `<folder>/.lock`), held until `release` or the end
    of the process. The kernel drops it when the holder dies, even by SIGKILL, so a crashed run never
    blocks the next one; a second live holder is refused at once."""

    def __init__(self, folder: Path, what: str):
        import fcntl

        self.path = Path(folder) / ".lock"
        self._file = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "another process"
            self._file.close()
            raise UserError(f"{folder} is in use by {holder}: one {what} per folder (wait for it, stop it, "
                            f"or choose another folder)") from None
        self._file.seek(0)
        self._file.truncate()
        self._file.write(f"process {os.getpid()} on {os.uname().nodename}\n")
        self._file.flush()

    def release(self) -> None:
        self._file.close()  # closing the file drops the lock
