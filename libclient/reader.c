/*
 * reader.c - per-thread reader records: claimed on first use, given back at thread exit and at
 * thr_arena_close, never shared across fork().
 *
 * Claiming is a CAS of the record's owner word from 0 to a token unique to this thread; two
 * threads (of any processes) racing for one record cannot both win it. Giving back is a release
 * store of 0 after the record went offline.
 *
 * Counters (admitted, denied, inserts, cas_retries) are their owner's own: each new owner stores
 * 0 in them right after its claiming CAS, before it writes the pid and tid that name it (a release
 * store of pid: a reader that loads pid with acquire and sees this owner's reads these zeros or
 * later counts). Only the owner writes them, and the previous owner wrote its last counts before
 * the release store of 0 to the owner word (its own give-back, or the daemon's CAS freeing a dead
 * process's record, after which that process writes nothing) that the claiming CAS read with
 * acquire, so the zeros come after them. A sum over the records is therefore not a running total
 * of the arena: a thread's counts leave it when its record is claimed again.
 *
 * Liveness. Each record claimed is also held by a write lock on its own byte (THR_LOCK_READERS +
 * index) through the process's own open file description of the arena (a->lockfd), which the
 * kernel drops when the process dies; the daemon then gets the lock, forces the record offline and
 * frees it (shm/reclaim.c). The lock is taken before the owner word is claimed and dropped after
 * it is cleared, so a record with an owner and no lock is a dead process's.
 *
 * Processes. The fork generation lives in a MADV_WIPEONFORK page (client_internal.h): in any
 * child, however made (fork, _Fork, a raw clone), it reads 0, so the child matches none of its
 * parent's cache entries and registers anew. Everything this file keeps about claimed records is
 * stamped with the generation it belongs to and is acted on only in that generation:
 *   - a child that never uses throttle and ends with exit(), or closes an inherited handle, gives
 *     back nothing (the records are its parent's, which still uses them);
 *   - fork() runs the atfork child handler, which forgets the parent's records and closes the
 *     inherited lock descriptor (holding it would keep the parent's records alive after its
 *     death); _Fork() and a raw clone run no handler, so the child keeps the descriptor until its
 *     first registration closes it: if the parent dies first, its records look alive, and the
 *     daemon judges them by the owner's pid instead (shm/readers.c);
 *   - the first registration in a new process checks that it still shares the arena's pid and time
 *     namespaces (a child of unshare(CLONE_NEWPID | CLONE_NEWTIME) does not) and registers it for
 *     expedited membarrier (registration is per process and not inherited: the daemon's grace
 *     periods would miss a child's sections otherwise).
 *
 * exit() while other threads are inside calls: the exiting thread gives back its own records
 * only. Another thread's record may be in use until exit_group() stops it; giving it back would let
 * another process claim it, and the stopped thread's last store could then clear the new owner's
 * online word. Those records are freed by the daemon once the process is gone (within a
 * heartbeat).
 *
 * A raw clone with CLONE_FILES (and not CLONE_VM) makes a child that shares its parent's
 * descriptor table: closing a descriptor it "inherited" would close the parent's, dropping the
 * parent's liveness locks while it lives (shown: a live holder of a shard lock judged gone, taken
 * over, a key admitted twice its burst). A descriptor of another generation is therefore closed
 * only when the table is known not to be shared (kcmp(2) KCMP_FILES against the parent); when it
 * is, or it cannot be told, a new one is opened beside it.
 *
 * _Fork() in a multithreaded parent: the child may inherit the registry lock held by a thread that
 * does not exist in it. The lock records the pid of the process whose thread holds it; a process
 * that finds it held for another pid reinitialises it before taking it. Such a child must make its
 * first call before it starts threads of its own (two of them could otherwise race the
 * reinitialisation), and registration allocates: after _Fork() of a multithreaded process that is
 * only as safe as malloc is there (POSIX allows only async-signal-safe calls).
 *
 * Signal handlers. A thread's cache of its records (struct thr_tls) is changed only by the slow
 * path, which marks it `updating` and writes the front entry's arena id last when setting it and
 * first when clearing it: a call from a signal handler that interrupts the change sees the old
 * entry whole, or a miss, and a miss while `updating` returns -EBUSY instead of registering again
 * (it used to register twice, and a torn cache gave a record back while a twin entry used it).
 *
 * Cancellation is disabled wherever the registry lock is held: a thread cancelled at one of the
 * cancellation points below (open, close, getrandom) would unwind holding it, and its TLS
 * destructor, later registrations, fork() and exit() would all wait on it for ever.
 *
 * Randomness: getrandom() may be refused (a seccomp profile answering EPERM or ENOSYS). Fork
 * generations and owner tokens then come from a mix of the clock, pid, tid and a counter: they
 * need to differ from the parent's and from other threads', not to be secret.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "client_internal.h"
#include "compose.h"
#include "testhook.h"

struct thr_forkpage thr_forkpage_unset;
struct thr_forkpage *thr_forkpage = &thr_forkpage_unset;
__thread struct thr_tls *thr_tls_cur __attribute__((tls_model("initial-exec")));

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic pid_t g_lock_pid; /* the process whose thread holds g_lock, 0 when free */
static thr_arena *g_arenas;
static uint64_t g_next_id = 1;
static uint64_t g_last_gen; /* in ordinary memory: a child still reads its parent's here */
static uint64_t g_mix;
static pthread_key_t g_key;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void lock_raw(void)
{
        pthread_mutex_lock(&g_lock);
        atomic_store_explicit(&g_lock_pid, getpid(), memory_order_relaxed);
}

static void unlock_raw(void)
{
        atomic_store_explicit(&g_lock_pid, 0, memory_order_relaxed);
        pthread_mutex_unlock(&g_lock);
}

/*
 * Before taking the registry lock: one held for another pid was held by a thread of a parent this
 * process was forked from without handlers, which does not exist here (this process's own threads
 * hold it under its own pid, and fork()'s child handler releases it).
 */
static void unlock_if_inherited(void)
{
        pid_t holder = atomic_load_explicit(&g_lock_pid, memory_order_relaxed);
        /* the CAS: of several threads of this process finding it so, one reinitialises it */
        if (holder != 0 && holder != getpid() &&
            atomic_compare_exchange_strong_explicit(&g_lock_pid, &holder, 0, memory_order_acq_rel,
                                                    memory_order_relaxed)) {
                pthread_mutex_t fresh = PTHREAD_MUTEX_INITIALIZER;
                memcpy(&g_lock, &fresh, sizeof(fresh));
        }
}

/* Take the registry lock with cancellation disabled; *OLD: the state to restore. */
static void registry_lock(int *old)
{
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, old);
        unlock_if_inherited();
        lock_raw();
}

static void registry_unlock(int old)
{
        unlock_raw();
        pthread_setcancelstate(old, NULL);
}

static void atfork_prepare(void)
{
        lock_raw();
}

static void atfork_parent(void)
{
        unlock_raw();
}

static void atfork_child(void)
{
        thr_forkpage->gen = 0; /* already 0 on a wiped page; needed where WIPEONFORK is missing */
        for (thr_arena *a = g_arenas; a; a = a->next) {
                a->nclaimed = 0; /* the parent's records, which the parent still uses */
                if (a->lockfd >= 0)
                        close(a->lockfd); /* its description: holding it would keep them alive */
                a->lockfd = -1;
        }
        unlock_raw();
}

/* splitmix64: spreads a counter into 64 well-mixed bits. */
static uint64_t mix64(uint64_t x)
{
        x += 0x9e3779b97f4a7c15ull;
        x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
        x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
        return x ^ (x >> 31);
}

/* Under g_lock: 64 bits unique to this call: getrandom, else the clock, pid, tid and a counter. */
static uint64_t unique64(void)
{
        uint64_t v;
        if (getrandom(&v, sizeof(v), GRND_NONBLOCK) == sizeof(v))
                return v;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        g_mix = mix64(g_mix ^ ((uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec));
        return mix64(g_mix ^ ((uint64_t)getpid() << 32) ^ (uint64_t)gettid() ^ (uintptr_t)&v);
}

/*
 * Whether this process shares its descriptor table with its parent (a raw clone with
 * CLONE_FILES): closing a descriptor it inherited would close the parent's. Unknown counts as
 * shared: a descriptor left open costs little, one closed under its owner costs a limit.
 */
bool thr_fd_table_shared(void)
{
        long rc = syscall(SYS_kcmp, getpid(), getppid(), KCMP_FILES, 0, 0);
        return rc != 1 && rc != 2 && rc != 3; /* 0: the same table; -1: cannot tell */
}

/* Under g_lock: this process's own open file description of A's file, for liveness locks. */
static int lockfd_get(thr_arena *a)
{
        if (a->lockfd >= 0 && a->lockfd_gen == thr_forkpage->gen)
                return a->lockfd;
        if (a->lockfd >= 0 && !thr_fd_table_shared())
                close(a->lockfd); /* inherited across _Fork or a raw clone: not ours */
        char proc[64];
        snprintf(proc, sizeof(proc), "/proc/self/fd/%d", a->map.fd);
        a->lockfd = open(proc, O_RDWR | O_CLOEXEC); /* the same file, a new description */
        if (a->lockfd < 0)
                a->lockfd = open(a->map.path, O_RDWR | O_CLOEXEC);
        a->lockfd_gen = thr_forkpage->gen;
        return a->lockfd;
}

/* Under g_lock: a new generation for this process; records listed so far are a parent's. */
static void forkpage_renew(void)
{
        uint64_t gen = unique64();
        while (gen == 0 || gen == g_last_gen)
                gen = mix64(gen);
        if (thr_forkpage == &thr_forkpage_unset) {
                /* first registration in this process: a page of its own */
                void *p =
                    mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
                if (p != MAP_FAILED && madvise(p, 4096, MADV_WIPEONFORK) == 0)
                        thr_forkpage = p;
                else if (p != MAP_FAILED)
                        munmap(p, 4096); /* kernel < 4.14: fall back to the atfork handlers */
        }
        for (thr_arena *a = g_arenas; a; a = a->next)
                a->nclaimed = 0; /* the parent's records, not ours */
        thr_forkpage->gen = gen;
        g_last_gen = gen;
}

static struct thr_reader *record(const thr_arena *a, uint32_t idx)
{
        return (struct thr_reader *)shm_at(a->map.base, a->map.g.reader_off) + idx;
}

/* Under g_lock: give back record IDX, claimed by this process in its current generation. */
static void release_record(thr_arena *a, uint32_t idx)
{
        struct thr_reader *r = record(a, idx);
        atomic_store_explicit(&r->online, 0, memory_order_relaxed);
        atomic_store_explicit(&r->pid, 0, memory_order_relaxed);
        atomic_store_explicit(&r->tid, 0, memory_order_relaxed);
        atomic_store_explicit(
            &r->wait_state,
            THR_WAIT_AS(atomic_load_explicit(&r->wait_state, memory_order_relaxed), THR_WAIT_NONE),
            memory_order_relaxed); /* serial.h */
        atomic_store_explicit(&r->wait_slot, 0, memory_order_relaxed);
        atomic_store_explicit(&r->peer_expires, 0, memory_order_relaxed); /* peer.h */
        atomic_store_explicit(&r->owner, 0, memory_order_release);
        if (a->lockfd >= 0 && a->lockfd_gen == thr_forkpage->gen)
                shm_reader_unlock(a->lockfd, idx); /* after the owner word is clear */
        for (uint32_t i = 0; i < a->nclaimed; i++) {
                if (a->claimed[i] == idx) {
                        a->claimed[i] = a->claimed[--a->nclaimed];
                        break;
                }
        }
}

static thr_arena *registry_find(uint64_t id)
{
        for (thr_arena *a = g_arenas; a; a = a->next)
                if (a->id == id)
                        return a;
        return NULL;
}

/* Under g_lock: give back the record of entry E if it was made in this process's generation. */
static void release_entry(const struct thr_tls_ent *e)
{
        thr_arena *a = e->arena_id ? registry_find(e->arena_id) : NULL;
        if (a && thr_forkpage->gen && e->fork_gen == thr_forkpage->gen)
                release_record(a, e->idx);
}

/* Make E the front entry, in an order a signal handler of this thread can read at any point:
 * the arena id is cleared first and set last (the hot path compares it first). */
static void front_set(struct thr_tls *t, const struct thr_tls_ent *e)
{
        t->front.arena_id = 0;
        atomic_signal_fence(memory_order_seq_cst);
        t->front.fork_gen = e->fork_gen;
        t->front.r = e->r;
        t->front.row = e->row;
        t->front.idx = e->idx;
        atomic_signal_fence(memory_order_seq_cst);
        t->front.arena_id = e->arena_id;
}

/* Mark T as being changed (a nested miss gets -EBUSY), or as done. */
static void tls_updating(struct thr_tls *t, int on)
{
        atomic_signal_fence(memory_order_seq_cst);
        t->updating = on;
        atomic_signal_fence(memory_order_seq_cst);
}

/* Under g_lock: give back every record of T. */
static void release_thread(struct thr_tls *t)
{
        tls_updating(t, 1);
        struct thr_tls_ent none = {0};
        struct thr_tls_ent front = t->front;
        front_set(t, &none);
        release_entry(&front);
        for (uint32_t i = 0; i < t->n; i++)
                release_entry(&t->rest[i]);
        t->n = 0;
        tls_updating(t, 0);
}

/* Thread exit: give back this thread's records in arenas that are still open. */
static void tls_destroy(void *p)
{
        struct thr_tls *t = p;
        int old;
        registry_lock(&old);
        release_thread(t);
        registry_unlock(old);
        thr_tls_cur = NULL;
        free(t->rest);
        free(t);
}

/*
 * exit() or dlclose: give back the calling thread's records (no thread-exit destructor runs for
 * it). Other threads' records are left to the daemon: they may be inside a call right now.
 */
__attribute__((destructor)) static void release_at_exit(void)
{
        if (!thr_tls_cur)
                return;
        int old;
        registry_lock(&old);
        release_thread(thr_tls_cur);
        THR_HOOK(THR_HOOK_EXIT_RELEASED, NULL);
        registry_unlock(old);
}

static void once_init(void)
{
        pthread_key_create(&g_key, tls_destroy);
        pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

void thr_registry_add(thr_arena *a)
{
        pthread_once(&g_once, once_init);
        int old;
        registry_lock(&old);
        a->id = g_next_id++;
        a->next = g_arenas;
        g_arenas = a;
        registry_unlock(old);
}

void thr_registry_remove(thr_arena *a)
{
        int old;
        registry_lock(&old);
        for (thr_arena **pp = &g_arenas; *pp; pp = &(*pp)->next) {
                if (*pp == a) {
                        *pp = a->next;
                        break;
                }
        }
        if (a->claimed_gen != thr_forkpage->gen || !thr_forkpage->gen)
                a->nclaimed = 0; /* an inherited handle: the records are the parent's */
        while (a->nclaimed)
                release_record(a, a->claimed[a->nclaimed - 1]);
        free(a->claimed);
        a->claimed = NULL;
        /* an inherited descriptor is ours to drop unless the table is our parent's too */
        if (a->lockfd >= 0 && (a->lockfd_gen == thr_forkpage->gen || !thr_fd_table_shared()))
                close(a->lockfd);
        a->lockfd = -1;
        registry_unlock(old);
}

/*
 * Under g_lock, once per process generation and arena: the arena must still be usable from this
 * process (a child may have been made in another pid or time namespace), and the process must be
 * registered for expedited membarrier. Returns 0, -EXDEV or -ESTALE.
 */
static int process_check(thr_arena *a)
{
        if (a->checked_gen == thr_forkpage->gen)
                return 0;
        int rc = shm_arena_check_pidns(a->hdr, NULL, 0);
        if (rc == 0)
                rc = shm_arena_check_clock(a->hdr, NULL, 0);
        if (rc < 0)
                return rc;
        shm_membarrier_register(a->hdr); /* on failure it sets the arena's fallback flag */
        a->checked_gen = thr_forkpage->gen;
        return 0;
}

/* Under g_lock: claim a free record, or -EUSERS. */
static int claim_record(thr_arena *a, uint32_t *idx)
{
        if (a->nclaimed == a->capclaimed) {
                uint32_t cap = a->capclaimed ? a->capclaimed * 2 : 16;
                uint32_t *p = realloc(a->claimed, cap * sizeof(*p));
                if (!p)
                        return -ENOMEM;
                a->claimed = p;
                a->capclaimed = cap;
        }
        uint64_t token = unique64() | 1;
        int fd = lockfd_get(a);
        if (fd < 0)
                return -errno;
        struct thr_reader *rec = record(a, 0);
        for (uint32_t i = 0; i < a->map.g.reader_count; i++) {
                uint64_t zero = 0;
                if (atomic_load_explicit(&rec[i].owner, memory_order_relaxed) != 0)
                        continue;
                /* the lock first: an owner without it is taken for dead by the daemon */
                if (shm_reader_lock(fd, i) < 0)
                        continue;
                if (!atomic_compare_exchange_strong_explicit(
                        &rec[i].owner, &zero, token, memory_order_acq_rel, memory_order_relaxed)) {
                        shm_reader_unlock(fd, i);
                        continue;
                }
                /* this owner's counts start at zero (see the top of this file), before the pid
                 * (release) that names it */
                atomic_store_explicit(&rec[i].admitted, 0, memory_order_relaxed);
                atomic_store_explicit(&rec[i].denied, 0, memory_order_relaxed);
                atomic_store_explicit(&rec[i].inserts, 0, memory_order_relaxed);
                atomic_store_explicit(&rec[i].cas_retries, 0, memory_order_relaxed);
                atomic_store_explicit(&rec[i].pid, (uint64_t)getpid(), memory_order_release);
                atomic_store_explicit(&rec[i].tid, (uint64_t)gettid(), memory_order_relaxed);
                /* a composed call its previous owner left half-way (an exit() while a thread was
                 * in one): settled before this owner's first call reuses the journal */
                shm_journal_settle(&a->map, i);
                /* a free record carries no waiter's place (its freer cleared it: reclaim.c,
                 * release_record); cleared again, for records freed by an older version */
                /* NONE, the epoch kept: a wait of the new owner is never a previous one's */
                atomic_store_explicit(
                    &rec[i].wait_state,
                    THR_WAIT_AS(atomic_load_explicit(&rec[i].wait_state, memory_order_relaxed),
                                THR_WAIT_NONE),
                    memory_order_relaxed);
                atomic_store_explicit(&rec[i].wait_slot, 0, memory_order_relaxed);
                atomic_store_explicit(&rec[i].wait_gen, 0, memory_order_relaxed);
                atomic_store_explicit(&rec[i].wait_flags, 0, memory_order_relaxed);
                atomic_store_explicit(&rec[i].wait_deadline, 0, memory_order_relaxed);
                /* not a peer unless made one (peer.c) */
                atomic_store_explicit(&rec[i].peer_expires, 0, memory_order_relaxed);
                atomic_store_explicit(&rec[i].peer_levels, 0, memory_order_relaxed);
                atomic_store_explicit(&rec[i].peer_pending, 0, memory_order_relaxed);
                atomic_store_explicit(&rec[i].wait_ticket, 0, memory_order_release);
                a->claimed[a->nclaimed++] = i;
                a->claimed_gen = thr_forkpage->gen;
                *idx = i;
                return 0;
        }
        return -EUSERS;
}

/* Declared in client_internal.h. The record is in the claimed list: thr_arena_close gives it
 * back (the process's leases become reclaimable), a fork child claims its own. */
int thr_lease_holder(thr_arena *a, uint32_t *idx, uint64_t *token)
{
        /* claimed in this process already: its index and token were written before the release
         * store of lease_gen this acquire load reads, and never change in this fork generation */
        uint64_t g = atomic_load_explicit(&a->lease_gen, memory_order_acquire);
        if (g && g == thr_forkpage->gen) {
                *idx = a->lease_idx;
                *token = a->lease_token;
                return 0;
        }
        int old, rc = 0;
        registry_lock(&old);
        if (!thr_forkpage->gen || a->lease_gen != thr_forkpage->gen) {
                /* a record of its own, apart from every thread's: a thread that exits gives
                 * its record back, its process's leases stay held */
                if (thr_forkpage->gen == 0)
                        forkpage_renew(); /* the first registration since a fork */
                rc = process_check(a);
                uint32_t i = 0;
                if (rc == 0)
                        rc = claim_record(a, &i);
                if (rc == 0) {
                        a->lease_idx = i;
                        a->lease_token =
                            atomic_load_explicit(&record(a, i)->owner, memory_order_relaxed);
                        atomic_store_explicit(&a->lease_gen, thr_forkpage->gen,
                                              memory_order_release);
                }
        }
        *idx = a->lease_idx;
        *token = a->lease_token;
        registry_unlock(old);
        return rc;
}

/* Declared in client_internal.h. */
int thr_peer_claim_record(thr_arena *a, uint32_t *idx, uint64_t *token)
{
        int old, rc;
        registry_lock(&old);
        if (thr_forkpage->gen == 0)
                forkpage_renew(); /* the first registration since a fork */
        rc = process_check(a);
        if (rc == 0)
                rc = claim_record(a, idx);
        if (rc == 0)
                *token = atomic_load_explicit(&record(a, *idx)->owner, memory_order_relaxed);
        registry_unlock(old);
        return rc;
}

/* Declared in client_internal.h: given back only if still this process's claim with TOKEN (the
 * arena's close may have given it back already). */
void thr_peer_free_record(thr_arena *a, uint32_t idx, uint64_t token)
{
        int old;
        registry_lock(&old);
        bool mine = false;
        if (a->claimed_gen == thr_forkpage->gen && thr_forkpage->gen)
                for (uint32_t i = 0; i < a->nclaimed; i++)
                        mine |= a->claimed[i] == idx;
        if (mine && atomic_load_explicit(&record(a, idx)->owner, memory_order_relaxed) == token)
                release_record(a, idx);
        registry_unlock(old);
}

static struct thr_tls *tls_get(void)
{
        if (thr_tls_cur)
                return thr_tls_cur;
        pthread_once(&g_once, once_init);
        struct thr_tls *t = calloc(1, sizeof(*t));
        if (!t)
                return NULL;
        pthread_setspecific(g_key, t);
        thr_tls_cur = t;
        return t;
}

/* Swap entry I of T's rest with the front, so the hot path finds it there. */
static struct thr_reader *tls_front(struct thr_tls *t, uint32_t i)
{
        struct thr_tls_ent e = t->rest[i];
        t->rest[i] = t->front;
        front_set(t, &e);
        return e.r;
}

/* Under g_lock: whether entry E still stands for a record of this process in an open arena. */
static bool entry_current(const struct thr_tls_ent *e)
{
        return e->arena_id && e->fork_gen == thr_forkpage->gen && registry_find(e->arena_id);
}

/* Under g_lock: make room in T's rest for the current front, which a new entry replaces; entries
 * of closed arenas or of a parent process are dropped on the way. */
static int tls_push_front(struct thr_tls *t)
{
        uint32_t kept = 0;
        for (uint32_t i = 0; i < t->n; i++)
                if (entry_current(&t->rest[i]))
                        t->rest[kept++] = t->rest[i];
        t->n = kept;
        if (!entry_current(&t->front))
                return 0;
        if (t->n == t->cap) {
                uint32_t cap = t->cap ? t->cap * 2 : 8;
                struct thr_tls_ent *p = realloc(t->rest, cap * sizeof(*p));
                if (!p)
                        return -ENOMEM;
                t->rest = p;
                t->cap = cap;
        }
        t->rest[t->n++] = t->front; /* the front stays valid until front_set replaces it */
        return 0;
}

/* Under g_lock: register this thread in A (the first registration in a process renews it). */
static int register_locked(struct thr_tls *t, thr_arena *a, uint32_t *idx)
{
        THR_HOOK(THR_HOOK_REGISTRY_LOCKED, a);
        if (thr_forkpage->gen == 0)
                forkpage_renew(); /* first registration, or the first since a fork */
        int rc = process_check(a);
        if (rc == 0)
                rc = tls_push_front(t);
        return rc < 0 ? rc : claim_record(a, idx);
}

static struct thr_reader *slow_locked(struct thr_tls *t, thr_arena *a, int *err)
{
        THR_HOOK(THR_HOOK_CACHE_UPDATING, NULL);
        if (t->front.arena_id == a->id && t->front.fork_gen == thr_forkpage->gen)
                return t->front.r; /* the fork generation had not been set yet */
        for (uint32_t i = 0; i < t->n; i++)
                if (t->rest[i].arena_id == a->id && t->rest[i].fork_gen == thr_forkpage->gen)
                        return tls_front(t, i);
        uint32_t idx = 0;
        int old;
        registry_lock(&old);
        int rc = register_locked(t, a, &idx);
        registry_unlock(old);
        if (rc < 0) {
                *err = rc;
                return NULL;
        }
        struct thr_tls_ent e = {a->id, thr_forkpage->gen, record(a, idx),
                                shm_lcount(&a->map, idx, 0), idx};
        front_set(t, &e);
        return e.r;
}

/* Declared in client_internal.h. */
struct thr_lcount *thr_reader_row(const thr_arena *a, const struct thr_reader *r)
{
        return shm_lcount(&a->map, (uint32_t)(r - record(a, 0)), 0);
}

struct thr_reader *thr_reader_slow(thr_arena *a, int *err)
{
        struct thr_tls *t = tls_get();
        if (!t) {
                *err = -ENOMEM;
                return NULL;
        }
        if (t->updating) { /* a signal handler interrupted this thread's own slow path */
                *err = -EBUSY;
                return NULL;
        }
        tls_updating(t, 1);
        struct thr_reader *r = slow_locked(t, a, err);
        tls_updating(t, 0);
        return r;
}
