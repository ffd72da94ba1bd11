import logging
import math

import lightning as L
import pytest
import torch
from conftest import small_datamodule
from hydra.utils import get_method
from omegaconf import OmegaConf

import nalu.data
import nalu.training.progress
from nalu.cli.common import CONFIG_DIR
from nalu.config.errors import InvalidArgument
from nalu.config.rules import ARGUMENT_RULES
from nalu.config.validation import constructor_arguments
from nalu.data import ArithmeticDataModule
from nalu.data.batches import epoch_orders, order_key
from nalu.training.progress import ProgressLines


def test_sets_have_their_sizes_and_ranges():
    datamodule = small_datamodule(interp_size=50, extrap_size=70)
    train, interp, extrap = (datamodule.datasets[s] for s in ("train", "interp", "extrap"))
    assert (len(train), len(interp), len(extrap)) == (100, 50, 70)
    assert train.inputs.abs().max() <= 10 and interp.inputs.abs().max() <= 10
    # The extrapolation set really is U[-50, 50] (the article's code drew it from [-10, 10]).
    assert 40 < extrap.inputs.abs().max() <= 50
    assert torch.allclose(extrap.targets, datamodule.problem.targets(extrap.inputs))


def test_sets_are_fixed_by_their_own_seeds():
    a, b = small_datamodule(shuffle_seed=0), small_datamodule(shuffle_seed=5)
    for split in ("train", "interp", "extrap"):
        assert torch.equal(a.datasets[split].inputs, b.datasets[split].inputs)
    # Drawn from one stream, the two sets would agree to rounding once extrap is scaled by 1/5.
    interp, extrap = a.datasets["interp"].inputs, a.datasets["extrap"].inputs
    assert (interp - extrap[: len(interp)] / 5).abs().max() > 1
    other_seed = small_datamodule(train_seed=9)
    assert not torch.equal(other_seed.datasets["train"].inputs, a.datasets["train"].inputs)


def test_training_batches_are_slices_of_a_per_epoch_permutation():
    datamodule = small_datamodule()
    loader = datamodule.train_dataloader()

    def epoch(number: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        loader.sampler.set_epoch(number)
        return list(loader)  # ordinary (x, y) batches, one per optimizer step

    batches = epoch(0)
    assert [len(x) for x, _ in batches] == [32, 32, 32, 4]
    seen = torch.cat([x for x, _ in batches])
    train = datamodule.datasets["train"].inputs
    assert sorted(seen[:, 0].tolist()) == sorted(train[:, 0].tolist())
    assert not torch.equal(seen, train)
    assert not torch.equal(torch.cat([x for x, _ in epoch(1)]), seen)
    assert torch.equal(torch.cat([x for x, _ in epoch(0)]), seen)


def test_shuffling_depends_on_seed_and_epoch_only():
    def order(seed: int, epoch: int) -> list[int]:
        return epoch_orders(order_key(seed), epoch, 10).tolist()

    # Not the global generator's state: the same order after reseeding it differently.
    torch.manual_seed(1)
    first = order(0, 0)
    torch.manual_seed(2)
    assert order(0, 0) == first
    assert sorted(order(4, 2)) == list(range(10))
    assert len({tuple(order(s, e)) for s in range(3) for e in range(3)}) == 9


def test_evaluation_loaders_give_each_set_whole_by_default():
    datamodule = small_datamodule()
    interp, extrap = datamodule.val_dataloader()
    assert len(interp) == len(extrap) == 1
    x, _ = next(iter(extrap))
    assert torch.equal(x, datamodule.datasets["extrap"].inputs)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"train_range": (10.0, -10.0)}, "train_range"),
        ({"extrap_range": (5.0, 5.0)}, "extrap_range"),
        ({"train_size": 0}, "train_size"),
        ({"batch_size": -1}, "batch_size"),
        ({"operations": ("div",), "min_abs_denominator": 20.0}, "min_abs_denominator"),
    ],
)
def test_bad_arguments_name_the_field(kwargs, field):
    with pytest.raises(InvalidArgument) as error:
        small_datamodule(**kwargs)
    assert error.value.name == field


def test_a_users_own_lightning_module_trains_on_the_datamodule(caplog, monkeypatch):
    # No line for time gone by (30 s on a busy machine): the run's last line alone.
    monkeypatch.setattr(nalu.training.progress, "INTERVAL_S", math.inf)

    class Linear(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.layer = torch.nn.Linear(4, 3)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.layer(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=1e-3)

    datamodule = ArithmeticDataModule(
        in_features=4, out_features=3, operations=("add", "sub"), train_size=100, batch_size=32
    )
    trainer = L.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[ProgressLines()],
    )
    caplog.set_level(logging.INFO, logger="nalu.training.progress")
    module = Linear()
    before = module.layer.weight.detach().clone()
    trainer.fit(module, datamodule=datamodule)
    # 100 samples in batches of 32: 4 optimizer steps per epoch, the last batch of 4.
    assert trainer.global_step == 8
    assert not torch.equal(module.layer.weight, before)
    # Its progress counts its batches: it has no planned optimizer steps of its own.
    [line] = [r.getMessage() for r in caplog.records if r.name == "nalu.training.progress"]
    assert line.startswith("step 8/8 (100%) · epoch 2/2 · ")


def test_resampled_batches_are_fresh_every_step_and_fixed_by_seeds_epoch_and_step():
    def batches(epoch: int, **kwargs) -> list[torch.Tensor]:
        loader = small_datamodule(resample=True, **kwargs).train_dataloader()
        loader.sampler.set_epoch(epoch)
        return [x for x, _ in loader]

    first = batches(0)
    assert len(first) == 4 and all(x.shape == (32, 6) for x in first)  # 100 samples of 32
    assert "train" not in small_datamodule(resample=True).datasets  # no fixed training set
    assert all(torch.equal(a, b) for a, b in zip(first, batches(0), strict=True))
    assert not torch.equal(first[0], first[1])
    assert not torch.equal(batches(1)[0], first[0])
    assert not torch.equal(batches(0, shuffle_seed=7)[0], first[0])
    seen = torch.cat(first)
    assert seen.min() >= -10 and seen.max() <= 10
    # Step 0 of epoch 0, made on its own: the same batch, with the problem's own targets.
    x, y = small_datamodule(resample=True).stream.batches(epoch=0, start=0, count=1)
    assert torch.equal(x[0, 0], first[0])
    assert torch.equal(y[0, 0], small_datamodule().problem.targets(first[0]))


@pytest.mark.parametrize("name", ["mystery", "static_arithmetic"])
def test_each_data_config_lists_every_argument_of_its_data_module(name):
    # The command line checks a field added to `data` against its config (nalu.config.validation).
    config = OmegaConf.load(CONFIG_DIR / "data" / f"{name}.yaml")
    arguments = constructor_arguments(get_method(config._target_))
    assert set(config) - {"_target_"} == set(arguments) - {"problem"}  # `problem`: built inside


@pytest.mark.parametrize(
    ("owner", "field"),
    [
        (owner, field)
        for owner in ("ArithmeticDataModule", "StaticArithmeticDataModule")
        for field in ARGUMENT_RULES[owner]
    ],
)
def test_each_data_module_refuses_a_bad_argument_by_the_rule_the_command_line_applies(owner, field):
    # The command-line check applies ARGUMENT_RULES to the data config; the problem's and the
    # data module's constructors, to their arguments: the same rule, the same message.
    with pytest.raises(InvalidArgument) as refused:
        getattr(nalu.data, owner)(**{field: "bad"})
    with pytest.raises(InvalidArgument) as expected:
        ARGUMENT_RULES[owner][field](field, "bad")
    assert str(refused.value) == str(expected.value)
