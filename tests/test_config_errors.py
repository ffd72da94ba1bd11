"""The command-line check itself: what it lets through, the verbose switch, whole sweeps."""

import pytest
from conftest import run_cli

from nalu.cli.train import CONFIG_DIR
from nalu.config.errors import ConfigError
from nalu.config.validation import check_command_line


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


def test_the_check_returns_the_config_a_single_run_trains_on_and_none_for_a_sweep():
    cfg = check_command_line(["model=nac", "seed=7", "hydra.run.dir=/tmp/x"], CONFIG_DIR)
    assert cfg.model._target_ == "nalu.units.NeuralAccumulator"
    assert cfg.seed == 7
    assert check_command_line(["-m", "model=nac,nalu"], CONFIG_DIR) is None
    assert check_command_line(["--cfg", "job"], CONFIG_DIR) is None
