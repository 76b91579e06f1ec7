"""export/save.py --format huggingface: transformers loads it with no missing or unexpected keys, and
its encodings and MLM/NSP logits match this project's model. Skipped where torch/transformers are absent
(they are a bench-only extra: pip install -e ".[bench]")."""
import json
from pathlib import Path

import numpy as np
import paddle
import pytest

from pipeline import checkpoint
from pipeline.config import ModelConfig
from pipeline.core.export_format import VOCAB
from pipeline.core.hf_mapping import name_mapping, to_hf
from pipeline.model import BertForPretraining
from tests.conftest import TINY, needs, run_script
from tests.helpers.runs import random_inputs

TOLERANCE = 1e-4


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_every_parameter_is_mapped_once(tied, bias):
    """Without linear biases, the names left over are exactly the encoder's linear biases (zeros there)."""
    cfg = ModelConfig(vocab_size=40, hidden_size=16, num_layers=3, num_heads=2, ffn_size=32, tie_word_embeddings=tied,
                      linear_bias=bias)
    ours = [o for _, o, _ in name_mapping(cfg.num_layers, tied)]
    state = BertForPretraining(cfg).state_dict()
    assert len(ours) == len(set(ours)) and set(state) <= set(ours), "each parameter has one Hugging Face name"
    missing = set(ours) - set(state)
    assert all(n.startswith("encoder.layers.") and n.endswith(".bias") and "norm" not in n for n in missing)
    assert len(missing) == (0 if bias else 5 * cfg.num_layers)  # query, value, attention output, FFN in and out


def test_weights_are_transposed_and_the_key_bias_is_zero(trained):
    ckpt = checkpoint.load(checkpoint.latest(trained))
    hf = to_hf(ckpt.model_state, ckpt.config.model.num_layers)
    q = "encoder.layers.0.attention.query.weight"
    np.testing.assert_array_equal(hf["bert.encoder.layer.0.attention.self.query.weight"], ckpt.model_state[q].T)
    assert not hf["bert.encoder.layer.0.attention.self.key.bias"].any()


def train_and_export(tmp_path, *train_args: str):
    """Train the tiny model with `train_args`, export it with --format huggingface; (output, export folder)."""
    trained, folder = tmp_path / "trained", tmp_path / "hf"
    result = run_script("pipeline/train.py", "--output-dir", str(trained), *TINY, *train_args)
    assert result.returncode == 0, result.stderr
    result = run_script("export/save.py", "--output-dir", str(trained), "--format", "huggingface",
                        "--export-dir", str(folder))
    assert result.returncode == 0, result.stderr
    return trained, folder


@pytest.mark.parametrize("tied,bias", [(False, True), (True, True), (False, False)])
def test_transformers_loads_the_export_and_matches(corpus_dir, tmp_path, tied, bias):
    """Also without linear biases (model.linear_bias=false): zero biases there, exactly."""
    torch = needs("torch", "bench")
    transformers = needs("transformers", "bench")
    trained, folder = train_and_export(tmp_path, "--data-dir", str(corpus_dir), "--steps", "3",
                                       "-o", f"model.tie_word_embeddings={str(tied).lower()}",
                                       "-o", "model.activation=gelu", "-o", f"model.linear_bias={str(bias).lower()}")
    assert {"config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json"} <= {p.name for p in folder.iterdir()}
    hf, info = transformers.BertForPreTraining.from_pretrained(str(folder), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    hf.eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    vocab = json.loads((trained / VOCAB).read_text())["idx_to_token"]
    assert tokenizer.convert_ids_to_tokens(list(range(len(vocab)))) == vocab

    ckpt = checkpoint.load(checkpoint.latest(trained))
    ours = BertForPretraining(ckpt.config.model)
    checkpoint.apply_model_state(ours, ckpt.model_state, ckpt.path)
    ours.eval()
    arrays = random_inputs(ckpt.config.model.vocab_size, 4, 20, seed=7)
    lengths = arrays["valid_length"]
    positions = np.tile(np.arange(20), (4, 1))
    with paddle.no_grad():
        inputs = [paddle.to_tensor(arrays[k]) for k in ("input_ids", "token_type_ids", "valid_length")]
        encodings = ours.encoder(*inputs).numpy()
        mlm, nsp = (t.numpy() for t in ours(*inputs, paddle.to_tensor(positions)))
    attention = (np.arange(20)[None, :] < lengths[:, None]).astype(np.int64)
    with torch.no_grad():
        out = hf(input_ids=torch.from_numpy(arrays["input_ids"]), token_type_ids=torch.from_numpy(arrays["token_type_ids"]),
                 attention_mask=torch.from_numpy(attention), output_hidden_states=True)
    worst = {"encodings": 0.0, "mlm": 0.0}
    for row, n in enumerate(lengths):
        worst["encodings"] = max(worst["encodings"], np.abs(out.hidden_states[-1][row, :n].numpy() - encodings[row, :n]).max())
        worst["mlm"] = max(worst["mlm"], np.abs(out.prediction_logits[row, :n].numpy() - mlm[row, :n]).max())
    worst["nsp"] = np.abs(out.seq_relationship_logits.numpy() - nsp).max()
    assert max(worst.values()) < TOLERANCE, worst


@pytest.mark.parametrize("lowercase", [True, False])
def test_the_exported_tokenizer_gives_the_projects_ids_cased_and_uncased(tmp_path, lowercase):
    """AutoTokenizer over a --format huggingface export of a WordPiece model, cased and uncased: the same
    ids as this project's tokenizer on 300 varied lines (English, Chinese, punctuation, accents, mixed case)."""
    transformers = needs("transformers", "bench")
    from pipeline.core.tokenizer import TOKENIZER_FILE, WordPieceTokenizer
    from tests.helpers.corpora import EN_WORDS, ZH_CHARS, write_chinese, write_english

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    write_english(corpus / "en.txt", documents=300, seed=1)
    write_chinese(corpus / "zh.txt", documents=100, seed=2)
    (corpus / "mixed.txt").write_text("The Crane is Flying over Berlin. Ünïcödé café naïve!\n\nÉcole ÉTÉ, Straße. "
                                      "İstanbul? Señor Müller's crane.\n", encoding="utf-8")
    trained, folder = train_and_export(tmp_path, "--corpus", str(corpus), "--steps", "1",
                                       "-o", "data.tokenizer=wordpiece", "-o", "data.vocab_size=400",
                                       "-o", f"data.lowercase={str(lowercase).lower()}")
    ours = WordPieceTokenizer.load(trained / TOKENIZER_FILE)
    theirs = transformers.AutoTokenizer.from_pretrained(str(folder))
    rng = np.random.default_rng(3)
    pool = EN_WORDS + ZH_CHARS + ["The", "CRANE", "Berlin", "École", "Ünïcödé", "!", "?", ",", "'s", "Straße", "ÉTÉ"]
    lines = ["The Crane is Flying over Berlin"] + [" ".join(rng.choice(pool, rng.integers(1, 12))) for _ in range(299)]
    for line in lines:
        want = [ours.vocab[t] for t in ours.tokens(line)]
        assert theirs(line, add_special_tokens=False)["input_ids"] == want, line
    crane = ours.tokens("The Crane is Flying over Berlin")
    assert (crane[0] == "the") == lowercase


@pytest.mark.parametrize("tied", [False, True])
def test_the_one_mapping_round_trips(tied):
    """from_hf(to_hf(state)) is the state: one list of names and transposed weights serves both ways."""
    from pipeline.core.hf_mapping import from_hf

    cfg = ModelConfig(vocab_size=40, hidden_size=16, num_layers=2, num_heads=2, ffn_size=32, tie_word_embeddings=tied,
                      linear_bias=True)
    state = {k: v.numpy() for k, v in BertForPretraining(cfg).state_dict().items()}
    back, fresh = from_hf(to_hf(state, cfg.num_layers, tied), cfg.num_layers, tied, Path("x"))
    assert fresh == [] and back.keys() == state.keys()
    for name, value in state.items():
        np.testing.assert_array_equal(back[name], value, err_msg=name)
