/*
 * metrics.c - throttled's Prometheus endpoint (libmicrohttpd, its internal polling thread).
 *
 * A scrape only reads the arena, through the daemon's own checked geometry (struct shm_geom, set
 * when the arena was mapped; of it, only the fields no reload changes: heap_top is the main
 * thread's allocator, read from the header's copy instead) and checked directory snapshots
 * (shm_dir_snapshot): every offset and count it follows comes from those private copies, never from
 * a word a client can rewrite, so a scribbled arena gives wrong numbers, never a read out of
 * bounds. It takes no lock a client or the maintenance thread takes and writes nothing shared:
 * clients never wait for it.
 *
 * The limiters are the directory's live entries, read at each scrape: the directory is what
 * clients decide on, and a reload publishes it before the daemon's registry, so no RCU reader is
 * needed in libmicrohttpd's thread. Per limiter, admitted, denied and waited are the sums of
 * every reader record's row (layout.h, struct thr_lcount): rows are never reset, so the sums
 * never go down, whoever owned a record and however it died. A sum is read racily and may miss
 * an increment in flight, never count one twice. Shard counters (evictions, reclaims, lock
 * waits) are summed the same way over the table's shards.
 *
 * The listening socket is made here, not by libmicrohttpd, so that a failure names its cause
 * (errno) and the address; SO_REUSEADDR lets a restart bind while old connections linger in
 * TIME_WAIT (a socket that listens still refuses a second bind).
 */
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sysexits.h>
#include <unistd.h>

#include "listen.h"
#include "log.h"
#include "metrics.h"

struct metrics {
        struct MHD_Daemon *d; /* NULL until metrics_serve */
        const struct shm_map *m;
        pthread_mutex_t *mu; /* the daemon's publishes: records are read under it (recycling) */
        int fd;
        char addr[64];
};

/* ---------------------------------------------------------------- the exposition */

/* A growing text buffer; a failed allocation sticks (ok false) and the render returns NULL. */
struct out {
        char *buf;
        size_t len, cap;
        bool ok;
};

__attribute__((format(printf, 2, 3))) static void put(struct out *o, const char *fmt, ...)
{
        for (int tries = 0; o->ok && tries < 2; tries++) {
                va_list ap;
                va_start(ap, fmt);
                int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
                va_end(ap);
                if (n < 0) {
                        o->ok = false;
                        return;
                }
                if ((size_t)n < o->cap - o->len) {
                        o->len += (size_t)n;
                        return;
                }
                size_t cap = (o->cap + (size_t)n + 1) * 2;
                char *nb = realloc(o->buf, cap);
                if (!nb) {
                        o->ok = false;
                        return;
                }
                o->buf = nb;
                o->cap = cap;
        }
}

static void head(struct out *o, const char *name, const char *type, const char *help)
{
        put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A limiter name as a label value: backslash, double quote and newline escaped. */
static void label(const char *name, char *buf, size_t n)
{
        size_t j = 0;
        for (size_t i = 0; name[i] && j + 3 < n; i++) {
                char c = name[i];
                if (c == '\\' || c == '"' || c == '\n') {
                        buf[j++] = '\\';
                        c = c == '\n' ? 'n' : c;
                }
                buf[j++] = c;
        }
        buf[j] = '\0';
}

/* Nanoseconds as seconds, exactly (no float rounding). */
static void put_seconds(struct out *o, const char *name, uint64_t ns)
{
        put(o, "%s %" PRIu64 ".%09" PRIu64 "\n", name, ns / 1000000000u, ns % 1000000000u);
}

/* What one scrape read of a live limiter. */
struct lim {
        struct shm_lim_snap snap;
        char label[2 * THR_NAME_MAX + 2];
        uint64_t admitted, denied, waited, overload;
        uint64_t rate_milli; /* a GCRA limiter's rate now, per second x 1000 (adaptive: moves) */
        uint64_t evicted, evicted_full, reclaimed, allowed_full, lock_waits, lock_timeouts;
        uint32_t gl_share, gl_state; /* a global limiter's lease (daemon/global.c): share ppm, */
        uint64_t gl_expiry_ns;       /* THR_GLOBAL_* | holders << 8, and its end (arena ns) */
};

/* The shard counters of L's table (its checked geometry: shards_off and nshards). */
static void shard_sums(const struct shm_map *m, struct lim *l)
{
        const struct thr_shard *sh = shm_at(m->base, l->snap.table.shards_off);
        for (uint32_t k = 0; k < l->snap.table.nshards; k++) {
                l->evicted += atomic_load_explicit(&sh[k].evicted, memory_order_relaxed);
                l->evicted_full += atomic_load_explicit(&sh[k].evicted_full, memory_order_relaxed);
                l->reclaimed += atomic_load_explicit(&sh[k].reclaimed, memory_order_relaxed);
                l->allowed_full += atomic_load_explicit(&sh[k].allowed_full, memory_order_relaxed);
                l->lock_waits += atomic_load_explicit(&sh[k].lock_waits, memory_order_relaxed);
                l->lock_timeouts +=
                    atomic_load_explicit(&sh[k].lock_timeouts, memory_order_relaxed);
        }
}

/* The counter rows, summed for the N limiters of LIMS: row by row (each row is contiguous). */
static void row_sums(const struct shm_map *m, struct lim *lims, uint32_t n)
{
        for (uint32_t r = 0; r < m->g.reader_count; r++) {
                for (uint32_t i = 0; i < n; i++) {
                        const struct thr_lcount *c = shm_lcount(m, r, lims[i].snap.idx);
                        lims[i].admitted +=
                            atomic_load_explicit(&c->admitted, memory_order_relaxed);
                        lims[i].denied += atomic_load_explicit(&c->denied, memory_order_relaxed);
                        lims[i].waited += atomic_load_explicit(&c->waited, memory_order_relaxed);
                        lims[i].overload +=
                            atomic_load_explicit(&c->overload, memory_order_relaxed);
                }
        }
}

/* Every live limiter of M's directory, into a calloc'ed array (*N of them), or NULL. */
static struct lim *limiters(const struct shm_map *m, uint32_t *n)
{
        struct lim *lims = calloc(m->g.dir_count, sizeof(*lims));
        const struct thr_dir_entry *dir = shm_at(m->base, m->g.dir_off);
        *n = 0;
        for (uint32_t i = 0; lims && i < m->g.dir_count; i++) {
                struct lim *l = &lims[*n];
                /* an entry a reload is filling in is FREE until its release store of LIVE (which
                 * this acquire pairs with): its name is not read while it is written */
                if (atomic_load_explicit(&dir[i].state, memory_order_acquire) != THR_DIR_LIVE ||
                    shm_dir_snapshot(m, i, &l->snap) < 0 || l->snap.state != THR_DIR_LIVE)
                        continue;
                label(l->snap.name, l->label, sizeof(l->label));
                shard_sums(m, l);
                l->gl_share = atomic_load_explicit(&dir[i].global_share, memory_order_relaxed);
                l->gl_state = atomic_load_explicit(&dir[i].global_state, memory_order_relaxed);
                l->gl_expiry_ns =
                    atomic_load_explicit(&dir[i].global_expiry_ns, memory_order_relaxed);
                if (l->snap.params.period_ns)
                        l->rate_milli = (uint64_t)((__uint128_t)l->snap.params.rate_n *
                                                   1000000000000ull / l->snap.params.period_ns);
                (*n)++;
        }
        if (lims)
                row_sums(m, lims, *n);
        return lims;
}

/* One per-limiter metric: its HELP and TYPE, then a sample per limiter (field at OFF of a lim). */
static void per_limiter(struct out *o, const struct lim *lims, uint32_t n, const char *name,
                        const char *type, const char *help, size_t off)
{
        head(o, name, type, help);
        for (uint32_t i = 0; i < n; i++)
                put(o, "%s{limiter=\"%s\"} %" PRIu64 "\n", name, lims[i].label,
                    *(const uint64_t *)(const void *)((const char *)&lims[i] + off));
}

static void limiter_metrics(struct out *o, const struct lim *l, uint32_t n)
{
        per_limiter(o, l, n, "throttle_admitted_total", "counter",
                    "Requests admitted (tries admitted, places taken, leases, holds, spends).",
                    offsetof(struct lim, admitted));
        per_limiter(o, l, n, "throttle_denied_total", "counter",
                    "Requests denied (tries denied, places due too late, timeouts).",
                    offsetof(struct lim, denied));
        per_limiter(o, l, n, "throttle_waited_total", "counter",
                    "Requests admitted after a wait (a place due later, a queued acquire).",
                    offsetof(struct lim, waited));
        per_limiter(o, l, n, "throttle_overload_total", "counter",
                    "Calls a client's downstream refused for overload (thr_limiter_overload).",
                    offsetof(struct lim, overload));
        head(o, "throttle_rate", "gauge",
             "A GCRA limiter's rate now, per second (an adaptive limiter's moves).");
        for (uint32_t i = 0; i < n; i++)
                if (l[i].snap.params.kind == THR_KIND_GCRA && l[i].snap.params.period_ns)
                        put(o, "throttle_rate{limiter=\"%s\"} %" PRIu64 ".%03" PRIu64 "\n",
                            l[i].label, l[i].rate_milli / 1000, l[i].rate_milli % 1000);
        head(o, "throttle_keys", "gauge", "Live keys in the limiter's table.");
        for (uint32_t i = 0; i < n; i++) /* an _Atomic field of the private copy: read as one */
                put(o, "throttle_keys{limiter=\"%s\"} %" PRIu64 "\n", l[i].label,
                    l[i].snap.table.live);
        per_limiter(o, l, n, "throttle_keys_capacity", "gauge",
                    "Keys the limiter's table holds at most.",
                    offsetof(struct lim, snap.table.capacity));
        head(o, "throttle_evictions_total", "counter",
             "Keys evicted: idle past their TTL (by the daemon), or to make room (on_full = "
             "evict).");
        for (uint32_t i = 0; i < n; i++)
                put(o,
                    "throttle_evictions_total{limiter=\"%s\",reason=\"idle\"} %" PRIu64 "\n"
                    "throttle_evictions_total{limiter=\"%s\",reason=\"full\"} %" PRIu64 "\n",
                    l[i].label, l[i].evicted, l[i].label, l[i].evicted_full);
        head(o, "throttle_insert_failures_total", "counter",
             "New keys that found no room in the table, whatever on_full then did.");
        for (uint32_t i = 0; i < n; i++) /* _Atomic in the private copy, as live above */
                put(o, "throttle_insert_failures_total{limiter=\"%s\"} %" PRIu64 "\n", l[i].label,
                    l[i].snap.table.insert_fail);
        per_limiter(o, l, n, "throttle_reclaimed_slots_total", "counter",
                    "Slots of evicted keys made reusable after a grace period.",
                    offsetof(struct lim, reclaimed));
        per_limiter(o, l, n, "throttle_allowed_full_total", "counter",
                    "Requests admitted unrecorded because the table was full (on_full = allow).",
                    offsetof(struct lim, allowed_full));
        per_limiter(o, l, n, "throttle_lock_waits_total", "counter",
                    "Inserts that found their shard's insert lock held by a live holder.",
                    offsetof(struct lim, lock_waits));
        per_limiter(o, l, n, "throttle_lock_timeouts_total", "counter",
                    "Inserts that gave up waiting for their shard's lock (insert_wait).",
                    offsetof(struct lim, lock_timeouts));
}

/* Global limiters (scope = global): the share leased from Redis and the lease's state. */
static void global_metrics(struct out *o, const struct lim *l, uint32_t n, uint64_t now)
{
        static const char *const names[] = {"none", "starting", "leased", "held",
                                            "safe", "closed",   "open"};
        head(o, "throttle_global_share", "gauge",
             "A global limiter's share of its fleet-wide rate and burst that this host runs at.");
        for (uint32_t i = 0; i < n; i++)
                if (l[i].gl_state & 0xff)
                        put(o, "throttle_global_share{limiter=\"%s\"} %" PRIu32 ".%06" PRIu32 "\n",
                            l[i].label, l[i].gl_share / 1000000, l[i].gl_share % 1000000);
        head(o, "throttle_global_state", "gauge",
             "1 for a global limiter's lease state: starting, leased, held (Redis unreachable, "
             "last share kept), safe, closed or open.");
        for (uint32_t i = 0; i < n; i++) {
                uint32_t st = l[i].gl_state & 0xff;
                if (st && st < sizeof(names) / sizeof(names[0]))
                        put(o, "throttle_global_state{limiter=\"%s\",state=\"%s\"} 1\n", l[i].label,
                            names[st]);
        }
        head(o, "throttle_global_hosts", "gauge",
             "Hosts holding a lease of a global limiter at Redis's last answer.");
        for (uint32_t i = 0; i < n; i++)
                if (l[i].gl_state & 0xff)
                        put(o, "throttle_global_hosts{limiter=\"%s\"} %" PRIu32 "\n", l[i].label,
                            l[i].gl_state >> 8);
        head(o, "throttle_global_lease_seconds", "gauge",
             "Seconds left of a global limiter's lease (0: none, or ended).");
        for (uint32_t i = 0; i < n; i++) {
                if (!(l[i].gl_state & 0xff))
                        continue;
                uint64_t left = l[i].gl_expiry_ns > now ? l[i].gl_expiry_ns - now : 0;
                put(o, "throttle_global_lease_seconds{limiter=\"%s\"} %" PRIu64 ".%03" PRIu64 "\n",
                    l[i].label, left / 1000000000, left / 1000000 % 1000);
        }
}

/* Reader records: owned, stalled, and the longest a live one has blocked a grace period. */
static void reader_metrics(struct out *o, const struct shm_map *m, uint64_t now)
{
        const struct thr_reader *rec = shm_at(m->base, m->g.reader_off);
        uint64_t online = 0, stalled = 0, oldest = 0;
        for (uint32_t i = 0; i < m->g.reader_count; i++) {
                if (!atomic_load_explicit(&rec[i].owner, memory_order_relaxed))
                        continue;
                online++;
                stalled += atomic_load_explicit(&rec[i].stalled, memory_order_relaxed) == 1;
                uint64_t since = atomic_load_explicit(&rec[i].blocking_ns, memory_order_relaxed);
                if (since && since <= now && now - since > oldest)
                        oldest = now - since;
        }
        head(o, "throttle_readers_online", "gauge",
             "Reader records in use (client threads registered in the arena).");
        put(o, "throttle_readers_online %" PRIu64 "\n", online);
        head(o, "throttle_readers_max", "gauge", "Reader records in the arena (max_readers).");
        put(o, "throttle_readers_max %" PRIu32 "\n", m->g.reader_count);
        head(o, "throttle_readers_stalled", "gauge",
             "Readers reported stalled: inside one call for stall_ms or more.");
        put(o, "throttle_readers_stalled %" PRIu64 "\n", stalled);
        head(o, "throttle_grace_period_oldest_age_seconds", "gauge",
             "How long the oldest unfinished grace period has been held back by a reader (0: "
             "none is).");
        put_seconds(o, "throttle_grace_period_oldest_age_seconds", oldest);
}

static void arena_metrics(struct out *o, const struct shm_map *m, uint32_t nlim)
{
        const struct thr_hdr *h = shm_hdr(m);
        uint64_t now = shm_now_ns(h);
        uint64_t beat = atomic_load_explicit(&h->heartbeat_ns, memory_order_relaxed);
        reader_metrics(o, m, now);
        head(o, "throttle_readers_forced_total", "counter",
             "Reader records of dead processes forced offline.");
        put(o, "throttle_readers_forced_total %" PRIu64 "\n",
            atomic_load_explicit(&h->readers_forced, memory_order_relaxed));
        head(o, "throttle_grace_periods_total", "counter",
             "Grace periods completed (evicted slots wait for one before reuse).");
        put(o, "throttle_grace_periods_total %" PRIu64 "\n",
            atomic_load_explicit(&h->gp_done, memory_order_relaxed));
        head(o, "throttle_daemon_heartbeat_age_seconds", "gauge",
             "Arena time since the daemon's last heartbeat.");
        put_seconds(o, "throttle_daemon_heartbeat_age_seconds", now > beat ? now - beat : 0);
        head(o, "throttle_limiters", "gauge", "Live limiters in the arena.");
        put(o, "throttle_limiters %" PRIu32 "\n", nlim);
        head(o, "throttle_arena_size_bytes", "gauge", "Size of the arena file.");
        put(o, "throttle_arena_size_bytes %zu\n", m->size);
        head(o, "throttle_arena_heap_used_bytes", "gauge",
             "Bytes of the arena's heap in use (parameter records, tables).");
        /* the header's copy of the heap pointer (the daemon's own, in M's geometry, is the main
         * thread's while a reload allocates): clamped to the heap, as clients can write it */
        uint64_t top = atomic_load_explicit(&h->heap_top, memory_order_relaxed);
        top = top < m->g.heap_off ? m->g.heap_off : top > m->g.heap_end ? m->g.heap_end : top;
        put(o, "throttle_arena_heap_used_bytes %" PRIu64 "\n", top - m->g.heap_off);
}

char *metrics_render(const struct shm_map *m, size_t *len)
{
        struct out o = {.buf = malloc(16384), .cap = 16384, .ok = true};
        uint32_t n = 0;
        struct lim *lims = limiters(m, &n);
        o.ok = o.buf && lims;
        if (o.ok) {
                limiter_metrics(&o, lims, n);
                global_metrics(&o, lims, n, shm_now_ns(shm_hdr(m)));
        }
        arena_metrics(&o, m, n);
        free(lims);
        if (!o.ok) {
                free(o.buf);
                return NULL;
        }
        *len = o.len;
        return o.buf;
}

/* ---------------------------------------------------------------- the server */

static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, char *body, size_t len,
                               enum MHD_ResponseMemoryMode mode)
{
        struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
        if (!r) {
                if (mode == MHD_RESPMEM_MUST_FREE)
                        free(body);
                return MHD_NO;
        }
        if (status == MHD_HTTP_OK)
                MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE,
                                        "text/plain; version=0.0.4; charset=utf-8");
        if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
                MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
        enum MHD_Result rc = MHD_queue_response(c, status, r);
        MHD_destroy_response(r);
        return rc;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
        (void)version;
        (void)upload;
        (void)con_cls;
        const struct metrics *mt = cls;
        if (*upload_size)
                return MHD_NO; /* a GET has no body */
        if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
                static char msg[] = "only GET and HEAD\n";
                return respond(c, MHD_HTTP_METHOD_NOT_ALLOWED, msg, sizeof(msg) - 1,
                               MHD_RESPMEM_PERSISTENT);
        }
        if (strcmp(url, "/metrics") != 0) {
                static char msg[] = "not found: throttled serves /metrics\n";
                return respond(c, MHD_HTTP_NOT_FOUND, msg, sizeof(msg) - 1, MHD_RESPMEM_PERSISTENT);
        }
        size_t len = 0;
        /* the records are read under the daemon's publish mutex: one replaced is reused after a
         * grace period, which this thread (no read-side section) is not covered by */
        if (mt->mu)
                pthread_mutex_lock(mt->mu);
        char *body = metrics_render(mt->m, &len);
        if (mt->mu)
                pthread_mutex_unlock(mt->mu);
        if (!body) {
                static char msg[] = "out of memory\n";
                return respond(c, MHD_HTTP_INTERNAL_SERVER_ERROR, msg, sizeof(msg) - 1,
                               MHD_RESPMEM_PERSISTENT);
        }
        return respond(c, MHD_HTTP_OK, body, len, MHD_RESPMEM_MUST_FREE);
}

int metrics_listen(const char *addr, struct metrics **out)
{
        *out = NULL;
        if (!addr || !*addr) {
                log_info("metrics: off ([daemon] metrics is empty)");
                return 0;
        }
        struct metrics *mt = calloc(1, sizeof(*mt));
        if (!mt)
                return EX_OSERR;
        mt->fd = listen_tcp("metrics", addr);
        if (mt->fd < 0) {
                int rc = -mt->fd;
                free(mt);
                return rc;
        }
        snprintf(mt->addr, sizeof(mt->addr), "%s", addr);
        *out = mt;
        return 0;
}

int metrics_serve(struct metrics *mt, const struct shm_map *m, pthread_mutex_t *mu)
{
        if (!mt)
                return 0;
        mt->m = m;
        mt->mu = mu;
        /* signals go to the main thread only: the server's thread starts with all blocked */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        mt->d = MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                                 on_request, mt, MHD_OPTION_EXTERNAL_LOGGER, listen_mhd_log,
                                 (void *)"metrics", MHD_OPTION_LISTEN_SOCKET, mt->fd,
                                 MHD_OPTION_CONNECTION_LIMIT, 32u, MHD_OPTION_CONNECTION_TIMEOUT,
                                 10u, MHD_OPTION_END);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (!mt->d) {
                log_error("metrics: cannot start the HTTP server on %s", mt->addr);
                return EX_OSERR;
        }
        log_info("metrics: serving http://%s/metrics", mt->addr);
        return 0;
}

void metrics_stop(struct metrics *mt)
{
        if (!mt)
                return;
        if (mt->d)
                MHD_stop_daemon(mt->d); /* joins its thread; the listening socket is ours */
        close(mt->fd);
        free(mt);
}
