#!/usr/bin/env bash
# daemon_threads.sh - throttled's threads (main: reloads; maintenance: eviction, grace
# periods, heartbeat; libmicrohttpd's: /metrics; the lease thread of global limiters, renewing
# every 10 ms from a redis-server started here, when there is one) under load: worker processes
# hammer the arena's
# limiters while the config is reloaded 20 times (rates changed, a limiter added and removed),
# idle keys are evicted every few milliseconds, and /metrics is scraped after every reload. Built with -DTHR_TSAN=ON this is the ThreadSanitizer run of the daemon
# (TSAN_OPTIONS=halt_on_error=1 makes a race exit non-zero); in every build it checks that the
# daemon survives, answers shmctl, and exits 0 on SIGTERM.
#
#   daemon_threads.sh BUILD_DIR
set -euo pipefail
build=$1
dir=$(mktemp -d /dev/shm/thrtest.dthreads.XXXXXX)
trap 'kill -9 "${daemon:-}" "${workers[@]:-}" "${redis:-}" 2>/dev/null || true; [ -n "${KEEP:-}" ] || rm -rf "$dir"' EXIT

# The limiter host is global (its share leased from Redis, republished as it moves) when a
# redis-server can be started: the lease thread then publishes records while reloads do.
global=""
if command -v redis-server >/dev/null; then
        rport=$((20000 + RANDOM % 30000))
        redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no \
                >"$dir/redis.log" 2>&1 &
        redis=$!
        global="[global]
redis = 127.0.0.1:$rport
interval = 10ms
lease_ttl = 100ms"
else
        echo "daemon_threads: redis-server not found, the limiter host stays local"
fi

conf() { # conf RATE WITH_EXTRA
        cat >"$dir/t.conf" <<CONF
[arena]
name = dthreads
hugepages = off
dir = $dir
max_readers = 64
spare = 1MiB
[daemon]
metrics = 127.0.0.1:$port
heartbeat_ms = 20
maintenance_ms = 2
scan_budget = 512
[per_key]
rate = $1/s
burst = 5
capacity = 2000
idle_ttl = 5ms
on_full = evict
[host]
rate = 5000/s
burst = 100
capacity = 16
CONF
        if [ -n "$global" ]; then
                printf 'scope = global\nexpected_hosts = 2\n%s\n' "$global" >>"$dir/t.conf"
        fi
        if [ "$2" = 1 ]; then printf '[extra]\nrate = 10/s\nburst = 1\ncapacity = 64\n' >>"$dir/t.conf"; fi
}

# rates whose emission interval is a whole number of ns: a reload keeps a limiter's time unit
rates=(40 50 80 100 125 200 250 400 500 1000)
# GET /metrics from 127.0.0.1:$port through bash's /dev/tcp: the body on stdout.
scrape() {
        exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
        printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
        sed '1,/^\r$/d' <&3
        exec 3<&-
}

# a port at random; one in use makes throttled exit 69 (EX_UNAVAILABLE): another one then
for _ in 1 2 3 4 5; do
        port=$((20000 + RANDOM % 30000))
        conf 50 0
        "$build/daemon/throttled" -c "$dir/t.conf" 2>"$dir/daemon.log" &
        daemon=$!
        for _ in $(seq 100); do
                [ -e "$dir/throttle.dthreads" ] || ! kill -0 "$daemon" 2>/dev/null && break
                sleep 0.05
        done
        kill -0 "$daemon" 2>/dev/null && break
        wait "$daemon" || true
done
workers=()
for i in 1 2 3; do
        "$build/examples/thr-demo-worker" -a "$dir/throttle.dthreads" -s 3 -k 500 -i "$i" \
                >"$dir/worker$i.log" 2>&1 &
        workers+=($!)
done
for n in $(seq 20); do
        conf "${rates[$((n % ${#rates[@]}))]}" $((n % 2))
        if ! kill -HUP "$daemon" 2>/dev/null; then
                echo "throttled died:"
                cat "$dir/daemon.log"
                exit 1
        fi
        sleep 0.1
        page=$(scrape) # captured: grep -q on a live pipe can SIGPIPE the writer under pipefail
        grep -q '^throttle_admitted_total{limiter="per_key"} ' <<<"$page" ||
                { echo "no per_key series in a scrape:"; cat "$dir/daemon.log"; exit 1; }
done
for w in "${workers[@]}"; do wait "$w" || { echo "worker failed:"; cat "$dir"/worker*.log; exit 1; }; done
if [ -n "$global" ]; then
        page=$(scrape)
        grep -q '^throttle_global_state{limiter="host",state="leased"} 1' <<<"$page" ||
                { echo "host is not leased:"; scrape | grep global; cat "$dir/daemon.log"; exit 1; }
fi
"$build/daemon/shmctl" status -a "$dir/throttle.dthreads" >/dev/null
kill -TERM "$daemon"
rc=0
wait "$daemon" || rc=$?
if [ "$rc" -ne 0 ] || grep -q 'WARNING: ThreadSanitizer' "$dir/daemon.log"; then
        echo "throttled exited $rc"
        cat "$dir/daemon.log"
        exit 1
fi
grep -c 'reloaded' "$dir/daemon.log" | grep -qx 20 || { echo "not every reload applied"; cat "$dir/daemon.log"; exit 1; }
[ -z "${redis:-}" ] || { kill "$redis"; wait "$redis" 2>/dev/null || true; redis=""; }
echo "daemon_threads: 20 reloads and scrapes under load${global:+ (host global, leased)}, clean exit"
