"""What a reader sees in the figures, read back from matplotlib's own objects: every log axis
labelled with at least three plain numbers, a legend that hides no data, text as large as the
other figures'. Small made-up tables, no training: each test takes well under a second."""

from __future__ import annotations

import math
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

REPORT_COLUMN_PX = 1060  # the report's text column (1100 px less padding): wider figures are shrunk to it


def labelled_ticks(axis) -> list[str]:
    """The tick labels a reader sees on ``axis`` (major and minor, inside the view, non-empty)."""
    low, high = sorted(axis.get_view_interval())
    ticks = axis.get_major_ticks() + axis.get_minor_ticks()
    return [t.label1.get_text() for t in ticks if t.label1.get_visible() and t.label1.get_text()
            and low * (1 - 1e-9) <= t.get_loc() <= high * (1 + 1e-9)]


def log_axes(fig) -> list[tuple[str, object]]:
    """(name, axis) of each visible log axis that shows its own labels (a shared axis labelled
    on another panel is skipped)."""
    found = []
    for k, ax in enumerate(fig.axes):
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            ticks = axis.get_major_ticks() + axis.get_minor_ticks()
            if ax.get_visible() and axis.get_scale() == "log" and any(t.label1.get_visible() for t in ticks):
                found.append((f"axes {k} {name}", axis))
    return found


def assert_readable_log_axes(fig) -> None:
    fig.canvas.draw()
    axes = log_axes(fig)
    assert axes, "no log axis drawn"
    for name, axis in axes:
        labels = labelled_ticks(axis)
        assert len(labels) >= 3, (name, labels)
        for label in labels:  # plain numbers: 5k, 0.01, 2,000 -- not 1e+05 or 100000
            plain = "e+" not in label and "mathdefault" not in label and not re.fullmatch(r"\d{5,}", label)
            assert plain, (name, label)
    plt.close(fig)


# ---------------------------------------------------------------- made-up tables of the studies

def critical_batch_tables(samples: tuple[float, ...] = (4100.0, 5000.0, 5900.0)):
    sizes = [16, 64, 256]
    steps = [s / b for s, b in zip(samples, sizes)]
    best = pd.DataFrame({"batch_size": sizes, "lr": [0.1, 0.3, 0.3], "steps": steps,
                         "steps_std": [0.1 * v for v in steps], "samples": list(samples),
                         "samples_std": [0.1 * v for v in samples], "in_fit": [True] * 3, "reached": [1.0] * 3})
    fit = pd.Series({"s_min": 18.0, "b_crit": 209.0, "b_crit_low": 50.0, "b_crit_high": 900.0, "operational": 50.0,
                     "operational_low": 20.0, "operational_high": 300.0, "excess": 0.2})
    return best, fit


def throughput_tables():
    sizes = [32, 128, 512]
    table = pd.DataFrame({"batch_size": sizes, "throughput": [95e3, 140e3, 190e3],
                          "throughput_low": [90e3, 130e3, 180e3], "throughput_high": [100e3, 150e3, 200e3],
                          "seconds_per_epoch": [0.02, 0.015, 0.01], "seconds_per_epoch_low": [0.018, 0.013, 0.009],
                          "seconds_per_epoch_high": [0.022, 0.017, 0.011],
                          "seconds_to_target": [0.5, 0.4, 0.6], "seconds_to_target_low": [0.45, 0.35, 0.5],
                          "seconds_to_target_high": [0.55, 0.45, 0.7], "steps_to_target": [120.0, 40.0, 15.0],
                          "steps_to_target_low": [100.0, 35.0, 12.0], "steps_to_target_high": [140.0, 45.0, 18.0],
                          "seconds_per_step": [0.004, 0.01, 0.04], "seconds_per_step_low": [0.0035, 0.009, 0.035],
                          "seconds_per_step_high": [0.0045, 0.011, 0.045], "reached": [1.0, 1.0, 1.0]})
    runs = pd.DataFrame({"seed": [0, 0, 0, 1, 1, 1], "batch_size": sizes * 2,
                         "compile_seconds": [0.9, 1.0, 1.1, 0.0002, 0.0002, 0.0003]})
    return table, runs


def far_solutions_tables(long_epochs: int = 80):
    """A sweep of 10 epochs and an extra B=1024 run of ``long_epochs`` whose curve ends at the
    lower right of the accuracy panel, where a legend used to sit."""
    rows, runs = [], []
    groups = [("B=32, lr 0.05", "sweep", 32, 10, 0.9), ("B=256, lr 0.05", "sweep", 256, 10, 0.6),
              ("B=1024, lr 0.05", "sweep", 1024, 10, 0.3), ("B=1024, lr 0.5", "large_lr", 1024, 10, 0.7),
              (f"B=1024, lr 0.05, {long_epochs} epochs", "long", 1024, long_epochs, 0.35)]
    for group, role, b, epochs, end in groups:
        for epoch in range(epochs + 1):
            mean = 0.1 + (end - 0.1) * epoch / epochs
            rows.append(dict(group=group, role=role, batch_size=b, epoch=epoch, mean=mean, min=mean - 0.03,
                             max=mean + 0.03, count=3))
        for seed in range(3):
            runs.append(dict(group=group, role=role, batch_size=b, dist_final=3 * end + 0.1 * seed,
                             test_acc=end + 0.01 * seed))
    return pd.DataFrame(rows), pd.DataFrame(runs)


def sharpness_table():
    sizes, labels = [16, 256, 4000], ["16", "256", "4000 (full)"]
    table = pd.DataFrame({"batch_size": sizes, "label": labels, "seeds": [2, 2, 2]})
    for name, values in (("lambda_max", [10.0, 12.0, 7.0]), ("hessian_trace", [166.0, 126.0, 115.0]),
                         ("eps_sharpness", [3.0, 1.7, 2.2]), ("pool_loss", [1.0, 1.6, 2.4])):
        table[name] = values
        table[f"{name}_low"] = [0.7 * v for v in values]
        table[f"{name}_high"] = [1.3 * v for v in values]
    return table


# ---------------------------------------------------------------- item 4: log axes' labels

def test_critical_batch_samples_panel_has_three_labelled_ticks():
    """A narrow span (4,100..5,900 samples) used to show "5000" alone on the right panel."""
    from batchlab.plots.critical_batch import to_target_with_intervals

    best, fit = critical_batch_tables()
    assert_readable_log_axes(to_target_with_intervals(best, fit, "train_loss<=0.1", "made up"))


def test_throughput_axes_have_three_labelled_ticks():
    """90k..200k samples/s used to show "100000" and "200000" only."""
    from batchlab.plots.throughput import throughput_figure, time_to_target_figure

    table, runs = throughput_tables()
    assert_readable_log_axes(throughput_figure(table, runs, "made up"))
    fastest = pd.Series({"batch_size": 128.0, "stable_share": 0.6})
    assert_readable_log_axes(time_to_target_figure(table, fastest, "train_loss<=0.1", "made up"))


def test_spread_and_tails_axes_have_three_labelled_ticks():
    """Update sizes within a factor 1.6 of the median used to show "1" alone on a log axis."""
    from batchlab.plots.distance import spread_and_tails

    spread = pd.DataFrame({"batch_size": [32, 32, 256, 256], "samples_seen": [1437, 2874] * 2,
                           "std": [0.05, 0.07, 0.08, 0.09]})
    edges = np.geomspace(0.7, 1.6, 9)
    sizes = pd.DataFrame([dict(batch_size=b, low=lo, high=hi, density=d, updates=u) for b, u in ((32, 180), (256, 24))
                          for lo, hi, d in zip(edges[:-1], edges[1:], np.geomspace(0.5, 4, 8))])
    groups = pd.DataFrame({"batch_size": [32, 256, 1024], "tail_ratio": [1.3, 1.4, 1.2],
                           "tail_ratio_low": [1.2, 1.1, 1.0], "tail_ratio_high": [1.4, 1.7, 1.5]})
    assert_readable_log_axes(spread_and_tails(spread, sizes, groups, 0.95, "made up"))


def test_two_batch_sizes_still_get_three_labels():
    """A batch-size axis of two sizes (the epochs study at quick size: 16, 64) names a third."""
    from batchlab.plots.stability import log2_axis

    fig, ax = plt.subplots()
    ax.plot([16, 64], [1, 2])
    log2_axis(ax, [16, 64])
    fig.canvas.draw()
    assert labelled_ticks(ax.xaxis) == ["16", "64", "32"]
    fig, ax = plt.subplots()
    ax.plot([16, 32], [1, 2])
    log2_axis(ax, [16, 32])  # nothing between them: one power of two beyond each end
    fig.canvas.draw()
    assert sorted(labelled_ticks(ax.xaxis), key=int) == ["8", "16", "32", "64"]
    plt.close("all")


@pytest.mark.parametrize("low, high", [(4100, 5900), (90e3, 210e3), (0.7, 1.05), (1e-9, 20.0), (0.3, 2.0),
                                       (1.0, 1000.0), (99.0, 101.0), (2e-5, 5e-4), (3.0, 1e12)])
def test_log_locator_labels_three_ticks_at_any_span(low, high):
    from batchlab.plots.log_ticks import LabelledLogLocator, readable

    ticks = [t for t in LabelledLogLocator().tick_values(low, high) if low <= t <= high]
    assert 3 <= len(ticks) <= 10, ticks
    assert all(readable(t) for t in ticks)


def test_readable_numbers():
    from batchlab.plots.log_ticks import readable

    assert [readable(v) for v in (0.0005, 0.5, 20, 2500, 5000, 100000, 3e6)] == \
        ["0.0005", "0.5", "20", "2.5k", "5k", "100k", "3M"]
    assert readable(1e-9) == "$10^{-9}$" and readable(0.01, powers=True) == "$10^{-2}$"


# ---------------------------------------------------------------- item 6: the legend hides no data

def _display_points(ax) -> np.ndarray:
    """Every drawn data point of ``ax`` (lines and scatter markers) in display coordinates."""
    points = [line.get_transform().transform(np.column_stack(line.get_data())) for line in ax.get_lines()]
    points += [c.get_offset_transform().transform(c.get_offsets()) for c in ax.collections
               if len(c.get_offsets()) and type(c).__name__ == "PathCollection"]
    return np.vstack(points)


def _segments_cross(box, points: np.ndarray) -> bool:
    """Whether ``box`` (a display Bbox) holds a point of, or a straight piece between consecutive
    points of, the polyline ``points`` (sampled finely enough for a legend-sized box)."""
    for a, b in zip(points[:-1], points[1:]):
        for t in np.linspace(0, 1, 25):
            x, y = a + t * (b - a)
            if box.x0 <= x <= box.x1 and box.y0 <= y <= box.y1:
                return True
    return len(points) == 1 and box.contains(*points[0])


def test_far_solutions_legend_covers_no_curve_or_point():
    from batchlab.plots.distance import far_solutions

    accuracy, runs = far_solutions_tables()
    fig = far_solutions(accuracy, runs, "made up")
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [legend for legend in [*fig.legends, *(ax.get_legend() for ax in fig.axes)] if legend is not None]
    assert legends, "the figure has no legend"
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            for line in ax.get_lines():
                points = line.get_transform().transform(np.column_stack(line.get_data()))
                assert not _segments_cross(box, points), (line.get_label(), box)
            for points in _display_points(ax):
                assert not box.contains(*points), (points, box)
    plt.close(fig)


# ---------------------------------------------------------------- item 7: text as large as elsewhere

def _effective_sizes(fig, column_px: float = REPORT_COLUMN_PX) -> dict[str, float]:
    """Font size (pt) of each kind of text as shown in the report's column: a figure wider than
    the column is shrunk to it, its text with it (SVG: 1 pt = 4/3 CSS px)."""
    fig.canvas.draw()
    shrink = min(1.0, column_px / (fig.get_size_inches()[0] * 72 * 4 / 3))
    sizes = {"ticks": [], "labels": [], "notes": []}
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        sizes["ticks"] += [t.get_fontsize() for t in ax.get_xticklabels() + ax.get_yticklabels() if t.get_text()]
        sizes["labels"] += [t.get_fontsize() for t in (ax.xaxis.label, ax.yaxis.label) if t.get_text()]
    sizes["notes"] += [t.get_fontsize() for t in fig.texts if t.get_text()]
    return {kind: shrink * min(values) for kind, values in sizes.items() if values}


def test_sharpness_figure_text_is_as_large_as_the_other_figures():
    from batchlab.plots.generalization import MEASURE_LABELS, sharpness_figure
    from batchlab.plots.stability import stability_figure

    table = sharpness_table()
    sharp = _effective_sizes(sharpness_figure(table, tuple(MEASURE_LABELS), "made up"))
    sweep = pd.DataFrame({"batch_size": [4, 32, 256], "epoch_to_threshold": [2.0, 8.0, 37.0],
                          "epoch_to_threshold_low": [0.0, 1.0, 30.0], "epoch_to_threshold_high": [6.0, 14.0, 44.0],
                          "late_jitter": [0.03, 0.01, 0.007], "late_jitter_low": [0.02, 0.006, 0.004],
                          "late_jitter_high": [0.045, 0.02, 0.012], "reached": [1.0, 1.0, 1.0]})
    reference = _effective_sizes(stability_figure(sweep, 0.8, 30, "made up"))  # a brownlee figure
    assert sharp["ticks"] >= 0.95 * reference["ticks"], (sharp, reference)
    assert sharp["labels"] >= 0.95 * reference["labels"], (sharp, reference)
    assert min(sharp.values()) >= 7.0, sharp
    plt.close("all")


def test_sharpness_figure_fits_the_report_column():
    from batchlab.plots.generalization import MEASURE_LABELS, sharpness_figure

    fig = sharpness_figure(sharpness_table(), tuple(MEASURE_LABELS), "made up")
    assert fig.get_size_inches()[0] * 96 <= 1.1 * REPORT_COLUMN_PX
    assert math.isclose(len([ax for ax in fig.axes if ax.get_visible()]), len(MEASURE_LABELS))
    plt.close(fig)
