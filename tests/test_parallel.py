"""Cohorts in threads (``engine/parallel.py``) and programs without a momentum buffer give the
same runs as one cohort after another and as SGD with a momentum of 0; a failing or abandoned
group stops its cohorts."""

import threading
import time

import numpy as np
import optax
import pytest

from batchlab.api import group_cohorts, prepare
from batchlab.engine import backends, compile_queue, optim, parallel, programs, step


def _prepare(**settings):
    defaults = dict(hidden=(16,), activation="relu", init="he_uniform", dropout=0.0, standardize=None,
                    test_fraction=0.2, label="label", epochs=2, lr="0.05,0.1", momentum=0.0, seeds=2,
                    batch_size="1,8,full")
    return prepare("digits", "mlp", **{**defaults, **settings})


def _train(configs, dataset, net, threads):
    results = {}
    for cohort_results in backends.train_cohorts(group_cohorts(configs), dataset, net, threads=threads):
        results.update((r.run_id, r) for r in cohort_results)
    return results


def _leaves(result):
    import jax

    return [np.asarray(leaf) for leaf in jax.tree.leaves(result.params)]


def test_cohorts_in_two_threads_equal_one_after_another():
    configs, dataset, net = _prepare(momentum="0,0.9")
    assert len(group_cohorts(configs)) == 6  # 3 batch sizes x (with, without momentum)
    one, two = _train(configs, dataset, net, threads=1), _train(configs, dataset, net, threads=2)
    assert one.keys() == two.keys() == {c.run_id for c in configs}
    for run_id, result in one.items():
        for name in ("train_loss", "test_acc"):
            np.testing.assert_array_equal(result.history[name], two[run_id].history[name])
        np.testing.assert_array_equal(result.steps["mb_loss"], two[run_id].steps["mb_loss"])
        for x, y in zip(_leaves(result), _leaves(two[run_id])):
            np.testing.assert_array_equal(x, y)


def _sgd_with_a_momentum_buffer(cfg, lr=None, momentum=None, weight_decay=None):
    """The engine's optimizer before programs without momentum: the momentum is always a
    traced value, so SGD keeps (and updates) a buffer even when it is 0."""
    return optax.sgd(learning_rate=cfg.lr if lr is None else lr, momentum=momentum)


def test_no_momentum_program_equals_sgd_with_a_zero_momentum_buffer(monkeypatch):
    configs, dataset, net = _prepare(batch_size="1,16", epochs=3)
    assert all(c.optimizer.momentum == 0 for c in configs)
    fast = _train(configs, dataset, net, threads=1)
    monkeypatch.setattr(step, "make_optimizer", _sgd_with_a_momentum_buffer)
    monkeypatch.setattr(programs, "make_optimizer", _sgd_with_a_momentum_buffer)
    monkeypatch.setattr(programs.QUEUE, "_programs", {})  # compile the programs again, with the buffer
    monkeypatch.setattr(programs, "_state_specs", {})
    buffered = _train(configs, dataset, net, threads=1)
    for run_id, result in fast.items():
        np.testing.assert_array_equal(result.history["train_loss"], buffered[run_id].history["train_loss"])
        np.testing.assert_array_equal(result.steps["mb_loss"], buffered[run_id].steps["mb_loss"])
        for x, y in zip(_leaves(result), _leaves(buffered[run_id])):
            np.testing.assert_array_equal(x, y)


def test_a_momentum_of_zero_keeps_no_buffer_and_other_momenta_do():
    configs, _, _ = _prepare(momentum="0,0.5", batch_size="8", lr="0.1", seeds=1)
    without, with_momentum = sorted(configs, key=lambda c: c.optimizer.momentum)
    params = {"w": np.ones(3, np.float32)}
    assert optim.make_optimizer(without.optimizer, 0.1, 0.5).init(params) == (optax.EmptyState(), optax.EmptyState())
    buffer = optim.make_optimizer(with_momentum.optimizer, 0.1, 0.5).init(params)[0]
    assert isinstance(buffer, optax.TraceState)
    assert without.cohort_key() != with_momentum.cohort_key()


def test_an_error_in_one_cohort_is_raised_and_stops_the_others():
    finished = threading.Event()

    def slow():
        for _ in range(500):
            parallel.check_cancelled()
            time.sleep(0.01)
        finished.set()

    def failing():
        time.sleep(0.05)
        raise ValueError("bad cohort")

    start = time.perf_counter()
    with pytest.raises(ValueError, match="bad cohort"):
        list(parallel.in_threads([slow, failing], threads=2))
    assert not finished.is_set()
    assert time.perf_counter() - start < 2.5  # the slow job stopped at a check, not after its 5 s


def test_leaving_early_cancels_running_and_queued_jobs():
    started, finished = [], []

    def job(name, seconds):
        def run():
            started.append(name)
            for _ in range(int(seconds / 0.01)):
                parallel.check_cancelled()
                time.sleep(0.01)
            finished.append(name)
            return name
        return run

    start = time.perf_counter()
    results = parallel.in_threads([job("quick", 0.0), job("slow", 5.0), job("slow too", 5.0), job("queued", 0.0)],
                                  threads=2)
    assert next(results) == "quick"
    results.close()  # the consumer stops reading: both slow jobs stop, the queued one never starts
    assert finished == ["quick"]
    assert "queued" not in started
    assert time.perf_counter() - start < 2.5


def test_results_come_in_the_order_of_the_jobs():
    finish_order = []

    def job(name, seconds):
        def run():
            time.sleep(seconds)
            finish_order.append(name)
            return name
        return run

    assert list(parallel.in_threads([job("first", 0.3), job("second", 0.0), job("third", 0.1)], threads=3)) == [
        "first", "second", "third"]
    assert finish_order[0] != "first"  # it did finish last: the order is the jobs', not the threads'


def test_outside_a_group_nothing_is_cancelled():
    parallel.check_cancelled()  # the main thread belongs to no group: no exception
    assert list(parallel.in_threads([lambda: 1, lambda: 2], threads=1)) == [1, 2]


def test_batchlab_threads_sets_the_number_of_threads(monkeypatch):
    from batchlab.errors import BatchlabError

    monkeypatch.setenv("BATCHLAB_THREADS", "3")
    assert parallel.default_threads() == 3
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("BATCHLAB_THREADS", bad)
        with pytest.raises(BatchlabError, match="BATCHLAB_THREADS must be a whole number >= 1"):
            parallel.default_threads()


def test_programs_are_traced_one_at_a_time_in_queue_order():
    lock, entered, hold = compile_queue.InOrder(), [], threading.Event()

    def trace(order):
        lock.building.order = order
        with lock:
            entered.append(order)
            if order == 0:
                hold.wait(5)  # the others queue up meanwhile

    first = threading.Thread(target=trace, args=(0,))
    first.start()
    time.sleep(0.05)
    later = [threading.Thread(target=trace, args=(order,)) for order in (3, 1, 2)]
    for thread in later:
        thread.start()
        time.sleep(0.02)
    hold.set()
    for thread in [first, *later]:
        thread.join(5)
    assert entered == [0, 1, 2, 3]  # the waiters went in program order, not in arrival order
