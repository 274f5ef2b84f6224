import pytest

from batchlab.grid import build_configs, group_cohorts
from batchlab.config import DataConfig, ModelConfig
from batchlab.config import run_config_from_dict
from batchlab.parsing import parse_batch_sizes, parse_floats, parse_seeds, resolve_batch_size
from batchlab.errors import BatchlabError


def test_parse_batch_size_lists_and_ranges():
    assert parse_batch_sizes("1,32,full") == [1, 32, "full"]
    assert parse_batch_sizes("1:1024") == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
    assert parse_batch_sizes("4:12,full") == [4, 8, "full"]
    assert parse_batch_sizes(7) == [7]
    assert resolve_batch_size("full", 300) == 300


@pytest.mark.parametrize("spec", ["0", "-1", "2.5", "abc", "1,,2", "8:2"])
def test_parse_batch_size_rejects(spec):
    with pytest.raises(BatchlabError):
        parse_batch_sizes(spec)


def test_batch_size_above_n_is_named():
    with pytest.raises(BatchlabError, match="batch size 600 is outside"):
        resolve_batch_size(600, 500)


@pytest.mark.parametrize("spec", ["0", "-0.1", "nan", "inf", "x"])
def test_learning_rate_must_be_positive_and_finite(spec):
    with pytest.raises(BatchlabError, match="learning rate"):
        parse_floats(spec, "learning rate", positive=True)


def test_seeds():
    assert parse_seeds("3") == [0, 1, 2]
    assert parse_seeds("4,9") == [4, 9]
    with pytest.raises(BatchlabError):
        parse_seeds("0")


def test_grid_expansion_and_cohorts():
    data, model = DataConfig("blobs"), ModelConfig()
    configs = build_configs(data, 500, model, batch_size="1,32,full", epochs=3, lr="0.001,0.01", seeds=3)
    assert len(configs) == 18
    assert len({c.run_id for c in configs}) == 18
    cohorts = group_cohorts(configs)
    assert [len(c) for c in cohorts] == [6, 6, 6]
    assert [c[0].batch_size for c in cohorts] == [1, 32, 500]
    # init, data order and dropout seeds can be fixed separately
    fixed = build_configs(data, 500, model, batch_size=8, epochs=1, lr=0.1, seeds=2, data_seed=7)
    assert [c.data_seed for c in fixed] == [7, 7] and [c.init_seed for c in fixed] == [0, 1]


def test_run_id_is_stable_and_round_trips():
    cfg = build_configs(DataConfig("blobs"), 500, ModelConfig(hidden=(8, 4)), batch_size=5, epochs=2, lr=0.1)[0]
    again = run_config_from_dict(cfg.to_dict())
    assert again == cfg and again.run_id == cfg.run_id
    other = build_configs(DataConfig("blobs"), 500, ModelConfig(hidden=(8, 4)), batch_size=5, epochs=2, lr=0.2)[0]
    assert other.run_id != cfg.run_id


def test_a_setting_added_later_leaves_stored_ids_unchanged_while_at_its_default(tmp_path):
    import dataclasses

    import batchlab
    from batchlab.config import OptimizerConfig, RunConfig
    from batchlab.store import Store

    stored = batchlab.train("blobs", batch_size=50, epochs=1, lr=0.1, db=tmp_path / "runs.db").runs[0].config
    with Store(tmp_path / "runs.db") as store:
        assert store.run_ids() == {stored.run_id}
    # A new field of a nested config and of the run config itself, as a later version would declare them.
    Optimizer = dataclasses.make_dataclass("Optimizer", [("new_knob", float, dataclasses.field(default=0.5))],
                                           bases=(OptimizerConfig,), frozen=True)
    Run = dataclasses.make_dataclass("Run", [("new_thing", int, dataclasses.field(default=3))],
                                     bases=(RunConfig,), frozen=True)
    fields = {f.name: getattr(stored, f.name) for f in dataclasses.fields(RunConfig)}
    later = Run(**dict(fields, optimizer=Optimizer(**dataclasses.asdict(stored.optimizer))))
    assert later.run_id == stored.run_id
    assert Run(**dict(fields, new_thing=4)).run_id != stored.run_id
    assert Run(**dict(fields, optimizer=Optimizer(**dataclasses.asdict(stored.optimizer), new_knob=0.7))
               ).run_id != stored.run_id
