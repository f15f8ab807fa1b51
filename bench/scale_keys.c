/*
 * scale_keys.c - the key streams of bench_scale (scale_keys.h): the fixed key sets' cyclic
 * sequences (uniform, Zipf) and the churn stream of ever new keys. Built by each worker after
 * fork, before any timing; only churn_next (inline, in the header) runs in the timed loop.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scale_keys.h"

#define SEQ_SEED  0x9e3779b97f4a7c15ull
#define ZIPF_MULT 999983u /* prime: rank -> key index is a bijection mod 10^k */

static double *zipf_cdf; /* built once per key count, inherited by the workers */
static uint64_t zipf_n;

static uint64_t xorshift64(uint64_t *s)
{
        uint64_t x = *s;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        return *s = x;
}

/* ---------------------------------------------------------------- fixed key sets */

/* Inverse-CDF table of Zipf s = 1.0 over N ranks: cdf[k] = H(k+1) / H(N). */
int zipf_build(uint64_t n)
{
        if (zipf_cdf && zipf_n == n)
                return 0;
        free(zipf_cdf);
        zipf_cdf = malloc(n * sizeof(*zipf_cdf));
        if (!zipf_cdf)
                return -ENOMEM;
        double h = 0;
        for (uint64_t k = 0; k < n; k++)
                zipf_cdf[k] = h += 1.0 / (double)(k + 1);
        for (uint64_t k = 0; k < n; k++)
                zipf_cdf[k] /= h;
        zipf_n = n;
        return 0;
}

static uint64_t zipf_draw(uint64_t *seed)
{
        double u = (double)(xorshift64(seed) >> 11) * 0x1p-53;
        uint64_t lo = 0, hi = zipf_n - 1;
        while (lo < hi) {
                uint64_t mid = (lo + hi) / 2;
                if (zipf_cdf[mid] < u)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return (lo * ZIPF_MULT) % zipf_n; /* scatter the hot ranks over the key space */
}

static uint64_t draw(int zipf, uint64_t keys, uint64_t *seed)
{
        if (zipf)
                return zipf_draw(seed);
        return ((xorshift64(seed) >> 32) * keys) >> 32;
}

struct op *seq_build(int zipf, uint64_t keys, size_t n, int worker)
{
        struct op *ops = aligned_alloc(64, n * sizeof(*ops));
        uint64_t seed = SEQ_SEED ^ ((uint64_t)worker * 0x2545f4914f6cdd1dull);
        char buf[24];
        if (!ops)
                return NULL;
        for (size_t i = 0; i < n; i++) {
                uint64_t idx = draw(zipf, keys, &seed);
                int len = snprintf(buf, sizeof(buf), "key:%" PRIu64, idx);
                ops[i] = (struct op){.idx = (uint32_t)idx, .len = (uint8_t)len};
                memcpy(ops[i].key, buf, (size_t)len);
        }
        return ops;
}

/* ---------------------------------------------------------------- churn */

static void ckey_make(struct ckey *k, uint64_t id, uint64_t keys)
{
        k->id = id;
        k->idx = id % keys;
        k->len = (uint8_t)snprintf(k->key, sizeof(k->key), "key:%0*" PRIu64, (int)CHURN_DIGITS, id);
}

static uint64_t hot_count(uint64_t keys)
{
        return keys / CHURN_HOT_DIV ? keys / CHURN_HOT_DIV : 1;
}

int churn_init(struct churn *c, uint64_t keys, size_t n, int wi, int procs, unsigned config)
{
        uint64_t seed = 0x9e3779b97f4a7c15ull ^ ((uint64_t)(wi + 1) * 0x2545f4914f6cdd1dull);
        uint64_t hot = hot_count(keys);
        *c = (struct churn){.mask = n - 1, .step = (uint64_t)procs, .keys = keys};
        c->pat = malloc(n * sizeof(*c->pat));
        c->hot = malloc(hot * sizeof(*c->hot));
        if (!c->pat || !c->hot) {
                churn_free(c);
                return -ENOMEM;
        }
        for (uint64_t j = 0; j < hot; j++)
                ckey_make(&c->hot[j], j, keys);
        for (size_t i = 0; i < n; i++) {
                uint64_t pct = ((xorshift64(&seed) >> 32) * 100) >> 32;
                uint64_t r = xorshift64(&seed) >> 32;
                c->pat[i] = pct < CHURN_HOT_PCT                   ? CHURN_HOT + (uint32_t)(r % hot)
                            : pct < CHURN_HOT_PCT + CHURN_NEW_PCT ? CHURN_NEW
                                                                  : (uint32_t)(r % CHURN_WIN);
        }
        /* the window starts full of this worker's first ids (each one an insert when first used) */
        ckey_make(&c->ring[0], CHURN_BASE * (config + 1) + (uint64_t)wi, keys);
        for (c->n = 1; c->n < CHURN_WIN; c->n++) {
                c->ring[c->n] = c->ring[c->n - 1];
                ckey_add(&c->ring[c->n], c->step, keys);
        }
        return 0;
}

void churn_free(struct churn *c)
{
        free(c->pat);
        free(c->hot);
        c->pat = NULL;
        c->hot = NULL;
}
