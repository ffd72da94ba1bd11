"""Bad input to every command, each answered as the README promises: exit code 2, exactly one
line on stderr naming the field, no traceback, no new folder, and before torch loads unless
only torch can check the input."""

from pathlib import Path

import pytest
from conftest import TINY, compose_config, run_cli

from nalu.cli.common import EXIT_CONFIG_ERROR
from nalu.cli.train import CONFIG_DIR, train
from nalu.config.value_range import RANGE_RULE

MYSTERY = ["add", "sub", "mul", "div"]
# What only torch can check: a checkpoint's contents, a GPU's presence, the MLP's torch.nn
# activation, a field added to a section (an argument of its class's constructor).
NEEDS_TORCH = ("ckpt", "checkpoint", "accelerator=gpu", "accelerator=cuda", "model=mlp", "+")

# nalu-train: (arguments, the whole error line after "error: ")
TRAIN = [
    (
        ["model=foo"],
        "model=foo: unknown model; choose one of "
        f"{sorted(path.stem for path in (CONFIG_DIR / 'model').glob('*.yaml'))}",
    ),
    (
        ["optimizer=adamw"],
        "optimizer=adamw: unknown optimizer; choose one of ['adam', 'rmsprop', 'sgd']",
    ),
    (
        ["data.operations=[add,pow]"],
        "data.operations=['add', 'pow']: 'pow' is not one of ['add', 'sub', 'mul', 'div']",
    ),
    (["data.in_features=1"], "data.in_features=1: must be an integer >= 2"),
    (
        ["data.train_range=[10,-10]"],
        f"data.train_range=[10, -10]: {RANGE_RULE}",
    ),
    (
        ["data.interp_range=[0,inf]"],
        f"data.interp_range=[0, inf]: {RANGE_RULE}",
    ),
    (
        ["data.extrap_range=[[-6,-1],[-2,6]]"],
        f"data.extrap_range=[[-6, -1], [-2, 6]]: {RANGE_RULE}",
    ),
    (["data.train_size=0"], "data.train_size=0: must be a positive integer"),
    (
        ["lr_schedule=null"],
        "lr_schedule=null: a config group is dropped with ~lr_schedule, not set to null",
    ),
    (
        ["experiment=nalm_single_module", "nalm=nalu", "~problems.operation.pow"],
        "~problems.operation.pow: problems.operation has no field 'pow'; "
        "it has ['add', 'div', 'mul', 'sub']",
    ),
    (["data.eval_batch_size=0"], "data.eval_batch_size=0: must be a positive integer"),
    (["data.min_abs_denominator=0"], "data.min_abs_denominator=0: must be a finite number > 0"),
    (["seed=-1"], "seed=-1: must be an integer in [0, 4294967295]"),
    (["data.problem_seed=1.5"], "data.problem_seed=1.5: must be an integer in [0, 4294967295]"),
    (
        ["model=mlp", "model.activation=Relu"],
        "model.activation='Relu': must name a torch.nn activation such as ReLU, Tanh, GELU",
    ),
    (
        ["model=mlp", "model.activation=Linear"],  # a torch.nn module, but one that needs sizes
        "model.activation='Linear': must name a torch.nn activation such as ReLU, Tanh, GELU",
    ),
    (["model.eps=0"], "model.eps=0: must be a finite number > 0"),
    (["model.gate_bias=maybe"], "model.gate_bias='maybe': must be true or false"),
    (
        ["model=select", "model.heads.nmu.init_range=[2,3]"],
        "model.heads.nmu.init_range=[2, 3]: must be [low, high] in [0, 1]",
    ),
    (
        ["model=nac_nalu_stack", "model._args_.1.eps=0"],
        "model._args_.1.eps=0: must be a finite number > 0",
    ),
    (
        ["model.in_features=5"],
        "model.in_features=5: must equal data.in_features=100, the problem's size",
    ),
    (["optimizer.lr=-1"], "optimizer.lr=-1: must be a finite number > 0"),
    (["optimizer.lr=nan"], "optimizer.lr=nan: must be a finite number > 0"),
    (
        ["optimizer=sgd", "optimizer.momentum=-0.5"],
        "optimizer.momentum=-0.5: must be a finite number >= 0",
    ),
    (
        ["+optimizer.betas=[0.9,1.5]"],
        "optimizer.betas=[0.9, 1.5]: must be [beta1, beta2], each in [0, 1)",
    ),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0: must be a positive integer"),
    (
        ["callbacks.last_checkpoint.every_s=-1"],
        "callbacks.last_checkpoint.every_s=-1: must be a finite number >= 0",
    ),
    (["trainer.max_epochs=ten"], "trainer.max_epochs='ten': must be a positive integer"),
    (
        ["trainer.max_epoch=3"],
        "trainer.max_epoch=3: trainer has no field 'max_epoch'; did you mean max_epochs? "
        "(+trainer.max_epoch=3 adds a new field)",
    ),
    (["foo=1"], "foo=1: the config has no field 'foo' (+foo=1 adds a new field)"),
    (
        # Else its members would train the run's problem under the label "add".
        ["experiment=nalm_single_module", "problems.operation.add.data=5"],
        "problems.operation.add.data=5: must be a section of fields "
        "(problems.operation.add.data.<field>=...)",
    ),
    (
        ["model=select", "model.heads.nmu=null"],
        "model.heads.nmu=null: must be a unit's config (heads.nmu._target_=...)",
    ),
    (
        ["~optimizer"],
        "~optimizer: every run builds its optimizer; choose another with optimizer=<one of "
        "['adam', 'rmsprop', 'sgd']>",
    ),
    # The plugins' fields that README's Scaling out sets.
    (
        ["hparams_search=nalu_optuna", "hydra.sweeper.n_trials=0"],
        "hydra.sweeper.n_trials=0: must be a positive integer",
    ),
    (
        ["hparams_search=nalu_optuna", "hydra.sweeper.direction=up"],
        "hydra.sweeper.direction='up': must be one of ['minimize', 'maximize'] (or a list of them)",
    ),
    (
        ["hparams_search=nalu_optuna", "hydra.sweeper.storage=sqlite:///nowhere/optuna.db"],
        "hydra.sweeper.storage='sqlite:///nowhere/optuna.db': the folder 'nowhere' does not "
        "exist; make it first",
    ),
    (
        ["-m", "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=0"],
        "hydra.launcher.n_jobs=0: must be a count of processes, -1 for every core (-2 all but "
        "one), or null",
    ),
    (
        ["model=select", "model.learning_rate_scales={{nau:2,xyz:1}}"],
        "model.learning_rate_scales={{nau:2,xyz:1}}: model.learning_rate_scales has no field 'xyz' "
        "(+model.learning_rate_scales.xyz=… adds a new field)",
    ),
    (
        ["model=select", "model.heads.foo.bar=1"],  # the typo is the override's, not model's
        "model.heads.foo.bar=1: model.heads has no field 'foo' (+model.heads.foo.bar=1 adds a new "
        "field)",
    ),
    (
        ["model=select", "model.learning_rate_scales=[1,2]"],
        "model.learning_rate_scales=[1,2]: model.learning_rate_scales holds fields (nau, nmu, "
        "nmru); set one with model.learning_rate_scales.<field>=<value>",
    ),
    (
        ["model=nmu", "model.init_range={{a:1}}"],
        "model.init_range={{a:1}}: model.init_range must be a list, as [0.0, 0.01]",
    ),
    (
        ["model=select", "model.log_fit=[nau]"],
        "model.log_fit=['nau']: a head fitted in log space must have a log_magnitude: choose "
        "among ['nmu', 'nmru']",
    ),
    (
        ["-m", "model=select", "model.log_fit=[nmru],[foo]"],
        "model.log_fit=['foo']: must name heads among ['nau', 'nmru', 'nmu']",
    ),
    (
        ["data.in_features"],
        "data.in_features: not an override like field=value (Hydra: missing EQUAL at '<EOF>')",
    ),
    (
        ["data.train_range=[1"],
        "data.train_range=[1: not an override like field=value "
        "(Hydra: no viable alternative at input '[1')",
    ),
    (["ckpt_path=missing.ckpt"], "ckpt_path='missing.ckpt': no such checkpoint file"),
    (
        ["ckpt_path={run}"],
        "ckpt_path='{run}': a folder, not a checkpoint file (e.g. {run}/checkpoints/last.ckpt)",
    ),
    (["optimizer.lr=???"], "optimizer.lr: Missing mandatory value: optimizer.lr"),
    # A sweep is checked whole before its first job starts.
    (["-m", "seed=0,1", "optimizer.lr=1e-3,-2"], "optimizer.lr=-2: must be a finite number > 0"),
    (
        ["stall_restart={{validations: 5, loss_abve: 1.0}}"],  # {{ }}: str.format
        "stall_restart.loss_abve: stall_restart has no field 'loss_abve'; did you mean "
        "loss_above? (it takes ['loss_above', 'validations'])",
    ),
    (
        ["+regularizer.foo=1"],
        "regularizer.foo: regularizer has no field 'foo' (it takes ['end', 'factor', 'growth', "
        "'initial', 'scale', 'start'])",
    ),
    (
        ["lr_schedule.start=0.5"],
        "lr_schedule.start=0.5: no lr_schedule is chosen; choose one first (lr_schedule=<one of "
        "['linear_decay']>) and then set its fields",
    ),
    (
        ["+lr_schedule.start=0.5"],
        "lr_schedule: {{'start': 0.5}} names no class (_target_); choose one with "
        "lr_schedule=<a config of conf/lr_schedule>, then set its fields",
    ),
    (
        ["seed=0,1", "optimizer.lrr=0.1"],  # the sweep without -m is not what is wrong first
        "optimizer.lrr=0.1: optimizer has no field 'lrr'; did you mean lr?",
    ),
    (
        ["model=nac,nalu", "seed=0,1"],
        "model=nac,nalu: several values are a sweep; add -m (--multirun) to run a job for each, "
        "or write a list as [a,b]",
    ),
    (
        ["-m", "model=nac,nalu", "model.eps=1e-7"],
        "model.eps=1e-7: model has no field 'eps' (+model.eps=1e-7 adds a new field)",
    ),
    (["data.operations=[Add]"], f"data.operations=['Add']: 'Add' is not one of {MYSTERY}"),
    (["data.operations=[]"], f"data.operations=[]: name at least one of {MYSTERY}"),
    (
        ["data.operations=null"],
        "data.operations=null: must be a list of operations, e.g. ['add', 'sub']",
    ),
    (
        ['data.operations="[add]"'],
        "data.operations='[add]': must be a list of operations, e.g. ['add', 'sub']",
    ),
    (["data.operations=[add,add]"], "data.operations=['add', 'add']: must not repeat an operation"),
    (
        ["data.operations=[" + ",".join(["add"] * 3000) + "]"],
        "data.operations=['add', 'add', 'add', 'add' ... 'add', 'add', 'add', 'add']: must not "
        "repeat an operation",
    ),
    (
        ["data=static_arithmetic", "data.operations=[cube]"],
        "data.operations=['cube']: 'cube' is not one of "
        "['add', 'sub', 'mul', 'div', 'square', 'sqrt']",
    ),
    (
        ["data.operations=[div]", "data.min_abs_denominator=50"],
        "data.min_abs_denominator=50: leaves no denominator value in "
        "data.train_range=[-10.0, 10.0]; it must be below the range's largest magnitude",
    ),
    (
        ["experiment=article_division", "data.min_abs_denominator=100"],
        "data.min_abs_denominator=100: leaves no denominator value in "
        "data.train_range=[-10.0, 10.0]; it must be below the range's largest magnitude",
    ),
    (["data.min_abs_denominator=-1"], "data.min_abs_denominator=-1: must be a finite number > 0"),
    (
        ["data=static_arithmetic", "data.out_features=3"],
        "data.out_features=3: must equal the number of operations (1)",
    ),
    (
        ["trainer.devices=abc"],
        "trainer.devices='abc': must be a count >= 1, -1 or \"auto\" (all), or [indices]",
    ),
    (
        ["trainer.devices=0"],
        'trainer.devices=0: must be a count >= 1, -1 or "auto" (all), or [indices]',
    ),
    (
        ["trainer.accelerator=quantum"],
        "trainer.accelerator='quantum': must be one of "
        "['auto', 'cpu', 'gpu', 'cuda', 'mps', 'tpu']",
    ),
    (
        ["population=3", "trainer.devices=2"],
        "trainer.devices=2: a population (population=3) trains in one process; use "
        "trainer.devices=1, or a sweep for several devices",
    ),
    (["population=0"], "population=0: must be a positive integer"),
    (["population=many"], "population='many': must be a positive integer"),
    (["heatmaps=-1"], "heatmaps=-1: must be an integer >= 0"),
    (
        ["data.in_features=1000000000"],
        "data.in_features=1000000000: with data.train_size=1000 the set would hold more than "
        "2.15e+09 values (8 GiB); keep train_size × in_features within that",
    ),
    (
        ["data.in_features=1" + "0" * 400],
        "data.in_features=100000000000000000000000000 ... 000000000000000000000000000: with "
        "data.train_size=1000 the set would hold more than 2.15e+09 values (8 GiB); keep "
        "train_size × in_features within that",
    ),
    (
        ["optimizer.lr=1" + "0" * 400],
        "optimizer.lr=100000000000000000000000000 ... 000000000000000000000000000: must be a "
        "finite number > 0",
    ),
    (
        ["data.batch_size=5000", "data.train_size=64"],
        "data.batch_size=5000: must be at most data.train_size=64",
    ),
    (
        ["data.operations=[mul]", "data.extrap_range=[-1e30,1e30]"],
        "data.extrap_range=[-1e+30, 1e+30]: mul targets reach 1e+60; keep |target| < 1e+18, so "
        "that squared errors are finite in float32",
    ),
    (
        ["data.operations=[add]", "data.extrap_range=[-6e17,6e17]"],
        "data.extrap_range=[-6e+17, 6e+17]: add targets reach 1.2e+18; keep |target| < 1e+18, "
        "so that squared errors are finite in float32",
    ),
    (
        ["data.operations=[div]", "data.min_abs_denominator=1e-17"],
        "data.extrap_range=[-50.0, 50.0]: div targets reach 5e+18; keep |target| < 1e+18, so "
        "that squared errors are finite in float32",
    ),
    (  # a and b each sum 25 of the 100 inputs: |ab| ≤ (25 · 1e8)²
        ["data=static_arithmetic", "data.extrap_range=[-1e8,1e8]"],
        "data.extrap_range=[-100000000.0, 100000000.0]: mul targets reach 6.25e+18; keep "
        "|target| < 1e+18, so that squared errors are finite in float32",
    ),
    (
        ["data.operations=[add]", "data.train_range=[-1e308,1e308]"],
        f"data.train_range=[-1e+308, 1e+308]: {RANGE_RULE}",
    ),
    (["data.extrap_range=[]"], f"data.extrap_range=[]: {RANGE_RULE}"),
    (["data.train_range=[1,1]"], f"data.train_range=[1, 1]: {RANGE_RULE}"),
    (["data.train_range=wide"], f"data.train_range='wide': {RANGE_RULE}"),
    (["data.interp_size=0"], "data.interp_size=0: must be a positive integer"),
    (["data.train_size=ten"], "data.train_size='ten': must be a positive integer"),
    (["data.batch_size=0"], "data.batch_size=0: must be a positive integer"),
    (["data.resample=yes"], "data.resample='yes': must be true or false"),
    (["seed=4294967296"], "seed=4294967296: must be an integer in [0, 4294967295]"),
    (["data.train_seed=-3"], "data.train_seed=-3: must be an integer in [0, 4294967295]"),
    (["regularizer.scale=-1"], "regularizer.scale=-1: must be a finite number >= 0"),
    (["+optimizer.weight_decay=-1"], "optimizer.weight_decay=-1: must be a finite number >= 0"),
    (
        ["model=mlp", "model.hidden_features=[64,0]"],
        "model.hidden_features=[64, 0]: must be a list of positive integers, e.g. [64, 64]",
    ),
    (["optimizer.lr=0"], "optimizer.lr=0: must be a finite number > 0"),
    (
        ["trainer.check_val_every_n_epoch=0"],
        "trainer.check_val_every_n_epoch=0: must be a positive integer",
    ),
    (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps=0: must be a positive integer"),
    (
        ["trainer.deterministic=sometimes"],
        "trainer.deterministic='sometimes': must be true or false",
    ),
    (
        ["data=static_arithmetic", "data.subset_ratio=0.9"],
        "data.subset_ratio=0.9: must be in (0, 0.5]",
    ),
    (
        ["data=static_arithmetic", "data.overlap_ratio=1"],
        "data.overlap_ratio=1: must be a number in [0, 1)",
    ),
    (
        ["model=gnalu", "model.base=1"],
        "model.base=1: must be a finite number > 1 (a logarithm's base)",
    ),
    (
        ["model.nac_init=uniform"],
        "model.nac_init='uniform': must be one of ['xavier', 'variance_matched']",
    ),
    (["regularizer.start=2"], "regularizer.start=2: must be a number in [0, 1]"),
    (
        ["model=select", "model.learning_rate_scales={{nau: -1}}"],
        "model.learning_rate_scales={{'nau': -1, 'nmu': 3.0, 'nmru': 3.0}}: must map names to "
        "finite numbers > 0",
    ),
    (["model=select", "model.log_fit=nmru"], "model.log_fit='nmru': must be a list of names"),
    (
        ["data=static_arithmetic", "data.near_perfect=primer"],
        "data.near_perfect='primer': must be one of ['madsen_johansen', 'mistry']",
    ),
    (
        ["data=static_arithmetic", "data.near_perfect=mistry", "data.operations=[mul,sqrt]"],
        "data.near_perfect='mistry': defines + − × ÷ only, not ['sqrt']; use madsen_johansen",
    ),
    (
        ["data=static_arithmetic", "data.near_perfect=mistry"],
        "data.near_perfect='mistry': defines the two-input task y = a ∘ b only, not "
        "data.in_features=100; use madsen_johansen",
    ),
    (
        ["data=static_arithmetic", "data.in_features=3", "data.subset_ratio=0.25"],
        "data.in_features=3: leaves an empty subset at data.subset_ratio=0.25; raise either",
    ),
    (
        ["experiment=nosuch"],
        "experiment=nosuch: unknown experiment; choose one of "
        f"{sorted(path.stem for path in (CONFIG_DIR / 'experiment').glob('*.yaml'))}",
    ),
    (
        ["--config-name=nosuch"],
        "--config-name=nosuch: no such primary config; choose ['evaluate', 'train']",
    ),
    (
        ["-m", "data.operations=[add],[pow]", "seed=0,1"],
        f"data.operations=['pow']: 'pow' is not one of {MYSTERY}",
    ),
    (
        ["-m", "seed=0,1", "data.operations=[add],[pow]"],
        f"data.operations=['pow']: 'pow' is not one of {MYSTERY}",
    ),
    (
        ["-m", "data.batch_size=16,5000", "data.train_size=64"],
        "data.batch_size=5000: must be at most data.train_size=64",
    ),
    (
        ["-m", "data.train_size=64,32", "data.batch_size=48"],
        "data.batch_size=48: must be at most data.train_size=32",
    ),
    (
        ["ckpt_path={text_file}"],
        "ckpt_path='{text_file}': not a readable checkpoint of nalu-train (",
    ),
    (
        ["ckpt_path={empty_file}"],
        "ckpt_path='{empty_file}': not a readable checkpoint of nalu-train (",
    ),
    (
        ["ckpt_path={truncated}"],
        "ckpt_path='{truncated}': not a readable checkpoint of nalu-train (",
    ),
    (
        [*TINY, "seed=7", "ckpt_path={checkpoint}"],
        "ckpt_path='{checkpoint}': written by seeds [0], but this run has [7]; resume with the "
        "seed and population that wrote it",
    ),
    (
        [*TINY, "model=nac", "ckpt_path={checkpoint}"],
        "ckpt_path='{checkpoint}': holds another model (nalu.units.NeuralArithmeticLogicUnit); "
        "resume with the model config that wrote it",
    ),
    (
        ["data.in_features=7", *TINY[1:], "ckpt_path={checkpoint}"],
        "ckpt_path='{checkpoint}': holds another model (nalu.units.NeuralArithmeticLogicUnit "
        "with model.in_features=6, here 7); resume with the model config that wrote it",
    ),
    (
        [*TINY, "hydra.run.dir={run}"],
        "hydra.run.dir={run}: holds a run already (checkpoints/best-step",
    ),
    (
        ["-m", *TINY, "seed=0,1", "hydra.sweep.dir={run}"],
        "hydra.sweep.dir={run}: holds a run already (checkpoints/best-step",
    ),
    (
        ["-m", *TINY, "seed=0,1", "hydra.sweep.dir={sweep}"],
        "hydra.sweep.dir={sweep}: holds a sweep already (0_nalu_seed0/.hydra/config.yaml); "
        "choose another folder",
    ),
    (
        [*TINY, "ckpt_path={checkpoint}", "trainer.max_epochs=2"],  # it trained 3 epochs
        "trainer.max_epochs=2: ckpt_path='{checkpoint}' was saved after epoch 3, past it; resume "
        "with trainer.max_epochs=3 or more",
    ),
    (
        [*TINY, "optimizer=sgd", "ckpt_path={checkpoint}"],
        "ckpt_path='{checkpoint}': holds the state of another optimizer (torch.optim.Adam, here "
        "torch.optim.SGD); resume with the optimizer config that wrote it",
    ),
    (
        [*TINY, "population=2", "ckpt_path={checkpoint}"],
        "ckpt_path='{checkpoint}': written by seeds [0], but this run has [0, 1]; resume with "
        "the seed and population that wrote it",
    ),
    (
        ["trainer.max_steps=0"],
        "trainer.max_steps=0: must be a positive integer, or -1 for no limit",
    ),
    (
        ["+trainer.accumulate_grad_batches=4"],
        "trainer.accumulate_grad_batches=4: must be 1: each optimizer step takes one batch "
        "(raise data.batch_size)",
    ),
    (
        ["+trainer.precision=77"],
        "trainer.precision=77: must be one of ['64', '32', '16', '64-true', '32-true', '16-true', "
        "'bf16-true', '16-mixed', 'bf16-mixed', 'bf16', 'transformer-engine']",
    ),
    (
        ["trainer.gradient_clip_algorithm=sideways"],
        "trainer.gradient_clip_algorithm='sideways': must be one of ['norm', 'value']",
    ),
    (
        ["trainer.gradient_clip_val=-1"],
        "trainer.gradient_clip_val=-1: must be a finite number >= 0",
    ),
    (
        ["lr_schedule=linear_decay", "lr_schedule.start=2"],
        "lr_schedule.start=2: must be a number in [0, 1)",
    ),
    (
        ["model=nau", "regularizer.start=0.8", "regularizer.end=0.2"],
        "regularizer.start=0.8: must be at most regularizer.end=0.2",
    ),
    (
        ["model=nmu", "model.init_range=[2,3]"],
        "model.init_range=[2, 3]: must be [low, high] in [0, 1]",
    ),
    (
        ["model=nmu", "model.noise_range=[0,5]"],
        "model.noise_range=[0, 5]: must be [low, high] with 0 < low <= high",
    ),
    (["model=select", "model.restarts=0"], "model.restarts=0: must be a positive integer"),
    # A stack's layers: each takes the one before's outputs.
    (
        ["model=nac_nalu_stack", "model._args_.1.in_features=3"],
        "model._args_.1.in_features=3: must equal model._args_.0.out_features=2, the size of "
        "what comes before it",
    ),
    (
        ["model=nau_nmu", "model._args_.0.out_features=0"],
        "model._args_.0.out_features=0: must be a positive integer",
    ),
    (
        ["population=100000000"],
        "population=100000000: its members would hold more than 2.15e+09 values (8 GiB) of "
        "targets and weights, 31000 each; keep population at most 69273",
    ),
    (
        ["data.in_features=1000000", "data.out_features=1000000"],
        "data.in_features=1000000: with data.out_features=1000000 a weight matrix would hold "
        "more than 2.15e+09 values (8 GiB); keep in_features × out_features within that",
    ),
    (
        ["model=inalu", "stall_restart=5"],
        "stall_restart=5: must be a section of fields (stall_restart.<field>=...) or null",
    ),
    (
        ["callbacks.last_checkpoint=5"],
        "callbacks.last_checkpoint=5: must be a section of fields "
        "(callbacks.last_checkpoint.<field>=...) or null",
    ),
    (
        ["experiment=nalm_single_module", "problems.range=null"],
        "problems.range=null: must map each label to the fields it sets, e.g. "
        "problems.operation.add.data.operations=[add]",
    ),
    (
        ["+model.foo=1"],
        "+model.foo: nalu.units.NeuralArithmeticLogicUnit takes no argument 'foo'; it takes "
        "['in_features', 'out_features', 'shared_weights', 'gate_bias', 'eps', 'base', "
        "'nac_init']",
    ),
    (
        ["+data.foo=1"],
        "+data.foo: nalu.data.ArithmeticDataModule takes no argument 'foo'; it takes [",
    ),
    (
        [*TINY, "data.operations=[add]", "ckpt_path={checkpoint}"],
        "ckpt_path='{checkpoint}': written for another problem (data.operations=['add', 'sub', "
        "'mul'], here ['add']); resume with the data config that wrote it",
    ),
]

# nalu-evaluate
EVALUATE = [
    ([], "ckpt_path: missing; pass ckpt_path=<run folder>/checkpoints/last.ckpt"),
    (
        ["ckpt_path={population_checkpoint}"],
        "ckpt_path='{population_checkpoint}': holds 2 networks (a population: its seeds × its "
        "problem cells); evaluate takes a checkpoint of one network (one seed, one problem)",
    ),
    (["ckpt_path=nope.ckpt"], "ckpt_path='nope.ckpt': no such checkpoint file"),
    (
        ["ckpt_path={run}"],
        "ckpt_path='{run}': a folder, not a checkpoint file (e.g. {run}/checkpoints/last.ckpt)",
    ),
    (
        ["-m", "ckpt_path={checkpoint}"],
        "-m: evaluate tests one checkpoint; run it once per checkpoint",
    ),
    (
        ["ckpt_path={checkpoint}", "experiment=article"],
        "experiment=article: evaluate takes the model and problem from the checkpoint's run; it "
        "composes only data, trainer, paths, hydra (data.<field>=... changes the sets)",
    ),
    (
        ["ckpt_path={checkpoint}", "model=nac"],
        "model=nac: evaluate takes the model and problem from the checkpoint's run; it composes "
        "only data, trainer, paths, hydra (data.<field>=... changes the sets)",
    ),
    (
        ["ckpt_path={checkpoint}", "data=static_arithmetic"],
        "data=static_arithmetic: the checkpoint's run fixes the problem ({run}/.hydra/config.yaml);"
        " change its sets with data.<field>=...",
    ),
    (
        ["ckpt_path={checkpoint}", "seed=3"],
        "seed=3: these sets pose another problem than the checkpoint learned "
        "(data.problem_seed=3, the run's 0); keep the run's seed and "
        "these data fields: problem_seed, in_features, out_features, operations, subset_ratio, "
        "overlap_ratio",
    ),
    (
        ["ckpt_path={checkpoint}", "data.in_features=7"],
        "data.in_features=7: these sets pose another problem than the checkpoint learned "
        "(data.in_features=7, the run's 6); keep the run's seed and "
        "these data fields: problem_seed, in_features, out_features, operations, subset_ratio, "
        "overlap_ratio",
    ),
    (
        ["ckpt_path={checkpoint}", "optimizer.lr=0.1"],
        "optimizer.lr=0.1: evaluate takes the model and problem from the checkpoint's run; it "
        "composes only data, trainer, paths, hydra (data.<field>=... changes the sets)",
    ),
    (
        ["ckpt_path={checkpoint}", "data.extrap_range=[5,1]"],
        f"data.extrap_range=[5, 1]: {RANGE_RULE}",
    ),
    (
        ["ckpt_path={broken_checkpoint}"],
        "{broken_run}/problem.json: unreadable (JSONDecodeError), so the checkpoint's problem "
        "cannot be checked; restore it from the run or move the checkpoint out",
    ),
    (
        ["ckpt_path={no_data_checkpoint}"],
        "{no_data_run}/.hydra/config.yaml: unreadable (ConfigAttributeError)",
    ),
]

# nalu-report
REPORT = [
    ([], "the following arguments are required: paths (see nalu-report --help)"),
    (["--bogus", "x"], "unrecognized arguments: --bogus (see nalu-report --help)"),
    (["nope"], "nope: no such folder"),
    (["{run}/metrics.json"], "{run}/metrics.json: not a folder (a run or multirun folder)"),
    (["{empty_dir}"], "no readable metrics.json under {empty_dir}"),
    (
        ["{corrupt_dir}"],
        "no readable metrics.json under {corrupt_dir} (1 unreadable: "
        "{corrupt_dir}/metrics.json (JSONDecodeError: ",
    ),
    (
        ["{run}", "--group-by", "model,nosuchfield"],
        "--group-by model,nosuchfield: no run has the field 'nosuchfield'; choose a label or "
        "config field, e.g. ",
    ),
]

CASES = [
    *(("nalu.train", arguments, message) for arguments, message in TRAIN),
    *(("nalu.evaluate", arguments, message) for arguments, message in EVALUATE),
    *(("nalu.report", arguments, message) for arguments, message in REPORT),
]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, str]:
    """A finished TINY run of 3 epochs (NALU, seed 0), its checkpoint, copies of it beside a
    corrupt problem.json and beside a config without a data section, a population's checkpoint,
    files that are no checkpoint or no report, and a sweep's folder."""
    root = tmp_path_factory.mktemp("inputs")
    run = root / "run"
    result = run_cli([*TINY, "trainer.max_epochs=3", f"hydra.run.dir={run}"], cwd=root)
    assert result.returncode == 0, result.stderr[-2000:]
    population = root / "population"
    train(compose_config([*TINY, "population=2", "trainer.max_epochs=1"], population))
    checkpoint = run / "checkpoints" / "last.ckpt"
    broken = root / "broken"
    (broken / "checkpoints").mkdir(parents=True)
    (broken / "checkpoints" / "last.ckpt").write_bytes(checkpoint.read_bytes())
    (broken / "problem.json").write_text('{"outputs": [')
    no_data = root / "no_data"
    (no_data / "checkpoints").mkdir(parents=True)
    (no_data / "checkpoints" / "last.ckpt").write_bytes(checkpoint.read_bytes())
    (no_data / ".hydra").mkdir()
    (no_data / ".hydra" / "config.yaml").write_text("seed: 0\n")  # no data section
    (root / "text.ckpt").write_text("not a checkpoint\n")
    (root / "empty.ckpt").write_bytes(b"")
    (root / "truncated.ckpt").write_bytes(checkpoint.read_bytes()[:1000])
    (root / "empty_dir").mkdir()
    (root / "corrupt_dir").mkdir()
    (root / "corrupt_dir" / "metrics.json").write_text("{not json")
    (root / "sweep" / "0_nalu_seed0" / ".hydra").mkdir(parents=True)
    (root / "sweep" / "0_nalu_seed0" / ".hydra" / "config.yaml").write_text("seed: 0\n")
    return {
        "run": str(run),
        "checkpoint": str(checkpoint),
        "population_checkpoint": str(population / "checkpoints" / "last.ckpt"),
        "broken_run": str(broken),
        "broken_checkpoint": str(broken / "checkpoints" / "last.ckpt"),
        "no_data_run": str(no_data),
        "no_data_checkpoint": str(no_data / "checkpoints" / "last.ckpt"),
        "text_file": str(root / "text.ckpt"),
        "empty_file": str(root / "empty.ckpt"),
        "truncated": str(root / "truncated.ckpt"),
        "empty_dir": str(root / "empty_dir"),
        "corrupt_dir": str(root / "corrupt_dir"),
        "sweep": str(root / "sweep"),
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("module", "arguments", "message"),
    CASES,
    ids=[f"{module.split('.')[-1]}: {' '.join(arguments)[:60]}" for module, arguments, _ in CASES],
)
def test_bad_input_is_one_line_naming_the_field(module, arguments, message, files, tmp_path):
    needs_torch = any(word in argument for argument in arguments for word in NEEDS_TORCH)
    arguments = [argument.format(**files) for argument in arguments]
    result = run_cli(arguments, cwd=tmp_path, module=module, python_options=["-X", "importtime"])
    assert result.returncode == EXIT_CONFIG_ERROR, result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    imports = [line for line in result.stderr.splitlines() if line.startswith("import time:")]
    (line,) = [line for line in result.stderr.strip().splitlines() if line not in imports]
    assert line.startswith(f"error: {message.format(**files)}"), line
    assert list(tmp_path.iterdir()) == []  # no outputs/ folder, nothing else
    assert not (Path(files["run"]) / "evaluate").exists()  # evaluate writes inside the run
    imported = {entry.rsplit("|", 1)[-1].strip() for entry in imports}
    # The import report was read: it names the command's own module (nalu.cli.train, ...).
    assert f"nalu.cli.{module.split('.')[-1]}" in imported
    if not needs_torch:
        assert "torch" not in imported  # nothing was computed: the check came first
