"""``batchlab advise``: which batch size, lr and epochs for a user's model and data, with the
evidence (``runner.py`` orders the steps, ``steps.py`` trains them, ``plan.py`` sizes them,
``memory.py`` finds the largest batch that fits)."""

from batchlab.advisor.runner import Advice, advise

__all__ = ["Advice", "advise"]
