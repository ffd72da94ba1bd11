"""``python -m nalu.bench``: the project's training speed as ratios measured in one process.

(a) ``single_vs_plain``: the training of a single run as ``make train`` runs it (Lightning,
    TensorBoard, checkpoints) over the same training written as a plain PyTorch loop (same
    network, optimizer, batches and number of steps; no logging), both without validation;
    ``single_with_validation_vs_plain``: the same with the article's validation every epoch
    (1000 + 1000 samples, metrics, a checkpoint), which the plain loop does not do.
(b) ``populations``: per mode (``eager``; ``compiled``, as ``compile=true`` trains) and size S,
    ``speedup``: S sequential plain runs (one run's time times S) over one population of S
    members (``nalu.cli.train.build_run`` with ``population=S``), per optimizer step;
    ``handwritten_speedup``: the same for the S members written by hand
    (``nalu.training.handwritten.article_population``, compiled in the compiled mode),
    what plain PyTorch reaches here. The plain runs are eager: a run of one member is too small
    for a compiler to pay.
(c) ``peak_fraction``: the largest population's matrix-multiply FLOP/s (counted by torch's
    ``FlopCounterMode`` over one step, forward and backward) over the machine's peak, measured by a
    large batched matmul here and now (the best of 5, so its spread is the population's).
    Elementwise work is not counted, so this is a lower bound.
(d) ``versus_handwritten``: the population step of ``experiment=static_nau_nmu`` (S = 50) and of
    ``experiment=solve`` (S = 25), as their configs train (compiled where they say so), over the
    same training written by hand in ``nalu.training.handwritten`` (stacked weights and
    ``bmm``, one fused Adam, fresh batches for all members at once): eager, compiled as the
    project is, and on a GPU also with each epoch captured as one CUDA graph (``graphed``).

Memory: ``peak_gib`` of each population is the process's peak resident memory from its build
through its first fit (compilation included), counted afresh from what the process held before
it (Linux's peak counter reset after returning freed memory to the system); ``max_rss_gib`` is
the whole process's peak, every population, plain loop and compiler cache of the run together.

Every ratio is the median of ``--repeats`` (default 5) repeats, with their min and max; a repeat
pairs one plain measurement with one project measurement, taken one after the other (plain,
project, plain, project, ...), so that the machine's drift reaches both sides of a pair alike.
The first pair of each ratio is a warm-up and is not counted, and within each measurement the
first epoch is uncounted (compilation, first allocations). Defaults: ``--epochs 10`` for the
single runs and the plain loops, max(4, 10 · epochs / max(S, 10)) epochs for a population of S
(a step's time is steady after the first epoch), 4 epochs for (d) (a single timed epoch leaves
the ratio to the noise of one fit: 32 steps of S = 100 are 60 ms); sizes 1, 10, 100 and 1000.

Writes ``outputs/bench/bench.json``; every figure is a ratio of times measured in this process.
"""

import argparse
import ctypes
import functools
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
from omegaconf import DictConfig, open_dict
from torch.utils.flop_counter import FlopCounterMode

from nalu.cli.common import CONFIG_DIR, OneLineParser, keep_freed_memory, log_lightning_once
from nalu.cli.train import build_run, train
from nalu.config.errors import ConfigError
from nalu.config.validation import check_command_line
from nalu.data.batches import step_batches
from nalu.results.record import write_json_atomic
from nalu.training import handwritten

DEFAULT_SIZES = (1, 10, 100, 1000)
DEFAULT_REPEATS = 5
# (d): the experiments, their population sizes and what builds the hand-written loop of each.
HANDWRITTEN = {
    "static_nau_nmu": (50, handwritten.static_population),
    "solve": (25, handwritten.solve_population),
}


class FitTimer(L.Callback):
    """Seconds per optimizer step of ``trainer.fit``'s training after its first epoch (the
    first epoch waits for compilation and first allocations), of every epoch if there is one.

    A class attribute: ``nalu.cli.train.train`` instantiates the callback from the config, out of
    the caller's reach."""

    step_seconds: float = float("nan")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == min(1, trainer.max_epochs - 1):
            handwritten.synchronize(pl_module.device.type)
            self._start, self._first_step = time.perf_counter(), trainer.global_step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        handwritten.synchronize(pl_module.device.type)
        steps = trainer.global_step - self._first_step
        FitTimer.step_seconds = (time.perf_counter() - self._start) / steps


def experiment_config(experiment: str, output_dir: Path, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}", *overrides])
    with open_dict(cfg):
        cfg.paths.output_dir = str(output_dir)
    return cfg


def project_single_run(cfg: DictConfig) -> float:
    """Seconds per optimizer step of ``trainer.fit`` in ``nalu.cli.train.train`` (the run
    ``make train`` starts)."""
    with open_dict(cfg):
        cfg.callbacks.fit_timer = {"_target_": f"{__name__}.FitTimer"}
        cfg.trainer.enable_progress_bar = False
    train(cfg)
    return FitTimer.step_seconds


class Population:
    """The population that ``nalu.cli.train.build_run`` builds from ``cfg``, built once (a thousand
    members take a minute) and fitted for ``epochs`` as often as it is timed, on the GPU if
    there is one."""

    def __init__(self, cfg: DictConfig, epochs: int) -> None:
        _, self.datamodule, self.module = build_run(cfg)
        self.epochs = epochs
        # Every fit starts from the members' initialisation: the repeats time the same steps,
        # and no member trains long enough to diverge.
        self.initial = {name: t.clone() for name, t in self.module.state_dict().items()}

    def step_seconds(self) -> float:
        """Seconds per optimizer step of a ``trainer.fit`` without validation."""
        self.module.load_state_dict(self.initial)
        trainer = L.Trainer(
            max_epochs=self.epochs,
            accelerator="auto",
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            check_val_every_n_epoch=self.epochs + 1,
            callbacks=[FitTimer()],
        )
        trainer.fit(self.module, datamodule=self.datamodule)
        return FitTimer.step_seconds

    def step_flops(self, device: str) -> int:
        """Matrix-multiply FLOPs of one optimizer step: the forward and backward of one batch."""
        self.datamodule.setup("fit")
        x, y = next(step_batches(next(iter(self.datamodule.train_dataloader()))))
        # Lightning leaves a fitted module on the CPU; count where it trained.
        module = self.module.to(device)
        with FlopCounterMode(display=False) as counter:
            F.mse_loss(module(x.to(device)), y.to(device), reduction="sum").backward()
        return counter.get_total_flops()


def interleaved(*measures: Callable[[], float], repeats: int) -> list[tuple[float, ...]]:
    """``repeats`` tuples of times, one of each measure, taken in turn (plain, project, plain,
    project, ...) after one uncounted warm-up tuple (first-call allocations, kernel selection,
    Lightning's first imports)."""
    return [tuple(measure() for measure in measures) for _ in range(repeats + 1)][1:]


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
    handwritten.synchronize(device)
    start = time.perf_counter()
    function()
    handwritten.synchronize(device)
    return time.perf_counter() - start


def restart_peak_memory() -> bool:
    """Return the process's freed memory to the system and restart Linux's count of its peak
    resident memory from what it holds now; False where either is not available."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except (OSError, AttributeError):
        return False
    return True


def peak_memory_gib() -> float:
    """The process's peak resident memory since ``restart_peak_memory`` (Linux's VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    raise OSError("no VmHWM in /proc/self/status")


def measure_population(
    cfg: DictConfig, epochs: int, plain: Callable[[], float], repeats: int, device: str
) -> tuple[list[tuple[float, ...]], int, float]:
    """(plain run, population, hand-written population) seconds per step of each repeat, the
    FLOPs of one population step and the population's peak memory in GiB (its build and first
    fit, NaN where it cannot be counted); the hand-written loop is compiled when the population
    is (``compile`` in ``cfg``). The population is freed on return, before the next is built."""
    counted = restart_peak_memory()
    population = Population(cfg, epochs)
    population.step_seconds()
    peak = peak_memory_gib() if counted else float("nan")
    by_hand = functools.partial(
        handwritten.timed_population,
        handwritten.article_population,
        cfg,
        cfg.population,
        epochs,
        device,
        compiled=bool(cfg.compile),
    )
    triples = interleaved(plain, population.step_seconds, by_hand, repeats=repeats)
    return triples, population.step_flops(device), peak


def versus_handwritten(
    work: Path, repeats: int, populations: dict[str, int], overrides: list[str], device: str
) -> dict[str, dict[str, Any]]:
    """(d): per experiment, the project's population step (as its config trains it) over the
    hand-written loop's, eager, compiled where the config compiles, and on a GPU also captured
    (``graphed``): one ratio per side."""
    figures: dict[str, dict[str, Any]] = {}
    epochs = 4
    for experiment, (default_size, build) in HANDWRITTEN.items():
        size = populations.get(experiment, default_size)
        cfg = experiment_config(
            experiment,
            work / experiment,
            [f"population={size}", f"trainer.max_epochs={epochs}", *overrides],
        )
        compiled = bool(cfg.compile)
        population = Population(cfg, epochs)
        sides = {"eager": {"compiled": False}}
        if compiled:
            sides["compiled"] = {"compiled": True}
        if device == "cuda":  # an epoch of steps as one CUDA graph, compiled as the project
            sides["graphed"] = {"compiled": compiled, "graphed": True}
        entry: dict[str, Any] = {"population": size, "compile": compiled}
        for side, options in sides.items():
            plain = functools.partial(
                handwritten.timed_population, build, cfg, size, epochs, device, **options
            )
            pairs = interleaved(plain, population.step_seconds, repeats=repeats)
            entry[side] = spread([project / hand for hand, project in pairs])
            entry[f"{side}_step_ms"] = 1e3 * statistics.median(hand for hand, _ in pairs)
            entry["project_step_ms"] = 1e3 * statistics.median(project for _, project in pairs)
        figures[f"{experiment} S={size}"] = entry
        rate = 1e3 / entry["project_step_ms"]
        print(f"  {experiment} S={size}: {rate:.0f} steps/s", file=sys.stderr)
    return figures


def run(
    sizes: list[int],
    epochs: int,
    repeats: int,
    output: Path,
    populations_of_d: dict[str, int] | None = None,
    overrides: list[str] | None = None,
    compiled_sizes: list[int] | None = None,
) -> dict[str, Any]:
    """Measure (a) on the CPU, as ``make train`` runs, and (b), (c), (d) on the GPU if there is
    one (the populations' accelerator and the plain loops' device alike). The populations of
    ``compiled_sizes`` (default: every size) are measured compiled (``compile=true``) as well,
    against the hand-written loop compiled alike."""
    compiled_sizes = sizes if compiled_sizes is None else compiled_sizes
    log_lightning_once()
    keep_freed_memory()
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
        plain_cfg = experiment_config(
            "article", Path(work) / "plain", [f"trainer.max_epochs={epochs}"]
        )
        # Each single run writes its checkpoints and TensorBoard run to a folder of its own.
        runs = itertools.count()

        def single_run(*overrides: str) -> Callable[[], float]:
            return lambda: project_single_run(
                experiment_config(
                    "article",
                    Path(work) / f"single{next(runs)}",
                    [f"trainer.max_epochs={epochs}", *overrides],
                )
            )

        def cpu_plain() -> float:
            return handwritten.article_single_loop(plain_cfg, epochs)

        for name, project in (
            ("single_vs_plain", single_run(no_validation)),
            ("single_with_validation_vs_plain", single_run()),
        ):
            pairs = interleaved(cpu_plain, project, repeats=repeats)
            figures[name] = spread([single / plain for plain, single in pairs])

        def device_plain() -> float:
            return handwritten.article_single_loop(plain_cfg, epochs, device)

        plain_steps: list[float] = []
        populations: dict[str, dict[int, dict[str, Any]]] = {"eager": {}, "compiled": {}}
        flops: dict[int, int] = {}
        eager_steps: dict[int, list[float]] = {}  # (c) is the eager population's
        for size in sizes:
            # Fewer epochs for large populations (a step's time is steady after the first
            # epoch), but three timed ones at least, as in (d).
            population_epochs = max(4, epochs * 10 // max(size, 10))
            for mode in ("eager", "compiled") if size in compiled_sizes else ("eager",):
                cfg = experiment_config(
                    "article",
                    Path(work) / f"population{size}_{mode}",
                    [
                        f"population={size}",
                        f"trainer.max_epochs={population_epochs}",
                        f"compile={mode == 'compiled'}",
                    ],
                )
                triples, step_flops, peak = measure_population(
                    cfg, population_epochs, device_plain, repeats, device
                )
                plain_steps += [plain for plain, _, _ in triples]
                steps = [step for _, step, _ in triples]
                if mode == "eager":
                    flops[size], eager_steps[size] = step_flops, steps
                populations[mode][size] = {
                    "speedup": spread([size * plain / step for plain, step, _ in triples]),
                    "handwritten_speedup": spread(
                        [size * plain / by_hand for plain, _, by_hand in triples]
                    ),
                    "step_ms": 1e3 * statistics.median(steps),
                    "handwritten_step_ms": 1e3 * statistics.median(h for _, _, h in triples),
                    "peak_gib": peak,
                }
                median = populations[mode][size]["step_ms"]
                print(f"  population {size:>6}, {mode}: {median:8.2f} ms/step", file=sys.stderr)
        figures["versus_handwritten"] = versus_handwritten(
            Path(work), repeats, populations_of_d or {}, overrides or [], device
        )
    peak = matmul_peak(device)
    largest = max(sizes)
    figures |= {
        "plain_step_ms": 1e3 * statistics.median(plain_steps),
        "populations": populations,
        "matmul_peak_flops_per_s": peak,
        "peak_fraction": spread([flops[largest] / step / peak for step in eager_steps[largest]]),
        "peak_fraction_population": largest,
        "max_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }
    write_json_atomic(output, figures)
    return figures


def _cell(figure: dict[str, float], spec: str, suffix: str = "") -> str:
    """``2.04 (1.95–2.21)``: the median, then the range of the repeats."""
    low, high = format(figure["min"], spec), format(figure["max"], spec)
    return f"{figure['median']:{spec}}{suffix} ({low}–{high})"


def _per_step(milliseconds: float) -> str:
    """``1.23 ms/step`` or, under a millisecond, ``0.184 ms/step = 5,430 steps/s``."""
    if milliseconds >= 1:
        return f"{milliseconds:.1f} ms/step"
    return f"{milliseconds:.3f} ms/step = {1e3 / milliseconds:,.0f} steps/s"


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
    for mode, entries in figures["populations"].items():
        for size, entry in entries.items():
            runs = "1 plain run" if size == 1 else f"{size} plain runs"
            rows.append(
                f"| (b) population S={size}, {mode} ({entry['step_ms']:.1f} ms/step): speedup"
                f" over {runs} | {_cell(entry['speedup'], '.1f', 'x')} |"
            )
            rows.append(
                f"| (b) the hand-written batched loop of S={size}, {mode}"
                f" ({entry['handwritten_step_ms']:.1f} ms/step): speedup over {runs}"
                f" | {_cell(entry['handwritten_speedup'], '.1f', 'x')} |"
            )
    rows.append(
        f"| (c) population S={figures['peak_fraction_population']}: fraction of matmul peak"
        f" ({figures['matmul_peak_flops_per_s'] / 1e9:.0f} GFLOP/s) | "
        f"{_cell(figures['peak_fraction'], '.1%')} |"
    )
    for name, entry in figures["versus_handwritten"].items():
        mode = "compiled" if entry["compile"] else "eager"
        for side in ("eager", "compiled", "graphed"):
            if side in entry:
                rows.append(
                    f"| (d) {name} ({mode}, {_per_step(entry['project_step_ms'])}) / the"
                    f" hand-written loop, {side} ({_per_step(entry[f'{side}_step_ms'])}) | "
                    f"{_cell(entry[side], '.2f')} |"
                )
    largest = figures["peak_fraction_population"]
    for mode, entries in figures["populations"].items():
        if largest in entries:
            rows.append(
                f"| peak memory of the population S={largest}, {mode}: its build and first fit"
                f" (GiB) | {entries[largest]['peak_gib']:.2f} |"
            )
    rows.append(f"| peak memory of the whole process (GiB) | {figures['max_rss_gib']:.2f} |")
    return "\n".join(rows)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text}")
    return value


EXAMPLES = """Examples:
  nalu-bench                               # all of it (17-32 minutes on 2 CPU cores)
  nalu-bench --sizes 1 100 --repeats 3     # (b) at S = 1 and 100 only, 3 repeats a ratio
  nalu-bench --output outputs/bench/gpu.json   # on a GPU machine: it runs there by itself
"""


def main(argv: list[str] | None = None) -> None:
    parser = OneLineParser(
        prog="nalu-bench", description=__doc__, epilog=EXAMPLES, error_type=ConfigError
    )
    parser.add_argument("--sizes", type=_positive, nargs="+", default=list(DEFAULT_SIZES))
    parser.add_argument(
        "--compiled-sizes",
        type=_positive,
        nargs="*",
        default=None,
        help="(b): the populations also measured with compile=true (default: every size)",
    )
    parser.add_argument("--epochs", type=_positive, default=10, help="epochs of the single runs")
    parser.add_argument(
        "--repeats",
        type=_positive,
        default=DEFAULT_REPEATS,
        help="measurements of each ratio, after a warm-up; the median and range are reported",
    )
    for experiment, (size, _) in HANDWRITTEN.items():
        parser.add_argument(
            f"--{experiment.replace('_', '-')}-population",
            type=_positive,
            default=size,
            help=f"(d): the population of experiment={experiment}",
        )
    parser.add_argument(
        "--overrides",
        nargs="*",
        default=[],
        help="(d): Hydra overrides of both experiments, e.g. data.train_size=1280 compile=false",
    )
    parser.add_argument("--output", type=Path, default=Path("outputs/bench/bench.json"))
    args = parser.parse_args(argv)
    populations = {e: getattr(args, f"{e}_population") for e in HANDWRITTEN}
    # (d) comes last: its overrides are checked before the minutes of (a) to (c), not after.
    for experiment, size in populations.items():
        try:
            check_command_line(
                [f"experiment={experiment}", f"population={size}", *args.overrides], CONFIG_DIR
            )
        except ConfigError as error:
            parser.error(f"--overrides: {error}")
    figures = run(
        args.sizes,
        args.epochs,
        args.repeats,
        args.output,
        populations,
        args.overrides,
        args.compiled_sizes,
    )
    print(table(figures))
    print(f"\n{args.output}")


if __name__ == "__main__":
    main()
