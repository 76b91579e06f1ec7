"""pipeline/objectives.py: one entry per objective the config accepts, each with its parts."""
import dataclasses

from pipeline.config import TrainConfig, load_config
from pipeline.objectives import OBJECTIVES


def test_every_objective_the_config_accepts_has_one_entry_with_every_part():
    choices = next(f for f in dataclasses.fields(TrainConfig) if f.name == "objective").metadata["choices"]
    assert set(OBJECTIVES) == set(choices)
    for name, objective in OBJECTIVES.items():
        assert objective.name == name and objective.losses and objective.unit
        assert all(callable(part) for part in (objective.data, objective.build_step, objective.train_pass,
                                               objective.summary))


def test_the_summary_lines_say_what_their_losses_are():
    cfg = load_config(None, ["train.nsp=false"])
    line = OBJECTIVES["mlm"].summary(cfg, {"mlm_loss": 5.0, "nsp_loss": 0.0}, 7)
    assert line == "MLM loss 5.000, NSP off (train.nsp=false) (mean over this run's 7 steps)"
    regression = load_config(None, ["model.labels=[score]", "model.problem_type=regression"])
    assert "mean squared error" in OBJECTIVES["classify"].summary(regression, {"classify_loss": 0.5}, 3)
    assert OBJECTIVES["contrastive"].normalized and not OBJECTIVES["classify"].normalized
    assert OBJECTIVES["classify"].exports == "encodings and logits"
