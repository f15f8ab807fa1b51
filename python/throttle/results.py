"""What the calls return: small frozen dataclasses, the same from shared memory and from HTTP.

Times are integers in nanoseconds as the library gives them (``*_ns``), with a property in
seconds (float) beside each for Python callers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Tuple

NS = 1_000_000_000


@dataclass(frozen=True)
class Decision:
    """One rate decision (thr_limiter_try, thr_limiter_acquire; a window's or a budget's try)."""

    admitted: bool
    limit: int  # the burst B (a window: N)
    remaining: int  # whole tokens left after this decision
    retry_after_ns: int  # 0 if admitted; else when the same request would fit
    reset_after_ns: int  # until the bucket is full (the window empty) again

    @property
    def retry_after(self) -> float:
        return self.retry_after_ns / NS

    @property
    def reset_after(self) -> float:
        return self.reset_after_ns / NS

    def __bool__(self) -> bool:
        return self.admitted


@dataclass(frozen=True)
class Held(Decision):
    """What a hold, a cap or an applied feedback left (thr_limiter_hold): whether a request of
    cost 1 fits now (admitted), the tokens left now, when one fits, when the key is full."""

    shortened: bool = False  # a hold cut to the limiter's reach (B*T + max_reserve)


@dataclass(frozen=True)
class LimiterInfo:
    """A limiter's kind and configuration (thr_limiter_info)."""

    name: str
    kind: str  # "gcra", "window", "semaphore", "budget" or "breaker"
    serialized: bool
    rate: int
    period_ns: int
    burst: int
    initial: int
    leases: int
    level: int


@dataclass(frozen=True)
class SemStat:
    """A semaphore key's state (thr_sem_stat)."""

    max: int
    held: int
    remainder: int
    leases: int
    pending: int
    pending_units: int
    longest_pending_ns: int
    level: int


@dataclass(frozen=True)
class BudgetResult:
    """What a budget spend, try or add left (thr_budget_result)."""

    balance: int
    shortfall: int
    waiters: int
    waited_ns: int


@dataclass(frozen=True)
class BudgetStat:
    """A budget key's state (thr_budget_stat)."""

    balance: int
    initial: int
    waiters: int
    need: int
    head_need: int
    longest_pending_ns: int
    granted: int


@dataclass(frozen=True)
class ComposeResult:
    """A composed call's outcome (thr_compose_result): all members or none."""

    admitted: bool
    denied: int  # denied: the index of the first member that did not fit (-1 if admitted)
    retry_after_ns: int  # denied: the longest retry_after of the denying members
    remaining: Tuple[int, ...] = field(default_factory=tuple)

    @property
    def retry_after(self) -> float:
        return self.retry_after_ns / NS

    def __bool__(self) -> bool:
        return self.admitted


@dataclass(frozen=True)
class BreakerStatus:
    """A circuit breaker key's state (thr_breaker_status): what an allow or a report left, or
    what breaker_stat sees."""

    state: str  # "closed", "open" or "half-open"
    consecutive_failures: int  # saturating at 255
    probes_in_flight: int  # half-open: probes handed out and not reported
    half_open_successes: int  # half-open: probe successes so far
    window_calls: int  # closed: reported calls in the sliding window (failure_rate rule only)
    window_failures: int  # of those, failures
    retry_after_ns: int  # 0 if a call may go ahead now; else until one may at the earliest

    @property
    def retry_after(self) -> float:
        return self.retry_after_ns / NS
