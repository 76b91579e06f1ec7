"""Tagged text for token classification (`train.objective=tag`), in the formats users have: CoNLL columns (one
`word ... TAG` line per token, the tag in the last column, a blank line between sentences, `-DOCSTART-` lines
skipped) and JSON Lines `{"tokens": [...], "tags": [...]}` (transformers' run_ner). IOB1, IOB2 and BIOES tags
are read alike: entities are found as conlleval finds its chunks (`entities`). Every refusal is one line
naming the file and the line.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import UserError
from pipeline.core.files import read_utf8
from pipeline.data.labelled import json_rows

OUTSIDE = "O"


@dataclass(frozen=True)
class TaggedSet:
    """Sentences of words and their tags, as a file holds them."""

    path: str
    words: list[list[str]]
    tags: list[list[str]]

    def __len__(self) -> int:
        return len(self.words)


def read_tagged(path: str | Path) -> TaggedSet:
    """A tagged file by its extension: .jsonl/.json (JSON Lines), else CoNLL columns."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"tagged file not found: {path}")
    text = read_utf8(path)
    words, tags = (json_sentences(path, text) if path.suffix.lower() in (".jsonl", ".json")
                   else conll_sentences(path, text))
    if not words:
        raise UserError(f"{path} holds no tagged sentence")
    return TaggedSet(str(path), words, tags)


def conll_sentences(path: Path, text: str) -> tuple[list[list[str]], list[list[str]]]:
    words, tags, sentence, sentence_tags, columns = [], [], [], [], None
    for number, line in enumerate(text.splitlines() + [""], 1):
        fields = line.split()
        if not fields or fields[0] == "-DOCSTART-":
            if sentence:
                words.append(sentence)
                tags.append(sentence_tags)
            sentence, sentence_tags = [], []
            continue
        if len(fields) < 2:
            raise UserError(f"{path}: line {number} has no tag (a CoNLL line is: word ... TAG)")
        if columns is None:
            columns = len(fields)
        elif len(fields) != columns:
            raise UserError(f"{path}: line {number} has {len(fields)} columns, the lines before {columns}")
        sentence.append(fields[0])
        sentence_tags.append(fields[-1])
    return words, tags


def json_sentences(path: Path, text: str) -> tuple[list[list[str]], list[list[str]]]:
    words, tags = [], []
    for number, row in json_rows(path, text):
        tokens, labels = row.get("tokens"), row.get("tags")
        if not (isinstance(tokens, list) and isinstance(labels, list) and tokens and len(tokens) == len(labels)
                and all(isinstance(v, str) and v.strip() for v in tokens + labels)):
            raise UserError(f"{path}: line {number} needs \"tokens\" and \"tags\": lists of the same non-zero length "
                            f"of non-empty strings")
        words.append(tokens)
        tags.append(labels)
    return words, tags


def tag_set(train: TaggedSet) -> list[str]:
    """The training file's tags in id order: `O` first, then by entity type and scheme letter."""
    found = {tag for sentence in train.tags for tag in sentence}
    if len(found) < 2:
        raise UserError(f"{train.path}: every word has the tag {next(iter(found))!r}; a tagger needs at least two")
    return sorted(found, key=lambda tag: (tag != OUTSIDE, tag.partition("-")[2], tag))


def check_tags(data: TaggedSet, tags: list[str]) -> None:
    """A tag the training file never had is refused, naming it and where it is."""
    known = set(tags)
    for number, sentence in enumerate(data.tags, 1):
        unknown = [tag for tag in sentence if tag not in known]
        if unknown:
            raise UserError(f"{data.path}: sentence {number} has the tag {unknown[0]!r}, which the training file "
                            f"never had (its tags: {', '.join(tags)})")


def tag_settings(labels_file: str, eval_file: str | None, held: list[str] | None) -> dict:
    """model.labels (the tag set) and model.problem_type of a tagging run, every file checked before any work:
    the training file's tags, or `held` (an --init-from tagger's, in their order) where they cover them."""
    train = read_tagged(labels_file)
    tags = tag_set(train)
    if held and set(tags) <= set(held):
        tags = list(held)
    if eval_file:
        check_tags(read_tagged(eval_file), tags)
    return {"model.labels": tags, "model.problem_type": "token_classification"}


def split_tag(tag: str) -> tuple[str, str]:
    """(scheme letter, entity type): "B-PER" -> ("B", "PER"); "O" -> ("O", "")."""
    if tag == OUTSIDE or "-" not in tag:
        return (OUTSIDE, "") if tag == OUTSIDE else ("I", tag)
    prefix, _, kind = tag.partition("-")
    return prefix, kind


def entities(tags: list[str]) -> set[tuple[str, int, int]]:
    """The (type, first word, last word + 1) spans of a tag sequence, as conlleval finds chunks: IOB1 (I- starts
    an entity after O or another type), IOB2 (B- starts one) and BIOES (S- is one, E- ends one) alike."""
    spans, start, kind = set(), None, ""
    previous = (OUTSIDE, "")
    for i, tag in enumerate([*tags, OUTSIDE]):
        prefix, current = split_tag(tag)
        if start is not None and chunk_ends(previous, (prefix, current)):
            spans.add((kind, start, i))
            start = None
        if chunk_starts(previous, (prefix, current)):
            start, kind = i, current
        previous = (prefix, current)
    return spans


def chunk_ends(previous: tuple[str, str], current: tuple[str, str]) -> bool:
    (p, pk), (c, ck) = previous, current
    if p in ("E", "S"):
        return True
    if p in ("B", "I"):
        return c in ("B", "S", OUTSIDE) or (c in ("I", "E") and ck != pk)
    return False


def chunk_starts(previous: tuple[str, str], current: tuple[str, str]) -> bool:
    (p, pk), (c, ck) = previous, current
    if c in ("B", "S"):
        return True
    if c in ("I", "E"):
        return p in (OUTSIDE, "E", "S") or pk != ck
    return False
