"""One rank of the monitor's DDP test (``test_monitor_ddp.py``): a plain loop on a DDP-wrapped
model with a TorchMonitor, on the gloo backend over 127.0.0.1. Run as a script for rank 1;
the test's own process is rank 0."""

import os
import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

PER_RANK, STEPS, LR, WORLD = 8, 4, 0.2, 2


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def rows(step: int, rank: int) -> slice:
    """Rank ``rank``'s rows of update ``step``: the global batch is 2 x PER_RANK consecutive rows."""
    start = WORLD * PER_RANK * step + PER_RANK * rank
    return slice(start, start + PER_RANK)


def data():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(STEPS * WORLD * PER_RANK, 5)).astype(np.float32))
    return x, torch.from_numpy(rng.integers(0, 3, size=STEPS * WORLD * PER_RANK))


def train_rank(rank: int, port: str, db: str | None) -> None:
    from batchlab.monitor import TorchMonitor

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port, GLOO_SOCKET_IFNAME="lo")
    dist.init_process_group("gloo", rank=rank, world_size=WORLD, init_method=f"tcp://127.0.0.1:{port}")
    try:
        model = torch.nn.parallel.DistributedDataParallel(tiny_model())
        opt = torch.optim.SGD(model.parameters(), lr=LR)
        mon = TorchMonitor(model, db=db, name="ddp")
        x, y = data()
        for step in range(STEPS):
            r = rows(step, rank)
            F.cross_entropy(model(x[r]), y[r]).backward()
            mon.update(batch_size=PER_RANK)
            opt.step()
            opt.zero_grad()
        mon.close()
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    torch.set_num_threads(1)
    train_rank(int(sys.argv[1]), sys.argv[2], None)  # only rank 0 writes: this rank is given no store
