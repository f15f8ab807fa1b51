"""Regression tests of the hostile review's defects in the Python package (review14py, fixed in
2801b39). Each test failed before that commit:

 1. an HTTP POST whose answer is lost is never sent twice (it was resent: a spend applied twice);
 2. every throttle exception pickles with its class, errno, message and attributes, and a
    WouldBlock raised in a multiprocessing.Pool worker reaches the parent (it hung Pool);
 3. cancelled lease_async waits (more than the default executor has workers) do not starve the
    loop, and asyncio.run returns (it never did);
 4. an HTTP Lease.release() whose DELETE answer is lost raises TransportError and leaves the
    lease unreleased (it was marked released: a later release() sent nothing);
 5. Arena.close() while other threads call: their later calls raise InvalidArgument "closed",
    never another error or a crash (it was a use after free);
 6. a fork child of a process whose thread holds the HTTP Client's lock can still make requests
    (it deadlocked);
 7. an answer body above the bound is refused with ServerError, unread when its declared
    Content-Length is above the bound, and an endless one without being read whole;
 8. a str key with a lone surrogate is InvalidArgument (it was a bare UnicodeEncodeError).

Everything that could hang on a regression is bounded (a timeout, an alarm, or a subprocess).
The daemons come from conftest.daemon_factory (shared memory) and http_daemon.Daemon (HTTP)."""
from __future__ import annotations

import errno
import json
import multiprocessing
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import throttle
import throttle.errors as te
import throttle.results
import throttle.http as th
from http_daemon import Daemon as HttpDaemon

HERE = os.path.dirname(os.path.abspath(__file__))
PKG_DIR = os.path.dirname(HERE)  # python/: the package under test (as conftest inserts it)


# ----------------------------------------------------------------------------- helpers

def _read_http(sock: socket.socket):
    """One HTTP/1.1 message (head + Content-Length body) from SOCK, or None at EOF."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        c = sock.recv(65536)
        if not c:
            return None
        buf += c
    head, _, body = buf.partition(b"\r\n\r\n")
    n = 0
    for line in head.split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            n = int(v)
    while len(body) < n:
        c = sock.recv(65536)
        if not c:
            return None
        body += c
    return head + b"\r\n\r\n" + body


class _Proxy:
    """A TCP proxy in front of a real throttled's HTTP API. DROP(n, request_line) decides, for
    the N-th request (1-based) of a client connection, whether to forward it to the daemon
    ("forward": and drop the answer) or not at all ("swallow"), then close the client
    connection without answering; None relays normally. .forwarded lists the request lines
    the daemon received through it."""

    def __init__(self, upstream_url: str, drop) -> None:
        host, port = upstream_url[len("http://"):].rsplit(":", 1)
        self.upstream = (host, int(port))
        self.drop = drop
        self.forwarded = []
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.url = "http://127.0.0.1:%d" % self.ls.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(c,), daemon=True).start()

    def _serve(self, c: socket.socket) -> None:
        u = socket.create_connection(self.upstream)
        n = 0
        try:
            while True:
                req = _read_http(c)
                if req is None:
                    return
                n += 1
                line = req.split(b"\r\n", 1)[0].decode()
                what = self.drop(n, line)
                if what == "swallow":
                    return
                self.forwarded.append(line)
                u.sendall(req)
                resp = _read_http(u)
                if what == "forward" or resp is None:
                    return  # applied by the daemon; its answer is lost
                c.sendall(resp)
        except OSError:
            return
        finally:
            c.close()
            u.close()

    def close(self) -> None:
        self.ls.close()


def _run_script(code: str, timeout: float, *args: str):
    """Run CODE in a fresh /usr/bin/python3 (this tree's package first in sys.path); a crash or
    a hang fails the test, not pytest. Returns the CompletedProcess; on timeout (the script is
    killed) a test failure with what it printed so far."""
    env = dict(os.environ, PYTHONPATH=PKG_DIR + os.pathsep + HERE, PYTHONDONTWRITEBYTECODE="1")
    try:
        return subprocess.run([sys.executable, "-c", textwrap.dedent(code)] + list(args),
                              env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode(errors="replace") if isinstance(e.stdout, bytes) else e.stdout
        pytest.fail("the script did not end within %.0f s (killed); its output so far:\n%s"
                    % (timeout, out or ""))


# ----------------------------------------------------------------------------- 1

def test_post_whose_answer_is_lost_is_sent_once_and_raises_transport_error():
    with HttpDaemon("[b]\nkind = budget\ninitial = 100\n", name="r14double") as d:
        # the 2nd request of a connection (the spend, over the kept-alive connection of the
        # first: GET of the limiter's info) reaches the daemon; its answer is dropped
        px = _Proxy(d.url, lambda n, line: "forward" if n == 2 else None)
        try:
            cl = th.Client(px.url, timeout=5.0)
            b = cl.limiter("b")
            try:
                got = b.spend("tenant", 30)
            except Exception as e:  # noqa: BLE001 - checked below, after the count
                got = e
            posts = [x for x in px.forwarded if x.startswith("POST")]
            assert len(posts) == 1, "the POST was sent %d times: %r" % (len(posts), posts)
            # applied exactly once by the daemon
            assert th.Client(d.url).limiter("b").budget_stat("tenant").balance == 70
            transport_error = getattr(te, "TransportError", None)
            assert transport_error is not None and isinstance(got, transport_error), got
            assert isinstance(got, te.ThrottleError)
            cl.close()
        finally:
            px.close()


# ----------------------------------------------------------------------------- 2

def _all_error_classes():
    return sorted({c for c in vars(te).values()
                   if isinstance(c, type) and issubclass(c, te.ThrottleError)},
                  key=lambda c: c.__name__)


def test_every_exception_pickles_with_its_class_errno_message_and_attributes():
    classes = _all_error_classes()
    assert len(classes) >= 20
    res = throttle.results.BudgetResult(2, 5, 1, 7)
    for cls in classes:
        e = cls(errno.ETIMEDOUT, "some message")
        e.result = res
        e.wait_ns = 1234
        e.retry_after_ns = 5678
        try:
            e2 = pickle.loads(pickle.dumps(e))
        except Exception as x:  # noqa: BLE001 - the failure is the finding
            pytest.fail("%s does not pickle round-trip: %s: %s" % (cls.__name__,
                                                                   type(x).__name__, x))
        assert type(e2) is cls
        assert e2.errno == errno.ETIMEDOUT, cls
        assert e2.message == "some message", cls
        assert str(e2) == str(e), cls
        assert (e2.result, e2.wait_ns, e2.retry_after_ns) == (res, 1234, 5678), cls


_POOL_ARENA = ""


def _pool_worker(_):
    with throttle.Arena(_POOL_ARENA) as a:
        a.limiter("s").lease("k", timeout=0)  # full (the parent holds it): WouldBlock
    return "got it"


def test_wouldblock_in_a_pool_worker_reaches_the_parent(daemon_factory):
    global _POOL_ARENA
    d = daemon_factory("[s]\nkind = semaphore\nmax = 1\n")
    _POOL_ARENA = d.arena_path
    held = d.arena().limiter("s").lease("k", timeout=0)
    pool = multiprocessing.get_context("fork").Pool(1)
    try:
        r = pool.apply_async(_pool_worker, (0,))
        try:
            r.get(timeout=15)
        except multiprocessing.TimeoutError:
            pytest.fail("no result and no exception from the worker in 15 s (the parent "
                        "could not unpickle the worker's exception)")
        except te.WouldBlock as e:
            assert e.errno == errno.EAGAIN
        else:
            pytest.fail("the worker's lease succeeded on a full semaphore")
    finally:
        t = threading.Thread(target=pool.terminate, daemon=True)
        t.start()
        t.join(10)
        held.release()


# ----------------------------------------------------------------------------- 3

_AIO_SCRIPT = r"""
import asyncio, os, sys, time
import throttle
path = sys.argv[1]
a = throttle.Arena(path)
s, b = a.limiter("s"), a.limiter("b")
n = min(32, (os.cpu_count() or 1) + 4) + 2  # more than the default executor's workers

async def main():
    tasks = [asyncio.create_task(s.lease_async("k", timeout=None)._acquire()) for _ in range(n)]
    await asyncio.sleep(0.3)
    for t in tasks:
        t.cancel()
    got = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(g, asyncio.CancelledError) for g in got), got
    print("cancelled", n, flush=True)
    try:
        r = await asyncio.wait_for(b.spend_async("tenant", 1), 5)
    except asyncio.TimeoutError:
        print("spend_async: starved", flush=True)
        return
    print("spend_async balance", r.balance, flush=True)

t0 = time.monotonic()
asyncio.run(main())
print("asyncio.run returned after %.1f s" % (time.monotonic() - t0), flush=True)
"""


def test_cancelled_lease_async_waits_do_not_starve_the_loop(daemon_factory):
    d = daemon_factory("[s]\nkind = semaphore\nmax = 1\n\n[b]\nkind = budget\ninitial = 100\n")
    a = d.arena()
    s = a.limiter("s")
    held = s.lease("k", timeout=0)  # the semaphore stays full while the script runs
    try:
        p = _run_script(_AIO_SCRIPT, 30, d.arena_path)
    finally:
        held.release()
    assert "spend_async balance 99" in p.stdout, (p.stdout, p.stderr)
    assert "asyncio.run returned" in p.stdout, (p.stdout, p.stderr)
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    # nothing stays held by the cancelled waits (the script's process has ended)
    deadline = time.monotonic() + 5
    while s.sem_stat("k").held and time.monotonic() < deadline:
        time.sleep(0.05)
    assert s.sem_stat("k").held == 0
    assert a.limiter("b").budget_stat("tenant").balance == 99


# ----------------------------------------------------------------------------- 4

def test_http_release_whose_delete_answer_is_lost_raises_and_stays_unreleased():
    with HttpDaemon("[s]\nkind = semaphore\nmax = 1\n", name="r14rel") as d:
        mode = {"drop_delete": True}

        def drop(n, line):
            # while drop_delete: every DELETE is lost (the connection closes unanswered; here
            # the request is not even forwarded, so the daemon still holds the lease)
            if line.startswith("DELETE") and mode["drop_delete"]:
                return "swallow"
            return None

        px = _Proxy(d.url, drop)
        try:
            s = th.Client(px.url, timeout=5.0).limiter("s")
            lease = s.lease("k", ttl=60, timeout=0)
            try:
                lease.release()
                got = None
            except Exception as e:  # noqa: BLE001 - checked below
                got = e
            assert got is not None, "release() returned although its DELETE was lost"
            assert lease.released is False, "marked released on a lost DELETE (%r)" % got
            direct = th.Client(d.url).limiter("s")
            assert direct.sem_stat("k").held == 1
            transport_error = getattr(te, "TransportError", None)
            assert transport_error is not None and isinstance(got, transport_error), got
            # a later release() tries again, and succeeds once the answer comes back
            mode["drop_delete"] = False
            lease.release()
            assert lease.released is True
            assert direct.sem_stat("k").held == 0
        finally:
            px.close()


# ----------------------------------------------------------------------------- 5

_CLOSE_SCRIPT = r"""
import faulthandler, sys, threading, time
faulthandler.enable()
import throttle
path = sys.argv[1]
bad = {}
closed_errors = 0
for rnd in range(15):
    a = throttle.Arena(path)
    g = a.limiter("g")
    s = a.limiter("s")
    stop = False
    seen = []
    def hammer(i):
        n = 0
        while not stop:
            try:
                g.try_acquire("k%d" % (n % 500)); n += 1
                if n % 7 == 0:
                    s.sem_stat("x")
            except throttle.InvalidArgument as e:
                if "closed" not in str(e):
                    bad["InvalidArgument"] = str(e)
                seen.append(1)
            except BaseException as e:
                bad[type(e).__name__] = str(e)
    ts = [threading.Thread(target=hammer, args=(i,)) for i in range(3)]
    for t in ts: t.start()
    time.sleep(0.05)
    a.close()
    time.sleep(0.05)
    stop = True
    for t in ts: t.join()
    closed_errors += len(seen)
    try:
        g.try_acquire("after")
        bad["no error after close"] = "try_acquire returned"
    except throttle.InvalidArgument as e:
        if "closed" not in str(e):
            bad["InvalidArgument"] = str(e)
print("BAD", bad)
print("CLOSED", closed_errors)
"""


def test_arena_close_while_threads_call_refuses_later_calls_cleanly(daemon_factory):
    d = daemon_factory("[g]\nrate = 1000000/s\nburst = 1000000\n\n"
                       "[s]\nkind = semaphore\nmax = 4\n", clock="monotonic")
    p = _run_script(_CLOSE_SCRIPT, 60, d.arena_path)
    assert p.returncode == 0, "the close race script died (%d): %s\n%s" % (
        p.returncode, p.stdout[-2000:], p.stderr[-4000:])
    assert "BAD {}" in p.stdout, (p.stdout, p.stderr[-2000:])
    closed = int(p.stdout.split("CLOSED", 1)[1].split()[0])
    assert closed > 0, "no call after close() was refused: %s" % p.stdout


# ----------------------------------------------------------------------------- 6

def test_fork_child_requests_while_a_parent_thread_holds_the_client_lock():
    with HttpDaemon("[g]\nrate = 1/s\nburst = 1000\n", name="r14fork") as d:
        cl = th.Client(d.url, timeout=5.0)
        holding, done = threading.Event(), threading.Event()

        def holder():
            with cl._lock:  # as a thread inside its first request (_conn) or close() does
                holding.set()
                done.wait(30)

        t = threading.Thread(target=holder, daemon=True)
        t.start()
        assert holding.wait(5)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: answer through the pipe, die by SIGALRM if it hangs
            try:
                os.close(r)
                signal.alarm(5)
                out = th.Limiter(cl, "g").try_acquire("child").remaining
                os.write(w, json.dumps({"ok": out}).encode())
            except BaseException as e:  # noqa: B902
                os.write(w, json.dumps({"error": "%s: %s" % (type(e).__name__, e)}).encode())
            finally:
                os._exit(0)
        os.close(w)
        try:
            data = b"".join(iter(lambda: os.read(r, 65536), b""))
            _, status = os.waitpid(pid, 0)
        finally:
            os.close(r)
            done.set()
            t.join(5)
        assert not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGALRM), \
            "the fork child's request hung on the Client's lock (killed by SIGALRM after 5 s)"
        assert status == 0, "child wait status %#x" % status
        assert json.loads(data) == {"ok": 999}
        assert th.Limiter(cl, "g").try_acquire("parent").remaining == 999  # the parent too
        cl.close()


# ----------------------------------------------------------------------------- 7

class _RawServer:
    """Answers every connection with HANDLER(conn) (after reading the request head)."""

    def __init__(self, handler) -> None:
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(8)
        self.url = "http://127.0.0.1:%d" % self.ls.getsockname()[1]
        self.handler = handler
        self.threads = []
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            t = threading.Thread(target=self._one, args=(c,), daemon=True)
            self.threads.append(t)
            t.start()

    def _one(self, c: socket.socket) -> None:
        try:
            _read_http(c)
            self.handler(c)
        except OSError:
            pass
        finally:
            c.close()

    def close(self) -> None:
        self.ls.close()
        for t in self.threads:
            t.join(10)


_DECISION = json.dumps({"admitted": True, "limit": 5, "remaining": 4, "retry_after_ns": 0,
                        "reset_after_ns": 0}).encode()


def _padded(c):
    """A valid decision padded to 2 MiB with whitespace (valid JSON), with its Content-Length."""
    body = _DECISION + b" " * (2 << 20)
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d"
              b"\r\nConnection: close\r\n\r\n" % len(body) + body)


def test_an_answer_above_the_bound_is_refused():
    # a valid decision padded to 2 MiB (valid JSON): refused all the same, never a Decision
    srv = _RawServer(_padded)
    try:
        with th.Client(srv.url, timeout=10.0) as cl:
            # refused (not a Decision)
            with pytest.raises(te.ThrottleError):
                th.Limiter(cl, "g").try_acquire("k")
    finally:
        srv.close()


def test_a_declared_length_above_the_bound_is_a_server_error():
    srv = _RawServer(_padded)
    try:
        with th.Client(srv.url, timeout=10.0) as cl:
            with pytest.raises(te.ServerError):
                th.Limiter(cl, "g").try_acquire("k")
    finally:
        srv.close()


def test_an_endless_answer_is_a_server_error_not_read_whole():
    # an endless body (no Content-Length, Connection: close): the client stops reading, raises
    total = 64 << 20
    sent = [0]

    def endless(c):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                  b"Connection: close\r\n\r\n")
        chunk = b" " * (1 << 16)
        while sent[0] < total:
            c.sendall(chunk)
            sent[0] += len(chunk)

    srv = _RawServer(endless)
    try:
        with th.Client(srv.url, timeout=10.0) as cl:
            t0 = time.monotonic()
            with pytest.raises(te.ServerError):
                th.Limiter(cl, "g").try_acquire("k")
            took = time.monotonic() - t0
    finally:
        srv.close()
    assert sent[0] < total // 2, "the client read %d MiB of a %d MiB answer" % (
        sent[0] >> 20, total >> 20)
    assert took < 5


# ----------------------------------------------------------------------------- 8

def test_str_key_with_a_lone_surrogate_is_invalid_argument(daemon_factory):
    d = daemon_factory("[g]\nrate = 10/s\nburst = 10\n\n[s]\nkind = semaphore\nmax = 1\n\n"
                       "[b]\nkind = budget\ninitial = 5\n")
    a = d.arena()
    g, s, b = a.limiter("g"), a.limiter("s"), a.limiter("b")
    for call in (lambda: g.try_acquire("\udcff"), lambda: g.try_acquire("ok\ud800"),
                 lambda: s.lease("\udcff", timeout=0), lambda: b.spend("\udcff", 1)):
        with pytest.raises(te.InvalidArgument) as ei:
            call()
        assert ei.value.errno == errno.EINVAL
    assert g.try_acquire("ok").remaining == 9  # nothing was consumed by the refused keys

