"""What the evaluation sets measure of every member: per output and candidate, on the
interpolation and the extrapolation set, and which candidate answers each output."""

from collections.abc import Sequence
from typing import NamedTuple

from torch import Tensor, nn

from nalu.data.datamodule import EVALUATION_SPLITS
from nalu.results.metrics import MemberOutputMSE
from nalu.results.record import metric_name
from nalu.units.contract import offers_candidates
from nalu.units.selection import best_candidates


class MemberEvaluation(nn.Module):
    """One member's answers ``[B, C, out]`` for the evaluation metrics: every candidate's, or
    the network's own as the one candidate."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.offers_candidates = offers_candidates(network)

    def forward(self, x: Tensor) -> Tensor:
        if self.offers_candidates:
            return self.network.candidates(x)
        return self.network(x).unsqueeze(-2)


class Measured(NamedTuple):
    """An evaluation's results: per set the ``[S, out]`` MSEs of the answering candidates
    (``per_output``) and the targets' mean squares, and the interpolation MSE of every
    candidate ``[S, C, out]``."""

    per_output: dict[str, Tensor]
    mean_squares: dict[str, Tensor]
    interp_candidate_mse: Tensor


class Evaluation(nn.ModuleDict):
    """A ``MemberOutputMSE`` per evaluation set, keyed by its name (``EVALUATION_SPLITS``), of
    S members with ``output_operations`` each and ``candidates`` answers per output; the
    extrapolation set's carries the outputs' ``success_threshold``."""

    def __init__(
        self,
        output_operations: Sequence[Sequence[str]],
        success_threshold: Sequence[Sequence[float]] | None,
        candidates: int,
    ) -> None:
        super().__init__(
            {
                split: MemberOutputMSE(
                    output_operations,
                    success_threshold if split == "extrap" else None,
                    candidates,
                )
                for split in EVALUATION_SPLITS
            }
        )

    def add_batch(self, dataloader_idx: int, answers: Tensor, targets: Tensor) -> None:
        """Every member's ``answers`` ``[S, B, C, out]`` on a batch of the evaluation set that
        Lightning numbers ``dataloader_idx``."""
        self[EVALUATION_SPLITS[dataloader_idx]].update(answers, targets)

    @property
    def measured_initially(self) -> bool:
        """Whether each set's MSE at initialisation is known (the normalised error's base)."""
        return not self["extrap"].initial_mse.isnan().any()

    def keep_initial(self, per_output: dict[str, Tensor]) -> None:
        """Each set's per-output MSEs ``[S, out]`` as measured at initialisation."""
        for split, metric in self.items():
            metric.initial_mse.copy_(per_output[split])

    def measured(self) -> Measured:
        """What the sets measured since the last call (the metrics are reset). Per output the
        candidate of the lowest interpolation MSE answers (``best_candidates``; the one
        candidate of an ordinary network): the extrapolation set never chooses."""
        measured = {split: metric.measured() for split, metric in self.items()}
        for metric in self.values():
            metric.reset()
        choice = best_candidates(measured["interp"]["candidate_mse"])  # [S, out]
        per_output = {
            split: values["candidate_mse"].gather(1, choice.unsqueeze(1)).squeeze(1)
            for split, values in measured.items()
        }
        mean_squares = {split: values["target_mean_square"] for split, values in measured.items()}
        return Measured(per_output, mean_squares, measured["interp"]["candidate_mse"])

    def summaries(self, measured: Measured) -> dict[str, Tensor]:
        """``{metric name: [S]}``: each set's named metrics (``MemberOutputMSE.summary``), named
        ``<split>/<name>``."""
        return {
            metric_name(split, name): value
            for split in EVALUATION_SPLITS
            for name, value in self[split]
            .summary(measured.per_output[split], measured.mean_squares[split])
            .items()
        }
