"""Training in rounds: per-output restarts of the outputs not solved on validation data."""

import json
import logging
from typing import ClassVar

import lightning as L
import pytest
import torch
from conftest import TINY, compose_config

from nalu.cli.train import train
from nalu.config.errors import ConfigError, InvalidArgument
from nalu.config.validation import validate_config
from nalu.training.members import build_network
from nalu.training.module import ArithmeticModule

# 200 steps an epoch of fresh batches; an NAU at 0.05 learns this problem's difference within
# one epoch and never a product.
ROUNDS = [
    *TINY,
    "model=nau",
    "data.operations=[add,sub,mul]",
    "data.resample=true",
    "data.train_size=3200",
    "optimizer.lr=0.05",
    "lr_schedule=linear_decay",
    "trainer.max_epochs=2",
    "rounds=2",
]


class RoundProbe(L.Callback):
    """The weights, the optimizer's state and the learning rate just before and just after
    the validation that ends the first round (callbacks' ``on_validation_epoch_end`` runs
    before the module's, ``on_validation_end`` after it)."""

    seen: ClassVar[dict[str, object]] = {}

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.global_step == 200:
            RoundProbe.seen["before"] = pl_module.network.weight.detach().clone()

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.global_step == 200:
            optimizer = pl_module.optimizers().optimizer
            state = optimizer.state[pl_module.network.weight]
            RoundProbe.seen["after"] = pl_module.network.weight.detach().clone()
            RoundProbe.seen["moments"] = (state["exp_avg"].clone(), state["exp_avg_sq"].clone())
            RoundProbe.seen["lr"] = optimizer.param_groups[0]["lr"]
            RoundProbe.seen["settled"] = pl_module.restarts.settled_outputs[0].tolist()

    def on_train_end(self, trainer, pl_module) -> None:
        RoundProbe.seen["end"] = pl_module.network.weight.detach().clone()


def test_a_new_round_restarts_only_the_outputs_unsolved_on_validation_data(tmp_path):
    probe = [f"+callbacks.probe._target_={__name__}.RoundProbe"]
    cfg = compose_config([*ROUNDS, *probe], tmp_path)
    metrics = train(cfg)
    seen = RoundProbe.seen
    operations = problem_operations(tmp_path)
    # The sums and differences were solved in round 1 and settled; the products start over.
    assert seen["settled"] == [op in ("add", "sub") for op in operations]
    assert any(seen["settled"]) and not all(seen["settled"])
    settled = torch.tensor(seen["settled"])
    fresh = build_network(cfg.model, cfg.seed, draw=1).weight.detach()
    # A new initialisation: not the run's first one again.
    assert not torch.equal(fresh, build_network(cfg.model, cfg.seed).weight.detach())
    assert torch.equal(seen["after"][settled], seen["before"][settled])
    assert torch.equal(seen["after"][~settled], fresh[~settled])
    # Adam and the learning rate as at step 0; settled rows then never move again.
    assert all(not moment.any() for moment in seen["moments"])
    assert seen["lr"] == pytest.approx(0.05)
    assert torch.equal(seen["end"][settled], seen["before"][settled])
    assert not torch.equal(seen["end"][~settled], fresh[~settled])
    assert metrics["extrap/own_best_solved_fraction_sub"] == 1.0


def problem_operations(run_dir) -> list[str]:
    problem = json.loads((run_dir / "problem.json").read_text())
    return [output["operation"] for output in problem["outputs"]]


def test_rounds_must_end_with_a_validation_and_need_outputs_of_their_own(tmp_path):
    with pytest.raises(ConfigError, match=r"rounds=4: must divide trainer.max_epochs=2"):
        validate_config(compose_config([*ROUNDS, "rounds=4"], tmp_path))
    with pytest.raises(ConfigError, match=r"rounds=2: .*every 2 epochs"):
        validate_config(compose_config([*ROUNDS, "trainer.check_val_every_n_epoch=2"], tmp_path))
    with pytest.raises(InvalidArgument, match="rounds=2: needs a network config whose outputs"):
        ArithmeticModule(
            {"_target_": "nalu.units.baselines.MLP", "in_features": 2, "out_features": 1},
            {"_target_": "torch.optim.Adam", "_partial_": True},
            [["add"]],
            validation_threshold=[[1e-3]],
            rounds=2,
        )


@pytest.mark.slow
def test_a_round_restart_starts_the_stall_rules_count_of_validations_again(tmp_path, caplog):
    # Rounds of 3 epochs, a stall judged over 2 validations, and weights that do not move (SGD
    # at 1e-30), so that every member stalls as soon as the rule may say so: after 2
    # validations (step 64), and after the round restart at step 96, a re-initialisation, only
    # once 2 validations have passed after it again (step 160), as after a stall's own restart.
    caplog.set_level(logging.INFO, logger="nalu.training.restarts")
    overrides = [
        "experiment=article_division",
        "model=nau",
        "data.in_features=10",
        "data.out_features=4",
        "population=2",
        "rounds=2",
        "trainer.max_epochs=6",
        "trainer.enable_progress_bar=false",
        "stall_restart={validations: 2, loss_above: 0.001}",
        "optimizer=sgd",
        "optimizer.lr=1e-30",
    ]
    train(compose_config(overrides, tmp_path))
    messages = [r.getMessage() for r in caplog.records if r.name == "nalu.training.restarts"]
    assert messages == [
        "step 64: stalled, re-initialised (stall_restart): 2 of 2 members",
        "step 96: round 2 of 2: 0 outputs settled, 8 start over",
        "step 160: stalled, re-initialised (stall_restart): 2 of 2 members",
    ]
