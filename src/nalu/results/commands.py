"""The commands a run, a sweep and a report print for the user to paste: this installation's
console commands, found as the user's shell would find them."""

import shlex
import shutil
import sys
from pathlib import Path

from nalu.results.record import TENSORBOARD_FLAGS


def command_line(name: str, *arguments: str) -> str:
    """A console command of this installation as the user can paste it: by its name where the
    shell finds this one, else by its path beside the interpreter (a virtual environment that
    is not activated), relative to the working folder where it lies below it."""
    installed = Path(sys.executable).parent / name
    if not installed.is_file() or shutil.which(name) == str(installed):
        return shlex.join([name, *arguments])
    command = (
        installed.relative_to(Path.cwd()) if installed.is_relative_to(Path.cwd()) else installed
    )
    return shlex.join([str(command), *arguments])


def tensorboard_command(logdir: Path) -> str:
    """The command that serves ``logdir`` with every point of each curve (``TENSORBOARD_FLAGS``),
    as the user can paste it (``command_line``)."""
    return command_line("tensorboard", "--logdir", str(logdir), *TENSORBOARD_FLAGS)
