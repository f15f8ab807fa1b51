#!/usr/bin/env bash
# demo_check.sh - proves that the demo's check (scripts/demo_check.awk) can fail: it passes
# worker outputs within the limits, and fails them when one key's per_key admissions pass its
# bound even though the requests both limiters admitted do not (the old check counted only
# those, so it could hardly fail), when the host-wide key's pass its bound, and when the workers
# admitted nothing or wrote something else.
#
#   demo_check.sh SOURCE_DIR
set -euo pipefail
src=$1
dir=$(mktemp -d /tmp/thr_demo_check.XXXXXX)
trap 'rm -rf "$dir"' EXIT

# worker FILE START END "P0 A0" "P1 A1" - a worker's output for keys user:0 and user:1.
worker() {
        local f=$1 start=$2 end=$3 p=0 a=0 k=0 pair
        : >"$f"
        shift 3
        for pair in "$@"; do
                read -r pk both <<<"$pair"
                echo "key user:$k per_key $pk admitted $both" >>"$f"
                p=$((p + pk))
                a=$((a + both))
                k=$((k + 1))
        done
        echo "total admitted $a per_key $p attempts 1000 elapsed_ns $((end - start))" \
                "start_ns $start end_ns $end" >>"$f"
}

# check NAME WANT [KEYS] - run the check on $dir/w*.out: WANT is pass or fail.
check() {
        local rc=0 out
        out=$(awk -v pk="5 1000000000 5" -v gl="50 1000000000 10" -v keys="${3:-2}" \
                -f "$src/scripts/demo_check.awk" "$dir"/w*.out) || rc=$?
        if { [ "$2" = pass ] && [ "$rc" -ne 0 ]; } || { [ "$2" = fail ] && [ "$rc" -eq 0 ]; }; then
                echo "demo_check: $1: expected $2, exit $rc:"
                echo "$out"
                exit 1
        fi
        echo "demo_check: $1: $2 as expected"
}

# 1 s on the arena clock: per_key allows 5 + 5 = 10 per key, host 10 + 50 = 60 in all.
worker "$dir/w1.out" 1000000000 1500000000 "5 3" "5 3"
worker "$dir/w2.out" 1200000000 2000000000 "5 3" "4 3"
check "within the limits" pass

worker "$dir/w2.out" 1200000000 2000000000 "6 1" "4 3"
check "per_key over for user:0, both limiters within" fail

worker "$dir/w1.out" 1000000000 1500000000 "10 30" "10 30"
worker "$dir/w2.out" 1200000000 2000000000 "0 0" "0 1"
check "both limiters admitted more than per_key" fail

worker "$dir/w1.out" 1000000000 1500000000 "10 10" "10 10"
worker "$dir/w2.out" 1200000000 2000000000 "0 0" "0 0"
check "per_key at its bound" pass

# 7 keys, each within per_key's 10, 63 admitted by host in all: over its 60
worker "$dir/w1.out" 1000000000 1500000000 "9 9" "9 9" "9 9" "9 9" "9 9" "9 9" "9 9"
worker "$dir/w2.out" 1200000000 2000000000 "0 0" "0 0" "0 0" "0 0" "0 0" "0 0" "0 0"
check "host over, every key within" fail 7
worker "$dir/w1.out" 1000000000 1500000000 "9 9" "9 9" "9 9" "9 9" "9 9" "9 9" "6 6"
check "host at its bound" pass 7
rm -f "$dir"/w*.out

worker "$dir/w1.out" 1000000000 1500000000 "0 0" "0 0"
worker "$dir/w2.out" 1200000000 2000000000 "0 0" "0 0"
check "nothing admitted" fail

echo "key user:0 admitted 3" >"$dir/w1.out"
check "the old output format" fail
echo "demo_check: every case as expected"
