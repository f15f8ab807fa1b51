/*
 * test_expire_inline.c - an insert retires the idle keys its locked probe walks over (shm/table.c
 * expire_inline), as the daemon's pass would at its next visit: at most two per insert, only keys
 * idle past the TTL by the limiter's own test, never one admitted since the probe read it, and a
 * process killed between the state CAS and the retirement leaves what an evictor killed there
 * always left (finished by the next inserter or the daemon's pass). Only GCRA keys: the other
 * kinds' (a budget here) are the daemon's to evict. Manual-clock arenas, one shard, keys placed on
 * chosen homes (tkey_at).
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/wait.h>
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

TestSuite(expire_inline, .fini = teardown, .timeout = 120);

static void make1(struct shm_limiter_spec s)
{
        s.capacity = 32;
        s.shards = 1;
        s.idle_ttl_ns = TTL;
        s.on_full = THR_FULL_DENY;
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        L = tlim(&T, "l");
        cr_assert_eq(thr_clock_advance(T.a, SEC), 0);
}

static uint64_t now_ns(void)
{
        return shm_now_ns(shm_hdr(&T.map));
}

static int try1(const char *key)
{
        struct thr_result r;
        return thr_limiter_try(L, key, strlen(key), 1, &r);
}

static struct thr_shard *shard0(void)
{
        return shm_at(T.map.base, tsnap(&T, "l").table.shards_off);
}

static struct thr_slot *slots(uint32_t *n)
{
        struct shm_lim_snap s = tsnap(&T, "l");
        *n = s.table.shard_slots;
        return shm_at(T.map.base, s.table.slots_off);
}

static unsigned status(const struct thr_slot *s)
{
        return THR_META_STATUS(atomic_load(&s->meta));
}

static bool retiring(const struct thr_slot *s)
{
        return status(s) == THR_SLOT_DEAD && atomic_load(&s->state) == THR_TAT_DEAD;
}

/* KEY's one live slot, or NULL when it has none. */
static struct thr_slot *live(const char *key)
{
        struct thr_slot *s = NULL;
        int n = tcount(&T, "l", THR_SLOT_LIVE, key, &s);
        cr_assert_leq(n, 1, "%s: %d live slots", key, n);
        return n ? s : NULL;
}

/* N keys "<prefix><i>" whose home is H, into KEYS (32 bytes each), inserted in order: they take
 * the slots H, H + 1, ... of an empty run. */
static void keys_at(uint32_t h, const char *prefix, char keys[][32], int n)
{
        struct shm_lim_snap s = tsnap(&T, "l");
        for (int i = 0; i < n; i++) {
                char p[16];
                snprintf(p, sizeof(p), "%s%d_", prefix, i);
                tkey_at(&T.map, &s.table, h, p, keys[i], 32);
                cr_assert_eq(try1(keys[i]), 1, "%s", keys[i]);
        }
}

static void assert_counts(uint64_t live_keys)
{
        cr_assert_eq(tcount(&T, "l", THR_SLOT_LIVE, NULL, NULL), (int)live_keys);
        cr_assert_eq(atomic_load(&shard0()->live), live_keys, "the shard's count");
        struct thr_table *tb = shm_at(T.map.base, tsnap(&T, "l").table_off);
        cr_assert_eq(atomic_load(&tb->live), live_keys, "the table's count");
}

/*
 * Four keys on one home (slots h .. h + 3) and one far away, all idle after the TTL but the third,
 * admitted again. A new key of that home walks h .. h + 4: it retires the first two idle keys it
 * meets (the cap), keeps the busy one and the fourth (past the cap), goes to h + 4. The next new
 * key of that home retires the fourth. The far idle key, on no probe path, waits for the daemon.
 */
Test(expire_inline, an_insert_retires_up_to_two_idle_keys_on_its_path)
{
        make1(tspec("l", 10, SEC, BU, BU));
        uint32_t n, h = 3;
        struct thr_slot *s = slots(&n);
        char k[4][32], far[1][32], nk[2][32];
        keys_at(h, "k", k, 4);
        keys_at(h + 12, "far", far, 1);
        for (int i = 0; i < 4; i++)
                cr_assert_eq(live(k[i]) - s, h + i, "%s at home + %d", k[i], i);
        cr_assert_eq(thr_clock_advance(T.a, TTL + BU * TI), 0);
        cr_assert_eq(try1(k[2]), 1, "k2 is used again: not idle");
        uint64_t evicted = atomic_load(&shard0()->evicted);

        struct shm_lim_snap snap = tsnap(&T, "l");
        tkey_at(&T.map, &snap.table, h, "new0_", nk[0], 32);
        cr_assert_eq(try1(nk[0]), 1);
        cr_assert_eq(live(nk[0]) - s, h + 4, "the first EMPTY slot");
        cr_assert(retiring(&s[h]) && retiring(&s[h + 1]), "k0, k1 retired by the insert");
        cr_assert_null(live(k[0]));
        cr_assert_null(live(k[1]));
        cr_assert_eq(live(k[2]) - s, h + 2, "the busy key stays");
        cr_assert_eq(live(k[3]) - s, h + 3, "at most two per insert");
        cr_assert_not_null(live(far[0]), "not on the path: left to the daemon");
        cr_assert_eq(atomic_load(&shard0()->evicted), evicted + 2);
        assert_counts(4);

        tkey_at(&T.map, &snap.table, h, "new1_", nk[1], 32);
        cr_assert_eq(try1(nk[1]), 1);
        cr_assert_eq(live(nk[1]) - s, h + 5, "k0's and k1's slots wait for a grace period");
        cr_assert(retiring(&s[h + 3]), "k3 retired by the next insert");
        cr_assert_eq(atomic_load(&shard0()->evicted), evicted + 3);
        assert_counts(4);

        /* an expired key that comes back is a new key: admitted, with its burst */
        for (uint64_t i = 0; i < BU; i++)
                cr_assert_eq(try1(k[0]), 1, "k0 again, request %lu", (unsigned long)i);
        cr_assert_eq(try1(k[0]), 0, "and no more than its burst");
        (void)n;
}

/* Not idle yet: a key whose TAT is less than the TTL old stays, however many inserts pass. */
Test(expire_inline, a_key_not_yet_idle_stays)
{
        make1(tspec("l", 10, SEC, BU, BU));
        uint32_t n, h = 7;
        struct thr_slot *s = slots(&n);
        char k[2][32], nk[3][32];
        keys_at(h, "k", k, 2);
        cr_assert_eq(thr_clock_advance(T.a, TTL - MS), 0); /* TAT = SEC + TI: TTL - TI - 1 ms old */
        keys_at(h, "n", nk, 3);
        cr_assert_eq(live(k[0]) - s, h);
        cr_assert_eq(live(k[1]) - s, h + 1);
        cr_assert_eq(atomic_load(&shard0()->evicted), 0);
        assert_counts(5);
        (void)n;
}

/* FN runs once when the library reaches hook point G_POINT (any argument). */
static enum thr_hook_point g_point;
static void (*g_fn)(void *arg);

static void on_point(enum thr_hook_point pt, void *arg)
{
        if (pt != g_point || !g_fn)
                return;
        void (*fn)(void *) = g_fn;
        g_fn = NULL;
        fn(arg);
}

static void hook_at(enum thr_hook_point pt, void (*fn)(void *arg))
{
        g_point = pt;
        g_fn = fn;
        thr_test_hook = fn ? on_point : NULL;
}

static char g_victim[32];
static bool g_hooked; /* the hook ran on the victim's slot (the client's own mapping of it) */

/* Between the insert's read of the victim's state and its CAS: the victim is admitted. */
static void admit_victim(void *arg)
{
        const struct thr_slot *v = arg;
        g_hooked = v->key_len == strlen(g_victim) && !memcmp(v->key, g_victim, v->key_len);
        cr_assert_eq(try1(g_victim), 1, "the victim admitted under the insert");
}

Test(expire_inline, an_admission_between_the_probe_and_the_cas_keeps_the_key)
{
        make1(tspec("l", 10, SEC, BU, BU));
        uint32_t n, h = 11;
        struct thr_slot *s = slots(&n);
        char k[1][32], nk[32];
        keys_at(h, "k", k, 1);
        strcpy(g_victim, k[0]);
        uint64_t meta = atomic_load(&s[h].meta);
        cr_assert_eq(thr_clock_advance(T.a, TTL + BU * TI), 0);
        struct shm_lim_snap snap = tsnap(&T, "l");
        tkey_at(&T.map, &snap.table, h, "new_", nk, sizeof(nk));
        hook_at(THR_HOOK_EXPIRING_INLINE, admit_victim);
        cr_assert_eq(try1(nk), 1);
        thr_test_hook = NULL;
        cr_assert(g_hooked, "the insert was about to expire k0");
        cr_assert_eq(atomic_load(&s[h].meta), meta, "k0 kept its slot");
        uint64_t tat = atomic_load(&s[h].state);
        cr_assert(tat > now_ns() && tat != THR_TAT_DEAD, "k0's admission stands: TAT %lu",
                  (unsigned long)tat);
        cr_assert_eq(atomic_load(&shard0()->evicted), 0);
        assert_counts(2);
        (void)n;
}

static void die(void *arg)
{
        (void)arg;
        raise(SIGKILL);
}

/* A child inserts KEY and is killed by SIGKILL at hook point PT. */
static void kill_at(enum thr_hook_point pt, const char *key)
{
        fflush(NULL);
        pid_t pid = tfork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                hook_at(pt, die);
                try1(key);
                _exit(3); /* the hook never ran */
        }
        g_kid = pid;
        int ws = 0;
        cr_assert_eq(waitpid(pid, &ws, 0), pid);
        g_kid = 0;
        cr_assert(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL, "status %#x", ws);
}

/*
 * Killed between the state CAS and the retirement: the victim is LIVE with state DEAD, which a
 * lookup never admits on; the next inserter under the lock finishes the retirement (as it does for
 * an evictor killed there), and the counts come out exact after the shard's repair.
 */
Test(expire_inline, killed_between_the_cas_and_the_retirement)
{
        make1(tspec("l", 10, SEC, BU, BU));
        uint32_t n, h = 2;
        struct thr_slot *s = slots(&n);
        char k[1][32], nk[2][32];
        keys_at(h, "k", k, 1);
        cr_assert_eq(thr_clock_advance(T.a, TTL + BU * TI), 0);
        struct shm_lim_snap snap = tsnap(&T, "l");
        tkey_at(&T.map, &snap.table, h, "new0_", nk[0], 32);
        tkey_at(&T.map, &snap.table, h, "new1_", nk[1], 32);
        kill_at(THR_HOOK_EXPIRED_INLINE, nk[0]);
        cr_assert_eq(status(&s[h]), THR_SLOT_LIVE);
        cr_assert_eq(atomic_load(&s[h].state), THR_TAT_DEAD, "killed after the CAS");
        /* k0 asked for again: a new key (the DEAD state is never admitted on), and its insert
         * finishes the dead inserter's retirement */
        cr_assert_eq(try1(k[0]), 1);
        cr_assert(retiring(&s[h]), "retired by the next inserter");
        cr_assert_neq(live(k[0]), &s[h]);
        cr_assert_eq(try1(nk[1]), 1);
        assert_counts(2);
        cr_assert_eq(atomic_load(&shard0()->repairs), 1, "the dead holder's lock repaired once");
        (void)n;
}

/*
 * Killed after the expiry, before the new key is published: the expired key's unit is back, the
 * new key's is taken and held. The table's count is then high, never low (no key beyond the
 * capacity can come of it), the next inserter repairs the shard, and the daemon's reconcile makes
 * the count exact.
 */
Test(expire_inline, killed_after_the_expiry_before_the_publish)
{
        make1(tspec("l", 10, SEC, BU, BU));
        uint32_t n, h = 9;
        struct thr_slot *s = slots(&n);
        char k[2][32], nk[2][32];
        keys_at(h, "k", k, 2);
        cr_assert_eq(thr_clock_advance(T.a, TTL + BU * TI), 0);
        cr_assert_eq(try1(k[1]), 1, "k1 busy: only k0 expires");
        struct shm_lim_snap snap = tsnap(&T, "l");
        tkey_at(&T.map, &snap.table, h, "new0_", nk[0], 32);
        tkey_at(&T.map, &snap.table, h, "new1_", nk[1], 32);
        kill_at(THR_HOOK_REACH_RAISED, nk[0]);
        cr_assert(retiring(&s[h]), "k0 expired before the kill");
        struct thr_table *tb = shm_at(T.map.base, snap.table_off);
        cr_assert_eq(atomic_load(&tb->live), 2, "k1 and the dead insert's unit; k0's given back");
        cr_assert_eq(try1(nk[1]), 1, "the next inserter takes the lock over");
        cr_assert_eq(atomic_load(&shard0()->repairs), 1);
        cr_assert_eq(tcount(&T, "l", THR_SLOT_LIVE, NULL, NULL), 2, "k1 and new1");
        cr_assert_geq(atomic_load(&tb->live), 2, "never below the keys there are");
        cr_assert_eq(shm_table_reconcile(&T.map, snap.table_off, &snap.table, tlock_me(T.a)), 0);
        assert_counts(2);
        (void)n;
}

/* A budget's keys are the daemon's to evict (a grant half-done or queued waiters are served
 * first): an insert walks over them and leaves them. */
Test(expire_inline, a_budget_key_is_left_for_the_daemon)
{
        make1(tspec_budget("l", 100));
        uint32_t n, h = 5;
        struct thr_slot *s = slots(&n);
        char k[1][32], nk[1][32];
        keys_at(h, "k", k, 1);
        /* back at its initial balance: the idleness test alone would let it go */
        struct thr_budget_result br;
        cr_assert_eq(thr_budget_add(L, k[0], strlen(k[0]), 1, &br), 0);
        cr_assert_eq(br.balance, 100);
        cr_assert_eq(thr_clock_advance(T.a, 10 * TTL), 0);
        keys_at(h, "n", nk, 1);
        cr_assert_eq(live(k[0]) - s, h, "still live");
        cr_assert_eq(atomic_load(&shard0()->evicted), 0);
        (void)n;
}
