"""infer/encode.py: the command line, its output forms and its refusals."""
import json

import numpy as np

from infer.encoder import Encoder
from tests.conftest import run_script
from tests.helpers.checks import assert_user_error


def test_cli_text_output_follows_the_seed(exported):
    result = run_script("infer/encode.py", "--text", "a crane is flying", "--model-dir", str(exported))
    assert result.returncode == 0, result.stderr
    assert "tokens: ['<cls>', 'a', 'crane', 'is', 'flying', '<sep>']" in result.stdout
    assert "encoding shape: (1, 6, 32)" in result.stdout and "<cls> shape: (1, 32)" in result.stdout
    assert result.stderr.strip() == "", "the predictor's pass log is silenced"


def test_cli_json_pairs_file_and_stdin(exported, tmp_path):
    pair = run_script("infer/encode.py", "--text", "a crane driver came", "--text-b", "he just left", "--json",
                      "--model-dir", str(exported))
    obj = json.loads(pair.stdout)
    assert obj["segments"] == [0] * 6 + [1] * 4 and len(obj["encoding"]) == 10 and len(obj["cls"]) == 32
    lines = "a crane is flying\nthe w1 w2\tw3 w4\nw5\n"
    (tmp_path / "in.txt").write_text(lines)
    from_file = run_script("infer/encode.py", "--file", str(tmp_path / "in.txt"), "--json", "--model-dir", str(exported))
    from_stdin = run_script("infer/encode.py", "--file", "-", "--json", "--model-dir", str(exported), stdin=lines)
    assert from_file.returncode == 0 and from_file.stdout == from_stdin.stdout
    objs = [json.loads(line) for line in from_file.stdout.splitlines()]
    assert [len(o["tokens"]) for o in objs] == [6, 8, 3]


def test_cli_embed_prints_the_pooled_vectors_and_long_texts_by_windows(exported, tmp_path):
    texts = ["a crane is flying", " ".join(["w1 w2 w3 crane"] * 20)]  # the second is over max_len 32
    (tmp_path / "in.txt").write_text("\n".join(texts) + "\n")
    result = run_script("infer/encode.py", "--file", str(tmp_path / "in.txt"), "--embed", "--windows", "--json",
                        "--model-dir", str(exported))
    assert result.returncode == 0, result.stderr
    got = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["text"] for o in got] == texts
    np.testing.assert_allclose([o["embedding"] for o in got],
                               Encoder(exported, device="cpu").embed(texts, windows=True), atol=1e-5)
    assert_user_error(run_script("infer/encode.py", "--text", texts[1], "--embed", "--model-dir", str(exported)),
                      "over the model's max_len 32")
    assert_user_error(run_script("infer/encode.py", "--text", "a", "--windows", "--model-dir", str(exported)),
                      "--windows goes with --embed")


def test_bad_inputs(exported, tmp_path):
    m = ["--model-dir", str(exported)]
    assert_user_error(run_script("infer/encode.py", "--text", "  ", *m), "empty text")
    assert_user_error(run_script("infer/encode.py", "--text", " ".join(["w1"] * 40), *m), "over the model's max_len 32")
    ok = run_script("infer/encode.py", "--text", " ".join(["w1"] * 40), "--truncate", "--json", *m)
    assert ok.returncode == 0 and len(json.loads(ok.stdout)["tokens"]) == 32
    assert_user_error(run_script("infer/encode.py", "--text", "x", "--model-dir", str(tmp_path / "no")), "model folder not found")
    assert_user_error(run_script("infer/encode.py", "--file", str(tmp_path / "none.txt"), *m), "input file not found")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    assert_user_error(run_script("infer/encode.py", "--file", str(tmp_path / "bin.txt"), *m), "is not UTF-8 text", "iconv -f UTF-16")
    assert_user_error(run_script("infer/encode.py", *m), "exactly one of --text")
    assert_user_error(run_script("infer/encode.py", "--text", "x", "--trt", *m), "--trt needs a CUDA GPU")
    assert_user_error(run_script("infer/encode.py", "--text", "x", "--device", "gpu", *m), "no CUDA GPU")
    assert_user_error(run_script("infer/encode.py", "--fill-mask", "no mask here", *m), "has no <mask>")


def test_a_file_in_another_encoding_is_one_line_naming_the_line_and_a_conversion(exported, tmp_path):
    latin = tmp_path / "latin.txt"
    latin.write_bytes("a crane\ncafé crème brûlée\n".encode("latin-1"))
    assert_user_error(run_script("infer/encode.py", "--model-dir", str(exported), "--file", str(latin)),
                      "is not UTF-8 text", "line 2", "iconv -f WINDOWS-1252 -t UTF-8")


def test_the_text_output_says_which_numbers_it_shows(exported):
    result = run_script("infer/encode.py", "--text", "a crane", "--model-dir", str(exported))
    assert "first 3 of 32 numbers" in result.stdout, result.stdout
