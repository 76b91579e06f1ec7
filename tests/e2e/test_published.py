"""A published sentence-transformers BERT, exported with `export/save.py --from-hf` and no training step,
gives sentence-transformers' own embeddings: in-process and through the service's TEI and OpenAI routes,
in each pooling mode, in both of its folder formats, with a tokenizer.json that pads and truncates; the
same folder continues pretraining with --init-from; what it cannot be is refused in one line.
(Needs the [bench] extra: torch, transformers, sentence-transformers; the OpenAI client test needs openai.)"""
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import needs, run_script
from tests.helpers.checks import assert_user_error
from tests.helpers.published import TEXTS, write_sentence_transformers_folder
from tests.helpers.service import embed, request, start, stop

needs("sentence_transformers", "bench")

MAX_LEN = 40
# varied texts: TEXTS, and two over the model's maximum (cut at it, as sentence-transformers cuts)
LONG = ["crane " * 60, "Café 东京 🙂 " * 30]
# (pooling, Normalize module, the format most published models have, tokenizer.json pads and truncates)
FOLDERS = {"mean-normalized-legacy-padded": ("mean", True, True, True),
           "cls-current-padded": ("cls", False, False, True),
           "max-legacy": ("max", False, True, False)}


@dataclass
class Published:
    kind: str  # a key of FOLDERS
    model: object  # the SentenceTransformer
    folder: Path
    export: Path  # export/save.py --from-hf of it

    @property
    def normalize(self) -> bool:
        return FOLDERS[self.kind][1]


def publish(kind: str, root: Path) -> Published:
    pooling, normalize, legacy, limits = FOLDERS[kind]
    model = write_sentence_transformers_folder(root / "st", pooling, normalize, legacy, limits, max_len=MAX_LEN)
    result = run_script("export/save.py", "--from-hf", str(root / "st"), "--export-dir", str(root / "export"))
    assert result.returncode == 0, result.stderr
    return Published(kind, model, root / "st", root / "export")


@pytest.fixture(scope="module", params=sorted(FOLDERS))
def published(request, tmp_path_factory) -> Published:
    return publish(request.param, tmp_path_factory.mktemp(request.param))


@pytest.fixture(scope="module")
def padded(tmp_path_factory) -> Published:
    """The usual published shape: legacy format, mean pooling, normalised, a tokenizer.json that pads."""
    return publish("mean-normalized-legacy-padded", tmp_path_factory.mktemp("padded"))


def test_the_manifest_records_what_the_folder_declares(published):
    model, folder, export = published.model, published.folder, published.export
    manifest = json.loads((export / "manifest.json").read_text())
    pooling, normalize, _, _ = FOLDERS[published.kind]
    assert manifest["embedding"] == {"pooling": pooling, "normalize": normalize, "dimensions": 32}
    assert manifest["max_len"] == MAX_LEN == model.max_seq_length
    assert manifest["from_hf"] == str(folder.resolve()) and "checkpoint_step" not in manifest
    saved = json.loads((export / "tokenizer.json").read_text())
    assert saved["padding"] is None and saved["truncation"] is None  # the folder's own limits never apply


def test_in_process_embeddings_equal_sentence_transformers(published):
    from infer.encoder import Encoder

    model, export = published.model, published.export
    encoder = Encoder(export, device="cpu")
    texts = TEXTS + LONG
    np.testing.assert_allclose(encoder.embed(texts, truncate=True), model.encode(texts), atol=1e-4)
    np.testing.assert_allclose(encoder.embed(texts, normalize=True, truncate=True),
                               model.encode(texts, normalize_embeddings=True), atol=1e-4)
    tokens = model.tokenizer(TEXTS, add_special_tokens=True)["input_ids"]
    ours = [[encoder.vocab[t] for t in items[0][0]] for items in encoder.tokenize_for_embedding(TEXTS)]
    assert ours == tokens  # the same ids, text by text


def test_the_service_answers_tei_and_openai_as_sentence_transformers(published):
    model, export = published.model, published.export
    proc, url = start(export, "--workers", "1")
    try:
        texts = TEXTS + LONG
        status, vectors, _ = embed(url, {"inputs": texts, "truncate": True})
        assert status == 200, vectors
        np.testing.assert_allclose(vectors, model.encode(texts, normalize_embeddings=True), atol=1e-4)
        raw = model.encode(texts, normalize_embeddings=False)
        if not published.normalize:  # no Normalize module: the raw vector
            status, vectors, _ = embed(url, {"inputs": texts, "truncate": True, "normalize": False})
            np.testing.assert_allclose(vectors, raw, atol=1e-4)
        status, one, _ = embed(url, {"inputs": TEXTS[0]})
        assert status == 200 and np.asarray(one).shape == (1, 32)
        status, answer, _ = request(url + "/v1/embeddings", json.dumps({"input": TEXTS, "model": "m"}).encode())
        assert status == 200, answer
        assert [d["index"] for d in answer["data"]] == list(range(len(TEXTS))) and answer["object"] == "list"
        np.testing.assert_allclose([d["embedding"] for d in answer["data"]],
                                   model.encode(TEXTS, normalize_embeddings=True), atol=1e-4)
        tokens = sum(len(ids) for ids in model.tokenizer(TEXTS)["input_ids"])
        assert answer["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    finally:
        assert stop(proc)[0] == 0


def test_the_openai_client_gets_the_same_vectors(padded):
    openai = needs("openai", "test")
    model, export = padded.model, padded.export
    proc, url = start(export, "--workers", "1")
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        answer = client.embeddings.create(model="local", input=TEXTS)  # the client asks for base64
        expected = model.encode(TEXTS, normalize_embeddings=True)
        np.testing.assert_allclose([d.embedding for d in answer.data], expected, atol=1e-4)
        short = client.embeddings.create(model="local", input=TEXTS[:3], dimensions=8, encoding_format="float")
        head = expected[:3, :8] / np.linalg.norm(expected[:3, :8], axis=1, keepdims=True)
        np.testing.assert_allclose([d.embedding for d in short.data], head, atol=1e-4)
        with pytest.raises(openai.BadRequestError, match="dimensions"):
            client.embeddings.create(model="local", input=TEXTS[:1], dimensions=33)
        with pytest.raises(openai.UnprocessableEntityError, match="max_len"):
            client.embeddings.create(model="local", input=LONG[:1])
    finally:
        assert stop(proc)[0] == 0


def test_init_from_a_published_folder_whose_tokenizer_pads(padded, tmp_path):
    """The bug this fixes: a tokenizer.json padded to 128 made every sentence 128 tokens long."""
    folder = padded.folder
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(" . ".join(TEXTS[i:i + 4]) for i in range(0, 12, 2)) * 20, encoding="utf-8")
    result = run_script("pipeline/train.py", "--init-from", str(folder), "--corpus", str(corpus), "--output-dir",
                        str(tmp_path / "out"), "--steps", "2", "-o", "data.max_len=32", "-o", "train.batch_size=8",
                        "-o", "train.warmup_steps=0")
    assert result.returncode == 0, result.stderr
    assert "MLM loss" in result.stdout


@pytest.mark.parametrize("change, fragment", [
    (lambda f: (f / "modules.json").write_text(json.dumps(json.loads((f / "modules.json").read_text()) + [
        {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}])), "Dense"),
    (lambda f: (f / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode": "lasttoken"})), "lasttoken"),
    (lambda f: (f / "model.safetensors").rename(f / "pytorch_model.bin"), "pickle"),
    (lambda f: (f / "config.json").write_text((f / "config.json").read_text().replace('"bert"', '"roberta"')),
     "model_type"),
    (lambda f: (f / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": 1000})), "max_seq_length"),
])
def test_what_the_folder_cannot_be_is_refused_in_one_line(padded, tmp_path, change, fragment):
    folder = padded.folder
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    change(copy)
    result = run_script("export/save.py", "--from-hf", str(copy), "--export-dir", str(tmp_path / "export"))
    assert_user_error(result, fragment)
    assert not (tmp_path / "export").exists()


def test_an_encoder_only_folder_has_no_heads_to_export(padded, tmp_path):
    folder = padded.folder
    assert_user_error(run_script("export/save.py", "--from-hf", str(folder), "--with-heads", "--export-dir",
                                 str(tmp_path / "x")), "no pretraining heads")
    assert_user_error(run_script("export/save.py", "--from-hf", str(folder), "--format", "huggingface"), "--from-hf")
