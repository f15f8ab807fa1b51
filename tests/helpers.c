/*
 * helpers.c - fixtures shared by the tests: throwaway arenas, and real daemons run on them.
 */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client_internal.h"
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
                                     .capacity = 1024,
                                     /* exact counts under a loaded CI machine: an insert waits
                                      * out a preempted holder (tests of the bound set it) */
                                     .lock_wait_ns = 10 * SEC};
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
        while (t->nkept > 0)
                thr_limiter_close(t->kept[--t->nkept]);
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

thr_limiter *tlim_kept(struct tarena *t, const char *name)
{
        cr_assert_lt(t->nkept, 16, "tlim_kept: 16 handles at most");
        return t->kept[t->nkept++] = tlim(t, name);
}

struct shm_limiter_spec tspec_budget(const char *name, uint64_t initial)
{
        struct shm_limiter_spec s = tspec(name, 0, 0, 0, initial);
        s.kind = THR_KIND_BUDGET;
        s.max_reserve_ns = 0;
        return s;
}

struct thr_table *ttable(struct tarena *t, const char *name)
{
        int idx = shm_dir_find(&t->map, name);
        cr_assert_geq(idx, 0, "limiter %s in the arena", name);
        const struct thr_dir_entry *de =
            (const struct thr_dir_entry *)shm_at(t->map.base, shm_hdr(&t->map)->dir_off) + idx;
        return shm_at(t->map.base, de->table_off);
}

struct shm_lim_snap tsnap(struct tarena *t, const char *name)
{
        struct shm_lim_snap s;
        int idx = shm_dir_find(&t->map, name);
        cr_assert(idx >= 0 && shm_dir_snapshot(&t->map, (uint32_t)idx, &s) == 0,
                  "limiter %s in the arena", name);
        return s;
}

struct shm_maint_args tmaint_args(struct tarena *t, const struct shm_lim_snap *sn, uint64_t done,
                                  uint64_t me)
{
        struct thr_hdr *h = shm_hdr(&t->map);
        return (struct shm_maint_args){.now_units = shm_now_ns(h) * sn->params.k,
                                       .ttl_units = sn->params.idle_ttl_ns * sn->params.k,
                                       .tag = shm_retire_tag(h),
                                       .done = done,
                                       .me = me};
}

struct shm_maint_stats tmaint(struct tarena *t, const char *name, uint64_t done, uint32_t *tag)
{
        struct shm_lim_snap snap = tsnap(t, name);
        struct shm_maint_args a = tmaint_args(t, &snap, done, shm_lock_daemon(0));
        uint32_t cursor = 0;
        struct shm_maint_stats st = {0};
        cr_assert(shm_table_maintain(&t->map, &snap, &a, &cursor, UINT64_MAX, &st));
        cr_assert_eq(st.busy_shards, 0, "no shard lock is held");
        if (tag)
                *tag = a.tag;
        return st;
}

struct thr_slot *tslot_at(struct tarena *t, const char *name, uint64_t at)
{
        return (struct thr_slot *)shm_at(t->map.base, tsnap(t, name).table.slots_off) + (at - 1);
}

uint64_t tkey_hint(struct thr_key *kh)
{
        return atomic_load(&thr_key_priv(kh)->at);
}

const struct thr_reader *treader_of_tid(struct tarena *t, pid_t tid)
{
        const struct thr_reader *r = shm_at(t->map.base, t->map.g.reader_off);
        for (uint32_t i = 0; i < t->map.g.reader_count; i++)
                if (atomic_load(&r[i].owner) && atomic_load(&r[i].tid) == (uint64_t)tid)
                        return &r[i];
        return NULL;
}

struct cancel_first {
        void (*call)(void *);
        void *arg;
        _Atomic pid_t tid;
        _Atomic int ready, cancelled;
};

static void *cancel_first_thread(void *arg)
{
        struct cancel_first *c = arg;
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, NULL);
        atomic_store(&c->tid, gettid());
        atomic_store(&c->ready, 1);
        while (!atomic_load(&c->cancelled))
                sched_yield();
        pthread_setcancelstate(PTHREAD_CANCEL_ENABLE, NULL);
        c->call(c->arg);
        pthread_testcancel();
        return NULL;
}

pid_t tcancel_first(void (*call)(void *), void *arg)
{
        struct cancel_first c = {.call = call, .arg = arg};
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, cancel_first_thread, &c), 0);
        while (!atomic_load(&c.ready))
                sched_yield();
        cr_assert_eq(pthread_cancel(t), 0);
        atomic_store(&c.cancelled, 1);
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += 5; /* a thread stuck on the registry lock never ends */
        void *ret;
        int rc = pthread_timedjoin_np(t, &ret, &dl);
        cr_assert_eq(rc, 0, "the cancelled thread never ended: %s", strerror(rc));
        cr_assert_eq(ret, PTHREAD_CANCELED);
        return atomic_load(&c.tid);
}

bool tgp_wait(struct tarena *t, uint64_t *done, int tries, unsigned nap_us)
{
        const struct thr_hdr *h = shm_hdr(&t->map);
        uint64_t gp;
        cr_assert_eq(shm_gp_start(&t->map, &gp), 0);
        for (int i = 0; i < tries; i++) {
                struct shm_gp_result res;
                cr_assert_eq(shm_gp_scan(&t->map, gp, shm_now_ns(h), UINT64_MAX, &res, NULL, NULL),
                             0);
                if (res.done > *done)
                        *done = res.done;
                if (res.done >= gp)
                        return true;
                usleep(nap_us);
        }
        return false;
}

int tcount(struct tarena *t, const char *name, unsigned st, const char *key, struct thr_slot **last)
{
        struct shm_lim_snap snap = tsnap(t, name);
        struct thr_slot *s = shm_at(t->map.base, snap.table.slots_off);
        uint64_t n = (uint64_t)snap.table.nshards * snap.table.shard_slots;
        int found = 0;
        for (uint64_t i = 0; i < n; i++) {
                if (THR_META_STATUS(atomic_load(&s[i].meta)) != st ||
                    (key && (s[i].key_len != strlen(key) ||
                             memcmp(s[i].key, key, shm_key_stored_len(s[i].key_len)) != 0)))
                        continue;
                found++;
                if (last)
                        *last = &s[i];
        }
        return found;
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

int tfree_port(void)
{
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t n = sizeof(sa);
        cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
                  getsockname(fd, (struct sockaddr *)&sa, &n) == 0);
        close(fd);
        return ntohs(sa.sin_port);
}

bool tpid_exited(int pid)
{
        char path[64], buf[1024];
        snprintf(path, sizeof(path), "/proc/%d/stat", pid);
        FILE *f = fopen(path, "r");
        if (!f)
                return true;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = 0;
        const char *rp = strrchr(buf, ')'); /* the command name may hold spaces and parens */
        char st = 0;
        unsigned long flags = 0;
        if (!rp || sscanf(rp + 1, " %c %*d %*d %*d %*d %*d %lu", &st, &flags) != 2)
                return true; /* reaped while we read */
        return st == 'Z' || st == 'X' || (flags & 0x4 /* PF_EXITING */);
}

bool tunder_instrumentation(void)
{
#ifdef THR_UNDER_SANITIZER
        return true;
#else
        return RUNNING_ON_VALGRIND != 0;
#endif
}

/* ---------------------------------------------------------------- a throttled under test */

void tdaemon_init(struct tdaemon *d)
{
        memset(d, 0, sizeof(*d));
        snprintf(d->dir, sizeof(d->dir), "/dev/shm/thrtest.XXXXXX");
        cr_assert_not_null(mkdtemp(d->dir), "mkdtemp: %s", strerror(errno));
        snprintf(d->conf, sizeof(d->conf), "%s/throttled.conf", d->dir);
        snprintf(d->name, sizeof(d->name), "dt%d", (int)getpid());
}

void tdaemon_unmap(struct tdaemon *d)
{
        for (int i = 0; i < 2; i++) {
                thr_limiter_close(d->l[i]);
                d->l[i] = NULL;
        }
        if (d->a)
                thr_arena_close(d->a);
        d->a = NULL;
        shm_arena_detach(&d->map);
        memset(&d->map, 0, sizeof(d->map));
}

void tdaemon_fini(struct tdaemon *d)
{
        for (int i = 0; i < TD_MAX; i++) {
                if (d->pid[i] > 0) {
                        kill(d->pid[i], SIGKILL);
                        waitpid(d->pid[i], NULL, 0);
                        d->pid[i] = 0;
                }
        }
        tdaemon_unmap(d);
        if (d->arena[0])
                unlink(d->arena);
        DIR *dir = opendir(d->dir);
        struct dirent *e;
        while (dir && (e = readdir(dir))) {
                char p[512];
                if (e->d_name[0] == '.')
                        continue;
                snprintf(p, sizeof(p), "%s/%s", d->dir, e->d_name);
                unlink(p);
        }
        if (dir)
                closedir(dir);
        rmdir(d->dir);
}

void tdaemon_config(struct tdaemon *d, bool in_dir, const char *daemon_keys, const char *limiters)
{
        d->in_dir = in_dir;
        if (in_dir)
                snprintf(d->arena, sizeof(d->arena), "%s/throttle.%s", d->dir, d->name);
        else
                snprintf(d->arena, sizeof(d->arena), "/dev/shm/throttle.%s", d->name);
        FILE *f = fopen(d->conf, "we");
        cr_assert_not_null(f, "%s: %s", d->conf, strerror(errno));
        fprintf(f,
                "[arena]\nname = %s\n%s%s\nclock = manual\nhugepages = off\nmode = 0600\n"
                "max_limiters = 8\nmax_readers = 64\nspare = 1MiB\n\n"
                "[daemon]\nheartbeat_ms = 20\nmetrics =\n%s\n%s",
                d->name, in_dir ? "dir = " : "", in_dir ? d->dir : "", daemon_keys, limiters);
        cr_assert_eq(fclose(f), 0);
}

void tdaemon_config_raw(struct tdaemon *d, const char *text)
{
        FILE *f = fopen(d->conf, "we");
        cr_assert_not_null(f, "%s: %s", d->conf, strerror(errno));
        fputs(text, f);
        cr_assert_eq(fclose(f), 0);
}

int tdaemon_config_line(const struct tdaemon *d, const char *needle)
{
        FILE *f = fopen(d->conf, "re");
        cr_assert_not_null(f, "%s: %s", d->conf, strerror(errno));
        char line[512];
        int n = 0, found = 0;
        while (!found && fgets(line, sizeof(line), f)) {
                n++;
                if (strstr(line, needle))
                        found = n;
        }
        fclose(f);
        cr_assert_gt(found, 0, "no \"%s\" in %s", needle, d->conf);
        return found;
}

static const char *daemon_bin(void)
{
        static char bin[512];
        const char *bd = getenv("THR_TEST_BUILD_DIR");
        cr_assert_not_null(bd, "THR_TEST_BUILD_DIR is not set (run through ctest)");
        snprintf(bin, sizeof(bin), "%s/daemon/throttled", bd);
        cr_assert_eq(access(bin, X_OK), 0, "%s: %s", bin, strerror(errno));
        return bin;
}

static void log_path(const struct tdaemon *d, int i, char *out, size_t n)
{
        snprintf(out, n, "%s/daemon-%d.log", d->dir, i);
}

int tdaemon_start(struct tdaemon *d, const char *extra)
{
        return tdaemon_start_conf(d, d->conf, extra);
}

int tdaemon_start_conf(struct tdaemon *d, const char *conf, const char *extra)
{
        const char *bin = daemon_bin();
        int i = d->nlogs++;
        cr_assert_lt(i, TD_MAX, "more than %d daemons in one test", TD_MAX);
        char log[256];
        log_path(d, i, log, sizeof(log));
        pid_t pid = tfork();
        cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
        if (pid == 0) {
                FILE *f = fopen(log, "we");
                if (!f || chdir(d->dir) < 0)
                        _exit(126);
                dup2(fileno(f), 1);
                dup2(fileno(f), 2);
                setenv("THROTTLE_LOG", "info", 1);
                setenv("ASAN_OPTIONS", "detect_leaks=1:exitcode=99", 0);
                if (extra)
                        execl(bin, "throttled", "-c", conf, extra, (char *)NULL);
                else
                        execl(bin, "throttled", "-c", conf, (char *)NULL);
                _exit(127);
        }
        d->pid[i] = pid;
        return i;
}

int tdaemon_run(const struct tdaemon *d, char *out, size_t len, const char *a1, const char *a2,
                const char *a3)
{
        int p[2];
        cr_assert_eq(pipe2(p, O_CLOEXEC), 0);
        char bin[512];
        snprintf(bin, sizeof(bin), "%s/daemon/throttled", getenv("THR_TEST_BUILD_DIR"));
        pid_t pid = fork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                dup2(p[1], 1);
                dup2(p[1], 2);
                execl(bin, "throttled", "-c", d->conf, a1, a2, a3, (char *)NULL);
                _exit(127);
        }
        close(p[1]);
        size_t n = 0;
        ssize_t r;
        while (n < len - 1 && (r = read(p[0], out + n, len - 1 - n)) > 0)
                n += (size_t)r;
        out[n] = 0;
        close(p[0]);
        int st;
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_assert(WIFEXITED(st), "throttled %s: died (status %d):\n%s", a1 ? a1 : "", st, out);
        return WEXITSTATUS(st);
}

const char *tdaemon_log(const struct tdaemon *d, int i)
{
        static char *buf;
        static size_t cap;
        char p[256];
        log_path(d, i, p, sizeof(p));
        size_t n = 0;
        FILE *f = fopen(p, "re");
        for (;;) {
                if (cap - n < 4096) {
                        char *nb = realloc(buf, cap + 65536);
                        cr_assert_not_null(nb);
                        buf = nb;
                        cap += 65536;
                }
                size_t got = f ? fread(buf + n, 1, cap - n - 1, f) : 0;
                n += got;
                if (got == 0)
                        break;
        }
        buf[n] = '\0';
        if (f)
                fclose(f);
        return buf;
}

int tdaemon_log_count(const struct tdaemon *d, int i, const char *what)
{
        int n = 0;
        for (const char *p = tdaemon_log(d, i); (p = strstr(p, what)); p += strlen(what))
                n++;
        return n;
}

double telapsed_s(const struct timespec *t0)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

void tdoze(void)
{
        struct timespec ts = {0, 5 * 1000000};
        nanosleep(&ts, NULL);
}

void tdaemon_wait_log(const struct tdaemon *d, int i, const char *what, int n)
{
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (tdaemon_log_count(d, i, what) < n) {
                cr_assert_lt(telapsed_s(&t0), TD_READY,
                             "fewer than %d \"%s\" in the log of daemon %d:\n%s", n, what, i,
                             tdaemon_log(d, i));
                tdoze();
        }
}

int tdaemon_wait_exit(struct tdaemon *d, int i)
{
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (;;) {
                int st;
                pid_t r = waitpid(d->pid[i], &st, WNOHANG);
                cr_assert_geq(r, 0, "waitpid: %s", strerror(errno));
                if (r == d->pid[i]) {
                        d->pid[i] = 0;
                        return st;
                }
                cr_assert_lt(telapsed_s(&t0), TD_READY, "daemon %d did not exit; log:\n%s", i,
                             tdaemon_log(d, i));
                tdoze();
        }
}

int tdaemon_exit_code(struct tdaemon *d, int i)
{
        int st = tdaemon_wait_exit(d, i);
        cr_assert(WIFEXITED(st), "daemon %d died by signal %d; log:\n%s", i,
                  WIFSIGNALED(st) ? WTERMSIG(st) : 0, tdaemon_log(d, i));
        return WEXITSTATUS(st);
}

void tdaemon_stop(struct tdaemon *d, int i)
{
        cr_assert_eq(kill(d->pid[i], SIGTERM), 0);
        int code = tdaemon_exit_code(d, i);
        cr_assert_eq(code, 0, "daemon %d exit code %d after SIGTERM; log:\n%s", i, code,
                     tdaemon_log(d, i));
}

void tdaemon_kill(struct tdaemon *d, int i)
{
        cr_assert_eq(kill(d->pid[i], SIGKILL), 0);
        int st = tdaemon_wait_exit(d, i);
        cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
                  "daemon %d: status %#x, not killed; log:\n%s", i, st, tdaemon_log(d, i));
}

/* Whether FD is the file at PATH now (same device and inode). */
static bool same_file(int fd, const char *path)
{
        struct stat a, b;
        return fstat(fd, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev &&
               a.st_ino == b.st_ino;
}

void tdaemon_wait_ready(struct tdaemon *d, int i, uint64_t attach)
{
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        tdaemon_unmap(d);
        for (;;) {
                int st;
                cr_assert_eq(waitpid(d->pid[i], &st, WNOHANG), 0,
                             "daemon %d exited (status %#x) before it was ready; log:\n%s", i, st,
                             tdaemon_log(d, i));
                char err[256];
                if (d->map.base && !same_file(d->map.fd, d->arena))
                        tdaemon_unmap(d); /* the daemon replaced the file we mapped */
                if (!d->map.base && access(d->arena, F_OK) == 0 &&
                    shm_arena_attach(d->arena, true, &d->map, err, sizeof(err)) < 0)
                        memset(&d->map, 0, sizeof(d->map));
                if (d->map.base) {
                        pid_t holder = 0;
                        const struct thr_hdr *h = shm_hdr(&d->map);
                        if (shm_daemon_alive(&d->map, &holder) == 1 && holder == d->pid[i] &&
                            atomic_load(&h->attach_count) == attach)
                                break;
                }
                cr_assert_lt(telapsed_s(&t0), TD_READY,
                             "daemon %d not ready after %d s (arena %s); log:\n%s", i, TD_READY,
                             d->arena, tdaemon_log(d, i));
                tdoze();
        }
        int rc = thr_arena_open(d->arena, 0, &d->a);
        cr_assert_eq(rc, 0, "thr_arena_open(%s): %s", d->arena, thr_strerror(rc));
}

thr_limiter *tdaemon_lim(struct tdaemon *d, int slot, const char *name)
{
        thr_limiter_close(d->l[slot]);
        d->l[slot] = NULL;
        int rc = thr_limiter_open(d->a, name, &d->l[slot]);
        cr_assert_eq(rc, 0, "limiter %s: %s", name, thr_strerror(rc));
        return d->l[slot];
}

struct thr_dir_entry *tdaemon_entry(const struct tdaemon *d, const char *name, uint32_t state)
{
        int idx = shm_dir_find_state(&d->map, name, state);
        cr_assert_geq(idx, 0, "limiter %s (state %u) in the directory", name, state);
        return (struct thr_dir_entry *)shm_at(d->map.base, shm_hdr(&d->map)->dir_off) + idx;
}

struct thr_table *tdaemon_table(const struct tdaemon *d, const char *name)
{
        return shm_at(d->map.base, tdaemon_entry(d, name, THR_DIR_LIVE)->table_off);
}

struct thr_slot *tdaemon_slot(const struct tdaemon *d, const char *name, const char *key)
{
        const struct thr_table *tb = tdaemon_table(d, name);
        uint64_t h = shm_hash(shm_hdr(&d->map)->hash_key, key, strlen(key));
        struct thr_slot *s = shm_table_lookup(d->map.base, tb, h, key, (uint32_t)strlen(key));
        cr_assert_not_null(s, "key %s in limiter %s", key, name);
        return s;
}

/* ---------------------------------------------------------------- shard locks */

uint64_t tlock_me(thr_arena *a)
{
        int err = 0;
        struct thr_reader *r = thr_reader_get(a, &err);
        cr_assert_not_null(r, "registration: %s", thr_strerror(err));
        const struct thr_reader *r0 = shm_at(a->map.base, a->map.g.reader_off);
        return shm_lock_client((uint32_t)(r - r0), atomic_load(&r->owner));
}

void tprobe(const struct shm_map *m, const struct thr_table *tb, const char *key,
            struct shm_probe *p)
{
        shm_probe_init(m->base, tb, shm_hash(shm_hdr(m)->hash_key, key, strlen(key)), p);
}

void tkey_at(const struct shm_map *m, const struct thr_table *tb, uint32_t home, const char *prefix,
             char *buf, size_t len)
{
        for (int i = 0; i < 100000; i++) {
                snprintf(buf, len, "%s%d", prefix, i);
                struct shm_probe p;
                tprobe(m, tb, buf, &p);
                if (p.home == home)
                        return;
        }
        cr_assert_fail("no key %s* with home %u", prefix, home);
}

struct thr_dir_entry *tadapt_started(const struct tdaemon *d, const char *name)
{
        struct thr_dir_entry *de = tdaemon_entry(d, name, THR_DIR_LIVE);
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (atomic_load(&de->adapt_next_ns) == 0) {
                cr_assert_lt(telapsed_s(&t0), 10.0, "the controller of %s never started", name);
                tdoze();
        }
        return de;
}

void tadapt_wait_steps(const struct thr_dir_entry *de, uint64_t n)
{
        struct timespec t0;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        while (atomic_load(&de->adapt_steps) < n) {
                cr_assert_lt(telapsed_s(&t0), 20.0, "the daemon took no step %lu",
                             (unsigned long)n);
                tdoze();
        }
}

uint64_t tlim_rate(thr_limiter *l)
{
        struct thr_limiter_info in;
        cr_assert_eq(thr_limiter_info(l, &in), 0);
        return in.rate;
}

int tdaemon_start_real(struct tdaemon *d, const char *limiters)
{
        char text[2048];
        int n = snprintf(text, sizeof(text),
                         "[arena]\nname = %s\nclock = monotonic\nhugepages = off\nmode = 0600\n"
                         "max_limiters = 4\nmax_readers = 64\n\n[daemon]\nheartbeat_ms = 20\n"
                         "metrics =\n\n%s",
                         d->name, limiters);
        cr_assert(n > 0 && (size_t)n < sizeof(text), "the limiters' text is too long");
        tdaemon_config_raw(d, text);
        snprintf(d->arena, sizeof(d->arena), "/dev/shm/throttle.%s", d->name);
        int i = tdaemon_start(d, NULL);
        tdaemon_wait_ready(d, i, 1);
        return i;
}

void texample_line(const char *cmd, char *line, size_t len, int *st)
{
        FILE *p = popen(cmd, "r");
        cr_assert_not_null(p, "popen %s", cmd);
        char *got = fgets(line, (int)len, p);
        *st = pclose(p);
        cr_assert_not_null(got, "no output from %s", cmd);
}
