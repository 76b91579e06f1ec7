"""Vocabulary, NSP pairs, MLM masking, the example cache and per-rank shards."""
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pipeline import wikitext_cache
from pipeline.dataset import PretrainingData
from pipeline.wikitext_cache import wikitext_examples
from pipeline.errors import UserError
from pipeline.examples import make_pairs, mask_tokens, max_predictions
from pipeline.vocab import SPECIAL_TOKENS, Vocab
from pipeline.wikitext import read_sentences

MAX_LEN = 32


@pytest.fixture(scope="module")
def examples(corpus_dir):
    return wikitext_examples(corpus_dir / "wiki.train.tokens", MAX_LEN, 1, 0, None)


def test_vocab_order_and_json_round_trip(tmp_path):
    vocab = Vocab.from_counts(Counter("b a c a b a <unk> d".split()), 2)
    assert vocab.idx_to_token == ["<unk>", "<pad>", "<mask>", "<cls>", "<sep>", "a", "b"]
    assert vocab["c"] == vocab.unk == 0 and vocab["b"] == 6
    vocab.save(tmp_path / "v.json")
    assert Vocab.load(tmp_path / "v.json").idx_to_token == vocab.idx_to_token


def test_vocab_ties_are_broken_by_the_token_itself():
    assert Vocab.from_counts(Counter("z y x z y x".split()), 1).idx_to_token[5:] == ["x", "y", "z"]


def test_ids_of_maps_unknown_and_literal_special_tokens_to_unk():
    vocab = Vocab.from_counts(Counter("a a b".split()), 1)
    assert vocab.ids_of(["a", "b", "zzz", "<mask>", "<cls>"]).tolist() == [5, 6, 0, 0, 0]


def test_paragraphs_follow_the_seed(tmp_path):
    path = tmp_path / "wiki.train.tokens"
    path.write_text(" = Title = \n A b . C d e . \n one sentence only \n x . y \n", encoding="utf-8")
    sents = read_sentences(path)
    assert len(sents.document_starts) - 1 == 2
    assert [sents.forms[i] for i in sents.token_ids] == ["a", "b", "c", "d", "e", ".", "x", "y"]
    assert sents.words[sents.token_ids[0]] == "A", "words keep the file's case"
    assert sents.counts == {"a": 1, "b": 1, "c": 1, "d": 1, "e": 1, ".": 1, "x": 1, "y": 1}
    assert sents.sentence_starts.tolist() == [0, 2, 6, 7, 8]


def test_pairs_shapes_padding_and_segments(examples):
    pairs, vocab = examples.pairs, examples.vocab
    n = len(pairs)
    assert pairs.input_ids.shape == (n, MAX_LEN) and pairs.input_ids.dtype == np.int32
    assert pairs.token_type_ids.shape == (n, MAX_LEN) and pairs.valid_length.shape == (n,)
    for row in range(0, n, max(1, n // 50)):
        ids, seg, length = pairs.input_ids[row], pairs.token_type_ids[row], pairs.valid_length[row]
        assert ids[0] == vocab.cls and ids[length - 1] == vocab.sep
        assert (ids[length:] == vocab.pad).all() and (seg[length:] == 0).all()
        seps = np.flatnonzero(ids[:length] == vocab.sep)
        assert len(seps) == 2
        assert (seg[:seps[0] + 1] == 0).all() and (seg[seps[0] + 1:length] == 1).all()


def test_nsp_labels_are_balanced(examples):
    labels = examples.pairs.nsp_labels
    assert 0.4 < labels.mean() < 0.6


def test_true_next_sentence_pairs_follow_each_other(tmp_path):
    path = tmp_path / "t.tokens"
    path.write_text(" s0 a . s1 b . s2 c \n", encoding="utf-8")
    sents = read_sentences(path)
    vocab = Vocab.from_counts(sents.counts, 1)
    pairs = make_pairs(vocab.ids_of(sents.forms)[sents.token_ids], sents, vocab, 16, np.random.default_rng(0))
    for ids, label in zip(pairs.input_ids, pairs.nsp_labels):
        words = [w for w in (vocab.idx_to_token[i] for i in ids) if w.startswith("s")]
        if label:
            assert int(words[1][1]) == int(words[0][1]) + 1


def test_pairs_longer_than_max_len_are_skipped(examples, corpus_dir):
    short = wikitext_examples(corpus_dir / "wiki.train.tokens", 12, 1, 0, None)
    assert (short.pairs.valid_length <= 12).all() and len(short.pairs) < len(examples.pairs)


def test_max_len_too_small_for_any_pair(corpus_dir):
    with pytest.raises(UserError, match="no sentence pair fits in data.max_len=5"):
        wikitext_examples(corpus_dir / "wiki.train.tokens", 5, 1, 0, None)


def test_mask_statistics_over_many_draws(examples):
    pairs, vocab = examples.pairs, examples.vocab
    rng = np.random.default_rng(7)
    chosen = kept = masked = randomised = candidates = 0
    for _ in range(20):
        m = mask_tokens(pairs.input_ids, vocab, max_predictions(MAX_LEN), 0.15, rng)
        w = m.mlm_weights.astype(bool)
        rows = np.nonzero(w)[0]
        original = pairs.input_ids[rows, m.pred_positions[w]]
        now = m.input_ids[rows, m.pred_positions[w]]
        assert (m.mlm_labels[w] == original).all(), "labels are the original tokens"
        assert not np.isin(original, [vocab.pad, vocab.cls, vocab.sep, vocab.mask]).any()
        assert (m.mlm_labels[~w] == 0).all() and (m.pred_positions[~w] == 0).all()
        unchanged = np.ones_like(m.input_ids, dtype=bool)
        unchanged[rows, m.pred_positions[w]] = False
        assert (m.input_ids[unchanged] == pairs.input_ids[unchanged]).all(), "only chosen positions change"
        chosen += w.sum()
        masked += (now == vocab.mask).sum()
        kept += (now == original).sum()
        randomised += ((now != original) & (now != vocab.mask)).sum()
        candidates += (pairs.valid_length - 3).sum()
        assert (w.sum(1) >= 1).all()
    assert chosen / candidates == pytest.approx(0.15, abs=0.02)
    assert masked / chosen == pytest.approx(0.8, abs=0.02)
    # a random replacement equals the original 1/len(vocab) of the time, so "kept" is slightly above 10%
    assert kept / chosen == pytest.approx(0.1, abs=0.02)
    assert randomised / chosen == pytest.approx(0.1, abs=0.02)


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 6), st.integers(6, 40), st.integers(0, 2**32 - 1))
def test_masking_invariants_hold_for_any_batch(rows, max_len, seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, max_len + 1, rows)
    ids = np.full((rows, max_len), 1, dtype=np.int32)
    for r, n in enumerate(lengths):
        ids[r, :n] = np.where(rng.random(n) < 0.1, 0, rng.integers(5, 50, n))  # 0 = <unk>, a candidate
        ids[r, 0], ids[r, n - 1] = 3, 4
    m = mask_tokens(ids, Vocab(list(SPECIAL_TOKENS) + [f"w{i}" for i in range(45)]), max_predictions(max_len), 0.15, rng)
    w = m.mlm_weights.astype(bool)
    for r in range(rows):
        positions = m.pred_positions[r][w[r]]
        assert len(set(positions.tolist())) == len(positions)
        assert all(ids[r, p] not in (1, 3, 4) for p in positions)
        expected = min(max(1, round(0.15 * (lengths[r] - 2))), lengths[r] - 2, max_predictions(max_len))
        assert len(positions) == expected


def test_cache_hit_gives_identical_arrays_without_reading_the_text(corpus_dir, tmp_path, monkeypatch):
    first = wikitext_examples(corpus_dir / "wiki.valid.tokens", MAX_LEN, 1, 0, tmp_path)
    monkeypatch.setattr(wikitext_cache, "read_sentences", lambda path: pytest.fail("cache was not used"))
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


def test_shards_are_disjoint_and_cover_the_global_batch(examples):
    data = PretrainingData(examples.pairs, examples.vocab, MAX_LEN, seed=3)
    whole = data.batch(5, 64)
    shards = [data.batch(5, 64, rank, 4) for rank in range(4)]
    for name in ("input_ids", "token_type_ids", "valid_length", "pred_positions", "mlm_labels", "nsp_labels"):
        assert np.array_equal(np.concatenate([s[name] for s in shards]), whole[name])
    assert all(s["input_ids"].shape == (16, MAX_LEN) for s in shards)
    assert sum(s["mlm_norm"][0] for s in shards) == pytest.approx(whole["mlm_weights"].sum())


def test_epoch_covers_every_pair_once(examples):
    data = PretrainingData(examples.pairs, examples.vocab, MAX_LEN)
    steps = data.steps_per_epoch(32)
    seen = np.concatenate([data._epoch_state(0)[0][s * 32:(s + 1) * 32] for s in range(steps)])
    assert len(np.unique(seen)) == steps * 32


def test_dynamic_masking_redraws_each_epoch_and_fixed_does_not(examples):
    args = (examples.pairs, examples.vocab, MAX_LEN)
    dynamic, fixed = PretrainingData(*args), PretrainingData(*args, dynamic_masking=False)
    assert not np.array_equal(dynamic.masks(0).input_ids, dynamic.masks(1).input_ids)
    assert np.array_equal(fixed.masks(0).input_ids, fixed.masks(1).input_ids)
    assert np.array_equal(dynamic.masks(1).input_ids, PretrainingData(*args).masks(1).input_ids)


def test_host_dropout_masks_keep_the_right_fraction(examples):
    data = PretrainingData(examples.pairs, examples.vocab, MAX_LEN)
    data.use_host_dropout(4, 16, 0.2)
    masks = data.batch(0, 32)["drop_masks"]
    assert masks.shape == (4, 32, MAX_LEN, 16) and masks.dtype == np.uint8
    assert masks.mean() == pytest.approx(0.8, abs=0.01)
    assert np.array_equal(masks, data.batch(0, 32)["drop_masks"])


def test_batch_size_and_corpus_size_errors(examples):
    data = PretrainingData(examples.pairs, examples.vocab, MAX_LEN)
    with pytest.raises(UserError, match="not divisible by the 3 ranks"):
        data.batch(0, 32, 0, 3)
    with pytest.raises(UserError, match="fewer than one batch"):
        data.steps_per_epoch(10**7)


def test_bad_corpus_files(tmp_path):
    latin = tmp_path / "wiki.train.tokens"
    latin.write_bytes("caf\xe9 . ok ok \n".encode("latin-1"))
    with pytest.raises(UserError, match=r"is not UTF-8 text \(line 1\)"):
        read_sentences(latin)
    single = tmp_path / "single.tokens"
    single.write_text(" = heading = \n just one sentence here \n", encoding="utf-8")
    with pytest.raises(UserError, match="no paragraph of two or more sentences"):
        read_sentences(single)
