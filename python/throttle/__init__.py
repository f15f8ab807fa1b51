"""throttle: limits shared by every process of a host.

``throttle.Arena`` maps the daemon's shared-memory arena through libthrottle-client (ctypes) and
decides each call in this process, as the C library does. ``throttle.http.Client`` speaks to the
daemon's HTTP API for processes that cannot map the arena. Both raise the exceptions of
``throttle.errors`` and return the dataclasses of ``throttle.results``.

The shared-memory names (Arena, Limiter, Lease, Reservation, Group, lock) are loaded on first
use, so that ``import throttle`` works on a host without libthrottle-client (HTTP only); the
first use raises ImportError naming where the library was looked for.
"""
from typing import Any

from .errors import *  # noqa: F401,F403
from .breaker import BreakerTicket
from .errors import ThrottleError, from_errno
from .results import (BreakerStatus, BudgetResult, BudgetStat, ComposeResult, Decision, Held,
                      LimiterInfo, SemStat)

__version__ = "0.1.0"

_ARENA_NAMES = ("Arena", "Limiter", "Lease", "Reservation", "Group", "lock")

__all__ = ["ThrottleError", "from_errno", "Decision", "Held", "LimiterInfo", "SemStat",
           "BudgetResult", "BudgetStat", "ComposeResult", "BreakerStatus", "BreakerTicket",
           "__version__"] + list(_ARENA_NAMES)


def __getattr__(name: str) -> Any:
    if name in _ARENA_NAMES:
        from . import arena
        return getattr(arena, name)
    raise AttributeError("module 'throttle' has no attribute %r" % name)
