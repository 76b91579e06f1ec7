"""End to end: a tagger fine-tuned on CoNLL columns (sentences longer than the model's maximum split into
windows), its dev figures next to the baselines, its export's entities on every backend and through the
service, and Hugging Face BertForTokenClassification folders both ways (logits and entities equal to
transformers' and its pipeline's)."""
import json

import numpy as np
import paddle
import pytest

from infer.encoder import Encoder
from pipeline import checkpoint
from pipeline.core.tokenizer import pad_batch
from pipeline.model import BertForPretraining, TokenClassifier
from tests.conftest import TINY, needs, run_script
from tests.helpers.checks import assert_user_error
from tests.helpers.service import request, start, stop

PEOPLE, PLACES = ["w1", "w2", "w3"], ["w4", "w5", "w6"]
FILLER = [f"w{i}" for i in range(10, 40)] + ["the", "a", "is", "flying"]


def write_conll(path, sentences: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    blocks = ["-DOCSTART- -X- O"]
    for _ in range(sentences):
        lines = []
        for _ in range(rng.integers(4, 30)):  # up to 60 words: longer than data.max_len=32, so windows
            r = rng.random()
            if r < 0.15:
                lines += [f"{rng.choice(PEOPLE)} NN B-PER", f"{rng.choice(FILLER)} NN I-PER"]
            elif r < 0.3:
                lines.append(f"{rng.choice(PLACES)} NN B-LOC")
            else:
                lines.append(f"{rng.choice(FILLER)} NN O")
        blocks.append("\n".join(lines))
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def tagged(tmp_path_factory, trained):
    folder = tmp_path_factory.mktemp("tagged")
    write_conll(folder / "train.conll", 200, 0)
    write_conll(folder / "dev.conll", 40, 1)
    result = run_script("pipeline/train.py", "--output-dir", str(folder / "run"), "--init-from", str(trained),
                        "--steps", "60", *TINY, "-o", "train.objective=tag", "-o", "train.lr=0.005",
                        "-o", f"data.labels={folder / 'train.conll'}", "-o", f"data.eval_labels={folder / 'dev.conll'}",
                        "-o", "train.eval_every=20")
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, result


def test_the_tagger_beats_every_word_o_and_reports_per_type(tagged):
    folder, result = tagged
    figures = json.loads((folder / "run" / "eval.json").read_text())
    assert figures["metric"] == "f1" and figures["f1"] > 0.5, figures
    assert figures["baselines"]["all_o"]["f1"] == 0.0 and set(figures["per_type"]) == {"PER", "LOC"}
    line = next(line for line in result.stdout.splitlines() if line.startswith("best checkpoint"))
    assert "every word O 0.000" in line and "most frequent tag" in line and "by type: LOC" in line
    predictions = (folder / "run" / "dev_predictions.conll").read_text().split("\n\n")
    assert len(predictions) == 40 and len(predictions[0].splitlines()[0].split()) == 3
    assert "tag loss" in result.stdout
    scored = run_script("pipeline/evaluate.py", "--output-dir", str(folder / "run"), "--labels",
                        str(folder / "dev.conll"), "--predictions", str(folder / "p.conll"))
    assert scored.returncode == 0, scored.stderr
    again = json.loads(scored.stdout.splitlines()[-1])
    assert again["f1"] == pytest.approx(figures["f1"]) and "most_frequent_tag" in again["baselines"]
    assert (folder / "p.conll").read_text() == (folder / "run" / "dev_predictions.conll").read_text()


def test_the_export_tags_as_the_best_checkpoint_on_every_backend_and_through_the_service(tagged, tmp_path):
    needs("paddle2onnx", "onnx")
    folder, _ = tagged
    result = run_script("export/save.py", "--output-dir", str(folder / "run"), "--export-dir", str(tmp_path / "x"),
                        "--int8")
    assert result.returncode == 0, result.stderr
    ckpt = checkpoint.load(checkpoint.best(folder / "run"))
    model = BertForPretraining(ckpt.config.model)
    checkpoint.apply_model_state(model, ckpt.model_state, ckpt.path)
    tagger = TokenClassifier(model, 0.0)
    tagger.eval()
    encoder = Encoder(tmp_path / "x", backend="paddle")
    assert encoder.head["kind"] == "tagger" and encoder.head["labels"] == ["O", "B-LOC", "B-PER", "I-PER"]
    items = encoder.preprocess(["w1 w11 went to w4", "the w2 w12"])
    with paddle.no_grad():
        arrays = {k: paddle.to_tensor(v) for k, v in pad_batch(encoder.vocab, items).items()}
        want = tagger(arrays["input_ids"], arrays["token_type_ids"], arrays["valid_length"])[1].numpy()
    for item, output, row in zip(items, encoder.run_items(items), want):
        np.testing.assert_allclose(output.logits, row[:len(item[0])], atol=1e-5)
    long_text = " ".join(["w1 w11 the w4"] * 20)  # 80 words: tagged whole, in windows
    texts = ["w1 w11 went to w4", long_text]
    found = encoder.entities(texts)
    assert len(found[1]) >= 30 and found[1][-1]["end"] == len(long_text)
    assert found[0] and all(texts[0][e["start"]:e["end"]] == e["word"] for e in found[0])
    for backend, precision in (("onnxruntime", "fp32"), ("onnxruntime", "int8")):
        other = Encoder(tmp_path / "x", backend=backend, precision=precision).entities(texts)
        assert [[(e["entity_group"], e["start"], e["end"]) for e in t] for t in other] == \
               [[(e["entity_group"], e["start"], e["end"]) for e in t] for t in found], (backend, precision)
    result = run_script("infer/encode.py", "--model-dir", str(tmp_path / "x"), "--entities", "--text", texts[0],
                        "--backend", "paddle")
    assert result.returncode == 0 and result.stdout.startswith(f"{texts[0]!r}: "), result.stderr
    proc, url = start(tmp_path / "x")
    try:
        status, answer, _ = request(url + "/entities", json.dumps({"inputs": texts}).encode())
        assert status == 200 and [[(e["entity_group"], e["start"]) for e in t] for t in answer] == \
               [[(e["entity_group"], e["start"]) for e in t] for t in found]
        status, answer, _ = request(url + "/predict", json.dumps({"inputs": "w1"}).encode())
        assert status == 424, answer
    finally:
        stop(proc)


def test_a_transformers_tagger_exports_with_its_logits_and_its_pipelines_entities(tmp_path):
    torch = needs("torch", "bench")
    transformers = needs("transformers", "bench")
    words = ["alice", "smith", "went", "to", "paris", "bob", "lives", "in", "rome", "##s"]
    specials = ["[PAD]", *[f"[unused{i}]" for i in range(99)], "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    labels = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC"}
    config = transformers.BertConfig(vocab_size=len(specials) + len(words), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                                     id2label=labels, label2id={v: k for k, v in labels.items()})
    torch.manual_seed(0)
    model = transformers.BertForTokenClassification(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
    model.save_pretrained(tmp_path / "hf", safe_serialization=True)
    (tmp_path / "hf" / "vocab.txt").write_text("\n".join(specials + words) + "\n", encoding="utf-8")
    result = run_script("export/save.py", "--from-hf", str(tmp_path / "hf"), "--export-dir", str(tmp_path / "x"))
    assert result.returncode == 0, result.stderr
    encoder = Encoder(tmp_path / "x", backend="paddle")
    text = "Alice Smith went to Paris, Bob lives in Romes"
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    with torch.no_grad():
        want = model.eval()(**tokenizer(text, return_tensors="pt")).logits[0].numpy()
    got = encoder.run_items(encoder.preprocess([text]))[0].logits
    np.testing.assert_allclose(got, want, atol=1e-4)
    pipeline = transformers.pipeline("token-classification", model=model, tokenizer=tokenizer,
                                     aggregation_strategy="simple", device="cpu")
    theirs = pipeline(text)
    ours = encoder.entities([text])[0]
    # the same groups, types and offsets; `word` is the text's own slice here ("s"), their pieces there ("##s")
    assert [(e["entity_group"], e["start"], e["end"], e["word"].lower()) for e in ours] == \
           [(e["entity_group"], e["start"], e["end"], e["word"].replace("##", "")) for e in theirs]
    np.testing.assert_allclose([e["score"] for e in ours], [float(e["score"]) for e in theirs], atol=1e-4)


def test_a_fine_tuned_tagger_loads_in_transformers_with_its_tags_and_logits(tagged, tmp_path):
    transformers = needs("transformers", "bench")
    torch = needs("torch", "bench")
    folder, _ = tagged
    result = run_script("export/save.py", "--output-dir", str(folder / "run"), "--format", "huggingface",
                        "--export-dir", str(tmp_path / "hf"))
    assert result.returncode == 0, result.stderr
    model, info = transformers.BertForTokenClassification.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(info.values()), info
    assert model.config.id2label == {0: "O", 1: "B-LOC", 2: "B-PER", 3: "I-PER"}
    ckpt = checkpoint.load(checkpoint.best(folder / "run"))
    ours = BertForPretraining(ckpt.config.model)
    checkpoint.apply_model_state(ours, ckpt.model_state, ckpt.path)
    tagger = TokenClassifier(ours, 0.0)
    tagger.eval()
    ids = np.array([[3, 20, 21, 22, 4]])
    with paddle.no_grad():
        want = tagger(paddle.to_tensor(ids), paddle.zeros([1, 5], "int64"), paddle.to_tensor([5]))[1].numpy()
    with torch.no_grad():
        got = model.eval()(input_ids=torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_what_tagging_cannot_use_is_refused_before_any_work(tmp_path):
    (tmp_path / "train.conll").write_text("w1 B-PER\nw2 O\n", encoding="utf-8")
    (tmp_path / "dev.conll").write_text("w1 B-ORG\n", encoding="utf-8")
    (tmp_path / "bad.conll").write_text("w1 NN B-PER\nw2\n", encoding="utf-8")
    base = ["pipeline/train.py", "--output-dir", str(tmp_path / "o"), *TINY, "-o", "train.objective=tag"]
    assert_user_error(run_script(*base, "-o", f"data.labels={tmp_path / 'bad.conll'}"), "line 2 has no tag")
    assert_user_error(run_script(*base, "-o", f"data.labels={tmp_path / 'train.conll'}",
                                 "-o", f"data.eval_labels={tmp_path / 'dev.conll'}"), "'B-ORG', which the training")
    assert not (tmp_path / "o" / "checkpoints").exists()
