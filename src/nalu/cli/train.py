"""Hydra entry point: ``python -m nalu.train [overrides]`` trains, tests and records a run of
``population`` ≥ 1 members."""

import copy
import logging
import os
import pickle
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from nalu.cli.common import (
    CONFIG_DIR,
    EXIT_CONFIG_ERROR,
    EXIT_DIVERGED,
    EXIT_INTERRUPTED,
    EXIT_JOBS_FAILED,
    EXIT_OUTPUT_ERROR,
    VERBOSE,
    MultirunSummary,
    check_output_folder,
    checked,
    fail,
    format_metrics,
    hydra_quoted,
    keep_freed_memory,
    log_lightning_once,
    output_error_message,
    progress_callbacks,
    quote_paths,
    resumable_checkpoint,
    saved_problem_difference,
)
from nalu.config.errors import ConfigError, Diverged, Interrupted, InvalidArgument, shorten
from nalu.config.overrides import (
    given_value,
    is_hyperparameter,
    is_multirun,
    swept_on_command_line,
)
from nalu.config.resolvers import (
    SWEPT_FIELDS_VARIABLE,
    hydra_choices,
    job_overrides,
    model_choice,
)
from nalu.config.rules import member_seeds, population_in_one_process
from nalu.config.validation import (
    SHOWING_FLAGS,
    check_command_line,
    check_problem_cell,
    validate_config,
)
from nalu.results.commands import command_line, tensorboard_command
from nalu.results.record import (
    CHECKPOINTS_DIR,
    INTERP_MSE,
    LAST_CHECKPOINT,
    MEMBERS_DIR,
    METRICS_FILE,
    REPORT_FILE,
)

if TYPE_CHECKING:
    import lightning as L
    from torch import nn

    from nalu.data.datamodule import ProblemDataModule
    from nalu.data.problem import ArithmeticProblem
    from nalu.training.module import ArithmeticModule

log = logging.getLogger(__name__)
# What a failed or diverged job of a sweep returns to the sweeper, which minimises the
# interpolation MSE: the worst value (Optuna would keep a NaN trial as its best).
FAILED_OBJECTIVE = float("inf")


def problem_cells(cfg: DictConfig) -> list[tuple[dict[str, str], DictConfig | None]]:
    """Every combination of the ``problems`` axes, in order (the last axis varies fastest):
    its labels ``{axis: label}`` and the fields it sets, merged; one cell without labels when
    the config has no axes."""
    axes = cfg.get("problems") or {}  # a member's own config has none (build_members)
    cells: list[tuple[dict[str, str], DictConfig | None]] = [({}, None)]
    for axis, options in axes.items():
        cells = [
            # As plain configs: the run's struct flag would refuse a field the first cell lacks.
            (
                {**labels, axis: str(label)},
                OmegaConf.merge(fields or {}, OmegaConf.to_container(part)),
            )
            for labels, fields in cells
            for label, part in options.items()
        ]
    return cells


@dataclass(frozen=True)
class Member:
    """A member of a run: its ``problems`` cell (``{axis: label}``), its seed, its data module
    and regulariser schedule, and what its records show of it (its run's labels and HParams),
    all read from the config of its single run (``build_members``)."""

    cell: dict[str, str]
    seed: int
    data: "ProblemDataModule"
    regularizer: dict[str, Any] | None
    labels: dict[str, Any]
    hyperparameters: dict[str, Any]


def run_seeds(cfg: DictConfig) -> list[int]:
    """Each member's seed: per ``problems`` cell, ``population`` seeds from ``seed`` on."""
    return [seed for _ in problem_cells(cfg) for seed in member_seeds(cfg.seed, cfg.population)]


def build_members(cfg: DictConfig) -> list[Member]:
    """The members of a run (``run_seeds``), each read from the config of its single run: the
    run's with its cell's fields, without the run's ``problems`` axes, and with its seed, so that
    every ``${seed}`` (the problem's, the batch order's) resolves to it."""
    single = copy.deepcopy(cfg)
    with open_dict(single):
        single.pop("problems", None)
    read_hyperparameters = hyperparameter_reader()
    seeds = member_seeds(cfg.seed, cfg.population)
    members = []
    for labels, fields in problem_cells(cfg):
        try:
            cell_config = single if fields is None else OmegaConf.merge(single, fields)
            cell_config.seed = seeds[0]
        except OmegaConfBaseException as error:  # a field that the run's config does not have
            where = ", ".join(f"problems.{axis}.{label}" for axis, label in labels.items())
            raise ConfigError(f"{where}: {str(error).splitlines()[0]}") from error
        if fields is not None:
            check_problem_cell(cfg, cell_config, labels, fields)
        for seed in seeds:
            # One config per cell, its seed set member by member: a copy of the whole config per
            # member took 10 ms of each of the NALM task's 900 members' 28.
            cell_config.seed = seed
            data: ProblemDataModule = checked("data", lambda c=cell_config: instantiate(c.data))
            members.append(
                Member(
                    cell=labels,
                    seed=seed,
                    data=data,
                    regularizer=_container(cell_config.get("regularizer")),
                    labels=run_labels(cell_config, data.problem),
                    hyperparameters={**read_hyperparameters(cell_config), **labels},
                )
            )
    return members


def _container(node: DictConfig | None) -> dict[str, Any] | None:
    return None if node is None else OmegaConf.to_container(node, resolve=True)


def build_run(
    cfg: DictConfig,
) -> tuple[list[Member], "L.LightningDataModule", "ArithmeticModule"]:
    """The members (``build_members``: each the single run of its seed and ``problems`` cell),
    the run's data module and its training module."""
    from nalu.data.datamodule import success_thresholds
    from nalu.data.population import PopulationDataModule
    from nalu.training.module import ArithmeticModule
    from nalu.training.regularizer import RegularizerSchedule

    members = build_members(cfg)
    # Each member's schedule: a population's ``problems`` cells may set their own.
    schedules = [member.regularizer for member in members]
    for schedule in schedules:
        checked("regularizer", lambda s=schedule: RegularizerSchedule(**(s or {})))
    regularizer = schedules[0] if all(s == schedules[0] for s in schedules) else schedules
    member_data = [member.data for member in members]
    datamodule = PopulationDataModule(member_data)
    module = checked(
        "model",
        lambda: ArithmeticModule(
            network=OmegaConf.to_container(cfg.model, resolve=True),
            optimizer=OmegaConf.to_container(cfg.optimizer, resolve=True),
            output_operations=[data.problem.output_operations for data in member_data],
            success_threshold=success_thresholds(member_data),
            seeds=[member.seed for member in members],
            validation_threshold=success_thresholds(member_data, "interp"),
            stop_when_solved=cfg.stop_when_solved,
            rounds=cfg.rounds,
            stall_restart=_container(cfg.stall_restart),
            regularizer=regularizer,
            lr_schedule=_container(cfg.get("lr_schedule")),
            # The module clips every one of its optimizer steps itself (several per batch).
            gradient_clip_val=cfg.trainer.get("gradient_clip_val"),
            gradient_clip_algorithm=cfg.trainer.get("gradient_clip_algorithm"),
            compile=cfg.compile,
            cuda_graphs=cfg.cuda_graphs,
        ),
    )
    check_optimization(cfg, module.network)
    return members, datamodule, module


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, test every member at its best interpolation epoch, record the results; return the
    final metrics (at S > 1 over the members as ``finite_summary`` gives them: medians; shares
    solved or recovered of all the members' outputs; output counts summed).

    Raises ``ConfigError`` for a bad config, ``Diverged`` when every member met a non-finite
    loss (metrics.json then says so) and ``Interrupted`` after a Ctrl-C or SIGTERM (last.ckpt
    resumes).
    """
    validate_config(cfg)
    # Torch and Lightning load only once the config is known to be good: seconds saved per typo.
    import lightning as L

    from nalu.results.recorder import AtomicCheckpointIO, RunRecorder, newest_checkpoint
    from nalu.training.interrupt import StopAtEpochEndOnInterrupt

    if cfg.ckpt_path is not None:
        check_resume(cfg)  # also before Hydra's folder on the command line (``main``)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    output_dir = Path(cfg.paths.output_dir)
    members, datamodule, module = build_run(cfg)
    recorder = RunRecorder(
        output_dir=output_dir,
        problems=[member.data.problem for member in members],
        labels=[
            {**member.labels, **cell_labels(cfg, member.cell), "population": cfg.population}
            for member in members
        ],
        hyperparameters=[member.hyperparameters for member in members],
        heatmaps=cfg.heatmaps,
    )
    interrupt = StopAtEpochEndOnInterrupt()
    # A callback or logger set to null is off, as Hydra users turn one off.
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    callbacks += [*progress_callbacks(cfg.trainer), interrupt, recorder]
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values() if lg is not None]
    trainer: L.Trainer = checked(
        "trainer",
        lambda: instantiate(
            cfg.trainer,
            callbacks=callbacks,
            logger=loggers,
            plugins=[AtomicCheckpointIO()],
            gradient_clip_val=None,  # the module's (``build_run``)
            gradient_clip_algorithm=None,
        ),
    )
    try:
        population_in_one_process(len(members), trainer.world_size, cfg.trainer.get("devices"))
    except InvalidArgument as error:
        raise ConfigError(str(error)) from error
    try:
        with interrupt.as_ctrl_c():
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    except Diverged:
        # Every member diverged: each is still judged at its last good validation.
        trainer.test(module, datamodule=datamodule, verbose=False)
        raise
    if interrupt.interrupted:
        raise Interrupted(trainer.current_epoch, newest_checkpoint(trainer) or "")
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    try:
        with interrupt.as_ctrl_c():
            trainer.test(module, datamodule=datamodule, verbose=False)
    except SIGTERMException as error:
        # Lightning's loop stops at a SIGTERM with a bare SystemExit, which would exit 0 with no
        # results; the run is interrupted, and resumed from last.ckpt it tests again.
        raise Interrupted(trainer.current_epoch, newest_checkpoint(trainer) or "") from error
    if len(members) > 1:
        from nalu.results.published import published_rates
        from nalu.results.report import write_report

        # A unit's population of the benchmark's cells draws the published rates beside its own.
        write_report([output_dir], published=published_rates())
    return recorder.final_metrics


def check_optimization(cfg: DictConfig, network: "nn.Module") -> None:
    """Build the optimizer and the learning-rate schedule once, so a bad field fails before
    training, naming its section (the schedule's length is known only once fitting starts)."""
    from nalu.training.optimization import build_optimizer

    optimizer = checked("optimizer", lambda: build_optimizer(cfg.optimizer, network))
    if cfg.get("lr_schedule") is not None:
        checked("lr_schedule", lambda: instantiate(cfg.lr_schedule)(optimizer, total_steps=1))


def check_resume(cfg: DictConfig) -> None:
    """Refuse, in one line and before any folder is made, a ``ckpt_path`` that is unreadable,
    was saved past ``trainer.max_epochs``, or was written by another model, other seeds or
    another problem (read from the checkpoint's run folder, where it has one): resuming it
    would train something else than this run."""
    import torch

    path = str(cfg.ckpt_path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        saved = checkpoint["hyper_parameters"]
        saved_seeds, saved_network = list(saved["seeds"]), saved["network"]
        saved_epoch = checkpoint["epoch"]
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError, KeyError, TypeError) as error:
        raise ConfigError(
            f"ckpt_path={path!r}: not a readable checkpoint of nalu-train ({type(error).__name__})"
        ) from error
    seeds = run_seeds(cfg)
    if saved_seeds != seeds:
        raise ConfigError(
            f"ckpt_path={path!r}: written by seeds {shorten(saved_seeds)}, but this run has "
            f"{shorten(seeds)}; resume with the seed and population that wrote it"
        )
    network = OmegaConf.to_container(cfg.model, resolve=True)
    if saved_network != network:
        target = saved_network.get("_target_")
        if target == network.get("_target_"):
            field = next(
                k for k in {**saved_network, **network} if saved_network.get(k) != network.get(k)
            )
            what = (
                f"{target} with model.{field}={shorten(saved_network.get(field))}, "
                f"here {shorten(network.get(field))}"
            )
        else:
            what = str(target)
        raise ConfigError(
            f"ckpt_path={path!r}: holds another model ({what}); resume with the model config "
            "that wrote it"
        )
    # Another optimizer's state is not this one's: SGD finds no momentum buffer in Adam's (a
    # KeyError, after the folder is made), AdamW would take on Adam's moments unasked.
    saved_optimizer = (saved.get("optimizer") or {}).get("_target_")
    optimizer = (cfg.get("optimizer") or {}).get("_target_")
    if saved_optimizer and optimizer and not same_class(saved_optimizer, optimizer):
        raise ConfigError(
            f"ckpt_path={path!r}: holds the state of another optimizer ({saved_optimizer}, here "
            f"{optimizer}); resume with the optimizer config that wrote it"
        )
    difference = saved_problem_difference(path, cfg.data)
    if difference:
        field, saved, here = difference
        raise ConfigError(
            f"ckpt_path={path!r}: written for another problem (data.{field}={shorten(saved)}, "
            f"here {shorten(here)}); resume with the data config that wrote it"
        )
    # Lightning refuses to resume past max_epochs (as a traceback, after the run's folder is
    # made). The checkpoint counts epochs from 0; the progress lines, and max_epochs, from 1.
    max_epochs, epochs_done = cfg.trainer.get("max_epochs"), saved_epoch + 1
    if max_epochs is not None and max_epochs != -1 and epochs_done > max_epochs:
        raise ConfigError(
            f"trainer.max_epochs={max_epochs}: ckpt_path={path!r} was saved after epoch "
            f"{epochs_done}, past it; resume with trainer.max_epochs={epochs_done} or more"
        )


def same_class(target: str, other: str) -> bool:
    """Whether two ``_target_`` paths name one class (``torch.optim.Adam`` and
    ``torch.optim.adam.Adam`` do); a path that does not import differs."""
    from hydra.utils import get_class

    try:
        return get_class(target) is get_class(other)
    except (ImportError, ValueError, AttributeError):
        return target == other


def run_labels(cfg: DictConfig, problem: "ArithmeticProblem") -> dict[str, Any]:
    """What tells a run apart in reports: the model choice, the seed and the problem."""
    return {
        "model": model_choice(),
        "seed": cfg.seed,
        "problem": problem.to_dict()["problem"],
        "operations": list(cfg.data.operations),
        "problem_seed": cfg.data.problem_seed,
    }


def cell_labels(cfg: DictConfig, cell: dict[str, str]) -> dict[str, Any]:
    """A ``problems`` cell's labels, and every axis's labels in order (``problem_axes``):
    reports group members by the axes, in the config's order."""
    if not cell:
        return {}
    return {**cell, "problem_axes": {axis: [str(k) for k in cfg.problems[axis]] for axis in cell}}


def hyperparameter_reader() -> Callable[[DictConfig], dict[str, Any]]:
    """What the HParams tab shows of a run, given its config: the job's config choices (model,
    optimizer, experiment, ...), every field the command line set or swept, the seed and the
    population size. The job's choices and command line are read once, for all its members
    (read for each, 2.9 s of building the NALM task's 900)."""
    choices = hydra_choices()
    chosen = {
        group: option
        for group, option in choices.items()
        if option is not None and is_hyperparameter(group)
    }
    overrides = {field: value for field, value in job_overrides().items() if field not in choices}

    def read(cfg: DictConfig) -> dict[str, Any]:
        overridden = {
            field: OmegaConf.select(cfg, field, default=value) for field, value in overrides.items()
        }
        values = {**chosen, **overridden, "seed": cfg.seed, "population": cfg.population}
        return {name: _hparam_value(value) for name, value in values.items()}

    return read


def _hparam_value(value: Any) -> int | float | str:
    """A number as itself; a bool (which TensorBoard would show as 0.0000), a list or None as
    the text the command line would take."""
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, int | float | str) else str(value)


def print_summary(output_dir: Path, metrics: dict[str, float]) -> None:
    """The final metrics and where the run is, once per run (also when DDP runs several ranks)."""
    from lightning.pytorch.utilities import rank_zero_only

    if rank_zero_only.rank != 0:
        return
    population = (output_dir / MEMBERS_DIR).is_dir()
    if population:
        # As the population's curves and HParams summarise them (``finite_summary``).
        where = output_dir / MEMBERS_DIR
        print(
            f"\nOver the members ({where}), each at its best interpolation epoch: medians; "
            "shares of outputs (*_fraction) and output counts: of all the members' outputs"
        )
        print(format_metrics(metrics))
        print(f"Success rates: {output_dir / REPORT_FILE}")
    else:
        print(
            f"\nFinal metrics, at the best interpolation epoch ({output_dir / METRICS_FILE}):\n"
            f"{format_metrics(metrics)}"
        )
    # The command that serves it from any folder (a wheel installed elsewhere has no Makefile).
    # A single run's events lie in its folder itself: served as the logdir, its curves would be
    # the run "."; from the folder above, they are its folder's name beside its neighbours (a
    # sweep's other jobs). A run without loggers (logger.tensorboard=null) has nothing to serve.
    if next(output_dir.rglob("events.out.tfevents.*"), None) is None:
        return
    if population:
        print(f"TensorBoard: {tensorboard_command(output_dir)}")
    else:
        print(
            f"TensorBoard: {tensorboard_command(output_dir.parent)} (this run: {output_dir.name})"
        )


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def hydra_main(cfg: DictConfig) -> float:
    log_lightning_once()
    output_dir = Path(cfg.paths.output_dir)
    if HydraConfig.get().mode == RunMode.MULTIRUN and not VERBOSE:
        # A sweep's job that fails says so in one line and the other jobs go on; the sweep
        # ends with a count of its jobs (``MultirunSummary``) and a non-zero exit.
        try:
            return run_job(cfg, output_dir)
        except SystemExit as stop:  # its one line is printed
            if stop.code == EXIT_INTERRUPTED:
                raise  # Ctrl-C or SIGTERM stops the sweep
            log.error(f"{output_dir}: job failed (exit code {stop.code})")
        except Exception as error:
            log.error(
                f"{output_dir}: job failed: {type(error).__name__}: {' '.join(str(error).split())}"
            )
        return FAILED_OBJECTIVE
    return run_job(cfg, output_dir)


def interrupted_message(output_dir: Path, interrupted: Interrupted) -> str:
    """The line that ends an interrupted run: how to resume it. A sweep's job resumes alone,
    into its own folder, with the overrides of its job (the sweep's command line would start
    every job again, each refusing the job's checkpoint), as one run (a search such as
    ``hparams_search=nalu_optuna`` sets multirun itself)."""
    if HydraConfig.get().mode != RunMode.MULTIRUN or not interrupted.checkpoint:
        return f"{output_dir}: {interrupted}"
    job = [o for o in HydraConfig.get().overrides.task if not o.startswith("ckpt_path=")]
    resume = command_line(
        "nalu-train",
        *job,
        f"ckpt_path={interrupted.checkpoint}",
        f"hydra.run.dir={hydra_quoted(str(output_dir))}",  # a job's folder name may hold '='
        "hydra.mode=RUN",
    )
    return (
        f"{output_dir}: interrupted after epoch {interrupted.epoch}; the sweep stops here (its "
        f"later jobs did not start); resume this job alone with {resume}"
    )


def run_job(cfg: DictConfig, output_dir: Path) -> float:
    """Train ``cfg``, print its summary and return the interpolation MSE (what a sweeper
    minimises); bad input, faults, divergence and Ctrl-C/SIGTERM end in one line and their exit
    code."""
    try:
        metrics = train(cfg)
    except ConfigError as error:
        fail(error, str(error), EXIT_CONFIG_ERROR)
    except Interrupted as interrupted:
        fail(interrupted, interrupted_message(output_dir, interrupted), EXIT_INTERRUPTED)
    except OSError as error:
        fail(error, output_error_message(error), EXIT_OUTPUT_ERROR)
    except Diverged as diverged:
        checkpoint = diverged.last_good_checkpoint
        where = f"last good checkpoint {checkpoint}" if checkpoint else "no checkpoint before it"
        message = f"{output_dir}: {diverged}; {where}"
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            # One diverged job must not end the sweep: the other jobs go on.
            log.warning(message)
            return FAILED_OBJECTIVE
        fail(diverged, message, EXIT_DIVERGED)
    print_summary(output_dir, metrics)
    return metrics.get(INTERP_MSE, float("nan"))


# What a run leaves in its folder once it has trained: a checkpoint, its metrics, or (a
# population's) its report.
RUN_MARKS = (f"{CHECKPOINTS_DIR}/*.ckpt", METRICS_FILE, REPORT_FILE)
# What a sweep leaves in its folder: Hydra's record of it, and its jobs' configs.
SWEEP_MARKS = ("multirun.yaml", "*/.hydra/config.yaml")


def output_folder(arguments: list[str]) -> tuple[Path, str]:
    """The folder a command line writes into, as far as it is known before Hydra resolves it
    (the part before any ``${...}``), and the field that sets it."""
    field = "hydra.sweep.dir" if is_multirun(arguments) else "hydra.run.dir"
    for name in (field, "paths.log_dir"):
        if (given := given_value(arguments, name)) is not None:
            return Path(given.split("${", 1)[0] or "."), name
    return Path("outputs"), "paths.log_dir"


def check_folder_free(arguments: list[str], ckpt_path: str | None) -> None:
    """Refuse a new run into a ``hydra.run.dir`` that holds a run already (its checkpoints or
    results), and a sweep into a ``hydra.sweep.dir`` that holds a sweep or a run: the two would
    mix in its reports, checkpoints and TensorBoard files, and the first's metrics.json be
    overwritten. Resuming a run in place, from a checkpoint inside its folder, is the way to go
    on there."""
    sweep = is_multirun(arguments)
    field = "hydra.sweep.dir" if sweep else "hydra.run.dir"
    given = given_value(arguments, field)
    if given is None or "${" in given:
        return  # a new folder of its own, or one known only once Hydra resolves it
    folder = Path(given).resolve()

    def held(marks: tuple[str, ...]) -> list[Path]:
        return [path for mark in marks for path in sorted(folder.glob(mark)) if path.is_file()]

    sweeps, runs = held(SWEEP_MARKS) if sweep else [], held(RUN_MARKS)
    if not sweeps and not runs:
        return
    if not sweep and ckpt_path and folder in Path(ckpt_path).resolve().parents:
        return
    resume = None if sweep else resumable_checkpoint(folder)
    raise ConfigError(
        f"{field}={given}: holds a {'sweep' if sweeps else 'run'} already "
        f"({(sweeps or runs)[0].relative_to(folder)}); choose another folder"
        + (f", or resume that run there with ckpt_path={resume}" if resume else "")
    )


def main() -> None:
    """``nalu-train``. A Ctrl-C while training waits for the epoch's end (``interrupted_message``);
    one before training starts, or a second one, stops at once, in one line too."""
    try:
        train_from_command_line()
    except KeyboardInterrupt as error:
        message = (
            f"interrupted by Ctrl-C before an epoch's end; a run resumes from "
            f"<run>/{CHECKPOINTS_DIR}/{LAST_CHECKPOINT} where it saved one, else starts anew"
        )
        fail(error, message, EXIT_INTERRUPTED)


def train_from_command_line() -> None:
    sys.argv[1:] = arguments = quote_paths(sys.argv[1:])
    if not sys.stderr.isatty():
        # Into a file or a pipe, colour codes are noise: Optuna's log lines colour themselves
        # unless NO_COLOR is set (the no-color.org convention, which colorlog and Rich follow).
        os.environ.setdefault("NO_COLOR", "1")
    writes = not any(arg.split("=")[0] in SHOWING_FLAGS for arg in arguments)
    try:
        cfg = check_command_line(arguments, CONFIG_DIR)
        if cfg is not None and cfg.ckpt_path:
            check_resume(cfg)
        if writes:
            resumed = cfg.ckpt_path if cfg is not None else given_value(arguments, "ckpt_path")
            check_folder_free(arguments, resumed)
    except ConfigError as error:
        fail(error, str(error), EXIT_CONFIG_ERROR)
    try:
        if writes:
            check_output_folder(*output_folder(arguments))
    except OSError as error:
        fail(error, output_error_message(error), EXIT_OUTPUT_ERROR)
    os.environ[SWEPT_FIELDS_VARIABLE] = ",".join(swept_on_command_line(arguments))
    MultirunSummary.last = None  # counts of an earlier sweep in this process are not this one's
    keep_freed_memory()
    hydra_main()
    if MultirunSummary.last is not None and MultirunSummary.last.failed:
        sys.exit(EXIT_JOBS_FAILED)


if __name__ == "__main__":
    main()
