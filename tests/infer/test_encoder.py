"""infer/encoder.py: encodings, pooling, batching order and fill-mask over an export."""
import json
import shutil

import numpy as np

from infer.encoder import Encoder
from tests.conftest import run_script


def test_embed_pools_as_the_manifest_says_and_an_older_export_pools_cls(exported, tmp_path):
    texts = ["a crane is flying", "flying"]
    encodings = Encoder(exported, device="cpu").encode(texts)
    old = tmp_path / "old"
    shutil.copytree(exported, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["embedding"]  # as exports were written before the field existed
    (old / "manifest.json").write_text(json.dumps(manifest))
    np.testing.assert_allclose(Encoder(old, device="cpu").embed(texts), [e.cls for e in encodings], atol=1e-6)
    manifest["embedding"] = {"pooling": "max", "normalize": True, "dimensions": 32}
    (old / "manifest.json").write_text(json.dumps(manifest))
    pooled = np.array([e.vectors.max(axis=0) for e in encodings])
    np.testing.assert_allclose(Encoder(old, device="cpu").embed(texts),
                               pooled / np.linalg.norm(pooled, axis=1, keepdims=True), atol=1e-6)


def test_sorted_batching_returns_input_order(exported):
    encoder = Encoder(exported, device="cpu")
    texts = ["a crane is flying", "the", ("w1 w2 w3", "w4 w5"), "w7 w8 w9 w10 w11 w12 the a"]
    batched = encoder.encode(texts, batch_size=2)
    for text, enc in zip(texts, batched):
        (alone,) = encoder.encode([text])
        assert enc.tokens == alone.tokens
        np.testing.assert_allclose(enc.vectors, alone.vectors, atol=1e-5)


def test_crane_depends_on_its_context(exported):
    result = run_script("infer/encode.py", "--text", "a crane is flying", "--compare", "a crane driver came",
                        "--word", "crane", "--model-dir", str(exported))
    assert result.returncode == 0, result.stderr
    similarity = float(result.stdout.strip().splitlines()[-1].split(":")[-1])
    assert -1 <= similarity < 0.999999


def test_fill_mask_lists_five_words_with_probabilities(exported):
    result = run_script("infer/encode.py", "--fill-mask", "a <mask> is flying", "--model-dir", str(exported))
    assert result.returncode == 0, result.stderr
    words = result.stdout.strip().split(": ", 1)[1].split(", ")
    probabilities = [float(w.rsplit(" ", 1)[1]) for w in words]
    assert len(words) == 5 and probabilities == sorted(probabilities, reverse=True)
