"""pipeline/data/batches.py: shards, epochs, dynamic masking, host dropout and batch-size refusals."""
import numpy as np
import pytest

from pipeline.core.errors import UserError
from pipeline.data.batches import PretrainingData
from pipeline.data.wikitext_pairs import wikitext_examples

MAX_LEN = 32


@pytest.fixture(scope="module")
def examples(corpus_dir):
    return wikitext_examples(corpus_dir / "wiki.train.tokens", MAX_LEN, 1, 0, None)


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
