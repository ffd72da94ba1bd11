"""Ctrl-C or SIGTERM during training: finish the epoch, save last.ckpt, stop cleanly."""

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

import lightning as L

# The signals that stop a run at its epoch's end: Ctrl-C, and the polite kill of ``kill`` and of
# a cluster's scheduler at a job's time limit (Slurm sends SIGTERM, then SIGKILL).
STOP_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
# What each does at once, with no handler of Lightning's or ours.
AT_ONCE = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}


class StopAtEpochEndOnInterrupt(L.Callback):
    """The first Ctrl-C (SIGINT) or SIGTERM lets the current epoch finish, so that ``last.ckpt``
    is saved at an epoch boundary that ``ckpt_path`` resumes exactly, then stops training;
    ``interrupted`` tells the caller (a sweep stops too). The same signal again acts at once, as
    it would with no handler: ``KeyboardInterrupt``, or the end of the process.

    Deferring keeps the interrupt out of a step's middle, where it could leave a network's
    parameters swapped out under ``vmap``.
    """

    def __init__(self) -> None:
        self.interrupted = False
        # A Ctrl-C that stopped the fit at once (before the run took Ctrl-C over, or a second).
        self.stopped_at_once = False
        self._previous: dict[int, Any] = {}

    def _request_stop(self, signum: int, frame: FrameType | None) -> None:
        if self.interrupted:
            signal.signal(signum, AT_ONCE[signal.Signals(signum)])
            signal.raise_signal(signum)
            return
        self.interrupted = True
        name = STOP_SIGNALS[signal.Signals(signum)]
        print(
            f"\n{name}: stopping after this epoch and saving last.ckpt ({name} again: at once)",
            file=sys.stderr,
        )

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._take(signal.SIGINT)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After Lightning's own SIGTERM handler, set after ``on_fit_start``: it would end the run
        # at its next batch and leave a sweep going on with its next job.
        self._take(signal.SIGTERM)

    def _take(self, signum: signal.Signals) -> None:
        if threading.current_thread() is threading.main_thread():
            self._previous[signum] = signal.signal(signum, self._request_stop)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Callbacks' hooks run before ModelCheckpoint's, which then saves this epoch's last.ckpt;
        # every process of a distributed run stops together, whichever got the signal.
        if trainer.strategy.reduce_boolean_decision(self.interrupted, all=False):
            trainer.should_stop = True

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.stopped_at_once = True

    @contextlib.contextmanager
    def as_ctrl_c(self) -> Iterator[None]:
        """Around a fit or test: Lightning ends one that a Ctrl-C stopped at once with
        ``exit(1)``; it is raised again as the Ctrl-C it was, for the command to say so."""
        try:
            yield
        except SystemExit:
            if self.stopped_at_once:
                raise KeyboardInterrupt from None
            raise

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) == self._request_stop:  # not replaced since
                signal.signal(signum, previous)
        self._previous = {}
