"""Checks of a run's config that need neither torch nor Lightning, so bad input fails in a blink.

``check_command_line`` composes the config exactly as Hydra will, for every job of a sweep, and
``validate_config`` checks each user-facing field (``FIELD_RULES``, and by class the arguments
of the model's, the data's and the training schedules' classes:
``nalu.config.rules.ARGUMENT_RULES``, which their constructors apply too) and the rules that
tie fields together (``cross_field_rules``), before any folder is made and before torch loads.
"""

import difflib
import functools
import itertools
import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigTypeError, OmegaConfBaseException

from nalu.config.errors import ConfigError, InvalidArgument, cut, shorten
from nalu.config.overrides import is_multirun
from nalu.config.rules import (
    MAX_SET_VALUES,
    MAX_TARGET_MAGNITUDE,
    SPLITS,
    TRAINING_RULES,
    Rule,
    accelerator,
    adam_betas,
    argument_rules,
    boolean,
    clip_algorithm,
    config_check,
    devices,
    integer_at_least,
    is_integer,
    joblib_jobs,
    max_steps,
    near_perfect_fits,
    non_negative_number,
    one_batch_per_step,
    one_output_per_operation,
    optional,
    optuna_direction,
    population_in_one_process,
    positive_number,
    precision,
    regularizer_schedule,
    seed,
    static_subset_size,
    study_storage,
    target_magnitude,
)
from nalu.config.value_range import denominator_intervals, largest_magnitude, value_intervals
from nalu.results.record import CHECKPOINTS_DIR, LAST_CHECKPOINT

# More combinations than this in a sweep are checked one swept field at a time.
MAX_CHECKED_COMBINATIONS = 256


def checkpoint_file(name: str, value: Any) -> None:
    """A checkpoint to read: a file. A folder given is most often a run's, whose last
    checkpoint was meant. The path is named whole: cut short, it would name no file."""
    path = Path(str(value))
    if path.is_dir():
        reason = (
            f"a folder, not a checkpoint file (e.g. {path / CHECKPOINTS_DIR / LAST_CHECKPOINT})"
        )
    elif not path.is_file():
        reason = "no such checkpoint file"
    else:
        return
    raise ConfigError(f"{name}={str(value)!r}: {reason}")


_ABSENT = object()


# The run's own fields, and those of the classes it takes from torch (optimizer) and Lightning
# (trainer); the arguments of the project's classes (model, data, lr_schedule, regularizer,
# stall_restart) are their classes' rules (``argument_rules``). A field absent from the chosen
# config is not checked.
FIELD_RULES: dict[str, Rule] = {
    "seed": seed,
    "population": integer_at_least(1),
    "compile": boolean,
    "cuda_graphs": boolean,
    "stop_when_solved": boolean,
    "rounds": integer_at_least(1),
    "heatmaps": optional(integer_at_least(0)),
    "ckpt_path": optional(checkpoint_file),
    "optimizer.lr": positive_number,
    "optimizer.eps": positive_number,
    "optimizer.momentum": non_negative_number,
    "optimizer.weight_decay": non_negative_number,
    "optimizer.betas": adam_betas,
    "trainer.max_epochs": integer_at_least(1),
    "callbacks.last_checkpoint.every_s": non_negative_number,
    "trainer.check_val_every_n_epoch": optional(integer_at_least(1)),
    "trainer.log_every_n_steps": integer_at_least(1),
    "trainer.deterministic": boolean,
    "trainer.devices": devices,
    "trainer.accelerator": accelerator,
    "trainer.max_steps": max_steps,
    "trainer.accumulate_grad_batches": one_batch_per_step,
    "trainer.precision": precision,
    "trainer.gradient_clip_val": optional(non_negative_number),
    "trainer.gradient_clip_algorithm": clip_algorithm,
}

# Fields of Hydra's plugins that a command line sets (README, Scaling out): checked as typed,
# before Hydra or the plugin meets them.
HYDRA_FIELD_RULES: dict[str, Rule] = {
    "hydra.sweeper.n_trials": integer_at_least(1),
    "hydra.sweeper.n_jobs": integer_at_least(1),
    "hydra.sweeper.direction": optuna_direction,
    "hydra.sweeper.storage": study_storage,
    "hydra.launcher.n_jobs": joblib_jobs,
}

# What every run builds: ~optimizer or the like leaves it nothing to build from.
REQUIRED_SECTIONS = ("model", "data", "optimizer", "trainer")

# The classes that a run builds from a section without a ``_target_``.
SECTION_CLASSES = {
    "regularizer": "nalu.training.regularizer.RegularizerSchedule",
    "stall_restart": "nalu.training.stalls.StallRule",
}

# A network's sizes must be the problem's: model field -> data field.
MATCHING_FIELDS = {
    "model.in_features": "data.in_features",
    "model.out_features": "data.out_features",
}


def _value(cfg: DictConfig, key: str) -> Any:
    """The field's resolved value as plain Python, or ``_ABSENT`` where the config lacks it."""
    try:
        value = OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=True)
        return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    except OmegaConfBaseException as error:  # e.g. an interpolation to a field that is not there
        raise ConfigError(f"{key}: {str(error).splitlines()[0]}") from error


def _targets(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every object a config section builds (a mapping with a ``_target_``), with its path:
    the section itself, layers (``_args_``), heads."""
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            yield path, node
        for key, child in node.items():
            yield from _targets(child, f"{path}.{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield from _targets(child, f"{path}.{index}")


def _apply(check: Callable[..., Any], *arguments: Any) -> Any:
    """``check(*arguments)`` (a rule, or a check of several fields), its ``InvalidArgument``
    as the one-line ``ConfigError`` of a config."""
    try:
        return check(*arguments)
    except InvalidArgument as error:
        raise ConfigError(str(error)) from error


def validate_config(cfg: DictConfig) -> None:
    """Raise a one-line ``ConfigError`` for the first field that breaks its rule."""
    check_sections_are_mappings(cfg)
    for key, rule in FIELD_RULES.items():
        if (value := _value(cfg, key)) is not _ABSENT:
            _apply(rule, key, value)
    for section in ("model", "data", "lr_schedule", *SECTION_CLASSES):
        if (built := _value(cfg, section)) in (_ABSENT, None):
            continue
        if section in SECTION_CLASSES:
            built = {"_target_": SECTION_CLASSES[section], **built}
        for path, arguments in _targets(built, section):
            for field, rule in argument_rules(arguments["_target_"]).items():
                if field in arguments:
                    _apply(rule, f"{path}.{field}", arguments[field])
            if (together := config_check(arguments["_target_"])) is not None:
                try:
                    together(arguments)
                except InvalidArgument as error:  # named by the field: prefix its section
                    raise ConfigError(f"{path}.{error}") from error
    check_section_fields(cfg)
    check_stack_sizes(cfg)
    for model_key, data_key in MATCHING_FIELDS.items():
        model_value, data_value = _value(cfg, model_key), _value(cfg, data_key)
        if model_value is not _ABSENT and model_value != data_value:
            raise ConfigError(
                f"{model_key}={shorten(model_value)}: must equal {data_key}="
                f"{shorten(data_value)}, the problem's size"
            )
    cross_field_rules(cfg)


def check_stack_sizes(cfg: DictConfig) -> None:
    """A stack's layers (``torch.nn.Sequential``'s ``_args_``) have positive sizes, each
    taking the one before's outputs, the first the problem's inputs and the last giving its
    outputs: else torch's matmul would say so, after the run's folder is made."""
    layers = _get(cfg, "model._args_")
    if _get(cfg, "model._target_") != "torch.nn.Sequential" or not isinstance(layers, list):
        return  # another class may take sized modules that are no chain
    size, size_key = _get(cfg, "data.in_features"), "data.in_features"
    for index, layer in enumerate(layers):
        if not (isinstance(layer, dict) and "in_features" in layer and "out_features" in layer):
            continue  # an activation, say: it keeps the size
        key = f"model._args_.{index}"
        for field in ("in_features", "out_features"):
            _apply(integer_at_least(1), f"{key}.{field}", layer[field])
        if size is not None and layer["in_features"] != size:
            raise ConfigError(
                f"{key}.in_features={layer['in_features']}: must equal {size_key}={size}, the "
                "size of what comes before it"
            )
        size, size_key = layer["out_features"], f"{key}.out_features"
    outputs = _get(cfg, "data.out_features")
    if size_key != "data.in_features" and outputs is not None and size != outputs:
        raise ConfigError(
            f"{size_key}={size}: must equal data.out_features={outputs}, the problem's outputs"
        )


def check_sections_are_mappings(cfg: DictConfig) -> None:
    """Sections whose fields the run reads hold fields, not a single value: the training's
    rules, each callback and logger (these three may be null: off), the ``problems`` axes (each
    a label per cell), their cells and the sections a cell sets. Given a value
    (``stall_restart=5``), the code reading their fields would stop on a Python error, or a
    cell's members train on the run's problem under the cell's label. Read unresolved: a
    callback's fields name the run's folder, which Hydra sets later."""

    def entries(key: str) -> list[str]:
        node = OmegaConf.select(cfg, key, default=None)
        return [f"{key}.{name}" for name in node] if OmegaConf.is_dict(node) else []

    def refuse(key: str, node: Any, shape: str) -> None:
        raise ConfigError(f"{key}={shorten(node)}: {shape}")

    for key in [*SECTION_CLASSES, "problems", *entries("callbacks"), *entries("logger")]:
        node = OmegaConf.select(cfg, key, default=None)
        if node is not None and not OmegaConf.is_dict(node):
            refuse(key, node, f"must be a section of fields ({key}.<field>=...) or null")
    for axis in entries("problems"):
        labels = OmegaConf.select(cfg, axis)
        if not (OmegaConf.is_dict(labels) and labels):
            refuse(axis, labels, f"must map each label to the fields it sets, e.g. {EXAMPLE_CELL}")
        for cell in entries(axis):
            fields = OmegaConf.select(cfg, cell)
            if not OmegaConf.is_dict(fields):
                refuse(cell, fields, f"must hold the fields the cell sets, e.g. {EXAMPLE_CELL}")
            for section in (f"{cell}.{name}" for name in CELL_SECTIONS if name in fields):
                if not OmegaConf.is_dict(node := OmegaConf.select(cfg, section)):
                    refuse(section, node, f"must be a section of fields ({section}.<field>=...)")


def check_section_fields(cfg: DictConfig) -> None:
    """The training's schedules and rules (``TRAINING_RULES``) take the fields their rules name
    and nothing else: a misspelt field would otherwise reach the class's constructor as a
    Python error once the run's folder is made."""
    for section in ("lr_schedule", *SECTION_CLASSES):
        given = _value(cfg, section)
        if not isinstance(given, dict):
            continue
        target = SECTION_CLASSES.get(section) or given.get("_target_")
        if target is None:
            raise ConfigError(
                f"{section}: {shorten(given)} names no class (_target_); choose one with "
                f"{section}=<a config of conf/{section}>, then set its fields"
            )
        rules = TRAINING_RULES.get(str(target).rpartition(".")[2])
        if rules is None:
            continue  # a class of the user's own: its constructor checks it
        for field in given:
            if not field.startswith("_") and field not in rules:
                close = difflib.get_close_matches(field, list(rules), n=1)
                hint = f"; did you mean {close[0]}?" if close else ""
                raise ConfigError(
                    f"{section}.{field}: {section} has no field {field!r}{hint} (it takes "
                    f"{sorted(rules)})"
                )


# What a ``problems`` cell may set for its members: their problem and their regulariser's
# schedule (the step's weight per member); the network, optimizer and trainer are the run's.
CELL_SECTIONS = ("data", "regularizer")
EXAMPLE_CELL = "problems.operation.add.data.operations=[add]"
# What every member of a population shares, whatever its ``problems`` cell: one network and
# batches of one shape.
SHARED_MEMBER_FIELDS = (
    "data._target_",
    "data.in_features",
    "data.out_features",
    "data.batch_size",
    "data.resample",
    *(f"data.{split}_size" for split in SPLITS),
)


def check_problem_cell(
    cfg: DictConfig, member: DictConfig, labels: dict[str, str], fields: DictConfig
) -> None:
    """A ``problems`` cell's first member (``member``, the run's config with the cell's
    ``fields``) sets only ``CELL_SECTIONS``, shares ``SHARED_MEMBER_FIELDS`` with the run and
    follows every rule; else a ``ConfigError`` that names the cell."""
    cell = ", ".join(f"problems.{axis}.{label}" for axis, label in labels.items())
    other = [section for section in fields if section not in CELL_SECTIONS]
    if other:
        raise ConfigError(
            f"{cell}: sets {', '.join(other)}, but a cell may set only "
            f"{' and '.join(CELL_SECTIONS)}: the members of a population share the rest"
        )
    # First what no cell may change, which other rules (the near-perfect model's inputs) read.
    for key in SHARED_MEMBER_FIELDS:
        if (mine := _value(member, key)) != (run := _value(cfg, key)):
            raise ConfigError(
                f"{cell}: sets {key}={shorten(mine)}, but the run has {shorten(run)}; the members "
                "of a population share one network and one batch shape"
            )
    try:
        validate_config(member)
    except ConfigError as error:
        raise ConfigError(f"{cell}: {error}") from error


def _get(cfg: DictConfig, key: str) -> Any:
    """The field's value, None where the config lacks it."""
    value = _value(cfg, key)
    return None if value is _ABSENT else value


def cross_field_rules(cfg: DictConfig) -> None:
    """The rules that tie fields together: the operations of the problem family, a batch no
    larger than the training set, sets that fit in memory, denominators that the ranges allow,
    targets whose squared errors are finite in float32, a regulariser's schedule (its own rules),
    rounds that each end with a validation, and a population in one process."""
    regularizer = _get(cfg, "regularizer")
    if regularizer:
        try:
            regularizer_schedule(**regularizer, section="regularizer.")
        except InvalidArgument as error:
            raise ConfigError(str(error)) from error
        except TypeError as error:  # a field the schedule does not have
            raise ConfigError(f"regularizer: {error}") from error
    if _get(cfg, "data") is not None:
        _data_rules(cfg)
    rounds, epochs = _get(cfg, "rounds"), _get(cfg, "trainer.max_epochs")
    validate_every = _get(cfg, "trainer.check_val_every_n_epoch") or 1
    several_rounds = rounds is not None and rounds > 1 and epochs is not None
    if several_rounds and (epochs % rounds or (epochs // rounds) % validate_every):
        raise ConfigError(
            f"rounds={rounds}: must divide trainer.max_epochs={epochs} into rounds of a "
            f"whole number of validations (every {validate_every} epochs), so that each "
            "round ends with one"
        )
    population, trainer_devices = _get(cfg, "population"), _get(cfg, "trainer.devices")
    several = (is_integer(trainer_devices) and trainer_devices != 1) or (
        isinstance(trainer_devices, list) and len(trainer_devices) > 1
    )
    if population is not None:
        _apply(population_in_one_process, population, 2 if several else 1, trainer_devices)
    if _get(cfg, "trainer.accelerator") in ("gpu", "cuda"):
        import torch  # only for a run that asks for a GPU

        if not torch.cuda.is_available():
            raise ConfigError(
                f"trainer.accelerator={cfg.trainer.accelerator}: no GPU is visible here "
                "(torch.cuda.is_available() is False); use trainer.accelerator=cpu or auto"
            )


def _data_rules(cfg: DictConfig) -> None:
    chosen = _get(cfg, "data.operations") or []
    if (model := _value(cfg, "data.near_perfect")) is not _ABSENT:
        in_features = _get(cfg, "data.in_features")
        rule = functools.partial(near_perfect_fits, chosen=chosen, in_features=in_features)
        _apply(rule, "data.near_perfect", model)
    batch_size, train_size = _get(cfg, "data.batch_size"), _get(cfg, "data.train_size")
    if batch_size is not None and train_size is not None and batch_size > train_size:
        raise ConfigError(
            f"data.batch_size={batch_size}: must be at most data.train_size={train_size}"
        )
    in_features = _get(cfg, "data.in_features") or 1
    out_features = _get(cfg, "data.out_features") or 1
    for split in SPLITS:
        size = _get(cfg, f"data.{split}_size") or 1
        if size * in_features > MAX_SET_VALUES:
            raise ConfigError(
                f"data.in_features={shorten(in_features)}: with data.{split}_size={size} the set "
                f"would hold more than {MAX_SET_VALUES:.3g} values (8 GiB); keep "
                f"{split}_size × in_features within that"
            )
    if in_features * out_features > MAX_SET_VALUES:
        raise ConfigError(
            f"data.in_features={shorten(in_features)}: with data.out_features={out_features} a "
            f"weight matrix would hold more than {MAX_SET_VALUES:.3g} values (8 GiB); keep "
            "in_features × out_features within that"
        )
    # Each member of a population holds its own targets and weights (its inputs may be one set
    # that every member shares: bounded above). A fresh-batch run builds no training set.
    population = _get(cfg, "population")
    if is_integer(population) and population > 1:
        built = [split for split in SPLITS if not (split == "train" and _get(cfg, "data.resample"))]
        each = in_features * out_features + out_features * sum(
            _get(cfg, f"data.{split}_size") or 1 for split in built
        )
        axes = _get(cfg, "problems") or {}
        cells = math.prod(len(labels) for labels in axes.values() if isinstance(labels, dict))
        if population * cells * each > MAX_SET_VALUES:
            of_cells = f" in each of {cells} problem cells" if cells > 1 else ""
            raise ConfigError(
                f"population={population}: its members{of_cells} would hold more than "
                f"{MAX_SET_VALUES:.3g} values (8 GiB) of targets and weights, {each} each; keep "
                f"population at most {max(MAX_SET_VALUES // (cells * each), 1)}"
            )
    denominator = _get(cfg, "data.min_abs_denominator")
    operand_scale = 1
    if (ratio := _get(cfg, "data.subset_ratio")) is not None:  # the static task's
        operand_scale = _apply(static_subset_size, in_features, ratio, "data.")
        _apply(one_output_per_operation, _get(cfg, "data.out_features"), chosen, "data.")
    for split in SPLITS:
        field = f"data.{split}_range"
        if (value := _get(cfg, field)) is None:
            continue
        intervals = value_intervals(field, value)
        if denominator is not None and "div" in chosen:
            _apply(denominator_intervals, intervals, denominator, field, "data.")
        operand = largest_magnitude(intervals) * operand_scale
        for operation in chosen:
            if operation == "div" and denominator is None:
                continue  # the static task's b, a sum of inputs, has no floor to bound a / b
            bound = target_magnitude(operation, operand, denominator or 1.0)
            if not bound < MAX_TARGET_MAGNITUDE:
                raise ConfigError(
                    f"{field}={shorten(value)}: {operation} targets reach {bound:.3g}; keep "
                    f"|target| < {MAX_TARGET_MAGNITUDE:g}, so that squared errors are finite "
                    "in float32"
                )


def check_group_choices(overrides: list[str], config_dir: Path) -> None:
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


def _composition_error(error: Exception, override: str | None) -> ConfigError:
    """Hydra's multi-line composition error as one line naming the field."""
    cause = error.__cause__
    if isinstance(cause, OmegaConfBaseException) and cause.full_key and override:
        full_key = str(cause.full_key)
        parent, _, field = full_key.rpartition(".")
        node = cause.parent_node
        if isinstance(cause, ConfigTypeError) and isinstance(node, DictConfig):
            # The field is there, a section that a list or value cannot replace.
            fields = ", ".join(str(key) for key in node)
            return ConfigError(
                f"{override}: {full_key} holds fields ({fields}); set one with "
                f"{full_key}.<field>=<value>"
            )
        if isinstance(cause, ConfigTypeError) and isinstance(node, ListConfig):
            return ConfigError(
                f"{override}: {full_key} must be a list, as {OmegaConf.to_container(node)}"
            )
        siblings = [str(key) for key in node] if node is not None else []
        close = difflib.get_close_matches(field, siblings, n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        where = parent or "the config"
        # The override names the field (or one inside it), or a section merging in a new one.
        key = override.lstrip("+~").partition("=")[0]
        adding = override if f"{key}.".startswith(f"{full_key}.") else f"{full_key}=…"
        return ConfigError(
            f"{override}: {where} has no field {field!r}{hint} (+{adding} adds a new field)"
        )
    return ConfigError(" ".join(str(error).splitlines()[:2]))


def compose_checked(
    overrides: list[str], config_dir: Path, config_name: str, validate: bool = True
) -> DictConfig:
    """``config_name`` composed with ``overrides`` (Hydra's own left out) and, if ``validate``,
    validated: one line for an unknown field or a bad value."""
    own = [o for o in overrides if not o.lstrip("+~").startswith("hydra")]
    cfg = _compose(own, config_dir, config_name)
    if validate:
        validate_config(cfg)
    return cfg


def _compose(overrides: list[str], config_dir: Path, config_name: str = "train") -> DictConfig:
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        try:
            return compose(config_name, overrides=overrides)
        except (HydraException, OmegaConfBaseException) as error:
            failure = error
    missing = re.fullmatch(r"Could not delete from config\. '(.+)' does not exist\.", str(failure))
    if missing:
        raise _missing_deletion(missing[1], overrides, config_dir, config_name) from failure
    full_key = getattr(failure.__cause__, "full_key", None)
    # The override of the field, else of a field inside it, else of the section holding it
    # that merged in new fields ({...}; a group's choice, model=select, merges none).
    keys = {o: o.lstrip("+~").partition("=")[0] for o in overrides}
    exact = [o for o, key in keys.items() if full_key and key == full_key]
    deeper = [o for o, key in keys.items() if full_key and key.startswith(f"{full_key}.")]
    if not exact and deeper and (config_dir / str(full_key)).is_dir():
        # A field of a config group that is null (lr_schedule, say): Hydra's hint to add it
        # with + would leave the group's object without its class.
        raise ConfigError(
            f"{deeper[0]}: no {full_key} is chosen; choose one first ({full_key}=<one of "
            f"{_group_options(config_dir, str(full_key))}>) and then set its fields"
        ) from failure
    holders = [
        o
        for o, key in keys.items()
        if full_key and f"{full_key}.".startswith(f"{key}.") and not (config_dir / key).is_dir()
    ]
    culprit = next(iter(exact + deeper), None) or max(
        holders, key=lambda o: len(keys[o]), default=None
    )
    raise _composition_error(failure, culprit) from failure


def _group_options(config_dir: Path, group: str) -> list[str]:
    """The configs of a group under ``conf/`` (``optimizer``: adam, rmsprop, sgd)."""
    return sorted(path.stem for path in (config_dir / group).glob("*.yaml"))


def _missing_deletion(
    key: str, overrides: list[str], config_dir: Path, config_name: str
) -> ConfigError:
    """``~key`` of a field the config lacks, as one line listing the fields that can go."""
    culprit = next((o for o in overrides if o.split("=")[0] == f"~{key}"), f"~{key}")
    parent, _, field = key.rpartition(".")
    try:
        cfg = _compose([o for o in overrides if o != culprit], config_dir, config_name)
    except ConfigError:
        return ConfigError(f"{culprit}: the config has no field {key!r} to delete")
    node = OmegaConf.select(cfg, parent) if parent else cfg
    fields = sorted(str(k) for k in node) if isinstance(node, DictConfig) else []
    return ConfigError(
        f"{culprit}: {parent or 'the config'} has no field {field!r}; it has {fields}"
    )


# Hydra's flags that show something instead of running a job: left to Hydra.
SHOWING_FLAGS = (
    "--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--info", "-i",
    "--shell-completion", "-sc", "--experimental-rerun",
)  # fmt: skip
CONFIG_NAME_FLAGS = ("--config-name", "-cn")
CONFIG_DIR_FLAGS = ("--config-path", "-cp", "--config-dir", "-cd")


def _split_flags(arguments: list[str]) -> tuple[dict[str, str], list[str]]:
    """``({flag: value}, overrides)``: Hydra's flags (``--config-name x``, ``-cn=x``, ``-m``)
    apart from the overrides."""
    flags: dict[str, str] = {}
    overrides: list[str] = []
    waiting: str | None = None
    for argument in arguments:
        if waiting is not None:
            flags[waiting], waiting = argument, None
        elif argument.startswith("-"):
            flag, sep, value = argument.partition("=")
            if flag in (*CONFIG_NAME_FLAGS, *CONFIG_DIR_FLAGS) and not sep:
                waiting = flag
            else:
                flags[flag] = value
        else:
            overrides.append(argument)
    return flags, overrides


def check_command_line(arguments: list[str], config_dir: Path) -> DictConfig | None:
    """Compose and validate every configuration a command line would run, before Hydra runs it;
    return the config of a single run (Hydra's own fields aside: what the checks that need
    torch, a checkpoint's contents, read), None for a sweep or a command that runs nothing.

    A sweep composes once per combination of swept group options and checks every combination
    of swept field values on it (one swept field at a time beyond ``MAX_CHECKED_COMBINATIONS``),
    so a sweep with one bad job fails before its first job starts. ``--config-name`` is
    honoured; Hydra's flags that only show something (``--cfg``, ``--help``, ...) and another
    config directory are left to Hydra.
    """
    flags, overrides = _split_flags(arguments)
    if any(flag in SHOWING_FLAGS or flag in CONFIG_DIR_FLAGS for flag in flags):
        return None
    config_name = next((flags[f] for f in CONFIG_NAME_FLAGS if f in flags), "train")
    if not (config_dir / f"{config_name}.yaml").is_file():
        names = sorted(path.stem for path in config_dir.glob("*.yaml"))
        raise ConfigError(f"--config-name={config_name}: no such primary config; choose {names}")
    check_group_choices(overrides, config_dir)
    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed.extend(parser.parse_overrides([text]))
        except HydraException as error:
            # Hydra's lines around the reason repeat the override and link its grammar's page.
            reasons = [
                line
                for line in str(error).splitlines()
                if not line.startswith(("Error parsing override", "See https://"))
            ]
            reason = reasons[0] if reasons else "unreadable"
            raise ConfigError(
                f"{cut(text)}: not an override like field=value (Hydra: {reason})"
            ) from error
    fixed: list[str] = []
    group_sweeps: list[list[str]] = []
    field_sweeps: list[tuple[str, bool, list[Any]]] = []
    for override, text in zip(parsed, overrides, strict=True):
        key = override.get_key_element()
        rule = HYDRA_FIELD_RULES.get(override.key_or_group)
        # A deletion falls back to the plugin's default; an interpolation resolves later.
        if rule is not None and not override.is_delete() and "${" not in text:
            for value in (
                override.sweep_iterator() if override.is_sweep_override() else [override.value()]
            ):
                _apply(rule, override.key_or_group, value)
        if key.lstrip("+~").startswith("hydra"):
            continue
        group = (config_dir / override.key_or_group).is_dir()
        if group and override.is_delete() and override.key_or_group in REQUIRED_SECTIONS:
            section = override.key_or_group
            raise ConfigError(
                f"{text}: every run builds its {section}; choose another with {section}=<one of "
                f"{_group_options(config_dir, section)}>"
            )
        if group and not override.is_delete() and override.value() is None:
            # Hydra itself fails on this with a ValueError from deep inside its defaults list.
            raise ConfigError(
                f"{text}: a config group is dropped with ~{override.key_or_group}, not set to null"
            )
        if not override.is_sweep_override():
            fixed.append(text)
            continue
        try:
            options = list(override.sweep_string_iterator())
            values = list(override.sweep_iterator())
        except HydraException:
            continue  # glob(), interval(): only Hydra's sweeper expands them; checked per job
        if group:
            group_sweeps.append([f"{key}={option}" for option in options])
        else:
            fixed.append(f"{key}={options[0]}")
            field_sweeps.append((override.key_or_group, override.is_add(), values))
    swept = [
        text
        for override, text in zip(parsed, overrides, strict=True)
        if override.is_sweep_override()
    ]
    if swept and not is_multirun(arguments):
        first = [*fixed, *(options[0] for options in group_sweeps)]
        if not _config_is_multirun(first, config_dir, config_name):
            # Hydra would answer with five lines of its own and exit code 1.
            raise ConfigError(
                f"{swept[0]}: several values are a sweep; add -m (--multirun) to run a job for "
                "each, or write a list as [a,b]"
            )
    added = [
        o.key_or_group for o in parsed if o.is_add() and not o.key_or_group.startswith("hydra")
    ]
    for groups in itertools.product(*group_sweeps):
        cfg = _compose([*fixed, *groups], config_dir, config_name)
        validate_config(cfg)
        check_added_fields(cfg, added)
        for combination in _field_combinations(field_sweeps):
            variant = cfg.copy()
            for key, is_add, value in combination:
                if key in FIELD_RULES:
                    _apply(FIELD_RULES[key], key, value)
                OmegaConf.update(variant, key, value, force_add=is_add)
            validate_config(variant)
    if is_multirun(arguments) or group_sweeps or field_sweeps:
        return None
    return cfg


def _config_is_multirun(overrides: list[str], config_dir: Path, config_name: str) -> bool:
    """Whether the config itself runs a multirun (``hydra.mode``, as ``hparams_search`` sets
    it), so that a command line sweeps without ``-m``."""
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        try:
            cfg = compose(config_name, overrides=overrides, return_hydra_config=True)
        except (HydraException, OmegaConfBaseException):
            return True  # not known: the checks that compose every job say what is wrong
    return OmegaConf.select(cfg, "hydra.mode", default=None) == RunMode.MULTIRUN


def check_added_fields(cfg: DictConfig, added: list[str]) -> None:
    """A field added with ``+section.field=...`` to a section that builds an object
    (``_target_``) must be an argument of that object's constructor: checked here, not after
    the run's folder is made. The data configs list every argument of their data module (a
    test holds them to it), so a data field is checked against its config: importing a data
    module loads Lightning (seconds). Other targets are checked by their signature."""
    from hydra.utils import get_method

    for key in added:
        section, _, field = key.rpartition(".")
        target = _get(cfg, f"{section}._target_") if section else None
        if target is None or field == "_target_":  # the class itself, as a new section names it
            continue
        if section == "data":
            known = [name for name in cfg.data if name != "_target_" and name != field]
        else:
            try:
                known = constructor_arguments(get_method(str(target)))
            except (ImportError, ValueError, TypeError):
                continue  # the constructor itself will say what is wrong
        if known is not None and field not in known:
            raise ConfigError(f"+{key}: {target} takes no argument {field!r}; it takes {known}")


def constructor_arguments(target: Any) -> list[str] | None:
    """The keyword arguments ``target`` accepts, following a class's ``**kwargs`` up to the
    ``__init__`` of its bases that receive them; None where any name is accepted."""
    import inspect

    functions = (
        [cls.__dict__["__init__"] for cls in target.__mro__ if "__init__" in cls.__dict__]
        if inspect.isclass(target)
        else [target]
    )
    names: list[str] = []
    for function in functions:
        parameters = inspect.signature(function).parameters.values()
        names += [p.name for p in parameters if p.name != "self" and p.kind is not p.VAR_KEYWORD]
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            return names
    return None


def _field_combinations(
    field_sweeps: list[tuple[str, bool, list[Any]]],
) -> list[list[tuple[str, bool, Any]]]:
    """Every combination of the swept fields' values, or each value of each field alone where
    the combinations are too many to check in a blink."""
    choices = [[(key, is_add, value) for value in values] for key, is_add, values in field_sweeps]
    if math.prod(len(c) for c in choices) <= MAX_CHECKED_COMBINATIONS:
        return [list(combination) for combination in itertools.product(*choices)]
    return [[choice] for field in choices for choice in field]
