"""A run's id covers everything that changes its numbers; grouping never mixes settings."""

import numpy as np

import batchlab
from batchlab.analysis.curves import varying_settings
from batchlab.config import flat_settings
from batchlab.data import Dataset, load_dataset, resolve_data_config
from batchlab.models.mlp import mlp


def arrays(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(int)


def test_two_array_datasets_with_one_name_get_different_runs(tmp_path):
    db = tmp_path / "runs.db"
    a = batchlab.train(data=arrays(0), batch_size=8, epochs=1, db=db)
    b = batchlab.train(data=arrays(1), batch_size=8, epochs=1, db=db)
    assert a.runs[0].config.data.name == b.runs[0].config.data.name
    assert a.runs[0].run_id != b.runs[0].run_id and not b.skipped


def test_two_dataset_objects_with_one_name_get_different_runs(tmp_path):
    blobs = load_dataset(resolve_data_config("blobs"))
    other = Dataset(blobs.name, blobs.x_train * 2, blobs.y_train, blobs.x_test, blobs.y_test, blobs.num_classes)
    db = tmp_path / "runs.db"
    a = batchlab.train(data=blobs, batch_size=50, epochs=1, db=db)
    b = batchlab.train(data=other, batch_size=50, epochs=1, db=db)
    assert a.runs[0].run_id != b.runs[0].run_id and not b.skipped
    again = batchlab.train(data=blobs, batch_size=50, epochs=1, db=db)
    assert again.skipped == [a.runs[0].run_id]


def test_two_custom_models_with_one_name_get_different_runs(tmp_path):
    wide, narrow = mlp((2,), 3, (16,)), mlp((2,), 3, (4,))
    tanh = mlp((2,), 3, (16,), activation="tanh")  # same parameters as `wide`, another forward pass
    db = tmp_path / "runs.db"
    ids = []
    for net in (wide, narrow, tanh):
        model = batchlab.Model(net.init, net.apply, name="mine")
        result = batchlab.train(model=model, batch_size=50, epochs=1, db=db)
        assert not result.skipped
        ids.append(result.runs[0].run_id)
    assert len(set(ids)) == 3
    same = batchlab.train(model=batchlab.Model(wide.init, wide.apply, "mine"), batch_size=50, epochs=1, db=db)
    assert same.skipped == [ids[0]]


def test_runs_differing_in_a_hidden_setting_are_never_averaged_as_seeds():
    results = [batchlab.train("blobs", batch_size=50, epochs=1, hidden=h, dropout=d, nesterov=n, momentum=0.9)
               for h, d, n in (((8,), 0.0, False), ((16,), 0.0, False), ((8,), 0.2, False), ((8,), 0.0, True))]
    frame = batchlab.api.TrainResult([r.runs[0] for r in results]).summary
    assert set(varying_settings(frame)) == {"model.hidden", "model.dropout", "optimizer.nesterov"}
    assert len(frame.groupby(varying_settings(frame), dropna=False)) == 4


def test_flat_settings_cover_every_config_field():
    cfg = batchlab.train("blobs", batch_size=50, epochs=1).runs[0].config
    flat = flat_settings(cfg)
    assert flat["data"] == "blobs" and flat["lr"] == 0.01 and flat["model.hidden"] == "50"
    leaves = []

    def count(d):
        for v in d.values():
            count(v) if isinstance(v, dict) else leaves.append(v)
    count(cfg.to_dict())
    assert len(flat) == len(leaves)
