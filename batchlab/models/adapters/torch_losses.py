"""The losses of ``models/losses.py`` for PyTorch outputs with a leading run axis (R, rows, ...):
what the torch backend trains on and what its checkpoint instruments differentiate."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def squared_errors(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-row squared error, averaged over the output dims (``models/losses.py``): ``out`` is
    (R, c) or (R, c, k...), ``y`` holds as many targets per row."""
    errors = (out - y.reshape(out.shape)).square()
    return errors.flatten(2).mean(-1) if errors.dim() > 2 else errors


def row_losses(out: torch.Tensor, y: torch.Tensor, task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row loss and score (R, c), as ``models/losses.row_losses``: cross-entropy and a hit
    (classification), or the squared error twice (regression)."""
    if task == "regression":
        errors = squared_errors(out, y)
        return errors, errors
    loss = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").reshape(y.shape)
    return loss, (out.argmax(-1) == y).to(out.dtype)


def batch_loss(out: torch.Tensor, y: torch.Tensor, task: str, mean: bool) -> torch.Tensor:
    """Per-run mean (or sum) over the rows of the per-sample losses: cross-entropy with integer
    labels, or the mean over output dims of the squared error (regression). ``out`` is
    (R, c, ...); the result is (R,), or a scalar for one run (its fused loss: fewer kernels)."""
    if task == "regression":
        rows = squared_errors(out, y)
        per_run = rows.mean(-1) if mean else rows.sum(-1)
        return per_run[0] if out.shape[0] == 1 else per_run
    if out.shape[0] == 1:
        return F.cross_entropy(out[0], y[0], reduction="mean" if mean else "sum")
    rows = F.cross_entropy(out.flatten(0, 1), y.flatten(), reduction="none").reshape(y.shape)
    return rows.mean(-1) if mean else rows.sum(-1)


def hits(outs: list[torch.Tensor], ys: list[torch.Tensor]) -> np.ndarray:
    """Correct predictions per run and row, (R, rows), rows in the order of the parts given."""
    out, y = torch.cat(outs, dim=1), torch.cat(ys, dim=1)
    return (out.argmax(-1) == y).cpu().numpy().astype(np.float64)
