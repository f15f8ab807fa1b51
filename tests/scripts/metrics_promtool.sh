#!/usr/bin/env bash
# metrics_promtool.sh - validates throttled's /metrics exposition with `promtool check metrics`
# (Prometheus's own linter: names, types, HELP, units, counters ending in _total): a throttled
# with two limiters is started on a private arena and a free loopback port, and one scrape is
# checked (every series is there from the start, at 0). Exits 77 (skipped, with the reason) when promtool is not installed: the Debian
# package `prometheus` has it, and scripts/setup.sh installs it (so CI runs this test).
#
#   metrics_promtool.sh BUILD_DIR
set -euo pipefail
build=$(cd "$1" && pwd)
if ! command -v promtool >/dev/null 2>&1; then
        echo "metrics_promtool: skipped: promtool is not installed (Debian package prometheus;" \
                "scripts/setup.sh installs it)"
        exit 77
fi
dir=$(mktemp -d /dev/shm/thrtest.prom.XXXXXX)
name=prom$$
pid=
cleanup() {
        if [ -n "$pid" ]; then kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi
        rm -rf "$dir"
}
trap cleanup EXIT

# GET /metrics from 127.0.0.1:$1 through bash's /dev/tcp; the body on stdout.
scrape() {
        exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
        printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
        sed '1,/^\r$/d' <&3
        exec 3<&-
}

# A port the kernel picks at random is tried; one in use makes throttled exit 69 (EX_UNAVAILABLE).
for attempt in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 30000))
        cat >"$dir/t.conf" <<CONF
[arena]
name = $name
dir = $dir
hugepages = off
clock = manual
max_limiters = 8
max_readers = 16
spare = 1MiB
[daemon]
heartbeat_ms = 20
metrics = 127.0.0.1:$port
[per_key]
rate = 10/s
burst = 5
capacity = 64
[window]
kind = window
limit = 10
window = 1s
capacity = 16
CONF
        "$build/daemon/throttled" -c "$dir/t.conf" 2>>"$dir/daemon.log" &
        pid=$!
        for _ in $(seq 100); do
                if scrape "$port" >"$dir/metrics.txt" 2>/dev/null && [ -s "$dir/metrics.txt" ]; then
                        break 2
                fi
                if ! kill -0 "$pid" 2>/dev/null; then
                        wait "$pid" || true
                        pid=
                        continue 2
                fi
                sleep 0.05
        done
        echo "metrics_promtool: throttled did not serve /metrics"; cat "$dir/daemon.log"; exit 1
done
[ -n "$pid" ] || { echo "metrics_promtool: no free port found"; cat "$dir/daemon.log"; exit 1; }
grep -q '^throttle_admitted_total{limiter="per_key"} ' "$dir/metrics.txt" ||
        { echo "metrics_promtool: no per-limiter series:"; cat "$dir/metrics.txt"; exit 1; }
if ! out=$(promtool check metrics <"$dir/metrics.txt" 2>&1); then
        echo "metrics_promtool: promtool check metrics failed:"
        echo "$out"
        echo "--- exposition"
        cat "$dir/metrics.txt"
        exit 1
fi
echo "metrics_promtool: promtool check metrics: ok ($(grep -c '^# TYPE' "$dir/metrics.txt") metrics," \
        "$(grep -vc '^#' "$dir/metrics.txt") samples)${out:+; it said: $out}"
