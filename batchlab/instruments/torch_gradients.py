"""Per-sample gradients of a PyTorch model (``torch.func``), for the checkpoint statistics.

``instruments/gradients.py`` dispatches here for a model with ``backend == "torch"``; the
(P, D) matrix it gets back feeds ``gram_matrix`` and ``statistics_from_gram`` unchanged.
Each row is one sample's gradient of its loss (eval mode: no dropout, batch norm with its
running statistics, as the JAX path), the parameters flattened in ``named_parameters`` order.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.func import functional_call, grad, vmap

from batchlab.models.adapters.torch_losses import batch_loss


def per_sample_gradients(model, params: dict, model_state, x, y, chunk: int = 256) -> np.ndarray:
    """Matrix (P, D) float32 of flattened per-sample loss gradients, ``vmap(grad(functional_call))``
    over rows in chunks of ``chunk`` (memory: chunk x parameters).

    ``params``: a run's saved parameters, NumPy arrays by name (``RunResult.params`` or a
    checkpoint: buffers such as batch-norm statistics may be included there); ``model_state``:
    an optional dict of buffers by name that overrides them (``{}`` keeps the saved ones).
    Parameters missing from ``params`` keep their values at init seed 0.
    """
    module = model.build(0).eval()
    first = next(iter(module.parameters()))
    dtype, device = first.dtype, first.device
    defaults = {**dict(module.named_parameters()), **dict(module.named_buffers())}
    given = {**dict(params or {}), **dict(model_state or {})}
    # torch.tensor copies: saved arrays (and JAX arrays) may be read-only
    tensors = {k: torch.tensor(np.asarray(given[k]), device=device) if k in given else v.detach()
               for k, v in defaults.items()}
    names = [k for k, _ in module.named_parameters()]
    trained = {k: tensors[k].to(dtype) for k in names}
    fixed = {k: v for k, v in tensors.items() if k not in trained}

    def loss(p, xi, yi):
        out = functional_call(module, (p, fixed), (xi[None],))
        return batch_loss(out[None], yi[None, None], model.task, mean=False)

    rows = vmap(grad(loss), in_dims=(None, 0, 0))
    x = torch.tensor(np.asarray(x), dtype=dtype, device=device)
    y = torch.tensor(np.asarray(y), device=device)
    y = y.to(dtype) if model.task == "regression" else y.long()
    parts = []
    for i in range(0, x.shape[0], chunk):
        g = rows(trained, x[i:i + chunk], y[i:i + chunk])
        parts.append(torch.cat([g[k].reshape(g[k].shape[0], -1) for k in names], 1).detach())
    return torch.cat(parts).cpu().numpy().astype(np.float32)
