/*
 * test_longkey.c - keys longer than a slot's 44 bytes (layout.h's stored form: the first 28
 * bytes and a keyed digest), on real arenas through the public API: long keys that share their
 * first 28 or 44 bytes, or all but their last byte, have limits of their own; a long key and the
 * 44-byte key equal to its stored form are two keys; the slot holds the real length and the stored
 * form, one cache line, and the daemon recomputes a long key's home from the slot alone (its
 * maintenance trims around it); the maximum works in every entry point and one byte more is
 * -ENAMETOOLONG; a composed call refunds a long budget key exactly.
 */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

#include "client_internal.h"
#include "helpers.h"
#include "reclaim.h"

#define MS  1000000ull
#define BU  5 /* burst of "l" and "ev" */
#define TTL (100 * MS)

static struct tarena T;
static thr_limiter *L, *BUD, *EV;

static void setup(void)
{
        struct shm_limiter_spec s[] = {tspec("l", 10, SEC, BU, BU), tspec_budget("bud", 50),
                                       tspec("ev", 10, SEC, BU, BU)};
        s[2].capacity = 16;
        s[2].shards = 1;
        s[2].idle_ttl_ns = TTL;
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 3);
        L = tlim_kept(&T, "l");
        BUD = tlim_kept(&T, "bud");
        EV = tlim_kept(&T, "ev");
        cr_assert_eq(thr_clock_advance(T.a, SEC), 0);
}

static void teardown(void)
{
        tarena_free(&T);
}

TestSuite(longkey, .init = setup, .fini = teardown);

static const uint64_t *secret(void)
{
        return shm_hdr(&T.map)->digest_key;
}

static const uint64_t *hkey(void)
{
        return shm_hdr(&T.map)->hash_key;
}

/* Tries of cost 1 on KEY that L admits before the first denial (at most BU + 1 asked). */
static int admits(thr_limiter *l, const void *key, size_t len)
{
        struct thr_result r;
        int n = 0;
        for (int i = 0; i <= BU; i++) {
                int rc = thr_limiter_try(l, key, len, 1, &r);
                cr_assert_geq(rc, 0, "try: %s", strerror(-rc));
                n += rc;
        }
        return n;
}

/* KEY's live slot in limiter NAME, found as a client finds it (by its stored form). */
static struct thr_slot *slot_of(const char *name, const void *key, uint32_t len)
{
        uint8_t buf[THR_KEY_INLINE];
        const void *sk = shm_key_store(secret(), key, len, buf);
        return shm_table_lookup(T.map.base, ttable(&T, name), shm_stored_hash(hkey(), sk, len), sk,
                                len);
}

Test(longkey, long_keys_sharing_a_prefix_have_limits_of_their_own)
{
        char a[THR_KEY_MAX], b[THR_KEY_MAX], c[THR_KEY_MAX];
        for (size_t len = THR_KEY_INLINE + 1; len <= THR_KEY_MAX; len++) {
                memset(a, 'p', len);
                a[0] = (char)('0' + len % 10); /* another key at every length */
                a[1] = (char)('0' + len / 10 % 10);
                a[2] = (char)('0' + len / 100);
                memcpy(b, a, len);
                memcpy(c, a, len);
                b[len - 1] = 'b';            /* shares all but its last byte */
                c[THR_KEY_PREFIX + 2] = 'c'; /* shares its first 28 bytes, not its first 44 */
                cr_assert_eq(admits(L, a, len), BU, "len %zu: a's burst", len);
                cr_assert_eq(admits(L, b, len), BU, "len %zu: b has its own burst", len);
                cr_assert_eq(admits(L, c, len), BU, "len %zu: c has its own burst", len);
                cr_assert_eq(admits(L, a, len - 1), BU, "len %zu: a's prefix is another key", len);
        }
        cr_assert_eq(shm_table_count(T.map.base, ttable(&T, "l")),
                     4 * (THR_KEY_MAX - THR_KEY_INLINE));
}

Test(longkey, a_long_key_and_the_44_byte_key_equal_to_its_stored_form_are_two_keys)
{
        char key[70];
        uint8_t stored[THR_KEY_INLINE];
        memset(key, 'q', sizeof(key));
        cr_assert_eq(shm_key_store(secret(), key, sizeof(key), stored), (const void *)stored);
        cr_assert_eq(admits(L, key, sizeof(key)), BU);
        cr_assert_eq(admits(L, stored, sizeof(stored)), BU, "the twin has its own burst");
        struct thr_slot *s1 = slot_of("l", key, sizeof(key));
        struct thr_slot *s2 = slot_of("l", stored, sizeof(stored));
        cr_assert(s1 && s2 && s1 != s2);
        cr_assert_eq(memcmp(s1->key, s2->key, THR_KEY_INLINE), 0, "equal stored forms");
        cr_assert_eq(s1->key_len, sizeof(key), "told apart by their lengths");
        cr_assert_eq(s2->key_len, sizeof(stored));
}

Test(longkey, the_slot_holds_the_real_length_and_the_stored_form_in_one_line)
{
        char key[THR_KEY_MAX];
        uint8_t digest[THR_KEY_DIGEST];
        memset(key, 'r', sizeof(key));
        key[sizeof(key) - 1] = '!';
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(L, key, sizeof(key), 1, &r), 1);
        struct thr_slot *s = slot_of("l", key, sizeof(key));
        cr_assert_not_null(s);
        cr_assert_eq(s->key_len, THR_KEY_MAX);
        cr_assert_eq(memcmp(s->key, key, THR_KEY_PREFIX), 0, "its first 28 bytes");
        shm_siphash128(secret(), key, sizeof(key), digest);
        cr_assert_eq(memcmp(s->key + THR_KEY_PREFIX, digest, THR_KEY_DIGEST), 0, "then its digest");
        cr_assert_eq(atomic_load(&s->reach), 0);
        cr_assert_eq((uintptr_t)s % 64, 0, "a slot is one cache line");
        cr_assert_eq(ttable(&T, "l")->slots_off % 64, 0);
        uint64_t h = shm_key_hash(hkey(), secret(), key, sizeof(key));
        cr_assert_eq(THR_META_TAG(atomic_load(&s->meta)), (uint32_t)h);
        cr_assert_eq(shm_stored_hash(hkey(), s->key, s->key_len), h,
                     "the slot alone gives the key's hash (the daemon's rehash)");
}

Test(longkey, the_maximum_works_everywhere_and_one_byte_more_is_too_long)
{
        char key[THR_KEY_MAX + 1];
        memset(key, 'm', sizeof(key));
        struct thr_result r;
        struct thr_budget_result br;
        struct thr_budget_stat bs;
        cr_assert_eq(thr_limiter_try(L, key, THR_KEY_MAX, 1, &r), 1);
        cr_assert_eq(thr_limiter_try(L, key, THR_KEY_MAX + 1, 1, &r), -ENAMETOOLONG);
        cr_assert_eq(thr_budget_try(BUD, key, THR_KEY_MAX, 5, &br), 0);
        cr_assert_eq(thr_budget_add(BUD, key, THR_KEY_MAX, 2, &br), 0);
        cr_assert_eq(thr_budget_stat(BUD, key, THR_KEY_MAX, &bs), 0);
        cr_assert_eq(bs.balance, 47);
        cr_assert_eq(thr_budget_try(BUD, key, THR_KEY_MAX + 1, 1, &br), -ENAMETOOLONG);
        cr_assert_eq(thr_budget_add(BUD, key, THR_KEY_MAX + 1, 1, &br), -ENAMETOOLONG);
        cr_assert_eq(thr_budget_stat(BUD, key, THR_KEY_MAX + 1, &bs), -ENAMETOOLONG);
        struct thr_compose_result cres;
        struct thr_member m[] = {{L, key, THR_KEY_MAX, 1}, {BUD, key, THR_KEY_MAX, 1}};
        cr_assert_eq(thr_compose_try(m, 2, &cres), 1);
        m[1].len = THR_KEY_MAX + 1;
        cr_assert_eq(thr_compose_try(m, 2, &cres), -ENAMETOOLONG);
}

static uint64_t balance(const void *key, size_t len)
{
        struct thr_budget_stat bs;
        cr_assert_eq(thr_budget_stat(BUD, key, len, &bs), 0);
        return bs.balance;
}

Test(longkey, a_composed_call_refunds_a_long_budget_key_exactly)
{
        char key[80];
        uint8_t twin[THR_KEY_INLINE];
        memset(key, 'b', sizeof(key));
        shm_key_store(secret(), key, sizeof(key), twin);
        struct thr_budget_result br;
        cr_assert_eq(thr_budget_try(BUD, twin, sizeof(twin), 7, &br), 0);
        struct thr_member m[] = {{L, "g", 1, 1}, {BUD, key, sizeof(key), 20}};
        struct thr_compose_result res;
        struct thr_compose_ticket t;
        cr_assert_eq(thr_compose_take(m, 2, &res, &t), 1);
        cr_assert_eq(balance(key, sizeof(key)), 30);
        uint64_t given[2];
        cr_assert_geq(thr_compose_refund(&t, given), 1);
        cr_assert_eq(given[1], 20);
        cr_assert_eq(balance(key, sizeof(key)), 50, "the long key got its 20 back");
        cr_assert_eq(balance(twin, sizeof(twin)), 43, "its 44-byte twin did not");
        cr_assert_eq(shm_table_count(T.map.base, ttable(&T, "bud")), 2, "no third key made");
}

/* One whole maintenance pass of "ev" at the arena's time, as the daemon runs it (*TAG: the tag it
 * retires with), then its counts. */
static struct shm_maint_stats maint(uint64_t done, uint32_t *tag)
{
        return tmaint(&T, "ev", done, tag);
}

Test(longkey, the_daemon_trims_around_a_long_key_rehashed_from_its_slot)
{
        char key[90];
        memset(key, 'd', sizeof(key));
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(EV, key, sizeof(key), BU, &r), 1); /* in debt 500 ms */
        cr_assert_eq(thr_limiter_try(EV, "k", 1, 1, &r), 1);            /* 100 ms */
        struct thr_slot *ks = slot_of("ev", "k", 1);
        cr_assert_not_null(ks);
        cr_assert_eq(thr_clock_advance(T.a, 100 * MS + TTL), 0);
        uint32_t tag;
        struct shm_maint_stats st = maint(0, &tag);
        cr_assert_eq(st.evicted, 1, "k is idle, the long key is not");
        uint64_t gp;
        cr_assert_eq(shm_gp_start(&T.map, &gp), 0);
        struct shm_gp_result res;
        cr_assert_eq(shm_gp_scan(&T.map, gp, shm_now_ns(shm_hdr(&T.map)), SEC, &res, NULL, NULL),
                     0);
        cr_assert_geq(res.done, tag);
        st = maint(res.done, NULL);
        cr_assert_eq(st.reclaimed, 1);
        /* the trim recomputes every live key's home from its slot: a long key whose hash did not
         * come out as its tag would make the pass trim nothing */
        cr_assert_eq(st.trimmed, 1, "k's slot is on no live key's path");
        cr_assert_eq(THR_META_STATUS(atomic_load(&ks->meta)), THR_SLOT_EMPTY);
        cr_assert_not_null(slot_of("ev", key, sizeof(key)), "the long key stays");
        cr_assert_eq(thr_limiter_try(EV, key, sizeof(key), 1, &r), 1);
        cr_assert_eq(r.remaining, 1, "its debt kept: 2 of 5 tokens back after 200 ms, 1 taken");
}
