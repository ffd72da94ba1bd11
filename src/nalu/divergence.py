"""Stop a run at the first non-finite loss or parameter, before it overwrites a checkpoint."""

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch

from nalu.errors import Diverged


class DivergenceMonitor(L.Callback):
    """Raises ``Diverged`` after the first training step whose loss or parameters are not finite.

    Raising (rather than ``trainer.should_stop``) ends the fit before the epoch's validation and
    checkpoint, so the last checkpoint on disk stays the last good one; Lightning then calls every
    callback's ``on_exception``, where ``RunRecorder`` marks the run as diverged.
    """

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, Mapping) else outputs
        parameters = dict(pl_module.named_parameters())
        checks = [torch.isfinite(p).all() for p in parameters.values()]
        if loss is not None:
            checks.append(torch.isfinite(loss).all())
        # One host sync per step; the culprit is looked up only once something is wrong.
        if bool(torch.stack(checks).all()):
            return
        if loss is not None and not torch.isfinite(loss).all():
            raise Diverged(trainer.global_step, f"train loss is {loss.item()}")
        name = next(n for n, p in parameters.items() if not torch.isfinite(p).all())
        raise Diverged(trainer.global_step, f"parameter {name} is not finite")
