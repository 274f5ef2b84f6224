"""An independent reference for the critical batch size: SGD on population least squares.

Problem (batchlab's ``logreg`` with task ``regression``): prediction ``x @ w + b`` from zero,
loss = batch mean of ``(pred - y)^2`` (no 1/2), plain SGD at a constant lr, batch mean gradient.
Data: ``x ~ N(0, C)``, ``y = x @ w_star + sigma * eps`` with ``eps ~ N(0, 1)``, ``b_star = 0``.
``C = Q diag(lam) Q^T`` with ``Q`` the normalised Walsh-Hadamard matrix (d a power of 2): every
``|Q_ij|^2 = 1/d``, so ``C_ii = mean(lam) = 1`` for every spectrum of mean 1 -- each feature has
unit variance and batchlab's per-feature standardisation changes nothing but sampling noise.

Derivation (the moment recursion). Write ``z = (Q^T x, 1)`` (eigen-coordinates and the bias's
feature) and ``delta = theta - theta_star = (u, c)``; ``H = E[z z^T] = diag(lam, 1)``. The
per-sample gradient is ``g = 2 z (z.delta - sigma eps)``, the mean gradient ``G = 2 H delta``,
the population loss ``delta^T H delta + sigma^2``. One step with a batch of B samples drawn
**with replacement from the population** (i.i.d.; batchlab's finite set without replacement is
an approximation to this, see ``simulate_finite``):

    delta' = (I - 2 lr Hb) delta + 2 lr sigma mean_i(z_i eps_i),   Hb = mean_i z_i z_i^T

    E[delta' delta'^T] = M - 2 lr (H M + M H) + 4 lr^2 [(1 - 1/B) H M H + F(M) / B]
                         + 4 lr^2 sigma^2 H / B,        M = E[delta delta^T],
    F(M) = E[z z^T M z z^T].

For the Gaussian block, Isserlis gives E[x x^T A x x^T] = Lam (A + A^T) Lam + tr(Lam A) Lam;
the bias's feature is the constant 1 (fourth moment 1, not 3), and terms odd in x vanish, so with
``A`` the eigen-block of M, ``v`` its cross-block and ``m = E[c^2]``:

    F(M) = [[2 Lam A Lam + (tr(Lam A) + m) Lam, 2 Lam v], [2 v^T Lam, tr(Lam A) + m]].

Only the diagonal ``p_i = E[u_i^2]`` and ``m`` enter the loss, and their updates involve only
themselves (``v`` starts at 0 and stays 0 by the symmetry x -> -x), so the recursion closes on
d + 1 scalars. With ``L = sum_i lam_i p_i + m`` (the expected excess loss) and ``k = 4 lr^2 / B``:

    p_i' = [(1 - 2 lr lam_i)^2 + k lam_i^2] p_i + k lam_i (L + sigma^2)
    m'   = (1 - 2 lr)^2 m + k (L - m + sigma^2)

Isotropic case (lam = 1): it closes on ``a = E|u|^2`` and ``m``:
``a' = [(1 - 2 lr)^2 + k] a + k d (a + m + sigma^2)``, ``m' = (1 - 2 lr)^2 m + k (a + sigma^2)``.
The bias does not decouple: its gradient noise feeds ``m`` and ``m`` feeds back through L.

Noise scales (McCandlish et al. 2018) at a fixed delta, from the same fourth moments:

    tr(Sigma)/4  = u^T Lam^2 u + (u^T Lam u + sigma^2)(tr Lam + 1) + c^2 tr Lam,
    |G|^2/4      = u^T Lam^2 u + c^2,
    B_simple     = tr(Sigma) / |G|^2,
    B_noise      = tr(H Sigma) / (G^T H G)
                 = [u^T Lam^3 u + (u^T Lam u + c^2 + sigma^2)(tr Lam^2 + 1) - c^2] / (u^T Lam^3 u + c^2).

Isotropic, no bias: B_simple = d + 1 + d sigma^2 / |u|^2. With the bias (c = 0):
B_simple = B_noise = d + 2 + (d + 1) sigma^2 / |u|^2.

Why two problems. With C = I the Hessian is 2 I: full-batch GD at lr 1/2 lands on the optimum in
one step, so S_min is 1-2 steps, far below one epoch (n/B steps) for any B < n/2 -- an advisor
that reads the loss once per epoch cannot resolve S(B) there. ``ILL_CONDITIONED`` (condition
number 1000, w_star loaded so that every eigen-direction starts with the same excess loss) has
S_min of hundreds of steps; B_crit (fit over B = 1..4096) is about 65, 90, 105, 130 at excess
losses 0.08, 0.05, 0.04, 0.03, close to B_simple at the target.

What batchlab measures differs in three ways: a finite set of n rows without replacement, the
training MSE (target = the least-squares floor + excess, not sigma^2 + excess: the floor of one
data set is off sigma^2 by about sigma^2 sqrt(2/n)), and the first epoch at which ONE run is below
the target rather than the step at which the MEAN loss is. ``simulate_finite`` does that; for
``REFERENCE`` at excess 0.04 it measures 0.78-0.89 of the reference steps at every B in 8..1024, so
the fitted B_crit agrees (about 100 both ways).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

POWERS_OF_TWO: tuple[int, ...] = tuple(2 ** k for k in range(13))  # 1 .. 4096


def hadamard(d: int) -> np.ndarray:
    """The normalised Sylvester-Hadamard matrix (symmetric, orthogonal, entries +-1/sqrt(d))."""
    if d < 1 or d & (d - 1):
        raise ValueError(f"d must be a power of 2, got {d}")
    h = np.ones((1, 1))
    while h.shape[0] < d:
        h = np.block([[h, h], [h, -h]])
    return h / math.sqrt(d)


@dataclass(frozen=True)
class Problem:
    """Population least squares. ``spectrum``: eigenvalues of Cov(x) (mean 1, so unit feature
    variances); ``w_eig``: w_star's components along the eigenvectors (columns of ``hadamard(d)``);
    ``bias``: the model has an intercept (batchlab's logreg does); ``b_star``: the true intercept
    (0 in the reference problems; nonzero only to exercise the bias's recursion in the tests)."""

    spectrum: tuple[float, ...]
    w_eig: tuple[float, ...]
    sigma: float = 1.0
    bias: bool = True
    b_star: float = 0.0

    def __post_init__(self) -> None:
        if len(self.spectrum) != len(self.w_eig):
            raise ValueError("spectrum and w_eig differ in length")
        if not math.isclose(float(np.mean(self.spectrum)), 1.0, rel_tol=1e-9):
            raise ValueError("the spectrum's mean must be 1 (unit feature variances)")
        hadamard(len(self.spectrum))  # d a power of 2
        if self.b_star and not self.bias:
            raise ValueError("a model without a bias cannot fit b_star != 0")

    @property
    def d(self) -> int:
        return len(self.spectrum)

    @property
    def lam(self) -> np.ndarray:
        return np.asarray(self.spectrum, float)

    @property
    def w_star(self) -> np.ndarray:
        return hadamard(self.d) @ np.asarray(self.w_eig, float)

    @property
    def covariance(self) -> np.ndarray:
        q = hadamard(self.d)
        return q @ np.diag(self.lam) @ q.T

    @property
    def initial_excess(self) -> float:
        """Excess population loss at the zero initialisation: w_star^T C w_star + b_star^2."""
        return float(self.lam @ np.square(self.w_eig)) + self.b_star ** 2

    @classmethod
    def isotropic(cls, d: int = 8, sigma: float = 1.0, w_norm: float = 1.0, bias: bool = True) -> Problem:
        """x ~ N(0, I_d); |w_star| = w_norm, spread evenly (fixed signs) over the Hadamard basis."""
        signs = np.where(np.arange(d) % 3 == 1, -1.0, 1.0)
        return cls(tuple([1.0] * d), tuple(signs * w_norm / math.sqrt(d)), sigma, bias)

    @classmethod
    def ill_conditioned(cls, d: int = 8, sigma: float = 1.0, kappa: float = 1000.0,
                        initial_excess: float = 1.0, bias: bool = True) -> Problem:
        """Geometric spectrum from lam_max to lam_max/kappa (mean 1); w_star's eigen-components
        sqrt(initial_excess / (d lam_i)): each direction starts with the same excess loss, so the
        slow directions matter and full-batch GD needs hundreds of steps."""
        lam = np.geomspace(1.0, 1.0 / kappa, d)
        lam = lam / lam.mean()
        signs = np.where(np.arange(d) % 3 == 1, -1.0, 1.0)
        return cls(tuple(lam), tuple(signs * np.sqrt(initial_excess / (d * lam))), sigma, bias)


ISOTROPIC = Problem.isotropic()  # the brief's problem: d = 8, sigma = 1, |w_star| = 1
ILL_CONDITIONED = Problem.ill_conditioned()  # d = 8, sigma = 1, kappa = 1000, initial excess 1
REFERENCE = ILL_CONDITIONED
REFERENCE_EXCESS = 0.04  # target = sigma^2 + 0.04 (population); B_crit about 100 on REFERENCE


# ---------------------------------------------------------------------------------------------
# data


def sample_features(rng: np.random.Generator, n: int, problem: Problem) -> np.ndarray:
    """n rows of x ~ N(0, C) (float64): z ~ N(0, I) scaled along the eigenvectors."""
    z = rng.standard_normal((n, problem.d))
    return (z * np.sqrt(problem.lam)) @ hadamard(problem.d).T


def make_problem(n: int = 4096, problem: Problem = REFERENCE, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Training set: ``(x, y, w_star)``, x float32 (n, d), y float32 (n,); w_star float64 (d,)."""
    rng = np.random.default_rng([seed, 0])
    x = sample_features(rng, n, problem)
    y = x @ problem.w_star + problem.b_star + problem.sigma * rng.standard_normal(n)
    return x.astype(np.float32), y.astype(np.float32), problem.w_star


def make_test_split(n: int = 1024, problem: Problem = REFERENCE, seed: int = 0
                    ) -> tuple[np.ndarray, np.ndarray]:
    """A test set from the same distribution, independent of ``make_problem``'s rows."""
    rng = np.random.default_rng([seed, 1])
    x = sample_features(rng, n, problem)
    y = x @ problem.w_star + problem.b_star + problem.sigma * rng.standard_normal(n)
    return x.astype(np.float32), y.astype(np.float32)


def least_squares_floor(x: np.ndarray, y: np.ndarray, bias: bool = True) -> float:
    """The training MSE of the least-squares optimum (with an intercept when ``bias``): the
    lowest training loss SGD can approach, about sigma^2 (1 - (d + 1)/n)."""
    a = np.column_stack([x, np.ones(len(x))]) if bias else np.asarray(x, float)
    coef, *_ = np.linalg.lstsq(a.astype(float), np.asarray(y, float), rcond=None)
    return float(np.mean(np.square(a @ coef - y)))


# ---------------------------------------------------------------------------------------------
# the moment recursion


def _coefficients(batch_size: int, lr: np.ndarray, problem: Problem):
    eta = np.asarray(lr, float)[..., None]
    lam = problem.lam
    k = 4.0 * eta ** 2 / batch_size
    r = (1.0 - 2.0 * eta * lam) ** 2 + k * lam ** 2
    rm = (1.0 - 2.0 * eta[..., 0]) ** 2
    return lam, k, r, rm, k[..., 0]


def _step(p: np.ndarray, m: np.ndarray, coef, problem: Problem) -> tuple[np.ndarray, np.ndarray]:
    lam, k, r, rm, km = coef
    s2 = problem.sigma ** 2
    excess = p @ lam + m
    p_next = r * p + k * lam * (excess + s2)[..., None]
    m_next = rm * m + km * (excess - m + s2) if problem.bias else m
    return p_next, m_next


def expected_moments(batch_size: int, lr: float, steps: int, problem: Problem = REFERENCE
                     ) -> tuple[np.ndarray, np.ndarray]:
    """``p`` (steps + 1, d): E[u_i^2] along the eigenvectors, and ``m`` (steps + 1,): E[c^2],
    after 0, 1, ..., steps SGD steps from zero."""
    coef = _coefficients(batch_size, np.asarray(lr, float), problem)
    p, m = np.square(np.asarray(problem.w_eig, float)), np.asarray(problem.b_star ** 2)
    ps, ms = [p], [m]
    with np.errstate(over="ignore", invalid="ignore"):
        for _ in range(steps):
            p, m = _step(p, m, coef, problem)
            ps.append(p)
            ms.append(m)
    return np.array(ps), np.array(ms, float)


def expected_loss_curve(batch_size: int, lr: float, steps: int, problem: Problem = REFERENCE) -> np.ndarray:
    """E[population loss] after 0, 1, ..., steps SGD steps (length steps + 1; entry 0 is the
    initial loss sigma^2 + ``problem.initial_excess``). Batches of ``batch_size`` i.i.d. population samples."""
    p, m = expected_moments(batch_size, lr, steps, problem)
    return p @ problem.lam + m + problem.sigma ** 2


def _first_hits(batch_size: int, lrs: np.ndarray, target_loss: float, problem: Problem,
                max_steps: int) -> tuple[float, np.ndarray]:
    """The fewest steps over ``lrs`` to reach ``target_loss`` and the lrs that reach it then."""
    lrs = np.asarray(lrs, float)
    coef = _coefficients(batch_size, lrs, problem)
    p = np.tile(np.square(np.asarray(problem.w_eig, float)), (len(lrs), 1))
    m = np.full(len(lrs), problem.b_star ** 2)
    goal = target_loss - problem.sigma ** 2
    if problem.initial_excess <= goal:
        return 0.0, lrs
    last = p @ problem.lam + m
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(1, max_steps + 1):
            p, m = _step(p, m, coef, problem)
            excess = p @ problem.lam + m
            hit = excess <= goal  # NaN (diverged) compares False
            if hit.any():
                return float(t), lrs[hit]
            moving = np.isfinite(excess) & (np.abs(excess - last) > 1e-13 * excess)
            if not moving.any():  # every lr diverged or settled above the target
                break
            last = excess
    return math.inf, lrs[:0]


def steps_to_target(batch_size: int, lr: float, target_loss: float, problem: Problem = REFERENCE,
                    max_steps: int = 10 ** 6) -> float:
    """The first step at which the expected population loss is <= ``target_loss`` (inf if never
    within ``max_steps``). The excess is ``target_loss - sigma^2``."""
    if target_loss <= problem.sigma ** 2:
        raise ValueError("the target must lie above the noise floor sigma^2")
    steps, _ = _first_hits(batch_size, np.array([lr]), target_loss, problem, max_steps)
    return steps


class Optimal(NamedTuple):
    steps: float  # fewest steps to the target over lr
    lr: float  # geometric middle of the lrs that reach it in that many steps
    lr_low: float  # the range of those lrs (steps are integers: a plateau of lrs ties)
    lr_high: float


def optimal_steps(batch_size: int, target_loss: float, problem: Problem = REFERENCE,
                  max_steps: int = 10 ** 6) -> Optimal:
    """min over lr of ``steps_to_target``: a log grid over [1e-7, 4] (ratio 1.12), then a grid of
    ratio 1.003 around the best lrs. The recursion stops at the first step any lr reaches the target."""
    if target_loss <= problem.sigma ** 2:
        raise ValueError("the target must lie above the noise floor sigma^2")
    coarse = np.geomspace(1e-7, 4.0, 160)
    steps, hits = _first_hits(batch_size, coarse, target_loss, problem, max_steps)
    if not math.isfinite(steps):
        return Optimal(math.inf, math.nan, math.nan, math.nan)
    ratio = coarse[1] / coarse[0]
    fine = np.geomspace(hits.min() / ratio, hits.max() * ratio, 400)
    steps, hits = _first_hits(batch_size, fine, target_loss, problem, int(steps))
    return Optimal(steps, float(math.sqrt(hits.min() * hits.max())), float(hits.min()), float(hits.max()))


# ---------------------------------------------------------------------------------------------
# noise scales


class NoiseScales(NamedTuple):
    trace_sigma: float  # tr(Sigma), per-sample gradient covariance
    grad_norm2: float  # |G|^2
    b_simple: float  # tr(Sigma) / |G|^2
    b_noise: float  # tr(H Sigma) / (G^T H G)


def noise_scales(p: np.ndarray, m: float, problem: Problem = REFERENCE) -> NoiseScales:
    """Population noise scales from ``p_i = u_i^2`` (eigen-coordinates) and ``m = c^2`` -- or from
    their expectations, which gives E[tr Sigma] / E[|G|^2] (numerator and denominator averaged
    separately, as batchlab's estimators do). No cross terms u_i c enter either."""
    lam, p = problem.lam, np.asarray(p, float)
    m = float(m) if problem.bias else 0.0
    one = 1.0 if problem.bias else 0.0
    s2 = problem.sigma ** 2
    loss_w = float(lam @ p)
    trace = 4 * (float(lam ** 2 @ p) + (loss_w + s2) * (lam.sum() + one) + m * lam.sum())
    grad2 = 4 * (float(lam ** 2 @ p) + m)
    h_trace = 4 * (float(lam ** 3 @ p) + (loss_w + m + s2) * (float(lam @ lam) + one) - m)
    h_grad2 = 4 * (float(lam ** 3 @ p) + m)
    return NoiseScales(trace, grad2, trace / grad2, h_trace / h_grad2)


def noise_scales_at(w: np.ndarray, b: float, problem: Problem = REFERENCE) -> NoiseScales:
    """The noise scales at parameters (w, b) in feature coordinates."""
    u = hadamard(problem.d).T @ (np.asarray(w, float) - problem.w_star)
    return noise_scales(np.square(u), (b - problem.b_star) ** 2, problem)


def b_simple_isotropic(excess: float, d: int = 8, sigma: float = 1.0, bias: bool = True) -> float:
    """Closed form at a delta with |u|^2 = excess, c = 0, x ~ N(0, I_d)."""
    return d + 2 + (d + 1) * sigma ** 2 / excess if bias else d + 1 + d * sigma ** 2 / excess


# ---------------------------------------------------------------------------------------------
# the critical batch size


def fit_critical_batch(batch_sizes, steps, method: str = "linear") -> tuple[float, float]:
    """(S_min, B_crit) of S(B) = S_min (1 + B_crit/B).

    ``linear``: ordinary least squares of S on 1/B (intercept S_min, slope S_min B_crit) -- every
    step counts alike, so the small B (large S) dominate. ``log``: least squares of log S on B
    (batchlab's ``fit_critical_batch``): relative errors count alike. For a fixed B_crit the best
    log S_min is the mean of log S - log(1 + B_crit/B); B_crit by a grid and golden-section search."""
    b = np.asarray(batch_sizes, float)
    s = np.asarray(steps, float)
    ok = np.isfinite(s) & (s > 0)
    b, s = b[ok], s[ok]
    if len(b) < 3:
        raise ValueError("the fit needs 3 or more finite steps")
    if method == "linear":
        a = np.column_stack([np.ones_like(b), 1.0 / b])
        (s_min, slope), *_ = np.linalg.lstsq(a, s, rcond=None)
        return float(s_min), float(slope / s_min)
    if method != "log":
        raise ValueError(f"method must be 'linear' or 'log', got {method!r}")

    def residual(log_bc: float) -> float:
        r = np.log(s) - np.log1p(math.exp(log_bc) / b)
        return float(np.sum(np.square(r - r.mean())))

    grid = np.linspace(math.log(b.min()) - 8, math.log(b.max()) + 8, 400)
    i = int(np.argmin([residual(g) for g in grid]))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    golden = (math.sqrt(5) - 1) / 2
    for _ in range(100):
        x1, x2 = hi - golden * (hi - lo), lo + golden * (hi - lo)
        if residual(x1) < residual(x2):
            hi = x2
        else:
            lo = x1
    b_crit = math.exp((lo + hi) / 2)
    s_min = math.exp(float(np.mean(np.log(s) - np.log1p(b_crit / b))))
    return s_min, b_crit


@dataclass(frozen=True)
class CriticalBatch:
    target_loss: float
    batch_sizes: tuple[int, ...]
    steps: tuple[float, ...]  # optimal steps at each B
    lrs: tuple[float, ...]  # the optimal lr at each B
    s_min: float  # linear fit (S on 1/B)
    b_crit: float
    s_min_log: float  # log-space fit
    b_crit_log: float
    b_simple: tuple[float, ...]  # E[tr Sigma]/E|G|^2 at the first step on target, optimal lr, each B
    b_noise: tuple[float, ...]  # likewise tr(H Sigma)/(G^T H G)

    def epochs(self, n: int) -> tuple[float, ...]:
        """Samples to the target over n: the epochs a set of n rows needs at each B."""
        return tuple(s * b / n for b, s in zip(self.batch_sizes, self.steps))


def critical_batch(target_loss: float, problem: Problem = REFERENCE,
                   batch_sizes: tuple[int, ...] = POWERS_OF_TWO) -> CriticalBatch:
    """Optimal steps at each B, the two fits of S(B), and the noise scales of the expected state
    at the step each optimal run reaches the target."""
    rows = [optimal_steps(b, target_loss, problem) for b in batch_sizes]
    steps = [r.steps for r in rows]
    simple, noise = [], []
    for b, r in zip(batch_sizes, rows):
        p, m = expected_moments(b, r.lr, int(r.steps), problem)
        scales = noise_scales(p[-1], m[-1], problem)
        simple.append(scales.b_simple)
        noise.append(scales.b_noise)
    s_min, b_crit = fit_critical_batch(batch_sizes, steps, "linear")
    s_min_log, b_crit_log = fit_critical_batch(batch_sizes, steps, "log")
    return CriticalBatch(target_loss, tuple(batch_sizes), tuple(steps), tuple(r.lr for r in rows),
                         s_min, b_crit, s_min_log, b_crit_log, tuple(simple), tuple(noise))


# ---------------------------------------------------------------------------------------------
# brute force (for the tests and the finite-set check)


def sgd_population(batch_size: int, lr: float, steps: int, replicas: int, problem: Problem = REFERENCE,
                   seed: int = 0) -> np.ndarray:
    """Plain SGD on fresh population samples every step, ``replicas`` independent runs at once.
    Returns the population loss (steps + 1, replicas), from the exact formula delta^T C delta +
    b^2 + sigma^2 (no sampling error in the evaluation)."""
    rng = np.random.default_rng(seed)
    d, cov = problem.d, problem.covariance
    w = np.zeros((replicas, d))
    b = np.zeros(replicas)

    def loss() -> np.ndarray:
        e = w - problem.w_star
        return np.sum((e @ cov) * e, axis=1) + (b - problem.b_star) ** 2 + problem.sigma ** 2

    out = [loss()]
    for _ in range(steps):
        x = sample_features(rng, replicas * batch_size, problem).reshape(replicas, batch_size, d)
        y = x @ problem.w_star + problem.b_star + problem.sigma * rng.standard_normal((replicas, batch_size))
        resid = np.sum(x * w[:, None, :], axis=2) + b[:, None] - y
        w = w - lr * 2 * np.sum(resid[:, :, None] * x, axis=1) / batch_size
        if problem.bias:
            b = b - lr * 2 * resid.mean(axis=1)
        out.append(loss())
    return np.array(out)


def simulate_finite(x: np.ndarray, y: np.ndarray, batch_size: int, lr: float, target_train_loss: float,
                    max_epochs: int, seed: int = 0, drop_last: bool = True, bias: bool = True) -> float:
    """What batchlab measures: SGD from zero over the fixed rows, a fresh permutation every epoch,
    batches without replacement (the last partial one dropped when ``drop_last``), the full training
    MSE after each epoch. Returns the steps at the end of the first epoch at or below the target
    (inf if none within ``max_epochs`` or on divergence)."""
    rng = np.random.default_rng(seed)
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    n, d = x.shape
    w, b = np.zeros(d), 0.0
    steps = 0
    per_epoch = n // batch_size if drop_last else -(-n // batch_size)
    for _ in range(max_epochs):
        order = rng.permutation(n)
        for j in range(per_epoch):
            rows = order[j * batch_size:(j + 1) * batch_size]
            resid = x[rows] @ w + b - y[rows]
            w = w - lr * 2 * (resid @ x[rows]) / len(rows)
            if bias:
                b = b - lr * 2 * resid.mean()
            steps += 1
        loss = float(np.mean(np.square(x @ w + b - y)))
        if not math.isfinite(loss) or loss > 1e6:
            return math.inf
        if loss <= target_train_loss:
            return float(steps)
    return math.inf
