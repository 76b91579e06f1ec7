"""Token classification (`train.objective=tag`): words become the model's pieces, each word's tag is learnt and
predicted on its first piece (the others are ignored in the loss, as run_ner does by default), a sentence longer
than the model's maximum is cut into windows of whole words (each word in exactly one), and the figures are
entity-level precision, recall and F1 (exact span and type, as conlleval and seqeval count them) next to two
baselines: every word `O`, and each word's most frequent tag in the training file (the CoNLL baseline).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from pipeline.core.export_format import input_names
from pipeline.core.tokenizer import Item, Tokenizer
from pipeline.data.example_batches import ExampleBatches
from pipeline.data.tagged import OUTSIDE, TaggedSet, entities

IGNORED = -100  # the label of a piece that is not a word's first, and of <cls>, <sep> and padding
BEST_TAG_METRIC = "f1"


@dataclass(frozen=True)
class Window:
    """Whole words of one sentence as one model input: its tokens and segments, and for each of its words
    (sentence word `first_word` + k) the position of that word's first piece."""

    item: Item
    first_word: int
    word_starts: list[int]


def windows(tokenizer: Tokenizer, words: list[str], max_len: int) -> list[Window]:
    """`<cls> pieces <sep>` windows of at most `max_len` tokens over the words of one sentence, never cutting a
    word (a single word longer than a window keeps its first pieces)."""
    vocab = tokenizer.vocab
    width = max_len - 2
    pieces = [tokenizer.tokens(word)[:width] or [vocab.specials.unk] for word in words]
    out, start = [], 0
    while start < len(words):
        tokens, starts, end = [vocab.specials.cls], [], start
        while end < len(words) and len(tokens) - 1 + len(pieces[end]) <= width:
            starts.append(len(tokens))
            tokens += pieces[end]
            end += 1
        tokens.append(vocab.specials.sep)
        out.append(Window((tokens, [0] * len(tokens)), start, starts))
        start = end
    return out


def window_labels(window: Window, tag_ids: list[int]) -> np.ndarray:
    """[len(tokens)] training labels: the word's tag on its first piece, IGNORED elsewhere."""
    labels = np.full(len(window.item[0]), IGNORED, dtype=np.int64)
    for k, position in enumerate(window.word_starts):
        labels[position] = tag_ids[window.first_word + k]
    return labels


def sentence_windows(tokenizer: Tokenizer, data: TaggedSet, max_len: int) -> list[list[Window]]:
    return [windows(tokenizer, words, max_len) for words in data.words]


class TagData(ExampleBatches):
    """Tagged windows in batches, with each token's label (IGNORED but on words' first pieces); `label_norm` is
    the global batch's labelled words over the world size (the loss's divisor: averaging the ranks' gradients
    then equals one process)."""

    what = "tagged windows"

    def __init__(self, items: list[Item], labels: list[np.ndarray], tokenizer: Tokenizer, seed: int = 0):
        super().__init__(items, tokenizer, seed)
        self.labels = labels

    def targets(self, chosen: np.ndarray, every: np.ndarray, width: int, world: int) -> dict[str, np.ndarray]:
        labels = np.full((len(chosen), width), IGNORED, dtype=np.int64)
        for row, i in enumerate(chosen):
            labels[row, :len(self.labels[i])] = self.labels[i]
        labelled = sum(int((self.labels[i] != IGNORED).sum()) for i in every)
        return {"labels": labels, "label_norm": np.array([max(labelled / world, 1e-6)], dtype=np.float32)}


def tag_training_data(tokenizer: Tokenizer, data: TaggedSet, tags: list[str], max_len: int, seed: int) -> TagData:
    ids = {tag: i for i, tag in enumerate(tags)}
    items, labels = [], []
    for sentence_tags, its_windows in zip(data.tags, sentence_windows(tokenizer, data, max_len)):
        tag_ids = [ids[t] for t in sentence_tags]
        for window in its_windows:
            items.append(window.item)
            labels.append(window_labels(window, tag_ids))
    return TagData(items, labels, tokenizer, seed)


def predict_word_tags(run: Callable[[dict], np.ndarray], tokenizer: Tokenizer, data: TaggedSet, tags: list[str],
                      max_len: int, batch_size: int = 64) -> list[list[str]]:
    """Each sentence's predicted tag per word (its first piece's argmax), windows put back together."""
    from pipeline.classify import run_in_batches

    per_sentence = sentence_windows(tokenizer, data, max_len)
    flat = [window for sentence in per_sentence for window in sentence]
    logits = run_in_batches(run, tokenizer.vocab, [w.item for w in flat], batch_size)  # each [width, tags]
    out, at = [], 0
    for sentence in per_sentence:
        words: list[str] = []
        for window in sentence:
            words += [tags[int(logits[at][position].argmax())] for position in window.word_starts]
            at += 1
        out.append(words)
    return out


def entity_figures(truth: list[list[str]], predicted: list[list[str]]) -> dict:
    """Entity-level precision, recall and F1, overall and per type (exact span and type), and word accuracy."""
    found, gold, hit = Counter(), Counter(), Counter()
    for true_tags, guess in zip(truth, predicted):
        want, got = entities(true_tags), entities(guess)
        for kind, *_ in want:
            gold[kind] += 1
        for kind, *_ in got:
            found[kind] += 1
        for kind, *_ in want & got:
            hit[kind] += 1

    def prf(h: int, f: int, g: int) -> dict:
        precision, recall = (h / f if f else 0.0), (h / g if g else 0.0)
        return {"precision": precision, "recall": recall,
                "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0}

    words = sum(len(t) for t in truth)
    right = sum(a == b for t, p in zip(truth, predicted) for a, b in zip(t, p))
    return {**prf(sum(hit.values()), sum(found.values()), sum(gold.values())), "word_accuracy": right / max(words, 1),
            "entities": sum(gold.values()),
            "per_type": {kind: prf(hit[kind], found[kind], gold[kind]) for kind in sorted(gold | found)}}


def baseline_tags(train: TaggedSet, data: TaggedSet) -> dict[str, list[list[str]]]:
    """Every word `O`; and each word's most frequent tag in the training file (`O` for an unseen word)."""
    seen: dict[str, Counter] = defaultdict(Counter)
    for words, tags in zip(train.words, train.tags):
        for word, tag in zip(words, tags):
            seen[word][tag] += 1
    frequent = {word: counts.most_common(1)[0][0] for word, counts in seen.items()}
    return {"all_o": [[OUTSIDE] * len(words) for words in data.words],
            "most_frequent_tag": [[frequent.get(word, OUTSIDE) for word in words] for words in data.words]}


def format_tag_figures(figures: dict, sentences: int) -> str:
    base = figures["baselines"]
    kinds = ", ".join(f"{kind} {v['f1']:.3f}" for kind, v in figures["per_type"].items())
    return (f"dev entity F1 {figures['f1']:.3f} (precision {figures['precision']:.3f}, recall {figures['recall']:.3f}; "
            f"every word O {base['all_o']['f1']:.3f}, most frequent tag {base['most_frequent_tag']['f1']:.3f}), "
            f"by type: {kinds}; word accuracy {figures['word_accuracy']:.3f} over {sentences} sentences")


class TagEvaluation:
    """The dev file of a tagging run: its figures for the model as it is now, next to the two baselines."""

    def __init__(self, train: TaggedSet, dev: TaggedSet, tags: list[str], tokenizer: Tokenizer, max_len: int):
        self.train, self.dev, self.tags, self.tokenizer, self.max_len = train, dev, tags, tokenizer, max_len
        self.metric = BEST_TAG_METRIC
        self.baselines = {name: {k: v for k, v in entity_figures(dev.tags, guess).items() if k != "per_type"}
                          for name, guess in baseline_tags(train, dev).items()}
        self.items = dev.words  # what format lines count

    def logits(self, tagger) -> list[list[str]]:
        """The predicted tags of the dev file through `tagger` (a TokenClassifier), in eval mode."""
        import paddle

        was_training = tagger.training
        tagger.eval()
        try:
            with paddle.no_grad():
                return predict_word_tags(lambda arrays: tagger(*(paddle.to_tensor(arrays[n]) for n in input_names())
                                                               )[1].numpy(), self.tokenizer, self.dev, self.tags,
                                         self.max_len)
        finally:
            if was_training:
                tagger.train()

    def figures(self, predicted: list[list[str]]) -> dict:
        return {**entity_figures(self.dev.tags, predicted), "baselines": self.baselines}

    def describe(self, figures: dict) -> str:
        return format_tag_figures(figures, len(self.dev))

    def write(self, output, predicted: list[list[str]]) -> None:
        write_tag_predictions(output / "dev_predictions.conll", self.dev, predicted)


def write_tag_predictions(path, data: TaggedSet, predicted: list[list[str]]) -> None:
    """CoNLL columns: word, true tag, predicted tag (conlleval's input), a blank line between sentences."""
    from pipeline.core.files import write_text_atomic

    blocks = ["\n".join(f"{w} {t} {p}" for w, t, p in zip(words, tags, guess))
              for words, tags, guess in zip(data.words, data.tags, predicted)]
    write_text_atomic(path, "\n\n".join(blocks) + "\n")
