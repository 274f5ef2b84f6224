"""The exact per-batch gradient noise estimate from per-sample gradients of the user's own model.

For the B rows of one batch, with g_i the gradient of ``loss_fn`` on row i alone and gbar
their mean (``science.md`` section 4)::

    trace   = sum_i ||g_i - gbar||^2 / (B - 1)     unbiased tr(Sigma)
    grad_sq = ||gbar||^2 - trace / B               unbiased ||G||^2 (E||gbar||^2 = ||G||^2 + tr(Sigma)/B)

This is the two-batch estimator (``instruments/step/noise_scale.py``) with the B single rows,
averaged, as the small batch (B_s = 1, |g_s|^2 = mean_i ||g_i||^2) and the batch as the big
one, so the formula is that module's ``two_batch_estimates``. Unlike a split of the batch in
two halves it uses all B(B-1)/2 pairs of rows: a far less noisy estimate per batch, for the
price of per-sample gradients (``torch.func``: ``vmap(grad(functional_call))``, in chunks of
``chunk`` rows, so memory is chunk x parameters and no B x B Gram matrix is formed).
"""

from __future__ import annotations

import torch
from torch.func import functional_call, grad, vmap

from batchlab.errors import BatchlabError
from batchlab.instruments.step.noise_scale import two_batch_estimates


def batch_noise(module: torch.nn.Module, loss_fn, x, y, params: list[torch.Tensor] | None = None,
                chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """Unbiased (||G||^2, tr(Sigma)) of one batch from its per-sample gradients, as 0-d float64 tensors.

    Args:
        module: the user's ``nn.Module`` (a ``DistributedDataParallel``/``DataParallel`` wrapper
            is unwrapped), in the mode the loop trains it in. Buffers (batch-norm running
            statistics) are used as they are and never updated.
        loss_fn: ``loss_fn(output, target)`` as in the loop, mean reduction: on one row it is
            that row's loss, so gbar is the loop's batch gradient.
        x, y: the batch's inputs and targets (B >= 2 rows each).
        params: the parameters to differentiate (default: all that require grad, flattened in
            ``named_parameters`` order; the statistics do not depend on the order).
        chunk: rows per vmapped pass.

    Returns:
        (grad_sq, trace) on the module's device: the squared norm of the mean gradient and the
        trace of the per-sample covariance, each unbiased over draws of the batch's rows.

    Dropout in train mode: each row's gradient uses its own dropout mask (vmap
    ``randomness="different"``), so the estimate is of the gradient under fresh masks, not
    the masks of the loop's own step; the draw runs on a forked RNG, so the loop's random
    stream (and hence its training) is the same with or without this call.

    Raises:
        BatchlabError: a batch-norm layer that uses batch statistics (train mode, or no running
            statistics): rows then interact and a per-sample gradient is undefined (BackPACK
            issue #253); B < 2; x and y of different lengths; a ``params`` entry that is not a
            parameter of the module; no parameter to differentiate.
    """
    if isinstance(module, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
        module = module.module
    _check(module, x, y)
    rows, trained = _row_gradients(module, loss_fn, params)
    total, sum_sq = _sums(rows, trained, x, y, chunk)
    n = x.shape[0]
    mean_sq = sum(t.square().sum() for t in total.values()) / n ** 2  # ||gbar||^2
    return two_batch_estimates(sum_sq / n, 1, mean_sq, n)


def _row_gradients(module: torch.nn.Module, loss_fn, params: list[torch.Tensor] | None):
    """(rows, trained): ``rows(trained, x, y)`` gives each row's gradient of the loss with
    respect to ``trained`` (the differentiated parameters, by name), the rest held fixed."""
    named = dict(module.named_parameters())
    trained = {k: named[k].detach() for k in _differentiated(named, params)}
    fixed = {k: v.detach() for k, v in [*named.items(), *module.named_buffers()] if k not in trained}

    def row_loss(p, xi, yi):  # one row as a batch of one: the loss the loop computes, on that row
        return loss_fn(functional_call(module, (p, fixed), (xi[None],)), yi[None])

    return vmap(grad(row_loss), in_dims=(None, 0, 0), randomness="different"), trained


def _sums(rows, trained: dict[str, torch.Tensor], x, y, chunk: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """sum_i g_i (per parameter) and sum_i ||g_i||^2 over the batch, ``chunk`` rows at a time."""
    device = next(iter(trained.values())).device
    total = {k: torch.zeros(v.shape, dtype=torch.float64, device=device) for k, v in trained.items()}
    sum_sq = torch.zeros((), dtype=torch.float64, device=device)
    # Sums in float64, not the centred sum ||g_i - gbar||^2 (which needs gbar first: a second pass):
    # float32 squares are exact in float64, and sum ||g_i||^2 - B ||gbar||^2 (two_batch_estimates)
    # loses about log10(1 + B ||G||^2 / tr(Sigma)) of float64's 16 digits, so the result keeps the
    # float32 gradients' own 7 digits until that ratio passes ~1e8 (in float32 it would be noise).
    forked = [device] if device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=forked):
        for start in range(0, x.shape[0], chunk):
            g = rows(trained, x[start:start + chunk], y[start:start + chunk])
            for k in trained:
                part = g[k].to(torch.float64)
                total[k] += part.sum(0)
                sum_sq += part.square().sum()
    return total, sum_sq


def _differentiated(named: dict[str, torch.Tensor], params: list[torch.Tensor] | None) -> list[str]:
    """Names of the parameters to differentiate: ``params`` (by identity), else all that require grad."""
    if params is None:
        names = [k for k, p in named.items() if p.requires_grad]
    else:
        by_id = {id(p): k for k, p in named.items()}
        if any(id(p) not in by_id for p in params):
            raise BatchlabError("batch_noise: a params entry is not a parameter of the module")
        names = list(dict.fromkeys(by_id[id(p)] for p in params))
    if not names:
        raise BatchlabError("batch_noise: no parameters to differentiate (none requires grad)")
    return names


def _check(module: torch.nn.Module, x, y) -> None:
    """Refuse, in one line, a batch whose per-sample gradients or covariance are undefined."""
    for name, m in module.named_modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm) and (m.training or m.running_mean is None):
            raise BatchlabError(f"batch_noise: batch-norm layer {name or 'module'!r} normalizes with batch statistics "
                                "(train mode or no running statistics): rows interact, so per-sample gradients are "
                                "undefined; measure in eval mode or use the two-batch noise_scale")
    if len(x) != len(y):
        raise BatchlabError(f"batch_noise: x has {len(x)} rows but y has {len(y)}")
    if len(x) < 2:
        raise BatchlabError(f"batch_noise: a batch of {len(x)} row(s) has no covariance; it needs at least 2")


# The exact estimate's columns: noise_scale's outputs, renamed, from the same moving averages.
SAMPLE_OUTPUTS = {"noise_grad_sq": "sample_grad_sq", "noise_trace": "sample_trace",
                  "noise_grad_sq_se": "sample_grad_sq_se", "noise_scale": "sample_noise_scale"}


class SampleNoise:
    """The per-sample estimates of the measured updates, averaged by ``noise_scale``'s
    bias-corrected moving averages (one implementation: ``ema_step``, ``outputs``), so
    ``sample_noise_scale`` is withheld by the same rule as ``noise_scale``."""

    def __init__(self, module: torch.nn.Module, loss_fn, params: list[torch.Tensor]):
        from batchlab.engine.torch_ops import TorchOps
        from batchlab.instruments.step import noise_scale

        if not callable(loss_fn):
            raise BatchlabError("per_sample_every needs loss_fn=: the loss(output, target) the loop uses")
        self.module, self.loss_fn, self.params = module, loss_fn, params
        self.ops, self.noise = TorchOps(1), noise_scale
        self.state = noise_scale.init(None, self.ops)

    def measure(self, x, y) -> dict[str, torch.Tensor]:
        """Estimate on this batch (at theta_t, before the step), average, and the four values."""
        grad_sq, trace = batch_noise(self.module, self.loss_fn, x, y, self.params)
        as_run = (lambda v: v.reshape(1).to(self.state.dtype))
        self.state = self.noise.ema_step(self.state, as_run(grad_sq), as_run(trace), True, self.ops)
        return {SAMPLE_OUTPUTS[k]: v for k, v in self.noise.outputs(self.state, self.ops).items()}
