"""Checks of a run's config that need neither torch nor Lightning, so bad input fails in a blink.

``check_command_line`` composes the config exactly as Hydra will (every group choice of a sweep)
and ``validate_config`` checks each user-facing field against ``FIELD_RULES``. Constructors keep
their own checks for library users; these run first so that the command line need not import
torch (seconds) to say that a number is out of range.
"""

import difflib
import itertools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from nalu.errors import ConfigError, InvalidArgument
from nalu.value_range import value_intervals

# torch.manual_seed and Lightning's seed_everything take seeds in this range; Lightning replaces
# an out-of-range seed by a random one with only a warning, so the run would not be reproducible.
MAX_SEED = 2**32 - 1

Rule = Callable[[str, Any], None]


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def integer_at_least(minimum: int) -> Rule:
    allowed = "must be a positive integer" if minimum == 1 else f"must be an integer >= {minimum}"

    def rule(name: str, value: Any) -> None:
        if not (_is_integer(value) and value >= minimum):
            raise InvalidArgument(name, value, allowed)

    return rule


def seed(name: str, value: Any) -> None:
    if not (_is_integer(value) and 0 <= value <= MAX_SEED):
        raise InvalidArgument(name, value, f"must be an integer in [0, {MAX_SEED}]")


def positive_number(name: str, value: Any) -> None:
    if not (_is_number(value) and value > 0):
        raise InvalidArgument(name, value, "must be a finite number > 0")


def non_negative_number(name: str, value: Any) -> None:
    if not (_is_number(value) and value >= 0):
        raise InvalidArgument(name, value, "must be a finite number >= 0")


def boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise InvalidArgument(name, value, "must be true or false")


def value_range(name: str, value: Any) -> None:
    value_intervals(name, value)  # the data module's own rule


def adam_betas(name: str, value: Any) -> None:
    if not (
        isinstance(value, list | tuple)
        and len(value) == 2
        and all(_is_number(beta) and 0 <= beta < 1 for beta in value)
    ):
        raise InvalidArgument(name, value, "must be [beta1, beta2], each in [0, 1)")


def optional(rule: Rule) -> Rule:
    def optional_rule(name: str, value: Any) -> None:
        if value is not None:
            rule(name, value)

    return optional_rule


def existing_file(name: str, value: Any) -> None:
    if not Path(str(value)).is_file():
        raise InvalidArgument(name, value, "no such checkpoint file")


_ABSENT = object()


# Every user-facing field with a rule; a field absent from the chosen config is not checked.
FIELD_RULES: dict[str, Rule] = {
    "seed": seed,
    "population": integer_at_least(1),
    "regularizer.scale": non_negative_number,
    "ckpt_path": optional(existing_file),
    "data.in_features": integer_at_least(2),
    "data.out_features": integer_at_least(1),
    "data.problem_seed": seed,
    "data.min_abs_denominator": positive_number,
    **{f"data.{split}_size": integer_at_least(1) for split in ("train", "interp", "extrap")},
    **{f"data.{split}_range": value_range for split in ("train", "interp", "extrap")},
    **{f"data.{split}_seed": seed for split in ("train", "interp", "extrap", "shuffle")},
    "data.batch_size": integer_at_least(1),
    "data.eval_batch_size": optional(integer_at_least(1)),
    "data.resample": boolean,
    "model.eps": positive_number,
    "model.shared_weights": boolean,
    "model.gate_bias": boolean,
    "optimizer.lr": positive_number,
    "optimizer.eps": positive_number,
    "optimizer.momentum": non_negative_number,
    "optimizer.weight_decay": non_negative_number,
    "optimizer.betas": adam_betas,
    "trainer.max_epochs": integer_at_least(1),
    "trainer.check_val_every_n_epoch": optional(integer_at_least(1)),
    "trainer.log_every_n_steps": integer_at_least(1),
    "trainer.deterministic": boolean,
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


def _apply(rule: Rule, key: str, value: Any) -> None:
    try:
        rule(key, value)
    except InvalidArgument as error:
        raise ConfigError(str(error)) from error


def validate_config(cfg: DictConfig) -> None:
    """Raise a one-line ``ConfigError`` for the first field that breaks its rule."""
    for key, rule in FIELD_RULES.items():
        if (value := _value(cfg, key)) is not _ABSENT:
            _apply(rule, key, value)
    for model_key, data_key in MATCHING_FIELDS.items():
        model_value, data_value = _value(cfg, model_key), _value(cfg, data_key)
        if model_value is not _ABSENT and model_value != data_value:
            raise ConfigError(
                f"{model_key}={model_value!r}: must equal {data_key}={data_value!r}, "
                "the problem's size"
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
        parent, _, field = str(cause.full_key).rpartition(".")
        siblings = list(cause.parent_node.keys()) if cause.parent_node is not None else []
        close = difflib.get_close_matches(field, [str(key) for key in siblings], n=1)
        hint = f"; did you mean {close[0]}?" if close else ""
        where = parent or "the config"
        return ConfigError(
            f"{override}: {where} has no field {field!r}{hint} (+{override} adds a new field)"
        )
    return ConfigError(" ".join(str(error).splitlines()[:2]))


def _compose(overrides: list[str], config_dir: Path) -> DictConfig:
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        try:
            return compose("train", overrides=overrides)
        except (HydraException, OmegaConfBaseException) as error:
            cause = error.__cause__
            full_key = getattr(cause, "full_key", None)
            culprit = next(
                (o for o in overrides if full_key and o.lstrip("+~").startswith(f"{full_key}=")),
                None,
            )
            raise _composition_error(error, culprit) from error


def check_command_line(arguments: list[str], config_dir: Path) -> None:
    """Compose and validate every configuration a command line would run, before Hydra runs it.

    A sweep composes once per combination of swept group options, and each swept field value is
    checked on that config, so a sweep with one bad job fails before its first job starts.
    Hydra's own flags (``--cfg``, ``--help``, ...) are left to Hydra.
    """
    if any(arg.startswith("-") and arg not in ("-m", "--multirun") for arg in arguments):
        return
    overrides = [arg for arg in arguments if not arg.startswith("-")]
    check_group_choices(overrides, config_dir)
    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed.extend(parser.parse_overrides([text]))
        except HydraException as error:
            reason = str(error).splitlines()[1:2] or ["unreadable"]
            raise ConfigError(
                f"{text}: not an override like field=value (Hydra: {reason[0]})"
            ) from error
    fixed: list[str] = []
    group_sweeps: list[list[str]] = []
    field_sweeps: list[tuple[str, list[Any]]] = []
    for override, text in zip(parsed, overrides, strict=True):
        key = override.get_key_element()
        if key.lstrip("+~").startswith("hydra"):
            continue
        group = (config_dir / override.key_or_group).is_dir()
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
        if (config_dir / override.key_or_group).is_dir():
            group_sweeps.append([f"{key}={option}" for option in options])
        else:
            fixed.append(f"{key}={options[0]}")
            field_sweeps.append((override.key_or_group, values))
    for groups in itertools.product(*group_sweeps):
        cfg = _compose([*fixed, *groups], config_dir)
        validate_config(cfg)
        for key, values in field_sweeps:
            for value in values:
                if key in FIELD_RULES:
                    _apply(FIELD_RULES[key], key, value)
                if key in {*MATCHING_FIELDS, *MATCHING_FIELDS.values()}:
                    variant = cfg.copy()
                    OmegaConf.update(variant, key, value)
                    validate_config(variant)
