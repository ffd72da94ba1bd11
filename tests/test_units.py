import inspect
import math

import pytest
import torch
from conftest import compose_config, set_
from hydra.utils import instantiate

import nalu.units
import nalu.units.baselines
from nalu.config.errors import InvalidArgument
from nalu.config.rules import LOG_MAGNITUDE_UNITS, UNIT_RULES
from nalu.units import (
    GOLDEN_RATIO,
    MultiplicativeNeuralAccumulator,
    NeuralAccumulator,
    NeuralAdditionUnit,
    NeuralArithmeticLogicUnit,
)
from nalu.units.baselines import MLP, ArticleBaseline
from nalu.units.contract import ArithmeticUnit, HasLogMagnitude
from nalu.units.linear import linear
from nalu.units.nac import nac_weight_variance, variance_matched_bound

ATANH_HALF = math.atanh(0.5)


def set_nac(nac: NeuralAccumulator, weight_hat: list[list[float]], gate_hat: list[list[float]]):
    set_(nac.weight_hat, weight_hat)
    set_(nac.gate_hat, gate_hat)


def test_nac_weight_is_tanh_times_sigmoid_and_output_is_w_x():
    nac = NeuralAccumulator(2, 1)
    # tanh(atanh 0.5) = 0.5, σ(0) = 0.5 -> W00 = 0.25; tanh(-atanh 0.5)·σ(ln 3) = -0.5·0.75.
    set_nac(nac, [[ATANH_HALF, -ATANH_HALF]], [[0.0, math.log(3.0)]])
    assert nac.weight.flatten().tolist() == pytest.approx([0.25, -0.375])
    x = torch.tensor([[4.0, 2.0], [-1.0, 8.0]])
    # 0.25·4 − 0.375·2 = 0.25; 0.25·(−1) − 0.375·8 = −3.25.
    assert nac(x).flatten().tolist() == pytest.approx([0.25, -3.25])


def test_nac_with_saturated_weights_adds_and_subtracts_exactly():
    nac = NeuralAccumulator(3, 2)
    set_nac(nac, [[20, 20, -20], [20, -20, 0]], [[20, 20, -20], [20, 20, -20]])
    x = torch.tensor([[1.5, -2.0, 2.5]])
    assert nac(x).flatten().tolist() == pytest.approx([-0.5, 3.5], abs=1e-6)


def test_a_compiled_nac_weight_is_tanh_times_sigmoid_to_a_float32_step():
    # Compiling must not trade tanh for a faster form: 2σ(2z) − 1 (off by up to 3e-7 here)
    # trained the NALM benchmark's NAC to 10 more solved runs of 450 than tanh did. Ŵ = atanh t
    # for hand-picked t, M̂ = 0: W = tanh(Ŵ)/2, in float64 from the float32 Ŵ; dW/dŴ = (1 − t²)/2.
    t = [1e-4, -0.1, 0.19, 0.2, -0.5, 0.9, 0.999, 0.99999]
    nac = NeuralAccumulator(len(t), 1)
    set_nac(nac, [[math.atanh(v) for v in t]], [[0.0] * len(t)])
    exact = [math.tanh(z) / 2 for z in nac.weight_hat.detach().flatten().tolist()]
    for weight_of in (lambda unit: unit.weight, torch.compile(lambda unit: unit.weight)):
        nac.weight_hat.grad = None
        weight = weight_of(nac)
        weight.sum().backward()
        assert weight.flatten().tolist() == pytest.approx(exact, rel=1.2e-7, abs=0)
        gradient = nac.weight_hat.grad.flatten()[:6].tolist()  # away from tanh's saturation
        assert gradient == pytest.approx([(1 - v * v) / 2 for v in t[:6]], rel=1e-6)


def test_compiled_nac_in_a_population_gives_the_outputs_of_the_formula():
    # The first test's NAC as each of two members of a compiled population's step.
    nac = NeuralAccumulator(2, 1)
    set_nac(nac, [[ATANH_HALF, -ATANH_HALF]], [[0.0, math.log(3.0)]])
    members = {name: torch.stack([p.detach()] * 2) for name, p in nac.named_parameters()}
    x = torch.tensor([[4.0, 2.0], [-1.0, 8.0]]).expand(2, 2, 2)
    step = torch.func.vmap(lambda p, x: torch.func.functional_call(nac, p, (x,)))
    outputs = torch.compile(step)(members, x)
    assert outputs.flatten().tolist() == pytest.approx([0.25, -3.25] * 2, rel=1e-6)


def test_golden_ratio_nac_takes_tanh_and_sigmoid_in_base_phi():
    nac = NeuralAccumulator(2, 1, base=GOLDEN_RATIO)
    # tanh_φ(z) = (φ^2z − 1)/(φ^2z + 1), σ_φ(z) = 1/(1 + φ^−z), φ² = 2.618034:
    # tanh_φ(1) = 1.618034/3.618034 = 0.447214, σ_φ(2) = 1/(1 + 1/2.618034) = 0.723607.
    set_nac(nac, [[1.0, -1.0]], [[2.0, 0.0]])
    assert nac.weight.flatten().tolist() == pytest.approx(
        [0.447214 * 0.723607, -0.447214 * 0.5], rel=1e-5
    )


def test_nac_mul_multiplies_and_divides_magnitudes():
    nac_mul = MultiplicativeNeuralAccumulator(3, 2)
    set_nac(nac_mul.nac, [[20, 20, -20], [20, -20, 0]], [[20, 20, -20], [20, 20, -20]])
    x = torch.tensor([[1.5, -2.0, 2.5]])
    # W ≈ (1, 1, 0) and (1, −1, 0): |1.5|·|−2| = 3, |1.5| / |−2| = 0.75 (the sign is lost).
    assert nac_mul(x).flatten().tolist() == pytest.approx([3.0, 0.75], rel=1e-5)


@pytest.mark.parametrize("paper_nalu", [False, True])
def test_the_log_path_takes_an_input_of_zero_as_epsilon(paper_nalu):
    # Trask et al. 2018, sec. 2: log(|x| + ε), ε = 1e-7. At x = (0, 5), W = (1, 0) gives ε and
    # W = (−1, 0) gives 1/ε; W = (0, 1) gives 5 + ε.
    weight_hat = [[20.0, 0.0], [-20.0, 0.0], [0.0, 20.0]]
    gate_hat = [[20.0, -20.0], [20.0, -20.0], [-20.0, 20.0]]
    if paper_nalu:
        unit = NeuralArithmeticLogicUnit(2, 3, shared_weights=True)
        set_nac(unit.add_nac, weight_hat, gate_hat)
        set_(unit.gate_weight, torch.full((3, 2), -1e3))  # the multiplicative path alone
    else:
        unit = MultiplicativeNeuralAccumulator(2, 3)
        set_nac(unit.nac, weight_hat, gate_hat)
    outputs = unit(torch.tensor([[0.0, 5.0]])).flatten().tolist()
    assert outputs == pytest.approx([1e-7, 1e7, 5.0], rel=1e-5)


def test_golden_ratio_nalu_gate_is_sigmoid_in_base_phi():
    nalu = NeuralArithmeticLogicUnit(2, 1, shared_weights=True, base=GOLDEN_RATIO)
    # W = (1, 1): in base φ the latent weights saturate later (σ_φ(20) = 1 − 7e-5).
    set_nac(nalu.add_nac, [[50.0, 50.0]], [[50.0, 50.0]])
    with torch.no_grad():
        nalu.gate_weight.copy_(torch.tensor([[1.0, 0.0]]))
    # x = (2, 4): g = σ_φ(2) = 0.723607, a = 6, m = 8 (the log path is base-free):
    # 0.723607·6 + 0.276393·8 = 6.552786.
    assert nalu(torch.tensor([[2.0, 4.0]])).item() == pytest.approx(6.552786, rel=1e-5)


def test_model_gnalu_is_the_paper_nalu_in_base_phi(tmp_path):
    unit = instantiate(compose_config(["model=gnalu"], tmp_path).model)
    assert (unit.base, unit.shared_weights) == (GOLDEN_RATIO, True)


def test_a_base_at_or_below_one_is_refused():
    with pytest.raises(InvalidArgument, match=r"base=1: must be a finite number > 1"):
        NeuralAccumulator(2, 1, base=1)


def make_nalu(shared: bool, gate_bias: bool) -> NeuralArithmeticLogicUnit:
    nalu = NeuralArithmeticLogicUnit(2, 1, shared_weights=shared, gate_bias=gate_bias)
    # Additive weights (1, 1): a = x0 + x1. Multiplicative (1, -1) when separate: m = |x0| / |x1|.
    set_nac(nalu.add_nac, [[20.0, 20.0]], [[20.0, 20.0]])
    if nalu.mul_nac is not None:
        set_nac(nalu.mul_nac, [[20.0, -20.0]], [[20.0, 20.0]])
    with torch.no_grad():
        nalu.gate_weight.copy_(torch.tensor([[math.log(3.0) / 2, 0.0]]))
        if nalu.gate_bias is not None:
            nalu.gate_bias.fill_(-math.log(3.0))
    return nalu


@pytest.mark.parametrize(
    ("shared", "gate_bias", "expected"),
    [
        # x = (2, 4): g = σ(ln3/2·2) = σ(ln 3) = 0.75.
        # Separate paths: a = 6, m = 2/4 = 0.5 -> 0.75·6 + 0.25·0.5 = 4.625.
        (False, False, 4.625),
        # Shared weight (1, 1): m = 2·4 = 8 -> 0.75·6 + 0.25·8 = 6.5.
        (True, False, 6.5),
        # Gate bias −ln 3: g = σ(0) = 0.5 -> 0.5·6 + 0.5·0.5 = 3.25 and 0.5·6 + 0.5·8 = 7.
        (False, True, 3.25),
        (True, True, 7.0),
    ],
)
def test_nalu_matches_hand_computed_values(shared, gate_bias, expected):
    nalu = make_nalu(shared, gate_bias)
    assert nalu(torch.tensor([[2.0, 4.0]])).item() == pytest.approx(expected, rel=1e-5)


def test_nalu_gate_applies_sigmoid():
    nalu = make_nalu(shared=False, gate_bias=False)
    with torch.no_grad():
        nalu.gate_weight.zero_()
    # G x = 0 must give g = σ(0) = 0.5 (the article's code used g = G x = 0 instead).
    assert nalu(torch.tensor([[2.0, 4.0]])).item() == pytest.approx(0.5 * 6 + 0.5 * 0.5)


def test_nalu_variants_have_the_parameters_they_promise():
    shared = NeuralArithmeticLogicUnit(5, 3, shared_weights=True)
    separate = NeuralArithmeticLogicUnit(5, 3, shared_weights=False, gate_bias=True)
    assert sum(p.numel() for p in shared.parameters()) == 3 * 15
    assert sum(p.numel() for p in separate.parameters()) == 5 * 15 + 3
    assert set(shared.effective_weights()) == {"W", "gate"}
    assert set(separate.effective_weights()) == {"W_add", "W_mul", "gate"}
    assert "shared_weights=True" in repr(shared) and "gate_bias=True" in repr(separate)


# The units are layers too: test_every_unit_is_a_layer_with_nn_linears_signature.
@pytest.mark.parametrize(
    "factory",
    [lambda: ArticleBaseline(7, 3), lambda: MLP(7, 3, hidden_features=[5])],
    ids=["ArticleBaseline", "MLP"],
)
def test_baselines_are_linear_like_layers(factory):
    torch.manual_seed(0)
    network = factory()
    assert network(torch.randn(4, 7)).shape == (4, 3)
    assert network(torch.randn(2, 4, 7)).shape == (2, 4, 3)
    before = [p.clone() for p in network.parameters()]
    network.reset_parameters()
    assert any(not torch.equal(a, b) for a, b in zip(before, network.parameters(), strict=True))
    assert "in_features=7, out_features=3" in repr(network)


def test_article_baseline_is_relu_of_w_x_plus_b():
    baseline = ArticleBaseline(2, 1)
    set_(baseline.linear.weight, [[1.0, -2.0]])
    set_(baseline.linear.bias, [0.5])
    # (3, 1): 3 − 2 + 0.5 = 1.5; (1, 1): 1 − 2 + 0.5 = −0.5, which the ReLU makes 0.
    out = baseline(torch.tensor([[3.0, 1.0], [1.0, 1.0]]))
    assert out.flatten().tolist() == [1.5, 0.0]


def test_article_baseline_cannot_output_negatives_but_mlp_can():
    torch.manual_seed(0)
    x = torch.randn(256, 4) * 10
    assert (ArticleBaseline(4, 2)(x) >= 0).all()
    assert (MLP(4, 2)(x) < 0).any()


def test_mlp_rejects_unknown_activation():
    with pytest.raises(InvalidArgument, match="activation='Relu'"):
        MLP(3, 1, activation="Relu")


def test_linear_is_x_times_w_transposed_plus_bias_for_any_batch_shape():
    weight = torch.tensor([[1.0, 2.0], [-1.0, 0.5]])  # [out=2, in=2]
    bias = torch.tensor([10.0, -10.0])
    # [1, 2]: 1·1 + 2·2 + 10 = 15, −1·1 + 0.5·2 − 10 = −10; [4, −2]: 0 + 10, −5 − 10.
    x = torch.tensor([[1.0, 2.0], [4.0, -2.0]])
    expected = torch.tensor([[15.0, -10.0], [10.0, -15.0]])
    assert linear(x, weight, bias).tolist() == expected.tolist()
    assert linear(x[0], weight, bias).tolist() == expected[0].tolist()
    assert linear(x.expand(3, 2, 2), weight).tolist() == [(expected - bias).tolist()] * 3
    # Members' own weights under vmap, as a population runs them.
    members = torch.stack([weight, 2 * weight])
    batched = torch.func.vmap(linear)(x.expand(2, 2, 2), members)
    assert batched.tolist() == [(expected - bias).tolist(), (2 * (expected - bias)).tolist()]


@pytest.mark.parametrize(
    ("unit", "field"), [(unit, field) for unit, fields in UNIT_RULES.items() for field in fields]
)
def test_each_unit_refuses_a_bad_argument_by_the_rule_the_command_line_applies(unit, field):
    # The command-line check applies UNIT_RULES to the unit's config; the constructor, to its
    # arguments: the same rule, the same one-line message naming the field.
    cls = getattr(nalu.units, unit, None) or getattr(nalu.units.baselines, unit)
    heads = {"heads": {"nau": NeuralAdditionUnit}} if unit == "PerOutputSelection" else {}
    with pytest.raises(InvalidArgument) as refused:
        cls(2, 1, **heads, **{field: "bad"})
    expected = pytest.raises(InvalidArgument)
    with expected:
        UNIT_RULES[unit][field](field, "bad")
    assert str(refused.value) == str(expected.excinfo.value)


LAYERS = [
    unit
    for name in nalu.units.__all__
    if inspect.isclass(unit := getattr(nalu.units, name))
    and issubclass(unit, torch.nn.Module)
    and unit is not nalu.units.PerOutputSelection  # built from its heads, not from sizes
]


@pytest.mark.parametrize("unit_class", LAYERS, ids=lambda unit_class: unit_class.__name__)
def test_every_unit_is_a_layer_with_nn_linears_signature(unit_class):
    unit = unit_class(4, 3)
    assert isinstance(unit, ArithmeticUnit)
    assert unit(torch.randn(2, 5, 4)).shape == (2, 5, 3)  # any leading dimensions
    assert "in_features=4, out_features=3" in repr(unit)
    # Matrices [out, in] as nn.Linear's (the NMRU's [out, 2·in]: inputs, then reciprocals).
    for name, parameter in unit.named_parameters():
        if parameter.dim() == 2:
            assert parameter.shape[0] == 3 and parameter.shape[1] in (4, 2 * 4), name
    before = [parameter.clone() for parameter in unit.parameters()]
    unit.reset_parameters()  # draws anew
    assert any(not torch.equal(a, b) for a, b in zip(before, unit.parameters(), strict=True))


def test_the_nac_weights_variance_on_a_uniform_range_matches_sampling():
    # r = 3: (1 − tanh 3 / 3) · (3 − tanh 1.5) / 6 = 0.668315 · 0.349142 = 0.233337.
    assert nac_weight_variance(3.0) == pytest.approx(0.233337, rel=1e-5)
    generator = torch.Generator().manual_seed(0)
    latent = (torch.rand(2, 1_000_000, generator=generator, dtype=torch.float64) * 2 - 1) * 3
    sampled = (torch.tanh(latent[0]) * torch.sigmoid(latent[1])).var().item()
    assert sampled == pytest.approx(0.233337, rel=0.01)


@pytest.mark.parametrize(
    ("in_features", "out_features", "variance"),
    [(2, 1, 2 / 5), (100, 10, 2 / 110)],  # Glorot's 2 / (in + out), at least 5 in the fan
)
def test_a_variance_matched_nac_starts_with_glorots_variance(in_features, out_features, variance):
    bound = variance_matched_bound(in_features, out_features)
    assert nac_weight_variance(bound) == pytest.approx(variance, rel=1e-9)
    if (in_features, out_features) == (2, 1):
        assert bound == pytest.approx(9.47, abs=0.01)
    torch.manual_seed(0)
    nacs = [
        NeuralAccumulator(in_features, out_features, init="variance_matched")
        for _ in range(2000 // in_features)
    ]
    latents = torch.cat([torch.cat([n.weight_hat, n.gate_hat]).detach().flatten() for n in nacs])
    assert latents.abs().max().item() <= bound and latents.abs().max().item() > 0.98 * bound
    weights = torch.cat([n.weight.detach().flatten() for n in nacs])
    assert weights.var().item() == pytest.approx(variance, rel=0.1)


def test_a_nalus_gate_starts_xavier_uniform_as_the_primers_code():
    # 3 inputs, 1 output: U[-√(6 / 4), √(6 / 4)], whose variance is 2 / 4 = 0.5.
    torch.manual_seed(0)
    gates = torch.cat(
        [NeuralArithmeticLogicUnit(3, 1).gate_weight.detach().flatten() for _ in range(1000)]
    )
    assert gates.abs().max().item() <= math.sqrt(1.5)
    assert gates.abs().max().item() > 0.99 * math.sqrt(1.5)
    assert gates.var().item() == pytest.approx(0.5, rel=0.1)


def test_a_nacs_init_is_one_of_two():
    with pytest.raises(
        InvalidArgument, match=r"init='glorot': must be one of \['xavier', 'variance_matched'\]"
    ):
        NeuralAccumulator(2, 1, init="glorot")


def test_the_rules_name_the_units_with_a_log_magnitude():
    # What the config check of a selection's log_fit knows without importing torch.
    having = {unit.__name__ for unit in LAYERS if issubclass(unit, HasLogMagnitude)}
    assert having == set(LOG_MAGNITUDE_UNITS)
