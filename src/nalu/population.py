"""Population training: S independent runs of one network config trained in one process.

Every member is the network a single run with its seed would build, its parameters stacked along
a leading member dimension; ``torch.func.vmap`` over ``functional_call`` runs all members in one
batched forward and backward, so units stay plain modules. The loss is the sum of the members'
losses, so each member's gradient is its own, and the optimizers used here (Adam, SGD, RMSprop)
update every element independently: members never mix.
"""

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.optim import Optimizer

from nalu.data.datamodule import EVALUATION_SPLITS
from nalu.module import log_at_global_step
from nalu.optimization import configure_optimization, planned_optimizer_steps
from nalu.regularizer import RegularizerSchedule, clamp_network_parameters, network_regularization


def build_network(network: dict[str, Any], seed: int) -> nn.Module:
    """The network a single run seeded with ``seed`` builds (``seed_everything`` then
    ``instantiate``), without touching the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return instantiate(network)


class MemberObjective(nn.Module):
    """One member's training terms: the MSE on a batch and the units' regularisation (0 when
    no unit has one). ``PopulationModule`` maps it over members with ``vmap``."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        mse = F.mse_loss(self.network(x), y)
        regularization = network_regularization(self.network)
        return mse, mse.new_zeros(()) if regularization is None else regularization


def _stack_into(template: nn.Module, members: Sequence[nn.Module]) -> None:
    """Replace every parameter and buffer of ``template`` by the members' values stacked
    ``[S, ...]``, under the same name, so that a state dict reads like the network's."""
    for name, _ in list(template.named_parameters()):
        owner_name, _, attribute = name.rpartition(".")
        stacked = torch.stack([m.get_parameter(name).detach() for m in members])
        setattr(template.get_submodule(owner_name), attribute, nn.Parameter(stacked))
    for name, _ in list(template.named_buffers()):
        owner_name, _, attribute = name.rpartition(".")
        stacked = torch.stack([m.get_buffer(name) for m in members])
        template.get_submodule(owner_name).register_buffer(attribute, stacked)


class PopulationModule(L.LightningModule):
    """S members, each the network of a single run with seed ``seeds[k]``, trained together.

    Per member it keeps what a single run would: the training loss per epoch, the per-output
    MSE of each evaluation set at every validation, the parameters of its best interpolation
    MSE (Madsen & Johansen 2020, sec. 4.1: a run is judged there), the first step at which each
    output's extrapolation was solved, and the step at which it diverged. A member whose loss
    turns non-finite is frozen: its loss leaves the sum (so its gradient is zero and its optimizer
    state stops mattering) and it is judged at its last good validation; the others go on.

    One ``training_step`` runs an epoch's optimizer steps (manual optimization), so Lightning's
    per-step costs are paid once per epoch; ``global_step`` counts optimizer steps as usual.
    """

    def __init__(
        self,
        network: dict[str, Any],
        optimizer: dict[str, Any],
        seeds: Sequence[int],
        success_threshold: Sequence[Sequence[float]],
        lr_schedule: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        network = dict(network)
        self.regularizer = RegularizerSchedule(**(network.pop("regularizer", None) or {}))
        self.network_config = network
        members = [build_network(network, seed) for seed in seeds]
        _stack_into(members[0], members)
        self.objective = MemberObjective(members[0])
        self.has_regularization = network_regularization(self.network) is not None
        self.planned_steps = 1  # the run's optimizer steps, known once fitting starts
        size = len(seeds)
        outputs = len(success_threshold[0])
        self.register_buffer("success_threshold", torch.tensor(success_threshold))
        self.register_buffer("alive", torch.ones(size, dtype=torch.bool))
        self.register_buffer("diverged_at_step", torch.full((size,), -1))
        self.register_buffer("solved_at_step", torch.full((size, outputs), -1))
        self.register_buffer("best_interp_mse", torch.full((size,), float("inf")))
        self.best_parameters = {n: p.detach().clone() for n, p in self.network.named_parameters()}
        self.initial_mse: dict[str, Tensor] = {}
        self.final_mse: dict[str, Tensor] = {}
        self._squared_error: dict[str, Tensor] = {}
        self._count: dict[str, int] = {}
        # Curves per member: (step, [S] values) for the training loss and each evaluation set.
        self.curves: dict[str, list[tuple[int, Tensor]]] = {"train/loss": []}
        self.curves.update({f"{split}/mse": [] for split in EVALUATION_SPLITS})

    @property
    def network(self) -> nn.Module:
        """The network with every parameter stacked ``[S, ...]`` (not callable on inputs)."""
        return self.objective.network

    @property
    def population(self) -> int:
        return len(self.hparams.seeds)

    def _state(self) -> dict[str, Tensor]:
        return {**dict(self.objective.named_parameters()), **dict(self.objective.named_buffers())}

    def _member_terms(
        self, state: dict[str, Tensor], x: Tensor, y: Tensor
    ) -> tuple[Tensor, Tensor]:
        return functional_call(self.objective, state, (x, y))

    def _member_forward(self, state: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(self.objective.network, state, (x,))

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``[S, batch, in]`` -> every member's outputs ``[S, batch, out]``."""
        state = {name.removeprefix("network."): t for name, t in self._state().items()}
        return vmap(self._member_forward)(state, x)

    def member_network(self, member: int) -> nn.Module:
        """Member ``member`` as a plain network with its best parameters."""
        network = build_network(self.network_config, self.hparams.seeds[member])
        state = {name: t[member] for name, t in self.best_parameters.items()}
        state.update((name, t[member]) for name, t in self.network.named_buffers())
        network.load_state_dict(state)
        return network

    def training_step(self, order: Tensor, batch_idx: int) -> None:
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        data = self.trainer.datamodule
        state = self._state()
        terms = vmap(self._member_terms)
        loss_sum = torch.zeros(self.population, device=self.device)
        for indices in order.to(self.device).split(data.batch_size, dim=1):
            x, y = data.train_batch(indices)
            mse, regularization = terms(state, x, y)
            scale = self.regularizer(self.global_step, self.planned_steps)
            objective = mse + scale * regularization
            was_alive = self.alive.clone()
            self.alive &= torch.isfinite(objective)
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(torch.where(self.alive, objective, 0.0).sum())
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            # After the optimizer step: NAU/NMU weights back into their ranges (Madsen & Johansen).
            clamp_network_parameters(self.network)
            newly_diverged = was_alive & ~self.alive
            self.diverged_at_step.masked_fill_(newly_diverged, self.global_step)
            loss_sum += mse.detach() * indices.shape[1]
        train_loss = loss_sum / order.shape[1]
        log_at_global_step(self)
        self.curves["train/loss"].append((self.global_step, train_loss))
        alive_loss = train_loss[self.alive]
        if alive_loss.numel():
            median = alive_loss.median()
            self.log("population/train_loss_median", median, on_step=False, on_epoch=True)
        self.log(
            "population/alive_fraction", self.alive.float().mean(), on_step=False, on_epoch=True
        )

    def _accumulate(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> None:
        x, y = batch
        split = EVALUATION_SPLITS[dataloader_idx]
        squared = (self(x) - y).double().square().sum(dim=1).float()
        self._squared_error[split] = self._squared_error.get(split, 0) + squared
        self._count[split] = self._count.get(split, 0) + x.shape[1]

    def _per_output_mse(self) -> dict[str, Tensor]:
        """``{split: [S, out]}`` of the evaluation just run; the accumulators start over."""
        mse = {s: self._squared_error[s] / self._count[s] for s in self._squared_error}
        self._squared_error, self._count = {}, {}
        return mse

    @torch.no_grad()
    def on_fit_start(self) -> None:
        self.planned_steps = planned_optimizer_steps(self.trainer)
        self.trainer.datamodule.to(self.device)
        self.best_parameters = {name: t.to(self.device) for name, t in self.best_parameters.items()}
        if self.initial_mse:
            return
        for index, loader in enumerate(self.trainer.datamodule.val_dataloader()):
            for batch in loader:
                self._accumulate(tuple(t.to(self.device) for t in batch), index)
        self.initial_mse = self._per_output_mse()

    def validation_step(
        self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._accumulate(batch, dataloader_idx)

    @torch.no_grad()
    def on_validation_epoch_end(self) -> None:
        mse = self._per_output_mse()
        if self.trainer.sanity_checking:
            return
        step = self.global_step
        for split, values in mse.items():
            self.curves[f"{split}/mse"].append((step, values.mean(dim=1)))
        # Madsen & Johansen 2020, sec. 4.1: judged at the best interpolation MSE.
        interp = mse["interp"].mean(dim=1)
        improved = interp < self.best_interp_mse
        self.best_interp_mse = torch.where(improved, interp, self.best_interp_mse)
        for name, parameter in self.network.named_parameters():
            mask = improved.view(-1, *[1] * (parameter.dim() - 1))
            self.best_parameters[name] = torch.where(mask, parameter, self.best_parameters[name])
        solved = mse["extrap"] < self.success_threshold
        self.solved_at_step.masked_fill_(solved & (self.solved_at_step < 0), step)
        healthy = self.alive
        log_at_global_step(self)
        if healthy.any():
            self.log("population/interp_mse_median", interp[healthy].median())
            self.log("population/extrap_mse_median", mse["extrap"].mean(dim=1)[healthy].median())
            self.log("population/solved_fraction", solved[healthy].float().mean())

    @torch.no_grad()
    def use_best_parameters(self) -> None:
        """Load every member's best-validation parameters, to test the members there."""
        for name, parameter in self.network.named_parameters():
            parameter.copy_(self.best_parameters[name])

    def test_step(
        self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._accumulate(batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self.final_mse = self._per_output_mse()

    def configure_optimizers(self) -> Optimizer | dict[str, Any]:
        return configure_optimization(self)
