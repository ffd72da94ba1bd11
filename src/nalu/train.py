"""Hydra entry point: ``python -m nalu.train [overrides]`` trains, tests and records one run."""

import copy
import logging
import math
import os
import pickle
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from nalu.errors import ConfigError, Diverged, InvalidArgument
from nalu.validation import check_command_line, validate_config

if TYPE_CHECKING:
    from lightning.pytorch.callbacks import Callback
    from torch import nn

    from nalu.data.population import PopulationDataModule
    from nalu.data.problem import ArithmeticProblem
    from nalu.population import PopulationModule

log = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"
T = TypeVar("T")
# Exit codes: a bad config, and a run stopped by a non-finite loss or parameter.
EXIT_CONFIG_ERROR = 2
EXIT_DIVERGED = 3
# NALU_VERBOSE=1 shows the traceback behind a one-line error.
VERBOSE = os.environ.get("NALU_VERBOSE", "") not in ("", "0")


class _DropAdvertisement(logging.Filter):
    """Lightning advertises a cloud logger at every Trainer start; our runs log locally."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropAdvertisement())

# `${stdout_is_terminal:}` in a config: progress bars only where someone watches them.
OmegaConf.register_new_resolver("stdout_is_terminal", sys.stdout.isatty, replace=True)
# `${len:${.operations}}`: a problem with one output per operation sizes the network from it.
OmegaConf.register_new_resolver("len", len, replace=True)


def checked(section: str, build: Callable[[], T]) -> T:
    """Run ``build`` and turn a bad argument into a one-line ``ConfigError`` naming the field."""
    try:
        return build()
    except (InstantiationException, InvalidArgument, ValueError, TypeError) as error:
        cause = error.__cause__ if isinstance(error, InstantiationException) else error
        if isinstance(cause, InvalidArgument):
            raise ConfigError(f"{section}.{cause}") from error
        raise ConfigError(f"{section}: {cause or error}") from error


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, test at the epoch of the best interpolation MSE, record the results; return the
    final metrics.

    Raises ``ConfigError`` for a bad config and ``Diverged`` when training met a non-finite loss
    or parameter (its metrics.json then says so).
    """
    validate_config(cfg)
    if cfg.get("population") is not None:
        return train_population(cfg)
    # Torch and Lightning load only once the config is known to be good: seconds saved per typo.
    import lightning as L

    from nalu.divergence import DivergenceMonitor
    from nalu.module import ArithmeticModule
    from nalu.results import RunRecorder

    L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    datamodule = checked("data", lambda: instantiate(cfg.data))
    module = checked(
        "model",
        lambda: ArithmeticModule(
            network=OmegaConf.to_container(cfg.model, resolve=True),
            optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
            output_operations=datamodule.problem.output_operations,
            success_threshold=datamodule.success_threshold(),
            lr_schedule=_container(cfg.get("lr_schedule")),
        ),
    )
    check_optimization(cfg, module.network)
    if cfg.get("ckpt_path") is not None:
        check_checkpoint(cfg.ckpt_path, module)
    recorder = RunRecorder(
        output_dir=output_dir,
        problem=datamodule.problem,
        labels=run_labels(cfg, datamodule.problem),
        hyperparameters=OmegaConf.to_container(cfg, resolve=True),
    )
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    callbacks += progress_bar(cfg.trainer)
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values()]
    monitor = DivergenceMonitor()
    trainer: L.Trainer = checked(
        "trainer",
        lambda: instantiate(cfg.trainer, callbacks=[*callbacks, monitor, recorder], logger=loggers),
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    # Madsen & Johansen 2020, sec. 4.1: a run is judged at its best interpolation epoch.
    checkpoint = trainer.checkpoint_callback
    best = "best" if checkpoint is not None and checkpoint.best_model_path else None
    trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)
    return recorder.final_metrics


def _container(node: DictConfig | None) -> dict[str, Any] | None:
    return None if node is None else OmegaConf.to_container(node, resolve=True)


def check_optimization(cfg: DictConfig, network: "nn.Module") -> None:
    """Build the optimizer and the learning-rate schedule once, so a bad field fails before
    training, naming its section (the schedule's length is known only once fitting starts)."""
    optimizer = checked("optimizer", lambda: instantiate(cfg.optimizer)(network.parameters()))
    if cfg.get("lr_schedule") is not None:
        checked("lr_schedule", lambda: instantiate(cfg.lr_schedule)(optimizer, total_steps=1))


def member_config(cfg: DictConfig, seed: int) -> DictConfig:
    """The config of the single run with ``seed``: every ``${seed}`` (the problem, the batch
    order) now resolves to it."""
    member = copy.deepcopy(cfg)
    member.seed = seed
    return member


def build_population(
    cfg: DictConfig,
) -> tuple[list[DictConfig], "PopulationDataModule", "PopulationModule"]:
    """The members' configs, their stacked data and the population module of ``cfg``."""
    from nalu.data.population import PopulationDataModule
    from nalu.population import PopulationModule

    members = [member_config(cfg, cfg.seed + k) for k in range(cfg.population)]
    datamodule = checked(
        "data", lambda: PopulationDataModule([instantiate(member.data) for member in members])
    )
    module = checked(
        "model",
        lambda: PopulationModule(
            network=OmegaConf.to_container(cfg.model, resolve=True),
            optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
            seeds=[member.seed for member in members],
            success_threshold=datamodule.success_threshold(),
            lr_schedule=_container(cfg.get("lr_schedule")),
        ),
    )
    check_optimization(cfg, module.network)
    return members, datamodule, module


def train_population(cfg: DictConfig) -> dict[str, float]:
    """Train ``population`` members with seeds ``seed, seed + 1, ...`` in one process, each
    recorded as a run of its own under ``members/``, then report them; return the medians."""
    from nalu.report import HEADLINE_METRICS, finite_median, write_report
    from nalu.results import PopulationRecorder

    if cfg.get("ckpt_path") is not None:
        raise ConfigError("ckpt_path: a population run does not resume; train it again")
    if cfg.trainer.get("devices", 1) not in (1, "1", "auto"):
        raise ConfigError(
            f"trainer.devices={cfg.trainer.devices}: a population trains in one process; "
            "use trainer.devices=1 (or a sweep for several machines)"
        )
    output_dir = Path(cfg.paths.output_dir)
    members, datamodule, module = build_population(cfg)
    labels = [
        {**run_labels(member, problem), "population": cfg.population}
        for member, problem in zip(members, datamodule.problems, strict=True)
    ]
    recorder = PopulationRecorder(
        output_dir,
        datamodule.problems,
        labels,
        [OmegaConf.to_container(member, resolve=True) for member in members],
    )
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values()]
    # One training step per epoch (see PopulationModule), so logging every step is once per
    # epoch; the members' checkpoints are their best parameters, kept in memory.
    trainer = checked(
        "trainer",
        lambda: instantiate(
            cfg.trainer,
            callbacks=[*progress_bar(cfg.trainer), recorder],
            logger=loggers,
            log_every_n_steps=1,
            enable_checkpointing=False,
            num_sanity_val_steps=0,
        ),
    )
    trainer.fit(module, datamodule=datamodule)
    module.use_best_parameters()
    trainer.test(module, datamodule=datamodule, verbose=False)
    write_report([output_dir])
    return {
        f"median {name}": finite_median([m.get(name, math.nan) for m in recorder.member_metrics])
        for name in HEADLINE_METRICS
    }


def progress_bar(trainer_cfg: DictConfig) -> list["Callback"]:
    """Rich's progress bar where ``enable_progress_bar`` is on (by default: output is a terminal).

    Lightning refuses a progress bar callback on a trainer without one, hence a list to add.
    """
    from lightning.pytorch.callbacks import RichProgressBar

    return [RichProgressBar()] if trainer_cfg.get("enable_progress_bar", True) else []


def check_checkpoint(path: str, module: "nn.Module") -> None:
    """Refuse, in one line, a checkpoint that is unreadable or holds another network's weights."""
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        saved = {name: tuple(value.shape) for name, value in checkpoint["state_dict"].items()}
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError, KeyError, TypeError) as error:
        raise ConfigError(
            f"ckpt_path={path!r}: not a readable Lightning checkpoint ({type(error).__name__})"
        ) from error
    expected = {name: tuple(value.shape) for name, value in module.state_dict().items()}
    if saved != expected:
        raise ConfigError(
            f"ckpt_path={path!r}: its weights are not this model's; resume with the config"
            " that wrote it (same model and data sizes)"
        )


def run_labels(cfg: DictConfig, problem: "ArithmeticProblem") -> dict[str, Any]:
    """What tells a run apart in reports: the model choice, the seed and the problem."""
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    return {
        "model": choices.get("model", "custom"),
        "seed": cfg.seed,
        "problem": problem.to_dict()["problem"],
        "operations": list(cfg.data.operations),
        "problem_seed": cfg.data.problem_seed,
    }


def format_metrics(metrics: dict[str, float]) -> str:
    width = max(map(len, metrics), default=0)
    return "\n".join(f"  {name:<{width}}  {value:.6g}" for name, value in metrics.items())


def _fail(error: Exception, message: str, exit_code: int) -> NoReturn:
    """Print ``message`` as one line and exit, or re-raise ``error`` when NALU_VERBOSE is set."""
    if VERBOSE:
        raise error
    print(f"error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(exit_code)


def ignore_known_warnings() -> None:
    """Silence Lightning's advice that does not apply to these runs."""
    # In-memory batches need no loader workers; the LeafSpec notice is Lightning's own internals.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\).*")
    # Under DDP the evaluation metrics are torchmetrics, already summed over processes.
    warnings.filterwarnings("ignore", ".*when logging on epoch level in distributed setting.*")


def print_summary(output_dir: Path, metrics: dict[str, float]) -> None:
    """The final metrics and where the run is, once per run (also when DDP runs several ranks)."""
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:
        return
    if (output_dir / "members").is_dir():
        print(f"\nPopulation, over members ({output_dir / 'members'}):\n{format_metrics(metrics)}")
        print(f"Success rates: {output_dir / 'report.md'}")
    else:
        print(f"\nFinal metrics ({output_dir / 'metrics.json'}):\n{format_metrics(metrics)}")
    print(f"TensorBoard run: {output_dir / 'tensorboard'}  (make tensorboard)")


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> float:
    ignore_known_warnings()
    output_dir = Path(cfg.paths.output_dir)
    try:
        metrics = train(cfg)
    except ConfigError as error:
        _fail(error, str(error), EXIT_CONFIG_ERROR)
    except Diverged as diverged:
        message = f"{output_dir}: {diverged}; its metrics.json names the last good checkpoint"
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            # One diverged job must not end the sweep: the other jobs go on.
            log.warning(message)
            return float("nan")
        _fail(diverged, message, EXIT_DIVERGED)
    print_summary(output_dir, metrics)
    return metrics.get("interp/mse", metrics.get("median interp/mse", float("nan")))


def main() -> None:
    try:
        check_command_line(sys.argv[1:], CONFIG_DIR)
    except ConfigError as error:
        _fail(error, str(error), EXIT_CONFIG_ERROR)
    hydra_main()


if __name__ == "__main__":
    main()
