#!/usr/bin/python3
"""asyncio_pool.py - an asyncio worker pool and C workers sharing one limit through the arena.

    examples/python/asyncio_pool.py [--build DIR] [--seconds S] [--tasks N] [--c-workers M] [--work W]

Starts a throttled of its own (from the build tree DIR, default build/) on a private arena under
/dev/shm with the demo's two limiters: per_key (5/s, burst 5, per user) and host (50/s, burst
10, one key "all" shared by everyone). Then, for S seconds, at once:
  - M C processes, examples/demo_worker.c (thr-demo-worker), each trying per_key for a random
    user and, if admitted, host for "all";
  - N asyncio tasks in this process, each awaiting host.acquire_async("all") (a reservation,
    then a sleep until it is due: the event loop is never blocked), then working W seconds
    (--work, default 0.1), and again. Reservations are served in order and a try cannot jump
    ahead of them: tasks that never pause would take every place and leave the C side none.
It prints how many admissions of host each side got, and checks the shared bound: a GCRA of
50 per second with burst 10 admits at most 10 + floor(50 * span) over any span, whatever the mix
of callers; the span runs from the first start to the last end on the arena clock. Exit status
0 if the bound held, 1 if not, 2 on a setup error.

THROTTLE_LIBRARY may name libthrottle-client.so.0; by default DIR's is used. The package is
imported from python/ beside this example unless one is installed.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import TYPE_CHECKING, List, Tuple

if TYPE_CHECKING:
    import throttle

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GLOBAL_RATE, GLOBAL_PERIOD_NS, GLOBAL_BURST = 50, 1_000_000_000, 10

CONFIG = """[arena]
name = {name}
dir = {dir}
hugepages = off
mode = 0600
max_limiters = 4
max_readers = 64
spare = 1MiB

[daemon]
metrics =

[per_key]
rate = 5/s
burst = 5
capacity = 1000

[host]
rate = {rate}/s
burst = {burst}
capacity = 16
"""


def start_daemon(build: str, tmp: str) -> Tuple["subprocess.Popen[bytes]", str]:
    name = "pypool%d" % os.getpid()
    conf = os.path.join(tmp, "throttled.conf")
    with open(conf, "w") as f:
        f.write(CONFIG.format(name=name, dir=tmp, rate=GLOBAL_RATE, burst=GLOBAL_BURST))
    log = open(os.path.join(tmp, "throttled.log"), "w")
    proc = subprocess.Popen([os.path.join(build, "daemon", "throttled"), "-c", conf],
                            stdout=log, stderr=subprocess.STDOUT)
    return proc, os.path.join(tmp, "throttle." + name)


def open_arena(path: str, proc: "subprocess.Popen[bytes]") -> "throttle.Arena":
    import throttle
    deadline = time.monotonic() + 10
    while True:
        try:
            arena = throttle.Arena(path)
            arena.limiter("host")
            return arena
        except throttle.ThrottleError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("asyncio_pool: throttled did not start (see its log)")
            time.sleep(0.02)


async def pool(arena: "throttle.Arena", tasks: int, end_ns: int,
               work: float) -> List[int]:
    import throttle
    glob = arena.limiter("host")

    async def worker() -> int:
        got = 0
        while arena.now_ns() < end_ns:
            try:
                await glob.acquire_async("all", timeout=0.5)
                got += 1
                await asyncio.sleep(work)  # the request's own work, off the limiter
            except throttle.Timeout:
                await asyncio.sleep(0.01)
        return got

    return list(await asyncio.gather(*(worker() for _ in range(tasks))))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=4)
    ap.add_argument("--c-workers", type=int, default=2)
    ap.add_argument("--work", type=float, default=0.1, help="seconds of work per admission")
    o = ap.parse_args()
    build = os.path.abspath(o.build)
    worker_bin = os.path.join(build, "examples", "thr-demo-worker")
    if not os.access(worker_bin, os.X_OK):
        print("asyncio_pool: no %s: build the project first" % worker_bin, file=sys.stderr)
        return 2
    os.environ.setdefault("THROTTLE_LIBRARY",
                          os.path.join(build, "libclient", "libthrottle-client.so.0"))
    sys.path.insert(0, os.path.join(ROOT, "python"))

    tmp = tempfile.mkdtemp(prefix="asyncio-pool-", dir="/dev/shm")
    proc, arena_path = start_daemon(build, tmp)
    try:
        arena = open_arena(arena_path, proc)
        start_ns = arena.now_ns()
        end_ns = start_ns + o.seconds * 1_000_000_000
        workers = [subprocess.Popen([worker_bin, "-a", arena_path, "-s", str(o.seconds),
                                     "-k", "4", "-i", str(i)], stdout=subprocess.PIPE,
                                    text=True) for i in range(o.c_workers)]
        py_counts = asyncio.run(pool(arena, o.tasks, end_ns, o.work))
        py_end = arena.now_ns()
        c_admitted, first, last = 0, start_ns, py_end
        for w in workers:
            out, _ = w.communicate(timeout=o.seconds + 30)
            m = re.search(r"^total admitted (\d+) .* start_ns (\d+) end_ns (\d+)", out, re.M)
            if w.returncode != 0 or not m:
                print("asyncio_pool: a C worker failed:\n" + out, file=sys.stderr)
                return 2
            c_admitted += int(m.group(1))
            first, last = min(first, int(m.group(2))), max(last, int(m.group(3)))
        arena.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)

    py_admitted = sum(py_counts)
    span = last - first
    bound = GLOBAL_BURST + GLOBAL_RATE * span // GLOBAL_PERIOD_NS
    total = c_admitted + py_admitted
    print("host (%d/s, burst %d), key \"all\", over %.3f s of arena time:" %
          (GLOBAL_RATE, GLOBAL_BURST, span / 1e9))
    print("  C workers (%d processes):   %d admitted" % (o.c_workers, c_admitted))
    print("  asyncio tasks (%d):         %d admitted (per task: %s)" %
          (o.tasks, py_admitted, " ".join(map(str, py_counts))))
    ok = total <= bound
    print("shared bound: %d admitted <= %d (burst + rate * span): %s" %
          (total, bound, "PASS" if ok else "FAIL"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
