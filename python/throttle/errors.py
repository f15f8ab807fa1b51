"""Exceptions raised by the throttle package, one class per meaning of the library's -errno.

Both the shared-memory binding and the HTTP client raise these: an error from libthrottle-client
(a negative errno) or from the daemon's HTTP API (a JSON body naming the errno) becomes the same
class, with the library's message (thr_strerror) as its text.
"""
from __future__ import annotations

import errno as _errno
from typing import Any, Dict, Optional, Tuple, Type


class ThrottleError(Exception):
    """Any error of the library or the daemon. ``errno`` is the positive errno value (0 if none),
    ``message`` the library's text for it (thr_strerror, or the daemon's)."""

    def __init__(self, err: int, message: str = "") -> None:
        text = message or (_errno.errorcode.get(abs(err), "error %d" % abs(err)))
        # set after the base's __init__: OSError's (NotPermitted, Timeout) resets errno to None
        super().__init__(text)
        self.errno = abs(err)
        self.message = text

    def __reduce__(self) -> Tuple[Any, Tuple[int, str], Dict[str, Any]]:
        # BaseException's reduce re-calls cls(*self.args) = cls(text): the errno would be lost
        # and __init__ fails (abs(str)). Pickle (errno, message) and the extra attributes
        # (.result, .wait_ns, .retry_after_ns, .denied, .status): multiprocessing and
        # concurrent.futures send exceptions this way, and copy.copy() uses it too.
        return (self.__class__, (self.errno, self.message), dict(self.__dict__))


class InvalidArgument(ThrottleError, ValueError):
    """EINVAL: an argument the call cannot take (an empty key, cost 0 where it means nothing)."""


class CostTooHigh(ThrottleError, ValueError):
    """ERANGE: the cost exceeds the limiter's burst (max, N): never admissible."""


class KeyTooLong(ThrottleError, ValueError):
    """ENAMETOOLONG: the key is longer than the library's maximum (104 bytes)."""


class NotFound(ThrottleError, LookupError):
    """ENOENT: no such arena, limiter, group, lease or peer lock."""


class LimiterRemoved(ThrottleError):
    """EIDRM: the limiter was removed by a reload of the daemon's config."""


class NotSupported(ThrottleError):
    """EOPNOTSUPP: the call does not fit the limiter's kind."""


class Timeout(ThrottleError, TimeoutError):
    """ETIMEDOUT: not granted within the timeout; nothing was consumed."""


class WouldBlock(ThrottleError):
    """EAGAIN: does not fit now (a try), or not due within the allowed wait (a reserve), or a
    circuit breaker refused the call (``.status``, a BreakerStatus; ``.retry_after_ns``)."""


class TableFull(ThrottleError):
    """ENOSPC: a new key and no room in the limiter's table."""


class LeasesExhausted(ThrottleError):
    """ENOBUFS: every lease record of the key is in use (leases_per_key)."""


class Expired(ThrottleError):
    """EKEYEXPIRED: the lease or peer expired (or its holder was found gone); nothing is held."""


class Deadlock(ThrottleError):
    """EDEADLK: a lock hierarchy violation, or this thread holds the key already."""


class Busy(ThrottleError):
    """EBUSY / EALREADY: call again (a nested call, or another thread of the peer is acquiring),
    or a semaphore key's queue is full (max_waiters) and its on_queue_full refused the lease."""


class Dropped(ThrottleError):
    """ECANCELED: a queued lease was dropped from its key's full queue for another (on_queue_full
    = drop_oldest or drop_lowest); nothing is held."""


class TooManyThreads(ThrottleError):
    """EUSERS: no free reader record for this thread ([arena] max_readers)."""


class Corrupt(ThrottleError):
    """EBADMSG / EPROTONOSUPPORT: the arena or a record in it is not valid for this library."""


class NotPermitted(ThrottleError, PermissionError):
    """EACCES / EPERM: the arena's mode, or another process's lease or peer."""


class Overflow(ThrottleError, OverflowError):
    """EOVERFLOW: a budget balance would pass its maximum; nothing was added."""


class Exists(ThrottleError):
    """EEXIST: the peer holds the key with another count."""


class WrongNamespace(ThrottleError):
    """EXDEV / ESTALE: the arena belongs to another pid or time namespace, or another boot."""


class Unauthorized(ThrottleError):
    """The daemon's HTTP API refused the request's bearer token (HTTP 401)."""


class ServerError(ThrottleError):
    """The daemon's HTTP API answered something else than a decision or a known error."""


class TransportError(ThrottleError, ConnectionError):
    """HTTP only: no usable answer from the daemon (connection refused or lost, socket timeout,
    a malformed HTTP answer). ``errno`` is the socket's errno when there is one, else 0. For a
    request that was sent, whether the daemon applied it is unknown."""


_BY_ERRNO: Dict[int, Type[ThrottleError]] = {
    _errno.EINVAL: InvalidArgument,
    _errno.ERANGE: CostTooHigh,
    _errno.ENAMETOOLONG: KeyTooLong,
    _errno.ENOENT: NotFound,
    _errno.EIDRM: LimiterRemoved,
    _errno.EOPNOTSUPP: NotSupported,
    _errno.ETIMEDOUT: Timeout,
    _errno.EAGAIN: WouldBlock,
    _errno.ENOSPC: TableFull,
    _errno.ENOBUFS: LeasesExhausted,
    _errno.EKEYEXPIRED: Expired,
    _errno.EDEADLK: Deadlock,
    _errno.EBUSY: Busy,
    _errno.EALREADY: Busy,
    _errno.ECANCELED: Dropped,
    _errno.EUSERS: TooManyThreads,
    _errno.EBADMSG: Corrupt,
    _errno.EPROTONOSUPPORT: Corrupt,
    _errno.EACCES: NotPermitted,
    _errno.EPERM: NotPermitted,
    _errno.EOVERFLOW: Overflow,
    _errno.EEXIST: Exists,
    _errno.EXDEV: WrongNamespace,
    _errno.ESTALE: WrongNamespace,
}


def from_errno(err: int, message: Optional[str] = None) -> ThrottleError:
    """The exception for ERR (negative as the library returns it, or positive), with MESSAGE."""
    cls = _BY_ERRNO.get(abs(err), ThrottleError)
    return cls(abs(err), message or "")


def errno_name(err: int) -> str:
    """'ERANGE' for -34 or 34; 'E<n>' for an unknown value."""
    return _errno.errorcode.get(abs(err), "E%d" % abs(err))


def from_name(name: str, message: Optional[str] = None) -> ThrottleError:
    """The exception for an errno NAME ('ERANGE'), as the HTTP API's JSON errors give it."""
    value = getattr(_errno, name, None)
    if not isinstance(value, int):
        return ServerError(0, message or name)
    return from_errno(value, message)
