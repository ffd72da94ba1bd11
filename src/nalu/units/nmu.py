"""The Neural Multiplication Unit (Madsen & Johansen 2020, "Neural Arithmetic Units")."""

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch._C._functorch import is_batchedtensor
from torch.utils.checkpoint import checkpoint

from nalu.config import rules
from nalu.units.nau import sparsity_penalty


def magnitude_product(terms: Tensor, dim: int, max_log_magnitude: float) -> Tensor:
    """Π terms along ``dim`` for terms >= 0, as exp(Σ log term), the log clipped from above
    (this project's own numerics; the papers' product has no clip).

    A running float32 product of 100 factors of size up to 50 leaves float32's range long before
    the end; summing logs cannot, and the clip keeps the result (and its square in the MSE)
    finite. Exact zeros give log(tiny), i.e. a product of (almost) 0 with a zero gradient
    instead of log(0)'s inf·0 = NaN.
    """
    tiny = torch.finfo(terms.dtype).tiny
    return torch.exp(torch.log(terms.clamp_min(tiny)).sum(dim).clamp(max=max_log_magnitude))


def signed_product(terms: Tensor, dim: int, max_log_magnitude: float) -> Tensor:
    """Π terms along ``dim`` as sign · ``magnitude_product`` of the magnitudes."""
    # The sign has no gradient: detached, its product costs no backward pass.
    sign = torch.sign(terms.detach()).prod(dim)
    return sign * magnitude_product(terms.abs(), dim, max_log_magnitude)


class NMUProduct(torch.autograd.Function):
    """z = ``signed_product(nmu_factors(W, x))`` with the same values and gradients, computed
    without keeping the ``[..., out, in]`` factors for the backward pass: it recomputes them
    there from W and x. Under ``torch.compile`` writing and rereading them cost more than the
    fused arithmetic (about half of a compiled step of ``experiment=solve`` at 300 inputs), and
    the sign as the parity of negative factors fuses into one loop where a product of signs
    does not. ``apply(W, x, max_log_magnitude)`` returns (z, Σ log|f|)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(weight: Tensor, x: Tensor, max_log_magnitude: float) -> tuple[Tensor, Tensor]:
        factors = torch.addcmul(1 - weight, weight, x.unsqueeze(-2))
        # The sign's parity and zero test counted in the factors' float type (exact up to 2^24
        # factors), not as int64 and bool: compiled for a CPU, their mask conversions were most
        # of the fused kernel (the hand-written compiled solve step at S = 25: 14.0 -> 10.0 ms).
        negative = (factors < 0).to(factors.dtype).sum(-1)
        nonzero = 1.0 - (factors == 0).to(factors.dtype).amax(-1)
        sign = nonzero - 2.0 * torch.remainder(negative, 2.0) * nonzero  # +0.0 at a zero
        tiny = torch.finfo(factors.dtype).tiny
        log_magnitude = factors.abs_().clamp_min_(tiny).log_().sum(-1)
        return sign * log_magnitude.clamp(max=max_log_magnitude).exp(), log_magnitude

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
        weight, x, ctx.max_log_magnitude = inputs
        ctx.save_for_backward(weight, x, *output)
        ctx.mark_non_differentiable(output[1])

    @staticmethod
    def backward(ctx: Any, grad_z: Tensor, _: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        gradients = _product_gradients(
            *ctx.saved_tensors, grad_z, ctx.max_log_magnitude, tuple(ctx.needs_input_grad[:2])
        )
        return (*gradients, None)


def _product_gradients(
    weight: Tensor,
    x: Tensor,
    z: Tensor,
    log_magnitude: Tensor,
    grad_z: Tensor,
    max_log_magnitude: float,
    needs: tuple[bool, bool],
) -> tuple[Tensor | None, Tensor | None]:
    """The gradients of W and x (where ``needs`` them) of the product z = ``NMUProduct``."""
    # ∂z_j/∂f_ji = z_j / f_ji, zero where the log was clipped (|f| < tiny, log|z| > max).
    live = grad_z * z * (log_magnitude <= max_log_magnitude)
    return _factor_gradients(weight, x, live, needs)


def _factor_gradients(
    weight: Tensor, x: Tensor, per_output: Tensor, needs: Sequence[bool]
) -> tuple[Tensor | None, Tensor | None]:
    """The gradients of W and x (where ``needs`` them) through the factors f_ji = W_ji x_i + 1 −
    W_ji, recomputed, for an upstream ∂L/∂f_ji = ``per_output``_j / f_ji (0 where |f| < tiny):
    ∂f_ji/∂W_ji = x_i − 1, ∂f_ji/∂x_i = W_ji."""
    factors = torch.addcmul(1 - weight, weight, x.unsqueeze(-2))
    tiny = torch.finfo(factors.dtype).tiny
    per_factor = torch.where(factors.abs() >= tiny, factors, torch.inf).reciprocal_()
    per_factor.mul_(per_output.unsqueeze(-1))
    grad_x = (per_factor * weight).sum(-2) if needs[1] else None
    grad_weight = None
    if needs[0]:
        grad_weight = per_factor.mul_((x - 1).unsqueeze(-2)).sum_to_size(weight.shape)
    return grad_weight, grad_x


# Compiled at their first call in each run (the run's ``torch.compiler.reset`` clears them).
_product_kernel = torch.compile(NMUProduct.forward, dynamic=False)
_gradient_kernel = torch.compile(_product_gradients, dynamic=False)


@torch.library.custom_op("nalu::member_nmu_product", mutates_args=())
def member_nmu_product(
    weight: Tensor, x: Tensor, max_log_magnitude: float
) -> tuple[Tensor, Tensor]:
    """``NMUProduct`` for a population's compiled step on a CPU: an operator that the step's
    graph calls as it is, with its own backward and a rule for ``vmap`` that multiplies every
    member at once (W ``[S, 1, out, in]`` by x ``[S, B, in]``), each of the two a compiled
    kernel of its own. Under ``vmap`` ``torch.compile`` differentiates ``NMUProduct``'s forward
    instead of calling its backward (``LogMagnitude``), and the differentiated backward writes
    the factors' gradients ``[S, B, out, in]`` before summing them over the batch: a compiled
    ``experiment=solve`` step at S = 25 took 15.0 ms so, 12.7 through this operator."""
    return _product_kernel(weight, x, max_log_magnitude)


@member_nmu_product.register_fake
def _(weight: Tensor, x: Tensor, max_log_magnitude: float) -> tuple[Tensor, Tensor]:
    shape = torch.broadcast_shapes(weight.shape, x.unsqueeze(-2).shape)[:-1]
    return weight.new_empty(shape), weight.new_empty(shape)


@torch.library.custom_op("nalu::member_nmu_product_backward", mutates_args=())
def _member_nmu_product_backward(
    weight: Tensor,
    x: Tensor,
    z: Tensor,
    log_magnitude: Tensor,
    grad_z: Tensor,
    max_log_magnitude: float,
    needs_weight: bool,
    needs_x: bool,
) -> tuple[Tensor, Tensor]:
    """The gradients of ``member_nmu_product``'s W and x; an empty tensor for one not needed."""
    grad_weight, grad_x = _gradient_kernel(
        weight, x, z, log_magnitude, grad_z, max_log_magnitude, (needs_weight, needs_x)
    )
    return (
        grad_weight if grad_weight is not None else weight.new_empty(0),
        grad_x if grad_x is not None else x.new_empty(0),
    )


@_member_nmu_product_backward.register_fake
def _(weight: Tensor, x: Tensor, *rest: Any) -> tuple[Tensor, Tensor]:
    *_, needs_weight, needs_x = rest  # z, log_magnitude, grad_z, max_log_magnitude, the needs
    return (
        weight.new_empty(weight.shape if needs_weight else 0),
        x.new_empty(x.shape if needs_x else 0),
    )


def _setup_member_product(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
    weight, x, ctx.max_log_magnitude = inputs
    ctx.save_for_backward(weight, x, *output)


def _member_product_backward(
    ctx: Any, grad_z: Tensor, _: Tensor
) -> tuple[Tensor | None, Tensor | None, None]:
    weight, x, z, log_magnitude = ctx.saved_tensors
    needs_weight, needs_x = ctx.needs_input_grad[:2]
    grad_weight, grad_x = _member_nmu_product_backward(
        weight, x, z, log_magnitude, grad_z, ctx.max_log_magnitude, needs_weight, needs_x
    )
    return (grad_weight if needs_weight else None, grad_x if needs_x else None, None)


member_nmu_product.register_autograd(_member_product_backward, setup_context=_setup_member_product)


def _members_first(
    size: int, in_dims: Sequence[int | None], *tensors: Tensor
) -> tuple[Tensor, ...]:
    """``tensors`` with ``vmap``'s member axis (``in_dims``) first, expanded where absent."""
    return tuple(
        t.expand(size, *t.shape) if dim is None else t.movedim(dim, 0)
        for t, dim in zip(tensors, in_dims[: len(tensors)], strict=True)
    )


def _weight_against(weight: Tensor, x: Tensor) -> Tensor:
    """A member-first W ``[S, out, in]`` as ``[S, 1, ..., out, in]``: one axis of 1 for each of
    the member-first x's axes before its last, so that every member's W meets its own batch."""
    extra = x.dim() - weight.dim() + 1
    return weight.view(weight.shape[0], *[1] * extra, *weight.shape[1:]) if extra > 0 else weight


@member_nmu_product.register_vmap
def _(
    info: Any, in_dims: tuple[Any, ...], weight: Tensor, x: Tensor, max_log_magnitude: float
) -> tuple[tuple[Tensor, Tensor], tuple[int, int]]:
    weight, x = _members_first(info.batch_size, in_dims, weight, x)
    return member_nmu_product(_weight_against(weight, x), x, max_log_magnitude), (0, 0)


@_member_nmu_product_backward.register_vmap
def _(
    info: Any, in_dims: tuple[Any, ...], *arguments: Any
) -> tuple[tuple[Tensor, Tensor], tuple[int | None, int | None]]:
    # weight, x, z, log_magnitude, grad_z, then max_log_magnitude and the two needs
    weight, x, *outputs = _members_first(info.batch_size, in_dims, *arguments[:5])
    needs_weight, needs_x = arguments[-2:]
    grad_weight, grad_x = _member_nmu_product_backward(
        _weight_against(weight, x), x, *outputs, *arguments[5:]
    )
    if needs_weight:
        grad_weight = grad_weight.view(weight.shape)
    return (grad_weight, grad_x), (0 if needs_weight else None, 0 if needs_x else None)


# Factors of one member's product from which ``member_nmu_product`` pays: each call costs about
# 0.1 ms more than the compiled graph's own loops, and the calls save more than that where a
# member has 128 × 10 × 100 factors (experiment=solve), not where it has 128 × 1 × 2 (the NALM
# task, whose NMU and NMRU populations trained 7-8% slower through it).
MEMBER_PRODUCT_MIN_FACTORS = 2**14


def in_a_cpu_population(weight: Tensor, x: Tensor) -> bool:
    """Whether a compiled product is a population's on a CPU (under ``vmap``) and large enough
    for ``member_nmu_product``."""
    if x.device.type != "cpu" or not (is_batchedtensor(weight) or is_batchedtensor(x)):
        return False
    factors = torch.broadcast_shapes(weight.shape, x.unsqueeze(-2).shape)
    return math.prod(factors) >= MEMBER_PRODUCT_MIN_FACTORS


def nmu_product(weight: Tensor, x: Tensor, max_log_magnitude: float) -> Tensor:
    """Madsen & Johansen 2020, eq. 12: NMU_j = Π_i (W_ji x_i + 1 − W_ji) for x ``[..., in]`` and W
    ``[out, in]``: ``signed_product`` of ``nmu_factors``. Compiled, as ``NMUProduct`` (1.8×
    faster), as ``batch_last_product`` where x lies batch-first in memory (see
    ``batch_first``), or as ``member_nmu_product`` in a large population on a CPU
    (``in_a_cpu_population``); eagerly as written, since recomputing the factors op by op costs more
    there than keeping them (up to 1.7× at a population of 25 on the article's problem)."""
    if torch.compiler.is_compiling():
        if batch_first(x) and (weight.dim() == 2 or weight.shape[-3] == 1):
            # W's batch axis (absent, or 1 as in [S, 1, out, in]) leaves: [..., out, in] rows.
            rows = weight if weight.dim() == 2 else weight.squeeze(-3)
            return batch_last_product(rows, x.mT, max_log_magnitude).mT
        if in_a_cpu_population(weight, x):
            return member_nmu_product(weight, x, max_log_magnitude)[0]
        return NMUProduct.apply(weight, x, max_log_magnitude)[0]
    return signed_product(nmu_factors(weight, x), dim=-1, max_log_magnitude=max_log_magnitude)


def batch_first(x: Tensor) -> bool:
    """Whether ``x`` ``[..., B, in]`` is laid out with its batch axis innermost in memory, as the
    outputs of a unit below are (their (W xᵀ)ᵀ, ``nalu.units.linear``)."""
    return x.dim() >= 2 and x.stride(-2) == 1 and x.stride(-1) != 1


def batch_last_product(weight: Tensor, x_t: Tensor, max_log_magnitude: float) -> Tensor:
    """``nmu_product`` of W ``[..., out, in]`` and the batch ``x_t`` ``[..., in, B]`` (the batch
    last), ``[..., out, B]``: the factors taken ``[..., out, in, B]``, so that compiled loops
    read a batch-first x along its contiguous axis. A population's compiled step of an NAU
    feeding an NMU (20 × 10 weights, S = 20) took 4.4 ms through ``NMUProduct``, 0.9 here."""
    factors = torch.addcmul((1 - weight).unsqueeze(-1), weight.unsqueeze(-1), x_t.unsqueeze(-3))
    return signed_product(factors, dim=-2, max_log_magnitude=max_log_magnitude)


def number_pair(bounds: Sequence[float]) -> tuple[float, float]:
    """``(low, high)`` as floats, from a checked ``[low, high]`` (a list from a config)."""
    low, high = bounds
    return (float(low), float(high))


def nmu_factors(
    weight: Tensor, x: Tensor, noise_range: tuple[float, float] | None = None
) -> Tensor:
    """``[..., out, in]`` factors W_ji x_i + 1 − W_ji of Π_i (Madsen & Johansen 2020, eq. 12).

    With ``noise_range`` each is the stochastic NMU's (the sNMU paper of Mistry et al. 2022):
    (W x n + 1 − W) / (W n + 1 − W) with n ~ U[noise_range] per sample and input.
    """
    x = x.unsqueeze(-2)
    if noise_range is None:
        return weight * x + (1 - weight)
    low, high = noise_range
    noise = low + (high - low) * torch.rand_like(x)
    return (weight * x * noise + (1 - weight)) / (weight * noise + (1 - weight))


class LogMagnitude(torch.autograd.Function):
    """``log_magnitude(W, m)`` with the same values and gradients, computed without keeping the
    ``[..., out, in]`` factors for the backward pass, as ``NMUProduct``: the backward recomputes
    them. Where ``torch.compile`` traces a call under ``vmap`` (a population's step) it
    differentiates the forward instead of calling this backward (vmap's batched tensors report
    no gradient, so the call is inlined: pytorch/pytorch#186303), and would keep the factors:
    the forward is a ``checkpoint`` for that case, recomputed there too. Kept, they are written
    and reread every step: a compiled step of ``experiment=solve`` at S = 25 took 21 ms, not 19."""

    generate_vmap_rule = True

    @staticmethod
    def forward(weight: Tensor, magnitudes: Tensor) -> Tensor:
        return checkpoint(_log_magnitude, weight, magnitudes, use_reentrant=False)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:
        weight, magnitudes = ctx.saved_tensors
        # ∂ log f_ji / ∂f_ji = 1 / f_ji (f ≥ 0 here), zero where the log was clipped (f < tiny).
        return _factor_gradients(weight, magnitudes, grad, ctx.needs_input_grad)


def log_magnitude(weight: Tensor, magnitudes: Tensor) -> Tensor:
    """Σ_i log(W_ji |x_i| + 1 − W_ji) for ``magnitudes`` |x| ``[..., in]``: log|NMU_j| wherever W
    is in {0, 1} (this project's own: Madsen & Johansen 2020's eq. 12 on magnitudes, in logs,
    for the fit in log space). Compiled, as
    ``LogMagnitude``; eagerly as written (see ``nmu_product``).

    Fitted to log|y|, its gradient at W ≈ 0 follows the inputs whose magnitudes make up |y|
    (Cov(log|y|, |x_i|) ≠ 0 for them alone), where the MSE's gradient toward a product of
    signed inputs is the same for every input (E[y·x_i] = 0): a saddle that a product unit
    leaves only through the pairs' second-order terms, more slowly the more inputs it sees."""
    if torch.compiler.is_compiling():
        return LogMagnitude.apply(weight, magnitudes)
    return _log_magnitude(weight, magnitudes)


def _log_magnitude(weight: Tensor, magnitudes: Tensor) -> Tensor:
    """``log_magnitude`` as written."""
    tiny = torch.finfo(magnitudes.dtype).tiny
    return torch.log(nmu_factors(weight, magnitudes).clamp_min(tiny)).sum(-1)


class NeuralMultiplicationUnit(nn.Module):
    """z_j = Π_i (W_ji x_i + 1 − W_ji), W clamped to [0, 1] (Madsen & Johansen 2020, eqs. 10, 12).

    W_ji = 1 multiplies x_i in, W_ji = 0 leaves a factor 1; unlike NALU's log path the factor
    keeps x_i's sign, so x0·x1 of (1.5, −2) is −3.

    ``noise_range=(1, 5)`` makes it the stochastic NMU (sNMU: Mistry, Farrahi & Hare 2022,
    "Improving the Robustness of Neural Multiplication Units with Reversible Stochasticity",
    not their primer of the same year): in training each
    input is multiplied by noise n ~ U[noise_range] and the output divided by the NMU of n, i.e.
    each factor becomes (W x n + 1 − W) / (W n + 1 − W); exact weights still give Π x_i, while
    inexact ones are penalised at many scales at once. Evaluation is noise-free.

    Init: the paper's U[0.25, 0.75] makes each factor about x/2, and 100 of them overflow float32
    (and swamp the loss) at the first step. ``init_range=(0, 0.01)`` starts every factor near 1,
    so the product of 100 inputs is O(1) and W grows only toward the inputs that help.
    ``max_log_magnitude`` caps log|z| (e^20 ≈ 5e8) so that outputs and losses stay finite.
    """

    # Output j depends on row j of every parameter only: each output is a model of its own.
    independent_outputs = True

    def __init__(
        self,
        in_features: int,
        out_features: int,
        init_range: Sequence[float] = (0.0, 0.01),
        max_log_magnitude: float = 20.0,
        noise_range: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        rules.check_arguments(
            "NeuralMultiplicationUnit",
            init_range=init_range,
            max_log_magnitude=max_log_magnitude,
            noise_range=noise_range,
        )
        self.in_features = in_features
        self.out_features = out_features
        self.init_range = number_pair(init_range)
        self.noise_range = None if noise_range is None else number_pair(noise_range)
        self.max_log_magnitude = max_log_magnitude
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.weight, *self.init_range)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and self.noise_range is not None:
            factors = nmu_factors(self.weight, x, self.noise_range)
            return signed_product(factors, dim=-1, max_log_magnitude=self.max_log_magnitude)
        return nmu_product(self.weight, x, self.max_log_magnitude)

    def log_magnitude(self, x: Tensor) -> Tensor:
        """``[..., out]``: log|z_j| from the factors' magnitudes (``log_magnitude``), noise-free."""
        return log_magnitude(self.weight, x.abs())

    @torch.no_grad()
    def clamp_parameters(self) -> None:
        self.weight.clamp_(0.0, 1.0)

    def regularization(self) -> Tensor:
        return sparsity_penalty(self.weight)

    def effective_weights(self) -> dict[str, Tensor]:
        """The matrices that define the arithmetic, by name, for heatmaps and read-back."""
        return {"W": self.weight}

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"init_range={self.init_range}, max_log_magnitude={self.max_log_magnitude}, "
            f"noise_range={self.noise_range}"
        )
