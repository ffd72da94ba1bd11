"""``run_cli``'s commands, run in a fork of ``command_server``, end as in a fresh interpreter."""

import subprocess

import pytest
from conftest import run_cli

# A command that shows what it was given and ends as its first argument says.
PROBE = """
import atexit, concurrent.futures, logging, os, sys
atexit.register(print, "atexit ran")
print("torch imported before the command:", "torch" in sys.modules)
print(sys.argv[1:], os.getcwd(), sys.path[0], os.environ["HYDRA_FULL_ERROR"])
print("to stderr", file=sys.stderr)
ending = sys.argv[1]
if ending == "normal":
    # Lightning imported after the command set up its logging (as nalu-train does under Hydra)
    # leaves its messages to the root logger's handlers.
    logging.basicConfig()
    import lightning.pytorch
    print("Lightning's logger propagates:", logging.getLogger("lightning.pytorch").propagate)
    # An executor's threads left running end as the interpreter ends.
    concurrent.futures.ThreadPoolExecutor().submit(print, "a thread ran")
if ending == "error":
    raise ValueError("a bug")
if ending == "ctrl-c":
    raise KeyboardInterrupt
if ending != "normal":
    sys.exit(int(ending) if ending.isdigit() else ending)
"""


def fresh(tmp_path, monkeypatch, *args, **kwargs) -> subprocess.CompletedProcess[str]:
    """``run_cli`` in a fresh interpreter: an environment other than the server's."""
    with monkeypatch.context() as patch:
        patch.setenv("NALU_TEST_FRESH", "1")
        return run_cli(*args, cwd=tmp_path, **kwargs)


def unindented(stderr: str) -> list[str]:
    """The lines of ``stderr`` less a traceback's frames (the server's sit above the command's)."""
    return [line for line in stderr.splitlines() if not line.startswith("  ")]


@pytest.mark.parametrize("ending", ["normal", "3", "a message", "error", "ctrl-c"])
def test_a_served_command_ends_as_in_a_fresh_interpreter(ending, tmp_path, monkeypatch):
    (tmp_path / "probe.py").write_text(PROBE)
    served = run_cli([ending, "x=1"], cwd=tmp_path, module="probe")
    alone = fresh(tmp_path, monkeypatch, [ending, "x=1"], module="probe")
    assert served.stdout.startswith("torch imported before the command: True\n")
    assert alone.stdout.startswith("torch imported before the command: False\n")
    assert served.stdout.split("\n", 1)[1] == alone.stdout.split("\n", 1)[1]
    assert f"['{ending}', 'x=1'] {tmp_path} {tmp_path} 0\n" in served.stdout
    assert served.stdout.endswith("atexit ran\n")
    if ending == "normal":
        assert "Lightning's logger propagates: True\na thread ran\n" in served.stdout
    assert unindented(served.stderr) == unindented(alone.stderr)
    assert served.returncode == alone.returncode
    assert served.returncode == {"normal": 0, "3": 3, "ctrl-c": -2}.get(ending, 1)


def test_a_served_command_past_its_timeout_is_stopped_and_the_next_one_runs(tmp_path):
    (tmp_path / "sleeper.py").write_text("import time\ntime.sleep(60)\n")
    (tmp_path / "probe.py").write_text(PROBE)
    with pytest.raises(subprocess.TimeoutExpired):
        run_cli([], cwd=tmp_path, module="sleeper", timeout=1)
    assert run_cli(["3"], cwd=tmp_path, module="probe").returncode == 3
