"""``dist_init``: ||theta_{t+1} - theta_0||_2, the distance travelled from the initial weights
(Shen 2018; Hoffer et al. 2017). Its state is theta_0."""

from batchlab.instruments.base import norm

INSTRUMENT = norm("dist_init", lambda theta0, step: step.ops.sub(step.new_params, theta0), __doc__,
                  init=lambda params, ops: params, cost=2)
