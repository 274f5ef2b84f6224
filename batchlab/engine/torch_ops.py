"""The array operations the instruments use (``instruments.base.Ops``) on torch tensors: the
torch backend's (``torch_step.py``) and ``batchlab.monitor``'s, one implementation. Its own
module so that the monitor of a PyTorch loop imports neither the engine's step nor JAX."""

from __future__ import annotations

import torch


class TorchOps:
    """The array operations instruments use (``instruments.base.Ops``) on tensors of ``runs``
    runs (parameter lists with a leading run axis, or one run's own leaves)."""

    nan = float("nan")

    def __init__(self, runs: int):
        self.runs = runs

    def sq_norms(self, trees: list) -> torch.Tensor:
        if self.runs == 1:  # one run's leaves: every leaf's norm in one fused call, then squared and summed
            trees = [list(tree) for tree in trees]
            norms = torch.stack(torch._foreach_norm([t for tree in trees for t in tree])).square()
            if len({len(tree) for tree in trees}) == 1:
                return norms.reshape(len(trees), -1).sum(1, keepdim=True)
            return torch.stack([part.sum(0, keepdim=True) for part in norms.split([len(tree) for tree in trees])])
        return torch.stack([sum(t.reshape(self.runs, -1).square().sum(1) for t in tree) for tree in trees])

    def sub(self, a: list[torch.Tensor], b: list[torch.Tensor]) -> list[torch.Tensor]:
        return torch._foreach_sub(a, b)

    def where(self, condition, a, b):
        return torch.where(torch.as_tensor(condition), a, b)

    def maximum(self, x, y):
        return torch.clamp_min(x, y) if isinstance(y, (int, float)) else torch.maximum(x, y)

    sqrt = staticmethod(torch.sqrt)

    def stack(self, values: list, axis: int = 0):
        return torch.stack(values, dim=axis)

    def concatenate(self, values: list, axis: int = 0):
        return torch.cat(values, dim=axis)

    def zeros(self, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.zeros((self.runs, *shape))

    def asarray(self, value, like):
        return torch.as_tensor(value, dtype=like.dtype)

    def every(self, k: int, count: int, update, state, outputs: tuple[str, ...] = ()):
        if count % k == 0:
            return update(state)
        return state, {name: torch.full((self.runs,), float("nan")) for name in outputs}
