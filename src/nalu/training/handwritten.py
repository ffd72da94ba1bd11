"""The strongest plain PyTorch we can write for the project's standard trainings: the yardstick
that ``nalu.cli.bench`` measures the project's own step against.

Each loop trains what a config describes, written by hand: no Lightning, no ``vmap``, no
bookkeeping; a population's weights are ``[S, out, in]`` tensors multiplied with ``bmm``, the
units' maths written out (Madsen & Johansen 2020's NAU and NMU, Mistry et al. 2021's NMRU over
``[x, 1/x]``; the NMU's product is the units' own ``nmu_product``, the fastest we know), one
fused Adam over every member, fresh batches drawn for all members at once
with the counter-based generator (``nalu.data.counter_random``, the fastest way we know to draw
them here: an eager hash beats ``torch.rand``'s Mersenne Twister on a CPU). ``compiled=True``
runs each step (forward, loss, gradient, Adam and the clamps) as one compiled graph, and the
drawing of fresh batches through ``torch.compile``, as the project does with ``compile=true``
(``_Update``); ``graphed=True`` (CUDA) captures
each epoch of the static and ``solve`` loops as one CUDA graph, as the project captures its
chunks. Each ``*_population`` builds the loop (``HandwrittenPopulation``: its weights and its
step, which a test holds to the project's); ``timed_population`` builds one and returns its
seconds per optimizer step after a first epoch of warm-up.
"""

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import Tensor, nn

from nalu.config.rules import member_seeds
from nalu.config.value_range import value_intervals
from nalu.data.batches import MemberProblems, epoch_orders, fresh_key, order_key
from nalu.data.counter_random import Streams, fold_key
from nalu.data.problem import (
    OPERATIONS,
    ArithmeticProblem,
    ColumnRanges,
    MysteryArithmeticProblem,
    StaticArithmeticProblem,
    operand_matrix,
)
from nalu.training.captured import CapturedChunks
from nalu.training.optimization import (
    LinearDecay,
    adam_update,
    compile_whole_step,
    hands_gradients_over,
    step_gradients,
    zero_grad,
)
from nalu.training.regularizer import RegularizerSchedule
from nalu.units.nau import integer_distance, nau_init_bound
from nalu.units.nmru import bounded_reciprocal
from nalu.units.nmu import log_magnitude, nmu_product

Step = Callable[[int, int], None]


def synchronize(device: torch.device | str) -> None:
    """Wait for ``device``'s queued work (a GPU's; a CPU runs each operation as it is called),
    so that a clock read after it times the work."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed_steps(step: Step, epochs: int, steps_per_epoch: int, device: torch.device) -> float:
    """Seconds per call of ``step(epoch, step)`` over ``epochs``, the first one uncounted (but
    for a single epoch)."""
    first = min(1, epochs - 1)
    start = 0.0
    for epoch in range(epochs):
        if epoch == first:
            synchronize(device)
            start = time.perf_counter()
        for index in range(steps_per_epoch):
            step(epoch, index)
    synchronize(device)
    return (time.perf_counter() - start) / ((epochs - first) * steps_per_epoch)


@dataclass
class HandwrittenPopulation:
    """A hand-written population ready to train: its ``weights`` (``[S, out, in]`` each, in the
    order the project's network lists its parameters) and its ``step(epoch, index)``."""

    weights: list[nn.Parameter]
    step: Step
    steps_per_epoch: int


def timed_population(
    build: Callable[..., HandwrittenPopulation],
    cfg: DictConfig,
    population: int,
    epochs: int,
    device: str = "cpu",
    **options: bool,
) -> float:
    """Seconds per step of the population that ``build`` (``article_population``, ...) makes
    afresh from ``cfg`` with ``options`` (``compiled``, ``graphed``), over ``epochs``."""
    built = build(cfg, population, device, **options)
    return timed_steps(built.step, epochs, built.steps_per_epoch, torch.device(device))


def _sparsity(weight: Tensor) -> Tensor:
    """Madsen & Johansen 2020, eq. 6: R_sparse = mean(min(|W|, 1 − |W|)), per member ``[S]``."""
    return integer_distance(weight).mean(dim=(-2, -1))


def _nmu(weight: Tensor, x: Tensor, max_log_magnitude: float) -> Tensor:
    """Madsen & Johansen 2020, eq. 12: NMU_j = Π_i (W_ji x_i + 1 − W_ji): weight ``[S, out, in]``, x
    ``[S, B, in]`` -> ``[S, B, out]``, by the units' own product (the fastest we have: it keeps
    no ``[S, B, out, in]`` factors for the backward pass, and compiled over a batch-first x
    it lays the batch out last, as for the unit)."""
    return nmu_product(weight.unsqueeze(1), x, max_log_magnitude)


def article_single_loop(cfg: DictConfig, epochs: int, device: str = "cpu") -> float:
    """The article's single run (``experiment=article``: the NALU on its fixed training set,
    shuffled every epoch) as a plain loop: the network and optimizer from the config, the
    batches of the run's order."""
    torch.manual_seed(cfg.seed)
    from hydra.utils import instantiate

    data = instantiate(cfg.data)
    data.setup("fit")
    inputs = data.datasets["train"].inputs.to(device)
    targets = data.datasets["train"].targets.to(device)
    network = instantiate(cfg.model).to(device)
    optimizer = instantiate(cfg.optimizer)(network.parameters())
    batch_size = cfg.data.batch_size
    key = order_key(cfg.data.shuffle_seed, device)
    orders: dict[int, list[Tensor]] = {}

    def step(epoch: int, index: int) -> None:
        if epoch not in orders:
            orders.clear()
            orders[epoch] = list(epoch_orders(key, epoch, len(inputs)).split(batch_size))
        batch = orders[epoch][index]
        loss = F.mse_loss(network(inputs[batch]), targets[batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    steps = -(-len(inputs) // batch_size)
    return timed_steps(step, epochs, steps, torch.device(device))


class _Update:
    """An optimizer step of ``objective``'s parameters (those of ``optimizer``, Adam) on a batch:
    forward, backward and Adam's update, then the ``clamps`` ((weight, low, high) each). With
    ``compiled``, the whole step as one compiled graph after a first ordinary one that makes
    Adam's state: the gradient traced into the graph and Adam's update in tensor operations
    (``nalu.training.optimization.adam_update``) fused with it, as the project compiles a step."""

    def __init__(
        self,
        objective: Callable[..., Tensor],
        optimizer: torch.optim.Adam,
        clamps: list[tuple[Tensor, float, float]],
        compiled: bool,
    ) -> None:
        self.objective, self.optimizer, self.clamps = objective, optimizer, clamps
        parameters = (p for group in optimizer.param_groups for p in group["params"])
        self.stores_gradients = not hands_gradients_over(parameters)
        self.compiled = compile_whole_step(self._graph) if compiled else None
        # The forward alone compiled: for a torch that cannot compile the whole step, and for a
        # captured epoch (CUDA), as the project's captured chunks compile it.
        self.forward = torch.compile(objective, dynamic=False) if compiled else objective

    def __call__(self, *inputs: Tensor) -> None:
        if self.compiled is None:
            self.step_in_parts(self.forward(*inputs))
        elif not self.optimizer.state:  # the first step, eager: it makes Adam's state
            self.step_in_parts(self.objective(*inputs))
        else:
            device = inputs[0].device
            rates = [torch.tensor(g["lr"], device=device) for g in self.optimizer.param_groups]
            self.compiled(rates, *inputs)

    def step_in_parts(self, loss: Tensor) -> None:
        """Backward from ``loss``, Adam's step and the clamps. Adam's first step, which makes
        its state, is ``optimizer.step()``; later ones are its update alone (``adam_update`` at
        the groups' rates), without the Python of ``step()``'s and ``zero_grad()``'s wrappers."""
        zero_grad(self.optimizer)
        loss.backward()
        if self.optimizer.state:
            adam_update(self.optimizer)
        else:
            self.optimizer.step()
        self._clamp()

    def _graph(self, rates: list[Tensor], *inputs: Tensor) -> None:
        loss = self.objective(*inputs)
        gradients = step_gradients(self.optimizer, loss, store=self.stores_gradients)
        adam_update(self.optimizer, rates, gradients)
        self._clamp()

    def _clamp(self) -> None:
        with torch.no_grad():
            for weight, low, high in self.clamps:
                weight.clamp_(low, high)


def _bmm_linear(x: Tensor, weight: Tensor) -> Tensor:
    """Every member's x Wᵀ, ``[S, B, in]`` by ``[S, out, in]``, as (W xᵀ)ᵀ: the CPU's ``bmm``
    runs this layout about twice as fast (see ``nalu.units.linear``)."""
    return torch.bmm(weight, x.mT).mT


def _nac_weight(weight_hat: Tensor, gate_hat: Tensor) -> Tensor:
    """Trask et al. 2018, eq. 1: W = tanh(Ŵ) ⊙ σ(M̂)."""
    return torch.tanh(weight_hat) * torch.sigmoid(gate_hat)


def article_population(
    cfg: DictConfig, population: int, device: str = "cpu", compiled: bool = False
) -> HandwrittenPopulation:
    """``experiment=article`` for ``population`` seeds by hand: the article's NALU (two NACs
    and a gate, Trask et al. 2018, sec. 2) with weights ``[S, out, in]``, each member on its own
    problem's fixed training set in its own order (the training inputs, one data seed, held
    once), one fused Adam."""
    from hydra.utils import instantiate

    where = torch.device(device)
    seeds = member_seeds(cfg.seed, population)
    sets = []
    for seed in seeds:
        data = instantiate(cfg.data, problem_seed=seed, shuffle_seed=seed)
        data.setup("fit")
        sets.append(data.datasets["train"])
    inputs = sets[0].inputs.to(where)  # the same for every member: one train_seed, no division
    targets = torch.stack([s.targets for s in sets]).to(where).flatten(0, 1)
    size, in_features = inputs.shape
    out_features = cfg.data.out_features
    bound = math.sqrt(6 / (in_features + out_features))  # Xavier-uniform, as the units
    shape = (population, out_features, in_features)
    weights = [nn.Parameter(torch.empty(shape).uniform_(-bound, bound).to(where)) for _ in range(5)]
    add_weight, add_gate, mul_weight, mul_gate, gate = weights
    optimizer = torch.optim.Adam(weights, lr=cfg.optimizer.lr, fused=True)
    keys = torch.stack([order_key(seed) for seed in seeds]).to(where)
    offsets = torch.arange(population, device=where).unsqueeze(1) * size
    batch_size, eps = cfg.data.batch_size, cfg.model.get("eps", 1e-7)
    orders: dict[int, list[Tensor]] = {}

    def objective(x: Tensor, y: Tensor) -> Tensor:
        additive = _bmm_linear(x, _nac_weight(add_weight, add_gate))
        log_x = torch.log(x.abs() + eps)
        multiplicative = torch.exp(_bmm_linear(log_x, _nac_weight(mul_weight, mul_gate)))
        g = torch.sigmoid(_bmm_linear(x, gate))
        output = g * additive + (1 - g) * multiplicative
        return (output - y).square().mean(dim=(1, 2)).sum()

    update = _Update(objective, optimizer, [], compiled)

    def step(epoch: int, index: int) -> None:
        if epoch not in orders:
            orders.clear()
            orders[epoch] = list(epoch_orders(keys, epoch, size).split(batch_size, dim=1))
        rows = orders[epoch][index]  # [S, B]
        x = inputs.index_select(0, rows.flatten()).view(*rows.shape, in_features)
        y = targets.index_select(0, (rows + offsets).flatten()).view(*rows.shape, out_features)
        update(x, y)

    # In the order of the project's NALU: its gate, then each NAC's Ŵ and M̂.
    ordered = [gate, add_weight, add_gate, mul_weight, mul_gate]
    return HandwrittenPopulation(ordered, step, -(-size // batch_size))


class _FreshBatches:
    """Every member's fresh batch for ``(epoch, step)``: ``[S, B, in]`` inputs from each
    member's stream that the project's run would draw (``nalu.data.batches.FreshBatches``), the
    epoch's streams derived once, and their ``targets``; ``compiled``: drawn, placed and their
    targets computed by one compiled kernel."""

    def __init__(
        self,
        keys: Tensor,
        batch_size: int,
        steps: int,
        columns: ColumnRanges,
        targets: Callable[[Tensor], Tensor],
        compiled: bool,
    ) -> None:
        self.keys, self.batch_size, self.steps, self.columns = keys, batch_size, steps, columns
        self.targets = targets
        self.epoch, self.streams = -1, Streams.of(keys)
        self.draw = torch.compile(self._draw, dynamic=False) if compiled else self._draw

    def __call__(self, epoch: int, step: int | Tensor) -> tuple[Tensor, Tensor]:
        """The batch of ``step`` (an int, or an int64 ``[1]`` tensor) of ``epoch``; the
        epoch's streams are written over the last epoch's tensors (a captured graph reads
        them)."""
        self.use_epoch(epoch)
        if isinstance(step, Tensor):
            return self.draw(self.streams[step][0])
        return self.draw(self.streams[step])

    def use_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            steps = torch.arange(self.steps, dtype=torch.int32, device=self.keys.device)
            streams = Streams.of(fold_key(fold_key(self.keys, epoch), steps.unsqueeze(1)))
            if self.epoch >= 0:
                self.streams.multiplier.copy_(streams.multiplier)
                self.streams.offset.copy_(streams.offset)
            else:
                self.streams = streams
            self.epoch = epoch

    def _draw(self, streams: Streams) -> tuple[Tensor, Tensor]:
        members, _, in_features = self.columns.totals.shape
        uniforms = streams.uniform(self.batch_size * in_features)
        x = self.columns.place(uniforms.view(members, self.batch_size, in_features))
        return x, self.targets(x)


def _member_columns(
    problems: Sequence[ArithmeticProblem], value_range: Sequence[Any], device: torch.device
) -> ColumnRanges:
    """``[S, 1, in, ...]``: each member's columns of ``value_range``, as a population places
    its fresh inputs."""
    intervals = value_intervals("train_range", value_range)
    return MemberProblems(problems, [intervals] * len(problems), device).columns


class _Recipe:
    """A step of the NAU/NMU recipe given its batch: λ's ramp (``cfg.regularizer``), one Adam
    step, the learning rate's decay (``cfg.lr_schedule``) and the weights' clamps."""

    def __init__(
        self,
        cfg: DictConfig,
        objective: Callable[[Tensor, Tensor, Tensor], Tensor],
        optimizer: torch.optim.Optimizer,
        clamps: list[tuple[Tensor, float, float]],
        compiled: bool,
    ) -> None:
        self.steps_per_epoch = -(-cfg.data.train_size // cfg.data.batch_size)
        self.total = self.steps_per_epoch * cfg.trainer.max_epochs
        self.regularizer = RegularizerSchedule(**cfg.regularizer)
        self.optimizer = optimizer
        decay = cfg.lr_schedule
        self.schedule = LinearDecay(optimizer, self.total, decay.start, decay.end_factor)
        self.update = _Update(objective, optimizer, clamps, compiled)
        self.taken = 0

    def __call__(self, x: Tensor, y: Tensor) -> None:
        scale = self.regularizer(self.taken, self.total)
        self.update(x, y, torch.tensor(scale, device=x.device))
        self.schedule.step()
        self.taken += 1


class _CapturedEpochs:
    """Every step of an epoch (its batch, λ, Adam at the step's learning rate, the clamps)
    captured once as one CUDA graph and replayed once per epoch: a recipe's loop at its fastest
    on a GPU. The host writes the epoch's λ and learning rates into tables the graph reads, and
    the epoch's streams into the batches' tables; the graph counts the steps on the device."""

    def __init__(self, recipe: _Recipe, batches: _FreshBatches) -> None:
        self.recipe, self.batches = recipe, batches
        device, steps = batches.keys.device, recipe.steps_per_epoch
        groups = recipe.optimizer.param_groups
        self.index = torch.zeros(1, dtype=torch.long, device=device)
        self.scales = torch.zeros(steps, device=device)
        self.rates = torch.zeros(steps, len(groups), device=device)
        self.base_rates = [float(group["lr"]) for group in groups]
        for group in groups:
            group["capturable"] = True
            group["lr"] = torch.tensor(group["lr"], device=device)
        self.captured = CapturedChunks(device)

    def __call__(self, epoch: int) -> None:
        recipe = self.recipe
        taken = range(recipe.taken, recipe.taken + recipe.steps_per_epoch)
        factor = recipe.schedule.lr_lambdas[0]
        scales = [recipe.regularizer(t, recipe.total) for t in taken]
        self.scales.copy_(torch.tensor(scales))
        self.rates.copy_(torch.tensor([[lr * factor(t) for lr in self.base_rates] for t in taken]))
        self.index.zero_()
        self.batches.use_epoch(epoch)
        # The first epoch runs eagerly (compilation, Adam's state) and is recorded; each later
        # one is a replay.
        self.captured.run("epoch", self._epoch)
        recipe.taken += recipe.steps_per_epoch

    def _epoch(self) -> None:
        recipe = self.recipe
        for k in range(recipe.steps_per_epoch):
            x, y = self.batches(self.batches.epoch, self.index)
            self.index += 1
            for group, rate in zip(recipe.optimizer.param_groups, self.rates[k], strict=True):
                group["lr"].copy_(rate)
            recipe.update.step_in_parts(recipe.update.forward(x, y, self.scales[k]))


def _steps(recipe: _Recipe, batches: _FreshBatches, graphed: bool) -> Step:
    """The loop's ``step(epoch, index)``: the recipe's step on the step's batch, or with
    ``graphed`` (CUDA) the whole epoch as one replayed graph at each epoch's first step."""
    if not graphed:
        return lambda epoch, index: recipe(*batches(epoch, index))
    captured = _CapturedEpochs(recipe, batches)
    return lambda epoch, index: captured(epoch) if index == 0 else None


def static_population(
    cfg: DictConfig,
    population: int,
    device: str = "cpu",
    compiled: bool = False,
    graphed: bool = False,
) -> HandwrittenPopulation:
    """``experiment=static_nau_nmu`` for ``population`` seeds by hand: NAU (in → 2) then NMU
    (2 → 1) weights ``[S, ...]``, a fresh batch of U[train_range] every step, λ's ramp, the
    learning rate's decay and the clamps."""
    where = torch.device(device)
    data, nau, nmu = cfg.data, cfg.model._args_[0], cfg.model._args_[1]
    seeds = member_seeds(cfg.seed, population)
    problems = [
        StaticArithmeticProblem(
            data.in_features, tuple(data.operations), data.subset_ratio, data.overlap_ratio, seed
        )
        for seed in seeds
    ]
    columns = _member_columns(problems, data.train_range, where)
    operands = torch.stack([operand_matrix(p.operand_masks()) for p in problems]).to(where)
    keys = torch.stack([fresh_key(data.train_seed, seed) for seed in seeds]).to(where)
    bound = nau_init_bound(nau.in_features, nau.out_features)
    hidden = torch.empty(population, nau.out_features, nau.in_features).uniform_(-bound, bound)
    hidden = nn.Parameter(hidden.to(where))
    output = torch.empty(population, nmu.out_features, nmu.in_features).uniform_(*nmu.init_range)
    output = nn.Parameter(output.to(where))
    optimizer = torch.optim.Adam([hidden, output], lr=cfg.optimizer.lr, fused=True)

    def objective(x: Tensor, y: Tensor, scale: Tensor) -> Tensor:
        z = _nmu(output, _bmm_linear(x, hidden), nmu.max_log_magnitude)
        mse = (z - y).square().mean(dim=(1, 2))
        return (mse + scale * (_sparsity(hidden) + _sparsity(output))).sum()

    operations = [OPERATIONS[name].apply for name in data.operations]

    def targets(x: Tensor) -> Tensor:  # an output per operation, as the problem defines them
        a, b = torch.bmm(x, operands).chunk(2, dim=-1)
        return torch.cat([apply(a, b) for apply in operations], dim=-1)

    recipe = _Recipe(cfg, objective, optimizer, [(hidden, -1, 1), (output, 0, 1)], compiled)
    batches = _FreshBatches(
        keys, data.batch_size, recipe.steps_per_epoch, columns, targets, compiled
    )
    steps = _steps(recipe, batches, graphed)
    return HandwrittenPopulation([hidden, output], steps, recipe.steps_per_epoch)


def solve_population(
    cfg: DictConfig,
    population: int,
    device: str = "cpu",
    compiled: bool = False,
    graphed: bool = False,
) -> HandwrittenPopulation:
    """``experiment=solve`` for ``population`` seeds by hand: per member an NAU, an NMU and an
    NMRU head (signed factors over ``[x, 1/x]``), each fitting every output on its own (the
    sum of the heads' MSEs, and of the ``log_fit`` heads' errors in log space), at their
    learning-rate scales, a fresh batch every step with the
    denominators kept off zero, λ's ramp, the learning rate's decay and the clamps."""
    where = torch.device(device)
    data, heads = cfg.data, cfg.model.heads
    seeds = member_seeds(cfg.seed, population)
    problems = [
        MysteryArithmeticProblem(
            data.in_features, data.out_features, tuple(data.operations), seed,
            data.min_abs_denominator,
        )
        for seed in seeds
    ]  # fmt: skip
    columns = _member_columns(problems, data.train_range, where)
    left = torch.stack([p.left_index for p in problems]).to(where).unsqueeze(1)
    right = torch.stack([p.right_index for p in problems]).to(where).unsqueeze(1)
    names = [p.output_operations for p in problems]
    is_div, is_mul, is_sub = (
        torch.tensor([[name == op for name in row] for row in names], device=where).unsqueeze(1)
        for op in ("div", "mul", "sub")
    )
    keys = torch.stack([fresh_key(data.train_seed, seed) for seed in seeds]).to(where)
    shape = (population, data.out_features, data.in_features)
    bound = nau_init_bound(data.in_features, data.out_features)
    nau = nn.Parameter(torch.empty(shape).uniform_(-bound, bound).to(where))
    nmu = nn.Parameter(torch.empty(shape).uniform_(*heads.nmu.init_range).to(where))
    wide = (population, data.out_features, 2 * data.in_features)
    nmru = nn.Parameter(torch.empty(wide).uniform_(*heads.nmru.init_range).to(where))
    rates = cfg.model.learning_rate_scales
    groups = [
        {"params": [nau], "lr": cfg.optimizer.lr * rates.get("nau", 1.0)},
        {"params": [nmu], "lr": cfg.optimizer.lr * rates.get("nmu", 1.0)},
        {"params": [nmru], "lr": cfg.optimizer.lr * rates.get("nmru", 1.0)},
    ]
    optimizer = torch.optim.Adam(groups, lr=cfg.optimizer.lr, fused=True)
    floor = heads.nmru.reciprocal_floor

    in_logs = set(cfg.model.get("log_fit", ()))

    def objective(x: Tensor, y: Tensor, scale: Tensor) -> Tensor:
        extended = torch.cat([x, bounded_reciprocal(x, floor)], dim=-1)
        candidates = {
            "nau": (nau, _bmm_linear(x, nau)),
            "nmu": (nmu, _nmu(nmu, x, heads.nmu.max_log_magnitude)),
            "nmru": (nmru, _nmu(nmru, extended, heads.nmru.max_log_magnitude)),
        }
        fit = sum((z - y).square().mean(dim=(1, 2)) for _, z in candidates.values())
        if in_logs:  # the heads' error in log space (PerOutputSelection.candidate_fits)
            inputs = {"nmu": x.abs(), "nmru": extended.abs()}
            log_target = torch.log(y.abs().clamp_min(torch.finfo(y.dtype).tiny))
            for name in in_logs:
                logs = log_magnitude(candidates[name][0].unsqueeze(1), inputs[name])
                fit = fit + (logs - log_target).square().mean(dim=(1, 2))
        sparsity = _sparsity(nau) + _sparsity(nmu) + _sparsity(nmru)
        return (fit + scale * sparsity).sum()

    clamps = [(nau, -1, 1), (nmu, 0, 1), (nmru, 0, 1)]

    def targets(x: Tensor) -> Tensor:
        size = (population, data.batch_size, data.out_features)
        a, b = x.gather(-1, left.expand(size)), x.gather(-1, right.expand(size))
        y = torch.where(is_sub, a - b, a + b)
        return torch.where(is_div, a / b, torch.where(is_mul, a * b, y))

    recipe = _Recipe(cfg, objective, optimizer, clamps, compiled)
    batches = _FreshBatches(
        keys, data.batch_size, recipe.steps_per_epoch, columns, targets, compiled
    )
    steps = _steps(recipe, batches, graphed)
    return HandwrittenPopulation([nau, nmu, nmru], steps, recipe.steps_per_epoch)
