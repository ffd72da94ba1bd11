import csv
import json
import math
import os
import re
import stat
import warnings

import pytest
import yaml
from conftest import REPORT_FIGURES, TINY, compose_config, load_events
from matplotlib.colors import to_rgba

import nalu.results.report
from nalu.cli.common import EXIT_CONFIG_ERROR, count_jobs
from nalu.cli.report import main
from nalu.cli.train import train
from nalu.results.record import (
    EXTRAP_MSE,
    EXTRAP_RELATIVE_ERROR,
    INTERP_MSE,
    TRAIN_LOSS,
    RunRecord,
)
from nalu.results.report import (
    BEST_EPOCH_LABEL,
    CONSOLE_HIDDEN,
    SUCCESS_COLUMNS,
    ReportError,
    best_validation_step,
    default_group_by,
    fisher_exact_p,
    group_runs,
    load_runs,
    loss_curves,
    markdown_table,
    median_table,
    plot_curves,
    plot_success,
    summary_rows,
    wilson_interval,
    write_report,
)


def write_run(folder, model, seed, metrics):
    folder.mkdir(parents=True)
    labels = {"model": model, "seed": seed}
    RunRecord("finished", labels, epochs=2, steps=8, metrics=metrics).write(folder)


def test_table_gives_the_median_over_seeds_per_model(tmp_path):
    for seed, mse in enumerate([1.0, 5.0, 3.0]):
        write_run(tmp_path / f"nac{seed}", "nac", seed, {"extrap/mse": mse, "extrap/mse_add": mse})
    write_run(tmp_path / "mlp0", "mlp", 0, {"extrap/mse": 7.0})
    table = median_table(group_runs(load_runs([tmp_path]), ["model"]), ["model"])
    lines = table.splitlines()
    assert (
        lines[0]
        == "| model | runs | diverged | train/loss | interp/mse | extrap/mse | extrap/mse_add |"
    )
    assert "| mlp | 1 | 0 | – | – | 7 | – |" in lines
    assert "| nac | 3 | 0 | – | – | 3 | 3 |" in lines


def stops_with(arguments, capsys) -> str:
    """The one line ``nalu-report`` prints before it exits with the bad-input code."""
    with pytest.raises(SystemExit) as stop:
        main(arguments)
    assert stop.value.code == EXIT_CONFIG_ERROR
    (line,) = capsys.readouterr().err.strip().splitlines()
    return line


def test_no_runs_is_one_clear_line(tmp_path, capsys):
    line = stops_with([str(tmp_path)], capsys)
    assert line == f"error: no readable metrics.json under {tmp_path}"


@pytest.mark.parametrize(
    ("successes", "trials", "expected"),
    [
        (0, 10, (0.0, 0.2775)),
        (5, 10, (0.2366, 0.7634)),
        (10, 10, (0.7225, 1.0)),
        (1, 3, (0.0615, 0.7923)),
    ],
)
def test_wilson_interval_matches_known_values(successes, trials, expected):
    assert wilson_interval(successes, trials) == pytest.approx(expected, abs=1e-4)


def test_wilson_bounds_are_exact_at_none_and_all():
    # The formula leaves a residue of about 1e-17 at 0 of 3; an error bar must not go below 0.
    assert wilson_interval(0, 3)[0] == 0.0
    assert wilson_interval(3, 3)[1] == 1.0


@pytest.mark.parametrize(
    ("successes", "trials", "expected"),
    [
        # 3 of 6 successes: splits 0..3 of them in the first sample weigh 1, 9, 9, 1 (of 20);
        # 3/3 against 0/3 is the split 3, and only 0 and 3 are as unlikely: 2/20.
        ((3, 0), (3, 3), 0.1),
        # 4 of 8: splits 0..4 weigh 1, 16, 36, 16, 1 (of 70); 2/4 against 2/4 is the likeliest.
        ((2, 2), (4, 4), 1.0),
        ((1, 3), (4, 4), 34 / 70),  # the split 1 (16) and the splits 0, 3, 4: 1 + 16 + 16 + 1
        # 44 of 50: the splits 19..25 weigh C(25, k)·C(25, 44 − k) = 177100, 1328250,
        # 3795000, 5290000, 3795000, 1328250, 177100 (of C(50, 44) = 15890700); 24/25 against
        # 20/25 is the split 24, as likely as 20, with 19 and 25 less likely: 3010700/15890700.
        ((24, 20), (25, 25), 3010700 / 15890700),
    ],
)
def test_fisher_exact_p_matches_hand_computed_values(successes, trials, expected):
    assert fisher_exact_p(successes, trials) == pytest.approx(expected, abs=1e-4)


def write_problem(folder, **settings):
    problem = {"problem": "mystery_arithmetic", "in_features": 6, "problem_seed": 0, **settings}
    (folder / "problem.json").write_text(json.dumps(problem))


def solved_run(folder, model, seed, solved, **extra):
    metrics = {
        "extrap/mse": 0.5 if solved else 50.0,
        "extrap/mse_add": 0.5 if solved else 50.0,
        "extrap/solved_fraction": float(solved),
        "extrap/solved_fraction_add": float(solved),
        "recovered_fraction": float(solved),
        "recovered_fraction_add": float(solved),
    }
    write_run(folder, model, seed, {**metrics, **extra.pop("metrics", {})})
    if extra:
        payload = json.loads((folder / "metrics.json").read_text())
        (folder / "metrics.json").write_text(json.dumps({**payload, **extra}))
    write_problem(folder, problem_seed=seed)


def test_a_report_that_cannot_be_written_leaves_no_figure_open(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    solved_run(tmp_path / "a", "nau", 0, solved=True)

    write_text_atomic = nalu.results.report.write_text_atomic

    def disk_full_at_report_md(path, text):  # the figures are drawn by then
        if path.name == "report.md":
            raise OSError(28, "No space left on device", str(path))
        write_text_atomic(path, text)

    monkeypatch.setattr(nalu.results.report, "write_text_atomic", disk_full_at_report_md)
    with pytest.raises(OSError, match="No space left on device"):
        write_report([tmp_path])
    assert plt.get_fignums() == []


def test_a_group_of_one_operation_has_that_operations_row_only(tmp_path):
    solved_run(tmp_path / "a", "nau", 0, solved=True)
    solved_run(tmp_path / "b", "nau", 1, solved=False)
    metrics = {"extrap/mse": 1.0, "extrap/mse_add": 1.0, "extrap/mse_mul": 1.0}
    write_run(tmp_path / "c", "nalu", 0, metrics)
    rows = summary_rows(load_runs([tmp_path]), ["model"])
    assert [(r["group"], r["operation"]) for r in rows] == [
        ("nalu", "all"), ("nalu", "add"), ("nalu", "mul"), ("nau", "all"), ("nau", "add"),
    ]  # fmt: skip
    table = markdown_table(rows, ["model"]).splitlines()
    shown = [line.split(" | ")[:3] for line in table[2:]]
    assert shown == [
        ["| nalu", "all", "1"], ["| nalu", "add", "1"], ["| nalu", "mul", "1"],
        ["| nau", "add", "2"],
    ]  # fmt: skip


def test_a_report_of_more_groups_than_a_figure_tells_apart_draws_no_per_group_figure(tmp_path):
    (tmp_path / "success.png").write_bytes(b"a figure of an earlier report")
    for unit in range(21):
        solved_run(tmp_path / f"run{unit}", f"unit{unit:02d}", 0, solved=True)
    main([str(tmp_path)])
    assert not list(tmp_path.glob("*.png"))
    report = (tmp_path / "report.md").read_text()
    assert "not drawn for 21 groups (a figure tells at most 20 apart)" in report
    assert ".png)" not in report
    (tmp_path / "run20" / "metrics.json").unlink()  # 20 groups: drawn
    main([str(tmp_path)])
    assert (tmp_path / "success.png").read_bytes()[:4] == b"\x89PNG"
    assert (
        "![Success rates with 95% Wilson intervals](success.png)"
        in (tmp_path / "report.md").read_text()
    )


def test_diverged_runs_are_counted_as_failures_not_dropped(tmp_path):
    solved_run(tmp_path / "a", "nac", 0, solved=True)
    solved_run(tmp_path / "b", "nac", 1, solved=False, status="diverged")
    solved_run(tmp_path / "c", "nac", 2, solved=False, metrics={"extrap/mse": float("nan")})
    solved_run(tmp_path / "d", "nac", 3, solved=False)
    [overall, add] = summary_rows(load_runs([tmp_path]))
    assert (overall["operation"], add["operation"]) == ("all", "add")
    assert (overall["runs"], overall["diverged"], overall["solved"]) == (4, 2, 1)
    assert overall["success_rate"] == 0.25
    assert overall["recovered"] == 1
    # Medians over the runs that did not diverge: 0.5 and 50.
    assert overall["extrap_mse"] == pytest.approx(25.25)
    # As jobs of a sweep, the end-of-sweep line counts them alike.
    for job in "abcd":
        (tmp_path / job / ".hydra").mkdir()
    counts = count_jobs(tmp_path)
    assert (counts.jobs, counts.finished, counts.diverged) == (4, 2, 2)


def test_runs_of_different_problems_get_rows_that_name_the_difference(tmp_path, capsys):
    solved_run(tmp_path / "a", "nac", 0, solved=True)
    solved_run(tmp_path / "b", "nac", 1, solved=True)
    write_problem(tmp_path / "b", in_features=9)
    # By default each problem its own row, named by the setting its problem differs in.
    runs = load_runs([tmp_path])
    assert default_group_by(runs) == ["model", "data.in_features"]
    assert list(group_runs(runs, default_group_by(runs))) == ["nac / 6", "nac / 9"]
    # Asked to pool them in one row: refused, with the field that tells them apart.
    message = stops_with([str(tmp_path), "--group-by", "model"], capsys)
    assert message == (
        "error: runs of different problems share the row 'nac' (data.in_features: 6 vs 9); add "
        "a field that tells them apart, e.g. --group-by model,data.in_features"
    )


def write_config(folder, **data):
    (folder / ".hydra").mkdir()
    (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"data": data}))


def test_one_range_written_as_integers_or_as_floats_is_one_problem(tmp_path):
    # [-50, 50] from a command line, [-50.0, 50.0] from the config, a union of one interval:
    # the same extrapolation.
    for name, extrap in (("a", [-50, 50]), ("b", [-50.0, 50.0]), ("c", [[-50, 50]])):
        solved_run(tmp_path / name, "nalu", 0, solved=True)
        write_config(tmp_path / name, extrap_range=extrap)
    runs = load_runs([tmp_path])
    assert default_group_by(runs) == ["model"]
    assert list(group_runs(runs, ["model"])) == ["nalu"]


def test_a_population_cell_and_a_run_without_cells_are_not_pooled(tmp_path):
    for name, labels in (("cell", {"range": "U_1_2", "problem_axes": {"range": ["U_1_2"]}}),
                         ("plain", {})):  # fmt: skip
        solved_run(tmp_path / name, "nmu", 0, solved=True)
        payload = json.loads((tmp_path / name / "metrics.json").read_text())
        payload["labels"].update(labels)
        (tmp_path / name / "metrics.json").write_text(json.dumps(payload))
    with pytest.raises(ReportError, match="share the row 'nmu' \\(range: \"U_1_2\" vs null\\)"):
        group_runs(load_runs([tmp_path]), ["model"])


def test_a_swept_operations_field_names_each_row_once(tmp_path):
    for name, operations in (("a", ["add"]), ("b", ["mul"])):
        solved_run(tmp_path / name, "nau", 0, solved=True)
        write_problem(tmp_path / name, operations=operations)
        payload = json.loads((tmp_path / name / "metrics.json").read_text())
        payload["labels"]["operations"] = operations  # as a run labels itself
        (tmp_path / name / "metrics.json").write_text(json.dumps(payload))
        (tmp_path / name / ".hydra").mkdir()
        overrides = [f"data.operations=[{operations[0]}]"]
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    runs = load_runs([tmp_path])
    assert default_group_by(runs) == ["model", "data.operations"]


def test_runs_of_different_value_ranges_are_not_pooled(tmp_path, capsys):
    # One problem, extrapolated on two ranges: their thresholds and errors are not comparable.
    for name, extrap in (("a", [2.0, 6.0]), ("b", [1.0, 2.0])):
        solved_run(tmp_path / name, "nau_nmu", 0, solved=True)
        (tmp_path / name / ".hydra").mkdir()
        config = {"data": {"train_range": [1.0, 2.0], "extrap_range": extrap}}
        (tmp_path / name / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    runs = load_runs([tmp_path])
    assert list(group_runs(runs, default_group_by(runs))) == [
        "nau_nmu / [1.0, 2.0]",
        "nau_nmu / [2.0, 6.0]",
    ]
    message = stops_with([str(tmp_path), "--group-by", "model"], capsys)
    assert message == (
        "error: runs of different problems share the row 'nau_nmu' (data.extrap_range: [1.0, "
        "2.0] vs [2.0, 6.0]); add a field that tells them apart, e.g. --group-by "
        "model,data.extrap_range"
    )


def test_a_missing_folder_is_one_clear_line(tmp_path, capsys):
    nowhere = tmp_path / "nowhere"
    assert stops_with([str(nowhere)], capsys) == f"error: {nowhere}: no such folder"


@pytest.mark.slow
def test_report_of_a_two_model_sweep_has_a_row_per_model_and_operation(tmp_path, capsys):
    for model in ("nac", "nalu"):
        for seed in (0, 1):
            overrides = [*TINY, "data.operations=[add,mul]", f"model={model}", f"seed={seed}"]
            train(compose_config(overrides, tmp_path / f"{model}_{seed}"))
    main([str(tmp_path)])
    rows = list(csv.DictReader((tmp_path / "report.csv").open()))
    # The final metrics' medians, as report.md's second table gives them.
    medians = median_table(group_runs(load_runs([tmp_path]), ["model"]), ["model"])
    (nac,) = [line for line in medians.splitlines() if line.startswith("| nac |")]
    train_loss, interp_mse = nac.split(" | ")[3:5]
    assert (float(rows[0]["train_loss"]), float(rows[0]["interp_mse"])) == pytest.approx(
        (float(train_loss), float(interp_mse)), rel=1e-3
    )
    assert rows[1]["train_loss"] == "nan"  # an operation's row: the loss is the whole run's
    assert [(r["group"], r["operation"], r["runs"]) for r in rows] == [
        ("nac", "all", "2"),
        ("nac", "add", "2"),
        ("nac", "mul", "2"),
        ("nalu", "all", "2"),
        ("nalu", "add", "2"),
        ("nalu", "mul", "2"),
    ]
    report = (tmp_path / "report.md").read_text()
    (row,) = [line for line in report.splitlines() if line.startswith("| nalu | mul |")]
    problems = [json.loads((tmp_path / f"nalu_{s}" / "problem.json").read_text()) for s in (0, 1)]
    mul_outputs = sum(o["operation"] == "mul" for p in problems for o in p["outputs"])
    # Per output (outputs × seeds), then per run.
    assert row.startswith(f"| nalu | mul | 2 | 0 | 0/{mul_outputs} = 0% [0%, ")
    assert "| 0/2 = 0% [0%, 66%] |" in row
    figures = re.findall(r"!\[[^]]*\]\((\w+)\.png\)", report)
    assert figures == REPORT_FIGURES
    # TensorBoard shows the same figures, byte for byte, and the same success table.
    events = load_events(tmp_path / "report_tensorboard")
    assert sorted(events.Tags()["images"]) == sorted(f"report/{name}" for name in figures)
    for name in figures:
        png = (tmp_path / f"{name}.png").read_bytes()
        assert png[:4] == b"\x89PNG"
        assert [image.encoded_image_string for image in events.Images(f"report/{name}")] == [png]
    table = next(block for block in report.split("\n\n") if block.startswith("| "))
    assert row in table.splitlines()
    (text,) = events.Tensors("report/table/text_summary")
    assert text.tensor_proto.string_val[0].decode() == table
    console = capsys.readouterr().out
    # Aligned columns that fit a terminal, not raw Markdown; report.md has every column.
    tables = console.split("Report:")[0]
    assert "|" not in tables
    assert max(len(line) for line in tables.splitlines()) <= 110
    assert re.search(r"^nac +all +2 +0 +\d+/\d+ = ", console, re.MULTILINE)
    header = next(line for line in tables.splitlines() if line.startswith("model "))
    shown = [column for column in SUCCESS_COLUMNS if column not in CONSOLE_HIDDEN]
    assert re.split(r"\s{2,}", header.strip()) == ["model", *shown]
    assert table.splitlines()[0] == "| " + " | ".join(["model", *SUCCESS_COLUMNS]) + " |"


def test_rates_count_the_runs_and_outputs_that_have_the_operation(tmp_path):
    # Seed 0 has 2 mul outputs (1 solved at its own best epoch) and 1 div output (solved);
    # seed 1 has 3 mul outputs, all solved, and no division.
    write_run(
        tmp_path / "a",
        "select",
        0,
        {
            "extrap/mse_mul": 1.0,
            "extrap/mse_div": 0.0,
            "extrap/solved_fraction_mul": 0.5,
            "extrap/solved_fraction_div": 1.0,
            "extrap/own_best_solved_fraction_mul": 0.5,
            "extrap/own_best_solved_fraction_div": 1.0,
            "output_count_mul": 2.0,
            "output_count_div": 1.0,
        },
    )
    write_run(
        tmp_path / "b",
        "select",
        1,
        {
            "extrap/mse_mul": 0.0,
            "extrap/solved_fraction_mul": 1.0,
            "extrap/own_best_solved_fraction_mul": 1.0,
            "output_count_mul": 3.0,
        },
    )
    rows = {row["operation"]: row for row in summary_rows(load_runs([tmp_path]))}
    assert (rows["div"]["runs"], rows["div"]["solved"]) == (1, 1)  # seed 1 has no division
    assert (rows["mul"]["runs"], rows["mul"]["solved"]) == (2, 1)
    assert (rows["mul"]["outputs"], rows["mul"]["outputs_solved"]) == (5, 4)
    # Wilson 95% for 4/5, by hand: (0.8 + z²/10 ± z·√(0.16/5 + z²/100)) / (1 + z²/5), z = 1.96
    assert rows["mul"]["output_success_low"] == pytest.approx(0.3755, abs=1e-4)


def test_an_unknown_group_by_label_is_one_clear_line(tmp_path, capsys):
    write_run(tmp_path / "a", "nac", 0, {"extrap/mse": 1.0})
    line = stops_with([str(tmp_path), "--group-by", "model,nosuchlabel"], capsys)
    assert line == (
        "error: --group-by model,nosuchlabel: no run has the field 'nosuchlabel'; "
        "choose a label or config field, e.g. model, seed"
    )


def test_a_rerun_report_replaces_its_files_and_tensorboard_events(tmp_path):
    write_run(tmp_path / "a", "nac", 0, {"extrap/mse": 1.0, "extrap/mse_add": 1.0})
    main([str(tmp_path)])
    write_run(tmp_path / "b", "nac", 1, {"extrap/mse": 2.0, "extrap/mse_add": 2.0})
    main([str(tmp_path)])
    # TensorBoard shows the second report alone: each figure and the table once, as written.
    assert len(list((tmp_path / "report_tensorboard").glob("events.out.tfevents.*"))) == 1
    events = load_events(tmp_path / "report_tensorboard")
    for tag in events.Tags()["images"]:
        png = (tmp_path / f"{tag.removeprefix('report/')}.png").read_bytes()
        assert [image.encoded_image_string for image in events.Images(tag)] == [png]
    report = (tmp_path / "report.md").read_text()
    table = next(block for block in report.split("\n\n") if block.startswith("| "))
    assert "| nac | add | 2 | 0 |" in table  # both runs
    (text,) = events.Tensors("report/table/text_summary")
    assert text.tensor_proto.string_val[0].decode() == table


def test_result_files_are_readable_by_others_under_umask_022(tmp_path):
    previous = os.umask(0o022)
    try:
        write_run(tmp_path / "a", "nac", 0, {"extrap/mse": 1.0, "extrap/mse_add": 1.0})
        main([str(tmp_path)])
    finally:
        os.umask(previous)
    for name in ("a/metrics.json", "report.md"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


def test_metrics_json_is_strict_json_even_when_a_metric_overflows(tmp_path):
    metrics = {"extrap/mse": math.inf, "interp/mse": 0.5}
    RunRecord("finished", {"model": "nmu"}, epochs=1, steps=4, metrics=metrics).write(tmp_path)

    def refuse(token: str) -> None:
        raise ValueError(f"{token} is not JSON")

    text = (tmp_path / "metrics.json").read_text()
    assert json.loads(text, parse_constant=refuse)["metrics"] == {
        "extrap/mse": None,
        "interp/mse": 0.5,
    }
    read = RunRecord.read(tmp_path).metrics
    assert math.isnan(read["extrap/mse"]) and read["interp/mse"] == 0.5


def test_a_swept_field_with_one_value_per_model_makes_no_column_of_its_own(tmp_path):
    # The benchmark's unit folders reported together: nalm=nau beside the NAU's runs.
    for name, model in [("a", "nau"), ("b", "nmu")]:
        write_run(tmp_path / name, model, 0, {"extrap/mse": 1.0})
        (tmp_path / name / ".hydra").mkdir()
        overrides = [f"nalm={model}", "seed=0"]
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    assert default_group_by(load_runs([tmp_path])) == ["model"]


def test_swept_values_group_as_hydra_reads_them_in_numeric_order(tmp_path):
    for name, lr in [("a", "1e-3"), ("b", "0.001"), ("c", "10"), ("d", "5")]:
        write_run(tmp_path / name, "nac", 0, {"extrap/mse": 1.0})
        (tmp_path / name / ".hydra").mkdir()
        overrides = [f"optimizer.lr={lr}", f"paths.log_dir=/tmp/{name}", "seed=0"]
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    runs = load_runs([tmp_path])
    assert default_group_by(runs) == ["model", "optimizer.lr"]  # not paths.*, not seed
    groups = group_runs(runs, default_group_by(runs))
    assert {key: len(members) for key, members in groups.items()} == {
        "nac / 0.001": 2,
        "nac / 5": 1,
        "nac / 10": 1,
    }
    assert list(groups) == ["nac / 0.001", "nac / 5", "nac / 10"]


@pytest.mark.parametrize(
    ("rates", "rows"),
    [
        # An Optuna search's sampled learning rates: rows named by 3 significant digits.
        (["0.004430375245218269", "0.0018662266976517971"], ["nac / 0.00187", "nac / 0.00443"]),
        # Rates alike in their first 3 digits keep every digit: two rows, not one row of two.
        (["0.0044303752", "0.0044312345"], ["nac / 0.0044303752", "nac / 0.0044312345"]),
    ],
)
def test_a_sampled_value_names_its_row_by_its_first_digits_unless_two_rows_would_merge(
    tmp_path, rates, rows
):
    for name, lr in zip("ab", rates, strict=True):
        write_run(tmp_path / name, "nac", 0, {"extrap/mse": 1.0})
        (tmp_path / name / ".hydra").mkdir()
        overrides = [f"optimizer.lr={lr}", "seed=0"]
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    runs = load_runs([tmp_path])
    groups = group_runs(runs, default_group_by(runs))
    assert list(groups) == rows
    assert [len(members) for members in groups.values()] == [1, 1]


def test_the_success_figure_is_titled_and_draws_each_rate_with_its_interval():
    rows = [
        {"group": "nac", "operation": op, "solved": solved, "runs": runs,
         "success_rate": solved / runs, "success_low": low, "success_high": high}
        for op, solved, runs, low, high in (("add", 2, 4, 0.2, 0.8), ("mul", 0, 9, 0.0, 0.3))
    ]  # fmt: skip
    figure = plot_success(rows)
    (axis,) = figure.axes  # no outputs judged one by one: the runs solved alone
    assert figure.get_suptitle() == "Success per operation, 95% Wilson intervals"
    assert axis.get_title() == "Runs solved (every output at the run's best epoch)"
    assert [bar.get_width() for bar in axis.patches] == [0.5, 0.0]
    # Each operation's interval: from the rate down to its low end and up to its high end.
    spans = [segment[:, 0].tolist() for line in axis.collections for segment in line.get_segments()]
    assert sorted(spans) == [[0.0, 0.3], [0.2, 0.8]]
    # Each rate's point in its bar's colour: a rate of 0, with no bar to see, still names it,
    # and so does its count, at the interval's end.
    points = [line for line in axis.lines if line.get_marker() == "o"]
    bars = [bar.get_facecolor() for bar in axis.patches]
    assert [to_rgba(point.get_markerfacecolor()) for point in points] == bars
    counts = [(text.get_text(), text.get_position()[0]) for text in axis.texts]
    assert counts == [("2/4", pytest.approx(0.81)), ("0/9", pytest.approx(0.31))]
    # Each operation in its own colour in every report: × is C2 even without − beside it.
    assert bars == [to_rgba("C0"), to_rgba("C2")]
    assert axis.get_xticklabels()[-1].get_text() == "100%"


def test_the_success_figure_draws_the_outputs_solved_beside_the_runs_solved():
    # A NAC whose 10 add outputs over 2 runs were judged one by one (7 solved), and an MLP
    # whose outputs share its weights (none judged apart), both with one run of 2 solved.
    def row(group, outputs, solved_outputs, interval):
        rate = solved_outputs / outputs if outputs else math.nan
        return {
            "group": group, "operation": "add", "runs": 2, "solved": 1, "success_rate": 0.5,
            "success_low": 0.1, "success_high": 0.9, "outputs": outputs,
            "outputs_solved": solved_outputs, "output_success_rate": rate,
            "output_success_low": interval[0], "output_success_high": interval[1],
        }  # fmt: skip

    figure = plot_success([row("nac", 10, 7, (0.4, 0.9)), row("mlp", 0, 0, (math.nan,) * 2)])
    outputs_axis, runs_axis = figure.axes
    assert outputs_axis.get_title() == "Outputs solved (each at its own best epoch)"
    assert runs_axis.get_title() == "Runs solved (every output at the run's best epoch)"
    assert [bar.get_width() for bar in outputs_axis.patches] == [0.7]
    assert [bar.get_width() for bar in runs_axis.patches] == [0.5, 0.5]
    spans = [s[:, 0].tolist() for line in outputs_axis.collections for s in line.get_segments()]
    assert spans == [pytest.approx([0.4, 0.9])]
    # The MLP's row says why it has no bar instead of reading as 0% solved.
    texts = {text.get_text(): text.get_position()[1] for text in outputs_axis.texts}
    assert texts == {"7/10": 0, "not defined": 1}
    assert [text.get_text() for text in runs_axis.texts] == ["1/2", "1/2"]
    # The groups are named once, on the left, for both panels.
    assert [label.get_text() for label in outputs_axis.get_yticklabels()] == ["nac", "mlp"]
    assert runs_axis.get_shared_y_axes().joined(runs_axis, outputs_axis)
    # Runs of one output each (the NALM task's): the two panels would be one twice.
    (axis,) = plot_success([row("nmu", 2, 1, (0.1, 0.9))]).axes
    assert axis.get_title() == "Runs solved (every output at the run's best epoch)"


def test_a_curve_that_ends_early_leaves_the_others_drawn_and_an_exact_zero_counts(monkeypatch):
    # Three runs of one group over 3 epochs of 10 steps: the second diverged after its first
    # validation, the others reach an extrapolation MSE of exactly 0.
    curves = {
        "a": {EXTRAP_MSE: {10: 4.0, 20: 0.5, 30: 0.0}},
        "b": {EXTRAP_MSE: {10: 2.0, 20: math.nan}},
        "c": {EXTRAP_MSE: {10: 1.0, 20: 0.1, 30: 0.0}},
    }
    monkeypatch.setattr("nalu.results.report.loss_curves", lambda run_dir: curves[run_dir.name])
    runs = [{"run_dir": name, "steps": 30, "epochs": 3} for name in curves]
    (axis,) = plot_curves({"nau": runs})["test_loss"].axes
    line, zero, legend_entry = axis.get_lines()
    assert line.get_label() == "nau (n=3)"
    assert list(line.get_xdata()) == [1, 2, 3]
    # Medians of (4, 2, 1), of (0.5, 0.1) and of (0, 0).
    assert list(line.get_ydata()) == pytest.approx([2.0, 0.3, 0.0])
    # On the log scale the median of 0 is a ▼ on the bottom edge in the group's colour.
    assert axis.get_yscale() == "log"
    assert zero.get_marker() == "v" and zero.get_color() == line.get_color()
    assert list(zero.get_xdata()) == [3] and list(zero.get_ydata()) == [axis.get_ylim()[0]]
    assert legend_entry.get_label() == "median exactly 0 (below the log scale)"
    assert axis.get_xlabel() == "epoch (= 10 optimizer steps)"


@pytest.mark.parametrize(
    ("runs", "band"),
    [
        # Three runs: numpy's 25th percentile would be 2.5, half-way between two runs.
        ([1.0, 4.0, 9.0], ([1.0], [9.0], "band: every run (n < 5)")),
        # Five: the middle half, 25–75% (the second and fourth run).
        ([1.0, 2.0, 4.0, 8.0, 9.0], ([2.0], [8.0], "band: middle half of the runs (25–75%)")),
    ],
)
def test_a_band_spans_every_run_of_a_few_and_the_middle_half_of_more(monkeypatch, runs, band):
    curves = {str(k): {EXTRAP_MSE: {10: value}} for k, value in enumerate(runs)}
    monkeypatch.setattr("nalu.results.report.loss_curves", lambda run_dir: curves[run_dir.name])
    members = [{"run_dir": name, "steps": 10, "epochs": 1} for name in curves]
    figure = plot_curves({"nau": members})["test_loss"]
    (axis,) = figure.axes
    filled, legend_patch = axis.collections
    low, high, label = band
    # fill_between's polygon: from the low end up to the high end at the one epoch.
    assert sorted({y for _, y in filled.get_paths()[0].vertices}) == [*low, *high]
    assert legend_patch.get_label() == label
    [legend] = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == [f"nau (n={len(runs)})", label]


def test_each_group_marks_the_median_epoch_at_which_the_tables_read_its_runs(monkeypatch):
    # Validation minima at steps 10, 20 (tied with 30: the first) and 30; 10 steps an epoch.
    curves = {
        "a": {INTERP_MSE: {10: 1.0, 20: 2.0, 30: 3.0}, EXTRAP_MSE: {10: 8.0, 20: 4.0, 30: 2.0}},
        "b": {INTERP_MSE: {10: 3.0, 20: 1.0, 30: 1.0}, EXTRAP_MSE: {10: 8.0, 20: 4.0, 30: 2.0}},
        "c": {INTERP_MSE: {10: 3.0, 20: 2.0, 30: 1.0}, EXTRAP_MSE: {10: 8.0, 20: 4.0, 30: 2.0}},
    }
    monkeypatch.setattr("nalu.results.report.loss_curves", lambda run_dir: curves[run_dir.name])
    runs = [{"run_dir": name, "steps": 30, "epochs": 3} for name in curves]
    figure = plot_curves({"nau": runs})["test_loss"]
    (axis,) = figure.axes
    [marker] = [line for line in axis.lines if line.get_marker() == "D" and len(line.get_xdata())]
    # The median of epochs 1, 2 and 3, on the group's median test loss there.
    assert (list(marker.get_xdata()), list(marker.get_ydata())) == ([2.0], [4.0])
    [legend] = figure.legends
    assert BEST_EPOCH_LABEL in [text.get_text() for text in legend.get_texts()]


@pytest.mark.slow
def test_the_marked_best_epoch_is_the_one_a_run_is_judged_at(tmp_path):
    train(compose_config([*TINY, "trainer.max_epochs=6"], tmp_path / "run"))
    curve = loss_curves(tmp_path / "run")
    best = best_validation_step(curve)
    validations = curve[INTERP_MSE]
    assert validations[best] == min(validations.values())
    # The run's final metrics were measured with the parameters of that validation.
    recorded = json.loads((tmp_path / "run" / "metrics.json").read_text())["metrics"]
    assert recorded[INTERP_MSE] == pytest.approx(validations[best], rel=1e-5)


def test_every_panel_of_a_figure_has_one_scale(monkeypatch):
    # The add outputs' test loss falls a thousandfold, the mul outputs' by a tenth: drawn on a
    # linear scale of their own, × would look as steep as +.
    curves = {"extrap/mse_add": {10: 1000.0, 20: 1.0}, "extrap/mse_mul": {10: 7.0e5, 20: 6.3e5}}
    monkeypatch.setattr("nalu.results.report.loss_curves", lambda run_dir: curves)
    runs = [{"run_dir": "a", "steps": 20, "epochs": 2}]
    figure = plot_curves({"nalu": runs})["test_loss_by_operation"]
    assert [axis.get_yscale() for axis in figure.axes] == ["log", "log"]


def test_curves_within_a_factor_of_10_are_drawn_on_a_linear_scale(monkeypatch):
    # Relative errors of 99.6 to 101.2 %: a log scale would tick them 9.96×10¹ ... 1.012×10².
    curves = {"a": {EXTRAP_MSE: {10: 99.6, 20: 101.2}}, "b": {EXTRAP_MSE: {10: 100.0, 20: 100.4}}}
    monkeypatch.setattr("nalu.results.report.loss_curves", lambda run_dir: curves[run_dir.name])
    runs = [{"run_dir": name, "steps": 20, "epochs": 2} for name in curves]
    (axis,) = plot_curves({"nalu": runs})["test_loss"].axes
    assert axis.get_yscale() == "linear"


@pytest.mark.parametrize("count", [12, 26])
def test_every_group_of_a_curve_figure_is_drawn_and_named_beside_the_curves(monkeypatch, count):
    monkeypatch.setattr("nalu.results.report.loss_curves", lambda run_dir: {INTERP_MSE: {10: 1.0}})
    groups = {f"group {k}": [{"run_dir": str(k), "steps": 10, "epochs": 1}] for k in range(count)}
    figure = plot_curves(groups)["validation_loss"]
    (axis,) = figure.axes
    lines = [line for line in axis.get_lines() if line.get_marker() != "D"]  # not best epochs
    assert [line.get_label() for line in lines] == [f"group {k} (n=1)" for k in range(count)]
    # Each its own look: 11 colours, then the same colours dashed, then dotted.
    looks = {(to_rgba(line.get_color()), line.get_linestyle()) for line in lines}
    assert len(looks) == count
    # One legend, to the right of the curves, not over them.
    [legend] = figure.legends
    assert axis.get_legend() is None
    explained = ["band: every run (n < 5)", BEST_EPOCH_LABEL]
    groups_then_marks = [*(line.get_label() for line in lines), *explained]
    assert [text.get_text() for text in legend.get_texts()] == groups_then_marks
    renderer = figure.canvas.get_renderer()
    figure.draw(renderer)
    assert legend.get_window_extent(renderer).x0 >= axis.get_window_extent(renderer).x1


def test_the_success_figure_of_many_groups_lists_them_down_the_page():
    groups = [f"unit {k}" for k in range(18)]
    operations = ["all", "add", "sub", "mul", "div"]
    rows = [
        {"group": group, "operation": op, "solved": 1, "runs": 2, "success_rate": 0.5,
         "success_low": 0.2, "success_high": 0.8}
        for group in groups for op in operations
    ]  # fmt: skip
    figure = plot_success(rows)
    (axis,) = figure.axes
    # The first group on top, as in the table, at a width that reads on a screen.
    assert [label.get_text() for label in axis.get_yticklabels()] == groups
    assert axis.yaxis_inverted()
    assert figure.get_figwidth() == 9
    [legend] = figure.legends
    assert [text.get_text() for text in legend.get_texts()] == operations
    # Within a group its operations top-down in the table's order.
    first_group = [bar.get_y() for bar in axis.patches[::18]]
    assert first_group == sorted(first_group)


def test_a_deletion_and_the_checkpoint_resumed_from_make_no_column(tmp_path):
    for name, lr, more in [("a", "0.1", ["~lr_schedule"]), ("b", "0.01", [])]:
        write_run(tmp_path / name, "nau", 0, {"extrap/mse": 1.0})
        (tmp_path / name / ".hydra").mkdir()
        overrides = [f"optimizer.lr={lr}", f"ckpt_path=/runs/{name}/last.ckpt", *more]
        (tmp_path / name / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    assert default_group_by(load_runs([tmp_path])) == ["model", "optimizer.lr"]


def test_no_curve_figures_title_runs_under_its_legend(monkeypatch):
    # The legend stands beside the panels, level with their titles: a title wider than its
    # panel had its end hidden.
    curves = {
        tag: {10: 2.0, 20: 1.0}
        for tag in (TRAIN_LOSS, INTERP_MSE, EXTRAP_MSE, EXTRAP_RELATIVE_ERROR, "extrap/mse_add")
    }
    monkeypatch.setattr("nalu.results.report.loss_curves", lambda run_dir: curves)
    runs = {name: [{"run_dir": name, "steps": 20, "epochs": 2}] for name in ("nac", "nalu")}
    for name, figure in plot_curves(runs).items():
        figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        (legend,) = figure.legends
        for axis in figure.axes:
            title = axis.title.get_window_extent(renderer)
            assert not title.overlaps(legend.get_window_extent(renderer)), name


def test_groups_with_long_names_leave_every_figure_readable(tmp_path, monkeypatch):
    # A report over runs that differ in many fields names each group by all of them: hundreds
    # of characters, which collapsed the panels to nothing and ran off the figure's edge.
    names = [f"nau_{k} / " + " / ".join(f"field{i}={k}" for i in range(20)) for k in range(12)]
    for k, name in enumerate(names):
        solved_run(tmp_path / str(k), name, k, solved=k % 2 == 0)
    rows = summary_rows(load_runs([tmp_path]), ["model"])
    monkeypatch.setattr(
        "nalu.results.report.loss_curves", lambda run_dir: {TRAIN_LOSS: {10: 2.0, 20: 1.0}}
    )
    groups = {name: [{"run_dir": name, "steps": 20, "epochs": 2}] for name in names}
    figures = {"success": plot_success(rows), "training_loss": plot_curves(groups)["training_loss"]}
    for name, figure in figures.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # "constrained_layout not applied"
            figure.canvas.draw()
        renderer = figure.canvas.get_renderer()
        page = figure.bbox
        # The legend, and in the success figure the groups' names beside their bars.
        names = figure.axes[0].get_yticklabels() if name == "success" else []
        texts = [*figure.legends, *names]
        for text in texts:
            box = text.get_window_extent(renderer)
            assert page.x0 <= box.x0 and box.x1 <= page.x1, name
            assert page.y0 <= box.y0 and box.y1 <= page.y1, name


def test_a_config_group_reads_as_the_config_chosen_whoever_chose_it(tmp_path):
    # The defaults chose adam, the command line sgd: rows say so, not adam's whole dict.
    for name, optimizer in (("a", "adam"), ("b", "sgd")):
        solved_run(tmp_path / name, "nac", 0, solved=True)
        write_config(tmp_path / name, in_features=6)
        hydra = {"hydra": {"runtime": {"choices": {"optimizer": optimizer, "model": "nac"}}}}
        (tmp_path / name / ".hydra" / "hydra.yaml").write_text(yaml.safe_dump(hydra))
        config = {"optimizer": {"_target_": f"torch.optim.{optimizer}", "lr": 0.001}}
        (tmp_path / name / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    runs = load_runs([tmp_path])
    assert list(group_runs(runs, ["model", "optimizer"])) == ["nac / adam", "nac / sgd"]
