"""The runs of a torch cohort and their state: stacked and vmapped, or one module per run.

- :class:`StackedRuns`: parameters of all runs stacked on a leading axis
  (``torch.func.stack_module_state``); one forward pass for all runs
  (``vmap(functional_call)``), gradients by ordinary autograd through it. For models whose
  training forward pass is deterministic and moves no buffers.
- :class:`ModuleRuns`: one ``nn.Module`` per run, trained one after another, the way a
  user's own loop runs: batch norm moves its running statistics, dropout draws from torch's
  generator, re-seeded per run from its dropout seed (restored around each run's epoch).

Both train an epoch on the runs still active, keep each run's state at the epoch's start and
restore it for a run whose batch loss turned non-finite (as the JAX engine does), evaluate
in eval mode, and hand out parameters as NumPy dicts keyed by name.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch.func import functional_call, stack_module_state, vmap

from batchlab.engine.torch_optim import RunHyper, TorchOptimizer
from batchlab.engine.torch_step import EpochPlan, TorchOps, train_epoch
from batchlab.instruments.base import StepInstrument, start_measures
from batchlab.models.adapters.torch_losses import row_losses

# Rows per evaluation pass, so memory stays bounded. On a CPU, passes that stay in cache are
# faster: the digits CNN's 1797 rows took 15 ms in passes of 1024 rows, 20-29 ms in one pass.
EVAL_CHUNK = {"cpu": 1024}
EVAL_CHUNK_OTHER = 8192  # accelerators: larger passes (as the JAX engine)


def trained_parameters(module: torch.nn.Module) -> list[torch.Tensor]:
    """The parameters training updates (frozen ones, ``requires_grad=False``, stay as they are)."""
    return [p for p in module.parameters() if p.requires_grad]


def named_tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters then buffers by name: what a run's saved parameters hold."""
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


def tree_map(fn, tree):
    """``fn`` on every tensor of a nest of dicts, lists and tuples (None stays None)."""
    if isinstance(tree, dict):
        return {k: tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(tree_map(fn, v) for v in tree)
    return None if tree is None else fn(tree)


def tree_tensors(tree) -> list[torch.Tensor]:
    """The tensors of a nest, in order."""
    out: list[torch.Tensor] = []
    tree_map(out.append, tree)
    return out


def _first_bad(mb_loss: np.ndarray) -> np.ndarray:
    """Per run, the index of the first step with a non-finite loss, or -1."""
    bad = ~np.isfinite(mb_loss)
    return np.where(bad.any(axis=1), bad.argmax(axis=1), -1)


def evaluate_rows(forward, x: torch.Tensor, y: torch.Tensor, n_train: int, task: str) -> dict[str, np.ndarray]:
    """Eval-mode mean loss and mean score (accuracy; for regression the squared error) of the
    training rows (the first ``n_train``) and the test rows, per run, over all rows in chunks;
    ``forward(x_chunk) -> (R, c, ...)``. Keys: ``train_loss``, ``train_score``, ``test_loss``, ``test_score``."""
    losses, scores = [], []
    chunk = EVAL_CHUNK.get(x.device.type, EVAL_CHUNK_OTHER)
    with torch.no_grad():
        for i in range(0, x.shape[0], chunk):
            out = forward(x[i:i + chunk])
            yc = y[i:i + chunk].expand(out.shape[0], *y[i:i + chunk].shape)
            loss, score = row_losses(out, yc, task)
            losses.append(loss)
            scores.append(score)
    loss, score = (torch.cat(parts, 1).double().cpu().numpy() for parts in (losses, scores))
    return {"train_loss": loss[:, :n_train].mean(-1), "train_score": score[:, :n_train].mean(-1),
            "test_loss": loss[:, n_train:].mean(-1), "test_score": score[:, n_train:].mean(-1)}


def should_stack(module: torch.nn.Module, rows: torch.Tensor) -> bool:
    """Whether runs of ``module`` train stacked: a training forward pass that draws no random
    numbers (no dropout) and moves no buffers (no batch-norm statistics), that ``vmap`` can
    batch (tried on two copies and two rows), and no convolutions: ``vmap`` turns a
    convolution with per-run weights into a grouped one, whose CPU backward is slow (digits
    CNN, 16 runs: 1.4x slower stacked at B=32, 2.9x at B=256 than one by one)."""
    if any(isinstance(m, torch.nn.modules.conv._ConvNd) for m in module.modules()):
        return False
    if any(isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0 for m in module.modules()):
        return False
    probe = copy.deepcopy(module).train()
    before = [b.clone() for b in probe.buffers()]
    try:
        with torch.no_grad():
            probe(rows)
        if any(not torch.equal(a, b) for a, b in zip(before, probe.buffers())):
            return False
        params, buffers = stack_module_state([probe, copy.deepcopy(probe)])
        params = {k: v.detach().requires_grad_() for k, v in params.items()}
        out = vmap(lambda p, b, x: functional_call(probe, (p, b), (x,)), randomness="error")(
            params, buffers, rows.expand(2, *rows.shape))
        torch.autograd.grad(out.sum(), list(params.values()), allow_unused=True)
    except Exception:  # anything vmap cannot batch: the runs train one by one instead
        return False
    return True


class _StackedGroup:
    """The active runs of a :class:`StackedRuns` for one epoch (copies, committed at its end)."""

    def __init__(self, owner: "StackedRuns", idx: torch.Tensor):
        self.owner, self.runs = owner, len(idx)
        self.wrt = [p[idx].requires_grad_() for p in owner.params]  # what gradients are taken with respect to
        self.leaves = [t.detach() for t in self.wrt]  # the same storage, updated in place by the optimizer
        self.buffers = {k: b[idx] for k, b in owner.buffers.items()}
        self.opt_state = [[t[idx] for t in part] for part in owner.opt_state]
        self.hyper = RunHyper(owner.lr[idx], owner.momentum[idx], owner.weight_decay[idx], self.runs)
        self.measures = tree_map(lambda t: t[idx], owner.measures)

    def forward(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        if self.owner.base.training != train:
            self.owner.base.train(train)
        return self.owner.vforward(dict(zip(self.owner.names, self.wrt)), self.buffers, x)

    def grads(self, loss: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.autograd.grad(loss, self.wrt, materialize_grads=True))

    def get_state(self) -> list[torch.Tensor]:
        return []  # stacked runs are only used when training moves no buffers

    def set_state(self, state: list[torch.Tensor]) -> None:
        pass


class StackedRuns:
    """R runs as stacked tensors, trained by one vmapped forward pass per step."""

    def __init__(self, modules: list[torch.nn.Module], optimizer: TorchOptimizer, lrs, momenta, decays,
                 instruments: tuple[StepInstrument, ...]):
        self.base = copy.deepcopy(modules[0])  # functional_call swaps in each run's tensors
        params, buffers = stack_module_state(modules)
        trained = dict(self.base.named_parameters())
        self.names = [k for k in params if trained[k].requires_grad]
        self.params = [params[k].detach() for k in self.names]
        # Frozen parameters travel with the buffers: functional_call takes any name in either dict.
        self.buffers = {k: b.detach() for k, b in list(buffers.items()) + list(params.items()) if k not in self.names}
        self.lr = torch.tensor(lrs, dtype=torch.float32)
        self.momentum = torch.tensor(momenta, dtype=torch.float32)
        self.weight_decay = torch.tensor(decays, dtype=torch.float32)
        self.opt_state = optimizer.init(self.params, self.momentum)
        self.measures = start_measures(instruments, [p.clone() for p in self.params], TorchOps(len(modules)))
        self.best = None

        def one(params, buffers, x):
            return functional_call(self.base, (params, buffers), (x,))

        self.vforward = vmap(one, randomness="error")
        self.vforward_shared = vmap(one, in_dims=(0, 0, None), randomness="error")

    def train_epoch(self, idx: np.ndarray, x, y, orders: torch.Tensor, plan: EpochPlan, counts: np.ndarray):
        """Train runs ``idx`` one epoch; returns their per-step series and which diverged."""
        index = torch.as_tensor(idx)
        group = _StackedGroup(self, index)
        series = train_epoch(group, x, y, orders[index], plan, int(counts[idx[0]]))
        bad = _first_bad(series["mb_loss"])
        ok = torch.as_tensor(bad < 0)
        keep = index[ok]
        with torch.no_grad():
            for own, new in zip(self.params, group.leaves):
                own[keep] = new.detach()[ok]
            for own_part, new_part in zip(self.opt_state, group.opt_state):
                for own, new in zip(own_part, new_part):
                    own[keep] = new[ok]
            for own, new in zip(tree_tensors(self.measures), tree_tensors(group.measures)):
                own[keep] = new[ok]
        return series, bad

    def set_lr(self, lr: float) -> None:
        self.lr.fill_(lr)

    def evaluate(self, idx: np.ndarray, x, y, n_train: int, task: str) -> dict[str, np.ndarray]:
        index = torch.as_tensor(idx)
        params = {k: p[index] for k, p in zip(self.names, self.params)}
        buffers = {k: b[index] for k, b in self.buffers.items()}
        self.base.eval()
        return evaluate_rows(lambda xc: self.vforward_shared(params, buffers, xc), x, y, n_train, task)

    def keep_best(self, improved: np.ndarray) -> None:
        """Remember the current parameters of the ``improved`` runs (Keras' restore_best_weights)."""
        if self.best is None:
            self.best = [p.clone() for p in self.params]
        mask = torch.as_tensor(improved)
        for best, p in zip(self.best, self.params):
            best[mask] = p[mask]

    def state_dict(self, i: int, best: bool = False) -> dict[str, np.ndarray]:
        params = self.best if (best and self.best is not None) else self.params
        stacked = {**dict(zip(self.names, params)), **self.buffers}
        return {k: stacked[k][i].cpu().numpy().copy() for k in named_tensors(self.base)}


class _ModuleGroup:
    """One run of :class:`ModuleRuns`: data and outputs with a run axis of 1, the module's own parameters."""

    runs = 1

    def __init__(self, module: torch.nn.Module, opt_state, measures: dict, hyper: RunHyper):
        self.module = module
        # Leaves without a run axis: every use reshapes them to (1, -1) or works leaf by leaf.
        self.params = trained_parameters(module)
        self.leaves = [p.detach() for p in self.params]  # the same storage, updated in place by the optimizer
        self.opt_state, self.measures, self.hyper = opt_state, measures, hyper
        self.state_tensors = list(module.buffers())

    def forward(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        if self.module.training != train:
            self.module.train(train)
        return self.module(x[0]).unsqueeze(0)

    def grads(self, loss: torch.Tensor) -> list[torch.Tensor]:
        return list(torch.autograd.grad(loss, self.params, materialize_grads=True))

    def get_state(self) -> list[torch.Tensor]:
        return [b.detach().clone() for b in self.state_tensors]

    def set_state(self, state: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for own, new in zip(self.state_tensors, state):
                own.copy_(new)


class ModuleRuns:
    """R runs as R modules, trained one after another (any model: batch norm, dropout)."""

    def __init__(self, modules: list[torch.nn.Module], optimizer: TorchOptimizer, lrs, momenta, decays,
                 instruments: tuple[StepInstrument, ...], dropout_seeds: list[int]):
        self.modules = modules
        self.lr = [float(v) for v in lrs]
        self.momentum = [float(v) for v in momenta]
        self.weight_decay = [float(v) for v in decays]
        leaves = [[p.detach() for p in trained_parameters(m)] for m in modules]
        self.opt_state = [optimizer.init(lv, m) for lv, m in zip(leaves, self.momentum)]
        self.measures = [start_measures(instruments, [t.clone() for t in lv], TorchOps(1)) for lv in leaves]
        self.rng = [torch.Generator().manual_seed(int(s)).get_state() for s in dropout_seeds]
        self.best: list[dict | None] = [None] * len(modules)

    def _tensors(self, i: int) -> list[torch.Tensor]:
        """Everything that training changes in run ``i`` (parameters, buffers, optimizer and
        instrument state)."""
        return [t.detach() for t in named_tensors(self.modules[i]).values()] + \
            [t for part in self.opt_state[i] for t in part] + tree_tensors(self.measures[i])

    def train_epoch(self, idx: np.ndarray, x, y, orders: torch.Tensor, plan: EpochPlan, counts: np.ndarray):
        """Train runs ``idx`` one epoch each, one after another; returns their series and which diverged."""
        all_series, bad = [], []
        for i in idx:
            start = [t.clone() for t in self._tensors(i)]
            group = _ModuleGroup(self.modules[i], self.opt_state[i], self.measures[i],
                                 RunHyper(self.lr[i], self.momentum[i], self.weight_decay[i], 1))
            torch.set_rng_state(self.rng[i])  # inside the cohort's fork_rng: the user's RNG is untouched
            series = train_epoch(group, x, y, orders[i:i + 1], plan, int(counts[i]))
            self.rng[i] = torch.get_rng_state()
            self.measures[i] = group.measures
            first_bad = int(_first_bad(series["mb_loss"])[0])
            if first_bad >= 0:
                with torch.no_grad():
                    for own, saved in zip(self._tensors(i), start):
                        own.copy_(saved)
            all_series.append(series)
            bad.append(first_bad)
        merged = {k: np.concatenate([s[k] for s in all_series]) for k in all_series[0]}
        return merged, np.array(bad)

    def set_lr(self, lr: float) -> None:
        self.lr = [float(lr)] * len(self.lr)

    def evaluate(self, idx: np.ndarray, x, y, n_train: int, task: str) -> dict[str, np.ndarray]:
        parts = []
        for i in idx:
            module = self.modules[i]
            module.eval()
            parts.append(evaluate_rows(lambda xc: module(xc).unsqueeze(0), x, y, n_train, task))
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    def keep_best(self, improved: np.ndarray) -> None:
        """Remember the current parameters of the ``improved`` runs (Keras' restore_best_weights)."""
        for i in np.flatnonzero(improved):
            self.best[i] = self.state_dict(i)

    def state_dict(self, i: int, best: bool = False) -> dict[str, np.ndarray]:
        if best and self.best[i] is not None:
            return self.best[i]
        return {k: t.detach().cpu().numpy().copy() for k, t in named_tensors(self.modules[i]).items()}
