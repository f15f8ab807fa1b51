#!/usr/bin/env bash
# demo.sh - the main command: throttled and four worker processes sharing two limits.
#
#   scripts/demo.sh [--keep]
#
# Runs scripts/setup.sh, builds throttled, shmctl and thr-demo-worker in build/, removes any
# stale demo arena and starts `throttled -c daemon/throttled.conf` in the background (its log
# goes to build/demo/throttled.log). Once `shmctl status` answers, it runs 4 thr-demo-worker
# processes at once for 5 seconds against 20 keys "user:0".."user:19"; each request must pass
# the limiter `per_key` (5/s, burst 5, per user) and then `global` (50/s, burst 10, one key for
# everybody). It shows shmctl's view of the arena, then adds up what the workers admitted and
# checks it against the limits the arena holds (shmctl --json limiters) over the time the workers
# ran (arena clock, first start to last end): per key at most burst + rate * elapsed, and the
# same for the global key, in a PASS/FAIL table. Finally it stops throttled with SIGTERM,
# expects exit status 0, and removes the demo's arena (its hugepages go back to the pool).
#   --keep  leave throttled running (its pid is in build/demo/throttled.pid; a later run of
#           this script stops it first)
# Exit status 0 when every check passes.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=build
CONF=daemon/throttled.conf
ARENA=main
WORKERS=4
RUN_SECONDS=5
KEYS=20

DEMO_DIR=$BUILD/demo
LOG=$DEMO_DIR/throttled.log
PIDFILE=$DEMO_DIR/throttled.pid
ARENA_FILES=("/var/lib/hugetlbfs/global/pagesize-2MB/throttle.$ARENA" "/dev/shm/throttle.$ARENA")
THROTTLED=$BUILD/daemon/throttled
SHMCTL=$BUILD/daemon/shmctl
WORKER=$BUILD/examples/thr-demo-worker

keep=0
daemon_pid=
worker_pids=()

usage() {
        awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

step() {
        echo
        echo "==== $*"
}

die() {
        echo "demo: FAILED: $*" >&2
        exit 1
}

# exited PID - whether PID is gone or a zombie (kill -0 succeeds on a zombie).
exited() {
        local state
        state=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null || true)
        [ -z "$state" ] || [ "$state" = Z ]
}

# wait_exit PID SECONDS - wait until PID exits, SIGKILL it after SECONDS; return its status.
wait_exit() {
        local pid=$1 i
        for ((i = 0; i < $2 * 10; i++)); do
                exited "$pid" && break
                sleep 0.1
        done
        if ! exited "$pid"; then
                echo "demo: process $pid did not exit within $2 s: SIGKILL" >&2
                kill -KILL "$pid" 2>/dev/null || true
        fi
        local rc=0
        wait "$pid" || rc=$?
        return "$rc"
}

cleanup() {
        local pid
        for pid in "${worker_pids[@]}"; do
                kill -TERM "$pid" 2>/dev/null || true
        done
        if [ -n "$daemon_pid" ]; then
                echo "demo: stopping throttled (pid $daemon_pid)" >&2
                kill -TERM "$daemon_pid" 2>/dev/null || true
                wait_exit "$daemon_pid" 10 || true
                rm -f "$PIDFILE" "${ARENA_FILES[@]}"
        fi
}

# A daemon left running by an earlier --keep run holds the arena: stop it first.
stop_previous() {
        local pid i
        pid=$(cat "$PIDFILE" 2>/dev/null || true)
        rm -f "$PIDFILE"
        [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = throttled ] || return 0
        echo "demo: stopping the throttled left running by an earlier run (pid $pid)"
        kill -TERM "$pid"
        for ((i = 0; i < 100; i++)); do
                [ -d "/proc/$pid" ] || return 0
                sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
}

build() {
        step "build ($BUILD)"
        cmake -S . -B "$BUILD" --log-level=WARNING -DTHR_WERROR=ON
        cmake --build "$BUILD" -j2 --target throttled shmctl thr-demo-worker
}

start_daemon() {
        step "start throttled -c $CONF (log: $LOG)"
        rm -f "${ARENA_FILES[@]}"
        THROTTLE_LOG=${THROTTLE_LOG:-info} "$THROTTLED" -c "$CONF" </dev/null >"$LOG" 2>&1 &
        daemon_pid=$!
        echo "$daemon_pid" >"$PIDFILE"
        local i
        for ((i = 0; i < 100; i++)); do
                if exited "$daemon_pid"; then
                        cat "$LOG" >&2
                        daemon_pid=
                        die "throttled exited at start (log above)"
                fi
                if "$SHMCTL" -a "$ARENA" status >/dev/null 2>&1; then
                        echo "throttled is up (pid $daemon_pid) after $((i / 10)).$((i % 10)) s"
                        return 0
                fi
                sleep 0.1
        done
        cat "$LOG" >&2
        die "shmctl status did not succeed within 10 s of starting throttled"
}

run_workers() {
        step "run $WORKERS workers for $RUN_SECONDS s against $KEYS keys"
        local i bad=0
        for ((i = 1; i <= WORKERS; i++)); do
                "$WORKER" -a "$ARENA" -s "$RUN_SECONDS" -k "$KEYS" -i "$i" \
                        >"$DEMO_DIR/worker.$i.out" 2>"$DEMO_DIR/worker.$i.err" &
                worker_pids+=($!)
        done
        for ((i = 1; i <= WORKERS; i++)); do
                if ! wait_exit "${worker_pids[i - 1]}" $((RUN_SECONDS + 30)); then
                        echo "worker $i failed:" >&2
                        cat "$DEMO_DIR/worker.$i.err" >&2
                        bad=1
                fi
                grep '^total' "$DEMO_DIR/worker.$i.out" | sed "s/^/worker $i: /" || true
        done
        worker_pids=()
        [ "$bad" -eq 0 ] || die "a worker failed"
}

show_arena() {
        step "shmctl status"
        "$SHMCTL" -a "$ARENA" status
        step "shmctl limiters"
        "$SHMCTL" -a "$ARENA" limiters
        step "shmctl keys per_key -n 10"
        "$SHMCTL" -a "$ARENA" keys per_key -n 10
}

# limits_of LIMITER - "RATE_N PERIOD_NS BURST" of LIMITER as the arena holds it (shmctl --json).
limits_of() {
        local obj n p b
        obj=$("$SHMCTL" -a "$ARENA" --json limiters | grep -o "{\"name\":\"$1\"[^}]*}") ||
                die "shmctl --json limiters does not show limiter $1"
        n=$(grep -oE '"rate_n":[0-9]+' <<<"$obj" | cut -d: -f2)
        p=$(grep -oE '"period_ns":[0-9]+' <<<"$obj" | cut -d: -f2)
        b=$(grep -oE '"burst":[0-9]+' <<<"$obj" | cut -d: -f2)
        if [ -z "$n" ] || [ -z "$p" ] || [ -z "$b" ]; then
                die "cannot read the limits of $1: $obj"
        fi
        echo "$n $p $b"
}

# Sum the workers' admissions per key and overall, and check each against what GCRA allows from
# a fresh key over the time the workers ran: burst + floor(rate * elapsed), elapsed being the
# span from the first worker's start to the last one's end on the arena clock.
check_limits() {
        step "check: admissions against the limits"
        local pk gl
        pk=$(limits_of per_key)
        gl=$(limits_of global)
        awk -v pk="$pk" -v gl="$gl" -v keys="$KEYS" '
        $1 == "key" { adm[$2] += $4 }
        $1 == "total" {
                total += $3; attempts += $5
                for (i = 6; i < NF; i += 2) f[$i] = $(i + 1)
                if (start == "" || f["start_ns"] < start) start = f["start_ns"]
                if (end == "" || f["end_ns"] > end) end = f["end_ns"]
                workers++
        }
        function bound(lim, el_ns,  v) {
                split(lim, v, " ")
                return v[3] + int(v[1] * el_ns / v[2])
        }
        function describe(name, lim,  v) {
                split(lim, v, " ")
                printf "%-8s burst %d + %d per %g s * elapsed\n", name, v[3], v[1], v[2] / 1e9
        }
        function row(name, n, b) {
                ok = n <= b
                printf "%-24s %9d %9d  %s\n", name, n, b, ok ? "PASS" : "FAIL"
                if (!ok) fails++
        }
        END {
                el = end - start
                printf "%d workers, %d attempts, elapsed %.3f s (first start to last end)\n",
                        workers, attempts, el / 1e9
                describe("per_key", pk)
                describe("global", gl)
                printf "\n%-24s %9s %9s  %s\n", "limit", "admitted", "bound", "result"
                for (k = 0; k < keys; k++)
                        row("per_key user:" k, adm["user:" k], bound(pk, el))
                row("global (all keys)", total, bound(gl, el))
                if (total == 0) {
                        print "nothing was admitted at all: FAIL"
                        fails++
                }
                print ""
                if (fails) print "FAIL: " fails " check(s) failed"
                else print "PASS: every limit held"
                exit (fails > 0)
        }' "$DEMO_DIR"/worker.*.out
}

stop_daemon() {
        step "stop throttled (SIGTERM)"
        local pid=$daemon_pid rc=0
        daemon_pid=
        kill -TERM "$pid"
        wait_exit "$pid" 10 || rc=$?
        rm -f "$PIDFILE"
        echo "throttled exited with status $rc; last lines of its log:"
        tail -n 5 "$LOG"
        # The daemon keeps the arena for its next start; the demo's is done: give the pages back.
        rm -f "${ARENA_FILES[@]}"
        [ "$rc" -eq 0 ] || die "throttled exited with status $rc"
}

main() {
        while [ $# -gt 0 ]; do
                case "$1" in
                --keep) keep=1 ;;
                -h | --help)
                        usage
                        exit 0
                        ;;
                *)
                        echo "demo: unknown option '$1'" >&2
                        usage >&2
                        exit 2
                        ;;
                esac
                shift
        done
        trap cleanup EXIT
        trap 'exit 130' INT
        trap 'exit 143' TERM

        scripts/setup.sh
        build
        mkdir -p "$DEMO_DIR"
        stop_previous
        rm -f "$DEMO_DIR"/worker.*
        start_daemon
        run_workers
        show_arena
        local ok=0
        check_limits || ok=1
        if [ "$keep" -eq 1 ]; then
                echo
                echo "throttled keeps running (pid $daemon_pid, --keep); stop it with:"
                echo "  kill \$(cat $PIDFILE)"
                daemon_pid=
        else
                stop_daemon
        fi
        [ "$ok" -eq 0 ] || die "a limit was exceeded (table above)"
        echo
        echo "demo: PASS"
}

main "$@"
