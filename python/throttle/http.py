"""throttle.http: the daemon's HTTP API (throttled's `http =` listener) as a throttle source.

For processes that cannot map the arena (another host's container, a language without the C
library): every call is one HTTP request that the daemon decides in the arena for us, so the
limits are the same ones the shared-memory clients share.

Standard library only. Connections: one keep-alive ``http.client`` connection per thread and per
process. A thread's connection is found in a ``threading.local`` together with the pid that opened
it; after ``os.fork()`` the child sees another pid and opens its own, never writing on the
parent's socket (two processes writing requests on one TCP stream would interleave them and read
each other's answers). ``unix:/path`` URLs speak HTTP over the daemon's Unix socket.

Errors: a JSON error body ``{"error": "ERANGE", "message": ...}`` becomes
``throttle.errors.from_name(error, message)``; 401 becomes ``Unauthorized``; an answer that is not
the JSON the contract promises becomes ``ServerError`` whose errno is the HTTP status.

Times: requests carry ``timeout_ms`` / ``ttl_ms`` (whole milliseconds, rounded up so that a
positive timeout never becomes a try); ``None`` means "without bound", which over HTTP is the
server's cap on a wait. ``Lease.expires_ns`` is on this process's ``time.monotonic_ns()`` clock
(the daemon answers ``expires_in_ms``; the arena's clock is not visible over HTTP).

Async forms run the blocking request in a worker thread (``asyncio.to_thread``), which has its
own connection: the event loop never waits on a socket.
"""
from __future__ import annotations

import asyncio
import http.client
import json
import math
import os
import select
import socket
import threading
import time
import urllib.parse
import weakref
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from .breaker import BreakerTicket
from .errors import (InvalidArgument, ServerError, ThrottleError, TransportError, Unauthorized,
                     WouldBlock, from_name)
from .results import (BreakerStatus, BudgetResult, BudgetStat, ComposeResult, Decision, Held,
                      LimiterInfo, SemStat)

__all__ = ["Client", "Limiter", "Lease", "Group", "lock"]

Key = Union[str, bytes]
Member = Tuple[Union["Limiter", str], Key, int]

_RETRYABLE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)
_IDEMPOTENT = ("GET", "HEAD")  # resent after a lost answer; a POST or DELETE never is
_MAX_BODY = 1 << 20  # the largest answer read: every answer of the API is far smaller
_SLACK_S = 5.0  # socket timeout beyond a request's own wait, for the answer to travel
# timeout None: a day, which the server caps at its http_max_wait_ms (a minute by default);
# a missing timeout_ms would mean the route's default, which is a try for leases and spends.
_UNBOUNDED_MS = 86_400_000


_clients: "weakref.WeakSet[Client]" = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # a thread of the parent may have held a Client's lock (its first request, close()) at the
    # fork: nobody in the child would ever release that copy
    for c in list(_clients):
        c._lock = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


class _UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over a Unix stream socket (``unix:/path`` URLs)."""

    def __init__(self, path: str, timeout: Optional[float]) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.settimeout(self.timeout)
            s.connect(self._path)
        except BaseException:
            s.close()
            raise
        self.sock = s


def _key(key: Key) -> str:
    """KEY as the JSON string the API takes; lengths are the server's to judge (400 + message)."""
    if isinstance(key, str):
        return key
    if isinstance(key, (bytes, bytearray, memoryview)):
        try:
            return bytes(key).decode("utf-8")
        except UnicodeDecodeError as e:
            raise InvalidArgument(22, "key: %r is not UTF-8 (the HTTP API takes UTF-8 keys): %s"
                                  % (bytes(key)[:32], e)) from None
    raise InvalidArgument(22, "key: expected str or bytes, got %s" % type(key).__name__)


def _count(what: str, value: Any) -> int:
    """An int argument (cost, amount): bools and floats are refused, not rounded."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(22, "%s: expected an int, got %r" % (what, value))
    if value < 0:
        raise InvalidArgument(22, "%s: %d is negative" % (what, value))
    return value


def _ms(what: str, seconds: Optional[float]) -> Optional[int]:
    """Seconds (float) as whole ms, rounded up; None stays None (no bound)."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise InvalidArgument(22, "%s: expected seconds (a number), got %r" % (what, seconds))
    if math.isnan(seconds) or seconds < 0:
        raise InvalidArgument(22, "%s: %r is not a number of seconds >= 0" % (what, seconds))
    if math.isinf(seconds) or seconds * 1000 >= _UNBOUNDED_MS:
        return None  # as throttle.Arena takes it: without bound (the server's cap)
    return int(math.ceil(seconds * 1000))


def _int(body: Dict[str, Any], field: str) -> int:
    v = body.get(field)
    if isinstance(v, bool) or not isinstance(v, int):
        raise ServerError(0, "the daemon's answer has no integer %r: %.200r" % (field, body))
    return v


def _bool(body: Dict[str, Any], field: str) -> bool:
    v = body.get(field)
    if not isinstance(v, bool):
        raise ServerError(0, "the daemon's answer has no boolean %r: %.200r" % (field, body))
    return v


def _str(body: Dict[str, Any], field: str) -> str:
    v = body.get(field)
    if not isinstance(v, str):
        raise ServerError(0, "the daemon's answer has no string %r: %.200r" % (field, body))
    return v


def _decision(b: Dict[str, Any]) -> Decision:
    return Decision(_bool(b, "admitted"), _int(b, "limit"), _int(b, "remaining"),
                    _int(b, "retry_after_ns"), _int(b, "reset_after_ns"))


def _held(b: Dict[str, Any]) -> Held:
    return Held(_bool(b, "admitted"), _int(b, "limit"), _int(b, "remaining"),
                _int(b, "retry_after_ns"), _int(b, "reset_after_ns"), _bool(b, "shortened"))


def _info(b: Dict[str, Any]) -> LimiterInfo:
    return LimiterInfo(_str(b, "name"), _str(b, "kind"), _bool(b, "serialized"), _int(b, "rate"),
                       _int(b, "period_ns"), _int(b, "burst"), _int(b, "initial"),
                       _int(b, "leases"), _int(b, "level"))


def _budget_result(b: Dict[str, Any]) -> BudgetResult:
    return BudgetResult(_int(b, "balance"), _int(b, "shortfall"), _int(b, "waiters"),
                        _int(b, "waited_ns"))


def _breaker_status(b: Dict[str, Any]) -> BreakerStatus:
    return BreakerStatus(_str(b, "state"), *(_int(b, f) for f in (
        "consecutive_failures", "probes_in_flight", "half_open_successes", "window_calls",
        "window_failures", "retry_after_ns")))


def _compose(b: Dict[str, Any]) -> ComposeResult:
    rem = b.get("remaining")
    if not isinstance(rem, list) or not all(isinstance(x, int) and not isinstance(x, bool)
                                            for x in rem):
        raise ServerError(0, "the daemon's answer has no integer list 'remaining': %.200r" % b)
    return ComposeResult(_bool(b, "admitted"), _int(b, "denied"), _int(b, "retry_after_ns"),
                         tuple(rem))


def _closed_by_peer(sock: socket.socket) -> bool:
    """An idle keep-alive socket that is readable has been closed (or sent junk): not reusable."""
    try:
        r, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(r)


def _error(status: int, raw: bytes) -> ThrottleError:
    """The exception for a non-2xx answer (see the module's comment)."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        body = None
    if not isinstance(body, dict) or not isinstance(body.get("error"), str):
        text = raw[:200].decode("utf-8", "replace")
        if status == 401:
            return Unauthorized(status, "HTTP 401: %s" % text)
        return ServerError(status, "HTTP %d with an unexpected body: %r" % (status, text))
    msg = body.get("message")
    msg = msg if isinstance(msg, str) else body["error"]
    if status == 401:
        return Unauthorized(13, msg)  # EACCES
    err = from_name(body["error"], msg)
    # What the daemon adds to an error: a budget's result (its shortfall), a breaker's status,
    # a wait's retry_after_ns, a composed acquire's denied member.
    if "shortfall" in body:
        try:
            err.result = _budget_result(body)  # type: ignore[attr-defined]
        except ServerError:
            pass
    if "state" in body:
        try:
            err.status = _breaker_status(body)  # type: ignore[attr-defined]
        except ServerError:
            pass
    for field in ("retry_after_ns", "denied"):
        v = body.get(field)
        if isinstance(v, int) and not isinstance(v, bool):
            setattr(err, field, v)
    return err


class Client:
    """A throttle source over the daemon's HTTP API.

    URL: ``http://HOST:PORT`` (``HOST:PORT`` alone also works) or ``unix:/path/to/socket``.
    TOKEN: the bearer token when the daemon has ``http_token_file``. TIMEOUT: seconds a request
    may take on the socket besides the wait it asks the server for.
    Thread-safe and fork-safe (one connection per thread per process).
    """

    def __init__(self, url: str, token: Optional[str] = None, timeout: float = 30.0) -> None:
        self.url = url
        if timeout is not None and (isinstance(timeout, bool) or
                                    not isinstance(timeout, (int, float)) or
                                    not 0 < timeout < 86_400 * 365):
            raise InvalidArgument(22, "timeout: expected seconds > 0 or None, got %r" % (timeout,))
        self.timeout = timeout
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token is not None:
            if not isinstance(token, str) or not token or "\n" in token or "\r" in token:
                raise InvalidArgument(22, "token: expected a one-line non-empty str")
            self._headers["Authorization"] = "Bearer " + token
        if url.startswith("unix:"):
            self._unix: Optional[str] = url[len("unix:"):]
            if not self._unix:
                raise InvalidArgument(22, "url %r: no socket path after unix:" % url)
            self._host, self._port = "localhost", 0
        else:
            self._unix = None
            parsed = urllib.parse.urlsplit(url if "//" in url else "http://" + url)
            if parsed.scheme != "http" or not parsed.hostname:
                raise InvalidArgument(22, "url %r: expected http://HOST:PORT or unix:/path" % url)
            self._host, self._port = parsed.hostname, parsed.port or 80
        self._local = threading.local()
        self._lock = threading.Lock()
        # Every thread's connection, for close(); weak, so that a thread's connection goes
        # (and its socket closes) when the thread ends.
        self._conns: "weakref.WeakKeyDictionary[http.client.HTTPConnection, int]" = \
            weakref.WeakKeyDictionary()
        _clients.add(self)

    # ------------------------------------------------------------ connections

    def _conn(self) -> Tuple[http.client.HTTPConnection, bool]:
        """This thread's connection in this process, and whether it was used before."""
        pid = os.getpid()
        c = getattr(self._local, "conn", None)
        if c is not None and self._local.pid == pid:
            return c, True
        # New thread, or a fork child holding its parent's connection object: open our own.
        # The parent's socket object is dropped without close(): closing it here would close
        # only our copy of the descriptor, but a GC finalizer must not write on it either.
        if self._unix is not None:
            c = _UnixConnection(self._unix, self.timeout)
        else:
            c = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        self._local.conn, self._local.pid = c, pid
        with self._lock:
            self._conns[c] = pid
        return c, False

    def _request(self, method: str, path: str, body: Optional[Dict[str, Any]] = None,
                 wait_ms: Optional[int] = 0) -> Tuple[int, Dict[str, Any]]:
        """One request; the decoded JSON object of a 2xx answer, or raise the mapped error.
        WAIT_MS: how long the server may wait before answering (None: its cap)."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        if wait_ms is None or self.timeout is None:
            sock_timeout: Optional[float] = None
        else:
            sock_timeout = self.timeout + wait_ms / 1000.0 + (_SLACK_S if wait_ms else 0.0)
        for attempt in (0, 1):
            c, reused = self._conn()
            c.timeout = sock_timeout
            if reused and c.sock is not None and _closed_by_peer(c.sock):
                c.close()  # closed while idle (FIN seen): http.client reconnects on request
                reused = False
            try:
                if c.sock is not None:
                    c.sock.settimeout(sock_timeout)
                c.request(method, path, body=data, headers=self._headers)
                r = c.getresponse()
                status = r.status
                if r.length is not None and r.length > _MAX_BODY:  # declared too large: unread
                    c.close()
                    raise ServerError(status, "HTTP %d with an answer of %d bytes, over %d"
                                      % (status, r.length, _MAX_BODY))
                raw = r.read(_MAX_BODY + 1)
                if r.length:  # Content-Length promised more than came (read(n) does not raise)
                    raise http.client.IncompleteRead(raw, r.length)
                if len(raw) > _MAX_BODY:
                    c.close()
                    raise ServerError(status, "HTTP %d with an answer over %d bytes"
                                      % (status, _MAX_BODY))
                if r.will_close:
                    c.close()
                break
            except _RETRYABLE as e:
                # The server closed a keep-alive connection just as we sent: retry once on a
                # fresh one, but only a request that may be applied twice. A POST or DELETE
                # may have been applied already (the answer alone was lost): never resend it.
                c.close()
                if attempt or not reused or method not in _IDEMPOTENT:
                    raise TransportError(e.errno or 0, "%s %s: connection lost before the "
                                         "answer (%s); the daemon may have applied it"
                                         % (method, path, e or type(e).__name__)) from e
            except ThrottleError:
                raise
            except (OSError, http.client.HTTPException) as e:
                c.close()  # never reuse a connection left mid-answer
                raise TransportError(getattr(e, "errno", None) or 0, "%s %s: %s: %s"
                                     % (method, path, type(e).__name__, e)) from e
            except BaseException:
                c.close()  # never reuse a connection left mid-answer
                raise
        if not 200 <= status < 300:
            raise _error(status, raw)
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            obj = None
        if not isinstance(obj, dict):
            raise ServerError(status, "HTTP %d with a body that is not a JSON object: %r"
                              % (status, raw[:200].decode("utf-8", "replace")))
        return status, obj

    def close(self) -> None:
        """Close this process's connections (another thread's next call reopens its own)."""
        pid = os.getpid()
        with self._lock:
            mine = [c for c, p in list(self._conns.items()) if p == pid]
            self._conns = weakref.WeakKeyDictionary()
        for c in mine:
            c.close()
        self._local = threading.local()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ the source

    def limiter(self, name: str) -> "Limiter":
        """The limiter NAME; raises NotFound (404) if the daemon has none by that name."""
        lim = Limiter(self, name)
        lim.info  # one GET: NotFound now rather than at the first decision
        return lim

    def limiters(self) -> List[LimiterInfo]:
        """Every limiter of the daemon's arena (GET /v1/limiters)."""
        _, b = self._request("GET", "/v1/limiters")
        items = b.get("limiters")
        if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
            raise ServerError(0, "the daemon's answer has no list 'limiters': %.200r" % b)
        return [_info(x) for x in items]

    def group(self, name: str) -> "Group":
        """The named group NAME of the daemon's config (checked at its first call)."""
        return Group(self, name)

    def compose_try(self, members: Sequence[Member]) -> ComposeResult:
        """Decide MEMBERS ((limiter or its name, key, cost), ...) together, all or none."""
        _, b = self._request("POST", "/v1/compose/try", {"members": _members(members)})
        return _compose(b)

    def compose_acquire(self, members: Sequence[Member],
                        timeout: Optional[float] = None) -> ComposeResult:
        """compose_try that waits up to TIMEOUT seconds; raises Timeout."""
        ms = _ms("timeout", timeout)
        body: Dict[str, Any] = {"members": _members(members)}
        body["timeout_ms"] = _UNBOUNDED_MS if ms is None else ms
        _, b = self._request("POST", "/v1/compose/acquire", body, ms)
        return _compose(b)

    async def compose_acquire_async(self, members: Sequence[Member],
                                    timeout: Optional[float] = None) -> ComposeResult:
        return await asyncio.to_thread(self.compose_acquire, members, timeout)

    def _path(self, *parts: str) -> str:
        return "/v1/" + "/".join(urllib.parse.quote(p, safe="") for p in parts)


def _members(members: Iterable[Member]) -> List[Dict[str, Any]]:
    out = []
    for i, m in enumerate(members):
        if not isinstance(m, (tuple, list)) or len(m) != 3:
            raise InvalidArgument(22, "member %d: expected (limiter, key, cost), got %r" % (i, m))
        lim, key, cost = m
        name = lim.name if isinstance(lim, Limiter) else lim
        if not isinstance(name, str):
            raise InvalidArgument(22, "member %d: limiter must be a Limiter or its name" % i)
        out.append({"limiter": name, "key": _key(key), "cost": _count("cost", cost)})
    return out


class Limiter:
    """One limiter of a Client; the calls its kind takes (others answer NotSupported, 409)."""

    def __init__(self, client: Client, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgument(22, "limiter name: expected a non-empty str, got %r" % (name,))
        self.client = client
        self.name = name

    def __repr__(self) -> str:
        return "Limiter(%r)" % self.name

    @property
    def info(self) -> LimiterInfo:
        """Its kind and configuration now (GET /v1/limiters/NAME)."""
        _, b = self.client._request("GET", self.client._path("limiters", self.name))
        return _info(b)

    def _post(self, op: str, body: Dict[str, Any],
              wait_ms: Optional[int] = 0) -> Tuple[int, Dict[str, Any]]:
        return self.client._request("POST", self.client._path("limiters", self.name, op), body,
                                    wait_ms)

    def _get(self, op: str, key: Key) -> Dict[str, Any]:
        q = urllib.parse.urlencode({"key": _key(key)}, quote_via=urllib.parse.quote)
        path = self.client._path("limiters", self.name, op) + "?" + q
        return self.client._request("GET", path)[1]

    # ------------------------------------------------------------ rate kinds

    def try_acquire(self, key: Key, cost: int = 1) -> Decision:
        """Decide now; a denial is a Decision with admitted False."""
        _, b = self._post("try", {"key": _key(key), "cost": _count("cost", cost)})
        return _decision(b)

    def acquire(self, key: Key, cost: int = 1, timeout: Optional[float] = None) -> Decision:
        """Wait until COST fits, up to TIMEOUT seconds (None: the server's cap); raises Timeout."""
        ms = _ms("timeout", timeout)
        body: Dict[str, Any] = {"key": _key(key), "cost": _count("cost", cost)}
        body["timeout_ms"] = _UNBOUNDED_MS if ms is None else ms
        return _decision(self._post("acquire", body, ms)[1])

    async def acquire_async(self, key: Key, cost: int = 1,
                            timeout: Optional[float] = None) -> Decision:
        return await asyncio.to_thread(self.acquire, key, cost, timeout)

    def overload(self, count: int = 1) -> None:
        """COUNT calls the downstream refused for overload (POST .../overload)."""
        self._post("overload", {"count": _count("count", count)})

    # ------------------------------------------------------------ a downstream's word (gcra)

    def hold(self, key: Key, delay: float) -> Held:
        """Nothing admitted on KEY for DELAY seconds (POST .../hold)."""
        ms = _ms("delay", delay)
        body = {"key": _key(key), "delay_ms": _UNBOUNDED_MS if ms is None else ms}
        return _held(self._post("hold", body)[1])

    def cap(self, key: Key, tokens: int) -> Held:
        """At most TOKENS left on KEY now (POST .../cap)."""
        return _held(self._post("cap", {"key": _key(key), "tokens": _count("tokens", tokens)})[1])

    def apply_feedback(self, key: Key, headers: Any, tokens: bool = False) -> Held:
        """A response's HEADERS (a mapping or pairs) applied to KEY (POST .../feedback)."""
        items = headers.items() if hasattr(headers, "items") else headers
        hs: Dict[str, str] = {}
        for pair in items:
            name, value = pair
            if not isinstance(name, str) or not isinstance(value, str):
                raise InvalidArgument(22, "headers: names and values are str, got %r" % (pair,))
            hs[name] = value
        body = {"key": _key(key), "headers": hs, "tokens": bool(tokens)}
        return _held(self._post("feedback", body)[1])

    # ------------------------------------------------------------ semaphores

    def lease(self, key: Key, amount: int = 1, ttl: float = 60.0,
              timeout: Optional[float] = None, priority: int = 0) -> "Lease":
        """Take AMOUNT units of KEY for TTL seconds, waiting up to TIMEOUT (0: try, raises
        WouldBlock; None: the server's cap), queued in class PRIORITY (0-7, higher first).
        Use as ``with limiter.lease(...) as l:``."""
        ttl_ms = _ms("ttl", ttl)
        if ttl_ms is None or ttl_ms == 0:
            raise InvalidArgument(22, "ttl: a lease needs a positive ttl, got %r" % (ttl,))
        ms = _ms("timeout", timeout)
        body: Dict[str, Any] = {"key": _key(key), "amount": _count("amount", amount),
                                "ttl_ms": ttl_ms}
        body["timeout_ms"] = _UNBOUNDED_MS if ms is None else ms
        if priority:
            body["priority"] = _count("priority", priority)
        _, b = self._post("leases", body, ms)
        return Lease(self, _str(b, "lease"), _int(b, "amount"), _int(b, "expires_in_ms"),
                     _int(b, "waited_ns"), ttl)

    def lease_async(self, key: Key, amount: int = 1, ttl: float = 60.0,
                    timeout: Optional[float] = None) -> "_AsyncLease":
        """``async with limiter.lease_async(...) as l:`` (or ``l = await ...``)."""
        return _AsyncLease(self, key, amount, ttl, timeout)

    def sem_stat(self, key: Key) -> SemStat:
        b = self._get("sem", key)
        return SemStat(*(_int(b, f) for f in ("max", "held", "remainder", "leases", "pending",
                                              "pending_units", "longest_pending_ns", "level")))

    # ------------------------------------------------------------ budgets

    def spend(self, key: Key, cost: int, timeout: Optional[float] = 0,
              priority: int = 0) -> BudgetResult:
        """Spend COST of KEY's balance, waiting up to TIMEOUT for adds (0: try), queued in class
        PRIORITY (0-7, higher first). A short budget raises WouldBlock (try) with ``.result``
        giving the shortfall, or Timeout."""
        ms = _ms("timeout", timeout)
        body: Dict[str, Any] = {"key": _key(key), "cost": _count("cost", cost)}
        body["timeout_ms"] = _UNBOUNDED_MS if ms is None else ms
        if priority:
            body["priority"] = _count("priority", priority)
        return _budget_result(self._post("spend", body, ms)[1])

    async def spend_async(self, key: Key, cost: int,
                          timeout: Optional[float] = 0) -> BudgetResult:
        return await asyncio.to_thread(self.spend, key, cost, timeout)

    def add(self, key: Key, amount: int) -> BudgetResult:
        _, b = self._post("add", {"key": _key(key), "amount": _count("amount", amount)})
        return _budget_result(b)

    def budget_stat(self, key: Key) -> BudgetStat:
        b = self._get("budget", key)
        return BudgetStat(*(_int(b, f) for f in ("balance", "initial", "waiters", "need",
                                                 "head_need", "longest_pending_ns", "granted")))

    # ------------------------------------------------------------ circuit breakers

    def breaker_allow(self, key: Key, ttl: Optional[float] = None) -> BreakerTicket:
        """May a call to KEY's downstream go ahead (POST .../breaker/allow)? A BreakerTicket
        (the daemon holds the ticket for TTL seconds, None: its default, 60 s; then it reports
        it "ignore"), or WouldBlock with .status and .retry_after_ns when the breaker refuses."""
        body: Dict[str, Any] = {"key": _key(key)}
        if ttl is not None:
            ttl_ms = _ms("ttl", ttl)
            if ttl_ms == 0:
                raise InvalidArgument(22, "ttl: a ticket needs a positive ttl, got %r" % (ttl,))
            body["ttl_ms"] = _UNBOUNDED_MS if ttl_ms is None else ttl_ms
        path = self.client._path("limiters", self.name, "breaker", "allow")
        _, b = self.client._request("POST", path, body)
        return BreakerTicket(self, key, _bool(b, "probe"), _bool(b, "untracked"),
                             _breaker_status(b), _str(b, "ticket"),
                             time.monotonic_ns() + _int(b, "expires_in_ms") * 1_000_000)

    def breaker(self, key: Key, ttl: Optional[float] = None) -> BreakerTicket:
        """breaker_allow, for ``with lim.breaker(key) as call:`` (see throttle.breaker)."""
        return self.breaker_allow(key, ttl)

    def breaker_report(self, ticket: BreakerTicket, outcome: str) -> bool:
        """Report the OUTCOME ("success", "failure", "ignore") of TICKET's call, once (POST
        .../breaker/report). True: counted; False: ignored. NotFound: the daemon forgot the
        ticket (past its ttl: it reported it "ignore")."""
        if not isinstance(ticket, BreakerTicket):
            raise InvalidArgument(22, "ticket: expected a BreakerTicket, not %s"
                                  % type(ticket).__name__)

        def call(ticket_id: str, outcome: str) -> bool:
            path = self.client._path("limiters", self.name, "breaker", "report")
            _, b = self.client._request("POST", path, {"ticket": ticket_id, "outcome": outcome})
            ticket.status = _breaker_status(b)
            return _bool(b, "counted")

        return ticket._spend(self, outcome, call)

    def breaker_stat(self, key: Key) -> BreakerStatus:
        """KEY's breaker state now (GET .../breaker?key=K; a key not there is closed)."""
        return _breaker_status(self._get("breaker", key))


class Lease:
    """A lease the daemon holds for us on a semaphore key; released by ``release()`` or when
    its ``with`` block ends (or by the daemon when it expires without a heartbeat)."""

    def __init__(self, limiter: Limiter, lease_id: str, amount: int, expires_in_ms: int,
                 waited_ns: int, ttl: float) -> None:
        self.limiter = limiter
        self.id = lease_id
        self.amount = amount
        self.waited_ns = waited_ns
        self.ttl = ttl
        self.expires_ns = time.monotonic_ns() + expires_in_ms * 1_000_000
        self.released = False

    def __repr__(self) -> str:
        return "Lease(%r, %r, amount=%d)" % (self.limiter.name, self.id, self.amount)

    def _path(self, *more: str) -> str:
        return self.limiter.client._path("leases", self.id, *more)

    def heartbeat(self, ttl: Optional[float] = None) -> None:
        """Extend it: it now expires TTL seconds from now (None: its last ttl, as the daemon
        keeps it). Raises Expired (410) if the daemon reclaimed it already."""
        body: Dict[str, Any] = {}
        if ttl is not None:
            ttl_ms = _ms("ttl", ttl)
            if not ttl_ms:
                raise InvalidArgument(22, "ttl: a heartbeat needs a positive ttl, got %r" % (ttl,))
            body["ttl_ms"] = ttl_ms
            self.ttl = ttl
        _, b = self.limiter.client._request("POST", self._path("heartbeat"), body)
        self.expires_ns = time.monotonic_ns() + _int(b, "expires_in_ms") * 1_000_000

    def release(self) -> None:
        """Give it back; a second call does nothing. Raises Expired (410) if it had expired."""
        if self.released:
            return
        try:
            self.limiter.client._request("DELETE", self._path())
        except TransportError:
            raise  # not known to be released: a later release() tries again
        except ThrottleError:
            self.released = True  # the daemon answered: expired or unknown, nothing held
            raise
        self.released = True

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            self.release()
        except ThrottleError:
            if exc_type is None:
                raise  # the block ran unprotected (expired): say so, unless it failed anyway


class _AsyncLease:
    """What lease_async returns: an async context manager, or an awaitable of the Lease."""

    def __init__(self, limiter: Limiter, key: Key, amount: int, ttl: float,
                 timeout: Optional[float]) -> None:
        self._args = (limiter, key, amount, ttl, timeout)
        self._lease: Optional[Lease] = None

    async def _take(self) -> Lease:
        lim, key, amount, ttl, timeout = self._args
        return await asyncio.to_thread(lim.lease, key, amount, ttl, timeout)

    def __await__(self):  # type: ignore[no-untyped-def]
        return self._take().__await__()

    async def __aenter__(self) -> Lease:
        self._lease = await self._take()
        return self._lease

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._lease is not None:
            await asyncio.to_thread(self._lease.__exit__, exc_type, exc, tb)


class Group:
    """A named group of the daemon's config: its members decided together, all or none."""

    def __init__(self, client: Client, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise InvalidArgument(22, "group name: expected a non-empty str, got %r" % (name,))
        self.client = client
        self.name = name

    @staticmethod
    def _args(args: Sequence[Tuple[Key, int]]) -> List[Dict[str, Any]]:
        out = []
        for i, a in enumerate(args):
            if not isinstance(a, (tuple, list)) or len(a) != 2:
                raise InvalidArgument(22, "group arg %d: expected (key, cost), got %r" % (i, a))
            out.append({"key": _key(a[0]), "cost": _count("cost", a[1])})
        return out

    def try_acquire(self, args: Sequence[Tuple[Key, int]]) -> ComposeResult:
        path = self.client._path("groups", self.name, "try")
        return _compose(self.client._request("POST", path, {"args": self._args(args)})[1])

    def acquire(self, args: Sequence[Tuple[Key, int]],
                timeout: Optional[float] = None) -> ComposeResult:
        ms = _ms("timeout", timeout)
        body: Dict[str, Any] = {"args": self._args(args)}
        body["timeout_ms"] = _UNBOUNDED_MS if ms is None else ms
        path = self.client._path("groups", self.name, "acquire")
        return _compose(self.client._request("POST", path, body, ms)[1])


def lock(src: Any, limiter_name: str, key: Key = "", amount: int = 1, ttl: float = 60.0,
         timeout: Optional[float] = None) -> Any:
    """``with lock(c, "A"):`` - a lease of AMOUNT on KEY of the semaphore LIMITER_NAME, held for
    the block. KEY defaults to the limiter's name (the seed's one-resource lock). Works on any
    source whose ``limiter(name)`` has ``lease``."""
    return src.limiter(limiter_name).lease(key or limiter_name, amount, ttl, timeout)
