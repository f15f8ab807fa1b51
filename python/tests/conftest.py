"""pytest harness of the throttle package: a real throttled per test, on /dev/shm.

Environment:
  THROTTLE_BUILD_DIR  the CMake build directory; its daemon/throttled is the daemon run, and
                      (unless THROTTLE_LIBRARY is set) its libclient/libthrottle-client.so.0 is
                      the library loaded. Required: the tests fail, saying so, without it.
  THROTTLE_LIBRARY    the library to load instead (see throttle/_lib.py).
The package imported is the source tree's (python/throttle), not an installed one.

Fixtures for every test file (the HTTP tests reuse them):

  daemon_factory(limiters, *, clock="manual", daemon="", arena="") -> Daemon
      Writes a config into a fresh directory under /dev/shm and starts throttled on it, then
      waits for its READY=1 (sd_notify, through a NOTIFY_SOCKET the harness owns; the arena file
      exists by then). LIMITERS is the text of the limiter sections ("[g]\\nrate = 10/s\\n");
      CLOCK "manual" (time moves only by Arena.advance_clock) or "monotonic"; DAEMON and ARENA
      are extra "key = value" lines for the [daemon] and [arena] sections (e.g. daemon="http =
      127.0.0.1:0"). The config always has `metrics =` (empty: no port, so that parallel
      daemons never clash) unless DAEMON sets metrics itself. Every daemon a test started is
      stopped (SIGTERM, then SIGKILL after 5 s) and its directory removed after the test.
      The Daemon has .name (the arena's name), .arena_path, .config_path, .dir, .log_path,
      .pid, .log() (its output so far), .arena() (a new throttle.Arena on it, closed at the
      end of the test) and .stop() (idempotent; returns the exit status).

  run_forked(fn, n) -> list
      Forks N children that each call FN(i) (i = 0..N-1) and return its value through a pipe
      (JSON); fails the test with the child's traceback if one raised or died. Children leave
      with os._exit, never back into pytest.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback
from typing import Any, Callable, Iterator, List, Optional

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # python/: the package under test

BUILD_DIR = os.environ.get("THROTTLE_BUILD_DIR", "")
if BUILD_DIR and not os.environ.get("THROTTLE_LIBRARY"):
    os.environ["THROTTLE_LIBRARY"] = os.path.join(BUILD_DIR, "libclient",
                                                  "libthrottle-client.so.0")

READY_S = 10.0
_seq = 0


def _build_dir() -> str:
    if not BUILD_DIR:
        pytest.fail("THROTTLE_BUILD_DIR is not set: it must name the CMake build directory "
                    "(run the tests through ctest, or set it)", pytrace=False)
    return BUILD_DIR


class Daemon:
    """A throttled started by daemon_factory (see the module's doc)."""

    def __init__(self, limiters: str, clock: str, daemon: str, arena: str) -> None:
        global _seq
        _seq += 1
        self.bin = os.path.join(_build_dir(), "daemon", "throttled")
        if not os.access(self.bin, os.X_OK):
            pytest.fail("%s is not an executable: build the project first" % self.bin,
                        pytrace=False)
        self.dir = tempfile.mkdtemp(prefix="pyshm-", dir="/dev/shm")
        self.name = "py%d_%d" % (os.getpid(), _seq)
        self.arena_path = os.path.join(self.dir, "throttle." + self.name)
        self.config_path = os.path.join(self.dir, "throttled.conf")
        self.log_path = os.path.join(self.dir, "throttled.log")
        self._arenas: List[Any] = []
        self.status: Optional[int] = None
        metrics = "" if "metrics" in daemon else "metrics =\n"
        with open(self.config_path, "w") as f:
            f.write("[arena]\nname = %s\ndir = %s\nclock = %s\nhugepages = off\nmode = 0600\n"
                    "max_limiters = 16\nmax_readers = 256\nspare = 1MiB\n%s\n\n"
                    "[daemon]\nheartbeat_ms = 20\n%s%s\n\n%s\n" %
                    (self.name, self.dir, clock, arena, metrics, daemon, limiters))
        self.pid = self._start()

    def _start(self) -> int:
        sock_path = os.path.join(self.dir, "notify")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(sock_path)
            env = dict(os.environ, NOTIFY_SOCKET=sock_path, THROTTLE_LOG="info")
            log = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            pid = os.fork()
            if pid == 0:  # the daemon: exec, or leave at once
                try:
                    os.dup2(log, 1)
                    os.dup2(log, 2)
                    os.chdir(self.dir)
                    os.execve(self.bin, ["throttled", "-c", self.config_path], env)
                finally:
                    os._exit(127)
            os.close(log)
            self.pid = pid
            self._wait_ready(sock)
            return pid
        finally:
            sock.close()

    def _wait_ready(self, sock: socket.socket) -> None:
        deadline = time.monotonic() + READY_S
        while True:
            got, status = os.waitpid(self.pid, os.WNOHANG)
            if got == self.pid:
                self.status = status
                pytest.fail("throttled exited (status %#x) before READY=1; config:\n%s\nlog:\n%s"
                            % (status, open(self.config_path).read(), self.log()),
                            pytrace=False)
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                pytest.fail("throttled not ready after %.0f s; log:\n%s" % (READY_S, self.log()),
                            pytrace=False)
            sock.settimeout(min(left, 0.1))
            try:
                msg = sock.recv(4096).decode("utf-8", "replace")
            except socket.timeout:
                continue
            if "READY=1" in msg.split("\n"):
                return

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def arena(self) -> Any:
        import throttle
        a = throttle.Arena(self.arena_path)
        self._arenas.append(a)
        return a

    def stop(self) -> Optional[int]:
        """SIGTERM, waited for 5 s, then SIGKILL. Returns the wait status."""
        if self.status is None:
            os.kill(self.pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while True:
                got, status = os.waitpid(self.pid, os.WNOHANG)
                if got == self.pid:
                    self.status = status
                    break
                if time.monotonic() > deadline:
                    os.kill(self.pid, signal.SIGKILL)
                    self.status = os.waitpid(self.pid, 0)[1]
                    break
                time.sleep(0.01)
        return self.status

    def cleanup(self) -> None:
        for a in self._arenas:
            a.close()
        self._arenas = []
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def daemon_factory() -> Iterator[Callable[..., Daemon]]:
    started: List[Daemon] = []

    def make(limiters: str, *, clock: str = "manual", daemon: str = "",
             arena: str = "") -> Daemon:
        d = Daemon(limiters, clock, daemon, arena)
        started.append(d)
        return d

    yield make
    for d in started:
        d.cleanup()


def _child(fn: Callable[[int], Any], i: int, w: int) -> None:
    code = 0
    try:
        out = {"ok": fn(i)}
    except BaseException:
        out = {"error": traceback.format_exc()}
        code = 1
    try:
        os.write(w, json.dumps(out).encode())
    finally:
        os._exit(code)


def run_forked_impl(fn: Callable[[int], Any], n: int) -> List[Any]:
    kids = []
    for i in range(n):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                _child(fn, i, w)
            finally:
                os._exit(3)
        os.close(w)
        kids.append((pid, r))
    results = []
    errors = []
    for i, (pid, r) in enumerate(kids):
        chunks = []
        while True:
            b = os.read(r, 65536)
            if not b:
                break
            chunks.append(b)
        os.close(r)
        status = os.waitpid(pid, 0)[1]
        text = b"".join(chunks).decode()
        out = json.loads(text) if text else {"error": "no output (wait status %#x)" % status}
        if "error" in out or status != 0:
            errors.append("child %d (status %#x): %s" % (i, status, out.get("error", "")))
        results.append(out.get("ok"))
    if errors:
        pytest.fail("\n".join(errors), pytrace=False)
    return results


@pytest.fixture
def run_forked() -> Callable[[Callable[[int], Any], int], List[Any]]:
    return run_forked_impl
