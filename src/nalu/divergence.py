"""Stop a run at the first non-finite loss or parameter, before it overwrites a checkpoint."""

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch

from nalu.errors import Diverged


class DivergenceMonitor(L.Callback):
    """Raises ``Diverged`` after a training batch in which an optimizer step's objective was
    not finite, or that left a parameter non-finite.

    ``ArithmeticModule`` runs an epoch's optimizer steps in one batch and returns each step's
    objective with the step the batch started from, so the check waits for the device once per
    batch and still names the first bad step: a step whose objective is not finite, or the
    batch's last step when only the parameters it left are not. Raising (rather than
    ``trainer.should_stop``) ends the fit before the epoch's validation and checkpoint, so the
    last checkpoint on disk stays the last good one; Lightning then calls every callback's
    ``on_exception``, where ``RunRecorder`` marks the run as diverged.
    """

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        outputs = outputs if isinstance(outputs, Mapping) else {"loss": outputs}
        objectives = outputs.get("step_objectives", outputs.get("loss"))
        objectives = torch.zeros(1) if objectives is None else objectives.reshape(-1)
        parameters = dict(pl_module.named_parameters())
        checks = [torch.isfinite(objectives).all()]
        checks += [torch.isfinite(p).all() for p in parameters.values()]
        # One host sync per batch; the culprit is looked up only once something is wrong.
        if bool(torch.stack(checks).all()):
            return
        finite = torch.isfinite(objectives)
        if not finite.all():
            bad = int((~finite).nonzero()[0])
            first_step = outputs.get("first_step", trainer.global_step - len(objectives))
            raise Diverged(first_step + bad + 1, f"train loss is {objectives[bad].item()}")
        name = next(n for n, p in parameters.items() if not torch.isfinite(p).all())
        raise Diverged(trainer.global_step, f"parameter {name} is not finite")
