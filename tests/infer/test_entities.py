"""infer/entities.py: transformers' `simple` aggregation, with character offsets into the text."""
import numpy as np

from infer.entities import grouped_entities

LABELS = ["O", "B-PER", "I-PER", "B-LOC"]


def logits_for(tags: list[str]) -> np.ndarray:
    rows = np.full((len(tags), len(LABELS)), -4.0)
    for i, tag in enumerate(tags):
        rows[i, LABELS.index(tag)] = 4.0
    return rows


def test_pieces_of_one_type_group_unless_a_b_tag_begins_another_and_o_is_left_out():
    text = "Alice Smith met Bob in Paris"
    spans = [("alice", 0, 5), ("smith", 6, 11), ("met", 12, 15), ("bob", 16, 19), ("in", 20, 22), ("paris", 23, 28)]
    found = grouped_entities(text, spans, logits_for(["B-PER", "I-PER", "O", "B-PER", "O", "B-LOC"]), LABELS)
    assert [(e["entity_group"], e["word"], e["start"], e["end"]) for e in found] == [
        ("PER", "Alice Smith", 0, 11), ("PER", "Bob", 16, 19), ("LOC", "Paris", 23, 28)]
    probability = np.exp(4.0) / (np.exp(4.0) + 3 * np.exp(-4.0))
    assert np.isclose(found[0]["score"], probability)
    adjacent = grouped_entities("Al Bo", [("al", 0, 2), ("bo", 3, 5)], logits_for(["B-PER", "B-PER"]), LABELS)
    assert [e["word"] for e in adjacent] == ["Al", "Bo"]
