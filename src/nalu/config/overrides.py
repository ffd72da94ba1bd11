"""A command line's overrides as Hydra reads them: which fields it sets and sweeps, to what, and
which of them set what a run trains (its hyperparameters)."""

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override

# Config groups that say where and how a run is written, not what it trains.
NOT_HYPERPARAMETERS = ("hydra", "callbacks", "logger", "paths")
MULTIRUN_FLAGS = ("-m", "--multirun")


def is_multirun(arguments: Iterable[str]) -> bool:
    """Whether a command line asks Hydra for a multirun: ``-m`` or ``hydra.mode=MULTIRUN``."""
    arguments = list(arguments)
    flagged = any(argument in MULTIRUN_FLAGS for argument in arguments)
    return flagged or given_value(arguments, "hydra.mode") == "MULTIRUN"


def is_hyperparameter(field: str) -> bool:
    """Whether a command line's ``field`` sets what a run trains, not where and how it is
    written or what it resumes from (``ckpt_path``)."""
    return not field.startswith(NOT_HYPERPARAMETERS) and field != "ckpt_path"


def parsed_overrides(arguments: Iterable[str]) -> list["Override"]:
    """A command line's overrides (its flags left out) as Hydra parses them; none where they
    do not parse (the command line's own check refuses them, naming the override)."""
    try:
        return OverridesParser.create().parse_overrides(
            [argument for argument in arguments if not argument.startswith("-")]
        )
    except HydraException:
        return []


def given_value(arguments: Iterable[str], field: str) -> str | None:
    """The last value a command line gives ``field``, as Hydra parses it (a quoted path without
    its quotes); None where it gives none, or does not parse."""
    given = [str(o.value()) for o in parsed_overrides(arguments) if o.key_or_group == field]
    return given[-1] if given else None


def swept_on_command_line(arguments: Iterable[str]) -> list[str]:
    """The fields that a command line sweeps (``field=a,b``, ``field=range(...)``, ...)."""
    return [o.key_or_group for o in parsed_overrides(arguments) if o.is_sweep_override()]


def hyperparameter_values(overrides: Iterable[str]) -> dict[str, Any]:
    """``{field: value}`` of a job's overrides (Hydra's ``overrides.task``, a run's
    ``.hydra/overrides.yaml``) that set a hyperparameter, values as Hydra reads them (``1e-3``
    and ``0.001`` alike, a quoted text without its quotes); a deletion (``~field``) sets no
    value and is left out, an override Hydra cannot read is kept as its text."""
    parser = OverridesParser.create()
    values = {}
    for text in overrides:
        if text.startswith("~"):
            continue
        try:
            (override,) = parser.parse_overrides([text])
            field, value = override.key_or_group, override.value()
        except HydraException:
            field, _, value = text.lstrip("+").partition("=")
        if is_hyperparameter(field):
            values[field] = value
    return values


def short_value(value: Any) -> str:
    """A value as a job's folder name and a report's rows show it: a list as typed
    (``[add,sub]``), a sampled float (Optuna's) to 3 significant digits."""
    if isinstance(value, list):
        return f"[{','.join(short_value(item) for item in value)}]"
    text = str(value)
    if isinstance(value, float) and not value.is_integer() and len(text) > 8:
        return f"{value:.3g}"
    return text


def distinct_short(full: list[str], short: list[str]) -> list[str]:
    """Names in their ``short`` forms (``short_value``'s), where those tell as many apart as the
    ``full`` ones; else the ``full`` ones (two sampled rates alike in their first digits)."""
    return short if len(set(short)) == len(set(full)) else full


def is_seed(field: str) -> bool:
    """Whether a command line's ``field`` sets a seed: what a report's rows and a sweep's best
    configuration pool over."""
    return field == "seed" or field.endswith("_seed")
