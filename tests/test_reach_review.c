/*
 * test_reach_review.c - an adversarial review of 79de40b (a lookup stops past its home's reach,
 * evictions for room start at a cursor, inserters reuse a retired slot once the header's gp_done
 * says its grace period is done). Each test drives the daemon's side by hand on a manual-clock
 * arena, as test_evict.c does, and places client steps at exact points with test hooks.
 *
 * Findings (each test failed before its fix, in the commits that follow the tests):
 *   - trim_segment indexed its per-segment reach array by a home outside the segment (a key a
 *     client rewrote): a heap write past the daemon's buffer (ASan: heap-buffer-overflow).
 *   - the daemon's lock-free reclaim (meta checked, then CAS state DEAD -> FREE) can now lose a
 *     race with an inserter, which takes DEAD slots itself: between the check and the CAS the slot
 *     is reused and its new key evicted (state DEAD again, a new undone tag), and the CAS frees it.
 *   - the reach byte took the place of padding that writers of layout major 10 never maintained,
 *     and the major stayed 10: a client of the previous commit still attached inserts keys a new
 *     client's lookup cannot reach, and the new client inserts the key a second time.
 * Regression tests (risks the commit's own tests did not cover): an inserter killed between its
 * reach raise and its publish; the eviction cursor at any value never picks an indebted key while
 * one without debt exists; scribbled reach and evict_next values stay in bounds and terminate;
 * the grace-period counter across 2^32 with gp_done left by a previous daemon; a reader stopped
 * holding a slot keeps inserters off it until it leaves; reach saturating at THR_REACH_ANY and
 * brought back exact; a gp_done written by a client (what it does); a segment with end_open.
 */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client_internal.h"
#include "helpers.h"
#include "testhook.h"

#define MS  1000000ull
#define TI  (100 * MS) /* emission interval of 10/s */
#define BU  5ull       /* burst */
#define TTL SEC

static struct tarena T;
static thr_limiter *L;
static pid_t g_kid;

static void teardown(void)
{
        if (g_kid > 0 && kill(g_kid, SIGKILL) == 0)
                waitpid(g_kid, NULL, 0);
        g_kid = 0;
        thr_test_hook = NULL;
        thr_limiter_close(L);
        L = NULL;
        tarena_free(&T);
}

TestSuite(reach_review, .fini = teardown, .timeout = 120);

/* ---------------------------------------------------------------- fixtures (as test_evict.c) */

static void make1(uint64_t cap, uint64_t ttl, uint32_t on_full)
{
        struct shm_limiter_spec s = tspec("l", 10, SEC, BU, BU);
        s.capacity = cap;
        s.shards = 1;
        s.idle_ttl_ns = ttl;
        s.on_full = on_full;
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        L = tlim(&T, "l");
        cr_assert_eq(thr_clock_advance(T.a, SEC), 0);
}

static uint64_t now_ns(void)
{
        return shm_now_ns(shm_hdr(&T.map));
}

static void clock_to(uint64_t at)
{
        cr_assert_geq(at, now_ns());
        thr_clock_advance(T.a, at - now_ns());
}

static int try1(const char *key, struct thr_result *r)
{
        return thr_limiter_try(L, key, strlen(key), 1, r);
}

static struct shm_lim_snap snap_of(void)
{
        return tsnap(&T, "l");
}

static struct thr_shard *shard0(void)
{
        return shm_at(T.map.base, snap_of().table.shards_off);
}

static struct thr_slot *slot0(uint32_t *n)
{
        struct shm_lim_snap s = snap_of();
        *n = s.table.nshards * s.table.shard_slots;
        return shm_at(T.map.base, s.table.slots_off);
}

static unsigned status(const struct thr_slot *s)
{
        return THR_META_STATUS(atomic_load(&s->meta));
}

static uint32_t gen_of(const struct thr_slot *s)
{
        return THR_META_GEN(atomic_load(&s->meta));
}

static int count(unsigned st, const char *key, struct thr_slot **last)
{
        return tcount(&T, "l", st, key, last);
}

static struct thr_slot *live_slot(const char *key)
{
        struct thr_slot *s = NULL;
        cr_assert_eq(count(THR_SLOT_LIVE, key, &s), 1, "one live slot for %s", key);
        return s;
}

static uint32_t home_of(const char *key)
{
        struct shm_lim_snap s = snap_of();
        struct shm_probe p;
        shm_probe_init(T.map.base, &s.table, shm_hash(shm_hdr(&T.map)->hash_key, key, strlen(key)),
                       &p);
        return p.home;
}

static void key_at(uint32_t home, const char *prefix, char *buf, size_t len)
{
        struct shm_lim_snap s = snap_of();
        tkey_at(&T.map, &s.table, home, prefix, buf, len);
}

/* The lock-free lookup a client makes (bounded by the home's reach). */
static struct thr_slot *lookup(const char *key)
{
        struct shm_lim_snap s = snap_of();
        uint64_t h = shm_hash(shm_hdr(&T.map)->hash_key, key, strlen(key));
        return shm_table_lookup(T.map.base, &s.table, h, key, (uint32_t)strlen(key));
}

/* FN runs once when the library reaches hook point G_POINT with argument G_ARG (NULL: any). */
static enum thr_hook_point g_point;
static void *g_arg;
static void (*g_fn)(void);

static void on_point(enum thr_hook_point pt, void *arg)
{
        if (pt != g_point || (g_arg && arg != g_arg) || !g_fn)
                return;
        void (*fn)(void) = g_fn;
        g_fn = NULL;
        fn();
}

static void hook_at(enum thr_hook_point pt, void *arg, void (*fn)(void))
{
        g_point = pt;
        g_arg = arg;
        g_fn = fn;
        thr_test_hook = fn ? on_point : NULL;
}

/* One whole maintenance pass at the arena's time, as the daemon runs it. */
static struct shm_maint_stats maint(uint64_t done, uint32_t *tag)
{
        return tmaint(&T, "l", done, tag);
}

static struct shm_gp_result grace(uint64_t *gp)
{
        uint64_t g;
        cr_assert_eq(shm_gp_start(&T.map, &g), 0);
        struct shm_gp_result res;
        cr_assert_eq(shm_gp_scan(&T.map, g, now_ns(), SEC, &res, NULL, NULL), 0);
        if (gp)
                *gp = g;
        return res;
}

/* Every live key is found by the bounded lookup, where it is, and only once. */
static void assert_live_keys_reachable_once(void)
{
        uint32_t n;
        struct thr_slot *s = slot0(&n);
        for (uint32_t i = 0; i < n; i++) {
                if (status(&s[i]) != THR_SLOT_LIVE)
                        continue;
                char key[THR_KEY_MAX + 1];
                memcpy(key, s[i].key, s[i].key_len);
                key[s[i].key_len] = 0;
                cr_assert_eq(lookup(key), &s[i], "slot %u (%s): beyond its home's reach", i, key);
                cr_assert_eq(count(THR_SLOT_LIVE, key, NULL), 1, "%s: two live slots", key);
        }
}

/* ---------------------------------------------------------------- findings */

/*
 * trim_segment (shm/reclaim.c) records each home's farthest key in far[rel], an array of the
 * segment's length, before it checks that the home lies inside the segment (the check that makes
 * a rewritten key "trim nothing"). A shard longer than a segment (128 slots) has segments that do
 * not start at the shard's first EMPTY slot; a LIVE key there whose home lies in an earlier
 * segment (a client rewrote a slot: the arena is writable by clients) has rel >= len, and the
 * daemon reads and writes far[rel] past its calloc'd buffer. Under ASan: heap-buffer-overflow in
 * trim_segment; without it, a silent write into the daemon's heap (up to the shard's size away).
 */
Test(reach_review, trim_never_indexes_past_its_segment_on_a_rewritten_key)
{
        make1(4096, 0, THR_FULL_DENY); /* one shard of 4096 * 1.5 + 8 = 6152 slots */
        uint32_t n;
        struct thr_slot *s = slot0(&n);
        cr_assert_eq(n, 6152);
        char k[32];
        key_at(100, "k", k, sizeof(k));
        struct thr_result r;
        cr_assert_eq(try1(k, &r), 1);
        struct thr_slot *ks = live_slot(k);
        cr_assert_eq(ks - s, 100);
        /* Segments of THR_MAINT_SEGMENT (128) slots, each ending before an EMPTY one: [0, 128),
         * ..., [4992, 5120), ... A client writes a copy of k (hash, tag and shard all consistent)
         * into slot 5000, far past k's segment, and leaves slot 5001 BUSY, so the pass repairs it
         * and trims that segment. */
        struct thr_slot *c = &s[5000];
        c->key_len = ks->key_len;
        memcpy(c->key, ks->key, ks->key_len);
        atomic_store(&c->state, atomic_load(&ks->state));
        atomic_store(&c->meta, atomic_load(&ks->meta));
        atomic_store(&s[5001].meta, THR_META_MAKE(THR_SLOT_BUSY, 0, 0));
        struct shm_maint_stats st = maint(0, NULL);
        cr_assert_eq(st.repaired, 1);
        cr_assert_eq(st.trimmed, 0, "a key whose path crosses an EMPTY slot: trim nothing");
        cr_assert_eq(lookup(k), ks, "the real key is still found");
        cr_assert_eq(status(&s[5001]), THR_SLOT_DEAD, "repaired, not trimmed");
}

/*
 * reclaim() (shm/reclaim.c) frees a retired slot lock-free: it compares the slot's meta with what
 * it read, then CASes the state DEAD -> FREE. Its comment's premise, "a slot DEAD in both words
 * is touched by nobody but this pass until it is FREE", no longer holds: an inserter now takes a
 * DEAD slot whose tag the header's gp_done covers (CAS DEAD -> FREE, publish), and on_full =
 * evict can retire the new key at once (state DEAD again, meta DEAD with a new, undone tag). Run
 * between the pass's meta check and its CAS (a test hook there), that leaves the CAS's expected
 * value in place: the pass frees the new retirement before its grace period, and an inserter may
 * reuse it while a reader that looked the new key up still holds it. Also counts the slot
 * reclaimed twice.
 */
static char g_x[32], g_z[32];
static int g_x_rc = -1, g_z_rc = -1;

static bool g_locked;

static void insert_x_then_z(void)
{
        struct thr_result r;
        g_x_rc = try1(g_x, &r);
        g_z_rc = try1(g_z, &r); /* the table is full: evicts x, the least indebted */
}

/* At the pass's CAS: the insert and eviction, unless the pass holds the shard lock there. */
static void check_lock_then_insert(void)
{
        g_locked = atomic_load(&shard0()->lock) != 0;
        if (!g_locked)
                insert_x_then_z();
}

Test(reach_review, reclaim_pass_never_frees_a_slot_an_inserter_reused_and_retired_before_its_cas)
{
        make1(2, TTL, THR_FULL_EVICT);
        uint32_t n, h, tag;
        struct thr_slot *base = slot0(&n);
        struct thr_result r;
        h = home_of("k");
        char m[32];
        key_at(h, "m", m, sizeof(m));
        uint64_t t0 = now_ns();
        cr_assert_eq(try1("k", &r), 1);
        clock_to(t0 + 500 * MS);
        cr_assert_eq(try1(m, &r), 1);
        struct thr_slot *ks = live_slot("k");
        cr_assert_eq(ks - base, h);
        clock_to(t0 + TI + TTL);
        struct thr_reservation rv;
        cr_assert_eq(thr_limiter_reserve(L, m, strlen(m), BU, UINT64_MAX, &rv), 0, "m indebted");
        key_at(h, "x", g_x, sizeof(g_x));
        key_at(h, "y", g_z, sizeof(g_z));
        cr_assert_eq(maint(0, &tag).evicted, 1, "k only");
        struct shm_gp_result res = grace(NULL);
        cr_assert_geq(res.done, tag);
        cr_assert_eq(atomic_load(&shm_hdr(&T.map)->gp_done), res.done);
        uint32_t gen = gen_of(ks);
        hook_at(THR_HOOK_RECLAIM_CHECKED, &ks->meta, check_lock_then_insert);
        struct shm_maint_stats st = maint(res.done, NULL);
        thr_test_hook = NULL;
        if (g_locked) { /* the check and the CAS run under the shard lock: no insert between */
                cr_assert_eq(st.reclaimed, 1);
                cr_assert_eq(atomic_load(&ks->state), THR_TAT_FREE);
                insert_x_then_z(); /* after the CAS then; the next pass must not free x's slot */
                st = maint(res.done, NULL);
        }
        cr_assert_eq(g_x_rc, 1, "x inserted");
        cr_assert_geq(g_z_rc, 0);
        cr_assert_eq(count(THR_SLOT_LIVE, g_x, NULL), 0, "x was evicted for z");
        uint64_t meta = atomic_load(&ks->meta);
        cr_assert_eq(THR_META_STATUS(meta), THR_SLOT_DEAD);
        cr_assert_eq(THR_META_GEN(meta), gen + 1, "x took k's retired slot, and was retired");
        cr_assert_gt(THR_META_TAG(meta), (uint32_t)res.done, "its grace period has not run");
        cr_assert_eq(atomic_load(&ks->state), THR_TAT_DEAD,
                     "x's retirement freed before its grace period (reclaimed %" PRIu64 ")",
                     st.reclaimed);
        cr_assert_eq(atomic_load(&shard0()->reclaimed), 1, "k's slot was reclaimed once");
        (void)st;
}

/*
 * The reach byte takes the place of padding (thr_slot.pad) that no writer of layout 10.0 ever
 * set, and lookups and locked probes now stop at it; the layout major stayed 10. A client built
 * before 79de40b (same major: it attaches) inserts a displaced key without raising its home's
 * reach. Emulated here by the byte it leaves (0): a client of this commit no longer finds the key,
 * and inserting it makes a second live slot. So an arena of major 10 must be refused.
 */
Test(reach_review, an_arena_of_the_layout_before_reach_is_refused)
{
        make1(8, 0, THR_FULL_DENY);
        uint32_t n, h = home_of("a");
        struct thr_slot *s = slot0(&n);
        char b[32];
        key_at(h, "b", b, sizeof(b));
        struct thr_result r;
        cr_assert_eq(try1("a", &r), 1);
        cr_assert_eq(try1(b, &r), 1);
        cr_assert_eq(live_slot(b) - s, (h + 1) % n, "b displaced by one");
        /* what a major-10 writer of the previous commit leaves: reach 0 */
        atomic_store(&s[h].reach, 0);
        cr_assert_null(lookup(b), "b unreachable for this commit's lookup");
        cr_assert_eq(try1(b, &r), 1);
        cr_assert_eq(count(THR_SLOT_LIVE, b, NULL), 2, "b inserted twice");
        /* so the two must not share an arena */
        struct thr_hdr *hd = shm_hdr(&T.map);
        uint32_t major = hd->major;
        hd->major = 10;
        thr_arena *a = NULL;
        int rc = thr_arena_open(T.path, 0, &a);
        if (rc == 0)
                thr_arena_close(a);
        hd->major = major;
        cr_assert_eq(rc, -EPROTONOSUPPORT,
                     "an arena of layout 10 (no reach maintained by its writers) opened: %d", rc);
}

/* ---------------------------------------------------------------- regression tests */

/*
 * An inserter SIGKILLed at every step of its insert's critical part: after its home's reach is
 * raised and before the slot is BUSY (a test hook), with the place an EMPTY slot or a retired
 * slot it took as reclaimed (CAS DEAD -> FREE done). The next inserter takes the lock over and
 * repairs the shard: one live slot per key, every key within its home's reach, counts exact.
 */
static void die(void)
{
        raise(SIGKILL);
}

static void kill_mid_insert(const char *key)
{
        pid_t pid = tfork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                hook_at(THR_HOOK_REACH_RAISED, NULL, die);
                struct thr_result r;
                try1(key, &r);
                _exit(3); /* the hook never ran */
        }
        g_kid = pid;
        int ws = 0;
        cr_assert_eq(waitpid(pid, &ws, 0), pid);
        g_kid = 0;
        cr_assert(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL, "status %#x", ws);
}

Test(reach_review, inserter_killed_between_reach_raise_and_publish)
{
        make1(8, TTL, THR_FULL_DENY); /* one shard of 20 slots */
        uint32_t n, h = home_of("a");
        struct thr_slot *s = slot0(&n);
        struct thr_shard *sh = shard0();
        char b[32], c[32];
        key_at(h, "b", b, sizeof(b));
        key_at(h, "c", c, sizeof(c));
        struct thr_result r;
        cr_assert_eq(try1("a", &r), 1);
        /* 1: b's place is the EMPTY slot h + 1 */
        kill_mid_insert(b);
        cr_assert_eq(atomic_load(&s[h].reach), 1, "raised before the kill");
        cr_assert_eq(status(&s[(h + 1) % n]), THR_SLOT_EMPTY, "killed before BUSY");
        cr_assert_eq(try1(b, &r), 1, "the next inserter takes the lock over");
        cr_assert_eq(live_slot(b) - s, (h + 1) % n);
        assert_live_keys_reachable_once();
        cr_assert_eq(atomic_load(&sh->live), 2);
        /* 2: b retired, its period done: c's place is b's retired slot, taken as reclaimed */
        clock_to(now_ns() + TTL + BU * TI);
        cr_assert_eq(try1("a", &r), 1, "a stays busy");
        cr_assert_eq(maint(0, NULL).evicted, 1, "b only");
        struct shm_gp_result res = grace(NULL);
        (void)res;
        uint64_t reclaimed = atomic_load(&sh->reclaimed);
        kill_mid_insert(c);
        cr_assert_eq(atomic_load(&s[(h + 1) % n].state), THR_TAT_FREE, "taken as reclaimed");
        cr_assert_eq(atomic_load(&sh->reclaimed), reclaimed + 1);
        cr_assert_eq(try1(b, &r), 1, "b again, after a takeover");
        cr_assert_eq(try1(c, &r), 1);
        assert_live_keys_reachable_once();
        cr_assert_eq(atomic_load(&sh->live), 3);
        cr_assert_eq(count(THR_SLOT_LIVE, NULL, NULL), 3);
        cr_assert_eq(atomic_load(&sh->repairs), 2, "each kill repaired once");
        cr_assert_eq(atomic_load(&sh->reclaimed), reclaimed + 1, "counted once");
        /* and a pass keeps every reach covering its keys */
        maint(grace(NULL).done, NULL);
        assert_live_keys_reachable_once();
}

/*
 * on_full = evict from any cursor value a client may have written: the victim is a key with no
 * debt while one exists (here exactly one, the previous new key, repaid by the time that passed),
 * never one of the indebted keys; the table stays within capacity and counts stay exact.
 */
Test(reach_review, eviction_cursor_at_any_value_never_picks_an_indebted_key)
{
        make1(4, 0, THR_FULL_EVICT); /* one shard of 14 slots, capacity 4 */
        uint32_t n;
        slot0(&n);
        struct thr_shard *sh = shard0();
        struct thr_result r;
        struct thr_reservation rv;
        const char *deep[] = {"d0", "d1", "d2"};
        for (int i = 0; i < 3; i++) /* 10 * B emission intervals owed: 5 s */
                for (int j = 0; j < 10; j++)
                        cr_assert_eq(thr_limiter_reserve(L, deep[i], 2, BU, UINT64_MAX, &rv), 0);
        cr_assert_eq(try1("n0", &r), 1);
        const uint64_t cursors[] = {
            0, 1, 5, 13, 14, 15, 27, UINT32_MAX, 1ull << 32, UINT64_MAX, 0x8000000000000001ull};
        char prev[16] = "n0", key[16];
        for (int round = 1; round <= 30; round++) { /* 3 s */
                clock_to(now_ns() + TI); /* the previous new key is repaid; d* still owe */
                atomic_store(&sh->evict_next, round < 11 ? cursors[round] : (uint64_t)round * 7);
                snprintf(key, sizeof(key), "n%d", round);
                cr_assert_eq(try1(key, &r), 1, "%s admitted", key);
                cr_assert_eq(count(THR_SLOT_LIVE, prev, NULL), 0, "round %d: %s is the victim",
                             round, prev);
                for (int i = 0; i < 3; i++)
                        cr_assert_eq(count(THR_SLOT_LIVE, deep[i], NULL), 1,
                                     "round %d: indebted %s evicted", round, deep[i]);
                cr_assert_lt(atomic_load(&sh->evict_next), n, "the cursor stays in range");
                cr_assert_eq(atomic_load(&sh->live), 4);
                cr_assert_eq(count(THR_SLOT_LIVE, NULL, NULL), 4);
                memcpy(prev, key, sizeof(prev));
                if (round % 4 == 0) /* retired slots come back */
                        maint(grace(NULL).done, NULL);
        }
        cr_assert_eq(atomic_load(&sh->evicted_full), 30);
        assert_live_keys_reachable_once();
}

/*
 * Scribbled reach bytes (every value 0..255) and evict_next words: every lookup ends (bounded by
 * the shard), inserts and passes stay inside the table (run under ASan), nothing loops, and the
 * daemon's pass never crashes. A reach scribbled too low makes a key unreachable until a pass
 * that trims its segment recomputes the reach (a client's scribble breaks only the keys' own
 * integrity, as a scribbled state word does); counts stay what a walk of the table says.
 */
Test(reach_review, scribbled_reach_and_cursor_stay_in_bounds)
{
        make1(16, TTL, THR_FULL_EVICT); /* one shard of 32 slots */
        uint32_t n;
        struct thr_slot *s = slot0(&n);
        struct thr_shard *sh = shard0();
        struct thr_result r;
        char key[16];
        uint64_t rng = 0x243f6a8885a308d3ull, done = 0;
        for (int v = 0; v < 256; v++) {
                for (uint32_t i = 0; i < n; i++)
                        atomic_store(&s[i].reach, (uint8_t)(v + i * 37));
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                atomic_store(&sh->evict_next, rng);
                for (int k = 0; k < 6; k++) {
                        snprintf(key, sizeof(key), "k%u", (unsigned)((rng >> (8 * k)) % 64));
                        int rc = try1(key, &r);
                        cr_assert(rc == 0 || rc == 1, "%s: %d", key, rc);
                        (void)lookup(key);
                }
                if (v % 8 == 7) {
                        thr_clock_advance(T.a, (rng >> 40) % (2 * TTL));
                        maint(done, NULL);
                        done = grace(NULL).done;
                }
        }
        cr_assert_leq(count(THR_SLOT_LIVE, NULL, NULL), 16);
        struct shm_lim_snap sn = snap_of();
        cr_assert_eq(shm_table_reconcile(&T.map, sn.table_off, &sn.table, shm_lock_daemon(0)), 0);
        cr_assert_eq(atomic_load(&sh->live), (uint64_t)count(THR_SLOT_LIVE, NULL, NULL));
}

/*
 * The grace-period counter across 2^32 (tags wrap to 0), with the header's gp_done left by a
 * previous daemon (a restart: the new daemon's own done is 0, an inserter reads the header's): a
 * slot retired with a wrapped tag is not reused by an inserter until a period at or past it
 * completes, then it is.
 */
Test(reach_review, inserter_reuse_across_2_32_with_a_previous_daemons_gp_done)
{
        make1(8, TTL, THR_FULL_DENY); /* one shard of 20 slots */
        struct thr_hdr *hd = shm_hdr(&T.map);
        atomic_store(&hd->grace_periods, (1ull << 32) - 1);
        atomic_store(&hd->gp_done, (1ull << 32) - 2); /* the previous daemon's last scan */
        struct thr_result r;
        char key[16];
        for (int i = 0; i < 8; i++) {
                snprintf(key, sizeof(key), "a%d", i);
                cr_assert_eq(try1(key, &r), 1);
        }
        clock_to(now_ns() + TTL + BU * TI);
        uint32_t tag;
        cr_assert_eq(maint(0, &tag).evicted, 8, "a restarted daemon (done 0) evicts");
        cr_assert_eq(tag, 0, "the tag wrapped");
        for (int i = 0; i < 8; i++) { /* 12 EMPTY slots: no retired one reused */
                snprintf(key, sizeof(key), "b%d", i);
                cr_assert_eq(try1(key, &r), 1);
        }
        cr_assert_eq(count(THR_SLOT_DEAD, NULL, NULL), 8, "nothing retiring was reused");
        cr_assert_eq(atomic_load(&shard0()->reclaimed), 0);
        uint64_t gp;
        struct shm_gp_result res = grace(&gp);
        cr_assert_eq(gp, 1ull << 32);
        cr_assert_eq(res.done, gp);
        clock_to(now_ns() + TTL + BU * TI);
        cr_assert_eq(maint(0, NULL).evicted, 8, "b* go");
        for (int i = 0; i < 8; i++) {
                snprintf(key, sizeof(key), "d%d", i);
                cr_assert_eq(try1(key, &r), 1);
        }
        cr_assert_geq(atomic_load(&shard0()->reclaimed), 1, "the a* slots are reused now");
        assert_live_keys_reachable_once();
}

/*
 * A reader stopped inside its section holding k's slot (SIGSTOP at its CAS: a test hook) across
 * k's eviction, grace periods and inserts of keys of the same home by another process: no insert
 * takes the slot, the header's gp_done stays below its tag; once the reader moves on, its CAS
 * finds the slot retired (it inserts k afresh), and only then is the slot reused.
 */
static void stop_self(void)
{
        raise(SIGSTOP);
}

Test(reach_review, stopped_reader_keeps_inserters_off_its_slot)
{
        make1(8, TTL, THR_FULL_DENY);
        uint32_t n, h = home_of("k");
        struct thr_slot *base = slot0(&n);
        struct thr_result r;
        cr_assert_eq(try1("k", &r), 1);
        struct thr_slot *ks = live_slot("k");
        cr_assert_eq(ks - base, h);
        clock_to(now_ns() + TTL + BU * TI);
        pid_t pid = tfork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                hook_at(THR_HOOK_APPLY_BEFORE_CAS, NULL, stop_self); /* k's: its only CAS */
                int rc = try1("k", &r);
                _exit(rc == 1 ? 0 : 10 + rc);
        }
        g_kid = pid;
        int ws = 0;
        cr_assert_eq(waitpid(pid, &ws, WUNTRACED), pid);
        cr_assert(WIFSTOPPED(ws), "status %#x", ws);
        uint32_t tag;
        cr_assert_eq(maint(0, &tag).evicted, 1, "k idle: evicted under the stopped reader");
        char x[32], prefix[8];
        for (int round = 0; round < 3; round++) {
                struct shm_gp_result res = grace(NULL);
                cr_assert_eq(res.blocking, 1);
                cr_assert_lt(atomic_load(&shm_hdr(&T.map)->gp_done), tag);
                maint(res.done, NULL);
                snprintf(prefix, sizeof(prefix), "x%d_", round);
                key_at(h, prefix, x, sizeof(x));
                cr_assert_eq(try1(x, &r), 1);
                cr_assert_neq(live_slot(x), ks, "round %d: reused under a reader", round);
                cr_assert_eq(atomic_load(&ks->state), THR_TAT_DEAD);
        }
        cr_assert_eq(kill(pid, SIGCONT), 0);
        cr_assert_eq(waitpid(pid, &ws, 0), pid);
        g_kid = 0;
        cr_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "the reader's call: status %#x", ws);
        cr_assert_eq(atomic_load(&ks->state), THR_TAT_DEAD, "its CAS never landed");
        cr_assert_neq(live_slot("k"), ks, "k afresh, elsewhere");
        struct shm_gp_result res = grace(NULL);
        cr_assert_geq(res.done, tag);
        char y[32];
        key_at(h, "y", y, sizeof(y));
        cr_assert_eq(try1(y, &r), 1);
        cr_assert_eq(live_slot(y), ks, "reused once the reader left");
        assert_live_keys_reachable_once();
}

/*
 * Reach saturating: 300 keys of one home in a shard of 608 slots lie up to 299 slots away, past
 * THR_REACH_ANY (255): the home's reach stays ANY while a key lies that far, every key is found
 * and none is inserted twice; once only a key 100 slots away is left, a pass brings the reach
 * down to exactly 100, and keys inserted again (into reclaimed slots) raise it as they go.
 */
Test(reach_review, reach_saturates_at_any_and_comes_back_exact)
{
        make1(400, TTL, THR_FULL_DENY); /* one shard of 608 slots */
        uint32_t n, h = 10;
        struct thr_slot *s = slot0(&n);
        cr_assert_eq(n, 608);
        static char keys[300][32];
        char prefix[16];
        struct thr_result r;
        for (int i = 0; i < 300; i++) {
                snprintf(prefix, sizeof(prefix), "s%d_", i);
                key_at(h, prefix, keys[i], sizeof(keys[i]));
                cr_assert_eq(try1(keys[i], &r), 1);
                cr_assert_eq(live_slot(keys[i]) - s, h + i, "%s displaced by %d", keys[i], i);
        }
        cr_assert_eq(atomic_load(&s[h].reach), THR_REACH_ANY);
        for (int i = 0; i < 300; i++)
                cr_assert_eq(try1(keys[i], &r), 1, "%s found again", keys[i]);
        assert_live_keys_reachable_once();
        /* all idle but 100 and 299 */
        clock_to(now_ns() + TTL + BU * TI);
        cr_assert_eq(try1(keys[100], &r), 1);
        cr_assert_eq(try1(keys[299], &r), 1);
        cr_assert_eq(maint(0, NULL).evicted, 298);
        maint(grace(NULL).done, NULL);
        cr_assert_eq(atomic_load(&s[h].reach), THR_REACH_ANY, "299 away: still unbounded");
        assert_live_keys_reachable_once();
        /* 299 goes too */
        clock_to(now_ns() + TTL + BU * TI);
        cr_assert_eq(try1(keys[100], &r), 1);
        cr_assert_eq(maint(0, NULL).evicted, 1);
        struct shm_maint_stats st = maint(grace(NULL).done, NULL);
        cr_assert_gt(st.trimmed, 0, "the slots past 100 are trimmed");
        cr_assert_eq(atomic_load(&s[h].reach), 100, "exact again");
        assert_live_keys_reachable_once();
        /* back again: reclaimed slots before 100 first, then past it */
        for (int i = 0; i < 300; i++)
                cr_assert_eq(try1(keys[i], &r), 1);
        cr_assert_eq(count(THR_SLOT_LIVE, NULL, NULL), 300);
        cr_assert_eq(atomic_load(&s[h].reach), THR_REACH_ANY);
        assert_live_keys_reachable_once();
}

/*
 * gp_done written by a client (the arena is writable by clients): say it is UINT64_MAX while a
 * reader is stopped holding k's slot. The daemon decides on its own scans' result and frees
 * nothing early; inserters trust the header and reuse k's retiring slot at once. What then keeps
 * the stopped reader off the new key is the client's meta check after its failed CAS (the grace
 * period is defeated; no access goes out of bounds, no loop). Documents that the header word is
 * now load-bearing for every client, as each slot's state word already was.
 */
Test(reach_review, a_scribbled_gp_done_misleads_inserters_only)
{
        make1(8, TTL, THR_FULL_DENY);
        uint32_t n, h = home_of("k");
        struct thr_slot *base = slot0(&n);
        struct thr_result r;
        cr_assert_eq(try1("k", &r), 1);
        struct thr_slot *ks = live_slot("k");
        cr_assert_eq(ks - base, h);
        clock_to(now_ns() + TTL + BU * TI);
        pid_t pid = tfork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                hook_at(THR_HOOK_APPLY_BEFORE_CAS, NULL, stop_self);
                int rc = try1("k", &r);
                _exit(rc == 1 ? 0 : 10 + rc);
        }
        g_kid = pid;
        int ws = 0;
        cr_assert_eq(waitpid(pid, &ws, WUNTRACED), pid);
        cr_assert(WIFSTOPPED(ws), "status %#x", ws);
        uint32_t tag;
        cr_assert_eq(maint(0, &tag).evicted, 1);
        struct shm_gp_result res = grace(NULL);
        cr_assert_eq(res.blocking, 1);
        cr_assert_lt(res.done, tag);
        atomic_store(&shm_hdr(&T.map)->gp_done, UINT64_MAX); /* the scribble */
        struct shm_maint_stats st = maint(res.done, NULL);
        cr_assert_eq(st.reclaimed, 0, "the daemon frees nothing on the header's word");
        cr_assert_eq(atomic_load(&ks->state), THR_TAT_DEAD);
        char x[32];
        key_at(h, "x", x, sizeof(x));
        cr_assert_eq(try1(x, &r), 1);
        cr_assert_eq(live_slot(x), ks, "an inserter reused the slot under the stopped reader");
        uint64_t xs = atomic_load(&ks->state);
        cr_assert_eq(kill(pid, SIGCONT), 0);
        cr_assert_eq(waitpid(pid, &ws, 0), pid);
        g_kid = 0;
        cr_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 0, "the reader's call: status %#x", ws);
        cr_assert_eq(atomic_load(&ks->state), xs, "its stale CAS never landed on x");
        cr_assert_neq(live_slot("k"), ks);
        assert_live_keys_reachable_once();
}

/*
 * A segment with end_open: the pass's unlocked scan saw slot E EMPTY (its first), an insert
 * filled E before the pass took the lock (a test hook in the scan), so the locked part starts at
 * the next EMPTY slot, covers the shard up to E - 1 and ends against a live slot: its last run
 * (here one that wraps round the shard's end) may go on past it. Reach is made exact only for
 * homes before that run; the wrapped run's home keeps a reach covering its keys, and every live
 * key stays reachable.
 */
static char g_y[32];

static void insert_y(void)
{
        struct thr_result r;
        g_x_rc = try1(g_y, &r);
}

Test(reach_review, end_open_segment_keeps_the_reach_of_its_last_run)
{
        make1(64, TTL, THR_FULL_DENY); /* one shard of 104 slots */
        uint32_t n;
        struct thr_slot *s = slot0(&n);
        cr_assert_eq(n, 104);
        char k[6][32], a[3][32], prefix[16];
        struct thr_result r;
        for (int i = 0; i < 6; i++) { /* home 100: slots 100..103, 0, 1 */
                snprintf(prefix, sizeof(prefix), "k%d_", i);
                key_at(100, prefix, k[i], sizeof(k[i]));
                cr_assert_eq(try1(k[i], &r), 1);
                cr_assert_eq(live_slot(k[i]) - s, (100 + i) % n);
        }
        for (int i = 0; i < 3; i++) { /* home 10: slots 10..12 */
                snprintf(prefix, sizeof(prefix), "a%d_", i);
                key_at(10, prefix, a[i], sizeof(a[i]));
                cr_assert_eq(try1(a[i], &r), 1);
        }
        cr_assert_eq(atomic_load(&s[100].reach), 5);
        cr_assert_eq(atomic_load(&s[10].reach), 2);
        /* k2 (slot 102) and a2 (slot 12) idle and evicted; their periods done */
        clock_to(now_ns() + TTL + BU * TI);
        for (int i = 0; i < 6; i++)
                if (i != 2)
                        cr_assert_eq(try1(k[i], &r), 1);
        cr_assert_eq(try1(a[0], &r), 1);
        cr_assert_eq(try1(a[1], &r), 1);
        cr_assert_eq(maint(0, NULL).evicted, 2);
        struct shm_gp_result res = grace(NULL);
        /* the pass: y (home 2) fills slot 2, the scan's first EMPTY, after the scan saw it */
        key_at(2, "y", g_y, sizeof(g_y));
        g_x_rc = -1;
        atomic_store(&s[100].reach, 7); /* higher than its keys need (as after an eviction) */
        hook_at(THR_HOOK_MAINT_META_READ, &s[50].meta, insert_y);
        struct shm_maint_stats st = maint(res.done, NULL);
        thr_test_hook = NULL;
        cr_assert_eq(g_x_rc, 1, "y inserted inside the pass");
        cr_assert_eq(live_slot(g_y) - s, 2);
        cr_assert_eq(st.reclaimed, 2);
        cr_assert_eq(st.trimmed, 1, "a2's slot (no path crosses it); k2's is on k3..k5's path");
        cr_assert_eq(status(&s[12]), THR_SLOT_EMPTY);
        cr_assert_eq(atomic_load(&s[10].reach), 1, "home 10 lies before the last run: exact");
        cr_assert_eq(atomic_load(&s[100].reach), 7,
                     "the wrapped run's home untouched (a segment not end_open would set 5)");
        assert_live_keys_reachable_once();
        for (int i = 0; i < 6; i++)
                cr_assert_eq(try1(k[i], &r), 1, "%s", k[i]);
        assert_live_keys_reachable_once();
}

/*
 * The no-place hint (table.c): in a shard whose every slot is live or retiring with its grace
 * period not done, the insert that walks the whole shard and finds no place leaves gp_done + 1 in
 * the shard, and inserts fail (on_full) while gp_done reads the same. It never refuses an insert
 * once a place exists: a grace period ending (gp_done moves) or the daemon's pass reclaiming slots
 * (which clears the hint; here with the header's gp_done put back afterwards, so that only the
 * clearing lets the insert through) make the next insert succeed. Keys already in the table are
 * admitted throughout.
 */
Test(reach_review, a_shard_with_no_place_refuses_fast_and_takes_keys_again_once_one_appears)
{
        make1(8, TTL, THR_FULL_EVICT);
        uint32_t n;
        slot0(&n);
        struct thr_shard *sh = shard0();
        struct thr_hdr *h = shm_hdr(&T.map);
        struct thr_result r;
        char key[32];
        int i = 0, rc;
        /* no grace period has run: every key evicted for room stays retiring */
        for (; i < 1000; i++) {
                snprintf(key, sizeof(key), "a%d", i);
                if ((rc = try1(key, &r)) != 1)
                        break;
        }
        cr_assert_eq(rc, 0, "a new key in a shard with no place is denied (%s)", key);
        cr_assert_eq(i, (int)n, "every slot of the shard was used first");
        cr_assert_eq(atomic_load(&sh->no_place), atomic_load(&h->gp_done) + 1, "the hint is left");
        cr_assert_eq(try1("b0", &r), 0, "and the next new key is refused as well");
        cr_assert_eq(try1("a0", &r) + try1("a999", &r), 0, "evicted and never-inserted keys too");
        snprintf(key, sizeof(key), "a%d", i - 1);
        cr_assert_eq(try1(key, &r), 1, "a live key is admitted");

        /* a grace period ends: gp_done moves, the retiring slots are places, the hint is stale */
        grace(NULL);
        uint64_t stale = atomic_load(&sh->no_place);
        cr_assert_neq(stale, atomic_load(&h->gp_done) + 1);
        cr_assert_eq(try1("c0", &r), 1, "a new key takes a slot whose period is done");
        assert_live_keys_reachable_once();

        /* no place again, then the daemon's pass reclaims with a done the header does not show */
        for (i = 1; i < 1000; i++) {
                snprintf(key, sizeof(key), "c%d", i);
                if ((rc = try1(key, &r)) != 1)
                        break;
        }
        cr_assert_eq(rc, 0);
        uint64_t old_done = atomic_load(&h->gp_done);
        cr_assert_eq(atomic_load(&sh->no_place), old_done + 1);
        struct shm_gp_result res = grace(NULL);
        cr_assert_gt(maint(res.done, NULL).reclaimed, 0, "the pass makes places");
        atomic_store(&h->gp_done, old_done); /* only the pass's clearing can let an insert in */
        cr_assert_eq(atomic_load(&sh->no_place), 0, "the pass cleared the hint");
        cr_assert_eq(try1("d0", &r), 1, "a new key takes a reclaimed slot");
        assert_live_keys_reachable_once();
}
