"""The BERT model: shapes, exact bias folding, masking, static = dygraph, and a loss that falls."""
import numpy as np
import paddle
import pytest

from pipeline.config import ModelConfig
from pipeline.data.batches import compact_predictions
from pipeline.model import BertForPretraining, BertSelfAttention, PretrainingStep, attention_mask, step_input_spec

CFG = ModelConfig(vocab_size=50, hidden_size=16, num_layers=2, num_heads=2, ffn_size=32, dropout=0.0,
                  max_position=32, linear_bias=True)


def batch(rows=4, length=12, preds=3, seed=0):
    rng = np.random.default_rng(seed)
    valid = rng.integers(5, length + 1, rows)
    ids = rng.integers(5, 50, (rows, length))
    ids[np.arange(length)[None, :] >= valid[:, None]] = 1
    token_type_ids = (np.arange(length)[None, :] >= valid[:, None] // 2).astype(np.int64) * (ids != 1)
    positions = np.stack([rng.choice(np.arange(1, v - 1), preds, replace=False) for v in valid])
    weights = np.ones((rows, preds), dtype=np.float32)
    weights[:, -1] = 0
    labels = rng.integers(5, 50, (rows, preds))
    nsp = rng.integers(0, 2, rows)
    return {"input_ids": ids, "token_type_ids": token_type_ids, "valid_length": valid, "pred_positions": positions,
            "mlm_weights": weights, "mlm_labels": labels, "nsp_labels": nsp,
            "mlm_norm": np.array([weights.sum()], dtype=np.float32)}


STEP_NAMES = ["input_ids", "token_type_ids", "valid_length", "mlm_positions", "mlm_labels", "nsp_labels", "mlm_norm"]


def tensors(b, names=STEP_NAMES):
    if "mlm_positions" in names and "mlm_positions" not in b:
        b = compact_predictions(b)
    return [paddle.to_tensor(b[k]) for k in names]


def test_output_shapes():
    paddle.seed(0)
    model = BertForPretraining(CFG)
    b = batch()
    mlm, nsp = model(*tensors(b, ("input_ids", "token_type_ids", "valid_length", "pred_positions")))
    assert mlm.shape == [4, 3, 50] and nsp.shape == [4, 2]
    encodings = model.encoder(*tensors(b, ("input_ids", "token_type_ids", "valid_length")))
    assert encodings.shape == [4, 12, 16]


def reference_attention(layer: BertSelfAttention, x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Textbook multi-head attention with every bias applied where the paper puts it."""
    w = {n: getattr(layer, n).weight.numpy() for n in ("query", "key", "value", "output")}
    bq, bv, bo = (np.zeros(x.shape[-1]) if getattr(layer, n).bias is None else getattr(layer, n).bias.numpy()
                  for n in ("query", "value", "output"))
    q, k, v = x @ w["query"] + bq, x @ w["key"], x @ w["value"] + bv
    d = layer.head_dim
    heads = []
    for h in range(layer.num_heads):
        s = slice(h * d, (h + 1) * d)
        scores = q[..., s] @ k[..., s].transpose(0, 2, 1) / np.sqrt(d)
        scores = np.where(np.arange(x.shape[1])[None, None, :] < valid[:, None, None], scores, -1e4)
        p = np.exp(scores - scores.max(-1, keepdims=True))
        heads.append((p / p.sum(-1, keepdims=True)) @ v[..., s])
    return np.concatenate(heads, -1) @ w["output"] + bo


@pytest.mark.parametrize("heads", [2, 8])  # unrolled heads, and batched heads
@pytest.mark.parametrize("bias", [True, False])  # model.linear_bias
def test_folded_biases_equal_textbook_attention(heads, bias):
    paddle.seed(1)
    layer = BertSelfAttention(ModelConfig(**{**CFG.__dict__, "num_heads": heads, "linear_bias": bias}))
    for p in layer.parameters():  # non-zero biases, so folding them is really tested
        p.set_value(paddle.randn(p.shape) * 0.5)
    x = np.random.default_rng(2).standard_normal((3, 7, 16)).astype(np.float32)
    valid = np.array([7, 4, 2])
    mask = attention_mask(paddle.to_tensor(valid), 7)
    expected = reference_attention(layer, x, valid)
    np.testing.assert_allclose(layer(paddle.to_tensor(x), mask).numpy(), expected, atol=2e-5)
    layer.eval()  # the inference form (fewer ops) computes the same
    np.testing.assert_allclose(layer(paddle.to_tensor(x), mask).numpy(), expected, atol=2e-5)


def test_padding_does_not_change_the_real_positions():
    paddle.seed(0)
    model = BertForPretraining(CFG)
    model.eval()
    b = batch()
    first = model.encoder(*tensors(b, ("input_ids", "token_type_ids", "valid_length"))).numpy()
    changed = dict(b)
    changed["input_ids"] = np.where(np.arange(12)[None, :] >= b["valid_length"][:, None], 7, b["input_ids"])
    second = model.encoder(*tensors(changed, ("input_ids", "token_type_ids", "valid_length"))).numpy()
    for row, n in enumerate(b["valid_length"]):
        np.testing.assert_allclose(first[row, :n], second[row, :n], atol=1e-6)


def test_mlm_loss_ignores_padded_predictions():
    paddle.seed(0)
    step = PretrainingStep(BertForPretraining(CFG))
    b = batch()

    def mlm_loss(labels):
        return float(step(*tensors({**b, "mlm_labels": labels}))[0])

    changed = b["mlm_labels"].copy()
    changed[:, -1] = (changed[:, -1] + 1) % 50  # the weight-0 column
    assert mlm_loss(changed) == pytest.approx(mlm_loss(b["mlm_labels"]), abs=1e-7)
    changed[:, 0] = (changed[:, 0] + 1) % 50  # a real prediction
    assert mlm_loss(changed) != pytest.approx(mlm_loss(b["mlm_labels"]), abs=1e-4)
    mlm_logits, _ = step.bert(*tensors(b, ("input_ids", "token_type_ids", "valid_length", "pred_positions")))
    logp = paddle.nn.functional.log_softmax(mlm_logits, -1).numpy()
    picked = np.take_along_axis(logp, b["mlm_labels"][..., None], -1)[..., 0]
    expected = -(picked * b["mlm_weights"]).sum() / b["mlm_weights"].sum()
    assert mlm_loss(b["mlm_labels"]) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("host_dropout", [False, True])
def test_static_and_dygraph_agree(host_dropout):
    paddle.seed(3)
    cfg = ModelConfig(**{**CFG.__dict__, "dropout": 0.1 if host_dropout else 0.0})
    dygraph = PretrainingStep(BertForPretraining(cfg))
    static = PretrainingStep(BertForPretraining(cfg))
    static.set_state_dict(dygraph.state_dict())
    static = paddle.jit.to_static(static, input_spec=step_input_spec(host_dropout), full_graph=True)
    names = STEP_NAMES
    for rows, length in ((4, 12), (2, 9)):
        b = batch(rows, length)
        if host_dropout:
            b["drop_masks"] = (np.random.default_rng(0).random((4, rows, length, 16)) > 0.1).astype(np.uint8)
        args = tensors(b, names + (["drop_masks"] if host_dropout else []))
        for d, s in zip(dygraph(*args), static(*args)):
            assert float(d) == pytest.approx(float(s), rel=1e-5)


def test_loss_falls_when_training_on_one_batch():
    paddle.seed(0)
    step = paddle.jit.to_static(PretrainingStep(BertForPretraining(CFG)), input_spec=step_input_spec(False),
                                full_graph=True)
    opt = paddle.optimizer.Adam(0.01, parameters=step.parameters())
    args = tensors(batch(8, 12))
    losses = []
    for _ in range(15):
        mlm, nsp = step(*args)
        (mlm + nsp).backward()
        opt.step()
        opt.clear_grad()
        losses.append(float(mlm) + float(nsp))
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("config", ["bert_base", "bert_large"])
def test_base_and_large_build_and_run_a_training_step(config):
    """The configured sizes build and train (a small vocabulary and batch keep the test light)."""
    from pipeline.config import load_config
    from tests.conftest import ROOT

    cfg = load_config(ROOT / "configs" / f"{config}.yaml", ["model.vocab_size=60"]).model
    paddle.seed(0)
    step = paddle.jit.to_static(PretrainingStep(BertForPretraining(cfg)), input_spec=step_input_spec(False),
                                full_graph=True)
    opt = paddle.optimizer.AdamW(1e-4, parameters=step.parameters())
    before = step.bert.encoder.layers[0].intermediate.weight.numpy().copy()
    b = batch(rows=2, length=16)
    mlm, nsp = step(*tensors(b))
    (mlm + nsp).backward()
    opt.step()
    assert np.isfinite(float(mlm)) and np.isfinite(float(nsp))
    assert not np.allclose(step.bert.encoder.layers[0].intermediate.weight.numpy(), before)
    assert len(step.bert.encoder.layers) == cfg.num_layers


def test_bert_initialisation_is_a_truncated_normal_with_zero_biases():
    paddle.seed(0)
    model = BertForPretraining(ModelConfig(**{**CFG.__dict__, "init_std": 0.02}))
    params = dict(model.named_parameters())
    words = params["encoder.embeddings.word_embeddings.weight"].numpy()
    assert abs(words.std() - 0.02 * 0.88) < 0.003 and np.abs(words).max() <= 0.04 + 1e-6  # N(0, 0.02) cut at 2 std
    assert not params["mlm_head.decoder.bias"].numpy().any()
    assert (params["encoder.layers.0.attention_norm.weight"].numpy() == 1).all()
    paddle.seed(0)
    default = BertForPretraining(ModelConfig(**{**CFG.__dict__, "init_std": 0.0}))
    assert np.abs(dict(default.named_parameters())["encoder.layers.0.intermediate.weight"].numpy()).max() > 0.1


def test_zero_position_init_starts_a_sentence_vector_as_the_bag_of_its_tokens():
    """Position and segment tables at zero, words as BERT's: a token's embedding output is the same at any
    position, so at the start the mean-pooled embeddings of a sentence and of its reversal agree."""
    paddle.seed(0)
    model = BertForPretraining(ModelConfig(**{**CFG.__dict__, "zero_position_init": True}))
    embeddings = model.encoder.embeddings
    assert not embeddings.position_embeddings.weight.numpy().any()
    assert not embeddings.token_type_embeddings.weight.numpy().any()
    assert embeddings.word_embeddings.weight.numpy().std() > 0.01
    ids = paddle.to_tensor([[5, 9, 11, 7], [7, 11, 9, 5]], dtype="int64")
    out = embeddings(ids, paddle.zeros_like(ids)).numpy()
    np.testing.assert_allclose(out[0], out[1][::-1], atol=1e-6)
    plain = BertForPretraining(CFG).encoder.embeddings(ids, paddle.zeros_like(ids)).numpy()
    assert np.abs(plain[0] - plain[1][::-1]).max() > 0.1  # BERT's start: where a token sits changes it


def test_pre_ln_nsp_off_and_mask_only_train_resume_and_export(corpus_dir, tmp_path):
    """The budget-BERT options together: pre-LN with a final LayerNorm, NSP off, 30% masking with every
    chosen token masked. The loss falls, the NSP head does not move, the predictor equals the model,
    held-out figures still mask 15%, and the Hugging Face export refuses the pre-LN model in one line."""
    import json

    import numpy as np

    from pipeline import checkpoint
    from tests.conftest import TINY, run_script
    from tests.helpers.checks import assert_user_error
    from tests.helpers.runs import assert_export_matches_checkpoint, losses

    options = ["-o", "model.norm=pre", "-o", "train.nsp=false", "-o", "data.mask_prob=0.3",
               "-o", "data.mask_replace=false"]
    out, plain = tmp_path / "budget", tmp_path / "plain"
    result = run_script("pipeline/train.py", "--data-dir", str(corpus_dir), "--output-dir", str(out), "--steps", "12",
                        "--eval-split", "test", *TINY, *options, "-o", "train.save_every=6", "-o", "train.keep_checkpoints=5")
    assert result.returncode == 0, result.stderr
    assert "NSP off (train.nsp=false)" in result.stdout
    assert run_script("pipeline/train.py", "--data-dir", str(corpus_dir), "--output-dir", str(plain), "--steps", "12",
                      "--eval-split", "test", *TINY).returncode == 0
    records = losses(out)
    assert np.mean([r[1] for r in records[-3:]]) < np.mean([r[1] for r in records[:3]])
    assert all(r[2] == 0 for r in records)
    six, twelve = (checkpoint.load(out / "checkpoints" / f"step_{n}").model_state for n in (6, 12))
    assert "encoder.final_norm.weight" in twelve
    def moved(name):  # largest change over steps 6..12, relative to the weight's size
        return np.abs(twelve[name] - six[name]).max() / np.abs(six[name]).max()
    assert moved("nsp_head.classifier.weight") < 1e-3 < 1e-2 < moved("mlm_head.transform.weight")  # weight decay only
    held_out = [json.loads((o / "eval.json").read_text()) for o in (out, plain)]
    assert held_out[0]["mlm_targets"] == held_out[1]["mlm_targets"], "both evaluated at 15%"

    assert run_script("export/save.py", "--output-dir", str(out)).returncode == 0
    assert_export_matches_checkpoint(out, out / "inference")
    assert_user_error(run_script("export/save.py", "--output-dir", str(out), "--format", "huggingface"),
                      "transformers' BERT is post-LN")


def test_mask_only_masks_every_chosen_token():
    import numpy as np

    from pipeline.core.vocab import SPECIAL_TOKENS, Vocab
    from pipeline.data.pretraining_examples import mask_tokens

    vocab = Vocab(list(SPECIAL_TOKENS) + [f"w{i}" for i in range(95)])
    ids = np.random.default_rng(0).integers(5, 100, (64, 32))
    masked = mask_tokens(ids, vocab, 10, 0.3, np.random.default_rng(1), replace=False)
    real = masked.mlm_weights > 0
    chosen = np.take_along_axis(masked.input_ids, masked.pred_positions, axis=1)[real]
    assert (chosen == vocab.mask).all() and real.sum() == 64 * 10
    replaced = mask_tokens(ids, vocab, 10, 0.3, np.random.default_rng(1))
    share = (np.take_along_axis(replaced.input_ids, replaced.pred_positions, axis=1)[real] == vocab.mask).mean()
    assert 0.75 < share < 0.85


def test_no_biases_gated_gelu_and_batch_ramp_train_resume_and_export(corpus_dir, tmp_path):
    """Cramming's shape: no linear biases in the encoder, gated GELU, pre-LN, the batch ramped up. The
    loss falls, the ramp's batches grow to train.batch_size, a resume equals an unbroken run, the
    predictor equals the model, and the Hugging Face export names what BERT cannot express (a missing
    bias it can: tests/test_huggingface.py)."""
    import json

    import numpy as np

    from pipeline import checkpoint
    from tests.conftest import run_script
    from tests.helpers.checks import assert_user_error
    from tests.helpers.runs import assert_export_matches_checkpoint, losses, train

    options = ["-o", "model.linear_bias=false", "-o", "model.gated=true", "-o", "model.activation=gelu",
               "-o", "model.norm=pre", "-o", "train.batch_ramp_steps=8"]
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    result = train(corpus_dir, whole, *options, steps=14)
    assert result.returncode == 0, result.stderr
    state = checkpoint.load(checkpoint.latest(whole)).model_state
    assert not [k for k in state if k.startswith("encoder.layers.") and k.endswith("bias") and "norm" not in k]
    assert state["encoder.layers.0.intermediate.weight"].shape == (32, 2 * 64)  # both halves of the gate
    records = losses(whole)
    assert np.mean([r[1] for r in records[-3:]]) < np.mean([r[1] for r in records[:3]])
    rates = [json.loads(line)["pairs_per_sec"] for line in (whole / "metrics.jsonl").read_text().splitlines()]
    assert len(rates) == 14
    assert train(corpus_dir, parts, *options, steps=5).returncode == 0
    assert train(corpus_dir, parts, *options, "--resume", steps=14).returncode == 0
    np.testing.assert_allclose(np.array(losses(parts)), np.array(records), rtol=1e-4)

    assert run_script("export/save.py", "--output-dir", str(whole)).returncode == 0
    assert_export_matches_checkpoint(whole, whole / "inference")
    assert_user_error(run_script("export/save.py", "--output-dir", str(whole), "--format", "huggingface"),
                      "model.norm=pre: transformers' BERT is post-LN")
    post = tmp_path / "post"
    assert train(corpus_dir, post, *options, "-o", "model.norm=post", steps=2).returncode == 0
    assert_user_error(run_script("export/save.py", "--output-dir", str(post), "--format", "huggingface"),
                      "model.gated=true: transformers' BERT has no gated feed-forward")


def test_the_batch_ramp_grows_from_a_quarter_in_prefixes_of_the_usual_batches():
    import numpy as np

    from pipeline.core.vocab import SPECIAL_TOKENS, Vocab
    from pipeline.data.batches import PretrainingData
    from pipeline.data.pretraining_examples import Pairs

    vocab = Vocab(list(SPECIAL_TOKENS) + [f"w{i}" for i in range(20)])
    rng = np.random.default_rng(0)
    n, length = 400, 12
    pairs = Pairs(rng.integers(5, 25, (n, length)), np.zeros((n, length), np.int64), np.full(n, length),
                  rng.integers(0, 2, n))
    usual, ramped = PretrainingData(pairs, vocab, length), PretrainingData(pairs, vocab, length)
    ramped.ramp_batch(10, multiple=2)
    sizes = [ramped.global_batch_size(step, 64) for step in range(12)]
    assert sizes[0] == 16 and sizes[10:] == [64, 64] and sizes == sorted(sizes) and all(s % 2 == 0 for s in sizes)
    for step in (0, 5, 11):
        whole = usual.batch(step, 64)["input_ids"]
        for rank in (0, 1):
            part = ramped.batch(step, 64, rank, world=2)["input_ids"]
            half = sizes[step] // 2
            np.testing.assert_array_equal(part, whole[rank * half:(rank + 1) * half])


@pytest.mark.parametrize("pooling", ["cls", "mean", "max"])
def test_pooling_uses_real_tokens_only_and_passes_gradients(pooling):
    from pipeline.model import pooled

    rng = np.random.default_rng(0)
    encodings = paddle.to_tensor(rng.standard_normal((3, 5, 4)).astype("float32"), stop_gradient=False)
    lengths = [5, 2, 3]
    got = pooled(encodings, paddle.to_tensor(lengths, dtype="int64"), pooling)
    e = encodings.numpy()
    want = [{"cls": e[i, 0], "mean": e[i, :n].mean(0), "max": e[i, :n].max(0)}[pooling] for i, n in enumerate(lengths)]
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    got.sum().backward()
    grad = encodings.grad.numpy()
    for i, n in enumerate(lengths):
        assert np.all(grad[i, n:] == 0)  # padding gets nothing
        np.testing.assert_allclose(grad[i].sum(0), np.ones(4), rtol=1e-6)  # each output's gradient arrives whole
