"""pipeline/data/tagged.py: CoNLL columns and JSON Lines, the tag set, and entities found as conlleval finds
them in IOB1, IOB2 and BIOES."""
import pytest

from pipeline.core.errors import UserError
from pipeline.data.tagged import check_tags, entities, read_tagged, tag_set, tag_settings


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_conll_takes_the_last_column_skips_docstart_and_splits_on_blank_lines(tmp_path):
    data = read_tagged(write(tmp_path / "a.conll", "-DOCSTART- -X- O\n\nEU NNP B-ORG\nrejects VBZ O\n\n"
                                                   "Peter NNP B-PER\nBlackburn NNP I-PER\n"))
    assert data.words == [["EU", "rejects"], ["Peter", "Blackburn"]]
    assert data.tags == [["B-ORG", "O"], ["B-PER", "I-PER"]]
    assert tag_set(data) == ["O", "B-ORG", "B-PER", "I-PER"]


def test_json_lines_as_run_ner_reads_them(tmp_path):
    data = read_tagged(write(tmp_path / "a.jsonl", '{"tokens": ["北", "京"], "tags": ["B-LOC", "I-LOC"]}\n'))
    assert data.words == [["北", "京"]] and data.tags == [["B-LOC", "I-LOC"]]


@pytest.mark.parametrize("name, text, fragment", [
    ("notag.conll", "EU B-ORG\nrejects\n", "line 2 has no tag"),
    ("columns.conll", "EU NNP B-ORG\nrejects O\n", "line 2 has 2 columns, the lines before 3"),
    ("bad.jsonl", '{"tokens": ["a", "b"], "tags": ["O"]}\n', "line 1 needs \"tokens\" and \"tags\""),
    ("one.conll", "a O\nb O\n", "every word has the tag 'O'"),
])
def test_bad_files_are_refused_in_one_line(tmp_path, name, text, fragment):
    with pytest.raises(UserError, match=fragment) as caught:
        tag_set(read_tagged(write(tmp_path / name, text)))
    assert "\n" not in str(caught.value)


def test_a_dev_tag_the_training_file_never_had_is_refused(tmp_path):
    train = write(tmp_path / "train.conll", "a B-PER\nb O\n")
    dev = write(tmp_path / "dev.conll", "a B-LOC\n")
    with pytest.raises(UserError, match="sentence 1 has the tag 'B-LOC', which the training file never had"):
        tag_settings(str(train), str(dev), None)
    check_tags(read_tagged(train), ["O", "B-PER"])


@pytest.mark.parametrize("tags, want", [
    (["B-PER", "I-PER", "O", "B-LOC"], {("PER", 0, 2), ("LOC", 3, 4)}),             # IOB2
    (["I-PER", "I-PER", "B-PER", "O", "I-LOC"], {("PER", 0, 2), ("PER", 2, 3), ("LOC", 4, 5)}),  # IOB1
    (["B-PER", "E-PER", "S-LOC", "O", "B-ORG", "I-ORG", "E-ORG"], {("PER", 0, 2), ("LOC", 2, 3), ("ORG", 4, 7)}),
    (["B-PER", "I-LOC", "O"], {("PER", 0, 1), ("LOC", 1, 2)}),                      # a type change ends one
])
def test_entities_are_found_in_every_scheme(tags, want):
    assert entities(tags) == want
