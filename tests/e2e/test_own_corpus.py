"""End to end: your own corpus (English and Chinese) trained with WordPiece, exported and encoded with the same ids."""
import json

import numpy as np
import pytest

from pipeline.core.tokenizer import TOKENIZER_FILE, WordPieceTokenizer, load_tokenizer
from pipeline.data.pretraining_examples import encode_documents
from tests.conftest import TINY, run_script
from tests.helpers.corpora import EN_WORDS, ZH_CHARS, write_chinese, write_english


@pytest.fixture(scope="module", params=["english", "chinese"])
def corpus_run(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    text = folder / ("corpus.txt" if request.param == "english" else "corpus.md")
    (write_english if request.param == "english" else write_chinese)(text)
    out = folder / "out"
    result = run_script("pipeline/train.py", "--corpus", str(folder), "--eval-corpus", str(text), "--output-dir", str(out),
                        "--steps", "6", *TINY, "-o", "data.tokenizer=wordpiece", "-o", "data.vocab_size=300",
                        "-o", "data.whole_word_mask=true")
    assert result.returncode == 0, result.stderr
    export = run_script("export/save.py", "--output-dir", str(out))
    assert export.returncode == 0, export.stderr
    return request.param, text, out


def test_own_corpus_trains_exports_and_encodes_with_wordpiece(corpus_run):
    language, text, out = corpus_run
    assert (out / TOKENIZER_FILE).is_file() and (out / "inference" / TOKENIZER_FILE).is_file()
    assert json.loads((out / "eval.json").read_text())["mlm_targets"] > 0
    sample = "The crane is flying over Berlin, isn't it?" if language == "english" else "我们去北京看鹤。"
    result = run_script("infer/encode.py", "--model-dir", str(out / "inference"), "--text", sample, "--json")
    assert result.returncode == 0, result.stderr
    tokens = json.loads(result.stdout)["tokens"]
    expected = ["<cls>", "the", "crane", "is"] if language == "english" else ["<cls>", "我", "们", "去"]
    assert tokens[:4] == expected and tokens[-1] == "<sep>"


def test_compare_takes_a_word_of_several_pieces_by_its_first_piece(corpus_run):
    """encode.py --compare --word with a word WordPiece splits: the vector of its first piece, as the held-out
    crane test does (one rule, pipeline.core.tokenizer.word_position)."""
    language, _, out = corpus_run
    if language != "english":
        pytest.skip("runs on the English corpus, whose vocabulary splits the made-up word")
    result = run_script("infer/encode.py", "--model-dir", str(out / "inference"), "--text", "the craneflyer is here",
                        "--compare", "a craneflyer came", "--word", "Craneflyer")
    assert result.returncode == 0, result.stderr
    assert "cosine similarity of 'Craneflyer' in the two contexts:" in result.stdout
    missing = run_script("infer/encode.py", "--model-dir", str(out / "inference"), "--text", "the crane",
                         "--compare", "a driver", "--word", "bank")
    assert missing.returncode == 2 and "is not among the tokens" in missing.stderr


def test_training_and_inference_give_the_same_ids(corpus_run):
    from infer.encoder import Encoder

    language, text, out = corpus_run
    rng = np.random.default_rng(5)
    lines = text.read_text(encoding="utf-8").split("\n\n")[:100]
    lines += [" ".join(rng.choice(EN_WORDS + ZH_CHARS + ["!", "é", "Ünïcödé", "\t", "x" * 30], 8)) for _ in range(200)]
    training_side = load_tokenizer(out, WordPieceTokenizer.load(out / TOKENIZER_FILE).vocab)
    encoder = Encoder(out / "inference", device="cpu")
    for line in lines:
        want, _ = encode_documents([[line]], training_side)  # the ids training feeds the model
        assert [encoder.vocab[t] for t in encoder.tokenizer.tokens(line)] == want.tolist(), line
