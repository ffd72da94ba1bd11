"""``python -m nalu.bench``: the project's training speed as ratios measured in one process.

(a) ``single_vs_plain``: the training of a single run as ``make train`` runs it (Lightning,
    TensorBoard, checkpoints) over the same training written as a plain PyTorch loop (same
    network, optimizer, batches and number of steps; no logging), both without validation;
    ``single_with_validation_vs_plain``: the same with the article's validation every epoch
    (1000 + 1000 samples, metrics, a checkpoint), which the plain loop does not do.
(b) ``population_speedup``: S sequential plain runs (one run's time times S) over one
    population of S members, per optimizer step.
(c) ``peak_fraction``: the population's matrix-multiply FLOP/s (counted by torch's
    ``FlopCounterMode`` over one step, forward and backward) over the machine's peak, measured by a
    large batched matmul here and now. Elementwise work is not counted, so this is a lower bound.

Writes ``outputs/bench/bench.json``; every figure is a ratio of times measured in this process.
"""

import argparse
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from torch.utils.flop_counter import FlopCounterMode

from nalu.data.datamodule import epoch_order
from nalu.results import write_json_atomic
from nalu.train import CONFIG_DIR, build_population, ignore_known_warnings, train

DEFAULT_SIZES = (1, 10, 100, 1000)


class FitTimer(L.Callback):
    """Wall time of ``trainer.fit``'s training, from its first to its last batch."""

    elapsed: float = float("nan")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _synchronize(pl_module.device.type)
        FitTimer.elapsed = time.perf_counter() - self._start


def article_config(output_dir: Path, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=article", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def plain_loop(cfg: DictConfig, epochs: int, device: str = "cpu") -> tuple[float, int]:
    """The single run as hand-written PyTorch: seconds and optimizer steps for ``epochs``."""
    L.seed_everything(cfg.seed, verbose=False)
    data = instantiate(cfg.data)
    data.setup("fit")
    inputs = data.datasets["train"].inputs.to(device)
    targets = data.datasets["train"].targets.to(device)
    network = instantiate(cfg.model).to(device)
    optimizer = instantiate(cfg.optimizer)(network.parameters())
    steps = 0
    start = time.perf_counter()
    for epoch in range(epochs):
        order = epoch_order(len(inputs), cfg.data.shuffle_seed, epoch).to(device)
        for batch in order.split(cfg.data.batch_size):
            loss = F.mse_loss(network(inputs[batch]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
    _synchronize(device)
    return time.perf_counter() - start, steps


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def project_single_run(cfg: DictConfig) -> float:
    """Seconds of ``trainer.fit`` in ``nalu.train.train`` (the run ``make train`` starts)."""
    with open_dict(cfg):
        cfg.callbacks.fit_timer = {"_target_": f"{__name__}.FitTimer"}
        cfg.trainer.enable_progress_bar = False
    train(cfg)
    return FitTimer.elapsed


def population_step_time(cfg: DictConfig, epochs: int) -> tuple[float, float]:
    """Seconds per optimizer step of a population's ``trainer.fit`` (validation as ``cfg``
    says), and the matrix-multiply FLOPs of one step."""
    _, data, module = build_population(cfg)
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator="auto",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        check_val_every_n_epoch=cfg.trainer.check_val_every_n_epoch,
        callbacks=[FitTimer()],
    )
    trainer.fit(module, datamodule=data)
    seconds = FitTimer.elapsed / trainer.global_step
    x, y = data.train_batch(
        epoch_order(data.sizes["train"], 0, 0)[: data.batch_size].expand(data.population, -1)
    )
    with FlopCounterMode(display=False) as counter:
        prediction = module(x)
        F.mse_loss(prediction, y, reduction="sum").backward()
    return seconds, counter.get_total_flops()


def matmul_peak(device: str, repeats: int = 5) -> float:
    """FLOP/s of a large batched float32 matmul on ``device``, the best of ``repeats``."""
    a = torch.randn(16, 1024, 1024, device=device)
    b = torch.randn(16, 1024, 1024, device=device)
    torch.bmm(a, b)
    best = min(_timed(lambda: torch.bmm(a, b), device) for _ in range(repeats))
    return 2 * 16 * 1024**3 / best


def _timed(function: Any, device: str) -> float:
    _synchronize(device)
    start = time.perf_counter()
    function()
    _synchronize(device)
    return time.perf_counter() - start


def run(sizes: list[int], epochs: int, output: Path) -> dict[str, Any]:
    """Measure (a) on the CPU, as ``make train`` runs, and (b), (c) on the GPU if there is one
    (the populations' accelerator and the plain loop's device alike)."""
    ignore_known_warnings()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    work = Path(tempfile.mkdtemp(prefix="nalu-bench-"))
    no_validation = f"trainer.check_val_every_n_epoch={epochs + 1}"
    single_cfg = article_config(work / "single", [f"trainer.max_epochs={epochs}", no_validation])
    plain_loop(single_cfg, 1)  # warm-up: first-call allocations and kernel selection
    cpu_plain_seconds, plain_steps = plain_loop(single_cfg, epochs)
    project_seconds = project_single_run(single_cfg)
    validated_cfg = article_config(work / "validated", [f"trainer.max_epochs={epochs}"])
    validated_seconds = project_single_run(validated_cfg)
    plain_seconds = cpu_plain_seconds
    if device != "cpu":
        plain_loop(single_cfg, 1, device)
        plain_seconds, plain_steps = plain_loop(single_cfg, epochs, device)
    plain_step = plain_seconds / plain_steps
    peak = matmul_peak(device)
    gpu = f", {torch.cuda.get_device_name()}" if device == "cuda" else ""
    figures: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()}"
        f" threads{gpu}, torch {torch.__version__}",
        "device": device,
        "plain_step_ms": 1e3 * plain_step,
        "single_vs_plain": project_seconds / cpu_plain_seconds,
        "single_with_validation_vs_plain": validated_seconds / cpu_plain_seconds,
        "population_speedup": {},
        "population_step_ms": {},
        "population_flops_per_s": {},
        "matmul_peak_flops_per_s": peak,
    }
    for size in sizes:
        # Fewer epochs for large populations: a step's time is steady after the first epoch.
        population_epochs = max(2, epochs * 10 // max(size, 10))
        cfg = article_config(work / f"population{size}", [f"population={size}", no_validation])
        seconds, flops = population_step_time(cfg, population_epochs)
        figures["population_step_ms"][size] = 1e3 * seconds
        figures["population_speedup"][size] = size * plain_step / seconds
        figures["population_flops_per_s"][size] = flops / seconds
        print(f"  population {size:>6}: {1e3 * seconds:8.2f} ms/step", file=sys.stderr)
    largest = max(sizes)
    figures["peak_fraction"] = figures["population_flops_per_s"][largest] / peak
    figures["peak_fraction_population"] = largest
    figures["max_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    write_json_atomic(output, figures)
    return figures


def table(figures: dict[str, Any]) -> str:
    rows = [
        f"machine: {figures['machine']}; plain loop on {figures['device']}:"
        f" {figures['plain_step_ms']:.2f} ms/step",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| (a) single run / plain PyTorch loop | {figures['single_vs_plain']:.2f} |",
        "| (a) the same, validated and checkpointed every epoch / plain loop | "
        f"{figures['single_with_validation_vs_plain']:.2f} |",
    ]
    for size, speedup in figures["population_speedup"].items():
        step = figures["population_step_ms"][size]
        rows.append(
            f"| (b) population S={size}: speedup over {size} plain runs ({step:.1f} ms/step)"
            f" | {speedup:.1f}x |"
        )
    rows.append(
        f"| (c) population S={figures['peak_fraction_population']}: fraction of matmul peak"
        f" ({figures['matmul_peak_flops_per_s'] / 1e9:.0f} GFLOP/s) | "
        f"{figures['peak_fraction']:.1%} |"
    )
    rows.append(f"| peak memory of the process (GiB) | {figures['max_rss_gib']:.2f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--epochs", type=int, default=10, help="epochs of the single runs")
    parser.add_argument("--output", type=Path, default=Path("outputs/bench/bench.json"))
    args = parser.parse_args(argv)
    figures = run(args.sizes, args.epochs, args.output)
    print(table(figures))
    print(f"\n{args.output}")


if __name__ == "__main__":
    main()
