"""Brute-force references for the monitor tests, written from the formulas (McCandlish et al.
2018, appendix A; a weighted mean's standard error), not from batchlab's code: float64 NumPy,
one update at a time."""

import numpy as np

DECAY = 0.99


def two_batch_series(small_sq, n_small, big_sq, n_big):
    """Per update: the bias-corrected EMAs of the unbiased |G|^2 and tr(Sigma) estimates, the
    standard error of the |G|^2 EMA, and B_simple where the EMA of |G|^2 exceeds 2 standard
    errors (else NaN). Inputs are sequences, one entry per update."""
    xs, trs, out = [], [], {"noise_grad_sq": [], "noise_trace": [], "noise_grad_sq_se": [], "noise_scale": []}
    for s, b, S, B in zip(small_sq, n_small, big_sq, n_big):
        xs.append((B * S - b * s) / (B - b))
        trs.append((s - S) / (1 / b - 1 / B))
        n = len(xs)
        w = (1 - DECAY) * DECAY ** np.arange(n)[::-1]  # the newest estimate weighs most
        w = w / w.sum()  # the bias correction
        g2, tr = float(w @ np.array(xs)), float(w @ np.array(trs))
        if n >= 2:
            var = float(w @ (np.array(xs) - g2) ** 2) / (1 - (w ** 2).sum())  # unbiased weighted variance
            se = float(np.sqrt((w ** 2).sum() * var))
        else:
            se = np.nan
        out["noise_grad_sq"].append(g2)
        out["noise_trace"].append(tr)
        out["noise_grad_sq_se"].append(se)
        out["noise_scale"].append(tr / g2 if n >= 2 and g2 > 2 * se else np.nan)
    return {k: np.array(v) for k, v in out.items()}


def sq(tensors):
    """||all tensors flattened together||^2 in float64."""
    return float(sum((t.detach().double() ** 2).sum() for t in tensors))
