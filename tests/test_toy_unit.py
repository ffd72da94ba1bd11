"""Adding a unit is its module and its yaml: a toy unit written into a temporary package and a
temporary copy of conf/ passes the suite every model config passes (tests/test_model_configs.py),
with no other file touched."""

import inspect
import shutil
import sys

import conftest
import pytest
import test_model_configs as suite
from conftest import TINY

TOY_MODULE = '''
import torch
from torch import nn


class ToyAddition(nn.Module):
    """z = W x with W clamped to [-1, 1] and an L1 penalty: a unit that uses every hook."""

    independent_outputs = True

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.weight, -0.5, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.weight.T

    def regularization(self) -> torch.Tensor:
        return self.weight.abs().sum()

    def clamp_parameters(self) -> None:
        with torch.no_grad():
            self.weight.clamp_(-1.0, 1.0)

    def effective_weights(self) -> dict[str, torch.Tensor]:
        return {"W": self.weight}
'''

TOY_CONFIG = """# @package _global_
defaults:
  - override /regularizer: sparse

model:
  _target_: toy_units.toy.ToyAddition
  in_features: ${data.in_features}
  out_features: ${data.out_features}
"""

# The suite's checks, each parametrized over the model configs.
SHARED_CHECKS = [
    check
    for name, check in inspect.getmembers(suite, inspect.isfunction)
    if name.startswith("test_") and "model" in inspect.signature(check).parameters
]


@pytest.fixture
def toy_unit(tmp_path, monkeypatch):
    package = tmp_path / "packages" / "toy_units"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "toy.py").write_text(TOY_MODULE)
    config_dir = tmp_path / "conf"
    shutil.copytree(conftest.CONFIG_DIR, config_dir)
    (config_dir / "model" / "toy.yaml").write_text(TOY_CONFIG)
    monkeypatch.syspath_prepend(str(tmp_path / "packages"))
    monkeypatch.setattr(conftest, "CONFIG_DIR", config_dir)
    yield
    sys.modules.pop("toy_units.toy", None)
    sys.modules.pop("toy_units", None)


def test_the_suite_has_checks_to_run():
    assert sorted(check.__name__ for check in SHARED_CHECKS) == [
        "test_a_members_network_is_the_one_hydra_builds_from_its_seed",
        "test_a_network_of_independent_outputs_answers_output_j_from_row_j_alone",
        "test_a_population_member_is_the_single_run_of_its_seed",
        "test_clamps_and_regularisers_are_honoured",
        "test_each_unit_reads_back_or_says_it_cannot",
        "test_forward_and_gradients_are_finite_at_init_on_signed_inputs",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("check", SHARED_CHECKS, ids=lambda check: check.__name__)
def test_a_toy_unit_passes_every_model_check(check, toy_unit, tmp_path):
    arguments = {"model": "toy", "tmp_path": tmp_path / "run", "tiny_overrides": list(TINY)}
    check(**{name: arguments[name] for name in inspect.signature(check).parameters})
