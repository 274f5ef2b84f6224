"""``batchlab.advise`` end to end with a Flax, a Keras and a PyTorch model (classification and
regression): a recommendation that the stored runs support, and the JSON a script reads."""

from __future__ import annotations

import json
import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # before Keras is imported anywhere in this process

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from batchlab.advisor import advise  # noqa: E402
from batchlab.store import Store  # noqa: E402

KEYS = {"batch_size", "lr", "epochs", "critical_batch", "local_critical_batch", "b_simple", "warnings", "rule"}


def digits(n=400):
    d = load_digits()
    return (d.data[:n] / 16).astype(np.float32), d.target[:n].astype(np.int32)


def regression(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    return x, (x @ rng.normal(size=6) + 0.3 * rng.normal(size=n)).astype(np.float32)


def flax_model():
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(10)(nn.relu(nn.Dense(32)(x)))
    return Net()


def keras_model():
    import keras

    def build():  # a function: each seed builds (and initialises) its own model
        return keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"), keras.layers.Dense(1)])
    return build


def torch_model():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


CASES = {"flax classification": (flax_model, digits, "classification", "train_acc>=0.9", {}),
         # AdamW with beta2 as the command line gives it (text): its rules rescale beta2, eps and decay
         "keras regression": (keras_model, regression, "regression", "train_loss<=0.3",
                              {"optimizer": "adamw", "beta2": "0.99", "weight_decay": "0.01"}),
         "torch classification": (torch_model, digits, "classification", "train_acc>=0.9", {})}


@pytest.mark.parametrize("case", CASES)
def test_advise_recommends_a_setting_its_stored_runs_support(case, tmp_path):
    make, data, task, target, fixed = CASES[case]
    db = tmp_path / "advice.db"
    advice = advise(make(), data(), target=target, budget="20s", max_batch=16, task=task, db=db, **fixed)
    rec = json.loads(advice.to_json())
    assert KEYS <= set(rec) and rec["reached"], rec["warnings"]
    assert rec["batch_size"] in {8, 16} and rec["lr"] > 0 and rec["epochs"] >= 1
    table = advice.tables["per_batch"].set_index("batch_size")
    assert table.loc[rec["batch_size"], "lr"] == rec["lr"]  # the recommended lr is that B's best
    assert rec["seconds"] <= 1.1 * 20  # the budget holds
    with Store(db, create=False) as store:
        record = store.studies()[advice.name]
        runs = store.load(record["groups"]["sweep"], steps=False)
    chosen = [r for r in runs if r.config.batch_size == rec["batch_size"] and r.config.optimizer.lr == rec["lr"]]
    assert len(chosen) >= 3 and all(r.status == "finished" for r in chosen)
    assert record["kind"] == "advice" and record["recommendation"]["batch_size"] == rec["batch_size"]
    if fixed:  # beta2 kept at the same half-life in samples from the base batch size (Marek et al.)
        k = rec["batch_size"] / rec["base_batch"]
        assert rec["beta2"] == pytest.approx(0.99 ** k) and chosen[0].config.optimizer.b2 == pytest.approx(0.99 ** k)


def test_an_unreachable_target_gets_no_recommendation_but_the_closest_runs(tmp_path):
    x, y = digits(200)
    advice = advise("mlp", (x, y), target="train_loss<=0", budget="20s", max_batch=16, hidden=(8,),
                    db=tmp_path / "advice.db")
    rec = advice.recommendation
    assert not rec["reached"] and rec["batch_size"] is None and rec["lr"] is None and rec["epochs"] is None
    closest = advice.tables["closest"]
    assert len(closest) == 3 and (closest.best > 0).all()  # the smallest training losses any run reached
    assert closest.best.is_monotonic_increasing and "not reached" in rec["warnings"][-1]
