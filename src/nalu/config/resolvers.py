"""The resolvers that the configs use (``${len:...}``, ``${run_name:...}``, ...), registered on
import by every entry point, and what a job's folder name and HParams are read from."""

import os
import sys
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

from nalu.config.overrides import hyperparameter_values, short_value
from nalu.config.rules import member_seeds
from nalu.results.record import PROBLEM_FILE

# The fields a multirun's command line sweeps, for its workers (joblib, submitit) to read.
SWEPT_FIELDS_VARIABLE = "NALU_SWEPT_FIELDS"


def hydra_choices() -> dict[str, str | None]:
    """The job's config-group choices (``model: nalu``, ...); none outside a Hydra job."""
    return dict(HydraConfig.get().runtime.choices) if HydraConfig.initialized() else {}


def model_choice() -> str:
    """The job's model config, ``custom`` for a model given field by field."""
    return hydra_choices().get("model") or "custom"


def job_overrides() -> dict[str, Any]:
    """This job's command-line overrides that set a hyperparameter, ``{field: value}``
    (``hyperparameter_values``)."""
    if not HydraConfig.initialized():
        return {}
    return hyperparameter_values(HydraConfig.get().overrides.task)


def swept_fields() -> list[str]:
    """The fields a multirun sweeps: those of its command line and of its sweeper's params."""
    fields = [f for f in os.environ.get(SWEPT_FIELDS_VARIABLE, "").split(",") if f]
    if HydraConfig.initialized():
        params = HydraConfig.get().sweeper.get("params") or {}
        fields += [str(field) for field in params if field not in fields]
    return fields


def run_name(seed: int, population: int) -> str:
    """What tells a job apart, as its folder's (and so its TensorBoard run's) name: the model,
    the values of the swept fields, the seed (a population's seed range)."""
    overrides = job_overrides()
    swept = [
        f"{field}={short_value(overrides[field])}"
        for field in swept_fields()
        if field in overrides and field not in ("model", "seed")
    ]
    members = member_seeds(seed, population)
    seeds = f"seed{seed}" if population == 1 else f"seeds{members[0]}-{members[-1]}"
    name = "_".join([model_choice(), *swept, seeds])
    return "".join(c if c.isprintable() and c not in "/\\ " else "-" for c in name)


def run_dir_of(ckpt_path: str | Path) -> Path:
    """The run folder of a checkpoint that ``nalu-train`` wrote: ``<run>/checkpoints/x.ckpt``."""
    return Path(ckpt_path).resolve().parent.parent


def evaluation_dir(ckpt_path: str) -> str:
    """Where an evaluation of ``ckpt_path`` is written: inside the checkpoint's run folder
    (``<run>/checkpoints/x.ckpt``), or beside a checkpoint kept elsewhere."""
    run_dir = run_dir_of(ckpt_path)
    return str(run_dir if (run_dir / PROBLEM_FILE).is_file() else Path(ckpt_path).resolve().parent)


# Progress bars only where someone watches them.
OmegaConf.register_new_resolver("stdout_is_terminal", sys.stdout.isatty, replace=True)
# `${len:${.operations}}`: a problem with one output per operation sizes the network from it.
OmegaConf.register_new_resolver("len", len, replace=True)
# This process's id, unique among the runs going on at once. Cached, as Hydra's `now` is: a
# sweep's jobs in worker processes (joblib, submitit) get the config's cache, so they resolve
# the sweep's folder with the process id of the command that started the sweep, not their own.
OmegaConf.register_new_resolver("pid", os.getpid, use_cache=True, replace=True)
# `${run_name:${seed},${population}}`: the run and job folders' names.
OmegaConf.register_new_resolver("run_name", run_name, replace=True)
# `${ceil_div:${data.in_features},50}`, `${mul:30,${rounds}}`: a recipe sized by its problem.
OmegaConf.register_new_resolver("ceil_div", lambda a, b: -(-int(a) // int(b)), replace=True)
OmegaConf.register_new_resolver("mul", lambda a, b: a * b, replace=True)
# `${evaluation_dir:${ckpt_path}}`: an evaluation's folder.
OmegaConf.register_new_resolver("evaluation_dir", evaluation_dir, replace=True)
# The sub-folder of a population's own TensorBoard run; a single run's events are its folder's.
OmegaConf.register_new_resolver(
    "population_run", lambda population: "population" if int(population) > 1 else None, replace=True
)
