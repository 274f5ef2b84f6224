"""The advisor's warnings, each a sentence for the output: about the recommendation and its
evidence, and about the user's data (``docs/advise.md`` lists them)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def of_choice(table: pd.DataFrame, choice: pd.Series, crit: dict, b_simple: float, ev: dict, optimizer: str) -> list[str]:
    """Warnings about a recommendation: best lrs at a grid's edge, batch sizes without a usable lr,
    the recommended B the largest tried, B_simple and B_crit far apart."""
    out = []
    edge = table[table.lr_edge != ""]
    if len(edge):
        out.append("best lr at the edge of its grid at " + ", ".join(f"B={int(r.batch_size)} ({r.lr_edge})"
                                                                     for r in edge.itertuples()) +
                   ": the best may lie beyond it")
    missing = table[table.lr.isna()]
    if len(missing):
        out.append("no usable lr reached the target at B=" + ", ".join(str(int(b)) for b in missing.batch_size))
    tried = ev["throughput"].batch_size.max()
    if int(choice.batch_size) >= tried:
        out.append(f"the recommended B={int(choice.batch_size)} is the largest tried ({ev['memory'].stopped or 'N or --max-batch'}); "
                   "a larger one might be faster")
    value = crit["value"]
    if math.isfinite(value) and math.isfinite(b_simple) and not 0.1 <= b_simple / value <= 10:
        out.append(f"B_simple ({b_simple:.3g}) and the fitted B_crit ({value:.3g}) differ by more than 10x"
                   + (": for Adam, B_simple can underestimate it by orders of magnitude (Merrill et al. 2025)"
                      if optimizer != "sgd" else ""))
    return out


def unscaled_features(x: np.ndarray, standardize) -> str:
    """A warning when the features look unscaled ('' otherwise): a column's largest magnitude
    above 1,000, or above 100 x the median column's. One lr then suits no column (pixels in
    [0, 1] with a few near-constant border pixels are fine: their magnitudes are small)."""
    if standardize:
        return ""
    scale = np.abs(np.asarray(x, np.float64).reshape(len(x), -1)).max(axis=0)
    scale = scale[scale > 0]
    if not len(scale):
        return ""
    top, median = float(scale.max()), float(np.median(scale))
    if top > 1e3 or top > 100 * median:
        return (f"features look unscaled (largest magnitude {top:.3g}, median column {median:.3g}); "
                "standardize them (--standardize) before trusting one lr for all of them")
    return ""
