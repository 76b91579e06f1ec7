"""export/save.py and infer/: parity with the trained model, the CLI, and every bad input."""
import json
import shutil

import numpy as np
import paddle
import pytest

from hypothesis import given, strategies as st

from infer.predictor import Encoder
from pipeline.export_format import VOCAB
from pipeline.errors import UserError
from pipeline.runtime import cpu_has_bf16
from pipeline import checkpoint
from pipeline.model import BertForPretraining
from pipeline.tokenizer import WINDOW_OVERLAP, window_starts
from tests.conftest import ROOT, needs, run_script
from tests.helpers.checks import assert_user_error
from tests.helpers.runs import random_inputs


@pytest.fixture(scope="module")
def dygraph_model(trained):
    ckpt = checkpoint.load(checkpoint.latest(trained))
    model = BertForPretraining(ckpt.config.model)
    checkpoint.apply_model_state(model, ckpt.model_state, ckpt.path)
    model.eval()
    return model


def assert_export_matches_checkpoint(run_folder, export_dir, rows: int = 4) -> None:
    """The predictor over `export_dir` gives the encodings of `run_folder`'s newest checkpoint (within 1e-5)."""
    ckpt = checkpoint.load(checkpoint.latest(run_folder))
    model = BertForPretraining(ckpt.config.model)
    checkpoint.apply_model_state(model, ckpt.model_state, ckpt.path)
    model.eval()
    encoder = Encoder(export_dir, device="cpu")
    arrays = random_inputs(len(encoder.vocab), rows, 20, 0)
    with paddle.no_grad():
        want = model.encoder(*(paddle.to_tensor(arrays[k]) for k in ("input_ids", "token_type_ids", "valid_length")))
    (got,) = encoder.run(arrays)
    for row, n in enumerate(arrays["valid_length"]):
        assert np.abs(got[row, :n] - want.numpy()[row, :n]).max() < 1e-5


def test_export_writes_program_weights_vocab_and_manifest(exported, trained):
    names = {p.name for p in exported.iterdir()}
    assert {"encoder.json", "encoder.pdiparams", "vocab.json", "manifest.json",
            "pretraining.json", "pretraining.pdiparams"} <= names
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["checkpoint_step"] == 8 and manifest["max_len"] == 32
    assert [i["name"] for i in manifest["inputs"]] == ["input_ids", "token_type_ids", "valid_length"]
    import hashlib
    assert manifest["sha256"]["encoder.pdiparams"] == hashlib.sha256((exported / "encoder.pdiparams").read_bytes()).hexdigest()
    assert manifest["paddle_version"] == paddle.__version__
    assert manifest["embedding"] == {"pooling": "cls", "normalize": False, "dimensions": 32}


@given(length=st.integers(1, 2000), width=st.integers(1, 510))
def test_windows_cover_every_token_and_overlap(length, width):
    starts = window_starts(length, width)
    covered = np.zeros(length, dtype=int)
    for start in starts:
        covered[start:start + width] += 1
        assert 0 <= start and start + width <= max(length, width)
    assert covered.min() >= 1 and starts == sorted(set(starts))
    if length > width:
        assert len(starts) >= 2 and starts[-1] + width == length
        assert all(b - a <= width - int(width * WINDOW_OVERLAP) for a, b in zip(starts, starts[1:]))


def test_embed_pools_as_the_manifest_says_and_an_older_export_pools_cls(exported, tmp_path):
    texts = ["a crane is flying", "flying"]
    encodings = Encoder(exported, device="cpu").encode(texts)
    old = tmp_path / "old"
    shutil.copytree(exported, old)
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["embedding"]  # as exports were written before the field existed
    (old / "manifest.json").write_text(json.dumps(manifest))
    np.testing.assert_allclose(Encoder(old, device="cpu").embed(texts), [e.cls for e in encodings], atol=1e-6)
    manifest["embedding"] = {"pooling": "max", "normalize": True, "dimensions": 32}
    (old / "manifest.json").write_text(json.dumps(manifest))
    pooled = np.array([e.vectors.max(axis=0) for e in encodings])
    np.testing.assert_allclose(Encoder(old, device="cpu").embed(texts),
                               pooled / np.linalg.norm(pooled, axis=1, keepdims=True), atol=1e-6)


@pytest.mark.parametrize("onednn", ["off", "on"])
def test_predictor_matches_the_trained_model(exported, dygraph_model, onednn):
    """oneDNN has broken BERT-like models on CPU before (Paddle issue #55477): check both."""
    encoder = Encoder(exported, device="cpu", onednn=onednn)
    vocab_size = len(encoder.vocab)
    for rows, length, seed in ((1, 6, 0), (4, 32, 1), (3, 17, 2), (8, 9, 3), (1, 6, 4)):
        arrays = random_inputs(vocab_size, rows, length, seed)
        (predicted,) = encoder.run(arrays)
        with paddle.no_grad():
            expected = dygraph_model.encoder(*(paddle.to_tensor(arrays[k]) for k in
                                               ("input_ids", "token_type_ids", "valid_length"))).numpy()
        for row, n in enumerate(arrays["valid_length"]):
            assert np.abs(predicted[row, :n] - expected[row, :n]).max() < 1e-5


BF16_MAX_ABS = 0.1  # on LayerNorm-scaled encodings; measured 0.054 at hidden 128, 0.03 on the test's tiny model


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bf16 units (avx512_bf16 / amx_bf16)")
def test_bf16_encodings_stay_close_to_fp32(exported):
    """oneDNN's bf16 kernels on the trained model: every encoding within cosine 0.999 of fp32's (on calls
    above SMALL_CALL_TOKENS; smaller ones run in fp32, the faster choice there)."""
    fp32, bf16 = Encoder(exported, device="cpu"), Encoder(exported, device="cpu", precision="bf16")
    small = random_inputs(len(fp32.vocab), 1, 6, 0)
    np.testing.assert_array_equal(fp32.run(small)[0], bf16.run(small)[0])
    for rows, length, seed in ((17, 32, 1), (64, 32, 2)):
        arrays = random_inputs(len(fp32.vocab), rows, length, seed)
        (want,), (got,) = fp32.run(arrays), bf16.run(arrays)
        for row, n in enumerate(arrays["valid_length"]):
            a, b = want[row, :n], got[row, :n]
            cosine = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
            assert cosine.min() >= 0.999 and np.abs(a - b).max() < BF16_MAX_ABS, (cosine.min(), np.abs(a - b).max())
        assert np.abs(want - got).max() > 0  # it really ran in bf16


def test_precisions_a_device_cannot_run_are_refused(exported, monkeypatch):
    import infer.predictor as predictor

    monkeypatch.setattr(predictor, "cpu_has_bf16", lambda: False)
    with pytest.raises(UserError, match="no bf16 units"):
        Encoder(exported, device="cpu", precision="bf16")
    with pytest.raises(UserError, match="fp16 needs a GPU"):
        Encoder(exported, device="cpu", precision="fp16")
    with pytest.raises(UserError, match="Paddle backend only"):
        Encoder(exported, backend="onnxruntime", precision="bf16")
    assert_user_error(run_script("infer/encode.py", "--text", "x", "--precision", "fp16", "--model-dir", str(exported)),
                      "fp16 needs a GPU")


def test_sorted_batching_returns_input_order(exported):
    encoder = Encoder(exported, device="cpu")
    texts = ["a crane is flying", "the", ("w1 w2 w3", "w4 w5"), "w7 w8 w9 w10 w11 w12 the a"]
    batched = encoder.encode(texts, batch_size=2)
    for text, enc in zip(texts, batched):
        (alone,) = encoder.encode([text])
        assert enc.tokens == alone.tokens
        np.testing.assert_allclose(enc.vectors, alone.vectors, atol=1e-5)


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


def test_crane_depends_on_its_context(exported):
    result = run_script("infer/encode.py", "--text", "a crane is flying", "--compare", "a crane driver came",
                        "--word", "crane", "--model-dir", str(exported))
    assert result.returncode == 0, result.stderr
    similarity = float(result.stdout.strip().splitlines()[-1].split(":")[-1])
    assert -1 <= similarity < 0.999999


def test_fill_mask_lists_five_words_with_probabilities(exported):
    result = run_script("infer/encode.py", "--fill-mask", "a <mask> is flying", "--model-dir", str(exported))
    assert result.returncode == 0, result.stderr
    words = result.stdout.strip().split(": ", 1)[1].split(", ")
    probabilities = [float(w.rsplit(" ", 1)[1]) for w in words]
    assert len(words) == 5 and probabilities == sorted(probabilities, reverse=True)


def test_bad_inputs(exported, tmp_path):
    m = ["--model-dir", str(exported)]
    assert_user_error(run_script("infer/encode.py", "--text", "  ", *m), "empty text")
    assert_user_error(run_script("infer/encode.py", "--text", " ".join(["w1"] * 40), *m), "over the model's max_len 32")
    ok = run_script("infer/encode.py", "--text", " ".join(["w1"] * 40), "--truncate", "--json", *m)
    assert ok.returncode == 0 and len(json.loads(ok.stdout)["tokens"]) == 32
    assert_user_error(run_script("infer/encode.py", "--text", "x", "--model-dir", str(tmp_path / "no")), "model folder not found")
    assert_user_error(run_script("infer/encode.py", "--file", str(tmp_path / "none.txt"), *m), "input file not found")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00bad")
    assert_user_error(run_script("infer/encode.py", "--file", str(tmp_path / "bin.txt"), *m), "cannot read")
    assert_user_error(run_script("infer/encode.py", *m), "exactly one of --text")
    assert_user_error(run_script("infer/encode.py", "--text", "x", "--trt", *m), "--trt needs a CUDA GPU")
    assert_user_error(run_script("infer/encode.py", "--text", "x", "--device", "gpu", *m), "no CUDA GPU")
    assert_user_error(run_script("infer/encode.py", "--fill-mask", "no mask here", *m), "has no <mask>")


def test_broken_model_folders(exported, tmp_path):
    incomplete = tmp_path / "incomplete"
    shutil.copytree(exported, incomplete)
    (incomplete / "encoder.pdiparams").unlink()
    assert_user_error(run_script("infer/encode.py", "--text", "x", "--model-dir", str(incomplete)), "is incomplete")
    mismatch = tmp_path / "mismatch"
    shutil.copytree(exported, mismatch)
    vocab = json.loads((mismatch / VOCAB).read_text())
    vocab["idx_to_token"].append("extra-word")
    (mismatch / VOCAB).write_text(json.dumps(vocab))
    assert_user_error(run_script("infer/encode.py", "--text", "x", "--model-dir", str(mismatch)), "the model expects")
    encoder_only = tmp_path / "encoder_only"
    shutil.copytree(exported, encoder_only)
    for name in ("pretraining.json", "pretraining.pdiparams"):
        (encoder_only / name).unlink()
    assert_user_error(run_script("infer/encode.py", "--fill-mask", "a <mask>", "--model-dir", str(encoder_only)),
                      "--with-heads")


def test_export_errors_and_a_failed_export_keeps_the_old_model(trained, exported, tmp_path, monkeypatch):
    assert_user_error(run_script("export/save.py", "--output-dir", str(tmp_path)), "no checkpoint")
    assert_user_error(run_script("export/save.py", "--checkpoint", str(tmp_path / "nope")), "checkpoint folder not found")
    target = tmp_path / "inference"
    shutil.copytree(exported, target)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    from export import save

    def broken_save(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(save.paddle.jit, "save", broken_save)
    ckpt = checkpoint.load(checkpoint.latest(trained))
    with pytest.raises(RuntimeError):
        save.export_checkpoint(ckpt, save.Vocab.load(trained / VOCAB), target, with_heads=False)
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.fixture(scope="module")
def exported_onnx(trained, tmp_path_factory):
    needs("paddle2onnx", "onnx")
    needs("onnxruntime", "onnx")
    export_dir = tmp_path_factory.mktemp("onnx") / "inference"
    result = run_script("export/save.py", "--output-dir", str(trained), "--export-dir", str(export_dir), "--onnx")
    assert result.returncode == 0, result.stderr
    return export_dir


def test_onnxruntime_backend_matches_the_paddle_predictor(exported_onnx):
    manifest = json.loads((exported_onnx / "manifest.json").read_text())
    assert "encoder.onnx" in manifest["sha256"] and manifest["onnx_graph"] == "fused"
    paddle_encoder = Encoder(exported_onnx, device="cpu", backend="paddle")
    onnx_encoder = Encoder(exported_onnx, backend="onnxruntime")
    for rows, length, seed in ((1, 6, 0), (4, 32, 1), (3, 17, 2), (64, 20, 3)):
        arrays = random_inputs(len(paddle_encoder.vocab), rows, length, seed)
        (want,), (got,) = paddle_encoder.run(arrays), onnx_encoder.run(arrays)
        for row, n in enumerate(arrays["valid_length"]):
            assert np.abs(got[row, :n] - want[row, :n]).max() < 1e-5
    texts = ["a crane is flying", ("a crane driver came", "he just left")]
    for a, b in zip(paddle_encoder.encode(texts), onnx_encoder.encode(texts)):
        assert a.tokens == b.tokens and np.abs(a.vectors - b.vectors).max() < 1e-5


@pytest.mark.parametrize("settings, graph", [
    ({"model.norm": "pre"}, "paddle2onnx"),  # no fused graph for pre-LN: paddle2onnx's
    ({"model.linear_bias": True, "model.activation": "relu", "model.num_heads": 8}, "fused"),  # biases, batched heads
    ({"model.linear_bias": True}, "fused"),  # GELU, heads one by one in Paddle
])
def test_each_onnx_graph_matches_the_paddle_predictor(tmp_path, settings, graph):
    needs("paddle2onnx", "onnx")
    needs("onnxruntime", "onnx")
    from export import save
    from pipeline.config import load_config
    from pipeline.export_format import embedding_manifest
    from pipeline.tokenizer import WhitespaceTokenizer
    from pipeline.vocab import SPECIAL_TOKENS, Vocab

    cfg = load_config(None, (), {"model.vocab_size": 40, "model.hidden_size": 32, "model.num_heads": 2,
                                 "model.ffn_size": 48, **settings})
    rng = np.random.default_rng(0)
    state = {k: v.numpy() + (rng.normal(0, 0.5, v.shape).astype(np.float32) if k.endswith("bias") else 0)
             for k, v in BertForPretraining(cfg.model).state_dict().items()}  # biases not zero: their paths count
    tokenizer = WhitespaceTokenizer(Vocab(list(SPECIAL_TOKENS) + [f"w{i}" for i in range(40 - len(SPECIAL_TOKENS))]))
    folder = save.export(cfg, state, tokenizer, tmp_path / "export", {"checkpoint": str(tmp_path)},
                         embedding_manifest("mean", False, 32), onnx=True)
    assert json.loads((folder / "manifest.json").read_text())["onnx_graph"] == graph
    paddle_encoder, onnx_encoder = Encoder(folder, device="cpu", backend="paddle"), Encoder(folder, backend="onnxruntime")
    for rows, length, seed in ((1, 5, 0), (5, 19, 1)):
        arrays = random_inputs(40, rows, length, seed)
        (want,), (got,) = paddle_encoder.run(arrays), onnx_encoder.run(arrays)
        for row, n in enumerate(arrays["valid_length"]):
            np.testing.assert_allclose(got[row, :n], want[row, :n], atol=2e-5)


def test_onnxruntime_backend_needs_the_onnx_file(exported):
    needs("onnxruntime", "onnx")
    result = run_script("infer/encode.py", "--model-dir", str(exported), "--backend", "onnxruntime", "--text", "a")
    assert result.returncode == 2 and "export with python export/save.py --onnx" in result.stderr


def test_auto_backend_picks_onnxruntime_only_where_the_export_has_it(exported, exported_onnx):
    assert Encoder(exported_onnx, device="cpu", backend="auto").backend == "onnxruntime"
    assert Encoder(exported, device="cpu", backend="auto").backend == "paddle"


def test_inference_imports_no_training_code():
    """infer/ runs where only the export is: importing it loads none of the training modules."""
    import subprocess
    import sys

    probe = ("import sys, infer.predictor, infer.serve, infer.tensorrt; "
             "print(sorted(m for m in sys.modules if m in ('pipeline.examples', 'pipeline.model', "
             "'pipeline.trainer', 'pipeline.dataset', 'pipeline.sources', 'pipeline.prepare', "
             "'pipeline.contrastive', 'pipeline.mapped_corpus')))")
    result = subprocess.run([sys.executable, "-W", "ignore", "-c", probe], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and result.stdout.strip() == "[]", result.stdout + result.stderr


def test_the_training_package_imports_nothing_from_export_or_infer():
    """pipeline/ is below export/ and infer/: what both need (the Hugging Face mapping, the export format)
    lives in pipeline/."""
    import re

    upward = re.compile(r"^\s*(from|import)\s+(export|infer)\b", re.M)
    offenders = [p.name for p in (ROOT / "pipeline").glob("*.py") if upward.search(p.read_text(encoding="utf-8"))]
    assert offenders == []


def test_the_cpu_regime_follows_the_work_of_a_call_not_its_tokens_alone():
    from infer.predictor import SMALL_CALL_TOKENS, TINY_SHAPE, small_call_tokens

    assert small_call_tokens(TINY_SHAPE) == SMALL_CALL_TOKENS
    minilm = {"num_layers": 6, "hidden_size": 384, "ffn_size": 1536}
    assert 6 < small_call_tokens(minilm) < 32  # one short sentence small, a batch of them large
    base = {"num_layers": 12, "hidden_size": 768, "ffn_size": 3072}
    assert small_call_tokens(base) < small_call_tokens(minilm)


@pytest.fixture(scope="module")
def exported_int8(trained, tmp_path_factory):
    needs("onnxruntime", "onnx")
    needs("paddle2onnx", "onnx")
    needs("ml_dtypes", "onnx")
    export_dir = tmp_path_factory.mktemp("int8") / "inference"
    result = run_script("export/save.py", "--output-dir", str(trained), "--export-dir", str(export_dir), "--int8")
    assert result.returncode == 0, result.stderr
    assert "int8: embeddings of 12 varied texts within cosine" in result.stdout
    return export_dir


def test_int8_export_is_quantised_and_close_to_fp32(exported_int8):
    import onnx

    manifest = json.loads((exported_int8 / "manifest.json").read_text())
    assert {"encoder.onnx", "encoder.int8.onnx"} <= set(manifest["sha256"])
    assert manifest["int8"]["min_cosine_to_fp32"] >= 0.99 and len(manifest["int8"]["fp32_matmuls"]) == 1
    assert manifest["int8"]["weight_bits"] == 7
    graph = onnx.load(str(exported_int8 / "encoder.int8.onnx")).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("DynamicQuantizeLinear") >= 4 and ops.count("MatMulInteger") >= 4  # 2 layers x 3 inputs
    weights = [onnx.numpy_helper.to_array(init) for init in graph.initializer
               if init.data_type == onnx.TensorProto.INT8]
    assert weights and all(np.abs(w).max() <= 64 for w in weights)  # 7 bits: 255 x 64 x 2 fits int16 without VNNI
    assert max(int(np.abs(w).max()) for w in weights) >= 32  # the 7 bits are used
    fp32, int8 = Encoder(exported_int8, backend="onnxruntime"), Encoder(exported_int8, precision="int8")
    assert int8.backend == "onnxruntime"
    texts = ["a crane is flying", "w1 w2 w3 the a w7 w8 w9 w10", ("the crane", "w4 w5")] * 3
    a, b = fp32.embed(texts, normalize=True), int8.embed(texts, normalize=True)
    cosine = (a * b).sum(1)
    assert cosine.min() >= 0.99 and np.abs(a - b).max() > 1e-4, cosine  # close, and really int8


@pytest.mark.parametrize("int8, vnni, warned", [({}, False, True), ({}, True, False),
                                                ({"weight_bits": 7}, False, False)])
def test_an_8_bit_int8_export_is_flagged_on_a_cpu_without_vnni(monkeypatch, caplog, int8, vnni, warned):
    import infer.predictor

    monkeypatch.setattr(infer.predictor, "cpu_has_vnni", lambda: vnni)
    infer.predictor.warn_if_int8_saturates({"int8": {"file": "encoder.int8.onnx", **int8}})
    assert ("export again with python export/save.py --int8" in caplog.text) == warned


def test_smoothing_keeps_the_fp32_model_exact(exported_int8, tmp_path):
    import onnx
    import onnxruntime

    from export.quantize import basic_optimized, smooth_activations
    from export.save import convert_to_onnx

    convert_to_onnx(exported_int8, tmp_path / "converted.onnx")  # the graph int8 is made from: paddle2onnx's
    basic_optimized(tmp_path / "converted.onnx", tmp_path / "basic.onnx")
    model = onnx.load(str(tmp_path / "basic.onnx"))
    feeds = [random_inputs(len(Encoder(exported_int8).vocab), 1, 12, seed) for seed in range(3)]
    before = onnxruntime.InferenceSession(model.SerializeToString()).run(None, feeds[0])[0]
    smooth_activations(model, feeds[1:])
    smoothing = [node for node in model.graph.node if node.op_type == "Mul" and node.name.endswith(".smooth")]
    assert len(smoothing) == 2 * 2  # per layer: the attention's input and the FFN's input
    after = onnxruntime.InferenceSession(model.SerializeToString()).run(None, feeds[0])[0]
    np.testing.assert_allclose(after, before, atol=1e-4)


def test_int8_refusals_are_one_line(exported_int8, exported_onnx):
    assert_user_error(run_script("infer/encode.py", "--model-dir", str(exported_int8), "--precision", "int8",
                                 "--backend", "paddle", "--text", "a"), "int8 runs on ONNX Runtime")
    assert_user_error(run_script("infer/encode.py", "--model-dir", str(exported_onnx), "--precision", "int8",
                                 "--text", "a"), "export with python export/save.py --int8")
    with pytest.raises(UserError, match="CPU path"):
        Encoder(exported_int8, device="gpu", precision="int8")
