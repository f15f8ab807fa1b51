#!/bin/bash
# before/after, interleaved per backing
B0=/tmp/wt-before/build/bench
B1=/work/main/build/bench
cd /tmp/b12f
for backing in hugetlbfs shm; do
  for v in before after; do
    if [ $v = before ]; then B=$B0; else B=$B1; fi
    $B/bench_try --backing $backing --runs 5 > try_${v}_${backing}.txt 2>&1
  done
  for v in before after; do
    if [ $v = before ]; then B=$B0; else B=$B1; fi
    $B/bench_scale --procs 1,2,8 --work-ns 0 --rounds 3 --backing $backing --backends throttle,floor,nginx-hash,nginx-real > scale_${v}_${backing}.txt 2>&1
  done
done
# churn repeated, interleaved (hugetlbfs)
for i in 1 2 3 4 5; do
  for v in before after; do
    if [ $v = before ]; then B=$B0; else B=$B1; fi
    $B/bench_scale --procs 1,2,8 --scenarios churn --work-ns 0 --rounds 3 --backends throttle,floor,nginx-hash > churn_${v}_$i.txt 2>&1
  done
done
echo done > DONE
