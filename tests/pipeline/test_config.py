import dataclasses

import pytest
import yaml

from pipeline.config import BASE_KEY, DEFAULT_CONFIG, Config, diff_configs, load_config, parse_override, with_settings
from pipeline.core.errors import UserError
from tests.conftest import ROOT


def test_default_is_the_seeds_tiny_bert_with_a_recipe_that_learns():
    cfg = load_config()
    assert (cfg.model.num_layers, cfg.model.hidden_size, cfg.model.ffn_size, cfg.model.num_heads) == (2, 128, 256, 2)
    assert cfg.data.max_len == 64 and cfg.model.init_std == 0.02
    assert (cfg.train.optimizer, cfg.train.lr_decay) == ("adamw", "linear") and cfg.train.warmup_steps > 0


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_a_shipped_config_lists_only_what_it_changes(path):
    """Defaults live in the dataclasses alone: a config file that repeats one would hide which lines matter."""
    defaults = Config().to_dict()
    listed = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    bases = [yaml.safe_load((path.parent / b).read_text(encoding="utf-8")) for b in listed.pop(BASE_KEY, [])]
    inherited = {(s, k): v for base in bases for s, values in base.items() if s != BASE_KEY for k, v in values.items()}
    repeated = [f"{s}.{k}" for s, values in listed.items() for k, v in values.items()
                if inherited.get((s, k), defaults[s][k]) == v]
    assert not repeated, f"{path.name} repeats what it builds on: {repeated}"


def test_a_config_builds_on_its_base_files_and_wins_over_them(tmp_path):
    (tmp_path / "shape.yaml").write_text("model: {hidden_size: 64, num_heads: 4}\ntrain: {lr: 1.0e-4}\n")
    (tmp_path / "base.yaml").write_text("_BASE_: [shape.yaml]\ntrain: {lr: 2.0e-4, steps: 9}\n")
    (tmp_path / "run.yaml").write_text("_BASE_: [base.yaml]\ntrain: {steps: 5}\n")
    cfg = load_config(tmp_path / "run.yaml", ["train.steps=7"])
    assert (cfg.model.hidden_size, cfg.model.num_heads, cfg.train.lr, cfg.train.steps) == (64, 4, 2e-4, 7)
    assert load_config(tmp_path / "run.yaml").train.steps == 5


def test_the_contrastive_config_starts_from_the_vectors_shape():
    vectors, contrastive = (load_config(ROOT / "configs" / name) for name in ("bert_vectors.yaml", "contrastive.yaml"))
    assert contrastive.model.hidden_size == vectors.model.hidden_size != Config().model.hidden_size
    assert contrastive.data.tokenizer == vectors.data.tokenizer == "wordpiece"
    assert (contrastive.train.objective, vectors.train.objective) == ("contrastive", "mlm")


@pytest.mark.parametrize("text, says", [
    ("_BASE_: [loop.yaml]\n", "names itself among its _BASE_ files"),
    ("_BASE_: [missing.yaml]\n", "config file not found"),
    ("_BASE_: loop.yaml\n", "must be a list of config files"),
])
def test_a_bad_base_list_is_refused_in_one_line(tmp_path, text, says):
    (tmp_path / "loop.yaml").write_text(text)
    with pytest.raises(UserError, match=says):
        load_config(tmp_path / "loop.yaml")


def test_a_config_is_frozen_and_changed_only_into_a_new_one():
    cfg = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.model.vocab_size = 100
    changed = with_settings(cfg, {"model.vocab_size": 100, "train.lr": 1})
    assert (changed.model.vocab_size, changed.train.lr, cfg.model.vocab_size) == (100, 1.0, 0)
    with pytest.raises(UserError, match="model.vocab_size must be at least 0"):
        with_settings(cfg, {"model.vocab_size": -1})
    with pytest.raises(UserError, match="divisible by model.num_heads"):
        with_settings(cfg, {"model.num_heads": 3})


@pytest.mark.parametrize("name, sizes", [("bert_base", (12, 768, 3072, 12)), ("bert_large", (24, 1024, 4096, 16))])
def test_base_and_large_configs(name, sizes):
    cfg = load_config(ROOT / "configs" / f"{name}.yaml")
    assert (cfg.model.num_layers, cfg.model.hidden_size, cfg.model.ffn_size, cfg.model.num_heads) == sizes
    assert cfg.data.max_len == 512


def test_overrides_are_parsed_as_typed_yaml_scalars():
    cfg = load_config(DEFAULT_CONFIG, ["train.lr=1e-4", "train.steps=7", "data.dynamic_masking=false",
                                       "data.eval_split=test", "model.activation=gelu"])
    assert cfg.train.lr == pytest.approx(1e-4) and isinstance(cfg.train.lr, float)
    assert cfg.train.steps == 7 and cfg.data.dynamic_masking is False
    assert cfg.data.eval_split == "test" and cfg.model.activation == "gelu"


@pytest.mark.parametrize("override, message", [
    ("train.nope=1", "unknown setting train.nope"),
    ("nope.lr=1", "unknown config section 'nope'"),
    ("train.steps=ten", "train.steps must be int"),
    ("train.steps=1.5", "train.steps must be int"),
    ("data.dynamic_masking=3", "data.dynamic_masking must be bool"),
    ("train.optimizer=sgd", "train.optimizer must be one of"),
    ("model.num_heads=3", "divisible by model.num_heads"),
    ("train.steps=0", "train.steps must be at least 1"),
    ("train.max_minutes=-1", "train.max_minutes must be at least 0"),
    ("model.layer_norm_eps=0", "model.layer_norm_eps must be above 0"),
    ("model.init_std=-0.1", "model.init_std must be at least 0"),
    ("train.batch_size=0", "train.batch_size must be at least 1"),
    ("data.max_len=100000", "exceeds model.max_position"),
    ("model.dropout=1", "model.dropout must be below 1"),
    ("data.mask_prob=0", "data.mask_prob must be above 0"),
    ("data.eval_split=dev", "data.eval_split must be one of"),
    ("trainlr", "must look like section.key=value"),
])
def test_bad_overrides_are_refused_with_the_setting_named(override, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config(DEFAULT_CONFIG, [override])


def test_missing_and_malformed_config_files(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [1, 2]\n")
    with pytest.raises(UserError, match="section 'model'"):
        load_config(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("model:\n  hidden_size: 64\n num_layers: [\n")
    with pytest.raises(UserError, match=r"broken.yaml is not valid YAML: .* at line 3, column 2"):
        load_config(broken)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes("# café\nmodel:\n  hidden_size: 64\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"not UTF-8 text \(invalid byte at line 1\).*WINDOWS-1252"):
        load_config(latin)


def test_seed_config_keeps_the_books_recipe():
    cfg = load_config(ROOT / "configs" / "seed.yaml")
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.warmup_steps, cfg.train.batch_size, cfg.train.steps) == \
        ("adam", 0.01, 0, 512, 50)
    assert cfg.model.init_std == 0 and cfg.model.layer_norm_eps == 1e-5 and cfg.model.dropout == 0.2


@pytest.mark.parametrize("flag, key, value", [
    ("--output-dir", "train.output_dir", "012"),  # YAML 1.1 would read an octal 10
    ("--data-dir", "data.data_dir", "1e3"),  # ... a float 1000.0
    ("--data-dir", "data.data_dir", "yes"),  # ... a boolean
])
def test_short_flags_carry_their_values_as_given(flag, key, value, tmp_path, monkeypatch):
    from pipeline.train import build_parser, resolve_config

    monkeypatch.chdir(tmp_path)
    (tmp_path / value).mkdir()
    (tmp_path / value / "wiki.train.tokens").write_text(" a b .\n")
    argv = [flag, value] if flag == "--data-dir" else [flag, value, "--data-dir", value]
    cfg = resolve_config(build_parser().parse_args(argv)).cfg
    section, name = key.split(".")
    assert getattr(getattr(cfg, section), name) == value


def test_short_flags_win_over_overrides(corpus_dir):
    from pipeline.train import build_parser, resolve_config

    args = build_parser().parse_args(["-o", "train.steps=5", "--steps", "9", "--data-dir", str(corpus_dir)])
    assert resolve_config(args).cfg.train.steps == 9


def test_parse_override_keeps_strings_and_reads_exponents():
    assert parse_override("data.data_dir=/tmp/x") == ("data", "data_dir", "/tmp/x")
    assert parse_override("train.lr=3e-5")[2] == pytest.approx(3e-5)


def test_diff_configs_names_changed_model_keys():
    a, b = load_config(), load_config(DEFAULT_CONFIG, ["model.hidden_size=64", "model.num_heads=4"])
    assert diff_configs(a, b) == ["model.hidden_size", "model.num_heads"]


def test_the_settings_table_in_the_docs_is_generated_from_the_fields():
    from pipeline.config import settings_table

    readme = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    start, end = "<!-- settings table -->\n", "\n<!-- end of settings table -->"
    table = readme[readme.index(start) + len(start):readme.index(end)]
    assert table == settings_table(), "docs/settings.md out of date: paste pipeline.config.settings_table() into it"


def test_a_checkpoint_config_from_before_a_setting_gets_the_value_it_was_made_with():
    from pipeline.config import config_from_dict

    old = Config().to_dict()
    del old["model"]["linear_bias"]  # a config.json written before model.linear_bias existed: with biases
    assert config_from_dict(old).model.linear_bias is True
    assert config_from_dict(Config().to_dict()).model.linear_bias is False


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_passes_its_cross_checks(path):
    cfg = load_config(path)
    assert cfg.train.steps >= 1 and cfg.data.max_len <= cfg.model.max_position


def test_print_config_shows_the_resolved_settings_and_trains_nothing(corpus_dir, tmp_path):
    from tests.conftest import run_script

    out = tmp_path / "out"
    result = run_script("pipeline/train.py", "--print-config", "--data-dir", str(corpus_dir), "--output-dir", str(out),
                        "-o", "train.lr=1e-4", "--steps", "9")
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert (shown["train"]["lr"], shown["train"]["steps"], shown["data"]["data_dir"]) == (1e-4, 9, str(corpus_dir))
    assert load_config(None, (), {f"{s}.{k}": v for s, values in shown.items() for k, v in values.items()}) \
        .train.steps == 9, "what it prints loads back"
    assert not (out / "checkpoints").exists()
