"""A population's member dimension: how S = 1 and S > 1 hold, run and re-initialise members.

At S = 1 the network is the plain network and batches are ``[B, in]``. At S > 1 every parameter
and buffer is stacked ``[S, ...]`` under the network's own names, and batches are
``[S, B, in]``, run through ``vmap`` over ``functional_call``. Each member's gradient is its
own and the optimizers update every element independently, so members never mix.
"""

import copy
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from hydra.utils import instantiate
from torch import Tensor, nn
from torch.func import functional_call, vmap

from nalu.config.errors import InvalidArgument
from nalu.data.counter_random import root_key
from nalu.results.record import POPULATION_ALIVE_FRACTION


def network_factory(network: Mapping[str, Any]) -> Callable[[], nn.Module]:
    """A call that builds the network of the Hydra config ``network`` anew, as
    ``instantiate(network)`` does. Hydra reads the config once where every nested
    ``_target_`` is a ``_partial_`` (or there is none): a population's members are then built
    by calling the partial it returns (``select``'s network: 3.4 ms a member, against 16 ms
    through ``instantiate``). A nested part that Hydra would build at once (a ``_target_``
    without ``_partial_``, as in an ``nn.Sequential`` of units) would be one module shared by
    every call, so such a config is instantiated at each call."""
    if any(_builds_at_once(value) for value in network.values()):
        return functools.partial(instantiate, network)
    return instantiate(network, _partial_=True)


def _builds_at_once(node: Any) -> bool:
    if isinstance(node, Mapping):
        if "_target_" in node and not node.get("_partial_", False):
            return True
        return any(_builds_at_once(value) for value in node.values())
    if isinstance(node, Sequence) and not isinstance(node, str):
        return any(_builds_at_once(value) for value in node)
    return False


def build_network(network: Mapping[str, Any], seed: int, draw: int = 0) -> nn.Module:
    """The network of the Hydra config ``network`` as ``seed`` initialises it
    (``initialised``)."""
    return initialised(network_factory(network), seed, draw)


def initialised(build: Callable[[], nn.Module], seed: int, draw: int = 0) -> nn.Module:
    """The network that ``build`` (``network_factory``) makes with ``seed``'s initialisation,
    without touching the caller's random state; its ``draw``-th new initialisation for
    ``draw`` > 0 (a restart), from a seed that mixes the two (torch's CPU generator keeps only
    a seed's low 32 bits, so ``seed + draw · 2³²`` would repeat the first)."""
    if draw:
        seed = int(root_key(seed, draw)) & 0xFFFFFFFF
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def stack_parameters(template: nn.Module, members: Sequence[nn.Module]) -> None:
    """Replace every parameter and buffer of ``template`` by the members' values stacked
    ``[S, ...]``, under the same name, so that a state dict reads like the network's."""
    for name, _ in list(template.named_parameters()):
        owner_name, _, attribute = name.rpartition(".")
        stacked = torch.stack([m.get_parameter(name).detach() for m in members])
        setattr(template.get_submodule(owner_name), attribute, nn.Parameter(stacked))
    for name, _ in list(template.named_buffers()):
        owner_name, _, attribute = name.rpartition(".")
        stacked = torch.stack([m.get_buffer(name) for m in members])
        template.get_submodule(owner_name).register_buffer(attribute, stacked)


def _state(network: nn.Module, prefix: str) -> dict[str, Tensor]:
    state = {f"{prefix}{n}": t for n, t in network.named_parameters()}
    state.update((f"{prefix}{n}", t) for n, t in network.named_buffers())
    return state


class Members:
    """The S members of one network, each initialised by its seed: ``network`` holds them all
    (see the module's docstring), and the methods run, mask, pick out and re-initialise them.

    ``network`` is a Hydra config (``{"_target_": ...}``) or, for one member only, a built
    ``nn.Module`` (which then cannot be re-initialised)."""

    def __init__(self, network: dict[str, Any] | nn.Module, seeds: Sequence[int]) -> None:
        self.seeds = list(seeds)
        self._plain: nn.Module | None = None  # ``member_network``'s copy
        if isinstance(network, nn.Module):
            if len(self.seeds) > 1:
                raise InvalidArgument(
                    "network",
                    type(network).__name__,
                    "a population builds each member from its seed: pass the network's config "
                    "({'_target_': ...}), not a built module",
                )
            self.config = None
            self.network = network
            return
        self.config = network
        self._build = network_factory(network)
        members = [initialised(self._build, seed) for seed in self.seeds]
        if len(members) > 1:
            stack_parameters(members[0], members)
        self.network = members[0]

    @property
    def size(self) -> int:
        return len(self.seeds)

    @property
    def is_population(self) -> bool:
        return self.size > 1

    def run(self, module: nn.Module, *inputs: Tensor) -> Any:
        """``module`` (the network, or a wrapper that holds it as ``.network``) for every member:
        at S = 1 called directly on ``[B, ...]`` inputs; at S > 1 on ``[S, B, ...]`` through
        ``vmap`` over the stacked parameters, its outputs gaining the leading member dimension."""
        if not self.is_population:
            return module(*inputs)
        state = _state(self.network, "" if module is self.network else "network.")
        # "different": a stochastic unit's noise is each member's own.
        run = vmap(lambda s, args: functional_call(module, s, args), randomness="different")
        return run(state, inputs)

    def summary(self, alive: Tensor) -> dict[str, float]:
        """What a population logs beside its members' medians: the fraction of them still
        training (``alive`` ``[S]``). Nothing at S = 1, where the run stops when its one member
        diverges, so the fraction would stay 1."""
        if not self.is_population:
            return {}
        return {POPULATION_ALIVE_FRACTION: float(alive.float().mean())}

    def why_none_is_left(self, diverged_loss: Tensor) -> str:
        """Why training stops once every member has diverged (``diverged_loss`` ``[S]``: each
        member's first non-finite objective): at S = 1 the loss itself, as a plain run says."""
        if self.is_population:
            return "every member's train loss is not finite"
        return f"train loss is {float(diverged_loss[0])}"

    def mask(self, flags: Tensor, like: Tensor) -> Tensor:
        """``[S]`` flags shaped to select whole members of a parameter like ``like``."""
        if not self.is_population:
            return flags.reshape((1,) * like.dim())
        return flags.view(-1, *[1] * (like.dim() - 1))

    def rows(self, flags: Tensor, like: Tensor) -> Tensor:
        """``[S, out]`` flags shaped to select output rows of a parameter like ``like``
        (``[S, out, ...]``, or ``[out, ...]`` at S = 1: the first dimension of an independent
        output unit's parameters is the output's)."""
        if not self.is_population:
            return flags[0].view(-1, *[1] * (like.dim() - 1))
        return flags.view(*flags.shape, *[1] * (like.dim() - 2))

    def of(self, tensor: Tensor, member: int) -> Tensor:
        """Member ``member``'s part of a stacked ``tensor`` (a view)."""
        return tensor[member] if self.is_population else tensor

    def per_member(self, tensor: Tensor) -> Tensor:
        """``tensor`` as ``[S, n]``: each member's elements in a row."""
        return tensor.reshape(self.size, -1)

    def fresh(self, draw: int) -> dict[str, Tensor]:
        """Every member's parameters as its seed initialises them for restart ``draw``
        (``initialised``'s draw), shaped as the network's."""
        networks = [self.fresh_member(member, draw) for member in range(self.size)]
        return {
            name: torch.stack([n.get_parameter(name).detach() for n in networks])
            if self.is_population
            else networks[0].get_parameter(name).detach()
            for name, _ in self.network.named_parameters()
        }

    def fresh_member(self, member: int, draw: int) -> nn.Module:
        """Member ``member``'s network as its seed initialises it for ``draw``."""
        if self.config is None:
            raise InvalidArgument("network", "a built module", "cannot be re-initialised")
        return initialised(self._build, self.seeds[member], draw)

    def member_network(self, member: int, device: torch.device) -> nn.Module:
        """Member ``member`` as a plain network with its current parameters, on ``device``."""
        if not self.is_population:
            return self.network
        if self._plain is None:
            # One plain network, copied for each member: building each (Hydra's instantiate)
            # took 16 ms against a copy's 1.3 (`select`'s 900 members: 15 s of its report);
            # the values are replaced anyway.
            self._plain = self.fresh_member(0, 0)
        network = copy.deepcopy(self._plain)
        network.load_state_dict({n: t[member] for n, t in self.network.state_dict().items()})
        return network.to(device)

    def clip_norms(self, gradients: list[Tensor], value: float) -> None:
        """Clip each member's gradient norm to ``value`` (``torch.nn.utils.clip_grad_norm_``'s
        factor, one per member)."""
        squares = sum(self.per_member(g).square().sum(dim=1) for g in gradients)
        factor = (value / (squares.sqrt() + 1e-6)).clamp(max=1.0)
        for gradient in gradients:
            gradient.mul_(factor.view(-1, *[1] * (gradient.dim() - 1)))
