"""The contrastive stage: batches drawn from (seed, step) alone, a loss that 2 ranks compute as one process
does (global-batch negatives), training that makes same-document retrieval better than random weights,
exact resume, an export that embeds as the trained model does, and one-line refusals."""
import json

import numpy as np
import paddle
import pytest

from pipeline import checkpoint
from pipeline.contrastive import ContrastiveData, Units, contrastive_loss, read_pairs, sif_log_weights
from pipeline.core.errors import UserError
from pipeline.core.tokenizer import WhitespaceTokenizer, pad_batch
from pipeline.core.vocab import SPECIAL_TOKENS, Vocab
from pipeline.retrieval import corpus_articles, ranking_figures, retrieval_set
from tests.conftest import run_script
from tests.helpers.checks import assert_user_error

SMALL = ["-o", "model.hidden_size=32", "-o", "model.num_layers=2", "-o", "model.num_heads=2", "-o", "model.ffn_size=64",
         "-o", "data.max_len=40", "-o", "data.min_freq=1", "-o", "train.batch_size=16", "-o", "train.lr=0.003",
         "-o", "train.warmup_steps=0", "-o", "train.lr_decay=none", "-o", "train.log_every=1",
         "-o", "train.objective=contrastive", "-o", "model.pooling=mean"]


def write_topics(path, documents: int, seed: int) -> None:
    """Documents (blank-line separated) of 3 lines (paragraphs of 40+ words) each, every document drawing
    its words from one of 12 topics (disjoint word sets) plus common words: text whose same-document
    neighbours can be learnt."""
    rng = np.random.default_rng(seed)
    common = ["the", "a", "of", "and", "is", "in"]
    blocks = []
    for d in range(documents):
        topic = [f"t{d % 12}w{i}" for i in range(15)]
        lines = [" . ".join(" ".join(rng.choice(topic + common, rng.integers(10, 14))) for _ in range(4)) + " ."
                 for _ in range(3)]
        blocks.append("\n".join(lines))
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def topics(tmp_path_factory):
    folder = tmp_path_factory.mktemp("topics")
    write_topics(folder / "train.txt", 120, 1)
    write_topics(folder / "held_out.txt", 12, 2)  # one document per topic
    return folder


def units_data(positives="crops", world_rows=8):
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 60, 30)
    ids = rng.integers(5, 90, lengths.sum()).astype(np.int32)
    units = Units(ids, np.concatenate([[0], np.cumsum(lengths)]))
    return ContrastiveData(units, positives, max_len=16, cls=2, sep=3, pad=1, seed=0)


@pytest.mark.parametrize("positives", ["crops", "dropout"])
def test_batches_depend_on_the_step_only_and_ranks_split_the_global_batch(positives):
    data = units_data(positives)
    whole = data.batch(5, 8)
    assert whole["input_ids"].shape == (16, 16) and (whole["input_ids"][:, 0] == 2).all()
    np.testing.assert_array_equal(whole["input_ids"], data.batch(5, 8)["input_ids"])  # resumable
    assert not np.array_equal(whole["input_ids"], data.batch(6, 8)["input_ids"])
    halves = [data.batch(5, 8, rank, 2)["input_ids"] for rank in (0, 1)]
    anchors = np.concatenate([h[:4] for h in halves])
    positives_ = np.concatenate([h[4:] for h in halves])
    np.testing.assert_array_equal(anchors, whole["input_ids"][:8])
    np.testing.assert_array_equal(positives_, whole["input_ids"][8:])
    valid = whole["valid_length"]
    assert (valid <= 16).all() and all(row[n - 1] == 3 and (row[n:] == 1).all() for row, n in zip(whole["input_ids"], valid))
    if positives == "dropout":  # SimCSE: the same sentence twice
        np.testing.assert_array_equal(whole["input_ids"][:8], whole["input_ids"][8:])
    else:  # Contriever: two crops of one document, each a span of it
        text = data.units.ids.tolist()
        for row in whole["input_ids"]:
            span = row[1:int((row != 1).sum()) - 1].tolist()
            assert any(text[i:i + len(span)] == span for i in range(len(text)))


def test_the_loss_over_gathered_rows_equals_one_process(monkeypatch):
    """Two ranks' losses, each from its own rows plus the other's (as all_gather gives them), equal the
    loss of one process on the global batch, and their gradients add up to its gradient."""
    rng = np.random.default_rng(0)
    views, rows, hidden = 2, 6, 8
    full = rng.normal(size=(views, rows, hidden)).astype(np.float32)
    full /= np.linalg.norm(full, axis=-1, keepdims=True)
    one = paddle.to_tensor(full.reshape(-1, hidden), stop_gradient=False)
    loss, scale = contrastive_loss(one, 0, 1, views, 0.05)
    loss.backward()
    assert scale == 1.0
    shards = [full[:, :3].reshape(-1, hidden), full[:, 3:].reshape(-1, hidden)]
    grads, losses = [], []
    for rank in (0, 1):
        def gather(out, tensor, rank=rank):
            out.extend(paddle.to_tensor(s) for s in shards)
        monkeypatch.setattr(paddle.distributed, "all_gather", gather)
        mine = paddle.to_tensor(shards[rank], stop_gradient=False)
        rank_loss, scale = contrastive_loss(mine, rank, 2, views, 0.05)
        (rank_loss * scale).backward()
        losses.append(float(rank_loss))
        grads.append(mine.grad.numpy() / 2)  # data parallel averages the ranks' gradients
    assert losses[0] == pytest.approx(float(loss), rel=1e-6) == losses[1]
    whole = one.grad.numpy().reshape(views, rows, hidden)
    np.testing.assert_allclose(grads[0].reshape(views, 3, hidden), whole[:, :3], atol=1e-5)
    np.testing.assert_allclose(grads[1].reshape(views, 3, hidden), whole[:, 3:], atol=1e-5)


def test_two_ranks_train_as_one_process(topics, tmp_path):
    common = ["--corpus", str(topics / "train.txt"), *SMALL, "-o", "model.dropout=0.0", "--steps", "3"]
    one = run_script("pipeline/train.py", "--output-dir", str(tmp_path / "one"), *common)
    assert one.returncode == 0, one.stderr[-2000:]
    two = run_script("-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(tmp_path / "log"),
                     "pipeline/train.py", "--output-dir", str(tmp_path / "two"), *common)
    assert two.returncode == 0, two.stdout[-2000:]
    curves = [[json.loads(line)["contrastive_loss"] for line in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
              for run in ("one", "two")]
    np.testing.assert_allclose(curves[1], curves[0], rtol=1e-4)  # the same global loss, step by step
    a, b = (checkpoint.load(checkpoint.latest(tmp_path / run)).model_state for run in ("one", "two"))
    for name in a:
        np.testing.assert_allclose(b[name], a[name], rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.fixture(scope="module")
def contrastive_run(topics, tmp_path_factory):
    out = tmp_path_factory.mktemp("contrastive") / "run"
    result = run_script("pipeline/train.py", "--corpus", str(topics / "train.txt"), "--eval-corpus",
                        str(topics / "held_out.txt"), "--output-dir", str(out), *SMALL, "--steps", "60")
    assert result.returncode == 0, result.stderr[-3000:]
    return out, result


def test_contrastive_training_learns_same_document_retrieval(contrastive_run):
    out, result = contrastive_run
    losses = [json.loads(line)["contrastive_loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:5]), losses
    assert "same-document retrieval" in result.stdout and "contrastive loss" in result.stdout
    figures = json.loads((out / "eval.json").read_text())["retrieval"]
    assert figures["model"]["recall_at_1"] > figures["random weights"]["recall_at_1"] + 0.2, figures
    assert figures["model"]["mrr"] > 0.6, figures


def test_resume_is_exact(topics, tmp_path):
    common = ["--corpus", str(topics / "train.txt"), *SMALL]
    whole = run_script("pipeline/train.py", "--output-dir", str(tmp_path / "whole"), *common, "--steps", "4")
    assert whole.returncode == 0, whole.stderr[-2000:]
    for steps, extra in (("2", []), ("4", ["--resume"])):
        part = run_script("pipeline/train.py", "--output-dir", str(tmp_path / "parts"), *common, "--steps", steps, *extra)
        assert part.returncode == 0, part.stderr[-2000:]
    a, b = (checkpoint.load(checkpoint.latest(tmp_path / run)).model_state for run in ("whole", "parts"))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def test_the_export_embeds_as_the_trained_model(contrastive_run, topics, tmp_path):
    from infer.encoder import Encoder
    from pipeline.model import BertForPretraining, EmbeddingStep
    from tests.helpers.service import embed, start, stop

    out, _ = contrastive_run
    export = tmp_path / "export"
    result = run_script("export/save.py", "--output-dir", str(out), "--export-dir", str(export))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["embedding"] == {"pooling": "mean", "normalize": True, "dimensions": 32}
    ckpt = checkpoint.load(checkpoint.latest(out))
    model = BertForPretraining(ckpt.config.model)
    checkpoint.apply_model_state(model, ckpt.model_state, ckpt.path)
    model.eval()
    encoder = Encoder(export, device="cpu")
    texts = retrieval_set(corpus_articles([str(topics / "held_out.txt")])).texts[:12]
    arrays = encoder.tokenize_for_embedding(texts)
    batch = pad_batch(encoder.vocab, [items[0] for items in arrays])
    with paddle.no_grad():
        trained = EmbeddingStep(model, "mean")(*(paddle.to_tensor(batch[k]) for k in
                                                 ("input_ids", "token_type_ids", "valid_length"))).numpy()
    np.testing.assert_allclose(encoder.embed(texts), trained, atol=1e-5)
    proc, url = start(export, "--workers", "1")
    try:
        status, vectors, _ = embed(url, {"inputs": texts})
        assert status == 200
        np.testing.assert_allclose(vectors, trained, atol=1e-5)
    finally:
        assert stop(proc)[0] == 0


def test_evaluate_reports_retrieval_next_to_its_baselines(contrastive_run, topics):
    out, _ = contrastive_run
    for source in (["--output-dir", str(out)], ["--export", str(out / "exported")]):
        if source[0] == "--export":
            made = run_script("export/save.py", "--output-dir", str(out), "--export-dir", str(out / "exported"))
            assert made.returncode == 0, made.stderr
        result = run_script("pipeline/evaluate.py", *source, "--corpus", str(topics / "held_out.txt"))
        assert result.returncode == 0, result.stderr[-2000:]
        figures = json.loads(result.stdout.strip().splitlines()[-1])["retrieval"]
        assert set(figures) == {"model", "tfidf", "random weights"}
        assert "same-document retrieval" in result.stdout


def test_ranking_figures_on_known_vectors():
    vectors = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    assert ranking_figures(vectors, np.array([0, 0, 1, 1])) == {"recall_at_1": 1.0, "mrr": 1.0}
    crossed = ranking_figures(vectors, np.array([0, 1, 0, 1]))  # the nearest is always the other document
    # first hits at ranks 3, 2, 3, 2 (text 0's order: 1, 3, then 2 of its document)
    assert crossed["recall_at_1"] == 0.0 and crossed["mrr"] == pytest.approx((1 / 3 + 1 / 2) / 2)


def test_a_pairs_file_trains_and_bad_lines_are_named(tmp_path):
    good = tmp_path / "pairs.tsv"
    good.write_text("".join(f"t{i} w{i} a\tt{i} w{i} b\tt{i + 1} z\n" for i in range(40)), encoding="utf-8")
    result = run_script("pipeline/train.py", *SMALL, "-o", "train.positives=pairs", "-o", f"data.pairs={good}",
                        "--output-dir", str(tmp_path / "out"), "--steps", "3")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "contrastive loss" in result.stdout
    bad = tmp_path / "bad.tsv"
    bad.write_text("a b\tc d\n\nno tab here\n", encoding="utf-8")
    tokenizer = WhitespaceTokenizer(Vocab(list(SPECIAL_TOKENS) + ["a", "b", "c", "d"]))
    with pytest.raises(UserError, match="line 3"):
        read_pairs(bad, tokenizer)


@pytest.mark.parametrize("flags, fragment", [
    (["-o", "train.batch_size=1"], "at least 2 rows"),
    (["-o", "train.accumulate_steps=2"], "in-batch negatives need the whole batch"),
    (["-o", "data.pairs=x.tsv"], "data.pairs goes with"),
    (["-o", "train.positives=pairs"], "data.pairs goes with"),
    (["-o", "train.batch_size=4000"], "over the"),
    (["-o", "train.objective=mlm", "-o", "model.pooling=weighted"], "model.pooling=weighted goes with"),
])
def test_refusals_in_one_line(topics, tmp_path, flags, fragment):
    result = run_script("pipeline/train.py", "--corpus", str(topics / "train.txt"), *SMALL, *flags,
                        "--output-dir", str(tmp_path / "out"), "--steps", "2")
    assert_user_error(result, fragment)


def test_sif_weights_start_frequent_tokens_light():
    units = Units(np.array([5, 5, 5, 5, 6, 5, 5, 7], dtype=np.int32), np.array([0, 4, 8]))
    weights = np.exp(sif_log_weights(units, 10, (2, 3)))
    assert weights[5] < weights[6] == weights[7] < weights[9] == 1.0  # never seen: weight 1
    assert weights[2] == weights[3] == pytest.approx(1e-3 / (1e-3 + 2 / 12))  # once per unit: 2 of 12 tokens


@pytest.fixture(scope="module")
def weighted_run(topics, tmp_path_factory):
    out = tmp_path_factory.mktemp("weighted") / "run"
    result = run_script("pipeline/train.py", "--corpus", str(topics / "train.txt"), "--eval-corpus",
                        str(topics / "held_out.txt"), "--output-dir", str(out), *SMALL, "-o", "model.pooling=weighted",
                        "--steps", "30")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def test_weighted_pooling_learns_token_weights_from_sif(weighted_run):
    ckpt = checkpoint.load(checkpoint.latest(weighted_run))
    learned = ckpt.model_state["token_weights.log_weight"]
    vocab = Vocab.load(weighted_run / "vocab.json")
    common, topical = (np.mean([learned[vocab[w]] for w in words]) for words in (["the", "of", "and"], ["t3w1", "t7w2"]))
    assert common < topical - 1.0, (common, topical)  # SIF's start: frequent words light
    assert not np.allclose(learned, learned.round(3)), "the weights did not move from their start"
    figures = json.loads((weighted_run / "eval.json").read_text())["retrieval"]
    assert figures["model"]["recall_at_1"] > figures["random weights"]["recall_at_1"] + 0.2, figures


def test_weighted_export_embeds_as_trained_everywhere(weighted_run, topics, tmp_path):
    from infer.encoder import Encoder
    from pipeline.model import BertForPretraining, EmbeddingStep
    from tests.helpers.service import embed, encode, start, stop

    export = tmp_path / "export"
    result = run_script("export/save.py", "--output-dir", str(weighted_run), "--export-dir", str(export))
    assert result.returncode == 0, result.stderr
    manifest = json.loads((export / "manifest.json").read_text())
    assert manifest["embedding"]["pooling"] == "weighted" and "token_weights.npy" in manifest["sha256"]
    ckpt = checkpoint.load(checkpoint.latest(weighted_run))
    model = BertForPretraining(ckpt.config.model)
    checkpoint.apply_model_state(model, ckpt.model_state, ckpt.path)
    model.eval()
    np.testing.assert_allclose(np.load(export / "token_weights.npy"), np.exp(ckpt.model_state["token_weights.log_weight"]),
                               rtol=1e-6)
    texts = retrieval_set(corpus_articles([str(topics / "held_out.txt")])).texts[:12]
    encoder = Encoder(export, device="cpu", backend="paddle")
    batch = pad_batch(encoder.vocab, [items[0] for items in encoder.tokenize_for_embedding(texts)])
    with paddle.no_grad():
        trained = EmbeddingStep(model, "weighted")(*(paddle.to_tensor(batch[k]) for k in
                                                     ("input_ids", "token_type_ids", "valid_length"))).numpy()
    vectors = encoder.embed(texts)
    np.testing.assert_allclose(vectors, trained, atol=1e-5)
    long_text = " ".join(texts)  # over the model's 40 tokens: windows, combined by their tokens' weights
    (windows,) = encoder.tokenize_for_embedding([long_text], windows=True)
    assert len(windows) > 1
    ids = np.concatenate([[encoder.vocab[t] for t in tokens] for tokens, _ in windows])
    weights = encoder.token_weights[ids]
    whole = weights @ np.concatenate(encoder.encode_items(windows)) / weights.sum()
    np.testing.assert_allclose(encoder.embed([long_text], windows=True)[0], whole / np.linalg.norm(whole), atol=1e-5)
    mean = Encoder(export, device="cpu", backend="paddle")
    mean.embedding = type(mean.embedding)("mean", True, 32)
    assert np.abs(mean.embed(texts) - vectors).max() > 1e-3  # the weights change the vectors
    proc, url = start(export, "--workers", "1")
    try:
        status, served, _ = embed(url, {"inputs": texts})
        assert status == 200
        np.testing.assert_allclose(served, trained, atol=1e-5)
        status, body, _ = encode(url, [texts[0]], pooling="weighted")
        assert status == 200 and len(body["results"][0]["embedding"]) == 32
    finally:
        assert stop(proc)[0] == 0
    damaged = np.load(export / "token_weights.npy")
    damaged[5] *= 2
    np.save(export / "token_weights.npy", damaged)
    check = run_script("infer/encode.py", "--model-dir", str(export), "--text", "the a", "--embed")
    assert_user_error(check, "token_weights.npy does not match the checksum")


def test_a_model_without_token_weights_refuses_weighted_pooling(contrastive_run, tmp_path):
    from tests.helpers.service import encode, start, stop

    out, _ = contrastive_run
    export = tmp_path / "export"
    assert run_script("export/save.py", "--output-dir", str(out), "--export-dir", str(export)).returncode == 0
    proc, url = start(export, "--workers", "1")
    try:
        status, body, _ = encode(url, ["the a"], pooling="weighted")
        assert status == 400 and "one of cls, mean, max, tokens, got" in body["error"], body
    finally:
        assert stop(proc)[0] == 0


def test_init_from_adds_or_leaves_token_weights_as_the_new_pooling_says(contrastive_run, weighted_run, topics, tmp_path):
    mean_run, _ = contrastive_run
    common = ["--corpus", str(topics / "train.txt"), *SMALL, "--steps", "2"]
    for number, (source, pooling) in enumerate(((mean_run, "weighted"), (weighted_run, "mean"),
                                                (weighted_run, "weighted"))):
        out = tmp_path / f"run{number}"
        result = run_script("pipeline/train.py", "--output-dir", str(out), *common, "--init-from", str(source),
                            "-o", f"model.pooling={pooling}")
        assert result.returncode == 0, result.stderr[-2000:]
        state = checkpoint.load(checkpoint.latest(out)).model_state
        assert ("token_weights.log_weight" in state) == (pooling == "weighted")
