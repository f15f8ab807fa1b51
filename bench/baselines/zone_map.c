/*
 * zone_map.c - the baselines' shared mapping (zone_map.h).
 */
#include <string.h>
#include <sys/mman.h>

#include "zone_map.h"

#define HUGE_SIZE (2ul * 1024 * 1024) /* size multiple for MAP_HUGETLB */

void *bench_zone_map(size_t *size, const char *backing, int *huge)
{
        int prot = PROT_READ | PROT_WRITE;
        int flags = MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE;
        if (!backing || strcmp(backing, "shm") != 0) {
                size_t hs = (*size + HUGE_SIZE - 1) & ~(HUGE_SIZE - 1);
                void *p = mmap(NULL, hs, prot, flags | MAP_HUGETLB, -1, 0);
                if (p != MAP_FAILED) {
                        *size = hs;
                        *huge = 1;
                        return p;
                }
        }
        *huge = 0;
        void *p = mmap(NULL, *size, prot, flags, -1, 0);
        if (p == MAP_FAILED)
                return NULL;
        madvise(p, *size, MADV_HUGEPAGE);
        return p;
}
