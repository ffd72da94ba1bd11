"""The LightningModule that trains S ≥ 1 members of any network on their arithmetic problems."""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor, nn
from torch.func import functional_call, vmap
from torch.optim import Optimizer

from nalu.data.datamodule import EVALUATION_SPLITS
from nalu.errors import Diverged, InvalidArgument
from nalu.metrics import MemberOutputMSE
from nalu.optimization import configure_optimization
from nalu.record import OUTPUT_COUNT, OWN_BEST, OWN_BEST_SOLVED_FRACTION
from nalu.regularizer import RegularizerSchedule, network_regularization
from nalu.units.selection import best_candidates

# The per-member curves kept for each member's own TensorBoard run (the run's own TensorBoard
# shows their medians over the members, with every other metric).
MEMBER_CURVES = ("train/loss", "interp/mse", "extrap/mse")


def is_config(value: Any) -> bool:
    """Whether ``value`` is a Hydra config (a mapping with ``_target_``), not a plain object."""
    return isinstance(value, Mapping)


def build_network(network: dict[str, Any], seed: int) -> nn.Module:
    """The network that ``seed`` initialises, without touching the caller's random state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return instantiate(network)


def stack_parameters(template: nn.Module, members: Sequence[nn.Module]) -> None:
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


def offers_candidates(network: nn.Module) -> bool:
    """Whether ``network`` answers each output with one of several candidates, trained side by
    side and chosen on validation data (``nalu.units.PerOutputSelection``'s protocol)."""
    return hasattr(network, "candidates")


def check_candidates_at_the_top(network: nn.Module) -> None:
    """A network with candidates answers the outputs itself: inside a stack its heads would
    never be trained or chosen, so refuse it there."""
    for name, module in network.named_modules():
        if name and offers_candidates(module):
            raise InvalidArgument(
                "model",
                f"{type(module).__name__} at {name}",
                "a network that chooses among candidates must be the whole model, not a layer",
            )


class MemberObjective(nn.Module):
    """One member's training terms on a batch, each a scalar: the MSE of its answers, the fit
    the optimizer minimises, and the units' regularisation (0 when no unit has one).

    The fit is the MSE, or for a network with candidates the sum of every candidate's own MSE:
    each head learns every output as if it were trained alone."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.has_regularization = network_regularization(network) is not None

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if offers_candidates(self.network):
            candidates = self.network.candidates(x)  # [B, C, out]
            mse = F.mse_loss(self.network.chosen(candidates.detach()), y)
            per_candidate = (candidates - y.unsqueeze(-2)).square().mean(dim=(0, 2))
            fit = per_candidate.sum()
        else:
            mse = fit = F.mse_loss(self.network(x), y)
        if not self.has_regularization:
            return mse, fit, mse.new_zeros(())
        return mse, fit, network_regularization(self.network)


class MemberEvaluation(nn.Module):
    """One member's answers ``[B, C, out]`` for the evaluation metrics: every candidate's, or
    the network's own as the one candidate."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: Tensor) -> Tensor:
        if offers_candidates(self.network):
            return self.network.candidates(x)
        return self.network(x).unsqueeze(-2)


def median_of_living(values: Tensor, alive: Tensor) -> float:
    """The median of ``values`` ``[S]`` over the members still training (NaN-free), or NaN."""
    living = values[alive & ~values.isnan()]
    return float(living.median()) if living.numel() else float("nan")


class ArithmeticModule(L.LightningModule):
    """MSE training of S ≥ 1 members: member ``k`` is the network that ``seeds[k]``
    initialises, trained on its own problem (``output_operations[k]``, thresholds
    ``success_threshold[k]``) with its own batches.

    Where S lives: at S = 1 ``network`` is the plain network and batches are ``[B, in]``; at
    S > 1 every parameter is stacked ``[S, ...]`` under the network's own names and batches are
    ``[S, B, in]``, run through ``vmap`` over ``functional_call`` (``_for_each_member`` runs
    the members, ``_member_mask`` and ``member_network`` pick them out; nothing else knows).
    Each member's gradient is its own and the optimizers update every element independently,
    so members never mix.

    One training batch is one optimizer step (Lightning's automatic optimization, so
    ``max_steps``, gradient clipping, schedulers and callbacks work as usual). The objective is
    the MSE plus the ``regularizer`` schedule's weight times the units' ``regularization()``;
    units with ``clamp_parameters()`` are clamped after every step.

    What a run is judged by, per member, in one place (Madsen & Johansen 2020, sec. 4.1):
    - best epoch: the validation with the lowest interpolation MSE so far; its parameters,
      training loss and first-solved steps are kept, and the test loop runs on them;
    - solved at step: per output, the first validation whose extrapolation MSE is below the
      output's threshold, counting validations up to the best one;
    - divergence: a member whose objective turns non-finite (checked every step) or whose
      parameters are non-finite at the end of an epoch (before its validation) is frozen from
      then on (it leaves the summed loss) and is judged at its best validation before; when
      every member has diverged, training stops with ``Diverged`` before the parameters reach a
      checkpoint.
    All of it is module state, so it travels with the checkpoint and a killed run resumes.

    ``network`` and ``optimizer`` are Hydra configs (``{"_target_": ...}``, what the command
    line passes and the checkpoint records), or plain objects in a notebook: an ``nn.Module``
    and an optimizer factory such as ``functools.partial(torch.optim.Adam, lr=1e-2)`` (the
    checkpoint then does not record them: ``load_from_checkpoint(path, network=..., optimizer=...)``
    gives them back). A population builds each member from its seed, so it needs the config.
    """

    def __init__(
        self,
        network: dict[str, Any] | nn.Module,
        optimizer: dict[str, Any] | Callable[..., Optimizer],
        output_operations: Sequence[Sequence[str]],
        success_threshold: Sequence[Sequence[float]] | None = None,
        seeds: Sequence[int] = (0,),
        regularizer: dict[str, Any] | None = None,
        lr_schedule: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        given = {"network": network, "optimizer": optimizer}
        self.save_hyperparameters(ignore=[name for name, v in given.items() if not is_config(v)])
        self.optimizer_factory = optimizer
        self.regularizer = RegularizerSchedule(**(regularizer or {}))
        if isinstance(network, nn.Module):
            if len(seeds) > 1:
                raise InvalidArgument(
                    "network",
                    type(network).__name__,
                    "a population builds each member from its seed: pass the network's config "
                    "({'_target_': ...}), not a built module",
                )
            members = [network]
        else:
            members = [build_network(network, seed) for seed in seeds]
        check_candidates_at_the_top(members[0])
        if len(members) > 1:
            stack_parameters(members[0], members)
        self.network: nn.Module = members[0]
        # Not a submodule: the network's parameters are registered once, as ``network.*``.
        self._objective = {
            "member": MemberObjective(self.network),
            "evaluation": MemberEvaluation(self.network),
        }
        self.has_regularization = self._objective["member"].has_regularization
        # Each output judged at its own best validation too, where outputs are models of their
        # own: in a stack they share layers, and mixing epochs would make a network never run.
        self.judges_each_output = getattr(self.network, "independent_outputs", False)
        self._clamped_units = [m for m in self.network.modules() if hasattr(m, "clamp_parameters")]
        self.planned_steps = 1  # the run's optimizer steps, known once fitting starts
        candidates = self.network.num_candidates if offers_candidates(self.network) else 1
        self.metrics = nn.ModuleDict(
            {
                split: MemberOutputMSE(
                    output_operations,
                    success_threshold if split == "extrap" else None,
                    candidates,
                )
                for split in EVALUATION_SPLITS
            }
        )
        size, outputs = len(seeds), len(output_operations[0])
        self.register_buffer("alive", torch.ones(size, dtype=torch.bool))
        self.register_buffer("diverged_at_step", torch.full((size,), -1))
        self.register_buffer("first_solved_step", torch.full((size, outputs), -1))
        self.register_buffer("solved_at_step", torch.full((size, outputs), -1))
        self.register_buffer("best_interp_mse", torch.full((size,), float("inf")))
        self.register_buffer("last_train_loss", torch.full((size,), float("nan")))
        self.register_buffer("best_train_loss", torch.full((size,), float("nan")))
        # Each output judged at its own best validation (Madsen & Johansen judge one-output
        # models so): its lowest interpolation MSE and the extrapolation MSE at that validation.
        self.register_buffer("own_best_interp_mse", torch.full((size, outputs), float("inf")))
        self.register_buffer("own_best_extrap_mse", torch.full((size, outputs), float("nan")))
        self.best_parameters = {n: p.detach().clone() for n, p in self.network.named_parameters()}
        # Per member curve: (step, [S] values) at every epoch (training loss) or validation.
        self.curves: dict[str, list[tuple[int, Tensor]]] = {tag: [] for tag in MEMBER_CURVES}
        # Per member, the final metrics of the test loop: {name: [S]}.
        self.final_metrics: dict[str, Tensor] = {}
        self._reset_epoch_sums()

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets bookkeeping attributes around each of the ~15 hooks of every step;
        # nn.Module's checks for parameters and submodules would cost a fifth of a small step.
        if name in self.__dict__ and (value is None or isinstance(value, str | bool | int)):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def population(self) -> int:
        return len(self.hparams.seeds)

    def _for_each_member(self, module: nn.Module, *inputs: Tensor) -> Any:
        """``module`` (the network or a member's objective) run for every member: at S = 1
        called directly on ``[B, ...]`` inputs; at S > 1 on ``[S, B, ...]`` through ``vmap`` over
        the stacked parameters, its outputs gaining the leading member dimension."""
        if self.population == 1:
            return module(*inputs)
        prefix = "" if module is self.network else "network."  # a wrapper's
        state = {f"{prefix}{n}": t for n, t in self.network.named_parameters()}
        state.update((f"{prefix}{n}", t) for n, t in self.network.named_buffers())
        # "different": a stochastic unit's noise is each member's own.
        run = vmap(lambda s, args: functional_call(module, s, args), randomness="different")
        return run(state, inputs)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``[B, in]`` (S = 1) or ``[S, B, in]`` -> outputs ``[B, out]`` or
        ``[S, B, out]``."""
        return self._for_each_member(self.network, x)

    def _member_mask(self, flags: Tensor, like: Tensor) -> Tensor:
        """``[S]`` flags shaped to select whole members of a parameter like ``like``."""
        if self.population == 1:
            return flags.reshape((1,) * like.dim())
        return flags.view(-1, *[1] * (like.dim() - 1))

    def on_fit_start(self) -> None:
        """Count the run's optimizer steps (the regulariser's schedule is in fractions of them)
        and measure each evaluation set's per-output MSE at initialisation, once per run: a
        resumed run has it from its checkpoint, so its normalised error keeps the same base."""
        self.planned_steps = int(self.trainer.estimated_stepping_batches)
        self.best_parameters = {n: t.to(self.device) for n, t in self.best_parameters.items()}
        if self.trainer.datamodule is None:
            return  # dataloaders passed to fit() directly: no evaluation sets to measure on
        with torch.no_grad():
            if not self.metrics["extrap"].initial_mse.isnan().any():
                return
            training = self.training
            self.eval()  # as validation measures: a stochastic unit's noise is for training only
            loaders = self.trainer.datamodule.val_dataloader()
            for dataloader_idx, loader in enumerate(loaders):
                for x, y in loader:
                    self._evaluation_step((x.to(self.device), y.to(self.device)), dataloader_idx)
            self.train(training)
            # Under DDP each process saw a shard: the baseline is the whole set's.
            per_output, _, _ = self._evaluated()
            for split, metric in self.metrics.items():
                metric.initial_mse.copy_(per_output[split])

    def on_train_epoch_start(self) -> None:
        self._reset_epoch_sums()

    def _reset_epoch_sums(self) -> None:
        """The epoch's per-member sums of the training loss and regularisation."""
        self._loss_sum = torch.zeros(self.population, device=self.device)
        self._regularization_sum = torch.zeros(self.population, device=self.device)
        self._scale_sum = 0.0
        self._loss_samples = self._steps = 0

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        step = self.global_step + 1  # the optimizer step this batch is for
        terms = self._for_each_member(self._objective["member"], x, y)
        mse, fit, regularization = (term.reshape(self.population) for term in terms)
        scale = self.regularizer(step - 1, self.planned_steps)
        objective = fit + scale * regularization if self.has_regularization else fit
        finite = self._on_every_process(torch.isfinite(objective))
        self.diverged_at_step.masked_fill_(self.alive & ~finite, step)
        self.alive &= finite
        if not self.alive.any():
            # Raised before this step's update: the parameters stay the last good ones.
            reason = f"train loss is {objective[0].item()}" if self.population == 1 else ""
            raise Diverged(step, reason or "every member's train loss is not finite")
        samples = x.shape[-2]
        self._loss_sum += torch.where(self.alive, mse.detach(), 0.0) * samples
        self._loss_samples += samples
        self._steps += 1
        if self.has_regularization:
            self._regularization_sum += regularization.detach()
            self._scale_sum += scale
        if step % self.trainer.log_every_n_steps == 0:
            self._log_to_loggers(
                {"train/batch_loss": median_of_living(mse.detach(), self.alive)}, 1
            )
        return torch.where(self.alive, objective, 0.0).sum()

    def _on_every_process(self, flags: Tensor) -> Tensor:
        """``flags`` that hold on every process of a distributed run: each decides alike."""
        if self.trainer.world_size == 1:
            return flags
        held = self.trainer.strategy.reduce(flags.float(), reduce_op="sum")
        return held == self.trainer.world_size

    def on_before_optimizer_step(self, optimizer: Optimizer) -> None:
        """Diverged members get no update: their gradients (NaN through a masked loss) become
        0 before clipping, which would otherwise spread them over the others' norm."""
        if self.population == 1:
            return
        for parameter in self.network.parameters():
            if parameter.grad is not None:
                mask = self._member_mask(self.alive, parameter)
                parameter.grad.copy_(torch.where(mask, parameter.grad, 0.0))

    def configure_gradient_clipping(
        self,
        optimizer: Optimizer,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
    ) -> None:
        """The trainer's clipping, per member: a member's gradient norm is its own (at S = 1,
        Lightning's clipping itself; by value it is element-wise anyway)."""
        by_norm = gradient_clip_algorithm in (None, "norm")  # Lightning's default is "norm"
        if self.population == 1 or not by_norm or not gradient_clip_val:
            self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)
            return
        gradients = [p.grad for p in self.network.parameters() if p.grad is not None]
        squares = sum(g.reshape(self.population, -1).square().sum(dim=1) for g in gradients)
        # torch.nn.utils.clip_grad_norm_'s factor, one per member.
        factor = (gradient_clip_val / (squares.sqrt() + 1e-6)).clamp(max=1.0)
        for gradient in gradients:
            gradient.mul_(factor.view(-1, *[1] * (gradient.dim() - 1)))

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        super().optimizer_step(*args, **kwargs)
        # After the optimizer step: NAU/NMU weights back into their ranges (Madsen & Johansen).
        for unit in self._clamped_units:
            unit.clamp_parameters()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.trainer.is_last_batch:
            self._end_training_epoch()

    def on_train_epoch_end(self) -> None:
        self._end_training_epoch()  # an epoch cut short by max_steps

    def _end_training_epoch(self) -> None:
        """Before the epoch's validation and checkpoint: members whose parameters the epoch
        left non-finite diverge, and each member's training loss of the epoch is kept."""
        if self._loss_samples == 0:
            return
        self._check_parameters()
        loss_sum, samples = self._loss_sum, torch.tensor(float(self._loss_samples))
        if self.trainer.world_size > 1:  # the whole epoch's, over every process's shard
            loss_sum = self.trainer.strategy.reduce(loss_sum, reduce_op="sum")
            samples = self.trainer.strategy.reduce(samples.to(self.device), reduce_op="sum")
        loss = torch.where(self.alive, loss_sum / samples.to(loss_sum.device), float("nan"))
        self.last_train_loss = torch.where(self.alive, loss, self.last_train_loss)
        self._loss_samples = 0
        self.curves["train/loss"].append((self.global_step, loss.cpu()))
        median = median_of_living(loss, self.alive)
        self.log("train/loss", median, prog_bar=True, logger=False)
        values = {"train/loss": median}
        if self.has_regularization:
            regularization = self._regularization_sum / self._steps
            values["train/regularization"] = median_of_living(regularization, self.alive)
            values["train/regularizer_scale"] = self._scale_sum / self._steps
        if self.population > 1:
            values["population/alive_fraction"] = float(self.alive.float().mean())
        self._log_to_loggers(values)

    def _check_parameters(self) -> None:
        """A member with a non-finite parameter diverges here (once per epoch: one host sync);
        when every member has, training stops before a checkpoint can keep the parameters."""
        names, parameters = zip(*self.network.named_parameters(), strict=True)
        finite = self._on_every_process(
            torch.stack(
                [
                    torch.isfinite(p.detach()).reshape(self.population, -1).all(dim=1)
                    for p in parameters
                ]
            )
        )  # [parameters, S]
        healthy = finite.all(dim=0)
        self.diverged_at_step.masked_fill_(self.alive & ~healthy, self.global_step)
        self.alive &= healthy
        if not self.alive.any():
            culprit = names[int((~finite.all(dim=1)).nonzero()[0])]
            raise Diverged(self.global_step, f"parameter network.{culprit} is not finite")

    def _log_to_loggers(self, values: dict[str, float], ahead: int = 0) -> None:
        """Straight to the loggers at the optimizer step (``ahead`` steps on, for a value of the
        step being taken): curves stay on one increasing x-axis, and a ``self.log`` call
        costs more than a small network's step."""
        if self.trainer.sanity_checking:
            return
        for logger in self.loggers:
            logger.log_metrics(values, step=self.global_step + ahead)

    def _evaluation_step(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> None:
        x, y = batch
        answers = self._for_each_member(self._objective["evaluation"], x)
        self.metrics[EVALUATION_SPLITS[dataloader_idx]].update(answers, y)

    def _evaluated(self) -> tuple[dict[str, Tensor], dict[str, Tensor], Tensor]:
        """What the evaluation sets measured since the last call (the metrics are reset): per
        set the ``[S, out]`` MSEs of the answering candidates and the targets' mean squares,
        and the interpolation MSE of every candidate ``[S, C, out]``. Per output the candidate
        of the lowest interpolation MSE answers (the one candidate of an ordinary network):
        the extrapolation set never chooses."""
        measured = {split: metric.measured() for split, metric in self.metrics.items()}
        for metric in self.metrics.values():
            metric.reset()
        choice = best_candidates(measured["interp"]["candidate_mse"])  # [S, out]
        per_output = {
            split: values["candidate_mse"].gather(1, choice.unsqueeze(1)).squeeze(1)
            for split, values in measured.items()
        }
        mean_squares = {split: values["target_mean_square"] for split, values in measured.items()}
        return per_output, mean_squares, measured["interp"]["candidate_mse"]

    def _select(self, interp_candidate_mse: Tensor) -> None:
        """The network answers each output with the candidate ``_evaluated`` chose (by the same
        rule, ``best_candidates``)."""
        if offers_candidates(self.network):
            self.network.select(interp_candidate_mse)

    def _summaries(
        self, per_output: dict[str, Tensor], mean_squares: dict[str, Tensor]
    ) -> dict[str, dict[str, Tensor]]:
        """``{split: {name: [S]}}``: each set's named metrics."""
        return {
            split: self.metrics[split].summary(per_output[split], mean_squares[split])
            for split in EVALUATION_SPLITS
        }

    def validation_step(
        self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._evaluation_step(batch, dataloader_idx)

    def test_step(
        self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._evaluation_step(batch, dataloader_idx)

    @torch.no_grad()
    def on_validation_epoch_end(self) -> None:
        per_output, mean_squares, interp_candidate_mse = self._evaluated()
        if self.trainer.sanity_checking:
            return
        self._select(interp_candidate_mse)
        values = self._summaries(per_output, mean_squares)
        self._judge(self.global_step, values["interp"]["mse"], per_output)
        step = self.global_step
        for split in EVALUATION_SPLITS:
            self.curves[f"{split}/mse"].append((step, values[split]["mse"].cpu()))
        medians = {
            f"{split}/{name}": median_of_living(value, self.alive)
            for split, metrics in values.items()
            for name, value in metrics.items()
        }
        # ModelCheckpoint monitors it; the progress bar shows it.
        self.log("interp/mse", medians["interp/mse"], prog_bar=True, logger=False)
        self._log_to_loggers(medians)

    def _judge(self, step: int, interp_mse: Tensor, per_output: dict[str, Tensor]) -> None:
        """The one rule for the best epoch and the solved-at step (see the class), applied to
        the validation at optimizer step ``step``: ``interp_mse`` ``[S]`` and each set's
        per-output MSEs ``[S, out]``."""
        living = self.alive.unsqueeze(1)
        solved = per_output["extrap"] < self.metrics["extrap"].success_threshold
        newly_solved = solved & (self.first_solved_step < 0) & living
        better = living & (per_output["interp"] < self.own_best_interp_mse)
        self.own_best_interp_mse = torch.where(
            better, per_output["interp"], self.own_best_interp_mse
        )
        self.own_best_extrap_mse = torch.where(
            better, per_output["extrap"], self.own_best_extrap_mse
        )
        self.first_solved_step.masked_fill_(newly_solved, step)
        improved = self.alive & (interp_mse < self.best_interp_mse)
        self.best_interp_mse = torch.where(improved, interp_mse, self.best_interp_mse)
        self.best_train_loss = torch.where(improved, self.last_train_loss, self.best_train_loss)
        self.solved_at_step = torch.where(
            improved.unsqueeze(1), self.first_solved_step, self.solved_at_step
        )
        for name, parameter in self.network.named_parameters():
            mask = self._member_mask(improved, parameter)
            best = self.best_parameters[name].to(parameter.device)
            self.best_parameters[name] = torch.where(mask, parameter.detach(), best)

    @torch.no_grad()
    def on_test_start(self) -> None:
        """Test every member at its best validation (members never validated: as they are)."""
        validated = self.best_interp_mse.isfinite()
        for name, parameter in self.network.named_parameters():
            mask = self._member_mask(validated, parameter)
            best = self.best_parameters[name].to(parameter.device)
            parameter.copy_(torch.where(mask, best, parameter))

    @torch.no_grad()
    def on_test_epoch_end(self) -> None:
        """Every member's final metrics, ``{name: [S]}``: both sets, the solved-at steps and
        the training loss of the best epoch (or of the last, if none was validated)."""
        per_output, mean_squares, interp_candidate_mse = self._evaluated()
        self._select(interp_candidate_mse)
        metrics: dict[str, Tensor] = {
            f"{split}/{name}": value
            for split, values in self._summaries(per_output, mean_squares).items()
            for name, value in values.items()
        }
        extrap = self.metrics["extrap"]
        groups = extrap.groups
        own_best_mse = self.own_best_extrap_mse
        # NaN where an output was never validated, so that its group says "unknown", not 0.
        own_best_solved = torch.where(
            own_best_mse.isnan(), float("nan"), (own_best_mse < extrap.success_threshold).float()
        )
        own_best = {
            f"{OWN_BEST}_mse": groups.mean(own_best_mse),
            OWN_BEST_SOLVED_FRACTION: groups.mean(own_best_solved),
        }
        for name, values in own_best.items() if self.judges_each_output else ():
            metrics.update(
                (f"extrap/{name}{s}", values[:, j]) for j, s in enumerate(groups.suffixes)
            )
        # NaN where a member lacks the operation, like its other metrics of that operation.
        counts = torch.where(groups.present, groups.membership.sum(dim=1).float(), float("nan"))
        metrics.update((f"{OUTPUT_COUNT}{s}", counts[:, j]) for j, s in enumerate(groups.suffixes))
        steps = groups.last_step(self.solved_at_step)
        metrics.update((f"solved_at_step{s}", steps[:, j]) for j, s in enumerate(groups.suffixes))
        validated = self.best_interp_mse.isfinite()
        metrics["train/loss"] = torch.where(validated, self.best_train_loss, self.last_train_loss)
        self.final_metrics = {name: value.cpu() for name, value in metrics.items()}

    def member_network(self, member: int) -> nn.Module:
        """Member ``member`` as a plain network with its current parameters."""
        if self.population == 1:
            return self.network
        network = build_network(self.hparams.network, self.hparams.seeds[member])
        state = {name: t[member] for name, t in self.network.state_dict().items()}
        network.load_state_dict(state)
        return network.to(self.device)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Each curve as two tensors (steps [n], values [n, S]): one tensor per point would make
        # every epoch's checkpoint slower to write than the epoch.
        checkpoint["members"] = {
            "best_parameters": {n: t.cpu() for n, t in self.best_parameters.items()},
            "curves": {
                tag: (
                    torch.tensor([step for step, _ in points], dtype=torch.long),
                    torch.stack([values for _, values in points])
                    if points
                    else torch.empty(0, self.population),
                )
                for tag, points in self.curves.items()
            },
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        members = checkpoint.get("members")
        if members is not None:
            self.best_parameters = members["best_parameters"]
            self.curves = {
                tag: list(zip(steps.tolist(), values.unbind(), strict=True))
                for tag, (steps, values) in members["curves"].items()
            }

    def configure_optimizers(self) -> Optimizer | dict[str, Any]:
        return configure_optimization(self)
