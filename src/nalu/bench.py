"""``python -m nalu.bench``: the project's training speed as ratios measured in one process.

(a) ``single_vs_plain``: the training of a single run as ``make train`` runs it (Lightning,
    TensorBoard, checkpoints) over the same training written as a plain PyTorch loop (same
    network, optimizer, batches and number of steps; no logging), both without validation;
    ``single_with_validation_vs_plain``: the same with the article's validation every epoch
    (1000 + 1000 samples, metrics, a checkpoint), which the plain loop does not do.
(b) ``population_speedup``: S sequential plain runs (one run's time times S) over one
    population of S members (``nalu.train.build_run`` with ``population=S``), per optimizer step.
(c) ``peak_fraction``: the largest population's matrix-multiply FLOP/s (counted by torch's
    ``FlopCounterMode`` over one step, forward and backward) over the machine's peak, measured by a
    large batched matmul here and now (the best of 5, so its spread is the population's).
    Elementwise work is not counted, so this is a lower bound.

Every ratio is the median of ``--repeats`` (default 5) repeats, with their min and max; a repeat
pairs one plain loop with one project measurement, taken one after the other (plain, project,
plain, project, ...), so that the machine's drift reaches both sides of a pair alike. The first
pair of each ratio is a warm-up and is not counted. Defaults: ``--epochs 10`` for the single runs
and the plain loops, max(2, 10 · epochs / max(S, 10)) epochs for a population of S (a step's
time is steady after the first epoch); sizes 1, 10, 100 and 1000. A few minutes on two CPU
cores, about one of them building the 1000 members (once; every repeat refits them).

Writes ``outputs/bench/bench.json``; every figure is a ratio of times measured in this process.
"""

import argparse
import itertools
import platform
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict
from torch.utils.flop_counter import FlopCounterMode

from nalu.cli import CONFIG_DIR, ignore_known_warnings
from nalu.data.datamodule import epoch_order
from nalu.record import write_json_atomic
from nalu.train import build_run, train

DEFAULT_SIZES = (1, 10, 100, 1000)
DEFAULT_REPEATS = 5


class FitTimer(L.Callback):
    """Seconds per optimizer step of ``trainer.fit``'s training, from its first to its last batch.

    A class attribute: ``nalu.train.train`` instantiates the callback from the config, out of
    the caller's reach."""

    step_seconds: float = float("nan")

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _synchronize(pl_module.device.type)
        FitTimer.step_seconds = (time.perf_counter() - self._start) / trainer.global_step


def article_config(output_dir: Path, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=article", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def plain_loop(cfg: DictConfig, epochs: int, device: str = "cpu") -> float:
    """The single run as hand-written PyTorch: seconds per optimizer step over ``epochs``."""
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
    return (time.perf_counter() - start) / steps


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def project_single_run(cfg: DictConfig) -> float:
    """Seconds per optimizer step of ``trainer.fit`` in ``nalu.train.train`` (the run
    ``make train`` starts)."""
    with open_dict(cfg):
        cfg.callbacks.fit_timer = {"_target_": f"{__name__}.FitTimer"}
        cfg.trainer.enable_progress_bar = False
    train(cfg)
    return FitTimer.step_seconds


class Population:
    """The population that ``nalu.train.build_run`` builds from ``cfg``, built once (a thousand
    members take a minute) and fitted for ``epochs`` as often as it is timed."""

    def __init__(self, cfg: DictConfig, epochs: int) -> None:
        _, _, self.datamodule, self.module = build_run(cfg)
        self.epochs = epochs
        self.check_val_every_n_epoch = cfg.trainer.check_val_every_n_epoch
        # Every fit starts from the members' initialisation: the repeats time the same steps,
        # and no member trains long enough to diverge.
        self.initial = {name: t.clone() for name, t in self.module.state_dict().items()}

    def step_seconds(self) -> float:
        """Seconds per optimizer step of a ``trainer.fit`` (validation as the config says)."""
        self.module.load_state_dict(self.initial)
        trainer = L.Trainer(
            max_epochs=self.epochs,
            accelerator="auto",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            check_val_every_n_epoch=self.check_val_every_n_epoch,
            callbacks=[FitTimer()],
        )
        trainer.fit(self.module, datamodule=self.datamodule)
        return FitTimer.step_seconds

    def step_flops(self, device: str) -> int:
        """Matrix-multiply FLOPs of one optimizer step: the forward and backward of one batch."""
        self.datamodule.setup("fit")
        x, y = next(iter(self.datamodule.train_dataloader()))
        # Lightning leaves a fitted module on the CPU; count where it trained.
        module = self.module.to(device)
        with FlopCounterMode(display=False) as counter:
            F.mse_loss(module(x.to(device)), y.to(device), reduction="sum").backward()
        return counter.get_total_flops()


def interleaved(
    plain: Callable[[], float], project: Callable[[], float], repeats: int
) -> list[tuple[float, float]]:
    """``repeats`` pairs of (plain, project) times, measured alternately after one uncounted
    warm-up pair (first-call allocations, kernel selection, Lightning's first imports)."""
    return [(plain(), project()) for _ in range(repeats + 1)][1:]


def spread(ratios: list[float]) -> dict[str, float]:
    """The median of the repeats' ratios and their range."""
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)}


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


def measure_population(
    cfg: DictConfig, epochs: int, plain: Callable[[], float], repeats: int, device: str
) -> tuple[list[tuple[float, float]], int]:
    """(plain, population) seconds per step of each repeat, and the FLOPs of one population
    step. The population is freed on return, before the next (larger) one is built."""
    population = Population(cfg, epochs)
    pairs = interleaved(plain, population.step_seconds, repeats)
    return pairs, population.step_flops(device)


def run(sizes: list[int], epochs: int, repeats: int, output: Path) -> dict[str, Any]:
    """Measure (a) on the CPU, as ``make train`` runs, and (b), (c) on the GPU if there is one
    (the populations' accelerator and the plain loop's device alike)."""
    ignore_known_warnings()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = f", {torch.cuda.get_device_name()}" if device == "cuda" else ""
    figures: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()}"
        f" threads{gpu}, torch {torch.__version__}",
        "device": device,
        "repeats": repeats,
    }
    no_validation = f"trainer.check_val_every_n_epoch={epochs + 1}"
    with tempfile.TemporaryDirectory(prefix="nalu-bench-") as work:
        plain_cfg = article_config(Path(work) / "plain", [f"trainer.max_epochs={epochs}"])
        # Each single run writes its checkpoints and TensorBoard run to a folder of its own.
        runs = itertools.count()

        def single_run(*overrides: str) -> Callable[[], float]:
            return lambda: project_single_run(
                article_config(
                    Path(work) / f"single{next(runs)}", [f"trainer.max_epochs={epochs}", *overrides]
                )
            )

        def cpu_plain() -> float:
            return plain_loop(plain_cfg, epochs)

        for name, project in (
            ("single_vs_plain", single_run(no_validation)),
            ("single_with_validation_vs_plain", single_run()),
        ):
            pairs = interleaved(cpu_plain, project, repeats)
            figures[name] = spread([single / plain for plain, single in pairs])

        def device_plain() -> float:
            return plain_loop(plain_cfg, epochs, device)

        plain_steps: list[float] = []
        population_steps: dict[int, list[float]] = {}
        flops: dict[int, int] = {}
        speedups: dict[int, dict[str, float]] = {}
        for size in sizes:
            # Fewer epochs for large populations: a step's time is steady after the first epoch.
            population_epochs = max(2, epochs * 10 // max(size, 10))
            cfg = article_config(
                Path(work) / f"population{size}",
                [f"population={size}", f"trainer.check_val_every_n_epoch={population_epochs + 1}"],
            )
            pairs, flops[size] = measure_population(
                cfg, population_epochs, device_plain, repeats, device
            )
            plain_steps += [plain for plain, _ in pairs]
            population_steps[size] = [step for _, step in pairs]
            median = statistics.median(population_steps[size])
            print(f"  population {size:>6}: {1e3 * median:8.2f} ms/step", file=sys.stderr)
            speedups[size] = spread([size * plain / step for plain, step in pairs])
    peak = matmul_peak(device)
    largest = max(sizes)
    figures |= {
        "plain_step_ms": 1e3 * statistics.median(plain_steps),
        "population_speedup": speedups,
        "population_step_ms": {s: 1e3 * statistics.median(t) for s, t in population_steps.items()},
        "population_flops_per_s": {
            s: flops[s] / statistics.median(t) for s, t in population_steps.items()
        },
        "matmul_peak_flops_per_s": peak,
        "peak_fraction": spread(
            [flops[largest] / step / peak for step in population_steps[largest]]
        ),
        "peak_fraction_population": largest,
        "max_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    write_json_atomic(output, figures)
    return figures


def _cell(figure: dict[str, float], spec: str, suffix: str = "") -> str:
    """``2.04 (1.95–2.21)``: the median, then the range of the repeats."""
    low, high = format(figure["min"], spec), format(figure["max"], spec)
    return f"{figure['median']:{spec}}{suffix} ({low}–{high})"


def table(figures: dict[str, Any]) -> str:
    rows = [
        f"machine: {figures['machine']}; plain loop on {figures['device']}:"
        f" {figures['plain_step_ms']:.2f} ms/step",
        "",
        f"| measure | median (min–max of {figures['repeats']} repeats) |",
        "|---|---:|",
        f"| (a) single run / plain PyTorch loop | {_cell(figures['single_vs_plain'], '.2f')} |",
        "| (a) the same, validated and checkpointed every epoch / plain loop | "
        f"{_cell(figures['single_with_validation_vs_plain'], '.2f')} |",
    ]
    for size, speedup in figures["population_speedup"].items():
        step = figures["population_step_ms"][size]
        rows.append(
            f"| (b) population S={size}: speedup over {size} plain runs ({step:.1f} ms/step)"
            f" | {_cell(speedup, '.1f', 'x')} |"
        )
    rows.append(
        f"| (c) population S={figures['peak_fraction_population']}: fraction of matmul peak"
        f" ({figures['matmul_peak_flops_per_s'] / 1e9:.0f} GFLOP/s) | "
        f"{_cell(figures['peak_fraction'], '.1%')} |"
    )
    rows.append(f"| peak memory of the process (GiB) | {figures['max_rss_gib']:.2f} |")
    return "\n".join(rows)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=_positive, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument("--epochs", type=_positive, default=10, help="epochs of the single runs")
    parser.add_argument(
        "--repeats",
        type=_positive,
        default=DEFAULT_REPEATS,
        help="measurements of each ratio, after a warm-up; the median and range are reported",
    )
    parser.add_argument("--output", type=Path, default=Path("outputs/bench/bench.json"))
    args = parser.parse_args(argv)
    figures = run(args.sizes, args.epochs, args.repeats, args.output)
    print(table(figures))
    print(f"\n{args.output}")


if __name__ == "__main__":
    main()
