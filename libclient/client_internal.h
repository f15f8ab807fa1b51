/*
 * client_internal.h - the client library's handles and its per-thread reader records.
 *
 * Each client thread that touches an arena owns one reader record in it (struct thr_reader),
 * found through a thread-local cache keyed by the arena handle's process-unique id and by the
 * process's fork generation. The hot path compares two words and takes the cached pointer; the
 * slow path (first use, another arena, or a fork since) claims a record by CAS. After fork() the
 * child's fork generation differs from every cached entry, so the child never writes a record
 * its parent owns: it claims its own on first use.
 */
#ifndef THR_CLIENT_INTERNAL_H
#define THR_CLIENT_INTERNAL_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include "arena.h"
#include "clock.h"
#include "gcra.h"
#include "readers.h"
#include "table.h"
#include "throttle/throttle.h"

/* Internal symbols are hidden: direct access, not through the GOT, inside the .so. */
#pragma GCC visibility push(hidden)

static_assert(THR_KEY_MAX == THR_KEY_MAX_LEN, "throttle.h's key limit is the layout's");
static_assert(THR_BUDGET_MAX == THR_BUDGET_MAX_BALANCE,
              "throttle.h's largest balance is the layout's");
static_assert(THR_COMPOSE_MAX == THR_COMPOSE_MAX_MEMBERS,
              "throttle.h's member count is the layout's");

/* What a reservation handle holds privately (struct thr_reservation's priv words). */
struct thr_reservation_priv {
        const void *slot; /* the key's slot when the place was recorded, or NULL */
        const struct thr_limiter *lim;
        uint64_t prev, state;      /* the state the place was decided on, and the one it set */
        uint64_t gen;              /* fork generation << 32 | the slot's generation */
        uint64_t burst, period_ns; /* of the record it was decided with */
        uint32_t kind;
};
static_assert(sizeof(struct thr_reservation_priv) <= sizeof(((struct thr_reservation *)0)->priv),
              "the private part of a reservation fits its public room");

static inline struct thr_reservation_priv *thr_rv_priv(struct thr_reservation *rv)
{
        return (struct thr_reservation_priv *)(void *)rv->priv;
}

/*
 * A key handle's private part (struct thr_key). Made once by thr_key_init: the limiter, the key's
 * stored form (layout.h), its real length and its table hash; then AT, 1 + the index in the
 * limiter's table of the slot the key was last found in (0: none), rewritten by every call that
 * finds it elsewhere.
 *
 * Why looking at AT's slot first gives the lookup's answer: the slot is taken as the key's only
 * if, inside the call's read-side section, its meta word (acquire) says LIVE with the key's tag
 * and its length and bytes are the key's: shm_slot_matches, the test the probe applies to every
 * slot it visits. At most one slot is live per key (layout.h), so a slot that passes is the one
 * the probe would have stopped at, whatever happened to it since the handle last saw it (evicted,
 * freed, reused for another key, or this key again): the acquire load and the section give the
 * key bytes read after it the same guarantees as the probe's own reads. AT is a hint: anything
 * else in it (0, a slot that fails the test, a torn or concurrent rewrite by another thread, an
 * index past the table) only costs the probe from the kept hash. A probe only reads, and takes a
 * slot only if it holds the kept bytes and tag, so an unchecked hash can at worst find the one
 * live slot of those bytes. Before the slow path, which may insert, the kept bytes are hashed
 * again and must give the kept hash (op_run): a handle rewritten there would otherwise insert its
 * bytes off their home under another tag (a second live slot for a key, or another key charged).
 * Nothing is written to the arena for it; the stores to AT are the caller's memory, made only
 * when the slot changed (so threads sharing a handle do not bounce its line on every call).
 */
struct thr_key_priv {
        thr_limiter *lim;
        uint64_t hash;
        _Atomic uint64_t at;
        uint32_t len;
        uint32_t check; /* thr_key_check(): a handle thr_key_init made */
        uint8_t key[THR_KEY_INLINE];
};
static_assert(sizeof(struct thr_key_priv) <= sizeof(((struct thr_key *)0)->priv),
              "the private part of a key handle fits its public room");

/* KH's check word: a fixed pattern mixed with its length, both halves of its hash and its
 * limiter pointer (multiplied, so that no bit of it cancels another field's), so that a zeroed,
 * uninitialised, torn or scribbled handle is refused rather than followed (its LIM above all:
 * the first thing a call dereferences). The key bytes are not in it: a handle whose bytes (or
 * whose length and hash together) no longer agree with its hash is caught where it could do
 * harm, before the slow path that may insert (op_run hashes them again there); a hint that hits
 * compared the bytes, the length and the tag with a live slot's. */
static inline uint32_t thr_key_check(const struct thr_key_priv *kh)
{
        uint64_t lim = (uint64_t)(uintptr_t)kh->lim * 0x9e3779b97f4a7c15ull;
        return 0x6b65796eu ^ kh->len ^ (uint32_t)(kh->hash >> 32) ^ (uint32_t)kh->hash ^
               (uint32_t)(lim >> 32);
}

static inline struct thr_key_priv *thr_key_priv(struct thr_key *kh)
{
        return (struct thr_key_priv *)(void *)kh->priv;
}

int thr_op_locate(thr_limiter *l, const void *key, size_t len, struct thr_reservation_priv *out);
/* thr_op_locate of a key given by its stored form (layout.h) and real length LEN: one read back
 * out of a slot, whose original the caller no longer has (compose.c's refund of a budget key). */
int thr_op_locate_stored(thr_limiter *l, const void *key, size_t len,
                         struct thr_reservation_priv *out);
/* thr_op_locate for limiters with a try form (GCRA, window, budget): a composed call's member. */
int thr_op_locate_plain(thr_limiter *l, const void *key, size_t len,
                        struct thr_reservation_priv *out);
const struct thr_params *thr_lim_record(const thr_limiter *l, struct thr_params *copy);
const struct thr_params *thr_sem_record(const thr_limiter *l, struct thr_params *copy);
/* Lookup only: KEY's live slot in L (OUT's slot, lim, gen as thr_op_locate), or -ENOENT. */
int thr_op_find(thr_limiter *l, const void *key, size_t len, struct thr_reservation_priv *out);

/*
 * thr_op_budget - one lock-free step on a budget key (created at its initial balance if new):
 * spend AMOUNT, or add it (HOW has THR_OP_ADD); HOW has THR_OP_STORED when KEY is the key's stored
 * form (layout.h), read back out of a slot, and LEN its real length. OUT->ok: done; else
 * OUT->queued says spenders are queued (the step must be taken under the key's lock: budget.c), or
 * the balance did not fit (a spend: the shortfall; an add: it would pass THR_BUDGET_MAX). Returns
 * 0, -EOPNOTSUPP (not a budget), -ENOSPC (a new key and no room), or the errors of try.
 */
struct thr_budget_step {
        int ok;
        bool queued;
        uint64_t balance; /* after the step, or as found */
        uint64_t shortfall;
        uint64_t waiters; /* refused while queued: how many (the header's, as last served) */
};
/*
 * A composed call's member (compose.c): thr_member_decide - L's decision for COST on slot S if its
 * state were STATE (a lone try's: GCRA, window, budget), now; writes nothing. 0, -EOPNOTSUPP (a
 * kind without a try: semaphore, serialized window), -ERANGE, -EIDRM, -EBADMSG.
 * thr_member_stage - a window member's units logged at STAMP before its commit.
 */
struct thr_mverdict {
        bool ok, peek;
        uint32_t kind;
        uint64_t next;      /* the state a commit stores */
        uint64_t stamp;     /* a window's admission time */
        uint64_t remaining; /* tokens, units or balance left after it */
        uint64_t retry_ns;  /* denied: when it would fit alone (UINT64_MAX: a budget, never) */
};
int thr_member_decide(thr_limiter *l, struct thr_slot *s, uint64_t state, uint64_t cost,
                      struct thr_mverdict *mv);
void thr_member_stage(thr_limiter *l, struct thr_slot *s, uint64_t prev, uint64_t cost,
                      uint64_t stamp);
struct thr_member_refund {
        bool full;      /* all of it */
        uint64_t given; /* tokens (GCRA) or units (window) given back */
};
int thr_member_refund(thr_limiter *l, struct thr_slot *s, uint64_t prev, uint64_t next,
                      uint64_t cost, uint64_t stamp, struct thr_member_refund *out);

const struct thr_params *thr_budget_record(const thr_limiter *l, struct thr_params *copy);
const struct thr_params *thr_breaker_record(const thr_limiter *l, struct thr_params *copy);
#define THR_OP_ADD    1u
#define THR_OP_STORED 2u
#define THR_OP_QUIET  4u /* a spend the caller counts (thr_lim_count) */
int thr_op_budget(thr_limiter *l, const void *key, size_t len, uint64_t amount, unsigned how,
                  struct thr_budget_step *out);
/* thr_budget_add of a key given by its stored form and real length LEN (compose.c's refund). */
int thr_budget_add_stored(thr_limiter *l, const void *key, size_t len, uint64_t amount,
                          struct thr_budget_result *res);

/* Count an outcome on L's counters in this thread's row, for calls that decide outside the core
 * (semaphore, serialized window, a budget spend that queued): RC 0 admitted (after a wait if
 * WAITED), -EAGAIN or -ETIMEDOUT denied, anything else not counted. */
void thr_lim_count(thr_limiter *l, int rc, bool waited);

/* Who a lease is for, when not the calling process (sem.c, for peer.c): a peer's record. */
struct thr_sem_holder {
        uint64_t token;
        uint32_t idx;
        uint32_t level; /* the limiter's level, as the peer checked it (kept in the lease) */
};
/* sem.c: acquire (WAIT: up to TIMEOUT_NS) or try AMOUNT of KEY for the peer HD; resize a lease
 * held (more only if it fits now and nobody is queued). The caller disabled cancellation. */
int thr_sem_acquire_as(thr_limiter *l, const void *key, size_t len, const struct thr_sem_holder *hd,
                       uint32_t amount, uint64_t timeout_ns, bool wait, struct thr_lease *lease);
int thr_sem_resize(struct thr_lease *lease, uint32_t amount);
/* reader.c: a reader record of its own for a peer of A (claimed like a thread's, kept until
 * thr_peer_free_record or the arena's close), and giving it back. 0 or -errno. */
int thr_peer_claim_record(thr_arena *a, uint32_t *idx, uint64_t *token);
void thr_peer_free_record(thr_arena *a, uint32_t idx, uint64_t token);

/* reader.c: this process's lease record for A (claimed at its first lease, kept until the arena
 * is closed or the process ends): its index and owner token. 0 or -errno. */
int thr_lease_holder(thr_arena *a, uint32_t *idx, uint64_t *token);

/* What thr_serial_end needs of a hold (serial.c). */
struct thr_hold_priv {
        struct thr_slot *slot; /* NULL: no hold (ended, or never granted) */
        thr_limiter *lim;
        uint64_t token; /* owner token of the holder's reader record */
        uint64_t gen;   /* fork generation << 32 | the slot's generation */
        uint64_t hash;  /* the key's (its shard) */
        uint32_t idx;   /* the holder's reader record */
};
static_assert(sizeof(struct thr_hold_priv) <= sizeof(((struct thr_hold *)0)->priv),
              "the private part of a hold fits its public room");

static inline struct thr_hold_priv *thr_hold_priv(struct thr_hold *h)
{
        return (struct thr_hold_priv *)(void *)h->priv;
}

/* What release and heartbeat need of a lease (sem.c). */
struct thr_lease_priv {
        struct thr_slot *slot; /* NULL: no lease */
        thr_limiter *lim;
        uint64_t gen;      /* the lease's generation */
        uint32_t slot_gen; /* the slot's generation */
        uint32_t idx;      /* the lease record */
        uint64_t holder;   /* a peer's lease: the peer's token (peer.c); 0: the process's */
};
static_assert(sizeof(struct thr_lease_priv) <= sizeof(((struct thr_lease *)0)->priv),
              "the private part of a lease fits its public room");

static inline struct thr_lease_priv *thr_lease_priv(struct thr_lease *l)
{
        return (struct thr_lease_priv *)(void *)l->priv;
}

struct thr_arena {
        struct shm_map map;
        struct thr_hdr *hdr;
        uint64_t id;       /* process-unique, never reused: stale TLS entries never match */
        uint32_t *claimed; /* reader records this process claimed (under the registry lock) */
        uint32_t nclaimed, capclaimed;
        uint64_t claimed_gen;   /* fork generation they were claimed in: another one's are not
                                 * ours to give back (a child's exit must not free them) */
        uint64_t checked_gen;   /* fork generation whose namespaces and membarrier were checked */
        pid_t open_pid;         /* the process that opened it: another one shares its fds, or
                                 * a copy of them (raw clone with or without CLONE_FILES) */
        int lockfd;             /* this process's own open file description of the arena: it
                                 * holds the liveness locks of the records claimed (reclaim.c) */
        uint64_t lockfd_gen;    /* fork generation it was opened in */
        struct thr_arena *next; /* the process's open arenas */
        uint32_t lease_idx;     /* this process's lease record (sem.h), if lease_gen is current */
        uint64_t lease_token;
        _Atomic uint64_t lease_gen; /* fork generation it was claimed in (0: none) */
        struct shm_tsc_cal tsc;     /* hdr's TSC calibration as checked at open (mult 0: none) */
};

struct thr_limiter {
        thr_arena *a;
        struct thr_dir_entry *de;
        struct thr_table *tb; /* the table in the arena: its counters */
        /* its geometry as validated at open, what lookups and aux storage are computed from: a
         * client rewriting the arena's words cannot move where this process reads or writes */
        struct thr_table geo;
        uint64_t params_lo; /* params_off must lie in [params_lo, params_lo + params_span] */
        uint64_t params_span;
        uint64_t win_n; /* the largest window N its table's logs hold (0: none); checked at open */
        uint64_t sem_leases; /* the most lease records its table's keys hold (semaphores) */
        uint32_t dir_idx;    /* its directory entry: its block in a counter row (layout.h) */
};

struct thr_tls_ent {
        uint64_t arena_id;
        uint64_t fork_gen;
        struct thr_reader *r;
        struct thr_lcount *row; /* R's row of limiter counters (layout.h) */
        uint32_t idx;
};

/*
 * A thread's records, one per arena it used: the last used in FRONT (what the hot path compares),
 * the others in REST, grown as the thread uses more arenas (the slow path swaps a hit into FRONT).
 * A record is kept until the thread exits or its arena is closed, however many arenas the thread
 * uses: a thread going round many arenas pays a short scan, never a syscall (it used to give the
 * least recently used one back past 8 arenas and claim it again: 5 syscalls a call).
 */
struct thr_tls {
        struct thr_tls_ent front; /* arena_id 0: none yet; written arena_id last (reader.c) */
        uint32_t n, cap;
        struct thr_tls_ent *rest;
        volatile sig_atomic_t updating; /* the slow path is changing this: a call nested in a
                                         * signal handler that misses gets -EBUSY */
};

/*
 * The process's fork generation lives in a MADV_WIPEONFORK page: the kernel hands every child
 * a zeroed copy, however it was created (fork, _Fork, a raw clone without atfork handlers), so a
 * child never matches a cache entry of its parent's. Never 0 in a process that registered.
 */
struct thr_forkpage {
        uint64_t gen;
};
extern struct thr_forkpage *thr_forkpage;
extern struct thr_forkpage thr_forkpage_unset; /* gen 0: before the first registration */
/* initial-exec: one %fs-relative load, no __tls_get_addr call on the hot path. */
extern __thread struct thr_tls *thr_tls_cur __attribute__((tls_model("initial-exec")));

/*
 * Registration on first use (or the first since a fork); NULL with *ERR set when it cannot be
 * done: -EUSERS (no free record), -EXDEV / -ESTALE (this process left the arena's pid or time
 * namespace), -ENOMEM, -errno from open.
 */
struct thr_reader *thr_reader_slow(thr_arena *a, int *err);

/* The row of limiter counters of R, a reader record of A (reader.c). */
struct thr_lcount *thr_reader_row(const thr_arena *a, const struct thr_reader *r);

/* Whether this process shares its descriptor table with its parent (reader.c). */
bool thr_fd_table_shared(void);

/* Add/remove A in the process's registry of open arenas (registry lock inside). */
void thr_registry_add(thr_arena *a);
void thr_registry_remove(thr_arena *a);

/* This thread's reader record in A: two compares when cached. No syscall once registered. */
static inline struct thr_reader *thr_reader_get(thr_arena *a, int *err)
{
        struct thr_tls *t = thr_tls_cur;
        if (__builtin_expect(
                t && t->front.arena_id == a->id && t->front.fork_gen == thr_forkpage->gen, 1))
                return t->front.r;
        return thr_reader_slow(a, err);
}

/* thr_reader_get, with the record's row of limiter counters in *ROW (layout.h): what a decision
 * counts itself in. Loaded from the entry the record came from (one more load when cached). */
static inline struct thr_reader *thr_reader_get_row(thr_arena *a, struct thr_lcount **row, int *err)
{
        struct thr_tls *t = thr_tls_cur;
        if (__builtin_expect(
                t && t->front.arena_id == a->id && t->front.fork_gen == thr_forkpage->gen, 1)) {
                *row = t->front.row;
                return t->front.r;
        }
        struct thr_reader *r = thr_reader_slow(a, err);
        if (r)
                *row = thr_reader_row(a, r);
        return r;
}

/*
 * Read-side section marks for the arena's RCU (the argument is at the top of shm/reclaim.c):
 * `online` holds the grace-period counter seen on entry (+1, so never 0), 0 when offline. Only
 * this thread writes the record. The acquire load of the counter orders the section's loads after
 * it (free on x86); the compiler fence keeps the table accesses inside the section. The
 * store-load ordering between `online` and those loads is paid by the daemon (membarrier), not
 * here: no fence on the hot path.
 *
 * Sections nest: a call made by a signal handler that interrupted a call of the same thread finds
 * `online` already set and keeps it (the outer section, older, covers the inner one), and at its
 * end puts back what it found, so it never clears the outer call's mark. Returns what it found:
 * 0 when this call opened the section. Branch-free: a load of the thread's own line and a
 * conditional move. If the handler runs between the load and the store below, the outer call
 * stores a snapshot no newer than the counter: it blocks grace periods a little longer, never less.
 */
static inline uint64_t thr_reader_enter(const thr_arena *a, struct thr_reader *r)
{
        uint64_t prev = atomic_load_explicit(&r->online, memory_order_relaxed);
        uint64_t gp = atomic_load_explicit(&a->hdr->grace_periods, memory_order_acquire);
        atomic_store_explicit(&r->online, prev ? prev : gp + 1, memory_order_relaxed);
        atomic_signal_fence(memory_order_seq_cst);
        return prev;
}

/* Leave the section, putting back PREV (what thr_reader_enter found): every access to the table
 * is done before (release). */
static inline void thr_reader_exit(struct thr_reader *r, uint64_t prev)
{
        atomic_store_explicit(&r->online, prev, memory_order_release);
}

/* Arena time as a GCRA limiter with parameter FLAGS reads it (THR_PARAM_CLOCK, clock.h): one
 * test for the precise clock, which every other kind reads; the cheap clocks in a call of their
 * own, so the precise path's code stays as it was. */
uint64_t thr_lim_clock_cheap(const thr_arena *a, uint32_t flags);
static inline uint64_t thr_lim_clock(const thr_arena *a, uint32_t flags)
{
        if (__builtin_expect((flags & THR_PARAM_CLOCK_MASK) == 0, 1))
                return shm_now_ns(a->hdr);
        return thr_lim_clock_cheap(a, flags);
}

/*
 * Owner-only counter, no locked instruction. The owner thread is its only writer, but a call
 * from a signal handler may interrupt the owner's own increment: with a load and a store, the
 * handler's increment between them was overwritten and lost for ever (test_review13
 * counts_survive_calls_from_signal_handlers). On x86-64 one `add` to memory is a single
 * instruction, so a signal comes before or after it; readers (other threads, the daemon) see the
 * old or the new aligned word. Elsewhere a relaxed fetch-add (atomic, so also signal-safe).
 */
static inline void thr_count(_Atomic uint64_t *c)
{
#if defined(__x86_64__)
        __asm__ volatile("addq $1, %0" : "+m"(*(uint64_t *)c));
#else
        atomic_fetch_add_explicit(c, 1, memory_order_relaxed);
#endif
}

#pragma GCC visibility pop

/* The wait options of thr_sem_acquire_opts and thr_budget_spend_opts: whether W is refused
 * (NULL, a class above THR_PRIORITY_MAX, flags or reserved words set), and the arena time a wait
 * begun at T0 ends at: the earlier of T0 + TIMEOUT_NS (saturated) and W's deadline, if any. */
static inline bool thr_wait_opts_bad(const struct thr_wait_opts *w)
{
        return !w || w->priority > THR_PRIORITY_MAX || w->flags || w->reserved[0] || w->reserved[1];
}

static inline uint64_t thr_wait_deadline(uint64_t t0, uint64_t timeout_ns,
                                         const struct thr_wait_opts *w)
{
        uint64_t d = timeout_ns > UINT64_MAX - t0 ? UINT64_MAX : t0 + timeout_ns;
        return w && w->deadline_ns && w->deadline_ns < d ? w->deadline_ns : d;
}

#endif
