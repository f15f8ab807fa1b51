/*
 * gcra_table.c - the table of GCRA words of sharded-mutex and cas-local (gcra_table.h).
 */
#include <stdbool.h>
#include <string.h>

#include "gcra_table.h"

uint64_t gt_hash(const char *key, size_t len)
{
        uint64_t h = 14695981039346656037ull;
        for (size_t i = 0; i < len; i++)
                h = (h ^ (unsigned char)key[i]) * 1099511628211ull;
        return h;
}

uint64_t gt_slots(uint64_t keys)
{
        uint64_t slots = 16;
        while (slots < 2 * keys)
                slots <<= 1;
        return slots;
}

static uint64_t home(const struct gtab *t, uint64_t h)
{
        return (h >> 6) & t->mask;
}

static void cnt_add(_Atomic uint64_t *c, uint64_t v)
{
        atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + v,
                              memory_order_relaxed);
}

/* Slot of KEY (*FOUND) or the empty slot that ends its run; -1 if the table is full. */
static int64_t probe(const struct gtab *t, const char *key, size_t len, uint64_t h, bool *found)
{
        *found = false;
        for (uint64_t n = 0, i = home(t, h); n <= t->mask; n++, i = (i + 1) & t->mask) {
                const struct gslot *s = &t->s[i];
                if (s->len == 0)
                        return (int64_t)i;
                if (s->hash == h && s->len == len && memcmp(s->key, key, len) == 0) {
                        *found = true;
                        return (int64_t)i;
                }
        }
        return -1;
}

/* Empty slot I, then move back every later key of the run whose home allows it. */
static void remove_at(struct gtab *t, uint64_t i)
{
        t->s[i].len = 0;
        t->live--;
        for (uint64_t j = (i + 1) & t->mask;; j = (j + 1) & t->mask) {
                struct gslot *sj = &t->s[j];
                if (sj->len == 0)
                        return;
                uint64_t k = home(t, sj->hash);
                bool stays = i <= j ? (i < k && k <= j) : (i < k || k <= j);
                if (stays)
                        continue;
                struct gslot *si = &t->s[i];
                atomic_store_explicit(&si->tat,
                                      atomic_load_explicit(&sj->tat, memory_order_relaxed),
                                      memory_order_relaxed);
                si->hash = sj->hash;
                si->len = sj->len;
                memcpy(si->key, sj->key, sj->len);
                sj->len = 0;
                i = j;
        }
}

static void sweep(struct gtab *t, uint64_t now)
{
        for (unsigned n = 0; n < GT_SWEEP; n++) {
                uint64_t i = t->cursor;
                const struct gslot *s = &t->s[i];
                uint64_t tat = atomic_load_explicit(&s->tat, memory_order_relaxed);
                if (s->len != 0 && tat + t->ttl_ns <= now) {
                        remove_at(t, i); /* a later key may now be at I: look again */
                        if (t->cnt) {
                                cnt_add(&t->cnt->expired, 1);
                                atomic_store_explicit(&t->cnt->live, t->live, memory_order_relaxed);
                        }
                        continue;
                }
                t->cursor = (i + 1) & t->mask;
        }
}

struct gslot *gt_find(struct gtab *t, const char *key, size_t len, uint64_t h, uint64_t now)
{
        bool found;
        int64_t i = probe(t, key, len, h, &found);
        if (found)
                return &t->s[i];
        uint64_t limit = t->cap ? t->cap : (t->mask + 1) / 2;
        if (t->cap && t->live >= limit) {
                sweep(t, now);
                i = probe(t, key, len, h, &found);
        }
        if (t->live >= limit || i < 0) {
                if (t->cnt)
                        cnt_add(&t->cnt->insert_fail, 1);
                return NULL;
        }
        struct gslot *s = &t->s[i];
        atomic_store_explicit(&s->tat, 0, memory_order_relaxed);
        s->hash = h;
        s->len = (uint16_t)len;
        memcpy(s->key, key, len);
        t->live++;
        if (t->cnt)
                atomic_store_explicit(&t->cnt->live, t->live, memory_order_relaxed);
        return s;
}
