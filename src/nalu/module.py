"""The LightningModule that trains any network on any arithmetic problem."""

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor, nn
from torch.optim import Optimizer

from nalu.data.datamodule import EVALUATION_SPLITS, EpochBatches
from nalu.metrics import OperationMSE, solved_at_step_metrics
from nalu.optimization import configure_optimization, planned_optimizer_steps
from nalu.regularizer import RegularizerSchedule, clamp_network_parameters, network_regularization


def log_at_global_step(module: L.LightningModule) -> None:
    """Put what ``module`` logs in this hook at ``global_step`` on the loggers' x-axis.

    Lightning's default x-axis counts training batches; a batch here is an epoch of optimizer
    steps. A logged ``step`` value is Lightning's documented way to set the x-axis instead.
    """
    module.log("step", float(module.global_step), on_step=False, on_epoch=True, reduce_fx="max")


class ArithmeticModule(L.LightningModule):
    """MSE training of a network built from a plain ``_target_`` config.

    The network, optimizer and learning-rate schedule (or None) arrive as plain dicts (Hydra
    ``_target_`` configs) and are
    instantiated here, so the saved hyperparameters rebuild the module from a checkpoint and
    load under torch's default ``weights_only``. ``output_operations`` names each output's
    operation, which groups the per-operation metrics; ``success_threshold`` (per output) judges
    extrapolation as solved. The MSE at initialisation, for the normalised error, is measured
    once when fitting starts.

    A ``regularizer: {scale, start, end}`` entry in the network config is not the network's: it
    is the ``RegularizerSchedule`` that weights the units' ``regularization()`` terms in the
    loss. Units with ``clamp_parameters()`` are clamped after every optimizer step.

    One ``training_step`` runs all optimizer steps of an epoch (``EpochBatches``; manual
    optimization), so Lightning's per-batch costs are paid once per epoch while every step, its
    batch, its regulariser weight and its clamp stay what they would be one step at a time.
    ``global_step`` counts optimizer steps as usual.
    """

    def __init__(
        self,
        network: dict[str, Any],
        optimizer: dict[str, Any],
        output_operations: Sequence[str],
        success_threshold: Sequence[float] | None = None,
        lr_schedule: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        network = dict(network)
        self.regularizer = RegularizerSchedule(**(network.pop("regularizer", None) or {}))
        self.network: nn.Module = instantiate(network)
        self.has_regularization = network_regularization(self.network) is not None
        self.planned_steps = 1  # the run's optimizer steps, known once fitting starts
        # Manual optimization: one training_step runs a whole epoch of optimizer steps.
        self.automatic_optimization = False
        self.metrics = nn.ModuleDict(
            {
                split: OperationMSE(
                    output_operations, success_threshold if split == "extrap" else None
                )
                for split in EVALUATION_SPLITS
            }
        )
        # First global step at which each output's extrapolation was solved; -1: not yet.
        self.register_buffer("solved_at_step", torch.full((len(output_operations),), -1))

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)

    def training_objective(
        self, x: Tensor, y: Tensor, regularizer_scale: float
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """The MSE, the objective minimised (the MSE plus ``regularizer_scale`` times the units'
        regularisation) and the regularisation term (None without one)."""
        loss = F.mse_loss(self.network(x), y)
        if not self.has_regularization:
            return loss, loss, None
        regularization = network_regularization(self.network)
        return loss, loss + regularizer_scale * regularization, regularization

    def training_step(
        self, batch: EpochBatches | tuple[Tensor, Tensor], batch_idx: int
    ) -> dict[str, Any]:
        """Every optimizer step of ``batch``: an epoch's ``EpochBatches`` or one ``(x, y)``.

        Nothing here waits for the device: the loss is averaged and each step's objective kept
        as a tensor, which ``DivergenceMonitor`` checks once per call.
        """
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        batches = batch if isinstance(batch, EpochBatches) else [batch]
        first_step = self.global_step
        loss_sum = torch.zeros((), device=self.device)
        samples = 0
        regularization_sum = loss_sum.clone()
        scale_sum = 0.0
        step_objectives = []
        for x, y in batches:
            scale = self.regularizer(self.global_step, self.planned_steps)
            loss, objective, regularization = self.training_objective(x, y, scale)
            if regularization is not None:
                regularization_sum += regularization.detach()
                scale_sum += scale
            optimizer.zero_grad(set_to_none=True)
            self.manual_backward(objective)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            # After the optimizer step: NAU/NMU weights back into their ranges (Madsen & Johansen).
            clamp_network_parameters(self.network)
            step_objectives.append(objective.detach())
            loss_sum += loss.detach() * len(x)
            samples += len(x)
        epoch_loss = loss_sum / samples
        log_at_global_step(self)
        # sync_dist: under DDP the epoch's loss is averaged over every process's shard.
        self.log(
            "train/loss",
            epoch_loss,
            on_step=False,
            on_epoch=True,
            prog_bar=True,
            sync_dist=True,
            batch_size=samples,
        )
        if self.has_regularization:
            steps = len(step_objectives)
            self.log(
                "train/regularization", regularization_sum / steps, on_step=False, on_epoch=True
            )
            self.log("train/regularizer_scale", scale_sum / steps, on_step=False, on_epoch=True)
        return {
            "loss": epoch_loss,
            "first_step": first_step,
            "step_objectives": torch.stack(step_objectives),
        }

    def _evaluation_step(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> None:
        x, y = batch
        self.metrics[EVALUATION_SPLITS[dataloader_idx]].update(self.network(x), y)

    def on_fit_start(self) -> None:
        """Count the run's optimizer steps (the regulariser's schedule is in fractions of them)
        and measure each evaluation set's per-output MSE at initialisation, once per run.

        A resumed run has it from its checkpoint, so its normalised error keeps the same base.
        """
        self.planned_steps = planned_optimizer_steps(self.trainer)
        if self.trainer.datamodule is None:
            return  # dataloaders passed to fit() directly: no evaluation sets to measure on
        loaders = self.trainer.datamodule.val_dataloader()
        with torch.no_grad():
            for split, loader in zip(EVALUATION_SPLITS, loaders, strict=True):
                metric = self.metrics[split]
                if not metric.initial_mse.isnan().any():
                    continue
                for x, y in loader:
                    metric.update(self.network(x.to(self.device)), y.to(self.device))
                # Under DDP each process saw a shard: the baseline is the whole set's.
                with metric.sync_context():
                    metric.initial_mse.copy_(metric.per_output_mse())
                metric.reset()

    def _log_evaluation(self) -> None:
        for split, metric in self.metrics.items():
            if metric.update_count == 0:
                continue
            values = {f"{split}/{name}": value for name, value in metric.compute().items()}
            if split == "extrap" and not self.trainer.sanity_checking:
                with metric.sync_context():
                    newly_solved = metric.solved() & (self.solved_at_step < 0)
                self.solved_at_step[newly_solved] = self.global_step
            if self.trainer.testing:
                self.log_dict(values, add_dataloader_idx=False)  # the run's final metrics
            else:
                self._log_curves(values, headline=f"{split}/mse")
            metric.reset()

    def _log_curves(self, values: dict[str, Tensor], headline: str) -> None:
        """Validation curves: ``headline`` through ``self.log`` (checkpointing monitors it),
        the rest straight to the loggers, since each ``self.log`` call costs milliseconds and
        an epoch of training only tens of them."""
        self.log(headline, values.pop(headline), add_dataloader_idx=False)
        log_at_global_step(self)
        if self.trainer.sanity_checking:
            return
        floats = {name: float(value) for name, value in values.items()}
        for logger in self.loggers:
            logger.log_metrics(floats, step=self.global_step)

    def _log_solved_at_step(self) -> None:
        """Per operation, the step by which all its outputs were solved (if they all were)."""
        solved = solved_at_step_metrics(self.solved_at_step, self.hparams.output_operations)
        self.log_dict(solved, add_dataloader_idx=False)

    def validation_step(
        self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0
    ):
        self._evaluation_step(batch, dataloader_idx)

    def on_validation_epoch_end(self) -> None:
        self._log_evaluation()

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0):
        self._evaluation_step(batch, dataloader_idx)

    def on_test_epoch_end(self) -> None:
        self._log_evaluation()
        self._log_solved_at_step()

    def configure_optimizers(self) -> Optimizer | dict[str, Any]:
        return configure_optimization(self)
