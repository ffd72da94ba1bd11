"""Runs ``python -m MODULE ARGS`` for the tests, each command in a fork of this process, which has
imported torch and the libraries around it once: on 2 cores of an AMD EPYC a fresh interpreter
takes about 9 s to import Lightning (3 of them torch) before a command does anything, for tests
whose commands train for a second or two.

A fork of this process is a fresh run of the command in everything a test looks at: its own
process, arguments, working folder, environment, standard streams, exit code, the end of its
threads and atexit handlers; only its imports are done already. So the tests that look at
imports, at the interpreter's own start (``-X importtime``, another environment) or at signals
start a fresh interpreter instead (``conftest.run_cli``).

Protocol: one JSON request a line on stdin (``module``, ``args``, ``cwd``, ``env``, ``stdout``,
``stderr``: the files its streams go to, ``timeout``), one JSON reply a line on stdout
(``returncode``, or ``timed_out``).
"""

import atexit
import importlib
import json
import os
import runpy
import select
import signal
import sys
import threading

# What the tests' commands import that takes the time, imported before the first fork: torch,
# with the parts Lightning imports (torch._dynamo, torchmetrics), TensorBoard, matplotlib, nalu's
# commands (Hydra).
# Not Lightning itself (a fifth of a second once these are in): as it loads it gives its loggers
# a handler of their own if the root logger has none yet, which a command that has set up its
# logging first (nalu-train, under Hydra) would not see happen. Nothing here computes: torch
# starts no thread pool before its first operation, so the fork is of one thread.
PRELOADED = [
    "torch._dynamo",
    "torch.utils.tensorboard",
    "torchmetrics",
    "tensorboard.backend.event_processing.event_accumulator",
    "matplotlib.pyplot",
    "nalu.cli.train",
    "nalu.cli.evaluate",
    "nalu.cli.report",
]


def start_command(request: dict) -> None:
    """In the forked child: the command's streams, folder, environment and arguments, as
    ``subprocess.run`` and ``python -m`` would give them."""
    os.setpgid(0, 0)  # its own group, so that a timeout stops the processes it started too
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    sys.stdin = os.fdopen(0)  # not the server's, whose buffer holds requests read ahead
    for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
        os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644), fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[0] = request["cwd"]  # python -m puts the working folder first
    sys.argv = [request["module"], *request["args"]]


def run_command(module: str) -> int:
    """In the forked child: run ``module`` as ``__main__``, end as the interpreter ends
    ``python -m``, and return its exit code."""
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exit:
        code = exit.code or 0
        if not isinstance(code, int):
            print(code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        sys.excepthook(*sys.exc_info())
        code = -signal.SIGINT  # the interpreter dies of it, after the traceback
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    threading._shutdown()  # as the interpreter ends: executors told to stop, threads joined
    atexit._run_exitfuncs()
    return code


def wait(pid: int, timeout: float) -> dict:
    """The child's exit code, or ``timed_out`` after killing its group."""
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    ended = poller.poll(timeout * 1000)
    os.close(pidfd)
    if not ended:
        os.killpg(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    return {"returncode": os.waitstatus_to_exitcode(status)} if ended else {"timed_out": True}


def serve() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            # What an interpreter's own exit would add is tearing down every module it imported,
            # which for torch's takes a second and a half and a fresh command's a moment.
            code = 1
            try:
                start_command(request)
                code = run_command(request["module"])
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                if code < 0:  # died of Ctrl-C, as the interpreter does
                    signal.signal(-code, signal.SIG_DFL)
                    os.kill(os.getpid(), -code)
                os._exit(code)
        print(json.dumps(wait(pid, request["timeout"])), flush=True)


if __name__ == "__main__":
    for name in PRELOADED:
        importlib.import_module(name)
    serve()
