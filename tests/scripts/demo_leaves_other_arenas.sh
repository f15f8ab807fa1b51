#!/usr/bin/env bash
# demo_leaves_other_arenas.sh - proves that scripts/demo.sh never touches an arena but its own:
# with a "production" throttled running the default arena name `main`, the demo runs on its own
# arena and passes, and afterwards `main` is the same file, still held by the same daemon (the
# old demo rm -f'ed throttle.main from hugetlbfs and /dev/shm at start, at the end and in its
# trap: the production daemon kept an unlinked file and every new client got "no such arena").
# And with an arena of the demo's name held by a daemon the demo did not start, the demo refuses
# to run and leaves it alone.
#
#   demo_leaves_other_arenas.sh BUILD_DIR SOURCE_DIR
# Exits 77 (skipped) when an arena `main` exists already: it is not this test's to use.
set -euo pipefail
build=$(cd "$1" && pwd)
src=$2
dir=$(mktemp -d /dev/shm/thrtest.demo.XXXXXX)
prod=/dev/shm/throttle.main
held=/dev/shm/throttle.thr-demo-held
pids=()
cleanup() {
        local p
        for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
        for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
        rm -f "$prod" "$held"
        rm -rf "$dir"
}

if "$build/daemon/shmctl" -a main status >/dev/null 2>&1 || [ -e "$prod" ] || [ -e "$held" ]; then
        echo "demo_leaves_other_arenas: an arena 'main' or 'thr-demo-held' exists here: skipped"
        exit 77
fi
trap cleanup EXIT

# start CONF NAME_OR_PATH - run a throttled on CONF and wait until shmctl sees it alive.
start() {
        "$build/daemon/throttled" -c "$1" 2>>"$dir/daemons.log" &
        pids+=($!)
        for _ in $(seq 100); do
                "$build/daemon/shmctl" -a "$2" --json status 2>/dev/null |
                        grep -q '"alive":true' && return 0
                sleep 0.05
        done
        echo "throttled on $1 did not come up:"
        cat "$dir/daemons.log"
        exit 1
}

printf '[arena]\nname = main\nhugepages = off\nspare = 1MiB\n[daemon]\nmetrics =\n' \
        >"$dir/prod.conf"
printf '[per_key]\nrate = 5/s\n[host]\nrate = 50/s\n' >>"$dir/prod.conf"
start "$dir/prod.conf" main
ino=$(stat -c %i "$prod")
prod_pid=${pids[0]}

rc=0
(cd "$src" && scripts/demo.sh --no-setup --build "$build" --seconds 2) >"$dir/demo.out" 2>&1 ||
        rc=$?
if [ "$rc" -ne 0 ] || ! grep -q '^demo: PASS' "$dir/demo.out"; then
        echo "the demo failed (exit $rc):"
        cat "$dir/demo.out"
        exit 1
fi
if [ ! -e "$prod" ] || [ "$(stat -c %i "$prod")" != "$ino" ]; then
        echo "the demo removed or replaced $prod:"
        cat "$dir/demo.out"
        exit 1
fi
status=$("$build/daemon/shmctl" -a main --json status) || true
grep -q "\"alive\":true,\"pid\":$prod_pid," <<<"$status" || {
        echo "the production daemon no longer runs arena main"
        exit 1
}
echo "demo_leaves_other_arenas: the demo passed; arena main untouched, its daemon still runs it"

# An arena with the demo's name, run by a daemon the demo did not start: refused, left alone.
printf '[arena]\nname = thr-demo-held\nhugepages = off\nspare = 1MiB\n[daemon]\nmetrics =\n' \
        >"$dir/held.conf"
printf '[per_key]\nrate = 5/s\n[host]\nrate = 50/s\n' >>"$dir/held.conf"
start "$dir/held.conf" thr-demo-held
held_ino=$(stat -c %i "$held")
rc=0
(cd "$src" && THR_DEMO_ARENA=thr-demo-held scripts/demo.sh --no-setup --build "$build" \
        --seconds 1) >"$dir/demo2.out" 2>&1 || rc=$?
if [ "$rc" -eq 0 ] || ! grep -q "did not start" "$dir/demo2.out"; then
        echo "the demo ran on an arena another daemon holds (exit $rc):"
        cat "$dir/demo2.out"
        exit 1
fi
[ "$(stat -c %i "$held")" = "$held_ino" ] || {
        echo "the demo touched the held arena"
        exit 1
}
echo "demo_leaves_other_arenas: the demo refused an arena of its name held by another daemon"
