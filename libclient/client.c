/*
 * client.c - libthrottle-client: opening arenas and limiters, and the admission hot path.
 *
 * Why one CAS is enough: a key's whole GCRA state is its TAT, one 64-bit word. A decision reads
 * it, computes the new TAT from it and the current time, and publishes with a CAS from exactly
 * the value it read; if another process got there first the CAS fails and the decision is made
 * again on the newer TAT. So every admission is computed on the state left by the previous one
 * (linearizable at the CAS), and the admissions never exceed what GCRA allows over the callers'
 * clock readings (B + elapsed/T between the first and the last reading; a caller preempted between
 * its clock read and its CAS is admitted as of its reading). A denied request, or a peek (cost 0),
 * does not write, except to record a new key's start (op_apply). A process killed at any
 * instruction either did its CAS (the admission counts, as it would have) or did not (nothing
 * changed): no torn state is possible. The memory orders: the CAS is acq_rel so that an eviction,
 * which marks a slot with a CAS on the same word, is ordered with it; the TAT itself publishes
 * nothing.
 *
 * Eviction and reuse (shm/reclaim.c has the full argument): every call runs inside a read-side
 * section of this thread's reader record (thr_reader_enter/exit), so the daemon reuses no slot
 * this call might still hold. A slot evicted under us has state THR_TAT_DEAD: our CAS from a TAT
 * fails, and we look the key up again (op_relookup), finding its new slot or inserting it. The
 * grace period is not the only guard for a retried decision: the lookup keeps the meta word it
 * matched (status, generation, tag), and after every failed CAS the call compares it again before
 * deciding on the new state; a slot retired or reused meanwhile sends the call back to the
 * lookup, so a retry never decides on another key's state (it did: on a CAS failure only
 * THR_TAT_DEAD counted as "evicted", and a slot reused for another key got charged for this one).
 * The first decision relies on the section alone (a check there would cost the hot path and still
 * leave the window between the check and the CAS).
 *
 * New keys. The insert path takes the shard's insert lock (shm/shardlock.c), waiting at most
 * THR_LOCK_WAIT_NS for a live holder (a stopped process, a daemon stopped mid-pass): past that, or
 * if this very thread holds it (a signal handler nested in its own insert), the call gets the
 * limiter's on_full outcome. The section is left while waiting, so a stopped holder never makes us
 * block grace periods; nothing found before is used after. The new key's first request is charged
 * as it is published (try and reserve alike), so no other inserter can evict it uncharged. A
 * limiter removed by a reload is RETIRED in the directory: calls get -EIDRM.
 *
 * Processes and signals. A call nested in a signal handler that interrupted a call of the same
 * thread keeps the outer call's section (client_internal.h); counters in the record may then
 * lose an increment (plain stores, owner-only). Calls are async-signal-safe once the thread has
 * registered in the arena (its first call; registration allocates and takes a lock).
 * Cancellation: the hot path has no cancellation point; registration and the lock wait disable
 * it (reader.c, shardlock.c).
 *
 * The parameter record is found through the limiter's params_off, acquire-loaded on every call:
 * it pairs with the daemon's release store when a reload swaps in a new immutable record, so a
 * decision uses one record, whole. It is loaded and read only inside the call's read-side
 * section (op_begin enters first, op_insert reads it again after re-entering): the daemon reuses
 * a GCRA record it replaced once a grace period has passed (shm/arena_build.c), and a record read
 * outside a section could be rewritten under the decision.
 *
 * Holds and caps (thr_limiter_hold, thr_limiter_cap: OP_HOLD) go through the same CAS loop as a
 * try: the new state is max(TAT, target), so a hold only ever raises the TAT; a CAS lost to an
 * admission is decided again on the newer TAT, and a killed caller either raised it or did not.
 *
 * Key handles (thr_key_try) skip the hash and the probe by looking first at the slot the handle
 * remembers, taken only if it passes the probe's own test inside the section (live, the key's tag,
 * length and bytes): at most one slot is live per key, so that is the lookup's answer; anything
 * else is a missed hint. Before the slow path, which may insert, the handle's bytes are hashed
 * again and must give its kept hash. The argument in full is in client_internal.h (struct
 * thr_key_priv). The hint lives in the caller's memory, written only when the slot changed.
 *
 * On the hot path (the key exists): one clock read through the vDSO, one keyed multilinear hash
 * (shm/hash.h, inline), a probe that usually touches one cache line, one CAS, and stores to this
 * thread's own reader record. No syscall, no lock, no allocation.
 *
 * A key handle's call is ordered for the CPU (op_begin; measured,
 * bench/results/2026-12-04/issue12_order.txt): it asks for the line of the slot it remembers
 * first (a prefetch: it needs nothing of the section), then enters the section, checks the record
 * and reads the clock, and only then looks at the slot. The clock read (vDSO: rdtscp or
 * lfence+rdtsc) waits for every instruction before it, not the ones after, so the look runs in its
 * shadow while the line travels. The plain call keeps its order (the section, the record, the
 * hash, the probe, then the clock in op_apply). Measured (same file): reading its clock first
 * made one process 3-8% faster but two processes 8-12% slower on 10 000 and 1M keys, and hashing
 * and prefetching its home line before the section made two processes 13% slower on one key.
 * A handle's reading is older when the state is read, which the argument at op_apply covers: an
 * early reading never admits more, and a denial near the limit is decided again on a reading taken
 * after the state. A new key's first decision reads the clock again, after the probe that found it
 * absent (fresh_decide says why).
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "client_internal.h"
#include "breaker.h"
#include "budget.h"
#include "compose.h"
#include "kind.h"
#include "window.h"
#include "testhook.h"

int thr_version(void)
{
        return (THR_VERSION_MAJOR << 16) | (THR_VERSION_MINOR << 8) | THR_VERSION_PATCH;
}

/* ---------------------------------------------------------------- arenas and limiters */

static int arena_open(const char *name, thr_arena **out);

/* Cancellation is disabled while opening or closing: a thread cancelled in open(2) or close(2)
 * would otherwise leak the handle, or leave it half registered. */
int thr_arena_open(const char *name, unsigned flags, thr_arena **out)
{
        if (!name || !*name || !out || flags)
                return -EINVAL;
        int old;
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
        int rc = arena_open(name, out);
        pthread_setcancelstate(old, NULL);
        return rc;
}

static int arena_open(const char *name, thr_arena **out)
{
        char path[sizeof(((struct shm_map *)0)->path)];
        int rc = shm_arena_find(name, path, sizeof(path));
        if (rc < 0)
                return rc;
        thr_arena *a = calloc(1, sizeof(*a));
        if (!a)
                return -ENOMEM;
        a->lockfd = -1;
        rc = shm_arena_attach(path, true, &a->map, NULL, 0);
        if (rc == 0) {
                a->hdr = shm_hdr(&a->map);
                rc = shm_arena_check_clock(a->hdr, NULL, 0);
                if (rc == 0)
                        rc = shm_arena_check_pidns(a->hdr, NULL, 0);
                if (rc < 0)
                        shm_arena_detach(&a->map);
        }
        if (rc < 0) {
                free(a);
                return rc;
        }
        /* one syscall at open so the daemon's grace periods can use the expedited membarrier;
         * if it fails, the arena's flag makes the daemon use the slow global one instead */
        shm_membarrier_register(a->hdr);
        /* the TSC clock's rate, if the arena has one and it is plausible (0.01 to 10 ns a cycle):
         * a copy, so no later write to the header changes how this process reads time */
        a->tsc = shm_tsc_cal_of(a->hdr);
        a->open_pid = getpid();
        thr_registry_add(a);
        *out = a;
        return 0;
}

int thr_arena_close(thr_arena *a)
{
        if (!a)
                return -EINVAL;
        int old;
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
        thr_registry_remove(a);
        if (getpid() != a->open_pid && thr_fd_table_shared())
                a->map.fd = -1; /* an inherited handle in a child sharing its parent's fds */
        shm_arena_detach(&a->map);
        free(a);
        pthread_setcancelstate(old, NULL);
        return 0;
}

int thr_limiter_open(thr_arena *a, const char *name, thr_limiter **out)
{
        if (!a || !name || !out)
                return -EINVAL;
        int idx = shm_dir_find(&a->map, name);
        struct shm_lim_snap snap;
        if (idx >= 0)
                idx = shm_dir_snapshot(&a->map, (uint32_t)idx, &snap) < 0 ? -EBADMSG : idx;
        if (idx < 0)
                return idx;
        thr_limiter *l = calloc(1, sizeof(*l));
        if (!l)
                return -ENOMEM;
        l->a = a;
        l->de = (struct thr_dir_entry *)shm_at(a->map.base, a->map.g.dir_off) + idx;
        l->dir_idx = (uint32_t)idx;
        l->tb = shm_at(a->map.base, snap.table_off);
        l->geo = snap.table;
        l->params_lo = a->map.g.heap_off;
        l->params_span = a->map.g.heap_end - a->map.g.heap_off - sizeof(struct thr_params);
        /* the largest N whose ring its logs hold (0: none); the table cannot change: a record
         * asking for more is corrupt */
        uint64_t words = snap.table.aux_stride > THR_WINDOW_HDR
                             ? (snap.table.aux_stride - THR_WINDOW_HDR) / 8
                             : 0;
        l->win_n = words > THR_WINDOW_SLACK ? words - THR_WINDOW_SLACK : 0;
        /* the most lease records a key of its table has room for */
        l->sem_leases = snap.table.aux_stride >= THR_SEM_HDR
                            ? (snap.table.aux_stride - THR_SEM_HDR) / THR_LEASE_SIZE
                            : 0;
        *out = l;
        return 0;
}

int thr_limiter_close(thr_limiter *l)
{
        free(l);
        return 0;
}

int thr_limiter_info(thr_limiter *l, struct thr_limiter_info *info)
{
        if (!l || !info)
                return -EINVAL;
        int rc = 0;
        struct thr_reader *r = thr_reader_get(l->a, &rc);
        if (!r)
                return rc;
        /* inside a section: the daemon reuses a record it replaced only after a grace period */
        uint64_t outer = thr_reader_enter(l->a, r);
        struct thr_params p;
        rc = atomic_load_explicit(&l->de->state, memory_order_acquire) != THR_DIR_LIVE ? -EIDRM : 0;
        uint64_t off = atomic_load_explicit(&l->de->params_off, memory_order_acquire);
        if (rc == 0 && (off - l->params_lo > l->params_span || off % _Alignof(struct thr_params)))
                rc = -EBADMSG;
        if (rc == 0)
                memcpy(&p, shm_at(l->a->map.base, off), sizeof(p)); /* client-writable: one copy */
        thr_reader_exit(r, outer);
        if (rc < 0)
                return rc;
        *info = (struct thr_limiter_info){.kind = p.kind};
        switch (p.kind) {
        case THR_KIND_GCRA:
                info->rate = p.rate_n;
                info->period_ns = p.period_ns;
                info->burst = p.burst;
                info->initial = p.initial;
                /* a global limiter's share (throttle.h); a scribbled value is shown clamped */
                info->reserved[0] = p.reserved > THR_SCALE_ONE ? THR_SCALE_ONE : p.reserved;
                return 0;
        case THR_KIND_WINDOW:
                info->flags = p.flags & THR_PARAM_SERIALIZE ? THR_LIMITER_SERIALIZED : 0;
                info->rate = info->burst = info->initial = p.rate_n;
                info->period_ns = p.period_ns;
                return 0;
        case THR_KIND_SEMAPHORE:
                info->burst = info->initial = p.rate_n;
                info->leases = p.leases;
                info->level = p.level;
                return 0;
        case THR_KIND_BUDGET:
                info->initial = p.initial;
                return 0;
        case THR_KIND_BREAKER: /* the mapping is throttle.h's, under struct thr_limiter_info */
                info->rate = p.rate_n;
                info->burst = p.burst;
                info->initial = p.initial;
                info->period_ns = p.period_ns;
                info->leases = p.level;
                info->level = p.reserved;
                info->reserved[0] = p.max_reserve_units;
                info->reserved[1] = p.leases;
                return 0;
        default:
                *info = (struct thr_limiter_info){0};
                return -EBADMSG;
        }
}

/* ---------------------------------------------------------------- the decision core */

/*
 * The limiter's current parameter record. A reload that removes the limiter first marks its
 * directory entry RETIRED: checked here with the offset, on the same cache line. A serialized
 * window's record is only for the serial calls (SERIAL): try and reserve get NULL.
 */
static inline const struct thr_params *lim_params_for(const thr_limiter *l, bool serial)
{
        if (atomic_load_explicit(&l->de->state, memory_order_relaxed) != THR_DIR_LIVE)
                return NULL;
        uint64_t off = atomic_load_explicit(&l->de->params_off, memory_order_acquire);
        if (off - l->params_lo > l->params_span || off % _Alignof(struct thr_params))
                return NULL;
        const struct thr_params *p = shm_at(l->a->map.base, off);
        if (__builtin_expect(p->kind == THR_KIND_GCRA && p->k, 1))
                return p;
        if (p->kind == THR_KIND_BUDGET) /* try, and the budget calls (locate too) */
                return p->k == 1 && p->burst == THR_BUDGET_MAX ? p : NULL;
        if (p->kind == THR_KIND_BREAKER) /* the breaker calls only, through locate: pinned */
                return serial ? p : NULL;
        if (p->kind == THR_KIND_SEMAPHORE) /* the semaphore calls only, through locate */
                return serial && p->leases && p->leases <= l->sem_leases && p->rate_n &&
                               p->rate_n <= THR_SEM_MAX
                           ? p
                           : NULL;
        if (p->kind != THR_KIND_WINDOW || !p->rate_n || p->rate_n > l->win_n || p->k != 1)
                return NULL;
        return serial == !!(p->flags & THR_PARAM_SERIALIZE) ? p : NULL;
}

/*
 * A window's or a semaphore's record, copied to COPY and checked again, or NULL: their decisions
 * index logs and lease records by the record's counts (N, leases_per_key), which a client
 * rewriting the arena could change between the check and a later read; the copy cannot change.
 * (GCRA's record gives values only, never an index: read in place. The kind itself is the one
 * checked, kept in struct op.) The copy is racy against such a writer, and checked whole.
 */
__attribute__((cold, noinline)) static const struct thr_params *
params_pin(const thr_limiter *l, const struct thr_params *p, uint32_t kind, bool serial,
           struct thr_params *copy)
{
        memcpy(copy, p, sizeof(*copy));
        atomic_signal_fence(memory_order_seq_cst); /* one copy, then only the copy is read */
        if (copy->kind != kind)
                return NULL;
        if (kind == THR_KIND_BUDGET)
                return copy->k == 1 && copy->burst == THR_BUDGET_MAX &&
                               copy->initial <= THR_BUDGET_MAX
                           ? copy
                           : NULL;
        if (kind == THR_KIND_BREAKER)
                return serial && shm_brk_params_ok(copy) ? copy : NULL;
        if (kind == THR_KIND_SEMAPHORE)
                return serial && copy->leases && copy->leases <= l->sem_leases && copy->rate_n &&
                               copy->rate_n <= THR_SEM_MAX && copy->level < THR_SEM_LEVELS
                           ? copy
                           : NULL;
        return kind == THR_KIND_WINDOW && copy->rate_n && copy->rate_n <= l->win_n &&
                       copy->k == 1 && serial == !!(copy->flags & THR_PARAM_SERIALIZE)
                   ? copy
                   : NULL;
}

/* Why lim_params_for(L, SERIAL) failed: the limiter was removed by a reload (-EIDRM), it is
 * (or is not) serialized (-EOPNOTSUPP), or its record is bad. */
__attribute__((cold, noinline)) static int lim_gone_for(const thr_limiter *l, bool serial)
{
        if (atomic_load_explicit(&l->de->state, memory_order_acquire) != THR_DIR_LIVE)
                return -EIDRM;
        return lim_params_for(l, !serial) ? -EOPNOTSUPP : -EBADMSG;
}

static inline int check_key(const void *key, size_t len)
{
        if (!key || len == 0)
                return -EINVAL;
        return len > THR_KEY_MAX ? -ENAMETOOLONG : 0;
}

/* What a call asks: decide now (try), take a place (reserve, and acquire which then sleeps), add
 * to a budget key's balance, or lower a GCRA key's capacity (hold or cap: thr_limiter_hold). */
enum op_mode { OP_TRY, OP_RESERVE, OP_ADD, OP_HOLD };

struct req {
        enum op_mode mode;
        bool locate;        /* find or create the key, deciding nothing (serial.c) */
        bool plain;         /* locate: on a limiter with a try form (a composed call's member),
                             * not the serial calls' kinds (serialized window, semaphore) */
        uint32_t kind_only; /* refuse (-EOPNOTSUPP) a limiter of another kind; 0: any */
        bool stored;        /* the key given is its stored form already (layout.h), read back
                             * out of a slot (thr_budget_add_stored): not digested again */
        bool quiet;         /* not counted in the limiter's counters: the caller counts the
                             * outcome (a budget spend that may queue) */
        uint64_t cost;
        uint64_t max_wait_ns; /* OP_RESERVE */
        bool cap;             /* OP_HOLD: cap the tokens at HOLD_N now (else hold for HOLD_NS) */
        uint64_t hold_n;      /* OP_HOLD, cap: the most tokens left now */
        uint64_t hold_ns;     /* OP_HOLD, hold: nothing admitted for this long from now */
};

/*
 * A decision, whatever the kind: what to publish, and what to tell the caller. Durations are in
 * the limiter's units (1/K ns; a window's are ns), converted once, for the caller, by to_ns().
 */
struct verdict {
        bool ok;            /* admitted (try), or place taken (reserve) */
        bool write;         /* publish NEW_STATE although not ok (GCRA: a fresh key's start) */
        uint64_t new_state; /* what the CAS stores */
        uint64_t stamp;     /* window: the time its new units are logged at */
        uint64_t prev;      /* the state it was decided on (for cancel) */
        uint64_t remaining;
        uint64_t retry_u, reset_u; /* units */
        uint64_t due_ns, wait_ns;  /* OP_RESERVE: when the place is due (arena ns), how far */
        uint64_t limit, k;         /* the record's burst (a window's N) and time scale */
        uint64_t shortfall; /* budget, denied: units to add before it fits (queue included) */
        bool queued;        /* budget: spenders were queued (a try never overtakes them) */
        uint64_t waiters;   /* budget, refused: how many (as of their last serve) */
        bool clipped;       /* OP_HOLD: shortened to the limiter's reach (B*T + max_reserve) */
};

/* Units of 1/K ns -> ns, rounded up (a retry after that many ns is never early). */
static inline uint64_t to_ns(uint64_t k, uint64_t u)
{
        return k <= 1 ? u : u / k + (u % k != 0); /* 0: a record rewritten after its check */
}

/* One call in flight: what the steps share. */
struct op {
        thr_limiter *l;
        const struct thr_params *p; /* GCRA: in the arena; other kinds: &pc (params_pin) */
        uint32_t kind;              /* p's, as checked: dispatch on this, never on p->kind again */
        struct thr_reader *r;
        struct thr_lcount *row; /* r's row of limiter counters */
        struct thr_slot *slot;  /* NULL: the key does not exist (yet) */
        uint64_t meta;          /* the slot's meta word as the lookup matched it */
        uint64_t outer;         /* the section this call found open (a signal handler's), or 0 */
        const void *key;        /* the key's stored form (layout.h): the caller's bytes, or *SK */
        uint32_t len;           /* the key's real length */
        uint64_t hash;
        uint64_t now;          /* units; see op_apply for when it is read */
        bool now_fresh;        /* NOW is op_begin's reading, not used yet: the first decision
                                * on an existing key (op_apply) takes it, not reading again */
        struct thr_params *pc; /* room for a window's or semaphore's record, copied (params_pin):
                                * the caller's, apart from O, so that O never escapes */
        uint8_t *sk;           /* THR_KEY_INLINE bytes of the caller's: a long key's stored form */
};

/* A long key's stored form, computed once per call into SK (out of line: keys up to
 * THR_KEY_INLINE bytes never come here; and O is not passed, so that it never escapes). */
__attribute__((noinline)) static const void *op_key_digest(const thr_arena *a, const void *key,
                                                           uint32_t len, uint8_t *sk)
{
        shm_key_digest(a->hdr->digest_key, key, len, sk);
        return sk;
}

/* The slot a handle remembers, if it is still its key's live slot (*META: its meta word as
 * tested), else NULL. Inside the call's section. */
static inline struct thr_slot *key_slot_last(const thr_limiter *l, struct thr_key_priv *kh,
                                             uint64_t *meta)
{
        uint64_t at = atomic_load_explicit(&kh->at, memory_order_relaxed);
        if (at - 1 >= (uint64_t)l->geo.nshards * l->geo.shard_slots) /* 0 wraps: none */
                return NULL;
        struct thr_slot *s = (struct thr_slot *)shm_at(l->a->map.base, l->geo.slots_off) + (at - 1);
        uint64_t m = atomic_load_explicit(&s->meta, memory_order_acquire);
        if (!shm_slot_matches(s, m, (uint32_t)kh->hash, kh->key, kh->len))
                return NULL;
        *meta = m;
        return s;
}

/* The line of the slot a handle remembers, asked for ahead of key_slot_last (a hint only). */
static inline void key_slot_prefetch(const thr_limiter *l, const struct thr_key_priv *kh)
{
        uint64_t at = atomic_load_explicit(&kh->at, memory_order_relaxed);
        if (at - 1 < (uint64_t)l->geo.nshards * l->geo.shard_slots)
                __builtin_prefetch((struct thr_slot *)shm_at(l->a->map.base, l->geo.slots_off) +
                                   (at - 1));
}

/* Remember S (the key's slot, as a call found or made it) in KH, if it is not already. */
static inline void key_slot_keep(const thr_limiter *l, struct thr_key_priv *kh,
                                 const struct thr_slot *s)
{
        const struct thr_slot *first = shm_at(l->a->map.base, l->geo.slots_off);
        uint64_t at = (uint64_t)(s - first) + 1;
        if (atomic_load_explicit(&kh->at, memory_order_relaxed) != at)
                atomic_store_explicit(&kh->at, at, memory_order_relaxed);
}

/* A call refused after its section was entered: the section left, RC returned. By value:
 * nothing of the caller's escapes to it (the hot path keeps struct op in registers). */
__attribute__((cold, noinline)) static int op_refuse(struct thr_reader *r, uint64_t outer, int rc)
{
        thr_reader_exit(r, outer);
        return rc;
}

static inline uint64_t op_now(const struct op *o);

static inline __attribute__((always_inline)) int op_begin(struct op *o, thr_limiter *l,
                                                          const void *key, size_t len,
                                                          const struct req *rq,
                                                          struct thr_key_priv *kh)
{
        int rc = kh ? 0 : check_key(key, len); /* a handle's key was checked by thr_key_init */
        if (rc < 0 || !l)
                return rc < 0 ? rc : -EINVAL;
        o->l = l;
        /* a key handle: its stored form and hash as made once, and the line of the slot it
         * remembers asked for now (it needs nothing of the section: the geometry is this
         * process's copy), so that it travels while the section is entered, the record checked
         * and the clock read */
        if (kh) {
                o->len = kh->len;
                o->key = kh->key;
                o->hash = kh->hash;
                key_slot_prefetch(l, kh);
        }
        o->r = thr_reader_get_row(l->a, &o->row, &rc);
        if (!o->r)
                return rc;
        /* the parameter record is read inside the section: the daemon reuses a record it
         * replaced only after a grace period (shm/arena_build.c, recycling) */
        o->outer = thr_reader_enter(l->a, o->r);
        THR_HOOK(THR_HOOK_SECTION_ENTERED, o->r);
        o->p = lim_params_for(l, (rq->locate && !rq->plain));
        if (!o->p)
                return op_refuse(o->r, o->outer, lim_gone_for(l, (rq->locate && !rq->plain)));
        o->kind = o->p->kind;
        if (rq->kind_only && o->kind != rq->kind_only)
                return op_refuse(o->r, o->outer, -EOPNOTSUPP);
        if (__builtin_expect(o->kind != THR_KIND_GCRA, 0)) {
                if (o->kind == THR_KIND_BUDGET && rq->mode == OP_RESERVE)
                        return op_refuse(o->r, o->outer,
                                         -EOPNOTSUPP); /* no time makes a budget fit */
                o->p = params_pin(l, o->p, o->kind, (rq->locate && !rq->plain), o->pc);
                if (!o->p)
                        return op_refuse(o->r, o->outer, -EBADMSG);
        }
        if (rq->cost > o->p->burst)
                return op_refuse(o->r, o->outer, -ERANGE);
        /* a handle's call: the clock, then its look, which runs while the reading completes
         * (the top of this file); its first decision on an existing key takes this reading
         * (op_apply). A plain call reads it in op_apply, after the probe */
        o->now_fresh = kh != NULL;
        if (o->now_fresh) {
                o->now = op_now(o);
                THR_HOOK(THR_HOOK_CLOCK_READ, o);
        }
        if (kh) {
                o->slot = key_slot_last(l, kh, &o->meta);
                if (__builtin_expect(o->slot != NULL, 1))
                        return 0;
        } else {
                o->len = (uint32_t)len;
                o->key = __builtin_expect(len > THR_KEY_INLINE, 0) && !rq->stored
                             ? op_key_digest(l->a, key, o->len, o->sk)
                             : key;
                o->hash = shm_stored_hash(l->a->hdr->hash_key, o->key, o->len);
        }
        o->slot = shm_table_lookup_meta(l->a->map.base, &l->geo, o->hash, o->key, o->len, &o->meta);
        return 0;
}

/* Whether the slot is still the one the lookup matched (not retired, not reused). */
static inline bool op_same_slot(const struct op *o)
{
        return atomic_load_explicit(&o->slot->meta, memory_order_acquire) == o->meta;
}

__attribute__((noinline)) uint64_t thr_lim_clock_cheap(const thr_arena *a, uint32_t flags)
{
        uint32_t how = THR_PARAM_CLOCK(flags);
        if (how == THR_CLOCK_READ_TSC && a->tsc.mult)
                return shm_now_tsc(a->hdr, &a->tsc);
        if (how == THR_CLOCK_READ_COARSE)
                return shm_now_coarse(a->hdr);
        return shm_now_ns(a->hdr);
}

/* A GCRA try denied by more than this (ns) is not decided again on a second clock reading. */
#define THR_REREAD_NS 1000u

/* The time a decision reads, in the limiter's units: its clock (clock.h), precise unless its
 * parameters chose the coarse or the TSC clock. */
static inline uint64_t op_now(const struct op *o)
{
        return thr_lim_clock(o->l->a, o->p->flags) * o->p->k;
}

/* A window key's log (the aux storage of slot S). */
static inline _Atomic uint64_t *op_log(const struct op *o, const struct thr_slot *s)
{
        return shm_window_log(shm_slot_aux(o->l->a->map.base, &o->l->geo, s));
}

/* ---------------------------------------------------------------- the kinds' decisions */

/* GCRA: when a request that moves the TAT to NEW_TAT is due (when new_tat - now fits in B*T). */
static inline uint64_t due_units(const struct thr_params *p, uint64_t new_tat, uint64_t now)
{
        return new_tat - now > p->bt_units ? new_tat - p->bt_units : now;
}

/*
 * OP_HOLD on a GCRA key (thr_limiter_hold(3)): the TAT raised to a target, never lowered, so it
 * only takes capacity away. A hold of D: target now + D + (B-1)*T, the least TAT at which nothing
 * conforms before now + D and one request of cost 1 conforms at now + D (new_tat - t <= B*T with
 * new_tat = TAT + T). A cap of N < B: target now + (B-N)*T, N tokens left now. The target reaches
 * at most B*T + max_reserve past now, as far as a reservation may push a TAT (shm_params_range_ok
 * keeps that inside 64 bits): a longer hold is shortened to it (clipped). It says what is left
 * now and when a request of cost 1 fits; write, whether the TAT moves. Out of line, by value:
 * nothing of the caller's escapes to it (the hot path keeps RQ and V in registers).
 */
struct hold {
        bool write, clipped;
        uint64_t new_state, remaining, retry_u, reset_u;
};

static __attribute__((noinline)) struct hold gcra_hold(const struct thr_params *p, uint64_t state,
                                                       uint64_t now, bool cap, uint64_t n,
                                                       uint64_t d_ns)
{
        uint64_t tat = state == THR_TAT_FRESH ? now + (p->burst - p->initial) * p->t_units : state;
        __uint128_t reach = 0;
        if (!cap)
                reach = (__uint128_t)d_ns * p->k + (__uint128_t)(p->burst - 1) * p->t_units;
        else if (n < p->burst)
                reach = (__uint128_t)(p->burst - n) * p->t_units;
        uint64_t most = p->bt_units + p->max_reserve_units; /* < 2^64: shm_params_range_ok */
        struct hold h = {0};
        if (reach > most) {
                reach = most;
                h.clipped = true;
        }
        uint64_t target = now + (uint64_t)reach;
        h.new_state = tat > target ? tat : target;
        h.write = reach && h.new_state > tat; /* FRESH is TAT at its start: not raised */
        struct shm_gcra g; /* what is left now, and when a request of cost 1 fits */
        shm_gcra_step(p, h.new_state, now, 0, &g);
        h.remaining = g.remaining;
        h.reset_u = g.reset_units;
        shm_gcra_step(p, h.new_state, now, 1, &g);
        h.retry_u = g.retry_units;
        return h;
}

static inline __attribute__((always_inline)) void gcra_decide(const struct thr_params *p,
                                                              uint64_t state, uint64_t now,
                                                              const struct req *rq,
                                                              struct verdict *v)
{
        if (rq->mode == OP_HOLD) { /* a constant in every call: folded away for the others */
                struct hold h = gcra_hold(p, state, now, rq->cap, rq->hold_n, rq->hold_ns);
                *v = (struct verdict){.ok = true,
                                      .write = h.write,
                                      .clipped = h.clipped,
                                      .prev = state,
                                      .new_state = h.new_state,
                                      .remaining = h.remaining,
                                      .retry_u = h.retry_u,
                                      .reset_u = h.reset_u};
                return;
        }
        struct shm_gcra g;
        shm_gcra_step(p, state, now, rq->cost, &g);
        if (rq->mode == OP_TRY) {
                v->ok = g.admitted;
                v->new_state = g.new_tat;
                v->write = false;
                /* a denied request on a key still FRESH records its start: it refills from there */
                if (__builtin_expect(!g.admitted && state == THR_TAT_FRESH, 0)) {
                        v->write = true;
                        v->new_state = now + (p->burst - p->initial) * p->t_units;
                }
                v->remaining = g.remaining;
                v->retry_u = g.retry_units;
                v->reset_u = g.reset_units;
                return;
        }
        v->prev = state;
        uint64_t due = due_units(p, g.new_tat, now);
        v->wait_ns = shm_units_to_ns(p, due - now);
        v->due_ns = shm_units_to_ns(p, due);
        v->ok = due - now <= p->max_reserve_units && v->wait_ns <= rq->max_wait_ns;
        v->write = false;
        v->new_state = g.new_tat;
        /* as of the due time */
        uint64_t reset = g.new_tat - due;
        v->remaining =
            reset >= p->bt_units ? 0 : (p->bt_units - reset) / (p->t_units ? p->t_units : 1);
        v->retry_u = 0;
        v->reset_u = reset;
}

/* Only W escapes to the (out of line) window code: RQ and V stay in registers on GCRA's path. */
static inline __attribute__((always_inline)) void
window_decide(const struct thr_params *p, const _Atomic uint64_t *e, uint64_t state, uint64_t now,
              const struct req *rq, struct verdict *v)
{
        struct shm_win w;
        shm_window_decide(p, e, state, now, rq->cost, rq->mode == OP_RESERVE, rq->max_wait_ns, &w);
        v->ok = w.ok;
        v->write = false;
        v->prev = state;
        v->new_state = w.new_state;
        v->stamp = w.stamp;
        v->remaining = w.remaining;
        v->retry_u = rq->mode == OP_TRY ? w.retry_ns : 0;
        v->reset_u = w.reset_ns;
        v->due_ns = w.stamp;
        v->wait_ns = w.stamp - now;
}

/* A budget's decision (budget.h): a spend fits the balance, an add fits under the maximum; with
 * spenders queued, neither is decided without the lock (a spend is refused: FIFO). Out of line,
 * and only B escapes to it: RQ and V stay in registers on GCRA's path. */
struct bud {
        bool ok, queued;
        uint64_t new_state, remaining, shortfall, waiters;
};

static __attribute__((noinline)) void budget_step(const struct thr_params *p,
                                                  const struct thr_budget *h, uint64_t state,
                                                  uint64_t cost, bool add, struct bud *b)
{
        uint64_t bal = shm_budget_balance(state, p->initial);
        uint64_t base = state == THR_TAT_FRESH ? p->initial : state;
        *b = (struct bud){.queued = shm_budget_queued(state), .new_state = state, .remaining = bal};
        if (add) {
                b->ok = !b->queued && cost <= THR_BUDGET_MAX - bal;
                if (b->ok) {
                        b->new_state = base + cost;
                        b->remaining = bal + cost;
                }
                return;
        }
        b->ok = !b->queued && bal >= cost;
        if (b->ok) {
                b->new_state = base - cost;
                b->remaining = bal - cost;
                return;
        }
        /* what those queued need first, and how many they are (as of their last serve) */
        uint64_t ahead = b->queued && h ? atomic_load_explicit(&h->need, memory_order_relaxed) : 0;
        b->waiters = b->queued && h ? atomic_load_explicit(&h->waiters, memory_order_relaxed) : 0;
        uint64_t want = ahead > UINT64_MAX - cost ? UINT64_MAX : ahead + cost;
        b->shortfall = want > bal ? want - bal : 0;
}

static inline __attribute__((always_inline)) void
budget_decide(const struct op *o, const struct thr_slot *s, uint64_t state, const struct req *rq,
              struct verdict *v)
{
        struct bud b;
        budget_step(o->p, s ? shm_slot_aux(o->l->a->map.base, &o->l->geo, s) : NULL, state,
                    rq->cost, rq->mode == OP_ADD, &b);
        v->ok = b.ok;
        v->write = false;
        v->prev = state;
        v->new_state = b.new_state;
        v->remaining = b.remaining;
        v->retry_u = b.ok || rq->mode == OP_ADD ? 0 : UINT64_MAX; /* only an add makes room */
        v->reset_u = 0;
        v->shortfall = b.shortfall;
        v->waiters = b.waiters;
        v->queued = b.queued;
}

/* KIND's decision for RQ on STATE of slot S at O->now: pure, it writes nothing. */
static inline __attribute__((always_inline)) void decide(const struct op *o, uint32_t kind,
                                                         const struct thr_slot *s, uint64_t state,
                                                         const struct req *rq, struct verdict *v)
{
        if (__builtin_expect(kind == THR_KIND_GCRA, 1))
                gcra_decide(o->p, state, o->now, rq, v);
        else if (kind == THR_KIND_BUDGET)
                budget_decide(o, s, state, rq, v);
        else
                window_decide(o->p, op_log(o, s), state, o->now, rq, v);
}

/*
 * What must be in place before the CAS that publishes V on slot S: a window's logged units. A
 * window's state only grows, so a state already moved past V->prev means the CAS will fail: the
 * units are not staged then (staged, they would raise words of units others have logged since,
 * a phantom: window.h). Returns false in that case.
 */
static inline __attribute__((always_inline)) bool stage(const struct op *o, uint32_t kind,
                                                        struct thr_slot *s, const struct verdict *v,
                                                        const struct req *rq)
{
        if (__builtin_expect(kind == THR_KIND_WINDOW, 0) && v->ok) {
                if (atomic_load_explicit(&s->state, memory_order_relaxed) != v->prev)
                        return false;
                shm_window_stage(o->p, op_log(o, s), v->prev, rq->cost, v->stamp);
        }
        return true;
}

/*
 * The CAS loop on an existing key: decide on its state, publish with one CAS from exactly the
 * state decided on (a window first logs its units: window.h), and decide again on the newer state
 * if another process got there first. A peek or a denial writes nothing (but a GCRA key still
 * FRESH, see gcra_decide).
 *
 * The clock is read before the state, so nothing slow sits between the load and the CAS (under
 * contention a clock call there lets the other core take the line every time): the first time
 * through a handle's call, op_begin's reading (before its look: see the top of this file), else a
 * new one. An admission
 * decided with that earlier clock is sound: with a smaller now, it is no easier to admit, so
 * whatever admits then admits later too. A denial is only reported on a clock read after the
 * state it judges: another process may have stored a state from a clock reading later than ours,
 * and judging it with ours would deny by the few ns between the two readings.
 * Returns 0 (decided: V->ok says how), -EAGAIN (a reservation due too late), or OP_RETIRED (the
 * slot was evicted or reused meanwhile: the caller looks the key up again). After a failed CAS,
 * before deciding again on the new value, the slot's identity is checked (the first decision
 * relies on the read-side section alone).
 */
#define OP_RETIRED 1
#define OP_MARKED  3 /* a composed call's mark (compose.h): op_slow settles it, then again */
#define OP_APPLIED 2 /* op_insert created the key and decided its first request */
#define OP_SPINS   8 /* evictions under one call before a full table is assumed */

/*
 * A denial decided on more than the state word (a window's log) is judged on a consistent view
 * only: the loads before are ordered before this one, and a state moved on meanwhile (log words
 * raised for its new units) is decided on again. Returns 0 (unchanged), 1 (moved: *OLD is the new
 * state) or -1 (the slot was retired or reused). Out of line: GCRA's denials never come here.
 */
static __attribute__((noinline)) int state_moved(struct thr_slot *s, uint64_t meta, uint64_t *old)
{
        atomic_thread_fence(memory_order_acquire);
        uint64_t cur = atomic_load_explicit(&s->state, memory_order_acquire);
        if (cur == *old)
                return 0;
        if (atomic_load_explicit(&s->meta, memory_order_acquire) != meta)
                return -1; /* as op_same_slot */
        *old = cur;
        return 1;
}

/*
 * The state OLD of slot S is a mark or the table's (retired, reclaimed): a composed call's mark is
 * settled (compose.h: at most a few microseconds for an undecided one) and the state read again.
 * Returns the state to decide on with rc 0, or rc OP_RETIRED, or -EBADMSG (a mark no journal
 * names). By value: nothing of the caller's escapes to it (the hot path keeps its registers).
 */
struct unmarked {
        uint64_t state;
        int rc;
};

static __attribute__((noinline)) struct unmarked op_unmark(const struct shm_map *m,
                                                           struct thr_slot *s, uint64_t old)
{
        while (shm_is_mark(old)) {
                int rc = shm_mark_resolve(m, s, old);
                if (rc < 0)
                        return (struct unmarked){old, rc};
                old = atomic_load_explicit(&s->state, memory_order_acquire);
        }
        return (struct unmarked){old, old == THR_TAT_DEAD || old == THR_TAT_FREE ? OP_RETIRED : 0};
}

static inline __attribute__((always_inline)) int op_apply(struct op *o, const struct req *rq,
                                                          struct verdict *v)
{
        if (!o->now_fresh) {
                o->now = op_now(o);
                THR_HOOK(THR_HOOK_CLOCK_READ, o);
        }
        o->now_fresh = false;
        struct thr_slot *s = o->slot;
        uint32_t kind = o->kind;
        uint64_t old = atomic_load_explicit(&s->state, memory_order_acquire);
        bool clock_after_state = false;
        if (rq->locate) { /* found, nothing decided (a constant: folded away for the others) */
                *v = (struct verdict){.ok = true};
                return old == THR_TAT_DEAD ? OP_RETIRED : 0;
        }
        for (;;) {
                /* one compare on the hot path: FRESH passes, the rest is op_slow's */
                if (__builtin_expect(old - THR_TAT_MARK_MIN < THR_TAT_FRESH - THR_TAT_MARK_MIN, 0))
                        return old == THR_TAT_DEAD ? OP_RETIRED : OP_MARKED;
                decide(o, kind, s, old, rq, v);
                if (rq->mode == OP_HOLD && !v->write)
                        return 0; /* the key is held that far already: nothing to write */
                if (__builtin_expect(!v->ok, 0)) {
                        if (kind != THR_KIND_GCRA) {
                                int moved = state_moved(s, o->meta, &old);
                                if (moved < 0)
                                        return OP_RETIRED;
                                if (moved) {
                                        clock_after_state = false;
                                        continue;
                                }
                        }
                        /* A denial on a clock read before the state: read it again, the state may
                         * hold others' admissions made after our reading. Not for a GCRA try whose
                         * deficit exceeds THR_REREAD_NS: a second reading, nanoseconds later (a
                         * handle's call: later by its look too, a few hundred at a cold line),
                         * can only fix it if more than that passed between the two reads, and
                         * then the stale reading is a clock lagging by the delay, which never
                         * admits more (shm/clock.h, bound (1)): the denial stands. The cost is
                         * over-denial only, by at most the time the look took. */
                        if (!clock_after_state &&
                            !(kind == THR_KIND_GCRA && v->retry_u > THR_REREAD_NS * o->p->k)) {
                                o->now = op_now(o);
                                clock_after_state = true;
                                continue;
                        }
                }
                if (!v->ok && !v->write)
                        return rq->mode == OP_RESERVE ? -EAGAIN : 0;
                if (rq->cost == 0 && rq->mode != OP_HOLD)
                        return 0; /* a peek */
                if (__builtin_expect(!stage(o, kind, s, v, rq), 0)) {
                        old = atomic_load_explicit(&s->state, memory_order_acquire);
                } else {
                        THR_HOOK(THR_HOOK_APPLY_BEFORE_CAS, s);
                        if (atomic_compare_exchange_weak_explicit(&s->state, &old, v->new_state,
                                                                  memory_order_acq_rel,
                                                                  memory_order_acquire))
                                return 0;
                }
                if (!op_same_slot(o)) /* retired or reused: never re-decide on another key */
                        return OP_RETIRED;
                clock_after_state = false; /* OLD is newer now: a denial needs a newer clock */
                thr_count(&o->r->cas_retries);
        }
}

/* ---------------------------------------------------------------- new keys */

/* A new key's first request, decided in the step that publishes it (shm_insert.first). */
struct first {
        const struct op *o;
        const struct req *rq;
        struct verdict *v;
};

static uint64_t first_decide(void *ctx, struct thr_slot *s, uint64_t start)
{
        struct first *f = ctx;
        if (f->rq->locate)
                return start; /* found or created, nothing decided */
        decide(f->o, f->o->kind, s, start, f->rq, f->v);
        if (!f->v->ok)
                return start; /* recorded at its start: a GCRA key with fewer than B tokens */
        stage(f->o, f->o->kind, s, f->v, f->rq); /* unpublished: nobody moves its state */
        return f->v->new_state;
}

/*
 * Insert the key (or find it, created meanwhile) under its shard's insert lock. The read-side
 * section is left while waiting for the lock, so a holder that was stopped or is slow never makes
 * this thread block grace periods; it is entered again before the probe under the lock. Nothing
 * found before is used after: the parameter record is read again too. The new key's first request
 * is decided (and, admitted, charged) as it is published. A lock held past insert_wait by a live
 * holder, or by this very thread, counts as a full table: -ENOSPC, the on_full outcome.
 *
 * The common case, a free lock, is one CAS (shm_shard_lock_free) and nothing else: the section is
 * then never left, and a GCRA limiter whose record is the one fresh_decide read keeps the clock
 * reading fresh_decide made, instead of a second one (a vDSO read, the dearest step of a new key
 * after its cache misses: measured, bench/results/2026-12-04/issue12_churn.txt). That reading is
 * older by the instructions in between, which is what a preemption between a reading and its use
 * does anyway: every decision already tolerates a clock read a little before it is used (another
 * process may have read a later time and moved the state past it; op_apply's clock_after_state).
 * Only after a wait is the clock read again (then the reading could be as old as insert_wait).
 * Returns OP_APPLIED (created; V decided), 0 (it existed: O->slot), or -errno.
 */
static int op_insert(struct op *o, const struct req *rq, struct verdict *v, bool *waited)
{
        thr_limiter *l = o->l;
        struct shm_probe pr;
        shm_probe_init(l->a->map.base, &l->geo, o->hash, &pr);
        struct thr_reader *rec0 = shm_at(l->a->map.base, l->a->map.g.reader_off);
        uint64_t me = shm_lock_client((uint32_t)(o->r - rec0),
                                      atomic_load_explicit(&o->r->owner, memory_order_relaxed));
        /* one call waits at most insert_wait in all: a retry (the key evicted under us) only tries
         */
        uint64_t wait = *waited ? 0 : o->p->lock_wait_ns ? o->p->lock_wait_ns : THR_LOCK_WAIT_NS;
        *waited = true;
        const struct thr_params *p0 = o->p;
        int rc = 0;
        bool at_once = shm_shard_lock_free(&pr, me);
        if (!at_once) {
                if (!o->outer) /* a nested call cannot leave the section it is in */
                        thr_reader_exit(o->r, 0);
                rc = shm_shard_lock(&l->a->map, &pr, me, wait);
                if (!o->outer)
                        thr_reader_enter(l->a, o->r);
        }
        if (rc == -ETIMEDOUT || rc == -EDEADLK)
                return -ENOSPC;
        if (rc < 0)
                return rc;
        o->p = lim_params_for(l, (rq->locate && !rq->plain));
        if (o->p && o->p->kind != o->kind) /* rewritten since op_begin: not a record to use */
                o->p = NULL;
        else if (o->p && o->kind != THR_KIND_GCRA)
                o->p = params_pin(l, o->p, o->kind, (rq->locate && !rq->plain), o->pc);
        if (!o->p || rq->cost > o->p->burst) {
                shm_shard_unlock(&pr, me);
                return o->p ? -ERANGE : lim_gone_for(l, (rq->locate && !rq->plain));
        }
        const struct thr_params *p = o->p;
        if (!at_once || p != p0 || o->kind != THR_KIND_GCRA) /* else fresh_decide's reading */
                o->now = op_now(o);
        /* the table code dispatches on its record's kind (shm_kind_fresh, evict_least's debts): a
         * GCRA record is the arena's, which a client may rewrite meanwhile, so it gets a copy
         * whose kind is the checked one (the others' P is a pinned copy already: params_pin) */
        const struct thr_params *ip = p;
        if (o->kind == THR_KIND_GCRA) {
                memcpy(o->pc, p, sizeof(*o->pc));
                atomic_signal_fence(memory_order_seq_cst); /* one copy, then only the copy */
                o->pc->kind = THR_KIND_GCRA;
                ip = o->pc;
        }
        struct first f = {o, rq, v};
        struct shm_insert ins = {.p = ip,
                                 .start_tat = o->now + (p->burst - p->initial) * p->t_units,
                                 .now = o->now,
                                 .on_full = p->on_full,
                                 .geo = &l->geo,
                                 .first = first_decide,
                                 .ctx = &f};
        bool created;
        rc = shm_table_insert_locked(l->a->map.base, l->tb, &pr, o->key, o->len, &ins, &o->slot,
                                     &created);
        shm_shard_unlock(&pr, me);
        if (rc < 0)
                return rc;
        /* inside the section again: the slot cannot be reused under us, only retired */
        o->meta = atomic_load_explicit(&o->slot->meta, memory_order_acquire);
        if (!created)
                return 0;
        thr_count(&o->r->inserts);
        THR_HOOK(THR_HOOK_KEY_INSERTED, o->slot);
        return OP_APPLIED;
}

/*
 * The decision a request would get on a key that does not exist yet (nothing looked at but the
 * limiter): so a peek inserts nothing, nor does a request that would be refused anyway.
 */
static void fresh_decide(struct op *o, const struct req *rq, struct verdict *v)
{
        /* a reading taken after the probe that found the key absent, never op_begin's: a key
         * evicted between that reading and the probe would start afresh as of a time when its
         * evicted history had it drained (its burst taken twice over) */
        o->now = op_now(o);
        o->now_fresh = false;
        if (o->kind == THR_KIND_GCRA) {
                gcra_decide(o->p, THR_TAT_FRESH, o->now, rq, v);
                return;
        }
        if (o->kind == THR_KIND_BUDGET) {
                budget_decide(o, NULL, o->p->initial, rq, v);
                return;
        }
        /* an empty log: everything up to N fits now */
        *v = (struct verdict){.ok = true,
                              .new_state = rq->cost,
                              .stamp = o->now,
                              .remaining = o->p->rate_n - rq->cost,
                              .reset_u = rq->cost ? o->p->period_ns : 0,
                              .due_ns = o->now};
}

/*
 * The table is full (or its lock held past insert_wait) and the limiter's on_full policy did not
 * make room: allow keeps the fresh-key decision, unrecorded (counted in allowed_full); deny (and
 * evict with nothing evictable) denies a try with a retry after one emission interval (a window:
 * W / N), and refuses a reservation with -ENOSPC.
 */
static int op_full(struct op *o, const struct req *rq, struct verdict *v)
{
        if (rq->mode == OP_HOLD)
                return -ENOSPC; /* a hold not recorded holds nothing: never reported applied */
        if (o->p->on_full == THR_FULL_ALLOW) {
                if (v->ok) {
                        struct shm_probe pr;
                        shm_probe_init(o->l->a->map.base, &o->l->geo, o->hash, &pr);
                        atomic_fetch_add_explicit(&pr.shard->allowed_full, 1, memory_order_relaxed);
                }
                o->slot = NULL; /* nothing recorded: a reservation cannot be given back */
                return 0;
        }
        if (rq->mode != OP_TRY || o->kind == THR_KIND_BUDGET || o->kind == THR_KIND_BREAKER)
                return -ENOSPC; /* a balance is never decided unrecorded; a breaker's caller
                                 * applies its own on_full (breaker.c) */
        uint64_t gap = o->kind == THR_KIND_GCRA ? o->p->t_units
                       : o->kind == THR_KIND_BUDGET
                           ? UINT64_MAX
                           : (o->p->period_ns + o->p->rate_n - 1) / o->p->rate_n;
        *v = (struct verdict){.ok = false, .retry_u = gap};
        return 0;
}

/* A key that is not there: decide fresh, insert (deciding as it publishes), or apply on_full. */
static int op_new(struct op *o, const struct req *rq, struct verdict *v, int spins, bool *waited)
{
        fresh_decide(o, rq, v);
        if (rq->mode == OP_HOLD && !v->write)
                return 0; /* a cap above what a new key starts with: nothing to remember */
        if (rq->cost == 0 && !rq->locate && rq->mode != OP_HOLD)
                return 0; /* a peek inserts nothing */
        if (!v->ok &&
            (rq->mode == OP_RESERVE || o->kind != THR_KIND_GCRA || o->p->initial == o->p->burst))
                return rq->mode == OP_RESERVE ? -EAGAIN : 0; /* nothing to remember about it */
        int rc = spins < OP_SPINS ? op_insert(o, rq, v, waited) : -ENOSPC;
        if (rc == -ENOSPC)
                return op_full(o, rq, v);
        if (rc == OP_APPLIED)
                return v->ok || rq->mode == OP_TRY ? 0 : op_apply(o, rq, v); /* at a floor */
        return rc < 0 ? rc : op_apply(o, rq, v); /* created meanwhile by someone else */
}

/*
 * Everything but an existing key decided at once: a new key, or a slot retired under us (look the
 * key up again; the same slot with its meta unchanged means its evictor died between its two
 * steps: the insert path finishes the eviction). Out of line, so the hot path stays short.
 */
static __attribute__((noinline)) int op_slow(struct op *o, const struct req *rq, struct verdict *v,
                                             int rc)
{
        bool waited = false;
        for (int spins = 0;; spins++) {
                if (rc == OP_MARKED) {
                        uint64_t st = atomic_load_explicit(&o->slot->state, memory_order_acquire);
                        struct unmarked u = op_unmark(&o->l->a->map, o->slot, st);
                        if (u.rc < 0)
                                return u.rc;
                        rc = u.rc;
                }
                if (rc == OP_RETIRED) {
                        uint64_t old_meta = o->meta;
                        struct thr_slot *old = o->slot;
                        o->slot = shm_table_lookup_meta(o->l->a->map.base, &o->l->geo, o->hash,
                                                        o->key, o->len, &o->meta);
                        if (o->slot == old && o->meta == old_meta)
                                o->slot = NULL;
                }
                rc = o->slot ? op_apply(o, rq, v) : op_new(o, rq, v, spins, &waited);
                if (rc != OP_RETIRED && rc != OP_MARKED)
                        return rc;
        }
}

/*
 * The one decision core every public call wraps: look the key up, decide on it (inserting it if
 * new), retry on a slot retired under us. Inside one read-side section. Returns 0 with V filled
 * (V->ok: admitted or place taken), -EAGAIN (a place due too late), or -errno; with RP, what a
 * reservation handle needs.
 */
static inline __attribute__((always_inline)) int op_run(thr_limiter *l, const void *key, size_t len,
                                                        const struct req *rq, struct verdict *v,
                                                        struct thr_reservation_priv *rp,
                                                        struct thr_key_priv *kh)
{
        struct thr_params pc;
        uint8_t sk[THR_KEY_INLINE];
        struct op o;
        o.pc = &pc;
        o.sk = sk;
        o.slot = NULL; /* op_begin sets it; said here for gcc's -Wmaybe-uninitialized */
        int rc = op_begin(&o, l, key, len, rq, kh);
        if (rc < 0)
                return rc;
        rc = OP_RETIRED;
        if (__builtin_expect(o.slot != NULL, 1))
                rc = op_apply(&o, rq, v);
        if (__builtin_expect(rc == OP_RETIRED || rc == OP_MARKED || !o.slot, 0)) {
                /* copies: only this path puts them in memory, the hot one keeps them in registers
                 */
                struct op os = o;
                struct req rqs = *rq;
                struct verdict vs = *v;
                /* the slow path probes again and may insert: a key handle only if its bytes and
                 * length still give its hash (one rewritten there would charge another key, or
                 * put its own in a second slot, off its home and under a wrong tag). Until here
                 * its hash was only used to read: a slot is taken only if it holds the handle's
                 * bytes and tag, and the one live slot of those bytes is the right one to take */
                if (kh && shm_stored_hash(o.l->a->hdr->hash_key, o.key, o.len) != o.hash)
                        rc = -EINVAL;
                else
                        rc = op_slow(&os, &rqs, &vs, o.slot ? rc : 0);
                o = os;
                *v = vs;
        }
        /* the limiter's counters in this thread's row (layout.h): not for a locate (the calls
         * built on it count their own outcome, or none) nor a budget's add; RQ is a constant in
         * every public call, so the tests fold away */
        struct thr_lcount *lc = o.row + o.l->dir_idx;
        bool counted = !rq->locate && !rq->quiet && rq->mode != OP_ADD && rq->mode != OP_HOLD;
        if (rc == -EAGAIN && counted)
                thr_count(&lc->denied); /* a place due too late: refused */
        if (rc == 0) {
                if (rq->mode != OP_HOLD)
                        thr_count(v->ok ? &o.r->admitted : &o.r->denied);
                if (counted)
                        thr_count(v->ok ? &lc->admitted : &lc->denied);
                if (counted && rq->mode == OP_RESERVE && v->ok && v->wait_ns)
                        thr_count(&lc->waited);
                v->limit = o.p->burst; /* inside the section: the record may be reused after */
                v->k = o.p->k;
                if (kh && o.slot)
                        key_slot_keep(o.l, kh, o.slot);
                if (rp)
                        *rp = (struct thr_reservation_priv){.slot = o.slot,
                                                            .lim = o.l,
                                                            .prev = v->prev,
                                                            .state = v->new_state,
                                                            .gen = (thr_forkpage->gen << 32) |
                                                                   THR_META_GEN(o.meta),
                                                            .kind = o.kind,
                                                            .burst = o.p->burst,
                                                            .period_ns = o.p->period_ns};
        }
        thr_reader_exit(o.r, o.outer);
        return rc;
}

/*
 * thr_op_locate - find KEY's slot in L, creating it (charged nothing) if new; for the serial calls,
 * on serialized limiters only. Fills OUT's slot, lim and gen (fork generation << 32 | the slot's
 * generation as found). Returns 0, or -ENOSPC (no slot: the table is full, whatever on_full
 * says), or the errors of try.
 */
static int op_locate(thr_limiter *l, const void *key, size_t len, const struct req *rq,
                     struct thr_reservation_priv *out)
{
        struct verdict v = {0};
        *out = (struct thr_reservation_priv){0};
        int rc = op_run(l, key, len, rq, &v, out, NULL);
        if (rc == 0 && !out->slot)
                rc = -ENOSPC;
        return rc;
}

int thr_op_locate(thr_limiter *l, const void *key, size_t len, struct thr_reservation_priv *out)
{
        const struct req rq = {.mode = OP_TRY, .locate = true};
        return op_locate(l, key, len, &rq, out);
}

/* Declared in client_internal.h. */
int thr_op_locate_stored(thr_limiter *l, const void *key, size_t len,
                         struct thr_reservation_priv *out)
{
        const struct req rq = {.mode = OP_TRY, .locate = true, .stored = true};
        return op_locate(l, key, len, &rq, out);
}

/* Declared in client_internal.h. */
int thr_op_locate_plain(thr_limiter *l, const void *key, size_t len,
                        struct thr_reservation_priv *out)
{
        const struct req rq = {.mode = OP_TRY, .locate = true, .plain = true};
        return op_locate(l, key, len, &rq, out);
}

/* Declared in client_internal.h. */
int thr_op_find(thr_limiter *l, const void *key, size_t len, struct thr_reservation_priv *out)
{
        const struct req rq = {.mode = OP_TRY, .locate = true};
        struct thr_params pc;
        uint8_t sk[THR_KEY_INLINE];
        struct op o = {.pc = &pc, .sk = sk}; /* not the hot path: zeroed (-Wmaybe-uninitialized) */
        *out = (struct thr_reservation_priv){0};
        int rc = op_begin(&o, l, key, len, &rq, NULL);
        if (rc < 0)
                return rc;
        if (o.slot)
                *out = (struct thr_reservation_priv){.slot = o.slot,
                                                     .lim = o.l,
                                                     .gen = (thr_forkpage->gen << 32) |
                                                            THR_META_GEN(o.meta),
                                                     .kind = o.kind};
        thr_reader_exit(o.r, o.outer);
        return o.slot ? 0 : -ENOENT;
}

/* A semaphore limiter's record, even retired (a lease taken before a reload removed the
 * limiter is still released on its table), copied to COPY and checked there (params_pin: its
 * lease count indexes records), or NULL if it is not one. */
const struct thr_params *thr_sem_record(const thr_limiter *l, struct thr_params *copy)
{
        uint64_t off = atomic_load_explicit(&l->de->params_off, memory_order_acquire);
        if (off - l->params_lo > l->params_span || off % _Alignof(struct thr_params))
                return NULL;
        return params_pin(l, shm_at(l->a->map.base, off), THR_KIND_SEMAPHORE, true, copy);
}

/* A budget limiter's record, copied to COPY and checked there (params_pin), or NULL. */
const struct thr_params *thr_budget_record(const thr_limiter *l, struct thr_params *copy)
{
        uint64_t off = atomic_load_explicit(&l->de->params_off, memory_order_acquire);
        if (off - l->params_lo > l->params_span || off % _Alignof(struct thr_params))
                return NULL;
        return params_pin(l, shm_at(l->a->map.base, off), THR_KIND_BUDGET, true, copy);
}

/* A breaker limiter's record, even retired (a ticket handed out before a reload removed the
 * limiter is still reported on its table), copied to COPY and checked there, or NULL. */
const struct thr_params *thr_breaker_record(const thr_limiter *l, struct thr_params *copy)
{
        uint64_t off = atomic_load_explicit(&l->de->params_off, memory_order_acquire);
        if (off - l->params_lo > l->params_span || off % _Alignof(struct thr_params))
                return NULL;
        return params_pin(l, shm_at(l->a->map.base, off), THR_KIND_BREAKER, true, copy);
}

/* A serialized limiter's record, even retired (a hold taken before a reload removed the limiter
 * still ends on its table), copied to COPY and checked there (params_pin: its N indexes the
 * log), or NULL if it is not one. */
const struct thr_params *thr_lim_record(const thr_limiter *l, struct thr_params *copy)
{
        uint64_t off = atomic_load_explicit(&l->de->params_off, memory_order_acquire);
        if (off - l->params_lo > l->params_span || off % _Alignof(struct thr_params))
                return NULL;
        return params_pin(l, shm_at(l->a->map.base, off), THR_KIND_WINDOW, true, copy);
}

/* Declared in client_internal.h. */
int thr_op_budget(thr_limiter *l, const void *key, size_t len, uint64_t amount, unsigned how,
                  struct thr_budget_step *out)
{
        const struct req rq = {.mode = how & THR_OP_ADD ? OP_ADD : OP_TRY,
                               .kind_only = THR_KIND_BUDGET,
                               .stored = how & THR_OP_STORED,
                               .quiet = how & THR_OP_QUIET,
                               .cost = amount};
        struct verdict v = {0};
        int rc = op_run(l, key, len, &rq, &v, NULL, NULL);
        if (rc < 0)
                return rc;
        *out = (struct thr_budget_step){.ok = v.ok,
                                        .queued = v.queued,
                                        .balance = v.remaining,
                                        .shortfall = v.shortfall,
                                        .waiters = v.waiters};
        return 0;
}

/* Declared in client_internal.h. */
void thr_lim_count(thr_limiter *l, int rc, bool waited)
{
        if (rc != 0 && rc != -EAGAIN && rc != -ETIMEDOUT && rc != -EBUSY && rc != -ECANCELED)
                return; /* an error, not a decision (-EBUSY, -ECANCELED: a full queue's) */
        struct thr_lcount *row;
        int err = 0;
        if (!thr_reader_get_row(l->a, &row, &err))
                return;
        struct thr_lcount *lc = row + l->dir_idx;
        thr_count(rc == 0 ? &lc->admitted : &lc->denied);
        if (rc == 0 && waited)
                thr_count(&lc->waited);
}

/* Declared in client_internal.h: a composed call's member, decided on STATE (compose.c). */
int thr_member_decide(thr_limiter *l, struct thr_slot *s, uint64_t state, uint64_t cost,
                      struct thr_mverdict *mv)
{
        struct thr_params pc;
        struct op o = {.pc = &pc, .l = l, .slot = s};
        o.p = lim_params_for(l, false);
        if (!o.p)
                return lim_gone_for(l, false);
        o.kind = o.p->kind;
        if (o.kind != THR_KIND_GCRA) {
                o.p = params_pin(l, o.p, o.kind, false, o.pc);
                if (!o.p)
                        return -EBADMSG;
        }
        if (cost > o.p->burst)
                return -ERANGE;
        o.now = op_now(&o);
        const struct req rq = {.mode = OP_TRY, .cost = cost};
        struct verdict v = {0};
        decide(&o, o.kind, s, state, &rq, &v);
        *mv = (struct thr_mverdict){.ok = v.ok && cost > 0,
                                    .peek = cost == 0,
                                    .kind = o.kind,
                                    .next = v.ok && cost ? v.new_state : state,
                                    .stamp = v.stamp,
                                    .remaining = v.remaining,
                                    .retry_ns = v.ok ? 0 : to_ns(o.p->k, v.retry_u)};
        if (cost == 0)
                mv->ok = v.ok;
        return 0;
}

/* Declared in client_internal.h: give back what a composed call's member consumed (GCRA,
 * window; throttle.h says what can be). Inside the caller's read-side section. */
int thr_member_refund(thr_limiter *l, struct thr_slot *s, uint64_t prev, uint64_t next,
                      uint64_t cost, uint64_t stamp, struct thr_member_refund *out)
{
        *out = (struct thr_member_refund){0};
        struct thr_params pc;
        struct op o = {.pc = &pc, .l = l, .slot = s};
        o.p = lim_params_for(l, false);
        if (!o.p)
                return lim_gone_for(l, false);
        o.kind = o.p->kind;
        if (o.kind != THR_KIND_GCRA && !(o.p = params_pin(l, o.p, o.kind, false, o.pc)))
                return -EBADMSG;
        uint64_t cur = atomic_load_explicit(&s->state, memory_order_acquire);
        for (int spins = 0; spins < 64; spins++) {
                if (shm_is_mark(cur)) { /* a composed call's: settled first */
                        if (shm_mark_resolve(&l->a->map, s, cur) < 0)
                                return -EBADMSG;
                        cur = atomic_load_explicit(&s->state, memory_order_acquire);
                        continue;
                }
                if (cur >= THR_TAT_LIMIT)
                        return 0;
                uint64_t to, give;
                if (o.kind == THR_KIND_WINDOW) {
                        if (cur != next || next < cost || prev != next - cost)
                                return 0; /* units admitted since: they stay (over-denial) */
                        /* only while its units are in the window: a decision made on the count
                         * before the refund then counted them (it was stricter), and one made
                         * after it by a try preempted since cannot exist; once they have left,
                         * lowering the count could let such a stale decision commit on a log it
                         * did not read (an over-admission), and they are free anyway */
                        if (op_now(&o) >= stamp + o.p->period_ns)
                                return 0;
                        to = prev;
                        give = cost;
                } else if (o.kind == THR_KIND_GCRA) {
                        /* the part of the call's charge not yet drained; never below what
                         * was admitted since (shm/compose.h has the argument) */
                        uint64_t now = op_now(&o);
                        __uint128_t ct = (__uint128_t)cost * o.p->t_units;
                        if (cur < next || next <= now)
                                return 0;
                        give = next - now < ct ? next - now : (uint64_t)ct;
                        to = cur - give;
                } else {
                        return 0;
                }
                if (atomic_compare_exchange_strong_explicit(
                        &s->state, &cur, to, memory_order_acq_rel, memory_order_acquire)) {
                        out->full = o.kind == THR_KIND_WINDOW ||
                                    (__uint128_t)give == (__uint128_t)cost * o.p->t_units;
                        out->given = o.kind == THR_KIND_WINDOW ? cost : give / o.p->t_units;
                        return 0;
                }
        }
        return 0;
}

/* Declared in client_internal.h: log a window member's units before its commit (window.h). */
void thr_member_stage(thr_limiter *l, struct thr_slot *s, uint64_t prev, uint64_t cost,
                      uint64_t stamp)
{
        struct thr_params pc;
        struct op o = {.pc = &pc, .l = l, .slot = s};
        const struct thr_params *p = lim_params_for(l, false);
        if (!p || p->kind != THR_KIND_WINDOW)
                return;
        o.p = params_pin(l, p, THR_KIND_WINDOW, false, o.pc);
        if (o.p && cost)
                shm_window_stage(o.p, op_log(&o, s), prev, cost, stamp);
}

/* ---------------------------------------------------------------- the public calls */

/* A try's outcome for its caller: RES filled (if not NULL), 1 admitted or 0 denied. */
static inline int try_result(const struct verdict *v, struct thr_result *res)
{
        if (res) { /* field by field: the reserved tail is the caller's */
                res->admitted = v->ok;
                res->limit = v->limit;
                res->remaining = v->remaining;
                res->retry_after_ns = v->ok ? 0 : to_ns(v->k, v->retry_u);
                res->reset_after_ns = to_ns(v->k, v->reset_u);
        }
        return v->ok;
}

int thr_limiter_try(thr_limiter *l, const void *key, size_t len, uint64_t cost,
                    struct thr_result *res)
{
        const struct req rq = {.mode = OP_TRY, .cost = cost};
        struct verdict v;
        int rc = op_run(l, key, len, &rq, &v, NULL, NULL);
        if (rc < 0)
                return rc;
        return try_result(&v, res);
}

int thr_key_init(struct thr_key *kh, thr_limiter *l, const void *key, size_t len)
{
        int rc = check_key(key, len);
        if (rc < 0 || !kh || !l)
                return rc < 0 ? rc : -EINVAL;
        struct thr_key_priv *k = thr_key_priv(kh);
        memset(kh, 0, sizeof(*kh));
        k->lim = l;
        k->len = (uint32_t)len;
        if (len <= THR_KEY_INLINE)
                memcpy(k->key, key, len);
        else
                shm_key_digest(l->a->hdr->digest_key, key, k->len, k->key);
        k->hash = shm_stored_hash(l->a->hdr->hash_key, k->key, k->len);
        k->check = thr_key_check(k);
        return 0;
}

int thr_key_try(struct thr_key *kh, uint64_t cost, struct thr_result *res)
{
        if (!kh)
                return -EINVAL;
        struct thr_key_priv *k = thr_key_priv(kh);
        if (k->check != thr_key_check(k) || !k->lim || k->len - 1 >= THR_KEY_MAX)
                return -EINVAL;
        const struct req rq = {.mode = OP_TRY, .cost = cost};
        struct verdict v;
        int rc = op_run(k->lim, k->key, k->len, &rq, &v, NULL, k);
        if (rc < 0)
                return rc;
        return try_result(&v, res);
}

int thr_limiter_reserve(thr_limiter *l, const void *key, size_t len, uint64_t cost,
                        uint64_t max_wait_ns, struct thr_reservation *rv)
{
        if (!rv || cost == 0)
                return -EINVAL; /* a reservation of nothing has no place to take */
        const struct req rq = {.mode = OP_RESERVE, .cost = cost, .max_wait_ns = max_wait_ns};
        struct verdict v = {0};
        struct thr_reservation_priv *rp = thr_rv_priv(rv);
        *rp = (struct thr_reservation_priv){0};
        int rc = op_run(l, key, len, &rq, &v, rp, NULL);
        rv->wait_ns = v.wait_ns; /* with -EAGAIN too: when it would have been due */
        rv->due_ns = v.due_ns;
        rv->cost = cost;
        if (rc < 0)
                rp->slot = NULL;
        return rc;
}

/*
 * Give a place back only while it is still a place in the queue (not yet due: a due place may
 * have been used), only once (the handle is cleared), only on the same slot generation (the slot
 * was not evicted and reused for another key), only by the process that took it, and only if
 * nothing was stacked on it. A window's place is never given back: its units are logged in words
 * that other admissions may already have raised, and taking them back could under-log (window.h).
 */
int thr_reservation_cancel(struct thr_reservation *rv)
{
        struct thr_reservation_priv *rp = rv ? thr_rv_priv(rv) : NULL;
        if (!rp || !rp->slot || !rp->lim)
                return -EINVAL;
        if ((rp->gen >> 32) != (uint32_t)thr_forkpage->gen)
                return -EINVAL; /* taken by another process (a copy made by fork): not ours */
        if (rp->kind != THR_KIND_GCRA)
                return 0;
        thr_arena *a = rp->lim->a;
        int rc = 0;
        struct thr_reader *r = thr_reader_get(a, &rc);
        if (!r)
                return rc;
        uint64_t outer = thr_reader_enter(a, r);
        struct thr_slot *s = (struct thr_slot *)rp->slot;
        if (shm_now_ns(a->hdr) < rv->due_ns) {
                uint64_t meta = atomic_load_explicit(&s->meta, memory_order_acquire);
                uint64_t expect = rp->state;
                bool same = THR_META_STATUS(meta) == THR_SLOT_LIVE &&
                            THR_META_GEN(meta) == (uint32_t)rp->gen;
                /* a composed call's mark is not a later admission: settled, then again */
                for (int i = 0; same && i < 8; i++) {
                        if (atomic_compare_exchange_strong_explicit(&s->state, &expect, rp->prev,
                                                                    memory_order_acq_rel,
                                                                    memory_order_relaxed)) {
                                rc = 1;
                                break;
                        }
                        if (!shm_is_mark(expect) || shm_mark_resolve(&a->map, s, expect) < 0)
                                break;
                        expect = rp->state;
                }
        }
        thr_reader_exit(r, outer);
        if (rc == 1)
                rp->slot = NULL;
        return rc;
}

/* Sleep until arena time DUE_NS. Manual clock: poll the arena's time (tests advance it). */
static void sleep_until(const struct thr_hdr *h, uint64_t due_ns)
{
        if (h->clock_id == THR_CLOCK_MANUAL) {
                struct timespec tick = {0, 100000};
                while (shm_now_ns(h) < due_ns)
                        nanosleep(&tick, NULL);
                return;
        }
        int64_t abs = h->epoch_ns + (int64_t)due_ns;
        struct timespec ts = {abs / 1000000000, abs % 1000000000};
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
                ;
}

int thr_limiter_acquire(thr_limiter *l, const void *key, size_t len, uint64_t cost,
                        uint64_t timeout_ns, struct thr_result *res)
{
        if (cost == 0)
                return -EINVAL;
        const struct req rq = {.mode = OP_RESERVE, .cost = cost, .max_wait_ns = timeout_ns};
        struct verdict v = {0};
        struct thr_reservation_priv rp = {0};
        int rc = op_run(l, key, len, &rq, &v, &rp, NULL);
        if (rc == -EAGAIN)
                return -ETIMEDOUT;
        if (rc < 0)
                return rc;
        if (v.wait_ns)
                sleep_until(l->a->hdr, v.due_ns);
        if (res) { /* as of the due time, with the record the decision used */
                res->admitted = 1;
                res->limit = v.limit;
                res->remaining = v.remaining;
                res->retry_after_ns = 0;
                res->reset_after_ns = to_ns(v.k, v.reset_u);
        }
        return 0;
}

/* ---------------------------------------------------------------- a downstream's word */

/* OP_HOLD's public forms: RQ on L's KEY, with what a request of cost 1 would get after in RES. */
static int op_hold(thr_limiter *l, const void *key, size_t len, const struct req *rq,
                   struct thr_result *res)
{
        struct verdict v = {0};
        int rc = op_run(l, key, len, rq, &v, NULL, NULL);
        if (rc < 0)
                return rc;
        if (res) { /* field by field: the reserved tail is the caller's */
                res->admitted = v.retry_u == 0;
                res->limit = v.limit;
                res->remaining = v.remaining;
                res->retry_after_ns = to_ns(v.k, v.retry_u);
                res->reset_after_ns = to_ns(v.k, v.reset_u);
        }
        return v.clipped;
}

int thr_limiter_hold(thr_limiter *l, const void *key, size_t len, uint64_t delay_ns,
                     struct thr_result *res)
{
        const struct req rq = {.mode = OP_HOLD, .kind_only = THR_KIND_GCRA, .hold_ns = delay_ns};
        return op_hold(l, key, len, &rq, res);
}

int thr_limiter_cap(thr_limiter *l, const void *key, size_t len, uint64_t tokens,
                    struct thr_result *res)
{
        const struct req rq = {
            .mode = OP_HOLD, .kind_only = THR_KIND_GCRA, .cap = true, .hold_n = tokens};
        return op_hold(l, key, len, &rq, res);
}

int thr_feedback_apply(thr_limiter *l, const void *key, size_t len, const struct thr_feedback *fb,
                       unsigned flags, struct thr_result *res)
{
        if (!fb || (flags & ~THR_FEEDBACK_USE_TOKENS))
                return -EINVAL;
        const struct thr_feedback_dim *d =
            flags & THR_FEEDBACK_USE_TOKENS ? &fb->tokens : &fb->requests;
        bool rem = d->has & THR_FEEDBACK_REMAINING;
        /* the longest hold said: Retry-After, or the reset of a window with nothing left */
        uint64_t hold = fb->has & THR_FEEDBACK_RETRY_AFTER ? fb->retry_after_ns : 0;
        bool held = fb->has & THR_FEEDBACK_RETRY_AFTER;
        if (rem && d->remaining == 0 && (d->has & THR_FEEDBACK_RESET)) {
                hold = d->reset_ns > hold ? d->reset_ns : hold;
                held = true;
        }
        int clipped = 0;
        if (held) {
                int rc = thr_limiter_hold(l, key, len, hold, res);
                if (rc < 0)
                        return rc;
                clipped = rc;
        }
        /* a count left (0 without a reset: none now), or nothing said: a cap of nothing, which
         * checks the kind and fills RES */
        if (rem || !held) {
                int rc = thr_limiter_cap(l, key, len, rem ? d->remaining : UINT64_MAX, res);
                if (rc < 0)
                        return rc;
        }
        return clipped;
}

/* ---------------------------------------------------------------- adaptive limits */

int thr_limiter_overload(thr_limiter *l, uint64_t count)
{
        if (!l)
                return -EINVAL;
        if (atomic_load_explicit(&l->de->state, memory_order_acquire) != THR_DIR_LIVE)
                return -EIDRM;
        struct thr_lcount *row;
        int rc = 0;
        if (!thr_reader_get_row(l->a, &row, &rc))
                return rc;
        /* this thread's own row: no line another thread writes (a locked add, so that a call
         * from a signal handler nested in this one loses nothing) */
        atomic_fetch_add_explicit(&row[l->dir_idx].overload, count, memory_order_relaxed);
        return 0;
}

/* ---------------------------------------------------------------- clock and errors */

int thr_clock_now(thr_arena *a, uint64_t *now_ns)
{
        if (!a || !now_ns)
                return -EINVAL;
        *now_ns = shm_now_ns(a->hdr);
        return 0;
}

int thr_clock_advance(thr_arena *a, uint64_t delta_ns)
{
        if (!a)
                return -EINVAL;
        if (a->hdr->clock_id != THR_CLOCK_MANUAL)
                return -EPERM;
        atomic_fetch_add_explicit(&a->hdr->manual_now_ns, delta_ns, memory_order_acq_rel);
        return 0;
}

const char *thr_strerror(int err)
{
        if (err > 0 || err == INT_MIN) /* -INT_MIN does not exist */
                return "unknown error";
        switch (-err) {
        case ERANGE:
                return "cost exceeds the limiter's burst (a window's limit, a semaphore's "
                       "max, a budget's largest balance): never admissible";
        case EOPNOTSUPP:
                return "the call does not apply to this limiter's kind (a serialized window "
                       "takes thr_serial_begin/end, a semaphore thr_sem_*, a budget "
                       "thr_budget_* or thr_limiter_try)";
        case ENOSPC:
                return "the limiter's key table is full";
        case EIDRM:
                return "the limiter was removed from the daemon's configuration";
        case EPROTONOSUPPORT:
                return "arena layout major version differs from this library's";
        case ESTALE:
                return "arena clock cannot be read the same way here (another boot or time "
                       "namespace)";
        case EBADMSG:
                return "arena is corrupt or not a throttle arena";
        case ENOENT:
                return "no such arena or limiter (or the peer holds no lock on that key)";
        case EUSERS:
                return "no free reader record in the arena (raise [arena] max_readers)";
        case EBUSY:
                return "called from a signal handler while this thread was changing its record "
                       "cache (nothing decided, call again), or a peer closed while one of its "
                       "acquires waits, or a semaphore key's queue is full (max_waiters) and "
                       "on_queue_full refused the acquire";
        case ECANCELED:
                return "the queued acquire was dropped from a full queue (on_queue_full = "
                       "drop_oldest or drop_lowest) for another: nothing is held";
        case EAGAIN:
                return "not now: a reservation would be due later than allowed, a "
                       "semaphore's units do not fit, or a budget's balance is short (or others "
                       "are queued first)";
        case ETIMEDOUT:
                return "the wait would exceed the timeout; nothing was consumed";
        case ENAMETOOLONG:
                return "key or name too long";
        case EPERM:
                return "operation needs a manual-clock arena, or the lease or peer is another "
                       "process's";
        case EACCES:
                return "permission denied by the arena file's mode or group";
        case EXDEV:
                return "arena was created in another pid namespace (not supported yet)";
        case EKEYEXPIRED:
                return "the lease (or its peer) expired, or its process was gone, and it was "
                       "reclaimed: nothing is held";
        case EDEADLK:
                return "lock hierarchy violation: the peer holds or waits for a lock at this "
                       "level or below (or, for a serialized key, this thread holds it already)";
        case EALREADY:
                return "another thread of this peer is acquiring the same key";
        case EEXIST:
                return "the peer holds this key with another count (THR_PEER_RECOUNT changes it)";
        case ENOBUFS:
                return "every lease record of the semaphore key is in use (raise "
                       "leases_per_key)";
        case EOVERFLOW:
                return "the budget's balance would pass its maximum (2^62 - 1): nothing added";
        case EINVAL:
                return "invalid argument";
        default:
                break;
        }
        const char *s = strerrordesc_np(-err);
        return s ? s : "unknown error";
}
