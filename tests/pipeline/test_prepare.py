"""pipeline/prepare.py and the prepared corpus it writes (pipeline/data/prepared_corpus.py): maps, index, tokenizer sample, parts and refusals."""
import json

import numpy as np
import pytest

from pipeline.core.errors import UserError
from pipeline.core.tokenizer import TOKENIZER_FILE, learn_tokenizer
from pipeline.data.pretraining_examples import encode_documents
from tests.conftest import TINY, run_script
from tests.helpers.corpora import write_chinese, write_english


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
    from pipeline.data.prepared_corpus import MappedCorpus

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
    from pipeline.data.text_files import read_documents

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
