"""``weight_norm``: ||theta_{t+1}||_2, the norm of all parameters after the update."""

from batchlab.instruments.base import norm

INSTRUMENT = norm("weight_norm", lambda state, step: step.new_params, __doc__, cost=3)
