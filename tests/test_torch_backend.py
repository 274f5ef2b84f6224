"""The torch backend against plain PyTorch loops, the JAX engine and brute force, on tiny problems."""

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

from batchlab.grid import build_configs  # noqa: E402
from batchlab.config import DataConfig, EarlyStopping, ModelConfig  # noqa: E402
from batchlab.data import Dataset  # noqa: E402
from batchlab.engine import torch_backend  # noqa: E402
from batchlab.engine.backends import train_cohort  # noqa: E402
from batchlab.engine.epoch import EpochOrders  # noqa: E402
from batchlab.engine.optim import lr_factor  # noqa: E402
from batchlab.engine.torch_runs import should_stack  # noqa: E402
from batchlab.errors import BatchlabError  # noqa: E402
from batchlab.instruments.gradients import gram_matrix, per_sample_gradients, statistics_from_gram  # noqa: E402
from batchlab.models.adapters.torch import adapt_torch  # noqa: E402

N, N_TEST, FEATURES, CLASSES, WIDTH = 203, 61, 5, 3, 16  # B = 16 leaves a partial last batch of 11


def tiny_dataset(task="classification", seed=0, outputs=1) -> Dataset:
    """Classification with 3 classes, or regression with ``outputs`` targets ((n,) when 1)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N + N_TEST, FEATURES)).astype(np.float32)
    if task == "regression":
        y = x @ rng.normal(size=(FEATURES, outputs)) + 0.1 * rng.normal(size=(len(x), outputs))
        y = (y[:, 0] if outputs == 1 else y).astype(np.float32)
    else:
        y = (np.argmax(x[:, :CLASSES] + 0.5 * rng.normal(size=(len(x), CLASSES)), axis=1)).astype(np.int32)
    return Dataset("tiny", x[:N], y[:N], x[N:], y[N:], CLASSES if task == "classification" else outputs, task=task)


def mlp_factory(input_shape, num_classes):
    return torch.nn.Sequential(torch.nn.Linear(input_shape[0], WIDTH), torch.nn.ReLU(),
                               torch.nn.Linear(WIDTH, num_classes))


def bn_factory(input_shape, num_classes):
    return torch.nn.Sequential(torch.nn.Linear(input_shape[0], WIDTH), torch.nn.BatchNorm1d(WIDTH), torch.nn.ReLU(),
                               torch.nn.Linear(WIDTH, num_classes))


def configs(dataset, **grid):
    grid = {"batch_size": 16, "epochs": 2, "lr": 0.05, **grid}
    model = ModelConfig("custom:tiny", (), "", "", 0.0, fingerprint="test")
    return build_configs(DataConfig("tiny", task=dataset.task), dataset.n_train, model, **grid)


def torch_model(dataset, factory=mlp_factory, task="classification"):
    return adapt_torch(factory, dataset.sample_shape, dataset.num_classes, task)


def plain_loop(model, dataset, cfg, make_optimizer, steps, loss_fn=F.cross_entropy):
    """A user's own loop: tensors, the batch order of ``EpochOrders``, optimizer from torch.optim."""
    module = model.build(cfg.init_seed)
    optimizer = make_optimizer(module.parameters())
    x, y = torch.from_numpy(dataset.x_train), torch.from_numpy(dataset.y_train).long()
    orders, losses, count = EpochOrders([cfg.data_seed], dataset.n_train, cfg.shuffle), [], 0
    while len(losses) < steps:
        order = torch.from_numpy(orders.next()[0].astype(np.int64))
        for start in range(0, dataset.n_train, cfg.batch_size):
            rows = order[start:start + cfg.batch_size]
            for group in optimizer.param_groups:  # the config's schedule, as the engine applies it
                group["lr"] = cfg.optimizer.lr * float(lr_factor(cfg.optimizer, count))
            optimizer.zero_grad()
            loss = loss_fn(module(x[rows]), y[rows])
            loss.backward()
            optimizer.step()
            losses.append(loss.item() / (len(rows) if getattr(loss_fn, "sums", False) else 1))
            count += 1
    return np.array(losses[:steps]), module


def summed(loss_fn):
    def fn(out, y):
        return loss_fn(out, y, reduction="sum")
    fn.sums = True
    return fn


@pytest.mark.parametrize("case", ["momentum", "nesterov", "adam", "sum", "warmup_cosine"])
def test_first_steps_equal_a_plain_torch_loop(case):
    data = tiny_dataset()
    model = torch_model(data)
    grid = {"momentum": 0.9, "seeds": [3]}
    loss_fn = F.cross_entropy
    if case == "momentum":
        make = lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)  # noqa: E731
    elif case == "nesterov":
        grid["nesterov"] = True
        make = lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True)  # noqa: E731
    elif case == "adam":
        grid = {"optimizer": "adam", "lr": 0.01, "seeds": [3]}
        make = lambda p: torch.optim.Adam(p, lr=0.01, eps=1e-2)  # noqa: E731
    elif case == "sum":
        grid.update(reduction="sum", lr=0.002)
        make = lambda p: torch.optim.SGD(p, lr=0.002, momentum=0.9)  # noqa: E731
        loss_fn = summed(F.cross_entropy)
    else:
        grid.update(schedule="cosine", warmup_epochs=0.5)
        make = lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9)  # noqa: E731
    (cfg,) = configs(data, **grid)
    if case == "adam":  # an eps that matters, so its place (outside the root, as optax and torch) is tested
        cfg = dataclasses.replace(cfg, optimizer=dataclasses.replace(cfg.optimizer, eps=1e-2))
    (result,) = train_cohort([cfg], data, model)
    expected, _ = plain_loop(model, data, cfg, make, 20, loss_fn)
    assert result.status == "finished" and len(result.steps["mb_loss"]) == 26  # 13 steps per epoch, last one 11 rows
    np.testing.assert_allclose(result.steps["mb_loss"][:20], expected, rtol=1e-5, atol=1e-6)


def test_stacked_cohort_equals_runs_one_by_one(monkeypatch):
    data = tiny_dataset()
    model = torch_model(data)
    cfgs = configs(data, lr="0.02,0.1", seeds=1, momentum="0.5,0.9", instruments="full", epochs=2)
    built = []
    for name in ("StackedRuns", "ModuleRuns"):
        cls = getattr(torch_backend, name)
        monkeypatch.setattr(torch_backend, name,
                            lambda *a, _cls=cls, _name=name, **k: built.append(_name) or _cls(*a, **k))
    together = train_cohort(cfgs, data, model)
    alone = [train_cohort([c], data, model)[0] for c in cfgs]
    assert built == ["StackedRuns"] + ["ModuleRuns"] * 4
    for a, b in zip(together, alone):
        assert a.config == b.config and a.status == b.status == "finished"
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "train_loss_running", "step", "samples_seen"):
            np.testing.assert_allclose(a.history[key], b.history[key], rtol=1e-5, atol=1e-6, err_msg=key)
        for key in ("mb_loss", "mb_acc", "grad_norm", "update_norm", "dist_init", "weight_norm", "noise_grad_sq",
                    "noise_trace"):
            np.testing.assert_allclose(a.steps[key], b.steps[key], rtol=1e-4, atol=1e-6, err_msg=key)
        for name in a.params:
            np.testing.assert_allclose(a.params[name], b.params[name], rtol=1e-5, atol=1e-6)
    assert not np.allclose(together[0].steps["mb_loss"], together[1].steps["mb_loss"])  # runs differ


def jax_mlp_in_torch(data):
    """The built-in JAX ``mlp`` (hidden 16) at init seed 0, and the same network in torch with its weights."""
    import jax

    from batchlab.models.mlp import mlp

    jax_model = mlp(data.sample_shape, data.num_classes, hidden=(WIDTH,))._replace(task=data.task)
    with jax.threefry_partitionable(False):  # as the JAX engine draws its initial parameters
        params, _ = jax_model.init(jax.random.PRNGKey(0))

    def factory():
        module = mlp_factory(data.sample_shape, data.num_classes)
        with torch.no_grad():
            for layer, p in zip((module[0], module[2]), params):
                layer.weight.copy_(torch.from_numpy(np.asarray(p["w"]).T.copy()))  # JAX (in, out) -> torch (out, in)
                layer.bias.copy_(torch.from_numpy(np.array(p["b"])))
        return module

    return jax_model, params, adapt_torch(factory, data.sample_shape, data.num_classes, data.task)


@pytest.mark.parametrize("task, outputs", [("classification", 3), ("regression", 1), ("regression", 2)])
def test_same_gradient_statistics_and_records_as_the_builtin_mlp(task, outputs):
    data = tiny_dataset(task, outputs=outputs)
    jax_model, params, model = jax_mlp_in_torch(data)
    torch_params = {k: v.detach().numpy() for k, v in model.build(0).named_parameters()}
    x, y = data.x_train, data.y_train
    k_jax = gram_matrix(jax_model, params, {}, x, y)
    k_torch = gram_matrix(model, torch_params, {}, x, y)
    size = FEATURES * WIDTH + WIDTH + (WIDTH + 1) * data.num_classes
    assert per_sample_gradients(model, torch_params, {}, x, y).shape == (N, size)
    ours, theirs = statistics_from_gram(k_torch), statistics_from_gram(k_jax)
    for key in ("grad_sq", "trace", "noise_scale", "mean_sample_norm"):
        assert ours[key] == pytest.approx(theirs[key], rel=1e-5), key

    from batchlab.engine.jax_backend import train_cohort as jax_train

    (cfg,) = configs(data, momentum=0.9, epochs=2, instruments="full")
    (ours,) = train_cohort([cfg], data, model)
    (theirs,) = jax_train([cfg], data, jax_model)
    score = "acc" if task == "classification" else "r2"
    assert ours.history["train_loss"][0] == pytest.approx(theirs.history["train_loss"][0], rel=1e-6)
    assert set(ours.history) == set(theirs.history) and set(ours.steps) == set(theirs.steps)
    np.testing.assert_allclose(ours.history[f"test_{score}"], theirs.history[f"test_{score}"], rtol=1e-5)
    for key in ("mb_loss", f"mb_{score}", "grad_norm", "update_norm", "dist_init", "weight_norm"):
        np.testing.assert_allclose(ours.steps[key][:20], theirs.steps[key][:20], rtol=1e-5, atol=1e-6, err_msg=key)
    for key in ("noise_grad_sq", "noise_trace", "noise_grad_sq_se"):  # differences of nearby norms: looser
        np.testing.assert_allclose(ours.steps[key][:20], theirs.steps[key][:20], rtol=1e-3, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("seeds", [1, 2])  # one by one (2 runs), stacked (4 runs)
def test_divergence_marks_the_run_and_the_others_continue(seeds):
    data = tiny_dataset()
    cfgs = configs(data, lr="0.05,1e9", seeds=seeds, momentum=0.9, epochs=3)
    results = train_cohort(cfgs, data, torch_model(data))
    for r in results:
        if r.config.optimizer.lr > 1:
            assert r.status == "diverged" and r.diverged_step >= 1
            assert len(r.steps["mb_loss"]) == r.diverged_step - 1 and np.isfinite(r.steps["mb_loss"]).all()
            assert all(np.isfinite(v).all() for v in r.params.values())  # the state before the diverging epoch
        else:
            assert r.status == "finished" and len(r.steps["mb_loss"]) == 3 * 13
            assert np.isfinite(r.history["train_loss"]).all()


@pytest.mark.parametrize("seeds", [1, 4])
def test_early_stopping_restores_the_best_parameters(seeds):
    data = tiny_dataset()
    # Improving needs a 10-nat drop after epoch 1: best epoch 1, stopped after epoch 2.
    rule = EarlyStopping("test_loss", patience=1, min_delta=10.0, restore_best=True)
    cfgs = configs(data, seeds=seeds, epochs=5, early_stopping=rule, momentum=0.9)
    for r in train_cohort(cfgs, data, torch_model(data), checkpoints=(1, 2)):
        assert r.status == "early_stopped" and r.best_epoch == 1 and list(r.history["epoch"]) == [0, 1, 2]
        for name, value in r.params.items():
            np.testing.assert_array_equal(value, r.checkpoints[1][name])
        assert any(not np.array_equal(r.params[k], r.checkpoints[2][k]) for k in r.params)


def test_batch_norm_trains_one_by_one_and_evaluates_with_running_statistics(monkeypatch):
    data = tiny_dataset()
    model = torch_model(data, bn_factory)
    monkeypatch.setattr(torch_backend, "StackedRuns", None)  # must not be chosen for batch norm
    results = train_cohort(configs(data, seeds=4, momentum=0.9), data, model)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train).long()
    for r in results:
        assert r.status == "finished" and np.abs(r.params["1.running_mean"]).sum() > 0  # statistics moved
        module = model.build(0)
        module.load_state_dict({k: torch.from_numpy(v) for k, v in r.params.items()})
        with torch.no_grad():
            eval_loss = F.cross_entropy(module.eval()(x), y).item()
            train_loss = F.cross_entropy(module.train()(x), y).item()
        assert r.history["train_loss"][-1] == pytest.approx(eval_loss, rel=1e-5)
        assert abs(eval_loss - train_loss) > 1e-4  # the modes differ, so the check above means something


def test_dropout_follows_its_seed_and_leaves_the_user_rng_alone():
    data = tiny_dataset()

    def dropout_factory(input_shape, num_classes):
        return torch.nn.Sequential(torch.nn.Linear(input_shape[0], WIDTH), torch.nn.ReLU(), torch.nn.Dropout(0.5),
                                   torch.nn.Linear(WIDTH, num_classes))

    model = torch_model(data, dropout_factory)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, b, _, c = train_cohort(configs(data, seeds=1) * 3 + configs(data, seeds=[0], dropout_seed=7), data, model)
    assert torch.equal(torch.get_rng_state(), before)
    np.testing.assert_array_equal(a.steps["mb_loss"], b.steps["mb_loss"])  # same seeds, same masks
    assert not np.allclose(a.steps["mb_loss"], c.steps["mb_loss"])  # another dropout seed, other masks


def test_micro_batches_give_the_whole_batch_update():
    data = tiny_dataset()
    model = torch_model(data)
    (whole,) = train_cohort(configs(data, momentum=0.9), data, model)
    (split,) = train_cohort(configs(data, momentum=0.9, micro_batch=5), data, model)
    np.testing.assert_allclose(split.steps["mb_loss"], whole.steps["mb_loss"], rtol=1e-5)
    for name in whole.params:
        np.testing.assert_allclose(split.params[name], whole.params[name], rtol=1e-5, atol=1e-6)


def test_phases_switch_batch_size_and_lr():
    data = tiny_dataset()
    (r,) = train_cohort(configs(data, epochs=3, phases=[(1, 64, 0.01)], instruments="cheap"), data, torch_model(data))
    assert list(np.diff(r.history["step"])) == [13, 4, 4]  # ceil(203/16), then ceil(203/64)
    rate = r.steps["update_norm"] / r.steps["grad_norm"]  # plain SGD: the update is lr x the gradient
    np.testing.assert_allclose(rate, np.r_[np.full(13, 0.05), np.full(8, 0.01)], rtol=1e-5)


def test_regression_loss_and_gradient_match_a_hand_written_mse():
    data = tiny_dataset("regression")

    def linear(input_shape, num_outputs):
        return torch.nn.Sequential(torch.nn.Linear(input_shape[0], 8), torch.nn.Tanh(), torch.nn.Linear(8, num_outputs))

    model = torch_model(data, linear, "regression")
    (cfg,) = configs(data, batch_size=N, epochs=1, lr=0.1)  # one full-batch step
    (r,) = train_cohort([cfg], data, model, checkpoints=(0, 1))
    module = model.build(cfg.init_seed)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    loss = ((module(x)[:, 0] - y) ** 2).mean()
    grads = torch.autograd.grad(loss, list(module.parameters()))
    assert r.steps["mb_loss"][0] == pytest.approx(loss.item(), rel=1e-6)
    np.testing.assert_allclose(r.history["train_r2"], 1 - r.history["train_loss"] / np.var(data.y_train), atol=1e-6)
    for (name, p), g in zip(module.named_parameters(), grads):
        np.testing.assert_allclose(r.checkpoints[1][name], (p - 0.1 * g).detach().numpy(), rtol=1e-5, atol=1e-6)
    # per-sample gradients (the noise statistics' input) against a loop over samples
    rows = per_sample_gradients(model, r.checkpoints[0], {}, data.x_train[:7], data.y_train[:7])
    for i in range(7):
        sample = torch.autograd.grad(((module(x[i:i + 1])[:, 0] - y[i:i + 1]) ** 2).sum(), list(module.parameters()))
        np.testing.assert_allclose(rows[i], torch.cat([g.reshape(-1) for g in sample]).numpy(), rtol=1e-5, atol=1e-7)


def test_adapter_identity_seeds_and_bad_models():
    data = tiny_dataset()
    model = torch_model(data)
    assert model.backend == "torch" and model.fingerprint(data) == torch_model(data).fingerprint(data)
    wider = adapt_torch(lambda: torch.nn.Sequential(torch.nn.Linear(FEATURES, 32), torch.nn.ReLU(),
                                                    torch.nn.Linear(32, CLASSES)), (FEATURES,), CLASSES)
    assert wider.fingerprint(data) != model.fingerprint(data)
    instance = adapt_torch(mlp_factory((FEATURES,), CLASSES), (FEATURES,), CLASSES)
    state = torch.get_rng_state()
    a, b = instance.build(0), instance.build(1)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a[0].weight, instance.build(0)[0].weight) and not torch.equal(a[0].weight, b[0].weight)
    with pytest.raises(BatchlabError, match="needs 4 outputs"):
        adapt_torch(lambda: mlp_factory((FEATURES,), CLASSES), (FEATURES,), CLASSES + 1)
    with pytest.raises(BatchlabError, match="not available for PyTorch models"):
        model.apply({}, {}, data.x_train)


def test_which_models_train_stacked():
    data = tiny_dataset()
    rows = torch.from_numpy(data.x_train[:2])
    conv = torch.nn.Sequential(torch.nn.Unflatten(1, (1, FEATURES)), torch.nn.Conv1d(1, 4, 3), torch.nn.Flatten(),
                               torch.nn.Linear(4 * (FEATURES - 2), CLASSES))
    dropout = torch.nn.Sequential(torch.nn.Linear(FEATURES, CLASSES), torch.nn.Dropout(0.1))
    assert should_stack(mlp_factory((FEATURES,), CLASSES), rows)
    for module in (bn_factory((FEATURES,), CLASSES), conv, dropout):
        assert not should_stack(module, rows)


def test_noise_statistics_of_a_checkpoint_and_no_hessian():
    from batchlab.studies.gradient_noise import measure_checkpoint

    data = tiny_dataset()
    model = torch_model(data)
    (r,) = train_cohort(configs(data, epochs=1), data, model, checkpoints=(1,))
    row, points = measure_checkpoint(model, r.checkpoints[1], data.x_train, data.y_train, [1, 8, 64], trials=50,
                                     sharpness=False)
    assert row["pool"] == N and np.isfinite([row["grad_sq"], row["trace"], row["noise_scale"]]).all()
    assert len(points) == 2 * 3  # reductions sum and mean x batch sizes
    with pytest.raises(BatchlabError, match="not available for PyTorch models"):
        measure_checkpoint(model, r.checkpoints[1], data.x_train, data.y_train, [1, 8], trials=10, sharpness=True)


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_runs_go_through_the_api_and_the_store(tmp_path, task):
    from batchlab.api import run_configs
    from batchlab.store import Store

    data = tiny_dataset(task)
    model = torch_model(data, task=task)
    cfgs = configs(data, seeds=2, epochs=2, instruments="cheap")
    first = run_configs(cfgs, data, model, db=tmp_path / "runs.db")
    again = run_configs(cfgs, data, model, db=tmp_path / "runs.db")
    assert sorted(again.skipped) == sorted(c.run_id for c in cfgs)  # finished runs are read back, not retrained
    with Store(tmp_path / "runs.db") as store:
        stored = {r.run_id: r for r in store.load([c.run_id for c in cfgs])}
    for r in first.runs:
        np.testing.assert_allclose(stored[r.run_id].history["train_loss"], r.history["train_loss"])
        np.testing.assert_allclose(stored[r.run_id].steps["grad_norm"], r.steps["grad_norm"])
    assert len(first.summary) == 2
