import math

import lightning as L
import pytest
import torch
from conftest import compose_config, load_events, set_
from torch.utils.data import DataLoader, TensorDataset

from nalu.cli.train import train
from nalu.config.errors import ConfigError, InvalidArgument
from nalu.training.module import ArithmeticModule, MemberObjective
from nalu.training.regularizer import RegularizerSchedule
from nalu.units import (
    GatedAdditionMultiplicationUnit,
    ImprovedNeuralArithmeticLogicUnit,
    NeuralAdditionUnit,
    NeuralArithmeticLogicUnit,
    NeuralMultiplicationUnit,
    NeuralPowerUnit,
)
from nalu.units.nau import sparsity_penalty
from nalu.units.nmu import (
    MEMBER_PRODUCT_MIN_FACTORS,
    LogMagnitude,
    NMUProduct,
    batch_first,
    log_magnitude,
    member_nmu_product,
    nmu_factors,
    nmu_product,
    signed_product,
)

# The article's example: output x0·x1 of x = (1.5, −2, 2.5) is −3.
ARTICLE_X = torch.tensor([[1.5, -2.0, 2.5]])
ATANH_HALF = math.atanh(0.5)


@pytest.mark.parametrize(
    ("make", "name", "low", "high"),
    [
        # Madsen & Johansen's NAU bound √(6 / (in + out)), capped at 0.5 as their code caps it:
        # 2 → 1 gives √2, capped; 100 → 100 gives √(6/200) = 0.17321.
        (lambda: NeuralAdditionUnit(2, 1), "weight", -0.5, 0.5),
        (lambda: NeuralAdditionUnit(100, 100), "weight", -math.sqrt(0.03), math.sqrt(0.03)),
        # The NMU's near-zero default, and the paper's U[0.25, 0.75] (the NALM recipe's).
        (lambda: NeuralMultiplicationUnit(100, 10), "weight", 0.0, 0.01),
        (
            lambda: NeuralMultiplicationUnit(2, 1, init_range=(0.25, 0.75)),
            "weight",
            0.25,
            0.75,
        ),
        # Glorot-uniform: √(6 / (3 + 2)) for the NPU's real weights (the NALU's gate: test_units).
        (lambda: NeuralPowerUnit(3, 2), "weight", -math.sqrt(1.2), math.sqrt(1.2)),
    ],
)
def test_initialisations_fill_their_ranges(make, name, low, high):
    torch.manual_seed(0)
    drawn = torch.cat([getattr(make(), name).detach().flatten() for _ in range(1000)])
    assert drawn.min().item() >= low and drawn.max().item() <= high
    # Uniform over the whole range: the extremes within 2% of its ends, the mean in its middle.
    width = high - low
    assert drawn.min().item() < low + 0.02 * width and drawn.max().item() > high - 0.02 * width
    assert drawn.mean().item() == pytest.approx((low + high) / 2, abs=0.05 * width)


def test_the_npus_imaginary_weights_start_at_0_and_its_gates_at_a_half():
    npu = NeuralPowerUnit(3, 2, complex_weight=True)
    assert npu.weight_imag.tolist() == [[0.0] * 3] * 2
    assert npu.gate.tolist() == [0.5] * 3


def test_nau_is_w_x():
    nau = NeuralAdditionUnit(3, 1)
    set_(nau.weight, [[1.0, -1.0, 0.5]])
    # 1.5 + 2 + 1.25 = 4.75.
    assert nau(ARTICLE_X).item() == pytest.approx(4.75)


@pytest.mark.parametrize(
    ("weight", "expected"),
    [
        ([1.0, 1.0, 0.0], -3.0),  # 1.5 · (−2) · 1
        ([0.5, 1.0, 0.0], -2.5),  # (0.5·1.5 + 0.5) · (−2) = 1.25 · (−2)
        ([0.0, 0.0, 0.0], 1.0),  # the empty product
        ([1.0, 1.0, 1.0], -7.5),  # 1.5 · (−2) · 2.5
    ],
)
def test_nmu_multiplies_with_signs(weight, expected):
    nmu = NeuralMultiplicationUnit(3, 1)
    set_(nmu.weight, [weight])
    assert nmu(ARTICLE_X).item() == pytest.approx(expected, rel=1e-5)


# Every way the NMU's product is taken, each as z [S, B, out] of W [out, in] and x [S, B, in]:
# eagerly as written, by its own backward, compiled (x laid out batch-first as a unit's output
# too), and compiled as a population's step takes it on a CPU (its own operator, every member at
# once) or under vmap.
NMU_PRODUCT_PATHS = {
    "eager": lambda w, x: nmu_product(w, x, 20.0),
    "autograd function": lambda w, x: NMUProduct.apply(w, x, 20.0)[0],
    "compiled": lambda w, x: torch.compile(nmu_product)(w, x, 20.0),
    "compiled, batch-first": lambda w, x: torch.compile(nmu_product)(w, x.mT.contiguous().mT, 20.0),
    "member operator": lambda w, x: member_nmu_product(w.expand(len(x), 1, -1, -1), x, 20.0)[0],
    "compiled under vmap": lambda w, x: torch.compile(
        torch.func.vmap(lambda a, b: nmu_product(a, b, 20.0))
    )(w.expand(len(x), -1, -1), x),
}


@pytest.mark.parametrize("path", NMU_PRODUCT_PATHS)
def test_nmu_gradients_match_hand_computed_values(path):
    weight = torch.tensor([[0.5, 1.0, 0.0]], requires_grad=True)
    # Two members of two samples each, every sample the article's x.
    x = ARTICLE_X.expand(2, 2, 3).clone().requires_grad_()
    z = NMU_PRODUCT_PATHS[path](weight, x)
    z.sum().backward()
    # Factors f = (1.25, −2, 1), z = −2.5; ∂z/∂W_i = z (x_i − 1) / f_i, ∂z/∂x_i = z W_i / f_i,
    # W's summed over the 4 samples.
    assert z.flatten().tolist() == pytest.approx([-2.5] * 4)
    assert weight.grad.tolist() == [pytest.approx([-4.0, -15.0, -15.0])]
    assert x.grad.flatten().tolist() == pytest.approx([-1.0, 1.25, 0.0] * 4)


# The ways log_magnitude is taken: as written, by its own backward, and compiled as a
# population's step takes it.
LOG_MAGNITUDE_PATHS = {
    "eager": log_magnitude,
    "autograd function": LogMagnitude.apply,
    "compiled under vmap": lambda w, m: torch.compile(torch.func.vmap(log_magnitude))(
        w.expand(len(m), -1, -1), m
    ),
}


@pytest.mark.parametrize("path", LOG_MAGNITUDE_PATHS)
def test_log_magnitude_gradients_match_hand_computed_values(path):
    weight = torch.tensor([[0.5, 1.0, 0.0]], requires_grad=True)
    magnitudes = ARTICLE_X.abs().expand(2, 2, 3).clone().requires_grad_()
    logs = LOG_MAGNITUDE_PATHS[path](weight, magnitudes)
    logs.sum().backward()
    # Factors f = (1.25, 2, 1): Σ log f = ln 2.5; ∂/∂W_i = (|x_i| − 1) / f_i = (0.4, 0.5, 1.5)
    # (summed over the 4 samples), ∂/∂|x_i| = W_i / f_i = (0.4, 0.5, 0).
    assert logs.flatten().tolist() == pytest.approx([math.log(2.5)] * 4)
    assert weight.grad.tolist() == [pytest.approx([1.6, 2.0, 6.0])]
    assert magnitudes.grad.flatten().tolist() == pytest.approx([0.4, 0.5, 0.0] * 4)


def test_compiled_nmu_product_has_the_values_and_gradients_of_the_signed_product():
    torch.manual_seed(0)  # in float64: the two differ by rounding alone
    weight = torch.rand(4, 3, 30, dtype=torch.float64)
    weight[:, 0] = 1.0  # output 0 multiplies all 30 inputs: |z| far above e^20, clipped
    weight[:, 1, 0] = 1.0
    x = torch.empty(4, 8, 30, dtype=torch.float64).uniform_(-10, 10)
    x[:, :2, 0] = 0.0  # an exact zero factor of outputs 0 and 1 in the first two samples
    grad_z = torch.randn(4, 8, 3, dtype=torch.float64)

    def run(product):
        w, inputs = weight.clone().requires_grad_(), x.clone().requires_grad_()
        z = torch.func.vmap(product)(w, inputs)
        return (z, *torch.autograd.grad(z, (w, inputs), grad_z))

    def reference(w, inputs):
        return signed_product(nmu_factors(w, inputs), dim=-1, max_log_magnitude=20.0)

    expected = run(reference)
    got = run(lambda w, inputs: NMUProduct.apply(w, inputs, 20.0)[0])
    for value, want in zip(got, expected, strict=True):
        torch.testing.assert_close(value, want, rtol=1e-10, atol=1e-12)
    z = expected[0]
    assert (z[:, :2, :2] == 0).all() and (z[:, 2:, 0].abs() == math.exp(20)).all()
    # A zero factor gives +0, whatever the parity of the negative factors beside it.
    assert not got[0][:, :2, :2].signbit().any()


def test_compiled_log_magnitude_has_the_values_and_gradients_of_the_formula():
    torch.manual_seed(0)  # in float64: the two differ by rounding alone
    weight = torch.rand(4, 3, 30, dtype=torch.float64)
    weight[:, 1, 0] = 1.0
    magnitudes = torch.empty(4, 8, 30, dtype=torch.float64).uniform_(0, 10)
    magnitudes[:, :2, 0] = 0.0  # a zero factor of output 1 in the first two samples: clipped
    grad = torch.randn(4, 8, 3, dtype=torch.float64)

    def run(batched):
        w, m = weight.clone().requires_grad_(), magnitudes.clone().requires_grad_()
        logs = batched(w, m)
        return (logs, *torch.autograd.grad(logs, (w, m), grad))

    expected = run(torch.func.vmap(log_magnitude))  # eagerly: the formula as written
    # Its backward (as a single run calls it), and compiled under vmap as a population's step
    # traces it: the forward differentiated, its factors recomputed.
    by_function = run(torch.func.vmap(LogMagnitude.apply))
    in_a_population = run(torch.compile(lambda w, m: torch.func.vmap(log_magnitude)(w, m)))
    for got in (by_function, in_a_population):
        for value, want in zip(got, expected, strict=True):
            torch.testing.assert_close(value, want, rtol=1e-10, atol=1e-12)
    tiny = torch.finfo(torch.float64).tiny
    # the clipped factor counts log(tiny) ≈ −708, the other 29 at most log(10) each
    assert (expected[0][:, :2, 1] <= math.log(tiny) + 29 * math.log(10)).all()


def test_compiled_nmu_over_a_units_output_has_the_values_and_gradients_of_the_formula():
    # A unit's output lies batch-first in memory ((W xᵀ)ᵀ): compiled, the NMU then takes its
    # factors with the batch last (batch_last_product) and must give the formula's numbers.
    assert batch_first(NeuralAdditionUnit(5, 3)(torch.randn(8, 5)))
    torch.manual_seed(0)  # in float64: the two differ by rounding alone
    weight = torch.rand(4, 3, 20, dtype=torch.float64)
    weight[:, 1, 0] = 1.0
    x = torch.empty(4, 20, 8, dtype=torch.float64).uniform_(-3.0, 3.0).mT  # [S, B, in]
    x[:, :2, 0] = 0.0  # a zero factor of output 1 in the first two samples
    grad = torch.randn(4, 8, 3, dtype=torch.float64)

    def run(product):
        w, m = weight.clone().requires_grad_(), x.clone().requires_grad_()
        assert batch_first(m[0])
        z = product(w, m)
        return (z, *torch.autograd.grad(z, (w, m), grad))

    def formula(w, m):
        return signed_product(nmu_factors(w, m), dim=-1, max_log_magnitude=20.0)

    expected = run(torch.func.vmap(formula))
    in_a_population = run(
        torch.compile(lambda w, m: torch.func.vmap(lambda a, b: nmu_product(a, b, 20.0))(w, m))
    )
    compiled = torch.compile(lambda a, b: nmu_product(a, b, 20.0))
    one_by_one = run(lambda w, m: torch.stack([compiled(a, b) for a, b in zip(w, m, strict=True)]))
    # Stacked weights [S, 1, out, in], as the hand-written loops multiply the members at once.
    stacked = run(torch.compile(lambda w, m: nmu_product(w.unsqueeze(1), m, 20.0)))
    for got in (in_a_population, one_by_one, stacked):
        for value, want in zip(got, expected, strict=True):
            torch.testing.assert_close(value, want, rtol=1e-10, atol=1e-12)
    assert (expected[0][:, :2, 1] == 0).all()


@pytest.mark.parametrize("x_needs_grad", [True, False])
def test_compiled_nmu_in_a_population_has_the_values_and_gradients_of_the_formula(x_needs_grad):
    # A population's compiled step on a CPU takes a product of this size (64 × 16 × 20 factors
    # a member) through its own operator (member_nmu_product: every member at once, its own
    # backward); the numbers are the formula's.
    assert MEMBER_PRODUCT_MIN_FACTORS <= 64 * 16 * 20
    torch.manual_seed(0)  # in float64: the two differ by rounding alone
    weight = torch.rand(4, 16, 20, dtype=torch.float64)
    weight[:, 0] = 1.0  # output 0 multiplies all 20 inputs: |z| mostly above e^20, clipped
    weight[:, 1, 0] = 1.0
    x = torch.empty(4, 64, 20, dtype=torch.float64).uniform_(-10.0, 10.0)  # [S, B, in]
    x[:, :2, 0] = 0.0  # an exact zero factor of outputs 0 and 1 in the first two samples
    grad = torch.randn(4, 64, 16, dtype=torch.float64)

    def run(product):
        w, m = weight.clone().requires_grad_(), x.clone().requires_grad_(x_needs_grad)
        z = product(w, m)
        return (z, *torch.autograd.grad(z, (w, m) if x_needs_grad else (w,), grad))

    def formula(w, m):
        return signed_product(nmu_factors(w, m), dim=-1, max_log_magnitude=20.0)

    expected = run(torch.func.vmap(formula))
    population = torch.func.vmap(lambda w, m: nmu_product(w, m, 20.0))
    got = run(torch.compile(population, fullgraph=True))
    assert len(got) == (3 if x_needs_grad else 2)
    for value, want in zip(got, expected, strict=True):
        torch.testing.assert_close(value, want, rtol=1e-10, atol=1e-12)
    assert (got[0][:, :2, :2] == 0).all() and not got[0].signbit()[:, :2, :2].any()


def test_nmu_zero_factor_gives_zero_and_finite_gradient():
    nmu = NeuralMultiplicationUnit(2, 1)
    set_(nmu.weight, [[1.0, 1.0]])
    x = torch.tensor([[0.0, 3.0]], requires_grad=True)
    z = nmu(x)
    z.sum().backward()
    assert z.item() == 0.0
    # A zero factor makes the product's sign 0 (its log clipped at float's tiny, not -inf): the
    # gradient is 0, not the exact product's ∂z/∂W₀ = (x₀ − 1)·3 = −3 and ∂z/∂x₀ = 3, nor NaN.
    assert nmu.weight.grad.tolist() == [[0.0, 0.0]]
    assert x.grad.tolist() == [[0.0, 0.0]]


def test_nmu_product_of_many_large_inputs_stays_finite():
    nmu = NeuralMultiplicationUnit(100, 1, max_log_magnitude=20.0)
    set_(nmu.weight, torch.ones(1, 100))
    x = torch.full((1, 100), 50.0)  # 50^100 overflows float32; the clip stops at e^20
    assert nmu(x).item() == pytest.approx(math.exp(20.0), rel=1e-5)
    x[0, 0] = -50.0
    assert nmu(x).item() == pytest.approx(-math.exp(20.0), rel=1e-5)


def test_nmu_rejects_an_init_range_outside_zero_one():
    with pytest.raises(ValueError, match=r"init_range=\(0.5, 2.0\): must be"):
        NeuralMultiplicationUnit(3, 1, init_range=(0.5, 2.0))


def test_nalu_drops_the_sign_that_the_sign_aware_units_keep():
    nalu = NeuralArithmeticLogicUnit(3, 1)
    set_(nalu.mul_nac.weight_hat, [[20.0, 20.0, 0.0]])
    set_(nalu.mul_nac.gate_hat, [[20.0, 20.0, -20.0]])
    set_(nalu.gate_weight, torch.full((1, 3), -1e3))  # the multiplicative path alone
    assert nalu(ARTICLE_X).item() == pytest.approx(3.0, rel=1e-5)


def make_signed_nalu(input_independent_gate: bool) -> ImprovedNeuralArithmeticLogicUnit:
    unit = ImprovedNeuralArithmeticLogicUnit(3, 1, input_independent_gate, eps=1e-7)
    # Additive W_a = (1, 1, 0); multiplicative W_m = (1, 0.25, 0): tanh(atanh ½)·σ(0) = 0.25.
    set_(unit.add_nac.weight_hat, [[20.0, 20.0, 0.0]])
    set_(unit.add_nac.gate_hat, [[20.0, 20.0, -20.0]])
    set_(unit.mul_nac.weight_hat, [[20.0, ATANH_HALF, 0.0]])
    set_(unit.mul_nac.gate_hat, [[20.0, 0.0, -20.0]])
    return unit


def test_signed_nalu_learns_the_articles_negative_product():
    unit = make_signed_nalu(input_independent_gate=True)
    set_(unit.mul_nac.weight_hat, [[20.0, 20.0, 0.0]])
    set_(unit.mul_nac.gate_hat, [[20.0, 20.0, -20.0]])
    set_(unit.gate_weight, [-1e3])  # g = 0: the multiplicative path alone
    # m = exp(log 1.5 + log 2) = 3, msv = (1)·(−1·1 + 0)·(1) = −1.
    assert unit(ARTICLE_X).item() == pytest.approx(-3.0, rel=1e-5)


@pytest.mark.parametrize("input_independent_gate", [True, False])
def test_signed_nalu_matches_hand_computed_value(input_independent_gate):
    unit = make_signed_nalu(input_independent_gate)
    if input_independent_gate:
        set_(unit.gate_weight, [math.log(3.0)])  # g = σ(ln 3) = 0.75
    else:
        set_(unit.gate_weight, [[math.log(3.0) / 1.5, 0.0, 0.0]])  # G x = ln 3 -> g = 0.75
    # a = 1.5 − 2 = −0.5; m = 1.5 · 2^0.25 = 1.783811; msv = 1 · (−0.25 + 0.75) · 1 = 0.5.
    # y = 0.75 · (−0.5) + 0.25 · 1.783811 · 0.5 = −0.152024.
    assert unit(ARTICLE_X).item() == pytest.approx(-0.152024, rel=1e-5)


@pytest.mark.parametrize(("small", "expected"), [(1e-8, 0.0266742), (0.0, 0.0200056)])
def test_signed_nalu_takes_magnitudes_below_epsilon_as_epsilon(small, expected):
    # Schlör et al. 2020: log(max(|x|, ε)), ε = 1e-7 (not |x| + ε). W_m = (1, 0.25, 0) at
    # x = (1.5, small, 2.5): m = 1.5 · (1e-7)^0.25 = 0.0266742 for small = 1e-8 and 0 alike
    # (|x| + ε would give 0.0273174 at 1e-8); msv = 1 · (0.25 + 0.75) = 1 at 1e-8 (sign 1) and
    # 1 · (0 + 0.75) = 0.75 at 0 (sign 0).
    unit = make_signed_nalu(input_independent_gate=True)
    set_(unit.gate_weight, [-1e3])  # g = 0: the multiplicative path alone
    x = torch.tensor([[1.5, small, 2.5]])
    assert unit(x).item() == pytest.approx(expected, rel=1e-5)


def test_signed_nalus_mixed_sign_has_the_plain_products_values_and_gradients():
    # Schlör et al. 2020 write msv_j = Π_i (sign(x_i)|W_m,ji| + 1 − |W_m,ji|) as a plain
    # product; the unit takes the NMU's, eagerly and compiled in a population of two.
    torch.manual_seed(0)  # in float64: the two differ by rounding alone
    unit = ImprovedNeuralArithmeticLogicUnit(30, 3, input_independent_gate=True).double()
    for parameter in unit.parameters():
        parameter.data.uniform_(-3.0, 3.0)
    x = torch.empty(8, 30, dtype=torch.float64).uniform_(-10.0, 10.0)
    x[:2, 0] = 0.0  # sign 0: the factor is 1 − |W|

    def as_written(x):
        weight = unit.mul_nac.weight.abs()
        mixed_sign = (torch.sign(x).unsqueeze(-2) * weight + 1 - weight).prod(dim=-1)
        log_path = unit.mul_nac(torch.log(x.abs().clamp_min(unit.eps)))
        gate = torch.sigmoid(unit.gate_weight)
        magnitude = torch.exp(log_path.clamp(max=unit.max_log_magnitude))
        return gate * unit.add_nac(x) + (1 - gate) * magnitude * mixed_sign

    def gradients(forward):
        outputs = forward(x)
        return outputs, *torch.autograd.grad(outputs.square().sum(), list(unit.parameters()))

    expected = gradients(as_written)
    params = dict(unit.named_parameters())

    def population(x):  # two identical members, as a compiled population's step runs them
        stacked = {name: torch.stack([p, p]) for name, p in params.items()}
        run = torch.func.vmap(lambda s, x: torch.func.functional_call(unit, s, (x,)))
        return run(stacked, torch.stack([x, x]))[0]

    for forward in (unit, torch.compile(population)):
        for value, want in zip(gradients(forward), expected, strict=True):
            torch.testing.assert_close(value, want, rtol=1e-10, atol=1e-12)


def test_signed_nalu_clips_the_log_path_at_omega():
    unit = ImprovedNeuralArithmeticLogicUnit(
        2, 1, input_independent_gate=True, max_log_magnitude=20.0
    )
    set_(unit.mul_nac.weight_hat, [[20.0, 20.0]])
    set_(unit.mul_nac.gate_hat, [[20.0, 20.0]])
    set_(unit.gate_weight, [-1e3])
    # log(1e6 · 1e6) = 27.6 > ω = 20: the output is e^20, not 1e12.
    assert unit(torch.tensor([[1e6, 1e6]])).item() == pytest.approx(math.exp(20.0), rel=1e-5)


def make_npu(complex_weight: bool, weight, gate, weight_imag=None) -> NeuralPowerUnit:
    npu = NeuralPowerUnit(len(gate), 1, complex_weight=complex_weight)
    set_(npu.weight, [weight])
    set_(npu.gate, gate)
    if weight_imag is not None:
        set_(npu.weight_imag, [weight_imag])
    return npu


@pytest.mark.parametrize("complex_weight", [False, True])
@pytest.mark.parametrize(
    ("weight", "gate", "expected"),
    [
        ([1.0, 1.0, 0.0], [1.0, 1.0, 1.0], -3.0),  # exp(log 3) · cos(π)
        ([1.0, -1.0, 0.0], [1.0, 1.0, 1.0], -0.75),  # 1.5 / (−2)
        ([0.0, 1.0, 1.0], [1.0, 1.0, 1.0], -5.0),  # (−2) · 2.5
        # Gate ½ on x1: r1 = ½·2 + ½ = 1.5, k1 = π/2; exp(3 log 1.5) · cos(2 · π/2) = −3.375.
        ([1.0, 2.0, 0.0], [1.0, 0.5, 0.0], -3.375),
        # Gate 0 on x1: x1 drops out whatever its weight.
        ([1.0, 7.0, 0.0], [1.0, 0.0, 1.0], 1.5),
        # Gates outside [0, 1] act clamped: (1.5, −0.5, 1) as (1, 0, 1), r = (1.5, 1, 3.5), k = 0,
        # so z = exp(log 1.5) = 1.5 (unclamped, r1 = 0.5 and k1 = −π/2 would give about 0).
        ([1.0, 1.0, 0.0], [1.5, -0.5, 1.0], 1.5),
    ],
)
def test_npu_with_real_weights_matches_hand_computed_values(complex_weight, weight, gate, expected):
    npu = make_npu(complex_weight, weight, gate)
    assert npu(ARTICLE_X).item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_npu_imaginary_weight_matches_hand_computed_value():
    npu = make_npu(True, [1.0, 1.0, 0.0], [1.0, 1.0, 1.0], weight_imag=[0.0, 0.1, 0.0])
    # exp(log 3 − 0.1π) · cos(0.1 log 2 + π) = 3 · 0.730403 · (−0.997599) = −2.185948.
    assert npu(ARTICLE_X).item() == pytest.approx(-2.185948, rel=1e-5)


def test_npu_is_the_real_part_of_the_complex_power():
    torch.manual_seed(0)
    npu = NeuralPowerUnit(4, 3)
    set_(npu.gate, torch.ones(4))
    set_(npu.weight_imag, torch.randn(3, 4) * 0.3)
    x = torch.tensor([[1.5, -2.0, 2.5, -0.5], [-3.0, 0.7, -1.1, 4.0]], dtype=torch.float64)
    weight = torch.complex(npu.weight.double(), npu.weight_imag.double()).detach()
    expected = torch.exp(torch.log(x.to(torch.complex128)) @ weight.T).real
    assert torch.allclose(npu.double()(x), expected)


def test_gated_unit_mixes_the_nau_and_nmu_paths():
    unit = GatedAdditionMultiplicationUnit(3, 1)
    assert unit.gate.tolist() == [0.5]  # σ(0): neither path preferred at first
    set_(unit.nau.weight, [[1.0, 1.0, 0.0]])
    set_(unit.nmu.weight, [[1.0, 1.0, 0.0]])
    set_(unit.gate_weight, [math.log(3.0)])  # g = 0.75
    # 0.75 · (1.5 − 2) + 0.25 · (1.5 · (−2)) = −0.375 − 0.75 = −1.125.
    assert unit(ARTICLE_X).item() == pytest.approx(-1.125, rel=1e-5)
    assert set(unit.effective_weights()) == {"W_add", "W_mul", "gate"}


def test_exact_gate_is_clamped_pulled_to_zero_or_one_and_selects_one_path():
    unit = GatedAdditionMultiplicationUnit(3, 2, exact_gate=True)
    assert unit.gate.tolist() == [0.5, 0.5]
    set_(unit.gate_weight, [1.3, 0.2])
    unit.clamp_parameters()
    assert unit.gate.tolist() == pytest.approx([1.0, 0.2])
    # R = mean(min(1, 0), min(0.2, 0.8)) = 0.1: the gate's own term, beside the paths' terms.
    assert unit.regularization().item() == pytest.approx(0.1)
    set_(unit.nau.weight, [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    set_(unit.nmu.weight, [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
    set_(unit.gate_weight, [1.0, 0.0])
    # g = 1: exactly the sum 1.5 − 2; g = 0: exactly the product 1.5 · (−2).
    assert unit(ARTICLE_X).tolist() == [[-0.5, -3.0]]
    assert GatedAdditionMultiplicationUnit(3, 1).regularization().item() == 0.0


def test_sparsity_penalty_is_mean_distance_to_the_nearest_of_minus_one_zero_one():
    # min(|w|, 1 − |w|) = 0, 0.3, 0.2, 0 -> mean 0.125.
    weight = torch.tensor([[0.0, 0.3, -0.8, 1.0]])
    assert sparsity_penalty(weight).item() == pytest.approx(0.125)
    nmu = NeuralMultiplicationUnit(4, 1)
    set_(nmu.weight, [[0.0, 0.3, 0.8, 1.0]])
    assert nmu.regularization().item() == pytest.approx(0.125)


@pytest.mark.parametrize(
    ("step", "expected"), [(0, 0.0), (10, 0.0), (12, 0.4), (15, 1.0), (20, 2.0), (100, 2.0)]
)
def test_regularizer_schedule_ramps_linearly_from_start_to_end(step, expected):
    # 10% to 20% of 100 steps: λ goes from 0 at step 10 to 2 at step 20.
    schedule = RegularizerSchedule(scale=2.0, start=0.1, end=0.2)
    assert schedule(step, total_steps=100) == pytest.approx(expected)


def test_regularizer_schedule_with_start_equal_to_end_is_a_step():
    schedule = RegularizerSchedule(scale=1.5, start=0.5, end=0.5)
    assert (schedule(4, total_steps=10), schedule(5, total_steps=10)) == (0.0, 1.5)
    assert RegularizerSchedule()(10**6, total_steps=10**6) == 0.0  # the default is off


@pytest.mark.parametrize(
    ("step", "expected"),
    [(0, 1e-7), (9_999, 1e-7), (10_000, 1e-6), (19_999, 1e-6), (20_000, 1e-5), (49_999, 1e-5)],
)
def test_regularizer_schedule_grows_tenfold_at_a_time_as_heims_beta(step, expected):
    # Mistry et al.'s NPU runs: β = 1e-7, ×10 at step 10,000 and at 20,000 of 50,000.
    schedule = RegularizerSchedule(scale=1e-5, start=0.2, end=0.4, initial=1e-7, growth=10)
    assert schedule(step, total_steps=50_000) == pytest.approx(expected, rel=1e-9)


def test_a_regularizer_schedules_factor_multiplies_every_step():
    # The NPU's β on ÷ in Mistry et al.'s runs: 1e-9, ×10 at steps 10,000 and 20,000 to 1e-7.
    schedule = RegularizerSchedule(
        scale=1e-5, start=0.2, end=0.4, initial=1e-7, growth=10, factor=0.01
    )
    lambdas = [schedule(step, 50_000) for step in (0, 9_999, 10_000, 20_000, 49_999)]
    assert lambdas == pytest.approx([1e-9, 1e-9, 1e-8, 1e-7, 1e-7], rel=1e-9)
    assert RegularizerSchedule(factor=0.01)(10, 10) == 0.0  # a share of no regulariser is none


def test_regularizer_schedule_jumps_are_evenly_spaced_from_start_to_end():
    # 1 → 8 by ×2: three jumps, at steps 10, 15 and 20 of 100.
    schedule = RegularizerSchedule(scale=8.0, start=0.1, end=0.2, initial=1.0, growth=2)
    assert [schedule(step, 100) for step in (9, 10, 14, 15, 19, 20)] == [1, 2, 2, 4, 4, 8]


def test_a_regularizer_schedules_last_jump_lands_on_its_scale():
    # 1 → 5 by ×2: round(log2 5) = 2 jumps, at steps 10 and 20; the last is ×2.5, onto scale.
    schedule = RegularizerSchedule(scale=5.0, start=0.1, end=0.2, initial=1.0, growth=2)
    assert [schedule(step, 100) for step in (9, 10, 19, 20)] == [1, 2, 2, 5]


def test_linear_regularizer_schedule_starts_from_initial():
    schedule = RegularizerSchedule(scale=3.0, start=0.0, end=0.5, initial=1.0)
    assert [schedule(step, 10) for step in (0, 1, 5)] == pytest.approx([1.0, 1.4, 3.0])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"growth": 1}, "growth=1: must be null (a linear ramp) or a number > 1"),
        ({"initial": 2.0}, "initial=2.0: must be at most scale=1.0"),
        ({"growth": 10}, "initial=0.0: must be > 0 for λ to grow ×10 at a time up to scale"),
        ({"start": 0.6, "end": 0.2}, "start=0.6: must be at most end=0.2"),
    ],
)
def test_a_bad_regularizer_schedule_says_which_field_and_why(fields, message):
    with pytest.raises(InvalidArgument) as error:
        RegularizerSchedule(**{"scale": 1.0, **fields})
    assert str(error.value) == message


def test_npu_regularization_is_the_l1_norm_of_its_parameters():
    npu = NeuralPowerUnit(2, 1)
    set_(npu.weight, [[0.5, -1.5]])
    set_(npu.weight_imag, [[-0.25, 0.0]])
    set_(npu.gate, [0.75, -0.5])
    # |0.5| + |−1.5| + |−0.25| + |0.75| + |−0.5| (Heim et al. 2020's L1 penalty)
    assert npu.regularization().item() == pytest.approx(3.5)


def test_member_objective_is_the_mse_and_the_units_regularization():
    network = NeuralMultiplicationUnit(3, 1)
    set_(network.weight, [[0.3, 0.8, 0.0]])
    x = ARTICLE_X
    y = network(x).detach() + 1.0  # MSE exactly 1
    # R = mean(0.3, 0.2, 0) = 1/6.
    mse, fit, regularization = MemberObjective(network)(x, y)
    assert (mse.item(), fit.item(), regularization.item()) == pytest.approx((1, 1, 1 / 6), rel=1e-5)


@pytest.mark.parametrize(("scale", "expected"), [(2.0, [-0.18, 0.14]), (0.0, [-0.08, 0.04])])
def test_a_step_descends_the_fit_plus_lambda_times_the_regularization(scale, expected):
    # Madsen & Johansen 2020 (sec. 2.2.1): L = L̂ + λ·R_sparse. An NAU with W = (0.3, 0.8) on
    # x = (1, 2), y = 0: z = 1.9, ∂MSE/∂W = 2·1.9·x = (3.8, 7.6); R = mean(0.3, 0.2), whose
    # gradient is (1/2, −1/2), times λ = 2: (1, −1). One SGD step of 0.1 from (0.3, 0.8).
    network = NeuralAdditionUnit(2, 1)
    set_(network.weight, [[0.3, 0.8]])
    optimizer = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1}
    regularizer = {"scale": scale, "start": 0.0, "end": 0.0}
    module = ArithmeticModule(network, optimizer, [["add"]], regularizer=regularizer)
    data = DataLoader(TensorDataset(torch.tensor([[1.0, 2.0]]), torch.zeros(1, 1)))
    trainer = L.Trainer(
        max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(module, train_dataloaders=data)
    assert network.weight.detach().tolist()[0] == pytest.approx(expected, abs=1e-6)


def fit_steps(
    network: dict, steps: int, lr: float, callbacks: list[L.Callback] | None = None
) -> ArithmeticModule:
    optimizer = {"_target_": "torch.optim.SGD", "_partial_": True, "lr": lr}
    module = ArithmeticModule(network, optimizer, [["mul"]])
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, generator=generator) * 4 - 2
    data = DataLoader(TensorDataset(x, 100 * x[:, :1] * x[:, 1:2]), batch_size=8)
    trainer = L.Trainer(
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=callbacks,
    )
    trainer.fit(module, train_dataloaders=data)
    return module


def test_weights_are_clamped_after_every_optimizer_step():
    # NAU → NMU stacked: the clamp must reach units inside a container.
    network = {
        "_target_": "torch.nn.Sequential",
        "_args_": [
            {"_target_": "nalu.units.NeuralAdditionUnit", "in_features": 3, "out_features": 2},
            {
                "_target_": "nalu.units.NeuralMultiplicationUnit",
                "in_features": 2,
                "out_features": 1,
            },
        ],
    }
    after_each_step = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            weights = (module.network[0].weight, module.network[1].weight)
            after_each_step.append([weight.detach().clone() for weight in weights])

    fit_steps(network, steps=2, lr=10.0, callbacks=[Record()])
    assert len(after_each_step) == 2  # a user's batches: one optimizer step each
    for nau_weight, nmu_weight in after_each_step:
        assert nau_weight.abs().max().item() == 1.0  # the step overshot, the clamp stopped it
        assert nmu_weight.min().item() >= 0.0 and nmu_weight.max().item() <= 1.0
        assert ((nmu_weight == 0) | (nmu_weight == 1)).any()


def test_model_configs_that_want_the_regularizer_turn_it_on(tmp_path):
    for model in ("nau", "nmu", "nau_nmu", "nau_nmu_gated", "inalu"):
        cfg = compose_config([f"model={model}"], tmp_path)
        schedule = RegularizerSchedule(**cfg.regularizer)
        # The article's 250 epochs × 32 batches = 8000 steps: the ramp spans 30%–70% of them.
        ramp = [schedule(step, total_steps=8000) for step in (2400, 4000, 5600)]
        assert ramp == pytest.approx([0.0, 0.5, 1.0])


def test_regularization_is_logged_at_the_end_of_each_epoch(tiny_overrides, tmp_path):
    # (test_optimizer_steps checks the logged λ.) A learning rate too small to move a
    # float32 weight: every step's penalty is the network's at its initialisation, which the
    # checkpoint still holds.
    overrides = ["model=nmu", "optimizer=sgd", "optimizer.lr=1e-30"]
    train(compose_config([*tiny_overrides, *overrides], tmp_path))
    network = ArithmeticModule.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt").network
    penalty = network.regularization().item()
    assert penalty > 0
    # TINY: 4 optimizer steps per epoch; a point per epoch, the mean of its steps' penalties.
    points = load_events(tmp_path).Scalars("train/regularization")
    assert [(point.step, point.value) for point in points] == [
        (4, pytest.approx(penalty, rel=1e-5)),
        (8, pytest.approx(penalty, rel=1e-5)),
    ]


def test_a_bad_regularizer_schedule_names_the_field(tiny_overrides, tmp_path):
    overrides = ["model=nmu", "regularizer.start=0.5", "regularizer.end=0.2"]
    with pytest.raises(
        ConfigError, match=r"^regularizer\.start=0.5: must be at most regularizer\.end=0.2$"
    ):
        train(compose_config([*tiny_overrides, *overrides], tmp_path))


def test_signed_nalu_regularizer_pushes_latent_weights_past_the_saturation_threshold():
    unit = ImprovedNeuralArithmeticLogicUnit(2, 1, input_independent_gate=True, saturation=20.0)
    with torch.no_grad():
        for parameter in unit.parameters():
            parameter.fill_(30.0)  # all saturated: no penalty
        assert unit.regularization().item() == 0.0
        unit.gate_weight.fill_(-5.0)  # the gate (1 value) at |θ| = 5: its mean 20 − 5 = 15
        unit.add_nac.weight_hat[0, 0] = 0.0  # 1 of W_a's 2 values at 0: its mean (20 + 0) / 2
    assert unit.regularization().item() == pytest.approx(15.0 + 10.0)


def test_signed_nalu_starts_from_its_authors_initialisation():
    # Ŵ ~ N(0.88, 0.2), M̂ ~ N(0.5, 0.2), gate ~ N(0, 0.2): 20,000 draws each, so a mean is
    # within 0.2 / √20000 ≈ 0.0014 of its own (0.01 is seven of those).
    torch.manual_seed(0)
    unit = ImprovedNeuralArithmeticLogicUnit(200, 100, input_independent_gate=False)
    for nac in (unit.add_nac, unit.mul_nac):
        assert nac.weight_hat.mean().item() == pytest.approx(0.88, abs=0.01)
        assert nac.weight_hat.std().item() == pytest.approx(0.2, abs=0.01)
        assert nac.gate_hat.mean().item() == pytest.approx(0.5, abs=0.01)
        # The weights start near tanh(0.88) · σ(0.5) = 0.7064 · 0.6225 = 0.4397.
        assert nac.weight.median().item() == pytest.approx(0.4397, abs=0.01)
    assert unit.gate_weight.mean().item() == pytest.approx(0.0, abs=0.01)
    assert unit.gate_weight.std().item() == pytest.approx(0.2, abs=0.01)
