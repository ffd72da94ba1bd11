"""Hydra entry point: ``python -m nalu.train [overrides]`` trains, tests and records one run."""

import logging
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import hydra
import lightning as L
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.utilities import rank_zero_only
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
    """Reject ``group=option`` overrides whose option does not exist, listing the options.

    Hydra would also refuse them, but with a multi-line message; a sweep's comma-separated
    options are checked one by one. The options are Hydra's own: files under ``conf/`` and the
    configs that installed plugins register (``hydra/launcher=joblib``, ...).
    """
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        config_loader = GlobalHydra.instance().config_loader()
        for override in overrides:
            key, sep, value = override.lstrip("+~").partition("=")
            if not sep or "(" in value:
                continue
            available = config_loader.get_group_options(key)  # empty for a field
            for option in value.split(",") if available else []:
                if option not in available and option != "null":
                    raise ConfigError(f"{key}={option}: unknown {key}; choose one of {available}")


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, test on the final weights, record the results; return the final metrics."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    datamodule = checked("data", lambda: instantiate(cfg.data))
    module = checked(
        "model",
        lambda: ArithmeticModule(
            network=OmegaConf.to_container(cfg.model, resolve=True),
            optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
            output_operations=datamodule.problem.output_operations,
        ),
    )
    checked("optimizer", module.configure_optimizers)
    choices = HydraConfig.get().runtime.choices if HydraConfig.initialized() else {}
    recorder = RunRecorder(
        output_dir=output_dir,
        problem=datamodule.problem,
        labels={"model": choices.get("model", "custom"), "seed": cfg.seed, **_run_labels(cfg)},
        hyperparameters=OmegaConf.to_container(cfg, resolve=True),
    )
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    callbacks += progress_bar(cfg.trainer)
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values()]
    trainer: L.Trainer = checked(
        "trainer",
        lambda: instantiate(cfg.trainer, callbacks=[*callbacks, recorder], logger=loggers),
    )
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    trainer.test(module, datamodule=datamodule, verbose=False)
    return recorder.final_metrics


def progress_bar(trainer_cfg: DictConfig) -> list[L.Callback]:
    """Rich's progress bar where ``enable_progress_bar`` is on (by default: output is a terminal).

    Lightning refuses a progress bar callback on a trainer without one, hence a list to add.
    """
    return [RichProgressBar()] if trainer_cfg.get("enable_progress_bar", True) else []


def _run_labels(cfg: DictConfig) -> dict[str, Any]:
    return {"operations": list(cfg.data.operations), "problem_seed": cfg.data.problem_seed}


def format_metrics(metrics: dict[str, float]) -> str:
    width = max(map(len, metrics), default=0)
    return "\n".join(f"  {name:<{width}}  {value:.6g}" for name, value in metrics.items())


def ignore_known_warnings() -> None:
    """Silence Lightning's advice that does not apply to these runs."""
    # In-memory batches need no loader workers; the LeafSpec notice is Lightning's own internals.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\).*")
    # Under DDP the evaluation metrics are torchmetrics, already summed over processes.
    warnings.filterwarnings("ignore", ".*when logging on epoch level in distributed setting.*")


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> float:
    ignore_known_warnings()
    try:
        metrics = train(cfg)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    _print_summary(Path(cfg.paths.output_dir), metrics)
    return metrics.get("interp/mse", float("nan"))


@rank_zero_only
def _print_summary(output_dir: Path, metrics: dict[str, float]) -> None:
    """Once per run, also when DDP runs this entry point in several processes."""
    print(f"\nFinal metrics ({output_dir / 'metrics.json'}):\n{format_metrics(metrics)}")
    print(f"TensorBoard run: {output_dir / 'tensorboard'}  (make tensorboard)")


def main() -> None:
    try:
        check_group_choices(sys.argv[1:])
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    hydra_main()


if __name__ == "__main__":
    main()
