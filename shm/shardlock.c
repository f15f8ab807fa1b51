/*
 * shardlock.c - a shard's insert lock: one 64-bit word in the arena that changes only by CAS.
 *
 * Why not a robust pthread mutex (what this replaced): glibc links a held robust mutex into the
 * locking thread's robust list and, on unlock, writes through the list pointers stored inside the
 * mutex, in shared memory. Any client can rewrite them, so a daemon that locked one could be made
 * to write where a client chose (shown: SIGSEGV in 5 s). And a robust mutex names its owner by a
 * thread id, which means nothing across pid namespaces. Here the lock is data: nobody ever
 * dereferences anything read from it, and its owner is named by what the arena already tracks.
 *
 * The word: 0 when free; otherwise who holds it.
 *   client:  bit 63 clear | reader record index + 1 in bits 62..40 | low 40 bits of that
 *            record's owner token (the thread's record in this arena: reader.c)
 *   daemon:  bit 63 set | the daemon's attach number (hdr.attach_count after it attached)
 * Taken by CAS 0 -> me (acquire), given back by CAS me -> 0 (release: the shard's slots and
 * counts written under the lock are seen by the next holder, whose CAS acquires).
 *
 * A holder that died: a client holder is gone when its record no longer carries the token (the
 * daemon freed the record of a dead process) or when the record's liveness lock is free (its
 * process died) or is held only by a descriptor that outlived the pid written in the record (a
 * _Fork child's copy, readers.c); a daemon holder is gone when another daemon has attached since
 * (the attach number moved on) or when nobody holds the daemon lock. Whoever finds the holder gone
 * takes the lock over by CAS from the value it judged (two takers cannot both win) and repairs
 * the shard before using it: a slot the dead holder left BUSY is made reusable (it was never LIVE,
 * so no reader holds it) and the live count is recounted, exact because every change of it is
 * made under this lock.
 *
 * A holder that is alive but does not move (SIGSTOP, a debugger, the cgroup freezer, a daemon
 * stopped mid-pass) is never taken over: a waiter gives up after WAIT_NS and the caller applies the
 * limiter's on_full policy. So an insert never waits longer than that bound, whatever another
 * process does. A holder that waits for its own lock (a signal handler that interrupted an insert
 * of the same thread) gets -EDEADLK at once. While waiting, cancellation is disabled: the wait
 * sleeps, and a thread must not be cancelled with the shard half-judged. The daemon never waits
 * for a holder that does not move: it tries the lock, and lets a client that waits for it or holds
 * it go first for a bounded time (below).
 *
 * Handing over. The daemon's pass over a shard takes the lock once per segment and takes it again
 * a few instructions after it let it go: a waiter that polls with pauses, yields and naps almost
 * never saw it free, and waited for the whole shard's maintenance (churn at one process: 330 waits
 * in 0.12 s, 70-90 us each, every one on the daemon; bench/results/2026-12-05/issue12_handoff.txt).
 * So a waiter announces itself: the shard's lock_wanted holds the CLOCK_MONOTONIC time it began
 * waiting, renewed at each liveness check, and is cleared when it stops waiting, by a CAS from its
 * own stamp (another waiter's stays). shm_shard_handoff, called by the daemon before it tries the
 * lock for each segment, sees a stamp younger than THR_HANDOFF_FRESH_NS and waits, spinning, a
 * bounded time for somebody to take the lock and then to give it back (or, if a client holds it
 * already, only for that). The word is advisory, a hint of who should go next:
 * a waiter killed while waiting leaves a stamp that goes stale within THR_HANDOFF_FRESH_NS, one
 * a client scribbles costs the daemon at most its bounded window per call (and the daemon caps
 * the time it spends so per pass: reclaim.c); who holds the lock never depends on it. Stamps
 * compare across processes because every process of an arena on the real clock reads the same
 * CLOCK_MONOTONIC (shm_arena_check_clock refuses one in another time namespace); a waiter of a
 * manual-clock arena in another namespace is merely never handed the lock (as before).
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <time.h>

#include "shm.h"

#define CLIENT_IDX_SHIFT    40
#define TOKEN_MASK          ((1ull << CLIENT_IDX_SHIFT) - 1)
#define SPINS               128       /* busy polls before the first liveness check */
#define CHECK_EVERY_NS      200000ull /* liveness checks (syscalls) at most this often */
#define NAP_AFTER_NS        100000ull /* yield first, then sleep in naps of NAP_NS */
#define NAP_NS              50000ull
#define NAP_AFTER_DAEMON_NS 1000000ull /* behind the daemon: see wait_loop */

static_assert(THR_MAX_READERS < (1u << (63 - CLIENT_IDX_SHIFT)), "reader index fits the word");

uint64_t shm_lock_client(uint32_t reader_idx, uint64_t token)
{
        return ((uint64_t)(reader_idx + 1) << CLIENT_IDX_SHIFT) | (token & TOKEN_MASK);
}

uint64_t shm_lock_daemon(uint64_t attach)
{
        return THR_LOCK_DAEMON | (attach & ~THR_LOCK_DAEMON);
}

bool shm_lock_holder_gone(const struct shm_map *m, uint64_t v)
{
        const struct thr_hdr *h = shm_hdr(m);
        if (v & THR_LOCK_DAEMON) {
                uint64_t now = atomic_load_explicit(&h->attach_count, memory_order_acquire);
                return (v & ~THR_LOCK_DAEMON) != (now & ~THR_LOCK_DAEMON) ||
                       shm_daemon_alive(m, NULL) == 0;
        }
        uint64_t idx = (v >> CLIENT_IDX_SHIFT) - 1;
        if (idx >= m->g.reader_count)
                return true; /* no such record: nobody can be holding it (a corrupt word) */
        const struct thr_reader *r =
            (const struct thr_reader *)shm_at(m->base, m->g.reader_off) + idx;
        uint64_t owner = atomic_load_explicit(&r->owner, memory_order_acquire);
        if ((owner & TOKEN_MASK) != (v & TOKEN_MASK))
                return true; /* the record was freed: its holder's process is gone */
        return shm_reader_gone(m->fd, r, (uint32_t)idx) == 1;
}

/* V was judged gone: take the lock from it, then repair what its holder may have left. */
static bool take_over(struct shm_probe *p, uint64_t v, uint64_t me)
{
        if (!atomic_compare_exchange_strong_explicit(&p->shard->lock, &v, me, memory_order_acq_rel,
                                                     memory_order_relaxed))
                return false;
        shm_shard_repair(p);
        return true;
}

/* One attempt on a free lock: 0 taken, 1 held (*V: by whom), -EINVAL (ME is no holder's name). */
static int take_free(struct shm_probe *p, uint64_t me, uint64_t *v)
{
        if (!me)
                return -EINVAL; /* 0 is "free": a holder needs a name */
        *v = 0;
        return atomic_compare_exchange_strong_explicit(&p->shard->lock, v, me, memory_order_acquire,
                                                       memory_order_relaxed)
                   ? 0
                   : 1;
}

bool shm_shard_lock_free(struct shm_probe *p, uint64_t me)
{
        uint64_t v;
        return take_free(p, me, &v) == 0;
}

int shm_shard_trylock(const struct shm_map *m, struct shm_probe *p, uint64_t me)
{
        uint64_t v;
        int rc = take_free(p, me, &v);
        if (rc <= 0)
                return rc;
        if (v == me)
                return -EDEADLK;
        return shm_lock_holder_gone(m, v) && take_over(p, v, me) ? 0 : -EBUSY;
}

static uint64_t mono_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* One step of a wait that started at START: spin, then yield, then nap. */
static void pause_once(unsigned spins, uint64_t waited, uint64_t nap_after)
{
        if (spins < SPINS) {
#if defined(__x86_64__) || defined(__i386__)
                __builtin_ia32_pause();
#endif
                return;
        }
        if (waited < nap_after) {
                sched_yield();
                return;
        }
        struct timespec nap = {0, (long)NAP_NS};
        nanosleep(&nap, NULL); /* cancellation is disabled around the wait */
}

/* Announce a wait for P's lock at NOW (shm_shard_handoff): the stamp this waiter last stored. */
static uint64_t announce(struct shm_probe *p, uint64_t now)
{
        uint64_t stamp = now ? now : 1;
        atomic_store_explicit(&p->shard->lock_wanted, stamp, memory_order_relaxed);
        return stamp;
}

static int wait_loop(const struct shm_map *m, struct shm_probe *p, uint64_t me, uint64_t wait_ns,
                     uint64_t *stamp)
{
        uint64_t start = 0, checked = 0;
        bool counted = false;
        for (unsigned spins = 0;; spins++) {
                uint64_t v = atomic_load_explicit(&p->shard->lock, memory_order_relaxed);
                if (v == 0) {
                        if (atomic_compare_exchange_weak_explicit(&p->shard->lock, &v, me,
                                                                  memory_order_acquire,
                                                                  memory_order_relaxed))
                                return 0;
                        continue;
                }
                if (v == me)
                        return -EDEADLK; /* our own thread holds it: it cannot be released */
                if (spins < SPINS) {
                        pause_once(spins, 0, 0);
                        continue;
                }
                uint64_t now = mono_ns();
                if (!start) {
                        start = now;
                        checked = now - CHECK_EVERY_NS;
                }
                if (now - checked >= CHECK_EVERY_NS) {
                        checked = now;
                        *stamp = announce(p, now); /* still waiting: the stamp stays fresh */
                        if (shm_lock_holder_gone(m, v) && take_over(p, v, me))
                                return 0;
                }
                if (!counted) {
                        atomic_fetch_add_explicit(&p->shard->lock_waits, 1, memory_order_relaxed);
                        counted = true;
                }
                if (now - start >= wait_ns) {
                        atomic_fetch_add_explicit(&p->shard->lock_timeouts, 1,
                                                  memory_order_relaxed);
                        return -ETIMEDOUT;
                }
                /* the daemon holds a shard for one segment at a time and hands it to a waiter
                 * between two (shm_shard_handoff, 100 us at most): a waiter in a 50 us nap (more
                 * with the timer's slack) missed those windows, so behind the daemon it yields
                 * for longer before it naps (a stopped daemon then costs a waiter 1 ms of
                 * yields, then naps as before) */
                pause_once(spins, now - start,
                           v & THR_LOCK_DAEMON ? NAP_AFTER_DAEMON_NS : NAP_AFTER_NS);
        }
}

/* Wait for P's lock, announced (see the top of this file) until this waiter stops waiting. */
static int wait_for(const struct shm_map *m, struct shm_probe *p, uint64_t me, uint64_t wait_ns)
{
        uint64_t stamp = announce(p, mono_ns());
        int rc = wait_loop(m, p, me, wait_ns, &stamp);
        /* only this waiter's own stamp: a later waiter's announcement stays */
        atomic_compare_exchange_strong_explicit(&p->shard->lock_wanted, &stamp, 0,
                                                memory_order_relaxed, memory_order_relaxed);
        return rc;
}

int shm_shard_lock(const struct shm_map *m, struct shm_probe *p, uint64_t me, uint64_t wait_ns)
{
        uint64_t v;
        int rc = take_free(p, me, &v);
        if (rc <= 0)
                return rc;
        int old;
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
        rc = wait_for(m, p, me, wait_ns);
        pthread_setcancelstate(old, NULL);
        return rc;
}

/* Spin while P's lock is FREE (true: and a waiter is announced) or held (false), at most
 * WINDOW_NS from *NOW on (*NOW: the last clock reading). Whether the lock changed before the
 * window ended and, while FREE, before the announcement was cleared (its waiter left, or had the
 * lock and gave it back between two polls). */
static bool spin_while(struct shm_probe *p, bool free, uint64_t window_ns, uint64_t *now)
{
        uint64_t from = *now;
        for (unsigned i = 0;; i++) {
                bool is_free = atomic_load_explicit(&p->shard->lock, memory_order_relaxed) == 0;
                if (is_free != free)
                        return true;
                if (free && !atomic_load_explicit(&p->shard->lock_wanted, memory_order_relaxed))
                        return false;
                if ((i & 15) == 15 && (*now = mono_ns()) - from >= window_ns)
                        return false;
#if defined(__x86_64__) || defined(__i386__)
                __builtin_ia32_pause();
#endif
        }
}

uint64_t shm_shard_handoff(struct shm_probe *p, uint64_t window_ns)
{
        bool held = atomic_load_explicit(&p->shard->lock, memory_order_relaxed) != 0;
        uint64_t wanted = atomic_load_explicit(&p->shard->lock_wanted, memory_order_relaxed);
        if (!held && !wanted)
                return 0;
        uint64_t start = mono_ns(), now = start;
        /* stale (its waiter died, or gave up without clearing it) or from the future (scribbled) */
        if (!held && (wanted > start || start - wanted > THR_HANDOFF_FRESH_NS))
                return 0;
        /* the waiter's turn (it may be in a nap: the window covers one), then its insert; or the
         * insert of one that took the lock on its own in the meantime */
        if (held || spin_while(p, true, window_ns, &now)) {
                now = mono_ns();
                spin_while(p, false, window_ns, &now);
        }
        now = mono_ns();
        return now > start ? now - start : 1;
}

void shm_shard_unlock(struct shm_probe *p, uint64_t me)
{
        /* a CAS, not a store: if we were taken for dead and taken over, the lock is not ours */
        atomic_compare_exchange_strong_explicit(&p->shard->lock, &me, 0, memory_order_release,
                                                memory_order_relaxed);
}
