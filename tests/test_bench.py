"""`make bench`: the ratios it measures and where it writes them (not how fast they are)."""

import json

import pytest
import torch
from conftest import compose_config

from nalu.cli import bench
from nalu.cli.common import EXIT_CONFIG_ERROR
from nalu.cli.train import build_run, train
from nalu.training import handwritten


@pytest.mark.slow
def test_bench_writes_every_ratio_with_its_spread_and_prints_the_table(tmp_path, capsys):
    output = tmp_path / "bench.json"
    quick = ["--static-nau-nmu-population", "2", "--solve-population", "3"]
    quick += ["--overrides", "data.train_size=512", "compile=false"]
    arguments = ["--sizes", "1", "3", "--compiled-sizes", "3", "--epochs", "1", "--repeats", "2"]
    arguments += quick
    bench.main([*arguments, "--output", str(output)])
    figures = json.loads(output.read_text())
    assert figures["repeats"] == 2
    populations = figures["populations"]
    assert {mode: set(sizes) for mode, sizes in populations.items()} == {
        "eager": {"1", "3"},
        "compiled": {"3"},
    }
    handwritten = figures["versus_handwritten"]
    assert set(handwritten) == {"static_nau_nmu S=2", "solve S=3"}
    assert all(entry["compile"] is False for entry in handwritten.values())
    ratios = {
        "single_vs_plain": figures["single_vs_plain"],
        "single_with_validation_vs_plain": figures["single_with_validation_vs_plain"],
        "peak_fraction": figures["peak_fraction"],
        **{
            f"{mode} S={size} {measure}": entry[measure]
            for mode, sizes in populations.items()
            for size, entry in sizes.items()
            for measure in ("speedup", "handwritten_speedup")
        },
        **{name: entry["eager"] for name, entry in handwritten.items()},
    }
    for name, ratio in ratios.items():
        assert set(ratio) == {"median", "min", "max"}, name
        assert 0 < ratio["min"] <= ratio["median"] <= ratio["max"], name
    printed = capsys.readouterr().out
    assert "median (min–max of 2 repeats)" in printed
    single = figures["single_vs_plain"]
    assert f"{single['median']:.2f} ({single['min']:.2f}–{single['max']:.2f})" in printed
    for mode in ("eager", "compiled"):
        entry = populations[mode]["3"]
        speedup = entry["speedup"]
        assert (
            f"| (b) population S=3, {mode} ({entry['step_ms']:.1f} ms/step): speedup over 3 plain"
            f" runs | {speedup['median']:.1f}x ({speedup['min']:.1f}–{speedup['max']:.1f}) |"
        ) in printed
        # Its own peak, counted afresh: above the torch process it runs in, within the
        # whole run's peak.
        assert 0.2 < entry["peak_gib"] <= figures["max_rss_gib"]
        assert (
            f"| peak memory of the population S=3, {mode}: its build and first fit (GiB)"
            f" | {entry['peak_gib']:.2f} |"
        ) in printed
    assert f"| peak memory of the whole process (GiB) | {figures['max_rss_gib']:.2f} |" in printed
    solve = handwritten["solve S=3"]["eager"]
    assert "(d) solve S=3 (eager, " in printed
    assert f"{solve['median']:.2f} ({solve['min']:.2f}–{solve['max']:.2f})" in printed
    assert str(output) in printed


def test_bench_refuses_fewer_than_one_repeat(capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--repeats", "0"])
    assert exit_info.value.code == EXIT_CONFIG_ERROR
    assert capsys.readouterr().err.strip() == (
        "error: argument --repeats: must be a positive integer, not 0 (see nalu-bench --help)"
    )


def test_bench_refuses_a_bad_override_before_measuring_anything(tmp_path, capsys):
    output = tmp_path / "bench.json"
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--overrides", "data.train_size=0", "--output", str(output)])
    assert exit_info.value.code == EXIT_CONFIG_ERROR
    printed = capsys.readouterr()
    assert printed.err.strip() == (
        "error: --overrides: data.train_size=0: must be a positive integer (see nalu-bench --help)"
    )
    assert printed.out == "" and not output.exists()


NALU = ["gate_weight", "add_nac.weight_hat", "add_nac.gate_hat", "mul_nac.weight_hat"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("experiment", "build", "parameters"),
    [
        ("article", handwritten.article_population, [*NALU, "mul_nac.gate_hat"]),
        ("static_nau_nmu", handwritten.static_population, ["0.weight", "1.weight"]),
        (
            "solve",
            handwritten.solve_population,
            ["heads.0.weight", "heads.1.weight", "heads.2.nmu.weight"],
        ),
    ],
)
def test_the_handwritten_loop_takes_the_projects_steps(experiment, build, parameters, tmp_path):
    # The ratios against the hand-written loops compare like with like only if they train what
    # the project trains: from the project's initial weights, the same batches, objective (and
    # for the NAU/NMU recipes λ's ramp, the learning rate's decay and the clamps) give the
    # project's weights after 2 epochs of 4 steps. (One round: the project's rounds restart
    # what is unsettled, which the loop leaves out.)
    train_size = 128 if experiment == "article" else 512  # 4 batches of 32 or 128
    overrides = [f"experiment={experiment}", "population=2", "rounds=1", "compile=false"]
    overrides += [f"data.train_size={train_size}", "trainer.max_epochs=2"]
    overrides += ["data.interp_size=256", "data.extrap_size=256"]
    cfg = compose_config(overrides, tmp_path)
    *_, module = build_run(cfg)
    initial = dict(module.network.named_parameters())
    loop = build(cfg, 2)
    assert loop.steps_per_epoch == 4
    with torch.no_grad():
        for weight, name in zip(loop.weights, parameters, strict=True):
            weight.copy_(initial[name])
    for epoch in range(2):
        for index in range(4):
            loop.step(epoch, index)
    train(cfg)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 8
    for weight, name in zip(loop.weights, parameters, strict=True):
        trained = checkpoint["state_dict"][f"network.{name}"]
        assert not torch.allclose(trained, initial[name]), name  # the weights moved
        # Equal to rounding: the weights move by 1e-2, and λ at half its value moves them 4e-6.
        torch.testing.assert_close(weight.detach(), trained, rtol=0, atol=1e-6, msg=name)
