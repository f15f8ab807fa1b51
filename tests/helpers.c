/*
 * helpers.c - fixtures shared by the tests.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "helpers.h"

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

struct shm_limiter_spec tspec(const char *name, uint64_t rate_n, uint64_t period_ns, uint64_t burst,
                              uint64_t initial)
{
        struct shm_limiter_spec s = {.rate_n = rate_n,
                                     .period_ns = period_ns,
                                     .burst = burst,
                                     .initial = initial,
                                     .max_reserve_ns = 60 * SEC,
                                     .capacity = 1024};
        snprintf(s.name, sizeof(s.name), "%s", name);
        return s;
}

void tarena_make(struct tarena *t, uint32_t clock, enum shm_hugepages huge,
                 const struct shm_limiter_spec *specs, size_t n)
{
        memset(t, 0, sizeof(*t));
        snprintf(t->dir, sizeof(t->dir), "/dev/shm/thrtest.XXXXXX");
        cr_assert_not_null(mkdtemp(t->dir), "mkdtemp");
        struct shm_arena_spec s = {.hugepages = huge,
                                   .mode = 0600,
                                   .gid = (gid_t)-1,
                                   .clock = clock,
                                   .max_limiters = 16,
                                   .max_readers = 256,
                                   .spare_bytes = 1 << 20,
                                   .nlimiters = n,
                                   .limiters = specs};
        snprintf(s.name, sizeof(s.name), "t%d", (int)getpid());
        s.dir = huge == SHM_HUGE_REQUIRE ? NULL : t->dir;
        char err[512] = "";
        int rc = shm_arena_create(&s, &t->map, err, sizeof(err));
        cr_assert(rc >= 0, "shm_arena_create: %d %s", rc, err);
        snprintf(t->path, sizeof(t->path), "%s", t->map.path);
        rc = thr_arena_open(t->path, 0, &t->a);
        cr_assert_eq(rc, 0, "thr_arena_open(%s): %s", t->path, thr_strerror(rc));
}

void tarena_free(struct tarena *t)
{
        if (t->a)
                thr_arena_close(t->a);
        t->a = NULL;
        shm_arena_detach(&t->map);
        if (t->path[0])
                unlink(t->path);
        if (t->dir[0])
                rmdir(t->dir);
}

thr_limiter *tlim(struct tarena *t, const char *name)
{
        thr_limiter *l = NULL;
        int rc = thr_limiter_open(t->a, name, &l);
        cr_assert_eq(rc, 0, "thr_limiter_open(%s): %s", name, thr_strerror(rc));
        return l;
}

struct thr_table *ttable(struct tarena *t, const char *name)
{
        int idx = shm_dir_find(&t->map, name);
        cr_assert_geq(idx, 0, "limiter %s in the arena", name);
        const struct thr_dir_entry *de =
            (const struct thr_dir_entry *)shm_at(t->map.base, shm_hdr(&t->map)->dir_off) + idx;
        return shm_at(t->map.base, de->table_off);
}

bool thugepages_available(uint64_t pages, char *why, size_t whylen)
{
        char path[256];
        if (shm_arena_path("probe", NULL, SHM_HUGE_REQUIRE, path, sizeof(path)) < 0) {
                snprintf(why, whylen, "no 2 MiB hugetlbfs mount (run scripts/setup.sh as root)");
                return false;
        }
        FILE *f = fopen("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages", "re");
        unsigned long long free_pages = 0;
        if (!f || fscanf(f, "%llu", &free_pages) != 1)
                free_pages = 0;
        if (f)
                fclose(f);
        if (free_pages < pages) {
                snprintf(why, whylen, "hugepage pool has %llu free 2 MiB pages, need %llu",
                         free_pages, (unsigned long long)pages);
                return false;
        }
        return true;
}

void tchild_tie(pid_t parent)
{
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
                _exit(99); /* the parent is already gone */
}

pid_t tfork(void)
{
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid == 0)
                tchild_tie(parent);
        return pid;
}

bool tunder_instrumentation(void)
{
#ifdef THR_UNDER_SANITIZER
        return true;
#else
        return RUNNING_ON_VALGRIND != 0;
#endif
}
