"""The rules of the user-facing fields, in one place: the command-line check of a config
(``nalu.config.validation``, before torch loads) and the constructors (problems, data modules)
call the same functions. Torch-free. A rule raises ``InvalidArgument`` naming the field and what is
allowed."""

import inspect
import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nalu.config.errors import InvalidArgument

Rule = Callable[[str, Any], None]

# torch.manual_seed and Lightning's seed_everything take seeds in this range; Lightning replaces
# an out-of-range seed by a random one with only a warning, so the run would not be reproducible.
MAX_SEED = 2**32 - 1
# The operations of each problem family, by name.
MYSTERY_OPERATIONS = ("add", "sub", "mul", "div")
STATIC_OPERATIONS = ("add", "sub", "mul", "div", "square", "sqrt")
# A problem's sets, by name: training, interpolation (validation), extrapolation (test).
SPLITS = ("train", "interp", "extrap")
# Whose near-perfect model sets the success threshold: Madsen & Johansen 2020 (its weights off
# by ε) or Mistry et al. 2022 (its output off by ε, for + − × ÷).
NEAR_PERFECT_MODELS = ("madsen_johansen", "mistry")
MADSEN_JOHANSEN, MISTRY = NEAR_PERFECT_MODELS  # Madsen & Johansen's is the default
# Madsen & Johansen 2020, sec. 4.1: the near-perfect model is off by ε = 1e-5; Mistry et al.
# 2022's table of settings says 1e-5 too (their threshold script uses 1e-4, a looser test).
SUCCESS_EPSILON = 1e-5
# The data fields that define a problem (the rest say how its sets are drawn).
PROBLEM_FIELDS = (
    "_target_", "problem_seed", "in_features", "out_features", "operations", "subset_ratio",
    "overlap_ratio",
)  # fmt: skip


def problem_differences(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """The ``PROBLEM_FIELDS`` in which two data configs differ: none when they pose the same
    problem (the rest of a data config says how its sets are drawn)."""
    return [field for field in PROBLEM_FIELDS if before.get(field) != after.get(field)]


# A set's samples × inputs: beyond this a set does not fit in memory (4 bytes a value: 8 GiB).
MAX_SET_VALUES = 2**31
# Targets and inputs stay below this magnitude, so that a squared error is finite in float32
# (3.4e38): a larger target ends a run as diverged at its first step.
MAX_TARGET_MAGNITUDE = 1e18


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float (an int too large for a float, e.g. 10**400, is not)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(float(value))
    except OverflowError:
        return False


def integer_at_least(minimum: int) -> Rule:
    allowed = "must be a positive integer" if minimum == 1 else f"must be an integer >= {minimum}"

    def rule(name: str, value: Any) -> None:
        if not (is_integer(value) and value >= minimum):
            raise InvalidArgument(name, value, allowed)

    return rule


def seed(name: str, value: Any) -> None:
    if not (is_integer(value) and 0 <= value <= MAX_SEED):
        raise InvalidArgument(name, value, f"must be an integer in [0, {MAX_SEED}]")


def positive_number(name: str, value: Any) -> None:
    if not (is_number(value) and value > 0):
        raise InvalidArgument(name, value, "must be a finite number > 0")


def logarithm_base(name: str, value: Any) -> None:
    if not (is_number(value) and value > 1):
        raise InvalidArgument(name, value, "must be a finite number > 1 (a logarithm's base)")


def non_negative_number(name: str, value: Any) -> None:
    if not (is_number(value) and value >= 0):
        raise InvalidArgument(name, value, "must be a finite number >= 0")


def boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise InvalidArgument(name, value, "must be true or false")


def optional(rule: Rule) -> Rule:
    def optional_rule(name: str, value: Any) -> None:
        if value is not None:
            rule(name, value)

    return optional_rule


def operations(allowed: Sequence[str]) -> Rule:
    """A list of at least one operation, each one of ``allowed`` (lower case), none repeated."""
    names = list(allowed)

    def rule(name: str, value: Any) -> None:
        if not is_sequence(value):
            raise InvalidArgument(name, value, f"must be a list of operations, e.g. {names[:2]}")
        if not value:
            raise InvalidArgument(name, list(value), f"name at least one of {names}")
        for operation in value:
            if operation not in names:
                raise InvalidArgument(name, list(value), f"{operation!r} is not one of {names}")
        if len(set(value)) != len(value):
            raise InvalidArgument(name, list(value), "must not repeat an operation")

    return rule


def fraction(name: str, value: Any) -> None:
    """A share of something, in [0, 1]."""
    if not (is_number(value) and 0 <= value <= 1):
        raise InvalidArgument(name, value, "must be a number in [0, 1]")


def fraction_below_one(name: str, value: Any) -> None:
    """A share of something that cannot be all of it, in [0, 1)."""
    if not (is_number(value) and 0 <= value < 1):
        raise InvalidArgument(name, value, "must be a number in [0, 1)")


def is_sequence(value: Any) -> bool:
    """A list, a tuple or a config's list (not a string)."""
    return isinstance(value, Sequence) and not isinstance(value, str)


def is_number_pair(value: Any) -> bool:
    return is_sequence(value) and len(value) == 2 and all(map(is_number, value))


def adam_betas(name: str, value: Any) -> None:
    if not (is_number_pair(value) and all(0 <= beta < 1 for beta in value)):
        raise InvalidArgument(name, value, "must be [beta1, beta2], each in [0, 1)")


def unit_interval_pair(name: str, value: Any) -> None:
    """``[low, high]`` with 0 <= low <= high <= 1 (an NMU weight's range)."""
    if not (is_number_pair(value) and 0 <= value[0] <= value[1] <= 1):
        raise InvalidArgument(name, value, "must be [low, high] in [0, 1]")


def positive_pair(name: str, value: Any) -> None:
    """``[low, high]`` with 0 < low <= high (noise that never flips or zeroes a factor)."""
    if not (is_number_pair(value) and 0 < value[0] <= value[1]):
        raise InvalidArgument(name, value, "must be [low, high] with 0 < low <= high")


def subset_ratio(name: str, value: Any) -> None:
    """The static task's |A| / in_features: two subsets must fit, overlapping or not."""
    if not (is_number(value) and 0 < value <= 0.5):
        raise InvalidArgument(name, value, "must be in (0, 0.5]")


def torch_activation(name: str, value: Any) -> None:
    """The name of a ``torch.nn`` activation module (imports torch: for the MLPs' field only)."""
    from torch import nn

    found = getattr(nn, value, None) if isinstance(value, str) else None
    # The MLP builds it without arguments: a module that needs some (Linear) is no activation.
    if not (
        isinstance(found, type)
        and issubclass(found, nn.Module)
        and all(
            parameter.default is not parameter.empty
            or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
            for parameter in inspect.signature(found).parameters.values()
        )
    ):
        raise InvalidArgument(
            name, value, "must name a torch.nn activation such as ReLU, Tanh, GELU"
        )


def optuna_direction(name: str, value: Any) -> None:
    """Optuna's direction of a study: minimize or maximize (a list of them for several
    objectives)."""
    allowed = ("minimize", "maximize")
    directions = value if is_sequence(value) else [value]
    if not (directions and all(d in allowed for d in directions)):
        raise InvalidArgument(name, value, f"must be one of {list(allowed)} (or a list of them)")


def study_storage(name: str, value: Any) -> None:
    """Optuna's storage: null (in memory), or a database URL whose SQLite file's folder
    exists."""
    if value is None:
        return
    scheme, separator, rest = str(value).partition("://")
    if not (isinstance(value, str) and scheme and separator):
        raise InvalidArgument(
            name, value, "must be null or a database URL such as sqlite:///outputs/optuna.db"
        )
    if scheme == "sqlite" and rest.startswith("/"):
        folder = os.path.dirname(rest[1:]) or "."
        if not os.path.isdir(folder):
            raise InvalidArgument(
                name, value, f"the folder {folder!r} does not exist; make it first"
            )


def joblib_jobs(name: str, value: Any) -> None:
    """joblib's n_jobs: a count of processes, -1 for every core (-2 all but one, ...), or
    null (one)."""
    if not (value is None or (is_integer(value) and value != 0)):
        raise InvalidArgument(
            name, value, "must be a count of processes, -1 for every core (-2 all but one), or null"
        )


def layer_sizes(name: str, value: Any) -> None:
    if not (is_sequence(value) and all(is_integer(v) and v >= 1 for v in value)):
        raise InvalidArgument(name, value, "must be a list of positive integers, e.g. [64, 64]")


def devices(name: str, value: Any) -> None:
    """Lightning's ``devices``: a count, -1 or "auto" for all, or a list of device indices."""
    if value == "auto" or (is_integer(value) and (value >= 1 or value == -1)):
        return
    if isinstance(value, list | tuple) and value and all(is_integer(v) and v >= 0 for v in value):
        return
    raise InvalidArgument(name, value, 'must be a count >= 1, -1 or "auto" (all), or [indices]')


ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
# Lightning's precision settings.
PRECISIONS = (64, 32, 16, "64", "32", "16", "64-true", "32-true", "16-true", "bf16-true",
              "16-mixed", "bf16-mixed", "bf16", "transformer-engine")  # fmt: skip
CLIP_ALGORITHMS = ("norm", "value")


def precision(name: str, value: Any) -> None:
    if value not in PRECISIONS:
        raise InvalidArgument(name, value, f"must be one of {list(PRECISIONS[3:])}")


def clip_algorithm(name: str, value: Any) -> None:
    if value is not None and value not in CLIP_ALGORITHMS:
        raise InvalidArgument(name, value, f"must be one of {list(CLIP_ALGORITHMS)}")


def one_batch_per_step(name: str, value: Any) -> None:
    """Gradient accumulation: the training module takes one optimizer step per batch."""
    if value != 1:
        raise InvalidArgument(
            name, value, "must be 1: each optimizer step takes one batch (raise data.batch_size)"
        )


def max_steps(name: str, value: Any) -> None:
    if not (is_integer(value) and (value >= 1 or value == -1)):
        raise InvalidArgument(name, value, "must be a positive integer, or -1 for no limit")


# How a NAC's latent weights Ŵ and M̂ start: Xavier-uniform (the article's code) or on the
# range that gives W = tanh(Ŵ)·σ(M̂) Glorot's variance (Madsen & Johansen's and the primer's code).
NAC_INITS = ("xavier", "variance_matched")


def nac_init(name: str, value: Any) -> None:
    if value not in NAC_INITS:
        raise InvalidArgument(name, value, f"must be one of {list(NAC_INITS)}")


def near_perfect(name: str, value: Any) -> None:
    if value not in NEAR_PERFECT_MODELS:
        raise InvalidArgument(name, value, f"must be one of {list(NEAR_PERFECT_MODELS)}")


def near_perfect_fits(
    name: str, value: Any, chosen: Sequence[str], in_features: int | None = None
) -> None:
    """Mistry et al.'s near-perfect model is defined for + − × ÷ of two inputs only (their
    output a ∘ b off by ε; their script's terms for other inputs are not modelled)."""
    if value != MISTRY:
        return
    undefined = [operation for operation in chosen if operation not in MYSTERY_OPERATIONS]
    if undefined:
        raise InvalidArgument(
            name, value, f"defines + − × ÷ only, not {undefined}; use {MADSEN_JOHANSEN}"
        )
    if in_features is not None and in_features != 2:
        raise InvalidArgument(
            name,
            value,
            f"defines the two-input task y = a ∘ b only, not data.in_features={in_features}; "
            f"use {MADSEN_JOHANSEN}",
        )


def accelerator(name: str, value: Any) -> None:
    if value not in ACCELERATORS:
        raise InvalidArgument(name, value, f"must be one of {list(ACCELERATORS)}")


def target_magnitude(operation: str, operand: float, min_abs_denominator: float) -> float:
    """A bound on |target| of ``operation`` on operands of magnitude at most ``operand``."""
    # Interval arithmetic (this project's own): |a ± b| ≤ 2m, |ab|, a² ≤ m², |a / b| ≤ m / d
    # for |b| ≥ d, √a ≤ √m.
    return {
        "add": 2 * operand,
        "sub": 2 * operand,
        "mul": operand * operand,
        "square": operand * operand,
        "div": operand / min_abs_denominator,
        "sqrt": math.sqrt(operand),
    }[operation]


def growth_factor(name: str, value: Any) -> None:
    if value is not None and not (is_number(value) and value > 1):
        raise InvalidArgument(name, value, "must be null (a linear ramp) or a number > 1")


def regularizer_schedule(
    scale: Any,
    start: Any,
    end: Any,
    initial: Any = 0.0,
    growth: Any = None,
    factor: Any = 1.0,
    section: str = "",
) -> None:
    """The fields of a regulariser's schedule (``training.regularizer.RegularizerSchedule``)
    together, each valid alone (``TRAINING_RULES``): λ goes from ``initial`` at ``start`` to
    ``scale`` at ``end``, linearly or by jumps of ×``growth``; ``factor``, which scales it all,
    ties to no other field. ``section`` prefixes the names (``regularizer.``)."""
    if start > end:
        raise InvalidArgument(f"{section}start", start, f"must be at most {section}end={end}")
    if initial > scale:
        raise InvalidArgument(
            f"{section}initial", initial, f"must be at most {section}scale={scale}"
        )
    if growth is not None and initial == 0:
        raise InvalidArgument(
            f"{section}initial",
            initial,
            f"must be > 0 for λ to grow ×{growth} at a time up to {section}scale",
        )


def positive_scales(name: str, value: Any) -> None:
    """Factors by name, each a finite number > 0 (a selection's per-head learning rates)."""
    if value is None:
        return
    if not (isinstance(value, Mapping) and all(is_number(v) and v > 0 for v in value.values())):
        raise InvalidArgument(name, value, "must map names to finite numbers > 0")


def names(name: str, value: Any) -> None:
    """A list of names (strings), e.g. a selection's heads."""
    if not (is_sequence(value) and all(isinstance(v, str) for v in value)):
        raise InvalidArgument(name, value, "must be a list of names")


# The units with a ``log_magnitude`` (``nalu.units.contract.HasLogMagnitude``), by class name:
# the heads a selection may fit in log space, known here without importing torch.
LOG_MAGNITUDE_UNITS = ("NeuralMultiplicationUnit", "NeuralMultiplicativeReciprocalUnit")


def selection_heads(
    heads: Sequence[str], products: Sequence[str], learning_rate_scales: Any, log_fit: Any
) -> None:
    """A selection has heads, its ``learning_rate_scales`` and ``log_fit`` name them, and a
    head fitted in log space is one of the ``products`` (the heads with a log magnitude)."""
    if not heads:
        raise InvalidArgument("heads", {}, "must name at least one head")
    for name, named in (("learning_rate_scales", learning_rate_scales or {}), ("log_fit", log_fit)):
        if not set(named) <= set(heads):
            raise InvalidArgument(name, named, f"must name heads among {sorted(heads)}")
    if not set(log_fit) <= set(products):
        raise InvalidArgument(
            "log_fit",
            list(log_fit),
            f"a head fitted in log space must have a log_magnitude: choose among {list(products)}",
        )


def value_range(name: str, value: Any) -> None:
    """``[low, high]`` or a union of such intervals (``nalu.config.value_range``)."""
    from nalu.config.value_range import value_intervals  # that module builds on this one

    value_intervals(name, value)


def static_subset_size(in_features: Any, subset_ratio: Any, section: str = "") -> int:
    """The static task's subset size |A| = ⌊subset_ratio · in_features⌋, at least 1.
    ``section`` prefixes the names (``data.``)."""
    size = math.floor(subset_ratio * in_features)
    if size < 1:
        raise InvalidArgument(
            f"{section}in_features",
            in_features,
            f"leaves an empty subset at {section}subset_ratio={subset_ratio}; raise either",
        )
    return size


def one_output_per_operation(
    out_features: Any, operations: Sequence[str], section: str = ""
) -> None:
    """The static task's outputs, when given: one per operation. ``section`` prefixes the
    names (``data.``)."""
    if out_features is not None and out_features != len(operations):
        raise InvalidArgument(
            f"{section}out_features",
            out_features,
            f"must equal the number of operations ({len(operations)})",
        )


def member_seeds(seed: int, population: int) -> range:
    """The seeds of a population's members: member k is the single run of seed ``seed + k``."""
    return range(seed, seed + population)


def population_in_one_process(population: int, processes: int, devices: Any) -> None:
    """A population trains in one process: its members share each step. ``processes`` is how
    many ``trainer.devices`` (``devices``) would start."""
    if population > 1 and processes > 1:
        raise InvalidArgument(
            "trainer.devices",
            devices,
            f"a population (population={population}) trains in one process; use "
            "trainer.devices=1, or a sweep for several devices",
        )


# The argument rules of the units (``nalu.units``), by class name.
UNIT_RULES: dict[str, dict[str, Rule]] = {
    "NeuralAccumulator": {"base": logarithm_base, "init": nac_init},
    "MultiplicativeNeuralAccumulator": {"eps": positive_number, "init": nac_init},
    "NeuralArithmeticLogicUnit": {
        "shared_weights": boolean,
        "gate_bias": boolean,
        "eps": positive_number,
        "base": logarithm_base,
        "nac_init": nac_init,
    },
    "ImprovedNeuralArithmeticLogicUnit": {
        "input_independent_gate": boolean,
        "max_log_magnitude": positive_number,
        "eps": positive_number,
        "saturation": positive_number,
    },
    "GatedAdditionMultiplicationUnit": {
        "nmu_init_range": unit_interval_pair,
        "max_log_magnitude": positive_number,
        "exact_gate": boolean,
    },
    "NeuralMultiplicationUnit": {
        "init_range": unit_interval_pair,
        "max_log_magnitude": positive_number,
        "noise_range": optional(positive_pair),
    },
    "NeuralMultiplicativeReciprocalUnit": {
        "init_range": unit_interval_pair,
        "max_log_magnitude": positive_number,
        "noise_range": optional(positive_pair),
        "sign_retrieval": boolean,
        "reciprocal_floor": positive_number,
    },
    "NeuralPowerUnit": {"complex_weight": boolean, "eps": positive_number},
    "PerOutputSelection": {
        "restarts": integer_at_least(1),
        "learning_rate_scales": positive_scales,
        "log_fit": names,
    },
    "MLP": {"hidden_features": layer_sizes, "activation": torch_activation},
}


# The problems' (``nalu.data.problem``), by class name.
PROBLEM_RULES: dict[str, dict[str, Rule]] = {
    "MysteryArithmeticProblem": {
        "in_features": integer_at_least(2),
        "out_features": integer_at_least(1),
        "operations": operations(MYSTERY_OPERATIONS),
        "problem_seed": seed,
        "min_abs_denominator": positive_number,
    },
    "StaticArithmeticProblem": {
        "in_features": integer_at_least(2),
        "operations": operations(STATIC_OPERATIONS),
        "subset_ratio": subset_ratio,
        # |A ∩ B| / |A|: below 1, or A and B would be the same sum.
        "overlap_ratio": fraction_below_one,
        "problem_seed": seed,
        "near_perfect": near_perfect,
    },
}
# How a problem's sets are drawn: ``ProblemDataModule``'s.
SET_RULES: dict[str, Rule] = {
    **{f"{split}_size": integer_at_least(1) for split in SPLITS},
    **{f"{split}_range": value_range for split in SPLITS},
    **{f"{split}_seed": seed for split in SPLITS},
    "batch_size": integer_at_least(1),
    "eval_batch_size": optional(integer_at_least(1)),
    "shuffle_seed": seed,
    "resample": boolean,
}
# The training's schedules and rules (``nalu.training``), by class name; a run's config holds
# them in its ``regularizer``, ``stall_restart`` and ``lr_schedule`` sections.
TRAINING_RULES: dict[str, dict[str, Rule]] = {
    "RegularizerSchedule": {
        "scale": non_negative_number,
        "start": fraction,
        "end": fraction,
        "initial": non_negative_number,
        "growth": growth_factor,
        "factor": non_negative_number,
    },
    "StallRule": {"validations": integer_at_least(2), "loss_above": non_negative_number},
    "LinearDecay": {"start": fraction_below_one, "end_factor": fraction},
}
# The argument rules of each class that has some, by class name (a config's ``_target_`` is
# ``nalu.<package>.<name>``, or the class through its own module). The class's constructor
# (``check_arguments``) and the command-line check, which finds every such ``_target_`` of a
# config's model and data, nested layers and heads too (``argument_rules``), apply the same
# rules. A class not listed here, a user's own unit for one, is checked by its constructor alone.
ARGUMENT_RULES: dict[str, dict[str, Rule]] = {
    **UNIT_RULES,
    **PROBLEM_RULES,
    **TRAINING_RULES,
    "ProblemDataModule": SET_RULES,
    # A data module's arguments are its problem's and its sets'.
    "ArithmeticDataModule": {**PROBLEM_RULES["MysteryArithmeticProblem"], **SET_RULES},
    "StaticArithmeticDataModule": {**PROBLEM_RULES["StaticArithmeticProblem"], **SET_RULES},
}


def argument_rules(target: str) -> dict[str, Rule]:
    """The argument rules of the class a config's ``_target_`` names; none for another's."""
    module, _, name = target.rpartition(".")
    return ARGUMENT_RULES.get(name, {}) if module.split(".")[0] == "nalu" else {}


def selection_config(arguments: Mapping[str, Any]) -> None:
    """``selection_heads`` on a selection's config, torch-free: whether a head has a log
    magnitude is read from its class's name (``LOG_MAGNITUDE_UNITS``; a class of the user's own
    may have one)."""
    heads = arguments.get("heads")
    if not isinstance(heads, Mapping):
        raise InvalidArgument("heads", heads, "must map each head's name to its unit's config")
    products = []
    for name, head in heads.items():
        if not isinstance(head, Mapping):
            raise InvalidArgument(
                f"heads.{name}", head, f"must be a unit's config (heads.{name}._target_=...)"
            )
        module, _, unit = str(head.get("_target_", "")).rpartition(".")
        if unit in LOG_MAGNITUDE_UNITS or module.split(".")[0] != "nalu":
            products.append(name)
    log_fit = arguments.get("log_fit") or []
    selection_heads(list(heads), products, arguments.get("learning_rate_scales"), log_fit)


# Checks of a class's arguments together, on its config, by class name.
CONFIG_CHECKS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "PerOutputSelection": selection_config
}


def config_check(target: str) -> Callable[[Mapping[str, Any]], None] | None:
    """The check of the arguments together of the class a config's ``_target_`` names."""
    module, _, name = target.rpartition(".")
    return CONFIG_CHECKS.get(name) if module.split(".")[0] == "nalu" else None


def check_arguments(owner: str, **arguments: Any) -> None:
    """A constructor applies its class's rules (``ARGUMENT_RULES[owner]``) to its
    ``arguments``, which name every field the rules have."""
    for name, rule in ARGUMENT_RULES[owner].items():
        rule(name, arguments[name])
