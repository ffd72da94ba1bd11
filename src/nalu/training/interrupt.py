"""Ctrl-C during training: finish the epoch, save last.ckpt, stop cleanly."""

import signal
import sys
import threading
from types import FrameType
from typing import Any

import lightning as L


class StopAtEpochEndOnInterrupt(L.Callback):
    """The first Ctrl-C (SIGINT) lets the current epoch finish, so that ``last.ckpt`` is saved at
    an epoch boundary that ``ckpt_path`` resumes exactly, then stops training; ``interrupted``
    tells the caller. A second Ctrl-C interrupts at once, as Lightning does by default.

    Deferring keeps the interrupt out of a step's middle, where it could leave a network's
    parameters swapped out under ``vmap``.
    """

    def __init__(self) -> None:
        self.interrupted = False
        self._previous: Any = None

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.interrupted = True
        signal.signal(signal.SIGINT, self._previous)
        print(
            "\nCtrl-C: stopping after this epoch and saving last.ckpt (Ctrl-C again: at once)",
            file=sys.stderr,
        )

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._request_stop)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Callbacks' hooks run before ModelCheckpoint's, which then saves this epoch's last.ckpt;
        # every process of a distributed run stops together, whichever got the signal.
        if trainer.strategy.reduce_boolean_decision(self.interrupted, all=False):
            trainer.should_stop = True

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
