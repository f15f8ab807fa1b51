/*
 * reload.c - what a configuration does to a live arena: the lines the daemon logs when it
 * reloads, the verdict it leaves in the arena header for `throttled --reload`, and the two
 * commands that read them (`--check` against the live arena, `--reload`).
 *
 * One plan, three readers. The daemon plans a reload with shm_arena_plan and applies it with
 * shm_arena_configure, which runs the same planning code again under the same single writer (the
 * daemon's main thread): so what it logs is what it did. `--check` runs shm_arena_plan on a
 * read-only mapping of the running arena: the same verdict the daemon would reach, unless the
 * arena changes in between (another reload, or the spare heap used up by one).
 *
 * The verdict record (struct thr_hdr reload_begun ... reload_msg) is a seqlock with one writer:
 * the daemon bumps reload_begun before it reads the file, writes the message and rc, then
 * release-stores reload_done = that number. `--reload` reads B0 = reload_begun, sends SIGHUP, and
 * accepts the first verdict with reload_done > B0, copied while reload_begun == reload_done before
 * and after the copy (no reload writing it meanwhile). A reload numbered above B0 began after
 * B0 was read, so it read the file as it was when the command ran: its verdict covers the file
 * the caller means, even when another SIGHUP (or two) was coalesced into it. The header is
 * client-writable: a client could forge a verdict, as it could any state word; the command bounds
 * every length it reads and never follows anything but the pid, which it checks (below).
 *
 * The pid `--reload` signals comes from --pid (systemd's $MAINPID) or from the arena header,
 * which any client can write: before signalling, the command checks that the process holds the
 * daemon lock of this very arena file: one of its /proc/PID/fd entries is the file (device and
 * inode) and that descriptor's fdinfo lists the OFD write lock on byte 0. Every client has the
 * file open, so that alone would prove nothing. Nor does the lock alone: while no daemon runs, a
 * client can take it and hand the locked descriptor to another program, so the process must also
 * run throttled (runs_throttled). The signal goes through a pidfd opened before the checks, so a
 * pid reused after them is not signalled. SIGHUP's default action kills, so a forged pid must
 * never reach a process that is not the arena's daemon.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "kind.h"
#include "reload.h"

/* The seqlock's two fences. ThreadSanitizer does not model fences (gcc refuses them under
 * -fsanitize=thread, -Wtsan); the only code ordered by them is the command's copy of the
 * message (reload_request), which the TSan suites never run. */
#ifdef __SANITIZE_THREAD__
#define VERDICT_FENCE(mo) ((void)(mo))
#else
#define VERDICT_FENCE(mo) atomic_thread_fence(mo)
#endif

/* ---------------------------------------------------------------- formatting */

/* Append to BUF (LEN bytes, *AT used), keeping it NUL-terminated; "..." marks a truncation. */
static void put(char *buf, size_t len, size_t *at, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void put(char *buf, size_t len, size_t *at, const char *fmt, ...)
{
        if (!len || *at >= len - 1)
                return;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(buf + *at, len - *at, fmt, ap);
        va_end(ap);
        if (n < 0)
                return;
        if ((size_t)n >= len - *at) {
                *at = len - 1;
                if (len >= 4)
                        memcpy(buf + len - 4, "...", 4);
                return;
        }
        *at += (size_t)n;
}

/* NS as the config writes it: the largest unit that divides it ("250ms", "1min", "0"). */
static void fmt_dur(uint64_t ns, char *out, size_t len)
{
        static const struct {
                uint64_t ns;
                const char *unit;
        } u[] = {{86400000000000ull, "d"}, {3600000000000ull, "h"}, {60000000000ull, "min"},
                 {1000000000ull, "s"},     {1000000ull, "ms"},      {1000ull, "us"}};
        for (size_t i = 0; ns && i < sizeof(u) / sizeof(u[0]); i++)
                if (ns % u[i].ns == 0) {
                        snprintf(out, len, "%" PRIu64 "%s", ns / u[i].ns, u[i].unit);
                        return;
                }
        snprintf(out, len, ns ? "%" PRIu64 "ns" : "%" PRIu64, ns);
}

/* N per P ns as a rate: "100/s", "5/250ms", "20000/min". */
static void fmt_rate(uint64_t n, uint64_t period_ns, char *out, size_t len)
{
        char d[24];
        fmt_dur(period_ns, d, sizeof(d));
        snprintf(out, len, "%" PRIu64 "/%s", n,
                 d[0] == '1' && (d[1] < '0' || d[1] > '9') ? d + 1 : d);
}

static const char *on_full_name(uint32_t f)
{
        return f == THR_FULL_DENY    ? "deny"
               : f == THR_FULL_ALLOW ? "allow"
               : f == THR_FULL_EVICT ? "evict"
                                     : "?";
}

#define KV_MAX 12 /* a breaker's 8, then the 3 every kind has */
struct kv {
        const char *key;
        char val[64];
};

/* The fields of record P a config sets, in the config's words, for its kind. */
static size_t params_kv(const struct thr_params *p, struct kv *kv)
{
        size_t n = 0;
#define KV(k, ...) (kv[n].key = (k), snprintf(kv[n].val, sizeof(kv[n].val), __VA_ARGS__), n++)
        char a[48];
        switch (p->kind) {
        case THR_KIND_GCRA:
                fmt_rate(p->rate_n, p->period_ns, a, sizeof(a));
                KV("rate", "%s", a);
                KV("burst", "%" PRIu64, p->burst);
                KV("initial", "%" PRIu64, p->initial);
                fmt_dur(p->k ? p->max_reserve_units / p->k : 0, a, sizeof(a));
                KV("max_reserve", "%s", a);
                KV("clock", "%s", shm_clock_read_name(THR_PARAM_CLOCK(p->flags)));
                break;
        case THR_KIND_WINDOW:
                KV("limit", "%" PRIu64, p->rate_n);
                fmt_dur(p->period_ns, a, sizeof(a));
                KV("window", "%s", a);
                KV("serialize", "%s", p->flags & THR_PARAM_SERIALIZE ? "yes" : "no");
                fmt_dur(p->max_reserve_units, a, sizeof(a));
                KV("max_reserve", "%s", a);
                break;
        case THR_KIND_SEMAPHORE:
                KV("max", "%" PRIu64, p->rate_n);
                KV("leases_per_key", "%" PRIu64, p->leases);
                KV("level", "%" PRIu64, p->level);
                KV("max_waiters", "%" PRIu32, THR_SEMQ_MAX_WAITERS(p->reserved));
                KV("on_queue_full", "%s",
                   THR_SEMQ_ON_FULL(p->reserved) == THR_QUEUE_DROP_OLDEST   ? "drop_oldest"
                   : THR_SEMQ_ON_FULL(p->reserved) == THR_QUEUE_DROP_LOWEST ? "drop_lowest"
                                                                            : "reject");
                if (THR_SEMQ_SHARE(p->reserved))
                        KV("priority_share", "1 in %" PRIu32, THR_SEMQ_SHARE(p->reserved));
                else
                        KV("priority_share", "%s", "none (strict)");
                break;
        case THR_KIND_BUDGET:
                KV("initial", "%" PRIu64, p->initial);
                break;
        case THR_KIND_BREAKER:
                KV("failures", "%" PRIu64, p->rate_n);
                KV("failure_rate", "%" PRIu64 "%%", p->burst);
                KV("min_calls", "%" PRIu64, p->initial);
                fmt_dur(p->period_ns, a, sizeof(a));
                KV("window", "%s", a);
                fmt_dur(p->max_reserve_units, a, sizeof(a));
                KV("cooldown", "%s", a);
                KV("probes", "%" PRIu64, p->level);
                fmt_dur(p->leases, a, sizeof(a));
                KV("probe_timeout", "%s", a);
                KV("successes", "%" PRIu64, p->reserved);
                break;
        default:
                break;
        }
        fmt_dur(p->idle_ttl_ns, a, sizeof(a));
        KV("idle_ttl", "%s", a);
        KV("on_full", "%s", on_full_name(p->on_full));
        fmt_dur(p->lock_wait_ns, a, sizeof(a));
        KV("insert_wait", "%s", a);
#undef KV
        return n;
}

/* What a GCRA record rounded to its buckets' unit runs at (THR_PARAM_ROUNDED). */
static void put_rounded(char *buf, size_t len, size_t *at, const struct thr_params *p)
{
        if (p->kind != THR_KIND_GCRA || !(p->flags & THR_PARAM_ROUNDED) || !p->k || !p->t_units)
                return;
        double t = (double)p->t_units / (double)p->k;
        double want = (double)p->period_ns / (double)p->rate_n;
        char per[64];
        if (p->k == 1)
                snprintf(per, sizeof(per), "%" PRIu64 " ns", p->t_units);
        else
                snprintf(per, sizeof(per), "%" PRIu64 "/%" PRIu64 " ns", p->t_units, p->k);
        put(buf, len, at,
            " (the exact interval %.3f ns needs a finer time unit than the 1/%" PRIu64
            " ns its buckets count in: it runs at one token per %s, %.9g per second, %.2g below "
            "the configured rate and never above it; a new arena would be exact)",
            want, p->k, per, 1e9 / t, (t - want) / t);
}

size_t reload_describe(const struct shm_change *ch, size_t n, char *buf, size_t len)
{
        size_t at = strlen(buf), changes = 0, count[SHM_CHANGE_RETIRE + 1] = {0};
        for (size_t i = 0; i < n; i++) {
                const struct shm_change *c = &ch[i];
                struct kv b[KV_MAX], a[KV_MAX];
                size_t nb = 0, na = 0;
                if (c->what > SHM_CHANGE_RETIRE)
                        continue;
                count[c->what]++;
                if (c->what == SHM_CHANGE_SAME)
                        continue;
                changes++;
                if (c->what != SHM_CHANGE_ADD)
                        nb = params_kv(&c->before, b);
                if (c->what != SHM_CHANGE_RETIRE)
                        na = params_kv(&c->after, a);
                switch (c->what) {
                case SHM_CHANGE_ADD:
                        put(buf, len, &at, "limiter '%s' added: kind %s", c->name,
                            shm_kind_name(c->after.kind));
                        for (size_t j = 0; j < na; j++)
                                put(buf, len, &at, ", %s %s", a[j].key, a[j].val);
                        put(buf, len, &at, ", capacity %" PRIu64 ", %u shards", c->capacity,
                            c->nshards);
                        break;
                case SHM_CHANGE_RETIRE:
                        put(buf, len, &at,
                            "limiter '%s' is no longer configured: retired (its clients get EIDRM; "
                            "its buckets are kept and come back if it is configured again with "
                            "the same kind, capacity and shards)",
                            c->name);
                        break;
                default: {
                        put(buf, len, &at, "limiter '%s'%s", c->name,
                            c->what == SHM_CHANGE_REVIVE
                                ? " configured again: revived with its buckets"
                                : ":");
                        const char *sep = c->what == SHM_CHANGE_REVIVE ? "; " : " ";
                        for (size_t j = 0; j < na && j < nb; j++) {
                                if (strcmp(a[j].key, b[j].key) || !strcmp(a[j].val, b[j].val))
                                        continue;
                                put(buf, len, &at, "%s%s %s -> %s", sep, a[j].key, b[j].val,
                                    a[j].val);
                                sep = ", ";
                        }
                        if (c->before.t_units != c->after.t_units &&
                            c->after.kind == THR_KIND_GCRA &&
                            !strcmp(sep, c->what == SHM_CHANGE_REVIVE ? "; " : " "))
                                put(buf, len, &at, "%sinterval %" PRIu64 " -> %" PRIu64 " units",
                                    sep, c->before.t_units, c->after.t_units);
                        put_rounded(buf, len, &at, &c->after);
                        break;
                }
                }
                put(buf, len, &at, "\n");
        }
        put(buf, len, &at,
            "%zu limiters configured: %zu added, %zu changed, %zu revived, %zu unchanged; %zu "
            "retired",
            count[SHM_CHANGE_SAME] + count[SHM_CHANGE_PARAMS] + count[SHM_CHANGE_ADD] +
                count[SHM_CHANGE_REVIVE],
            count[SHM_CHANGE_ADD], count[SHM_CHANGE_PARAMS], count[SHM_CHANGE_REVIVE],
            count[SHM_CHANGE_SAME], count[SHM_CHANGE_RETIRE]);
        return changes;
}

/* ---------------------------------------------------------------- the verdict record */

uint64_t reload_verdict_begin(struct shm_map *m)
{
        struct thr_hdr *h = shm_hdr(m);
        uint64_t seq = atomic_fetch_add_explicit(&h->reload_begun, 1, memory_order_relaxed) + 1;
        VERDICT_FENCE(memory_order_release); /* the bump before any byte of the message */
        return seq;
}

void reload_verdict_end(struct shm_map *m, uint64_t seq, int rc, const char *msg)
{
        struct thr_hdr *h = shm_hdr(m);
        size_t len = strlen(msg);
        if (len > THR_RELOAD_MSG) { /* the log has all of it */
                memcpy(h->reload_msg, msg, THR_RELOAD_MSG - 4);
                memcpy(h->reload_msg + THR_RELOAD_MSG - 4, "\n...", 4);
                len = THR_RELOAD_MSG;
        } else {
                memcpy(h->reload_msg, msg, len);
        }
        atomic_store_explicit(&h->reload_len, (uint32_t)len, memory_order_relaxed);
        atomic_store_explicit(&h->reload_rc, rc, memory_order_relaxed);
        atomic_store_explicit(&h->reload_done, seq, memory_order_release);
}

/* ---------------------------------------------------------------- --check */

/* Whether a daemon holds the arena lock on the file open as FD (shm_daemon_lock's byte 0). */
static bool daemon_holds(int fd)
{
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
        return fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
}

static int open_live(const struct config *cfg, struct shm_map *m, const char *what)
{
        char apath[256], err[512] = "";
        int rc = supervisor_arena_existing(&cfg->arena, apath, sizeof(apath));
        if (rc == 0)
                rc = shm_arena_attach(apath, false, m, err, sizeof(err));
        if (rc == -ENOENT)
                return -ENOENT;
        if (rc < 0) {
                fprintf(stderr, "throttled: %s: cannot read arena '%s'%s%s: %s\n", what,
                        cfg->arena.name, apath[0] ? " at " : "", apath[0] ? apath : "",
                        err[0] ? err : strerror(-rc));
                return rc == -EACCES || rc == -EPERM ? EX_NOPERM : EX_DATAERR;
        }
        return 0;
}

int reload_check_live(const struct config *cfg, const char *path)
{
        struct shm_map m = {0};
        int rc = open_live(cfg, &m, "--check against the live arena");
        if (rc == -ENOENT) {
                printf("%s: ok (%zu limiters); no arena '%s' exists yet: a daemon started with "
                       "this file creates it\n",
                       path, cfg->nlimiters, cfg->arena.name);
                return 0;
        }
        if (rc)
                return rc;
        const struct thr_hdr *h = shm_hdr(&m);
        bool held = daemon_holds(m.fd);
        uint64_t pid = atomic_load_explicit(&h->daemon_pid, memory_order_relaxed);
        char who[64];
        if (held)
                snprintf(who, sizeof(who), "its daemon (pid %" PRIu64 ")", pid);
        else
                snprintf(who, sizeof(who), "a daemon started on it (none runs now)");
        struct shm_change *ch = NULL;
        size_t n = 0;
        char err[4096] = "";
        rc = shm_arena_plan(&m, &cfg->arena, &ch, &n, err, sizeof(err));
        if (rc < 0) {
                printf("%s: valid, but REFUSED by arena %s: %s would keep its running "
                       "configuration: %s\n",
                       path, m.path, who, err);
                shm_arena_detach(&m);
                return EX_CONFIG;
        }
        static char msg[16384];
        msg[0] = 0;
        reload_describe(ch, n, msg, sizeof(msg));
        free(ch);
        printf("%s: ok: %s of arena %s would accept it:\n%s\n", path, who, m.path, msg);
        if (cfg->arena.max_limiters != m.g.dir_count || cfg->arena.max_readers != m.g.reader_count)
                printf("note: [arena] max_limiters and max_readers are fixed when the arena is "
                       "created (it has %u and %u): a reload does not change them\n",
                       m.g.dir_count, m.g.reader_count);
        shm_arena_detach(&m);
        return 0;
}

/* ---------------------------------------------------------------- --reload */

/* Whether descriptor NAME of process PID holds the daemon lock: its fdinfo lists an OFD write
 * lock on byte 0 alone ("lock:\t1: OFDLCK ADVISORY  WRITE -1 fe:00:123 0 0"). Clients hold OFD
 * locks on their reader records' bytes, never on byte 0. */
static bool fd_holds_daemon_lock(pid_t pid, const char *name)
{
        char path[320], line[256];
        snprintf(path, sizeof(path), "/proc/%d/fdinfo/%s", (int)pid, name);
        FILE *f = fopen(path, "re");
        if (!f)
                return false;
        bool held = false;
        while (!held && fgets(line, sizeof(line), f)) {
                size_t n = strlen(line);
                held = strncmp(line, "lock:", 5) == 0 && strstr(line, "OFDLCK") &&
                       strstr(line, "WRITE") && n >= 5 && strcmp(line + n - 5, " 0 0\n") == 0;
        }
        fclose(f);
        return held;
}

/*
 * Whether process PID runs throttled: its executable is this one, or (the binary was replaced
 * by an upgrade since it started) its command name is this one's. A client can take the daemon
 * lock itself while no daemon runs and hand the locked descriptor to any program (an exec, or
 * SCM_RIGHTS): the lock alone does not make that program a daemon.
 */
static bool runs_throttled(pid_t pid)
{
        char path[64];
        struct stat a, b;
        snprintf(path, sizeof(path), "/proc/%d/exe", (int)pid);
        if (stat(path, &a) == 0 && stat("/proc/self/exe", &b) == 0 && a.st_dev == b.st_dev &&
            a.st_ino == b.st_ino)
                return true;
        char theirs[32] = "", mine[32] = "";
        snprintf(path, sizeof(path), "/proc/%d/comm", (int)pid);
        FILE *f = fopen(path, "re");
        if (f) {
                if (!fgets(theirs, sizeof(theirs), f))
                        theirs[0] = 0;
                fclose(f);
        }
        f = fopen("/proc/self/comm", "re");
        if (f) {
                if (!fgets(mine, sizeof(mine), f))
                        mine[0] = 0;
                fclose(f);
        }
        return theirs[0] && strcmp(theirs, mine) == 0;
}

/*
 * Whether process PID is the daemon of the arena file open here as FD: it runs throttled and has
 * that file (device and inode) open, on a descriptor that holds the daemon lock. Every client has
 * the file open too, so having it open proves nothing. 1 yes, 0 no, -errno when PID cannot be
 * inspected.
 */
static int pid_is_daemon(pid_t pid, int fd)
{
        struct stat want;
        if (fstat(fd, &want) < 0)
                return -errno;
        char dir[64];
        snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
        DIR *d = opendir(dir);
        if (!d)
                return -errno;
        int found = 0;
        struct dirent *e;
        while (!found && (e = readdir(d))) {
                if (e->d_name[0] == '.')
                        continue;
                struct stat st;
                if (fstatat(dirfd(d), e->d_name, &st, 0) == 0 && st.st_dev == want.st_dev &&
                    st.st_ino == want.st_ino && fd_holds_daemon_lock(pid, e->d_name))
                        found = 1;
        }
        closedir(d);
        return found && runs_throttled(pid) ? 1 : 0;
}

#ifndef __NR_pidfd_open
#define __NR_pidfd_open 434
#endif
#ifndef __NR_pidfd_send_signal
#define __NR_pidfd_send_signal 424
#endif

/* SIGHUP to the process PIDFD refers to (the one inspected: if it died since, its pid may be
 * another process's now, and this fails with ESRCH instead of signalling that one); kill(2)
 * where PIDFD is -1 (kernel < 5.3). */
static int send_hup(pid_t pid, int pidfd)
{
        if (pidfd < 0)
                return kill(pid, SIGHUP);
        return (int)syscall(__NR_pidfd_send_signal, pidfd, SIGHUP, NULL, 0);
}

static void sleep_ms(unsigned ms)
{
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
        nanosleep(&ts, NULL);
}

/* Copy the verdict numbered above B0, if one is there and no reload writes the record: 1 and
 * *RC, MSG (LEN bytes, NUL-terminated); 0 not yet. */
static int verdict_read(const struct thr_hdr *h, uint64_t b0, int *rc, char *msg, size_t len)
{
        uint64_t done = atomic_load_explicit(&h->reload_done, memory_order_acquire);
        uint64_t begun = atomic_load_explicit(&h->reload_begun, memory_order_relaxed);
        if (done <= b0 || begun != done)
                return 0;
        uint32_t n = atomic_load_explicit(&h->reload_len, memory_order_relaxed);
        if (n > THR_RELOAD_MSG)
                n = THR_RELOAD_MSG;
        if (n > len - 1)
                n = (uint32_t)(len - 1);
        memcpy(msg, h->reload_msg, n);
        msg[n] = 0;
        *rc = atomic_load_explicit(&h->reload_rc, memory_order_relaxed);
        VERDICT_FENCE(memory_order_acquire); /* the copy before the check */
        return atomic_load_explicit(&h->reload_begun, memory_order_relaxed) == done &&
               atomic_load_explicit(&h->reload_done, memory_order_relaxed) == done;
}

int reload_request(const struct config *cfg, pid_t pid, unsigned timeout_ms)
{
        struct shm_map m = {0};
        int rc = open_live(cfg, &m, "--reload");
        if (rc == -ENOENT) {
                fprintf(stderr, "throttled: --reload: no arena '%s' exists: no daemon runs it\n",
                        cfg->arena.name);
                return EX_UNAVAILABLE;
        }
        if (rc)
                return rc;
        const struct thr_hdr *h = shm_hdr(&m);
        int ex = 0, pidfd = -1;
        if (!daemon_holds(m.fd)) {
                fprintf(stderr, "throttled: --reload: no daemon runs arena %s\n", m.path);
                ex = EX_UNAVAILABLE;
                goto out;
        }
        if (!pid)
                pid = (pid_t)atomic_load_explicit(&h->daemon_pid, memory_order_relaxed);
        /* the process inspected is the one signalled (a pid reused in between is not) */
        pidfd = pid > 0 ? (int)syscall(__NR_pidfd_open, pid, 0) : -1;
        int has = pid > 0 ? pid_is_daemon(pid, m.fd) : 0;
        if (has != 1) {
                fprintf(stderr,
                        "throttled: --reload: process %d %s the daemon lock of arena %s, so it is "
                        "not its daemon: no signal sent%s\n",
                        (int)pid,
                        has < 0 ? "cannot be inspected to see whether it holds" : "does not hold",
                        m.path, has < 0 ? " (run as the daemon's user or root)" : "");
                ex = has == -EACCES || has == -EPERM ? EX_NOPERM : EX_UNAVAILABLE;
                goto out;
        }
        uint64_t b0 = atomic_load_explicit(&h->reload_begun, memory_order_acquire);
        if (send_hup(pid, pidfd) < 0) {
                fprintf(stderr, "throttled: --reload: cannot signal the daemon (pid %d): %s\n",
                        (int)pid, strerror(errno));
                ex = errno == EPERM ? EX_NOPERM : EX_UNAVAILABLE;
                goto out;
        }
        static char msg[THR_RELOAD_MSG + 1];
        int vrc = 0;
        for (unsigned waited = 0;; waited += 10) {
                if (verdict_read(h, b0, &vrc, msg, sizeof(msg)))
                        break;
                if (kill(pid, 0) < 0 && errno == ESRCH) {
                        fprintf(stderr,
                                "throttled: --reload: the daemon (pid %d) exited before "
                                "it answered\n",
                                (int)pid);
                        ex = EX_UNAVAILABLE;
                        goto out;
                }
                if (waited >= timeout_ms) {
                        fprintf(stderr,
                                "throttled: --reload: the daemon (pid %d) gave no verdict "
                                "within %u ms: see its log\n",
                                (int)pid, timeout_ms);
                        ex = EX_TEMPFAIL;
                        goto out;
                }
                sleep_ms(10);
        }
        FILE *f = vrc == 0 ? stdout : stderr;
        fprintf(f, "throttled: reload of arena %s (daemon pid %d) %s\n%s\n", m.path, (int)pid,
                vrc == 0 ? "applied:" : "REFUSED, running configuration kept:", msg);
        ex = vrc == 0 ? 0 : EX_CONFIG;
out:
        if (pidfd >= 0)
                close(pidfd);
        shm_arena_detach(&m);
        return ex;
}
