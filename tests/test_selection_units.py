"""The division unit (NMRU), the stochastic NMU and the per-output selection of heads."""

import functools
import json
import logging
import math

import pytest
import torch
from conftest import TINY, compose_config, load_events, read_metrics, set_
from hydra.utils import instantiate

from nalu.cli.train import train
from nalu.config.errors import InvalidArgument
from nalu.data.formula import Variable, power_product, weighted_sum
from nalu.results.readback import read_back, sparsity_error, unsaturated_gates
from nalu.training.module import ArithmeticModule, MemberObjective
from nalu.training.optimization import parameter_groups
from nalu.units import (
    NeuralAdditionUnit,
    NeuralMultiplicationUnit,
    NeuralMultiplicativeReciprocalUnit,
    PerOutputSelection,
)
from nalu.units.contract import matrix_columns
from nalu.units.nmru import bounded_reciprocal

X = torch.tensor([[1.5, -2.0, 2.5]])
# The NMRU as model=select's head: signed factors, no sign retrieval.
SIGNED_NMRU = functools.partial(NeuralMultiplicativeReciprocalUnit, sign_retrieval=False)


def test_bounded_reciprocal_is_one_over_x_from_the_floor_on_and_bounded_below():
    x = torch.tensor([-4.0, -1.0, -0.5, 0.0, 0.5, 2.0])
    assert bounded_reciprocal(x, floor=1.0).tolist() == [-0.25, -1.0, -0.5, 0.0, 0.5, 0.5]
    # Floor 0.5: exact down to |x| = 0.5; x / 0.25 (at most 1/0.5 = 2 in size) below it.
    small = torch.tensor([-0.5, 0.25, 0.1])
    assert bounded_reciprocal(small, floor=0.5).tolist() == pytest.approx([-2.0, 1.0, 0.4])


def test_nmru_divides_exactly_down_to_its_reciprocal_floor():
    unit = NeuralMultiplicativeReciprocalUnit(2, 1, reciprocal_floor=0.1)
    set_(unit.weight, [[1, 0, 0, 1]])  # x0 ÷ x1
    x = torch.tensor([[6.0, -0.5], [5.0, 0.1]])
    assert unit(x).flatten().tolist() == pytest.approx([-12.0, 50.0])


@pytest.mark.parametrize(
    ("weight", "expected"),
    [
        # Columns x0, x1, x2, 1/x0, 1/x1, 1/x2 of x = (1.5, −2, 2.5).
        ([1, 0, 0, 0, 1, 0], 1.5 / -2.0),  # x0 ÷ x1, the sign restored
        ([1, 1, 0, 0, 0, 0], -3.0),  # x0 · x1: the article's signed product
        ([0, 1, 0, 0, 1, 0], 1.0),  # x1 ÷ x1: two negatives, cos(2π) = 1
        ([0, 0, 1, 0, 0, 0], 2.5),
    ],
)
def test_nmru_multiplies_and_divides_with_signs(weight, expected):
    unit = NeuralMultiplicativeReciprocalUnit(3, 1)
    set_(unit.weight, [weight])
    assert unit(X).item() == pytest.approx(expected, rel=1e-6)


def test_nmru_between_exact_weights_matches_hand_computed_values():
    # x = (2, −4): x' = (2, −4, 0.5, −0.25), |x'| = (2, 4, 0.5, 0.25), negative k = (0, 1, 0, 1).
    unit = NeuralMultiplicativeReciprocalUnit(2, 2)
    set_(unit.weight, [[0.5, 0.0, 0.0, 1.0], [0.5, 0.0, 0.0, 0.25]])
    # Row 0: (0.5·2 + 0.5) · 0.25 = 0.375, sign cos(π·1) = −1.
    # Row 1: 1.5 · (0.25·0.25 + 0.75) = 1.21875, sign cos(π·0.25) = √2/2.
    expected = [-0.375, 1.21875 * math.sqrt(0.5)]
    assert unit(torch.tensor([[2.0, -4.0]])).flatten().tolist() == pytest.approx(expected)


def test_nmru_with_the_snmu_noise_and_sign_retrieval_matches_hand_computed_values():
    # x = (2, −4): x' = (2, −4, 0.5, −0.25), negative k = (0, 1, 0, 1). Noise n = 2 (a range of
    # one value): each factor (W|x'|n + 1 − W) / (Wn + 1 − W) in training.
    unit = NeuralMultiplicativeReciprocalUnit(2, 1, noise_range=(2.0, 2.0))
    set_(unit.weight, [[0.5, 0.0, 0.0, 1.0]])
    x = torch.tensor([[2.0, -4.0]])
    # (0.5·2·2 + 0.5) / (0.5·2 + 0.5) = 5/3 and (0.25·2) / 2 = 0.25: 5/12, sign cos(π·1) = −1.
    assert unit.train()(x).item() == pytest.approx(-5 / 12, rel=1e-6)
    # Without noise in evaluation: (0.5·2 + 0.5) · 0.25 = 0.375.
    assert unit.eval()(x).item() == pytest.approx(-0.375, rel=1e-6)


def test_nmru_caps_the_magnitude_and_keeps_the_sign():
    # W = 1 on x0 and x1 = (1e6, −1e6): log|z| = 2 ln 1e6 = 27.6 > 20, so |z| = e^20, sign −1.
    unit = NeuralMultiplicativeReciprocalUnit(2, 1, max_log_magnitude=20.0)
    set_(unit.weight, [[1.0, 1.0, 0.0, 0.0]])
    assert unit(torch.tensor([[1e6, -1e6]])).item() == pytest.approx(-math.exp(20), rel=1e-6)


def test_log_magnitudes_of_the_nmu_and_nmru_match_hand_computed_values():
    # x = (2, −4): |x'| = (2, 4, 0.5, 0.25) over [x, 1/x].
    x = torch.tensor([[2.0, -4.0]])
    nmru = NeuralMultiplicativeReciprocalUnit(2, 2)
    set_(nmru.weight, [[1.0, 0.0, 0.0, 1.0], [0.5, 0.0, 0.0, 0.25]])
    # Row 0: log(2 · 0.25); row 1: log(0.5·2 + 0.5) + log(0.25·0.25 + 0.75).
    expected = [math.log(0.5), math.log(1.5) + math.log(0.8125)]
    assert nmru.log_magnitude(x).flatten().tolist() == pytest.approx(expected)
    nmu = NeuralMultiplicationUnit(2, 1)
    set_(nmu.weight, [[1.0, 0.5]])  # log(2) + log(0.5·4 + 0.5), signs aside
    assert nmu.log_magnitude(x).item() == pytest.approx(math.log(2) + math.log(2.5))


def test_a_log_fit_head_adds_its_error_in_log_space_to_its_mse():
    unit = PerOutputSelection(
        2, 1, heads={"nau": NeuralAdditionUnit, "nmru": SIGNED_NMRU}, log_fit=["nmru"]
    )
    set_(unit.heads[0].weight, [[1.0, 1.0]])  # x0 + x1
    set_(unit.heads[1].weight, [[1.0, 0.0, 0.0, 0.5]])  # between x0 and x0 ÷ x1
    x, y = torch.tensor([[2.0, -4.0]]), torch.tensor([[-0.5]])  # y = x0 ÷ x1
    candidates = unit.candidates(x)  # nau: −2; nmru: 2 · (0.5·(−0.25) + 0.5) = 0.75
    assert candidates.flatten().tolist() == pytest.approx([-2.0, 0.75])
    # nmru: its MSE (0.75 + 0.5)², plus (log(2 · (0.5·0.25 + 0.5)) − log 0.5)² = log(2.5)².
    expected = [1.5**2, 1.25**2 + math.log(2.5) ** 2]
    assert unit.candidate_fits(x, candidates, y).tolist() == pytest.approx(expected)


@pytest.mark.parametrize(
    ("log_fit", "message"),
    [(["nmu"], "must name heads among"), (["nau"], "must have a log_magnitude: choose among")],
)
def test_log_fit_names_heads_that_have_a_log_magnitude(log_fit, message):
    heads = {"nau": NeuralAdditionUnit, "nmru": NeuralMultiplicativeReciprocalUnit}
    with pytest.raises(InvalidArgument, match=f"log_fit.*{message}"):
        PerOutputSelection(3, 1, heads=heads, log_fit=log_fit)


def test_fitted_in_log_space_an_nmru_finds_quotients_among_many_inputs():
    # A quotient's two inputs among 2 · 200 columns: the MSE's gradient at W ≈ 0 is alike for
    # every column (by its MSE alone the head settles on x_n · x_(100+n) here), the error in
    # log space points at x_n and 1/x_(100+n) from the first steps.
    torch.manual_seed(0)
    inputs, outputs = 200, 4
    unit = PerOutputSelection(inputs, outputs, heads={"nmru": SIGNED_NMRU}, log_fit=["nmru"])
    numerators, denominators = list(range(outputs)), list(range(100, 100 + outputs))
    optimizer = torch.optim.Adam(unit.parameters(), lr=1e-2)
    for _ in range(300):
        x = torch.empty(64, inputs).uniform_(1, 10) * torch.randn(64, inputs).sign()
        y = x[:, numerators] / x[:, denominators]
        loss = unit.candidate_fits(x, unit.candidates(x), y).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        unit.heads[0].nmu.clamp_parameters()
    weights, columns = unit.heads[0].weight.detach().topk(2, dim=1)
    assert columns.sort(dim=1).values.tolist() == [
        [n, d + inputs] for n, d in zip(numerators, denominators, strict=True)
    ]
    assert weights.min() > 0.8


def test_nmru_gradient_at_inputs_at_and_near_zero_is_the_hand_computed_one():
    unit = NeuralMultiplicativeReciprocalUnit(3, 1)
    set_(unit.weight, [[0.5, 0, 1, 0, 0, 0.5]])
    # x' = [x, x / max(x², 1)] = [0, −1e-8, 50, 0, −1e-8, 0.02]; factors W|x'| + 1 − W =
    # [0.5, 1, 50, 1, 1, 0.51], z = 12.75 (no negative input selected: cos 0 = 1, sin 0 = 0),
    # ∂z/∂W_i = z (|x'_i| − 1) / factor_i.
    x = torch.tensor([[0.0, -1e-8, 50.0]])
    z = unit(x)
    z.sum().backward()
    assert z.item() == pytest.approx(12.75, rel=1e-6)
    expected = [-25.5, -12.75, 12.495, -12.75, -12.75, -24.5]
    assert unit.weight.grad[0].tolist() == pytest.approx(expected, rel=1e-6)


def test_nmru_reads_back_as_a_quotient():
    unit = NeuralMultiplicativeReciprocalUnit(3, 2)
    set_(unit.weight, [[1, 0, 0, 0, 0, 0.9], [0, 1, 1, 0, 0, 0]])
    x0, x1, x2 = (Variable(i) for i in range(3))
    assert read_back(unit, X) == [power_product({x0: 1, x2: -1}), power_product({x1: 1, x2: 1})]
    assert sparsity_error(unit, X).tolist() == pytest.approx([0.1, 0.0])


def test_stochastic_nmu_is_exact_at_exact_weights_and_noisy_between():
    unit = NeuralMultiplicationUnit(3, 1, noise_range=(1.0, 5.0))
    set_(unit.weight, [[1.0, 1.0, 0.0]])
    assert unit.train()(X).item() == pytest.approx(-3.0, rel=1e-6)  # (x n)·(y m) / (n m)
    # A constant noise of 2 (range [2, 2]): each factor is (W x 2 + 1 − W) / (W 2 + 1 − W).
    constant = NeuralMultiplicationUnit(3, 1, noise_range=(2.0, 2.0))
    set_(constant.weight, [[0.5, 0.5, 0.0]])
    # (1.5 + 0.5) / 1.5 · (−2 + 0.5) / 1.5 = −4/3 in training; 1.25 · −0.5 without noise.
    assert constant.train()(X).item() == pytest.approx(-4 / 3, rel=1e-6)
    assert constant.eval()(X).item() == pytest.approx(-0.625, rel=1e-6)


def test_noise_range_must_be_positive():
    with pytest.raises(InvalidArgument, match="noise_range"):
        NeuralMultiplicationUnit(3, 1, noise_range=(0.0, 5.0))


def selection_of_nau_and_nmu() -> PerOutputSelection:
    unit = PerOutputSelection(
        3, 2, heads={"nau": NeuralAdditionUnit, "nmu": NeuralMultiplicationUnit}
    )
    set_(unit.heads[0].weight, [[1, 1, 0], [0, 0, 1]])  # x0 + x1, x2
    set_(unit.heads[1].weight, [[0, 0, 1], [1, 1, 0]])  # x2, x0 · x1
    return unit


def test_selection_answers_each_output_with_the_head_of_the_lowest_validation_mse():
    unit = selection_of_nau_and_nmu()
    assert unit.head_names == ["nau", "nmu"]
    assert unit.candidates(X).tolist() == [[[-0.5, 2.5], [2.5, -3.0]]]  # [batch, head, out]
    assert unit(X).tolist() == [[-0.5, 2.5]]  # head 0 until a choice is made
    unit.select(torch.tensor([[0.1, 7.0], [0.2, 0.0]]))  # [head, out] validation MSEs
    assert unit.choice.tolist() == [0, 1]
    assert unit(X).tolist() == [[-0.5, -3.0]]
    x0, x1 = Variable(0), Variable(1)
    assert read_back(unit, X) == [weighted_sum({x0: 1, x1: 1}), power_product({x0: 1, x1: 1})]


def test_selection_sparsity_counts_only_the_chosen_heads():
    unit = selection_of_nau_and_nmu()
    set_(unit.heads[1].weight, [[0, 0, 0.7], [1, 1, 0]])  # head 1's output 0 is inexact...
    unit.select(torch.tensor([[0.0, 1.0], [1.0, 0.0]]))  # ...but head 0 answers it
    assert sparsity_error(unit, X).tolist() == [0.0, 0.0]
    assert unsaturated_gates(unit, X).tolist() == [False, False]


def test_the_choice_matrix_marks_the_answering_head_of_each_output_by_name():
    unit = selection_of_nau_and_nmu()
    unit.select(torch.tensor([[0.1, 7.0], [0.2, 0.0]]))  # output 0: nau, output 1: nmu
    assert unit.effective_weights()["choice"].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert matrix_columns(unit) == {"choice": ["nau", "nmu"]}
    assert matrix_columns(unit.heads[0]) == {}  # a head's columns are its inputs


def test_a_head_whose_validation_mse_is_nan_is_never_chosen():
    unit = selection_of_nau_and_nmu()
    unit.select(torch.tensor([[float("nan"), 1.0], [5.0, float("nan")]]))
    assert unit.choice.tolist() == [1, 0]


def test_a_selection_inside_a_stack_is_refused():
    stack = {
        "_target_": "torch.nn.Sequential",
        "_args_": [
            {"_target_": "nalu.units.NeuralAdditionUnit", "in_features": 3, "out_features": 2},
            {
                "_target_": "nalu.units.PerOutputSelection",
                "in_features": 2,
                "out_features": 1,
                "heads": {"nau": {"_target_": "nalu.units.NeuralAdditionUnit", "_partial_": True}},
            },
        ],
    }
    optimizer = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}
    with pytest.raises(InvalidArgument, match="must be the whole model"):
        ArithmeticModule(stack, optimizer, [["add"]])


def test_only_units_whose_outputs_are_models_of_their_own_are_judged_per_output(tmp_path):
    overrides = [*TINY, "trainer.max_epochs=1"]
    unit = train(compose_config([*overrides, "model=nau"], tmp_path / "nau"))
    stack = train(compose_config([*overrides, "model=nau_nmu"], tmp_path / "stack"))
    assert "extrap/own_best_solved_fraction" in unit
    assert not any("own_best" in name for name in stack)


def test_selection_restarts_each_head_from_its_own_initialisation():
    torch.manual_seed(0)
    unit = PerOutputSelection(4, 3, heads={"nau": NeuralAdditionUnit}, restarts=3)
    assert unit.head_names == ["nau_0", "nau_1", "nau_2"]
    assert not torch.equal(unit.heads[0].weight, unit.heads[1].weight)
    with pytest.raises(InvalidArgument, match="restarts"):
        PerOutputSelection(4, 3, heads={"nau": NeuralAdditionUnit}, restarts=0)


def test_selection_objective_trains_every_head_on_every_output_alone():
    unit = selection_of_nau_and_nmu()
    y = torch.tensor([[0.5, -3.0]])
    # Head 0 answers (−0.5, 2.5): MSE (1 + 30.25)/2; head 1 (2.5, −3): MSE (4 + 0)/2.
    mse, fit, _ = MemberObjective(unit)(X, y)
    assert fit.item() == pytest.approx(31.25 / 2 + 2.0)
    assert mse.item() == pytest.approx(31.25 / 2)  # the answers: head 0 for both, as chosen
    fit.backward()
    # Each head's gradient is its own MSE's: 2·(ŷ − y)·x / (batch·out), nothing from the other.
    assert unit.heads[0].weight.grad[1].tolist() == pytest.approx([1.5 * 5.5, -2 * 5.5, 2.5 * 5.5])


# A selection of + × ÷ heads on fresh batches: 200 steps an epoch, all learned within 6 epochs.
SMALL_SELECTION = [
    *TINY,
    "model=select",
    "data.operations=[add,mul,div]",
    "data.min_abs_denominator=1",
    "data.resample=true",
    "data.train_size=3200",
    "optimizer.lr=0.05",
    "lr_schedule=linear_decay",
]


@pytest.mark.slow
def test_a_selection_run_chooses_the_head_that_computes_each_output(tmp_path):
    metrics = train(compose_config([*SMALL_SELECTION, "trainer.max_epochs=6"], tmp_path))
    assert metrics["extrap/own_best_solved_fraction"] == 1.0
    assert metrics["extrap/solved_fraction"] == 1.0
    assert metrics["recovered_fraction"] == 1.0


def test_a_run_stops_once_every_output_is_solved_on_validation_data(tmp_path, caplog):
    overrides = [*SMALL_SELECTION, "trainer.max_epochs=40", "stop_when_solved=true"]
    with caplog.at_level(logging.INFO, logger="nalu.training.module"):
        stopped = train(compose_config(overrides, tmp_path))
    steps = read_metrics(tmp_path)["steps"]
    assert steps < 40 * 200
    # It says why it stopped, once: at the validation that found every output solved...
    said = [r.getMessage() for r in caplog.records if r.name == "nalu.training.module"]
    assert said == [
        f"step {steps}: every output of every member is solved on the interpolation set; "
        "training stops here (stop_when_solved)"
    ]
    # ... which was the run's last: a validation every epoch of 200 steps, none after it.
    validations = [event.step for event in load_events(tmp_path).Scalars("interp/mse")]
    assert validations == list(range(200, steps + 1, 200))
    assert stopped["extrap/own_best_solved_fraction"] == 1.0


def test_each_head_learns_at_its_own_rate():
    unit = PerOutputSelection(
        3,
        2,
        heads={"nau": NeuralAdditionUnit, "nmu": NeuralMultiplicationUnit},
        learning_rate_scales={"nau": 10.0},
    )
    groups = parameter_groups(unit, lr=1e-3)
    assert [(group.get("lr"), len(group["params"])) for group in groups] == [(1e-2, 1), (None, 1)]
    assert groups[0]["params"][0] is unit.heads[0].weight
    with pytest.raises(InvalidArgument, match="learning_rate_scales"):
        PerOutputSelection(3, 2, heads={"nau": NeuralAdditionUnit}, learning_rate_scales={"x": 2})


@pytest.mark.slow
def test_the_solve_experiment_is_the_recipe_make_solve_runs(tmp_path):
    cfg = compose_config(["experiment=solve"], tmp_path)
    assert cfg.model._target_ == "nalu.units.PerOutputSelection"
    assert list(cfg.model.heads) == ["nau", "nmu", "nmru"]
    assert cfg.model.heads.nmru.sign_retrieval is False
    # The NMRU fitted in log space as well, at 3× the rate: a quotient among many inputs.
    assert list(cfg.model.log_fit) == ["nmru"] and cfg.model.learning_rate_scales.nmru == 3.0
    assert list(cfg.data.operations) == ["add", "sub", "mul", "div"]
    assert (cfg.data.resample, cfg.data.batch_size, cfg.data.train_size) == (True, 128, 12800)
    # A round of 30 epochs per 50 inputs, rounded up.
    assert (cfg.regularizer.scale, cfg.rounds, cfg.trainer.max_epochs) == (10.0, 2, 60)
    wider = compose_config(["experiment=solve", "data.in_features=301"], tmp_path)
    assert (wider.rounds, wider.trainer.max_epochs) == (7, 210)
    assert cfg.stop_when_solved
    assert cfg.lr_schedule._target_ == "nalu.training.optimization.LinearDecay"
    tiny = [*TINY, "experiment=solve", "population=2", "trainer.max_epochs=1", "data.train_size=64"]
    train(compose_config(tiny, tmp_path / "run"))
    member = tmp_path / "run" / "members" / "1_select_seed1"
    record = json.loads((member / "metrics.json").read_text())
    outputs = json.loads((member / "problem.json").read_text())["outputs"]
    divisions = sum(output["operation"] == "div" for output in outputs)
    assert record["metrics"]["output_count_div"] == divisions > 0
    assert "extrap/own_best_solved_fraction_div" in record["metrics"]


@pytest.mark.slow
def test_the_solve_recipe_learns_every_output_of_a_small_problem(tmp_path):
    # 12 inputs: one round of 3,000 steps.
    overrides = [
        "experiment=solve",
        "data.in_features=12",
        "data.out_features=8",
        "population=2",
        "compile=false",
        "trainer.enable_progress_bar=false",
    ]
    cfg = compose_config(overrides, tmp_path)
    assert (cfg.rounds, cfg.trainer.max_epochs) == (1, 30)
    metrics = train(cfg)
    records = [json.loads(path.read_text()) for path in tmp_path.glob("members/*/metrics.json")]
    assert [r["metrics"]["extrap/own_best_solved_fraction"] for r in records] == [1.0, 1.0]
    assert metrics["extrap/solved_fraction"] == 1.0


def test_the_static_anchors_whole_recipe_is_madsen_and_johansens(tmp_path):
    # README's command for their 5·10⁶-step run (with trainer=cpu here: no GPU needed to compose)
    overrides = ["experiment=static_nau_nmu", "population=50", "~lr_schedule"]
    overrides += ["trainer.max_epochs=5000", "data.interp_size=10000", "data.extrap_size=10000"]
    cfg = compose_config(overrides, tmp_path)
    steps = cfg.trainer.max_epochs * cfg.data.train_size // cfg.data.batch_size
    assert steps == 5_000_000 and cfg.trainer.check_val_every_n_epoch == 1
    assert cfg.data.train_size // cfg.data.batch_size == 1000  # judged every 1,000 steps
    assert cfg.get("lr_schedule") is None and cfg.optimizer.lr == 1e-3
    schedule = instantiate({"_target_": "nalu.training.regularizer.RegularizerSchedule",
                            **cfg.regularizer})  # fmt: skip
    # λ_sparse = 10 ramped linearly from step 10⁶ to 2·10⁶ (their λ-start and λ-end)
    ramp = [schedule(step, steps) for step in (999_999, 1_000_000, 1_500_000, 2_000_000, 4_999_999)]
    assert ramp == pytest.approx([0.0, 0.0, 5.0, 10.0, 10.0])
    assert (cfg.population, cfg.data.train_range, cfg.data.extrap_range) == (50, [1, 2], [2, 6])


@pytest.mark.slow
def test_the_static_anchor_samples_the_signed_union_and_trains(tmp_path):
    overrides = [
        "experiment=static_nau_nmu",
        "data.train_range=[-2,2]",
        "data.interp_range=[-2,2]",
        "data.extrap_range=[[-6,-2],[2,6]]",
        "data.train_size=256",
        "data.interp_size=64",
        "data.extrap_size=64",
        "trainer.max_epochs=1",
        "trainer.check_val_every_n_epoch=1",
        "trainer.enable_progress_bar=false",
    ]
    cfg = compose_config(overrides, tmp_path)
    assert [unit.out_features for unit in [cfg.model._args_[0]]] == [2]
    train(cfg)
    recorded = read_metrics(tmp_path)
    assert (recorded["status"], recorded["steps"]) == ("finished", 256 // cfg.data.batch_size)
    data = instantiate(cfg.data)
    data.setup()
    extrap = data.datasets["extrap"].inputs  # 6,400 values: half negative, within 3%
    assert ((extrap.abs() >= 2) & (extrap.abs() <= 6)).all()
    assert (extrap < 0).float().mean().item() == pytest.approx(0.5, abs=0.03)
