/*
 * test_order_review.c - a hostile review of op_begin's order. A key handle's call reads the clock
 * before it looks at its slot, and its first decision on an existing key (op_apply) takes that
 * reading (o->now_fresh); a plain call reads it in op_apply, after the probe; a new key's first
 * decision (fresh_decide) reads it after the probe that found the key absent. Checked: handle
 * tries and plain reservations against a model of those readings (a denial by at most
 * THR_REREAD_NS decided again on a reading after the state), the clock moved by a hook between the
 * reading and the look; a key evicted, or evicted and inserted again by another call, between a
 * handle's reading and its look; a child SIGKILLed at each step of a new key's call; a TSC-clock
 * limiter's new key started on its lagged reading; thr_op_find deciding nothing and reading no
 * clock; calls refused before the clock read (-EIDRM, -ERANGE) leave their section and read no
 * clock.
 */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client_internal.h"
#include "clock.h"
#include "gcra.h"
#include "helpers.h"
#include "testhook.h"

#define US 1000ull

static struct tarena T;
static thr_limiter *L;
static pid_t g_kid;

/* the hook: counts the clock readings, moves the manual clock by g_step after each; g_fn (if
 * set) runs at the reading too, once */
static _Atomic uint64_t *g_now;
static uint64_t g_step;
static int g_reads;
static void (*g_fn)(void);

static void clock_hook(enum thr_hook_point pt, void *arg)
{
        (void)arg;
        if (pt != THR_HOOK_CLOCK_READ)
                return;
        g_reads++;
        if (g_now)
                atomic_fetch_add(g_now, g_step);
        void (*fn)(void) = g_fn;
        g_fn = NULL;
        if (fn)
                fn();
}

static void teardown(void)
{
        if (g_kid > 0 && kill(g_kid, SIGKILL) == 0)
                waitpid(g_kid, NULL, 0);
        g_kid = 0;
        thr_test_hook = NULL;
        g_fn = NULL;
        g_now = NULL;
        atomic_store(&thr_test_clock_lag_ns, 0);
        tarena_free(&T);
        L = NULL;
}

TestSuite(order_review, .fini = teardown, .timeout = 60);

#define TI 10000ull /* emission interval: 10 us */
#define BU 4ull

/* limiter "g": one unit per TI, burst BU, idle TTL (0: never idle) */
static void make(uint64_t ttl, uint32_t how)
{
        struct shm_limiter_spec s = tspec("g", SEC / TI, SEC, BU, BU);
        s.idle_ttl_ns = ttl;
        s.clock_read = how;
        s.capacity = 64;
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        L = tlim_kept(&T, "g");
        g_now = &shm_hdr(&T.map)->manual_now_ns;
        atomic_store(g_now, SEC);
}

static uint64_t state_of(const char *key)
{
        struct thr_slot *s = NULL;
        cr_assert_eq(tcount(&T, "g", THR_SLOT_LIVE, key, &s), 1, "%s: one live slot", key);
        return atomic_load(&s->state);
}

/* ---------------------------------------------------------------- against a model */

static uint64_t rnd(uint64_t *x)
{
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        return *x;
}

/*
 * Tries through key handles and plain reservations on four keys (new ones among them), the clock
 * moved by DELTA after each call's hooked reading. A handle's try reads the clock before its probe
 * (op_begin); a plain call after it (op_apply), and a plain call on a new key only in fresh_decide
 * (not hooked). The model: a call on an existing key decides on R, the first reading; a denial (a
 * try short by at most THR_REREAD_NS, any reservation) is decided again on R + DELTA; a handle's
 * new key (and its insert) on R + DELTA, read after its probe missed; a reservation's new key on R.
 */
Test(order_review, gcra_decides_on_the_reading_made_before_the_probe)
{
        make(0, THR_CLOCK_READ_PRECISE);
        struct shm_lim_snap sn = tsnap(&T, "g");
        const struct thr_params *p = &sn.params;
        cr_assert_eq(p->k, 1);
        static const uint64_t deltas[] = {0, 300, 900, 1500, 7000, 25000};
        static const uint64_t waits[] = {0, 5 * US, 50 * US};
        uint64_t tat[4] = {THR_TAT_FRESH, THR_TAT_FRESH, THR_TAT_FRESH, THR_TAT_FRESH};
        bool live[4] = {0};
        uint64_t x = 0x9e3779b97f4a7c15ull;
        int adm = 0, den = 0, fresh = 0, reread = 0;
        struct thr_key kh[4];
        for (int k = 0; k < 4; k++)
                cr_assert_eq(thr_key_init(&kh[k], L, (char[]){(char)('a' + k), 0}, 1), 0);
        thr_test_hook = clock_hook;
        for (int i = 0; i < 3000; i++) {
                atomic_fetch_add(g_now, rnd(&x) % (TI / 2));
                int kidx = (int)(rnd(&x) % 4);
                char key[2] = {(char)('a' + kidx), 0};
                uint64_t cost = rnd(&x) % (BU + 1);
                bool reserve = cost && rnd(&x) % 3 == 0;
                uint64_t maxw = waits[rnd(&x) % 3];
                g_step = deltas[rnd(&x) % 6];
                uint64_t r = atomic_load(g_now);
                /* the model */
                struct shm_gcra g;
                bool ok;
                uint64_t due = 0, nt = tat[kidx];
                bool was_live = live[kidx];
                for (int pass = 0; pass < 2; pass++) {
                        uint64_t now = r + (pass || (!was_live && !reserve) ? g_step : 0);
                        shm_gcra_step(p, was_live ? tat[kidx] : THR_TAT_FRESH, now, cost, &g);
                        if (reserve) {
                                due = g.new_tat - now > p->bt_units ? g.new_tat - p->bt_units : now;
                                ok = due - now <= p->max_reserve_units && due - now <= maxw;
                        } else {
                                ok = g.admitted;
                        }
                        /* a new key always fits (cost <= B); a denial on a live key is read
                         * again unless a try's deficit is above THR_REREAD_NS */
                        if (ok || !was_live || pass || (!reserve && g.retry_units > 1000))
                                break;
                        reread++;
                }
                if (ok && cost) {
                        nt = g.new_tat;
                        if (!was_live)
                                fresh++;
                }
                /* the call */
                g_reads = 0;
                int rc;
                struct thr_result res = {0};
                struct thr_reservation rv;
                if (reserve) {
                        rc = thr_limiter_reserve(L, key, 1, cost, maxw, &rv);
                        cr_assert(rc == 0 || rc == -EAGAIN, "step %d: rc %d", i, rc);
                        cr_assert_eq(rc == 0, ok, "step %d: reserve %s cost %llu: got %d", i, key,
                                     (unsigned long long)cost, rc);
                        if (ok)
                                cr_assert_eq(rv.due_ns, due, "step %d: due %llu, model %llu", i,
                                             (unsigned long long)rv.due_ns,
                                             (unsigned long long)due);
                } else {
                        rc = thr_key_try(&kh[kidx], cost, &res);
                        cr_assert_eq(rc, ok, "step %d: try %s cost %llu at %llu (+%llu): %d", i,
                                     key, (unsigned long long)cost, (unsigned long long)r,
                                     (unsigned long long)g_step, rc);
                        cr_assert_eq(res.remaining, g.remaining, "step %d: remaining %llu/%llu", i,
                                     (unsigned long long)res.remaining,
                                     (unsigned long long)g.remaining);
                        cr_assert_eq(res.retry_after_ns, ok ? 0 : g.retry_units, "step %d", i);
                }
                cr_assert_eq(g_reads, reserve && !was_live ? 0 : 1,
                             "step %d: %d hooked clock readings", i, g_reads);
                ok ? adm++ : den++;
                if (ok && cost) {
                        tat[kidx] = nt;
                        live[kidx] = true;
                }
                if (live[kidx])
                        cr_assert_eq(state_of(key), tat[kidx], "step %d: %s's TAT", i, key);
        }
        thr_test_hook = NULL;
        cr_log_info("admitted %d, denied %d, new keys %d, decided again %d", adm, den, fresh,
                    reread);
        cr_assert_gt(adm, 300);
        cr_assert_gt(den, 300);
        cr_assert_eq(fresh, 4);
        cr_assert_gt(reread, 20);
}

/* Many new keys through handles: each one's first decision and insert on a reading after its probe
 * (the hook moves the clock between op_begin's reading and the probe). */
Test(order_review, a_new_keys_insert_starts_at_a_reading_after_its_probe)
{
        make(0, THR_CLOCK_READ_PRECISE);
        thr_test_hook = clock_hook;
        g_step = 5 * US;
        for (int i = 0; i < 40; i++) {
                char key[8];
                snprintf(key, sizeof(key), "n%d", i);
                uint64_t r = atomic_load(g_now);
                uint64_t cost = 1 + (uint64_t)i % BU;
                g_reads = 0;
                struct thr_result res;
                struct thr_key h;
                cr_assert_eq(thr_key_init(&h, L, key, strlen(key)), 0);
                cr_assert_eq(thr_key_try(&h, cost, &res), 1);
                cr_assert_eq(g_reads, 1);
                cr_assert_eq(res.remaining, BU - cost);
                cr_assert_eq(state_of(key), r + g_step + cost * TI,
                             "%s: TAT %llu, op_begin's reading %llu", key,
                             (unsigned long long)state_of(key), (unsigned long long)r);
        }
}

/* ---------------------------------------------------------------- the table moved under it */

static void evict_idle(void)
{
        struct shm_maint_stats st = tmaint(&T, "g", 0, NULL);
        cr_assert_eq(st.evicted, 1, "the idle key evicted between the reading and the probe");
}

static int g_nested;
static void evict_and_take_all(void)
{
        evict_idle();
        g_step = 0;                      /* the nested call's own reading moves nothing */
        atomic_fetch_add(g_now, 3 * US); /* another process, later: a new key, its burst taken */
        g_nested = thr_limiter_try(L, "k", 1, BU, NULL);
}

Test(order_review, a_key_evicted_and_reinserted_between_the_reading_and_the_probe)
{
        make(SEC, THR_CLOCK_READ_PRECISE);
        cr_assert_eq(thr_limiter_try(L, "k", 1, BU, NULL), 1); /* TAT = now + B*T */
        atomic_fetch_add(g_now, 100 * TI);                     /* full again, idle soon */
        uint64_t r = atomic_load(g_now);
        thr_test_hook = clock_hook;
        g_step = SEC; /* idle by the probe: the hook's pass evicts it */
        g_fn = evict_and_take_all;
        struct thr_result res;
        struct thr_key h; /* a handle's call: its reading is made before the probe */
        cr_assert_eq(thr_key_init(&h, L, "k", 1), 0);
        int rc = thr_key_try(&h, 1, &res);
        thr_test_hook = NULL;
        cr_assert_eq(g_nested, 1, "the other call took the new key's burst");
        cr_assert_eq(rc, 0, "admitted on a key whose burst was taken after its reading");
        cr_assert_eq(res.remaining, 0);
        cr_assert_eq(state_of("k"), r + SEC + 3 * US + BU * TI, "the other call's TAT stands");
        cr_assert_eq(tcount(&T, "g", THR_SLOT_LIVE, "k", NULL), 1);
}

/* The key evicted between op_begin's reading and the probe: it starts again on a reading after the
 * probe (on op_begin's, a second of history would be given back: its burst taken twice). */
Test(order_review, a_key_evicted_between_the_reading_and_the_probe_starts_after_it)
{
        make(SEC, THR_CLOCK_READ_PRECISE);
        cr_assert_eq(thr_limiter_try(L, "k", 1, BU, NULL), 1);
        atomic_fetch_add(g_now, 100 * TI);
        uint64_t r = atomic_load(g_now);
        thr_test_hook = clock_hook;
        g_step = SEC;
        g_fn = evict_idle;
        g_reads = 0;
        struct thr_result res;
        struct thr_key h; /* a handle's call: its reading is made before the probe */
        cr_assert_eq(thr_key_init(&h, L, "k", 1), 0);
        cr_assert_eq(thr_key_try(&h, 2, &res), 1);
        thr_test_hook = NULL;
        cr_assert_eq(g_reads, 1);
        cr_assert_eq(res.remaining, BU - 2);
        cr_assert_eq(state_of("k"), r + SEC + 2 * TI, "inserted on a reading after the probe");
        /* no more than the burst at the (later) true time: B - 2 more, then denied */
        int got = 0;
        for (unsigned i = 0; i < 2 * BU; i++)
                got += thr_limiter_try(L, "k", 1, 1, NULL) == 1;
        cr_assert_leq((uint64_t)got, BU - 2 + SEC / TI, "%d", got);
}

/* ---------------------------------------------------------------- killed children */

static void die(void *arg)
{
        (void)arg;
        raise(SIGKILL);
}

static enum thr_hook_point g_kill_at;
static void kill_hook(enum thr_hook_point pt, void *arg)
{
        if (pt == g_kill_at)
                die(arg);
}

Test(order_review, a_child_killed_at_each_step_of_a_new_keys_call)
{
        make(0, THR_CLOCK_READ_PRECISE);
        static const enum thr_hook_point pts[] = {THR_HOOK_SECTION_ENTERED, THR_HOOK_CLOCK_READ,
                                                  THR_HOOK_KEY_INSERTED};
        static const unsigned took[] = {0, 0, 2};
        for (size_t i = 0; i < 3; i++) {
                char key[8];
                snprintf(key, sizeof(key), "c%zu", i);
                fflush(NULL);
                pid_t pid = tfork();
                cr_assert_geq(pid, 0);
                if (pid == 0) {
                        g_kill_at = pts[i];
                        thr_test_hook = kill_hook;
                        struct thr_key h; /* a handle's call reads its clock before the probe */
                        if (thr_key_init(&h, L, key, strlen(key)) == 0)
                                thr_key_try(&h, 2, NULL);
                        _exit(3);
                }
                g_kid = pid;
                int ws = 0;
                cr_assert_eq(waitpid(pid, &ws, 0), pid);
                g_kid = 0;
                cr_assert(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL, "point %d: %#x", pts[i], ws);
                unsigned got = 0;
                for (unsigned j = 0; j < 2 * BU; j++)
                        got += thr_limiter_try(L, key, strlen(key), 1, NULL) == 1;
                cr_assert_eq(got, BU - took[i], "point %d: %u", pts[i], got);
                cr_assert_eq(tcount(&T, "g", THR_SLOT_LIVE, key, NULL), 1);
        }
}

/* ---------------------------------------------------------------- the TSC clock */

Test(order_review, a_tsc_limiters_new_key_starts_on_its_lagged_reading)
{
        make(0, THR_CLOCK_READ_TSC);
        struct shm_lim_snap sn = tsnap(&T, "g");
        cr_assert_eq(THR_PARAM_CLOCK(sn.params.flags), THR_CLOCK_READ_TSC);
        atomic_store(&thr_test_clock_lag_ns, 700);
        uint64_t r = atomic_load(g_now);
        cr_assert_eq(thr_limiter_try(L, "t", 1, 1, NULL), 1);
        cr_assert_eq(state_of("t"), r - 700 + TI, "the insert used the lagged reading");
        cr_assert_eq(thr_limiter_try(L, "t", 1, 1, NULL), 1);
        cr_assert_eq(state_of("t"), r - 700 + 2 * TI);
}

/* ---------------------------------------------------------------- find, refusals */

Test(order_review, find_decides_nothing_and_refusals_read_no_clock)
{
        make(0, THR_CLOCK_READ_PRECISE);
        cr_assert_eq(thr_limiter_try(L, "f", 1, 1, NULL), 1);
        uint64_t st = state_of("f");
        thr_test_hook = clock_hook;
        g_step = 0;
        struct thr_reservation_priv loc;
        g_reads = 0;
        cr_assert_eq(thr_op_find(L, "f", 1, &loc), 0);
        cr_assert_not_null(loc.slot);
        cr_assert_eq(thr_op_find(L, "nope", 4, &loc), -ENOENT);
        cr_assert_null(loc.slot);
        cr_assert_eq(g_reads, 0, "thr_op_find read the clock (%d readings for 2 calls)", g_reads);
        cr_assert_eq(state_of("f"), st);
        cr_assert_eq(tcount(&T, "g", THR_SLOT_LIVE, "nope", NULL), 0);
        g_reads = 0;
        cr_assert_eq(thr_limiter_try(L, "f", 1, BU + 1, NULL), -ERANGE);
        struct thr_dir_entry *de = L->de;
        atomic_store(&de->state, THR_DIR_RETIRED);
        cr_assert_eq(thr_limiter_try(L, "f", 1, 1, NULL), -EIDRM);
        cr_assert_eq(thr_limiter_try(L, "new", 3, 1, NULL), -EIDRM);
        atomic_store(&de->state, THR_DIR_LIVE);
        cr_assert_eq(g_reads, 0, "a refused call read the clock");
        thr_test_hook = NULL;
        uint64_t done = 0;
        cr_assert(tgp_wait(&T, &done, 20, 1000), "a section left open by a refused call");
        cr_assert_eq(state_of("f"), st);
        cr_assert_eq(tcount(&T, "g", THR_SLOT_LIVE, "new", NULL), 0);
}
