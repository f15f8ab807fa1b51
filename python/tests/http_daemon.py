"""A real throttled with its HTTP listener, started from the build directory for the HTTP tests.

THROTTLE_BUILD_DIR names the CMake build directory (ctest sets it): the daemon is
$THROTTLE_BUILD_DIR/daemon/throttled and the client library, used here only to move a
manual-clock arena's time (thr_clock_advance), $THROTTLE_BUILD_DIR/libclient/libthrottle-client.so.
Each daemon gets a fresh directory holding its config, its arena (``dir =``), its log and, when
asked, a token file; it listens on a free loopback port (or a Unix socket) with ``metrics =``
off. Ready means: it answers GET /v1/limiters (any HTTP answer, 401 included).
"""
from __future__ import annotations

import ctypes
import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Optional

READY_S = 20.0


def build_dir() -> str:
    bd = os.environ.get("THROTTLE_BUILD_DIR")
    if not bd:
        raise RuntimeError("THROTTLE_BUILD_DIR is not set: the CMake build directory holding "
                           "daemon/throttled (ctest -R python_http sets it)")
    return os.path.abspath(bd)


def free_port() -> int:
    """A loopback port that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Lib:
    """libthrottle-client through ctypes: thr_arena_open and thr_clock_advance only."""

    lib: Optional[ctypes.CDLL] = None

    @classmethod
    def get(cls) -> ctypes.CDLL:
        if cls.lib is None:
            lib = ctypes.CDLL(os.path.join(build_dir(), "libclient", "libthrottle-client.so"))
            lib.thr_arena_open.argtypes = [ctypes.c_char_p, ctypes.c_uint,
                                           ctypes.POINTER(ctypes.c_void_p)]
            lib.thr_clock_advance.argtypes = [ctypes.c_void_p, ctypes.c_uint64]
            lib.thr_arena_close.argtypes = [ctypes.c_void_p]
            cls.lib = lib
        return cls.lib


class Daemon:
    """One throttled: ``Daemon(limiters_ini, token=None, unix=False).start()``; ``url``;
    ``advance(seconds)`` on its manual clock; ``stop()``. DAEMON_EXTRA: more [daemon] lines."""

    def __init__(self, limiters: str, token: Optional[str] = None, unix: bool = False,
                 clock: str = "manual", name: str = "pyhttp", daemon_extra: str = "") -> None:
        self.dir = tempfile.mkdtemp(prefix="throttle-http-")
        self.name = name
        self.arena = os.path.join(self.dir, "throttle." + name)
        self.conf = os.path.join(self.dir, "throttled.conf")
        self.log = os.path.join(self.dir, "daemon.log")
        self.token = token
        if unix:
            self.sock = os.path.join(self.dir, "http.sock")
            listen, self.url = "unix:" + self.sock, "unix:" + self.sock
        else:
            port = free_port()
            listen, self.url = "127.0.0.1:%d" % port, "http://127.0.0.1:%d" % port
        token_line = ""
        if token is not None:
            tf = os.path.join(self.dir, "token")
            with open(tf, "w") as f:
                f.write(token + "\n")
            os.chmod(tf, 0o600)
            token_line = "http_token_file = %s\n" % tf
        token_line += daemon_extra
        with open(self.conf, "w") as f:
            f.write("[arena]\nname = %s\ndir = %s\nclock = %s\nhugepages = off\nmode = 0600\n"
                    "max_limiters = 16\nmax_readers = 256\nspare = 1MiB\n\n"
                    "[daemon]\nheartbeat_ms = 20\nmetrics =\nhttp = %s\n%s\n%s"
                    % (name, self.dir, clock, listen, token_line, limiters))
        self.proc: Optional[subprocess.Popen] = None
        self._arena = ctypes.c_void_p()

    def start(self) -> "Daemon":
        exe = os.path.join(build_dir(), "daemon", "throttled")
        if not os.access(exe, os.X_OK):
            raise RuntimeError("%s: not an executable (build the project first)" % exe)
        # A sanitizer build's daemon reports leaks and errors by its exit status (stop() checks
        # it); python itself, when run with the sanitizer runtime preloaded, does not.
        env = dict(os.environ, THROTTLE_LOG="info", ASAN_OPTIONS="detect_leaks=1:exitcode=99")
        env.pop("LD_PRELOAD", None)
        with open(self.log, "wb") as logf:
            self.proc = subprocess.Popen([exe, "-c", self.conf], stdout=logf,
                                         stderr=subprocess.STDOUT, cwd=self.dir, env=env)
        t0 = time.monotonic()
        while not self._answers():
            if self.proc.poll() is not None:
                raise RuntimeError("throttled exited (%s) before it answered HTTP; log:\n%s"
                                   % (self.proc.returncode, self.log_text()))
            if time.monotonic() - t0 > READY_S:
                raise RuntimeError("throttled did not answer HTTP on %s within %.0f s; log:\n%s"
                                   % (self.url, READY_S, self.log_text()))
            time.sleep(0.02)
        return self

    def _answers(self) -> bool:
        try:
            if self.url.startswith("unix:"):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(1.0)
                s.connect(self.sock)
                s.sendall(b"GET /v1/limiters HTTP/1.1\r\nHost: localhost\r\n"
                          b"Connection: close\r\n\r\n")
                ok = s.recv(16).startswith(b"HTTP/1.")
                s.close()
                return ok
            host, port = self.url[len("http://"):].rsplit(":", 1)
            c = http.client.HTTPConnection(host, int(port), timeout=1.0)
            c.request("GET", "/v1/limiters")
            c.getresponse().read()
            c.close()
            return True
        except OSError:
            return False

    def log_text(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-4000:]
        except OSError as e:
            return "(no log: %s)" % e

    def advance(self, seconds: float) -> None:
        """Move the manual clock forward by SECONDS (thr_clock_advance)."""
        lib = _Lib.get()
        if not self._arena:
            rc = lib.thr_arena_open(self.arena.encode(), 0, ctypes.byref(self._arena))
            if rc < 0:
                raise OSError(-rc, "thr_arena_open(%s)" % self.arena)
        rc = lib.thr_clock_advance(self._arena, int(seconds * 1e9))
        if rc < 0:
            raise OSError(-rc, "thr_clock_advance")

    def stop(self) -> None:
        """SIGTERM the daemon; it must exit 0 (a clean stop, and no sanitizer report)."""
        if self._arena:
            _Lib.get().thr_arena_close(self._arena)
            self._arena = ctypes.c_void_p()
        problem = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(10)
                if rc != 0:
                    problem = "throttled exited %d on SIGTERM; log:\n%s" % (rc, self.log_text())
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                problem = "throttled did not exit within 10 s of SIGTERM; log:\n" + \
                    self.log_text()
        shutil.rmtree(self.dir, ignore_errors=True)
        if problem:
            raise AssertionError(problem)

    def __enter__(self) -> "Daemon":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
