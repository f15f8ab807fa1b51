"""throttle: limits shared by every process of a host.

``throttle.Arena`` maps the daemon's shared-memory arena through libthrottle-client (ctypes) and
decides each call in this process, as the C library does. ``throttle.http.Client`` speaks to the
daemon's HTTP API for processes that cannot map the arena. Both raise the exceptions of
``throttle.errors`` and return the dataclasses of ``throttle.results``.
"""
from .errors import *  # noqa: F401,F403
from .errors import ThrottleError, from_errno
from .results import (BudgetResult, BudgetStat, ComposeResult, Decision, LimiterInfo,
                      SemStat)

__version__ = "0.1.0"

__all__ = ["ThrottleError", "from_errno", "Decision", "LimiterInfo", "SemStat", "BudgetResult",
           "BudgetStat", "ComposeResult", "__version__"]
