"""A command line's overrides read as Hydra reads them, in every place that reads them."""

from nalu.config import resolvers
from nalu.config.overrides import (
    given_value,
    hyperparameter_values,
    is_multirun,
    swept_on_command_line,
)


def test_hyperparameters_are_the_fields_that_set_what_a_run_trains_with_hydras_values():
    job = [
        "optimizer.lr=1e-3",
        "data.label='a b'",
        "+model.extra=[add,sub]",
        "~regularizer",
        "hydra.run.dir=/tmp/x",
        "logger.name=y",
        "ckpt_path=/tmp/x/last.ckpt",
        "seed=3",
    ]
    assert hyperparameter_values(job) == {
        "optimizer.lr": 0.001,
        "data.label": "a b",
        "model.extra": ["add", "sub"],
        "seed": 3,
    }


def test_an_override_hydra_cannot_read_is_kept_as_its_text():
    assert hyperparameter_values(["data.label=a=b"]) == {"data.label": "a=b"}


def test_a_field_given_twice_takes_its_last_value_without_quotes():
    arguments = ["-m", "hydra.run.dir=a", "seed=1", "hydra.run.dir='/tmp/with space'"]
    assert given_value(arguments, "hydra.run.dir") == "/tmp/with space"
    assert given_value(arguments, "paths.log_dir") is None


def test_the_swept_fields_and_the_multirun_flag():
    arguments = ["--multirun", "seed=0,1", "optimizer.lr=range(1,3)", "model=nalu"]
    assert swept_on_command_line(arguments) == ["seed", "optimizer.lr"]
    assert is_multirun(arguments) and is_multirun(["-m"])
    assert is_multirun(["seed=0,1", "hydra.mode=MULTIRUN"])  # Hydra's other way to ask
    assert not is_multirun(["seed=0,1", "-cn", "train"])


def test_a_job_folder_is_named_by_the_values_as_typed_without_quotes(monkeypatch):
    overrides = {"data.label": "a b", "optimizer.lr": 0.00443037524, "data.operations": ["add"]}
    monkeypatch.setattr(resolvers, "job_overrides", lambda: overrides)
    monkeypatch.setattr(resolvers, "swept_fields", lambda: [*overrides, "seed"])
    monkeypatch.setattr(resolvers, "model_choice", lambda: "nau")
    assert resolvers.run_name(3, 1) == (
        "nau_data.label=a-b_optimizer.lr=0.00443_data.operations=[add]_seed3"
    )
    assert resolvers.run_name(3, 25).endswith("_seeds3-27")
