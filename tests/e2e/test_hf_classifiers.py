"""End to end: Hugging Face classifiers and rerankers both ways. A BertForSequenceClassification folder
written by transformers (random weights; 1 label = a reranker, 3 = a classifier) exports with --from-hf and
gives transformers' logits and CrossEncoder's scores; a fine-tuned run exported with --format huggingface loads
in transformers with no missing keys, the same id2label and the same logits. Skipped without the bench extra."""
import json

import numpy as np
import pytest

from infer.encoder import Encoder
from tests.conftest import TINY, needs, run_script
from tests.helpers.service import request, start, stop

WORDS = ["a", "crane", "is", "flying", "the", "river", "bank", "he", "left", "came", "driver", "over", "city"]
SPECIALS = ["[PAD]", *[f"[unused{i}]" for i in range(99)], "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TEXTS = ["a crane is flying", ("the river bank", "he left"), "the driver came over the city"]


def classifier_folder(path, labels: int):
    torch = needs("torch", "bench")
    transformers = needs("transformers", "bench")
    config = transformers.BertConfig(vocab_size=len(SPECIALS) + len(WORDS), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                                     num_labels=labels)
    if labels > 1:
        config.id2label = {i: name for i, name in enumerate(["neg", "neu", "pos"][:labels])}
        config.label2id = {name: i for i, name in config.id2label.items()}
    torch.manual_seed(labels)
    model = transformers.BertForSequenceClassification(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)  # far from the defaults, so that a wrong mapping shows
    model.save_pretrained(path, safe_serialization=True)
    (path / "vocab.txt").write_text("\n".join(SPECIALS + WORDS) + "\n", encoding="utf-8")
    return model.eval(), transformers.BertTokenizer(str(path / "vocab.txt"))


def transformers_logits(model, tokenizer, texts) -> np.ndarray:
    import torch

    rows = []
    with torch.no_grad():
        for text in texts:
            batch = tokenizer(*([text] if isinstance(text, str) else list(text)), return_tensors="pt")
            rows.append(model(**batch).logits[0].numpy())
    return np.array(rows)


@pytest.mark.parametrize("labels", [1, 3])
def test_a_transformers_classifier_exports_with_its_logits(tmp_path, labels):
    model, tokenizer = classifier_folder(tmp_path / "hf", labels)
    result = run_script("export/save.py", "--from-hf", str(tmp_path / "hf"), "--export-dir", str(tmp_path / "x"))
    assert result.returncode == 0, result.stderr
    encoder = Encoder(tmp_path / "x", backend="paddle")
    assert encoder.head["kind"] == ("reranker" if labels == 1 else "classifier")
    got = np.array([o.logits for o in encoder.run_items(encoder.preprocess(TEXTS))])
    np.testing.assert_allclose(got, transformers_logits(model, tokenizer, TEXTS), atol=1e-4)
    if labels == 3:  # and through HTTP
        proc, url = start(tmp_path / "x")
        try:
            status, answer, _ = request(url + "/predict", json.dumps({"inputs": "a crane is flying",
                                                                      "raw_scores": True}).encode())
        finally:
            stop(proc)
        by_label = {a["label"]: a["score"] for a in answer}
        np.testing.assert_allclose([by_label[n] for n in ("neg", "neu", "pos")], got[0], atol=1e-4)
    if labels == 1:  # what sentence-transformers' CrossEncoder answers for the same folder: sigmoid of the logit
        cross_encoder = needs("sentence_transformers", "bench").CrossEncoder(str(tmp_path / "hf"), device="cpu")
        pairs = [("a crane", "is flying"), ("a crane", "he left"), ("a crane", "the river bank")]
        want = cross_encoder.predict(pairs)
        np.testing.assert_allclose([s[0][1] for s in encoder.predict(pairs)], want, atol=1e-4)
        proc, url = start(tmp_path / "x")
        try:  # through HTTP: /rerank's scores are CrossEncoder's, best first
            status, ranked, _ = request(url + "/rerank", json.dumps(
                {"query": "a crane", "texts": [b for _, b in pairs]}).encode())
        finally:
            stop(proc)
        assert status == 200 and [r["index"] for r in ranked] == list(np.argsort(-want))
        np.testing.assert_allclose([r["score"] for r in ranked], np.sort(want)[::-1], atol=1e-4)
    else:
        assert encoder.head["labels"] == ["neg", "neu", "pos"]


def test_a_fine_tuned_run_loads_in_transformers_with_its_labels_and_logits(tmp_path):
    transformers = needs("transformers", "bench")
    needs("torch", "bench")
    lines = ["sentence\tlabel"] + [f"{w} the crane\t{'pos' if i % 2 else 'neg'}" for i, w in enumerate(WORDS * 4)]
    (tmp_path / "train.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run_script("pipeline/train.py", "--output-dir", str(tmp_path / "run"), "--steps", "3", *TINY,
                        "-o", "train.objective=classify", "-o", f"data.labels={tmp_path / 'train.tsv'}",
                        "-o", "data.tokenizer=wordpiece", "-o", "data.vocab_size=64")
    assert result.returncode == 0, result.stderr[-2000:]
    for args in (["--format", "huggingface"], []):
        result = run_script("export/save.py", "--output-dir", str(tmp_path / "run"), *args)
        assert result.returncode == 0, result.stderr
    model, info = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "run" / "huggingface",
                                                                             output_loading_info=True)
    assert not any(info.values()), info
    assert model.config.id2label == {0: "neg", 1: "pos"}
    config = json.loads((tmp_path / "run" / "huggingface" / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "run" / "huggingface")
    encoder = Encoder(tmp_path / "run" / "inference", backend="paddle")
    texts = ["a crane is flying", "the river bank"]
    got = np.array([o.logits for o in encoder.run_items(encoder.preprocess(texts))])
    np.testing.assert_allclose(transformers_logits(model.eval(), tokenizer, texts), got, atol=1e-4)
