/*
 * bucket_map.c - the map of GCRA buckets that mutex_bucket.c and nginx_zone.c share (see
 * bucket_map.h): lookup with insertion, the GCRA decision, the untimed fill, one locked try, and
 * the eviction mode's LRU queue and nginx-style expiry. Everything here runs under the caller's
 * lock.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bucket_map.h"

static uint64_t fnv1a(const char *key, size_t len)
{
        uint64_t h = 14695981039346656037ull;
        for (size_t i = 0; i < len; i++)
                h = (h ^ (unsigned char)key[i]) * 1099511628211ull;
        return h;
}

static uint64_t now_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* The bucket of KEY, inserted (full) if absent; NULL if the table is full. Under the lock. */
static struct bucket *bmap_find(struct bucket_map *m, const char *key, size_t len)
{
        uint64_t h = fnv1a(key, len);
        uint32_t tag = (uint32_t)(h >> 32);
        for (uint64_t n = 0, i = h & m->mask; n <= m->mask; n++, i = (i + 1) & m->mask) {
                struct bucket *b = &m->b[i];
                if (b->len == 0) {
                        *b = (struct bucket){.hash = tag, .len = (uint16_t)len};
                        memcpy(b->key, key, len);
                        return b;
                }
                if (b->hash == tag && b->len == len && memcmp(b->key, key, len) == 0)
                        return b;
        }
        return NULL;
}

/* ---------------------------------------------------------------- eviction mode */

static void cnt_add(_Atomic uint64_t *c, uint64_t v)
{
        atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
                              memory_order_relaxed); /* one writer at a time: the lock holder */
}

static void lru_unlink(struct bucket_map *m, uint32_t i)
{
        struct bucket *b = &m->b[i];
        if (b->prev != BMAP_NIL)
                m->b[b->prev].next = b->next;
        else
                m->head = b->next;
        if (b->next != BMAP_NIL)
                m->b[b->next].prev = b->prev;
        else
                m->tail = b->prev;
}

static void lru_push(struct bucket_map *m, uint32_t i)
{
        struct bucket *b = &m->b[i];
        b->prev = BMAP_NIL;
        b->next = m->head;
        if (m->head != BMAP_NIL)
                m->b[m->head].prev = i;
        else
                m->tail = i;
        m->head = i;
}

/* The bucket now at I was moved there: its neighbours in the queue point at I. */
static void lru_moved(struct bucket_map *m, uint32_t i)
{
        struct bucket *b = &m->b[i];
        if (b->prev != BMAP_NIL)
                m->b[b->prev].next = i;
        else
                m->head = i;
        if (b->next != BMAP_NIL)
                m->b[b->next].prev = i;
        else
                m->tail = i;
}

/*
 * Remove the key at slot I: leave the queue, then backward-shift the rest of its probe run into
 * the hole (a bucket moves back unless its home lies cyclically in (hole, its slot]), so every
 * remaining key stays reachable from its home without tombstones.
 */
static void bmap_remove(struct bucket_map *m, uint64_t i)
{
        lru_unlink(m, (uint32_t)i);
        m->b[i].len = 0;
        m->live--;
        for (uint64_t j = (i + 1) & m->mask;; j = (j + 1) & m->mask) {
                struct bucket *bj = &m->b[j];
                if (bj->len == 0)
                        break;
                uint64_t k = fnv1a(bj->key, bj->len) & m->mask;
                bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
                if (stays)
                        continue;
                m->b[i] = *bj;
                lru_moved(m, (uint32_t)i);
                bj->len = 0;
                i = j;
        }
        atomic_store_explicit(&m->cnt->live, m->live, memory_order_relaxed);
}

/*
 * ngx_http_limit_req_expire: N = 1 removes up to two keys from the tail of the queue that have
 * had no debt for ttl_ns (stopping at the first that has not); N = 0 removes the tail key by
 * force first, then up to two idle ones.
 */
static void bmap_expire(struct bucket_map *m, uint64_t now, unsigned n)
{
        while (n < 3) {
                uint32_t t = m->tail;
                if (t == BMAP_NIL)
                        return;
                if (n++ != 0) {
                        if (m->b[t].tat + m->ttl_ns > now)
                                return;
                        cnt_add(&m->cnt->expired, 1);
                } else {
                        cnt_add(&m->cnt->forced, 1);
                }
                bmap_remove(m, t);
        }
}

/* Slot of KEY (*FOUND set) or the first empty slot of its run; -1 if neither (a full table). */
static int64_t bmap_probe(const struct bucket_map *m, const char *key, size_t len, uint64_t h,
                          bool *found)
{
        uint32_t tag = (uint32_t)(h >> 32);
        *found = false;
        for (uint64_t n = 0, i = h & m->mask; n <= m->mask; n++, i = (i + 1) & m->mask) {
                const struct bucket *b = &m->b[i];
                if (b->len == 0)
                        return (int64_t)i;
                if (b->hash == tag && b->len == len && memcmp(b->key, key, len) == 0) {
                        *found = true;
                        return (int64_t)i;
                }
        }
        return -1;
}

/* As ngx_http_limit_req_lookup: a hit moves to the head; a miss expires, then inserts. */
static struct bucket *bmap_find_evict(struct bucket_map *m, const char *key, size_t len,
                                      uint64_t now)
{
        uint64_t h = fnv1a(key, len);
        bool found;
        int64_t i = bmap_probe(m, key, len, h, &found);
        if (found) {
                lru_unlink(m, (uint32_t)i);
                lru_push(m, (uint32_t)i);
                return &m->b[i];
        }
        uint64_t before = m->live;
        bmap_expire(m, now, 1);
        if (m->live >= m->cap)
                bmap_expire(m, now, 0);
        if (m->live != before) /* removals may have shifted buckets: find the empty slot again */
                i = bmap_probe(m, key, len, h, &found);
        if (m->live >= m->cap || i < 0) {
                cnt_add(&m->cnt->insert_fail, 1);
                return NULL;
        }
        struct bucket *b = &m->b[i];
        *b = (struct bucket){.hash = (uint32_t)(h >> 32), .len = (uint16_t)len};
        memcpy(b->key, key, len);
        lru_push(m, (uint32_t)i);
        m->live++;
        atomic_store_explicit(&m->cnt->live, m->live, memory_order_relaxed);
        return b;
}

void bmap_evict_init(struct bucket_map *m, uint64_t cap, uint64_t ttl_ns, struct bmap_counts *cnt)
{
        m->cap = cap;
        m->ttl_ns = ttl_ns;
        m->live = 0;
        m->head = m->tail = BMAP_NIL;
        m->cnt = cnt;
}

/* ---------------------------------------------------------------- both modes */

/* GCRA on one bucket (DESIGN.md 5): 1 admitted (TAT advanced), 0 denied (nothing written). */
static int gcra(struct bucket *b, uint64_t now, uint64_t cost, uint64_t t_ns, uint64_t bt_ns)
{
        uint64_t tat = b->tat > now ? b->tat : now;
        uint64_t new_tat = tat + cost * t_ns;
        if (new_tat - now > bt_ns)
                return 0;
        if (cost)
                b->tat = new_tat; /* a peek (cost 0) changes nothing */
        return 1;
}

uint64_t bmap_slots(uint64_t keys)
{
        uint64_t slots = 16;
        while (slots < 2 * keys)
                slots <<= 1;
        return slots;
}

void bmap_rates(struct bucket_map *m, const struct bench_cfg *cfg)
{
        m->t_ns = (cfg->period_ns / cfg->rate_n) ? cfg->period_ns / cfg->rate_n : 1;
        m->bt_ns = m->t_ns * cfg->burst;
        m->burst = cfg->burst;
}

int bmap_fill(struct bucket_map *m, uint64_t keys, char *key, size_t key_len)
{
        for (uint64_t i = 0; i < keys; i++) {
                int n = snprintf(key, key_len, "key:%" PRIu64, i);
                if (!bmap_find(m, key, (size_t)n))
                        return -ENOSPC;
        }
        return 0;
}

int bmap_try(struct bucket_map *m, pthread_mutex_t *lock, const char *key, size_t key_len,
             uint64_t cost)
{
        if (key_len == 0)
                return -EINVAL;
        if (key_len > BMAP_KEY_MAX)
                return -ENAMETOOLONG;
        if (cost > m->burst)
                return -ERANGE;
        uint64_t now = now_ns();
        int rc = -ENOSPC;
        pthread_mutex_lock(lock);
        struct bucket *b =
            m->cap ? bmap_find_evict(m, key, key_len, now) : bmap_find(m, key, key_len);
        if (b)
                rc = gcra(b, now, cost, m->t_ns, m->bt_ns);
        pthread_mutex_unlock(lock);
        return rc;
}
