/*
 * peer.c - a peer's expiry word (the argument is at the top of peer.h).
 */
#include <errno.h>

#include "peer.h"

struct thr_reader *shm_peer_rec(const struct shm_map *m, uint64_t tok, uint32_t idx)
{
        if (!tok || idx >= m->g.reader_count)
                return NULL;
        struct thr_reader *r = (struct thr_reader *)shm_at(m->base, m->g.reader_off) + idx;
        return atomic_load_explicit(&r->owner, memory_order_acquire) == tok ? r : NULL;
}

uint64_t shm_peer_expiry(const struct shm_map *m, uint64_t tok, uint32_t idx, uint64_t now,
                         bool kill)
{
        struct thr_reader *r = shm_peer_rec(m, tok, idx);
        if (!r)
                return 0;
        uint64_t e = atomic_load_explicit(&r->peer_expires, memory_order_acquire);
        while (e && e <= now && kill) {
                /* a heartbeat's CAS may come first: then it is alive until the E it wrote */
                if (atomic_compare_exchange_weak_explicit(
                        &r->peer_expires, &e, 0, memory_order_acq_rel, memory_order_acquire))
                        return 0;
        }
        return e;
}

int shm_peer_prolong(struct thr_reader *r, uint64_t now, uint64_t expires)
{
        uint64_t e = atomic_load_explicit(&r->peer_expires, memory_order_acquire);
        for (;;) {
                if (e == 0)
                        return -EKEYEXPIRED;
                if (e <= now) {
                        /* expired: final, as any judge of its leases would find it */
                        if (atomic_compare_exchange_weak_explicit(&r->peer_expires, &e, 0,
                                                                  memory_order_acq_rel,
                                                                  memory_order_acquire))
                                return -EKEYEXPIRED;
                        continue;
                }
                if (atomic_compare_exchange_weak_explicit(
                        &r->peer_expires, &e, expires, memory_order_acq_rel, memory_order_acquire))
                        return 0;
        }
}

void shm_peer_kill(struct thr_reader *r)
{
        atomic_store_explicit(&r->peer_expires, 0, memory_order_release);
}
