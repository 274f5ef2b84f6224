"""Softmax regression's exact optimum, and how far a set of parameters is from it (``science.md``
section 6; the convex study measures its checkpoints with :func:`checkpoint_record`).

batchlab's ``logreg`` model is softmax regression trained on the batch-mean cross-entropy,
with no L2 term. Here its parameters are one float64 matrix Theta = [W; b] of shape (F+1, K)
acting on the features with a 1 appended (x~ = [x, 1]):

    L(Theta) = (1/N) sum_i [ logsumexp(x~_i Theta) - (x~_i Theta)_{y_i} ].

Adding one vector to every class column of Theta leaves every softmax unchanged, so the
minimisers form an affine set; on the class-centred subspace {Theta : Theta 1_K = 0} the
loss is strictly convex wherever the data are not linearly separable, with a unique
minimiser Theta*. SGD started at batchlab's zero initialization never leaves that subspace
(each per-sample gradient x~_i^T (p_i - e_{y_i}) has columns summing to zero), so every
distance here is measured between class-centred parameters: centring only removes rounding.

Nothing here imports the engine: float64 numpy arrays in, numbers out.
Reference: e.g. Bottou, Curtis & Nocedal, "Optimization methods for large-scale machine
learning", SIAM Review 2018, section 4 (constant-step SGD converges to a neighbourhood).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from batchlab.errors import BatchlabError

GRAD_TOL = 1e-12  # Newton polishing stops below this gradient norm (float64 reaches it in a few steps)
MIN_CURVATURE = 1e-8  # a smaller eigenvalue on the centred subspace means no finite optimum
# The optimum's constants that every checkpoint record repeats (so analysis reads them from the store).
CONSTANTS = ("n_train", "loss_star", "theta_star_norm", "theta_star_max_abs", "grad_norm_star", "trace_sigma", "mu",
             "l_max", "accuracy_star")


@dataclass(frozen=True)
class Optimum:
    """The exact minimiser Theta* (class-centred, shape (F+1, K)) and the problem's constants there."""

    theta: np.ndarray
    loss: float  # L(Theta*)
    grad_norm: float  # ||grad L(Theta*)||, the solver's residual
    trace_sigma: float  # tr(Sigma) = mean_i ||g_i - G||^2 of the per-sample gradients at Theta*
    mu: float  # smallest Hessian eigenvalue on the centred subspace (strong convexity)
    l_max: float  # largest Hessian eigenvalue (smoothness)
    accuracy: float  # training accuracy of Theta*
    iterations: int  # L-BFGS iterations + Newton steps


def augment(x: np.ndarray) -> np.ndarray:
    """Rows flattened to features, float64, with a trailing column of ones (the bias input)."""
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    return np.hstack([flat, np.ones((len(flat), 1))])


def centre(theta: np.ndarray) -> np.ndarray:
    """Theta minus its mean over classes: the representative the loss can see."""
    return theta - theta.mean(axis=1, keepdims=True)


def probabilities(theta: np.ndarray, xa: np.ndarray) -> np.ndarray:
    """softmax(x~ Theta) row by row, computed stably."""
    z = xa @ theta
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def loss(theta: np.ndarray, xa: np.ndarray, y: np.ndarray) -> float:
    """Mean cross-entropy L(Theta) over the rows of ``xa``."""
    z = xa @ theta
    top = z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z - top).sum(axis=1)) + top[:, 0]
    return float(np.mean(lse - z[np.arange(len(y)), y]))


def per_sample_gradients(theta: np.ndarray, xa: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Matrix (N, (F+1)K) of g_i = vec(x~_i^T (p_i - e_{y_i})), the gradients of each row's loss."""
    residual = probabilities(theta, xa)
    residual[np.arange(len(y)), y] -= 1.0
    return (xa[:, :, None] * residual[:, None, :]).reshape(len(y), -1)


def gradient(theta: np.ndarray, xa: np.ndarray, y: np.ndarray) -> np.ndarray:
    """grad L(Theta) = (1/N) x~^T (P - Y), shape (F+1, K)."""
    residual = probabilities(theta, xa)
    residual[np.arange(len(y)), y] -= 1.0
    return xa.T @ residual / len(y)


def centred_hessian(theta: np.ndarray, xa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Hessian restricted to the centred subspace, and an orthonormal basis Q of that subspace.

    H = (1/N) sum_i (x~_i x~_i^T) kron (diag p_i - p_i p_i^T) in vec order (feature-major);
    Q = I_{F+1} kron U with U an orthonormal basis of the vectors orthogonal to 1_K.
    Returns (Q^T H Q, Q).
    """
    n, k = xa.shape[0], theta.shape[1]
    p = probabilities(theta, xa)
    curvature = np.einsum("ik,kl->ikl", p, np.eye(k)) - np.einsum("ik,il->ikl", p, p)
    # One (F+1) x (F+1) product per class pair keeps memory at N x (F+1), whatever F is.
    blocks = np.array([[xa.T @ (curvature[:, a, c, None] * xa) for c in range(k)] for a in range(k)])
    h = blocks.transpose(2, 0, 3, 1).reshape(xa.shape[1] * k, -1) / n
    u = np.linalg.svd(np.eye(k) - 1.0 / k)[0][:, :k - 1]
    q = np.kron(np.eye(xa.shape[1]), u)
    return q.T @ h @ q, q


def solve_optimum(x: np.ndarray, y: np.ndarray, num_classes: int) -> Optimum:
    """Theta* = argmin L on the centred subspace: L-BFGS (scipy, tight tolerances), then Newton steps.

    Newton uses the Hessian on the centred subspace (step = -Q (Q^T H Q)^{-1} Q^T grad), so the
    residual gradient ends near float64 rounding. Raises BatchlabError when the data admit no
    finite optimum (linearly separable classes: the loss keeps falling as ||Theta|| grows).
    """
    from scipy.optimize import minimize

    xa, y = augment(x), np.asarray(y, np.int64)
    shape = (xa.shape[1], num_classes)

    def objective(flat):
        theta = flat.reshape(shape)
        return loss(theta, xa, y), gradient(theta, xa, y).ravel()

    result = minimize(objective, np.zeros(np.prod(shape)), jac=True, method="L-BFGS-B",
                      options=dict(maxiter=20_000, gtol=1e-11, ftol=1e-16))
    theta, steps = centre(result.x.reshape(shape)), 0
    for steps in range(30):
        h, q = centred_hessian(theta, xa)
        g = q.T @ gradient(theta, xa, y).ravel()
        if np.linalg.eigvalsh(h)[0] < MIN_CURVATURE or np.abs(theta).max() > 1e6:
            raise BatchlabError("the data admit no finite optimum of unregularised softmax regression "
                                "(the classes are linearly separable); choose overlapping data such as blobs")
        if np.linalg.norm(g) < GRAD_TOL:
            break
        theta = centre(theta - (q @ np.linalg.solve(h, g)).reshape(shape))
    h, _ = centred_hessian(theta, xa)
    eigen = np.linalg.eigvalsh(h)
    grads = per_sample_gradients(theta, xa, y)
    mean = grads.mean(axis=0)
    return Optimum(theta=theta, loss=loss(theta, xa, y), grad_norm=float(np.linalg.norm(mean)),
                   trace_sigma=float(((grads - mean) ** 2).sum(axis=1).mean()), mu=float(eigen[0]),
                   l_max=float(eigen[-1]), accuracy=float((probabilities(theta, xa).argmax(1) == y).mean()),
                   iterations=int(result.nit) + steps)


def checkpoint_record(theta: np.ndarray, optimum: Optimum, xa: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Distance and loss gap of one set of parameters to the optimum, in float64.

    ``distance`` = ||centre(Theta) - Theta*||_F, ``sq_distance`` its square, ``loss_gap`` =
    L(Theta) - L(Theta*) on the training set, ``null_component`` = ||Theta - centre(Theta)||_F
    (the part the loss cannot see; ~0 for SGD from zero init), and the optimum's constants,
    so that the analysis reads everything from the store.
    """
    theta = np.asarray(theta, np.float64)
    diff = centre(theta) - optimum.theta
    sq = float((diff ** 2).sum())
    return {"distance": float(np.sqrt(sq)), "sq_distance": sq, "loss": loss(theta, xa, y),
            "loss_gap": loss(theta, xa, y) - optimum.loss,
            "null_component": float(np.linalg.norm(theta - centre(theta))),
            "n_train": int(len(y)), "loss_star": optimum.loss, "theta_star_norm": float(np.linalg.norm(optimum.theta)),
            "theta_star_max_abs": float(np.abs(optimum.theta).max()),
            "grad_norm_star": optimum.grad_norm, "trace_sigma": optimum.trace_sigma, "mu": optimum.mu,
            "l_max": optimum.l_max, "accuracy_star": optimum.accuracy}
