"""The advisor's pure parts against brute force: the memory search, the Pareto front, the step
time fit, the branching rule, the budget's text, and a blown-up lr never recommended."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from batchlab.advisor import memory
from batchlab.advisor.plan import candidate_sizes, parse_budget
from batchlab.analysis import advice
from batchlab.analysis.sweep import sweep_tables
from batchlab.errors import BatchlabError
from batchlab.targets import parse_target


def _linear_memory(base: int, per_row: int, calls: list):
    def try_size(b: int) -> int:
        calls.append(b)
        return base + per_row * b
    return try_size


@pytest.mark.parametrize("limit_rows,cap", [(10_000, None), (300, None), (10_000, 64), (5, None)])
def test_memory_search_returns_only_sizes_it_ran_within_margin_and_cap(limit_rows, cap):
    sizes = [8, 16, 32, 64, 128, 256, 512, 1024]
    base, per_row = 1000, 100
    limit = base + per_row * limit_rows
    calls: list[int] = []
    found = memory.search(sizes, _linear_memory(base, per_row, calls), limit, cap)
    allowed = (1 - memory.MARGIN) * limit
    fitting = [b for b in sizes if base + per_row * b <= allowed and (cap is None or b <= cap)]
    assert found.fits == (max(fitting) if fitting else None)
    if found.fits is not None:
        assert found.fits in calls  # never a size it did not run
    assert all(cap is None or b <= cap for b in calls)
    assert calls == sorted(calls) and len(calls) <= len(fitting) + 1  # stops at the first that does not fit


def test_memory_search_stops_at_an_out_of_memory_error_and_on_a_prediction():
    def oom_at_64(b):
        if b >= 64:
            raise MemoryError("RESOURCE_EXHAUSTED")
        return 10 * b
    found = memory.search([8, 16, 32, 64, 128], oom_at_64, limit=10 ** 9)
    assert found.fits == 32 and "out of memory" in found.stopped
    calls: list[int] = []
    # 8 -> 800, 16 -> 1600: 32 is predicted at 3200 > 0.8 x 3000 and is never run.
    found = memory.search([8, 16, 32], _linear_memory(0, 100, calls), limit=3000)
    assert found.fits == 16 and calls == [8, 16] and "would take" in found.stopped


def test_pareto_front_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        t, s = rng.integers(1, 6, 8).astype(float), rng.integers(1, 6, 8).astype(float)
        front = advice.pareto(t, s)
        for i in range(8):
            dominated = any(t[j] <= t[i] and s[j] <= s[i] and (t[j] < t[i] or s[j] < s[i]) for j in range(8))
            assert front[i] == (not dominated)


def test_step_time_fit_recovers_a_line_and_stays_non_negative():
    b = np.array([8, 16, 32, 64, 128, 256])
    a, slope = advice.step_time_fit(b, 2e-4 + 3e-6 * b)
    assert a == pytest.approx(2e-4, rel=1e-6) and slope == pytest.approx(3e-6, rel=1e-6)
    a, slope = advice.step_time_fit(b, 1e-3 - 1e-6 * b)  # falling times: the slope is held at 0
    assert slope == 0.0 and a > 0


@pytest.mark.parametrize("losses,expected", [
    ([1.0, 1.01, 1.02, 1.3], (32.0, False)),  # 1.3 > 1.05 x 1.0: B=64 falls behind
    ([1.0, 0.9, 0.93, 0.94], (64.0, True)),  # all within 5% of 0.9: censored at the largest branch
    ([1.0, 1.2, 0.9, 0.9], (8.0, False)),  # the first that falls behind ends the scan
    ([1.0, math.inf, 1.0, 1.0], (8.0, False)),  # a diverged branch falls behind
])
def test_local_critical_batch_by_the_branching_rule(losses, expected):
    assert advice.local_critical_batch([8, 16, 32, 64], losses, tolerance=0.05) == expected


def test_smoothing_is_an_exponential_moving_average():
    assert advice.smoothed([4.0, 2.0, 1.0], alpha=0.5) == pytest.approx(0.5 * 1.0 + 0.5 * (0.5 * 2.0 + 0.5 * 4.0))


def test_budget_text():
    assert parse_budget("10m") == 600 and parse_budget("1h30m") == 5400 and parse_budget("90s") == 90
    assert parse_budget(45) == 45
    for bad in ("5s", "ten minutes", "", True, -60):
        with pytest.raises(BatchlabError):
            parse_budget(bad)


def test_candidate_sizes_respect_n_and_the_cap():
    assert candidate_sizes(1437, None) == [8, 16, 32, 64, 128, 256, 512, 1024, 1437]
    assert candidate_sizes(1437, 100) == [8, 16, 32, 64, 100]
    assert candidate_sizes(1024, None) == [8, 16, 32, 64, 128, 256, 512, 1024]
    assert candidate_sizes(5, None) == [5]


def _history(run_id, b, lr, seed, losses, accs):
    n = 1000
    steps = np.arange(len(losses)) * math.ceil(n / b)
    return pd.DataFrame({"run_id": run_id, "batch_size": b, "lr": lr, "seed": seed, "epoch": np.arange(len(losses)),
                         "step": steps, "samples_seen": steps * b, "wall_time": np.arange(len(losses)) * 0.1,
                         "train_loss": losses, "test_acc": accs})


def test_a_blown_up_lr_is_never_recommended_nor_called_best_by_analyze():
    """At every B, lr = 1 crosses the target first (epoch 1) and then blows up to a finite 1e22 and
    ends below the target; lr = 0.1 reaches it at epoch 3 and stays. Both the advisor and
    ``analyze`` (``sweep_tables``) must take lr = 0.1."""
    frames, rows = [], []
    for (b, lr, seed) in itertools.product((16, 64, 256), (0.1, 1.0), range(3)):
        run_id = f"b{b}-lr{lr}-s{seed}"
        if lr == 1.0:
            losses, accs = [2.0, 0.1, 1e10, 1e22], [0.1, 0.95, 0.2, 0.1]
        else:
            losses, accs = [2.0, 1.0, 0.5, 0.2], [0.1, 0.5, 0.8, 0.95]
        frames.append(_history(run_id, b, lr, seed, losses, accs))
        rows.append({"run_id": run_id, "batch_size": b, "lr": lr, "seed": seed, "status": "finished",
                     "train_acc": accs[-1], "test_acc": accs[-1]})
    history, summary = pd.concat(frames, ignore_index=True), pd.DataFrame(rows)
    target = parse_target("test_acc>=0.9")
    _, table = advice.per_batch(history, summary, target, {16: 1e-3, 64: 1e-3, 256: 1e-3}, 1000)
    assert (table.lr == 0.1).all()
    assert advice.choose(table).lr == 0.1
    _, best, _, _ = sweep_tables(history, summary, target)
    assert (best.lr == 0.1).all()
