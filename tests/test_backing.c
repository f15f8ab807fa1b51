/*
 * test_backing.c - proves that an arena records the backing it really got: /dev/shm with 4 KiB
 * pages, or hugetlbfs with 2 MiB pages when required and available; that `require` fails clearly,
 * leaving no file behind, when the hugepage pool cannot hold the arena; and that `auto` then falls
 * back to /dev/shm and says so.
 *
 * The hugetlbfs cases skip, with the reason shown, on hosts without a 2 MiB hugetlbfs mount and
 * pool (scripts/setup.sh sets one up).
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

#define HUGE_2M    (2ull << 20)
#define FREE_PAGES "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages"

static struct tarena T;
static char g_name[THR_NAME_MAX + 1]; /* for the arenas built here, not by tarena_make */
static char g_huge_dir[256];          /* the hugetlbfs mount, for leftover checks */
static struct shm_map g_map;

static void teardown(void)
{
        tarena_free(&T);
        if (g_map.base) {
                unlink(g_map.path);
                shm_arena_detach(&g_map);
        }
        memset(&g_map, 0, sizeof(g_map));
}

TestSuite(backing, .fini = teardown, .timeout = 120);

/* Admissions work on the arena: exact counts on its manual clock. */
static void assert_admits(void)
{
        thr_limiter *l = tlim(&T, "b");
        struct thr_result r;
        for (int i = 0; i < 3; i++)
                cr_assert_eq(thr_limiter_try(l, "key", 3, 1, &r), 1, "try %d", i);
        cr_assert_eq(r.remaining, 0);
        cr_assert_eq(thr_limiter_try(l, "key", 3, 1, &r), 0);
        cr_assert_eq(thr_clock_advance(T.a, SEC / 10), 0);
        cr_assert_eq(thr_limiter_try(l, "key", 3, 1, &r), 1, "refilled after T");
        thr_limiter_close(l);
}

Test(backing, dev_shm_has_small_pages)
{
        struct shm_limiter_spec s = tspec("b", 10, SEC, 3, 3);
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        const struct thr_hdr *h = shm_hdr(&T.map);
        cr_assert_eq(h->backing, THR_BACKING_SHM);
        cr_assert_eq(h->page_size, 4096);
        cr_assert_eq(strncmp(T.path, "/dev/shm/", 9), 0, "arena at %s", T.path);
        assert_admits();
}

Test(backing, hugetlbfs_has_2mib_pages)
{
        char why[256];
        if (!thugepages_available(4, why, sizeof(why)))
                cr_skip_test("hugetlbfs: %s", why);
        struct shm_limiter_spec s = tspec("b", 10, SEC, 3, 3);
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_REQUIRE, &s, 1);
        const struct thr_hdr *h = shm_hdr(&T.map);
        cr_assert_eq(h->backing, THR_BACKING_HUGETLBFS, "arena at %s", T.path);
        cr_assert_eq(h->page_size, HUGE_2M);
        cr_assert_eq(h->arena_size % HUGE_2M, 0, "size %lu is whole hugepages",
                     (unsigned long)h->arena_size);
        cr_assert_neq(strncmp(T.path, "/dev/shm/", 9), 0, "arena at %s", T.path);
        assert_admits();
}

/* ---------------------------------------------------------------- a pool too small */

static unsigned long long free_hugepages(void)
{
        unsigned long long n = 0;
        FILE *f = fopen(FREE_PAGES, "re");
        if (!f || fscanf(f, "%llu", &n) != 1)
                n = 0;
        if (f)
                fclose(f);
        return n;
}

/* A spec for an arena of more 2 MiB pages than the pool has free (skips without a mount). */
static struct shm_arena_spec too_big(enum shm_hugepages huge, struct shm_limiter_spec *lim)
{
        char probe[256];
        if (shm_arena_path("probe", NULL, SHM_HUGE_REQUIRE, probe, sizeof(probe)) < 0)
                cr_skip_test("hugetlbfs: no 2 MiB hugetlbfs mount (run scripts/setup.sh as root)");
        snprintf(g_huge_dir, sizeof(g_huge_dir), "%s", dirname(probe));
        FILE *f = fopen("/proc/sys/vm/nr_overcommit_hugepages", "re");
        unsigned long long over = 0;
        if (f && fscanf(f, "%llu", &over) != 1)
                over = 0;
        if (f)
                fclose(f);
        /* Surplus pages could be allocated on demand: ask for more than free + surplus. */
        unsigned long long pages = free_hugepages() + over + 8;
        *lim = tspec("b", 10, SEC, 3, 3);
        snprintf(g_name, sizeof(g_name), "bk%d-%s", (int)getpid(),
                 huge == SHM_HUGE_AUTO ? "auto" : "req");
        struct shm_arena_spec s = {.hugepages = huge,
                                   .mode = 0600,
                                   .gid = (gid_t)-1,
                                   .clock = THR_CLOCK_MANUAL,
                                   .max_limiters = 4,
                                   .max_readers = 16,
                                   .spare_bytes = pages * HUGE_2M,
                                   .nlimiters = 1,
                                   .limiters = lim};
        snprintf(s.name, sizeof(s.name), "%s", g_name);
        cr_log_info("asking for %llu hugepages (%llu free, %llu overcommit)", pages,
                    free_hugepages(), over);
        return s;
}

/* No arena file and no temporary file called after NAME is left in DIR. */
static void assert_no_leftover(const char *dir, const char *name)
{
        char prefix[128];
        snprintf(prefix, sizeof(prefix), "throttle.%s", name);
        DIR *d = opendir(dir);
        cr_assert_not_null(d, "opendir %s: %s", dir, strerror(errno));
        struct dirent *e;
        while ((e = readdir(d)))
                cr_assert_neq(strncmp(e->d_name, prefix, strlen(prefix)), 0, "left behind: %s/%s",
                              dir, e->d_name);
        closedir(d);
}

static bool mentions(const char *msg, const char *a, const char *b)
{
        return strcasestr(msg, a) || strcasestr(msg, b);
}

Test(backing, require_fails_clearly_without_a_pool)
{
        struct shm_limiter_spec lim;
        struct shm_arena_spec s = too_big(SHM_HUGE_REQUIRE, &lim);
        char err[512] = "";
        int rc = shm_arena_create(&s, &g_map, err, sizeof(err));
        cr_log_info("require: %d: %s", rc, err);
        cr_assert_lt(rc, 0, "an arena larger than the pool was created (%s)", g_map.path);
        cr_assert(mentions(err, "space", "pool"), "the message names the pool or space: %s", err);
        cr_assert_null(g_map.base);
        assert_no_leftover(g_huge_dir, g_name);
        assert_no_leftover("/dev/shm", g_name);
}

Test(backing, auto_falls_back_to_dev_shm)
{
        struct shm_limiter_spec lim;
        struct shm_arena_spec s = too_big(SHM_HUGE_AUTO, &lim);
        char err[512] = "";
        int rc = shm_arena_create(&s, &g_map, err, sizeof(err));
        cr_log_info("auto: %d: %s", rc, err);
        cr_assert_eq(rc, 1, "fell back (%d: %s)", rc, err);
        cr_assert(mentions(err, "/dev/shm", "fall"), "the message says it fell back: %s", err);
        cr_assert_not_null(g_map.base);
        const struct thr_hdr *h = shm_hdr(&g_map);
        cr_assert_eq(h->backing, THR_BACKING_SHM);
        cr_assert_eq(h->page_size, 4096);
        char want[256];
        snprintf(want, sizeof(want), "/dev/shm/throttle.%s", g_name);
        cr_assert_str_eq(g_map.path, want);
        assert_no_leftover(g_huge_dir, g_name);

        /* The fallback arena works. */
        thr_arena *a;
        thr_limiter *l;
        cr_assert_eq(thr_arena_open(g_map.path, 0, &a), 0);
        cr_assert_eq(thr_limiter_open(a, "b", &l), 0);
        cr_assert_eq(thr_limiter_try(l, "k", 1, 3, NULL), 1);
        cr_assert_eq(thr_limiter_try(l, "k", 1, 1, NULL), 0);
        thr_limiter_close(l);
        thr_arena_close(a);
}
