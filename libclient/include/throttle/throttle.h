/*
 * throttle.h - libthrottle-client: admissions decided in a shared-memory arena.
 *
 * A daemon (throttled) creates the arena and its named limiters; every process that links this
 * library maps the arena and decides admissions itself with an atomic compare-and-swap on the
 * key's state word. For a key that already exists, thr_limiter_try makes no syscall, takes no
 * lock and allocates nothing, once the calling thread has used the arena (a thread's first call
 * on an arena, and its first after fork(), registers a reader record: a mutex, getrandom,
 * getpid, gettid and a small allocation). A new key is inserted by the caller, under its shard's
 * insert lock (a CAS word in the arena, insert path only), waited for at most the limiter's
 * insert_wait (default 20 ms): past that the limiter's on_full policy answers.
 *
 * Conventions: every function returns an int, >= 0 on success and -errno on failure; errno is
 * never the channel. Results are filled through pointers. Handles are opaque.
 *
 * Thread safety: all functions are safe to call from many threads of many processes at once on
 * the same arena and limiter handles, except thr_arena_close (no other call on that arena may be
 * running or start) and thr_limiter_close likewise for its limiter.
 *
 * fork(), _Fork(), raw clone(): a child may keep using the handles its parent opened; it
 * registers its own per-thread records on first use and never shares, nor gives back, the
 * parent's. Its first call checks it still shares the arena's pid and time namespaces.
 *
 * Signals and cancellation: once a thread has made one call on an arena, the calls are
 * async-signal-safe (a call nested in a handler keeps the interrupted call's section; see
 * -EBUSY); never leave a call by longjmp. The hot path has no cancellation point, and
 * registration and the insert lock's wait disable it.
 *
 * Time: durations are nanoseconds. On a real-clock arena the time is CLOCK_MONOTONIC (vDSO, no
 * syscall); on a manual-clock arena (tests) it is a value in the arena that thr_clock_advance sets.
 */
#ifndef THROTTLE_THROTTLE_H
#define THROTTLE_THROTTLE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define THR_VERSION_MAJOR 0
#define THR_VERSION_MINOR 1
#define THR_VERSION_PATCH 0

/* Largest key in bytes; a longer key is refused with -ENAMETOOLONG. */
#define THR_KEY_MAX_LEN 104

typedef struct thr_arena thr_arena;
typedef struct thr_limiter thr_limiter;

/* Outcome of one decision (see thr_limiter_try for each kind's meaning). */
struct thr_result {
        int admitted;            /* 1 admitted, 0 denied */
        uint64_t limit;          /* the burst B (a window: N) */
        uint64_t remaining;      /* whole tokens (units) left after this decision, >= 0 */
        uint64_t retry_after_ns; /* 0 if admitted; else when this same request would fit */
        uint64_t reset_after_ns; /* time until the bucket is full (the window empty) again */
        uint64_t reserved[3];    /* room to grow: not written by this version */
};

/* A place taken by thr_limiter_reserve. */
struct thr_reservation {
        uint64_t due_ns;  /* arena time at which the request conforms (<= now: at once) */
        uint64_t wait_ns; /* due_ns - now at the time of the reservation, 0 if due already */
        uint64_t cost;
        uint64_t priv[10]; /* private: what thr_reservation_cancel needs (opaque) */
};

/* A hold on a serialized window key (thr_serial_begin .. thr_serial_end). */
struct thr_hold {
        uint64_t granted_ns; /* arena time the hold was granted */
        uint64_t waited_ns;  /* how long the begin waited */
        uint64_t cost;       /* units its end completes */
        uint64_t priv[8];    /* private: what thr_serial_end needs (opaque) */
};

/*
 * A lease on a semaphore key (thr_sem_acquire): AMOUNT units of the key's max, held until
 * released or until EXPIRES_NS (arena time) unless extended by thr_sem_heartbeat.
 */
struct thr_lease {
        uint64_t expires_ns; /* arena time the lease may be reclaimed from, unless extended */
        uint64_t waited_ns;  /* how long the acquire waited */
        uint64_t amount;     /* units held */
        uint64_t priv[8];    /* private: what release and heartbeat need (opaque) */
};

/*
 * thr_version - the library's version, to check at run time against the header's.
 * Returns (major << 16) | (minor << 8) | patch. Thread-safe, no syscall.
 */
int thr_version(void);

/*
 * thr_arena_open - map the arena called NAME (as named in the daemon's [arena] section) for
 * reading and writing. NAME is looked up on the hugetlbfs mounts libhugetlbfs knows, then in
 * /dev/shm (file "throttle.NAME"); a NAME containing '/' is taken as a path.
 * FLAGS: 0.
 * Returns 0 and sets *OUT, or:
 *   -ENOENT           no such arena
 *   -EACCES           the file's mode or group does not let this process map it
 *   -EPROTONOSUPPORT  the arena has another layout major version than this library
 *   -EBADMSG          the arena header is not valid (magic, sizes, offsets)
 *   -ESTALE           the arena's clock cannot be read the same way here (another boot or
 *                     another time namespace)
 *   -EXDEV            the arena was created in another pid namespace (reader records are
 *                     judged by their owners' pids: one namespace for all)
 * Opening registers the process for expedited membarrier(2) (the daemon's grace periods use
 * it); where that fails, the daemon falls back to the slower global membarrier.
 *   -ENAMETOOLONG     NAME too long; -EINVAL bad arguments; -ENOMEM
 *   other -errno      from open(2) or mmap(2), e.g. -EMFILE
 * Thread-safe. Makes syscalls (open, mmap); may be called after fork.
 */
int thr_arena_open(const char *name, unsigned flags, thr_arena **out);

/*
 * thr_arena_close - unmap the arena and release this process's per-thread records in it.
 * (A process that exits without closing gives its records back at exit as well.)
 * Returns 0, or -EINVAL for NULL. Not to be called while another thread uses the arena or its
 * limiters.
 */
int thr_arena_close(thr_arena *arena);

/*
 * thr_limiter_open - find the limiter called NAME in ARENA.
 * Returns 0 and sets *OUT, or -ENOENT (no such limiter), -EINVAL, -ENOMEM, -EBADMSG (its
 * directory entry is corrupt). Thread-safe; allocates; no syscall.
 */
int thr_limiter_open(thr_arena *arena, const char *name, thr_limiter **out);

/* thr_limiter_close - free the handle. Returns 0. */
int thr_limiter_close(thr_limiter *lim);

/* A limiter's kind (struct thr_limiter_info's kind). */
#define THR_LIMITER_GCRA       1u /* try, reserve, acquire */
#define THR_LIMITER_WINDOW     2u /* try, reserve, acquire; serialized: serial_begin / end */
#define THR_LIMITER_SEMAPHORE  3u /* sem_*, peer_* */
#define THR_LIMITER_BUDGET     4u /* budget_*, and try (a budget_try) */
#define THR_LIMITER_BREAKER    5u /* breaker_* */
#define THR_LIMITER_SERIALIZED 1u /* thr_limiter_info's flags: a window of serial calls */

/* A limiter's configuration as the daemon's config (and its last reload) set it. */
struct thr_limiter_info {
        uint32_t kind;        /* THR_LIMITER_GCRA, _WINDOW, _SEMAPHORE, _BUDGET or _BREAKER */
        uint32_t flags;       /* THR_LIMITER_SERIALIZED */
        uint64_t rate;        /* GCRA: tokens per PERIOD_NS; window: units per window; 0 else */
        uint64_t period_ns;   /* GCRA: the rate's period; window: its length W; 0 else */
        uint64_t burst;       /* GCRA: B; window: N (the largest cost); semaphore: max; budget: 0 */
        uint64_t initial;     /* GCRA: tokens a new key starts with; budget: a new key's balance;
                               * window: N; semaphore: max */
        uint64_t leases;      /* semaphore: lease records per key; 0 else */
        uint64_t level;       /* semaphore: its lock level; 0 else */
        uint64_t reserved[4]; /* breaker: [0] cooldown_ns, [1] probe_timeout_ns; a global
                               * limiter: [0] its share (below); else 0 */
};
/* A global limiter (scope = global, GCRA) in thr_limiter_info: RATE and PERIOD_NS are the
 * fleet-wide rate; reserved[0] is this host's share of it in millionths (0: a local limiter), the
 * share its buckets run at; BURST and INITIAL are this host's (the configured ones times the share,
 * a burst at least 1). */
#define THR_SHARE_ONE 1000000u
/* A breaker's configuration in thr_limiter_info (the struct's size is part of THROTTLE_0.2):
 * rate = failures (0: rule off), burst = failure_rate in percent (0: off), initial = min_calls,
 * period_ns = window, leases = probes, level = successes, reserved[0] = cooldown_ns,
 * reserved[1] = probe_timeout_ns. */

/*
 * thr_limiter_info - LIM's kind and configuration now (a reload may change them later).
 * Returns 0, -EIDRM (removed by a reload), -EBADMSG (its record is corrupt), -EINVAL (NULL).
 * Thread-safe; no syscall.
 */
int thr_limiter_info(thr_limiter *lim, struct thr_limiter_info *info);

/*
 * thr_limiter_try - decide now whether KEY may spend COST tokens; never sleeps.
 * GCRA with emission interval T and burst B: new_tat = max(tat, now) + cost*T is admitted iff
 * new_tat - now <= B*T. A denied request writes nothing. COST 0 is a peek: the result says what
 * is left and nothing changes; on an exactly empty bucket it conforms (returns 1, remaining 0).
 * A new key is inserted by its first admitted request, or by its first denied one when it starts
 * with fewer than B tokens (`initial`), so that it refills from that first request; a peek never
 * inserts.
 * A new key that finds the table full follows the limiter's on_full policy: deny (returns 0,
 * with retry_after_ns one emission interval), allow (the fresh-key decision, unrecorded), or
 * evict (the least-indebted key of its shard is evicted, its debt kept as the shard's floor, and
 * the new key inserted; if nothing can be evicted, as deny).
 * Returns 1 admitted, 0 denied (RES filled in both cases, RES may be NULL), or:
 *   -ERANGE        COST > B: never admissible (distinct from a denial)
 *   -ENAMETOOLONG  key longer than THR_KEY_MAX_LEN; -EINVAL empty key or NULL argument
 *   -EIDRM         the limiter was removed from the daemon's config (a handle opened before the
 *                  reload; it works again if the limiter is configured again)
 *   -EBADMSG       the limiter's parameters in the arena are corrupt
 *   -EUSERS        no free reader record for this thread (raise [arena] max_readers)
 *   -EXDEV, -ESTALE  first call of a process that left the arena's pid / time namespace
 *   -ENOMEM        the thread's first call could not allocate its record cache
 *   -EBUSY         from a signal handler that interrupted this thread's own first call on an
 *                  arena or its switch between arenas: nothing decided, call again
 * A new key whose shard insert lock is held past the limiter's insert_wait by a live process
 * (stopped, traced) gets the on_full outcome too, as does a call from a signal handler that
 * interrupted an insert into the same shard by the same thread.
 * Lock-free, thread-safe. No syscall, no lock, no allocation when the key exists; inserting a
 * new key takes the shard's insert lock (spins, yields, then naps; never longer than
 * insert_wait).
 */
int thr_limiter_try(thr_limiter *lim, const void *key, size_t key_len, uint64_t cost,
                    struct thr_result *res);

/*
 * A key handle: one key of one limiter, checked, reduced to its stored form and hashed once by
 * thr_key_init, for a caller that decides on the same key again and again (a connection's
 * client id, a route). thr_key_try remembers where it last found the key's slot and looks there
 * first: no hash and no probe while the key stays in that slot; when it does not (the key was
 * evicted, or never inserted) it probes from the kept hash, and before anything that may insert
 * hashes the kept key once more (a handle whose bytes no longer give its hash is refused).
 * Decisions are exactly thr_limiter_try's. A handle holds no resource (nothing to free); it is
 * valid while LIM is open; it may be copied, and used by many threads at once (the remembered
 * slot is one atomic word).
 */
struct thr_key {
        uint64_t priv[10]; /* private (opaque): set by thr_key_init */
};

/*
 * thr_key_init - make KH a handle of KEY (KEY_LEN bytes, 1 to THR_KEY_MAX_LEN) in LIM. Nothing is
 * looked up or inserted. Returns 0, -EINVAL (NULL argument or empty key) or -ENAMETOOLONG.
 * Thread-safe; no syscall.
 */
int thr_key_init(struct thr_key *kh, thr_limiter *lim, const void *key, size_t key_len);

/*
 * thr_key_try - thr_limiter_try on KH's limiter and key: the same decision, result and errors,
 * and -EINVAL for a handle thr_key_init did not make. Lock-free, thread-safe, no syscall when
 * the key exists.
 */
int thr_key_try(struct thr_key *kh, uint64_t cost, struct thr_result *res);

/*
 * thr_limiter_reserve - take a place for COST tokens without sleeping, and say when it is due.
 * Reservations are served in the order they were taken (each pushes the key's TAT), with no
 * coordinator; a later thr_limiter_try cannot jump ahead of them. A place is only taken if it is
 * due within MAX_WAIT_NS and within the limiter's max_reserve; otherwise nothing changes.
 * Returns 0 and fills *RV, or -EAGAIN (due later than allowed: RV->wait_ns says when it would be
 * due), -ERANGE (COST > B), -EINVAL (COST 0: nothing to reserve), -ENOSPC (a new key and a full
 * table under on_full deny, or evict with nothing evictable; under allow the place is granted at
 * once, unrecorded), and the errors of thr_limiter_try.
 * Lock-free, thread-safe, no syscall when the key exists.
 */
int thr_limiter_reserve(thr_limiter *lim, const void *key, size_t key_len, uint64_t cost,
                        uint64_t max_wait_ns, struct thr_reservation *rv);

/*
 * thr_reservation_cancel - give a reservation back, for a waiter that will not use it. It is
 * given back only if it is not yet due (a due place may have been used), at most once (RV is
 * cleared when it is given back; a kept one may be tried again later), and only if no later
 * reservation or admission was stacked on it (the key's TAT is still the one this reservation set);
 * otherwise giving it back would move the waiters behind it, and it is kept: the place is simply
 * unused. Returns 1 given back, 0 kept, -EINVAL (NULL, already given back, or taken by another
 * process: a copy of the handle in a fork child never gives back its parent's place), -EUSERS.
 * Lock-free, thread-safe, no syscall.
 */
int thr_reservation_cancel(struct thr_reservation *rv);

/*
 * thr_limiter_acquire - admit COST tokens for KEY, sleeping until they are due.
 * If the wait would exceed TIMEOUT_NS, or the limiter's max_reserve, it fails at once without
 * consuming anything. Signals do not end the sleep (it resumes until the place is due).
 * Returns 0 (admitted; RES filled if not NULL), -ETIMEDOUT (would wait too long; nothing
 * consumed), -EINVAL (COST 0), and the errors of thr_limiter_try. May sleep (clock_nanosleep).
 * Thread-safe.
 */
int thr_limiter_acquire(thr_limiter *lim, const void *key, size_t key_len, uint64_t cost,
                        uint64_t timeout_ns, struct thr_result *res);

/*
 * thr_serial_begin - take the hold on KEY of a serialized window limiter (serialize = yes):
 * wait, in FIFO order with the other waiters of every process, until the key has no holder and
 * its window, which counts completions, has room for COST units (at most N - COST units completed
 * in the last W). Returns 0 with HOLD filled: the caller is the key's only holder until it calls
 * thr_serial_end. -ETIMEDOUT: not granted within TIMEOUT_NS (nothing held, nothing counted);
 * -ERANGE: COST exceeds N; -EINVAL: COST 0, NULL HOLD, or this thread is already waiting in a
 * begin (a signal handler); -EDEADLK: this thread holds KEY already (it would wait for itself);
 * -EOPNOTSUPP: the limiter is not serialized; -ENOSPC: the key is new
 * and the table is full; -EUSERS, and the errors of thr_limiter_open's arena. Sleeps in the
 * kernel (a futex in the arena) while it waits, waking at least every 10 ms to check that the
 * holder is alive: a holder killed is released within about that, its units counted as
 * completed when its death is found. A holder that is alive but stopped keeps the hold. Not a
 * cancellation point (cancellation is disabled while it waits); not async-signal-safe.
 */
int thr_serial_begin(thr_limiter *lim, const void *key, size_t key_len, uint64_t cost,
                     uint64_t timeout_ns, struct thr_hold *hold);

/*
 * thr_serial_end - give the hold back: its COST units are logged as completed now, and the next
 * waiter, if the window has room for it, is granted the hold and woken. Only the thread that
 * began the hold may end it, once. Returns 0, -EINVAL (not this thread's hold, or already
 * ended), -ETIMEDOUT (the key's shard lock was held by a live process for a minute: the hold is
 * kept; call again). Thread-safe; not async-signal-safe.
 */
int thr_serial_end(struct thr_hold *hold);

/*
 * thr_sem_acquire - take AMOUNT units of KEY (LEN bytes) on the semaphore limiter LIM, as a lease
 * that lives TTL_NS unless extended (thr_sem_heartbeat) or released (thr_sem_release); at most
 * the limiter's max units are held per key at any instant, across every process. When they do
 * not fit now, the call waits up to TIMEOUT_NS, queued: pending acquires are served oldest
 * first (a large request at the head is never overtaken by smaller ones behind it), those of a
 * higher class (thr_sem_acquire_opts) before this call's, class 0.
 * A lease is its process's: the thread that took it may exit, any thread may release it; it is
 * reclaimed when it expires, or as soon as its process is known to be gone (thr_sem_acquire(3)).
 * TIMEOUT_NS 0 is thr_sem_try.
 * Returns 0 (LEASE filled), -ETIMEDOUT (nothing held), -ERANGE (AMOUNT > max: never grantable),
 * -ENOBUFS (every lease record of the key is in use: leases_per_key), -ENOSPC (no slot for a
 * new key), -EOPNOTSUPP (not a semaphore limiter), -EIDRM, -EINVAL, -ENAMETOOLONG, -EUSERS.
 * Thread-safe; not async-signal-safe; not a cancellation point.
 */
int thr_sem_acquire(thr_limiter *lim, const void *key, size_t len, uint32_t amount, uint64_t ttl_ns,
                    uint64_t timeout_ns, struct thr_lease *lease);

/* How an acquire waits in a semaphore key's queue (thr_sem_acquire_opts). */
#define THR_PRIORITY_MAX 7 /* classes 0 (lowest, every other call's) to 7 */
struct thr_wait_opts {
        uint32_t priority;    /* its class: higher classes are served first, FIFO within one */
        uint32_t flags;       /* 0 */
        uint64_t timeout_ns;  /* wait at most this long (0: no bound of its own) ... */
        uint64_t deadline_ns; /* ... nor past this arena time (thr_clock_now; 0: none) */
        uint64_t reserved[2]; /* 0 */
};

/*
 * thr_sem_acquire_opts - thr_sem_acquire with a class and a deadline in the key's queue. Queued
 * acquires are served highest class first, oldest first within a class, except that one lease in
 * every `priority_share` granted on a key goes to its oldest queued acquire whatever its class
 * (so the lowest class cannot starve; throttled.conf(5)). The wait ends at the earlier of
 * now + OPTS->timeout_ns and OPTS->deadline_ns (both 0: thr_sem_try); a deadline that has passed
 * when the units do not fit is refused at once, never queued. A limiter with max_waiters bounds
 * each key's queue: when it is full, on_queue_full refuses the new acquire (-EBUSY) or drops a
 * queued one (its caller gets -ECANCELED). Returns as thr_sem_acquire, and -EBUSY, -ECANCELED,
 * -EINVAL (priority above THR_PRIORITY_MAX, flags or reserved not 0).
 */
int thr_sem_acquire_opts(thr_limiter *lim, const void *key, size_t len, uint32_t amount,
                         uint64_t ttl_ns, const struct thr_wait_opts *opts,
                         struct thr_lease *lease);

/*
 * thr_sem_try - thr_sem_acquire that never waits for units: 0, or -EAGAIN when AMOUNT does not
 * fit now (or others are queued before it); -ETIMEDOUT only if a live process held the key's
 * shard lock for the limiter's insert_wait (it waits for the lock as an insert does); the
 * other errors as thr_sem_acquire.
 */
int thr_sem_try(thr_limiter *lim, const void *key, size_t len, uint32_t amount, uint64_t ttl_ns,
                struct thr_lease *lease);

/*
 * thr_sem_heartbeat - keep LEASE alive: it now expires TTL_NS from now. Returns 0,
 * -EKEYEXPIRED (it expired, or its process was found gone, and was reclaimed: nothing is held),
 * -EPERM (another process's lease: a fork child's copy of its parent's handle), -EINVAL,
 * -ETIMEDOUT (the key's shard lock was held by a live process for a minute).
 */
int thr_sem_heartbeat(struct thr_lease *lease, uint64_t ttl_ns);

/*
 * thr_sem_release - give LEASE back; the oldest queued acquires that now fit are granted.
 * Returns 0, -EKEYEXPIRED (it had expired and been reclaimed: nothing was freed twice, and no
 * other lease was touched), -EPERM (another process's lease: a fork child's copy of its
 * parent's handle; nothing freed), -EINVAL (not a lease, or released already), -ETIMEDOUT.
 */
int thr_sem_release(struct thr_lease *lease);

/*
 * A key's semaphore state (thr_sem_stat): pacman82/throttle's remainder and metrics, per key.
 */
struct thr_sem_stat {
        uint64_t max;                /* the limiter's max */
        uint64_t held;               /* units held by the key's leases */
        int64_t remainder;           /* max - held (below 0 only after a reload lowered max) */
        uint64_t leases;             /* leases held */
        uint64_t pending;            /* acquires queued */
        uint64_t pending_units;      /* units they ask for */
        uint64_t longest_pending_ns; /* how long the oldest queued acquire has waited */
        uint64_t level;              /* the limiter's lock level */
        uint64_t reserved[4];
};

/*
 * thr_sem_stat - KEY's state on the semaphore limiter LIM, exact at the call: expired leases and
 * those of dead processes or peers are reclaimed first (and the queue served), so HELD and
 * REMAINDER count live leases only. A key that does not exist holds nothing (it is not created).
 * Returns 0, -EOPNOTSUPP, -EIDRM, -EINVAL, -ENAMETOOLONG, -ETIMEDOUT (the key's shard lock was
 * held by a live process for a minute).
 */
int thr_sem_stat(thr_limiter *lim, const void *key, size_t len, struct thr_sem_stat *st);

/*
 * Budgets (kind = budget; thr_budget_spend(3)): budget-executor's balance per key, shared by every
 * process. A spend of COST succeeds while the balance lasts; otherwise it is refused ("no
 * budget", with the shortfall) or waits, FIFO, until adds make it fit. There is no refill but
 * thr_budget_add. A budget key whose balance is not its limiter's initial one is never evicted.
 */
#define THR_BUDGET_MAX_BALANCE ((1ull << 62) - 1) /* the largest balance (and cost) */

struct thr_budget_result {
        uint64_t balance;   /* the key's balance after the call (when refused: as found) */
        uint64_t shortfall; /* refused: units an add must bring before this spend fits, what the
                             * spenders queued before it need included; 0 when spent */
        uint64_t waiters;   /* spenders queued on the key when the call ended (as last counted) */
        uint64_t waited_ns; /* how long the spend waited queued (0: it never queued) */
        uint64_t reserved[4];
};

/*
 * thr_budget_spend - spend COST of KEY's balance on the budget limiter LIM, waiting up to
 * TIMEOUT_NS for adds to make it fit. Queued spends are served oldest first (a large one at the
 * head is never overtaken by smaller ones behind it, nor by a try), those of a higher class
 * (thr_budget_spend_opts) before this call's, class 0. A new key starts
 * at the limiter's initial balance. TIMEOUT_NS 0 is thr_budget_try.
 * Returns 0 (spent; RES filled if not NULL), -EAGAIN (try: no budget, RES says the shortfall;
 * nothing spent), -ETIMEDOUT (nothing spent), -ERANGE (COST above THR_BUDGET_MAX_BALANCE),
 * -EINVAL (COST 0, or this thread is queued already: a call nested in a handler), -ENOSPC (a
 * new key and no room: the table is full of keys holding balances), -EOPNOTSUPP (not a budget
 * limiter), -EIDRM, -ENAMETOOLONG, -EUSERS. Sleeps on a futex in the arena while it waits.
 * Thread-safe; not async-signal-safe; not a cancellation point.
 */
int thr_budget_spend(thr_limiter *lim, const void *key, size_t len, uint64_t cost,
                     uint64_t timeout_ns, struct thr_budget_result *res);

/*
 * thr_budget_spend_opts - thr_budget_spend with a class and a deadline in the key's queue
 * (struct thr_wait_opts, as thr_sem_acquire_opts): queued spends are served highest class first,
 * oldest first within a class, one grant in every `priority_share` to the oldest whatever its
 * class; the wait ends at the earlier of now + OPTS->timeout_ns and OPTS->deadline_ns (both 0:
 * thr_budget_try), and a spend that does not fit when its deadline has passed is refused at once
 * (-ETIMEDOUT). Returns as thr_budget_spend, and -EINVAL for a class above THR_PRIORITY_MAX or
 * flags or reserved not 0. A budget's queue is not bounded (max_waiters is a semaphore's).
 */
int thr_budget_spend_opts(thr_limiter *lim, const void *key, size_t len, uint64_t cost,
                          const struct thr_wait_opts *opts, struct thr_budget_result *res);

/*
 * thr_budget_try - spend COST now or not at all: lock-free, no syscall on an existing key (one
 * CAS). Refused (-EAGAIN) when the balance is short or spenders are queued (they go first). COST 0
 * is a peek: returns 0 with the balance, changes and creates nothing. Errors as thr_budget_spend.
 */
int thr_budget_try(thr_limiter *lim, const void *key, size_t len, uint64_t cost,
                   struct thr_budget_result *res);

/*
 * thr_budget_add - add AMOUNT to KEY's balance (created at the initial balance if new) and grant
 * the queued spends that now fit, oldest first, waking them. Lock-free when nobody is queued;
 * else under the key's shard lock. Returns 0 (RES: the balance after, the spenders still
 * queued), -EOVERFLOW (the balance would pass THR_BUDGET_MAX_BALANCE: nothing added), -EINVAL
 * (AMOUNT 0), -ENOSPC, -ETIMEDOUT (the key's shard lock was held by a live process for a minute:
 * nothing added), and the errors of thr_budget_spend. Thread-safe; not async-signal-safe.
 */
int thr_budget_add(thr_limiter *lim, const void *key, size_t len, uint64_t amount,
                   struct thr_budget_result *res);

/* A budget key's state (thr_budget_stat): budget-executor's "no budget" visible from outside. */
struct thr_budget_stat {
        uint64_t balance;            /* the balance now */
        uint64_t initial;            /* the limiter's initial balance (a new key's) */
        uint64_t waiters;            /* spenders queued (paused: "no budget") */
        uint64_t need;               /* units they ask for in all */
        uint64_t head_need;          /* units the one served next asks for */
        uint64_t longest_pending_ns; /* how long the oldest has waited */
        uint64_t granted;            /* spends granted to queued spenders so far */
        uint64_t reserved[4];
};

/*
 * thr_budget_stat - KEY's state on the budget limiter LIM, exact at the call (the queue is served
 * first, dead waiters dropped). A key that does not exist has the initial balance (it is not
 * created). Returns 0, -EOPNOTSUPP, -EIDRM, -EINVAL, -ENAMETOOLONG, -ETIMEDOUT.
 */
int thr_budget_stat(thr_limiter *lim, const void *key, size_t len, struct thr_budget_stat *st);

/*
 * Circuit breakers (kind = breaker, thr_breaker_allow(3)): per key closed / open / half-open,
 * shared by every process of the host. Callers ask before calling a downstream and report the
 * outcome; the breaker trips on consecutive failures or on a failure rate over a sliding window,
 * refuses calls for a cooldown, then lets a few probes through (across all processes) whose
 * outcomes close it or open it again. A probe not reported within probe_timeout (its holder died,
 * or hangs) is given up, so another may probe: no dead process wedges a breaker.
 */
#define THR_BREAKER_CLOSED    0u
#define THR_BREAKER_OPEN      1u
#define THR_BREAKER_HALF_OPEN 2u

/* thr_breaker_report's outcome */
#define THR_OUTCOME_SUCCESS 1u
#define THR_OUTCOME_FAILURE 2u
#define THR_OUTCOME_IGNORE  3u /* neither: a probe gives its place back, nothing counts */

/* thr_breaker_ticket's flags */
#define THR_BREAKER_UNTRACKED 1u /* on_full = allow let it through unrecorded: report ignored */

/* What thr_breaker_allow hands out: report it once with thr_breaker_report. */
struct thr_breaker_ticket {
        uint32_t probe;   /* 1: a half-open probe (its outcome decides the breaker) */
        uint32_t flags;   /* THR_BREAKER_UNTRACKED */
        uint64_t priv[6]; /* private: which key, which period, when, which process (opaque) */
};

/* A breaker key's state (thr_breaker_allow, thr_breaker_stat). */
struct thr_breaker_status {
        uint32_t state;                /* THR_BREAKER_CLOSED, _OPEN or _HALF_OPEN */
        uint32_t consecutive_failures; /* saturating at 255 */
        uint32_t probes_in_flight;     /* half-open: probes handed out, not reported */
        uint32_t half_open_successes;  /* half-open: probe successes so far */
        uint64_t window_calls;         /* reported calls in the sliding window (closed) */
        uint64_t window_failures;      /* of those, failures */
        uint64_t retry_after_ns;       /* 0 if a call may go ahead now; open: until half-open;
                                        * half-open with every probe out: until they are given up
                                        * at the latest */
        uint64_t reserved[4];
};

/*
 * thr_breaker_allow - may a call to KEY's downstream go ahead? Closed: yes (TICKET->probe 0).
 * Open: no, until `cooldown` after it opened. Half-open: yes as a probe (TICKET->probe 1) while
 * fewer than `probes` are out across all processes, else no. ST (may be NULL) gets the state
 * after the decision. A new key is inserted closed (the insert takes its shard's lock; on a full
 * table on_full applies: deny is -ENOSPC, allow lets the call through untracked, evict evicts an
 * idle closed key).
 * Returns 0 go ahead (report the outcome with thr_breaker_report), -EAGAIN refused (ST's
 * retry_after_ns says for how long at least), -EOPNOTSUPP (not a breaker), -ENOSPC, -EBADMSG (its
 * state word or record is corrupt), -EIDRM, -EINVAL (NULL), -ENAMETOOLONG, -EUSERS.
 * Lock-free, thread-safe; on an existing key no syscall and no lock (a closed go-ahead is one
 * load, a probe one CAS).
 */
int thr_breaker_allow(thr_limiter *lim, const void *key, size_t len,
                      struct thr_breaker_ticket *ticket, struct thr_breaker_status *st);

/*
 * thr_breaker_report - report the OUTCOME (THR_OUTCOME_SUCCESS, _FAILURE, _IGNORE) of the call
 * TICKET let through, once: the ticket is spent (zeroed) by the call. Closed: a failure counts
 * toward the trip rules, a success clears the consecutive failures. Half-open (a probe): a
 * failure opens the breaker again, `successes` successes close it, IGNORE frees the place.
 * A report of a call handed out 21 x min(cooldown, probe_timeout) ago or more is ignored: the
 * breaker's period number (6 bits) may have come round again by then. A ticket is reported by the
 * process it was handed out in (a fork child's copy: -EINVAL); a copy of a ticket reported after
 * the original is not detected within one process: do not copy tickets.
 * Returns 0 counted, 1 ignored (the breaker moved on since the ticket: it tripped, the probe was
 * given up after probe_timeout, or the key was evicted; the call was out too long; or the ticket
 * is untracked), -EINVAL (bad outcome, a ticket of another limiter or process, or one spent
 * already), -EBADMSG. Lock-free, thread-safe, no syscall.
 */
int thr_breaker_report(thr_limiter *lim, struct thr_breaker_ticket *ticket, uint32_t outcome);

/*
 * thr_breaker_stat - KEY's state now (ST); a key that does not exist is closed and empty (it is
 * not created). Returns 0, -EOPNOTSUPP, -EBADMSG, -EIDRM, -EINVAL, -ENAMETOOLONG. Lock-free.
 */
int thr_breaker_stat(thr_limiter *lim, const void *key, size_t len, struct thr_breaker_status *st);

/*
 * Composed calls (thr_compose_try(3)): several limits decided together, all or nothing
 * (throttle-net's multi-dimensional and layered limits: requests, input tokens and output tokens
 * per tenant, inside a host-wide ceiling). Members are keys of GCRA, window (not serialized) or
 * budget limiters of one arena, each with its cost.
 */
#define THR_COMPOSE_MAX_MEMBERS 8

struct thr_member {
        thr_limiter *lim;
        const void *key;
        size_t len;
        uint64_t cost; /* 0: a peek at that member (it only has to fit) */
};

struct thr_compose_result {
        int admitted;            /* 1: every member consumed its cost; 0: none did */
        uint32_t denied;         /* denied: the index of the first member that did not fit */
        uint64_t retry_after_ns; /* denied: the longest of the denying members' retry_after
                                  * (UINT64_MAX when a budget denied: only an add helps) */
        uint64_t remaining[THR_COMPOSE_MAX_MEMBERS]; /* each member's tokens, units or balance
                                                      * left (as decided) */
        uint64_t reserved[4];
};

/*
 * thr_compose_try - decide N members (1 to THR_COMPOSE_MAX_MEMBERS) at once: admitted only if
 * every member admits its cost now, and then all of them are consumed; otherwise none is (nothing
 * stays consumed, nothing to give back). Other callers see every member before the call or after
 * it, never between. A caller killed at any point leaves the keys as if the call never happened
 * or as if it completed, once a caller that meets one of its keys, or the daemon, settles it.
 * Returns 1 admitted, 0 denied (RES says which and when to retry), or: -EINVAL (N out of range,
 * a NULL member, the same key twice, limiters of different arenas), -EBUSY also when this thread
 * is in a composed call already (a signal handler's), -ENOSPC (a member's key is new and its
 * table has no room, whatever on_full says; every member's key is created first, charged
 * nothing), -EOPNOTSUPP (a semaphore or
 * serialized window member), -ERANGE (a cost above its limiter's burst or limit), -EBUSY (other
 * calls kept settling its keys under it: nothing consumed, call again), -EBADMSG, and the errors
 * of thr_limiter_try. Lock-free (no syscall, no lock on existing keys); new keys are inserted as
 * a try inserts them. Thread-safe; not async-signal-safe.
 */
int thr_compose_try(const struct thr_member *members, size_t n, struct thr_compose_result *res);

/* What an admitted composed call consumed, for thr_compose_refund. */
struct thr_compose_ticket {
        uint64_t admitted_ns; /* arena time of the admission */
        uint32_t n;           /* members; 0: nothing to refund (refunded, or not admitted) */
        uint32_t pad;
        uint64_t priv[64]; /* private: what thr_compose_refund needs (opaque) */
};

/*
 * thr_compose_take - thr_compose_try that also fills TICKET when admitted (cleared otherwise).
 * thr_compose_acquire - the waiting form: tries, and while denied sleeps until the slowest
 * member would fit (its retry_after; a budget member, which no time makes fit, is tried again
 * every 10 ms), up to TIMEOUT_NS. It does not queue: a lone call may get ahead of it. Returns 1
 * (TICKET filled if not NULL), -ETIMEDOUT (nothing consumed), or the errors of thr_compose_try.
 */
int thr_compose_take(const struct thr_member *members, size_t n, struct thr_compose_result *res,
                     struct thr_compose_ticket *ticket);
int thr_compose_acquire(const struct thr_member *members, size_t n, uint64_t timeout_ns,
                        struct thr_compose_result *res, struct thr_compose_ticket *ticket);

/*
 * thr_compose_refund - give back what an admitted composed call consumed, for a caller that did
 * not use it (a request that failed before reaching the downstream). Per member, what can be given
 * back (GIVEN[i] says how much, in the member's own units, when GIVEN is not NULL):
 *   budget: always its whole cost (added back; waiters that then fit are granted);
 *   window: its whole cost if no unit was admitted on that key since (the key's count is still the
 *           one the call left) and its units are still in the window (less than W old); otherwise
 *           nothing: its units stay counted until they leave the window;
 *   GCRA:   the part of its cost not yet drained: min(cost, (TAT the call left - now) / T) tokens,
 *           taken off the key's TAT now (whatever was admitted since: that part is this call's);
 *           nothing once the call's TAT has passed (the tokens came back by themselves).
 * A key evicted or reused since gives nothing back. Once only: the ticket is cleared. Returns the
 * number of members given back in full, -EINVAL (not a ticket of this process, or used), -EUSERS.
 */
int thr_compose_refund(struct thr_compose_ticket *ticket, uint64_t *given);

/*
 * Named groups (thr_group_open(3)): the daemon's config names a composed call's limiters once,
 * `[llm]` / `compose = llm_requests, llm_input, llm_output`, and a service calls the group by
 * name, giving each member's key and cost in the config's order.
 */
typedef struct thr_group thr_group;

struct thr_group_arg {
        const void *key; /* NULL: the first member's key */
        size_t len;
        uint64_t cost;
};

/*
 * thr_group_open - find the group NAME of the daemon's config in ARENA and open its members.
 * Returns 0 and sets *OUT, or -ENOENT (no such group), -EIDRM (a member was removed by a reload
 * since), -EBADMSG (the groups' table is corrupt), -EINVAL, -ENOMEM. Thread-safe; allocates.
 * thr_group_size - its members (the length of the ARGS arrays below). thr_group_close - free it.
 * thr_group_try, thr_group_take, thr_group_acquire - thr_compose_try, _take, _acquire on the
 * group's members with ARGS[i] for member i.
 */
int thr_group_open(thr_arena *arena, const char *name, thr_group **out);
int thr_group_size(const thr_group *group);
int thr_group_try(thr_group *group, const struct thr_group_arg *args,
                  struct thr_compose_result *res);
int thr_group_take(thr_group *group, const struct thr_group_arg *args,
                   struct thr_compose_result *res, struct thr_compose_ticket *ticket);
int thr_group_acquire(thr_group *group, const struct thr_group_arg *args, uint64_t timeout_ns,
                      struct thr_compose_result *res, struct thr_compose_ticket *ticket);
int thr_group_close(thr_group *group);

/*
 * Peers (thr_peer_open(3)): one holder of locks on any number of semaphore keys, with one expiry.
 * A heartbeat keeps all its locks; its expiry, thr_peer_close, or its process dying releases all.
 * Acquires through a peer are idempotent (the same count again changes nothing) and obey lock
 * levels: a peer holding (or waiting for) a lock at level L may only acquire locks at levels
 * below L; anything else is refused at once with -EDEADLK ("lock hierarchy violation").
 * Unlike the calls above, the peer calls take a mutex of the peer's handle: none is
 * async-signal-safe (a handler must not call them), none is a cancellation point.
 */
typedef struct thr_peer thr_peer;

/* thr_peer_acquire's FLAGS: a peer that holds the key with another count changes it in place
 * (fewer: always; more: only if they fit now and nobody is queued, else -EAGAIN, the lock kept) */
#define THR_PEER_RECOUNT 1u

/*
 * thr_peer_open - a new peer in ARENA whose locks expire EXPIRES_IN_NS from now unless
 * prolonged (thr_peer_heartbeat). It is this process's: a fork child's copy is refused (-EPERM).
 * Returns 0 and *OUT, -EINVAL, -ENOMEM, -EUSERS (no reader record free: [arena] max_readers).
 */
int thr_peer_open(thr_arena *arena, uint64_t expires_in_ns, thr_peer **out);

/*
 * thr_peer_acquire - lock COUNT units of KEY on the semaphore limiter LIM for PEER, waiting up to
 * TIMEOUT_NS (0: never wait) in the key's FIFO queue. Idempotent: if PEER holds KEY already with
 * COUNT, returns 0 and changes nothing (a retry after a timeout cannot drain the semaphore twice);
 * with another count, -EEXIST unless FLAGS has THR_PEER_RECOUNT.
 * Returns 0 (held), -EAGAIN (a try that does not fit), -ETIMEDOUT, -EDEADLK (lock hierarchy
 * violation: PEER holds or waits for a lock at LIM's level or below), -EALREADY (another thread
 * of PEER is acquiring KEY), -EEXIST, -EKEYEXPIRED (the peer has expired: nothing it held is held
 * any more; close it and open another), -EPERM (another process's peer), -ERANGE (COUNT > max),
 * -ENOBUFS, -ENOSPC, -EOPNOTSUPP, -EIDRM, -EINVAL, -ENAMETOOLONG, -ENOMEM.
 * Thread-safe (several threads may acquire for one peer); not a cancellation point.
 */
int thr_peer_acquire(thr_peer *peer, thr_limiter *lim, const void *key, size_t len, uint32_t count,
                     uint64_t timeout_ns, unsigned flags);

/* thr_peer_release - release PEER's lock on KEY of LIM. 0; -ENOENT (PEER holds no lock there);
 * -EKEYEXPIRED (the peer had expired: the lock was void already); -EPERM; -EINVAL. */
int thr_peer_release(thr_peer *peer, thr_limiter *lim, const void *key, size_t len);

/* thr_peer_heartbeat - every lock of PEER now expires EXPIRES_IN_NS from now. 0; -EKEYEXPIRED
 * (it had expired: final, its locks are void); -EPERM; -EINVAL. One CAS, no syscall. */
int thr_peer_heartbeat(thr_peer *peer, uint64_t expires_in_ns);

/* thr_peer_pending - how many acquires of PEER are waiting now (0: every lock it asked for is
 * held: pacman82/throttle's is_acquired). -EINVAL, -EPERM. */
int thr_peer_pending(const thr_peer *peer);

/* thr_peer_expires - the arena time PEER's locks expire at; 0 if it has expired. */
uint64_t thr_peer_expires(const thr_peer *peer);

/*
 * thr_peer_close - remove PEER: release every lock it holds (the oldest queued acquires that now
 * fit are granted), make it dead, give its record back, free the handle. Returns 0, or -EBUSY
 * (an acquire of PEER is in progress in another thread: nothing done). In a fork child, frees the
 * copy of the handle and touches nothing in the arena. Call it before closing the arena.
 */
int thr_peer_close(thr_peer *peer);

/*
 * Outbound feedback (thr_feedback_header(3)): what a downstream's response headers say about its
 * limits, read into one structure that a caller can apply to its own limiters. Pure functions: no
 * arena, no syscall (but the real-time clock when NOW_UNIX_NS is 0), thread-safe.
 */
#define THR_FEEDBACK_RETRY_AFTER 1u /* struct thr_feedback's has */
#define THR_FEEDBACK_REMAINING   1u /* struct thr_feedback_dim's has */
#define THR_FEEDBACK_RESET       2u
#define THR_FEEDBACK_LIMIT       4u
#define THR_FEEDBACK_WINDOW      8u

/* One dimension of a downstream's limit; a field counts only if its bit is in HAS. */
struct thr_feedback_dim {
        uint32_t has;
        uint32_t pad;
        uint64_t remaining; /* requests (tokens) left in its current window: the least said */
        uint64_t reset_ns;  /* until that window resets, from the reading: the latest said */
        uint64_t limit;     /* its quota per window: the least said */
        uint64_t window_ns; /* its window (RateLimit-Policy's w): the longest said */
};

struct thr_feedback {
        uint32_t has; /* THR_FEEDBACK_RETRY_AFTER */
        uint32_t pad;
        uint64_t retry_after_ns;          /* wait at least this long from the reading */
        struct thr_feedback_dim requests; /* X-RateLimit-*, RateLimit*, *-Requests */
        struct thr_feedback_dim tokens;   /* X-RateLimit-*-Tokens (an LLM API's second limit) */
        uint64_t reserved[4];
};

/* thr_feedback_init - FB with nothing read yet (all zero). */
void thr_feedback_init(struct thr_feedback *fb);

/*
 * thr_feedback_header - read one response header NAME: VALUE into FB, folding it with what FB
 * holds (the least remaining and limit, the latest reset, window and retry-after; of a
 * structured field's several quotas, the binding one with its own reset). NOW_UNIX_NS is the
 * time of the response (ns since 1970; 0: read CLOCK_REALTIME), against which an HTTP-date or a
 * Unix-time reset is turned into a delay. Names are matched without case: Retry-After,
 * X-RateLimit-{Remaining,Reset,Reset-After,Limit}[-Requests|-Tokens], RateLimit-{Remaining,Reset,
 * Limit}, RateLimit and RateLimit-Policy (the IETF draft's structured fields).
 * Returns 1 (read), 0 (a header about something else: FB unchanged), -EINVAL (malformed value:
 * FB unchanged), -ERANGE (a number too large: FB unchanged), -E2BIG (more than 16 list members).
 */
int thr_feedback_header(struct thr_feedback *fb, const char *name, size_t name_len,
                        const char *value, size_t value_len, int64_t now_unix_ns);

/*
 * thr_retry_after_parse - a Retry-After value (RFC 9110 10.2.3: delay-seconds, or an HTTP-date in
 * IMF-fixdate, RFC 850 or asctime form) as a delay in ns from NOW_UNIX_NS (0: CLOCK_REALTIME); a
 * date already past is 0. Returns 0, -EINVAL (malformed), -ERANGE (too large).
 */
int thr_retry_after_parse(const char *value, size_t len, int64_t now_unix_ns, uint64_t *delay_ns);

/*
 * thr_limiter_hold - what a downstream said ("retry after D", "nothing left until D"), applied to
 * a GCRA limiter's KEY for every process of the arena: no request is admitted before now +
 * DELAY_NS; at that time one request of cost 1 is, then the configured rate (the burst is back
 * (B-1)*T later). The key's TAT is raised to now + DELAY_NS + (B-1)*T, never lowered: a key held
 * longer already, or with reservations past that, is left as it is, and no call here ever admits
 * more than the limiter's configuration would. A hold reaches at most B*T + max_reserve past now
 * (as far as a reservation may push the key): a longer one is shortened to that. A new key is
 * inserted held. RES (optional), after the call: remaining, the tokens left now; retry_after_ns,
 * when a request of cost 1 fits (admitted: 1 if now); reset_after_ns, when the key is full.
 * With on_full = evict, a held key evicted for room (only when every other key of its shard holds
 * as much) leaves its hold to the shard's floor, as any evicted key's debt: new keys of that shard
 * start held until it ends. Returns 0 (applied, or held that long already), 1 (the hold asked
 * for reaches past the limiter's reach, and was shortened to it or held there already: raise
 * max_reserve for longer holds), -EOPNOTSUPP (not a GCRA limiter), -ENOSPC (a new key and a
 * full table, whatever on_full says: nothing held), or the errors of thr_limiter_try.
 * Lock-free on an existing key (one CAS, no syscall); thread-safe.
 */
int thr_limiter_hold(thr_limiter *lim, const void *key, size_t key_len, uint64_t delay_ns,
                     struct thr_result *res);

/*
 * thr_limiter_cap - at most TOKENS of KEY's capacity left now (a downstream's "remaining N"),
 * for every process of the arena; it refills at the configured rate from there. The TAT is
 * raised to now + (B - TOKENS)*T, never lowered (TOKENS >= B, or a key with fewer left: nothing
 * changes). RES and the return values as thr_limiter_hold's (never 1).
 */
int thr_limiter_cap(thr_limiter *lim, const void *key, size_t key_len, uint64_t tokens,
                    struct thr_result *res);

#define THR_FEEDBACK_USE_TOKENS 1u /* thr_feedback_apply's flags: FB's tokens, not its requests */

/*
 * thr_feedback_apply - apply what thr_feedback_header read into FB to a GCRA limiter's KEY: a
 * Retry-After, and the reset of a window with nothing remaining, hold the key that long
 * (thr_limiter_hold; the longer of the two); a count remaining caps it (thr_limiter_cap; 0
 * remaining without a reset: none now). A limit or window alone changes nothing: the limiter's
 * own configuration stays the ceiling. One limiter counts one unit: the requests dimension, or
 * with THR_FEEDBACK_USE_TOKENS in FLAGS, the tokens one. RES (optional) as thr_limiter_hold's.
 * Returns 0, 1 (the hold was shortened, as thr_limiter_hold), -EINVAL (FB NULL, unknown FLAGS),
 * or the errors of thr_limiter_hold. Thread-safe.
 */
int thr_feedback_apply(thr_limiter *lim, const void *key, size_t key_len,
                       const struct thr_feedback *fb, unsigned flags, struct thr_result *res);

/* Backoff between retries (thr_backoff_delay(3)). */
#define THR_BACKOFF_CONSTANT    0u /* struct thr_backoff's kind */
#define THR_BACKOFF_LINEAR      1u
#define THR_BACKOFF_EXPONENTIAL 2u
#define THR_JITTER_NONE         0u /* struct thr_backoff's jitter */
#define THR_JITTER_FULL         1u
#define THR_JITTER_EQUAL        2u
#define THR_JITTER_DECORRELATED 3u

struct thr_backoff {
        uint32_t kind;    /* THR_BACKOFF_* (not used by decorrelated jitter) */
        uint32_t jitter;  /* THR_JITTER_* */
        uint64_t base_ns; /* the first delay, > 0 */
        uint64_t cap_ns;  /* no delay is longer (0: no cap); >= base_ns */
        uint64_t reserved[2];
};

/*
 * thr_backoff_delay - the delay before retry ATTEMPT (0: the first retry), as Brooker's
 * "Exponential Backoff And Jitter" (AWS, 2015) defines each policy: d = min(cap, base),
 * min(cap, base * (attempt + 1)) or min(cap, base * 2^attempt); full jitter: uniform in [0, d];
 * equal: d/2 + uniform in [0, d/2]; decorrelated: min(cap, uniform in [base, 3 * PREV_NS]) with
 * PREV_NS the previous delay (0 at first: base). RANDOM: 64 uniformly random bits from the
 * caller's generator (unused without jitter), so the result is reproducible.
 * Returns 0, -EINVAL (NULL, unknown kind or jitter, base 0, cap below base). Pure, thread-safe.
 */
int thr_backoff_delay(const struct thr_backoff *b, uint32_t attempt, uint64_t prev_ns,
                      uint64_t random, uint64_t *delay_ns);

/*
 * thr_limiter_overload - COUNT calls made after LIM admitted them were refused or failed by the
 * downstream for overload (a 429, a 503, a timeout): recorded in this thread's own counters (no
 * write another thread makes, no syscall after the thread's first call). A limiter configured
 * with adaptive = aimd (throttled.conf(5)) is cut by the daemon at the end of an interval in
 * which any was recorded, and raised when none was and its limit was binding. On other
 * limiters the count is only exported (throttle_overload_total). Returns 0, -EINVAL, -EIDRM
 * (removed by a reload), or the errors of a thread's registration. Async-signal-safe once the
 * thread has registered; thread-safe.
 */
int thr_limiter_overload(thr_limiter *lim, uint64_t count);

/*
 * thr_clock_now - the arena's time in ns since its epoch. Returns 0, or -EINVAL for NULL.
 * No syscall (vDSO).
 */
int thr_clock_now(thr_arena *arena, uint64_t *now_ns);

/*
 * thr_clock_advance - move a manual-clock arena's time forward by DELTA_NS.
 * Returns 0, -EINVAL for NULL, or -EPERM on a real-clock arena (explicit time never comes
 * from callers there).
 * Thread-safe (atomic add).
 */
int thr_clock_advance(thr_arena *arena, uint64_t delta_ns);

/*
 * thr_strerror - a message for a -errno returned by this library, naming throttle's meaning
 * of it where it has one (e.g. -ERANGE: "cost exceeds the limiter's burst"). Never NULL.
 */
const char *thr_strerror(int err);

#ifdef __cplusplus
}
#endif
#endif
