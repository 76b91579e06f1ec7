"""pipeline/core/vocab.py: order, ties, unknown and literal special tokens, JSON round trip."""
from collections import Counter

from pipeline.core.vocab import Vocab


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
