"""Hydra entry point: ``python -m nalu.train [overrides]`` trains, tests and records one run."""

import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import hydra
import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from nalu.errors import ConfigError, InvalidArgument
from nalu.module import ArithmeticModule
from nalu.results import RunRecorder

log = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).resolve().parents[2] / "conf"
T = TypeVar("T")


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


def check_group_choices(overrides: list[str], config_dir: Path = CONFIG_DIR) -> None:
    """Reject ``group=option`` overrides whose option has no file, listing the options.

    Hydra would also refuse them, but with a multi-line message; a sweep's comma-separated
    options are checked one by one.
    """
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        group_dir = config_dir / key
        if not sep or not group_dir.is_dir() or "(" in value:
            continue
        available = sorted(path.stem for path in group_dir.glob("*.yaml"))
        for option in value.split(","):
            if option not in available and option != "null":
                raise ConfigError(f"{key}={option}: unknown {key}; choose one of {available}")


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, test at the epoch of the best interpolation MSE, record the results; return the
    final metrics."""
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
        ),
    )
    checked("optimizer", module.configure_optimizers)
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    recorder = RunRecorder(
        output_dir=output_dir,
        problem=datamodule.problem,
        labels={
            "model": choices.get("model", "custom"),
            "seed": cfg.seed,
            "problem": datamodule.problem.to_dict()["problem"],
            **_run_labels(cfg),
        },
        hyperparameters=OmegaConf.to_container(cfg, resolve=True),
    )
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values()]
    trainer: L.Trainer = checked(
        "trainer",
        lambda: instantiate(cfg.trainer, callbacks=[*callbacks, recorder], logger=loggers),
    )
    trainer.fit(module, datamodule=datamodule)
    # Madsen & Johansen 2020, sec. 4.1: a run is judged at its best interpolation epoch.
    checkpoint = trainer.checkpoint_callback
    best = "best" if checkpoint is not None and checkpoint.best_model_path else None
    trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)
    return recorder.final_metrics


def _run_labels(cfg: DictConfig) -> dict[str, Any]:
    return {"operations": list(cfg.data.operations), "problem_seed": cfg.data.problem_seed}


def format_metrics(metrics: dict[str, float]) -> str:
    width = max(map(len, metrics), default=0)
    return "\n".join(f"  {name:<{width}}  {value:.6g}" for name, value in metrics.items())


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> float:
    # In-memory batches need no loader workers; the LeafSpec notice is Lightning's own internals.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\).*")
    try:
        metrics = train(cfg)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    output_dir = Path(cfg.paths.output_dir)
    print(f"\nFinal metrics ({output_dir / 'metrics.json'}):\n{format_metrics(metrics)}")
    print(f"TensorBoard run: {output_dir / 'tensorboard'}  (make tensorboard)")
    return metrics.get("interp/mse", float("nan"))


def main() -> None:
    try:
        check_group_choices(sys.argv[1:])
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    hydra_main()


if __name__ == "__main__":
    main()
