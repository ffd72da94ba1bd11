"""Progress on a console: on a terminal, Rich's bar over the run's optimizer steps; without one
(output to a file or a pipe), a line at least every ``INTERVAL_S`` seconds of training, so that a
long run in a log says how far it is."""

import logging
import math
import time
from datetime import timedelta
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import ProcessingSpeedColumn
from rich.progress import ProgressColumn
from rich.text import Text

from nalu.results.record import INTERP_MSE, finite_median

log = logging.getLogger(__name__)
# Seconds of training between two lines.
INTERVAL_S = 30.0


def _duration(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))


class ProgressLines(L.Callback):
    """Logs ``step 12000/50000 (24%) · epoch 12/50 · 194 steps/s · 0:01:02 elapsed, about
    0:03:16 left · interp/mse 0.0012 (best 0.0009)`` after a training chunk once ``INTERVAL_S``
    seconds have passed since the last line, and a last line when training ends (the
    interpolation MSE as the progress bar shows it: at S > 1 the members' median; the best as
    the final metrics will give it, from the module's judge: the median of the living members'
    own bests)."""

    def __init__(self) -> None:
        self.started = self.last = 0.0
        self.first_step = 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.started = self.last = time.monotonic()
        self.first_step = trainer.global_step  # a resumed run counts its speed from here

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        if time.monotonic() - self.last >= INTERVAL_S:
            self._line(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._line(trainer, pl_module, ended=True)

    @staticmethod
    def _best(pl_module: L.LightningModule) -> str:
        """`` (best x)`` from the project's module, which judges each member (its checkpoints
        carry the bests); nothing for a user's own module."""
        judge = getattr(pl_module, "judge", None)
        if judge is None:
            return ""
        return f" (best {finite_median(judge.best_interp_mse[pl_module.alive].tolist()):.4g})"

    def _line(self, trainer: L.Trainer, pl_module: L.LightningModule, ended: bool = False) -> None:
        now = time.monotonic()
        self.last = now
        if not trainer.is_global_zero:  # under DDP, one line for all the processes
            return
        step = trainer.global_step
        # The project's module counts its optimizer steps; a user's own module, its batches.
        planned = getattr(pl_module, "planned_steps", None) or trainer.estimated_stepping_batches
        planned = int(planned) if math.isfinite(planned) and planned >= 1 else None
        elapsed = now - self.started
        epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else None
        # The epoch under way; once training has ended (at max_epochs, or before it: max_steps,
        # stop_when_solved, Ctrl-C) Lightning's counter is the epochs run, as metrics.json says.
        epoch = trainer.current_epoch + (0 if ended else 1)
        epoch = epoch if epochs is None else min(epoch, epochs)
        parts = [
            f"step {step}" + ("" if planned is None else f"/{planned} ({step / planned:.0%})"),
            f"epoch {epoch}" + ("" if epochs is None else f"/{epochs}"),
        ]
        done = step - self.first_step
        if done > 0 and elapsed > 0:
            parts.append(f"{done / elapsed:.0f} steps/s")
        if done > 0 and planned is not None and step < planned and not ended:
            left = elapsed / done * (planned - step)
            parts.append(f"{_duration(elapsed)} elapsed, about {_duration(left)} left")
        else:
            parts.append(f"{_duration(elapsed)} elapsed")
        mse = trainer.callback_metrics.get(INTERP_MSE)
        if mse is not None:
            parts.append(f"{INTERP_MSE} {float(mse):.4g}{self._best(pl_module)}")
        log.info(" · ".join(parts))


class StepsPerSecondColumn(ProcessingSpeedColumn):
    """The training task's speed in optimizer steps a second; nothing on the evaluations' tasks,
    whose single batch has no speed to show."""

    def __init__(self, style: Any, bar: "StepProgressBar") -> None:
        super().__init__(style)
        self.bar = bar

    def render(self, task: Any) -> Text:
        if task.id != self.bar.train_progress_bar_id:
            return Text("")
        return Text(f"{task.speed or 0:.0f} steps/s", style=self.style)


class StepProgressBar(RichProgressBar):
    """Rich's progress bar over the whole run's optimizer steps, ``Epoch 3/250 ━━━ 96/8000
    0:00:01 • 0:00:30 700 steps/s``, epochs counted from 1 as the progress lines count them, for
    the project's ``ArithmeticModule`` (its ``planned_steps``).

    Lightning's bar counts an epoch's batches, and the module takes a chunk of optimizer steps
    per batch: the article's epoch would read ``1/1`` at ``0.00it/s``."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.train_progress_bar_id is None:
            super().on_train_epoch_start(trainer, pl_module)
        elif self.progress is not None:  # one task for the run: its count goes on
            description = self._get_train_description(trainer.current_epoch)
            self.progress.update(self.train_progress_bar_id, description=description)
            self.refresh()

    @property
    def total_train_batches(self) -> int:
        return self.trainer.lightning_module.planned_steps

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        if self.train_progress_bar_id is None:  # resumed from a mid-epoch checkpoint
            self._initialize_train_progress_bar_id()
        self._update(self.train_progress_bar_id, trainer.global_step)
        self._update_metrics(trainer, pl_module)
        self.refresh()

    def _get_train_description(self, current_epoch: int) -> str:
        epochs = self.trainer.max_epochs
        description = f"Epoch {current_epoch + 1}" + ("" if epochs in (None, -1) else f"/{epochs}")
        # As wide as "Validation" at least, as Lightning pads it, so that the bar does not jump.
        return f"{description:{len(self.validation_description)}}"

    def configure_columns(self, trainer: L.Trainer) -> list[ProgressColumn]:
        return [
            StepsPerSecondColumn(c.style, self) if isinstance(c, ProcessingSpeedColumn) else c
            for c in super().configure_columns(trainer)
        ]
