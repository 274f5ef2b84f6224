"""``update_norm``: ||theta_{t+1} - theta_t||_2, the size of the update (all parameters flattened)."""

from batchlab.instruments.base import norm

INSTRUMENT = norm("update_norm", lambda state, step: step.ops.sub(step.new_params, step.params), __doc__, cost=1)
