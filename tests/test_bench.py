"""`make bench`: the ratios it measures and where it writes them (not how fast they are)."""

import json

from nalu import bench


def test_bench_writes_every_figure_and_prints_the_table(tmp_path, capsys):
    output = tmp_path / "bench.json"
    bench.main(["--sizes", "1", "3", "--epochs", "1", "--output", str(output)])
    figures = json.loads(output.read_text())
    assert figures["single_vs_plain"] > 0
    assert figures["single_with_validation_vs_plain"] > 0
    assert set(figures["population_speedup"]) == {"1", "3"}
    assert all(speedup > 0 for speedup in figures["population_speedup"].values())
    assert 0 < figures["peak_fraction"] < 1
    printed = capsys.readouterr().out
    assert "(b) population S=3" in printed
    assert str(output) in printed
