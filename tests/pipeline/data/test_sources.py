"""pipeline/data/sources.py: documents become NSP pairs, or a clear refusal."""
import pytest

from pipeline.core.errors import UserError
from pipeline.core.tokenizer import learn_tokenizer
from pipeline.data.sources import documents_to_pairs


def test_a_corpus_without_two_sentence_documents_is_refused():
    tokenizer = learn_tokenizer(["one sentence only"], "whitespace", 100, True, 1)
    with pytest.raises(UserError, match="no document with two sentences"):
        documents_to_pairs([["one sentence only"], ["another"]], tokenizer, 32, 0, "the corpus")
