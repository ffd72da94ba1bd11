"""What a researcher reads: TensorBoard over HTTP as a user starts it, sweep reports, weight
heatmaps, the console scripts' completion and evaluate's result file."""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPORT_FIGURES, TINY, compose_config, drawn_colours, read_metrics, run_cli

from nalu.cli.common import quote_paths
from nalu.cli.train import train
from nalu.data.problem import MysteryArithmeticProblem
from nalu.results.heatmap import Heatmap, render_heatmap, weight_figure
from nalu.results.images import png_size
from nalu.results.record import HPARAMS_METRICS
from nalu.results.recorder import unit_matrices, weight_heatmaps
from nalu.units import NeuralAdditionUnit, NeuralMultiplicationUnit

BIN = Path(sys.executable).parent
LEARNING_RATES = ("0.001", "0.01")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tensorboard_json(base: str, route: str, body: dict | None = None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + route, data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def once_shown(server: subprocess.Popen, read, complete, what: str):
    """``read()`` once ``complete`` holds of it. TensorBoard reads the runs' files in the
    background, so what it serves grows until it has read them all; the ten minutes only keep a
    broken server from hanging the suite."""
    limit, shown = time.monotonic() + 600, None
    while True:
        assert server.poll() is None, "TensorBoard exited"
        try:
            shown = read()
        except OSError:  # not listening yet
            shown = None
        if shown is not None and complete(shown):
            return shown
        assert time.monotonic() < limit, f"TensorBoard never showed {what}: {shown}"
        time.sleep(1)


@pytest.fixture(scope="module")
def two_job_sweep(tmp_path_factory) -> Path:
    """``-m model=nalu optimizer.lr=0.001,0.01``: 3 epochs of 4 steps, validated after each."""
    workdir = tmp_path_factory.mktemp("sweep")
    sweep_dir = workdir / "sweep"
    result = run_cli(
        [
            "-m",
            *TINY,
            "trainer.max_epochs=3",
            "model=nalu",
            f"optimizer.lr={','.join(LEARNING_RATES)}",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=workdir,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return sweep_dir


@pytest.mark.slow
def test_job_folders_are_named_by_model_swept_values_and_seed(two_job_sweep):
    names = sorted(path.name for path in two_job_sweep.iterdir() if path.is_dir())
    assert names == [f"{k}_nalu_optimizer.lr={lr}_seed0" for k, lr in enumerate(LEARNING_RATES)]


@pytest.mark.slow
def test_tensorboard_shows_named_runs_complete_curves_hparams_and_heatmaps(two_job_sweep):
    port = free_port()
    # Started as a user starts it: default flags (TensorBoard's fast loader, where present).
    address = ["--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(
        [BIN / "tensorboard", "--logdir", str(two_job_sweep), *address],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/data/plugin"
    expected_runs = sorted(
        f"{k}_nalu_optimizer.lr={lr}_seed0" for k, lr in enumerate(LEARNING_RATES)
    )
    try:
        # Each job's curves, and beside them its results (with its HParams row) as run/result.
        result_runs = [f"{run}/result" for run in expected_runs]
        curves = ("train/loss", "interp/mse", "extrap/mse", "extrap/mse_mul")

        def shown() -> dict:
            tags = tensorboard_json(base, "/scalars/tags")
            points = {
                (run, tag): tensorboard_json(
                    base, f"/scalars/scalars?run={urllib.parse.quote(run)}&tag={tag}"
                )
                for run in expected_runs
                if run in tags
                for tag in curves
                if tag in tags[run]
            }
            return {
                "tags": tags,
                "points": points,
                "images": tensorboard_json(base, "/images/tags"),
            }

        def read_through(shown: dict) -> bool:  # every run, to its last validation and figure
            return (
                sorted(shown["tags"]) == sorted(expected_runs + result_runs)
                and len(shown["points"]) == len(expected_runs) * len(curves)
                and all(points[-1][1] == 12 for points in shown["points"].values())
                and all(run in shown["images"] for run in expected_runs)
            )

        everything = once_shown(server, shown, read_through, "every run read through")
        tags = everything["tags"]
        for run in expected_runs:
            quoted = urllib.parse.quote(run)
            assert not any(tag == "epoch" for tag in tags[run])
            # 4 optimizer steps per epoch, a validation after each of the 3 epochs.
            for tag in curves:
                points = everything["points"][run, tag]
                assert [step for _, step, _ in points] == [4, 8, 12], (run, tag)
            images = everything["images"][run]
            # The NALU's one unit: one figure, a panel per matrix (W_add, W_mul).
            assert list(images) == ["weights/network"]
            (image,) = tensorboard_json(
                base, f"/images/images?run={quoted}&tag=weights/network&sample=0"
            )
            with urllib.request.urlopen(f"{base}/images/individualImage?{image['query']}") as png:
                header = png.read(24)
            assert header.startswith(b"\x89PNG")
            assert int.from_bytes(header[16:20], "big") >= 600  # width: a figure, not a thumbnail

        for run in result_runs:
            assert sorted(tags[run]) == sorted(f"result/{name}" for name in HPARAMS_METRICS)

        experiment = tensorboard_json(base, "/hparams/experiment", {"experimentName": ""})
        # The table's metric columns are the runs' results alone, not their curves' last points.
        metric_tags = {info["name"]["tag"] for info in experiment["metricInfos"]}
        assert metric_tags == {f"result/{name}" for name in HPARAMS_METRICS}
        names = [info["name"] for info in experiment["hparamInfos"]]
        # What tells the runs apart leads the list, which the tab ticks from the top.
        differing = [info["name"] for info in experiment["hparamInfos"] if info.get("differs")]
        assert differing == names[:1] == ["optimizer.lr"]
        hparams = set(names)
        assert {"optimizer", "data", "population"} <= hparams
        assert not any(name.startswith(("callbacks", "logger", "paths")) for name in hparams)
        request = {
            "experimentName": "",
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_RUNNING"],
            "colParams": [{"hparam": "optimizer.lr"}, {"metric": {"tag": "result/extrap/mse"}}],
            "startIndex": 0,
            "sliceSize": 10,
        }
        groups = tensorboard_json(base, "/hparams/session_groups", request)["sessionGroups"]
        assert sorted(group["hparams"]["optimizer.lr"] for group in groups) == [0.001, 0.01]
        assert {group["hparams"]["model"] for group in groups} == {"nalu"}
        for group in groups:  # each row's result is its run's
            (session,) = group["sessions"]
            shown = {
                value["name"]["tag"]: value["value"]
                for value in session["metricValues"]
                if value["name"]["tag"] == "result/extrap/mse"
            }
            # Each row is the run's result run, in the run's folder beside its metrics.json.
            run = (two_job_sweep / session["name"]).parent
            recorded = json.loads((run / "metrics.json").read_text())
            expected = recorded["metrics"]["extrap/mse"]
            assert shown == {"result/extrap/mse": pytest.approx(expected, rel=1e-6)}
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.slow
def test_the_report_of_a_learning_rate_sweep_has_a_row_per_rate(two_job_sweep):
    result = run_cli([str(two_job_sweep)], cwd=two_job_sweep, module="nalu.report")
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line for line in result.stdout.splitlines() if line.startswith("nalu / ")]
    groups = sorted({re.split(r" {2,}", row)[0] for row in rows})
    assert groups == ["nalu / 0.001", "nalu / 0.01"]
    assert re.search(r"^model / optimizer\.lr +op +runs ", result.stdout, re.MULTILINE)
    for figure in REPORT_FIGURES:
        assert drawn_colours(two_job_sweep / f"{figure}.png") > 2, figure
    report = two_job_sweep / "report.md"
    assert f"Report: {report} (every column; report.csv and 6 figures beside it)" in result.stdout


def side_labels(axis, side: str) -> list[str]:
    """The labels a heatmap panel shows on ``side`` (``below``, ``left``, ``right``), in order."""
    return [text.get_text() for text in axis.texts if text.get_gid() == side]


def test_heatmap_labels_each_output_with_its_true_and_learned_formula():
    network = torch.nn.Sequential(NeuralAdditionUnit(4, 2), NeuralMultiplicationUnit(2, 1))
    units = {
        path: {name: matrix.detach().numpy() for name, matrix in matrices.items()}
        for path, matrices in unit_matrices(network).items()
    }
    assert {path: list(matrices) for path, matrices in units.items()} == {"0": ["W"], "1": ["W"]}
    hidden = weight_figure("0: NAU", units["0"], truths=[], input_name="x")
    (axis, _colour_bar) = hidden.axes
    assert side_labels(axis, "left") == ["h0", "h1"]
    assert side_labels(axis, "below") == ["x0", "x1", "x2", "x3"]
    assert side_labels(axis, "right") == []  # hidden units have no read-back
    output = weight_figure(
        "1: NMU", units["1"], truths=["x0 × x1"], learned=[("x0 × x1", True)], input_name="h"
    )
    axis, colour_bar = output.axes
    assert side_labels(axis, "left") == ["y0 = x0 × x1"]
    assert side_labels(axis, "right") == ["✓ x0 × x1"]
    assert colour_bar.get_ylim() == (-1.0, 1.0)  # {-1, 0, 1} weights in full colour


def test_a_wide_heatmap_fits_a_1600_pixel_window():
    nac = NeuralAdditionUnit(300, 20)
    truths = [f"x{j} + x{j + 1}" for j in range(20)]
    learned = [(truth, True) for truth in truths]
    png = render_heatmap(
        Heatmap("weights/network", "NAU", {"W": nac.weight.detach().numpy()}, truths, learned)
    )
    width, height = png_size(png)
    assert 1200 <= width <= 1500 and height >= 20 * 32  # 20 rows of 0.32 inches at 100 dpi


@pytest.mark.slow
def test_console_scripts_complete_hydra_options_in_bash():
    env = {**os.environ, "COMP_LINE": "nalu-train model=nm"}
    result = subprocess.run(
        [BIN / "nalu-train", "-sc", "query=bash"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert {"model=nmu", "model=nmru"} <= set(result.stdout.split())


@pytest.mark.slow
def test_evaluate_takes_a_sweep_jobs_checkpoint_as_documented(two_job_sweep, tmp_path):
    job = next(path for path in two_job_sweep.iterdir() if "optimizer.lr=" in path.name)
    checkpoint = job / "checkpoints" / "last.ckpt"
    result = run_cli([f"ckpt_path={checkpoint}"], cwd=tmp_path, module="nalu.evaluate")
    assert result.returncode == 0, result.stderr[-2000:]
    (evaluation,) = job.glob("evaluate/*/evaluation.json")
    evaluated = json.loads(evaluation.read_text())
    assert evaluated["ckpt_path"] == str(checkpoint)
    # The job's own network and sets: its final numbers again.
    recorded = read_metrics(job)["metrics"]
    for name in ("interp/mse", "extrap/mse"):
        assert evaluated["metrics"][name] == pytest.approx(recorded[name], rel=1e-6), name


@pytest.mark.slow
def test_hparams_over_a_sweep_a_population_and_a_run_shows_every_swept_field(
    two_job_sweep, tmp_path
):
    outputs = tmp_path / "outputs"
    shutil.copytree(two_job_sweep, outputs / "sweep")
    same = [*TINY, "trainer.max_epochs=3", "model=nac"]  # as the sweep but for model and lr
    train(compose_config([*same, "population=2"], outputs / "population"))
    train(compose_config([*same, "seed=7"], outputs / "run"))
    port = free_port()
    server = subprocess.Popen(
        [BIN / "tensorboard", "--logdir", str(outputs), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}/data/plugin"
    try:
        request = {
            "experimentName": "",
            "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_RUNNING"],
            "colParams": [],
            "startIndex": 0,
            "sliceSize": 100,
        }

        def with_results(groups: list) -> bool:
            """The sweep's 2 jobs, the population's 2 members and its own run, and the single
            run, each with its results read."""
            return len(groups) == 6 and all(
                any(
                    value["name"]["tag"] == "result/extrap/mse" for value in session["metricValues"]
                )
                for group in groups
                for session in group["sessions"]
            )

        groups = once_shown(
            server,
            lambda: tensorboard_json(base, "/hparams/session_groups", request)["sessionGroups"],
            with_results,
            "six rows with their results",
        )
        experiment = tensorboard_json(base, "/hparams/experiment", {"experimentName": ""})
        infos = {info["name"]: info for info in experiment["hparamInfos"]}
        differing = {name for name, info in infos.items() if info.get("differs")}
        # Exactly what differs: the seed also names each problem (problem_seed: ${seed}).
        assert differing == {"model", "optimizer.lr", "seed", "problem_seed", "population"}
        assert {"data.in_features", "trainer.max_epochs"} <= set(infos)
        values = [group["hparams"] for group in groups]
        assert sorted(v["optimizer.lr"] for v in values if v["model"] == "nalu") == [0.001, 0.01]
        assert sorted(v["seed"] for v in values if v["model"] == "nac" and "seed" in v) == [0, 1, 7]
        # The population's own row: what its members share (no seed), beside their median.
        [own] = [group for group in groups if "seed" not in group["hparams"]]
        assert (own["hparams"]["model"], own["hparams"]["population"]) == ("nac", 2)
        assert own["hparams"]["trainer.max_epochs"] == 3
        members = (outputs / "population" / "members").glob("*/metrics.json")
        mses = [json.loads(path.read_text())["metrics"]["extrap/mse"] for path in members]
        [metric] = [
            value["value"]
            for value in own["sessions"][0]["metricValues"]
            if value["name"]["tag"] == "result/extrap/mse"
        ]
        assert len(mses) == 2 and metric == pytest.approx(sum(mses) / 2, rel=1e-6)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_path_values_are_quoted_for_hydra_and_nothing_else_is():
    arguments = ["ckpt_path=/runs/1_nac_lr=0.1,x/it's.ckpt", "seed=1", "ckpt_path=null"]
    assert quote_paths(arguments) == [
        "ckpt_path='/runs/1_nac_lr=0.1,x/it\\'s.ckpt'",
        "seed=1",
        "ckpt_path=null",
    ]
    assert quote_paths(["ckpt_path='/a=b'"]) == ["ckpt_path='/a=b'"]


@pytest.mark.slow
def test_evaluate_reads_the_problem_from_the_run_and_writes_its_json(tmp_path):
    run_dir = tmp_path / "run"
    trained = run_cli([*TINY, f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert trained.returncode == 0, trained.stderr[-2000:]
    checkpoint = f"ckpt_path={run_dir}/checkpoints/last.ckpt"
    result = run_cli([checkpoint], cwd=tmp_path, module="nalu.evaluate")
    assert result.returncode == 0, result.stderr[-2000:]
    (evaluation,) = run_dir.glob("evaluate/*/evaluation.json")
    same = json.loads(evaluation.read_text())["metrics"]
    recorded = json.loads((run_dir / "metrics.json").read_text())["metrics"]
    # The run's own sets again: the run's final numbers.
    assert same["extrap/mse"] == pytest.approx(recorded["extrap/mse"], rel=1e-6)
    assert same["interp/mse"] == pytest.approx(recorded["interp/mse"], rel=1e-6)

    wider = run_cli(
        [checkpoint, "data.extrap_range=[-500,500]"], cwd=tmp_path, module="nalu.evaluate"
    )
    assert wider.returncode == 0, wider.stderr[-2000:]
    (other,) = set(run_dir.glob("evaluate/*/evaluation.json")) - {evaluation}
    widened = json.loads(other.read_text())["metrics"]
    # Only the extrapolation set changed; TINY has multiplication, whose error grows
    # quadratically with the range.
    assert widened["interp/mse"] == pytest.approx(same["interp/mse"], rel=1e-6)
    assert widened["extrap/mse"] > 4 * same["extrap/mse"]

    for bad, why in (
        ("seed=1", "these sets pose another problem than the checkpoint learned"),
        ("experiment=article", "evaluate takes the model and problem from the checkpoint's run"),
        ("data=static_arithmetic", "the checkpoint's run fixes the problem"),
    ):
        refused = run_cli([checkpoint, bad], cwd=tmp_path, module="nalu.evaluate")
        assert refused.returncode == 2, (bad, refused.stderr[-2000:])
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith(f"error: {bad}: {why}"), line
        assert len(list(run_dir.glob("evaluate/*"))) == 2, bad  # no folder left behind

    # Outside its run folder a checkpoint is checked on its outputs' operations, and the
    # refusal shows them.
    moved = tmp_path / "elsewhere" / "last.ckpt"
    moved.parent.mkdir()
    moved.write_bytes((run_dir / "checkpoints" / "last.ckpt").read_bytes())
    data = [o for o in TINY if o.startswith("data.")]
    refused = run_cli(
        [f"ckpt_path={moved}", *data, "data.problem_seed=1"], cwd=tmp_path, module="nalu.evaluate"
    )
    assert refused.returncode == 2, refused.stderr[-2000:]
    (line,) = refused.stderr.strip().splitlines()
    trained = json.loads((run_dir / "problem.json").read_text())["outputs"]
    operations = [output["operation"] for output in trained]
    assert f"(the checkpoint, of seed 0, answers {operations}; these sets ask [" in line, line
    assert list(moved.parent.iterdir()) == [moved]  # no evaluate/ folder left behind


def test_the_read_back_column_stands_once_beside_the_last_panel_of_the_outputs():
    # A per-output selection draws every head's matrix; a head that does not answer an output
    # must not look ticked for it, so the network's read-back appears once, on the last panel.
    heads = {
        "nau/W": np.zeros((2, 3), dtype=np.float32),
        "nmu/W": np.eye(2, 3, dtype=np.float32),
        "choice": np.array([[0.0, 1.0], [0.0, 1.0]], dtype=np.float32),
    }
    truths = ["x0 × x1", "x1 × x2"]
    learned = [(truth, True) for truth in truths]
    figure = weight_figure(
        "network: selection",
        heads,
        truths=truths,
        learned=learned,
        column_names={"choice": ["nau", "nmu"]},
    )
    matrices = [axis for axis in figure.axes if axis.get_title(loc="left")]
    assert [axis.get_title(loc="left").split()[0] for axis in matrices] == [
        "nau/W",
        "nmu/W",
        "choice",
    ]
    assert [side_labels(axis, "right") for axis in matrices[:2]] == [[], []]
    # The choice's columns are the heads, not inputs.
    assert side_labels(matrices[0], "below") == ["x0", "x1", "x2"]
    assert side_labels(matrices[-1], "below") == ["nau", "nmu"]
    assert side_labels(matrices[-1], "right") == ["✓ x0 × x1", "✓ x1 × x2"]
    # The read-back column is headed as the whole unit's, beside a choice drawn in square cells
    # (2 columns of 0.32 inches, at least 1.2 inches), not stretched to the heads' width.
    headings = [
        [t.get_text() for t in a.texts if t.get_gid() == "read-back heading"] for a in matrices
    ]
    assert headings == [[], [], ["read back (the whole unit)"]]
    inches = [a.get_position().width * figure.get_figwidth() for a in matrices]
    assert inches[0] == inches[1] == pytest.approx(4.0) and inches[2] == pytest.approx(1.2)


def outlined_cells(axis) -> list[tuple[int, int]]:
    """(row, column) of each cell a heatmap panel outlines as an operand of the truth."""
    (outlines,) = [c for c in axis.collections if c.get_gid() == "operands"] or [None]
    if outlines is None:
        return []
    # Each outline's path, in data coordinates: a cell's lower corner is (i - 0.5, j - 0.5).
    corners = [path.vertices.min(axis=0) for path in outlines.get_paths()]
    return sorted((round(y + 0.5), round(x + 0.5)) for x, y in corners)


def test_the_truths_operands_are_outlined_in_the_panels_of_outputs_by_inputs():
    # y0 = x2 + x0 and y1 = x1 × x3, read by a selection of two heads and its choice.
    problem = MysteryArithmeticProblem(4, 2, operations=("add", "mul"), problem_seed=0)
    masks = problem.operand_masks()
    operands = sorted((j, i) for j, i in zip(*np.nonzero(masks.amax(0).numpy()), strict=True))
    assert len(operands) == 4  # two distinct inputs an output
    heads = {
        "nau/W": np.zeros((2, 4), dtype=np.float32),
        "nmu/W": np.zeros((2, 4), dtype=np.float32),
        "choice": np.zeros((2, 2), dtype=np.float32),
    }
    figure = weight_figure(
        "network: selection",
        heads,
        truths=problem.formulas(),
        column_names={"choice": ["nau", "nmu"]},
        operands=masks.amax(0).bool().numpy(),
    )
    nau, nmu, choice = [axis for axis in figure.axes if axis.get_title(loc="left")]
    assert outlined_cells(nau) == outlined_cells(nmu) == operands
    assert nau.get_title(loc="left") == "nau/W  [2×4]  □ the truth's operands"
    # The choice's columns are heads, not inputs: nothing there is an operand.
    assert outlined_cells(choice) == [] and choice.get_title(loc="left") == "choice  [2×2]"


def test_only_a_unit_that_reads_the_inputs_and_answers_the_outputs_outlines_operands():
    problem = MysteryArithmeticProblem(4, 2, operations=("add", "mul"), problem_seed=0)
    formulas = [{"learned": "0", "recovered": False}] * 2
    (alone,) = weight_heatmaps(NeuralAdditionUnit(4, 2), problem, formulas)
    assert alone.operands.tolist() == problem.operand_masks().amax(0).bool().tolist()
    # A stack's first unit answers hidden units, its last reads them: no operand is a cell.
    stack = torch.nn.Sequential(NeuralAdditionUnit(4, 3), NeuralMultiplicationUnit(3, 2))
    assert [h.operands for h in weight_heatmaps(stack, problem, formulas)] == [None, None]
