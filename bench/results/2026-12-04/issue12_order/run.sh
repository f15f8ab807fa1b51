#!/bin/sh
# Issue 12, try's order: the build before (BASE, a worktree of 71e673f built the same way) against
# this one (NEW), interleaved: bench_try, then bench_scale on hugetlbfs (3 pairs of runs) and /dev/shm
# (1 pair). final/ is the order as committed (a key handle's call: prefetch, section, clock, look;
# the plain call unchanged); clock_first_everywhere/ is 0cd2ca1 (every call hashing and prefetching
# before the section and reading the clock before its probe, measured first); plain_prefetch_88adc6c/
# is 88adc6c (the plain call hashing and prefetching before the section, its clock after the probe). variants/ holds the shorter runs
# that separated the two (xq_*: 2 processes, 10k and 1M keys, BASE / NEW = 0cd2ca1 / nopf = 0cd2ca1
# without the prefetch / pfw = with a write prefetch; xl_*: BASE / NEW = 0cd2ca1 / late = 88adc6c).
# Needs Release-like builds (RelWithDebInfo) of both with THR_BENCH=ON and
# `echo 512 > /proc/sys/vm/nr_hugepages` for the 1M-key scenario on hugetlbfs.
set -eu
mkdir -p "${1:-bench/results/2026-12-04/issue12_order/final}"
BASE=${BASE:-/tmp/wt-base/build}
NEW=${NEW:-build}
out=${1:-bench/results/2026-12-04/issue12_order/final}
for v in base new; do
        b=$NEW; [ $v = base ] && b=$BASE
        "$b/bench/bench_try" --backing hugetlbfs >"$out/bench_try_$v.txt" 2>&1
done
scale() {
        "$1/bench/bench_scale" --procs 1,2 --scenarios hot,10k,1m,denied \
                --backends floor,throttle,throttle-key,nginx-hash --work-ns 0 --rounds 3 --backing "$2"
}
for i in 1 2 3; do
        scale "$BASE" hugetlbfs >"$out/hugetlbfs_base_run$i.txt" 2>&1
        scale "$NEW" hugetlbfs >"$out/hugetlbfs_new_run$i.txt" 2>&1
done
scale "$BASE" shm >"$out/shm_base_run1.txt" 2>&1
scale "$NEW" shm >"$out/shm_new_run1.txt" 2>&1
