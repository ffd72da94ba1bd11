"""The LightningModule that trains any network on any arithmetic problem."""

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor, nn
from torch.optim import Optimizer

from nalu.data.datamodule import EVALUATION_SPLITS
from nalu.metrics import OperationMSE, solved_at_step_metrics
from nalu.regularizer import RegularizerSchedule, clamp_network_parameters, network_regularization


class ArithmeticModule(L.LightningModule):
    """MSE training of a network built from a plain ``_target_`` config.

    The network and optimizer arrive as plain dicts (Hydra ``_target_`` configs) and are
    instantiated here, so the saved hyperparameters rebuild the module from a checkpoint and
    load under torch's default ``weights_only``. ``output_operations`` names each output's
    operation, which groups the per-operation metrics; ``success_threshold`` (per output) judges
    extrapolation as solved. The MSE at initialisation, for the normalised error, is measured
    once when fitting starts.

    A ``regularizer: {scale, start, end}`` entry in the network config is not the network's: it
    is the ``RegularizerSchedule`` that weights the units' ``regularization()`` terms in the
    loss. Units with ``clamp_parameters()`` are clamped after every optimizer step.
    """

    def __init__(
        self,
        network: dict[str, Any],
        optimizer: dict[str, Any],
        output_operations: Sequence[str],
        success_threshold: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        network = dict(network)
        self.regularizer = RegularizerSchedule(**(network.pop("regularizer", None) or {}))
        self.network: nn.Module = instantiate(network)
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

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.mse_loss(self.network(x), y)
        # sync_dist: under DDP the epoch's loss is averaged over every process's shard.
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        regularization = network_regularization(self.network)
        if regularization is None:
            return loss
        scale = self.regularizer(self.global_step)
        self.log("train/regularization", regularization, on_step=False, on_epoch=True)
        self.log("train/regularizer_scale", scale, on_step=False, on_epoch=True)
        return loss + scale * regularization

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # After the optimizer step: NAU/NMU weights back into their ranges (Madsen & Johansen).
        clamp_network_parameters(self.network)

    def _evaluation_step(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> None:
        x, y = batch
        self.metrics[EVALUATION_SPLITS[dataloader_idx]].update(self.network(x), y)

    def on_fit_start(self) -> None:
        """Measure each evaluation set's per-output MSE at initialisation, once per run.

        A resumed run has it from its checkpoint, so its normalised error keeps the same base.
        """
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
            self.log_dict(values, prog_bar=False, add_dataloader_idx=False)
            metric.reset()

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

    def configure_optimizers(self) -> Optimizer:
        return instantiate(self.hparams.optimizer)(self.network.parameters())
