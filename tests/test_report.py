import json

import pytest

from nalu.report import load_runs, main, median_table


def write_run(folder, model, seed, metrics):
    folder.mkdir(parents=True)
    payload = {"labels": {"model": model, "seed": seed}, "metrics": metrics}
    (folder / "metrics.json").write_text(json.dumps(payload))


def test_table_gives_the_median_over_seeds_per_model(tmp_path):
    for seed, mse in enumerate([1.0, 5.0, 3.0]):
        write_run(tmp_path / f"nac{seed}", "nac", seed, {"extrap/mse": mse, "extrap/mse_add": mse})
    write_run(tmp_path / "mlp0", "mlp", 0, {"extrap/mse": 7.0})
    table = median_table(load_runs([tmp_path]))
    lines = table.splitlines()
    assert (
        lines[0]
        == "| model | runs | diverged | train/loss | interp/mse | extrap/mse | extrap/mse_add |"
    )
    assert "| mlp | 1 | 0 | – | – | 7 | – |" in lines
    assert "| nac | 3 | 0 | – | – | 3 | 3 |" in lines


def test_no_runs_is_one_clear_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main([str(tmp_path)])
    assert stop.value.code == f"error: no metrics.json under {tmp_path}"
