/*
 * test_key_review.c - a hostile review of key handles (thr_key_init, thr_key_try): a handle
 * scribbled in its key bytes, its length or its hash (keeping its check word), or its limiter
 * pointer, must never charge another key, make a second live slot for one, or crash; the
 * remembered slot evicted (and another key of the same home inserted) between the hint's test and
 * the CAS; a process SIGKILLed or SIGSTOPped at each step of a handle's call; threads sharing one
 * handle while its key is evicted, its slot reclaimed and reused by other keys of the same home
 * (at most GCRA's greedy maximum at the clock's values, one live slot; the same churn through
 * thr_limiter_try beside it); window and budget limiters through a handle (a twin of
 * thr_limiter_try); a limiter removed (-EIDRM); another thr_limiter of the same limiter closed; a
 * long key's handle rewritten in its prefix or digest; the remembered slot's meta word, length and
 * key bytes scribbled in the arena while threads use the handle.
 */
#include <criterion/criterion.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client_internal.h"
#include "helpers.h"
#include "reclaim.h"
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

TestSuite(key_review, .fini = teardown, .timeout = 120);

/* One limiter "l" (10/s, burst 5) of CAPACITY keys in SHARDS shards, idle TTL 1 s. */
static void make(uint64_t capacity, uint32_t shards)
{
        struct shm_limiter_spec s = tspec("l", 10, SEC, BU, BU);
        s.capacity = capacity;
        s.shards = shards;
        s.idle_ttl_ns = TTL;
        s.on_full = THR_FULL_DENY;
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        L = tlim(&T, "l");
        cr_assert_eq(thr_clock_advance(T.a, SEC), 0);
}

/* How many of BU + 1 single tokens KEY gets by the plain call now (the clock not moved). */
static int plain_tokens(const char *key)
{
        int got = 0;
        for (unsigned i = 0; i <= BU; i++)
                got += thr_limiter_try(L, key, strlen(key), 1, NULL) == 1;
        return got;
}

/* ---------------------------------------------------------------- scribbled handles */

/*
 * The key bytes are not covered by the check word: a handle of "alpha" whose last byte becomes
 * 'b' is a handle of "alphb" with alpha's hash. It must not charge "alphb" (another key), nor
 * put a slot of "alphb" at alpha's home with alpha's tag (a second live slot for "alphb" once the
 * plain call inserts its own).
 */
Test(key_review, scribbled_key_bytes_never_charge_another_key)
{
        make(64, 1);
        struct thr_key kh;
        cr_assert_eq(thr_key_init(&kh, L, "alpha", 5), 0);
        cr_assert_eq(thr_key_try(&kh, 1, NULL), 1);
        thr_key_priv(&kh)->key[4] = 'b'; /* "alphb" */
        int rc = thr_key_try(&kh, BU, NULL);
        cr_log_info("scribbled key bytes: thr_key_try gave %d", rc);
        cr_assert_eq(tcount(&T, "l", THR_SLOT_LIVE, "alphb", NULL), 0,
                     "a handle scribbled to \"alphb\" inserted a slot of alphb (rc %d)", rc);
        int got = plain_tokens("alphb");
        cr_assert_eq(got, (int)BU, "alphb, never asked for by its name, gets %d tokens", got);
        cr_assert_leq(tcount(&T, "l", THR_SLOT_LIVE, "alphb", NULL), 1, "two live slots for alphb");
}

/*
 * The check word is len ^ hash.hi ^ hash.lo: flipping the same bit in both halves of the hash
 * keeps it. The handle then probes from another home with another tag, never finds its key and
 * inserts it again: two live slots for one key, each with its own burst.
 */
Test(key_review, a_hash_scribbled_in_both_halves_never_makes_a_second_slot)
{
        make(64, 1);
        struct thr_key kh;
        cr_assert_eq(thr_key_init(&kh, L, "alpha", 5), 0);
        cr_assert_eq(thr_key_try(&kh, BU, NULL), 1, "alpha's whole burst");
        thr_key_priv(&kh)->hash ^= (1ull << 40) | (1ull << 8);
        atomic_store(&thr_key_priv(&kh)->at, 0); /* or a miss of the hint: the tag differs */
        int rc = thr_key_try(&kh, 1, NULL);
        cr_log_info("hash scribbled (check kept): thr_key_try gave %d", rc);
        cr_assert_neq(rc, 1, "alpha has no token left, yet the scribbled handle was admitted");
        cr_assert_eq(tcount(&T, "l", THR_SLOT_LIVE, "alpha", NULL), 1,
                     "a second live slot for alpha (rc %d)", rc);
}

/*
 * Length and hash scribbled together (bit 0 of each: the check kept): "alpha" of length 4 is
 * "alph", another key, which must not be charged.
 */
Test(key_review, length_and_hash_scribbled_together_never_charge_a_shorter_key)
{
        make(64, 1);
        struct thr_key kh;
        cr_assert_eq(thr_key_init(&kh, L, "alpha", 5), 0);
        cr_assert_eq(thr_key_try(&kh, 1, NULL), 1);
        thr_key_priv(&kh)->len ^= 1;  /* 5 -> 4 */
        thr_key_priv(&kh)->hash ^= 1; /* the check word unchanged */
        int rc = thr_key_try(&kh, BU, NULL);
        cr_log_info("length and hash scribbled: thr_key_try gave %d", rc);
        cr_assert_eq(tcount(&T, "l", THR_SLOT_LIVE, "alph", NULL), 0,
                     "\"alph\" was inserted by alpha's handle (rc %d)", rc);
        cr_assert_eq(plain_tokens("alph"), (int)BU, "alph charged by another key's handle");
}

/*
 * The limiter pointer is not covered by the check word either: a handle whose LIM was scribbled
 * is followed (a wild read), where "-EINVAL for a handle thr_key_init did not make" was promised.
 * In a child: a crash is the finding, not the end of the run.
 */
Test(key_review, a_scribbled_limiter_pointer_is_refused_not_followed)
{
        make(64, 1);
        struct thr_key kh;
        cr_assert_eq(thr_key_init(&kh, L, "alpha", 5), 0);
        static const uintptr_t wild[] = {0x10, 0x1000, 0xdead0000, (uintptr_t)-64};
        for (size_t i = 0; i < sizeof(wild) / sizeof(wild[0]); i++) {
                fflush(NULL);
                pid_t pid = tfork();
                cr_assert_geq(pid, 0);
                if (pid == 0) {
                        struct thr_key bad = kh;
                        thr_key_priv(&bad)->lim = (thr_limiter *)wild[i];
                        _exit(thr_key_try(&bad, 1, NULL) == -EINVAL ? 0 : 1);
                }
                g_kid = pid;
                int ws = 0;
                cr_assert_eq(waitpid(pid, &ws, 0), pid);
                g_kid = 0;
                cr_assert(WIFEXITED(ws), "lim %#lx: the call crashed (signal %d)",
                          (unsigned long)wild[i], WIFSIGNALED(ws) ? WTERMSIG(ws) : 0);
                cr_assert_eq(WEXITSTATUS(ws), 0, "lim %#lx: not -EINVAL", (unsigned long)wild[i]);
        }
}

/* ---------------------------------------------------------------- between the hint and the CAS */

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

static char g_other[32];
static struct thr_slot *g_hooked_slot;

static void *insert_other(void *arg)
{
        (void)arg;
        return (void *)(long)thr_limiter_try(L, g_other, strlen(g_other), 3, NULL);
}

/* At the handle's CAS: its key goes idle past the TTL and is evicted (a maintenance pass), and
 * another key of the same home is inserted by another thread (the DEAD slot is not reusable:
 * this thread's section holds its grace period). */
static void evict_and_insert(void *arg)
{
        g_hooked_slot = arg;
        cr_assert_eq(thr_clock_advance(T.a, 3 * TTL), 0);
        cr_assert_eq(tmaint(&T, "l", 0, NULL).evicted, 1);
        pthread_t t;
        void *v;
        cr_assert_eq(pthread_create(&t, NULL, insert_other, NULL), 0);
        pthread_join(t, &v);
        cr_assert_eq((long)v, 1, "%s inserted", g_other);
}

Test(key_review, the_remembered_slot_evicted_between_the_hint_and_the_cas)
{
        make(32, 1);
        struct thr_key kh;
        struct thr_result r;
        cr_assert_eq(thr_key_init(&kh, L, "hot", 3), 0);
        cr_assert_eq(thr_key_try(&kh, 2, &r), 1);
        uint64_t at = tkey_hint(&kh);
        struct thr_slot *old = tslot_at(&T, "l", at);
        struct shm_probe pa;
        struct thr_table geo = tsnap(&T, "l").table;
        tprobe(&T.map, &geo, "hot", &pa);
        tkey_at(&T.map, &geo, pa.home, "o", g_other, sizeof(g_other));
        hook_at(THR_HOOK_APPLY_BEFORE_CAS, evict_and_insert);
        cr_assert_eq(thr_key_try(&kh, 1, &r), 1);
        thr_test_hook = NULL;
        const struct thr_slot *mine =
            shm_at(L->a->map.base, L->geo.slots_off); /* the client's map */
        cr_assert_eq((uint64_t)(g_hooked_slot - mine) + 1, at,
                     "the hook ran at the remembered slot's CAS");
        cr_assert_eq(THR_META_STATUS(atomic_load(&old->meta)), THR_SLOT_DEAD);
        cr_assert_eq(r.remaining, BU - 1, "hot idle past the TTL: a fresh key, %lu left",
                     (unsigned long)r.remaining);
        cr_assert_eq(tcount(&T, "l", THR_SLOT_LIVE, "hot", NULL), 1);
        cr_assert_neq(tkey_hint(&kh), at, "the new slot remembered");
        cr_assert_eq(thr_limiter_try(L, g_other, strlen(g_other), 0, &r), 1);
        cr_assert_eq(r.remaining, BU - 3, "%s kept its own debt only", g_other);
        /* now reclaim the old slot (every period done: no section is open) and let other keys
         * of the home fill the shard's slots, then use the handle again */
        tmaint(&T, "l", UINT64_MAX, NULL);
        char more[8][32];
        for (int i = 0; i < 8; i++) {
                char pre[8];
                snprintf(pre, sizeof(pre), "m%d_", i);
                tkey_at(&T.map, &geo, pa.home, pre, more[i], sizeof(more[i]));
                cr_assert_eq(thr_limiter_try(L, more[i], strlen(more[i]), 1, NULL), 1);
        }
        cr_assert_eq(thr_key_try(&kh, 4, &r), 1, "hot's last 4 tokens");
        cr_assert_eq(thr_key_try(&kh, 1, &r), 0, "and no more");
        cr_assert_eq(tcount(&T, "l", THR_SLOT_LIVE, "hot", NULL), 1);
        for (int i = 0; i < 8; i++) {
                cr_assert_eq(thr_limiter_try(L, more[i], strlen(more[i]), 0, &r), 1);
                cr_assert_eq(r.remaining, BU - 1, "%s charged once", more[i]);
        }
}

static void die(void *arg)
{
        (void)arg;
        raise(SIGKILL);
}

static void stop_here(void *arg)
{
        (void)arg;
        raise(SIGSTOP);
}

/* A child (a fork: the parent's handle copied) calls thr_key_try and is stopped by FN at PT. */
static pid_t child_at(struct thr_key *kh, enum thr_hook_point pt, void (*fn)(void *))
{
        fflush(NULL);
        pid_t pid = tfork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                hook_at(pt, fn);
                thr_key_try(kh, 1, NULL);
                _exit(3); /* the hook never ran */
        }
        return pid;
}

Test(key_review, a_process_killed_or_stopped_at_each_step_leaves_the_handle_exact)
{
        make(64, 1);
        struct thr_key kh;
        cr_assert_eq(thr_key_init(&kh, L, "hot", 3), 0);
        cr_assert_eq(thr_key_try(&kh, 1, NULL), 1, "inserted and remembered");
        static const enum thr_hook_point pts[] = {THR_HOOK_SECTION_ENTERED, THR_HOOK_CLOCK_READ,
                                                  THR_HOOK_APPLY_BEFORE_CAS};
        for (size_t i = 0; i < sizeof(pts) / sizeof(pts[0]); i++) {
                pid_t pid = child_at(&kh, pts[i], die);
                g_kid = pid;
                int ws = 0;
                cr_assert_eq(waitpid(pid, &ws, 0), pid);
                g_kid = 0;
                cr_assert(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL, "point %d: status %#x",
                          (int)pts[i], ws);
        }
        /* stopped at its CAS, holding its section: the handle still decides, exactly */
        pid_t pid = child_at(&kh, THR_HOOK_APPLY_BEFORE_CAS, stop_here);
        g_kid = pid;
        int ws = 0;
        cr_assert_eq(waitpid(pid, &ws, WUNTRACED), pid);
        cr_assert(WIFSTOPPED(ws));
        int got = 0;
        for (unsigned i = 0; i < 2 * BU; i++)
                got += thr_key_try(&kh, 1, NULL) == 1;
        cr_assert_eq(got, (int)BU - 1, "the killed and stopped children took nothing: %d", got);
        /* let it go: its CAS is from the TAT it read, which has moved: decided again */
        kill(pid, SIGCONT);
        cr_assert_eq(waitpid(pid, &ws, 0), pid);
        g_kid = 0;
        cr_assert(WIFEXITED(ws) && WEXITSTATUS(ws) == 3, "status %#x", ws);
        cr_assert_eq(thr_key_try(&kh, 1, NULL), 0, "the resumed child was denied");
        cr_assert_eq(tcount(&T, "l", THR_SLOT_LIVE, "hot", NULL), 1);
}

/* ---------------------------------------------------------------- one handle, churning keys */

#define CH_THREADS 2

static struct thr_key g_h;
static _Atomic int g_stop;
static _Atomic long g_admitted;
static _Atomic long g_errors;
static _Atomic int g_pause, g_parked;
static bool g_plain; /* the hammers call thr_limiter_try (the comparison run) */

static void *hammer(void *arg)
{
        (void)arg;
        long got = 0;
        while (!atomic_load(&g_stop)) {
                if (atomic_load(&g_pause)) { /* parked while the test churns alone */
                        atomic_fetch_add(&g_parked, 1);
                        while (atomic_load(&g_pause) && !atomic_load(&g_stop))
                                sched_yield();
                        atomic_fetch_sub(&g_parked, 1);
                        continue;
                }
                int rc =
                    g_plain ? thr_limiter_try(L, "hot", 3, 1, NULL) : thr_key_try(&g_h, 1, NULL);
                if (rc < 0)
                        atomic_fetch_add(&g_errors, 1);
                else
                        got += rc;
        }
        atomic_fetch_add(&g_admitted, got);
        return NULL;
}

/* One maintenance pass as the daemon runs it (evictions of idle keys, reclaims of slots whose
 * period is done), then a real grace period (the hammering threads' sections hold it back). */
static void churn_pass(uint64_t *done)
{
        struct shm_lim_snap sn = tsnap(&T, "l");
        struct shm_maint_args a = tmaint_args(&T, &sn, *done, tlock_me(T.a));
        struct shm_maint_stats st = {0};
        uint32_t cursor = 0;
        shm_table_maintain(&T.map, &sn, &a, &cursor, 1024, &st);
        tgp_wait(&T, done, 5, 100);
}

/*
 * CH_THREADS threads hammer one handle of "hot" while the test advances the manual clock past the
 * TTL now and then (hot evicted by the passes, its slot reclaimed) and inserts other keys of hot's
 * home, which take its old slots. Hot is admitted at most B + elapsed / T, never errs, and has
 * one live slot; the other keys are charged only by their own calls.
 */
static void churn_run(void);

/* The most a greedy caller could take at the arena's time now (the threads run at it, during
 * the step or after it): GCRA, T = TI, B = BU, on the model's TAT *TAT, counted in *N. */
static void greedy(uint64_t *tat, uint64_t *n)
{
        uint64_t now = shm_now_ns(shm_hdr(&T.map));
        if (*tat < now)
                *tat = now;
        while (*tat + TI <= now + BU * TI) {
                *tat += TI;
                (*n)++;
        }
}

Test(key_review, threads_sharing_a_handle_while_its_slot_is_evicted_and_reused)
{
        g_plain = false;
        churn_run();
}

/* The same churn through thr_limiter_try: the comparison (any excess here is not the handles'). */
Test(key_review, the_same_churn_through_the_plain_call)
{
        g_plain = true;
        churn_run();
}

static void churn_run(void)
{
        make(32, 1);
        cr_assert_eq(thr_key_init(&g_h, L, "hot", 3), 0);
        struct shm_probe pa;
        struct thr_table geo = tsnap(&T, "l").table;
        tprobe(&T.map, &geo, "hot", &pa);
        pthread_t t[CH_THREADS];
        atomic_store(&g_stop, 0);
        atomic_store(&g_admitted, 0);
        atomic_store(&g_errors, 0);
        atomic_store(&g_pause, 0);
        atomic_store(&g_parked, 0);
        for (int i = 0; i < CH_THREADS; i++)
                cr_assert_eq(pthread_create(&t[i], NULL, hammer, NULL), 0);
        uint64_t done = 0, elapsed = 0, x = 0x9e3779b97f4a7c15ull, model_tat = 0, model = 0;
        int reused = 0, other_calls = 0, other_wrong = 0;
        uint64_t nslots = (uint64_t)geo.nshards * geo.shard_slots;
        cr_assert_leq(nslots, 64);
        uint64_t past = 0; /* slots hot was remembered in (bit at - 1) */
        for (int step = 0; step < 400; step++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                uint64_t adv = x % 4 == 0 ? 2 * TTL : (x >> 8) % (2 * TI);
                /* every other step the threads are parked (before the clock moves, so that hot
                 * goes idle): the churn's keys then take hot's reclaimed slot before hot comes
                 * back (else hot mostly takes it again) */
                bool alone = step % 2;
                if (alone) {
                        atomic_store(&g_pause, 1);
                        while (atomic_load(&g_parked) < CH_THREADS)
                                sched_yield();
                }
                if (step == 0) /* the threads may have run at the first time too */
                        greedy(&model_tat, &model);
                cr_assert_eq(thr_clock_advance(T.a, adv), 0);
                elapsed += adv;
                greedy(&model_tat, &model);
                /* hot's slot now (the threads are parked, or only ever move it forward) */
                struct thr_slot *hs = NULL;
                uint64_t was = tcount(&T, "l", THR_SLOT_LIVE, "hot", &hs) == 1
                                   ? (uint64_t)(hs - tslot_at(&T, "l", 1)) + 1
                                   : 0;
                if (was)
                        past |= 1ull << (was - 1);
                churn_pass(&done);
                /* other keys of hot's home (8 when alone, 2 beside the threads): fresh names,
                 * so each is new and gets B - 1 */
                for (int k = 0; k < (alone ? 8 : 2); k++) {
                        char o[32], pre[16];
                        snprintf(pre, sizeof(pre), "o%d_", step * 8 + k);
                        tkey_at(&T.map, &geo, pa.home, pre, o, sizeof(o));
                        struct thr_result r;
                        int rc = thr_limiter_try(L, o, strlen(o), 1, &r);
                        if (rc == 1) {
                                other_calls++;
                                other_wrong += r.remaining != BU - 1;
                        }
                }
                for (uint64_t i = 0; i < nslots; i++) {
                        struct thr_slot *s = tslot_at(&T, "l", i + 1);
                        reused += (past >> i & 1) &&
                                  THR_META_STATUS(atomic_load(&s->meta)) == THR_SLOT_LIVE &&
                                  s->key[0] == 'o';
                }
                cr_assert_leq(tcount(&T, "l", THR_SLOT_LIVE, "hot", NULL), 1, "step %d", step);
                atomic_store(&g_pause, 0);
                usleep(200);
        }
        atomic_store(&g_stop, 1);
        for (int i = 0; i < CH_THREADS; i++)
                pthread_join(t[i], NULL);
        long adm = atomic_load(&g_admitted);
        uint64_t bound = BU + elapsed / TI;
        cr_log_info("hot admitted %ld of at most %lu (B + elapsed/T: %lu); its old slot taken "
                    "by another key %d times; %d other keys inserted",
                    adm, (unsigned long)model, (unsigned long)bound, reused, other_calls);
        cr_assert_eq(atomic_load(&g_errors), 0);
        cr_assert_leq((uint64_t)adm, bound, "hot admitted %ld > B + elapsed/T = %lu", adm,
                      (unsigned long)bound);
        cr_assert_leq((uint64_t)adm, model,
                      "hot admitted %ld > %lu, GCRA's greedy most at the clock's values (%s)", adm,
                      (unsigned long)model, g_plain ? "plain" : "handle");
        cr_assert_eq(other_wrong, 0, "another key was charged by hot's handle");
        cr_assert_gt(reused, 0, "the scenario happened: a slot hot was remembered in was reused");
        cr_assert_leq(tcount(&T, "l", THR_SLOT_LIVE, "hot", NULL), 1);
}

/* ---------------------------------------------------------------- other kinds, other states */

static void twin_of_the_plain_call(const char *name)
{
        thr_limiter *l = tlim_kept(&T, name);
        struct thr_key kh;
        cr_assert_eq(thr_key_init(&kh, l, "by-handle", 9), 0);
        uint64_t x = 0x2545f4914f6cdd1dull;
        int ok = 0, no = 0;
        for (int i = 0; i < 600; i++) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                uint64_t cost = x % 8;
                struct thr_result a, b;
                memset(&a, 0x5a, sizeof(a));
                memset(&b, 0x5a, sizeof(b));
                int ra = thr_key_try(&kh, cost, &a);
                int rb = thr_limiter_try(l, "plain-twin", 10, cost, &b);
                cr_assert_eq(ra, rb, "%s step %d cost %lu: %d by handle, %d plain", name, i,
                             (unsigned long)cost, ra, rb);
                if (ra >= 0)
                        cr_assert_eq(memcmp(&a, &b, sizeof(a)), 0, "%s step %d: results differ",
                                     name, i);
                ok += ra == 1;
                no += ra == 0;
                if (x % 3 == 0)
                        cr_assert_eq(thr_clock_advance(T.a, (x >> 9) % (300 * MS)), 0);
        }
        cr_log_info("%s: %d admitted, %d denied", name, ok, no);
        cr_assert_gt(ok, 0);
        cr_assert_eq(tcount(&T, name, THR_SLOT_LIVE, "by-handle", NULL), 1);
}

Test(key_review, window_and_budget_limiters_through_a_handle_are_the_plain_call)
{
        struct shm_limiter_spec s[2];
        s[0] = tspec("w", 5, SEC, 5, 5);
        s[0].kind = THR_KIND_WINDOW;
        s[0].capacity = 64;
        s[1] = tspec_budget("b", 40);
        s[1].capacity = 64;
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 2);
        cr_assert_eq(thr_clock_advance(T.a, SEC), 0);
        twin_of_the_plain_call("w");
        twin_of_the_plain_call("b");
}

Test(key_review, a_removed_limiter_and_a_closed_sibling)
{
        make(64, 1);
        thr_limiter *l2 = tlim(&T, "l");
        struct thr_key kh, k2;
        cr_assert_eq(thr_key_init(&kh, L, "hot", 3), 0);
        cr_assert_eq(thr_key_init(&k2, l2, "hot", 3), 0);
        cr_assert_eq(thr_key_try(&k2, 2, NULL), 1);
        thr_limiter_close(l2); /* k2 is dead with it; kh is L's */
        struct thr_result r;
        cr_assert_eq(thr_key_try(&kh, 1, &r), 1);
        cr_assert_eq(r.remaining, BU - 3, "one key through both limiter handles");
        /* a reload that removes the limiter marks its entry RETIRED */
        struct thr_dir_entry *de = L->de;
        atomic_store(&de->state, THR_DIR_RETIRED);
        cr_assert_eq(thr_key_try(&kh, 1, NULL), -EIDRM);
        cr_assert_eq(thr_limiter_try(L, "hot", 3, 1, NULL), -EIDRM);
        atomic_store(&de->state, THR_DIR_LIVE);
        cr_assert_eq(thr_key_try(&kh, 1, &r), 1, "back");
        cr_assert_eq(r.remaining, BU - 4);
}

/* A long key's handle keeps its stored form (prefix and digest): either part rewritten is
 * another stored key, which must not be inserted or charged. */
Test(key_review, a_long_keys_handle_scribbled_in_its_digest_or_prefix)
{
        make(64, 1);
        char k[80];
        memset(k, 'q', sizeof(k));
        struct thr_key kh;
        cr_assert_eq(thr_key_init(&kh, L, k, sizeof(k)), 0);
        cr_assert_eq(thr_key_try(&kh, 1, NULL), 1);
        const int at[] = {0, THR_KEY_PREFIX - 1, THR_KEY_PREFIX, THR_KEY_INLINE - 1};
        for (size_t i = 0; i < sizeof(at) / sizeof(at[0]); i++) {
                struct thr_key bad = kh;
                thr_key_priv(&bad)->key[at[i]] ^= 0x20;
                int rc = thr_key_try(&bad, 1, NULL);
                cr_assert_neq(rc, 1, "byte %d of the stored form rewritten: admitted", at[i]);
                cr_assert_eq(shm_table_count(T.map.base, ttable(&T, "l")), 1,
                             "byte %d: a key inserted (rc %d)", at[i], rc);
        }
        cr_assert_eq(thr_key_try(&kh, BU - 1, NULL), 1, "the key's own tokens untouched");
}

/* ---------------------------------------------------------------- the arena scribbled */

static struct thr_slot *g_scrib_slot; /* the test's own mapping of hot's slot */
static _Atomic int g_scrib_stop;

static void *scribbler(void *arg)
{
        uint64_t x = (uint64_t)(uintptr_t)arg | 1;
        struct thr_slot *s = g_scrib_slot;
        while (!atomic_load(&g_scrib_stop)) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                switch (x % 4) {
                case 0: /* the meta word: status, generation or tag */
                        atomic_fetch_xor(&s->meta, 1ull << (x >> 8) % 64);
                        break;
                case 1:
                        s->key_len = (uint8_t)(x >> 16);
                        break;
                case 2:
                        s->key[(x >> 8) % THR_KEY_INLINE] ^= (uint8_t)(x >> 20) | 1;
                        break;
                default:
                        sched_yield();
                }
        }
        return NULL;
}

/*
 * A client scribbles the meta word, length and key bytes of the slot a handle remembers while
 * threads use the handle: no crash, no error but the ones a plain try can give, and another key
 * (its own slot, never scribbled) never charged by the handle.
 */
Test(key_review, the_remembered_slot_scribbled_under_a_handle)
{
        make(64, 1);
        cr_assert_eq(thr_key_init(&g_h, L, "hot", 3), 0);
        cr_assert_eq(thr_key_try(&g_h, 1, NULL), 1);
        cr_assert_eq(thr_limiter_try(L, "victim", 6, 2, NULL), 1);
        struct thr_slot *v = NULL;
        cr_assert_eq(tcount(&T, "l", THR_SLOT_LIVE, "victim", &v), 1);
        uint64_t v_state = atomic_load(&v->state), v_meta = atomic_load(&v->meta);
        g_scrib_slot = tslot_at(&T, "l", tkey_hint(&g_h));
        atomic_store(&g_stop, 0);
        atomic_store(&g_pause, 0);
        atomic_store(&g_parked, 0);
        atomic_store(&g_admitted, 0);
        atomic_store(&g_errors, 0);
        atomic_store(&g_scrib_stop, 0);
        pthread_t t[CH_THREADS], sc;
        cr_assert_eq(pthread_create(&sc, NULL, scribbler, (void *)0x1234), 0);
        for (int i = 0; i < CH_THREADS; i++)
                cr_assert_eq(pthread_create(&t[i], NULL, hammer, NULL), 0);
        for (int i = 0; i < 200; i++) {
                cr_assert_eq(thr_clock_advance(T.a, TI / 4), 0);
                usleep(1000);
        }
        atomic_store(&g_scrib_stop, 1);
        pthread_join(sc, NULL);
        atomic_store(&g_stop, 1);
        for (int i = 0; i < CH_THREADS; i++)
                pthread_join(t[i], NULL);
        cr_log_info("admitted %ld, errors %ld, table %lu keys", atomic_load(&g_admitted),
                    atomic_load(&g_errors),
                    (unsigned long)shm_table_count(T.map.base, ttable(&T, "l")));
        cr_assert_eq(atomic_load(&v->state), v_state, "victim charged");
        cr_assert_eq(atomic_load(&v->meta), v_meta, "victim's slot changed");
}
