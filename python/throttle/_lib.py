"""ctypes declarations of libthrottle-client (throttle.h), and its errors as exceptions.

Why ctypes and not cffi: ctypes is in the standard library, so the package installs with
Debian's python3 alone (no python3-cffi, and no C compiler at install time: nothing is built),
and a CDLL call releases the GIL for its duration, so a call that sleeps (an acquire, a lease, a
spend) blocks only its own thread.

The library is found, in order, by:
  1. the THROTTLE_LIBRARY environment variable, the path of libthrottle-client.so.0;
  2. ctypes.util.find_library("throttle-client") (ldconfig's cache: an installed package);
  3. pkg-config --variable=libdir throttle-client, then LIBDIR/libthrottle-client.so.0.
If none loads, importing throttle.arena raises ImportError naming every place tried.

Every structure below is laid out exactly as throttle.h declares it (field order and types;
ctypes applies the same C alignment rules), and every function used has its argtypes and restype
declared so that no argument is ever passed as a default C int.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
from ctypes import (POINTER, Structure, c_char_p, c_int, c_int64, c_size_t, c_uint, c_uint32,
                    c_uint64, c_void_p)
from typing import Any, List, NoReturn, Optional, Tuple

from .errors import ThrottleError, from_errno

#: The library major version this binding was written for (throttle.h THR_VERSION_MAJOR).
VERSION_MAJOR = 0
KEY_MAX_LEN = 104  # THR_KEY_MAX_LEN
COMPOSE_MAX_MEMBERS = 8  # THR_COMPOSE_MAX_MEMBERS
BUDGET_MAX_BALANCE = (1 << 62) - 1  # THR_BUDGET_MAX_BALANCE
UINT64_MAX = (1 << 64) - 1
SONAME = "libthrottle-client.so.0"

KIND_GCRA, KIND_WINDOW, KIND_SEMAPHORE, KIND_BUDGET, KIND_BREAKER = 1, 2, 3, 4, 5
KIND_NAMES = {KIND_GCRA: "gcra", KIND_WINDOW: "window", KIND_SEMAPHORE: "semaphore",
              KIND_BUDGET: "budget", KIND_BREAKER: "breaker"}
LIMITER_SERIALIZED = 1


class Result(Structure):
    _fields_ = [("admitted", c_int), ("limit", c_uint64), ("remaining", c_uint64),
                ("retry_after_ns", c_uint64), ("reset_after_ns", c_uint64),
                ("reserved", c_uint64 * 3)]


class ReservationT(Structure):
    _fields_ = [("due_ns", c_uint64), ("wait_ns", c_uint64), ("cost", c_uint64),
                ("priv", c_uint64 * 10)]


class LeaseT(Structure):
    _fields_ = [("expires_ns", c_uint64), ("waited_ns", c_uint64), ("amount", c_uint64),
                ("priv", c_uint64 * 8)]


class WaitOptsT(Structure):
    _fields_ = [("priority", c_uint32), ("flags", c_uint32), ("timeout_ns", c_uint64),
                ("deadline_ns", c_uint64), ("reserved", c_uint64 * 2)]


class LimiterInfoT(Structure):
    _fields_ = [("kind", c_uint32), ("flags", c_uint32), ("rate", c_uint64),
                ("period_ns", c_uint64), ("burst", c_uint64), ("initial", c_uint64),
                ("leases", c_uint64), ("level", c_uint64), ("reserved", c_uint64 * 4)]


class SemStatT(Structure):
    _fields_ = [("max", c_uint64), ("held", c_uint64), ("remainder", c_int64),
                ("leases", c_uint64), ("pending", c_uint64), ("pending_units", c_uint64),
                ("longest_pending_ns", c_uint64), ("level", c_uint64),
                ("reserved", c_uint64 * 4)]


class BudgetResultT(Structure):
    _fields_ = [("balance", c_uint64), ("shortfall", c_uint64), ("waiters", c_uint64),
                ("waited_ns", c_uint64), ("reserved", c_uint64 * 4)]


class BudgetStatT(Structure):
    _fields_ = [("balance", c_uint64), ("initial", c_uint64), ("waiters", c_uint64),
                ("need", c_uint64), ("head_need", c_uint64), ("longest_pending_ns", c_uint64),
                ("granted", c_uint64), ("reserved", c_uint64 * 4)]


class MemberT(Structure):
    _fields_ = [("lim", c_void_p), ("key", c_void_p), ("len", c_size_t), ("cost", c_uint64)]


class ComposeResultT(Structure):
    _fields_ = [("admitted", c_int), ("denied", c_uint32), ("retry_after_ns", c_uint64),
                ("remaining", c_uint64 * COMPOSE_MAX_MEMBERS), ("reserved", c_uint64 * 4)]


class ComposeTicketT(Structure):
    _fields_ = [("admitted_ns", c_uint64), ("n", c_uint32), ("pad", c_uint32),
                ("priv", c_uint64 * 64)]


class GroupArgT(Structure):
    _fields_ = [("key", c_void_p), ("len", c_size_t), ("cost", c_uint64)]


class FeedbackDimT(Structure):
    _fields_ = [("has", c_uint32), ("pad", c_uint32), ("remaining", c_uint64),
                ("reset_ns", c_uint64), ("limit", c_uint64), ("window_ns", c_uint64)]


class FeedbackT(Structure):
    _fields_ = [("has", c_uint32), ("pad", c_uint32), ("retry_after_ns", c_uint64),
                ("requests", FeedbackDimT), ("tokens", FeedbackDimT), ("reserved", c_uint64 * 4)]


FEEDBACK_USE_TOKENS = 1


class BreakerTicketT(Structure):
    _fields_ = [("probe", c_uint32), ("flags", c_uint32), ("priv", c_uint64 * 6)]


class BreakerStatusT(Structure):
    _fields_ = [("state", c_uint32), ("consecutive_failures", c_uint32),
                ("probes_in_flight", c_uint32), ("half_open_successes", c_uint32),
                ("window_calls", c_uint64), ("window_failures", c_uint64),
                ("retry_after_ns", c_uint64), ("reserved", c_uint64 * 4)]


BREAKER_UNTRACKED = 1  # THR_BREAKER_UNTRACKED
BREAKER_STATES = ("closed", "open", "half-open")  # THR_BREAKER_CLOSED, _OPEN, _HALF_OPEN
OUTCOMES = {"success": 1, "failure": 2, "ignore": 3}  # THR_OUTCOME_SUCCESS, _FAILURE, _IGNORE


# The layouts throttle.h implies on x86-64 and aarch64 (LP64): a wrong field would move these.
_SIZES = {Result: 64, ReservationT: 104, LeaseT: 88, LimiterInfoT: 88, SemStatT: 96,
          BudgetResultT: 64, BudgetStatT: 88, MemberT: 32, ComposeResultT: 112,
          ComposeTicketT: 528, GroupArgT: 24, FeedbackDimT: 40, FeedbackT: 128,
          BreakerTicketT: 56, BreakerStatusT: 72}
for _cls, _size in _SIZES.items():
    assert ctypes.sizeof(_cls) == _size, (_cls.__name__, ctypes.sizeof(_cls), _size)

_vp, _pp = c_void_p, POINTER(c_void_p)
_key = (c_void_p, c_size_t)  # (const void *key, size_t len)

# name: (restype, argtypes)
_PROTOTYPES: List[Tuple[str, Any, Tuple[Any, ...]]] = [
    ("thr_version", c_int, ()),
    ("thr_strerror", c_char_p, (c_int,)),
    ("thr_arena_open", c_int, (c_char_p, c_uint, _pp)),
    ("thr_arena_close", c_int, (_vp,)),
    ("thr_limiter_open", c_int, (_vp, c_char_p, _pp)),
    ("thr_limiter_close", c_int, (_vp,)),
    ("thr_limiter_info", c_int, (_vp, POINTER(LimiterInfoT))),
    ("thr_limiter_try", c_int, (_vp,) + _key + (c_uint64, POINTER(Result))),
    ("thr_limiter_reserve", c_int, (_vp,) + _key + (c_uint64, c_uint64, POINTER(ReservationT))),
    ("thr_reservation_cancel", c_int, (POINTER(ReservationT),)),
    ("thr_limiter_acquire", c_int, (_vp,) + _key + (c_uint64, c_uint64, POINTER(Result))),
    ("thr_sem_acquire", c_int,
     (_vp,) + _key + (c_uint32, c_uint64, c_uint64, POINTER(LeaseT))),
    ("thr_sem_acquire_opts", c_int,
     (_vp,) + _key + (c_uint32, c_uint64, POINTER(WaitOptsT), POINTER(LeaseT))),
    ("thr_sem_heartbeat", c_int, (POINTER(LeaseT), c_uint64)),
    ("thr_sem_release", c_int, (POINTER(LeaseT),)),
    ("thr_sem_stat", c_int, (_vp,) + _key + (POINTER(SemStatT),)),
    ("thr_budget_spend", c_int, (_vp,) + _key + (c_uint64, c_uint64, POINTER(BudgetResultT))),
    ("thr_budget_spend_opts", c_int,
     (_vp,) + _key + (c_uint64, POINTER(WaitOptsT), POINTER(BudgetResultT))),
    ("thr_budget_add", c_int, (_vp,) + _key + (c_uint64, POINTER(BudgetResultT))),
    ("thr_budget_stat", c_int, (_vp,) + _key + (POINTER(BudgetStatT),)),
    ("thr_compose_try", c_int, (POINTER(MemberT), c_size_t, POINTER(ComposeResultT))),
    ("thr_compose_acquire", c_int, (POINTER(MemberT), c_size_t, c_uint64,
                                    POINTER(ComposeResultT), POINTER(ComposeTicketT))),
    ("thr_group_open", c_int, (_vp, c_char_p, _pp)),
    ("thr_group_size", c_int, (_vp,)),
    ("thr_group_try", c_int, (_vp, POINTER(GroupArgT), POINTER(ComposeResultT))),
    ("thr_group_acquire", c_int, (_vp, POINTER(GroupArgT), c_uint64, POINTER(ComposeResultT),
                                  POINTER(ComposeTicketT))),
    ("thr_group_close", c_int, (_vp,)),
    ("thr_limiter_hold", c_int, (_vp,) + _key + (c_uint64, POINTER(Result))),
    ("thr_limiter_cap", c_int, (_vp,) + _key + (c_uint64, POINTER(Result))),
    ("thr_feedback_init", None, (POINTER(FeedbackT),)),
    ("thr_feedback_header", c_int, (POINTER(FeedbackT), c_char_p, c_size_t, c_char_p, c_size_t,
                                    c_int64)),
    ("thr_feedback_apply", c_int, (_vp,) + _key + (POINTER(FeedbackT), c_uint, POINTER(Result))),
    ("thr_limiter_overload", c_int, (_vp, c_uint64)),
    ("thr_breaker_allow", c_int,
     (_vp,) + _key + (POINTER(BreakerTicketT), POINTER(BreakerStatusT))),
    ("thr_breaker_report", c_int, (_vp, POINTER(BreakerTicketT), c_uint32)),
    ("thr_breaker_stat", c_int, (_vp,) + _key + (POINTER(BreakerStatusT),)),
    ("thr_clock_now", c_int, (_vp, POINTER(c_uint64))),
    ("thr_clock_advance", c_int, (_vp, c_uint64)),
]


def _pkgconfig_libdir() -> Optional[str]:
    try:
        out = subprocess.run(["pkg-config", "--variable=libdir", "throttle-client"],
                             capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    libdir = out.stdout.strip()
    return libdir if out.returncode == 0 and libdir else None


def _candidates() -> List[Tuple[str, Optional[str]]]:
    """(how it was found, path or None when that way found nothing), in the order tried."""
    env = os.environ.get("THROTTLE_LIBRARY")
    if env:  # an explicit choice is the only one tried: a wrong path must not fall through
        return [("THROTTLE_LIBRARY", env)]
    found = ctypes.util.find_library("throttle-client")
    libdir = _pkgconfig_libdir()
    return [("ctypes.util.find_library('throttle-client')", found),
            ("pkg-config --variable=libdir throttle-client",
             os.path.join(libdir, SONAME) if libdir else None)]


def _load() -> ctypes.CDLL:
    tried = []
    for how, path in _candidates():
        if path is None:
            tried.append("%s: nothing found" % how)
            continue
        try:
            return ctypes.CDLL(path, use_errno=False)
        except OSError as e:
            tried.append("%s: %s: %s" % (how, path, e))
    raise ImportError("throttle: cannot load libthrottle-client (%s). Tried: %s" %
                      (SONAME, "; ".join(tried)))


def _declare(lib: ctypes.CDLL) -> None:
    for name, restype, argtypes in _PROTOTYPES:
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = list(argtypes)


lib = _load()
_declare(lib)

_version = lib.thr_version()
if (_version >> 16) != VERSION_MAJOR:
    raise ImportError("throttle: libthrottle-client is version %d.%d.%d; this binding was written "
                      "for major %d" % (_version >> 16, (_version >> 8) & 0xFF, _version & 0xFF,
                                        VERSION_MAJOR))


def version() -> Tuple[int, int, int]:
    """The loaded library's (major, minor, patch)."""
    return (_version >> 16, (_version >> 8) & 0xFF, _version & 0xFF)


def strerror(rc: int) -> str:
    """thr_strerror's text for a -errno."""
    text: Optional[bytes] = lib.thr_strerror(-abs(rc))
    return text.decode("utf-8", "replace") if text else "error %d" % rc


def error(rc: int) -> ThrottleError:
    """The exception for a negative return RC, with the library's message."""
    return from_errno(rc, strerror(rc))


def check(rc: int) -> int:
    """RC when >= 0; raise the exception for a -errno otherwise."""
    if rc < 0:
        raise error(rc)
    return rc


def fail(rc: int) -> NoReturn:
    raise error(rc)
