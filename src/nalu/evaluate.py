"""Hydra entry point: ``python -m nalu.evaluate ckpt_path=... [data=...]`` tests a checkpoint."""

import json
import pickle
import sys
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from nalu.cli import (
    CONFIG_DIR,
    EXIT_CONFIG_ERROR,
    checked,
    fail,
    format_metrics,
    ignore_known_warnings,
    progress_bar,
)
from nalu.data import EVALUATION_SPLITS, ArithmeticDataModule
from nalu.errors import ConfigError
from nalu.module import ArithmeticModule
from nalu.record import OWN_BEST
from nalu.validation import check_group_choices


def load_checkpoint(ckpt_path: str | Path) -> ArithmeticModule:
    """The module saved by ``nalu.train``; a missing or foreign file is a ``ConfigError``."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"ckpt_path={str(path)!r}: no such file")
    try:
        return ArithmeticModule.load_from_checkpoint(path, map_location="cpu")
    except (
        pickle.UnpicklingError,
        RuntimeError,
        KeyError,
        TypeError,
        ValueError,
        EOFError,
    ) as error:
        raise ConfigError(
            f"ckpt_path={str(path)!r}: not a checkpoint written by nalu.train"
        ) from error


def check_same_problem(
    ckpt_path: str | Path, module: ArithmeticModule, data: ArithmeticDataModule
) -> None:
    """Refuse data whose problem differs from the one the checkpoint learned.

    A run folder's ``problem.json`` (beside ``checkpoints/``) names every output's formula; a
    checkpoint elsewhere is checked on the operation of each output only.
    """
    problem_json = Path(ckpt_path).resolve().parent.parent / "problem.json"
    if problem_json.is_file():
        trained = [out["formula"] for out in json.loads(problem_json.read_text())["outputs"]]
        same = trained == [output["formula"] for output in data.problem.to_dict()["outputs"]]
    else:
        trained = list(module.hparams.output_operations[0])
        same = trained == data.problem.output_operations
    if not same:
        where = problem_json if problem_json.is_file() else "the checkpoint"
        raise ConfigError(
            f"data: the checkpoint learned another problem ({where}); pass the training run's "
            "seed or data.problem_seed, in_features, out_features and operations"
        )


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint's network on ``cfg.data``'s evaluation sets; return the metrics."""
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise ConfigError("ckpt_path: missing; pass ckpt_path=<run folder>/checkpoints/last.ckpt")
    module = load_checkpoint(cfg.ckpt_path)
    if module.population > 1:
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path!r}: holds a population of {module.population}; "
            "evaluate takes a single run's checkpoint (population=1)"
        )
    datamodule: ArithmeticDataModule = checked("data", lambda: instantiate(cfg.data))
    check_same_problem(cfg.ckpt_path, module, datamodule)
    # Success is judged against the near-perfect model on *these* sets, and the MSE at
    # initialisation was measured on the training run's sets: no normalised error here.
    extrapolation = module.metrics["extrap"]
    extrapolation.success_threshold.copy_(torch.as_tensor([datamodule.success_threshold()]))
    for metric in module.metrics.values():
        metric.initial_mse.fill_(float("nan"))
    trainer: L.Trainer = checked(
        "trainer", lambda: instantiate(cfg.trainer, callbacks=progress_bar(cfg.trainer))
    )
    trainer.test(module, datamodule=datamodule, verbose=False)
    # The metrics of these sets only: not the training run's loss, solved-at steps or its
    # outputs judged at their own best epochs (measured on the training run's sets).
    return {
        name: float(values[0])
        for name, values in sorted(module.final_metrics.items())
        if name.startswith(EVALUATION_SPLITS) and OWN_BEST not in name and not values[0].isnan()
    }


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
def hydra_main(cfg: DictConfig) -> None:
    ignore_known_warnings()
    try:
        metrics = evaluate(cfg)
    except ConfigError as error:
        fail(error, str(error), EXIT_CONFIG_ERROR)
    print(f"\nMetrics of {cfg.ckpt_path}:\n{format_metrics(metrics)}")


def main() -> None:
    try:
        check_group_choices(sys.argv[1:], CONFIG_DIR)
    except ConfigError as error:
        fail(error, str(error), EXIT_CONFIG_ERROR)
    hydra_main()


if __name__ == "__main__":
    main()
