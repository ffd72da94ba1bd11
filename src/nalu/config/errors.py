"""Errors that explain bad input in the user's terms."""

from typing import Any

# Values longer than this are cut in the middle in messages (a list of 3000 names, 10**400).
MAX_SHOWN_CHARACTERS = 60


def cut(text: str) -> str:
    """``text``, cut in the middle beyond ``MAX_SHOWN_CHARACTERS``."""
    if len(text) <= MAX_SHOWN_CHARACTERS:
        return text
    half = (MAX_SHOWN_CHARACTERS - 5) // 2
    return f"{text[:half]} ... {text[-half:]}"


def shorten(value: Any) -> str:
    """``repr(value)``, cut in the middle beyond ``MAX_SHOWN_CHARACTERS``; None as ``null``, as
    a config or command line writes it."""
    if value is None:
        return "null"
    try:
        return cut(repr(value))
    except ValueError:  # an int too long to print (Python's limit on digits)
        return f"<an integer of {value.bit_length()} bits>"


class InvalidArgument(ValueError):
    """A constructor argument is out of its allowed range: ``name=value: allowed``.

    The message starts with the argument's name, so that the command line can prefix it with
    the config section the user typed (``data.in_features=1: ...``).
    """

    def __init__(self, name: str, value: Any, allowed: str) -> None:
        self.name = name
        super().__init__(f"{name}={shorten(value)}: {allowed}")


class ConfigError(Exception):
    """A run's configuration is invalid; the message is one line naming the field."""


class Diverged(Exception):
    """Training met a non-finite loss or parameter at optimizer step ``step`` (counted from 1):
    the step whose loss was not finite (it was not taken), or the last step before non-finite
    parameters were found. ``last_good_checkpoint`` is the checkpoint saved before it, where
    there is one (the run's recorder sets it when training stops)."""

    def __init__(self, step: int, reason: str) -> None:
        self.step = step
        self.reason = reason
        self.last_good_checkpoint: str | None = None
        super().__init__(f"diverged at step {step}: {reason}")


class Interrupted(Exception):
    """Training was stopped by Ctrl-C or SIGTERM at the end of ``epoch``; ``checkpoint``
    resumes it."""

    def __init__(self, epoch: int, checkpoint: str) -> None:
        self.epoch = epoch
        self.checkpoint = checkpoint
        super().__init__(
            f"interrupted after epoch {epoch}; resume with the same overrides and "
            f"ckpt_path={checkpoint}"
        )
