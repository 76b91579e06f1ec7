"""pipeline/data/labelled.py: labelled TSV, CSV and JSON Lines as run_glue reads them, what the labels are,
and every refusal in one line with its line number."""
import json

import pytest

from pipeline.core.errors import UserError
from pipeline.data.labelled import LabelSpace, check_dev, label_settings, read_labelled


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_tsv_keeps_quotes_as_text_and_csv_reads_standard_quoting(tmp_path):
    tsv = read_labelled(write(tmp_path / "a.tsv", 'sentence\tlabel\n"quoted" words\t1\nplain\t0\n'))
    assert tsv.texts == ['"quoted" words', "plain"] and tsv.raw_labels == ["1", "0"] and not tsv.pairs
    csv = read_labelled(write(tmp_path / "a.csv", 'text,label\n"a, quoted ""text""",pos\nplain,neg\n'))
    assert csv.texts == ['a, quoted "text"', "plain"]


def test_pairs_from_any_of_the_column_names_and_json_lines(tmp_path):
    glue = read_labelled(write(tmp_path / "p.tsv", "sentence1\tsentence2\tlabel\na\tb\tyes\nc\td\tno\n"))
    assert glue.pairs and glue.texts == [("a", "b"), ("c", "d")]
    rows = [{"text": "a", "text_pair": "b", "label": 0.5}, {"text": "c", "text_pair": "d", "label": 4}]
    jsonl = read_labelled(write(tmp_path / "p.jsonl", "\n".join(map(json.dumps, rows)) + "\n"))
    assert jsonl.texts == [("a", "b"), ("c", "d")] and jsonl.raw_labels == ["0.5", "4"]


def test_integers_and_names_are_classes_and_numbers_with_fractions_a_regression(tmp_path):
    ints = read_labelled(write(tmp_path / "i.tsv", "text\tlabel\na\t2\nb\t10\nc\t0\n"))
    assert LabelSpace.of(ints) == LabelSpace(("0", "2", "10"), "single_label_classification")
    names = read_labelled(write(tmp_path / "n.tsv", "text\tlabel\na\tpos\nb\tneg\n"))
    assert LabelSpace.of(names).labels == ("neg", "pos")
    scores = read_labelled(write(tmp_path / "s.tsv", "text\tlabel\na\t0.5\nb\t4\n"))
    space = LabelSpace.of(scores)
    assert space.regression and space.targets(scores) == [0.5, 4.0]


@pytest.mark.parametrize("name, text, fragment", [
    ("short.tsv", "text\tlabel\na\tpos\nb\n", "line 3 has 1 field(s), the header 2"),
    ("cols.tsv", "words\tlabel\na\tpos\n", "needs the columns text (or sentence1) and label"),
    ("empty.tsv", "text\tlabel\na\tpos\n\t\tneg\n", None),
    ("one.tsv", "text\tlabel\na\tpos\nb\tpos\n", "every example has the label 'pos'"),
    ("bad.jsonl", '{"text": "a", "label": 1}\n[1, 2]\n', "line 2 is not a JSON object"),
    ("none.tsv", "text\tlabel\n", "holds no example"),
])
def test_bad_files_are_refused_in_one_line(tmp_path, name, text, fragment):
    path = write(tmp_path / name, text)
    with pytest.raises(UserError) as caught:
        LabelSpace.of(read_labelled(path))
    message = str(caught.value)
    assert "\n" not in message and str(path) in message
    assert fragment is None or fragment in message, message


def test_a_dev_file_with_a_new_class_or_other_columns_is_refused(tmp_path):
    train = write(tmp_path / "train.tsv", "text\tlabel\na\tpos\nb\tneg\n")
    unseen = write(tmp_path / "dev.tsv", "text\tlabel\na\tpos\nb\tneutral\n")
    with pytest.raises(UserError, match="'neutral' never occur in the training file"):
        label_settings(str(train), str(unseen), None, None)
    pairs = write(tmp_path / "pairs.tsv", "sentence1\tsentence2\tlabel\na\tb\tpos\n")
    with pytest.raises(UserError, match="holds text pairs but .* single texts"):
        check_dev(read_labelled(train), read_labelled(pairs))


def test_an_init_from_classifier_keeps_its_label_order_where_the_file_fits_it(tmp_path):
    train = write(tmp_path / "train.tsv", "text\tlabel\na\tpos\nb\tneg\n")
    kept = label_settings(str(train), None, ["pos", "neg", "neutral"], "single_label_classification")
    assert kept == {"model.labels": ["pos", "neg", "neutral"], "model.problem_type": "single_label_classification"}
    fresh = label_settings(str(train), None, ["yes", "no"], "single_label_classification")
    assert fresh["model.labels"] == ["neg", "pos"]
