"""pipeline/tag.py: words to first-piece labels in windows of whole words, entity-level figures that count only
exact spans and types, and the two baselines."""
import numpy as np

from pipeline.core.tokenizer import WhitespaceTokenizer, learn_tokenizer
from pipeline.core.vocab import SPECIAL_TOKENS, Vocab
from pipeline.data.tagged import TaggedSet
from pipeline.tag import IGNORED, baseline_tags, entity_figures, tag_training_data, window_labels, windows


def test_windows_never_cut_a_word_and_hold_each_word_once():
    tokenizer = learn_tokenizer(["unbelievable crane flying over berlin"] * 30, "wordpiece", 70, True, 1)
    words = "unbelievable crane flying over berlin unbelievable crane".split()
    got = windows(tokenizer, words, 8)
    assert all(len(w.item[0]) <= 8 for w in got) and len(got) > 1
    covered = [w.first_word + k for w in got for k in range(len(w.word_starts))]
    assert covered == list(range(len(words)))
    for window in got:  # each word's first piece is where its label goes
        for k, position in enumerate(window.word_starts):
            assert window.item[0][position] == tokenizer.tokens(words[window.first_word + k])[0]


def test_labels_go_on_first_pieces_only_and_the_norm_counts_the_global_batch():
    vocab = Vocab([*SPECIAL_TOKENS, "a", "b", "c"])
    tokenizer = WhitespaceTokenizer(vocab)
    data = TaggedSet("t", [["a", "b"], ["c"], ["a", "c", "b"], ["b"]], [["B-X", "O"], ["O"], ["O", "B-X", "I-X"], ["O"]])
    tagged = tag_training_data(tokenizer, data, ["O", "B-X", "I-X"], 16, seed=0)
    labels = window_labels(windows(tokenizer, ["a", "b"], 16)[0], [1, 0])
    assert labels.tolist() == [IGNORED, 1, 0, IGNORED]
    whole = tagged.batch(0, 4)
    halves = [tagged.batch(0, 4, rank, 2) for rank in (0, 1)]
    assert whole["label_norm"][0] == 7 and halves[0]["label_norm"][0] == halves[1]["label_norm"][0] == 3.5
    assert ((whole["labels"] != IGNORED).sum(1) == whole["valid_length"] - 2).all()


def test_entity_figures_count_exact_spans_and_types():
    truth = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    guess = [["B-PER", "O", "O", "B-LOC"], ["B-LOC", "O"]]  # a cut span and a wrong type score nothing
    figures = entity_figures(truth, guess)
    assert figures["precision"] == 1 / 3 and figures["recall"] == 1 / 3 and figures["entities"] == 3
    assert figures["per_type"]["LOC"]["precision"] == 0.5 and figures["per_type"]["PER"]["f1"] == 0.0
    assert entity_figures(truth, truth)["f1"] == 1.0
    assert entity_figures(truth, [["O"] * 4, ["O"] * 2])["f1"] == 0.0


def test_the_most_frequent_tag_baseline_uses_the_training_file_and_o_for_unseen_words():
    train = TaggedSet("t", [["paris", "is"], ["paris", "x"], ["rome"]], [["B-LOC", "O"], ["B-LOC", "O"], ["B-PER"]])
    dev = TaggedSet("d", [["paris", "rome", "oslo"]], [["B-LOC", "B-LOC", "B-LOC"]])
    got = baseline_tags(train, dev)
    assert got["most_frequent_tag"] == [["B-LOC", "B-PER", "O"]] and got["all_o"] == [["O", "O", "O"]]
    assert np.isclose(entity_figures(dev.tags, got["most_frequent_tag"])["recall"], 1 / 3)
