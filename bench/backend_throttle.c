/*
 * backend_throttle.c - throttle itself and the CAS floor, as backends of the scaling benchmark.
 *
 *   throttle  thr_arena_open + thr_limiter_open in each process, then thr_limiter_try(lim,
 *             "key:<i>", len, cost, &res): the public path users call, on a real-clock arena.
 *   floor     per op: read the arena clock (shm_now_ns, the same vDSO clock_gettime the library
 *             makes), load one 64-bit word per key, compute the GCRA decision on it in whole ns
 *             (new = max(old, now) + T; admitted iff new - now <= B*T) and CAS it in when admitted,
 *             retrying on conflict. The words are direct-indexed (no hash, no key compare, no
 *             reader section, no statistics) and spread over the slots of the "floor" limiter's
 *             table, a table identical to the real one in the same arena: same footprint, same
 *             pages, same backing.
 *   floor-none    the floor with a per-process counter (+1 per op) in place of the clock: the load,
 *             the decision and the CAS alone. Its "now" is not time: where the rate is finite it
 *             admits a burst and then denies (see the admission mix), so it is the clock-free
 *             cost of the same decisions only where nothing is denied (rate 1e9/s).
 *   floor-coarse  the floor reading CLOCK_MONOTONIC_COARSE (the tick: a few ms) instead.
 *   floor-tsc     the floor reading the TSC clock throttle-tsc reads (shm_now_tsc: rdtsc scaled
 *             from the thread's anchor, shm/clock.h); skipped where the TSC is not usable.
 *   throttle-coarse, throttle-tsc  throttle with its limiter's clock_read = coarse or tsc
 *             (shm/clock.h): the same public path, a cheaper clock. throttle itself reads the
 *             precise clock (a spec's default; the daemon's default, auto, picks tsc for rates of
 *             about 12 000/s a key or slower and coarse for about 2/s or slower).
 *
 *   window    the same public path (thr_limiter_try) on a limiter of kind window: at most N units
 *             of a key in any W ns (shm/window.h), a log of N + 8 words a key. Where GCRA's
 *             burst is one a log cannot hold (>= WINDOW_N: 1e9, never denies), N = WINDOW_N
 *             units per WINDOW_W_NS ns, which no key reaches (one key takes about 20 Mops/s at
 *             most, even across processes: its line moves between cores), so it admits every
 *             try as GCRA does; the admission mix block of the report shows it. Else N = burst
 *             per burst emission intervals, GCRA's own limit: in 'denied' (1/h, burst 1) 1 unit
 *             per hour, taken at set-up, so every try is denied, as GCRA's. Skipped (a "skip:"
 *             notice) above WINDOW_MAX_KEYS keys: every slot carries a log (8 (N + 8) + 64
 *             bytes), 1.4 GB at 1M keys.
 *
 * All three build the same arena (two limiters "real" and "floor" of identical geometry; for the
 * window backend "real" is the window limiter, with its logs); the throttle and window backends
 * insert every key before any timing, so what is measured is lookup + decision + CAS. The arena
 * file lives until teardown (workers open it by path after fork).
 *
 * Churn (cfg->idle_ttl_ns > 0): both limiters get capacity cfg->keys, that idle_ttl and on_full =
 * evict; nothing is inserted, so every new key of the stream is an insert through the public
 * path. The throttle backend then runs the eviction driver (scale_churn.c) from setup to teardown,
 * as throttled would run beside its clients, and keeps a read-only mapping for the parent to read
 * the table's eviction counters between samples. The floor's word of key id i is i mod keys: its
 * keys wrap and nothing is ever evicted or inserted.
 */
#include <errno.h>
#include <inttypes.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <throttle/throttle.h>

#include "backend.h"
#include "clock.h"
#include "scale.h"
#include "scale_churn.h"
#include "shm.h"

#define MIN_CAPACITY 16u

/* The window backend: its largest log (units a key), its length then, the most keys it runs. */
#define WINDOW_N        100u
#define WINDOW_W_NS     1000u
#define WINDOW_MAX_KEYS 100000u

struct tstate {
        char path[256];
        uint64_t keys;
        uint64_t t_ns, bt_ns;   /* floor: emission interval and B*T in whole ns */
        uint32_t kind;          /* of "real": THR_KIND_GCRA, or THR_KIND_WINDOW (window backend) */
        uint32_t clock_read;    /* of "real": enum thr_clock_read (throttle-coarse, throttle-tsc) */
        struct shm_tsc_cal tsc; /* the arena's TSC calibration (mult 0: no usable TSC here) */
        uint64_t win_n, win_ns, win_aux; /* window: N units per W ns, log bytes a slot */
        uint32_t backing;
        uint64_t page_size, thp_bytes, arena_size;
        int fell_back;
        int churn;               /* cfg->idle_ttl_ns > 0 */
        struct shm_map view;     /* churn: read-only, for the eviction counters */
        struct churn_driver drv; /* churn, throttle backend: the eviction driver */
        struct shm_map rw;       /* churn without the driver: passes made in this process */
        struct churn_pass pass;
};

struct thandle {
        thr_arena *arena;
        thr_limiter *lim;
        struct thr_key *kh; /* throttle-key: a handle per key index, made at attach */
};

struct fhandle {
        struct shm_map map;
        const struct thr_hdr *h;
        struct thr_slot *slots;
        uint64_t scale; /* slot of key i = (i * scale) >> 32: i * slots / keys without a division */
        uint64_t t_ns, bt_ns;
        uint64_t tick;          /* floor-none: this process's op counter, its "now" */
        struct shm_tsc_cal tsc; /* floor-tsc: the arena's TSC calibration, as a client's copy */
};

static unsigned arena_seq;

/* ---------------------------------------------------------------- set-up, shared by all */

/* The window backend's N: the scenario's burst, at most WINDOW_N (a log of N words a key). */
static uint64_t window_n(const struct bench_cfg *c)
{
        return c->burst < WINDOW_N ? (c->burst ? c->burst : 1) : WINDOW_N;
}

/* Its W: WINDOW_W_NS for a burst it cannot hold (never denies), else N emission intervals. */
static uint64_t window_ns(const struct bench_cfg *c)
{
        if (c->burst >= WINDOW_N)
                return WINDOW_W_NS;
        __uint128_t w = (__uint128_t)window_n(c) * c->period_ns / c->rate_n;
        return w ? (w > UINT64_MAX ? UINT64_MAX : (uint64_t)w) : 1;
}

static void lim_spec(struct shm_limiter_spec *l, const char *name, const struct bench_cfg *c,
                     uint32_t kind, uint32_t clock)
{
        if (kind == THR_KIND_WINDOW) {
                *l = (struct shm_limiter_spec){
                    .kind = THR_KIND_WINDOW,
                    .serialize = false,
                    .rate_n = window_n(c),
                    .period_ns = window_ns(c),
                    .capacity = c->keys < MIN_CAPACITY ? MIN_CAPACITY : c->keys,
                    .idle_ttl_ns = c->idle_ttl_ns,
                    .on_full = c->idle_ttl_ns ? THR_FULL_EVICT : THR_FULL_DENY,
                };
                snprintf(l->name, sizeof(l->name), "%s", name);
                return;
        }
        *l = (struct shm_limiter_spec){
            .rate_n = c->rate_n,
            .period_ns = c->period_ns,
            .burst = c->burst,
            .initial = c->burst,
            .capacity = c->keys < MIN_CAPACITY ? MIN_CAPACITY : c->keys,
            .clock_read = clock,
            .idle_ttl_ns = c->idle_ttl_ns,
            .on_full = c->idle_ttl_ns ? THR_FULL_EVICT : THR_FULL_DENY,
        };
        snprintf(l->name, sizeof(l->name), "%s", name);
}

static enum shm_hugepages huge_of(const char *backing)
{
        if (backing && strcmp(backing, "hugetlbfs") == 0)
                return SHM_HUGE_REQUIRE;
        if (backing && strcmp(backing, "shm") == 0)
                return SHM_HUGE_OFF;
        return SHM_HUGE_AUTO;
}

/* The log bytes a slot of limiter NAME carries (0 for GCRA), read back from the arena. */
static uint64_t aux_of(const struct shm_map *m, const char *name)
{
        int d = shm_dir_find(m, name);
        if (d < 0)
                return 0;
        const struct thr_dir_entry *de =
            (const struct thr_dir_entry *)shm_at(m->base, shm_hdr(m)->dir_off) + d;
        const struct thr_table *tb = shm_at(m->base, de->table_off);
        return tb->aux_stride;
}

/* "real" of KIND (the backend's), "floor" always GCRA: the floor backend's table. */
static int arena_make(struct bench_cfg *c, struct tstate *st, uint32_t kind, uint32_t clock)
{
        struct shm_limiter_spec lims[2];
        struct shm_arena_spec spec = {.hugepages = huge_of(c->backing),
                                      .mode = 0600,
                                      .gid = (gid_t)-1,
                                      .clock = THR_CLOCK_MONOTONIC,
                                      .max_limiters = 4,
                                      .max_readers = 256,
                                      .nlimiters = 2,
                                      .limiters = lims};
        struct shm_map m = {0};
        lim_spec(&lims[0], "real", c, kind, clock);
        lim_spec(&lims[1], "floor", c, THR_KIND_GCRA, THR_CLOCK_READ_PRECISE);
        snprintf(spec.name, sizeof(spec.name), "bench-scale.%ld.%u", (long)getpid(), arena_seq++);
        int rc = shm_arena_create(&spec, &m, c->err, sizeof(c->err));
        if (rc < 0)
                return rc;
        const struct thr_hdr *h = shm_hdr(&m);
        *st = (struct tstate){.keys = c->keys,
                              .backing = h->backing,
                              .page_size = h->page_size,
                              .thp_bytes = h->thp_bytes,
                              .arena_size = h->arena_size,
                              .fell_back = rc == 1,
                              .churn = c->idle_ttl_ns > 0,
                              .kind = kind,
                              .clock_read = clock,
                              .tsc = shm_tsc_cal_of(h)};
        if (kind == THR_KIND_WINDOW) {
                st->win_n = window_n(c);
                st->win_ns = window_ns(c);
                st->win_aux = aux_of(&m, "real");
        }
        snprintf(st->path, sizeof(st->path), "%s", m.path);
        st->t_ns = (c->period_ns / c->rate_n) ? (c->period_ns / c->rate_n) : 1;
        st->bt_ns = st->t_ns * c->burst;
        shm_arena_detach(&m);
        c->err[0] = '\0';
        return 0;
}

static void *state_new(struct bench_cfg *c, uint32_t kind, uint32_t clock)
{
        struct tstate *st = calloc(1, sizeof(*st));
        if (!st) {
                snprintf(c->err, sizeof(c->err), "out of memory");
                return NULL;
        }
        if (arena_make(c, st, kind, clock) < 0) {
                free(st);
                return NULL;
        }
        return st;
}

static void state_free(void *p)
{
        struct tstate *st = p;
        if (!st)
                return;
        churn_driver_stop(&st->drv);
        shm_arena_detach(&st->view);
        shm_arena_detach(&st->rw);
        unlink(st->path);
        free(st);
}

void bench_throttle_describe(const void *p, char *out, size_t len)
{
        const struct tstate *st = p;
        const char *b = st->backing == THR_BACKING_HUGETLBFS ? "hugetlbfs"
                        : st->thp_bytes                      ? "shm+thp"
                                                             : "shm";
        int n = snprintf(out, len, "%s, page %" PRIu64 " kB, arena %.1f MiB%s", b,
                         st->page_size / 1024, (double)st->arena_size / 1048576.0,
                         st->fell_back ? " (FELL BACK from hugetlbfs: pool too small)" : "");
        if (st->kind == THR_KIND_WINDOW && n >= 0 && (size_t)n < len)
                snprintf(out + n, len - (size_t)n,
                         "; window %" PRIu64 " per %" PRIu64 " ns, log %" PRIu64 " B a slot",
                         st->win_n, st->win_ns, st->win_aux);
}

/* ---------------------------------------------------------------- throttle */

static void *thr_attach(void *p)
{
        struct tstate *st = p;
        struct thandle *h = calloc(1, sizeof(*h));
        if (!h)
                return NULL;
        if (thr_arena_open(st->path, 0, &h->arena) < 0 ||
            thr_limiter_open(h->arena, "real", &h->lim) < 0) {
                if (h->arena)
                        thr_arena_close(h->arena);
                free(h);
                return NULL;
        }
        return h;
}

static void thr_detach(void *p)
{
        struct thandle *h = p;
        if (!h)
                return;
        thr_limiter_close(h->lim);
        thr_arena_close(h->arena);
        free(h);
}

static int thr_try(void *p, uint64_t idx, const char *key, size_t len, uint64_t cost)
{
        struct thandle *h = p;
        struct thr_result res;
        (void)idx;
        return thr_limiter_try(h->lim, key, len, cost, &res);
}

/* throttle-key: the public path through key handles (thr_key_try), one per key "key:<i>", made
 * by thr_key_init in each process at attach (untimed, as a caller keeps its handles) and used
 * once there with cost 0 (a peek: nothing changes) so that each has found its key's slot. */
static void *thr_key_attach(void *p)
{
        struct tstate *st = p;
        struct thandle *h = thr_attach(p);
        if (h && !(h->kh = calloc(st->keys, sizeof(*h->kh)))) {
                thr_detach(h);
                return NULL;
        }
        char key[32];
        for (uint64_t i = 0; h && i < st->keys; i++) {
                int n = snprintf(key, sizeof(key), "key:%" PRIu64, i);
                if (thr_key_init(&h->kh[i], h->lim, key, (size_t)n) < 0 ||
                    thr_key_try(&h->kh[i], 0, NULL) < 0) {
                        free(h->kh);
                        thr_detach(h);
                        h = NULL;
                }
        }
        return h;
}

static void thr_key_detach(void *p)
{
        struct thandle *h = p;
        if (h)
                free(h->kh);
        thr_detach(h);
}

static int thr_key_try_one(void *p, uint64_t idx, const char *key, size_t len, uint64_t cost)
{
        struct thandle *h = p;
        struct thr_result res;
        (void)key;
        (void)len;
        return thr_key_try(&h->kh[idx], cost, &res);
}

/* Handles are for keys used again: churn's ever new keys would each be made once and used once. */
static const char *thr_key_skip(struct bench_cfg *c)
{
        if (!c->idle_ttl_ns)
                return NULL;
        snprintf(c->err, sizeof(c->err),
                 "skip: throttle-key in churn (key handles are for keys used again; a new key's "
                 "handle is thr_key_init + thr_key_try once)");
        return c->err;
}

/* Insert every key in the parent (untimed); peeks never insert, so take one token each. */
static int thr_insert_all(struct tstate *st, struct bench_cfg *c)
{
        struct thandle *h = thr_attach(st);
        char key[32];
        int rc = 0;
        if (!h) {
                snprintf(c->err, sizeof(c->err), "cannot open %.200s through the client", st->path);
                return -EIO;
        }
        for (uint64_t i = 0; i < st->keys && rc >= 0; i++) {
                int n = snprintf(key, sizeof(key), "key:%" PRIu64, i);
                rc = thr_limiter_try(h->lim, key, (size_t)n, 1, NULL);
                if (rc < 0)
                        snprintf(c->err, sizeof(c->err), "inserting %s: %s", key, thr_strerror(rc));
        }
        thr_detach(h);
        return rc < 0 ? rc : 0;
}

/* Churn: the counters' mapping, and the eviction driver unless told not to (--callgrind). */
static int thr_churn_setup(struct tstate *st, struct bench_cfg *c)
{
        int rc = shm_arena_attach(st->path, false, &st->view, c->err, sizeof(c->err));
        if (rc == 0 && c->driver)
                rc = churn_driver_start(st->path, "real", &st->drv, c->err, sizeof(c->err));
        return rc;
}

static void *setup_kind(struct bench_cfg *c, uint32_t kind, uint32_t clock)
{
        struct tstate *st = state_new(c, kind, clock);
        if (st && clock == THR_CLOCK_READ_TSC && !st->tsc.mult) {
                snprintf(c->err, sizeof(c->err),
                         "skip: no usable TSC here (shm/clock.h: constant_tsc, nonstop_tsc and "
                         "clocksource tsc or tsc_reliable)");
                state_free(st);
                return NULL;
        }
        if (st && (st->churn ? thr_churn_setup(st, c) : thr_insert_all(st, c)) < 0) {
                state_free(st);
                return NULL;
        }
        return st;
}

static void *thr_setup(struct bench_cfg *c)
{
        return setup_kind(c, THR_KIND_GCRA, THR_CLOCK_READ_PRECISE);
}

static void *thr_coarse_setup(struct bench_cfg *c)
{
        return setup_kind(c, THR_KIND_GCRA, THR_CLOCK_READ_COARSE);
}

static void *thr_tsc_setup(struct bench_cfg *c)
{
        return setup_kind(c, THR_KIND_GCRA, THR_CLOCK_READ_TSC);
}

static int thr_evictions(void *p, struct bench_evictions *out)
{
        struct tstate *st = p;
        if (!st->churn)
                return -ENOTSUP;
        int rc = churn_table_counts(&st->view, "real", out);
        if (rc == 0 && st->drv.sh) {
                churn_driver_stats(&st->drv, &out->passes, &out->gp_failed);
                out->has |= BENCH_EV_PASSES;
        }
        return rc;
}

/* --callgrind: the driver's pass, made here between batches (outside the collected loop). */
static void thr_maintain(void *p)
{
        struct tstate *st = p;
        char err[256];
        if (!st->churn ||
            (!st->rw.base && shm_arena_attach(st->path, true, &st->rw, err, sizeof(err)) < 0))
                return;
        int idx = shm_dir_find(&st->rw, "real");
        if (idx >= 0)
                churn_pass(&st->rw, (uint32_t)idx, &st->pass);
}

const struct bench_backend bench_throttle = {
    .name = "throttle",
    .what = "thr_limiter_try(lim, \"key:<i>\", len, 1, &res) via thr_arena_open/thr_limiter_open "
            "in each process (the public path), keys inserted before timing",
    .setup = thr_setup,
    .attach = thr_attach,
    .try_key = thr_try,
    .detach = thr_detach,
    .teardown = state_free,
    .evictions = thr_evictions,
    .maintain = thr_maintain,
};

static void *thr_key_setup(struct bench_cfg *c)
{
        return thr_key_skip(c) ? NULL : thr_setup(c);
}

const struct bench_backend bench_throttle_key = {
    .name = "throttle-key",
    .what = "throttle through key handles: thr_key_try(&kh[i], 1, &res), a handle per key made "
            "by thr_key_init\n            in each process before timing (the hash kept, the key's "
            "slot looked at first); skipped in churn",
    .setup = thr_key_setup,
    .attach = thr_key_attach,
    .try_key = thr_key_try_one,
    .detach = thr_key_detach,
    .teardown = state_free,
    .evictions = thr_evictions,
    .maintain = thr_maintain,
    .skip = thr_key_skip,
};

const struct bench_backend bench_throttle_coarse = {
    .name = "throttle-coarse",
    .what = "throttle with clock_read = coarse: CLOCK_MONOTONIC_COARSE (lags up to two ticks)",
    .setup = thr_coarse_setup,
    .attach = thr_attach,
    .try_key = thr_try,
    .detach = thr_detach,
    .teardown = state_free,
    .evictions = thr_evictions,
    .maintain = thr_maintain,
};

const struct bench_backend bench_throttle_tsc = {
    .name = "throttle-tsc",
    .what = "throttle with clock_read = tsc: rdtsc scaled from a per-thread anchor (lags ~1 us)",
    .setup = thr_tsc_setup,
    .attach = thr_attach,
    .try_key = thr_try,
    .detach = thr_detach,
    .teardown = state_free,
    .evictions = thr_evictions,
    .maintain = thr_maintain,
};

/* ---------------------------------------------------------------- window */

/* Above WINDOW_MAX_KEYS keys: every slot's log (about 1.5 slots a key) is too much memory. */
static const char *win_skip(struct bench_cfg *c)
{
        if (c->keys <= WINDOW_MAX_KEYS)
                return NULL;
        uint64_t aux = (64 + 8 * window_n(c) + 63) / 64 * 64;
        snprintf(c->err, sizeof(c->err),
                 "skip: window above %u keys: a log of %" PRIu64 " B in every slot would take "
                 "about %.1f GB here",
                 WINDOW_MAX_KEYS, aux, (double)aux * 1.5 * (double)c->keys / 1e9);
        return c->err;
}

static void *win_setup(struct bench_cfg *c)
{
        return win_skip(c) ? NULL : setup_kind(c, THR_KIND_WINDOW, THR_CLOCK_READ_PRECISE);
}

const struct bench_backend bench_window = {
    .name = "window",
    .what = "thr_limiter_try as throttle, on a window limiter (kind window): 100 units per 1 us "
            "(admits every try,\n            as GCRA at burst 1e9: see the admission mix), "
            "'denied': 1 per hour, exhausted at set-up;\n            keys inserted before "
            "timing; churn: as throttle; skipped above 100000 keys (a log in every slot)",
    .setup = win_setup,
    .attach = thr_attach,
    .try_key = thr_try,
    .detach = thr_detach,
    .teardown = state_free,
    .evictions = thr_evictions,
    .maintain = thr_maintain,
    .skip = win_skip,
};

/* ---------------------------------------------------------------- floor */

static int floor_locate(struct fhandle *f)
{
        int d = shm_dir_find(&f->map, "floor");
        if (d < 0)
                return d;
        const struct thr_dir_entry *de =
            (const struct thr_dir_entry *)shm_at(f->map.base, f->h->dir_off) + d;
        const struct thr_table *tb = shm_at(f->map.base, de->table_off);
        f->slots = shm_at(f->map.base, tb->slots_off);
        return 0;
}

static void *floor_attach(void *p)
{
        struct tstate *st = p;
        struct fhandle *f = calloc(1, sizeof(*f));
        char err[256];
        if (!f)
                return NULL;
        if (shm_arena_attach(st->path, true, &f->map, err, sizeof(err)) < 0) {
                free(f);
                return NULL;
        }
        f->h = shm_hdr(&f->map);
        if (floor_locate(f) < 0) {
                shm_arena_detach(&f->map);
                free(f);
                return NULL;
        }
        const struct thr_dir_entry *de =
            (const struct thr_dir_entry *)shm_at(f->map.base, f->h->dir_off);
        const struct thr_table *tb = shm_at(f->map.base, de[1].table_off);
        uint64_t nslots = (uint64_t)tb->nshards * tb->shard_slots;
        f->scale = (nslots << 32) / st->keys;
        f->t_ns = st->t_ns;
        f->bt_ns = st->bt_ns;
        f->tsc = st->tsc;
        return f;
}

static void floor_detach(void *p)
{
        struct fhandle *f = p;
        if (!f)
                return;
        shm_arena_detach(&f->map);
        free(f);
}

/* Load, GCRA in whole ns at NOW, CAS when admitted: the floors' common part. */
static inline __attribute__((always_inline)) int
floor_decide(struct fhandle *f, _Atomic uint64_t *w, uint64_t now, uint64_t cost)
{
        uint64_t old = atomic_load_explicit(w, memory_order_acquire);
        for (;;) {
                uint64_t nv = (old > now ? old : now) + cost * f->t_ns;
                if (nv - now > f->bt_ns)
                        return 0; /* denied: writes nothing, like the real path */
                if (atomic_compare_exchange_weak_explicit(w, &old, nv, memory_order_acq_rel,
                                                          memory_order_acquire))
                        return 1;
        }
}

/* Clock read, load, GCRA in whole ns, CAS when admitted: the least a shared limiter must do. */
static int floor_try(void *p, uint64_t idx, const char *key, size_t len, uint64_t cost)
{
        struct fhandle *f = p;
        _Atomic uint64_t *w = &f->slots[(idx * f->scale) >> 32].state;
        (void)key;
        (void)len;
        return floor_decide(f, w, shm_now_ns(f->h), cost);
}

/* The same without a clock: "now" is this process's op counter. */
static int floor_none_try(void *p, uint64_t idx, const char *key, size_t len, uint64_t cost)
{
        struct fhandle *f = p;
        _Atomic uint64_t *w = &f->slots[(idx * f->scale) >> 32].state;
        (void)key;
        (void)len;
        return floor_decide(f, w, ++f->tick, cost);
}

/* The same on CLOCK_MONOTONIC_COARSE. */
static int floor_coarse_try(void *p, uint64_t idx, const char *key, size_t len, uint64_t cost)
{
        struct fhandle *f = p;
        _Atomic uint64_t *w = &f->slots[(idx * f->scale) >> 32].state;
        struct timespec t;
        (void)key;
        (void)len;
        clock_gettime(CLOCK_MONOTONIC_COARSE, &t);
        return floor_decide(f, w, (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec, cost);
}

/* The same on the TSC clock throttle-tsc reads (floor-tsc's set-up checked the arena has one). */
static int floor_tsc_try(void *p, uint64_t idx, const char *key, size_t len, uint64_t cost)
{
        struct fhandle *f = p;
        _Atomic uint64_t *w = &f->slots[(idx * f->scale) >> 32].state;
        (void)key;
        (void)len;
        return floor_decide(f, w, shm_now_tsc(f->h, &f->tsc), cost);
}

/* Zero every floor word (the table's empty slots hold other values in their state word). */
static void *floor_setup(struct bench_cfg *c)
{
        struct tstate *st = state_new(c, THR_KIND_GCRA, THR_CLOCK_READ_PRECISE);
        struct fhandle *f = st ? floor_attach(st) : NULL;
        if (st && !f) {
                snprintf(c->err, sizeof(c->err), "cannot attach the floor table of %.200s",
                         st->path);
                state_free(st);
                return NULL;
        }
        for (uint64_t i = 0; f && i < st->keys; i++)
                atomic_store_explicit(&f->slots[(i * f->scale) >> 32].state, 0,
                                      memory_order_relaxed);
        floor_detach(f);
        return st;
}

const struct bench_backend bench_floor = {
    .name = "floor",
    .what = "shm_now_ns (same vDSO clock) + load + GCRA in ns + CAS on one 64-bit word per key, "
            "direct-indexed over the slots of an identical table in the same arena",
    .setup = floor_setup,
    .attach = floor_attach,
    .try_key = floor_try,
    .detach = floor_detach,
    .teardown = state_free,
};

const struct bench_backend bench_floor_none = {
    .name = "floor-none",
    .what = "the floor with no clock: a per-process op counter as \"now\" (load + GCRA + CAS "
            "only; where the\n            rate is finite it denies after the burst: a different "
            "mix, see the admission mix)",
    .setup = floor_setup,
    .attach = floor_attach,
    .try_key = floor_none_try,
    .detach = floor_detach,
    .teardown = state_free,
};

const struct bench_backend bench_floor_coarse = {
    .name = "floor-coarse",
    .what = "the floor reading CLOCK_MONOTONIC_COARSE (one tick, see the clock table) instead",
    .setup = floor_setup,
    .attach = floor_attach,
    .try_key = floor_coarse_try,
    .detach = floor_detach,
    .teardown = state_free,
};

static void *floor_tsc_setup(struct bench_cfg *c)
{
        struct tstate *st = floor_setup(c);
        if (st && !st->tsc.mult) {
                snprintf(c->err, sizeof(c->err), "skip: no usable TSC here (shm/clock.h)");
                state_free(st);
                return NULL;
        }
        return st;
}

const struct bench_backend bench_floor_tsc = {
    .name = "floor-tsc",
    .what = "the floor reading the TSC clock (shm_now_tsc, as throttle-tsc) instead",
    .setup = floor_tsc_setup,
    .attach = floor_attach,
    .try_key = floor_tsc_try,
    .detach = floor_detach,
    .teardown = state_free,
};
