/*
 * test_review12.c - hostile review of inline expiry (shm/table.c expire_inline) and the daemon's
 * grace-period rescans (daemon/maint.c, shm/reclaim.h). Manual-clock arenas, one shard, keys
 * placed on chosen homes (tkey_at), as in test_expire_inline.c.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "breaker.h"
#include "client_internal.h"
#include "compose.h"
#include "helpers.h"
#include "reclaim.h"
#include "testhook.h"

#define MS (1000000ull)

static struct tarena T;
static pid_t g_kids[16];

static void teardown(void)
{
        for (int i = 0; i < 16; i++)
                if (g_kids[i] > 0 && kill(g_kids[i], SIGKILL) == 0)
                        waitpid(g_kids[i], NULL, 0);
        memset(g_kids, 0, sizeof(g_kids));
        thr_test_hook = NULL;
        tarena_free(&T);
}

TestSuite(review12, .fini = teardown, .timeout = 240);

__attribute__((unused)) static struct thr_slot *slots_of(const char *lim)
{
        return shm_at(T.map.base, tsnap(&T, lim).table.slots_off);
}

static bool live(const char *lim, const char *key)
{
        return tcount(&T, lim, THR_SLOT_LIVE, key, NULL) == 1;
}

/* ---------------------------------------------------------------- breakers */

static struct shm_limiter_spec brk1(const char *name)
{
        struct shm_limiter_spec s = tspec(name, 0, 0, 0, 0);
        s.kind = THR_KIND_BREAKER;
        s.max_reserve_ns = 0;
        s.failures = 1; /* one failure opens it */
        s.cooldown_ns = 64 * (1ull << THR_BRK_TIME_SHIFT);
        s.probe_timeout_ns = 128 * (1ull << THR_BRK_TIME_SHIFT);
        s.probes = 1;
        s.successes = 1;
        s.idle_ttl_ns = SEC;
        s.capacity = 32;
        s.shards = 1;
        s.on_full = THR_FULL_DENY;
        return s;
}

/*
 * A breaker with failures = 1: the failure of a call handed out must open it. A closed breaker's
 * go-ahead writes nothing (breaker.h), so a key that had no report for idle_ttl looks idle to
 * shm_brk_idle while a call is out on it, and the next new key whose locked probe walks over it
 * expires it inline; the call's failure is then ignored (report_step: slot changed) and the
 * breaker stays closed. breaker.h promises the report of a call is lost only when the call lasts
 * idle_ttl; here it lasted no time at all. Before 90a8319 only a daemon pass coinciding with the
 * call could do it; now any insert on the key's probe path does, deterministically.
 */
Test(review12, a_breaker_failure_is_not_lost_to_a_neighbours_insert)
{
        struct shm_limiter_spec s = brk1("b");
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        thr_limiter *l = tlim_kept(&T, "b");
        cr_assert_eq(thr_clock_advance(T.a, SEC), 0);
        struct shm_lim_snap snap = tsnap(&T, "b");
        char k[32], nk[32], ck[32];
        tkey_at(&T.map, &snap.table, 4, "k", k, sizeof(k));
        tkey_at(&T.map, &snap.table, 4, "n", nk, sizeof(nk));
        tkey_at(&T.map, &snap.table, 20, "c", ck, sizeof(ck));
        struct thr_breaker_ticket t;
        /* k and a control key c used once with success, then quiet for a while */
        cr_assert_eq(thr_breaker_allow(l, k, strlen(k), &t, NULL), 0);
        cr_assert_eq(thr_breaker_report(l, &t, THR_OUTCOME_SUCCESS), 0);
        cr_assert_eq(thr_breaker_allow(l, ck, strlen(ck), &t, NULL), 0);
        cr_assert_eq(thr_breaker_report(l, &t, THR_OUTCOME_SUCCESS), 0);
        cr_assert_eq(thr_clock_advance(T.a, 2 * SEC), 0);

        /* control: a call on c fails: c opens */
        cr_assert_eq(thr_breaker_allow(l, ck, strlen(ck), &t, NULL), 0);
        cr_assert_eq(thr_breaker_report(l, &t, THR_OUTCOME_FAILURE), 0);
        struct thr_breaker_status st;
        cr_assert_eq(thr_breaker_stat(l, ck, strlen(ck), &st), 0);
        cr_assert_eq(st.state, THR_BREAKER_OPEN, "the control opens on one failure");

        /* a call on k is out; meanwhile another key of k's home is used for the first time */
        struct thr_breaker_ticket tk, tn;
        cr_assert_eq(thr_breaker_allow(l, k, strlen(k), &tk, NULL), 0);
        cr_assert_eq(thr_breaker_allow(l, nk, strlen(nk), &tn, NULL), 0);
        bool k_live = live("b", k);
        int rep = thr_breaker_report(l, &tk, THR_OUTCOME_FAILURE);
        cr_assert_eq(thr_breaker_stat(l, k, strlen(k), &st), 0);
        cr_assert(k_live && rep == 0 && st.state == THR_BREAKER_OPEN,
                  "k's call failed but the breaker is %s (report %d, key %s by the neighbour's "
                  "insert): a failure lost",
                  st.state == THR_BREAKER_OPEN ? "open" : "closed", rep,
                  k_live ? "kept" : "expired");
        cr_assert_eq(thr_breaker_report(l, &tn, THR_OUTCOME_SUCCESS), 0);
}

/* The same for a brand-new key: its first state word is 0 (closed, time 0), idle at once. */
Test(review12, a_new_breaker_keys_first_failure_is_not_lost_to_a_neighbours_insert)
{
        struct shm_limiter_spec s = brk1("b");
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        thr_limiter *l = tlim_kept(&T, "b");
        cr_assert_eq(thr_clock_advance(T.a, 2 * SEC), 0);
        struct shm_lim_snap snap = tsnap(&T, "b");
        char k[32], nk[32];
        tkey_at(&T.map, &snap.table, 9, "k", k, sizeof(k));
        tkey_at(&T.map, &snap.table, 9, "n", nk, sizeof(nk));
        struct thr_breaker_ticket tk, tn;
        cr_assert_eq(thr_breaker_allow(l, k, strlen(k), &tk, NULL), 0);
        cr_assert_eq(thr_breaker_allow(l, nk, strlen(nk), &tn, NULL), 0);
        bool k_live = live("b", k);
        int rep = thr_breaker_report(l, &tk, THR_OUTCOME_FAILURE);
        struct thr_breaker_status st;
        cr_assert_eq(thr_breaker_stat(l, k, strlen(k), &st), 0);
        cr_assert(k_live && rep == 0 && st.state == THR_BREAKER_OPEN,
                  "a new key's first call failed but the breaker is closed (report %d, key %s)",
                  rep, k_live ? "kept" : "expired by the neighbour's insert");
        thr_breaker_report(l, &tn, THR_OUTCOME_SUCCESS);
}

/* ---------------------------------------------------------------- a scribbled record */

/* Limiter NAME's current parameter record, in the arena (what clients read). */
static struct thr_params *arena_params(const char *name)
{
        int idx = shm_dir_find(&T.map, name);
        cr_assert_geq(idx, 0);
        struct thr_dir_entry *de =
            (struct thr_dir_entry *)shm_at(T.map.base, shm_hdr(&T.map)->dir_off) + idx;
        return shm_at(T.map.base, atomic_load(&de->params_off));
}

static pid_t spawn(int i)
{
        fflush(NULL);
        pid_t pid = tfork();
        cr_assert_geq(pid, 0);
        if (pid > 0)
                g_kids[i] = pid;
        return pid;
}

/*
 * A client rewriting a GCRA limiter's record (every client can: the arena is untrusted) must not
 * crash another client. client.c reads a GCRA record in the arena, checks its kind once under the
 * shard lock (op_insert) and promises to "dispatch on [o->kind], never on p->kind again"; but
 * expire_ttl and shm_kind_idle, called for every LIVE slot the locked probe walks, dispatch on the
 * arena's p->kind again. Flipped to WINDOW in between, shm_kind_idle reads the window log of a
 * GCRA table's slot, whose aux storage is NULL (aux_stride 0): SIGSEGV in the inserter. The
 * table here is full (every insert fails -ENOSPC before shm_kind_fresh, the older re-read), so
 * only the new re-reads are exercised.
 */
static void scribbled_kind(uint64_t capacity, int fill)
{
        struct shm_limiter_spec s = tspec("g", 10, SEC, 5, 5);
        s.capacity = capacity;
        s.shards = 1;
        s.idle_ttl_ns = 3600 * SEC; /* nothing is ever idle: every walked slot is tested */
        s.on_full = THR_FULL_DENY;
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        thr_limiter *l = tlim_kept(&T, "g");
        cr_assert_eq(thr_clock_advance(T.a, SEC), 0);
        struct thr_result r;
        char key[32];
        for (int i = 0; i < fill; i++) {
                snprintf(key, sizeof(key), "fill%d", i);
                cr_assert_eq(thr_limiter_try(l, key, strlen(key), 1, &r), 1);
        }
        struct thr_params *p = arena_params("g");
        cr_assert_eq(p->kind, THR_KIND_GCRA);
        if (spawn(0) == 0) { /* the scribbler */
                volatile uint32_t *kind = &p->kind;
                for (;;) {
                        *kind = THR_KIND_WINDOW;
                        for (volatile int j = 0; j < 20; j++)
                                ;
                        *kind = THR_KIND_GCRA;
                        for (volatile int j = 0; j < 20; j++)
                                ;
                }
        }
        pid_t victim = spawn(1);
        if (victim == 0) {
                for (int i = 0; i < 400000; i++) {
                        snprintf(key, sizeof(key), "new%d", i);
                        thr_limiter_try(l, key, strlen(key), 1, &r);
                }
                _exit(0);
        }
        int ws = 0;
        cr_assert_eq(waitpid(victim, &ws, 0), victim);
        g_kids[1] = 0;
        kill(g_kids[0], SIGKILL);
        waitpid(g_kids[0], NULL, 0);
        g_kids[0] = 0;
        p->kind = THR_KIND_GCRA;
        cr_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 0,
                  "the inserting client died of signal %d while another rewrote the record's kind",
                  WIFSIGNALED(ws) ? WTERMSIG(ws) : 0);
}

Test(review12, a_scribbled_record_kind_never_crashes_another_clients_insert)
{
        scribbled_kind(48, 48); /* full: only the probe's shm_kind_idle calls (new in 90a8319) */
}

/* The older re-read: shm_kind_fresh (and evict_least's shm_kind_debt) dispatch on the arena's
 * kind too; with room in the table a new key's insert crashes there. Fails before 90a8319 too. */
Test(review12, a_scribbled_record_kind_never_crashes_a_new_keys_insert)
{
        scribbled_kind(100000, 0);
}

/* ---------------------------------------------------------------- SIGKILL at each step */

static enum thr_hook_point g_kill_at;
static int g_kill_skip; /* occurrences to let pass first */

static void kill_hook(enum thr_hook_point pt, void *arg)
{
        (void)arg;
        if (pt == g_kill_at && g_kill_skip-- == 0)
                raise(SIGKILL);
}

static int try_on(thr_limiter *l, const char *key)
{
        struct thr_result r;
        return thr_limiter_try(l, key, strlen(key), 1, &r);
}

/* slots of "g" whose status is ST and state STATE (any state: UINT64_MAX) */
static int count_slots(unsigned st, uint64_t state)
{
        struct shm_lim_snap sn = tsnap(&T, "g");
        struct thr_slot *s = shm_at(T.map.base, sn.table.slots_off);
        int n = 0;
        for (uint64_t i = 0; i < (uint64_t)sn.table.nshards * sn.table.shard_slots; i++)
                if (THR_META_STATUS(atomic_load(&s[i].meta)) == st &&
                    (state == UINT64_MAX || atomic_load(&s[i].state) == state))
                        n++;
        return n;
}

/* Exact counts after reconcile: the shards' and the table's live counts are the LIVE slots. */
static void exact_counts(const char *what)
{
        struct shm_lim_snap sn = tsnap(&T, "g");
        cr_assert_eq(shm_table_reconcile(&T.map, sn.table_off, &sn.table, shm_lock_daemon(0)), 0);
        int livec = count_slots(THR_SLOT_LIVE, UINT64_MAX);
        struct thr_shard *sh = shm_at(T.map.base, sn.table.shards_off);
        uint64_t sum = 0;
        for (uint32_t i = 0; i < sn.table.nshards; i++)
                sum += atomic_load(&sh[i].live);
        struct thr_table *tb = shm_at(T.map.base, sn.table_off);
        cr_assert_eq(sum, (uint64_t)livec, "%s: shards count %lu, %d LIVE slots", what,
                     (unsigned long)sum, livec);
        cr_assert_eq(atomic_load(&tb->live), (uint64_t)livec, "%s: table count %lu, %d LIVE", what,
                     (unsigned long)atomic_load(&tb->live), livec);
}

/*
 * An inserter killed at every step of expire_inline (before the CAS, after it, inside the
 * retirement between meta DEAD and the counts, and after it all, at the claim), for the first and
 * the second idle key: afterwards every key is reachable with one live slot, the counts are exact
 * after reconcile, and one maintenance pass leaves no slot retiring (no capacity leaked).
 */
Test(review12, an_inserter_killed_at_each_step_of_inline_expiry_leaks_nothing)
{
        static const enum thr_hook_point pts[] = {THR_HOOK_EXPIRING_INLINE, THR_HOOK_EXPIRED_INLINE,
                                                  THR_HOOK_RETIRE_COUNTED, THR_HOOK_REACH_RAISED};
        for (unsigned pi = 0; pi < 4; pi++) {
                for (int skip = 0; skip < (pi == 3 ? 1 : 2); skip++) {
                        struct shm_limiter_spec s = tspec("g", 10, SEC, 5, 5);
                        s.capacity = 4; /* the insert needs the expired keys' capacity */
                        s.shards = 1;
                        s.idle_ttl_ns = SEC;
                        s.on_full = THR_FULL_DENY;
                        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
                        thr_limiter *l = tlim(&T, "g");
                        cr_assert_eq(thr_clock_advance(T.a, SEC), 0);
                        struct shm_lim_snap sn = tsnap(&T, "g");
                        char k[4][32], nk[32];
                        for (int i = 0; i < 4; i++) {
                                char p[8];
                                snprintf(p, sizeof(p), "k%d_", i);
                                tkey_at(&T.map, &sn.table, 6, p, k[i], 32);
                                cr_assert_eq(try_on(l, k[i]), 1);
                        }
                        tkey_at(&T.map, &sn.table, 6, "new_", nk, 32);
                        cr_assert_eq(thr_clock_advance(T.a, 2 * SEC), 0);
                        cr_assert_eq(try_on(l, k[2]), 1, "k2 busy again");
                        cr_assert_eq(try_on(l, k[3]), 1, "k3 busy again");
                        pid_t pid = spawn(0);
                        if (pid == 0) {
                                g_kill_at = pts[pi];
                                g_kill_skip = skip;
                                thr_test_hook = kill_hook;
                                try_on(l, nk);
                                _exit(3);
                        }
                        int ws;
                        cr_assert_eq(waitpid(pid, &ws, 0), pid);
                        g_kids[0] = 0;
                        cr_assert(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL,
                                  "point %u skip %d: status %#x", pi, skip, ws);
                        char what[64];
                        snprintf(what, sizeof(what), "killed at point %u, occurrence %d", pi, skip);
                        /* every key again: one live slot each */
                        cr_assert_eq(try_on(l, nk), 1, "%s: the new key", what);
                        for (int i = 0; i < 4; i++) {
                                int rc = try_on(l, k[i]);
                                cr_assert(rc == 1 || rc == 0, "%s: %s: %d", what, k[i],
                                          rc); /* 0: on_full = deny */
                        }
                        for (int i = 0; i < 4; i++)
                                cr_assert_leq(tcount(&T, "g", THR_SLOT_LIVE, k[i], NULL), 1,
                                              "%s: %s", what, k[i]);
                        cr_assert_eq(tcount(&T, "g", THR_SLOT_LIVE, nk, NULL), 1, "%s", what);
                        cr_assert_eq(tcount(&T, "g", THR_SLOT_LIVE, k[2], NULL), 1,
                                     "%s: busy k2 kept", what);
                        cr_assert_eq(tcount(&T, "g", THR_SLOT_LIVE, k[3], NULL), 1,
                                     "%s: busy k3 kept", what);
                        exact_counts(what);
                        cr_assert_leq(count_slots(THR_SLOT_LIVE, UINT64_MAX), 4, "%s: cap", what);
                        /* a pass with every period done: nothing stays retiring, nothing BUSY */
                        tmaint(&T, "g", UINT64_MAX, NULL);
                        cr_assert_eq(count_slots(THR_SLOT_DEAD, THR_TAT_DEAD), 0,
                                     "%s: slots left retiring", what);
                        cr_assert_eq(count_slots(THR_SLOT_BUSY, UINT64_MAX), 0, "%s", what);
                        cr_assert_eq(count_slots(THR_SLOT_LIVE, THR_TAT_DEAD), 0, "%s", what);
                        exact_counts(what);
                        /* with the capacity all back, 4 keys fit */
                        uint64_t lv = (uint64_t)count_slots(THR_SLOT_LIVE, UINT64_MAX);
                        for (uint64_t i = lv; i < 4; i++) {
                                char x[32];
                                snprintf(x, sizeof(x), "fill%lu", (unsigned long)i);
                                cr_assert_eq(try_on(l, x), 1, "%s: capacity lost (%lu live)", what,
                                             (unsigned long)lv);
                        }
                        thr_limiter_close(l);
                        tarena_free(&T);
                }
        }
}

/* ---------------------------------------------------------------- churn, kills, a daemon by hand
 */

#define CH_KEYS    600
#define CH_WORKERS 4
#define CH_T       MS /* 1000/s */
#define CH_B       5ull

struct churn {
        _Atomic uint64_t admitted[CH_KEYS];
        _Atomic int stop;
};

static void churn_worker(thr_limiter *l, struct churn *c, unsigned seed)
{
        char key[32];
        while (!atomic_load(&c->stop)) {
                seed = seed * 1103515245u + 12345u;
                /* the keys in use drift with the clock: the older ones go idle */
                uint64_t epoch = shm_now_ns(shm_hdr(&T.map)) / (20 * MS);
                unsigned k =
                    (seed >> 4) % 8 == 0
                        ? (seed >> 8) % 10 /* keys 0..9: always in use */
                        : (unsigned)(10 + (epoch * 37 + (seed >> 8) % 120) % (CH_KEYS - 10));
                snprintf(key, sizeof(key), "key%u", k);
                struct thr_result r;
                if (thr_limiter_try(l, key, strlen(key), 1, &r) == 1)
                        atomic_fetch_add(&c->admitted[k], 1);
        }
        _exit(0);
}

static uint64_t g_daemon_evicted;

/* Every LIVE slot of KEY, with its state and its home's reach, to the log. */
static void dump_key(const char *key)
{
        struct shm_lim_snap sn = tsnap(&T, "g");
        struct thr_slot *s = shm_at(T.map.base, sn.table.slots_off);
        struct shm_probe p;
        tprobe(&T.map, &sn.table, key, &p);
        uint64_t n = (uint64_t)sn.table.nshards * sn.table.shard_slots;
        for (uint64_t i = 0; i < n; i++) {
                if (THR_META_STATUS(atomic_load(&s[i].meta)) != THR_SLOT_LIVE ||
                    s[i].key_len != strlen(key) ||
                    memcmp(s[i].key, key, shm_key_stored_len(s[i].key_len)))
                        continue;
                uint64_t st = atomic_load(&s[i].state);
                cr_log_error("%s: slot %lu (shard-relative %lu, home %u, dist %lu, home reach %u)"
                             " state %s%lu gen %u",
                             key, (unsigned long)i, (unsigned long)(i % sn.table.shard_slots),
                             p.home,
                             (unsigned long)((i % sn.table.shard_slots + p.n - p.home) % p.n),
                             (unsigned)atomic_load(&p.slots[p.home].reach),
                             st == THR_TAT_DEAD ? "DEAD " : "", (unsigned long)st,
                             (unsigned)THR_META_GEN(atomic_load(&s[i].meta)));
        }
}

/* One maintenance pass by hand as daemon/maint.c runs it, then its grace period, scanned again
 * (the rescans) a few times; *DONE: the max of the results. Busy shards are skipped, as there. */
static void churn_pass(uint64_t *done, uint32_t *cursor, bool maintain)
{
        struct shm_lim_snap sn = tsnap(&T, "g");
        /* a client's lock value: with no daemon attached, a lock valued shm_lock_daemon(0) is
         * judged dead and taken over */
        struct shm_maint_args a = tmaint_args(&T, &sn, *done, tlock_me(T.a));
        struct shm_maint_stats st = {0};
        if (maintain)
                shm_table_maintain(&T.map, &sn, &a, cursor, 64, &st);
        g_daemon_evicted += st.evicted + st.finished;
        tgp_wait(&T, done, 3, 200);
}

/*
 * Forked workers churn 600 keys through a 256-key table (2 shards, idle_ttl 50 ms on a manual
 * clock the test advances 5 ms at a time) while the test runs the daemon's passes and grace
 * periods by hand and SIGKILLs a random worker every few steps (respawned). Afterwards: at most
 * one LIVE slot per key, exact counts after repair and reconcile, nothing left retiring after a
 * pass with every period done, and no key admitted more than B + elapsed / T + 1 over the run
 * (an expiry of a key that was not idle would give it a fresh burst).
 */
Test(review12, churn_with_inline_expiry_kills_and_rescans_keeps_counts_and_rates)
{
        struct shm_limiter_spec s = tspec("g", 1000, SEC, CH_B, CH_B);
        s.capacity = 256;
        s.shards = 2;
        s.idle_ttl_ns = 50 * MS;
        s.on_full = THR_FULL_DENY;
        s.lock_wait_ns = 2 * SEC;
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        thr_limiter *l = tlim_kept(&T, "g");
        cr_assert_eq(thr_clock_advance(T.a, SEC), 0);
        uint64_t t0 = shm_now_ns(shm_hdr(&T.map));
        struct churn *c =
            mmap(NULL, sizeof(*c), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(c, MAP_FAILED);
        memset(c, 0, sizeof(*c));
        unsigned seed = (unsigned)time(NULL);
        cr_log_info("seed %u", seed);
        for (int w = 0; w < CH_WORKERS; w++)
                if (spawn(w) == 0)
                        churn_worker(l, c, seed + (unsigned)w * 7919u);
        uint64_t done = 0;
        uint32_t cursor = 0;
        int kills = 0;
        for (int step = 0; step < 600; step++) {
                cr_assert_eq(thr_clock_advance(T.a, 5 * MS), 0);
                churn_pass(&done, &cursor, step % 16 == 0); /* the sweep lags: inserts expire */
                usleep(1000);
                seed = seed * 1103515245u + 12345u;
                if (!getenv("R12_NOKILL") && (seed >> 8) % 4 == 0) {
                        int w = (int)((seed >> 16) % CH_WORKERS);
                        kill(g_kids[w], SIGKILL);
                        waitpid(g_kids[w], NULL, 0);
                        kills++;
                        if (spawn(w) == 0)
                                churn_worker(l, c, seed);
                }
        }
        atomic_store(&c->stop, 1);
        for (int w = 0; w < CH_WORKERS; w++) {
                kill(g_kids[w], SIGKILL);
                waitpid(g_kids[w], NULL, 0);
                g_kids[w] = 0;
        }
        uint64_t t1 = shm_now_ns(shm_hdr(&T.map));
        cr_log_info("%d kills", kills);
        /* every shard's lock tried as the daemon does: a dead holder's is taken over and the
         * shard repaired (an insert would not do: a full table refuses before locking) */
        struct shm_lim_snap sn = tsnap(&T, "g");
        char key[32];
        int busy = count_slots(THR_SLOT_BUSY, UINT64_MAX);
        for (uint32_t sh = 0; sh < sn.table.nshards; sh++) {
                struct shm_probe p = {
                    .shard = (struct thr_shard *)shm_at(T.map.base, sn.table.shards_off) + sh,
                    .slots = (struct thr_slot *)shm_at(T.map.base, sn.table.slots_off) +
                             (uint64_t)sh * sn.table.shard_slots,
                    .n = sn.table.shard_slots};
                cr_assert_eq(shm_shard_trylock(&T.map, &p, tlock_me(T.a)), 0, "shard %u", sh);
                shm_shard_unlock(&p, tlock_me(T.a));
        }
        cr_log_info("%d BUSY slots before the repairs, %d after", busy,
                    count_slots(THR_SLOT_BUSY, UINT64_MAX));
        for (int k = 0; k < CH_KEYS; k++) {
                snprintf(key, sizeof(key), "key%d", k);
                if (tcount(&T, "g", THR_SLOT_LIVE, key, NULL) > 1)
                        dump_key(key);
                cr_assert_leq(tcount(&T, "g", THR_SLOT_LIVE, key, NULL), 1, "%s twice", key);
                uint64_t bound = CH_B + (t1 - t0) / CH_T + 1;
                if (k < 10)
                        cr_assert_geq(atomic_load(&c->admitted[k]), bound * 9 / 10,
                                      "hot %s not saturated: %lu", key,
                                      (unsigned long)atomic_load(&c->admitted[k]));
                cr_assert_leq(atomic_load(&c->admitted[k]), bound, "%s admitted %lu > %lu", key,
                              (unsigned long)atomic_load(&c->admitted[k]), (unsigned long)bound);
        }
        uint64_t evicted = 0, most = 0;
        struct thr_shard *shs = shm_at(T.map.base, sn.table.shards_off);
        for (uint32_t sh = 0; sh < sn.table.nshards; sh++)
                evicted += atomic_load(&shs[sh].evicted);
        for (int k = 0; k < CH_KEYS; k++)
                if (atomic_load(&c->admitted[k]) > most)
                        most = atomic_load(&c->admitted[k]);
        cr_log_info("evicted %lu, by the passes %lu; most admitted %lu of %lu",
                    (unsigned long)evicted, (unsigned long)g_daemon_evicted, (unsigned long)most,
                    (unsigned long)(CH_B + (t1 - t0) / CH_T + 1));
        exact_counts("after the churn");
        cr_assert_leq(count_slots(THR_SLOT_LIVE, UINT64_MAX), 256, "the cap");
        tmaint(&T, "g", UINT64_MAX, NULL); /* evicts the idle keys, reclaims */
        tmaint(&T, "g", UINT64_MAX, NULL); /* reclaims what the first one evicted */
        cr_assert_eq(count_slots(THR_SLOT_DEAD, THR_TAT_DEAD), 0, "slots left retiring");
        cr_assert_eq(count_slots(THR_SLOT_BUSY, UINT64_MAX), 0);
        cr_assert_eq(count_slots(THR_SLOT_LIVE, THR_TAT_DEAD), 0);
        exact_counts("after a pass");
        munmap(c, sizeof(*c));
        cr_assert_gt(evicted, g_daemon_evicted, "no inline expiry happened");
}

/* ---------------------------------------------------------------- composed calls */

/*
 * A composed call locates its members first (creating new keys, charged nothing), each in a
 * section of its own, then marks them. A new window key is idle at once (an empty log:
 * shm_window_idle's end == 0), so when two members of one window limiter share a home, locating
 * the second expires the first inline; the attempt finds it retired and starts over; locating
 * the first again expires the second, and so on: all ATTEMPTS (16) fail and the call answers
 * -EBUSY, every time, for that pair of keys. Nothing else is using the limiter.
 */
Test(review12, a_composed_call_on_two_new_window_keys_of_one_home_is_decided)
{
        struct shm_limiter_spec s = tspec("w", 100, SEC, 100, 100);
        s.kind = THR_KIND_WINDOW;
        s.capacity = 32;
        s.shards = 1;
        s.idle_ttl_ns = SEC;
        s.on_full = THR_FULL_DENY;
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        thr_limiter *l = tlim_kept(&T, "w");
        cr_assert_eq(thr_clock_advance(T.a, SEC), 0);
        struct shm_lim_snap sn = tsnap(&T, "w");
        char a[32], b[32];
        tkey_at(&T.map, &sn.table, 5, "a", a, sizeof(a));
        tkey_at(&T.map, &sn.table, 5, "b", b, sizeof(b));
        struct thr_member m[] = {{.lim = l, .key = a, .len = strlen(a), .cost = 1},
                                 {.lim = l, .key = b, .len = strlen(b), .cost = 1}};
        struct thr_compose_result r;
        int rc = thr_compose_try(m, 2, &r);
        cr_assert_eq(rc, 1, "two new keys of an idle limiter: %d (%s), %lu keys evicted", rc,
                     rc < 0 ? strerror(-rc) : "denied",
                     (unsigned long)atomic_load(
                         &((struct thr_shard *)shm_at(T.map.base, sn.table.shards_off))->evicted));
        cr_assert_eq(r.remaining[0], 99);
        cr_assert_eq(r.remaining[1], 99);
}

/* ---------------------------------------------------------------- grace-period rescans */

static struct {
        thr_limiter *l;
        char x[32], n1[32], n2[32];
        struct thr_slot *xslot;
        uint64_t gp;
        pid_t blocker;
        bool ran;
        unsigned after_rescan, after_pass, after_insert; /* X's old slot: state == DEAD */
        uint64_t done;
} R;

static bool x_slot_retiring(void)
{
        return THR_META_STATUS(atomic_load(&R.xslot->meta)) == THR_SLOT_DEAD &&
               atomic_load(&R.xslot->state) == THR_TAT_DEAD;
}

/* Inside this process's section, holding X's slot (its state read, its CAS not yet made). */
static void hold_x(enum thr_hook_point pt, void *arg)
{
        const struct thr_slot *v = arg; /* the client's own mapping of the slot */
        if (pt != THR_HOOK_APPLY_BEFORE_CAS || R.ran || v->key_len != strlen(R.x) ||
            memcmp(v->key, R.x, v->key_len))
                return;
        R.ran = true;
        /* a new key of X's home: its insert expires X inline (after the bump: tag gp + 1) */
        cr_assert_eq(try_on(R.l, R.n1), 1);
        cr_assert(x_slot_retiring(), "X expired inline under its reader");
        /* the reader that blocked GP dies; GP is scanned again, no new membarrier */
        kill(R.blocker, SIGKILL);
        waitpid(R.blocker, NULL, 0);
        g_kids[0] = 0;
        struct shm_gp_result res;
        cr_assert_eq(
            shm_gp_scan(&T.map, R.gp, shm_now_ns(shm_hdr(&T.map)), UINT64_MAX, &res, NULL, NULL),
            0);
        R.done = res.done;
        R.after_rescan = x_slot_retiring();
        /* the daemon's next pass with that result, then an inserter reading the header's gp_done
         */
        tmaint(&T, "g", res.done, NULL);
        R.after_pass = x_slot_retiring();
        cr_assert_eq(try_on(R.l, R.n2), 1);
        R.after_insert = x_slot_retiring();
}

static void block_forever(enum thr_hook_point pt, void *arg)
{
        (void)arg;
        if (pt != THR_HOOK_SECTION_ENTERED)
                return;
        if (write(3, "i", 1) != 1)
                _exit(4);
        for (;;)
                pause();
}

/*
 * A rescan of a period completes it once its blocker is gone; this process, in a section entered
 * after the bump, holds X's slot, which a new key's insert expired inline under it (tag gp + 1).
 * Neither the rescan's result, nor the pass using it, nor an inserter reading the header's gp_done
 * may free that slot while the section lasts.
 */
Test(review12, a_rescan_never_frees_a_slot_expired_inline_under_a_reader)
{
        struct shm_limiter_spec s = tspec("g", 10, SEC, 5, 5);
        s.capacity = 32;
        s.shards = 1;
        s.idle_ttl_ns = SEC;
        s.on_full = THR_FULL_DENY;
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        R.l = tlim_kept(&T, "g");
        cr_assert_eq(thr_clock_advance(T.a, SEC), 0);
        struct shm_lim_snap sn = tsnap(&T, "g");
        tkey_at(&T.map, &sn.table, 8, "x", R.x, 32);
        tkey_at(&T.map, &sn.table, 8, "n1_", R.n1, 32);
        tkey_at(&T.map, &sn.table, 8, "n2_", R.n2, 32);
        cr_assert_eq(try_on(R.l, R.x), 1);
        cr_assert_eq(tcount(&T, "g", THR_SLOT_LIVE, R.x, &R.xslot), 1);
        cr_assert_eq(try_on(R.l, "other"), 1);
        cr_assert_eq(thr_clock_advance(T.a, 3 * SEC), 0); /* X idle */
        /* a first period completes (gp_done > 0: inserters may reuse slots) */
        uint64_t g0;
        struct shm_gp_result res;
        cr_assert_eq(shm_gp_start(&T.map, &g0), 0);
        cr_assert_eq(shm_gp_scan(&T.map, g0, 0, UINT64_MAX, &res, NULL, NULL), 0);
        cr_assert_eq(res.done, g0);
        /* a reader stuck in a section entered before the next bump */
        int pfd[2];
        cr_assert_eq(pipe(pfd), 0);
        pid_t kid = spawn(0);
        if (kid == 0) {
                dup2(pfd[1], 3);
                thr_test_hook = block_forever;
                try_on(R.l, "other");
                _exit(5);
        }
        char c;
        cr_assert_eq(read(pfd[0], &c, 1), 1);
        R.blocker = kid;
        cr_assert_eq(shm_gp_start(&T.map, &R.gp), 0);
        cr_assert_eq(shm_gp_scan(&T.map, R.gp, 0, UINT64_MAX, &res, NULL, NULL), 0);
        cr_assert_lt(res.done, R.gp, "the stuck reader blocks the period");
        thr_test_hook = hold_x;
        cr_assert_eq(try_on(R.l, R.x), 1, "X, expired under the call, comes back as a new key");
        thr_test_hook = NULL;
        cr_assert(R.ran);
        cr_assert_eq(R.done, R.gp, "the rescan completes the period");
        cr_assert(R.after_rescan && R.after_pass && R.after_insert,
                  "X's old slot freed under its reader: after the rescan %u, the pass %u, an "
                  "insert %u",
                  R.after_rescan, R.after_pass, R.after_insert);
        /* the section is over: the next period frees it */
        cr_assert_eq(shm_gp_start(&T.map, &g0), 0);
        cr_assert_eq(shm_gp_scan(&T.map, g0, 0, UINT64_MAX, &res, NULL, NULL), 0);
        cr_assert_eq(res.done, g0);
        tmaint(&T, "g", res.done, NULL);
        cr_assert(!x_slot_retiring(), "freed once no reader may hold it");
        close(pfd[0]);
        close(pfd[1]);
}

/* ---------------------------------------------------------------- shm_maint_budget */

/*
 * shm_maint_budget returns enough SLOTS for a sweep of the table in half its TTL, but
 * shm_table_maintain spends a budget in whole shards, rounded down (budget / shard_slots, at
 * least one): 4 shards, 3 passes in TTL / 2 asks for 4/3 of a shard a pass, gets one, and the
 * sweep takes 4 passes, longer than TTL / 2 (README: "sweeps each table at least once every half
 * idle_ttl"). The daemon's own arithmetic (maint.c), on a real table.
 */
Test(review12, a_pass_budget_sweeps_the_table_within_half_its_ttl)
{
        const uint64_t period = 100 * MS, ttl = 600 * MS; /* 3 passes in TTL / 2 */
        struct shm_limiter_spec s = tspec("g", 10, SEC, 5, 5);
        s.capacity = 4096;
        s.shards = 4;
        s.idle_ttl_ns = ttl;
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        struct shm_lim_snap sn = tsnap(&T, "g");
        uint64_t slots = (uint64_t)sn.table.nshards * sn.table.shard_slots;
        uint64_t budget = shm_maint_budget(&sn.table, 64, period, ttl);
        cr_assert_geq(budget * 3, slots, "the budget asked for: %lu of %lu slots",
                      (unsigned long)budget, (unsigned long)slots);
        struct thr_hdr *h = shm_hdr(&T.map);
        struct shm_maint_args a = {.now_units = shm_now_ns(h) * sn.params.k,
                                   .ttl_units = sn.params.idle_ttl_ns * sn.params.k,
                                   .tag = shm_retire_tag(h),
                                   .done = 0,
                                   .me = shm_lock_daemon(0)};
        uint32_t cursor = 0;
        uint64_t scanned = 0;
        int passes = 0;
        while (scanned < slots && passes < 100) {
                struct shm_maint_stats st = {0};
                shm_table_maintain(&T.map, &sn, &a, &cursor, budget, &st);
                scanned += st.scanned;
                passes++;
        }
        cr_assert_leq((uint64_t)passes, ttl / 2 / period,
                      "a sweep of %lu slots (%u shards of %u) took %d passes of budget %lu: "
                      "longer than half the TTL",
                      (unsigned long)slots, sn.table.nshards, sn.table.shard_slots, passes,
                      (unsigned long)budget);
}
