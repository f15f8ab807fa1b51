/*
 * test_arena.c - the arena as untrusted input: valid() rejects each kind of corruption, clients
 * refuse another major version or another clock, creation leaves no half arena, the daemon lock
 * excludes a second holder, and reconfiguration keeps buckets or refuses without changing anything;
 * a group the builder may not give is named in the error with its cause (issue 13).
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <grp.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"
#include "shm_internal.h"

static struct tarena T;

static void setup(void)
{
        struct shm_limiter_spec s[] = {tspec("a", 10, SEC, 5, 5), tspec("b", 100, SEC, 10, 10)};
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 2);
}

static void teardown(void)
{
        tarena_free(&T);
}

TestSuite(arena, .init = setup, .fini = teardown);

/* A one-limiter manual-clock arena spec in T's directory (the name is the caller's to set). */
static struct shm_arena_spec small_spec(const struct shm_limiter_spec *s)
{
        return (struct shm_arena_spec){.hugepages = SHM_HUGE_OFF,
                                       .mode = 0600,
                                       .gid = (gid_t)-1,
                                       .clock = THR_CLOCK_MANUAL,
                                       .max_limiters = 4,
                                       .max_readers = 4,
                                       .nlimiters = 1,
                                       .limiters = s,
                                       .dir = T.dir};
}

/* A private copy of the arena to corrupt. */
static void *copy(void)
{
        void *c = malloc(T.map.size);
        cr_assert_not_null(c);
        memcpy(c, T.map.base, T.map.size);
        return c;
}

static struct thr_dir_entry *dir0(void *base)
{
        return shm_at(base, ((struct thr_hdr *)base)->dir_off);
}

static void expect_invalid(void *c, int want, const char *what)
{
        char err[256] = "";
        int rc = shm_arena_valid(c, T.map.size, err, sizeof(err));
        cr_assert_eq(rc, want, "%s: got %d (%s)", what, rc, err);
        cr_assert(err[0], "%s: a message is given", what);
        free(c);
}

Test(arena, fresh_arena_is_valid)
{
        char err[256] = "";
        cr_assert_eq(shm_arena_valid(T.map.base, T.map.size, err, sizeof(err)), 0, "%s", err);
        struct thr_hdr *h = shm_hdr(&T.map);
        cr_assert_eq(h->major, THR_LAYOUT_MAJOR);
        cr_assert_eq(h->backing, THR_BACKING_SHM);
        for (unsigned i = 0; i < THR_HASH_KEY_WORDS; i += 2) /* 15 random 128-bit keys */
                cr_assert(h->hash_key[i] || h->hash_key[i + 1], "hash key %u is zero", i / 2);
}

Test(arena, corrupt_header_is_rejected)
{
        void *c = copy();
        ((struct thr_hdr *)c)->magic ^= 1;
        expect_invalid(c, -EBADMSG, "magic");
        c = copy();
        ((struct thr_hdr *)c)->major = THR_LAYOUT_MAJOR + 1;
        expect_invalid(c, -EPROTONOSUPPORT, "major");
        c = copy();
        ((struct thr_hdr *)c)->dir_off = T.map.size - 64;
        expect_invalid(c, -EBADMSG, "dir_off");
        c = copy();
        ((struct thr_hdr *)c)->reader_count = 0xffffffff;
        expect_invalid(c, -EBADMSG, "reader_count");
        c = copy();
        ((struct thr_hdr *)c)->arena_size = T.map.size * 2;
        expect_invalid(c, -EBADMSG, "arena_size");
        c = copy();
        ((struct thr_hdr *)c)->heap_top = T.map.size + 4096;
        expect_invalid(c, -EBADMSG, "heap_top");
        c = copy();
        ((struct thr_hdr *)c)->clock_id = 9;
        expect_invalid(c, -EBADMSG, "clock_id");
}

Test(arena, corrupt_limiter_is_rejected)
{
        void *c = copy();
        dir0(c)->params_off = T.map.size - 8;
        expect_invalid(c, -EBADMSG, "params_off past the end");
        c = copy();
        dir0(c)->params_off = 17;
        expect_invalid(c, -EBADMSG, "params_off in the header");
        c = copy();
        ((struct thr_params *)shm_at(c, dir0(c)->params_off))->k = 0;
        expect_invalid(c, -EBADMSG, "k = 0");
        c = copy();
        ((struct thr_params *)shm_at(c, dir0(c)->params_off))->bt_units += 1;
        expect_invalid(c, -EBADMSG, "bt inconsistent");
        c = copy();
        ((struct thr_table *)shm_at(c, dir0(c)->table_off))->nshards = 0;
        expect_invalid(c, -EBADMSG, "nshards 0");
        c = copy();
        ((struct thr_table *)shm_at(c, dir0(c)->table_off))->nshards = 3;
        expect_invalid(c, -EBADMSG, "nshards not a power of two");
        c = copy();
        ((struct thr_table *)shm_at(c, dir0(c)->table_off))->shard_slots = 0x7fffffff;
        expect_invalid(c, -EBADMSG, "slots beyond the file");
        c = copy();
        ((struct thr_table *)shm_at(c, dir0(c)->table_off))->slots_off = UINT64_MAX - 63;
        expect_invalid(c, -EBADMSG, "slots_off wraps");
        c = copy();
        memset(dir0(c)->name, 'x', sizeof(dir0(c)->name));
        expect_invalid(c, -EBADMSG, "unterminated name");
}

Test(arena, client_of_another_major_is_refused)
{
        thr_arena *a = NULL;
        struct thr_hdr *h = shm_hdr(&T.map);
        h->major = THR_LAYOUT_MAJOR + 1;
        cr_assert_eq(thr_arena_open(T.path, 0, &a), -EPROTONOSUPPORT);
        h->major = THR_LAYOUT_MAJOR;
        cr_assert_eq(thr_arena_open(T.path, 0, &a), 0);
        thr_arena_close(a);
}

Test(arena, client_refuses_another_boot_or_time_namespace)
{
        struct shm_limiter_spec s = tspec("a", 10, SEC, 5, 5);
        struct tarena rt;
        tarena_make(&rt, THR_CLOCK_MONOTONIC, SHM_HUGE_OFF, &s, 1);
        struct thr_hdr *h = shm_hdr(&rt.map);
        thr_arena *a = NULL;
        h->boot_id[3] ^= 0xff;
        cr_assert_eq(thr_arena_open(rt.path, 0, &a), -ESTALE, "another boot");
        h->boot_id[3] ^= 0xff;
        h->timens_mono_ns += SEC;
        cr_assert_eq(thr_arena_open(rt.path, 0, &a), -ESTALE, "another time namespace");
        h->timens_mono_ns -= SEC;
        cr_assert_eq(thr_arena_open(rt.path, 0, &a), 0);
        thr_arena_close(a);
        tarena_free(&rt);
}

Test(arena, creation_leaves_no_temporary_file_and_refuses_to_overwrite)
{
        DIR *d = opendir(T.dir);
        cr_assert_not_null(d);
        int files = 0;
        for (struct dirent *e; (e = readdir(d));)
                if (e->d_name[0] != '.') {
                        files++;
                        cr_assert_null(strstr(e->d_name, ".tmp."), "leftover %s", e->d_name);
                }
        closedir(d);
        cr_assert_eq(files, 1);
        struct shm_limiter_spec s = tspec("a", 10, SEC, 5, 5);
        struct shm_arena_spec as = small_spec(&s);
        snprintf(as.name, sizeof(as.name), "%s", shm_hdr(&T.map)->name);
        struct shm_map m;
        char err[256];
        cr_assert_eq(shm_arena_create(&as, &m, err, sizeof(err)), -EEXIST);
}

/* spare + the tables' bytes, and the arena's total size, are summed with overflow checks: a
 * spare near 2^64 used to wrap to a few bytes and build an arena with no spare heap at all. */
Test(arena, creation_refuses_sizes_that_overflow)
{
        struct shm_limiter_spec s = tspec("a", 10, SEC, 5, 5);
        struct shm_arena_spec as = small_spec(&s);
        snprintf(as.name, sizeof(as.name), "big");
        uint64_t spares[] = {UINT64_MAX, UINT64_MAX - 4096, UINT64_MAX - (1ull << 20),
                             (uint64_t)INT64_MAX};
        for (size_t i = 0; i < sizeof(spares) / sizeof(spares[0]); i++) {
                struct shm_map m;
                char err[256] = "";
                as.spare_bytes = spares[i];
                int rc = shm_arena_create(&as, &m, err, sizeof(err));
                if (rc >= 0) {
                        unlink(m.path);
                        shm_arena_detach(&m);
                }
                cr_assert_eq(rc, -EOVERFLOW, "spare %#llx: rc %d (%s)",
                             (unsigned long long)spares[i], rc, err);
                cr_assert_not_null(strstr(err, "spare"), "the message names spare: %s", err);
        }
}

/* The size of the file in DIR whose name starts with PREFIX, or -1 if there is none. */
static off_t tmp_size(const char *dir, const char *prefix)
{
        DIR *d = opendir(dir);
        off_t size = -1;
        for (struct dirent *e; d && size < 0 && (e = readdir(d));) {
                if (strncmp(e->d_name, prefix, strlen(prefix)))
                        continue;
                char path[512];
                struct stat st;
                snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
                size = stat(path, &st) == 0 ? st.st_size : 0;
        }
        if (d)
                closedir(d);
        return size;
}

static bool has_tmp(const char *dir, const char *prefix)
{
        return tmp_size(dir, prefix) >= 0;
}

static void count_sweep(void *ctx, const char *path, uint64_t bytes)
{
        (void)path;
        cr_assert_gt(bytes, 256u << 20, "the full-size file");
        ++*(int *)ctx;
}

/* Where a file system has no O_TMPFILE the arena is built under a name, locked by its builder:
 * a builder killed mid-way leaves it, and shm_arena_sweep removes it once its builder is gone,
 * never while the builder lives. */
Test(arena, sweep_removes_what_a_killed_named_builder_left)
{
        struct shm_limiter_spec s = tspec("a", 10, SEC, 5, 5);
        struct shm_arena_spec as = {.hugepages = SHM_HUGE_OFF,
                                    .mode = 0600,
                                    .gid = (gid_t)-1,
                                    .clock = THR_CLOCK_MANUAL,
                                    .max_limiters = 4,
                                    .max_readers = 4,
                                    .spare_bytes = 256u << 20,
                                    .nlimiters = 1,
                                    .limiters = &s,
                                    .dir = T.dir};
        snprintf(as.name, sizeof(as.name), "big");
        char arena[256];
        snprintf(arena, sizeof(arena), "%s/throttle.big", T.dir);
        shm_tmp_named_only = true;
        for (int attempt = 0;; attempt++) {
                cr_assert_lt(attempt, 20, "could not kill the builder while it built");
                pid_t pid = tfork();
                if (pid == 0) {
                        struct shm_map m;
                        _exit(shm_arena_create(&as, &m, NULL, 0) < 0);
                }
                struct timespec t0;
                clock_gettime(CLOCK_MONOTONIC, &t0);
                /* killed once its file has its full size (before, it is not yet what the sweep is
                 * for: a file of that size left behind) */
                while (tmp_size(T.dir, "throttle.big.tmp.") <= (off_t)(256u << 20) &&
                       access(arena, F_OK) != 0)
                        cr_assert_lt(telapsed_s(&t0), 10, "the builder never started");
                int swept = -1;
                if (access(arena, F_OK) != 0)
                        swept = shm_arena_sweep(&as, NULL, NULL); /* the builder lives */
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
                if (access(arena, F_OK) == 0) {
                        unlink(arena); /* too late: built already; again */
                        continue;
                }
                cr_assert_eq(swept, 0, "a live builder's file was removed");
                break;
        }
        cr_assert(has_tmp(T.dir, "throttle.big.tmp."), "the killed builder's file is there");
        int n = 0;
        cr_assert_eq(shm_arena_sweep(&as, count_sweep, &n), 1);
        cr_assert_eq(n, 1);
        cr_assert(!has_tmp(T.dir, "throttle.big.tmp."), "swept");
        shm_tmp_named_only = false;
        struct shm_map m;
        char err[256];
        cr_assert_geq(shm_arena_create(&as, &m, err, sizeof(err)), 0, "%s", err);
        cr_assert(!has_tmp(T.dir, "throttle.big.tmp."), "an unnamed build leaves no name");
        unlink(arena);
        shm_arena_detach(&m);
}

Test(arena, daemon_lock_is_exclusive_and_visible_read_only)
{
        struct shm_map m1, m2, ro;
        char err[256];
        cr_assert_eq(shm_arena_attach(T.path, true, &m1, err, sizeof(err)), 0, "%s", err);
        cr_assert_eq(shm_arena_attach(T.path, true, &m2, err, sizeof(err)), 0);
        cr_assert_eq(shm_arena_attach(T.path, false, &ro, err, sizeof(err)), 0);
        cr_assert_eq(shm_daemon_alive(&ro, NULL), 0);
        cr_assert_eq(shm_daemon_lock(&m1, NULL), 0);
        cr_assert_eq(shm_daemon_lock(&m2, NULL), -EBUSY, "a second daemon is kept out");
        cr_assert_eq(shm_daemon_alive(&ro, NULL), 1);
        shm_arena_detach(&m1);
        cr_assert_eq(shm_daemon_alive(&ro, NULL), 0, "the lock goes with its holder");
        cr_assert_eq(shm_daemon_lock(&m2, NULL), 0);
        shm_arena_detach(&m2);
        shm_arena_detach(&ro);
}

static struct shm_arena_spec respec(struct shm_limiter_spec *s, size_t n)
{
        struct shm_arena_spec as = {.hugepages = SHM_HUGE_OFF,
                                    .mode = 0600,
                                    .gid = (gid_t)-1,
                                    .clock = THR_CLOCK_MANUAL,
                                    .max_limiters = 16,
                                    .max_readers = 256,
                                    .nlimiters = n,
                                    .limiters = s};
        snprintf(as.name, sizeof(as.name), "%s", shm_hdr(&T.map)->name);
        return as;
}

Test(arena, configure_keeps_buckets_and_swaps_parameters)
{
        thr_limiter *l = tlim(&T, "a");
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(l, "k", 1, 3, &r), 1);
        struct thr_dir_entry *de = dir0(T.map.base);
        uint64_t before = de->params_off, table = de->table_off;
        struct shm_limiter_spec s[] = {tspec("a", 20, SEC, 8, 8), tspec("b", 100, SEC, 10, 10),
                                       tspec("c", 1, SEC, 1, 1)};
        struct shm_arena_spec as = respec(s, 3);
        char err[256] = "";
        cr_assert_eq(shm_arena_configure(&T.map, &as, err, sizeof(err)), 0, "%s", err);
        cr_assert_neq(de->params_off, before, "a new record");
        cr_assert_eq(de->table_off, table, "the same table");
        cr_assert_eq(thr_limiter_try(l, "k", 1, 0, &r), 1);
        cr_assert_eq(r.limit, 8);
        /* TAT = 300 ms kept; with T = 50 ms and B = 8: (400 - 300) / 50 = 2 left... */
        cr_assert_eq(r.remaining, 2, "the key's debt was kept, the new rate applies");
        thr_limiter *c = tlim(&T, "c");
        thr_limiter_close(c);
        thr_limiter_close(l);
}

Test(arena, configure_refuses_resize_without_changing_anything)
{
        struct thr_dir_entry *de = dir0(T.map.base);
        uint64_t before = de->params_off, top = shm_hdr(&T.map)->heap_top;
        struct shm_limiter_spec s[] = {tspec("a", 10, SEC, 5, 5), tspec("b", 100, SEC, 10, 10),
                                       tspec("new", 1, SEC, 1, 1)};
        s[1].capacity = 4096;
        struct shm_arena_spec as = respec(s, 3);
        char err[256] = "";
        cr_assert_eq(shm_arena_configure(&T.map, &as, err, sizeof(err)), -EBUSY);
        cr_assert(strstr(err, "resized"), "message: %s", err);
        s[0].rate_n = 3; /* a rate change that alone would be taken, refused with the rest */
        cr_assert_eq(shm_arena_configure(&T.map, &as, err, sizeof(err)), -EBUSY);
        cr_assert(strstr(err, "resized"), "message: %s", err);
        cr_assert_eq(de->params_off, before);
        cr_assert_eq(shm_hdr(&T.map)->heap_top, top, "nothing allocated");
        cr_assert_eq(shm_dir_find(&T.map, "new"), -ENOENT, "nothing added");
}

/* A rate that needs another time unit (10/s, K 1, to 3/s, K 3) is taken in the buckets' unit,
 * its interval rounded up (1e9/3 ns to 333333334 ns), and every key keeps its state. */
Test(arena, configure_keeps_the_buckets_unit_for_any_rate)
{
        struct thr_dir_entry *de = dir0(T.map.base);
        thr_limiter *l = tlim(&T, "a");
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(l, "k", 1, 5, &r), 1, "the whole burst of 5 at 10/s");
        uint64_t table = de->table_off;
        struct shm_limiter_spec s[] = {tspec("a", 3, SEC, 5, 5), tspec("b", 100, SEC, 10, 10)};
        s[1].capacity = 1024;
        struct shm_arena_spec as = respec(s, 2);
        char err[256] = "";
        cr_assert_eq(shm_arena_configure(&T.map, &as, err, sizeof(err)), 0, "%s", err);
        const struct thr_params *p = shm_at(T.map.base, de->params_off);
        cr_assert_eq(p->k, 1, "the buckets' unit");
        cr_assert_eq(p->t_units, 333333334, "1e9/3 ns rounded up");
        cr_assert_neq(p->flags & THR_PARAM_ROUNDED, 0);
        cr_assert_eq(de->table_off, table, "the same table");
        /* the key's 500 ms of debt (5 tokens at 100 ms) is kept: against B T = 5 x 333333334 ns,
         * (1666666670 - 500000000) / 333333334 = 3 whole tokens are left */
        cr_assert_eq(thr_limiter_try(l, "k", 1, 0, &r), 1);
        cr_assert_eq(r.remaining, 3, "%lu left", (unsigned long)r.remaining);
        cr_assert_eq(r.reset_after_ns, 500000000);
        thr_limiter_close(l);
}

/* In a child that dropped to UID/GID (no supplementary groups), the result of thr_arena_open. */
static int open_as(const char *path, uid_t uid, gid_t gid)
{
        int fds[2];
        cr_assert_eq(pipe(fds), 0);
        pid_t pid = tfork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                int rc = -EPERM;
                thr_arena *a = NULL;
                if (setgroups(0, NULL) == 0 && setgid(gid) == 0 && setuid(uid) == 0)
                        rc = thr_arena_open(path, 0, &a);
                if (write(fds[1], &rc, sizeof(rc)) != sizeof(rc))
                        _exit(2);
                _exit(0);
        }
        int rc = 1, st;
        cr_assert_eq(read(fds[0], &rc, sizeof(rc)), (ssize_t)sizeof(rc));
        waitpid(pid, &st, 0);
        close(fds[0]);
        close(fds[1]);
        return rc;
}

Test(arena, file_mode_and_group_decide_who_may_map_it)
{
        if (geteuid() != 0)
                cr_skip_test("needs root to create an arena for another user's group");
        struct passwd *nobody = getpwnam("nobody");
        cr_assert_not_null(nobody, "user nobody exists");
        cr_assert_eq(chmod(T.dir, 0755), 0);
        cr_assert_eq(chmod(T.path, 0600), 0);
        cr_assert_eq(open_as(T.path, nobody->pw_uid, nobody->pw_gid), -EACCES,
                     "mode 0600 root: another user is refused");
        struct shm_limiter_spec s = tspec("a", 10, SEC, 5, 5);
        struct shm_arena_spec as = {.hugepages = SHM_HUGE_OFF,
                                    .mode = 0660,
                                    .gid = nobody->pw_gid,
                                    .clock = THR_CLOCK_MANUAL,
                                    .max_limiters = 4,
                                    .max_readers = 8,
                                    .nlimiters = 1,
                                    .limiters = &s,
                                    .dir = T.dir};
        snprintf(as.name, sizeof(as.name), "grp%d", (int)getpid());
        struct shm_map m;
        char err[256] = "";
        cr_assert_geq(shm_arena_create(&as, &m, err, sizeof(err)), 0, "%s", err);
        struct stat st;
        cr_assert_eq(fstat(m.fd, &st), 0);
        cr_assert_eq(st.st_mode & 07777, 0660, "mode from the spec, not the umask");
        cr_assert_eq(st.st_gid, nobody->pw_gid, "group from the spec");
        cr_assert_eq(open_as(m.path, nobody->pw_uid, nobody->pw_gid), 0,
                     "a member of the arena's group may map it");
        cr_assert_eq(open_as(m.path, nobody->pw_uid, nobody->pw_gid + 1), -EACCES,
                     "others may not");
        unlink(m.path);
        shm_arena_detach(&m);
}

/*
 * In a child that dropped to nobody (no supplementary groups), create an arena of group root in
 * DIR (HUGE: its hugepages setting); its error message into MSG (LEN bytes), its result returned.
 */
static int create_as_nobody(const char *dir, enum shm_hugepages huge, char *msg, size_t len)
{
        struct passwd *nobody = getpwnam("nobody");
        cr_assert_not_null(nobody, "user nobody exists");
        int fds[2];
        cr_assert_eq(pipe(fds), 0);
        pid_t pid = tfork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                struct shm_limiter_spec s = tspec("a", 10, SEC, 5, 5);
                struct shm_arena_spec as = {.hugepages = huge,
                                            .mode = 0660,
                                            .gid = 0, /* root's group: nobody is not in it */
                                            .clock = THR_CLOCK_MANUAL,
                                            .max_limiters = 4,
                                            .max_readers = 8,
                                            .nlimiters = 1,
                                            .limiters = &s,
                                            .dir = dir};
                snprintf(as.name, sizeof(as.name), "grp%d", (int)getpid());
                struct shm_map m;
                char err[1024] = "";
                int rc = -EPERM;
                if (setgroups(0, NULL) == 0 && setgid(nobody->pw_gid) == 0 &&
                    setuid(nobody->pw_uid) == 0)
                        rc = shm_arena_create(&as, &m, err, sizeof(err));
                if (write(fds[1], &rc, sizeof(rc)) != sizeof(rc) ||
                    write(fds[1], err, sizeof(err)) != sizeof(err))
                        _exit(2);
                _exit(0);
        }
        int rc = 1, st;
        char err[1024];
        cr_assert_eq(read(fds[0], &rc, sizeof(rc)), (ssize_t)sizeof(rc));
        cr_assert_eq(read(fds[0], err, sizeof(err)), (ssize_t)sizeof(err));
        err[sizeof(err) - 1] = '\0';
        snprintf(msg, len, "%s", err);
        waitpid(pid, &st, 0);
        close(fds[0]);
        close(fds[1]);
        return rc;
}

/* The message of a group the daemon may not give: the group, its gid and the cause. */
static void assert_group_message(const char *msg)
{
        struct group *g = getgrgid(0);
        char want[128];
        snprintf(want, sizeof(want), "the group '%s' (gid 0)", g ? g->gr_name : "?");
        cr_assert(strstr(msg, want), "names the group: %s", msg);
        cr_assert(strstr(msg, "not a member of that group and has no CAP_CHOWN"), "why: %s", msg);
        cr_assert(!strstr(msg, "hugepage"), "not a hugepage shortage: %s", msg);
}

/* [arena] group = a group the daemon is not in (issue 13: "Operation not permitted (is the
 * hugepage pool too small?)"): the message names the group and why, on /dev/shm and on a
 * hugetlbfs mount alike; and nothing is left behind. */
Test(arena, group_not_given_names_the_group_and_why)
{
        if (geteuid() != 0)
                cr_skip_test("needs root to try as another user");
        char dir[] = "/dev/shm/thr-grp-XXXXXX", msg[1024];
        cr_assert_not_null(mkdtemp(dir));
        cr_assert_eq(chmod(dir, 0777), 0);
        cr_assert_eq(create_as_nobody(dir, SHM_HUGE_OFF, msg, sizeof(msg)), -EPERM, "%s", msg);
        assert_group_message(msg);
        DIR *d = opendir(dir);
        int files = 0;
        for (struct dirent *e; (e = readdir(d));)
                files += e->d_name[0] != '.';
        closedir(d);
        cr_assert_eq(files, 0, "nothing left behind");
        cr_assert_eq(rmdir(dir), 0);

        char why[256], mount[256], hdir[300];
        if (!thugepages_available(2, why, sizeof(why)))
                cr_skip_test("no hugetlbfs to try it on: %s", why);
        cr_assert_eq(shm_arena_path("x", NULL, SHM_HUGE_REQUIRE, mount, sizeof(mount)), 0);
        *strrchr(mount, '/') = '\0';
        snprintf(hdir, sizeof(hdir), "%s/thr-grp-%d", mount, (int)getpid());
        cr_assert_eq(mkdir(hdir, 0777), 0, "%s: %s", hdir, strerror(errno));
        cr_assert_eq(chmod(hdir, 0777), 0);
        int rc = create_as_nobody(hdir, SHM_HUGE_REQUIRE, msg, sizeof(msg));
        rmdir(hdir);
        cr_assert_eq(rc, -EPERM, "%s", msg);
        assert_group_message(msg);
}

/* The hint about the hugepage pool stays where it belongs: an arena the pool cannot hold. */
Test(arena, hugepage_shortage_still_says_so)
{
        char why[256], msg[1024] = "";
        if (!thugepages_available(1, why, sizeof(why)))
                cr_skip_test("no hugetlbfs: %s", why);
        struct shm_limiter_spec s = tspec("a", 10, SEC, 5, 5);
        struct shm_arena_spec as = small_spec(&s);
        as.dir = NULL;
        as.hugepages = SHM_HUGE_REQUIRE;
        as.spare_bytes = 1ull << 40; /* 1 TiB: far more than any pool */
        snprintf(as.name, sizeof(as.name), "short%d", (int)getpid());
        struct shm_map m;
        int rc = shm_arena_create(&as, &m, msg, sizeof(msg));
        cr_assert(rc == -ENOSPC || rc == -ENOMEM, "rc %d: %s", rc, msg);
        cr_assert(strstr(msg, "is the hugepage pool too small?"), "%s", msg);
}

Test(arena, daemon_ignores_fields_a_client_rewrites_after_attach)
{
        struct shm_map m;
        char err[256] = "";
        cr_assert_eq(shm_arena_attach(T.path, true, &m, err, sizeof(err)), 0, "%s", err);
        struct thr_hdr *h = shm_hdr(&m);
        /* A hostile client rewrites the geometry the daemon checked at attach. */
        h->dir_off = UINT64_MAX - 4095;
        h->dir_count = 0xffffffff;
        h->heap_top = 0;
        h->heap_end = UINT64_MAX;
        struct shm_limiter_spec s[] = {tspec("a", 10, SEC, 5, 5), tspec("b", 100, SEC, 10, 10),
                                       tspec("late", 1, SEC, 1, 1)};
        struct shm_arena_spec as = respec(s, 3);
        cr_assert_eq(shm_arena_configure(&m, &as, err, sizeof(err)), 0, "%s", err);
        cr_assert_geq(shm_dir_find(&m, "late"), 0, "added with the checked geometry");
        cr_assert_geq(h->heap_top, m.g.heap_off, "the arena's heap_top is rewritten from ours");
        /* A limiter's table offset rewritten after it was checked: a clear error, no crash. */
        struct thr_dir_entry *de = shm_at(m.base, m.g.dir_off);
        uint64_t keep = de->table_off;
        de->table_off = 1ull << 46;
        s[0].burst = 6;
        cr_assert_eq(shm_arena_configure(&m, &as, err, sizeof(err)), -EBADMSG);
        cr_assert(strstr(err, "corrupt"), "message: %s", err);
        de->table_off = keep;
        shm_arena_detach(&m);
}

Test(arena, client_in_another_pid_namespace_is_refused)
{
        thr_arena *a = NULL;
        struct thr_hdr *h = shm_hdr(&T.map);
        cr_assert_eq(h->pidns_ino, shm_pidns_ino(), "the creator's namespace is recorded");
        h->pidns_ino ^= 1;
        cr_assert_eq(thr_arena_open(T.path, 0, &a), -EXDEV);
        h->pidns_ino ^= 1;
        cr_assert_eq(thr_arena_open(T.path, 0, &a), 0);
        thr_arena_close(a);
}
