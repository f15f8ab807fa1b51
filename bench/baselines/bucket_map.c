/*
 * bucket_map.c - the map of GCRA buckets that mutex_bucket.c and nginx_zone.c share (see
 * bucket_map.h): lookup with insertion, the GCRA decision, the untimed fill, one locked try.
 */
#include <errno.h>
#include <inttypes.h>
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
        struct bucket *b = bmap_find(m, key, key_len);
        if (b)
                rc = gcra(b, now, cost, m->t_ns, m->bt_ns);
        pthread_mutex_unlock(lock);
        return rc;
}
