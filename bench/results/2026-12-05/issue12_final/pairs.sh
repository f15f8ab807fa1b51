#!/bin/bash
cd /tmp/final
B=/tmp/wt-before/build/bench
A=/tmp/wt-after/build/bench
for i in 2 3; do
 for w in before after; do
  [ $w = before ] && D=$B || D=$A
  $D/bench_scale --backends floor,throttle,throttle-tsc,nginx-hash,mutex-local --scenarios hot,10k,1m,denied,10k@100/s,1k@10k/s --procs 1,2,8 --work-ns 0 --rounds 3 --backing hugetlbfs --out /tmp/final/pair${i}_${w} > pair${i}_${w}.txt 2>&1
 done
done
date > PAIRS_DONE
