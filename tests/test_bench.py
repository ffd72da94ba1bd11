"""`make bench`: the ratios it measures and where it writes them (not how fast they are)."""

import json

import pytest

from nalu.cli import bench


def test_bench_writes_every_ratio_with_its_spread_and_prints_the_table(tmp_path, capsys):
    output = tmp_path / "bench.json"
    quick = ["--static-nau-nmu-population", "2", "--solve-population", "3"]
    quick += ["--overrides", "data.train_size=512", "compile=false"]
    arguments = ["--sizes", "1", "3", "--epochs", "1", "--repeats", "2", *quick]
    bench.main([*arguments, "--output", str(output)])
    figures = json.loads(output.read_text())
    assert figures["repeats"] == 2
    assert set(figures["population_speedup"]) == {"1", "3"}
    handwritten = figures["versus_handwritten"]
    assert set(handwritten) == {"static_nau_nmu S=2", "solve S=3"}
    assert all(entry["compile"] is False for entry in handwritten.values())
    ratios = {
        "single_vs_plain": figures["single_vs_plain"],
        "single_with_validation_vs_plain": figures["single_with_validation_vs_plain"],
        "peak_fraction": figures["peak_fraction"],
        **{f"population S={s}": v for s, v in figures["population_speedup"].items()},
        **{name: entry["eager"] for name, entry in handwritten.items()},
    }
    for name, ratio in ratios.items():
        assert set(ratio) == {"median", "min", "max"}, name
        assert 0 < ratio["min"] <= ratio["median"] <= ratio["max"], name
    assert figures["peak_fraction"]["max"] < 1
    printed = capsys.readouterr().out
    assert "median (min–max of 2 repeats)" in printed
    single = figures["single_vs_plain"]
    assert f"{single['median']:.2f} ({single['min']:.2f}–{single['max']:.2f})" in printed
    speedup = figures["population_speedup"]["3"]
    assert f"{speedup['median']:.1f}x ({speedup['min']:.1f}–{speedup['max']:.1f})" in printed
    assert "(b) population S=3" in printed
    solve = handwritten["solve S=3"]["eager"]
    assert "(d) solve S=3 (eager, " in printed
    assert f"{solve['median']:.2f} ({solve['min']:.2f}–{solve['max']:.2f})" in printed
    assert str(output) in printed


def test_bench_refuses_fewer_than_one_repeat(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--repeats", "0"])
    assert exit_info.value.code == 2
    assert "--repeats: must be a positive integer" in capsys.readouterr().err
