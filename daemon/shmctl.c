/*
 * shmctl.c - the operator's inspector: shows an arena's header, limiters and keys, as aligned
 * tables or as one JSON object. Semaphore keys and the `leases` verb are in shmctl_sem.c; the
 * verbs that walk the reader records, `readers` and `peers`, in shmctl_peer.c; budget keys and
 * `budget add`, the one write (made through the client library), in shmctl_budget.c; the
 * `groups` verb and keys a composed call has marked in shmctl_compose.c.
 *
 * It maps the arena read-only and treats every byte of it as untrusted input, because every
 * client can write the arena. The header is validated at attach (shm_arena_valid), which leaves
 * a checked private copy of the section geometry (struct shm_map.g): every directory and reader
 * index is bounded by it. Each limiter is read through shm_dir_snapshot, which copies the
 * directory entry, parameter record and table header once and checks the copies (the arena may
 * have changed since attach), so divisors, slot and shard ranges come from checked private
 * copies, never from a second read. Reader records and counters are read once per field into
 * locals and only printed; a garbage value shows as a strange number, never as an index. Key
 * lengths are capped at THR_KEY_MAX, and names and keys are printed escaped (by shmctl_out.c,
 * which formats every answer). A window key's log and a serialized key's header are read in the
 * slot's aux storage, which the checked table copy bounds (and the snapshot checked holds N
 * words); the key's state word (units ever admitted) indexes its log modulo N only. A semaphore
 * key's header and lease records are read there too: their number is the snapshot's checked
 * leases_per_key (at most THR_SEM_LEASES_MAX, which snap_fill checked to fit the stride), never
 * the header's count; a lease's holder index and amount are only printed, and its queued
 * acquires are found by scanning the reader records (bounded by the geometry), never by
 * following an index. So a corrupt arena gives a message and EX_DATAERR, or strange numbers,
 * never a crash.
 *
 * shmctl holds no reader record (it cannot register one on a read-only mapping), so a slot may be
 * retired and reused while it is read. Each slot is read like a seqlock: meta word, then key and
 * state, then meta again; a slot whose meta changed meanwhile is skipped.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>
#include <time.h>

#include "shm.h"
#include "shmctl_internal.h"
#include "shmctl_out.h"
#include "throttle/throttle.h"

#define DEFAULT_KEYS 20 /* keys shown by `keys` without -n: a screenful of the worst offenders */

static_assert(THR_KEY_MAX == 104 && THR_KEY_MAX_LEN == THR_KEY_MAX,
              "the usage message names the key limit");

/* ---------------------------------------------------------------- reading the arena */

static int corrupt(struct ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int corrupt(struct ctx *c, const char *fmt, ...)
{
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err, sizeof(c->err), fmt, ap);
        va_end(ap);
        return -EBADMSG;
}

static const struct thr_dir_entry *dir_entry(const struct ctx *c, uint32_t idx)
{
        return (const struct thr_dir_entry *)shm_at(c->map.base, c->map.g.dir_off) + idx;
}

/*
 * Entry IDX's state (THR_DIR_FREE, _LIVE or _RETIRED) or -EBADMSG; the name (NUL-terminated)
 * into NAME when the entry is in use.
 */
static int entry_state(struct ctx *c, uint32_t idx, char name[THR_NAME_MAX + 1])
{
        const struct thr_dir_entry *e = dir_entry(c, idx);
        uint32_t st = atomic_load_explicit(&e->state, memory_order_acquire);
        if (st == THR_DIR_FREE)
                return THR_DIR_FREE;
        if (st != THR_DIR_LIVE && st != THR_DIR_RETIRED)
                return corrupt(c, "directory entry %u: state %u", idx, st);
        memcpy(name, e->name, THR_NAME_MAX + 1);
        if (memchr(name, '\0', THR_NAME_MAX + 1) == NULL)
                return corrupt(c, "directory entry %u: name is not terminated", idx);
        return (int)st;
}

/*
 * Why entry IDX failed shm_dir_snapshot's checks, as a sentence in c->err: the validators run
 * again in place to name the fault; if they pass now, the entry changed while it was read.
 */
static int snap_fault(struct ctx *c, uint32_t idx, int rc)
{
        const struct thr_dir_entry *e = dir_entry(c, idx);
        if (rc != -EBADMSG) {
                snprintf(c->err, sizeof(c->err), "directory entry %u: %s", idx, strerror(-rc));
                return rc;
        }
        uint64_t poff = atomic_load_explicit(&e->params_off, memory_order_acquire);
        uint64_t toff = e->table_off;
        if (memchr(e->name, '\0', sizeof(e->name)) == NULL)
                return corrupt(c, "directory entry %u: name is not terminated", idx);
        if (shm_params_valid(c->map.base, c->map.size, poff, c->err, sizeof(c->err)) < 0 ||
            shm_table_valid(c->map.base, c->map.size, toff, c->err, sizeof(c->err)) < 0)
                return -EBADMSG;
        return corrupt(c, "directory entry %u: its records changed while being read", idx);
}

/* Sum L's shard counters, over the shards of the checked table copy. */
static void lim_counters(const struct ctx *c, struct shmctl_lim *l)
{
        const struct thr_shard *sh = shm_at(c->map.base, l->t.shards_off);
        struct shmctl_evict *ev = &l->ev;
        *ev = (struct shmctl_evict){0};
        for (uint32_t i = 0; i < l->t.nshards; i++) {
                ev->evicted += atomic_load_explicit(&sh[i].evicted, memory_order_relaxed);
                ev->evicted_full += atomic_load_explicit(&sh[i].evicted_full, memory_order_relaxed);
                ev->reclaimed += atomic_load_explicit(&sh[i].reclaimed, memory_order_relaxed);
                ev->allowed_full += atomic_load_explicit(&sh[i].allowed_full, memory_order_relaxed);
                ev->lock_waits += atomic_load_explicit(&sh[i].lock_waits, memory_order_relaxed);
                ev->lock_timeouts +=
                    atomic_load_explicit(&sh[i].lock_timeouts, memory_order_relaxed);
                ev->repairs += atomic_load_explicit(&sh[i].repairs, memory_order_relaxed);
        }
}

/*
 * Load entry IDX (live or retired): 1 loaded, 0 free, -errno. shm_dir_snapshot copies the entry,
 * its parameter record and its table header once and checks the copies.
 */
static int lim_load(struct ctx *c, uint32_t idx, struct shmctl_lim *l)
{
        struct shm_lim_snap s = {0};
        int rc = shm_dir_snapshot(&c->map, idx, &s);
        if (rc == -ENOENT) /* not in use; s.state as read, when the library filled it in */
                return s.state == THR_DIR_FREE
                           ? 0
                           : corrupt(c, "directory entry %u: state %u", idx, s.state);
        if (rc < 0)
                return snap_fault(c, idx, rc);
        if (s.state != THR_DIR_LIVE && s.state != THR_DIR_RETIRED)
                return corrupt(c, "directory entry %u: state %u", idx, s.state);
        l->idx = idx;
        l->state = s.state;
        memcpy(l->name, s.name, sizeof(l->name)); /* terminated: checked by the snapshot */
        l->name[THR_NAME_MAX] = '\0';
        l->p = s.params;
        l->t = s.table;
        lim_counters(c, l);
        const struct thr_dir_entry *de =
            (const struct thr_dir_entry *)shm_at(c->map.base, c->map.g.dir_off) + idx;
        l->gl_share = atomic_load_explicit(&de->global_share, memory_order_relaxed);
        l->gl_state = atomic_load_explicit(&de->global_state, memory_order_relaxed);
        l->gl_expiry_ns = atomic_load_explicit(&de->global_expiry_ns, memory_order_relaxed);
        l->now_ns = arena_now_ns(c); /* epoch_ns is client-writable: no signed overflow */
        return 1;
}

/* Every live or retired limiter into *OUT (caller frees). Returns the count or -errno. */
long lims_load_all(struct ctx *c, struct shmctl_lim **out)
{
        struct shmctl_lim *v = calloc(c->map.g.dir_count ? c->map.g.dir_count : 1, sizeof(*v));
        long n = 0;
        if (!v)
                return -ENOMEM;
        for (uint32_t i = 0; i < c->map.g.dir_count; i++) {
                int rc = lim_load(c, i, &v[n]);
                if (rc < 0) {
                        free(v);
                        return rc;
                }
                n += rc > 0;
        }
        *out = v;
        return n;
}

/* Load entry IDX, which was called NAME: 0, -ENOENT (freed or renamed since), -errno. */
static int lim_reload(struct ctx *c, uint32_t idx, const char *name, struct shmctl_lim *l)
{
        int rc = lim_load(c, idx, l);
        if (rc < 0)
                return rc;
        return rc == 1 && strcmp(l->name, name) == 0 ? 0 : -ENOENT;
}

/*
 * The limiter called NAME: the live one, else a retired one (removed by a reload, its table
 * kept). 0, -ENOENT or -errno. Only that entry's records are read.
 */
static int lim_find(struct ctx *c, const char *name, struct shmctl_lim *l)
{
        int64_t retired = -1;
        for (uint32_t i = 0; i < c->map.g.dir_count; i++) {
                char n[THR_NAME_MAX + 1];
                int st = entry_state(c, i, n);
                if (st < 0)
                        return st;
                if (st == THR_DIR_FREE || strcmp(n, name) != 0)
                        continue;
                if (st == THR_DIR_LIVE)
                        return lim_reload(c, i, name, l);
                if (retired < 0)
                        retired = i;
        }
        return retired >= 0 ? lim_reload(c, (uint32_t)retired, name, l) : -ENOENT;
}

/*
 * The arena's time in ns, as shm_now_ns reads it, but from one read of each header field and in
 * unsigned arithmetic: epoch_ns is client-writable, and shm_now_ns's signed subtraction overflows
 * (undefined behaviour) on an extreme value. A corrupt epoch gives a strange time, which the
 * callers print or refuse (now_units), never a crash.
 */
uint64_t arena_now_ns(const struct ctx *c)
{
        const struct thr_hdr *h = shm_hdr(&c->map);
        uint32_t clock = *(const volatile uint32_t *)&h->clock_id;
        if (clock == THR_CLOCK_MANUAL)
                return atomic_load_explicit(&h->manual_now_ns, memory_order_acquire);
        int64_t epoch = *(const volatile int64_t *)&h->epoch_ns;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec - (uint64_t)epoch;
}

/* The arena's time in L's units. -EBADMSG if it cannot be a time this arena reached. */
static int now_units(struct ctx *c, const struct shmctl_lim *l, uint64_t *out)
{
        uint64_t ns = arena_now_ns(c);
        if (ns > THR_TAT_LIMIT / l->p.k)
                return corrupt(c, "directory entry %u: arena time %" PRIu64 " ns out of range",
                               l->idx, ns);
        *out = ns * l->p.k;
        return 0;
}

/* A GCRA key: a peek (cost 0) at NOW, what a client would be told; its debt orders `keys`. */
static void gcra_eval(const struct shmctl_lim *l, uint64_t now, struct shmctl_key *k)
{
        struct shm_gcra g;
        shm_gcra_step(&l->p, k->tat, now, 0, &g);
        k->remaining = g.remaining;
        k->reset_ns = shm_units_to_ns(&l->p, g.reset_units);
        k->debt_ns = k->tat == THR_TAT_FRESH ? 0 : k->reset_ns;
}

/*
 * The oldest unit of log E (state U) still in the window at NOW, in arena ns, or UINT64_MAX.
 * The log holds the last N units in admission order (shm_window_at), so the units that left the
 * window come first: a binary search for the first that has not (as window.c counts free units;
 * a word grown by an interrupted admission only shifts the answer). Every index is taken mod R.
 */
static uint64_t window_oldest(const struct thr_params *p, const _Atomic uint64_t *e, uint64_t u,
                              uint64_t now)
{
        uint64_t n = p->rate_n, w = p->period_ns, lo = 0, hi = n, oldest = UINT64_MAX;
        while (lo < hi) {
                uint64_t mid = lo + (hi - lo) / 2;
                uint64_t r =
                    atomic_load_explicit(&e[shm_window_at(n, u, mid + 1)], memory_order_relaxed);
                if (r == 0 || (now >= w && r - 1 <= now - w)) { /* none, or out (time + 1) */
                        lo = mid + 1;
                } else {
                        hi = mid;
                        oldest = r - 1;
                }
        }
        return oldest;
}

/* A serialized key's header H: the holder named by its token, the queue and the counters. */
static void hold_read(const struct thr_serial *h, struct shmctl_hold *o)
{
        o->held = atomic_load_explicit(&h->hold_token, memory_order_acquire) != 0;
        o->pid = atomic_load_explicit(&h->hold_pid, memory_order_relaxed);
        o->since = atomic_load_explicit(&h->hold_since, memory_order_relaxed);
        o->cost = atomic_load_explicit(&h->hold_cost, memory_order_relaxed);
        o->waiters = atomic_load_explicit(&h->waiters, memory_order_relaxed);
        o->served = atomic_load_explicit(&h->served, memory_order_relaxed);
        o->released = atomic_load_explicit(&h->released, memory_order_relaxed);
}

/*
 * A window key of slot S: a peek (cost 0) at NOW for what is left and when the window empties
 * (its debt), a cost-1 try for when the next unit fits, the oldest unit in the window, and a
 * serialized key's header. The log is read in place (the snapshot's table copy bounds S's aux
 * storage, and snap_fill checked that it holds the ring); the state word U is any number.
 */
static void window_eval(const struct ctx *c, const struct shmctl_lim *l, void *aux, uint64_t now,
                        struct shmctl_key *k)
{
        (void)c;
        const _Atomic uint64_t *e = shm_window_log(aux);
        struct shm_win peek, one;
        shm_window_decide(&l->p, e, k->tat, now, 0, false, 0, &peek);
        shm_window_decide(&l->p, e, k->tat, now, 1, false, 0, &one);
        k->remaining = peek.remaining;
        k->reset_ns = k->debt_ns = peek.reset_ns;
        k->win = (struct shmctl_win){.used = l->p.rate_n - peek.remaining,
                                     .oldest_ns = window_oldest(&l->p, e, k->tat, now),
                                     .next_free_ns = one.retry_ns};
        if (l->p.flags & THR_PARAM_SERIALIZE)
                hold_read(shm_serial(aux), &k->hold);
}

/* Slot S's key evaluated at NOW (in L's units), by its limiter's kind. */
static void key_eval(struct ctx *c, const struct shmctl_lim *l, const struct thr_slot *s,
                     uint64_t now, struct shmctl_key *k)
{
        k->absent = false; /* a slot's key is in the table */
        k->win = (struct shmctl_win){0};
        k->hold = (struct shmctl_hold){0};
        k->sem = (struct shmctl_sem){0};
        k->bud = (struct shmctl_budget){0};
        if (mark_eval(c, l, s, k)) /* a composed call's mark: no state to evaluate */
                return;
        if (l->p.kind == THR_KIND_WINDOW)
                window_eval(c, l, shm_slot_aux(c->map.base, &l->t, s), now, k);
        else if (l->p.kind == THR_KIND_SEMAPHORE)
                sem_eval(c, l, s, k);
        else if (l->p.kind == THR_KIND_BUDGET) /* its header: the snapshot checked it fits */
                budget_eval(l, shm_slot_aux(c->map.base, &l->t, s), k);
        else if (l->p.kind == THR_KIND_BREAKER) /* its buckets: the snapshot checked they fit */
                breaker_eval(l, shm_slot_aux(c->map.base, &l->t, s), now, k);
        else
                gcra_eval(l, now, k);
}

/*
 * Snapshot slot S of L into K like a seqlock reader, and evaluate it at NOW: 1 read, 0 skip (not
 * live, changing, or being evicted), -EBADMSG (a stable live slot with an impossible key length).
 * The evaluation reads the key's aux storage inside the seqlock, so a slot reused meanwhile (its
 * log another key's) is skipped too.
 */
int slot_read(struct ctx *c, const struct shmctl_lim *l, const struct thr_slot *s, uint64_t now,
              struct shmctl_key *k)
{
        uint64_t m1 = atomic_load_explicit(&s->meta, memory_order_acquire);
        if (THR_META_STATUS(m1) != THR_SLOT_LIVE)
                return 0;
        uint32_t len = *(const volatile uint8_t *)&s->key_len;
        /* acquire: a window's log words are then at least those of this state (window.h) */
        k->tat = atomic_load_explicit(&s->state, memory_order_acquire);
        key_eval(c, l, s, now, k);
        memcpy(k->bytes, s->key, shm_key_stored_len(len)); /* the stored form (layout.h) */
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&s->meta, memory_order_relaxed) != m1 || k->tat == THR_TAT_DEAD)
                return 0;
        if (len == 0 || len > THR_KEY_MAX)
                return corrupt(c, "a live slot has key length %" PRIu32 " (1 to %u)", len,
                               THR_KEY_MAX);
        k->len = len;
        return 1;
}

const struct thr_slot *slot_at(const struct ctx *c, const struct shmctl_lim *l, uint64_t i)
{
        return (const struct thr_slot *)shm_at(c->map.base, l->t.slots_off) + i;
}

/* Every live key of L, evaluated at NOW, into *OUT (caller frees). Count or -errno. */
static long keys_collect(struct ctx *c, const struct shmctl_lim *l, uint64_t now,
                         struct shmctl_key **out)
{
        uint64_t nslots = (uint64_t)l->t.nshards * l->t.shard_slots, cap = 0;
        struct shmctl_key *v = NULL;
        long n = 0;
        for (uint64_t i = 0; i < nslots; i++) {
                if ((uint64_t)n == cap) {
                        cap = cap ? cap * 2 : 64;
                        struct shmctl_key *nv = realloc(v, cap * sizeof(*v));
                        if (!nv) {
                                free(v);
                                return -ENOMEM;
                        }
                        v = nv;
                }
                int rc = slot_read(c, l, slot_at(c, l, i), now, &v[n]);
                if (rc < 0) {
                        free(v);
                        return rc;
                }
                n += rc;
        }
        *out = v;
        return n;
}

/* Most indebted first; equal debts by key bytes so the output is stable. */
static int key_cmp(const void *a, const void *b)
{
        const struct shmctl_key *x = a, *y = b;
        if (x->debt_ns != y->debt_ns)
                return x->debt_ns < y->debt_ns ? 1 : -1;
        int d = memcmp(x->bytes, y->bytes, x->len < y->len ? x->len : y->len);
        return d ? d : (int)x->len - (int)y->len;
}

/* ---------------------------------------------------------------- opening */

static int exit_code(int rc)
{
        if (rc == -ENOENT)
                return EX_NOINPUT;
        if (rc == -EACCES || rc == -EPERM)
                return EX_NOPERM;
        if (rc == -EBADMSG || rc == -EPROTONOSUPPORT)
                return EX_DATAERR;
        return rc == -ENAMETOOLONG ? EX_USAGE : EX_OSERR;
}

/* Report a failure to open or read the arena; returns the exit code. */
int fail(struct ctx *c, int rc)
{
        if (c->o->amount && (rc == -EACCES || rc == -EPERM)) /* budget add: even to read */
                fprintf(stderr, "shmctl: budget add needs write access to the arena: %s\n",
                        c->err[0] ? c->err : strerror(-rc));
        else if (rc == -EBADMSG || rc == -EPROTONOSUPPORT)
                fprintf(stderr, "shmctl: arena %s is not valid: %s\n", c->map.path, c->err);
        else if (c->err[0])
                fprintf(stderr, "shmctl: %s\n", c->err);
        else
                fprintf(stderr, "shmctl: arena %s: %s\n", c->o->arena, strerror(-rc));
        return exit_code(rc);
}

/* Find and map the arena read-only, validate it, copy its header. 0 or an exit code. */
static int ctx_open(struct ctx *c)
{
        char path[sizeof(c->map.path)];
        int rc = shm_arena_find(c->o->arena, path, sizeof(path)); /* a name with '/' is a path */
        if (rc == -ENOENT)
                snprintf(c->err, sizeof(c->err),
                         "no arena called '%s' (looked on the hugetlbfs mounts and in /dev/shm)",
                         c->o->arena);
        else if (rc == 0)
                rc = shm_arena_attach(path, false, &c->map, c->err, sizeof(c->err));
        if (rc < 0)
                return fail(c, rc);
        memcpy(&c->hdr, c->map.base, sizeof(c->hdr));
        return 0;
}

/* ---------------------------------------------------------------- status */

static uint32_t readers_in_use(const struct ctx *c)
{
        const struct thr_reader *r = shm_at(c->map.base, c->map.g.reader_off);
        uint32_t n = 0;
        for (uint32_t i = 0; i < c->map.g.reader_count; i++)
                n += atomic_load_explicit(&r[i].owner, memory_order_relaxed) != 0;
        return n;
}

/* The header's grace-period numbers, each read once. */
void gp_read(const struct ctx *c, struct shmctl_gp *gp)
{
        const struct thr_hdr *h = shm_hdr(&c->map);
        gp->started = atomic_load_explicit(&h->grace_periods, memory_order_relaxed);
        gp->done = atomic_load_explicit(&h->gp_done, memory_order_relaxed);
        gp->forced = atomic_load_explicit(&h->readers_forced, memory_order_relaxed);
        gp->mb_fallback = atomic_load_explicit(&h->mb_fallback, memory_order_relaxed) != 0;
        gp->error = atomic_load_explicit(&h->gp_error, memory_order_relaxed);
}

/* Totals over the N limiters of V, live and retired (a retired table still holds its keys). */
static void status_totals(const struct shmctl_lim *v, long n, struct shmctl_status *s)
{
        s->nlim = s->nretired = 0;
        s->live_keys = s->capacity = s->insert_fail = 0;
        s->ev = (struct shmctl_evict){0};
        for (long i = 0; i < n; i++) {
                if (v[i].state == THR_DIR_LIVE)
                        s->nlim++;
                else
                        s->nretired++;
                s->live_keys += v[i].t.live;
                s->capacity += v[i].t.capacity;
                s->insert_fail += v[i].t.insert_fail;
                s->ev.evicted += v[i].ev.evicted;
                s->ev.evicted_full += v[i].ev.evicted_full;
                s->ev.reclaimed += v[i].ev.reclaimed;
                s->ev.allowed_full += v[i].ev.allowed_full;
                s->ev.lock_waits += v[i].ev.lock_waits;
                s->ev.lock_timeouts += v[i].ev.lock_timeouts;
                s->ev.repairs += v[i].ev.repairs;
        }
}

static int status_gather(struct ctx *c, struct shmctl_status *s)
{
        const struct thr_hdr *h = shm_hdr(&c->map);
        struct shmctl_lim *v;
        pid_t holder = 0;
        long n = lims_load_all(c, &v);
        if (n < 0)
                return (int)n;
        status_totals(v, n, s);
        free(v);
        gp_read(c, &s->gp);
        s->readers = readers_in_use(c);
        s->alive = shm_daemon_alive(&c->map, &holder);
        s->now_ns = arena_now_ns(c);
        s->pid = atomic_load_explicit(&h->daemon_pid, memory_order_relaxed);
        s->heartbeat_ns = atomic_load_explicit(&h->heartbeat_ns, memory_order_relaxed);
        s->attaches = atomic_load_explicit(&h->attach_count, memory_order_relaxed);
        s->ngroups = groups_count(c);
        return 0;
}

static int cmd_status(struct ctx *c)
{
        struct shmctl_status s;
        int rc = status_gather(c, &s);
        if (rc < 0)
                return fail(c, rc);
        shmctl_out_status(&c->hdr, &c->map, &s, c->o->json);
        return 0;
}

/* ---------------------------------------------------------------- limiters */

static int cmd_limiters(struct ctx *c)
{
        struct shmctl_lim *v;
        long n = lims_load_all(c, &v);
        if (n < 0)
                return fail(c, (int)n);
        for (long i = 0; i < n; i++) {
                int rc = v[i].p.kind == THR_KIND_SEMAPHORE ? sem_totals(c, &v[i]) : 0;
                if (rc < 0) {
                        free(v);
                        return fail(c, rc);
                }
        }
        shmctl_out_limiters(v, n, c->o->json);
        free(v);
        return 0;
}

/* ---------------------------------------------------------------- keys and get */

/* The limiter named on the command line: 0, or an exit code. */
int lim_arg(struct ctx *c, struct shmctl_lim *l)
{
        int rc = lim_find(c, c->o->limiter, l);
        if (rc == -ENOENT) {
                fprintf(stderr, "shmctl: no such limiter: %s\n", c->o->limiter);
                return EX_NOTFOUND;
        }
        return rc < 0 ? fail(c, rc) : 0;
}

/* The limiter named on the command line and the arena time in its units: 0, or an exit code. */
static int lim_named(struct ctx *c, struct shmctl_lim *l, uint64_t *now)
{
        int rc = lim_arg(c, l);
        if (rc != 0)
                return rc;
        rc = now_units(c, l, now);
        return rc < 0 ? fail(c, rc) : 0;
}

static int cmd_keys(struct ctx *c)
{
        struct shmctl_lim l;
        struct shmctl_key *v;
        uint64_t now = 0;
        int rc = lim_named(c, &l, &now);
        if (rc != 0)
                return rc;
        c->waiting = true;
        long n = keys_collect(c, &l, now, &v);
        if (n < 0)
                return fail(c, (int)n);
        if (n > 1)
                qsort(v, (size_t)n, sizeof(*v), key_cmp);
        long shown = c->o->nkeys && c->o->nkeys < (uint64_t)n ? (long)c->o->nkeys : n;
        shmctl_out_keys(&l, v, n, shown, now / l.p.k, c->o->json);
        free(v);
        return 0;
}

/* KEY's slot in L, evaluated at NOW: 1 found into *K, 0 absent, -EBADMSG. The lookup only reads;
 * it names the key by its stored form (layout.h), as every client does. */
static int key_get(struct ctx *c, const struct shmctl_lim *l, uint64_t now, struct shmctl_key *k)
{
        uint32_t len = (uint32_t)strlen(c->o->key); /* 1 to THR_KEY_MAX: checked at parse */
        uint8_t buf[THR_KEY_INLINE];
        const void *sk = shm_key_store(c->hdr.digest_key, c->o->key, len, buf);
        uint64_t h = shm_stored_hash(c->hdr.hash_key, sk, len);
        const struct thr_slot *s = shm_table_lookup(c->map.base, &l->t, h, sk, len);
        if (!s)
                return 0;
        int rc = slot_read(c, l, s, now, k);
        /* A slot whose key changed between the lookup and the read was just evicted. */
        if (rc > 0 && (k->len != len || memcmp(k->bytes, sk, shm_key_stored_len(len)) != 0))
                return 0;
        return rc;
}

/*
 * KEY, which L's table does not hold, in the state its first call would start it in at NOW
 * (shm_kind_fresh, as an insert computes it, on a scratch copy of its aux storage): a GCRA key's
 * `initial` tokens, a window's empty log, a semaphore with nothing held, a budget's initial
 * balance; or, in a shard where on_full = evict kept the debt of keys evicted for room, that
 * floor. Nothing is written to the arena. 0, or -ENOMEM.
 */
static int key_absent(struct ctx *c, const struct shmctl_lim *l, uint64_t now, struct shmctl_key *k)
{
        const struct thr_params *p = &l->p;
        uint32_t len = (uint32_t)strlen(c->o->key);
        *k = (struct shmctl_key){.len = len, .absent = true};
        const void *sk = shm_key_store(c->hdr.digest_key, c->o->key, len, k->bytes);
        if (sk != k->bytes)
                memcpy(k->bytes, sk, shm_key_stored_len(len));
        struct shm_probe pr;
        shm_probe_init(c->map.base, &l->t, shm_stored_hash(c->hdr.hash_key, sk, len), &pr);
        uint64_t floor = atomic_load_explicit(&pr.shard->floor_units, memory_order_relaxed);
        void *aux = l->t.aux_stride ? calloc(1, l->t.aux_stride) : NULL;
        if (l->t.aux_stride && !aux)
                return -ENOMEM;
        uint64_t start = p->kind == THR_KIND_GCRA ? now + (p->burst - p->initial) * p->t_units
                                                  : THR_TAT_FRESH; /* GCRA's, as a client's */
        k->tat = shm_kind_fresh(p, aux, start, now, floor);
        if (p->kind == THR_KIND_WINDOW) {
                window_eval(c, l, aux, now, k);
        } else if (p->kind == THR_KIND_SEMAPHORE) { /* sem_eval of its empty header */
                k->remaining = p->rate_n;
                k->sem.remainder = (int64_t)p->rate_n; /* max is at most 65535 */
        } else if (p->kind == THR_KIND_BUDGET) {
                budget_eval(l, aux, k);
        } else if (p->kind == THR_KIND_BREAKER) {
                breaker_eval(l, aux, now, k);
        } else {
                if (k->tat == start)
                        k->tat = THR_TAT_FRESH; /* the same bucket, shown as a fresh key's */
                gcra_eval(l, now, k);
        }
        free(aux);
        return 0;
}

static int cmd_get(struct ctx *c)
{
        struct shmctl_lim l;
        struct shmctl_key k;
        uint64_t now = 0;
        int rc = lim_named(c, &l, &now);
        if (rc != 0)
                return rc;
        c->waiting = true;
        rc = key_get(c, &l, now, &k);
        if (rc == 0) /* absent: a known state all the same */
                rc = key_absent(c, &l, now, &k);
        if (rc < 0)
                return fail(c, rc);
        shmctl_out_key(&l, &k, now / l.p.k, c->o->json);
        return 0;
}

/* ---------------------------------------------------------------- command line */

struct command {
        const char *name;
        int nmin, nmax; /* operands: LIMITER, then KEY */
        int (*run)(struct ctx *c);
};

static const struct command commands[] = {
    {"status", 0, 0, cmd_status}, {"limiters", 0, 0, cmd_limiters}, {"readers", 0, 0, cmd_readers},
    {"keys", 1, 1, cmd_keys},     {"get", 2, 2, cmd_get},           {"leases", 0, 1, cmd_leases},
    {"peers", 0, 0, cmd_peers},   {"budget", 4, 4, cmd_budget},     {"groups", 0, 0, cmd_groups},
};

static void usage(FILE *f)
{
        fprintf(f, "usage: shmctl [-a ARENA] [--json] status\n"
                   "       shmctl [-a ARENA] [--json] limiters\n"
                   "       shmctl [-a ARENA] [--json] readers\n"
                   "       shmctl [-a ARENA] [--json] keys LIMITER [-n N]\n"
                   "       shmctl [-a ARENA] [--json] get LIMITER KEY\n"
                   "       shmctl [-a ARENA] [--json] leases [LIMITER]\n"
                   "       shmctl [-a ARENA] [--json] peers\n"
                   "       shmctl [-a ARENA] [--json] groups\n"
                   "       shmctl [-a ARENA] [--json] budget add LIMITER KEY AMOUNT\n"
                   "       shmctl --help | --version\n");
}

static void help(void)
{
        usage(stdout);
        printf("\nInspect a throttle arena, read-only (but for budget add).\n\n"
               "  status     the arena's header: backing, clock, limiters, readers, daemon,\n"
               "             grace periods, eviction totals\n"
               "  limiters   each limiter: kind (gcra, window, semaphore, budget, breaker), rate,\n"
               "             burst, initial (a budget's: a new key's balance), serialized,\n"
               "             occupancy, bytes per key, idle_ttl, on_full, eviction counters,\n"
               "             live or retired; a semaphore's units held over its keys\n"
               "             and max, leases per key, and acquires pending (and, when any\n"
               "             is queued, the lowest remainder, units pending, longest pending)\n"
               "  readers    each reader record in use: owner, grace period, liveness\n"
               "  keys       a limiter's live keys, most indebted (semaphore: most held;\n"
               "             budget: paused, most needed, then lowest balance; breaker: open,\n"
               "             half-open, then most failing) first\n"
               "             (-n N: the first N, default %d; 0: all)\n"
               "  get        one key: GCRA, its remaining tokens, reset time and state; window,\n"
               "             its units in the window, oldest, next free and reset times, and\n"
               "             if serialized its holder and waiters; semaphore, its units held\n"
               "             of max, leases in use, and acquires pending (and their amounts;\n"
               "             when any is queued, remainder, units pending, longest pending);\n"
               "             budget, its balance and, when paused (spenders queued: no\n"
               "             budget), their number, units needed, the oldest's need; breaker,\n"
               "             its state, consecutive failures, window calls and failures,\n"
               "             probes out, half-open successes, time until a call may go; a key\n"
               "             a composed call holds: marked by reader R (call seq S); a key\n"
               "             not in the table: absent, with the state its first call starts\n"
               "             from (GCRA: initial tokens; a budget: its initial balance)\n"
               "  leases     every lease of every semaphore limiter (or of LIMITER): key,\n"
               "             amount, holder pid and tid (or peer #INDEX and level), age,\n"
               "             expiry, generation; then each key's units held and pending\n"
               "  peers      each live peer: record index, pid, expiry, lock levels, acquires\n"
               "             pending, and the leases and units it holds\n"
               "  groups     each named group for composed calls (compose = a, b): its\n"
               "             members' limiters (retired, or an index out of range, so said)\n"
               "  budget add adds AMOUNT (1 to 2^62-1) to KEY's balance on a budget limiter\n"
               "             and grants the queued spends that now fit (the one write:\n"
               "             needs write access to the arena); prints the new balance and\n"
               "             the spenders still queued\n\n"
               "  -a, --arena ARENA  arena name, or a path if it contains '/'\n"
               "                     (default: $THROTTLE_ARENA, else \"main\")\n"
               "  --json             print one JSON object\n\n"
               "Exit status: 0 ok (an absent key too), 1 no such limiter (or, for leases, not a\n"
               "semaphore; for budget add, not a budget), 64 usage, 65 corrupt arena,\n"
               "66 no arena, 69 add refused (overflow, table full), 75 lock held,\n"
               "77 permission denied.\n",
               DEFAULT_KEYS);
}

static int version(void)
{
        int v = thr_version();
        printf("shmctl (throttle) %d.%d.%d, library %d.%d.%d, arena layout %u.%u\n",
               THR_VERSION_MAJOR, THR_VERSION_MINOR, THR_VERSION_PATCH, v >> 16, (v >> 8) & 0xff,
               v & 0xff, THR_LAYOUT_MAJOR, THR_LAYOUT_MINOR);
        return 0;
}

static int bad_usage(const char *what, const char *arg)
{
        fprintf(stderr, "shmctl: %s%s%s\n", what, arg ? ": " : "", arg ? arg : "");
        usage(stderr);
        return EX_USAGE;
}

/* The command and its operands. Returns -1 to go on, or an exit code. */
static int parse_cmd(int argc, char **argv, struct opts *o, const struct command **cmd)
{
        if (argc < 1)
                return bad_usage("no command given", NULL);
        for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
                if (strcmp(argv[0], commands[i].name) == 0)
                        *cmd = &commands[i];
        if (!*cmd)
                return bad_usage("unknown command", argv[0]);
        if (argc - 1 < (*cmd)->nmin || argc - 1 > (*cmd)->nmax)
                return bad_usage("wrong number of operands for", argv[0]);
        if (o->n_given && (*cmd)->run != cmd_keys)
                return bad_usage("-n is only for keys", NULL);
        if ((*cmd)->run == cmd_budget) { /* budget add LIMITER KEY AMOUNT */
                if (strcmp(argv[1], "add") != 0)
                        return bad_usage("unknown budget verb (budget add LIMITER KEY AMOUNT)",
                                         argv[1]);
                if (!budget_amount(argv[4], &o->amount))
                        return bad_usage("budget add: AMOUNT must be a whole number from 1 to "
                                         "4611686018427387903 (2^62-1)",
                                         argv[4]);
                argv++, argc--;
        }
        o->limiter = argc > 1 ? argv[1] : NULL;
        o->key = argc > 2 ? argv[2] : NULL;
        if (o->limiter && strlen(o->limiter) > THR_NAME_MAX)
                return bad_usage("limiter name too long", o->limiter);
        if (o->key && (strlen(o->key) == 0 || strlen(o->key) > THR_KEY_MAX))
                return bad_usage("a key has 1 to 104 bytes (THR_KEY_MAX_LEN)", NULL);
        return -1;
}

static int parse_count(const char *s, uint64_t *out)
{
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (!*s || *s == '-' || *end || errno)
                return bad_usage("-n wants a count", s);
        *out = v;
        return -1;
}

/* Options, then the command. Returns -1 to go on, or an exit code (0 after --help). */
static int parse_args(int argc, char **argv, struct opts *o, const struct command **cmd)
{
        static const struct option lo[] = {{"arena", required_argument, NULL, 'a'},
                                           {"json", no_argument, NULL, 'j'},
                                           {"help", no_argument, NULL, 'h'},
                                           {"version", no_argument, NULL, 'V'},
                                           {NULL, 0, NULL, 0}};
        int ch, rc = -1;
        o->arena = getenv("THROTTLE_ARENA");
        if (!o->arena || !*o->arena)
                o->arena = "main";
        o->nkeys = DEFAULT_KEYS;
        opterr = 0;
        while (rc == -1 && (ch = getopt_long(argc, argv, ":a:n:h", lo, NULL)) != -1) {
                if (ch == 'a')
                        o->arena = optarg;
                else if (ch == 'j')
                        o->json = true;
                else if (ch == 'n')
                        rc = parse_count(optarg, &o->nkeys), o->n_given = true;
                else if (ch == 'h')
                        return help(), 0;
                else if (ch == 'V')
                        return version();
                else if (ch == '?' && isdigit(optopt)) /* getopt took a number for options */
                        rc = bad_usage("a negative number (budget add: AMOUNT must be a whole "
                                       "number from 1 to 4611686018427387903 (2^62-1))",
                                       NULL);
                else
                        rc = bad_usage(ch == ':' ? "option needs a value" : "unknown option",
                                       argv[optind - 1]);
        }
        return rc == -1 ? parse_cmd(argc - optind, argv + optind, o, cmd) : rc;
}

int main(int argc, char **argv)
{
        struct opts o = {0};
        const struct command *cmd = NULL;
        int rc = parse_args(argc, argv, &o, &cmd);
        if (rc >= 0)
                return rc;
        struct ctx c = {.o = &o};
        rc = ctx_open(&c);
        if (rc != 0)
                return rc;
        rc = cmd->run(&c);
        shm_arena_detach(&c.map);
        if (fflush(stdout) != 0 || ferror(stdout)) {
                fprintf(stderr, "shmctl: writing the output: %s\n", strerror(errno));
                return rc ? rc : EX_IOERR;
        }
        return rc;
}
