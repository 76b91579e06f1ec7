"""--init-from: a Hugging Face BERT folder (this project's own export, or one transformers writes) becomes
this project's model with the same logits, its tokenizer with its own special tokens, and training goes on
from it; everything a folder can get wrong is refused in one line."""
import json
import shutil

import numpy as np
import paddle
import pytest
from safetensors.numpy import load_file, save_file

from pipeline import checkpoint
from pipeline.config import load_config
from pipeline.core.errors import UserError
from pipeline.core.export_format import VOCAB
from pipeline.model import BertForPretraining
from pipeline.pretrained import complete_state, open_pretrained
from tests.conftest import TINY, needs, run_script
from tests.helpers.checks import assert_user_error
from tests.helpers.runs import losses, random_inputs

KEEP = ["-o", "data.max_len=32", "-o", "train.batch_size=32", "-o", "train.lr=0.002", "-o", "train.warmup_steps=0",
        "-o", "train.lr_decay=none", "-o", "train.log_every=1"]


@pytest.fixture(scope="module")
def hf_folder(trained, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "hf"
    result = run_script("export/save.py", "--output-dir", str(trained), "--format", "huggingface", "--export-dir", str(folder))
    assert result.returncode == 0, result.stderr
    return folder


def project_model(pretrained, vocab_size):
    cfg = load_config(None, [f"model.{k}={json.dumps(v)}" for k, v in pretrained.model.items()],
                      {"model.vocab_size": vocab_size})
    model = BertForPretraining(cfg.model)
    fresh = {k: v.numpy() for k, v in model.state_dict().items()}
    checkpoint.apply_model_state(model, complete_state(pretrained, fresh), pretrained.folder)
    model.eval()
    return model


def outputs(model, arrays, positions):
    with paddle.no_grad():
        inputs = [paddle.to_tensor(arrays[k]) for k in ("input_ids", "token_type_ids", "valid_length")]
        encodings = model.encoder(*inputs).numpy()
        mlm, nsp = (t.numpy() for t in model(*inputs, paddle.to_tensor(positions)))
    return encodings, mlm, nsp


def test_own_export_round_trips_to_identical_logits(trained, hf_folder):
    ckpt = checkpoint.load(checkpoint.latest(trained))
    original = BertForPretraining(ckpt.config.model)
    checkpoint.apply_model_state(original, ckpt.model_state, ckpt.path)
    original.eval()
    pretrained = open_pretrained(hf_folder)
    assert pretrained.fresh == [] and pretrained.model["hidden_size"] == ckpt.config.model.hidden_size
    assert pretrained.tokenizer.vocab.idx_to_token == json.loads((trained / VOCAB).read_text())["idx_to_token"]
    imported = project_model(pretrained, ckpt.config.model.vocab_size)
    arrays = random_inputs(ckpt.config.model.vocab_size, 4, 20, 1)
    positions = np.tile(np.arange(20), (4, 1))
    for a, b in zip(outputs(original, arrays, positions), outputs(imported, arrays, positions)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_an_encoder_only_folder_starts_the_heads_fresh(hf_folder, tmp_path):
    folder = tmp_path / "bert-model"
    shutil.copytree(hf_folder, folder)
    state = load_file(str(folder / "model.safetensors"))
    encoder_only = {k[len("bert."):]: v for k, v in state.items() if k.startswith("bert.") and "pooler" not in k}
    save_file(encoder_only, str(folder / "model.safetensors"))  # as BertModel.save_pretrained names them
    pretrained = open_pretrained(folder)
    assert {k.split(".")[0] for k in pretrained.fresh} == {"mlm_head", "nsp_head"}
    assert "encoder.layers.0.attention.query.weight" in pretrained.state


def broken(hf_folder, tmp_path, change):
    folder = tmp_path / "broken"
    shutil.copytree(hf_folder, folder)
    change(folder)
    return folder


def edit_config(**changes):
    def change(folder):
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, **changes}))
    return change


def edit_weights(change_state):
    def change(folder):
        state = load_file(str(folder / "model.safetensors"))
        change_state(state)
        save_file(state, str(folder / "model.safetensors"))
    return change


def pickle_only(folder):
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")


@pytest.mark.parametrize("change, fragment", [
    (pickle_only, "pytorch_model.bin is a pickle, which is never loaded"),
    (edit_config(model_type="roberta"), "model_type 'roberta' is not bert"),
    (edit_config(position_embedding_type="relative_key"), "position_embedding_type 'relative_key'"),
    (edit_config(type_vocab_size=3), "type_vocab_size 3"),
    (edit_weights(lambda s: s.pop("bert.encoder.layer.1.output.dense.weight")), "lacks 1 weight(s)"),
    (edit_weights(lambda s: s.update({"bert.encoder.layer.9.extra.weight": np.zeros(2, np.float32)})),
     "does not have, e.g. bert.encoder.layer.9.extra.weight"),
    (lambda folder: (folder / "vocab.txt").unlink(), "neither tokenizer.json nor vocab.txt"),
])
def test_a_bad_folder_is_refused_in_one_line(hf_folder, tmp_path, corpus_dir, change, fragment):
    folder = broken(hf_folder, tmp_path, change)
    result = run_script("pipeline/train.py", "--init-from", str(folder), "--data-dir", str(corpus_dir),
                        "--output-dir", str(tmp_path / "out"), "--steps", "1", *KEEP)
    assert_user_error(result, fragment)


def test_contradicting_settings_and_flags_are_refused(hf_folder, tmp_path, corpus_dir):
    common = ["--init-from", str(hf_folder), "--data-dir", str(corpus_dir), "--output-dir", str(tmp_path / "o"),
              "--steps", "1"]
    assert_user_error(run_script("pipeline/train.py", *common, *KEEP, "-o", "model.hidden_size=64"),
                      "-o model.hidden_size=64 contradicts")
    # -o is read by the config's own parser: 1e-12 is the number config.json holds, not the string PyYAML reads
    agreeing = run_script("pipeline/train.py", *common, *KEEP, "-o", "model.layer_norm_eps=1e-12",
                          "--output-dir", str(tmp_path / "agreeing"))
    assert agreeing.returncode == 0, agreeing.stderr[-2000:]
    def shorter_positions(folder):
        edit_config(max_position_embeddings=24)(folder)
        name = "bert.embeddings.position_embeddings.weight"
        edit_weights(lambda state: state.update({name: state[name][:24].copy()}))(folder)

    short = broken(hf_folder, tmp_path, shorter_positions)
    assert_user_error(run_script("pipeline/train.py", *common, *KEEP, "--init-from", str(short)),
                      "setting data.max_len (32) exceeds model.max_position (24)")
    assert_user_error(run_script("pipeline/train.py", *common, *KEEP, "--resume"), "--init-from starts a new run")


def test_continued_pretraining_learns_resumes_exactly_and_exports(hf_folder, tmp_path, corpus_dir, trained):
    """From the folder: the first loss is the trained model's (not a fresh one's), it falls; a run broken
    in two with --resume auto equals an unbroken one; the export encodes."""
    flags = ["--init-from", str(hf_folder), "--data-dir", str(corpus_dir), *KEEP, "--resume", "auto"]
    whole, parts, fresh = tmp_path / "whole", tmp_path / "parts", tmp_path / "fresh"
    assert run_script("pipeline/train.py", *flags, "--output-dir", str(whole), "--steps", "8").returncode == 0
    assert run_script("pipeline/train.py", *flags, "--output-dir", str(parts), "--steps", "4").returncode == 0
    resumed = run_script("pipeline/train.py", *flags, "--output-dir", str(parts), "--steps", "8")
    assert resumed.returncode == 0, resumed.stderr
    np.testing.assert_allclose(np.array(losses(parts)), np.array(losses(whole)), rtol=1e-4)
    from_scratch = run_script("pipeline/train.py", "--data-dir", str(corpus_dir), *TINY, "--output-dir", str(fresh),
                              "--steps", "1")
    assert from_scratch.returncode == 0
    assert losses(whole)[0][1] < losses(fresh)[0][1] - 0.2, "the first step starts from the published weights"
    assert np.mean([r[1] for r in losses(whole)[-3:]]) < np.mean([r[1] for r in losses(whole)[:3]])
    assert "initialised from" in run_script("pipeline/train.py", *flags, "--output-dir", str(tmp_path / "again"),
                                            "--steps", "1").stderr
    exported = run_script("export/save.py", "--output-dir", str(whole), "--export-dir", str(whole / "inference"))
    assert exported.returncode == 0, exported.stderr
    encoded = run_script("infer/encode.py", "--model-dir", str(whole / "inference"), "--text", "a crane is flying", "--json")
    assert encoded.returncode == 0, encoded.stderr
    assert json.loads(encoded.stdout)["tokens"][0] == "<cls>"


def write_transformers_folder(folder, transformers, torch, size: str):
    """A BertForPreTraining of random weights with bert-base-uncased's conventions ([PAD]=0, [UNK]=100,
    [CLS]=101, [SEP]=102, [MASK]=103), saved as transformers saves it."""
    words = [f"word{i}" for i in range(2000)] if size == "small" else [f"w{i}" for i in range(30522 - 104)]
    vocab = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    dims = (dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128) if size == "small"
            else dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072))
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=len(vocab), max_position_embeddings=128, **dims)
    model = transformers.BertForPreTraining(config).eval()
    with torch.no_grad():  # non-zero key biases, so dropping them is really tested
        for layer in model.bert.encoder.layer:
            layer.attention.self.key.bias.normal_(0, 0.5)
    model.save_pretrained(str(folder), safe_serialization=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "tokenizer_class": "BertTokenizer"}))
    return model, vocab


def transformers_outputs(hf, arrays: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(encodings, MLM logits, NSP logits) of a transformers BertForPreTraining on this project's inputs."""
    import torch

    attention = (np.arange(arrays["input_ids"].shape[1])[None, :] < arrays["valid_length"][:, None]).astype(np.int64)
    with torch.no_grad():
        out = hf(input_ids=torch.from_numpy(arrays["input_ids"]), token_type_ids=torch.from_numpy(arrays["token_type_ids"]),
                 attention_mask=torch.from_numpy(attention), output_hidden_states=True)
    return out.hidden_states[-1].numpy(), out.prediction_logits.numpy(), out.seq_relationship_logits.numpy()


@pytest.mark.parametrize("size", ["small", "base"])
def test_a_transformers_folder_gives_its_logits(tmp_path, size):
    torch = needs("torch", "bench")
    transformers = needs("transformers", "bench")
    hf, vocab = write_transformers_folder(tmp_path, transformers, torch, size)
    pretrained = open_pretrained(tmp_path)
    v = pretrained.tokenizer.vocab
    assert (v.pad, v.unk, v.cls, v.sep, v.mask) == (0, 100, 101, 102, 103) and v.first_regular == 104
    ours = project_model(pretrained, len(vocab))
    arrays = random_inputs(len(vocab), 3, 24, 2)
    arrays["input_ids"][:, 0] = v.cls
    positions = np.tile(np.arange(24), (3, 1))
    encodings, mlm, nsp = outputs(ours, arrays, positions)
    their_encodings, their_mlm, their_nsp = transformers_outputs(hf, arrays)
    for row, n in enumerate(arrays["valid_length"]):
        np.testing.assert_allclose(encodings[row, :n], their_encodings[row, :n], atol=1e-4)
        np.testing.assert_allclose(mlm[row, :n], their_mlm[row, :n], atol=1e-4)
    np.testing.assert_allclose(nsp, their_nsp, atol=1e-4)
    tokenizer = transformers.BertTokenizer(str(tmp_path / "vocab.txt"))
    text = "Word1 word2 [MASK] wordX word19"
    assert [v[t] for t in pretrained.tokenizer.tokens(text)] == tokenizer(text, add_special_tokens=False)["input_ids"]


def test_continued_pretraining_on_two_processes(hf_folder, tmp_path, corpus_dir):
    """--init-from under the launcher: both ranks start from the folder and the run finishes."""
    out = tmp_path / "two"
    result = run_script("-m", "paddle.distributed.launch", "--nproc_per_node", "2", "--log_dir", str(tmp_path / "log"),
                        "pipeline/train.py", "--init-from", str(hf_folder), "--data-dir", str(corpus_dir),
                        "--output-dir", str(out), "--steps", "3", *KEEP)
    logs = "\n".join(p.read_text(errors="replace")[-2000:] for p in sorted((tmp_path / "log").glob("workerlog.*")))
    assert result.returncode == 0, logs
    assert checkpoint.load(checkpoint.latest(out)).step == 3
    assert "initialised from" in logs


def test_a_hub_model_id_says_how_to_get_the_folder(tmp_path, monkeypatch):
    from pipeline.pretrained import open_pretrained

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match="huggingface-cli download sentence-transformers/all-MiniLM-L6-v2"):
        open_pretrained("sentence-transformers/all-MiniLM-L6-v2")
