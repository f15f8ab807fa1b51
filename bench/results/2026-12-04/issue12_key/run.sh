#!/bin/sh
# Key handles (thr_key_try) against thr_limiter_try, the floor and nginx-hash: 3 runs on hugetlbfs and
# 1 on /dev/shm, each bench_scale run interleaving the backends in 3 rounds. Needs a Release build in
# build/ and `echo 512 > /proc/sys/vm/nr_hugepages` for the 1M-key scenario on hugetlbfs.
set -eu
out=${1:-bench/results/2026-12-04/issue12_key}
for i in 1 2 3; do
        build/bench/bench_scale --procs 1,2 --scenarios hot,10k,1m,denied \
                --backends floor,throttle,throttle-key,nginx-hash --work-ns 0 --rounds 3 \
                --backing hugetlbfs >"$out/hugetlbfs_run$i.txt" 2>&1
done
build/bench/bench_scale --procs 1,2 --scenarios hot,10k,1m,denied \
        --backends floor,throttle,throttle-key,nginx-hash --work-ns 0 --rounds 3 \
        --backing shm >"$out/shm_run1.txt" 2>&1
