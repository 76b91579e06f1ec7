"""An export made by export/save.py, opened and checked: its manifest, vocabulary, program files and the
checksums the manifest recorded at export time."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.core.errors import UserError
from pipeline.core.export_format import ENCODER, MANIFEST, PRETRAINING, TOKEN_WEIGHTS, VOCAB
from pipeline.core.files import file_digest
from pipeline.core.vocab import Vocab


@dataclass
class ModelFolder:
    """An export made by export/save.py, checked for completeness."""

    path: Path
    manifest: dict
    vocab: Vocab

    @classmethod
    def open(cls, path: str | Path) -> "ModelFolder":
        path = Path(path)
        if not path.is_dir():
            raise UserError(f"model folder not found: {path} (make one with: python export/save.py)")
        try:
            manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise UserError(f"model folder {path} is incomplete: {MANIFEST} is missing") from None
        except (OSError, ValueError) as err:
            raise UserError(f"model folder {path}: {MANIFEST} is unreadable ({err})") from None
        if not (path / VOCAB).is_file():
            raise UserError(f"model folder {path} is incomplete: {VOCAB} is missing")
        vocab = Vocab.load(path / VOCAB)
        expected = manifest.get("model", {}).get("vocab_size")
        if expected != len(vocab):
            raise UserError(f"{VOCAB} in {path} has {len(vocab)} tokens but the model expects {expected}")
        folder = cls(path, manifest, vocab)
        folder.program_files(ENCODER)
        folder.verify(f"{ENCODER}.pdiparams")
        return folder

    def verify(self, name: str) -> None:
        """Refuse a weights file whose SHA-256 is not the one the manifest recorded at export time
        (a truncated copy, a flipped byte, another model's file). Measured: 7 ms for the tiny model, 0.33 s for 440 MB."""
        expected = self.manifest.get("sha256", {}).get(name)
        if expected is None:
            raise UserError(f"model folder {self.path}: the manifest records no checksum for {name}; re-export it")
        if file_digest(self.path / name) != expected:
            raise UserError(f"model folder {self.path}: {name} does not match the checksum in {MANIFEST} "
                            f"(damaged or replaced); re-export it with python export/save.py")

    @property
    def max_len(self) -> int:
        return int(self.manifest["max_len"])

    def token_weights(self) -> np.ndarray | None:
        """`weighted` pooling's weight per vocabulary id (checksummed, read without pickle); None for the
        other poolings."""
        if (self.manifest.get("embedding") or {}).get("pooling") != "weighted":
            return None
        if not (self.path / TOKEN_WEIGHTS).is_file():
            raise UserError(f"model folder {self.path} is incomplete: {TOKEN_WEIGHTS} is missing (its pooling is "
                            f"weighted)")
        self.verify(TOKEN_WEIGHTS)
        weights = np.load(self.path / TOKEN_WEIGHTS, allow_pickle=False)
        if weights.shape != (len(self.vocab),):
            raise UserError(f"model folder {self.path}: {TOKEN_WEIGHTS} holds {weights.shape} weights, not one per "
                            f"token of {VOCAB} ({len(self.vocab)})")
        return weights.astype(np.float32)

    def program_files(self, name: str) -> tuple[Path, Path]:
        """(program, parameters) of `name`: Paddle 3's .json, or a legacy .pdmodel."""
        params = self.path / f"{name}.pdiparams"
        for suffix in (".json", ".pdmodel"):
            program = self.path / f"{name}{suffix}"
            if program.is_file() and params.is_file():
                return program, params
        if name == PRETRAINING:
            raise UserError(f"{self.path} holds the encoder only; --fill-mask needs the heads: "
                            f"re-export with python export/save.py --with-heads")
        raise UserError(f"model folder {self.path} is incomplete: {name}.json/.pdmodel or {name}.pdiparams is missing")
