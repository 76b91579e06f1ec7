"""Held-out figures on models with a known answer: a constant model scores exactly its baseline."""
import json
import math

import numpy as np
import pytest

from pipeline.core.tokenizer import WhitespaceTokenizer
from pipeline.core.vocab import SPECIAL_TOKENS
from pipeline.data.batches import eval_batches
from pipeline.data.wikitext_pairs import wikitext_examples
from pipeline.evaluate import encoding_figures, mean_token_cosine, mlm_nsp_figures

MAX_LEN, BATCH = 32, 64
UNK = SPECIAL_TOKENS.index("<unk>")


@pytest.fixture(scope="module")
def held_out(corpus_dir):
    train = wikitext_examples(corpus_dir / "wiki.train.tokens", MAX_LEN, 3, 0, None)  # min_freq 3: some <unk> targets
    return train.vocab, wikitext_examples(corpus_dir / "wiki.test.tokens", MAX_LEN, 3, 0, None, vocab=train.vocab).pairs


def targets(pairs, vocab):
    labels = [b["mlm_labels"][b["mlm_weights"] > 0] for b in eval_batches(pairs, vocab, MAX_LEN, BATCH)]
    return np.concatenate(labels)


def constant(vocab_size, favourite=None, nsp_favourite=None):
    """A model that ignores its input: the same MLM and NSP logits everywhere."""
    def pretraining(ids, token_type_ids, lens, positions):
        mlm = np.zeros((len(ids), positions.shape[1], vocab_size), dtype=np.float32)
        nsp = np.zeros((len(ids), 2), dtype=np.float32)
        if favourite is not None:
            mlm[..., favourite] = 5.0
        if nsp_favourite is not None:
            nsp[:, nsp_favourite] = 1.0
        return mlm, nsp
    return pretraining


def figures(pretraining, pairs, vocab):
    return mlm_nsp_figures(pretraining, pairs, vocab, MAX_LEN, BATCH)


def test_held_out_targets_include_unk(held_out):
    vocab, pairs = held_out
    share = (targets(pairs, vocab) == UNK).mean()
    assert 0 < share < 0.5


def test_a_constant_model_scores_exactly_the_unigram_baselines(held_out):
    vocab, pairs = held_out
    labels = targets(pairs, vocab)
    mode = int(np.bincount(labels).argmax())
    known_mode = int(np.bincount(labels[labels != UNK]).argmax())
    m = figures(constant(len(vocab), mode), pairs, vocab)
    assert m["mlm_accuracy"] == m["mlm_unigram_baseline"] == pytest.approx((labels == mode).mean())
    assert m["mlm_unk_share"] == pytest.approx((labels == UNK).mean())
    k = figures(constant(len(vocab), known_mode), pairs, vocab)
    assert k["mlm_accuracy_known"] == k["mlm_unigram_baseline_known"]
    assert k["mlm_unigram_baseline_known"] == pytest.approx((labels == known_mode).sum() / (labels != UNK).sum())


def test_a_model_that_always_says_unk_scores_zero_on_known_words(held_out):
    vocab, pairs = held_out
    m = figures(constant(len(vocab), UNK), pairs, vocab)
    assert m["mlm_accuracy"] == pytest.approx(m["mlm_unk_share"])
    assert m["mlm_accuracy_known"] < m["mlm_unigram_baseline_known"], "<unk> is never an answer for known words"


def test_uniform_logits_give_perplexity_equal_to_the_vocabulary_size(held_out):
    vocab, pairs = held_out
    m = figures(constant(len(vocab)), pairs, vocab)
    assert m["mlm_perplexity"] == pytest.approx(len(vocab), rel=1e-4)


def test_an_oracle_scores_one_and_perplexity_near_one(held_out):
    vocab, pairs = held_out
    seen = iter(eval_batches(pairs, vocab, MAX_LEN, BATCH))

    def oracle(ids, token_type_ids, lens, positions):
        batch = next(seen)
        mlm = np.zeros((len(ids), positions.shape[1], len(vocab)), dtype=np.float32)
        np.put_along_axis(mlm, batch["mlm_labels"][..., None], 30.0, axis=-1)
        nsp = np.stack([1 - batch["nsp_labels"], batch["nsp_labels"]], axis=1).astype(np.float32)
        return mlm, nsp

    m = figures(oracle, pairs, vocab)
    assert m["mlm_accuracy"] == m["mlm_accuracy_known"] == m["nsp_accuracy"] == 1.0
    assert 1.0 <= m["mlm_perplexity"] < 1.001


def test_nsp_majority_baseline(held_out):
    vocab, pairs = held_out
    majority = int(pairs.nsp_labels.mean() >= 0.5)
    m = figures(constant(len(vocab), 5, nsp_favourite=majority), pairs, vocab)
    assert m["nsp_accuracy"] == m["nsp_majority_baseline"] == pytest.approx(max(pairs.nsp_labels.mean(),
                                                                             1 - pairs.nsp_labels.mean()))


def test_mean_token_cosine_of_known_cases():
    lens = np.array([6, 6])
    same = np.ones((2, 6, 4), dtype=np.float32)
    assert mean_token_cosine(same, lens) == pytest.approx(1.0)
    orthogonal = np.tile(np.eye(6, dtype=np.float32)[None], (2, 1, 1))
    assert mean_token_cosine(orthogonal, lens) == pytest.approx(0.0)
    opposite = np.array([[[0, 0], [1, 0], [-1, 0], [0, 0]]], dtype=np.float32)  # <cls>, two tokens, <sep>
    assert mean_token_cosine(opposite, np.array([4])) == pytest.approx(-1.0)


def test_encoding_figures_tell_collapsed_context_free_and_contextual_encoders_apart(held_out):
    vocab, pairs = held_out
    table = np.random.default_rng(0).normal(size=(len(vocab), 8)).astype(np.float32)

    def collapsed(ids, token_type_ids, lens):
        return np.ones((*ids.shape, 8), dtype=np.float32)

    def context_free(ids, token_type_ids, lens):
        return table[ids]

    def contextual(ids, token_type_ids, lens):
        return table[ids] + table[np.roll(ids, -1, axis=1)]  # the next word

    tokenizer = WhitespaceTokenizer(vocab)
    c = encoding_figures(collapsed, pairs, tokenizer, MAX_LEN)
    assert c["encoding_mean_cosine"] == pytest.approx(1.0) and c["crane_cosine"] == pytest.approx(1.0)
    f = encoding_figures(context_free, pairs, tokenizer, MAX_LEN)
    assert f["encoding_mean_cosine"] < 0.5 and f["crane_cosine"] == pytest.approx(1.0)
    x = encoding_figures(contextual, pairs, tokenizer, MAX_LEN)
    assert x["encoding_mean_cosine"] < 0.9 and x["crane_cosine"] < 0.98
    assert not math.isnan(x["crane_cosine"])


def test_standalone_evaluation_uses_the_models_tokenizer_and_equals_the_end_of_training(corpus_dir, tmp_path):
    """A WordPiece model: evaluate.py on the same held-out text (a WikiText split, or --corpus) gives exactly
    the end-of-training eval.json; WikiText is tokenized into pieces, not looked up as whole words."""
    from tests.conftest import TINY, run_script

    wordpiece = ["-o", "data.tokenizer=wordpiece", "-o", "data.vocab_size=200", *TINY]
    out = tmp_path / "wp"
    result = run_script("pipeline/train.py", "--data-dir", str(corpus_dir), "--split", "valid", "--eval-split", "test",
                        "--output-dir", str(out), "--steps", "3", *wordpiece)
    assert result.returncode == 0, result.stderr
    at_the_end = json.loads((out / "eval.json").read_text())
    alone = run_script("pipeline/evaluate.py", "--output-dir", str(out), "--data-dir", str(corpus_dir), "--split", "test")
    assert alone.returncode == 0, alone.stderr
    assert json.loads(alone.stdout.strip().splitlines()[-1]) == at_the_end
    assert at_the_end["mlm_unk_share"] < 0.05  # pieces, not whole words missing from the vocabulary

    own = tmp_path / "own"
    (tmp_path / "held_out.txt").write_text("The crane is flying. It came back!\n\nA driver came. He just left.\n" * 20)
    result = run_script("pipeline/train.py", "--corpus", str(corpus_dir / "wiki.train.tokens"), "--eval-corpus",
                        str(tmp_path / "held_out.txt"), "--output-dir", str(own), "--steps", "2", *wordpiece)
    assert result.returncode == 0, result.stderr
    alone = run_script("pipeline/evaluate.py", "--output-dir", str(own), "--corpus", str(tmp_path / "held_out.txt"))
    assert alone.returncode == 0, alone.stderr
    assert json.loads(alone.stdout.strip().splitlines()[-1]) == json.loads((own / "eval.json").read_text())

    prepared = tmp_path / "prepared"
    assert run_script("pipeline/prepare.py", "--corpus", str(tmp_path / "held_out.txt"), "--output-dir", str(prepared),
                      "-o", "data.max_len=32").returncode == 0
    refused = run_script("pipeline/evaluate.py", "--output-dir", str(own), "--prepared", str(prepared))
    assert refused.returncode == 2 and "another tokenizer" in refused.stderr, refused.stderr
