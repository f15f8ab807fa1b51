/*
 * shmctl_out.h - shmctl's output: what it read from an arena, printed as aligned tables for people
 * or as one JSON object per command. Everything here only formats and prints to stdout; reading
 * and checking the arena is shmctl.c's work.
 */
#ifndef THR_DAEMON_SHMCTL_OUT_H
#define THR_DAEMON_SHMCTL_OUT_H

#include <stdbool.h>
#include <stdint.h>

#include "shm.h"

/* A table's eviction counters, summed over its shards (or over every table, for `status`). */
struct shmctl_evict {
        uint64_t evicted;       /* idle keys evicted by the daemon */
        uint64_t evicted_full;  /* keys evicted to make room (on_full = evict) */
        uint64_t reclaimed;     /* retired slots made reusable after a grace period */
        uint64_t allowed_full;  /* requests admitted unrecorded (on_full = allow) */
        uint64_t lock_waits;    /* new keys that found their shard's insert lock held */
        uint64_t lock_timeouts; /* of those, gave up after the limiter's insert wait (on_full) */
        uint64_t repairs;       /* locks taken over from a dead holder */
};

/* One limiter as read from the arena: private, checked copies, and its shards' counters. */
struct shmctl_lim {
        uint32_t idx;
        uint32_t state; /* THR_DIR_LIVE, or THR_DIR_RETIRED: removed by a reload, table kept */
        char name[THR_NAME_MAX + 1];
        struct thr_params p;
        struct thr_table t;
        struct shmctl_evict ev;
        uint64_t sem_held;    /* kind = semaphore, `limiters` only: units held, over its keys */
        uint64_t sem_pending; /* ... and acquires queued (the keys' headers' sums, read racily) */
        int64_t sem_min_rem;  /* ... the lowest remainder of its keys (max when it has none) */
        uint32_t sem_queued; /* ... acquires found queued in the reader records (shm_sem_pending) */
        uint64_t sem_pend_units; /* ... the units they ask for */
        uint64_t sem_longest_ns; /* ... the longest any has waited */
        /* a global limiter's lease, as the daemon left it in the directory entry (layout.h) */
        uint32_t gl_share;     /* millionths of the global rate and burst; 0: not global */
        uint32_t gl_state;     /* THR_GLOBAL_* in bits 0..7, holders in bits 8..31 */
        uint64_t gl_expiry_ns; /* arena ns the lease ends, 0 none */
        uint64_t now_ns;       /* arena ns when it was read */
};

/* The header's grace-period numbers, each read once. */
struct shmctl_gp {
        uint64_t started; /* hdr grace_periods: the counter readers snapshot */
        uint64_t done;    /* hdr gp_done: the last one the daemon saw completed */
        uint64_t forced;  /* hdr readers_forced: dead readers forced offline so far */
        bool mb_fallback; /* the daemon uses MEMBARRIER_CMD_GLOBAL, not the expedited one */
        uint32_t error;   /* hdr gp_error: errno of the last failed grace period, 0 if fine */
};

/* One owned reader record, each field read once. */
struct shmctl_reader {
        uint32_t idx;
        uint64_t pid, tid;
        uint64_t online;      /* raw: 0 offline, else the grace-period snapshot + 1 */
        uint64_t gp_seen;     /* last grace period the daemon saw it not blocking */
        uint64_t blocking_ns; /* arena time it was first seen blocking one, 0 if not */
        bool stalled;
        int alive; /* 1 its liveness lock is held, 0 free (dead owner), -errno unknown */
        uint64_t admitted, denied, inserts, cas_retries;
};

/* What `readers` shows besides the rows. */
struct shmctl_readers {
        uint32_t records; /* reader records in the arena */
        uint32_t owned, online, stalled, dead;
        uint64_t now_ns;
        struct shmctl_gp gp;
};

/* A window key's log, as a peek at the answer's arena time sees it (kind = window). */
struct shmctl_win {
        uint64_t used;         /* units in the current window: N - remaining */
        uint64_t oldest_ns;    /* arena time of the oldest unit still in the window; UINT64_MAX:
                                * none (a reservation's unit may be ahead of now) */
        uint64_t next_free_ns; /* until one more unit fits (a cost-1 try's retry); 0: now */
};

/* A serialized window key's header (struct thr_serial), each field read once. */
struct shmctl_hold {
        bool held;      /* a holder's token is set */
        uint64_t pid;   /* the holder's, as it wrote it (informational) */
        uint64_t since; /* arena time it was granted */
        uint64_t cost;  /* units its end completes (0 once logged) */
        uint32_t waiters;
        uint64_t served, released; /* holds granted; holds of dead holders released */
};

#define SHMCTL_WAITING_MAX 16 /* a semaphore key's queued acquires whose amounts are shown */

/* An acquire queued for a semaphore key, as its reader record describes it (read once each). */
struct shmctl_waiter {
        uint64_t ticket; /* wait_ticket: its place << 16 | the units it asks for */
        uint64_t pid, tid;
};

/* A semaphore key's header (struct thr_sem), each field read once, and the acquires queued for
 * it found in the reader records: how many, and the oldest SHMCTL_WAITING_MAX, oldest first. */
struct shmctl_sem {
        uint64_t held;    /* units held by its leases (the header's sum) */
        uint32_t waiters; /* acquires queued (the header's count) */
        uint32_t leases;  /* lease records in use (the header's count) */
        uint64_t granted, released, expired, reclaimed;
        uint32_t nwait;  /* reader records found waiting for the key */
        uint32_t nshown; /* of those, in wait[] (at most SHMCTL_WAITING_MAX) */
        struct shmctl_waiter wait[SHMCTL_WAITING_MAX];
        int64_t remainder; /* max - held: below 0 only after a reload lowered max */
        /* shm_sem_pending, when the header counts a waiter: acquires found queued, the units
         * they ask for, and how long the oldest has waited */
        uint32_t pend_waiters;
        uint64_t pend_units, pend_longest_ns;
};

/* A budget key (kind = budget): its state word's balance and flag, and its header (struct
 * thr_budget), each field read once. The header's counts are as of the key's last serve (an add,
 * a waiter's poll, the daemon's pass): nothing here is an index shmctl follows. */
struct shmctl_budget {
        uint64_t balance;   /* the state word's balance (the initial one for a fresh word) */
        bool valid;         /* the state word is a balance (its top bit clear, or fresh) */
        bool flag;          /* THR_BUDGET_WAITERS: spenders are queued (tries are refused) */
        uint32_t waiters;   /* the header's: spenders queued */
        uint64_t need;      /* units they ask for in all */
        uint64_t head_need; /* units the oldest asks for */
        uint64_t granted;   /* spends granted to queued spenders so far */
        uint64_t tickets;   /* next_ticket: spenders ever queued */
        bool journal;       /* a grant is in progress, or was left by a granter killed */
};

/* A state word a composed call marked (GCRA, window and budget keys; shm/compose.h): the owner's
 * reader record and its call's sequence (the mark's low bits), and what that record says, each
 * read once and only printed. */
enum { SHMCTL_CALL_RANGE = -2, SHMCTL_CALL_OTHER = -1 }; /* or an enum thr_journal_state */
struct shmctl_mark {
        bool on; /* the state word is a mark: the fields below, not a state, describe it */
        uint32_t reader, seq;
        int call;     /* its journal's state when the journal names this call; SHMCTL_CALL_OTHER:
                       * it names another; SHMCTL_CALL_RANGE: no such reader record */
        uint64_t pid; /* the record's owner pid, as it wrote it (informational) */
};

/* A breaker key (shm/breaker.h), its state word decoded and settled at the arena's time. */
struct shmctl_brk {
        bool valid;        /* the word decodes (state 0 to 2) */
        uint32_t state;    /* SHM_BRK_CLOSED, _OPEN, _HALF_OPEN */
        uint32_t consec;   /* consecutive failures */
        uint32_t inflight; /* probes in flight */
        uint32_t succ;     /* half-open successes */
        uint32_t gen;      /* its period's generation */
        uint64_t calls;    /* the window's (closed, with a failure rate) */
        uint64_t fails;
        uint64_t retry_ns; /* until a call may go through (0: now) */
};

/* One live key, snapshotted and evaluated at one arena time. */
struct shmctl_key {
        uint8_t bytes[THR_KEY_INLINE]; /* the key's stored form (layout.h): a long key's is its
                                        * first THR_KEY_PREFIX bytes and a digest */
        uint32_t len;                  /* its real length */
        uint64_t tat; /* raw state word: GCRA units or THR_TAT_FRESH; a window's units ever */
        uint64_t remaining;
        uint64_t reset_ns;
        uint64_t debt_ns;         /* sort order; 0 for a fresh key, which carries no debt */
        struct shmctl_win win;    /* window keys only */
        struct shmctl_hold hold;  /* serialized window keys only */
        struct shmctl_sem sem;    /* semaphore keys only */
        struct shmctl_budget bud; /* budget keys only */
        struct shmctl_brk brk;    /* breaker keys only */
        struct shmctl_mark mark;  /* a marked state word: the columns above mean nothing */
        bool absent; /* `get` of a key not in the table: the state its first call starts from */
};

/* A member of a named group: its directory index, and the entry as the directory has it now. */
enum shmctl_member_state {
        SHMCTL_MEMBER_LIVE,
        SHMCTL_MEMBER_RETIRED,
        SHMCTL_MEMBER_FREE,
        SHMCTL_MEMBER_UNKNOWN, /* the entry's state is none of free, live, retired */
        SHMCTL_MEMBER_BADNAME, /* its name is not terminated */
        SHMCTL_MEMBER_RANGE,   /* the index is past the directory's end */
};
struct shmctl_member {
        uint32_t idx;
        uint32_t state;              /* enum shmctl_member_state */
        char name[THR_NAME_MAX + 1]; /* live or retired: the entry's name; else empty */
};

/* A named group of the groups' table (config `compose = a, b`), checked. */
struct shmctl_group {
        char name[THR_NAME_MAX + 1];
        uint32_t n; /* 1 to THR_COMPOSE_MAX */
        struct shmctl_member m[THR_COMPOSE_MAX];
};

/* One lease record in use (kind = semaphore), each field read once; nothing here is an index
 * shmctl follows: holder_idx (the holder process's lease record, or its peer's record) is only
 * printed, or compared with the records `peers` found. */
struct shmctl_lease {
        uint32_t key; /* its key's index in the answer's keys */
        uint32_t idx; /* the record's index in its key */
        uint64_t gen; /* the lease's generation (never 0) */
        uint32_t holder_idx, amount;
        uint64_t acquired_ns;
        uint64_t expires_ns; /* a peer's lease: its peer's expiry, 0 once the peer is gone */
        uint64_t pid, tid;   /* informational, as the holder wrote them */
        uint64_t holder;     /* the holder's owner token (matched by `peers`, never printed) */
        uint32_t flags;      /* THR_LEASE_PEER: the holder is a peer (peer.h) */
        uint32_t level;      /* a peer's lease: the level it was taken at (sem.c keeps 0 else) */
};

/* A semaphore key with a lease or a queued acquire, for `leases`. */
struct shmctl_semkey {
        uint32_t lim;     /* its limiter's index in the answer's limiters */
        uint32_t nleases; /* its leases: v[first] on in the answer's array, oldest first */
        uint64_t first;
        struct shmctl_key k;
};

/* What `leases` shows: the semaphore limiters, their keys holding or awaited, and the leases. */
struct shmctl_leases {
        const struct shmctl_lim *lims;
        long nlim;
        const struct shmctl_semkey *keys;
        long nkeys;
        const struct shmctl_lease *v;
        long n;
        uint64_t now_ns; /* read after the records: an honest lease was acquired before it */
};

/* What `status` shows beyond the header: counts and the daemon's liveness, read at one time. */
struct shmctl_status {
        long nlim;     /* live limiters */
        long nretired; /* limiters removed by a reload, whose tables are kept */
        uint64_t live_keys, capacity, insert_fail; /* over every table, retired ones too */
        struct shmctl_evict ev;
        struct shmctl_gp gp;
        uint32_t readers;
        int alive; /* 1, 0, or -errno (shown as not running): the daemon's lock on byte 0 */
        uint64_t now_ns;
        uint64_t pid, heartbeat_ns, attaches;
        long ngroups; /* named groups in the groups' table; -1: the table is not valid */
};

/* Each prints one command's answer to stdout, human (aligned) or JSON (one object and a newline).
 * None returns an error: a failed write shows in ferror(stdout), which main() checks. Not for
 * concurrent use (an answer is many stdio calls, which would interleave); tables allocate. */

/* shmctl_out_status - the header H of the arena mapped as MAP, and S. */
void shmctl_out_status(const struct thr_hdr *h, const struct shm_map *map,
                       const struct shmctl_status *s, bool json);

/* shmctl_out_limiters - the N limiters of V, one row (or object) each; with semaphore columns
 * when one of them is a semaphore (their sem_* totals filled in), and the queue columns when
 * one of them has an acquire queued or a key above max. */
void shmctl_out_limiters(const struct shmctl_lim *v, long n, bool json);

/* shmctl_out_readers - the N owned reader records of V, then the totals of S. */
void shmctl_out_readers(const struct shmctl_reader *v, long n, const struct shmctl_readers *s,
                        bool json);

/* shmctl_out_keys - the first SHOWN of L's TOTAL live keys V (sorted by the caller), with the
 * arena time NOW_NS, in the columns of L's kind (GCRA; window, serialized or not; semaphore:
 * with the queue columns when a key shown has an acquire queued or more held than max). */
void shmctl_out_keys(const struct shmctl_lim *l, const struct shmctl_key *v, long total, long shown,
                     uint64_t now_ns, bool json);

/* shmctl_out_key - one key K of L, for `get`, with the arena time NOW_NS. */
void shmctl_out_key(const struct shmctl_lim *l, const struct shmctl_key *k, uint64_t now_ns,
                    bool json);

/* shmctl_out_leases - every lease of A, then its keys' held units and queued acquires. */
void shmctl_out_leases(const struct shmctl_leases *a, bool json);

/* shmctl_out_groups (shmctl_compose.c) - the N groups of V, from the table of configuration
 * generation GEN (TABLE false: the arena has no groups' table). */
void shmctl_out_groups(const struct shmctl_group *v, long n, bool table, uint64_t gen, bool json);

#endif
