/*
 * reader.c - per-thread reader records: claimed on first use, given back at thread exit and at
 * thr_arena_close, never shared across fork().
 *
 * Claiming is a CAS of the record's owner word from 0 to a token unique to this thread; two
 * threads (of any processes) racing for one record cannot both win it. Giving back is a release
 * store of 0 after the record went offline. Counters in the record are cumulative and never
 * reset, so a record handed from one thread to the next keeps the arena's totals right.
 *
 * fork(): the fork generation lives in a MADV_WIPEONFORK page (client_internal.h), so in any
 * child it reads 0 and matches no thread-local cache entry: the child registers anew. The first
 * registration in the child sees the wiped page, draws a new generation and empties the child's
 * lists of claimed records (they are the parent's, which still uses them). The atfork handlers
 * hold the registry lock across fork() so a child made by fork() never inherits it locked; a
 * child made without them (raw clone) could, if another thread held it at that instant.
 *
 * A process that exits normally gives back every record it holds (the library destructor below
 * runs at exit() and at dlclose, when no thread-exit destructor runs for the main thread). A
 * process killed by a signal cannot: each record it claimed is also held by a write lock on its
 * own byte (THR_LOCK_READERS + index) through the process's own open file description of the
 * arena (a->lockfd), which the kernel drops when the process dies; the daemon then gets the lock,
 * forces the record offline and frees it (shm/reclaim.c). The lock is taken before the owner
 * word is claimed and dropped after it is cleared, so a record with an owner and no lock is a
 * dead process's. The file description must be the process's own: a child made by fork() shares
 * its parent's, so the atfork child handler closes the inherited descriptor, and the first
 * registration after a fork (WIPEONFORK) opens a new one.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include "client_internal.h"

struct thr_forkpage thr_forkpage_unset;
struct thr_forkpage *thr_forkpage = &thr_forkpage_unset;
__thread struct thr_tls *thr_tls_cur __attribute__((tls_model("initial-exec")));

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static thr_arena *g_arenas;
static uint64_t g_next_id = 1;
static pthread_key_t g_key;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void atfork_prepare(void)
{
        pthread_mutex_lock(&g_lock);
}

static void atfork_parent(void)
{
        pthread_mutex_unlock(&g_lock);
}

static void atfork_child(void)
{
        thr_forkpage->gen = 0; /* already 0 on a wiped page; needed where WIPEONFORK is missing */
        /* the parent's lock descriptions: holding them here would keep its dead records alive */
        for (thr_arena *a = g_arenas; a; a = a->next) {
                if (a->lockfd >= 0)
                        close(a->lockfd);
                a->lockfd = -1;
        }
        pthread_mutex_unlock(&g_lock);
}

/* Under g_lock: this process's own open file description of A's file, for liveness locks. */
static int lockfd_get(thr_arena *a)
{
        if (a->lockfd >= 0 && a->lockfd_gen == thr_forkpage->gen)
                return a->lockfd;
        if (a->lockfd >= 0)
                close(a->lockfd); /* inherited across a fork without the atfork handlers */
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
        uint64_t gen = 0;
        while (gen == 0 && getrandom(&gen, sizeof(gen), 0) != sizeof(gen))
                ;
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
}

static void release_record(thr_arena *a, uint32_t idx)
{
        struct thr_reader *r = (struct thr_reader *)shm_at(a->map.base, a->map.g.reader_off) + idx;
        atomic_store_explicit(&r->online, 0, memory_order_relaxed);
        atomic_store_explicit(&r->pid, 0, memory_order_relaxed);
        atomic_store_explicit(&r->tid, 0, memory_order_relaxed);
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

/* Thread exit: give back this thread's records in arenas that are still open. */
static void tls_destroy(void *p)
{
        struct thr_tls *t = p;
        pthread_mutex_lock(&g_lock);
        for (uint32_t i = 0; i < t->n; i++) {
                thr_arena *a = registry_find(t->e[i].arena_id);
                if (a && t->e[i].fork_gen == thr_forkpage->gen)
                        release_record(a, t->e[i].idx);
        }
        pthread_mutex_unlock(&g_lock);
        thr_tls_cur = NULL;
        free(t);
}

/* exit() or dlclose: give back every record this process holds in arenas still open. */
__attribute__((destructor)) static void release_all_at_exit(void)
{
        pthread_mutex_lock(&g_lock);
        for (thr_arena *a = g_arenas; a; a = a->next)
                while (a->nclaimed)
                        release_record(a, a->claimed[a->nclaimed - 1]);
        pthread_mutex_unlock(&g_lock);
}

static void once_init(void)
{
        pthread_key_create(&g_key, tls_destroy);
        pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

void thr_registry_add(thr_arena *a)
{
        pthread_once(&g_once, once_init);
        pthread_mutex_lock(&g_lock);
        a->id = g_next_id++;
        a->next = g_arenas;
        g_arenas = a;
        pthread_mutex_unlock(&g_lock);
}

void thr_registry_remove(thr_arena *a)
{
        pthread_mutex_lock(&g_lock);
        for (thr_arena **pp = &g_arenas; *pp; pp = &(*pp)->next) {
                if (*pp == a) {
                        *pp = a->next;
                        break;
                }
        }
        while (a->nclaimed)
                release_record(a, a->claimed[a->nclaimed - 1]);
        pthread_mutex_unlock(&g_lock);
        free(a->claimed);
        a->claimed = NULL;
        if (a->lockfd >= 0)
                close(a->lockfd);
        a->lockfd = -1;
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
        uint64_t token;
        if (getrandom(&token, sizeof(token), 0) != sizeof(token))
                return -EIO;
        token |= 1;
        int fd = lockfd_get(a);
        if (fd < 0)
                return -errno;
        struct thr_reader *rec = shm_at(a->map.base, a->map.g.reader_off);
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
                atomic_store_explicit(&rec[i].pid, (uint64_t)getpid(), memory_order_relaxed);
                atomic_store_explicit(&rec[i].tid, (uint64_t)gettid(), memory_order_relaxed);
                a->claimed[a->nclaimed++] = i;
                *idx = i;
                return 0;
        }
        return -EUSERS;
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

/* Move entry I to the front, so the hot path finds it in e[0]. */
static struct thr_reader *tls_front(struct thr_tls *t, uint32_t i)
{
        struct thr_tls_ent e = t->e[i];
        for (; i > 0; i--)
                t->e[i] = t->e[i - 1];
        t->e[0] = e;
        return e.r;
}

struct thr_reader *thr_reader_slow(thr_arena *a)
{
        struct thr_tls *t = tls_get();
        if (!t)
                return NULL;
        for (uint32_t i = 0; i < t->n; i++)
                if (t->e[i].arena_id == a->id && t->e[i].fork_gen == thr_forkpage->gen)
                        return tls_front(t, i);
        pthread_mutex_lock(&g_lock);
        if (thr_forkpage->gen == 0)
                forkpage_renew();     /* first registration, or the first since a fork */
        if (t->n == THR_TLS_ARENAS) { /* give back the least recently used arena's record */
                struct thr_tls_ent *old = &t->e[--t->n];
                thr_arena *oa = registry_find(old->arena_id);
                if (oa && old->fork_gen == thr_forkpage->gen)
                        release_record(oa, old->idx);
        }
        uint32_t idx = 0;
        int rc = claim_record(a, &idx);
        pthread_mutex_unlock(&g_lock);
        if (rc < 0)
                return NULL;
        struct thr_reader *r = (struct thr_reader *)shm_at(a->map.base, a->map.g.reader_off) + idx;
        t->e[t->n] = (struct thr_tls_ent){a->id, thr_forkpage->gen, r, idx};
        return tls_front(t, t->n++);
}
