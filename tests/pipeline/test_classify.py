"""pipeline/classify.py: batches that depend on their step alone, and figures that a degenerate model cannot
fake, each next to its baseline."""
import numpy as np
import pytest

from pipeline.classify import ClassifyData, bag_of_words_figures, format_figures, task_figures, write_predictions
from pipeline.core.tokenizer import WhitespaceTokenizer, tokenize
from pipeline.core.vocab import SPECIAL_TOKENS, Vocab
from pipeline.data.labelled import LabelledSet, LabelSpace

BINARY = LabelSpace(("neg", "pos"), "single_label_classification")
SCORES = LabelSpace(("score",), "regression")


def test_a_model_that_answers_the_majority_scores_exactly_the_majority_baseline():
    train = np.array([0, 0, 0, 1])
    targets = np.array([0, 1, 0, 1, 0])
    figures = task_figures(targets, np.zeros(5, dtype=int), BINARY, train)
    assert figures["accuracy"] == figures["majority_accuracy"] == 0.6
    assert figures["mcc"] == figures["majority_mcc"] == 0.0 and figures["f1"] == 0.0
    perfect = task_figures(targets, targets, BINARY, train)
    assert perfect["accuracy"] == perfect["macro_f1"] == perfect["f1"] == perfect["mcc"] == 1.0


def test_three_classes_report_macro_f1_and_no_binary_figures():
    three = LabelSpace(("a", "b", "c"), "single_label_classification")
    figures = task_figures(np.array([0, 1, 2, 2]), np.array([0, 1, 1, 2]), three, np.array([2, 2, 1]))
    assert figures["accuracy"] == 0.75 and "mcc" not in figures
    assert figures["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


def test_regression_figures_and_a_constant_baseline():
    targets = np.array([0.0, 1.0, 2.0, 3.0])
    figures = task_figures(targets, targets * 2 + 1, SCORES, np.array([1.0, 2.0]))
    assert figures["pearson"] == pytest.approx(1.0) and figures["spearman"] == pytest.approx(1.0)
    assert figures["constant_mse"] == pytest.approx(np.mean((targets - 1.5) ** 2))
    assert task_figures(targets, np.ones(4), SCORES, targets)["spearman"] == 0.0  # a constant correlates with nothing


def test_tfidf_learns_a_separable_task_and_the_line_names_every_baseline():
    train = LabelledSet("t", ["good film", "bad film", "good story", "bad story"] * 5, ["pos", "neg"] * 10, False)
    dev = LabelledSet("d", ["a good one", "a bad one"], ["pos", "neg"], False)
    figures = bag_of_words_figures(train, np.array(BINARY.targets(train)), dev, np.array(BINARY.targets(dev)), BINARY)
    assert figures["tfidf_accuracy"] == 1.0
    line = format_figures({**task_figures(np.array([1, 0]), np.array([1, 1]), BINARY, np.array([0, 1, 1])), **figures},
                          BINARY, 2)
    assert "majority class" in line and "tf-idf + logistic 1.000" in line and "MCC" in line


def test_batches_depend_on_the_step_and_ranks_split_the_global_batch():
    vocab = Vocab([*SPECIAL_TOKENS, *"abcdefgh"])
    tokenizer = WhitespaceTokenizer(vocab)
    items = [tokenize(tokenizer, " ".join("abcdefgh"[:n % 7 + 1]), 16) for n in range(20)]
    data = ClassifyData(items, np.arange(20, dtype=np.int64), tokenizer, seed=3)
    one = data.batch(7, 8)
    halves = [data.batch(7, 8, rank, 2) for rank in (0, 1)]
    assert one["labels"].tolist() == halves[0]["labels"].tolist() + halves[1]["labels"].tolist()
    assert data.batch(7, 8)["labels"].tolist() == one["labels"].tolist()  # the step alone decides
    epoch = [i for step in range(data.steps_per_epoch(8)) for i in data.rows(step, 8)]
    assert len(set(epoch)) == len(epoch) == 16  # no example twice within an epoch


def test_predictions_follow_run_glues_predict_file(tmp_path):
    path = tmp_path / "p.tsv"
    write_predictions(path, np.array([[0.0, 2.0], [1.0, 1.0]], dtype=np.float32), BINARY)
    lines = path.read_text().splitlines()
    assert lines[0] == "index\tlabel\tscore" and lines[1].startswith("0\tpos\t0.88") and lines[2] == "1\tneg\t0.500000"
