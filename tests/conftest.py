"""Shared fixtures: a small WikiText-like corpus the tests write themselves, and a tiny trained model."""
from __future__ import annotations

import importlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.runtime import setup_process_for_paddle

ROOT = Path(__file__).resolve().parent.parent
setup_process_for_paddle()  # as every command does, before the tests import paddle

# A tiny model that trains in a second or two; every test that trains uses it.
TINY = ["-o", "model.hidden_size=32", "-o", "model.num_layers=2", "-o", "model.num_heads=2",
        "-o", "model.ffn_size=64", "-o", "data.max_len=32", "-o", "data.min_freq=1",
        "-o", "train.batch_size=32", "-o", "train.lr=0.005", "-o", "train.warmup_steps=0", "-o", "train.lr_decay=none",
        "-o", "train.log_every=1"]


def needs(module: str, extra: str, load: bool = True):
    """`module`, imported (or only found, without `load`); without it the test skips in one line naming the
    extra that installs it, except under CI=true, where .ci/run installs every extra: there it fails the run."""
    if not load:
        if importlib.util.find_spec(module) is None:
            message = f"needs the [{extra}] extra: pip install -e \".[{extra}]\""
            pytest.fail(message) if os.environ.get("CI") == "true" else pytest.skip(message)
        return None
    if os.environ.get("CI") == "true":
        return importlib.import_module(module)
    return pytest.importorskip(module, reason=f"needs the [{extra}] extra: pip install -e \".[{extra}]\"")


def write_corpus(path: Path, paragraphs: int, seed: int, words: int = 80) -> None:
    """WikiText-style lines: headings (skipped), and paragraphs of ' . '-separated sentences."""
    rng = np.random.default_rng(seed)
    vocab = [f"w{i}" for i in range(words)] + ["<unk>", "the", "a", "crane", "is", "flying"]
    zipf = 1.0 / np.arange(1, len(vocab) + 1)
    zipf /= zipf.sum()
    lines = []
    for p in range(paragraphs):
        lines += ["", f" = Heading {p} = ", ""]
        sentences = [" ".join(rng.choice(vocab, rng.integers(3, 10), p=zipf)) for _ in range(rng.integers(2, 7))]
        lines.append(" " + " . ".join(sentences) + " . ")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory):
    """Downloads and example caches go to a temporary folder, never ~/.cache."""
    os.environ["BERT_PIPELINE_CACHE"] = str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wikitext")
    for split, paragraphs, seed in (("train", 300, 1), ("valid", 120, 2), ("test", 120, 3)):
        write_corpus(folder / f"wiki.{split}.tokens", paragraphs, seed)
    return folder


def run_script(*args: str, stdin: str | None = None, timeout: int = 300, env: dict | None = None,
               ) -> subprocess.CompletedProcess:
    """Run a repository script as a user would (`python pipeline/train.py ...`) from the repo root."""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=ROOT, input=stdin, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, corpus_dir) -> Path:
    """Output folder of a short training run of the tiny model (checkpoint at step 8)."""
    out = tmp_path_factory.mktemp("trained")
    result = run_script("pipeline/train.py", "--data-dir", str(corpus_dir), "--output-dir", str(out),
                        "--steps", "8", *TINY)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def exported(tmp_path_factory, trained) -> Path:
    """An inference export (with heads) of the tiny trained model."""
    export_dir = tmp_path_factory.mktemp("export") / "inference"
    result = run_script("export/save.py", "--output-dir", str(trained), "--export-dir", str(export_dir),
                        "--with-heads")
    assert result.returncode == 0, result.stderr
    return export_dir


def export_with(trained: Path, folder: Path, flag: str, says: str = "") -> Path:
    """The tiny trained model exported into `folder` with `flag` (--onnx or --int8), its output holding `says`."""
    needs("paddle2onnx", "onnx")
    needs("onnxruntime", "onnx")
    needs("ml_dtypes", "onnx")
    result = run_script("export/save.py", "--output-dir", str(trained), "--export-dir", str(folder / "inference"), flag)
    assert result.returncode == 0 and says in result.stdout, result.stdout + result.stderr
    return folder / "inference"


@pytest.fixture(scope="session")
def exported_onnx(trained, tmp_path_factory) -> Path:
    """The tiny trained model exported with its ONNX Runtime graph (--onnx)."""
    return export_with(trained, tmp_path_factory.mktemp("onnx"), "--onnx")


@pytest.fixture(scope="session")
def exported_int8(trained, tmp_path_factory) -> Path:
    """The tiny trained model exported with its int8 graph (--int8), which reports its cosine to fp32."""
    return export_with(trained, tmp_path_factory.mktemp("int8"), "--int8",
                       "int8: embeddings of 12 varied texts within cosine")


def fine_tuned_export(folder: Path, train_file: str, text: str, objective: str) -> Path:
    """A tiny model fine-tuned for 3 steps (train.objective=`objective`) on `text`, exported."""
    (folder / train_file).write_text(text, encoding="utf-8")
    result = run_script("pipeline/train.py", "--output-dir", str(folder / "run"), "--steps", "3", *TINY,
                        "-o", f"train.objective={objective}", "-o", f"data.labels={folder / train_file}")
    assert result.returncode == 0, result.stderr[-2000:]
    result = run_script("export/save.py", "--output-dir", str(folder / "run"))
    assert result.returncode == 0, result.stderr
    return folder / "run" / "inference"


@pytest.fixture(scope="session")
def exported_reranker(tmp_path_factory) -> Path:
    """A tiny model fine-tuned on scores (one output: a reranker), exported: it answers every route but one."""
    rows = [f"w{i} the crane\tw{i % 5} is flying\t{(i % 5) / 2:.1f}" for i in range(64)]
    return fine_tuned_export(tmp_path_factory.mktemp("reranker"), "train.tsv",
                             "sentence1\tsentence2\tlabel\n" + "\n".join(rows) + "\n", "classify")


@pytest.fixture(scope="session")
def exported_tagger(tmp_path_factory) -> Path:
    """A tiny tagger fine-tuned on CoNLL columns, exported."""
    sentences = ["\n".join(f"w{(i + k) % 30} {'B-PER' if k == 0 else 'O'}" for k in range(5)) for i in range(64)]
    return fine_tuned_export(tmp_path_factory.mktemp("tagger"), "train.conll", "\n\n".join(sentences) + "\n", "tag")
