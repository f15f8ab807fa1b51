/*
 * supervisor.c - throttled's arena supervision: create or re-attach, lock, heartbeat, reload.
 *
 * A restart must not reset limits: an existing arena is re-attached with every bucket kept, and
 * only its parameter records are swapped when the config changed them. Two daemons never run on
 * one arena: the first holds an open-file-description write lock on byte 0 of the file, which
 * the kernel drops when that process exits however it dies; the second finds it held and stops.
 * Clients never take that lock and never wait for the daemon.
 *
 * Threads: the main thread handles signals and reloads; the maintenance thread (maint.c) evicts,
 * reclaims and keeps the heartbeat. They share the registry (RCU, liburcu: see maint.c) and the
 * arena; arena writes by a reload are the publish protocol of shm_arena_configure (release
 * stores of whole records), which the maintenance thread reads through checked snapshots.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>
#include <urcu.h>

#include "clock.h"
#include "http.h"
#include "global.h"
#include "log.h"
#include "metrics.h"
#include "notify.h"
#include "reload.h"
#include "supervisor.h"
#include "tsan.h"

/* A struct config points into itself (arena.limiters, arena.dir): repoint after every copy. */
static void config_copy(struct config *dst, const struct config *src)
{
        *dst = *src;
        dst->arena.limiters = dst->limiters;
        dst->arena.dir = src->arena.dir ? dst->arena_dir : NULL;
}

/* The path of the configured arena if it exists: in [arena] dir when set, else where clients look.
 */
int supervisor_arena_existing(const struct shm_arena_spec *a, char *path, size_t len)
{
        if (!a->dir)
                return shm_arena_find(a->name, path, len);
        int rc = shm_arena_path(a->name, a->dir, SHM_HUGE_OFF, path, len);
        return rc < 0 ? rc : access(path, F_OK) == 0 ? 0 : -ENOENT;
}

/* The pid an arena file's header names as its daemon: for messages only (clients can write it). */
static pid_t recorded_daemon(int fd)
{
        uint64_t pid = 0;
        if (pread(fd, &pid, sizeof(pid), offsetof(struct thr_hdr, daemon_pid)) != sizeof(pid))
                return 0;
        return (pid_t)pid;
}

/*
 * Whether a daemon holds the arena file at PATH (its lock: an open-file-description write lock on
 * byte 0, see shm_daemon_lock), for a file this daemon could not attach: 1 held (*PID: the pid
 * its header records), 0 free, -errno when it cannot be opened or tested.
 */
static int arena_held(const char *path, pid_t *pid)
{
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
        int rc = fcntl(fd, F_OFD_GETLK, &fl) < 0 ? -errno : fl.l_type != F_UNLCK;
        if (rc == 1)
                *pid = recorded_daemon(fd);
        close(fd);
        return rc;
}

/*
 * --recreate: remove the arena file at PATH, which cannot be used for WHY. Only with its daemon
 * lock taken here: a daemon that holds it serves clients from this file, and removing it would
 * split them between two arenas (each admitting its own share). The lock is held across the
 * unlink, so no daemon can take the old file over meanwhile. Returns -ENOENT (removed: create a
 * new one) or a sysexits code after logging why not.
 */
static int remove_unusable(const char *path, const char *why)
{
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0) {
                log_error("arena %s cannot be used (%s), and cannot be opened to make sure no "
                          "daemon holds it (%s): not removed",
                          path, why, strerror(errno));
                return errno == EACCES ? EX_NOPERM : EX_CANTCREAT;
        }
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
        if (fcntl(fd, F_OFD_SETLK, &fl) < 0) {
                int e = errno;
                pid_t pid = recorded_daemon(fd);
                close(fd);
                if (e != EAGAIN && e != EACCES) {
                        log_error("cannot lock arena %s to make sure no daemon holds it (%s): "
                                  "not removed",
                                  path, strerror(e));
                        return EX_OSERR;
                }
                log_error("another throttled (pid %d) runs on arena %s; --recreate never removes "
                          "an arena a daemon holds (this one cannot use it: %s)",
                          (int)pid, path, why);
                return EX_UNAVAILABLE;
        }
        log_warn("--recreate: removing arena %s, which cannot be used (%s): every limit is reset; "
                 "processes that still map it keep deciding on it until they open the arena again",
                 path, why);
        int rc = -ENOENT;
        if (unlink(path) < 0) {
                log_error("cannot remove arena %s: %s", path, strerror(errno));
                rc = EX_CANTCREAT;
        }
        close(fd);
        return rc;
}

static int attach_existing(struct supervisor *s, const char *path, bool recreate)
{
        char err[512];
        int rc = shm_arena_attach(path, true, &s->map, err, sizeof(err));
        if (rc == 0)
                rc = shm_arena_check_clock(shm_hdr(&s->map), err, sizeof(err));
        if (rc == 0)
                rc = shm_arena_check_pidns(shm_hdr(&s->map), err, sizeof(err));
        if (rc == 0 && s->cfg.arena.hugepages == SHM_HUGE_REQUIRE &&
            shm_hdr(&s->map)->backing != THR_BACKING_HUGETLBFS) {
                snprintf(err, sizeof(err), "hugepages = require, but it is backed by /dev/shm");
                rc = -EINVAL;
        }
        if (rc == 0)
                return 0;
        if (s->map.base)
                shm_arena_detach(&s->map);
        pid_t pid = 0;
        if (arena_held(path, &pid) == 1) {
                log_error("another throttled (pid %d) runs on arena %s, which this daemon cannot "
                          "use: %s",
                          (int)pid, path, err);
                return EX_UNAVAILABLE;
        }
        if (!recreate) {
                log_error("arena %s cannot be used: %s (start with --recreate to replace it, "
                          "which resets every limit)",
                          path, err);
                return rc == -EACCES ? EX_NOPERM : EX_DATAERR;
        }
        return remove_unusable(path, err);
}

static void log_clocks(const struct shm_map *m, const struct config *cfg);

static int create_new(struct supervisor *s)
{
        char err[512] = "";
        int rc = shm_arena_create(&s->cfg.arena, &s->map, err, sizeof(err));
        if (rc < 0) {
                log_error("cannot create arena '%s': %s", s->cfg.arena.name, err);
                return rc == -EEXIST ? EX_UNAVAILABLE : EX_CANTCREAT;
        }
        if (rc == 1)
                log_warn("%s", err);
        log_info("created arena %s (%zu bytes)", s->map.path, s->map.size);
        return 0;
}

static int lock_and_configure(struct supervisor *s)
{
        pid_t holder = 0;
        int rc = shm_daemon_lock(&s->map, &holder);
        if (rc == -EBUSY) {
                log_error("another throttled (pid %d) runs on arena %s", (int)holder, s->map.path);
                return EX_UNAVAILABLE;
        }
        if (rc < 0) {
                log_error("cannot lock arena %s: %s", s->map.path, strerror(-rc));
                return EX_OSERR;
        }
        char err[512];
        rc = shm_arena_configure(&s->map, &s->cfg.arena, err, sizeof(err));
        if (rc < 0) {
                log_error("config %s does not fit arena %s: %s", s->cfg.path, s->map.path, err);
                return EX_CONFIG;
        }
        return 0;
}

/* A registry for CFG: the config and the directory entry of each of its limiters. */
static struct registry *registry_make(const struct supervisor *s, const struct config *cfg)
{
        struct registry *r = calloc(1, sizeof(*r));
        if (!r)
                return NULL;
        config_copy(&r->cfg, cfg);
        for (size_t i = 0; i < cfg->nlimiters; i++) {
                int idx = shm_dir_find(&s->map, cfg->limiters[i].name);
                if (idx >= 0) {
                        r->spec[r->n] = (uint32_t)i;
                        r->idx[r->n++] = (uint32_t)idx;
                }
        }
        /* made on the main thread right after the configuration was applied (adapt.c) */
        r->gen = atomic_load_explicit(&shm_hdr(&s->map)->config_gen, memory_order_relaxed);
        return r;
}

/* Publish REG to the daemon's threads; the old one is freed once no reader can hold it. */
static void registry_publish(struct supervisor *s, struct registry *reg)
{
        TSAN_RELEASE(&s->reg);
        struct registry *old = rcu_xchg_pointer(&s->reg, reg);
        synchronize_rcu();
        if (old)
                TSAN_ACQUIRE(old);
        free(old);
}

static void announce(struct supervisor *s)
{
        struct thr_hdr *h = shm_hdr(&s->map);
        uint64_t now = shm_now_ns(h);
        atomic_store_explicit(&h->daemon_pid, (uint64_t)getpid(), memory_order_relaxed);
        atomic_store_explicit(&h->daemon_start_ns, now, memory_order_relaxed);
        atomic_store_explicit(&h->heartbeat_ns, now, memory_order_relaxed);
        uint64_t n = atomic_fetch_add_explicit(&h->attach_count, 1, memory_order_relaxed) + 1;
        log_info("ready: arena %s path %s backing %s page %" PRIu64 " KiB, %zu limiters, "
                 "attach #%" PRIu64,
                 h->name, s->map.path, h->backing == THR_BACKING_HUGETLBFS ? "hugetlbfs" : "shm",
                 h->page_size / 1024, s->cfg.nlimiters, n);
}

static void on_stale_tmp(void *ctx, const char *path, uint64_t bytes)
{
        (void)ctx;
        log_warn("removed %s (%" PRIu64 " bytes): the temporary file of an arena whose builder "
                 "was killed before it finished",
                 path, bytes);
}

int supervisor_start(struct supervisor *s, const struct config *cfg, bool recreate)
{
        config_copy(&s->cfg, cfg);
        s->map.fd = -1;
        pthread_mutex_init(&s->arena_mu, NULL);
        char path[256];
        int rc = metrics_listen(s->cfg.metrics_listen, &s->metrics);
        if (rc)
                return rc;
        rc = http_listen(&s->cfg, &s->http);
        if (rc)
                return rc;
        rc = shm_arena_sweep(&s->cfg.arena, on_stale_tmp, NULL);
        if (rc < 0)
                log_warn("cannot look for temporary files left by a killed daemon: %s",
                         strerror(-rc));
        rc = -ENOENT;
        if (supervisor_arena_existing(&s->cfg.arena, path, sizeof(path)) == 0) {
                log_info("re-attaching existing arena %s", path);
                rc = attach_existing(s, path, recreate);
                if (rc > 0)
                        return rc;
        }
        if (rc == -ENOENT) {
                rc = create_new(s);
                if (rc)
                        return rc;
        }
        /* the records this daemon replaces are reused after a grace period (recycling) */
        if (shm_params_pool_init(&s->map) < 0) {
                shm_arena_detach(&s->map);
                return EX_OSERR;
        }
        rc = lock_and_configure(s);
        if (rc) {
                shm_params_pool_free(&s->map);
                shm_arena_detach(&s->map);
                return rc;
        }
        global_mark_starting(s); /* before clients or shmctl can take a lease shown as current */
        struct registry *reg = registry_make(s, &s->cfg);
        if (!reg) {
                shm_arena_detach(&s->map);
                return EX_OSERR;
        }
        registry_publish(s, reg);
        rc = metrics_serve(s->metrics, &s->map, &s->arena_mu);
        if (rc == 0)
                rc = http_serve(s->http, s->map.path, &s->cfg);
        if (rc) {
                http_stop(s->http);
                s->http = NULL;
                metrics_stop(s->metrics);
                s->metrics = NULL;
                registry_publish(s, NULL);
                shm_arena_detach(&s->map);
                return rc;
        }
        pthread_mutex_lock(&s->arena_mu); /* records are read: not while one is rewritten */
        log_clocks(&s->map, &s->cfg);
        pthread_mutex_unlock(&s->arena_mu);
        announce(s);
        /* signals go to the main thread only */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        rc = maint_start(s);
        s->maint_running = rc == 0;
        if (rc == 0 && (rc = global_start(s)) < 0)
                log_error("cannot start the lease thread of global limiters: %s", strerror(-rc));
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (rc < 0) { /* a thread could not start: the daemon stops before it served */
                s->stop = 1;
                if (s->maint_running)
                        maint_join(s);
                s->maint_running = false;
                http_stop(s->http);
                s->http = NULL;
                metrics_stop(s->metrics);
                s->metrics = NULL;
                shm_arena_detach(&s->map);
                return EX_OSERR;
        }
        return 0;
}

/*
 * Whether the arena file is still where clients and shmctl look for it: its path must name the
 * inode this daemon maps, and that inode must still have a link. Someone may delete it (rm, an
 * old demo script) or put another file there. Nothing can link a deleted file back, and another
 * arena cannot be merged into this one, so the daemon keeps running for the clients that map it
 * (they keep deciding, and need eviction and reclamation) and says loudly, now and every minute,
 * that new clients cannot reach it and how to recover. The check is a stat and an fstat, made
 * once a heartbeat by the main thread.
 */
static void check_arena_file(struct supervisor *s)
{
        struct stat mine, there;
        if (fstat(s->map.fd, &mine) < 0)
                return;
        int rc = stat(s->map.path, &there);
        bool replaced = rc == 0 && (there.st_dev != mine.st_dev || there.st_ino != mine.st_ino);
        bool deleted = !replaced && (mine.st_nlink == 0 || (rc < 0 && errno == ENOENT));
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (!deleted && !replaced) {
                if (s->file_lost)
                        log_info("arena file %s is in place again", s->map.path);
                s->file_lost = false;
                return;
        }
        if (s->file_lost && now.tv_sec - s->file_lost_logged.tv_sec < 60)
                return;
        s->file_lost = true;
        s->file_lost_logged = now;
        log_error("arena file %s %s while this daemon runs it (inode %ju): new clients and shmctl "
                  "cannot open this arena (%s); clients that have it open keep deciding on it and "
                  "this daemon keeps maintaining it. To recover, stop throttled and start it "
                  "again: it creates a new arena (every limit is reset), which clients use once "
                  "they open the arena again",
                  s->map.path, deleted ? "was deleted" : "was replaced by another file",
                  (uintmax_t)mine.st_ino, deleted ? "ENOENT" : "they open the other file");
}

/* Whether NEXT changes [arena] settings, which are fixed when the arena is created. */
static bool arena_changed(const struct config *cur, const struct config *next)
{
        const struct shm_arena_spec *a = &cur->arena, *b = &next->arena;
        return strcmp(a->name, b->name) || a->hugepages != b->hugepages || a->mode != b->mode ||
               a->gid != b->gid || a->max_limiters != b->max_limiters ||
               a->max_readers != b->max_readers || a->spare_bytes != b->spare_bytes ||
               strcmp(cur->arena_dir, next->arena_dir);
}

/* What clock each rate limiter of CFG reads (shm/clock.h), as the arena chose it. */
static void log_clocks(const struct shm_map *m, const struct config *cfg)
{
        const struct thr_hdr *h = shm_hdr(m);
        for (size_t i = 0; i < cfg->nlimiters; i++) {
                const struct shm_limiter_spec *ls = &cfg->limiters[i];
                struct shm_lim_snap snap;
                int idx = shm_dir_find(m, ls->name);
                if (idx < 0 || shm_dir_snapshot(m, (uint32_t)idx, &snap) < 0 ||
                    snap.params.kind != THR_KIND_GCRA)
                        continue;
                uint32_t got = THR_PARAM_CLOCK(snap.params.flags);
                uint64_t lag = got == THR_CLOCK_READ_COARSE ? atomic_load(&h->coarse_lag_ns)
                               : got == THR_CLOCK_READ_TSC  ? atomic_load(&h->tsc_lag_ns)
                                                            : 0;
                if (got == THR_CLOCK_READ_PRECISE && ls->clock_read != THR_CLOCK_READ_TSC)
                        continue; /* the default for fast limiters: nothing to say */
                if (ls->clock_read == THR_CLOCK_READ_TSC && got != THR_CLOCK_READ_TSC)
                        log_warn("limiter '%s': clock_read = tsc, but this machine's TSC is not "
                                 "usable (see shmctl status); it reads the precise clock",
                                 ls->name);
                else
                        log_info("limiter '%s' reads the %s clock (%s): it lags by at most "
                                 "%" PRIu64 " ns, emission interval %.0f ns",
                                 ls->name, shm_clock_read_name(got),
                                 shm_clock_read_name(ls->clock_read), lag,
                                 (double)snap.params.t_units / (double)snap.params.k);
        }
}

/* systemd: the reload is over (READY=1), with what became of it in STATUS. */
static void reload_notify(const struct supervisor *s, uint64_t seq, bool applied)
{
        char status[160];
        snprintf(status, sizeof(status), "serving arena %s, %zu limiters; reload #%" PRIu64 " %s",
                 s->cfg.arena_name, s->cfg.nlimiters, seq,
                 applied ? "applied" : "refused (running config kept)");
        notify_ready(status);
}

/*
 * A reload on SIGHUP: numbered in the arena header before the file is read, planned (what it
 * changes, logged one line per limiter) and applied by the same code, and its verdict left in the
 * header for `throttled --reload` (reload.c). A refused reload changes nothing.
 */
static void do_reload(struct supervisor *s)
{
        static struct config next; /* large; one reload at a time, on the main thread */
        static char msg[16384];    /* the header keeps THR_RELOAD_MSG bytes of it */
        char err[4096];
        uint64_t seq = reload_verdict_begin(&s->map);
        notify_reloading(); /* systemd: RELOADING=1 until the READY=1 of the verdict */
        log_info("SIGHUP: reloading %s (reload #%" PRIu64 ")", s->config_path, seq);
        if (config_load(s->config_path, &next, err, sizeof(err)) < 0) {
                log_error("reload refused, running config kept:\n%s", err);
                snprintf(msg, sizeof(msg), "invalid config:\n%s", err);
                reload_verdict_end(&s->map, seq, -EINVAL, msg);
                reload_notify(s, seq, false);
                return;
        }
        struct shm_change *ch = NULL;
        size_t n = 0;
        pthread_mutex_lock(&s->arena_mu); /* not while the maintenance thread publishes */
        global_scale_config(s, &next);    /* global limiters keep the share they run at */
        int rc = shm_arena_plan(&s->map, &next.arena, &ch, &n, err, sizeof(err));
        if (rc == 0)
                rc = shm_arena_configure(&s->map, &next.arena, err, sizeof(err));
        pthread_mutex_unlock(&s->arena_mu);
        if (rc < 0) {
                log_error("reload refused, running config kept: %s", err);
                snprintf(msg, sizeof(msg), "%s", err);
                reload_verdict_end(&s->map, seq, rc, msg);
                reload_notify(s, seq, false);
                free(ch);
                return;
        }
        msg[0] = 0;
        reload_describe(ch, n, msg, sizeof(msg));
        free(ch);
        for (char *line = msg, *end; line && *line; line = end ? end + 1 : NULL) {
                end = strchr(line, '\n');
                if (!end) /* the summary: said below with the outcome */
                        break;
                const char *retired = strstr(line, "is no longer configured");
                if (retired && retired < end)
                        log_warn("reload: %.*s", (int)(end - line), line);
                else
                        log_info("reload: %.*s", (int)(end - line), line);
        }
        if (arena_changed(&s->cfg, &next))
                log_warn("reload: [arena] settings are fixed when the arena is created; to apply "
                         "them, stop throttled, remove the arena file and start it again (this "
                         "resets every limit)");
        pthread_mutex_lock(&s->arena_mu);
        log_clocks(&s->map, &next);
        pthread_mutex_unlock(&s->arena_mu);
        config_copy(&s->cfg, &next);
        struct registry *reg = registry_make(s, &s->cfg);
        if (reg)
                registry_publish(s, reg);
        else
                log_error("reload applied to the arena, but the registry could not be rebuilt: "
                          "out of memory; maintenance keeps the previous limiter list");
        http_reload(s->http, &s->cfg);
        check_arena_file(s);
        if (s->file_lost)
                log_error("reloaded: %zu limiters, into an arena whose file %s is gone: only "
                          "clients that already have it open see the change",
                          s->cfg.nlimiters, s->map.path);
        else
                log_info("reloaded: %zu limiters", s->cfg.nlimiters);
        reload_verdict_end(&s->map, seq, 0, msg);
        reload_notify(s, seq, true);
}

/* The longest the main thread sleeps before it looks at its flags again. */
#define SUP_SLICE_MS 50

/*
 * The main thread checks the arena file once a heartbeat and otherwise sleeps, in slices of at
 * most SUP_SLICE_MS, looking at the stop and reload flags before each. A signal usually cuts a
 * slice short, but not one that came while this thread was busy (a reload, the file check) or
 * just before the sleep began, nor one whose handler ran on another thread: it used to sleep a
 * whole heartbeat then (a SIGTERM during a reload stopped the daemon heartbeat_ms later). Now a
 * stop is seen within SUP_SLICE_MS, less than the default maintenance period (the maintenance
 * thread sees it within its own 50 ms slices, maint.c).
 */
int supervisor_run(struct supervisor *s)
{
        struct timespec checked = {0}, now;
        while (!s->stop) {
                if (s->reload) {
                        s->reload = 0;
                        do_reload(s);
                }
                uint64_t beat = s->cfg.heartbeat_ms ? s->cfg.heartbeat_ms : 1000;
                clock_gettime(CLOCK_MONOTONIC, &now);
                uint64_t gone = (uint64_t)((now.tv_sec - checked.tv_sec) * 1000 +
                                           (now.tv_nsec - checked.tv_nsec) / 1000000);
                if (gone >= beat) {
                        check_arena_file(s);
                        checked = now;
                        gone = 0;
                }
                uint64_t ms = beat - gone < SUP_SLICE_MS ? beat - gone : SUP_SLICE_MS;
                struct timespec ts = {0, (long)ms * 1000000};
                if (!s->stop && !s->reload)
                        nanosleep(&ts, NULL); /* a signal on this thread cuts it short */
        }
        return 0;
}

void supervisor_stop(struct supervisor *s)
{
        http_stop(s->http); /* its waits answered, its leases released, before the arena goes */
        s->http = NULL;
        metrics_stop(
            s->metrics); /* before the arena it reads is unmapped; after a failed start too */
        s->metrics = NULL;
        if (!s->map.base)
                return;
        s->stop = 1;
        if (s->maint_running)
                maint_join(s);
        s->maint_running = false;
        global_stop(s);
        atomic_store_explicit(&shm_hdr(&s->map)->daemon_pid, 0, memory_order_relaxed);
        log_info("stopping: arena %s stays, with every bucket", s->map.path);
        registry_publish(s, NULL);
        shm_params_pool_free(&s->map);
        shm_arena_detach(&s->map);
}
