/*
 * test_interleave.c - races that need an exact interleaving, forced with the test hooks
 * (shm/testhook.h) rather than hoped for:
 *   - a slot evicted, reclaimed and reused for another key between a decision and its CAS: the
 *     retried decision must not charge the other key;
 *   - a call made by a signal handler that interrupted a call of the same thread: the outer
 *     call's read-side section must stay marked;
 *   - a new key evicted by another inserter right after it is published: a reservation's first
 *     place is taken as the key is published, so it never ends in a spurious -ENOSPC;
 *   - a recount of a table racing an eviction's decrement: counts never wrap;
 *   - a client rewriting the directory while a reconfiguration is staged: nothing is written
 *     outside the directory.
 * Manual-clock arenas; everything runs in the test process.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client_internal.h"
#include "helpers.h"
#include "testhook.h"

static struct tarena T;
static thr_limiter *L;

static void teardown(void)
{
        thr_test_hook = NULL;
        thr_limiter_close(L);
        L = NULL;
        tarena_free(&T);
}

TestSuite(interleave, .fini = teardown, .timeout = 60);

/* An arena with one limiter of one shard: T = 1 s, burst B, CAPACITY keys. */
static void make(uint64_t burst, uint64_t capacity, uint32_t on_full, uint64_t ttl_ns)
{
        struct shm_limiter_spec s = tspec("l", 1, SEC, burst, burst);
        s.capacity = capacity;
        s.shards = 1;
        s.on_full = on_full;
        s.idle_ttl_ns = ttl_ns;
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        L = tlim(&T, "l");
}

static struct thr_table *table(void)
{
        return ttable(&T, "l");
}

static struct thr_slot *slot_of(const char *key)
{
        uint64_t h = shm_hash(shm_hdr(&T.map)->hash_key, key, strlen(key));
        return shm_table_lookup(T.map.base, table(), h, key, (uint32_t)strlen(key));
}

static uint32_t home_of(const char *key)
{
        struct shm_probe p;
        tprobe(&T.map, table(), key, &p);
        return p.home;
}

/* A key "PREFIX<i>" whose home slot is HOME. */
static void key_at(uint32_t home, const char *prefix, char *buf, size_t len)
{
        tkey_at(&T.map, table(), home, prefix, buf, len);
}

static uint64_t now_units(void)
{
        uint64_t now;
        thr_clock_now(T.a, &now);
        return now; /* k = 1 for T = 1 s */
}

/* ---------------------------------------------------------------- a slot reused under a CAS */

static char g_b[32];
static int g_fired;
static struct thr_slot *g_sa; /* a's slot, in the test's own mapping */

/* What a broken grace period would allow: "a" evicted, its slot reclaimed and reused by "b". */
static void reuse_under_cas(enum thr_hook_point pt, void *arg)
{
        (void)arg;
        if (pt != THR_HOOK_APPLY_BEFORE_CAS || g_fired++)
                return;
        struct thr_slot *s = g_sa;
        struct shm_probe p;
        tprobe(&T.map, table(), "a", &p);
        uint64_t me = shm_lock_daemon(0);
        cr_assert_eq(shm_shard_trylock(&T.map, &p, me), 0);
        uint64_t tat = atomic_load(&s->state);
        cr_assert(atomic_compare_exchange_strong(&s->state, &tat, THR_TAT_DEAD));
        cr_assert(shm_slot_retire(table(), p.shard, s, 1));
        shm_shard_unlock(&p, me);
        atomic_store(&s->state, THR_TAT_FREE);
        struct thr_slot *b;
        bool created;
        uint64_t h = shm_hash(shm_hdr(&T.map)->hash_key, g_b, strlen(g_b));
        cr_assert_eq(
            shm_table_insert(&T.map, table(), h, g_b, (uint32_t)strlen(g_b), me, &b, &created), 0);
        cr_assert(created);
        cr_assert_eq(b, s, "b took a's slot");
}

Test(interleave, a_retried_decision_never_charges_the_key_that_reused_the_slot)
{
        make(5, 64, THR_FULL_DENY, 0);
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(L, "a", 1, 1, &r), 1);
        struct thr_slot *sa = g_sa = slot_of("a");
        key_at(home_of("a"), "b", g_b, sizeof(g_b));
        g_fired = 0;
        thr_test_hook = reuse_under_cas;
        cr_assert_eq(thr_limiter_try(L, "a", 1, 1, &r), 1);
        thr_test_hook = NULL;
        cr_assert_eq(g_fired, 1, "the hook ran between the decision and the CAS");
        cr_assert_eq(atomic_load(&sa->state), THR_TAT_FRESH,
                     "b, never used, was charged for a's request");
        struct thr_slot *na = slot_of("a");
        cr_assert_not_null(na);
        cr_assert_neq(na, sa, "a lives in a new slot");
        cr_assert_eq(r.remaining, 4, "a came back as a new key: its first token of a fresh burst");
        cr_assert_eq(thr_limiter_try(L, g_b, strlen(g_b), 0, &r), 1);
        cr_assert_eq(r.remaining, 5, "b still has its whole burst");
}

/* ---------------------------------------------------------------- a call from a signal handler */

static struct thr_reader *g_rec;
static int g_inner_rc, g_depth;
static uint64_t g_online_after;

static void on_signal(int sig)
{
        (void)sig;
        g_inner_rc = thr_limiter_try(L, "inner", 5, 1, NULL);
}

static void raise_inside(enum thr_hook_point pt, void *arg)
{
        if (pt != THR_HOOK_SECTION_ENTERED || g_depth++)
                return;
        g_rec = arg;
        raise(SIGUSR1); /* the handler's call runs inside this call's section */
        g_online_after = atomic_load(&g_rec->online);
}

Test(interleave, a_call_from_a_signal_handler_keeps_the_interrupted_section)
{
        make(5, 64, THR_FULL_DENY, 0);
        cr_assert_eq(thr_limiter_try(L, "outer", 5, 1, NULL), 1); /* registered */
        struct sigaction sa = {.sa_handler = on_signal};
        sigemptyset(&sa.sa_mask);
        cr_assert_eq(sigaction(SIGUSR1, &sa, NULL), 0);
        g_depth = 0;
        thr_test_hook = raise_inside;
        struct thr_result r;
        cr_assert_eq(thr_limiter_try(L, "outer", 5, 1, &r), 1);
        thr_test_hook = NULL;
        signal(SIGUSR1, SIG_DFL);
        cr_assert_eq(g_inner_rc, 1, "the handler's own call worked");
        cr_assert_neq(g_online_after, 0, "the handler's call cleared the outer call's section");
        cr_assert_eq(atomic_load(&g_rec->online), 0, "and the outer call left it at its end");
        cr_assert_eq(r.remaining, 3);
}

/* ---------------------------------------------------------------- a new key evicted at once */

static int g_evictions, g_nested;

/* Right after a new key is published, another inserter fills the table and evicts it. */
static void evict_new_key(enum thr_hook_point pt, void *arg)
{
        (void)arg;
        if (pt != THR_HOOK_KEY_INSERTED || g_nested || g_evictions >= 20)
                return;
        char key[16];
        int len = snprintf(key, sizeof(key), "z%d", g_evictions++);
        g_nested = 1; /* the other inserter's own key is not interfered with */
        cr_assert_eq(thr_limiter_try(L, key, (size_t)len, 1, NULL), 1);
        g_nested = 0;
}

/*
 * Each time the new key is published, another inserter evicts it (it is the least indebted). An
 * uncharged key came back at the shard's floor, one token higher each round, and was evicted
 * again, until the call gave up after its 8 evictions with -ENOSPC; the other keys, 80 tokens in
 * debt, were never the victims. Charged as it is published, the place is taken at once.
 */
Test(interleave, a_reservation_on_a_new_key_is_taken_as_the_key_is_published)
{
        make(100, 24, THR_FULL_EVICT, 0); /* room for the retired slots of 8 rounds, no daemon */
        for (int i = 0; i < 23; i++) {    /* 23 of 24 places, each key 80 tokens in debt */
                char key[16];
                int len = snprintf(key, sizeof(key), "k%d", i);
                cr_assert_eq(thr_limiter_try(L, key, (size_t)len, 80, NULL), 1);
        }
        g_evictions = 0;
        thr_test_hook = evict_new_key;
        struct thr_reservation rv;
        int rc = thr_limiter_reserve(L, "n", 1, 1, 10 * SEC, &rv);
        thr_test_hook = NULL;
        cr_assert_eq(rc, 0, "reserve on a new key: %d (%s) after %d evictions", rc,
                     thr_strerror(rc), g_evictions);
        cr_assert_eq(rv.wait_ns, 0, "a fresh burst: due at once");
        /* n, evicted for room after its place was taken, left its debt in the shard's floor */
        struct shm_probe p;
        tprobe(&T.map, table(), "n", &p);
        cr_assert_geq(atomic_load(&p.shard->floor_units), now_units() + SEC,
                      "the place n took is kept in the floor");
}

/* ---------------------------------------------------------------- a recount racing a retire */

static int g_recounts;

static void recount_inside_retire(enum thr_hook_point pt, void *arg)
{
        (void)arg;
        if (pt != THR_HOOK_RETIRE_COUNTED || g_recounts++)
                return;
        struct thr_table geo = *table();
        shm_table_reconcile(&T.map, (uint64_t)((char *)table() - (char *)T.map.base), &geo,
                            shm_lock_daemon(0));
}

Test(interleave, counts_never_wrap_when_a_recount_races_an_eviction)
{
        make(5, 64, THR_FULL_DENY, SEC);
        cr_assert_eq(thr_limiter_try(L, "a", 1, 1, NULL), 1);
        /* a client dies holding the shard's insert lock: the next locker repairs */
        struct shm_probe p;
        tprobe(&T.map, table(), "a", &p);
        pid_t pid = tfork();
        cr_assert_geq(pid, 0);
        if (pid == 0)
                _exit(shm_shard_lock(&T.map, &p, tlock_me(T.a), 0) == 0 ? 0 : 1);
        int st;
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child took the lock");
        cr_assert_eq(thr_clock_advance(T.a, 3 * SEC), 0); /* a is idle past the TTL */

        struct shm_lim_snap snap;
        cr_assert_eq(shm_dir_snapshot(&T.map, 0, &snap), 0);
        struct shm_maint_args a = {.now_units = now_units(),
                                   .ttl_units = SEC,
                                   .tag = shm_retire_tag(shm_hdr(&T.map)),
                                   .done = 0,
                                   .me = shm_lock_daemon(0)};
        struct shm_maint_stats ms = {0};
        uint32_t cursor = 0;
        g_recounts = 0;
        thr_test_hook = recount_inside_retire;
        shm_table_maintain(&T.map, &snap, &a, &cursor, UINT64_MAX, &ms);
        thr_test_hook = NULL;
        cr_assert_eq(ms.evicted, 1, "a was evicted");
        cr_assert_eq(g_recounts, 1, "the recount ran inside the retire");
        cr_assert_eq(atomic_load(&p.shard->live), 0, "shard count %#lx, no key is live",
                     (unsigned long)atomic_load(&p.shard->live));
        cr_assert_eq(atomic_load(&table()->live), 0, "table count %#lx, no key is live",
                     (unsigned long)atomic_load(&table()->live));
        cr_assert_eq(thr_limiter_try(L, "b", 1, 1, NULL), 1, "inserts still work");
}

/* ---------------------------------------------------------------- a directory rewritten */

static void scribble_directory(enum thr_hook_point pt, void *arg)
{
        if (pt != THR_HOOK_CONFIG_STAGED)
                return;
        struct shm_map *m = arg;
        struct thr_dir_entry *dir = shm_at(m->base, m->g.dir_off);
        for (uint32_t i = 0; i < m->g.dir_count; i++)
                if (atomic_load(&dir[i].state) == THR_DIR_FREE)
                        atomic_store(&dir[i].state, THR_DIR_RETIRED); /* a client's rewrite */
}

Test(interleave, a_rewritten_directory_never_sends_a_reload_outside_it)
{
        struct shm_limiter_spec s[2] = {tspec("l", 1, SEC, 5, 5), tspec("new", 1, SEC, 5, 5)};
        struct shm_arena_spec spec = {.clock = THR_CLOCK_MANUAL,
                                      .hugepages = SHM_HUGE_OFF,
                                      .mode = 0600,
                                      .gid = (gid_t)-1,
                                      .max_limiters = 2,
                                      .max_readers = 8,
                                      .spare_bytes = 1 << 20,
                                      .nlimiters = 1,
                                      .limiters = s};
        char dir[] = "/dev/shm/thrtest.XXXXXX";
        cr_assert_not_null(mkdtemp(dir));
        snprintf(spec.name, sizeof(spec.name), "i%d", (int)getpid());
        spec.dir = dir;
        struct shm_map m;
        char err[256] = "";
        cr_assert_geq(shm_arena_create(&spec, &m, err, sizeof(err)), 0, "%s", err);
        uint8_t after[THR_READER_SIZE];
        const uint8_t *end =
            shm_at(m.base, m.g.dir_off + (uint64_t)m.g.dir_count * THR_DIR_ENTRY_SIZE);
        memcpy(after, end, sizeof(after));
        spec.nlimiters = 2;
        thr_test_hook = scribble_directory;
        int rc = shm_arena_configure(&m, &spec, err, sizeof(err));
        thr_test_hook = NULL;
        cr_assert(memcmp(after, end, sizeof(after)) == 0,
                  "the reload wrote past the directory (configure: %d %s)", rc, err);
        cr_assert_eq(rc, 0, "%s", err);
        cr_assert_geq(shm_dir_find(&m, "new"), 0, "the new limiter is where it was planned");
        char path[sizeof(m.path)];
        snprintf(path, sizeof(path), "%s", m.path);
        shm_arena_detach(&m);
        unlink(path);
        rmdir(dir);
}

/* ---------------------------------------------------------------- a signal while switching arenas
 */

static thr_limiter *g_lc; /* a third handle's limiter: a miss for the thread */
static int g_handler_rc = 1, g_raised;

static void on_usr2(int sig)
{
        (void)sig;
        g_handler_rc = thr_limiter_try(g_lc, "h", 1, 1, NULL);
}

static void raise_while_updating(enum thr_hook_point pt, void *arg)
{
        (void)arg;
        if (pt == THR_HOOK_CACHE_UPDATING && !g_raised++)
                raise(SIGUSR2);
}

/* Records owned by this thread (by tid), and whether two of them are one. */
static int my_records(void)
{
        const struct thr_reader *r = shm_at(T.map.base, T.map.g.reader_off);
        int n = 0;
        for (uint32_t i = 0; i < T.map.g.reader_count; i++)
                n += atomic_load(&r[i].owner) && atomic_load(&r[i].tid) == (uint64_t)gettid();
        return n;
}

/*
 * A signal handler's call that misses the thread's cache while the thread itself is changing it
 * (switching between arenas) gets -EBUSY: it used to register again, and the interrupted change
 * then tore the cache (duplicate entries; a record given back while a twin entry used it).
 */
Test(interleave, a_signal_handler_call_during_a_cache_change_gets_ebusy)
{
        make(5, 64, THR_FULL_DENY, 0);
        thr_arena *b, *c;
        thr_limiter *lb;
        cr_assert_eq(thr_arena_open(T.path, 0, &b), 0);
        cr_assert_eq(thr_arena_open(T.path, 0, &c), 0);
        cr_assert_eq(thr_limiter_open(b, "l", &lb), 0);
        cr_assert_eq(thr_limiter_open(c, "l", &g_lc), 0);
        cr_assert_eq(thr_limiter_try(L, "a", 1, 1, NULL), 1);
        cr_assert_eq(thr_limiter_try(lb, "a", 1, 1, NULL), 1); /* two records: front b, then a */
        cr_assert_eq(my_records(), 2);
        struct sigaction sa = {.sa_handler = on_usr2};
        sigemptyset(&sa.sa_mask);
        cr_assert_eq(sigaction(SIGUSR2, &sa, NULL), 0);
        g_raised = 0;
        thr_test_hook = raise_while_updating;
        cr_assert_eq(thr_limiter_try(L, "a", 1, 1, NULL), 1, "back to the first arena");
        thr_test_hook = NULL;
        signal(SIGUSR2, SIG_DFL);
        cr_assert_eq(g_raised, 1);
        cr_assert_eq(g_handler_rc, -EBUSY, "the nested miss: %d", g_handler_rc);
        cr_assert_eq(my_records(), 2, "the nested call registered anyway");
        cr_assert_eq(thr_limiter_try(g_lc, "h", 1, 1, NULL), 1, "outside the handler it works");
        cr_assert_eq(my_records(), 3);
        thr_limiter_close(g_lc);
        thr_limiter_close(lb);
        thr_arena_close(c);
        thr_arena_close(b);
        cr_assert_eq(my_records(), 1, "closing gave back exactly their records");
}

/* ---------------------------------------------------------------- an evictor killed */

static void die_after_the_cas(enum thr_hook_point pt, void *arg)
{
        (void)arg;
        if (pt == THR_HOOK_EVICTED_FOR_ROOM)
                _exit(0); /* killed right after the victim's state CAS */
}

/*
 * on_full = evict: an inserter killed right after it CASed its victim's state to DEAD. The
 * victim's debt must already be in the shard's floor: the next inserter finishes the retirement
 * but cannot know the TAT (it used to come back with a fresh burst).
 */
Test(interleave, an_evictor_killed_after_its_cas_loses_no_debt)
{
        make(5, 4, THR_FULL_EVICT, 0);
        for (int i = 0; i < 4; i++) {
                char key[8];
                int len = snprintf(key, sizeof(key), "k%d", i);
                cr_assert_eq(thr_limiter_try(L, key, (size_t)len, 5, NULL), 1); /* all in debt */
        }
        pid_t pid = tfork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                thr_test_hook = die_after_the_cas;
                thr_limiter_try(L, "k4", 2, 1, NULL); /* full: evicts one of k0..k3 */
                _exit(3);
        }
        int st;
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the child died at the hook (%#x)", st);
        int victims = 0;
        for (int i = 0; i < 4; i++) {
                char key[8];
                int len = snprintf(key, sizeof(key), "k%d", i);
                struct thr_slot *s = slot_of(key);
                if (!s || atomic_load(&s->state) != THR_TAT_DEAD)
                        continue;
                victims++;
                struct thr_result r;
                cr_assert_eq(thr_limiter_try(L, key, (size_t)len, 1, &r), 0,
                             "the victim %s came back with a fresh burst", key);
        }
        cr_assert_eq(victims, 1, "one victim, half evicted");
}
