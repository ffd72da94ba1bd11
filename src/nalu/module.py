"""The LightningModule that trains any network on any arithmetic problem."""

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor, nn
from torch.optim import Optimizer

from nalu.data.datamodule import EVALUATION_SPLITS
from nalu.metrics import OperationMSE


class ArithmeticModule(L.LightningModule):
    """MSE training of a network built from a plain ``_target_`` config.

    The network and optimizer arrive as plain dicts (Hydra ``_target_`` configs) and are
    instantiated here, so the saved hyperparameters rebuild the module from a checkpoint and
    load under torch's default ``weights_only``. ``output_operations`` names each output's
    operation, which groups the per-operation metrics.
    """

    def __init__(
        self,
        network: dict[str, Any],
        optimizer: dict[str, Any],
        output_operations: Sequence[str],
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.network: nn.Module = instantiate(network)
        self.metrics = nn.ModuleDict(
            {split: OperationMSE(output_operations) for split in EVALUATION_SPLITS}
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.network(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        loss = F.mse_loss(self.network(x), y)
        # sync_dist: under DDP the epoch's loss is averaged over every process's shard.
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, sync_dist=True)
        return loss

    def _evaluation_step(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> None:
        x, y = batch
        self.metrics[EVALUATION_SPLITS[dataloader_idx]].update(self.network(x), y)

    def _log_evaluation(self) -> None:
        for split, metric in self.metrics.items():
            if metric.update_count == 0:
                continue
            values = {f"{split}/{name}": value for name, value in metric.compute().items()}
            self.log_dict(values, prog_bar=False, add_dataloader_idx=False)
            metric.reset()

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

    def configure_optimizers(self) -> Optimizer:
        return instantiate(self.hparams.optimizer)(self.network.parameters())
