"""Under ``torch.distributed``: the squared norm of each rank's own gradient, taken before DDP
averages it, and its mean over the ranks.

DDP all-reduces gradients bucket by bucket during ``backward()``, so by the time the loop calls
``update()`` every rank's ``.grad`` holds the mean over ranks. A communication hook
(``DistributedDataParallel.register_comm_hook``) sees each bucket before that: it adds the
squared norm of the rank's own bucket to a sum, then does what DDP does by default (divide by the world size and
all-reduce, ``default_hooks.allreduce_hook``). The rank's gradient (batch b) against the
all-reduced one (batch W b) is the two-batch estimate of the gradient noise for free
(k-diffusion's ``GradientNoiseScale`` hook). Every rank's squared norm is a small-batch
estimate, so their mean (one all-reduce of three numbers) stands for
||g_small||^2, as the engine's mean over devices (``instruments/step/noise_scale.py``); with
unequal rows per rank, B_small = W / sum(1/b_r) keeps it unbiased. Norms are only taken for
updates an instrument measures (``capture``).
"""

from __future__ import annotations

from typing import Any

import torch

from batchlab.errors import BatchlabError


def process_group_size() -> tuple[int, int]:
    """(rank, world size) of an initialized default process group, else (0, 1)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_ddp(model: Any) -> bool:
    return isinstance(model, torch.nn.parallel.DistributedDataParallel)


class RankGradients:
    """The squared norm of the rank's own gradient in the last backward pass, and its mean over ranks."""

    def __init__(self, model: torch.nn.parallel.DistributedDataParallel):
        self.sq: torch.Tensor | None = None
        self.capture = True
        try:
            model.register_comm_hook(None, self._hook)
        except (RuntimeError, ValueError) as exc:
            raise BatchlabError(f"the monitor cannot watch this DDP model's gradients: "
                                f"{str(exc).strip().splitlines()[0]} (register no other comm hook)") from None

    def _hook(self, state, bucket):  # no annotations: DDP checks them, and these are strings here
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        if self.capture:
            part = bucket.buffer().detach().double().square().sum()
            self.sq = part if self.sq is None else self.sq + part
        return default_hooks.allreduce_hook(None, bucket)

    def mean_over_ranks(self, rows: int) -> tuple[torch.Tensor, float, int] | None:
        """(mean of ||g_rank||^2 as a one-element tensor, B_small = W / sum 1/b_r, B_big = sum b_r)
        for this update, from one all-reduce of (||g_rank||^2, 1/b, b); None when nothing was caught."""
        if self.sq is None:
            return None
        sums = torch.stack([self.sq, self.sq.new_tensor(1.0 / rows), self.sq.new_tensor(float(rows))])
        self.sq = None
        torch.distributed.all_reduce(sums)
        world = torch.distributed.get_world_size()
        inverse, total = sums[1:].tolist()
        return (sums[:1] / world).float(), world / inverse, int(round(total))
