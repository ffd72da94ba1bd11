"""Hydra entry point: ``nalu-evaluate ckpt_path=... [data.field=...]`` tests a checkpoint on its
run's problem (or on wider ranges of it) and writes ``evaluation.json``."""

import contextlib
import json
import math
import pickle
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from nalu.cli.common import (
    CONFIG_DIR,
    EXIT_CONFIG_ERROR,
    EXIT_OUTPUT_ERROR,
    check_output_folder,
    checked,
    fail,
    format_metrics,
    keep_freed_memory,
    log_lightning_once,
    output_error_message,
    progress_callbacks,
    quote_paths,
    saved_config_path,
    saved_problem_difference,
    saved_run_config,
)
from nalu.config.errors import ConfigError, shorten
from nalu.config.overrides import is_multirun, parsed_overrides
from nalu.config.resolvers import evaluation_dir, run_dir_of
from nalu.config.rules import PROBLEM_FIELDS
from nalu.config.validation import (
    check_added_fields,
    check_group_choices,
    checkpoint_file,
    compose_checked,
    validate_config,
)
from nalu.results.record import (
    CHECKPOINTS_DIR,
    LAST_CHECKPOINT,
    OWN_BEST,
    PROBLEM_FILE,
    write_json_atomic,
)

if TYPE_CHECKING:
    from torch import nn

    from nalu.data import ArithmeticDataModule
    from nalu.training.module import ArithmeticModule

EVALUATION_FILE = "evaluation.json"
# The config groups evaluate composes; a model, optimizer or experiment is the checkpoint's own.
EVALUATE_GROUPS = ("data", "trainer", "paths", "hydra")
MISSING_CHECKPOINT = (
    f"ckpt_path: missing; pass ckpt_path=<run folder>/{CHECKPOINTS_DIR}/{LAST_CHECKPOINT}"
)


def load_checkpoint(ckpt_path: str | Path) -> "ArithmeticModule":
    """The module saved by ``nalu.cli.train``; a missing or foreign file is a ``ConfigError``."""
    # Torch and Lightning load only once the command line is known to be good.
    from nalu.training.module import ArithmeticModule

    path = Path(ckpt_path)
    checkpoint_file("ckpt_path", path)
    try:
        return ArithmeticModule.load_from_checkpoint(path, map_location="cpu")
    except InstantiationException as error:  # a network class that this nalu does not have
        raise ConfigError(
            f"ckpt_path={str(path)!r}: its network cannot be built here "
            f"({str(error).split(',')[0]}); evaluate it with the nalu version that wrote it"
        ) from error
    except (
        pickle.UnpicklingError,
        RuntimeError,
        KeyError,
        TypeError,
        ValueError,
        EOFError,
    ) as error:
        raise ConfigError(
            f"ckpt_path={str(path)!r}: not a checkpoint written by nalu-train"
        ) from error


def check_same_problem(
    ckpt_path: str | Path,
    module: "ArithmeticModule",
    data: "ArithmeticDataModule",
    overrides: list[str] | None = None,
) -> None:
    """Refuse data whose problem differs from the one the checkpoint learned, naming the
    command line's ``overrides`` of the data (``data`` where there are none).

    A run folder's ``problem.json`` (beside ``checkpoints/``) names every output's formula; a
    checkpoint elsewhere is checked on the operation of each output only.
    """
    formulas = trained_formulas(ckpt_path)
    culprits = " ".join(overrides or ["data"])
    if formulas is not None:
        if formulas != [output["formula"] for output in data.problem.to_dict()["outputs"]]:
            raise another_problem(culprits, str(run_dir_of(ckpt_path) / PROBLEM_FILE))
        return
    trained = list(module.hparams.output_operations[0])
    if trained != data.problem.output_operations:
        # No run folder tells the fields apart: the outputs' operations at least show how.
        raise another_problem(
            culprits,
            f"the checkpoint, of seed {module.hparams.seeds[0]}, answers "
            f"{shorten(trained)}; these sets ask {shorten(data.problem.output_operations)}",
        )


def trained_formulas(ckpt_path: str | Path) -> list[str] | None:
    """Each output's formula as the checkpoint's run folder recorded it (``problem.json``
    beside ``checkpoints/``), or None for a checkpoint outside a run folder."""
    problem_json = run_dir_of(ckpt_path) / PROBLEM_FILE
    if not problem_json.is_file():
        return None
    try:
        outputs = json.loads(problem_json.read_text(encoding="utf-8"))["outputs"]
        return [output["formula"] for output in outputs]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ConfigError(
            f"{problem_json}: unreadable ({type(error).__name__}), so the checkpoint's "
            "problem cannot be checked; restore it from the run or move the checkpoint out"
        ) from error


# What a problem is, beyond the run's seed: every field of PROBLEM_FIELDS but the data's class.
PROBLEM_DATA_FIELDS = [field for field in PROBLEM_FIELDS if field != "_target_"]


def another_problem(culprits: str, detail: str) -> ConfigError:
    """The error for evaluation sets that pose another problem than the checkpoint learned:
    ``culprits``, the overrides (as typed) that made them; ``detail``, how they differ."""
    return ConfigError(
        f"{culprits}: these sets pose another problem than the checkpoint learned ({detail}); "
        f"keep the run's seed and these data fields: {', '.join(PROBLEM_DATA_FIELDS)}"
    )


def evaluation_data(
    ckpt_path: str | Path, overrides: list[str], default: DictConfig | None
) -> tuple[DictConfig | None, list[str]]:
    """The data config of the evaluation: the checkpoint's run's own (from its
    ``.hydra/config.yaml``) with the command line's ``seed`` and ``data.*`` ``overrides`` on
    top, so that only what should change is typed; ``default`` for a checkpoint outside a run
    folder. Also returns the overrides that change a field of the run's problem, as typed."""
    run_cfg = saved_run_config(ckpt_path)
    if run_cfg is None:
        return default, []  # what the run had is not known
    changed = []
    parsed = OverridesParser.create().parse_overrides(overrides)
    for text, override in zip(overrides, parsed, strict=True):
        field = override.key_or_group
        if field == "data":
            saved = saved_config_path(ckpt_path)
            raise ConfigError(
                f"{text}: the checkpoint's run fixes the problem ({saved}); "
                "change its sets with data.<field>=..."
            )
        if field != "seed" and not field.startswith("data."):
            continue
        problem_field = field == "seed" or field.removeprefix("data.") in PROBLEM_FIELDS
        if problem_field and OmegaConf.select(run_cfg, field, default=None) != override.value():
            changed.append(text)
        OmegaConf.update(run_cfg, field, override.value(), force_add=override.is_add())
    return run_cfg.data, changed


def check_same_problem_fields(
    ckpt_path: str | Path, data: DictConfig | None, changed: list[str]
) -> None:
    """Refuse, before torch loads, overrides (``changed``, which made ``data`` of the run's
    data: ``evaluation_data``) that change a field of the run's problem (its seed, sizes,
    operations); ``check_same_problem`` compares the formulas themselves."""
    if data is None or not changed:
        return
    difference = saved_problem_difference(ckpt_path, data)
    if difference:
        field, saved, here = difference
        raise another_problem(
            " ".join(changed), f"data.{field}={shorten(here)}, the run's {shorten(saved)}"
        )


def lift_log_magnitude_caps(network: "nn.Module", largest_target: float) -> str | None:
    """Raise the units' cap on log|z| (``max_log_magnitude``, which keeps training's products
    and losses finite) to log of the largest target + 1 where it is lower, so that exact
    weights compute these sets' products exactly; the line that says so, or None."""
    from nalu.units.contract import log_magnitude_capped_units

    units = log_magnitude_capped_units(network)
    if not units or largest_target <= 0:
        return None
    needed = math.log(largest_target) + 1.0
    lowest = min(unit.max_log_magnitude for unit in units)
    if needed <= lowest:
        return None
    for unit in units:
        unit.max_log_magnitude = max(unit.max_log_magnitude, needed)
    return (
        f"Targets reach |y| = {largest_target:.3g} beyond the units' cap e^{lowest:g} = "
        f"{math.exp(lowest):.3g} (max_log_magnitude): raised to {needed:.3g} for this evaluation."
    )


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Test the checkpoint's network on the evaluation sets of its run's problem (see
    ``evaluation_data``); return the metrics."""
    import lightning as L
    import torch

    from nalu.data import EVALUATION_SPLITS, ArithmeticDataModule

    if OmegaConf.is_missing(cfg, "ckpt_path"):
        raise ConfigError(MISSING_CHECKPOINT)
    module = load_checkpoint(cfg.ckpt_path)
    if module.population > 1:
        raise ConfigError(
            f"ckpt_path={cfg.ckpt_path!r}: holds {module.population} networks (a population: "
            "its seeds × its problem cells); evaluate takes a checkpoint of one network (one "
            "seed, one problem)"
        )
    task = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    data_cfg, typed = evaluation_data(cfg.ckpt_path, task, cfg.data)
    datamodule: ArithmeticDataModule = checked("data", lambda: instantiate(data_cfg))
    check_same_problem(cfg.ckpt_path, module, datamodule, typed)
    # Success is judged against the near-perfect model on *these* sets, and the MSE at
    # initialisation was measured on the training run's sets: no normalised error here.
    extrapolation = module.metrics["extrap"]
    extrapolation.success_threshold.copy_(torch.as_tensor([datamodule.success_threshold()]))
    for metric in module.metrics.values():
        metric.initial_mse.fill_(float("nan"))
    trainer: L.Trainer = checked(
        "trainer", lambda: instantiate(cfg.trainer, callbacks=progress_callbacks(cfg.trainer))
    )
    datamodule.trainer = trainer  # the sets are made on its device
    datamodule.setup("test")
    targets = [datamodule.datasets[split].targets for split in EVALUATION_SPLITS]
    lifted = lift_log_magnitude_caps(module.network, max(float(t.abs().max()) for t in targets))
    if lifted:
        print(lifted)
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
    log_lightning_once()
    output_dir = Path(cfg.paths.output_dir)
    try:
        metrics = evaluate(cfg)
    except ConfigError as error:
        discard_if_empty(output_dir)
        fail(error, str(error), EXIT_CONFIG_ERROR)
    except OSError as error:
        discard_if_empty(output_dir)
        fail(error, output_error_message(error), EXIT_OUTPUT_ERROR)
    result = output_dir / EVALUATION_FILE
    try:
        write_json_atomic(result, {"ckpt_path": str(cfg.ckpt_path), "metrics": metrics})
    except OSError as error:
        fail(error, output_error_message(error), EXIT_OUTPUT_ERROR)
    print(f"\nMetrics of {cfg.ckpt_path} ({result}):\n{format_metrics(metrics)}")


def discard_if_empty(output_dir: Path) -> None:
    """Remove the folder Hydra made for an evaluation that stopped, when it holds nothing but
    Hydra's own files (never a folder with results in it, such as a run's), and the
    ``evaluate/`` folder above it when that held nothing else."""
    if output_dir.is_dir() and {p.name for p in output_dir.iterdir()} <= {".hydra", "evaluate.log"}:
        shutil.rmtree(output_dir, ignore_errors=True)
        if output_dir.parent.name == "evaluate":
            with contextlib.suppress(OSError):  # not empty: earlier evaluations
                output_dir.parent.rmdir()


def check_arguments(arguments: list[str]) -> None:
    """Before Hydra makes a folder: the checkpoint is named and exists, every group chosen is
    one that evaluate composes (the model and the rest are the checkpoint's), every data field
    holds on the run's own data, and the evaluation's folder can be written."""
    if is_multirun(arguments):
        raise ConfigError("-m: evaluate tests one checkpoint; run it once per checkpoint")
    if any(arg.startswith("-") for arg in arguments):
        return  # --help, --cfg, -sc ...: Hydra's own
    overrides = list(arguments)
    for override in overrides:
        # A group chosen (model=nac) or a field of one (optimizer.lr=0.1).
        group = override.lstrip("+~").partition("=")[0].partition(".")[0]
        allowed = group in EVALUATE_GROUPS or group.startswith("hydra")
        if (CONFIG_DIR / group).is_dir() and not allowed:
            raise ConfigError(
                f"{override}: evaluate takes the model and problem from the checkpoint's run; "
                f"it composes only {', '.join(EVALUATE_GROUPS)} (data.<field>=... changes the sets)"
            )
    check_group_choices(overrides, CONFIG_DIR)
    composed = compose_checked(overrides, CONFIG_DIR, "evaluate", validate=False)
    # As Hydra reads it: a quoted path (a sweep job's `=`) without its quotes.
    ckpt_path = composed.get("ckpt_path")
    if not ckpt_path:
        raise ConfigError(MISSING_CHECKPOINT)
    checkpoint_file("ckpt_path", ckpt_path)
    data, changed = evaluation_data(ckpt_path, overrides, None)
    # The run's own data with the overrides on top, or (outside a run folder) this config's.
    own_data = composed.data if data is None else data
    own = OmegaConf.create({"data": OmegaConf.to_container(own_data, resolve=True)})
    validate_config(own)
    check_added_fields(own, [o.key_or_group for o in parsed_overrides(overrides) if o.is_add()])
    check_same_problem_fields(ckpt_path, data, changed)
    trained_formulas(ckpt_path)  # an unreadable problem.json stops it here, before torch loads
    folder = Path(evaluation_dir(ckpt_path))
    check_output_folder(folder, "the evaluation's folder")


def main() -> None:
    sys.argv[1:] = quote_paths(sys.argv[1:])
    try:
        check_arguments(sys.argv[1:])
    except ConfigError as error:
        fail(error, str(error), EXIT_CONFIG_ERROR)
    except OSError as error:
        fail(error, output_error_message(error), EXIT_OUTPUT_ERROR)
    keep_freed_memory()
    hydra_main()


if __name__ == "__main__":
    main()
