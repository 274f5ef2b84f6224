"""The squared batch-sum gradient norm per sample, against theory (``science.md`` 3.2, 4).

E||sum_{i in batch} g_i||^2 / B = tr(Sigma) f(B) + B ||G||^2 (f(B) = (P-B)/(P-1) without
replacement): flat at tr(Sigma) while the noise dominates (squared norm linear in B, per-sample
gradients adding like a random walk), rising once B passes B_simple = tr(Sigma)/||G||^2
(quadratic growth). Competing (cancelling) per-sample gradients would make it fall.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import FuncFormatter

from batchlab.plots.log_ticks import readable_log_axis


def _number(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def _draw_checkpoint(left: plt.Axes, right: plt.Axes, colour: str, first: bool, epoch, group: pd.DataFrame,
                     row: pd.Series) -> None:
    """One checkpoint's measured norms per sample with theory, tr(Σ) and B_simple (left), and
    its deviation from theory (right; nudged sideways so checkpoints do not hide each other)."""
    b = group.batch_size.to_numpy(float)
    mean, low, high = (group[c].to_numpy(float) / b for c in ("mean_sq_norm", "mean_sq_low", "mean_sq_high"))
    theory = group.theory_sq_norm.to_numpy(float) / b
    left.errorbar(b, mean, yerr=[mean - low, high - mean], fmt="o", ms=4, capsize=3, color=colour,
                  label=f"epoch {epoch}: measured")
    left.plot(b, theory, "--", color=colour, lw=1.2, label=f"epoch {epoch}: theory")
    left.axhline(row.trace, color=colour, ls=":", lw=1, label=f"epoch {epoch}: tr(Σ) = {_number(row.trace)}")
    inside = b.min() <= row.noise_scale <= b.max()
    # Out of range, B_simple still gets its legend entry (an empty line), so it is never silently lost.
    (left.axvline if inside else lambda x, **kw: left.plot([], [], **kw))(
        row.noise_scale, color=colour, ls="-.", lw=1,
        label=f"epoch {epoch}: B_simple = {_number(row.noise_scale)}" + ("" if inside else " (off the axis)"))
    right.errorbar(b * (1 / 1.04 if first else 1.04), mean / theory - 1,
                   yerr=[(mean - low) / theory, (high - mean) / theory], fmt="o", ms=4, capsize=3,
                   color=colour, label=f"epoch {epoch}")


def sq_norm_per_sample_figure(check: pd.DataFrame, stats: pd.DataFrame, title: str = "") -> plt.Figure:
    """Left: mean ||batch-sum g_B||^2 / B with its simultaneous 95% interval, the theory curve
    (dashed), tr(Sigma) (dotted) and B_simple (vertical line), one colour per checkpoint.
    Right: measured / theory - 1 with the same intervals, which cover 0 where theory holds.

    ``check``: epoch, batch_size, mean_sq_norm, mean_sq_low, mean_sq_high, theory_sq_norm
    (batch sum); ``stats``: epoch, trace, noise_scale.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(11.5, 4.6), layout="constrained")
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (epoch, group) in enumerate(check.sort_values("batch_size").groupby("epoch", sort=True)):
        _draw_checkpoint(left, right, colours[i % len(colours)], i == 0, epoch, group,
                         stats[stats.epoch == epoch].iloc[0])
    right.axhline(0, color="0.3", lw=1, label="theory (0)")
    left.set_yscale("log")
    readable_log_axis(left.yaxis)
    left.set_ylabel(r"$\|g_1 + \dots + g_B\|^2 \,/\, B$, batch-sum gradient" + "\n((nats per unit parameter)$^2$)")
    left.set_title("squared batch-sum norm per sample: flat = linear in B, rising = quadratic", fontsize=9)
    right.set_ylabel("measured / theory - 1")
    right.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:+.0%}"))
    right.set_title("relative deviation from theory (nudged sideways per epoch)", fontsize=9)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.set_xlabel("batch size B (examples)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7.5, framealpha=0.85, loc="best")
    fig.suptitle(f"{title}\nerror bars: simultaneous 95% t-intervals of the mean over the trials "
                 "(Bonferroni over the batch sizes)", fontsize=10)
    return fig
