/*
 * peer.c - peers: thr_peer_open, thr_peer_acquire, thr_peer_release, thr_peer_heartbeat,
 * thr_peer_pending, thr_peer_expires, thr_peer_close.
 *
 * A peer is a reader record of its own (claimed like a thread's, held by the process's liveness
 * lock) whose peer_expires word is its leases' expiry; the protocol of that word, and why an
 * expiry is final, is at the top of shm/peer.h. Its leases are ordinary semaphore leases that
 * name the peer's record as their holder (THR_LEASE_PEER, shm/sem.h): granted, queued for and
 * reclaimed like any other.
 *
 * What only this process knows is kept here, under the handle's mutex (process memory, never
 * shared): the locks the peer holds or is acquiring, one entry per (limiter, key), and the levels
 * they are at. That makes the idempotent acquire and the level rule exact without any arena
 * state: a peer belongs to one process (another process's copy, a fork child's, is refused), and
 * once it has expired nothing it held is held any more, so the entries cannot disagree with the
 * arena while the peer lives. Levels: bit L of `levels` is set while an entry at level L exists.
 * An acquire at level L needs no bit at L or below, so no two entries share a bit, and clearing
 * an entry's bit is exact. Pending acquires count as held for the rule: a thread waiting for a
 * lock at level L is as much a link in a wait cycle as one holding it.
 *
 * Lock order: the handle's mutex, then a key's shard lock (the recount, under the mutex); the
 * waits of an acquire are made without the mutex. A process killed at any point: its peer record
 * is freed by the daemon (its liveness lock dropped), and every lease naming it is void at its
 * key's next serve.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "client_internal.h"
#include "peer.h"

struct peer_lock {
        const struct thr_dir_entry *de; /* the limiter (in the arena: lives as long as it) */
        thr_limiter *l;                 /* the handle it was acquired through */
        struct thr_lease lease;         /* when held */
        uint32_t level;                 /* its bit in levels */
        bool pending;                   /* an acquire in progress: no lease yet */
        bool releasing;                 /* a release in progress: held until it is done */
        uint32_t len;
        uint8_t key[THR_KEY_MAX];
};

struct thr_peer {
        thr_arena *a;
        uint32_t idx; /* its reader record */
        uint64_t token;
        uint64_t fork_gen; /* the process generation that opened it */
        pthread_mutex_t mu;
        uint64_t levels;           /* bit L: an entry at level L */
        _Atomic uint32_t npending; /* entries pending */
        uint32_t n, cap;
        struct peer_lock *locks;
};

static bool mine(const thr_peer *p)
{
        return p->fork_gen && p->fork_gen == thr_forkpage->gen;
}

static struct thr_reader *peer_rec(const thr_peer *p)
{
        return shm_peer_rec(&p->a->map, p->token, p->idx);
}

static uint64_t peer_now(const thr_peer *p)
{
        return shm_now_ns(p->a->hdr);
}

/* NOW + TTL_NS (at most THR_HORIZON_NS), never wrapping (a manual clock may be anywhere). */
static uint64_t expiry_at(uint64_t now, uint64_t ttl_ns)
{
        uint64_t t = ttl_ns > THR_HORIZON_NS ? THR_HORIZON_NS : ttl_ns;
        return now > UINT64_MAX - t ? UINT64_MAX : now + t;
}

/* Under the mutex: the record's informational copies (shmctl shows them). */
static void mirror(thr_peer *p)
{
        struct thr_reader *r = peer_rec(p);
        if (!r)
                return;
        atomic_store_explicit(&r->peer_levels, p->levels, memory_order_relaxed);
        atomic_store_explicit(&r->peer_pending, atomic_load(&p->npending), memory_order_relaxed);
}

int thr_peer_open(thr_arena *a, uint64_t expires_in_ns, thr_peer **out)
{
        if (!a || !out || expires_in_ns == 0)
                return -EINVAL;
        *out = NULL;
        thr_peer *p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->cap = 8;
        p->locks = calloc(p->cap, sizeof(*p->locks));
        if (!p->locks) {
                free(p);
                return -ENOMEM;
        }
        int old;
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
        int rc = thr_peer_claim_record(a, &p->idx, &p->token);
        if (rc == 0) {
                p->a = a;
                p->fork_gen = thr_forkpage->gen;
                pthread_mutex_init(&p->mu, NULL);
                atomic_store_explicit(&peer_rec(p)->peer_expires,
                                      expiry_at(peer_now(p), expires_in_ns), memory_order_release);
                *out = p;
        }
        pthread_setcancelstate(old, NULL);
        if (rc < 0) {
                free(p->locks);
                free(p);
        }
        return rc;
}

/* Under the mutex: the entry of (L, KEY), or NULL. A limiter is known by its directory entry, not
 * by the handle: two handles of one limiter are one limiter. */
static struct peer_lock *find(thr_peer *p, const thr_limiter *l, const void *key, size_t len)
{
        for (uint32_t i = 0; i < p->n; i++)
                if (p->locks[i].de == l->de && p->locks[i].len == len &&
                    memcmp(p->locks[i].key, key, len) == 0)
                        return &p->locks[i];
        return NULL;
}

/* Under the mutex: entry E goes, and its level with it. */
static void drop(thr_peer *p, struct peer_lock *e)
{
        p->levels &= ~(1ull << e->level);
        *e = p->locks[--p->n];
}

/* Under the mutex: whether the peer is still alive at NOW (an expired one is killed: final). */
static bool alive(const thr_peer *p)
{
        return shm_peer_expiry(&p->a->map, p->token, p->idx, peer_now(p), true) != 0;
}

static int not_semaphore(const thr_limiter *l)
{
        if (atomic_load_explicit(&l->de->state, memory_order_acquire) != THR_DIR_LIVE)
                return -EIDRM;
        return -EOPNOTSUPP;
}

/* Under the mutex, no entry for (L, KEY) yet: a pending one at LEVEL, if the rule allows. */
static int reserve(thr_peer *p, thr_limiter *l, const void *key, size_t len, uint32_t level)
{
        if (p->levels & ((2ull << level) - 1))
                return -EDEADLK; /* it holds or waits for a lock at LEVEL or below */
        if (p->n == p->cap) {
                struct peer_lock *g = realloc(p->locks, 2 * p->cap * sizeof(*g));
                if (!g)
                        return -ENOMEM;
                p->locks = g;
                p->cap *= 2;
        }
        struct peer_lock *e = &p->locks[p->n++];
        *e = (struct peer_lock){
            .de = l->de, .l = l, .level = level, .pending = true, .len = (uint32_t)len};
        memcpy(e->key, key, len);
        p->levels |= 1ull << level;
        atomic_fetch_add(&p->npending, 1);
        mirror(p);
        return 0;
}

static int peer_acquire(thr_peer *p, thr_limiter *l, const void *key, size_t len, uint32_t count,
                        uint64_t timeout_ns, unsigned flags)
{
        struct thr_params pc;
        const struct thr_params *prm = thr_sem_record(l, &pc);
        if (!prm || atomic_load_explicit(&l->de->state, memory_order_acquire) != THR_DIR_LIVE)
                return not_semaphore(l);
        if (count > prm->rate_n)
                return -ERANGE;
        uint32_t level = (uint32_t)prm->level; /* < THR_SEM_LEVELS: checked by thr_sem_record */
        pthread_mutex_lock(&p->mu);
        int rc = alive(p) ? 0 : -EKEYEXPIRED;
        struct peer_lock *e = rc == 0 ? find(p, l, key, len) : NULL;
        if (e) {
                /* idempotent: the same count again changes nothing */
                rc = e->pending || e->releasing    ? -EALREADY
                     : e->lease.amount == count    ? 0
                     : !(flags & THR_PEER_RECOUNT) ? -EEXIST
                                                   : thr_sem_resize(&e->lease, count);
                pthread_mutex_unlock(&p->mu);
                return rc;
        }
        if (rc == 0)
                rc = reserve(p, l, key, len, level);
        pthread_mutex_unlock(&p->mu);
        if (rc < 0)
                return rc;

        struct thr_lease lease;
        const struct thr_sem_holder hd = {.token = p->token, .idx = p->idx, .level = level};
        rc = thr_sem_acquire_as(l, key, len, &hd, count, timeout_ns, timeout_ns != 0, &lease);

        pthread_mutex_lock(&p->mu);
        if (rc == 0 && !alive(p)) {
                /* granted to a peer that expired meanwhile: void already */
                thr_sem_release(&lease);
                rc = -EKEYEXPIRED;
        }
        e = find(p, l, key, len); /* ours: nobody else touches a pending entry */
        if (rc == 0) {
                e->lease = lease;
                e->pending = false;
        } else {
                drop(p, e);
        }
        atomic_fetch_sub(&p->npending, 1);
        mirror(p);
        pthread_mutex_unlock(&p->mu);
        return rc;
}

int thr_peer_acquire(thr_peer *p, thr_limiter *l, const void *key, size_t len, uint32_t count,
                     uint64_t timeout_ns, unsigned flags)
{
        if (!p || !l || !key || len == 0 || count == 0 || (flags & ~THR_PEER_RECOUNT))
                return -EINVAL;
        if (len > THR_KEY_MAX)
                return -ENAMETOOLONG;
        if (!mine(p))
                return -EPERM;
        if (l->a != p->a)
                return -EINVAL; /* another arena's limiter */
        int old;
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
        int rc = peer_acquire(p, l, key, len, count, timeout_ns, flags);
        pthread_setcancelstate(old, NULL);
        return rc;
}

int thr_peer_release(thr_peer *p, thr_limiter *l, const void *key, size_t len)
{
        if (!p || !l || !key || len == 0)
                return -EINVAL;
        if (len > THR_KEY_MAX)
                return -ENAMETOOLONG;
        if (!mine(p))
                return -EPERM;
        int old;
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
        pthread_mutex_lock(&p->mu);
        struct peer_lock *e = find(p, l, key, len);
        /* an acquire still in progress holds nothing yet; a release in progress, nothing more */
        int rc = !e || e->pending ? -ENOENT : e->releasing ? -EALREADY : 0;
        struct thr_lease lease;
        if (rc == 0) {
                lease = e->lease;
                e->releasing = true; /* the entry stays until the lock is given back */
        }
        pthread_mutex_unlock(&p->mu);
        if (rc < 0) {
                pthread_setcancelstate(old, NULL);
                return rc;
        }
        rc = thr_sem_release(&lease);
        pthread_mutex_lock(&p->mu);
        e = find(p, l, key, len);
        if (rc == 0 || rc == -EKEYEXPIRED) {
                drop(p, e);
                mirror(p);
        } else {
                e->releasing = false; /* still held (the key's lock was out of reach): again */
        }
        pthread_mutex_unlock(&p->mu);
        pthread_setcancelstate(old, NULL);
        return rc;
}

int thr_peer_heartbeat(thr_peer *p, uint64_t expires_in_ns)
{
        if (!p || expires_in_ns == 0)
                return -EINVAL;
        if (!mine(p))
                return -EPERM;
        struct thr_reader *r = peer_rec(p);
        if (!r)
                return -EKEYEXPIRED; /* its record was given back (the arena closed) */
        uint64_t now = peer_now(p);
        return shm_peer_prolong(r, now, expiry_at(now, expires_in_ns));
}

int thr_peer_pending(const thr_peer *p)
{
        if (!p)
                return -EINVAL;
        if (!mine(p))
                return -EPERM;
        return (int)atomic_load(&p->npending);
}

uint64_t thr_peer_expires(const thr_peer *p)
{
        if (!p || !mine(p))
                return 0;
        uint64_t e = shm_peer_expiry(&p->a->map, p->token, p->idx, peer_now(p), false);
        return e > peer_now(p) ? e : 0;
}

int thr_peer_close(thr_peer *p)
{
        if (!p)
                return -EINVAL;
        if (!mine(p)) { /* a fork child's copy: the arena's peer is the parent's */
                free(p->locks);
                free(p);
                return 0;
        }
        int old;
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
        pthread_mutex_lock(&p->mu);
        bool busy = atomic_load(&p->npending) != 0;
        for (uint32_t i = 0; i < p->n; i++)
                busy |= p->locks[i].releasing;
        if (busy) {
                pthread_mutex_unlock(&p->mu);
                pthread_setcancelstate(old, NULL);
                return -EBUSY;
        }
        uint32_t n = p->n;
        p->n = 0;
        pthread_mutex_unlock(&p->mu);
        /* released one by one (each key's queue served at once), then the peer is dead: a lease
         * that could not be released (a lock held for a minute) is void with it */
        for (uint32_t i = 0; i < n; i++)
                thr_sem_release(&p->locks[i].lease);
        struct thr_reader *r = peer_rec(p);
        if (r)
                shm_peer_kill(r);
        thr_peer_free_record(p->a, p->idx, p->token);
        pthread_setcancelstate(old, NULL);
        pthread_mutex_destroy(&p->mu);
        free(p->locks);
        free(p);
        return 0;
}
