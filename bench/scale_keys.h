/*
 * scale_keys.h - the key streams bench_scale's workers walk, every backend alike.
 *
 * Fixed key sets (hot, 10k, 1m, 1m-zipf, denied): a cyclic sequence of precomputed 16-byte
 * records, key index and "key:<i>", drawn with xorshift64 (uniform) or by inverse CDF (Zipf
 * s = 1.0, rank r is key r * 999983 mod N so the hot keys are scattered), seeded per worker.
 *
 * Churn: worker W of P takes fresh ids BASE + W, BASE + W + P, BASE + W + 2P, ... (BASE is
 * (config + 1) * 10^11, so no two workers and no two process counts ever share a fresh key),
 * formatted "key:<13 digits>" (17 bytes, the same length for every key). Per operation, from a
 * precomputed cyclic pattern drawn with xorshift64: 10% one of H hot keys (ids 0..H-1, H =
 * capacity / 100), 45% the worker's next new key, 45% one of its last CHURN_WIN new keys. The
 * new key's string is the previous one plus P, added in place in decimal: no formatting per op.
 * The ids never repeat, however long the run: every new key is an insert.
 */
#ifndef THR_BENCH_SCALE_KEYS_H
#define THR_BENCH_SCALE_KEYS_H

#include <stddef.h>
#include <stdint.h>

/* One precomputed operation, 16 bytes (as bench_try): the key index and the key bytes. */
struct op {
        uint32_t idx;
        uint8_t len;
        char key[11];
};

/* The Zipf table for N ranks (kept until another N is asked for). 0 or -ENOMEM. */
int zipf_build(uint64_t n);

/* N records over KEYS keys for WORKER: uniform, or Zipf (zipf_build(KEYS) first). NULL: ENOMEM. */
struct op *seq_build(int zipf, uint64_t keys, size_t n, int worker);

/* ---------------------------------------------------------------- churn */

#define CHURN_WIN     64u /* a revisit takes one of the worker's last CHURN_WIN new keys */
#define CHURN_DIGITS  13u
#define CHURN_BASE    100000000000ull /* 10^11 fresh ids per process count */
#define CHURN_NEW     0xffffffffu     /* pattern code: the next new key */
#define CHURN_HOT     0x80000000u     /* pattern code: hot key (code - CHURN_HOT) */
#define CHURN_HOT_PCT 10u
#define CHURN_NEW_PCT 45u
#define CHURN_HOT_DIV 100u /* H = capacity / CHURN_HOT_DIV, at least 1 */

/* One key of the stream: the floor's word index, the id, and the key bytes. */
struct ckey {
        uint64_t idx; /* id mod capacity */
        uint64_t id;
        uint8_t len;
        char key[23];
};

struct churn {
        uint32_t *pat; /* cyclic: CHURN_NEW, r < CHURN_WIN (revisit), or CHURN_HOT + j */
        size_t pos, mask;
        uint64_t n;    /* new keys taken so far (the ring's next position) */
        uint64_t step; /* P */
        uint64_t keys; /* capacity: idx = id mod keys */
        struct ckey *hot;
        struct ckey ring[CHURN_WIN];
};

/* The stream of worker WI of PROCS in config CONFIG, pattern of N (a power of two) entries. */
int churn_init(struct churn *c, uint64_t keys, size_t n, int wi, int procs, unsigned config);
void churn_free(struct churn *c);

/* Add STEP to K's id, index and decimal digits. */
static inline void ckey_add(struct ckey *k, uint64_t step, uint64_t keys)
{
        k->id += step;
        k->idx += step;
        while (k->idx >= keys)
                k->idx -= keys;
        unsigned carry = (unsigned)step;
        for (int i = 4 + (int)CHURN_DIGITS - 1; carry && i >= 4; i--) {
                unsigned d = (unsigned)(k->key[i] - '0') + carry;
                k->key[i] = (char)('0' + d % 10);
                carry = d / 10;
        }
}

/* The next key of the stream. */
static inline const struct ckey *churn_next(struct churn *c)
{
        uint32_t code = c->pat[c->pos++ & c->mask];
        if (code < CHURN_WIN)
                return &c->ring[(c->n - 1 - code) & (CHURN_WIN - 1)];
        if (code != CHURN_NEW)
                return &c->hot[code - CHURN_HOT];
        struct ckey *k = &c->ring[c->n & (CHURN_WIN - 1)];
        *k = c->ring[(c->n - 1) & (CHURN_WIN - 1)];
        ckey_add(k, c->step, c->keys);
        c->n++;
        return k;
}

#endif
