"""export/onnx_graph.py: the fused ONNX graph of each architecture against the Paddle predictor."""
import json

import numpy as np
import pytest

from infer.encoder import Encoder
from pipeline.model import BertForPretraining
from tests.conftest import needs
from tests.helpers.runs import random_inputs


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
    from pipeline.core.export_format import embedding_manifest
    from pipeline.core.tokenizer import WhitespaceTokenizer
    from pipeline.core.vocab import SPECIAL_TOKENS, Vocab

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
