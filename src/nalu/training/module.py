"""The LightningModule that trains S ≥ 1 members of any network on their arithmetic problems."""

import functools
import logging
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.plugins.precision import Precision
from torch import Tensor, nn
from torch.optim import Optimizer

from nalu.config import rules
from nalu.config.errors import InvalidArgument
from nalu.data.batches import Chunk, step_batches
from nalu.data.datamodule import TrainingDataModule
from nalu.results.metrics import is_solved
from nalu.results.record import (
    INTERP_MSE,
    TENSORBOARD_DEFAULT_POINTS,
    TRAIN_BATCH_LOSS,
    TRAIN_LOSS,
    TRAIN_REGULARIZATION,
    TRAIN_REGULARIZER_SCALE,
    finite_summary,
    is_share,
    share_count,
)
from nalu.training.captured import CapturedChunks
from nalu.training.curves import MemberCurves
from nalu.training.divergence import Divergence
from nalu.training.evaluation import Evaluation, MemberEvaluation
from nalu.training.judging import Judge
from nalu.training.members import Members
from nalu.training.optimization import (
    adam_update,
    compile_whole_step,
    configure_optimization,
    hands_gradients_over,
    has_step_hooks,
    parameter_gradients,
    step_gradients,
    steps_directly,
    traceable_adam,
    zero_grad,
)
from nalu.training.progress import StepProgressBar
from nalu.training.regularizer import MemberSchedules, RegularizerSchedule
from nalu.training.restarts import Restarts
from nalu.training.stalls import StallRule
from nalu.units.contract import (
    clamped_units,
    independent_outputs,
    offers_candidates,
    regularized_units,
    total_regularization,
)

log = logging.getLogger(__name__)

# Optimizer steps per chunk when chunks are captured as CUDA graphs (``cuda_graphs``): an epoch
# of most tasks in one replay (the static and NALM tasks judge every 1,000 steps), and the graph
# still quick to capture (~40 nodes a step).
CAPTURED_CHUNK_STEPS = 1024

# The hooks Lightning calls around each optimizer step of manual optimization.
STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


def warn_compiler_failed(error: Exception, where: str, instead: str) -> None:
    """One line for a compiler that failed ``where``: the error's type and first line, and what
    the run does ``instead``."""
    first_line = (str(error).strip().splitlines() or [""])[0]
    log.warning(
        "torch.compile failed%s (%s: %s); %s", where, type(error).__name__, first_line, instead
    )


def is_config(value: Any) -> bool:
    """Whether ``value`` is a Hydra config (a mapping, such as ``{"_target_": ...}``), not a plain
    object such as a built ``nn.Module``."""
    return isinstance(value, Mapping)


def check_candidates_at_the_top(network: nn.Module) -> None:
    """A network with candidates answers the outputs itself: inside a stack its heads would
    never be trained or chosen, so refuse it there."""
    for name, module in network.named_modules():
        if name and offers_candidates(module):
            raise InvalidArgument(
                "model",
                f"{type(module).__name__} at {name}",
                "a network that chooses among candidates must be the whole model, not a layer",
            )


class MemberObjective(nn.Module):
    """One member's training terms on a batch, each a scalar: the MSE of its answers, the fit
    the optimizer minimises, and the units' regularisation (left out when no unit has one).

    The fit is the MSE, or for a network with candidates the sum of every candidate's own fit
    (``candidate_fits``: its MSE, or its error in log space): each head learns every output as
    if it were trained alone."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        # Asked once: the step runs under vmap and torch.compile.
        self.regularized = regularized_units(network)
        self.has_regularization = bool(self.regularized)
        self.offers_candidates = offers_candidates(network)

    def forward(self, x: Tensor, y: Tensor) -> tuple[Tensor, ...]:
        if self.offers_candidates:
            candidates = self.network.candidates(x)  # [B, C, out]
            mse = F.mse_loss(self.network.chosen(candidates.detach()), y)
            fit = self.network.candidate_fits(x, candidates, y).sum()
        else:
            mse = fit = F.mse_loss(self.network(x), y)
        if not self.has_regularization:
            return mse, fit
        return mse, fit, total_regularization(self.regularized)


def living_median(values: Tensor, alive: Tensor) -> Tensor:
    """The median of ``values`` ``[..., S]`` over the members still training (NaN-free), NaN
    where there are none; on the values' device, so that reading it is the caller's choice.
    Of an even count it is the mean of the two middle values, as the final summary's
    (``statistics.median``), not torch's ``nanmedian``, which gives the lower one."""
    living = torch.where(alive, values, float("nan"))
    if living.numel() == 0:  # no logged step in a chunk: nothing to take (quantile refuses it)
        return living.new_empty(living.shape[:-1])
    return living.nanquantile(0.5, dim=-1)


def living_summaries(
    values: dict[str, Tensor], alive: Tensor, counts: dict[str, Tensor] | None = None
) -> dict[str, float]:
    """Each ``[S]`` tensor of ``values`` over the members still training, read in one transfer
    and summarised as the final metrics are (``finite_summary``: a share of solved outputs
    weighted by each member's ``counts`` of outputs, else the median)."""
    if not values:
        return {}
    names = list(values)
    weighted = [name for name in names if counts is not None and is_share(name)]
    rows = [values[name] for name in names] + [counts[share_count(n)] for n in weighted] + [alive]
    *table, living = torch.stack([row.float().to(alive.device) for row in rows]).tolist()
    kept = [k for k, flag in enumerate(living) if flag]
    weights = dict(zip(weighted, table[len(names) :], strict=True))
    return {
        name: finite_summary(
            name,
            [row[k] for k in kept],
            [weights[name][k] for k in kept] if name in weights else None,
        )
        for name, row in zip(names, table[: len(names)], strict=True)
    }


def ignore_inapplicable_warnings() -> None:
    """Silence Lightning's advice that does not apply to this module's runs (the filters are the
    process's; the module sets them up as it is set up, for a notebook's trainer as for the
    command line's)."""
    # The module logs its curves itself at every optimizer step, whatever log_every_n_steps.
    warnings.filterwarnings("ignore", ".*is smaller than the logging interval.*")
    # In-memory batches need no loader workers; the LeafSpec notice is Lightning's own internals.
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\).*")
    # Under DDP the evaluation metrics are torchmetrics, already summed over processes.
    warnings.filterwarnings("ignore", ".*when logging on epoch level in distributed setting.*")
    # A resume into a new folder, or in place: the checkpoint callback's bookkeeping of the
    # old folder's files, which the run's judge (each member's best validation) does not use.
    warnings.filterwarnings("ignore", ".*The dirpath has changed from.*")
    warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")


class ArithmeticModule(L.LightningModule):
    """MSE training of S ≥ 1 members: member ``k`` is the network that ``seeds[k]``
    initialises, trained on its own problem (``output_operations[k]``, thresholds
    ``success_threshold[k]``) with its own batches.

    Where S lives: ``members`` (``nalu.training.members.Members``) holds the network, the plain
    one at S = 1 and every parameter stacked ``[S, ...]`` at S > 1, and is what runs, masks and
    re-initialises members, and what differs between S = 1 and S > 1 in what a run shows (a
    population's fraction of members still training, the words of the stop when none is left).
    Outside it S changes only what a run writes out: one folder or a folder per member and a
    population's report (``nalu.results``), and which curves a member's own run keeps
    (``MemberCurves``).

    Optimizer steps: a training batch is one step, and a ``Chunk`` of batches (what a
    ``TrainingDataModule`` yields once ``setup`` has set its ``chunk_steps``) is that many steps in
    one call, so Lightning's loop runs once per chunk while everything else holds per step:
    ``global_step`` counts optimizer steps and ``trainer.max_steps`` stops at its step,
    ``gradient_clip_val``/``gradient_clip_algorithm`` clip every step (per member by norm), the
    learning-rate schedule and the regulariser's ramp advance every step, and every logged step is
    an optimizer step. The objective is the MSE plus the ``regularizer`` schedule's weight (one
    schedule, or one per member) times the units' ``regularization()``; units with
    ``clamp_parameters()`` are clamped after every step. No step reads a value back from the device:
    losses, divergence and curves stay there until the end of the chunk (the all-diverged check and
    the batch losses) or of the epoch. ``compile=True`` runs each step through ``torch.compile``
    (worth its first minute on long runs of the NMU-family units): with Adam the whole step as
    one graph, the update fused with the gradients (``_compile_update``), else its forward, loss
    and backward. On a GPU a chunk's steps run as one captured CUDA graph (``cuda_graphs``,
    ``_captured_steps``).

    Per member, five jobs have homes of their own: ``members`` (above); ``metrics``
    (``nalu.training.evaluation.Evaluation``), what the evaluation sets measure and which
    candidate answers each output; ``judge``
    (``nalu.training.judging.Judge``), which keeps each member's best validation, its
    parameters and the steps at which its outputs were solved, and on whose parameters the test
    loop runs; ``divergence`` (``nalu.training.divergence.Divergence``): a member whose
    objective or parameters turn non-finite is frozen and judged at its best validation before,
    and when none is left training stops with ``Diverged``; and ``restarts``
    (``nalu.training.restarts.Restarts``): the rounds of per-output restarts and the stall
    restarts. The module itself stops when solved (``stop_when_solved``: at the first validation
    where every living member's every output has an interpolation MSE below
    ``validation_threshold``). All of it is module state, so it travels with the checkpoint and
    a killed run resumes.

    ``network`` and ``optimizer`` are Hydra configs (``{"_target_": ...}``, what the command
    line passes and the checkpoint records), or plain objects in a notebook: an ``nn.Module``
    and an optimizer factory such as ``functools.partial(torch.optim.Adam, lr=1e-2)`` (the
    checkpoint then does not record them: ``load_from_checkpoint(path, network=..., optimizer=...)``
    gives them back). A population builds each member from its seed, so it needs the config.
    """

    def __init__(
        self,
        network: dict[str, Any] | nn.Module,
        optimizer: dict[str, Any] | Callable[..., Optimizer],
        output_operations: Sequence[Sequence[str]],
        success_threshold: Sequence[Sequence[float]] | None = None,
        seeds: Sequence[int] = (0,),
        validation_threshold: Sequence[Sequence[float]] | None = None,
        stop_when_solved: bool = False,
        rounds: int = 1,
        stall_restart: dict[str, Any] | None = None,
        regularizer: dict[str, Any] | Sequence[dict[str, Any]] | None = None,
        lr_schedule: dict[str, Any] | None = None,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
        chunk_steps: int = 32,
        compile: bool = False,
        cuda_graphs: bool = True,
    ) -> None:
        super().__init__()
        # Here, before the trainer sets up its callbacks (whose notices some filters silence),
        # and again in ``setup`` for a process that unpickles the module.
        ignore_inapplicable_warnings()
        given = {"network": network, "optimizer": optimizer}
        self.save_hyperparameters(ignore=[name for name, v in given.items() if not is_config(v)])
        # Several optimizer steps per training_step: the module takes them itself.
        self.automatic_optimization = False
        self.optimizer_factory = optimizer
        schedules = (
            [regularizer]
            if regularizer is None or isinstance(regularizer, Mapping)
            else regularizer
        )
        self.regularizer = MemberSchedules([RegularizerSchedule(**(r or {})) for r in schedules])
        self.members = Members(network, seeds)
        check_candidates_at_the_top(self.members.network)
        self.network: nn.Module = self.members.network
        # Not a submodule: the network's parameters are registered once, as ``network.*``.
        self._objective = {
            "member": MemberObjective(self.network),
            "evaluation": MemberEvaluation(self.network),
        }
        self.has_regularization = self._objective["member"].has_regularization
        # The step's and the evaluation's functions, and their compiled forms (``setup``).
        self._eager: dict[str, Callable[..., Any]] = {
            "terms": self._step_terms,
            "answers": self._member_answers,
        }
        self._compiled: dict[str, Callable[..., Any]] = {}
        # The whole update as one compiled graph (``_compile_update``): the graph while every
        # member trains, then the one once a member has diverged (the same where the network
        # keeps its gradients).
        self._compiled_update: list[Callable[..., Any]] | None = None
        # Each output judged at its own best validation too, where outputs are models of their
        # own: in a stack they share layers, and mixing epochs would make a network never run.
        self.judges_each_output = independent_outputs(self.network)
        self._clamped_units = clamped_units(self.network)
        self.planned_steps = 1  # the run's optimizer steps, known once fitting starts
        self.batch_loss_every = 1  # the steps between two logged batch losses, likewise
        candidates = self.network.num_candidates if offers_candidates(self.network) else 1
        self.metrics = Evaluation(output_operations, success_threshold, candidates)
        size, outputs = len(seeds), len(output_operations[0])
        self.divergence = Divergence(self.members)
        rules.integer_at_least(1)("rounds", rounds)
        for name, on in (("stop_when_solved", stop_when_solved), ("rounds", rounds > 1)):
            if on and validation_threshold is None:
                raise InvalidArgument(name, True, "needs validation_threshold (interpolation MSEs)")
        if rounds > 1 and not (is_config(network) and self.judges_each_output):
            raise InvalidArgument(
                "rounds",
                rounds,
                "needs a network config whose outputs are models of their own (a weight row "
                "each: select, nau, nmu, nmru, ...), whose rows a new round re-initialises",
            )
        stall_rule = None if stall_restart is None else StallRule(**stall_restart)
        if stall_rule is not None and not is_config(network):
            raise InvalidArgument(
                "stall_restart", stall_restart, "needs the network's config, to re-initialise it"
            )
        self.restarts = Restarts(self.members, outputs, rounds, stall_rule)
        threshold = torch.full((size, outputs), float("nan"))
        if validation_threshold is not None:
            threshold = torch.as_tensor(validation_threshold, dtype=torch.float32)
        self.register_buffer("validation_threshold", threshold, persistent=False)
        self.judge = Judge(self.members, outputs)
        self.register_load_state_dict_pre_hook(self._older_checkpoint)
        # Each member's curves: at every epoch (training loss) or validation.
        self.curves = MemberCurves(size)
        # Per member, the final metrics of the test loop: {name: [S]}.
        self.final_metrics: dict[str, Tensor] = {}
        self.final_solved = torch.zeros((size, outputs), dtype=torch.bool)
        # Each step of the chunk so far: (step, batch size, mse [S], objective [S]), and its
        # regularisation [S] where a unit has one (summed at the chunk's end, not per step).
        self._chunk_steps: list[tuple[int, int, Tensor, Tensor]] = []
        self._chunk_regularization: list[Tensor] = []
        # λ and its tensor on the training device (``_on_device``).
        self._scale_on_device: tuple[float, Tensor] | None = None
        # How each step calls backward and the optimizer (``setup``): Lightning's way until then.
        self._direct_steps = False
        self._step_hooks: dict[str, list[Callable[..., None]]] = {}
        # Chunks of steps captured as CUDA graphs (``on_train_start``), and the tensors at fixed
        # addresses that their steps read (the step's index, λ and learning rates per step) and
        # write (each step's MSE, objective and regularisation per member).
        self._captured: CapturedChunks | None = None
        self._chunk_tensors: dict[str, Tensor] = {}
        self._reset_epoch_sums()

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets bookkeeping attributes around each of the ~15 hooks of every step;
        # nn.Module's checks for parameters and submodules would cost a fifth of a small step.
        if name in self.__dict__ and (value is None or isinstance(value, str | bool | int | float)):
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @property
    def population(self) -> int:
        return self.members.size

    @property
    def alive(self) -> Tensor:
        """``[S]``: the members still training (``Divergence``)."""
        return self.divergence.alive

    def _older_checkpoint(
        self, module: nn.Module, state: dict[str, Tensor], prefix: str, *_: object
    ) -> None:
        """A ``load_state_dict`` pre-hook for checkpoints that hold the judge's, the
        divergence's and the restarts' buffers at the module's top level (``best_interp_mse``,
        not ``judge.best_interp_mse``): they move into those modules."""
        for home in ("judge", "divergence", "restarts"):
            for name in getattr(self, home).state_dict():
                if (old := prefix + name) in state:
                    state[f"{prefix}{home}.{name}"] = state.pop(old)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` ``[B, in]`` (S = 1) or ``[S, B, in]`` -> outputs ``[B, out]`` or
        ``[S, B, out]``."""
        return self.members.run(self.network, x)

    def setup(self, stage: str) -> None:
        """Ask a ``TrainingDataModule`` for chunks of steps (one step per batch under data
        parallelism, where each step's gradients are averaged across processes), and compile
        the step when asked to."""
        ignore_inapplicable_warnings()
        if stage != "fit":
            return
        data = self.trainer.datamodule
        one_process = self.trainer.world_size == 1
        compiled = self.hparams.compile and one_process
        if isinstance(data, TrainingDataModule):
            data.chunk_steps = self.hparams.chunk_steps if one_process else 1
            if one_process and self.hparams.cuda_graphs and self._on_cuda():
                # A replayed chunk costs one launch: longer ones spare Lightning's loop and the
                # host's read at each chunk's end.
                data.chunk_steps = max(self.hparams.chunk_steps, CAPTURED_CHUNK_STEPS)
            data.compile_batches = compiled
        if compiled:
            # A run compiles its own step: the compiler keeps every earlier run's variants of
            # the same code (a sweep's jobs, in one process) and, past its recompile limit,
            # would run this one eagerly without a word.
            torch.compiler.reset()
            self._compiled = {
                # One batch size in training; the evaluation's last chunk may be smaller.
                "terms": torch.compile(self._eager["terms"], dynamic=False),
                "answers": torch.compile(self._eager["answers"]),
            }
        # Lightning's wrappers around a backward pass and an optimizer step cost more than a
        # small network's step; where they add nothing (one process, a precision that neither
        # scales the loss nor wraps the step) the module calls torch itself, and the hooks
        # that callbacks or a subclass define.
        plugin = type(self.trainer.precision_plugin)
        self._direct_steps = (
            one_process
            and plugin.backward is Precision.backward
            and plugin.optimizer_step is Precision.optimizer_step
        )
        self._step_hooks = {name: self._defined_hooks(name) for name in STEP_HOOKS}

    def _defined_hooks(self, name: str) -> list[Callable[..., None]]:
        """The callbacks' and this module's hooks called ``name`` that are not Lightning's
        empty defaults, in Lightning's order (callbacks first), each to call with the hook's
        own arguments."""
        hooks: list[Callable[..., None]] = [
            functools.partial(getattr(callback, name), self.trainer, self)
            for callback in self.trainer.callbacks
            if getattr(type(callback), name) is not getattr(L.Callback, name)
        ]
        if getattr(type(self), name) is not getattr(L.LightningModule, name):
            hooks.append(getattr(self, name))
        return hooks

    def _planned_steps(self) -> int:
        """The run's optimizer steps: epochs × a ``TrainingDataModule``'s steps per epoch (its
        batches per epoch count chunks), else Lightning's count of batches; at most
        ``trainer.max_steps``."""
        trainer = self.trainer
        data = trainer.datamodule
        if not isinstance(data, TrainingDataModule):
            return int(trainer.estimated_stepping_batches)
        epochs = trainer.max_epochs if trainer.max_epochs not in (None, -1) else math.inf
        steps = data.stream.steps_per_epoch * epochs
        if trainer.max_steps != -1:
            steps = min(steps, trainer.max_steps)
        return int(steps)

    def on_fit_start(self) -> None:
        """Measure each evaluation set's per-output MSE at initialisation, once per run: a
        resumed run has it from its checkpoint, so its normalised error keeps the same base."""
        self.judge.best_parameters_to(self.device)
        if self.trainer.datamodule is None:
            return  # dataloaders passed to fit() directly: no evaluation sets to measure on
        with torch.no_grad():
            if self.metrics.measured_initially:
                return
            training = self.training
            self.eval()  # as validation measures: a stochastic unit's noise is for training only
            loaders = self.trainer.datamodule.val_dataloader()
            for dataloader_idx, loader in enumerate(loaders):
                for x, y in loader:
                    self._evaluation_step((x.to(self.device), y.to(self.device)), dataloader_idx)
            self.train(training)
            # Under DDP each process saw a shard: the baseline is the whole set's.
            self.metrics.keep_initial(self.metrics.measured().per_output)

    def on_train_epoch_start(self) -> None:
        self._reset_epoch_sums()

    def _reset_epoch_sums(self) -> None:
        """The epoch's per-member sums of the training loss and regularisation."""
        self._loss_sum = torch.zeros(self.population, device=self.device)
        self._regularization_sum = torch.zeros(self.population, device=self.device)
        # A float while every member has the same λ (no device work per step), else ``[S]``.
        self._scale_sum: float | Tensor = 0.0
        self._loss_samples = self._steps = 0

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One optimizer step per batch of ``batch`` (an ordinary ``(x, y)`` or a ``Chunk``),
        none beyond ``trainer.max_steps``."""
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        max_steps = self.trainer.max_steps
        # Torch's step hooks (registered at any time) need ``step()`` itself at every step:
        # neither a captured chunk nor the compiled whole step calls it.
        direct = not has_step_hooks(optimizer.optimizer)
        if self._captured is not None and isinstance(batch, Chunk) and direct:
            remaining = len(batch) if max_steps < 0 else max_steps - self.global_step
            self._captured_steps(batch, min(len(batch), remaining), optimizer, scheduler)
            return
        # Lightning's count of optimizer steps, read once: each step below adds one to it.
        done = self.global_step
        for step, (x, y) in enumerate(step_batches(batch), start=done + 1):
            if 0 <= max_steps < step:
                break
            self._optimizer_step(optimizer, scheduler, step, x, y, direct)
        self._end_chunk()

    def _optimizer_step(
        self, optimizer: Any, scheduler: Any, step: int, x: Tensor, y: Tensor, direct: bool
    ) -> None:
        """Optimizer step ``step`` (from 1) of every member on its batch; what it measured
        waits on the device for the end of the chunk (``_end_chunk``). ``direct``: the
        optimizer has no step hooks, so that the whole step may be one compiled graph."""
        scale = self._scale(step)
        # The whole step compiled once Adam has its state; the step that makes it is eager
        # (a compiled forward would only delay the whole step's compilation).
        whole = direct and self._compiled_update is not None
        if whole and optimizer.optimizer.state:
            mse, objective, regularization = self._one_graph_step(optimizer, x, y, scale)
        else:
            mse, objective, regularization = self._update(
                optimizer,
                x,
                y,
                self._on_device(scale),
                lambda: self._step(optimizer),
                compiled=not whole,
            )
        if scheduler is not None:
            scheduler.step()
        self._chunk_steps.append((step, x.shape[-2], mse.detach(), objective.detach()))
        if self.has_regularization:
            self._chunk_regularization.append(regularization[0].detach())
            self._scale_sum += scale
        self._steps += 1

    def _update(
        self,
        optimizer: Any,
        x: Tensor,
        y: Tensor,
        scale: Tensor,
        step: Callable[[], None],
        compiled: bool = True,
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """Every member's update on its batch at λ = ``scale``: the step's terms (compiled where
        the run compiles, unless not ``compiled``), their gradients (``_prepare_gradients``),
        ``step()`` (the optimizer's) and the clamps;
        returns the MSE, objective and regularisation."""
        terms = self._run("terms", x, y, scale) if compiled else self._step_terms(x, y, scale)
        mse, objective, loss, *regularization = terms
        zero_grad(optimizer.optimizer)
        # A member's objective reaches only its own gradients: a non-finite one spoils no
        # other member's, and the member is frozen from the chunk's end on.
        self._backward(loss)
        self._prepare_gradients(parameter_gradients(optimizer.optimizer), optimizer)
        step()
        self._clamp()
        return mse, objective, regularization

    def _prepare_gradients(
        self,
        gradients: Sequence[Tensor | None],
        optimizer: Any,
        in_graph: bool = False,
        freeze: bool = True,
    ) -> None:
        """Between the backward pass and the optimizer's step, in place on ``gradients`` (the
        parameters' ``.grad``, or a compiled step's own): diverged members' frozen (unless not
        ``freeze``), settled outputs' zeroed, every member's clipped. ``in_graph``: in tensor
        operations alone, no flag of the run's state asked (the masks apply at every step)."""
        given = [g for g in gradients if g is not None]
        if freeze:
            self.divergence.freeze(given, always=in_graph)
        self.restarts.zero_settled_gradients(given, always=in_graph)
        self._clip_gradients(given, None if in_graph else optimizer)

    def _compile_update(self) -> list[Callable[..., Any]] | None:
        """The whole step compiled (each variant at its first call), where it applies:
        ``compile=true`` on one process calling torch itself with no hook between a step's
        parts (``setup``), chunks not captured as CUDA graphs, an optimizer that ``adam_update``
        steps, and a torch that traces a gradient into a graph (``compile_whole_step``). Else
        None: each step's forward, loss and backward are compiled (``_run``), and the optimizer
        steps on its own. Returned as [while every member trains, once one has diverged]: with
        gradients handed to Adam (``hands_gradients_over``), ``_graph_update`` and
        ``_frozen_graph_update``; else ``_stored_graph_update`` for both."""
        optimizer = self.optimizers().optimizer
        if not (
            self._compiled
            and self._direct_steps
            and self._captured is None
            and not any(self._step_hooks.values())
            and traceable_adam(optimizer)
        ):
            return None
        # Methods, not one with a flag: the compiler keeps no guard on a flag (see
        # ``compile_whole_step``), so each variant needs code of its own.
        if not hands_gradients_over(self.network.parameters()):
            stored = compile_whole_step(self._stored_graph_update)
            return None if stored is None else [stored, stored]
        steps = [
            compile_whole_step(update) for update in (self._graph_update, self._frozen_graph_update)
        ]
        return None if None in steps else steps

    def _graph_update(
        self, optimizer: Optimizer, x: Tensor, y: Tensor, scale: Tensor, rates: list[Tensor]
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """The compiled step while every member trains (``_graph_step`` without the masks of
        diverged members, which cost an article population's compiled step 8% at S = 100 and
        17% at S = 1,000)."""
        return self._graph_step(optimizer, x, y, scale, rates, freeze=False, store=False)

    def _frozen_graph_update(
        self, optimizer: Optimizer, x: Tensor, y: Tensor, scale: Tensor, rates: list[Tensor]
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """The compiled step once some member has diverged: its gradients masked at every
        step."""
        return self._graph_step(optimizer, x, y, scale, rates, freeze=True, store=False)

    def _stored_graph_update(
        self, optimizer: Optimizer, x: Tensor, y: Tensor, scale: Tensor, rates: list[Tensor]
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """The compiled step of a network too narrow to hand its gradients over
        (``hands_gradients_over``): stored in each ``.grad`` and diverged members masked at
        every step, which together keep the gradients' sums over the batch out of Adam's
        update (without either, the NALM task's NAC+ trained 1.8x slower)."""
        return self._graph_step(optimizer, x, y, scale, rates, freeze=True, store=True)

    def _graph_step(
        self,
        optimizer: Optimizer,
        x: Tensor,
        y: Tensor,
        scale: Tensor,
        rates: list[Tensor],
        freeze: bool,
        store: bool,
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """``_update`` with Adam (``adam_update``, at the groups' learning rates ``rates``) as
        tensor operations alone, for one compiled graph: no flag of the run's state is asked
        (with ``freeze``, diverged members are masked at every step, and settled outputs in a
        run of rounds). ``store``: the gradients kept in each ``.grad`` (``step_gradients``)."""
        mse, objective, loss, *regularization = self._step_terms(x, y, scale)
        gradients = step_gradients(optimizer, loss, store=store)
        self._prepare_gradients(gradients, None, in_graph=True, freeze=freeze)
        adam_update(optimizer, rates, gradients)
        self._clamp()
        return mse.detach(), objective.detach(), [r.detach() for r in regularization]

    def _one_graph_step(
        self, optimizer: Any, x: Tensor, y: Tensor, scale: float | Tensor
    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """The optimizer step as one compiled graph (``_compile_update``) between Lightning's
        count of it; a compiler that fails leaves the step, and the run, to the ordinary way."""
        groups = optimizer.optimizer.param_groups
        rates = [torch.tensor(float(group["lr"]), device=self.device) for group in groups]
        optimizer._on_before_step()
        try:
            # ``alive`` changes only at a chunk's end, where ``some_diverged`` is read.
            update = self._compiled_update[self.divergence.some_diverged]
            return update(optimizer.optimizer, x, y, self._on_device(scale), rates)
        except Exception as error:
            warn_compiler_failed(error, " on the whole step", "compiling its parts")
            self._compiled_update = None
            return self._update(optimizer, x, y, self._on_device(scale), optimizer.optimizer.step)
        finally:
            optimizer._on_after_step()

    def _scale(self, step: int) -> float | Tensor:
        """λ of optimizer step ``step`` (from 1) in its round: a float, or ``[S]``."""
        if not self.has_regularization:
            return 0.0
        round_steps = self.round_steps
        return self.regularizer((step - 1) % round_steps, round_steps, self.device)

    def _clamp(self) -> None:
        """After an optimizer step: NAU/NMU weights back into their ranges (Madsen & Johansen)."""
        for unit in self._clamped_units:
            unit.clamp_parameters()

    def _on_cuda(self) -> bool:
        return self.trainer.strategy.root_device.type == "cuda"

    def _captures_chunks(self) -> bool:
        """Whether chunks of steps run as captured CUDA graphs: asked (``cuda_graphs``), on a
        GPU, one process calling torch itself (``setup``) with no hook to call between a step's
        parts, a ``TrainingDataModule``'s chunks, and an optimizer that can keep its step count
        on the device (``capturable``: Adam, AdamW, RMSprop, ...). Anything else trains step by
        step."""
        return (
            self.hparams.cuda_graphs
            and self._on_cuda()
            and self._direct_steps
            and not any(self._step_hooks.values())
            and isinstance(self.trainer.datamodule, TrainingDataModule)
            and "capturable" in self.optimizers().optimizer.defaults
        )

    def _start_capturing(self) -> None:
        """Make the optimizer capturable (its step counts on the device) and the tensors that
        captured chunks read and write (see ``_captured_steps``)."""
        self._captured = CapturedChunks(self.device)
        optimizer = self.optimizers().optimizer
        # The chunk runs the optimizer's step where torch's schedulers cannot see it.
        optimizer._opt_called = True
        if self._captured.capturing:
            for group in optimizer.param_groups:
                group["capturable"] = True
            for state in optimizer.state.values():  # a checkpoint's counts come back on the CPU
                if isinstance(state.get("step"), Tensor):
                    state["step"] = state["step"].to(self.device)
        chunk, groups = self.trainer.datamodule.chunk_steps, len(optimizer.param_groups)
        on = {"device": self.device}
        self._chunk_tensors = {
            "index": torch.zeros(1, dtype=torch.long, **on),
            "lr": torch.zeros(chunk, groups, **on),
            "lr_of_group": torch.zeros(groups, **on),
            "scale": torch.zeros(chunk, self.population, **on),
            "mse": torch.zeros(chunk, self.population, **on),
            "objective": torch.zeros(chunk, self.population, **on),
            "regularization": torch.zeros(chunk, self.population, **on),
        }

    def _captured_steps(self, chunk: Chunk, count: int, optimizer: Any, scheduler: Any) -> None:
        """The first ``count`` optimizer steps of ``chunk``, each run of steps of one batch size
        as one captured CUDA graph (``CapturedChunks``, keyed by its steps and batch size).

        The host does what a step asks of it before the graph runs: each step's λ and learning
        rates into the chunk's tables, Lightning's count of optimizer steps and the schedule's
        step. The graph makes each step's batch from the step's index (``batch_at``), sets the
        optimizer's learning rates from the table, takes the step as ``_optimizer_step`` does,
        and writes each step's MSE, objective and regularisation to the chunk's rows, which
        ``_chunk_done`` reads as it reads those of the steps taken one by one."""
        stream = chunk.stream
        stream.use_epoch(chunk.epoch)
        first, end = chunk.start, chunk.start + count
        while first < end:
            last = min(end, stream.full_steps) if first < stream.full_steps else end
            self._captured_run(chunk, first, last - first, optimizer, scheduler)
            first = last

    def _captured_run(
        self, chunk: Chunk, first: int, count: int, optimizer: Any, scheduler: Any
    ) -> None:
        """Steps ``first .. first + count - 1`` of ``chunk``'s epoch, all of one batch size."""
        tensors, groups = self._chunk_tensors, optimizer.optimizer.param_groups
        steps = list(range(self.global_step + 1, self.global_step + 1 + count))
        scales, rates = [], []
        for step in steps:
            scales.append(self._scale(step))
            rates.append([float(group["lr"]) for group in groups])
            optimizer._on_before_step()
            optimizer._on_after_step()  # Lightning's count: global_step is now ``step``
            if scheduler is not None:
                scheduler.step()
        if isinstance(scales[0], Tensor):  # per-member schedules: ``[S]`` each
            tensors["scale"][:count] = torch.stack(scales)
        else:
            tensors["scale"][:count] = torch.tensor(scales).unsqueeze(1)
        tensors["lr"][:count] = torch.tensor(rates)
        tensors["index"].fill_(first)
        size = chunk.stream.batch_size_at(first)
        # The optimizer reads its learning rates from tensors while the chunk runs (recorded as
        # such when captured); the schedule's floats are back in its groups afterwards.
        floats = [group["lr"] for group in groups]
        if self._captured.capturing:
            for group, rate in zip(groups, tensors["lr_of_group"].unbind(), strict=True):
                group["lr"] = rate
        # A graph records the masks of diverged members and settled outputs only once there are
        # any (both rare): each state has a graph of its own.
        key = (count, size, self.divergence.some_diverged, self.restarts.any_settled)
        try:
            self._captured.run(key, lambda: self._chunk_body(chunk, count, size, rates))
        finally:
            for group, rate in zip(groups, floats, strict=True):
                group["lr"] = rate
        if self.has_regularization:
            self._regularization_sum += tensors["regularization"][:count].sum(dim=0)
            self._scale_sum += sum(scales)
        self._steps += count
        self._chunk_done(
            steps, [size] * count, tensors["mse"][:count], tensors["objective"][:count]
        )

    def _chunk_body(self, chunk: Chunk, count: int, size: int, rates: list[list[float]]) -> None:
        """``count`` optimizer steps from the chunk's index on, in tensor operations only (what
        ``_captured_run`` captures); ``rates``: the host's learning rates, for an optimizer that
        holds floats (off CUDA)."""
        tensors, optimizer = self._chunk_tensors, self.optimizers()
        index = tensors["index"]
        for k in range(count):
            x, y = chunk.batch_at(index, size)
            index.add_(1)
            for g, group in enumerate(optimizer.optimizer.param_groups):
                if isinstance(group["lr"], Tensor):
                    group["lr"].copy_(tensors["lr"][k, g])
                else:
                    group["lr"] = rates[k][g]
            # The torch optimizer's step alone: the host counted Lightning's before the chunk.
            mse, objective, regularization = self._update(
                optimizer, x, y, tensors["scale"][k], optimizer.optimizer.step
            )
            tensors["mse"][k] = mse.detach()
            tensors["objective"][k] = objective.detach()
            if regularization:
                tensors["regularization"][k] = regularization[0].detach()

    def _on_device(self, scale: float | Tensor) -> Tensor:
        """λ as a tensor on the training device: a number would be compiled into the step, anew
        for each value. The tensor is kept while λ holds (before and after its ramp, and 0
        without a regulariser), so that most steps copy nothing to the device."""
        if isinstance(scale, Tensor):
            return scale
        kept = self._scale_on_device
        if kept is None or kept[0] != scale or kept[1].device != self.device:
            self._scale_on_device = kept = (scale, torch.tensor(scale, device=self.device))
        return kept[1]

    def _step_terms(self, x: Tensor, y: Tensor, scale: Tensor) -> tuple[Tensor, ...]:
        """Every member's MSE and objective (its fit plus λ = ``scale`` times its
        regularisation), the loss to differentiate (the objectives' sum) and the members'
        regularisation where a unit has one: one function for ``torch.compile`` to fuse."""
        mse, fit, *regularization = self.members.run(self._objective["member"], x, y)
        # L = L̂ + λ·R (Madsen & Johansen 2020, sec. 2.2.1)
        objective = fit + scale * regularization[0] if regularization else fit
        # A single run's objective is the loss itself: a sum would be one more node to run back.
        loss = objective.sum() if objective.dim() else objective
        return mse, objective, loss, *regularization

    def _backward(self, loss: Tensor) -> None:
        """``manual_backward``, or its hooks and ``loss.backward()`` (see ``setup``)."""
        if not self._direct_steps:
            self.manual_backward(loss)
            return
        for hook in self._step_hooks["on_before_backward"]:
            hook(loss)
        loss.backward()
        for hook in self._step_hooks["on_after_backward"]:
            hook()

    def _step(self, optimizer: Any) -> None:
        """``optimizer.step()`` of the ``LightningOptimizer``, or its hooks, the torch
        optimizer's step and Lightning's count of optimizer steps (``global_step``) around it:
        the calls the manual optimization loop makes (see ``setup``)."""
        if not self._direct_steps:
            optimizer.step()
            return
        for hook in self._step_hooks["on_before_optimizer_step"]:
            hook(optimizer)
        optimizer._on_before_step()
        if steps_directly(optimizer.optimizer):
            adam_update(optimizer.optimizer)
        else:
            optimizer.optimizer.step()
        optimizer._on_after_step()

    def _run(self, name: str, *inputs: Tensor) -> Any:
        """The step's (``"terms"``) or the evaluation's (``"answers"``) function, compiled if
        asked; a compiler that fails (no C++ compiler, an operation it cannot trace) leaves the
        run to go on eagerly, with one warning."""
        if name in self._compiled:
            try:
                return self._compiled[name](*inputs)
            except Exception as error:
                warn_compiler_failed(error, "", "training without it")
                self._compiled = {}
        return self._eager[name](*inputs)

    def _end_chunk(self) -> None:
        """After the steps taken one by one since the last chunk (``_chunk_done``)."""
        if not self._chunk_steps:
            return
        steps, samples, mse, objective = zip(*self._chunk_steps, strict=True)
        self._chunk_steps = []
        if self._chunk_regularization:
            self._regularization_sum += torch.stack(self._chunk_regularization).sum(dim=0)
            self._chunk_regularization = []
        shape = (len(steps), self.population)
        self._chunk_done(
            steps, samples, torch.stack(mse).view(shape), torch.stack(objective).view(shape)
        )

    def _chunk_done(
        self, steps: Sequence[int], samples: Sequence[int], mse: Tensor, objective: Tensor
    ) -> None:
        """After a chunk's optimizer ``steps`` (of ``samples`` each; ``mse`` and ``objective``
        ``[steps, S]``): each member whose objective turned non-finite diverges at the first such
        step (it counted in no loss from then on), the epoch's loss sums and the batch losses to
        log are taken, all on the device, then read in one transfer: when no member is left,
        training stops before the parameters reach a checkpoint. A chunk in which every member
        trained throughout (most chunks; ``none_diverging`` reads one number to know) skips the
        divergence's bookkeeping: a dozen small operations, each of which costs tens of
        microseconds after a step's kernels."""
        weights = torch.tensor(samples, device=self.device, dtype=mse.dtype).unsqueeze(1)
        logged = [k for k, step in enumerate(steps) if step % self.batch_loss_every == 0]
        self._loss_samples += sum(samples)
        if self.trainer.world_size == 1 and self.divergence.none_diverging(objective):
            self._loss_sum += (mse * weights).sum(dim=0)
            losses = living_median(mse[logged], self.alive).tolist() if logged else []
            self._log_batch_losses(steps, logged, losses)
            return
        finite = self._on_every_process(torch.isfinite(objective))
        training = self.divergence.after_steps(steps, objective, finite)
        self._loss_sum += torch.where(training, mse * weights, 0.0).sum(dim=0)
        alive = torch.stack([self.alive.any(), self.alive.all()]).float()
        any_alive, all_alive, *losses = torch.cat(
            [alive, living_median(mse[logged], training[logged])]
        ).tolist()
        self._log_batch_losses(steps, logged, losses)
        self.divergence.read(any_alive, all_alive)

    def _log_batch_losses(
        self, steps: Sequence[int], logged: Sequence[int], losses: Sequence[float]
    ) -> None:
        for k, loss in zip(logged, losses, strict=True):
            self._log_to_loggers({TRAIN_BATCH_LOSS: loss}, steps[k])

    def _on_every_process(self, flags: Tensor) -> Tensor:
        """``flags`` that hold on every process of a distributed run: each decides alike."""
        if self.trainer.world_size == 1:
            return flags
        held = self.trainer.strategy.reduce(flags.float(), reduce_op="sum")
        return held == self.trainer.world_size

    def _clip_gradients(self, gradients: list[Tensor], optimizer: Any) -> None:
        """``gradient_clip_val``/``gradient_clip_algorithm`` on ``gradients``, per member: a
        member's gradient norm is its own (by value, Lightning's clipping: element-wise, so per
        member anyway)."""
        value, algorithm = self.hparams.gradient_clip_val, self.hparams.gradient_clip_algorithm
        if not value:
            return
        if algorithm in (None, "norm"):  # Lightning's default is "norm"
            self.members.clip_norms(gradients, value)
        elif self._direct_steps:  # the clamp Lightning's clipping calls: no host work in a graph
            for gradient in gradients:
                gradient.clamp_(-value, value)
        else:  # a precision plugin's own clipping
            self.clip_gradients(optimizer, value, algorithm)

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.trainer.is_last_batch:
            self._end_training_epoch()

    def on_train_epoch_end(self) -> None:
        self._end_training_epoch()  # an epoch cut short by max_steps

    def _end_training_epoch(self) -> None:
        """Before the epoch's validation and checkpoint: members whose parameters the epoch
        left non-finite diverge, and each member's training loss of the epoch is kept."""
        if self._loss_samples == 0:
            return
        self._check_parameters()
        loss_sum, samples = self._loss_sum, torch.tensor(float(self._loss_samples))
        if self.trainer.world_size > 1:  # the whole epoch's, over every process's shard
            loss_sum = self.trainer.strategy.reduce(loss_sum, reduce_op="sum")
            samples = self.trainer.strategy.reduce(samples.to(self.device), reduce_op="sum")
        loss = torch.where(self.alive, loss_sum / samples.to(loss_sum.device), float("nan"))
        self.judge.train_loss(loss, self.alive)
        self._loss_samples = 0
        self.curves.add(self.global_step, {TRAIN_LOSS: loss})
        per_member = {TRAIN_LOSS: loss}
        if self.has_regularization:
            per_member[TRAIN_REGULARIZATION] = self._regularization_sum / self._steps
            # A float (every member's λ alike) or [S]: the epoch's mean λ of each member.
            scale = torch.as_tensor(self._scale_sum / self._steps, device=loss.device)
            per_member[TRAIN_REGULARIZER_SCALE] = scale.expand_as(loss)
        values = living_summaries(per_member, self.alive)
        if self.trainer.progress_bar_callback is not None:  # its only reader; ``self.log`` is slow
            self.log(TRAIN_LOSS, values[TRAIN_LOSS], prog_bar=True, logger=False)
        values.update(self.members.summary(self.alive))
        self._log_to_loggers(values, self.global_step)

    def _check_parameters(self) -> None:
        """A member with a non-finite parameter diverges here (once per epoch: one host read);
        when every member has, training stops before a checkpoint can keep the parameters.
        While every member trains and the parameters' sums are finite (``none_diverging``), no
        member is looked at: a dozen small operations fewer at each epoch's end."""
        names, parameters = zip(*self.network.named_parameters(), strict=True)
        if self.trainer.world_size == 1 and self.divergence.none_diverging(
            torch.stack([p.detach().sum().float() for p in parameters])  # any dtypes
        ):
            return
        finite = self._on_every_process(
            torch.stack(
                [self.members.per_member(torch.isfinite(p.detach())).all(dim=1) for p in parameters]
            )
        )  # [parameters, S]
        self.divergence.check_parameters(finite, names, self.global_step)

    def _log_to_loggers(self, values: dict[str, float], step: int) -> None:
        """Straight to the loggers at optimizer step ``step``: curves stay on one increasing
        x-axis, and a ``self.log`` call costs more than a small network's step."""
        if self.trainer.sanity_checking:
            return
        for logger in self.loggers:
            logger.log_metrics(values, step=step)

    def _member_answers(self, x: Tensor) -> Tensor:
        """Every member's candidate answers ``[S, B, C, out]`` (``MemberEvaluation``)."""
        return self.members.run(self._objective["evaluation"], x)

    def _evaluation_step(self, batch: tuple[Tensor, Tensor], dataloader_idx: int) -> None:
        x, y = batch
        self.metrics.add_batch(dataloader_idx, self._run("answers", x), y)

    def _select(self, interp_candidate_mse: Tensor) -> None:
        """The network answers each output with the candidate the evaluation chose (by the
        same rule, ``best_candidates``)."""
        if offers_candidates(self.network):
            self.network.select(interp_candidate_mse)

    def validation_step(
        self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._evaluation_step(batch, dataloader_idx)

    def test_step(
        self, batch: tuple[Tensor, Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        self._evaluation_step(batch, dataloader_idx)

    @torch.no_grad()
    def on_validation_epoch_end(self) -> None:
        measured = self.metrics.measured()
        if self.trainer.sanity_checking:
            return
        self._select(measured.interp_candidate_mse)
        per_member = self.metrics.summaries(measured)
        self._judge(self.global_step, per_member[INTERP_MSE], measured.per_output)
        step = self.global_step
        # A diverged member's validations end where it diverged, as its training loss does:
        # its frozen parameters train no more (its results: its best validation's).
        self.curves.add(
            step,
            {name: value.where(self.alive, float("nan")) for name, value in per_member.items()},
        )
        if self.restarts.stall_rule is not None and step < self.planned_steps:
            history = self.curves.history(INTERP_MSE).to(self.device)
            self.restarts.restart_stalled(step, history, self.alive)
        summaries = living_summaries(per_member, self.alive, self.metrics["extrap"].groups.counts())
        # ModelCheckpoint monitors it; the progress bar shows it.
        self.log(INTERP_MSE, summaries[INTERP_MSE], prog_bar=True, logger=False)
        self._log_to_loggers(summaries, step)

    def _judge(self, step: int, interp_mse: Tensor, per_output: dict[str, Tensor]) -> None:
        """The validation at optimizer step ``step`` judged (``Judge``); then training stops
        if every output is solved on it, and a new round starts where one is due."""
        threshold = self.metrics["extrap"].success_threshold
        self.judge.validation(step, self.alive, interp_mse, per_output, threshold)
        solved = is_solved(per_output["interp"], self.validation_threshold)
        if self.hparams.stop_when_solved:
            self._stop_if_solved(step, solved)
        if self.hparams.rounds > 1 and not self.trainer.should_stop:
            self.restarts.end_round(
                step,
                self.planned_steps,
                solved,
                self.alive,
                self.optimizers().optimizer,
                self.lr_schedulers(),
                # This validation is the curve's next point; the one after it, the first of the
                # new rows.
                next_validation=len(self.curves.points.get(INTERP_MSE, [])) + 1,
            )

    @property
    def round_steps(self) -> int:
        """The optimizer steps of a round: the run's, divided by ``rounds``."""
        return self.restarts.round_steps(self.planned_steps)

    def _stop_if_solved(self, step: int, solved: Tensor) -> None:
        """Stop training once every living member has solved every output on the
        interpolation (validation) set (``solved`` ``[S, out]``: its MSE below the near-perfect
        model's there, Madsen & Johansen's rule, on validation data only). Each member is still
        judged at its best validation; the test set decides nothing here."""
        if not bool((solved.all(dim=1) | ~self.alive).all()):
            return
        self.trainer.should_stop = True
        log.info(
            "step %d: every output of every member is solved on the interpolation set; "
            "training stops here (stop_when_solved)",
            step,
        )

    def on_train_start(self) -> None:
        self.restarts.resumed()
        self.divergence.resumed()
        if self._captures_chunks():
            self._start_capturing()
        else:  # a checkpoint of a captured run resumed where it trains step by step
            for group in self.optimizers().optimizer.param_groups:
                if group.get("capturable") and self.device.type != "cuda":
                    group["capturable"] = False
        self._compiled_update = self._compile_update()

    def on_test_start(self) -> None:
        """Test every member at its best validation (``Judge.restore_best``)."""
        self.judge.restore_best(self.alive)

    @torch.no_grad()
    def on_test_epoch_end(self) -> None:
        """Every member's final metrics, ``{name: [S]}``: both sets at the best validation and
        what the judge kept (``Judge.final_metrics``)."""
        measured = self.metrics.measured()
        self._select(measured.interp_candidate_mse)
        metrics = self.metrics.summaries(measured)
        extrap = self.metrics["extrap"]
        metrics.update(self.judge.final_metrics(extrap, self.judges_each_output))
        self.final_metrics = {name: value.cpu() for name, value in metrics.items()}
        # [S, out]: each output solved at the best validation (what the test just measured).
        self.final_solved = is_solved(measured.per_output["extrap"], extrap.success_threshold).cpu()

    def member_network(self, member: int) -> nn.Module:
        """Member ``member`` as a plain network with its current parameters."""
        return self.members.member_network(member, self.device)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["members"] = {
            "best_parameters": {n: t.cpu() for n, t in self.judge.best_parameters.items()},
            "curves": self.curves.state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        members = checkpoint.get("members")
        if members is not None:
            self.judge.best_parameters = members["best_parameters"]
            self.curves.load(members["curves"])

    def configure_callbacks(self) -> list[L.Callback]:
        """Lightning's Rich progress bar, which counts batches (here chunks of steps: ``1/1`` at
        ``0.00it/s`` an epoch), gives way to one that counts optimizer steps."""
        bar = self.trainer.progress_bar_callback
        return [StepProgressBar()] if type(bar) is RichProgressBar else []

    def configure_optimizers(self) -> Optimizer | dict[str, Any]:
        """The optimizer and its learning-rate schedule over the run's optimizer steps (the
        regulariser's ramp is in fractions of them too)."""
        self.planned_steps = self._planned_steps()
        # Every log_every_n_steps steps, or its multiple that keeps the whole curve within what
        # TensorBoard shows by default.
        every = self.trainer.log_every_n_steps
        spread = math.ceil(self.planned_steps / (every * TENSORBOARD_DEFAULT_POINTS))
        self.batch_loss_every = every * max(1, spread)
        return configure_optimization(self, self.round_steps)
