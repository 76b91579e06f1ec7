"""Fine-tuning (`train.objective=classify`): labelled batches, the dev evaluation, and the figures a user reads
next to what a model that learned nothing scores and what a bag of words (tf-idf + a linear model) scores.

Classes: accuracy and macro-F1 (two classes: also F1 of the second class, the positive one, and Matthews'
correlation) against always answering the majority class. Scores (regression): Pearson and Spearman against
a constant (0: a constant correlates with nothing) and the mean squared error against the training mean's.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from pipeline.core.errors import UserError
from pipeline.core.export_format import input_names
from pipeline.core.files import write_text_atomic
from pipeline.core.tokenizer import Item, TokenizationError, Tokenizer, pad_batch, tokenize
from pipeline.data.example_batches import ExampleBatches
from pipeline.data.labelled import LabelledSet, LabelSpace

# how the task's metric is named in eval.json, and which of the figures picks the best checkpoint
BEST_BY = {"single_label_classification": "accuracy", "regression": "spearman"}


def tokenized(tokenizer: Tokenizer, data: LabelledSet, max_len: int) -> list[Item]:
    """Each example as `<cls> A <sep> [B <sep>]`, the longer side truncated first; an empty text is refused
    with its example's number."""
    items = []
    for number, text in enumerate(data.texts, 1):
        try:
            items.append(tokenize(tokenizer, text, max_len, truncate=True))
        except TokenizationError as err:
            raise UserError(f"{data.path}: example {number}: {err}") from None
    return items


class ClassifyData(ExampleBatches):
    """Labelled examples in batches, each with its class id (int64) or score (float32)."""

    what = "labelled examples"

    def __init__(self, items: list[Item], targets: np.ndarray, tokenizer: Tokenizer, seed: int = 0):
        super().__init__(items, tokenizer, seed)
        self.labels = targets

    def targets(self, chosen: np.ndarray, every: np.ndarray, width: int, world: int) -> dict[str, np.ndarray]:
        return {"labels": self.labels[chosen]}


def run_in_batches(run: Callable[[dict], np.ndarray], vocab, items: list[Item], batch_size: int = 64
                   ) -> list[np.ndarray]:
    """Each item's row of `run`'s output (named int64 arrays -> [B, ...]), in length-sorted batches."""
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
    out: list[np.ndarray | None] = [None] * len(items)
    for lo in range(0, len(order), batch_size):
        chunk = order[lo:lo + batch_size]
        rows = run(pad_batch(vocab, [items[i] for i in chunk]))
        for i, row in zip(chunk, rows):
            out[i] = row
    return out


def predict_logits(run: Callable[[dict], np.ndarray], vocab, items: list[Item], batch_size: int = 64) -> np.ndarray:
    """[N, labels] logits of `items` through `run` (named int64 arrays -> logits)."""
    return np.asarray(run_in_batches(run, vocab, items, batch_size), dtype=np.float32)


def predictions(logits: np.ndarray, space: LabelSpace) -> np.ndarray:
    """Class ids (argmax), or the scores themselves."""
    return logits[:, 0] if space.regression else logits.argmax(-1)


def task_figures(targets: np.ndarray, predicted: np.ndarray, space: LabelSpace, train_targets: np.ndarray) -> dict:
    """The task's metrics of `predicted` against `targets`, with the no-learning baseline's beside each."""
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef, mean_squared_error

    if space.regression:
        constant = np.full_like(targets, float(np.mean(train_targets)), dtype=np.float64)
        varied = np.std(predicted) > 0
        return {"pearson": float(pearsonr(predicted, targets)[0]) if varied else 0.0,
                "spearman": float(spearmanr(predicted, targets)[0]) if varied else 0.0,
                "mse": float(mean_squared_error(targets, predicted)),
                "constant_pearson": 0.0, "constant_spearman": 0.0,
                "constant_mse": float(mean_squared_error(targets, constant))}
    labels = list(range(len(space.labels)))
    majority = np.full_like(targets, np.bincount(train_targets, minlength=len(labels)).argmax())
    figures = {}
    for prefix, guess in (("", predicted), ("majority_", majority)):
        figures[f"{prefix}accuracy"] = float(accuracy_score(targets, guess))
        figures[f"{prefix}macro_f1"] = float(f1_score(targets, guess, labels=labels, average="macro", zero_division=0))
        if len(labels) == 2:
            figures[f"{prefix}f1"] = float(f1_score(targets, guess, pos_label=1, zero_division=0))
            figures[f"{prefix}mcc"] = float(matthews_corrcoef(targets, guess)) if len(set(guess)) > 1 else 0.0
    return figures


def bag_of_words_figures(train: LabelledSet, train_targets: np.ndarray, dev: LabelledSet, dev_targets: np.ndarray,
                         space: LabelSpace) -> dict:
    """The same split scored by tf-idf of words and word pairs + logistic regression (classes) or ridge
    regression (scores), scikit-learn's defaults: does fine-tuning beat a bag of words?"""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression, Ridge

    def joined(data: LabelledSet) -> list[str]:
        return [t if isinstance(t, str) else f"{t[0]} ||| {t[1]}" for t in data.texts]

    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    x_train, x_dev = vectorizer.fit_transform(joined(train)), None
    x_dev = vectorizer.transform(joined(dev))
    model = Ridge() if space.regression else LogisticRegression(max_iter=2000)
    model.fit(x_train, train_targets)
    figures = task_figures(dev_targets, model.predict(x_dev), space, train_targets)
    return {f"tfidf_{k}": v for k, v in figures.items() if not k.startswith(("majority_", "constant_"))}


def confusion(targets: np.ndarray, predicted: np.ndarray, space: LabelSpace) -> dict:
    """Rows: the true class, columns: the predicted one (class names in id order)."""
    from sklearn.metrics import confusion_matrix

    matrix = confusion_matrix(targets, predicted, labels=list(range(len(space.labels))))
    return {"labels": list(space.labels), "rows_true_columns_predicted": matrix.tolist()}


def format_figures(figures: dict, space: LabelSpace, examples: int) -> str:
    """One line: each figure next to its no-learning baseline and tf-idf's."""
    if space.regression:
        return (f"dev Pearson {figures['pearson']:.3f}, Spearman {figures['spearman']:.3f} (constant 0.000; tf-idf + "
                f"ridge {figures['tfidf_pearson']:.3f} / {figures['tfidf_spearman']:.3f}), MSE {figures['mse']:.3f} "
                f"(training mean {figures['constant_mse']:.3f}) over {examples} examples")
    line = (f"dev accuracy {figures['accuracy']:.3f} (majority class {figures['majority_accuracy']:.3f}, tf-idf + "
            f"logistic {figures['tfidf_accuracy']:.3f}), macro-F1 {figures['macro_f1']:.3f} (majority "
            f"{figures['majority_macro_f1']:.3f}, tf-idf {figures['tfidf_macro_f1']:.3f})")
    if "f1" in figures:
        line += (f", F1 of {space.labels[1]!r} {figures['f1']:.3f} (tf-idf {figures['tfidf_f1']:.3f}), MCC "
                 f"{figures['mcc']:.3f} (majority 0.000, tf-idf {figures['tfidf_mcc']:.3f})")
    return f"{line} over {examples} examples"


def write_predictions(path: Path, logits: np.ndarray, space: LabelSpace) -> None:
    """run_glue's predict file: `index<TAB>label<TAB>score` (the class and its softmax probability, or the score)."""
    lines = ["index\tlabel\tscore"]
    for i, row in enumerate(logits):
        if space.regression:
            lines.append(f"{i}\t{space.labels[0]}\t{row[0]:.6f}")
        else:
            probabilities = np.exp(row - row.max())
            probabilities /= probabilities.sum()
            best = int(row.argmax())
            lines.append(f"{i}\t{space.labels[best]}\t{probabilities[best]:.6f}")
    write_text_atomic(path, "\n".join(lines) + "\n")



class DevEvaluation:
    """The dev file (data.eval_labels) of a fine-tuning run: its figures for the model as it is now, next to
    the baselines (measured once: the majority class or a constant, and tf-idf on the same split)."""

    def __init__(self, train: LabelledSet, dev: LabelledSet, space: LabelSpace, tokenizer: Tokenizer, max_len: int):
        self.space, self.tokenizer, self.dev = space, tokenizer, dev
        self.train_targets = np.asarray(space.targets(train))
        self.targets = np.asarray(space.targets(dev))
        self.items = tokenized(tokenizer, dev, max_len)
        self.metric = BEST_BY[space.problem_type]
        self.baselines = bag_of_words_figures(train, self.train_targets, dev, self.targets, space)

    def logits(self, classifier) -> np.ndarray:
        """[N, labels] of the dev file through `classifier` (a SequenceClassifier), in eval mode."""
        import paddle

        was_training = classifier.training
        classifier.eval()
        try:
            with paddle.no_grad():
                return predict_logits(lambda arrays: classifier(*(paddle.to_tensor(arrays[n]) for n in input_names())
                                                                )[1].numpy(), self.tokenizer.vocab, self.items)
        finally:
            if was_training:
                classifier.train()

    def figures(self, logits: np.ndarray) -> dict:
        return {**task_figures(self.targets, predictions(logits, self.space), self.space, self.train_targets),
                **self.baselines}

    def describe(self, figures: dict) -> str:
        return format_figures(figures, self.space, len(self.items))

    def write(self, output: Path, logits: np.ndarray) -> None:
        """The best evaluation's dev predictions (run_glue's file) and confusion matrix."""
        write_predictions(output / "dev_predictions.tsv", logits, self.space)
        if not self.space.regression:
            write_text_atomic(output / "confusion.json",
                              json.dumps(confusion(self.targets, predictions(logits, self.space), self.space), indent=1))
