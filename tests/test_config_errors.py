"""Bad command lines: each stops with exit code 2 and one line naming the field, no traceback."""

import pytest
from conftest import run_cli

from nalu.errors import ConfigError
from nalu.train import CONFIG_DIR, EXIT_CONFIG_ERROR
from nalu.validation import check_command_line
from nalu.value_range import RANGE_RULE

# (overrides, the whole error line after "error: ")
BAD_CONFIGS = [
    (
        ["model=foo"],
        "model=foo: unknown model; choose one of "
        f"{sorted(path.stem for path in (CONFIG_DIR / 'model').glob('*.yaml'))}",
    ),
    (
        ["optimizer=adamw"],
        "optimizer=adamw: unknown optimizer; choose one of ['adam', 'rmsprop', 'sgd']",
    ),
    (
        ["data.operations=[add,pow]"],
        "data.operations=['add', 'pow']: 'pow' is not one of ['add', 'sub', 'mul', 'div']",
    ),
    (["data.in_features=1"], "data.in_features=1: must be an integer >= 2"),
    (
        ["data.train_range=[10,-10]"],
        f"data.train_range=[10, -10]: {RANGE_RULE}",
    ),
    (
        ["data.interp_range=[0,inf]"],
        f"data.interp_range=[0, inf]: {RANGE_RULE}",
    ),
    (
        ["data.extrap_range=[[-6,-1],[-2,6]]"],
        f"data.extrap_range=[[-6, -1], [-2, 6]]: {RANGE_RULE}",
    ),
    (["data.train_size=0"], "data.train_size=0: must be a positive integer"),
    (
        ["lr_schedule=null"],
        "lr_schedule=null: a config group is dropped with ~lr_schedule, not set to null",
    ),
    (["data.eval_batch_size=0"], "data.eval_batch_size=0: must be a positive integer"),
    (["data.min_abs_denominator=0"], "data.min_abs_denominator=0: must be a finite number > 0"),
    (["seed=-1"], "seed=-1: must be an integer in [0, 4294967295]"),
    (["data.problem_seed=1.5"], "data.problem_seed=1.5: must be an integer in [0, 4294967295]"),
    (
        ["model=mlp", "model.activation=Relu"],
        "model.activation='Relu': must name a torch.nn activation such as ReLU, Tanh, GELU",
    ),
    (["model.eps=0"], "model.eps=0: must be a finite number > 0"),
    (["model.gate_bias=maybe"], "model.gate_bias='maybe': must be true or false"),
    (
        ["model.in_features=5"],
        "model.in_features=5: must equal data.in_features=100, the problem's size",
    ),
    (["optimizer.lr=-1"], "optimizer.lr=-1: must be a finite number > 0"),
    (["optimizer.lr=nan"], "optimizer.lr=nan: must be a finite number > 0"),
    (
        ["optimizer=sgd", "optimizer.momentum=-0.5"],
        "optimizer.momentum=-0.5: must be a finite number >= 0",
    ),
    (
        ["+optimizer.betas=[0.9,1.5]"],
        "optimizer.betas=[0.9, 1.5]: must be [beta1, beta2], each in [0, 1)",
    ),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0: must be a positive integer"),
    (["trainer.max_epochs=ten"], "trainer.max_epochs='ten': must be a positive integer"),
    (
        ["trainer.max_epoch=3"],
        "trainer.max_epoch=3: trainer has no field 'max_epoch'; did you mean max_epochs? "
        "(+trainer.max_epoch=3 adds a new field)",
    ),
    (["foo=1"], "foo=1: the config has no field 'foo' (+foo=1 adds a new field)"),
    (
        ["data.in_features"],
        "data.in_features: not an override like field=value (Hydra: missing EQUAL at '<EOF>')",
    ),
    (["ckpt_path=missing.ckpt"], "ckpt_path='missing.ckpt': no such checkpoint file"),
    (["optimizer.lr=???"], "optimizer.lr: Missing mandatory value: optimizer.lr"),
    # A sweep is checked whole before its first job starts.
    (["-m", "seed=0,1", "optimizer.lr=1e-3,-2"], "optimizer.lr=-2: must be a finite number > 0"),
    (
        ["-m", "model=nac,nalu", "model.eps=1e-7"],
        "model.eps=1e-7: model has no field 'eps' (+model.eps=1e-7 adds a new field)",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("overrides", "message"), BAD_CONFIGS, ids=[" ".join(overrides) for overrides, _ in BAD_CONFIGS]
)
def test_bad_config_stops_with_one_line(overrides, message, tmp_path):
    result = run_cli(
        [*overrides, f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep"],
        cwd=tmp_path,
    )
    assert result.returncode == EXIT_CONFIG_ERROR
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.strip().splitlines() == [f"error: {message}"]
    assert not (tmp_path / "run" / "metrics.json").exists()
    assert not (tmp_path / "sweep").exists()


@pytest.mark.slow
def test_verbose_switch_shows_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("NALU_VERBOSE", "1")
    result = run_cli(["optimizer.lr=-1", f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "optimizer.lr=-1" in result.stderr


@pytest.mark.parametrize(
    "arguments",
    [
        ["-m", "model=glob(*)"],  # only Hydra's sweeper expands glob() and interval()
        ["-m", "optimizer.lr=interval(0.1,1)"],
        ["--cfg", "job", "foo=1"],  # Hydra's own flags are Hydra's business
        ["-m", "model=nac,nalu", "seed=range(0,50)", "hydra/launcher=basic"],
    ],
)
def test_command_lines_the_check_lets_through(arguments):
    check_command_line(arguments, CONFIG_DIR)


def test_every_job_of_a_sweep_is_checked():
    with pytest.raises(ConfigError, match=r"^seed=-1: must be an integer in \[0, 4294967295\]$"):
        check_command_line(["-m", "model=nac,nalu", "seed=range(-1,3)"], CONFIG_DIR)
    with pytest.raises(ConfigError, match=r"^model\.in_features=6: must equal data\.in_features=5"):
        check_command_line(["-m", "data.in_features=5", "model.in_features=5,6"], CONFIG_DIR)
