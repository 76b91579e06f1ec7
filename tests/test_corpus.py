"""Your own corpus: finding and reading files, sentence splitting, WordPiece, whole-word masking, and an
English and a Chinese corpus trained, exported and encoded end to end with the same token ids."""
import json

import numpy as np
import pytest

from pipeline.corpus import file_documents, find_files, split_sentences
from pipeline.errors import UserError
from pipeline.examples import encode_documents, mask_tokens
from pipeline.sources import documents_to_pairs
from pipeline.tokenizer import learn_tokenizer
from pipeline.tokenizer import TOKENIZER_FILE, WordPieceTokenizer, load_tokenizer
from pipeline.vocab import SPECIAL_TOKENS, Vocab
from tests.conftest import TINY, run_script

EN_WORDS = ("the crane is flying over the river a driver came to the bank he just left city did she see it "
            "yes they played game café naïve Berlin isn't").split()
ZH_CHARS = list("我们去北京天气很好你来吗他们在河边看见一只鹤飞过城市司机来到银行")


def write_english(path, documents=120, seed=0):
    rng = np.random.default_rng(seed)
    docs = [" ".join(" ".join(rng.choice(EN_WORDS, rng.integers(3, 9))).capitalize() + rng.choice([".", "!", "?"])
                     for _ in range(rng.integers(2, 5))) for _ in range(documents)]
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")


def write_chinese(path, documents=120, seed=1):
    rng = np.random.default_rng(seed)
    docs = ["".join("".join(rng.choice(ZH_CHARS, rng.integers(3, 9))) + rng.choice(list("。！？"))
                    for _ in range(rng.integers(2, 5))) for _ in range(documents)]
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")


def test_sentences_split_in_english_and_chinese(tmp_path):
    assert split_sentences("The crane, flying over Berlin, isn't here. It left! Did it? Yes") == \
        ["The crane, flying over Berlin, isn't here.", "It left!", "Did it?", "Yes"]
    assert split_sentences("我们去北京。天气很好！你来吗？好的") == ["我们去北京。", "天气很好！", "你来吗？", "好的"]
    (tmp_path / "t.txt").write_text("a. b.\nc!\n\n \nd. e\n", encoding="utf-8")
    assert list(file_documents(tmp_path / "t.txt")) == [["a.", "b.", "c!"], ["d.", "e"]]


def test_files_folders_and_globs(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("a.txt", "sub/b.md", "sub/c.TXT", "skip.json"):
        (tmp_path / name).write_text("x. y.\n", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("")
    found = find_files([tmp_path])
    assert [p.name for p in found.files] == ["a.txt", "b.md", "c.TXT"] and [p.name for p in found.empty] == ["empty.txt"]
    assert [p.name for p in find_files([str(tmp_path / "**" / "*.md")]).files] == ["b.md"]
    with pytest.raises(UserError, match="no such file or folder"):
        find_files([tmp_path / "nope"])


def test_bad_files_are_named_in_one_line(tmp_path):
    latin = tmp_path / "latin1.txt"
    latin.write_bytes("line one\ncafé".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1.txt is not UTF-8 text \(invalid byte at line 2\)"):
        list(file_documents(latin))
    binary = tmp_path / "image.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(UserError, match="image.txt looks binary"):
        list(file_documents(binary))


def test_a_corpus_without_two_sentence_documents_is_refused():
    tokenizer = learn_tokenizer(["one sentence only"], "whitespace", 100, True, 1)
    with pytest.raises(UserError, match="no document with two sentences"):
        documents_to_pairs([["one sentence only"], ["another"]], tokenizer, 32, 0, "the corpus")


def test_wordpiece_normalises_like_bert():
    docs = [["The crane, flying over Berlin, isn't here.", "Café naïve 我们去北京。"]] * 50
    sentences = [s for doc in docs for s in doc]
    tok = learn_tokenizer(sentences, "wordpiece", 120, True, 1)
    assert tok.vocab.idx_to_token[:5] == list(SPECIAL_TOKENS), "special tokens keep their ids"
    tokens = tok.tokens("CAFÉ, Berlin! 北京")
    assert tokens[:3] == ["cafe", ",", "berlin"] and tokens[-2:] == ["北", "京"], tokens
    cased = learn_tokenizer(sentences, "wordpiece", 120, False, 1)
    assert "Berlin" in "".join(cased.tokens("Berlin")).replace("##", "")


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
    crane test does (one rule, pipeline.tokenizer.word_position)."""
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
    from infer.predictor import Encoder

    language, text, out = corpus_run
    rng = np.random.default_rng(5)
    lines = text.read_text(encoding="utf-8").split("\n\n")[:100]
    lines += [" ".join(rng.choice(EN_WORDS + ZH_CHARS + ["!", "é", "Ünïcödé", "\t", "x" * 30], 8)) for _ in range(200)]
    training_side = load_tokenizer(out, WordPieceTokenizer.load(out / TOKENIZER_FILE).vocab)
    encoder = Encoder(out / "inference", device="cpu")
    for line in lines:
        want, _ = encode_documents([[line]], training_side)  # the ids training feeds the model
        assert [encoder.vocab[t] for t in encoder.tokenizer.tokens(line)] == want.tolist(), line


@pytest.fixture(scope="module")
def prepared_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prep")
    write_english(folder / "a.txt", seed=3)
    write_chinese(folder / "b.md", seed=4)
    out = folder / "prepared"
    result = run_script("pipeline/prepare.py", "--corpus", str(folder), "--output-dir", str(out),
                        "-o", "data.tokenizer=wordpiece", "-o", "data.vocab_size=300", "-o", "data.max_len=32")
    assert result.returncode == 0, result.stderr
    return folder, out


def test_prepare_writes_maps_an_index_and_the_tokenizer(prepared_folder):
    from pipeline.mapped_corpus import MappedCorpus

    folder, out = prepared_folder
    index = json.loads((out / "index.json").read_text())
    assert {p.name for p in out.iterdir()} >= {"tokens.bin", "sentence_starts.bin", "document_starts.bin",
                                              "pairs.bin", "index.json", "vocab.json", TOKENIZER_FILE}
    assert index["documents"] == 240 and index["pairs"] > 300 and index["token_dtype"] == "uint16"
    corpus = MappedCorpus.open(out)
    pairs = corpus.take(np.array([5, 0, 17]), 32)
    vocab = corpus.tokenizer.vocab
    texts = (folder / "a.txt").read_text(encoding="utf-8") + (folder / "b.md").read_text(encoding="utf-8")
    for row in range(3):
        n = pairs.valid_length[row]
        tokens = [vocab.idx_to_token[i] for i in pairs.input_ids[row, :n]]
        first = tokens[1:tokens.index("<sep>")]
        assert tokens[0] == "<cls>" and tokens[-1] == "<sep>" and first
        assert corpus.tokenizer.backend.decode([vocab[t] for t in first]).replace(" ", "")[:4] in \
            texts.lower().replace(" ", ""), "segment A is a sentence of the corpus"


def test_training_from_maps_resumes_exactly(prepared_folder, tmp_path):
    _, out = prepared_folder
    flags = ["--prepared", str(out), *TINY]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    for folder, steps, extra in ((whole, 6, []), (parts, 3, []), (parts, 6, ["--resume"])):
        result = run_script("pipeline/train.py", "--output-dir", str(folder), "--steps", str(steps), *flags, *extra)
        assert result.returncode == 0, result.stderr
    losses = [[json.loads(line)["mlm_loss"] for line in (f / "metrics.jsonl").read_text().splitlines()]
              for f in (whole, parts)]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)


def test_bad_prepared_folders_are_refused(prepared_folder, tmp_path):
    import shutil

    from tests.helpers.checks import assert_user_error

    _, out = prepared_folder
    assert_user_error(run_script("pipeline/train.py", "--prepared", str(tmp_path / "none"), *TINY), "no such folder")
    damaged = tmp_path / "damaged"
    shutil.copytree(out, damaged)
    (damaged / "pairs.bin").write_bytes((damaged / "pairs.bin").read_bytes()[:-8])
    assert_user_error(run_script("pipeline/train.py", "--prepared", str(damaged), "--output-dir", str(tmp_path / "o"),
                                 *TINY), "pairs.bin is missing or has the wrong size")
    single = tmp_path / "single.txt"
    single.write_text("only one sentence here\n\nand one here\n", encoding="utf-8")
    assert_user_error(run_script("pipeline/prepare.py", "--corpus", str(single), "--output-dir", str(tmp_path / "p")),
                      "makes no sentence pair")


def test_parts_tokenized_by_several_processes_give_the_ids_of_the_one_in_memory_path(tmp_path):
    """pass 2 cut into parts of ~1.5 KB (many per file, a BOM, CRLF endings, blank lines of spaces) and run by
    two worker processes: the same tokens, sentence and document offsets as encode_documents over all of it."""
    from pipeline import prepare
    from pipeline.corpus import read_documents

    write_english(tmp_path / "a.txt", documents=150, seed=7)
    write_chinese(tmp_path / "b.txt", documents=90, seed=8)
    (tmp_path / "c.txt").write_bytes("\ufeffThe crane left. It came!\r\n \r\nA driver came.\r\nHe left.\r\n".encode())
    files = [tmp_path / n for n in ("a.txt", "b.txt", "c.txt")]
    tokenizer = learn_tokenizer((s for doc in read_documents(files) for s in doc), "wordpiece", 300, True, 1)
    out = tmp_path / "out"
    out.mkdir()
    tokenizer.save(out)
    assert len(prepare.corpus_parts(files, 1500)) > 10
    counts = prepare.write_ids(files, out, np.dtype(np.uint16), workers=2, part_bytes=1500)
    ids, index = encode_documents(list(read_documents(files)), tokenizer)
    np.testing.assert_array_equal(np.fromfile(out / "tokens.bin", dtype=np.uint16), ids)
    np.testing.assert_array_equal(np.fromfile(out / "sentence_starts.bin", dtype=np.int64), index.sentence_starts)
    np.testing.assert_array_equal(np.fromfile(out / "document_starts.bin", dtype=np.int64), index.document_starts)
    assert counts == (len(ids), len(index.sentence_starts) - 1, len(index.document_starts) - 1)
    assert sorted(p.name for p in out.iterdir()) == ["document_starts.bin", "sentence_starts.bin", "tokenizer.json",
                                                      "tokens.bin", "vocab.json"]  # no part files left


def test_a_bad_byte_in_a_later_part_is_named_with_its_line_in_the_file(tmp_path):
    from pipeline import prepare

    path = tmp_path / "a.txt"
    write_english(path, documents=100, seed=2)
    lines = path.read_bytes().split(b"\n")
    lines[150] = b"caf\xe9 " + lines[150]
    path.write_bytes(b"\n".join(lines))
    out = tmp_path / "out"
    out.mkdir()
    learn_tokenizer(["the crane"], "whitespace", 0, True, 1).save(out)
    with pytest.raises(UserError, match=r"a.txt is not UTF-8 text \(invalid byte at line 151\)"):
        prepare.write_ids([path], out, np.dtype(np.uint16), workers=1, part_bytes=500)


def test_the_tokenizer_sample_is_bounded_seeded_and_made_of_whole_lines(tmp_path):
    from pipeline.prepare import sample_lines

    files = []
    for i in range(3):
        write_english(tmp_path / f"{i}.txt", documents=400, seed=i)
        files.append(tmp_path / f"{i}.txt")
    every_line = {line for f in files for line in f.read_text(encoding="utf-8").splitlines() if line.strip()}
    sample = sample_lines(files, 20_000, seed=0, block=2_000)
    assert 10_000 < sum(len(line) for line in sample) < 30_000  # ~10 blocks of 2 KB, cut to whole lines
    assert set(sample) <= every_line and len(set(sample)) == len(sample)
    assert sample_lines(files, 20_000, seed=0, block=2_000) == sample
    assert sample_lines(files, 20_000, seed=1, block=2_000) != sample
    assert set(sample_lines(files, 10**9, seed=0, block=2_000)) == every_line  # larger than the corpus: all of it


def test_prepare_learns_wordpiece_from_a_sample_of_a_large_corpus(tmp_path):
    import re

    write_english(tmp_path / "big.txt", documents=30000, seed=9)  # ~2.5 MB; the 1 MB sample is 16 blocks of 64 KiB
    out = tmp_path / "prepared"
    result = run_script("pipeline/prepare.py", "--corpus", str(tmp_path / "big.txt"), "--output-dir", str(out),
                        "-o", "data.tokenizer=wordpiece", "-o", "data.vocab_size=200", "-o", "data.tokenizer_sample_mb=1")
    assert result.returncode == 0, result.stderr
    sample, corpus = map(float, re.search(r"from a ([\d.]+) MB sample of the ([\d.]+) MB corpus", result.stderr).groups())
    assert 0.9 < sample < 1.2 and corpus > 2.0
    index = json.loads((out / "index.json").read_text())
    assert index["documents"] == 30000 and 100 < index["vocab_size"] <= 200
