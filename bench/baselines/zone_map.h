/*
 * zone_map.h - the shared anonymous mapping a lock-based baseline keeps its table in (nginx-hash,
 * nginx-real, sharded-mutex), made before the workers fork so every worker sees it at the same
 * address: on hugetlb pages like throttle's arena, so no baseline pays 4 kB page faults the others
 * do not (each forked worker would minor-fault every shared 4 kB page it first touches).
 */
#ifndef THR_BENCH_ZONE_MAP_H
#define THR_BENCH_ZONE_MAP_H

#include <stddef.h>

/*
 * bench_zone_map - *SIZE bytes, shared and anonymous, populated: hugetlb pages (*SIZE rounded up
 * to 2 MiB) unless BACKING is "shm" or the pool is short, else normal pages with the
 * MADV_HUGEPAGE hint the throttle arena gives. *HUGE says which. NULL if mmap failed (errno set).
 */
void *bench_zone_map(size_t *size, const char *backing, int *huge);

#endif
