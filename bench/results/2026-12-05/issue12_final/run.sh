#!/bin/bash
# issue 12 closing measurement: before = b175661 (main before issue 12's first lever), after = ad8324d
set -x
cd /tmp/final
B=/tmp/wt-before/build/bench
A=/tmp/wt-after/build/bench
for bk in hugetlbfs shm; do
  for w in before after; do
    [ $w = before ] && D=$B || D=$A
    $D/bench_try --runs 5 --backing $bk > try_${w}_${bk}.txt 2>&1
  done
done
SC=hot,10k,1m,1m-zipf,denied,10k@100/s,1k@10k/s,churn
BE=floor,throttle,throttle-tsc,nginx-hash,mutex-local
for run in "before hugetlbfs" "after hugetlbfs" "after shm" "before shm"; do
  set -- $run
  [ $1 = before ] && D=$B || D=$A
  $D/bench_scale --backends $BE --scenarios $SC --procs 1,2,8 --work-ns 0 --rounds 3 --backing $2 --out /tmp/final/out_$1_$2 > scale_$1_$2.txt 2>&1
done
for w in before after; do
  [ $w = before ] && D=$B || D=$A
  $D/bench_scale --procs 1 --scenarios hot,10k,1m,denied,churn --backends floor,throttle,nginx-hash,mutex-local --callgrind --cg-ops 100000 --backing shm > cg_${w}.txt 2>&1
done
date > DONE
