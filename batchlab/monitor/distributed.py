"""Under ``torch.distributed``: each rank's own gradient, caught before DDP averages it.

DDP all-reduces gradients bucket by bucket during ``backward()``, so by the time the loop calls
``update()`` every rank's ``.grad`` holds the mean over ranks. A communication hook
(``DistributedDataParallel.register_comm_hook``) sees each bucket before that: it keeps a copy
of the rank's own bucket, then does what DDP does by default (divide by the world size and
all-reduce, ``default_hooks.allreduce_hook``). The rank's gradient (batch b) against the
all-reduced one (batch W b) is the two-batch estimate of the gradient noise for free
(k-diffusion's ``GradientNoiseScale`` hook). Copies are only kept for updates an instrument
measures (``capture``).
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
    """The rank's own gradient of the last backward pass, as the list of its DDP buckets."""

    def __init__(self, model: torch.nn.parallel.DistributedDataParallel):
        self.buckets: list[torch.Tensor] = []
        self.capture = True
        try:
            model.register_comm_hook(None, self._hook)
        except (RuntimeError, ValueError) as exc:
            raise BatchlabError(f"the monitor cannot watch this DDP model's gradients: "
                                f"{str(exc).strip().splitlines()[0]} (register no other comm hook)") from None

    def _hook(self, state, bucket):  # no annotations: DDP checks them, and these are strings here
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

        if self.capture:
            self.buckets.append(bucket.buffer().detach().clone())
        return default_hooks.allreduce_hook(None, bucket)

    def take(self) -> list[torch.Tensor] | None:
        """The buckets caught since the last call (None when there are none), and forget them."""
        caught, self.buckets = self.buckets, []
        return caught or None
