"""pipeline/data/pretraining_examples.py: NSP pairs and MLM masking (80/10/10, whole words)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.errors import UserError
from pipeline.core.vocab import SPECIAL_TOKENS, Vocab
from pipeline.data.pretraining_examples import make_pairs, mask_tokens, max_predictions
from pipeline.data.wikitext import read_sentences
from pipeline.data.wikitext_pairs import wikitext_examples


def test_whole_word_masking_masks_every_piece_of_a_word():
    rng = np.random.default_rng(0)
    vocab, continuation = Vocab(list(SPECIAL_TOKENS) + [f"w{i}" for i in range(35)]), np.zeros(40, dtype=bool)
    continuation[30:] = True  # ids 30.. are '##' pieces
    ids = rng.integers(5, 30, (200, 24))
    ids[:, 2::3] = rng.integers(30, 40, (200, 8))  # words: [start, start ##piece] repeated
    ids[:, 0] = 3
    masked = mask_tokens(ids, vocab, 8, 0.3, np.random.default_rng(1), continuation)
    chosen = np.zeros_like(ids, dtype=bool)
    rows = np.repeat(np.arange(200), 8)
    chosen[rows, masked.pred_positions.ravel()] = masked.mlm_weights.ravel() > 0
    pieces = np.flatnonzero((ids[:, 1:] >= 30).ravel() & chosen[:, 1:].ravel())
    starts_of_chosen_pieces = chosen[:, :-1].ravel()[pieces]
    assert len(pieces) > 100 and starts_of_chosen_pieces.mean() > 0.95, "a piece is masked with its word start"


MAX_LEN = 32


@pytest.fixture(scope="module")
def examples(corpus_dir):
    return wikitext_examples(corpus_dir / "wiki.train.tokens", MAX_LEN, 1, 0, None)


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
