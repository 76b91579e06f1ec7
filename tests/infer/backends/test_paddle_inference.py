"""infer/backends/paddle_inference.py: precisions, the CPU regimes and bf16."""
import numpy as np
import pytest

from infer.encoder import Encoder
from pipeline.core.errors import UserError
from pipeline.core.runtime import cpu_has_bf16
from tests.conftest import run_script
from tests.helpers.checks import assert_user_error
from tests.helpers.runs import random_inputs

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
    import infer.backends.paddle_inference as paddle_inference

    monkeypatch.setattr(paddle_inference, "cpu_has_bf16", lambda: False)
    with pytest.raises(UserError, match="no bf16 units"):
        Encoder(exported, device="cpu", precision="bf16")
    with pytest.raises(UserError, match="fp16 needs a GPU"):
        Encoder(exported, device="cpu", precision="fp16")
    with pytest.raises(UserError, match="Paddle backend only"):
        Encoder(exported, backend="onnxruntime", precision="bf16")
    assert_user_error(run_script("infer/encode.py", "--text", "x", "--precision", "fp16", "--model-dir", str(exported)),
                      "fp16 needs a GPU")


def test_the_cpu_regime_follows_the_work_of_a_call_not_its_tokens_alone():
    from infer.backends.paddle_inference import SMALL_CALL_TOKENS
    from infer.call_cost import TINY_SHAPE, small_call_tokens

    assert small_call_tokens(TINY_SHAPE, SMALL_CALL_TOKENS) == SMALL_CALL_TOKENS
    minilm = {"num_layers": 6, "hidden_size": 384, "ffn_size": 1536}
    assert 6 < small_call_tokens(minilm, SMALL_CALL_TOKENS) < 32  # one short sentence small, a batch of them large
    base = {"num_layers": 12, "hidden_size": 768, "ffn_size": 3072}
    assert small_call_tokens(base, SMALL_CALL_TOKENS) < small_call_tokens(minilm, SMALL_CALL_TOKENS)
