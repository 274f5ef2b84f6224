"""``grad_norm``: ||g||_2 of the gradient the update used (the batch mean, or the sum with a
sum reduction; all parameters flattened)."""

from batchlab.instruments.base import norm

INSTRUMENT = norm("grad_norm", lambda state, step: step.grad, __doc__, cost=1)
