"""The command-line check itself: what it lets through, the verbose switch, whole sweeps."""

import pytest
import torch
from conftest import run_cli

from nalu.cli.common import EXIT_CONFIG_ERROR
from nalu.cli.train import CONFIG_DIR
from nalu.config.errors import ConfigError, InvalidArgument
from nalu.config.rules import TRAINING_RULES, target_magnitude
from nalu.config.validation import check_command_line, constructor_arguments
from nalu.training.optimization import LinearDecay
from nalu.training.regularizer import RegularizerSchedule
from nalu.training.stalls import StallRule


@pytest.mark.slow
def test_verbose_switch_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("NALU_VERBOSE", "1")
    result = run_cli(["optimizer.lr=-1", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert result.returncode == EXIT_CONFIG_ERROR  # as without the switch
    assert "Traceback" in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last == "error: optimizer.lr=-1: must be a finite number > 0"


@pytest.mark.parametrize(
    "arguments",
    [
        ["-m", "model=glob(*)"],  # only Hydra's sweeper expands glob() and interval()
        ["-m", "optimizer.lr=interval(0.1,1)"],
        ["--cfg", "job", "foo=1"],  # Hydra's own flags are Hydra's business
        ["-m", "model=nac,nalu", "seed=range(0,50)", "hydra/launcher=basic"],
        # The plugins' fields: interpolations resolve later, a deletion is the default.
        ["-m", "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=${oc.env:JOBS,2}"],
        ["-m", "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=null"],
        ["-m", "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=-2"],
        ["-m", "seed=0,1", "hydra/launcher=joblib", "~hydra.launcher.n_jobs"],
        ["-m", "hparams_search=nalu_optuna", "hydra.sweeper.storage=sqlite:///${oc.env:HOME}/o.db"],
        ["-m", "hparams_search=nalu_optuna", "hydra.sweeper.storage=sqlite:///outputs/optuna.db"],
    ],
)
def test_command_lines_the_check_lets_through(arguments):
    # Sweeps and Hydra's showing flags pass, with no single run's config to hand on.
    assert check_command_line(arguments, CONFIG_DIR) is None


def test_every_job_of_a_sweep_is_checked():
    with pytest.raises(ConfigError, match=r"^seed=-1: must be an integer in \[0, 4294967295\]$"):
        check_command_line(["-m", "model=nac,nalu", "seed=range(-1,3)"], CONFIG_DIR)
    with pytest.raises(ConfigError, match=r"^model\.in_features=6: must equal data\.in_features=5"):
        check_command_line(["-m", "data.in_features=5", "model.in_features=5,6"], CONFIG_DIR)


def test_the_check_returns_the_config_a_single_run_trains_on_and_none_for_a_sweep():
    cfg = check_command_line(["model=nac", "seed=7", "hydra.run.dir=/tmp/x"], CONFIG_DIR)
    assert cfg.model._target_ == "nalu.units.NeuralAccumulator"
    assert cfg.seed == 7
    assert check_command_line(["-m", "model=nac,nalu"], CONFIG_DIR) is None
    assert check_command_line(["--cfg", "job"], CONFIG_DIR) is None


@pytest.mark.parametrize(
    "arguments",
    [
        # Fresh batches: no training set is built; the members share their inputs.
        ["experiment=static_nau_nmu", "population=200"],
        ["experiment=solve", "population=2000"],
        ["experiment=article", "population=30000"],
    ],
)
def test_large_populations_that_fit_in_memory_pass(arguments):
    assert check_command_line(arguments, CONFIG_DIR).population == int(arguments[1][11:])


def test_a_users_own_callback_with_arguments_passes_and_a_misspelt_argument_is_refused():
    stop = "+callbacks.stop._target_=lightning.pytorch.callbacks.EarlyStopping"
    cfg = check_command_line([stop, "+callbacks.stop.monitor=interp/mse"], CONFIG_DIR)
    assert cfg.callbacks.stop == {
        "_target_": "lightning.pytorch.callbacks.EarlyStopping",
        "monitor": "interp/mse",
    }
    with pytest.raises(ConfigError, match=r"^\+callbacks\.stop\.monitr: lightning\.pytorch\."):
        check_command_line([stop, "+callbacks.stop.monitr=interp/mse"], CONFIG_DIR)


# Each training class, built with one bad argument, and the config section it is built from.
TRAINING_CLASSES = {
    "RegularizerSchedule": ("regularizer", RegularizerSchedule),
    "StallRule": ("stall_restart", StallRule),
    "LinearDecay": (
        "lr_schedule",
        lambda **bad: LinearDecay(torch.optim.SGD([torch.zeros(1)], lr=0.1), 10, **bad),
    ),
}


@pytest.mark.parametrize(
    ("owner", "field"),
    [(owner, field) for owner, fields in TRAINING_RULES.items() for field in fields],
)
def test_each_training_schedule_refuses_a_bad_argument_by_the_rule_the_command_line_applies(
    owner, field
):
    # The constructor and the command-line check apply the class's one rule: the same message,
    # the field named by its path in the config.
    section, build = TRAINING_CLASSES[owner]
    with pytest.raises(InvalidArgument) as refused:
        build(**{field: "bad"})
    with pytest.raises(InvalidArgument) as expected:
        TRAINING_RULES[owner][field](field, "bad")
    assert str(refused.value) == str(expected.value)
    if section == "stall_restart":  # no experiment sets one: the whole section on the line
        fields = {"validations": 5, "loss_above": 1.0, field: "bad"}
        override = f"stall_restart={{{', '.join(f'{k}: {v}' for k, v in fields.items())}}}"
    else:
        override = f"{section}.{field}=bad"
    with pytest.raises(ConfigError) as preflight:
        check_command_line(["experiment=solve", override], CONFIG_DIR)
    with pytest.raises(InvalidArgument) as expected:
        TRAINING_RULES[owner][field](f"{section}.{field}", "bad")
    assert str(preflight.value) == str(expected.value)


# The arguments a run gives a training class itself, which its config does not set.
RUN_GIVEN = {"LinearDecay": {"optimizer", "total_steps"}}


@pytest.mark.parametrize("owner", list(TRAINING_RULES))
def test_a_training_sections_fields_are_its_rules_the_only_fields_the_check_lets_through(owner):
    # The check refuses any field the rules do not name; they name every argument a config sets.
    target = {cls.__name__: cls for cls in (LinearDecay, RegularizerSchedule, StallRule)}[owner]
    settable = set(constructor_arguments(target)) - RUN_GIVEN.get(owner, set())
    assert settable == set(TRAINING_RULES[owner])


@pytest.mark.parametrize(
    ("operation", "bound"),
    [
        ("add", 20.0),
        ("sub", 20.0),
        ("mul", 100.0),
        ("square", 100.0),
        ("div", 40.0),
        ("sqrt", 10**0.5),
    ],
)
def test_the_target_bound_of_each_operation_by_hand(operation, bound):
    # Operands of magnitude at most 10, denominators at least 0.25: |a ± b| ≤ 20, |ab| ≤ 100,
    # |a / b| ≤ 10 / 0.25, √a ≤ √10.
    assert target_magnitude(operation, 10.0, 0.25) == pytest.approx(bound)
