"""The package as a user installs it: a wheel (not an editable checkout) with its console
scripts and its configs inside."""

import json
import os
import re
import site
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import README, TINY

import nalu

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_a_non_editable_install_trains_with_its_console_script(tmp_path):
    wheels = tmp_path / "wheels"
    build = ["wheel", "-q", "--no-deps", "--no-build-isolation", str(ROOT), "-w", str(wheels)]
    subprocess.run(
        [sys.executable, "-m", "pip", *build],
        check=True,
        capture_output=True,
    )
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    (wheel,) = wheels.glob("nalu-*.whl")
    subprocess.run(
        [venv / "bin" / "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
    )
    # The dependencies come from this environment, appended after the fresh one's own
    # site-packages (a .pth line adds a path without running this environment's .pth files,
    # so its editable nalu stays out of sight).
    (fresh_site,) = (venv / "lib").glob("python3*/site-packages")
    (fresh_site / "dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        [venv / "bin" / "nalu-train", *TINY, "trainer.max_epochs=1"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    (run_dir,) = (workdir / "outputs" / "runs").iterdir()
    recorded = json.loads((run_dir / "metrics.json").read_text())
    assert (recorded["status"], recorded["epochs"]) == ("finished", 1)
    # Outside a checkout the run names a command that serves it there, not a make target.
    # From the folder above the run's: served as the logdir, its own folder would be the run
    # ".", whose HParams row TensorBoard leaves without metrics.
    serve = f"tensorboard --logdir {run_dir.parent} --samples_per_plugin scalars=1000000"
    printed = f"TensorBoard: {serve} (this run: {run_dir.name})\n"
    assert printed in result.stdout
    assert "make " not in result.stdout
    located = subprocess.run(
        [
            venv / "bin" / "python",
            "-c",
            "import nalu.cli.common; print(nalu.cli.common.CONFIG_DIR)",
        ],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(located.stdout.strip()).is_relative_to(fresh_site)


@pytest.mark.slow
def test_units_and_problems_import_without_lightning():
    # A notebook or script that only builds units and problems pays for torch alone.
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, nalu.units, nalu.data; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'hydra')))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "[]"


def test_the_module_name_notebooks_import_is_the_training_module():
    from nalu.module import ArithmeticModule as imported
    from nalu.training.module import ArithmeticModule

    assert imported is ArithmeticModule


def test_each_package_imports_only_those_above_it_in_the_readmes_list():
    readme = README.read_text()
    architecture = readme.split("## Architecture")[1]
    order = re.findall(r"^\| `nalu\.(\w+)` \|", architecture, re.M)
    assert order == ["config", "units", "data", "results", "training", "cli"]
    # The one exception the README names: the run folder's file names.
    allowed = {("config", "results.record")}
    root = Path(nalu.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        package = path.relative_to(root).parts[0]
        if package not in order:
            continue
        text = path.read_text()
        modules = re.findall(r"^\s*(?:from|import) nalu\.([\w.]+)", text, re.M)
        modules += re.findall(r"^\s*from nalu import (\w+)", text, re.M)
        found += [
            f"{path.name}: nalu.{module}"
            for module in modules
            if (imported := module.split(".")[0]) in order
            and order.index(imported) > order.index(package)
            and (package, module) not in allowed
        ]
    assert found == []
