"""pipeline/data/wikitext_pairs.py: the cached vocabulary and NSP pairs of WikiText, hit, missed, damaged or refused."""
import numpy as np
import pytest

from pipeline.core.errors import UserError
from pipeline.data import wikitext_pairs
from pipeline.data.wikitext import read_sentences
from pipeline.data.wikitext_pairs import wikitext_examples

MAX_LEN = 32


def test_cache_hit_gives_identical_arrays_without_reading_the_text(corpus_dir, tmp_path, monkeypatch):
    first = wikitext_examples(corpus_dir / "wiki.valid.tokens", MAX_LEN, 1, 0, tmp_path)
    monkeypatch.setattr(wikitext_pairs, "read_sentences", lambda path: pytest.fail("cache was not used"))
    second = wikitext_examples(corpus_dir / "wiki.valid.tokens", MAX_LEN, 1, 0, tmp_path)
    assert second.vocab.idx_to_token == first.vocab.idx_to_token
    for name in ("input_ids", "token_type_ids", "valid_length", "nsp_labels"):
        assert np.array_equal(getattr(first.pairs, name), getattr(second.pairs, name))


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_damaged_cache_is_rebuilt_not_trusted(corpus_dir, tmp_path, damage):
    first = wikitext_examples(corpus_dir / "wiki.valid.tokens", MAX_LEN, 1, 0, tmp_path)
    (cache_file,) = tmp_path.glob("*.npz")
    data = bytearray(cache_file.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        middle = len(data) // 2
        data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    else:
        data = bytearray(b"not a zip file")
    cache_file.write_bytes(bytes(data))
    again = wikitext_examples(corpus_dir / "wiki.valid.tokens", MAX_LEN, 1, 0, tmp_path)
    assert np.array_equal(again.pairs.input_ids, first.pairs.input_ids)
    with np.load(cache_file, allow_pickle=False) as f:  # rewritten intact
        assert np.array_equal(f["input_ids"], first.pairs.input_ids)


def test_other_settings_or_text_miss_the_cache(corpus_dir, tmp_path):
    wikitext_examples(corpus_dir / "wiki.valid.tokens", MAX_LEN, 1, 0, tmp_path)
    wikitext_examples(corpus_dir / "wiki.valid.tokens", MAX_LEN, 2, 0, tmp_path)
    copy = tmp_path / "wiki.valid.tokens"
    copy.write_text(corpus_dir.joinpath("wiki.valid.tokens").read_text() + " extra a . b c \n")
    wikitext_examples(copy, MAX_LEN, 1, 0, tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 3


def test_bad_corpus_files(tmp_path):
    latin = tmp_path / "wiki.train.tokens"
    latin.write_bytes("caf\xe9 . ok ok \n".encode("latin-1"))
    with pytest.raises(UserError, match=r"is not UTF-8 text \(line 1\)"):
        read_sentences(latin)
    single = tmp_path / "single.tokens"
    single.write_text(" = heading = \n just one sentence here \n", encoding="utf-8")
    with pytest.raises(UserError, match="no paragraph of two or more sentences"):
        read_sentences(single)
