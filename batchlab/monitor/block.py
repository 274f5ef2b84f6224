"""Measured updates of a PyTorch loop kept as rows of matrices, and measured many at a time.

Why: each PyTorch call costs microseconds on a CPU whatever the size of its tensors, and
measuring the default instruments one update at a time took about fifteen calls (160-260 us
an update on the digits models, most of a small model's step). Here an update costs two
copies, ``torch.cat`` of its gradient and of the parameters into a row of a preallocated
matrix, and every ``rows`` updates the *norm instruments* (``instruments.base.norm``: grad_norm,
update_norm, dist_init, weight_norm, ...) measure all the rows in one pass, the same
instrument code with the rows as its runs axis (``TorchOps(rows)``). A norm instrument keeps no
state that changes, so this gives what measuring the rows one by one gives. Instruments whose
state does change (``noise_scale``'s moving averages) still see the rows one by one, in order.

theta rows: the parameters before update t are the ones after update t-1, so consecutive
measured updates share one copy; ``every=k`` needs the "after" copy separately.
Memory: each matrix of a block stays within ``MATRIX_BYTES`` (at least one row). In a loop on
the digits MLP (3,760 parameters, B = 32) blocks of 64 rows (1 MiB a matrix), 17 and 4 rows
cost about the same per update, 50-75 us with the copies (the noise of this machine); one row
at a time cost twice that. A large model is measured at each update, with two copies of its
parameters and one of its gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from batchlab.engine.torch_ops import TorchOps
from batchlab.instruments.base import Step, StepInstrument, measure

MATRIX_BYTES = 1 << 20
MAX_ROWS = 64


@dataclass
class Row:
    """One measured update: its number, samples seen after it, theta rows before and after it,
    its two-batch split (sizes, and the small batch's mean squared norm where it is a number)
    and values known at the update itself (the loss the loop gave, the per-sample estimate)."""

    count: int
    samples: int
    before: int
    after: int | None = None
    split: tuple[int, int] | None = None  # (small batch, big batch) rows; small gradient in ``small[i]``
    small_sq: Any = None  # instead of a small gradient: the mean of ||g_small||^2 (DDP ranks)
    values: dict = field(default_factory=dict)


class Block:
    """Preallocated rows for the gradients and parameters of measured updates."""

    def __init__(self, params: list[torch.Tensor], small: bool):
        first = params[0]
        dtype = torch.float32
        for p in params:
            if p.device != first.device:
                from batchlab.errors import BatchlabError

                raise BatchlabError("the monitor measures parameters on one device; this model's are on "
                                    f"{first.device} and {p.device}")
            dtype = torch.promote_types(dtype, p.dtype)
        size = sum(p.numel() for p in params)
        per_row = size * torch.empty((), dtype=dtype).element_size()
        self.capacity = max(1, min(MAX_ROWS, MATRIX_BYTES // per_row))
        make = dict(dtype=dtype, device=first.device)
        self.grads = torch.empty((self.capacity, size), **make)
        self.thetas = torch.empty((2 * self.capacity, size), **make)
        self.small = torch.empty((self.capacity, size), **make) if small else None
        self.zeros: dict[int, torch.Tensor] = {}
        self.params = params
        # flat views of the parameters (detached: same memory), where an optimizer's in-place step shows
        self.views = [p.detach().view(-1) for p in params] if all(p.is_contiguous() for p in params) else None
        self.addresses = [p.data_ptr() for p in params]
        self.rows: list[Row] = []
        self.used = 0  # theta rows used
        self.now: int | None = None  # the theta row holding the parameters as they are at this call

    def full(self) -> bool:
        return len(self.rows) == self.capacity

    def theta_now(self) -> int:
        """The theta row of the parameters now (copied once per call: ``forget_now`` after it)."""
        if self.now is None:
            self.now = self.used
            self.used += 1
            if self.views is not None:
                torch.cat(self.views, out=self.thetas[self.now])
            else:  # a parameter not contiguous in memory: flattening it copies it, each time
                _flat_into(self.thetas[self.now], [p.detach() for p in self.params])
        return self.now

    def forget_now(self) -> None:
        self.now = None

    def pending(self) -> Row | None:
        """The last row while it waits for the parameters after its update."""
        return self.rows[-1] if self.rows and self.rows[-1].after is None else None

    def add(self, row: Row, grads: list[torch.Tensor | None]) -> None:
        """Keep update ``row``'s gradient (None: the parameter took no part, zeros as the engine's
        ``materialize_grads``) and the parameters before it."""
        row.before = self.theta_now()
        _flat_into(self.grads[len(self.rows)], [g if g is not None else self._zeros(p) for g, p in zip(grads, self.params)])
        self.rows.append(row)

    def keep_small(self, grads: list[torch.Tensor]) -> None:
        """The small batch's gradient of the next row (the first micro-batch's)."""
        _flat_into(self.small[len(self.rows)], grads)

    def measure(self, instruments: tuple[StepInstrument, ...], states: dict) -> tuple[dict, list[tuple[Row, dict]]]:
        """Measure every row whose update is complete; a pending row stays, as the block's first."""
        done = [row for row in self.rows if row.after is not None]
        n = len(done)
        if not n:
            return states, []
        if [p.data_ptr() for p in self.params] != self.addresses:  # checked here: not worth a check an update
            from batchlab.errors import BatchlabError

            raise BatchlabError("the model's parameters were replaced (p.data = ...) after the monitor was made: "
                                "make the monitor after that")
        values: list[dict] = [dict(row.values) for row in done]
        norms = tuple(ins for ins in instruments if ins.norm_of is not None)
        if norms:  # all rows at once: the same instrument code, the rows as runs
            before = self._thetas([row.before for row in done])
            after = self._thetas([row.after for row in done])
            step = Step([self.grads[:n]], [before], [after], TorchOps(n))
            _, together = measure(tuple(replace(ins, every=1) for ins in norms), states, step, 0)
            for ins in norms:
                for name in ins.outputs:
                    for i, value in enumerate(together[name].tolist()):
                        values[i][name] = value if done[i].count % ins.every == 0 else float("nan")
        others = tuple(ins for ins in instruments if ins.norm_of is None)
        if others:  # in order, one row at a time: their states change
            ops = TorchOps(1)
            for i, row in enumerate(done):
                g = [self.grads[i]]
                step = Step(g, [self.thetas[row.before]], [self.thetas[row.after]], ops, self._halves(i, row, g),
                            row.small_sq)
                states, out = measure(others, states, step, row.count)
                values[i].update(out)
        self._restart(done)
        return states, list(zip(done, values))

    # ------------------------------------------------------------------ inside

    def _halves(self, i: int, row: Row, g: list[torch.Tensor]):
        """((g_small, b), (g_big, B)); the update's own gradient twice where it has no split
        (the estimate's averages then stay as they were, as for the engine's one-row batch)."""
        if row.split is None:
            return (g, 1), (g, 1)
        small, big = row.split
        if row.small_sq is not None:
            return (None, small), (g, big)
        # the first micro-batch's share of the accumulated gradient, scaled up to its own mean gradient
        return ([self.small[i] * (big / small)], small), (g, big)

    def _thetas(self, rows: list[int]) -> torch.Tensor:
        start = rows[0]
        if rows == list(range(start, start + len(rows))):
            return self.thetas[start:start + len(rows)]
        return self.thetas[torch.tensor(rows, device=self.thetas.device)]

    def _restart(self, done: list[Row]) -> None:
        """Empty the block, keeping a pending row (and the theta row of this call) at the start."""
        pending = self.pending()
        self.rows, self.used = [], 0
        now, self.now = self.now, None
        if pending is not None:
            i = len(done)
            self.grads[0].copy_(self.grads[i])
            if self.small is not None:
                self.small[0].copy_(self.small[i])
            self.thetas[0].copy_(self.thetas[pending.before])
            pending.before, self.used = 0, 1
            self.rows.append(pending)
        if now is not None and (pending is None or now != pending.before):
            self.now = self.used
            self.thetas[self.now].copy_(self.thetas[now])
            self.used += 1
        elif now is not None:
            self.now = 0

    def _zeros(self, p: torch.Tensor) -> torch.Tensor:
        if p.numel() not in self.zeros:
            self.zeros[p.numel()] = torch.zeros(p.numel(), dtype=p.dtype, device=p.device)
        return self.zeros[p.numel()]


def _flat_into(row: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    """``tensors`` (gradients: nothing to detach) flattened and concatenated into ``row``, in one call."""
    torch.cat([t.reshape(-1) for t in tensors], out=row)
