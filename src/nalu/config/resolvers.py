"""The resolvers that the configs use (``${len:...}``, ``${run_name:...}``, ...), registered on
import by every entry point, and what a job's folder name and HParams are read from."""

import os
import sys
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf

# The fields a multirun's command line sweeps, for its workers (joblib, submitit) to read.
SWEPT_FIELDS_VARIABLE = "NALU_SWEPT_FIELDS"
# Config groups that say where and how a run is written, not what it trains.
NOT_HYPERPARAMETERS = ("hydra", "callbacks", "logger", "paths")


def is_hyperparameter(field: str) -> bool:
    """Whether a command line's ``field`` sets what a run trains, not where and how it is
    written or what it resumes from (``ckpt_path``)."""
    return not field.startswith(NOT_HYPERPARAMETERS) and field != "ckpt_path"


def job_overrides() -> dict[str, str]:
    """This job's command-line overrides that set a hyperparameter, ``{field: value}``; a
    deletion (``~field``) sets no value and is left out."""
    if not HydraConfig.initialized():
        return {}
    overrides = {}
    for override in HydraConfig.get().overrides.task:
        if override.startswith("~"):
            continue
        key, _, value = override.lstrip("+").partition("=")
        if is_hyperparameter(key):
            overrides[key] = value
    return overrides


def swept_fields() -> list[str]:
    """The fields a multirun sweeps: those of its command line and of its sweeper's params."""
    fields = [f for f in os.environ.get(SWEPT_FIELDS_VARIABLE, "").split(",") if f]
    if HydraConfig.initialized():
        params = HydraConfig.get().sweeper.get("params") or {}
        fields += [str(field) for field in params if field not in fields]
    return fields


def _short(value: str) -> str:
    """A value as a folder name shows it: a sampled float (Optuna's) to 3 significant digits."""
    try:
        number = float(value)
    except ValueError:
        return value
    return value if number.is_integer() or len(value) <= 8 else f"{number:.3g}"


def run_name(seed: int, population: int) -> str:
    """What tells a job apart, as its folder's (and so its TensorBoard run's) name: the model,
    the values of the swept fields, the seed (a population's seed range)."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    overrides = job_overrides()
    swept = [
        f"{field}={_short(overrides[field])}"
        for field in swept_fields()
        if field in overrides and field not in ("model", "seed")
    ]
    seeds = f"seed{seed}" if population == 1 else f"seeds{seed}-{seed + population - 1}"
    name = "_".join([choices.get("model") or "custom", *swept, seeds])
    return "".join(c if c.isprintable() and c not in "/\\ " else "-" for c in name)


def run_dir_of(ckpt_path: str | Path) -> Path:
    """The run folder of a checkpoint that ``nalu-train`` wrote: ``<run>/checkpoints/x.ckpt``."""
    return Path(ckpt_path).resolve().parent.parent


def evaluation_dir(ckpt_path: str) -> str:
    """Where an evaluation of ``ckpt_path`` is written: inside the checkpoint's run folder
    (``<run>/checkpoints/x.ckpt``), or beside a checkpoint kept elsewhere."""
    run_dir = run_dir_of(ckpt_path)
    return str(
        run_dir if (run_dir / "problem.json").is_file() else Path(ckpt_path).resolve().parent
    )


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
