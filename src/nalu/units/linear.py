"""The units' affine map, in the layout that a population's batched matmul runs fastest."""

import torch.nn.functional as F
from torch import Tensor


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """x Wᵀ + b for x ``[..., in]`` and W ``[out, in]``, as ``F.linear``, computed as (W xᵀ)ᵀ.

    The same product; but under ``vmap`` over a population's members the CPU's batched matmul
    runs about twice as fast, forward and backward, when the result's long side is the batch
    (``[S, out, B]``, then viewed as ``[S, B, out]``), than in ``F.linear``'s layout.
    """
    if x.dim() < 2:  # one sample, as nn.Linear takes it
        return F.linear(x, weight, bias)
    product = (weight @ x.mT).mT
    return product if bias is None else product + bias
