import json
import math

import lightning as L
import pytest
import torch
from conftest import TINY, compose_config, named_metrics, solved_outputs
from torch import nn

from nalu.cli.train import train
from nalu.config.errors import InvalidArgument
from nalu.data import (
    ArithmeticDataModule,
    MysteryArithmeticProblem,
    StaticArithmeticDataModule,
    StaticArithmeticProblem,
)
from nalu.data.formula import Variable, power_product, weighted_sum
from nalu.data.problem import (
    NEAR_PERFECT_OUTPUTS,
    SUCCESS_SAMPLES,
    SUCCESS_SEED,
    ColumnRanges,
    near_perfect_mses,
    operation_codes,
)
from nalu.results.metrics import MemberOutputMSE, OutputGroups
from nalu.results.readback import read_back, sparsity_error, unsaturated_gates
from nalu.results.recorder import read_back_metrics
from nalu.training.module import ArithmeticModule
from nalu.units import (
    NeuralAccumulator,
    NeuralAdditionUnit,
    NeuralArithmeticLogicUnit,
    NeuralMultiplicationUnit,
)

SATURATED = 20.0  # tanh(20) and σ(20) are exactly 1 in float32


def set_exact_nac(nac: NeuralAccumulator, weight: torch.Tensor) -> None:
    """Latent weights that give exactly ``weight`` (entries in {-1, 0, 1})."""
    with torch.no_grad():
        nac.weight_hat.copy_(SATURATED * weight)
        nac.gate_hat.fill_(SATURATED)


def exact_nac_for(problem: MysteryArithmeticProblem) -> NeuralAccumulator:
    weight = torch.zeros(problem.out_features, problem.in_features)
    sign = torch.tensor([1.0 if op == "add" else -1.0 for op in problem.output_operations])
    rows = torch.arange(problem.out_features)
    weight[rows, problem.left_index] = 1.0
    weight[rows, problem.right_index] = sign
    nac = NeuralAccumulator(problem.in_features, problem.out_features)
    set_exact_nac(nac, weight)
    return nac


def extrapolation_metric(problem, network, value_range=(-50.0, 50.0)) -> MemberOutputMSE:
    threshold = [problem.success_threshold(value_range).tolist()]
    metric = MemberOutputMSE([problem.output_operations], threshold)
    x = problem.sample_inputs(500, value_range, torch.Generator().manual_seed(0))
    with torch.no_grad():
        metric.update(network(x), problem.targets(x))
    return metric


def test_normalised_error_is_mse_over_initial_mse_times_100():
    metric = MemberOutputMSE([["add", "mul", "add"]])
    metric.initial_mse.copy_(torch.tensor([[4.0, 10.0, 6.0]]))
    # Per-output MSEs 1, 5, 3: add = 100·(1+3)/2 / ((4+6)/2) = 40, mul = 100·5/10 = 50,
    # overall = 100·3/(20/3) = 45.
    metric.update(torch.tensor([[1.0, math.sqrt(5.0), math.sqrt(3.0)]]), torch.zeros(1, 3))
    result = named_metrics(metric)
    assert result["normalized_error_add"].item() == pytest.approx(40.0)
    assert result["normalized_error_mul"].item() == pytest.approx(50.0)
    assert result["normalized_error"].item() == pytest.approx(45.0)


def test_without_initial_mse_or_threshold_there_are_only_the_errors():
    metric = MemberOutputMSE([["add"]])
    metric.update(torch.ones(2, 1), torch.full((2, 1), 2.0))
    assert set(named_metrics(metric)) == {"mse", "mse_add", "relative_error", "relative_error_add"}


def test_relative_error_is_mse_over_the_mse_of_predicting_zero_times_100():
    metric = MemberOutputMSE([["add", "div", "add"]])
    # Targets' mean squares per output: 4, 1, 9; squared errors 1, 1, 0.
    # add = 100·(1+0)/2 / ((4+9)/2) = 100/13, div = 100·1/1, overall = 100·(2/3)/(14/3).
    metric.update(torch.tensor([[3.0, 2.0, -3.0]]), torch.tensor([[2.0, 1.0, -3.0]]))
    result = named_metrics(metric)
    assert result["relative_error_add"].item() == pytest.approx(100 / 13)
    assert result["relative_error_div"].item() == pytest.approx(100.0)
    assert result["relative_error"].item() == pytest.approx(100 * 2 / 14)
    zero = MemberOutputMSE([["mul"]])
    zero.update(torch.zeros(3, 1), torch.tensor([[5.0], [-1.0], [2.0]]))
    assert named_metrics(zero)["relative_error"].item() == pytest.approx(100.0)


def test_groups_reduce_per_operation_and_name_each_members_groups():
    # Two members: the first has an add, a mul and an add; the second adds alone.
    groups = OutputGroups([["add", "mul", "add"], ["add", "add", "add"]])
    values = torch.tensor([[1.0, 5.0, 3.0], [2.0, 4.0, 6.0]])
    largest = groups.named("sparsity_error", groups.largest(values))
    assert list(largest) == ["sparsity_error", "sparsity_error_add", "sparsity_error_mul"]
    assert largest["sparsity_error"].tolist() == [5.0, 6.0]
    assert largest["sparsity_error_add"].tolist() == [3.0, 6.0]
    assert largest["sparsity_error_mul"][0] == 5.0
    assert largest["sparsity_error_mul"][1].isnan()  # the second member has no mul
    assert groups.named("mse", groups.mean(values))["mse_add"].tolist() == [2.0, 4.0]
    counts = groups.counts()
    assert list(counts) == ["output_count", "output_count_add", "output_count_mul"]
    assert counts["output_count"].tolist() == [3.0, 3.0]
    assert counts["output_count_add"].tolist() == [2.0, 3.0]
    assert counts["output_count_mul"][0] == 1.0 and counts["output_count_mul"][1].isnan()


def test_untrained_run_has_normalised_error_100(tmp_path):
    # lr = 1e-30 (0 is refused): float32 steps vanish, the weights tested are the initial ones,
    # so MSE / initial MSE = 1.
    overrides = [*TINY, "model=nac", "optimizer=sgd", "optimizer.lr=1e-30", "optimizer.momentum=0"]
    metrics = train(compose_config(overrides, tmp_path))
    for split in ("interp", "extrap"):
        assert metrics[f"{split}/normalized_error"] == pytest.approx(100.0)
        assert metrics[f"{split}/normalized_error_mul"] == pytest.approx(100.0)
    assert metrics["extrap/solved_fraction"] == 0.0
    assert metrics["recovered_fraction"] == 0.0  # recovered needs solved
    assert "sparsity_error_mul" in metrics
    assert not any(name.startswith("solved_at_step") for name in metrics)


def test_exact_weights_have_normalised_error_0_and_solve_every_output():
    problem = MysteryArithmeticProblem(8, 6, operations=("add", "sub"), problem_seed=3)
    metric = extrapolation_metric(problem, exact_nac_for(problem))
    metric.initial_mse.fill_(123.0)
    result = named_metrics(metric)
    assert result["normalized_error"].item() == 0.0
    assert result["solved_fraction"].item() == 1.0


def test_success_threshold_of_an_addition_matches_the_formula():
    # Inputs l, r and an unused k: a = (1−ε)x_l + ε(x_r + x_k), b = (1−ε)x_r + ε(x_l + x_k),
    # so a + b − (x_l + x_r) = 2ε·x_k and the MSE is 4ε²·E[x²] = 4ε²/3 on U[-1, 1].
    problem = MysteryArithmeticProblem(3, 1, operations=("add",))
    expected = 4 * 1e-10 / 3
    assert problem.success_threshold((-1.0, 1.0)).item() == pytest.approx(expected, rel=0.05)


def test_success_threshold_of_a_product_matches_the_formula():
    # Two inputs: a = (1−ε)x0 + εx1, b = (1−ε)x1 + εx0, so ab − x0x1 = ε(1−ε)(x0 − x1)². On
    # U[2, 6], x0 − x1 is 4(u − v) with E[(u − v)⁴] = 1/15: the MSE is ε²(1−ε)²·256/15.
    problem = StaticArithmeticProblem(
        in_features=2, operations=("mul",), subset_ratio=0.5, overlap_ratio=0.0
    )
    expected = 1e-10 * (1 - 1e-5) ** 2 * 256 / 15  # 1.707e-9
    # 10,000 samples: E[d⁴] is estimated to about 2% (the std of d⁴ is twice its mean).
    assert problem.success_threshold((2.0, 6.0))[0].item() == pytest.approx(expected, rel=0.07)


def test_the_threshold_sample_of_many_inputs_is_drawn_in_chunks_of_the_same_values(monkeypatch):
    # 10,000 samples of 100,000 inputs would take 8 GB at once: the sample is drawn and measured
    # a chunk at a time, each drawn on from the same generator, so the thresholds stay those of
    # one draw (here 10 inputs in chunks of 100 rows, the bound at 1,000 values).
    problem = MysteryArithmeticProblem(10, 4, operations=("add", "sub", "mul", "div"))
    whole = problem.success_threshold((-10.0, 10.0))
    drawn = []
    place = ColumnRanges.place

    def recording(self, u):
        drawn.append(u.shape[0])
        return place(self, u)

    monkeypatch.setattr(ColumnRanges, "place", recording)
    monkeypatch.setattr("nalu.data.problem.VALUES_AT_ONCE", 1000)
    chunked = problem.success_threshold((-10.0, 10.0))
    assert drawn == [100] * 100
    assert chunked.tolist() == pytest.approx(whole.tolist(), rel=1e-12)


def test_thresholds_measured_together_are_each_problems_own():
    # A population's thresholds share one draw of the sample per number of inputs; each must
    # still be its own near-perfect model's MSE on its own sample, as measured for it alone:
    # the fixed seed's draw placed on its columns (two widths, two models, interval unions).
    problems = [
        MysteryArithmeticProblem(10, 4, operations=("add", "sub", "mul", "div"), problem_seed=0),
        MysteryArithmeticProblem(6, 3, operations=("mul", "div"), problem_seed=1),
        StaticArithmeticProblem(
            in_features=2,
            operations=("mul", "div"),
            subset_ratio=0.5,
            overlap_ratio=0.0,
            near_perfect="mistry",
        ),
        MysteryArithmeticProblem(10, 4, operations=("add", "sub", "mul", "div"), problem_seed=2),
        MysteryArithmeticProblem(2, 1, operations=("mul",), problem_seed=3),
    ]
    ranges = [(-10.0, 10.0), ((-6.0, -2.0), (2.0, 6.0)), (1.0, 2.0), (-50.0, 50.0), (1.0, 2.0)]
    together = near_perfect_mses(problems, ranges)
    for problem, value_range, mse in zip(problems, ranges, together, strict=True):
        generator = torch.Generator().manual_seed(SUCCESS_SEED)
        x = problem.sample_inputs(SUCCESS_SAMPLES, value_range, generator, torch.float64)
        masks = problem.operand_masks().double()
        codes = operation_codes(problem.output_operations)
        near = NEAR_PERFECT_OUTPUTS[problem.near_perfect](x, masks, codes)
        alone = (near - problem.targets(x)).square().sum(dim=0) / SUCCESS_SAMPLES
        assert torch.equal(mse, alone), problem
    assert len({tuple(mse.tolist()) for mse in together}) == len(problems)


def test_exact_nac_is_solved_and_recovered_a_perturbed_one_is_not():
    problem = MysteryArithmeticProblem(8, 6, operations=("add", "sub"), problem_seed=3)
    exact = exact_nac_for(problem)
    (solved,) = solved_outputs(extrapolation_metric(problem, exact))
    assert solved.all()
    assert read_back(exact, torch.ones(4, 8)) == problem.exact_formulas()
    _, formulas = read_back_metrics(exact, problem, torch.ones(4, 8), solved)
    assert [formula["recovered"] for formula in formulas] == [True] * 6
    assert sparsity_error(exact, torch.ones(4, 8)).tolist() == [0.0] * 6

    perturbed = exact_nac_for(problem)
    with torch.no_grad():
        # Output 0 now uses an extra input with weight tanh(0.7) ≈ 0.60, which rounds to 1.
        unused = next(i for i in range(8) if exact.weight[0, i] == 0)
        perturbed.weight_hat[0, unused] = 0.7
    (solved,) = solved_outputs(extrapolation_metric(problem, perturbed))
    assert solved.tolist() == [False] + [True] * 5
    _, formulas = read_back_metrics(perturbed, problem, torch.ones(4, 8), solved)
    assert [formula["recovered"] for formula in formulas] == [False] + [True] * 5
    learned = read_back(perturbed, torch.ones(4, 8))
    # Output 0 reads back as its exact formula with the extra input added.
    assert learned[0] == weighted_sum({problem.exact_formulas()[0]: 1.0, Variable(unused): 1.0})
    assert learned[1:] == problem.exact_formulas()[1:]
    assert sparsity_error(perturbed, torch.ones(4, 8))[0].item() == pytest.approx(
        1 - math.tanh(0.7), rel=1e-5
    )


def test_almost_exact_nac_rounds_to_the_truth_but_is_neither_solved_nor_recovered():
    problem = MysteryArithmeticProblem(8, 2, operations=("add",), problem_seed=1)
    nac = exact_nac_for(problem)
    with torch.no_grad():
        nac.weight_hat[0, problem.left_index[0]] = math.atanh(0.99)
    assert read_back(nac, torch.ones(4, 8)) == problem.exact_formulas()
    (solved,) = solved_outputs(extrapolation_metric(problem, nac))
    assert solved.tolist() == [False, True]
    assert sparsity_error(nac, torch.ones(4, 8)).tolist() == pytest.approx([0.01, 0.0], abs=1e-6)
    metrics, formulas = read_back_metrics(nac, problem, torch.ones(4, 8), solved)
    assert [f["recovered"] for f in formulas] == [False, True]
    assert formulas[0]["learned"] == f"≈ {problem.exact_formulas()[0]} (weights not exact)"
    assert formulas[1]["learned"] == str(problem.exact_formulas()[1])
    assert metrics["recovered_fraction"] == 0.5


@pytest.mark.parametrize(
    ("unit", "scale"),
    [(NeuralAdditionUnit, 0.6), (NeuralMultiplicationUnit, 0.51)],
)
def test_rows_at_a_fraction_of_the_exact_weights_are_not_recovered(unit, scale):
    operation = "add" if unit is NeuralAdditionUnit else "mul"
    problem = MysteryArithmeticProblem(6, 2, operations=(operation,), problem_seed=2)
    network = unit(6, 2)
    exact = problem.operand_masks().sum(dim=0)  # 1 on each output's two operands
    with torch.no_grad():
        network.weight.copy_(exact * torch.tensor([[scale], [1.0]]))
    (solved,) = solved_outputs(extrapolation_metric(problem, network))
    assert solved.tolist() == [False, True]
    metrics, formulas = read_back_metrics(network, problem, torch.rand(16, 6) + 1, solved)
    assert [f["recovered"] for f in formulas] == [False, True]
    assert metrics["recovered_fraction"] == 0.5


def test_weights_far_from_their_integers_read_as_what_they_round_to():
    # Output 0 at 0.4 on x_a and -0.6 on x_b rounds to -x_b: not what it computes. Output 1
    # is exactly x_b alone, a wrong formula learned exactly: it reads as it is.
    problem = MysteryArithmeticProblem(6, 2, operations=("add",), problem_seed=2)
    network = NeuralAdditionUnit(6, 2)
    a, b = problem.left_index.tolist(), problem.right_index.tolist()
    with torch.no_grad():
        network.weight.zero_()
        network.weight[0, a[0]], network.weight[0, b[0]] = 0.4, -0.6
        network.weight[1, b[1]] = 1.0
    assert sparsity_error(network, torch.ones(4, 6)).tolist() == pytest.approx([0.4, 0.0])
    _, formulas = read_back_metrics(network, problem, torch.ones(4, 6), torch.tensor([False] * 2))
    assert [f["learned"] for f in formulas] == [f"≈ -x{b[0]} (weights not exact)", f"x{b[1]}"]


@pytest.mark.parametrize("exact_gate", [False, True])
def test_a_gate_at_0_995_is_not_recovered(exact_gate):
    from nalu.units import GatedAdditionMultiplicationUnit

    problem = MysteryArithmeticProblem(6, 2, operations=("add",), problem_seed=2)
    network = GatedAdditionMultiplicationUnit(6, 2, exact_gate=exact_gate)
    exact = problem.operand_masks().sum(dim=0)  # 1 on each output's two operands
    # g = 0.995 for output 0 (0.5% of the product path leaks in), g = 1 for output 1.
    gate = torch.tensor([0.995, 1.0]) if exact_gate else torch.tensor([math.log(199), 30.0])
    with torch.no_grad():
        network.nau.weight.copy_(exact)
        network.nmu.weight.copy_(exact)
        network.gate_weight.copy_(gate)
    (solved,) = solved_outputs(extrapolation_metric(problem, network))
    assert solved.tolist() == [False, True]
    metrics, formulas = read_back_metrics(network, problem, torch.rand(16, 6) + 1, solved)
    assert [f["recovered"] for f in formulas] == [False, True]
    assert metrics["recovered_fraction"] == 0.5


@pytest.mark.parametrize("shared", [False, True])
def test_nalu_reads_the_path_its_gate_opens(shared):
    nalu = NeuralArithmeticLogicUnit(3, 2, shared_weights=shared)
    set_exact_nac(nalu.add_nac, torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, -1.0]]))
    if not shared:
        set_exact_nac(nalu.mul_nac, torch.tensor([[0.0, 1.0, 1.0], [1.0, 0.0, -1.0]]))
    with torch.no_grad():
        # Output 0 gates to the sum (G x > 0 for positive x), output 1 to the product.
        nalu.gate_weight.copy_(torch.tensor([[5.0, 5.0, 5.0], [-5.0, -5.0, -5.0]]))
    x0, x1, x2 = (Variable(i) for i in range(3))
    learned = read_back(nalu, torch.rand(16, 3) + 1)
    assert learned[0] == weighted_sum({x0: 1, x1: 1})
    assert learned[1] == power_product({x0: 1, x2: -1})
    # The path a gate closes does not count toward the sparsity error; the gate's distance from
    # 0 or 1 does: σ(±5·3) on inputs of at least 1 is within σ(-15) ≈ 3e-7 of it.
    if not shared:
        with torch.no_grad():
            nalu.add_nac.weight_hat[1] = 0.3  # output 1's closed additive path
    x = torch.rand(16, 3) + 1
    assert sparsity_error(nalu, x).tolist() == pytest.approx([0.0, 0.0], abs=4e-7)
    assert unsaturated_gates(nalu, x).tolist() == [False, False]
    with torch.no_grad():
        nalu.gate_weight[1] = -0.2  # σ(-0.2·Σx) on Σx in [3, 6]: 0.23 to 0.35 from 0
    assert sparsity_error(nalu, x)[1].item() == pytest.approx(
        float(torch.sigmoid(-0.2 * x.sum(dim=1)).max()), rel=1e-5
    )
    assert unsaturated_gates(nalu, x).tolist() == [False, True]


def test_stacked_nac_then_nalu_reads_back_the_static_task():
    problem = StaticArithmeticProblem(in_features=12, operations=("mul",), problem_seed=2)
    nac = NeuralAccumulator(12, 2)
    set_exact_nac(nac, problem.subsets.flip(0))  # b first: the order of the sums is free
    nalu = NeuralArithmeticLogicUnit(2, 1)
    set_exact_nac(nalu.mul_nac, torch.ones(1, 2))
    with torch.no_grad():
        nalu.gate_weight.fill_(-SATURATED)
    network = nn.Sequential(nac, nalu)
    x = problem.sample_inputs(64, (1.0, 2.0), torch.Generator().manual_seed(0))
    assert read_back(network, x) == problem.exact_formulas()
    torch.testing.assert_close(network(x).detach(), problem.targets(x), rtol=1e-4, atol=0)
    with torch.no_grad():
        nac.weight_hat[0, 0] = 0.1  # tanh(0.1) ≈ 0.0997: an earlier layer's error counts
    assert sparsity_error(network, x).item() == pytest.approx(math.tanh(0.1), rel=1e-5)


def test_an_earlier_layers_gate_and_weights_count_for_every_output_of_a_stack():
    first = NeuralArithmeticLogicUnit(3, 2)
    set_exact_nac(first.add_nac, torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]))
    set_exact_nac(first.mul_nac, torch.zeros(2, 3))
    last = NeuralAccumulator(2, 2)
    set_exact_nac(last, torch.eye(2))
    network = nn.Sequential(first, last)
    x = torch.rand(16, 3) + 1
    with torch.no_grad():
        first.gate_weight.fill_(SATURATED)  # both gates on the sums: exactly 1
    assert unsaturated_gates(network, x).tolist() == [False, False]
    with torch.no_grad():
        first.gate_weight[0] = 0.2  # σ(0.2·Σx) on Σx in [3, 6]: 0.65 to 0.77
    assert unsaturated_gates(network, x).tolist() == [True, True]
    # Weights: the first layer's worst, tanh(0.1) ≈ 0.0997 from 0, counts for both outputs;
    # the last layer's row 1, tanh(0.3) ≈ 0.2913 from 0, for output 1 alone.
    sums = NeuralAccumulator(3, 2)
    set_exact_nac(sums, torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]))
    with torch.no_grad():
        sums.weight_hat[0, 2] = 0.1
        last.weight_hat[1, 0] = 0.3
    errors = sparsity_error(nn.Sequential(sums, last), x).tolist()
    assert errors == pytest.approx([0.0997, 0.2913], abs=1e-4)


def test_networks_without_a_reader_read_back_nothing():
    assert read_back(nn.Linear(3, 2), torch.ones(1, 3)) is None
    assert sparsity_error(nn.Sequential(nn.Linear(3, 2), nn.ReLU()), torch.ones(1, 3)) is None


def test_static_problem_sums_overlapping_subsets():
    problem = StaticArithmeticProblem(in_features=100, operations=("add", "square", "sqrt"))
    a, b = problem.subsets
    assert a.sum() == b.sum() == 25 and (a * b).sum() == 12
    x = problem.sample_inputs(5, (1.0, 2.0), torch.Generator().manual_seed(0))
    sa, sb = x @ a, x @ b
    expected = torch.stack([sa + sb, sa * sa, sa.sqrt()], dim=1)
    assert problem.targets(x) == pytest.approx(expected)
    assert problem.formulas()[2:] == ["y0 = a + b", "y1 = a²", "y2 = √a"]
    assert str(problem.exact_formulas()[1]).endswith(")^2")


def test_solved_at_step_is_the_first_validation_that_solves_each_operation(tmp_path):
    datamodule = ArithmeticDataModule(
        in_features=6,
        out_features=4,
        operations=("add", "sub"),
        problem_seed=1,
        train_size=64,
        interp_size=64,
        extrap_size=64,
        batch_size=16,
    )
    module = ArithmeticModule(
        network={"_target_": "nalu.units.NeuralAccumulator", "in_features": 6, "out_features": 4},
        optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.0},
        output_operations=[datamodule.problem.output_operations],
        success_threshold=[datamodule.success_threshold()],
    )
    exact = exact_nac_for(datamodule.problem)
    module.network.load_state_dict(exact.state_dict())
    trainer = L.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=datamodule)
    # Exact from the start: solved at the first validation, after one epoch of 4 batches.
    assert module.judge.solved_at_step.tolist() == [[4, 4, 4, 4]]
    trainer.test(module, datamodule=datamodule, verbose=False)
    metrics = module.final_metrics
    assert metrics["solved_at_step"].tolist() == [4]
    assert metrics["extrap/solved_fraction"].tolist() == [1.0]


@pytest.mark.slow
def test_static_experiment_trains_a_stack_and_reads_it_back(tmp_path):
    overrides = [
        "experiment=static_arithmetic",
        "data.in_features=12",
        "data.operations=[add,mul]",
        "data.train_size=64",
        "data.batch_size=16",
        "data.interp_size=64",
        "data.extrap_size=64",
        "trainer.max_epochs=2",
        "trainer.enable_progress_bar=false",
    ]
    cfg = compose_config(overrides, tmp_path)
    assert cfg.data.out_features == 2
    assert [list(cfg.data.train_range), list(cfg.data.extrap_range)] == [[1.0, 2.0], [2.0, 6.0]]
    metrics = train(cfg)
    assert {"extrap/solved_fraction_mul", "recovered_fraction_add", "sparsity_error"} <= set(
        metrics
    )
    recorded = json.loads((tmp_path / "metrics.json").read_text())
    assert recorded["labels"]["problem"] == "static_arithmetic"
    # The read-back's truths are the static problem's: a + b (the overlap counted twice) and
    # a × b, written from the sums' inputs that problem.json names.
    problem = json.loads((tmp_path / "problem.json").read_text())
    a, b = set(problem["subset_a"]), set(problem["subset_b"])
    assert len(a & b) == 1  # ⌊0.5 · 3⌋ inputs in both sums

    def total(inputs):
        return " + ".join(f"x{i}" for i in sorted(inputs))

    added = " + ".join(f"2·x{i}" if i in a & b else f"x{i}" for i in sorted(a | b))
    truths = [added, f"({total(a)}) × ({total(b)})"]
    assert [(f["output"], f["truth"]) for f in recorded["formulas"]] == list(enumerate(truths))
    assert [output["formula"] for output in problem["outputs"]] == truths


def test_static_outputs_must_match_the_operations():
    with pytest.raises(InvalidArgument, match="out_features=3: must equal the number"):
        StaticArithmeticDataModule(in_features=12, out_features=3, operations=["add", "sub"])


def test_nau_nmu_and_gated_units_read_back_as_sums_and_products():
    from nalu.data.formula import Variable, power_product, weighted_sum
    from nalu.results.readback import read_back
    from nalu.units import (
        GatedAdditionMultiplicationUnit,
        NeuralAdditionUnit,
        NeuralMultiplicationUnit,
    )

    x0, x1, x2 = Variable(0), Variable(1), Variable(2)
    inputs = torch.rand(8, 3) + 1
    nau, nmu = NeuralAdditionUnit(3, 1), NeuralMultiplicationUnit(3, 1)
    gated = GatedAdditionMultiplicationUnit(3, 2)
    with torch.no_grad():
        nau.weight.copy_(torch.tensor([[0.98, -1.0, 0.02]]))
        nmu.weight.copy_(torch.tensor([[0.97, 0.0, 1.0]]))
        gated.nau.weight.copy_(torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]]))
        gated.nmu.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 1.0]]))
        gated.gate_weight.copy_(torch.tensor([10.0, -10.0]))  # output 0 adds, output 1 multiplies
    assert read_back(nau, inputs) == [weighted_sum({x0: 1, x1: -1})]
    assert read_back(nmu, inputs) == [power_product({x0: 1, x2: 1})]
    assert read_back(gated, inputs) == [
        weighted_sum({x0: 1, x1: 1}),
        power_product({x0: 1, x2: 1}),
    ]


def test_a_product_of_negated_sums_reads_back_as_the_product_it_equals():
    from nalu.data.formula import Variable, power_product, weighted_sum
    from nalu.results.readback import read_back
    from nalu.units import NeuralAdditionUnit, NeuralMultiplicationUnit

    # (−x0 − x1) × (−x2 − x3) = (x0 + x1) × (x2 + x3): the static task solved with both sums
    # negated is the truth; with one negated it is the truth's negative.
    x0, x1, x2, x3 = (Variable(i) for i in range(4))
    a, b = weighted_sum({x0: 1, x1: 1}), weighted_sum({x2: 1, x3: 1})
    truth = power_product({a: 1, b: 1})
    network = torch.nn.Sequential(NeuralAdditionUnit(4, 2), NeuralMultiplicationUnit(2, 1))
    x = torch.rand(8, 4) + 1
    for signs, expected, text in [
        ((-1.0, -1.0), truth, "(x0 + x1) × (x2 + x3)"),
        ((-1.0, 1.0), weighted_sum({truth: -1}), "-(x0 + x1) × (x2 + x3)"),
    ]:
        with torch.no_grad():
            network[0].weight.copy_(torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 1]]))
            network[0].weight.mul_(torch.tensor(signs)[:, None])
            network[1].weight.fill_(1.0)
        sign = signs[0] * signs[1]
        assert torch.allclose(network(x)[:, 0], sign * (x[:, 0] + x[:, 1]) * (x[:, 2] + x[:, 3]))
        assert read_back(network, x) == [expected]
        assert str(expected) == text


def test_a_nalus_log_path_over_negated_sums_reads_back_as_the_product_it_computes():
    from nalu.data.formula import Variable, power_product, weighted_sum
    from nalu.results.readback import read_back
    from nalu.units import NeuralAdditionUnit, NeuralArithmeticLogicUnit

    # h = (−x0 − x1, −x2 − x3) < 0 on positive inputs; the log path multiplies |h0| · |h1|,
    # which is (x0 + x1) × (x2 + x3) there.
    x0, x1, x2, x3 = (Variable(i) for i in range(4))
    nau, nalu = NeuralAdditionUnit(4, 2), NeuralArithmeticLogicUnit(2, 1, shared_weights=True)
    with torch.no_grad():
        nau.weight.copy_(-torch.tensor([[1.0, 1, 0, 0], [0, 0, 1, 1]]))
        nalu.add_nac.weight_hat.fill_(20.0)
        nalu.add_nac.gate_hat.fill_(20.0)
        nalu.gate_weight.fill_(1e3)  # σ(G h) = 0 for h < 0: the log path
    network = torch.nn.Sequential(nau, nalu)
    x = torch.rand(16, 4) + 1
    truth = (x[:, 0] + x[:, 1]) * (x[:, 2] + x[:, 3])
    assert torch.allclose(network(x)[:, 0], truth, rtol=1e-4)
    a, b = weighted_sum({x0: 1, x1: 1}), weighted_sum({x2: 1, x3: 1})
    assert read_back(network, x) == [power_product({a: 1, b: 1})]


def test_a_factors_sign_comes_out_only_at_a_whole_power():
    from nalu.data.formula import Variable, power_product, weighted_sum

    negated = weighted_sum({Variable(0): -1, Variable(1): -1})  # −x0 − x1
    positive = weighted_sum({Variable(0): 1, Variable(1): 1})
    assert power_product({negated: 2}) == power_product({positive: 2})
    assert power_product({negated: -1}) == weighted_sum({power_product({positive: -1}): -1})
    assert str(power_product({negated: 0.5})) == "(-x0 - x1)^0.5"  # √ of a negative: kept
    # (x0 − x1) ÷ (x1 − x0) = −1
    difference = weighted_sum({Variable(0): 1, Variable(1): -1})
    reverse = weighted_sum({Variable(1): 1, Variable(0): -1})
    assert str(power_product({difference: 1, reverse: -1})) == "-1"


def test_nalu_product_reads_back_magnitudes_unless_inputs_are_positive():
    from nalu.data.formula import Magnitude, Variable, power_product, weighted_sum
    from nalu.results.readback import read_back
    from nalu.units import NeuralArithmeticLogicUnit

    nalu = NeuralArithmeticLogicUnit(3, 1, shared_weights=True)
    with torch.no_grad():
        nalu.add_nac.weight_hat.copy_(torch.tensor([[20.0, 20.0, 0.0]]))
        nalu.add_nac.gate_hat.copy_(torch.tensor([[20.0, 20.0, -20.0]]))
        nalu.gate_weight.fill_(-1e3 / 3)  # closed on positive inputs: the log path
    positive = torch.rand(16, 3) + 1
    x0, x1 = Variable(0), Variable(1)
    assert read_back(nalu, positive) == [power_product({x0: 1, x1: 1})]
    nalu.gate_weight.data.copy_(torch.tensor([[-1e3, 0.0, -1e3]]))  # closed whatever x1's sign
    # |1.5| · |−2| = 3 ≠ −3: where x1 takes both signs, the log path multiplies its magnitude;
    # where it is negative throughout, its negative.
    signed = positive * torch.tensor([1.0, -1.0, 1.0])
    signed[::2, 1] *= -1
    assert read_back(nalu, signed) == [power_product({x0: 1, Magnitude(x1): 1})]
    negative = positive * torch.tensor([1.0, -1.0, 1.0])
    assert read_back(nalu, negative) == [power_product({x0: 1, weighted_sum({x1: -1}): 1})]
    assert str(read_back(nalu, negative)[0]) == "-x0 × x1"


def judge(module: ArithmeticModule, step: int, interp: list[float], extrap: list[float]) -> None:
    """One validation of a one-member module: per-output interpolation and extrapolation MSEs."""
    interp_mse = torch.tensor([interp])
    per_output = {"interp": interp_mse, "extrap": torch.tensor([extrap])}
    module._judge(step, interp_mse.mean(dim=1), per_output)


def two_output_module() -> ArithmeticModule:
    return ArithmeticModule(
        network={"_target_": "nalu.units.NeuralAccumulator", "in_features": 3, "out_features": 2},
        optimizer={"_target_": "torch.optim.SGD", "_partial_": True, "lr": 0.1},
        output_operations=[["add", "add"]],
        success_threshold=[[1.0, 1.0]],
    )


def test_solved_at_step_counts_validations_up_to_the_best_one_only():
    module = two_output_module()
    module.judge.last_train_loss.fill_(7.0)
    judge(module, 4, [5.0, 5.0], [0.5, 2.0])
    module.judge.last_train_loss.fill_(6.0)
    judge(module, 8, [3.0, 3.0], [0.5, 2.0])  # the best
    module.judge.last_train_loss.fill_(5.0)
    judge(module, 12, [4.0, 4.0], [0.5, 0.5])  # after the best
    assert module.judge.best_interp_mse.tolist() == [3.0]
    assert module.judge.best_train_loss.tolist() == [6.0]  # the training loss of the best epoch
    # Output 1 was first solved after the best validation, so at the best it was not.
    assert module.judge.solved_at_step.tolist() == [[4, -1]]


def test_an_output_unsolved_at_the_best_validation_has_no_solved_at_step():
    module = two_output_module()
    judge(module, 4, [5.0, 5.0], [0.5, 0.5])  # both solved (threshold 1)
    judge(module, 8, [3.0, 3.0], [0.5, 2.0])  # the best: output 1 no longer solved
    assert module.judge.solved_at_step.tolist() == [[4, -1]]


def test_each_output_is_also_judged_at_its_own_best_validation():
    module = two_output_module()
    judge(module, 4, [1.0, 9.0], [0.5, 7.0])  # output 0's best
    judge(module, 8, [2.0, 1.0], [3.0, 0.25])  # output 1's best and the run's best (mean 1.5)
    judge(module, 12, [3.0, 2.0], [0.1, 0.1])
    assert module.judge.own_best_interp_mse.tolist() == [[1.0, 1.0]]
    assert module.judge.own_best_extrap_mse.tolist() == [[0.5, 0.25]]
    assert module.judge.best_interp_mse.tolist() == [1.5]


def test_a_checkpoint_that_kept_the_judged_state_and_restarts_on_the_module_still_loads():
    module = two_output_module()
    judge(module, 4, [1.0, 9.0], [0.5, 7.0])
    module.divergence.diverged_at_step.fill_(12)
    module.restarts.settled_outputs[0, 1] = True
    older = {
        name.removeprefix("judge.").removeprefix("divergence.").removeprefix("restarts."): value
        for name, value in module.state_dict().items()
    }
    # Checkpoints that hold those buffers at the module's top level load as well.
    assert {"best_interp_mse", "diverged_at_step", "settled_outputs"} <= set(older)
    loaded = two_output_module()
    loaded.load_state_dict(older)
    assert loaded.judge.own_best_interp_mse.tolist() == [[1.0, 9.0]]
    assert loaded.judge.solved_at_step.tolist() == [[4, -1]]
    assert loaded.divergence.diverged_at_step.tolist() == [12]
    assert loaded.restarts.settled_outputs.tolist() == [[False, True]]
