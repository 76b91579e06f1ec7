"""Labelled text for fine-tuning (`train.objective=classify`), in the formats users already have, as run_glue
reads them: TSV (a tab separates fields, quotes are part of the text, as GLUE ships it) or CSV (standard
quoting) with a header, or JSON Lines, each with the columns `text` or `sentence1`, an optional `text_pair` or
`sentence2`, and `label`. Labels that are names or integers are classes; labels that are all numbers with a
fraction make a regression (one output, as STS-B). Every refusal is one line naming the file (and the line).
"""
from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.core.files import read_utf8
from pipeline.core.tokenizer import Text

TEXT_COLUMNS = ("text", "sentence1", "sentence")
PAIR_COLUMNS = ("text_pair", "sentence2")
LABEL_COLUMN = "label"
CLASSIFICATION, REGRESSION = "single_label_classification", "regression"


@dataclass(frozen=True)
class LabelledSet:
    """Texts (strings, or (A, B) pairs) and their raw labels, as a file holds them."""

    path: str
    texts: list[Text]
    raw_labels: list[str]
    pairs: bool

    def __len__(self) -> int:
        return len(self.texts)


@dataclass(frozen=True)
class LabelSpace:
    """What the labels are: the classes in id order, or one score (regression)."""

    labels: tuple[str, ...]
    problem_type: str

    @classmethod
    def of(cls, train: LabelledSet) -> "LabelSpace":
        """Classes sorted as numbers where every label is an integer (0, 1, 2, ... keep their ids), else by
        name; a regression where some label has a fraction and every one is a number. One class is refused."""
        raw = train.raw_labels
        if all(is_number(v) for v in raw) and any(not is_integer(v) for v in raw):
            return cls(("score",), REGRESSION)
        classes = sorted(set(raw), key=lambda v: (0, int(v), "") if is_integer(v) else (1, 0, v))
        if len(classes) < 2:
            raise UserError(f"{train.path}: every example has the label {classes[0]!r}; a classifier needs at "
                            f"least two classes")
        return cls(tuple(classes), CLASSIFICATION)

    @property
    def regression(self) -> bool:
        return self.problem_type == REGRESSION

    def targets(self, data: LabelledSet) -> list[float] | list[int]:
        """The labels of `data` as training targets: class ids, or scores; a class the training file never had
        is refused, naming it."""
        if self.regression:
            bad = next((v for v in data.raw_labels if not is_number(v)), None)
            if bad is not None:
                raise UserError(f"{data.path}: label {bad!r} is not a number, but the training labels are scores")
            return [float(v) for v in data.raw_labels]
        ids = {name: i for i, name in enumerate(self.labels)}
        unknown = sorted(set(data.raw_labels) - set(ids))
        if unknown:
            raise UserError(f"{data.path}: label(s) {', '.join(map(repr, unknown[:3]))} never occur in the training "
                            f"file (its classes: {', '.join(self.labels)})")
        return [ids[v] for v in data.raw_labels]


def is_number(value: str) -> bool:
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def is_integer(value: str) -> bool:
    return value.lstrip("-").isdigit()


def read_labelled(path: str | Path) -> LabelledSet:
    """A labelled file by its extension: .jsonl/.json (JSON Lines), .csv, else TSV."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"labelled file not found: {path}")
    text = read_utf8(path)
    suffix = path.suffix.lower()
    rows = json_rows(path, text) if suffix in (".jsonl", ".json") else table_rows(path, text, suffix == ".csv")
    if not rows:
        raise UserError(f"{path} holds no example")
    return examples(path, rows)


def table_rows(path: Path, text: str, comma: bool) -> list[tuple[int, dict]]:
    """(line number, {column: value}) of a CSV (standard quoting) or TSV (no quoting, as GLUE's) file."""
    reader = (csv.reader(io.StringIO(text)) if comma else
              csv.reader(io.StringIO(text), delimiter="\t", quoting=csv.QUOTE_NONE))
    lines = list(reader)
    if not lines:
        return []
    header = [h.strip() for h in lines[0]]
    rows = []
    for number, fields in enumerate(lines[1:], 2):
        if not any(f.strip() for f in fields):
            continue
        if len(fields) != len(header):
            raise UserError(f"{path}: line {number} has {len(fields)} field(s), the header {len(header)} "
                            f"({', '.join(header)})")
        rows.append((number, dict(zip(header, fields))))
    return rows


def json_rows(path: Path, text: str) -> list[tuple[int, dict]]:
    """(line number, object) of each non-empty line of a JSON Lines text; anything else there is refused."""
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise UserError(f"{path}: line {number} is not a JSON object") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}: line {number} is not a JSON object")
        rows.append((number, row))
    return rows


def examples(path: Path, rows: list[tuple[int, dict]]) -> LabelledSet:
    """The texts and labels of `rows`; a missing column or an empty text or label is refused with its line."""
    columns = set(rows[0][1])
    text_column = next((c for c in TEXT_COLUMNS if c in columns), None)
    if text_column is None or LABEL_COLUMN not in columns:
        raise UserError(f"{path} needs the columns text (or sentence1) and label; it has {', '.join(sorted(columns))}")
    pair_column = next((c for c in PAIR_COLUMNS if c in columns), None)
    texts, labels = [], []
    for number, row in rows:
        values = [row.get(text_column), row.get(pair_column) if pair_column else "", row.get(LABEL_COLUMN)]
        if any(v is None or isinstance(v, (dict, list, bool)) for v in values):
            raise UserError(f"{path}: line {number} lacks {text_column}, {pair_column or ''} or label (or holds a "
                            f"list or object there)".replace(", ,", ","))
        a, b, label = (str(v).strip() for v in values)
        if not a or (pair_column and not b) or not label:
            raise UserError(f"{path}: line {number} has an empty text or label")
        texts.append((a, b) if pair_column else a)
        labels.append(label)
    return LabelledSet(str(path), texts, labels, pair_column is not None)


def check_dev(train: LabelledSet, dev: LabelledSet) -> None:
    """A dev file must have the pair column exactly when the training file has it."""
    if train.pairs != dev.pairs:
        with_pairs, without = (train, dev) if train.pairs else (dev, train)
        raise UserError(f"{with_pairs.path} holds text pairs but {without.path} single texts: both files need the "
                        f"same columns")


def label_settings(labels_file: str, eval_file: str | None, held: list[str] | None, held_type: str | None) -> dict:
    """model.labels and model.problem_type for a fine-tuning run, every label file checked before any work:
    the classes (or a score) of the training file, or `held` (an --init-from classifier's own labels, in their
    order) where the file's fit in them; a dev file with other columns or an unseen class is refused."""
    train = read_labelled(labels_file)
    space = LabelSpace.of(train)
    if held and held_type == space.problem_type and (space.regression or set(space.labels) <= set(held)):
        space = LabelSpace(tuple(held), held_type)
    space.targets(train)
    if eval_file:
        dev = read_labelled(eval_file)
        check_dev(train, dev)
        space.targets(dev)
    return {"model.labels": list(space.labels), "model.problem_type": space.problem_type}
