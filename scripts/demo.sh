#!/usr/bin/env bash
# demo.sh - the main command: throttled and four worker processes sharing two limits.
#
#   scripts/demo.sh [--keep] [--seconds N] [--build DIR] [--no-setup]
#
# Runs scripts/setup.sh, builds throttled, shmctl and thr-demo-worker in build/, and starts a
# throttled of its own in the background (its log goes to build/demo/throttled.log) on an arena
# of its own: build/demo/throttled.conf is daemon/throttled.conf with the arena named
# `thr-demo` ($THR_DEMO_ARENA), metrics on a free loopback port from 19477 up (not the default
# 9477) and the HTTP API on one from 19578 up (not 9478), so a throttled already running on this
# host (arena `main`, its ports) is never touched. Once `shmctl status` answers, it runs 4
# thr-demo-worker processes at once for 5 seconds against 20 keys "user:0".."user:19"; each
# request must pass the limiter `per_key` (5/s, burst 5, per user) and then `host` (50/s,
# burst 10, one key for everybody). It shows shmctl's view of the arena, then checks what the
# workers were admitted against the limits the arena holds (shmctl --json limiters) over the
# time the workers ran (arena clock, first start to last end), in a PASS/FAIL table
# (scripts/demo_check.awk): per key, what per_key admitted, at most burst + rate * elapsed; for
# the host-wide key, what host admitted, the same. Finally it stops its throttled with SIGTERM,
# expects exit status 0, and removes the arena it created (its hugepages go back to the pool).
#
# It removes no file but the arena its own throttled created (recorded in build/demo/arena.path
# until removed), and only once no daemon holds it. It refuses to start when an arena of its name
# exists that it did not create (held by another daemon, or left by someone else).
#   --keep        leave throttled running (its pid is in build/demo/throttled.pid; a later run
#                 of this script stops it first, if its command line shows it is the demo's)
#   --seconds N   run the workers N seconds (default 5)
#   --build DIR   use the build tree DIR as it is configured (default: configure build/)
#   --no-setup    do not run scripts/setup.sh (CI ran it already)
# Exit status 0 when every check passes.
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=build
CONFIGURE=1
SETUP=1
ARENA=${THR_DEMO_ARENA:-thr-demo}
WORKERS=4
RUN_SECONDS=5
KEYS=20

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

# Paths that depend on --build.
set_paths() {
        DEMO_DIR=$BUILD/demo
        CONF=$DEMO_DIR/throttled.conf
        LOG=$DEMO_DIR/throttled.log
        PIDFILE=$DEMO_DIR/throttled.pid
        ARENA_RECORD=$DEMO_DIR/arena.path
        THROTTLED=$BUILD/daemon/throttled
        SHMCTL=$BUILD/daemon/shmctl
        WORKER=$BUILD/examples/thr-demo-worker
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

# held ARENA - whether a daemon holds the arena (name or path); false when there is none.
held() {
        local status
        status=$("$SHMCTL" -a "$1" --json status 2>/dev/null) || return 1
        grep -q '"alive":true' <<<"$status"
}

# The demo's own arena, recorded when its throttled created it: removed once no daemon holds it.
remove_own_arena() {
        local path
        path=$(cat "$ARENA_RECORD" 2>/dev/null || true)
        [ -n "$path" ] || return 0
        if [ -e "$path" ] && held "$path"; then
                echo "demo: $path is held by a daemon: left in place" >&2
                return 0
        fi
        if [ -e "$path" ]; then
                rm -f -- "$path"
                echo "demo: removed the demo's arena $path"
        fi
        rm -f "$ARENA_RECORD"
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
                rm -f "$PIDFILE"
                remove_own_arena
        fi
}

# whether PID is a throttled started by this demo: its command line names the demo's config.
ours() {
        [ "$(cat "/proc/$1/comm" 2>/dev/null)" = throttled ] &&
                grep -qxF -- "$CONF" <<<"$(tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null)"
}

# A daemon left running by an earlier --keep run holds the demo's arena: stop it first.
stop_previous() {
        local pid i
        pid=$(cat "$PIDFILE" 2>/dev/null || true)
        rm -f "$PIDFILE"
        [ -n "$pid" ] && ours "$pid" || return 0
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
        if [ "$CONFIGURE" -eq 1 ]; then
                cmake -S . -B "$BUILD" --log-level=WARNING -DTHR_WERROR=ON
        fi
        cmake --build "$BUILD" -j2 --target throttled shmctl thr-demo-worker
}

# A loopback port from $1 up (100 of them) that nothing listens on (a refused connection).
free_port() {
        local p
        for ((p = $1; p < $1 + 100; p++)); do
                if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
                        echo "$p"
                        return 0
                fi
        done
        return 1
}

# The demo's config: the default one with its own arena name, metrics and HTTP API ports.
write_config() {
        METRICS_PORT=$(free_port 19477) || die "no free loopback port in 19477..19576 for the metrics"
        HTTP_PORT=$(free_port 19578) || die "no free loopback port in 19578..19677 for the HTTP API"
        sed -E -e "s/^name = main\$/name = $ARENA/" \
                -e "s/^metrics = .*\$/metrics = 127.0.0.1:$METRICS_PORT/" \
                -e "s/^http = .*\$/http = 127.0.0.1:$HTTP_PORT/" \
                daemon/throttled.conf >"$CONF"
        grep -qx "name = $ARENA" "$CONF" && grep -qx "metrics = 127.0.0.1:$METRICS_PORT" "$CONF" &&
                grep -qx "http = 127.0.0.1:$HTTP_PORT" "$CONF" ||
                die "cannot make the demo's config from daemon/throttled.conf"
}

# One try over the HTTP API (doc/http-api.md), a key of its own: where curl is.
show_http() {
        command -v curl >/dev/null 2>&1 || return 0
        step "POST http://127.0.0.1:$HTTP_PORT/v1/limiters/per_key/try (the HTTP API)"
        curl -sS -X POST -d '{"key":"http-demo"}' "http://127.0.0.1:$HTTP_PORT/v1/limiters/per_key/try" ||
                die "the HTTP API did not answer"
        echo
}

# GET /metrics from the demo's throttled (bash's /dev/tcp: no curl needed).
scrape() {
        (
                exec 3<>"/dev/tcp/127.0.0.1/$METRICS_PORT" || exit 1
                printf 'GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
                cat <&3
        )
}

show_metrics() {
        step "GET http://127.0.0.1:$METRICS_PORT/metrics (request counters and keys)"
        local out
        out=$(scrape) || die "cannot scrape the metrics on 127.0.0.1:$METRICS_PORT"
        grep -E '^throttle_(admitted|denied)_total|^throttle_keys\{' <<<"$out" ||
                die "the scrape has no request counters: $out"
}

# Refuse to run when an arena of the demo's name exists that the demo did not create.
check_name_free() {
        local path
        remove_own_arena
        path=$("$SHMCTL" -a "$ARENA" --json status 2>/dev/null |
                grep -oE '"path":"[^"]*"' | cut -d'"' -f4 || true)
        [ -z "$path" ] && return 0
        if held "$ARENA"; then
                die "an arena named $ARENA ($path) is run by a throttled this demo did not start;" \
                        "stop it, or run the demo under another name: THR_DEMO_ARENA=NAME $0"
        fi
        die "an arena named $ARENA ($path) exists and this demo did not create it; remove it" \
                "if it is a leftover, or run the demo under another name: THR_DEMO_ARENA=NAME $0"
}

start_daemon() {
        step "start throttled -c $CONF (arena $ARENA; log: $LOG)"
        THROTTLE_LOG=${THROTTLE_LOG:-info} "$THROTTLED" -c "$CONF" </dev/null >"$LOG" 2>&1 &
        daemon_pid=$!
        echo "$daemon_pid" >"$PIDFILE"
        local i path
        for ((i = 0; i < 100; i++)); do
                path=$(sed -nE 's/.* created arena (.*) \([0-9]+ bytes\)$/\1/p' "$LOG")
                if [ -n "$path" ] && [ ! -e "$ARENA_RECORD" ]; then
                        echo "$path" >"$ARENA_RECORD"
                fi
                if exited "$daemon_pid"; then
                        cat "$LOG" >&2
                        daemon_pid=
                        die "throttled exited at start (log above)"
                fi
                if [ -n "$path" ] && "$SHMCTL" -a "$ARENA" status >/dev/null 2>&1; then
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

check_limits() {
        step "check: admissions against the limits"
        awk -v pk="$(limits_of per_key)" -v gl="$(limits_of host)" -v keys="$KEYS" \
                -f scripts/demo_check.awk "$DEMO_DIR"/worker.*.out
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
        remove_own_arena
        [ "$rc" -eq 0 ] || die "throttled exited with status $rc"
}

main() {
        while [ $# -gt 0 ]; do
                case "$1" in
                --keep) keep=1 ;;
                --seconds)
                        RUN_SECONDS=${2:?--seconds needs a number}
                        shift
                        ;;
                --build)
                        BUILD=${2:?--build needs a directory}
                        CONFIGURE=0
                        shift
                        ;;
                --no-setup) SETUP=0 ;;
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
        set_paths
        trap cleanup EXIT
        trap 'exit 130' INT
        trap 'exit 143' TERM

        [ "$SETUP" -eq 0 ] || scripts/setup.sh
        build
        mkdir -p "$DEMO_DIR"
        stop_previous
        write_config
        check_name_free
        rm -f "$DEMO_DIR"/worker.*
        start_daemon
        run_workers
        show_arena
        show_metrics
        show_http
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
