"""The suite every network config in conf/model/ passes: a new unit's yaml is tested here the
moment it exists."""

import copy
import inspect
import re

import pytest
import torch
import torch.nn.functional as F
from conftest import MODEL_CONFIGS, README, compose_config, load_events, read_metrics
from hydra.utils import get_object, instantiate
from omegaconf import OmegaConf

from nalu.cli.train import train
from nalu.results.readback import READERS, read_back
from nalu.training.members import build_network, initialised, network_factory
from nalu.training.regularizer import RegularizerSchedule
from nalu.units.contract import clamped_units, independent_outputs, regularized_units

# The article's problem with division, inputs and targets as large as its extrapolation set.
SIGNED = ["experiment=article_division", "data.in_features=50", "data.out_features=8"]


def network_config(model: str, tmp_path) -> tuple[dict, object]:
    cfg = compose_config([*SIGNED, f"model={model}"], tmp_path)
    return OmegaConf.to_container(cfg.model, resolve=True), cfg


def test_the_readmes_table_of_networks_lists_every_model_config():
    # The suite's parametrisations run over MODEL_CONFIGS; the README names each one a user can
    # choose (`npu` / `realnpu` share a row).
    section = README.read_text(encoding="utf-8").split("## The networks")[1].split("\n\n")[1]
    rows = [line.split("|")[1] for line in section.splitlines()[2:]]
    assert sorted(re.findall(r"`(\w+)`", "".join(rows))) == MODEL_CONFIGS


@pytest.mark.parametrize("model", MODEL_CONFIGS)
def test_forward_and_gradients_are_finite_at_init_on_signed_inputs(model, tmp_path):
    network, cfg = network_config(model, tmp_path)
    data = instantiate(cfg.data)
    data.setup()
    x, y = data.datasets["extrap"].inputs, data.datasets["extrap"].targets  # U[-50, 50]
    for seed in range(3):
        unit = build_network(network, seed)
        output = unit(x)
        F.mse_loss(output, y).backward()
        assert torch.isfinite(output).all(), seed
        assert all(torch.isfinite(p.grad).all() for p in unit.parameters()), seed


@pytest.mark.parametrize("model", MODEL_CONFIGS)
def test_a_members_network_is_the_one_hydra_builds_from_its_seed(model, tmp_path):
    # A population builds its members by calling one factory; each must be exactly what
    # Hydra's instantiate gives under the member's seed, and a module of its own.
    network, _ = network_config(model, tmp_path)
    build = network_factory(network)
    built = [initialised(build, seed) for seed in (0, 1, 0)]
    for seed, unit in zip((0, 1, 0), built, strict=True):
        torch.manual_seed(seed)
        expected = instantiate(network)
        assert repr(unit) == repr(expected)
        assert unit.state_dict().keys() == expected.state_dict().keys()
        for name, value in expected.state_dict().items():
            assert torch.equal(unit.state_dict()[name], value), (seed, name)
    first, second, again = (dict(unit.named_parameters()) for unit in built)
    assert all(first[name] is not again[name] for name in first)
    assert any(not torch.equal(first[name], second[name]) for name in first)


@pytest.mark.parametrize("model", MODEL_CONFIGS)
def test_a_network_of_independent_outputs_answers_output_j_from_row_j_alone(model, tmp_path):
    # What lets the judge take each output at its own best epoch and a round restart it alone:
    # output j's gradient reaches row j of every parameter, and nothing else.
    network, cfg = network_config(model, tmp_path)
    unit = build_network(network, 0)
    if not independent_outputs(unit):
        pytest.skip("its outputs share parameters")
    x = torch.rand(64, cfg.data.in_features) * 4 + 1  # positive, away from 0: every path lives
    for j in range(cfg.data.out_features):
        unit.zero_grad()
        output = unit(x)[:, j]
        output.sum().backward()
        for name, parameter in unit.named_parameters():
            assert parameter.shape[0] == cfg.data.out_features, name  # a row per output
            others = torch.cat([parameter.grad[:j], parameter.grad[j + 1 :]])
            assert not others.any(), (name, j)
        # Row j learns, unless output j is constant over x (a ReLU off everywhere at the start).
        reached = any(parameter.grad[j].any() for parameter in unit.parameters())
        assert reached or output.std() == 0, j


@pytest.mark.parametrize("model", MODEL_CONFIGS)
def test_clamps_and_regularisers_are_honoured(model, tiny_overrides, tmp_path):
    network, cfg = network_config(model, tmp_path)
    built = build_network(network, 0)
    regularized, clamped = bool(regularized_units(built)), bool(clamped_units(built))
    if regularized:
        assert cfg.regularizer.scale > 0, "a unit with regularization() must turn it on"
    if not (regularized or clamped):
        pytest.skip("neither clamped nor regularised")
    overrides = [*tiny_overrides, f"model={model}"]
    overrides += ["optimizer.lr=0.5"] if clamped else []
    run_cfg = compose_config(overrides, tmp_path / "run")
    train(run_cfg)
    if regularized:
        # The config's schedule over the run's 8 steps (TINY: 2 epochs of 4); step k's λ is
        # that of k - 1 steps taken, and each epoch logs the mean of its four.
        schedule = RegularizerSchedule(**run_cfg.regularizer)
        expected = {
            end: sum(schedule(t, total_steps=8) for t in range(end - 4, end)) / 4 for end in (4, 8)
        }
        assert expected[8] > 0
        logged = load_events(tmp_path / "run").Scalars("train/regularizer_scale")
        assert {point.step: point.value for point in logged} == pytest.approx(expected, rel=1e-6)
    if not clamped:
        return
    trained = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    unit = build_network(OmegaConf.to_container(run_cfg.model, resolve=True), 0)
    unit.load_state_dict(
        {
            name.removeprefix("network."): value
            for name, value in trained["state_dict"].items()
            if name.startswith("network.")
        }
    )
    # A large learning rate overshoots: the clamp after every step kept each weight in range,
    # and stopped some of them at a bound.
    before = {name: p.detach().clone() for name, p in unit.named_parameters()}
    for module in clamped_units(unit):
        module.clamp_parameters()
    for name, parameter in unit.named_parameters():
        assert torch.equal(parameter, before[name]), name
    bounded = 0
    for module in clamped_units(unit):
        lows, highs = (clamped_from(module, far) for far in (-1e6, 1e6))
        for name, parameter in module.named_parameters(recurse=False):
            if highs[name] != 1e6 or lows[name] != -1e6:
                bounded += 1
                on_bound = (parameter == lows[name]) | (parameter == highs[name])
                assert on_bound.any(), f"{name}: no weight reached a bound"
    assert bounded, "clamp_parameters() bounds no parameter"


def clamped_from(module: torch.nn.Module, far: float) -> dict[str, float]:
    """What ``module.clamp_parameters()`` makes of each of its own parameters set to ``far``:
    its bound on that side (``far`` where it has none)."""
    module = copy.deepcopy(module)
    with torch.no_grad():
        for parameter in module.parameters(recurse=False):
            parameter.fill_(far)
        module.clamp_parameters()
    return {name: p.flatten()[0].item() for name, p in module.named_parameters(recurse=False)}


@pytest.mark.slow
@pytest.mark.parametrize("model", MODEL_CONFIGS)
def test_a_population_member_is_the_single_run_of_its_seed(model, tiny_overrides, tmp_path):
    overrides = [*tiny_overrides, f"model={model}"]  # 2 epochs of 4 steps
    single = train(compose_config([*overrides, "seed=4"], tmp_path / "single"))
    train(compose_config([*overrides, "seed=3", "population=2"], tmp_path / "population"))
    member = read_metrics(tmp_path / "population" / "members" / f"1_{model}_seed4")
    recorded = read_metrics(tmp_path / "single")
    assert member["status"] == recorded["status"] == "finished"
    assert (member["epochs"], member["steps"]) == (recorded["epochs"], recorded["steps"]) == (2, 8)
    assert member["labels"]["seed"] == member["labels"]["problem_seed"] == 4
    assert member["metrics"].keys() == single.keys()
    for name, value in single.items():
        assert member["metrics"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
    assert member["formulas"] == recorded["formulas"]


@pytest.mark.parametrize("model", MODEL_CONFIGS)
def test_each_unit_reads_back_or_says_it_cannot(model, tmp_path):
    network, cfg = network_config(model, tmp_path)
    unit = build_network(network, 0)
    units = {type(m) for m in unit.modules() if type(m).__module__.startswith("nalu.units")}
    undeclared = {u.__name__ for u in units if u not in READERS}
    assert not undeclared, f"register_reader(unit, reader or None) for {undeclared}"
    formulas = read_back(unit, torch.ones(4, cfg.data.in_features))
    if units and all(READERS[u] is not None for u in units):
        assert formulas is not None and len(formulas) == cfg.data.out_features
    else:
        assert formulas is None


# Configs that set other than their class's defaults on purpose, and where: a variant of the
# class, or this project's recipe where the class keeps its paper's unit (the NMRU's sign
# retrieval) or no recipe at all (the selection's learning rates).
VARIANTS = {
    "model=gnalu": {"shared_weights", "base"},
    "model=nalu_shared": {"shared_weights"},
    "model=realnpu": {"complex_weight"},
    "model=nau_nmu_gated_exact": {"exact_gate"},
    "model=nmru": {"sign_retrieval"},
    "model=select": {"learning_rate_scales", "log_fit"},
}
CLASS_CONFIGS = [
    *(f"model={model}" for model in MODEL_CONFIGS),
    "data=mystery",
    "data=static_arithmetic",
    "lr_schedule=linear_decay",
]


@pytest.mark.parametrize("choice", CLASS_CONFIGS)
def test_a_class_built_in_python_has_its_configs_recipe(choice, tmp_path):
    # A notebook's ArithmeticModule(StaticArithmeticDataModule(...)) trains what the command
    # line's data=static_arithmetic does: every value the config sets is the class's default.
    group = choice.split("=")[0]
    section = OmegaConf.to_container(compose_config([choice], tmp_path)[group])
    target = get_object(section["_target_"])
    defaults = {}
    for cls in reversed(inspect.getmro(target)) if inspect.isclass(target) else [target]:
        function = cls.__init__ if inspect.isclass(cls) else cls
        for name, parameter in inspect.signature(function).parameters.items():
            if parameter.default is not inspect.Parameter.empty:
                defaults[name] = parameter.default
    differing = {
        field: (value, defaults[field])
        for field, value in section.items()
        if field in defaults
        and not (isinstance(value, str) and "${" in value)
        and (list(value) if isinstance(value, list) else value)
        != (list(defaults[field]) if isinstance(defaults[field], tuple) else defaults[field])
    }
    assert set(differing) == VARIANTS.get(choice, set()), differing
