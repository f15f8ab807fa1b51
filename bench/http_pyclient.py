#!/usr/bin/python3
"""http_pyclient.py - what one request costs the Python HTTP client (throttle.http) next to what it
costs the server: why bench_http drives the server with a C client.

One thread, Client.try_acquire in a closed loop for 2 s, 3 rounds, against a throttled of the
build directory (THROTTLE_BUILD_DIR) started by python/tests/http_daemon.py on the real clock;
CPU time of this process and of the daemon from /proc/PID/stat. It reports, never asserts.

    THROTTLE_BUILD_DIR=build PYTHONPATH=python /usr/bin/python3 bench/http_pyclient.py
"""
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python",
                                "tests"))
from http_daemon import Daemon  # noqa: E402
from throttle.http import Client  # noqa: E402

LIMITERS = "[bench]\nrate = 1000000000/s\nburst = 1000000000\ncapacity = 64\n"


def cpu_s(pid: int) -> float:
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    with Daemon(LIMITERS, clock="monotonic", name="pyclient") as d, Client(d.url) as c:
        lim = c.limiter("bench")
        for _ in range(1000):
            lim.try_acquire("k")
        for _ in range(3):
            s0, d0, t0, n = cpu_s(os.getpid()), cpu_s(d.proc.pid), time.monotonic(), 0
            while time.monotonic() - t0 < 2.0:
                lim.try_acquire("k")
                n += 1
            el = time.monotonic() - t0
            s1, d1 = cpu_s(os.getpid()), cpu_s(d.proc.pid)
            print("python client, 1 thread: %.0f req/s, client CPU %.1f us/req, server CPU "
                  "%.1f us/req" % (n / el, (s1 - s0) / n * 1e6, (d1 - d0) / n * 1e6))


if __name__ == "__main__":
    main()
