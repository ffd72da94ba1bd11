"""Hydra entry point: ``nalu-evaluate ckpt_path=... [data.field=...]`` tests a checkpoint on its
run's problem (or on wider ranges of it) and writes ``evaluation.json``."""

import json
import pickle
import shutil
import sys
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
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
from nalu.record import OWN_BEST, write_json_atomic
from nalu.validation import check_group_choices

EVALUATION_FILE = "evaluation.json"
# The config groups evaluate composes; a model, optimizer or experiment is the checkpoint's own.
EVALUATE_GROUPS = ("data", "trainer", "paths", "hydra")


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
    ckpt_path: str | Path,
    module: ArithmeticModule,
    data: ArithmeticDataModule,
    overrides: list[str] | None = None,
) -> None:
    """Refuse data whose problem differs from the one the checkpoint learned, naming the
    command line's ``overrides`` of the data (``data`` where there are none).

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
        culprits = " ".join(overrides or ["data"])
        raise ConfigError(
            f"{culprits}: these sets pose another problem than the checkpoint learned ({where}); "
            "keep the run's seed, data.problem_seed, in_features, out_features and operations"
        )


def run_dir_of(ckpt_path: str | Path) -> Path:
    """The run folder of a checkpoint that ``nalu.train`` wrote: ``<run>/checkpoints/x.ckpt``."""
    return Path(ckpt_path).resolve().parent.parent


def evaluation_data(cfg: DictConfig) -> tuple[DictConfig, list[str]]:
    """The data config of the evaluation: the checkpoint's run's own (from its
    ``.hydra/config.yaml``) with the command line's ``seed`` and ``data.*`` values on top, so
    that only what should change is typed; ``cfg.data`` for a checkpoint outside a run folder.
    Also returns the command line's overrides that change the run's data, as typed.
    """
    task = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    parsed = OverridesParser.create().parse_overrides(task)
    data_overrides = [
        (text, o) for text, o in zip(task, parsed, strict=True)
        if o.key_or_group == "seed" or o.key_or_group.startswith("data")
    ]  # fmt: skip
    saved = run_dir_of(cfg.ckpt_path) / ".hydra" / "config.yaml"
    if not saved.is_file():
        return cfg.data, []  # what the run had is not known
    run_cfg = OmegaConf.load(saved)
    changed = []
    for text, override in data_overrides:
        field = override.key_or_group
        if field == "data":
            raise ConfigError(
                f"{text}: the checkpoint's run fixes the problem ({saved}); "
                "change its sets with data.<field>=..."
            )
        if OmegaConf.select(run_cfg, field, default=None) != override.value():
            changed.append(text)
        OmegaConf.update(run_cfg, field, override.value(), force_add=override.is_add())
    return run_cfg.data, changed


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint's network on the evaluation sets of its run's problem (see
    ``evaluation_data``); return the metrics."""
    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise ConfigError("ckpt_path: missing; pass ckpt_path=<run folder>/checkpoints/last.ckpt")
    module = load_checkpoint(cfg.ckpt_path)
    if module.population > 1:
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path!r}: holds a population of {module.population}; "
            "evaluate takes a single run's checkpoint (population=1)"
        )
    data_cfg, typed = evaluation_data(cfg)
    datamodule: ArithmeticDataModule = checked("data", lambda: instantiate(data_cfg))
    check_same_problem(cfg.ckpt_path, module, datamodule, typed)
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
    output_dir = Path(cfg.paths.output_dir)
    try:
        metrics = evaluate(cfg)
    except ConfigError as error:
        # The folder Hydra made for this evaluation holds nothing worth keeping.
        shutil.rmtree(output_dir, ignore_errors=True)
        fail(error, str(error), EXIT_CONFIG_ERROR)
    result = output_dir / EVALUATION_FILE
    write_json_atomic(result, {"ckpt_path": str(cfg.ckpt_path), "metrics": metrics})
    print(f"\nMetrics of {cfg.ckpt_path} ({result}):\n{format_metrics(metrics)}")


def check_arguments(arguments: list[str]) -> None:
    """Before Hydra makes a folder: the checkpoint is named and exists, and every group chosen
    is one that evaluate composes (the model and the rest are the checkpoint's)."""
    overrides = [arg for arg in arguments if not arg.startswith("-")]
    if any(arg.startswith("-") and arg not in ("-m", "--multirun") for arg in arguments):
        return  # --help, --cfg, -sc ...: Hydra's own
    for override in overrides:
        group = override.lstrip("+~").partition("=")[0]
        if (CONFIG_DIR / group).is_dir() and group not in EVALUATE_GROUPS:
            raise ConfigError(
                f"{override}: evaluate takes the model and problem from the checkpoint's run; "
                f"it composes only {', '.join(EVALUATE_GROUPS)} (data.<field>=... changes the sets)"
            )
    check_group_choices(overrides, CONFIG_DIR)
    paths = [arg.partition("=")[2] for arg in overrides if arg.startswith("ckpt_path=")]
    if not paths:
        raise ConfigError("ckpt_path: missing; pass ckpt_path=<run folder>/checkpoints/last.ckpt")
    if not Path(paths[-1]).is_file():
        raise ConfigError(f"ckpt_path={paths[-1]!r}: no such file")


def main() -> None:
    try:
        check_arguments(sys.argv[1:])
    except ConfigError as error:
        fail(error, str(error), EXIT_CONFIG_ERROR)
    hydra_main()


if __name__ == "__main__":
    main()
