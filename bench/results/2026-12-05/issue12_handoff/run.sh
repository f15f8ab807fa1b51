#!/bin/bash
# Issue 12, the shard lock handed to a waiting insert between two segments of the daemon's pass.
# BEFORE: a build of the commit before (f5a2ce5), AFTER: this commit's build. Interleaved pairs.
# usage: BEFORE=/path/to/build-before AFTER=/path/to/build-after OUT=dir run.sh
set -u
OUT=${OUT:-.}
for pass in 1 2 3; do
  for side in before after; do
    dir=$BEFORE; [ $side = after ] && dir=$AFTER
    $dir/bench/bench_scale --procs 1,2,8 --scenarios churn --backends throttle,nginx-hash \
      --work-ns 0 --rounds 3 > $OUT/churn_${side}_$pass.txt 2>&1
  done
done
for side in before after; do
  dir=$BEFORE; [ $side = after ] && dir=$AFTER
  $dir/bench/bench_evict --runs 5 > $OUT/evict_${side}.txt 2>&1
done
