"""What the benchmark scripts share: results files, worker processes, a check that the machine was idle.

- ``save``: measurements go to benchmarks/results/NAME.json (git-ignored).
- ``run_worker``: runs a benchmark script again in a fresh process (its worker mode), which
  prints one JSON line last. Timings in fresh processes include what a user's command pays,
  and spread over processes shows how much of a difference is noise.
- ``plain_torch_loop``: the training loop a PyTorch user would write, the baseline of the
  comparisons.
- ``torch_module``: the digits MLP and CNN as PyTorch modules (NHWC inputs, as batchlab's data).
- ``OtherCpu``: how much CPU other processes used meanwhile; on 2 cores anything else
  running (a test suite, say) distorts the timings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def save(name: str, payload) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2))
    return path


def run_worker(script: str, *options: str, env: dict[str, str] | None = None) -> dict:
    """Run ``script`` with ``options`` in a fresh Python process; return the JSON it printed last."""
    command = [sys.executable, str(Path(script).resolve()), *options]
    done = subprocess.run(command, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"worker {' '.join(options)} exited with {done.returncode}:\n{done.stderr.strip()}")
    return json.loads(done.stdout.strip().splitlines()[-1])


class OtherCpu:
    """CPU time that other processes used since construction (Linux)."""

    def __init__(self):
        self.start = self._busy(), self._own()
        self._t0 = time.monotonic()

    @staticmethod
    def _busy() -> float | None:
        try:
            ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        user, nice, system, _idle, _iowait, irq, softirq = ticks[:7]
        return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")

    @staticmethod
    def _own() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def measure(self) -> dict | None:
        """Other processes' CPU-seconds since construction, and the wall time, or None off Linux."""
        busy, own = self._busy(), self._own()
        if busy is None or self.start[0] is None:
            return None
        return {"other_cpu_seconds": max(0.0, (busy - self.start[0]) - (own - self.start[1])),
                "wall_seconds": time.monotonic() - self._t0}


def report_other_cpu(phases: dict[str, dict | None]) -> None:
    for name, m in phases.items():
        if m is None:
            continue
        share = m["other_cpu_seconds"] / m["wall_seconds"]
        print(f"Other processes used {m['other_cpu_seconds']:.0f} CPU-s during the {m['wall_seconds']:.0f} s of {name} "
              f"({share:.0%} of a core)" + ("; those timings are distorted, rerun on an idle machine" if share > 0.1
                                            else "."))


def plain_torch_loop(model, x_train, y_train, x_test, y_test, *, batch_size: int, epochs: int, lr: float,
                     momentum: float) -> float:
    """Train ``model`` as a PyTorch user would: SGD with momentum, softmax cross-entropy (batch
    mean), a new ``torch.randperm`` order each epoch, the last partial batch kept, then a full
    evaluation of train and test loss and accuracy in eval mode after every epoch. Returns the
    final test accuracy."""
    import torch

    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    loss_fn = torch.nn.CrossEntropyLoss()
    n = len(x_train)
    metrics = []
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n)
        for i in range(0, n, batch_size):
            rows = order[i:i + batch_size]
            optimizer.zero_grad()
            loss_fn(model(x_train[rows]), y_train[rows]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            metrics = [(loss_fn(out, y).item(), (out.argmax(1) == y).float().mean().item())
                       for out, y in ((model(x_train), y_train), (model(x_test), y_test))]
    return metrics[1][1]


def torch_module(name: str):
    """The digits MLP or CNN as a PyTorch module (inputs NHWC, as batchlab's data)."""
    import torch
    from torch import nn

    class Images(nn.Module):
        def forward(self, x):
            return x.permute(0, 3, 1, 2)

    if name == "mlp":
        return nn.Sequential(nn.Flatten(), nn.Linear(64, 50), nn.ReLU(), nn.Linear(50, 10))
    return nn.Sequential(Images(), nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1),
                         nn.ReLU(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 32, 10)).to(torch.float32)


def paired_overhead(bare, measured, repeat: int, updates: int) -> dict:
    """Time ``repeat`` adjacent pairs of ``bare()`` and ``measured()`` (each returns its seconds
    for ``updates`` updates): the median of ``bare()`` and the median over pairs of ``measured()``
    minus ``bare()`` (a shared machine's slow minutes hit both runs of a pair and cancel), as a
    row: seconds, microseconds per update and the ratio."""
    import statistics

    pairs = [(bare(), measured()) for _ in range(repeat)]
    b, extra = statistics.median(b for b, _ in pairs), statistics.median(m - b for b, m in pairs)
    return {"updates": updates, "bare_s": b, "overhead_s": extra, "bare_us": b / updates * 1e6,
            "overhead_us": extra / updates * 1e6, "ratio": 1 + extra / b}


def print_overheads(title: str, rows: list[dict], lead: list[tuple[str, str]]) -> None:
    """``paired_overhead``'s rows as a table under ``title``; ``lead``: (key, header) of the
    columns before the timings (B right-aligned, any other key left-aligned)."""
    print(title)

    def cells(values: list[str]) -> str:
        return "".join(f"{v:>5}" if key == "batch_size" else f"{v:<6}" for (key, _), v in zip(lead, values))
    print(cells([h for _, h in lead]) + f"{'updates':>9}{'bare us/upd':>13}{'+monitor us':>13}{'ratio':>8}"
          f"{'overhead':>10}")
    for r in rows:
        print(cells([str(r[key]) for key, _ in lead]) + f"{r['updates']:>9,}{r['bare_us']:>13,.0f}"
              f"{r['overhead_us']:>13,.0f}{r['ratio']:>8.3f}{r['ratio'] - 1:>10.1%}")

