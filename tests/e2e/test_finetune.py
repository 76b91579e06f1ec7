"""End to end: fine-tuning (train.objective=classify) from this project's pretraining run and from random
weights, its dev figures and best checkpoint, exact resume and two ranks, the export's parity on every backend,
and the service's /predict and /rerank."""
import json

import numpy as np
import paddle
import pytest

from infer.encoder import Encoder
from pipeline import checkpoint
from pipeline.core.tokenizer import pad_batch
from pipeline.model import BertForPretraining, SequenceClassifier
from tests.conftest import TINY, needs, run_script
from tests.helpers.checks import assert_user_error
from tests.helpers.service import request, start, stop

POSITIVE, NEGATIVE = ["w1", "w2", "w3"], ["w4", "w5", "w6"]
FILLER = [f"w{i}" for i in range(10, 40)] + ["the", "a", "crane", "is", "flying"]


def write_task(path, examples: int, seed: int, regression: bool = False) -> None:
    """Texts of the test corpus's words whose label is which marker words they hold (or a score from them)."""
    rng = np.random.default_rng(seed)
    lines = ["sentence\tlabel"]
    for _ in range(examples):
        positive = rng.random() < 0.5
        words = list(rng.choice(FILLER, rng.integers(4, 9))) + [rng.choice(POSITIVE if positive else NEGATIVE)]
        rng.shuffle(words)
        label = f"{(4.0 if positive else 1.0) + rng.random():.2f}" if regression else ("pos" if positive else "neg")
        lines.append(" ".join(words) + "\t" + label)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def fine_tune(out, task, *extra, steps=60):
    return run_script("pipeline/train.py", "--output-dir", str(out), "--steps", str(steps), *TINY,
                      "-o", "train.objective=classify", "-o", f"data.labels={task / 'train.tsv'}",
                      "-o", f"data.eval_labels={task / 'dev.tsv'}", "-o", "train.lr=0.005", *extra)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    folder = tmp_path_factory.mktemp("task")
    write_task(folder / "train.tsv", 256, 0)
    write_task(folder / "dev.tsv", 64, 1)
    return folder


@pytest.fixture(scope="module")
def finetuned(task, trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("finetuned")
    result = fine_tune(out, task, "--init-from", str(trained), "-o", "train.eval_every=20")
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_the_run_reports_its_best_dev_figures_next_to_the_baselines(finetuned):
    out, result = finetuned
    line = next(line for line in result.stdout.splitlines() if line.startswith("best checkpoint"))
    assert "majority class" in line and "tf-idf + logistic" in line, line
    figures = json.loads((out / "eval.json").read_text())
    assert figures["accuracy"] > figures["majority_accuracy"] + 0.2, figures
    assert figures["metric"] == "accuracy" and (out / "checkpoints" / figures["best_checkpoint"]).is_dir()
    assert checkpoint.best(out).name == figures["best_checkpoint"]
    matrix = json.loads((out / "confusion.json").read_text())
    assert matrix["labels"] == ["neg", "pos"] and sum(map(sum, matrix["rows_true_columns_predicted"])) == 64
    assert len((out / "dev_predictions.tsv").read_text().splitlines()) == 65
    assert result.stderr.count("dev accuracy") == 3  # steps 20, 40, 60
    assert "classify loss" in result.stdout and "examples/sec" in result.stdout


@pytest.fixture(scope="module")
def exported_classifier(finetuned, tmp_path_factory):
    needs("paddle2onnx", "onnx")
    out, _ = finetuned
    export_dir = tmp_path_factory.mktemp("classifier") / "inference"
    result = run_script("export/save.py", "--output-dir", str(out), "--export-dir", str(export_dir), "--int8")
    assert result.returncode == 0, result.stderr
    assert "the best by the dev metric" in result.stdout
    return export_dir


def test_the_export_predicts_as_the_best_checkpoint_on_every_backend(finetuned, exported_classifier):
    out, _ = finetuned
    ckpt = checkpoint.load(checkpoint.best(out))
    model = BertForPretraining(ckpt.config.model)
    checkpoint.apply_model_state(model, ckpt.model_state, ckpt.path)
    classifier = SequenceClassifier(model, 0.0)
    classifier.eval()
    manifest = json.loads((exported_classifier / "manifest.json").read_text())
    assert manifest["head"] == {"kind": "classifier", "labels": ["neg", "pos"],
                                "problem_type": "single_label_classification"}
    texts = ["w1 the crane w11", "w5 is flying w20 w21", ("w2 a", "w4 the")]
    paddle_encoder = Encoder(exported_classifier, device="cpu", backend="paddle")
    items = paddle_encoder.preprocess(texts)
    with paddle.no_grad():
        for item, output in zip(items, paddle_encoder.run_items(items)):
            arrays = {k: paddle.to_tensor(v) for k, v in pad_batch(paddle_encoder.vocab, [item]).items()}
            want = classifier(arrays["input_ids"], arrays["token_type_ids"], arrays["valid_length"])[1].numpy()[0]
            np.testing.assert_allclose(output.logits, want, atol=1e-5)
    want = paddle_encoder.predict(texts)
    for backend, precision in (("onnxruntime", "fp32"), ("onnxruntime", "int8")):
        got = Encoder(exported_classifier, backend=backend, precision=precision).predict(texts)
        assert [g[0][0] for g in got] == [w[0][0] for w in want], (backend, precision)
        tolerance = 1e-4 if precision == "fp32" else 0.05
        np.testing.assert_allclose([g[0][1] for g in got], [w[0][1] for w in want], atol=tolerance)
    result = run_script("infer/encode.py", "--model-dir", str(exported_classifier), "--predict", "--text", "w1 the")
    assert result.returncode == 0 and result.stdout.startswith("'w1 the': "), result.stderr


def test_a_regression_serves_as_a_reranker_and_a_classifier_is_refused_there(task, exported_classifier, tmp_path):
    write_task(tmp_path / "train.tsv", 256, 2, regression=True)
    write_task(tmp_path / "dev.tsv", 64, 3, regression=True)
    result = fine_tune(tmp_path / "out", tmp_path, steps=80)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads((tmp_path / "out" / "eval.json").read_text())
    assert figures["metric"] == "spearman" and figures["spearman"] > 0.5, figures
    assert run_script("export/save.py", "--output-dir", str(tmp_path / "out")).returncode == 0
    proc, url = start(tmp_path / "out" / "inference")
    try:
        status, ranked, _ = request(url + "/rerank", json.dumps(
            {"query": "the", "texts": ["w10 w4 w11", "w10 w1 w11", "w12 w5"], "return_text": True}).encode())
        assert status == 200 and [r["index"] for r in ranked][0] == 1 and ranked[0]["text"] == "w10 w1 w11", ranked
        assert all(0 <= r["score"] <= 1 for r in ranked) and ranked[0]["score"] >= ranked[1]["score"]
        status, answer, _ = request(url + "/predict", json.dumps({"inputs": ["w1 a", "the"]}).encode())
        assert status == 200 and [a["label"] for a in answer] == ["score"], answer  # one pair, one answer
        status, info, _ = request(url + "/info")
        assert info["model_type"] == {"reranker": {"id2label": {"0": "score"}, "label2id": {"score": 0}}}
    finally:
        stop(proc)
    proc, url = start(exported_classifier)
    try:
        status, answer, _ = request(url + "/rerank", json.dumps({"query": "a", "texts": ["b"]}).encode())
        assert status == 424 and answer["error_type"] == "wrong_model_type", answer
        status, answer, _ = request(url + "/predict", json.dumps({"inputs": [["w1", "w2"], "w4 w5"]}).encode())
        assert status == 200 and len(answer) == 2 and answer[1][0]["label"] == "neg", answer
    finally:
        stop(proc)


def test_resume_is_exact_and_two_ranks_train_as_one_process(task, tmp_path):
    common = ["-o", "model.dropout=0.0", "-o", "train.save_every=3"]
    whole = fine_tune(tmp_path / "whole", task, *common, steps=6)
    first = fine_tune(tmp_path / "parts", task, *common, steps=3)
    rest = fine_tune(tmp_path / "parts", task, *common, "--resume", steps=6)
    assert all(r.returncode == 0 for r in (whole, first, rest)), rest.stderr[-2000:]
    np.testing.assert_allclose([s[1] for s in losses_of(tmp_path / "parts")],
                               [s[1] for s in losses_of(tmp_path / "whole")], rtol=1e-5)
    two = run_script("-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(tmp_path / "log"),
                     "pipeline/train.py", "--output-dir", str(tmp_path / "two"), "--steps", "6", *TINY,
                     "-o", "train.objective=classify", "-o", f"data.labels={task / 'train.tsv'}", *common)
    assert two.returncode == 0, two.stdout[-2000:]
    np.testing.assert_allclose([s[1] for s in losses_of(tmp_path / "two")],
                               [s[1] for s in losses_of(tmp_path / "whole")], rtol=1e-4)
    a, b = (checkpoint.load(checkpoint.latest(tmp_path / run)).model_state for run in ("whole", "two"))
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-4, atol=1e-5, err_msg=name)


def losses_of(out):
    return [(r["step"], r["classify_loss"]) for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]


def test_what_fine_tuning_cannot_use_is_refused_before_any_work(task, tmp_path):
    one_class = tmp_path / "one.tsv"
    one_class.write_text("text\tlabel\nw1\tpos\nw2\tpos\n", encoding="utf-8")
    unseen = tmp_path / "unseen.tsv"
    unseen.write_text("text\tlabel\nw1\tpos\nw2\tmaybe\n", encoding="utf-8")
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text("sentence1\tsentence2\tlabel\nw1\tw2\tpos\n", encoding="utf-8")
    base = ["pipeline/train.py", "--output-dir", str(tmp_path / "o"), *TINY]
    assert_user_error(run_script(*base, "-o", "train.objective=classify"), "train.objective=classify needs data.labels")
    assert_user_error(run_script(*base, "-o", "train.objective=classify", "-o", f"data.labels={one_class}"),
                      "every example has the label 'pos'")
    for dev, fragment in ((unseen, "'maybe' never occur in the training file"), (pairs, "holds text pairs")):
        assert_user_error(run_script(*base, "-o", "train.objective=classify", "-o", f"data.labels={task / 'train.tsv'}",
                                     "-o", f"data.eval_labels={dev}"), fragment)
    assert not (tmp_path / "o" / "checkpoints").exists()



def test_evaluate_scores_the_best_checkpoint_and_the_export_on_a_labelled_file(finetuned, task, exported_classifier,
                                                                               tmp_path):
    out, _ = finetuned
    result = run_script("pipeline/evaluate.py", "--output-dir", str(out), "--labels", str(task / "dev.tsv"),
                        "--predictions", str(tmp_path / "p.tsv"))
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout.splitlines()[-1])
    assert figures["accuracy"] == json.loads((out / "eval.json").read_text())["accuracy"]  # the best, again
    assert "tfidf_accuracy" in figures and f"evaluating {checkpoint.best(out)}" in result.stdout
    predictions = (tmp_path / "p.tsv").read_text().splitlines()
    assert predictions[0] == "index\tlabel\tscore" and len(predictions) == 65
    exported = run_script("pipeline/evaluate.py", "--export", str(exported_classifier), "--labels", str(task / "dev.tsv"))
    assert exported.returncode == 0, exported.stderr
    assert json.loads(exported.stdout.splitlines()[-1])["accuracy"] == pytest.approx(figures["accuracy"])
    assert_user_error(run_script("pipeline/evaluate.py", "--output-dir", str(out), "--predictions", "x.tsv"),
                      "--predictions goes with --labels")
