/*
 * test_multiproc.c - proves that real fork()ed processes sharing one arena never admit more than
 * GCRA allows: exactly on a manual clock (one key, many keys, and with deciders stopped between
 * their read and their CAS), within the bound on the real clock; that concurrent inserts of the
 * same new keys leave one live slot per key (raced, and made certain by blocking the inserters on
 * the shard lock); and that processes SIGKILLed at random moments, some inside the insert path
 * holding a shard lock, leave a table with no duplicate keys, repaired shards, usable lockes and
 * no key charged beyond its burst. Deaths at chosen points of an insert are emulated exactly.
 *
 * Children report through a shared anonymous mapping and end with _exit(); they never call a
 * Criterion assert. The parent drives the arena clock between rounds; no sleep stands for time.
 */
#include <criterion/criterion.h>
#include <criterion/logging.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "helpers.h"

#define MS       1000000ull
#define MAX_KIDS 16

/* ---------------------------------------------------------------- fixtures */

static struct tarena T;
static pid_t g_kids[MAX_KIDS];
static pid_t g_parent; /* the test process, as its children see it */
static thr_limiter *g_lims[4];

/* A limiter handle of T, closed by the teardown. */
static thr_limiter *lim(const char *name)
{
        for (int i = 0; i < 4; i++)
                if (!g_lims[i])
                        return g_lims[i] = tlim(&T, name);
        cr_assert_fail("too many limiter handles");
        return NULL;
}

/* Kill whatever children a failed test left behind, then drop the arena. */
static void teardown(void)
{
        for (int i = 0; i < MAX_KIDS; i++) {
                if (g_kids[i] > 0) {
                        kill(g_kids[i], SIGKILL);
                        waitpid(g_kids[i], NULL, 0);
                }
                g_kids[i] = 0;
        }
        for (int i = 0; i < 4; i++) {
                thr_limiter_close(g_lims[i]);
                g_lims[i] = NULL;
        }
        tarena_free(&T);
}

TestSuite(multiproc, .fini = teardown, .timeout = 240);

/* What a child reports when something went wrong: the first message wins. */
struct errbox {
        _Atomic int n;
        char msg[256];
};

static void *shared_alloc(size_t size)
{
        void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(p, MAP_FAILED, "mmap shared: %s", strerror(errno));
        return p;
}

__attribute__((format(printf, 2, 3), noreturn)) static void child_fail(struct errbox *eb,
                                                                       const char *fmt, ...)
{
        if (atomic_fetch_add(&eb->n, 1) == 0) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(eb->msg, sizeof(eb->msg), fmt, ap);
                va_end(ap);
        }
        _exit(3);
}

/* Fork a child running FN(ARG, IDX), which must end with _exit (we add one). */
static pid_t spawn(void (*fn)(void *, int), void *arg, int idx)
{
        g_parent = getpid();
        pid_t pid = tfork();
        cr_assert_geq(pid, 0, "fork: %s", strerror(errno));
        if (pid == 0) {
                fn(arg, idx);
                _exit(0);
        }
        g_kids[idx] = pid;
        return pid;
}

/* Reap every child of g_kids[0..n); each must have exited with status 0. */
static void reap_all(int n, const struct errbox *eb)
{
        for (int i = 0; i < n; i++) {
                int st = 0;
                cr_assert_eq(waitpid(g_kids[i], &st, 0), g_kids[i], "waitpid: %s", strerror(errno));
                g_kids[i] = 0;
                cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                          "child %d ended with status %#x: %s", i, st, eb->msg);
        }
}

/* Child side: wait until *W >= V (yield, then doze: this is synchronisation, not timing). */
static void child_await(_Atomic uint64_t *w, uint64_t v)
{
        for (unsigned spin = 0; atomic_load_explicit(w, memory_order_acquire) < v; spin++) {
                if (spin < 2000) {
                        sched_yield();
                } else {
                        struct timespec ts = {0, 20000};
                        nanosleep(&ts, NULL);
                        if (getppid() != g_parent)
                                _exit(4); /* orphaned by a failed test */
                }
        }
}

/* Parent side: wait until *C >= TARGET, failing if a child of g_kids[0..n) ends meanwhile. */
static void parent_await(_Atomic uint64_t *c, uint64_t target, int n, const struct errbox *eb)
{
        struct timespec t0, t;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (unsigned spin = 0; atomic_load_explicit(c, memory_order_acquire) < target; spin++) {
                sched_yield();
                if (spin % 512)
                        continue;
                for (int i = 0; i < n; i++) {
                        /* Peek (WNOWAIT): a child may end right after its last increment. */
                        siginfo_t si = {0};
                        if (g_kids[i] > 0 &&
                            waitid(P_PID, (id_t)g_kids[i], &si, WEXITED | WNOHANG | WNOWAIT) == 0 &&
                            si.si_pid == g_kids[i] &&
                            (si.si_code != CLD_EXITED || si.si_status != 0))
                                cr_assert_fail("child %d ended early (code %d status %d): %s", i,
                                               si.si_code, si.si_status, eb->msg);
                }
                clock_gettime(CLOCK_MONOTONIC, &t);
                cr_assert_lt(t.tv_sec - t0.tv_sec, 60, "children stuck (safety timeout)");
        }
}

static uint64_t rng_next(uint64_t *s)
{
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        return *s;
}

static uint64_t seed_from_env(void)
{
        const char *e = getenv("THR_TEST_SEED");
        if (e)
                return strtoull(e, NULL, 0) | 1;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return ((uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid()) | 1;
}

/* ---------------------------------------------------------------- arena inspection */

static struct thr_dir_entry *dir_entry(const char *name)
{
        int idx = shm_dir_find(&T.map, name);
        cr_assert_geq(idx, 0, "limiter %s in the directory", name);
        return (struct thr_dir_entry *)shm_at(T.map.base, shm_hdr(&T.map)->dir_off) + idx;
}

static struct thr_table *table_of(const char *name)
{
        return shm_at(T.map.base, dir_entry(name)->table_off);
}

static const struct thr_params *params_of(const char *name)
{
        return shm_at(T.map.base, atomic_load(&dir_entry(name)->params_off));
}

static struct thr_slot *slots_of(const struct thr_table *tb)
{
        return shm_at(T.map.base, tb->slots_off);
}

static uint64_t nslots(const struct thr_table *tb)
{
        return (uint64_t)tb->nshards * tb->shard_slots;
}

/* The shard a key lands in, as table.c's probe_init computes it. */
static uint32_t key_shard(const struct thr_table *tb, const void *key, size_t len)
{
        uint64_t h = shm_hash(shm_hdr(&T.map)->hash_key, key, len);
        return (uint32_t)(h >> 32) & (tb->nshards - 1);
}

static struct thr_slot *find_slot(const struct thr_table *tb, const char *key)
{
        uint64_t h = shm_hash(shm_hdr(&T.map)->hash_key, key, strlen(key));
        return shm_table_lookup(T.map.base, tb, h, key, (uint32_t)strlen(key));
}

struct wkey {
        uint32_t len;
        char key[THR_KEY_MAX + 1];
        uint64_t state;
};

static int wkey_cmp(const void *a, const void *b)
{
        const struct wkey *x = a, *y = b;
        if (x->len != y->len)
                return x->len < y->len ? -1 : 1;
        return memcmp(x->key, y->key, x->len);
}

/*
 * Walk every slot: the LIVE ones into OUT (sorted), and assert that no key has two live slots and
 * that the walk agrees with shm_table_count. The table's live counter is a capacity reservation:
 * never below the walk (or the hard cap could be passed), above it only by units that processes
 * killed mid-insert took; EXACT says no process died, so it must equal the walk. Either way it is
 * exact after shm_table_reconcile (which the daemon runs; there is none here). Returns the number
 * of live slots; *BUSY gets the number of BUSY slots.
 */
static size_t walk_live(struct thr_table *tb, struct wkey *out, size_t max, size_t *busy,
                        bool exact)
{
        const struct thr_slot *s = slots_of(tb);
        size_t n = 0;
        *busy = 0;
        for (uint64_t i = 0; i < nslots(tb); i++) {
                uint64_t meta = atomic_load_explicit(&s[i].meta, memory_order_acquire);
                unsigned st = THR_META_STATUS(meta);
                *busy += st == THR_SLOT_BUSY;
                if (st != THR_SLOT_LIVE)
                        continue;
                cr_assert_lt(n, max, "more live slots than keys ever used");
                /* these tests' keys are short: stored whole (layout.h) */
                cr_assert_leq(s[i].key_len, THR_KEY_INLINE, "slot %lu key length",
                              (unsigned long)i);
                out[n].len = s[i].key_len;
                memcpy(out[n].key, s[i].key, s[i].key_len);
                out[n].key[s[i].key_len] = '\0';
                out[n].state = atomic_load(&s[i].state);
                n++;
        }
        qsort(out, n, sizeof(*out), wkey_cmp);
        for (size_t i = 1; i < n; i++)
                cr_assert_neq(wkey_cmp(&out[i - 1], &out[i]), 0, "two live slots for key '%s'",
                              out[i].key);
        cr_assert_eq(shm_table_count(T.map.base, tb), (int64_t)n, "shm_table_count vs walk");
        uint64_t live = atomic_load(&tb->live);
        cr_assert_geq(live, n, "table live counter %lu below the walk %zu", (unsigned long)live, n);
        if (exact)
                cr_assert_eq(live, n, "table live counter vs walk, no process died");
        struct thr_table geo = *tb;
        cr_assert_eq(shm_table_reconcile(&T.map, (uint64_t)((char *)tb - (char *)T.map.base), &geo,
                                         shm_lock_daemon(0)),
                     0);
        cr_assert_eq(atomic_load(&tb->live), n, "table live counter vs walk after reconcile");
        return n;
}

/* Tokens a key has consumed since time NOW_NS on a limiter whose keys start full (initial = B). */
static uint64_t consumed(const struct thr_params *p, uint64_t state, uint64_t now_ns)
{
        if (state == THR_TAT_FRESH)
                return 0;
        uint64_t now = now_ns * p->k;
        cr_assert_geq(state, now, "TAT behind the unmoved clock");
        cr_assert_eq((state - now) % p->t_units, 0, "TAT is not a whole number of tokens");
        return (state - now) / p->t_units;
}

/* ---------------------------------------------------------------- the reference model */

/*
 * A token bucket written independently of GCRA: time in units of 1/N ns (so T = P units exactly),
 * credit capped at B*P, one token per P of credit. At a fixed time, ATTEMPTS requests admit
 * min(ATTEMPTS, credit / P) whatever their interleaving across processes.
 */
struct model {
        uint64_t n, p, b; /* rate N per P ns, burst B */
        uint64_t credit;  /* 1/N ns */
        uint64_t last_ns;
        bool started;
};

static void model_init(struct model *m, uint64_t n, uint64_t p, uint64_t b)
{
        *m = (struct model){.n = n, .p = p, .b = b, .credit = b * p};
}

static uint64_t model_round(struct model *m, uint64_t now_ns, uint64_t attempts)
{
        if (m->started) {
                __uint128_t c = (__uint128_t)m->credit + (__uint128_t)(now_ns - m->last_ns) * m->n;
                m->credit = c > (__uint128_t)m->b * m->p ? m->b * m->p : (uint64_t)c;
        }
        m->started = true;
        m->last_ns = now_ns;
        uint64_t tokens = m->credit / m->p;
        uint64_t got = attempts < tokens ? attempts : tokens;
        m->credit -= got * m->p;
        return got;
}

/* ---------------------------------------------------------------- (a) one key, rounds */

#define A_KIDS   4
#define A_ROUNDS 80
#define A_TRIES  120 /* per child per round: 4 * 120 > B, every round runs the bucket dry */

struct rounds_ctl {
        struct errbox eb;
        _Atomic uint64_t round; /* round the children may run (1-based) */
        _Atomic uint64_t done;  /* children that finished their round, cumulative */
        _Atomic uint64_t per_round[A_ROUNDS];
        _Atomic uint64_t per_kid[A_KIDS];
        thr_limiter *lim;
};

static void one_key_child(void *arg, int idx)
{
        struct rounds_ctl *c = arg;
        for (uint64_t r = 1; r <= A_ROUNDS; r++) {
                child_await(&c->round, r);
                uint64_t got = 0;
                for (int i = 0; i < A_TRIES; i++) {
                        int rc = thr_limiter_try(c->lim, "hot", 3, 1, NULL);
                        if (rc < 0)
                                child_fail(&c->eb, "kid %d: try: %s", idx, thr_strerror(rc));
                        got += (uint64_t)rc;
                }
                atomic_fetch_add(&c->per_round[r - 1], got);
                atomic_fetch_add(&c->per_kid[idx], got);
                atomic_fetch_add_explicit(&c->done, 1, memory_order_release);
        }
}

Test(multiproc, one_key_rounds_admit_exactly_gcra)
{
        /* T = 10/3 ms: not a whole number of ns, so the exact time scale is exercised too. A
         * large burst makes each round hundreds of admissions the processes race for. */
        const uint64_t N = 3, P = 10 * MS, B = 200;
        struct shm_limiter_spec s = tspec("one", N, P, B, B);
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        struct rounds_ctl *c = shared_alloc(sizeof(*c));
        c->lim = lim("one");
        uint64_t seed = seed_from_env(), rng = seed;
        cr_log_info("one_key_rounds: seed %#llx (THR_TEST_SEED to replay)",
                    (unsigned long long)seed);
        cr_assert_eq(thr_clock_advance(T.a, 7 * SEC), 0);

        for (int i = 0; i < A_KIDS; i++)
                spawn(one_key_child, c, i);
        struct model m;
        model_init(&m, N, P, B);
        uint64_t t_first = 0, t_last = 0, expect_total = 0, expect[A_ROUNDS];
        for (uint64_t r = 0; r < A_ROUNDS; r++) {
                /* Steps of at most (B-1)*T: the bucket never overflows between rounds, so the
                 * total must also be the closed form B + floor(elapsed / T). */
                if (r > 0)
                        thr_clock_advance(T.a, rng_next(&rng) % ((B - 1) * P / N + 1));
                thr_clock_now(T.a, &t_last);
                if (r == 0)
                        t_first = t_last;
                expect[r] = model_round(&m, t_last, (uint64_t)A_KIDS * A_TRIES);
                expect_total += expect[r];
                atomic_store_explicit(&c->round, r + 1, memory_order_release);
                parent_await(&c->done, (r + 1) * A_KIDS, A_KIDS, &c->eb);
        }
        reap_all(A_KIDS, &c->eb);

        uint64_t total = 0;
        for (int r = 0; r < A_ROUNDS; r++)
                cr_expect_eq(atomic_load(&c->per_round[r]), expect[r],
                             "round %d: admitted %lu, GCRA allows %lu", r,
                             (unsigned long)atomic_load(&c->per_round[r]),
                             (unsigned long)expect[r]);
        for (int i = 0; i < A_KIDS; i++)
                total += atomic_load(&c->per_kid[i]);
        uint64_t closed = B + (t_last - t_first) * N / P;
        cr_assert_eq(expect_total, closed, "model agrees with B + floor(elapsed/T)");
        cr_assert_eq(total, closed, "admitted %lu across %d processes, GCRA allows %lu",
                     (unsigned long)total, A_KIDS, (unsigned long)closed);
        /* The key's state: every admission moved the TAT by exactly T from the first round. */
        const struct thr_params *p = params_of("one");
        struct thr_slot *sl = find_slot(table_of("one"), "hot");
        cr_assert_not_null(sl);
        cr_assert_eq(atomic_load(&sl->state), t_first * p->k + total * p->t_units, "TAT");
        munmap(c, sizeof(*c));
}

/*
 * Lost updates made likely: the parent stops a random child at random moments (often between its
 * load of the state and its CAS) and lets the others move the TAT on before resuming it. A
 * decision that published without comparing against the state it read would roll the TAT back
 * over their admissions. Burst large, clock fixed: every try admits, so the TAT must have moved
 * by exactly one T per admission the children counted.
 */
#define P_KIDS   4
#define P_CYCLES 100

struct preempt_ctl {
        struct errbox eb;
        _Atomic uint64_t stop;
        _Atomic uint64_t admitted[P_KIDS];
        thr_limiter *lim;
};

static void preempt_child(void *arg, int idx)
{
        struct preempt_ctl *c = arg;
        uint64_t got = 0;
        while (!atomic_load_explicit(&c->stop, memory_order_relaxed)) {
                int rc = thr_limiter_try(c->lim, "contended", 9, 1, NULL);
                if (rc != 1)
                        child_fail(&c->eb, "kid %d: try: %d", idx, rc);
                got++;
        }
        atomic_store(&c->admitted[idx], got);
}

Test(multiproc, a_preempted_decider_never_rolls_the_state_back)
{
        const uint64_t B = 100000000;
        struct shm_limiter_spec s = tspec("pre", 1, SEC, B, B);
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        struct preempt_ctl *c = shared_alloc(sizeof(*c));
        c->lim = lim("pre");
        uint64_t rng = seed_from_env();
        for (int i = 0; i < P_KIDS; i++)
                spawn(preempt_child, c, i);
        for (int cycle = 0; cycle < P_CYCLES; cycle++) {
                pid_t pid = g_kids[rng_next(&rng) % P_KIDS];
                int st;
                struct timespec ts = {0, (long)(rng_next(&rng) % 100000) + 20000};
                cr_assert_eq(kill(pid, SIGSTOP), 0);
                cr_assert_eq(waitpid(pid, &st, WUNTRACED), pid);
                cr_assert(WIFSTOPPED(st), "status %#x: %s", st, c->eb.msg);
                nanosleep(&ts, NULL); /* the others decide meanwhile */
                cr_assert_eq(kill(pid, SIGCONT), 0);
                nanosleep(&ts, NULL);
        }
        atomic_store(&c->stop, 1);
        reap_all(P_KIDS, &c->eb);
        uint64_t counted = 0, now;
        for (int i = 0; i < P_KIDS; i++)
                counted += atomic_load(&c->admitted[i]);
        thr_clock_now(T.a, &now);
        struct thr_slot *sl = find_slot(table_of("pre"), "contended");
        cr_assert_not_null(sl);
        uint64_t used = consumed(params_of("pre"), atomic_load(&sl->state), now);
        cr_assert_lt(counted, B, "the burst never ran out (raise B)");
        cr_assert_eq(used, counted, "the TAT accounts for %lu admissions, the children made %lu",
                     (unsigned long)used, (unsigned long)counted);
}

/* ---------------------------------------------------------------- (b) many keys, rounds */

#define B_KIDS   4
#define B_KEYS   200
#define B_ROUNDS 40
#define B_WAVES  7 /* key i joins in round i % B_WAVES */

struct keys_ctl {
        struct errbox eb;
        _Atomic uint64_t round;
        _Atomic uint64_t done;
        _Atomic uint64_t per_key[B_KEYS];
        thr_limiter *lim;
};

static void many_keys_child(void *arg, int idx)
{
        struct keys_ctl *c = arg;
        char key[32];
        for (uint64_t r = 1; r <= B_ROUNDS; r++) {
                child_await(&c->round, r);
                for (int j = 0; j < B_KEYS; j++) {
                        int k = idx % 2 ? j : B_KEYS - 1 - j; /* pairs race on each key */
                        if ((uint64_t)(k % B_WAVES) > r - 1)
                                continue;
                        int len = snprintf(key, sizeof(key), "key-%03d", k);
                        int rc = thr_limiter_try(c->lim, key, (size_t)len, 1, NULL);
                        if (rc < 0)
                                child_fail(&c->eb, "kid %d: try %s: %s", idx, key,
                                           thr_strerror(rc));
                        if (rc == 1)
                                atomic_fetch_add_explicit(&c->per_key[k], 1, memory_order_relaxed);
                }
                atomic_fetch_add_explicit(&c->done, 1, memory_order_release);
        }
}

Test(multiproc, many_keys_rounds_exact_per_key)
{
        const uint64_t N = 7, P = 50 * MS, B = 8; /* T = 50/7 ms */
        struct shm_limiter_spec s = tspec("many", N, P, B, B);
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        struct keys_ctl *c = shared_alloc(sizeof(*c));
        c->lim = lim("many");
        uint64_t seed = seed_from_env(), rng = seed;
        cr_log_info("many_keys_rounds: seed %#llx", (unsigned long long)seed);

        for (int i = 0; i < B_KIDS; i++)
                spawn(many_keys_child, c, i);
        static struct model m[B_KEYS];
        static uint64_t expect[B_KEYS], last_got[B_KEYS];
        for (int k = 0; k < B_KEYS; k++) {
                model_init(&m[k], N, P, B);
                expect[k] = 0;
        }
        uint64_t now = 0;
        for (uint64_t r = 0; r < B_ROUNDS; r++) {
                /* Steps up to 12 T: sometimes the bucket fills up and the surplus is lost. */
                if (r > 0)
                        thr_clock_advance(T.a, rng_next(&rng) % (12 * P / N + 1));
                thr_clock_now(T.a, &now);
                for (int k = 0; k < B_KEYS; k++)
                        if ((uint64_t)(k % B_WAVES) <= r) {
                                last_got[k] = model_round(&m[k], now, B_KIDS);
                                expect[k] += last_got[k];
                        }
                atomic_store_explicit(&c->round, r + 1, memory_order_release);
                parent_await(&c->done, (r + 1) * B_KIDS, B_KIDS, &c->eb);
        }
        reap_all(B_KIDS, &c->eb);

        const struct thr_params *p = params_of("many");
        struct thr_table *tb = table_of("many");
        for (int k = 0; k < B_KEYS; k++) {
                char key[32];
                snprintf(key, sizeof(key), "key-%03d", k);
                cr_assert_eq(atomic_load(&c->per_key[k]), expect[k],
                             "%s: admitted %lu, GCRA allows %lu", key,
                             (unsigned long)atomic_load(&c->per_key[k]), (unsigned long)expect[k]);
                struct thr_slot *sl = find_slot(tb, key);
                cr_assert_not_null(sl, "%s is in the table", key);
                /* The model's remaining credit is the GCRA's B*T - (TAT - now) when the last round
                 * admitted something (the TAT is then ahead of now). */
                if (last_got[k]) {
                        uint64_t debt_units = (B * P - m[k].credit) / (N / p->k);
                        cr_assert_eq(atomic_load(&sl->state), now * p->k + debt_units,
                                     "%s: TAT agrees with the model", key);
                }
        }
        static struct wkey keys[B_KEYS + 1];
        size_t busy;
        cr_assert_eq(walk_live(tb, keys, B_KEYS + 1, &busy, true), B_KEYS);
        cr_assert_eq(busy, 0);
        munmap(c, sizeof(*c));
}

/* ---------------------------------------------------------------- (c) real clock bound */

#define C_KIDS 4

struct real_ctl {
        struct errbox eb;
        _Atomic uint64_t go;
        uint64_t deadline_ns; /* arena time at which children stop */
        int nkeys;
        thr_limiter *lim;
        _Atomic uint64_t admitted[100];
        _Atomic uint64_t attempts[100];
};

static void real_clock_child(void *arg, int idx)
{
        struct real_ctl *c = arg;
        uint64_t got[100] = {0}, tried[100] = {0}, now = 0;
        char key[32];
        child_await(&c->go, 1);
        thr_arena *a = T.a;
        for (uint64_t i = (uint64_t)idx * 37;; i++) {
                thr_clock_now(a, &now);
                if (now >= c->deadline_ns)
                        break;
                int k = (int)(i % (uint64_t)c->nkeys);
                int len = snprintf(key, sizeof(key), "rk%d", k);
                int rc = thr_limiter_try(c->lim, key, (size_t)len, 1, NULL);
                if (rc < 0)
                        child_fail(&c->eb, "kid %d: try: %s", idx, thr_strerror(rc));
                got[k] += (uint64_t)rc;
                tried[k]++;
        }
        for (int k = 0; k < c->nkeys; k++) {
                atomic_fetch_add(&c->admitted[k], got[k]);
                atomic_fetch_add(&c->attempts[k], tried[k]);
        }
}

/*
 * The bound, derived: every admission moves the TAT to max(TAT, now) + T, and a fresh key starts
 * at TAT = now (initial = B), so after n admissions TAT >= t_first + n*T, where t_first >= t0 is
 * the clock of the first admission (t0: the arena clock the parent read before it let any child
 * start). The n-th admission, at a clock reading t <= t1 (t1: read after every child exited), was
 * admitted, so TAT - t <= B*T. Hence t0 + n*T <= t1 + B*T, n <= B + (t1 - t0)/T, and n being an
 * integer, n <= B + floor((t1 - t0) / T). Every process reads the same CLOCK_MONOTONIC as the
 * parent and T = 1 ms is a whole number of ns, so no rounding token is needed.
 * The lower bound is not timing either: the first B decisions on a fresh key all admit. The client
 * reports a denial only on a clock read after the state it judges (client.c, op_apply), so the
 * now_i a denial is judged with is at least the now_j of every admission whose TAT it sees; by
 * induction TAT_n <= now_i + n*T after n admissions, and with n < B the attempt's new TAT - now_i
 * <= B*T: it is admitted (or its CAS fails and it decides again on a newer state). So admitted >=
 * min(attempts, B) per key.
 */
static void real_clock_run(int nkeys)
{
        const uint64_t N = 1000, P = SEC, B = 10;
        struct shm_limiter_spec s = tspec("real", N, P, B, B);
        tarena_make(&T, THR_CLOCK_MONOTONIC, SHM_HUGE_OFF, &s, 1);
        struct real_ctl *c = shared_alloc(sizeof(*c));
        c->lim = lim("real");
        c->nkeys = nkeys;
        for (int i = 0; i < C_KIDS; i++)
                spawn(real_clock_child, c, i);
        uint64_t t0, t1;
        thr_clock_now(T.a, &t0);
        c->deadline_ns = t0 + SEC;
        atomic_store_explicit(&c->go, 1, memory_order_release);
        reap_all(C_KIDS, &c->eb);
        thr_clock_now(T.a, &t1);
        uint64_t bound = B + (t1 - t0) * N / P, total = 0;
        for (int k = 0; k < nkeys; k++) {
                uint64_t got = atomic_load(&c->admitted[k]), tried = atomic_load(&c->attempts[k]);
                cr_assert_leq(got, bound, "key %d: %lu admitted in %lu ns, bound %lu", k,
                              (unsigned long)got, (unsigned long)(t1 - t0), (unsigned long)bound);
                cr_assert_geq(got, tried < B ? tried : B, "key %d: %lu of %lu attempts admitted", k,
                              (unsigned long)got, (unsigned long)tried);
                total += got;
        }
        cr_log_info("real clock, %d keys: %lu admitted in %.3f s (bound per key %lu)", nkeys,
                    (unsigned long)total, (double)(t1 - t0) / SEC, (unsigned long)bound);
        munmap(c, sizeof(*c));
}

Test(multiproc, real_clock_one_key_within_bound)
{
        real_clock_run(1);
}

Test(multiproc, real_clock_100_keys_within_bound)
{
        real_clock_run(100);
}

/* ---------------------------------------------------------------- (d) concurrent inserts */

#define D_KIDS   6
#define D_KEYS   500
#define D_PASSES 3

struct insert_ctl {
        struct errbox eb;
        _Atomic uint64_t ready;
        _Atomic uint64_t go;
        _Atomic uint64_t arrived; /* per-key barrier: arrivals, cumulative */
        _Atomic uint64_t gen;     /* per-key barrier: keys released */
        _Atomic uint64_t per_key[D_KEYS];
        thr_limiter *lim;
};

/*
 * A barrier before each new key, so that the processes try to insert it at the same moment: the
 * last to arrive releases the others, which spin (yielding now and then, as there are more
 * processes than cores) and race it into the insert path.
 */
static void key_barrier(struct insert_ctl *c, uint64_t k)
{
        uint64_t mine = atomic_fetch_add(&c->arrived, 1) + 1;
        if (mine == (k + 1) * D_KIDS) {
                atomic_store_explicit(&c->gen, k + 1, memory_order_release);
                return;
        }
        for (unsigned spin = 0; atomic_load_explicit(&c->gen, memory_order_acquire) <= k; spin++)
                if (spin % 1024 == 1023)
                        sched_yield();
}

static void insert_child(void *arg, int idx)
{
        struct insert_ctl *c = arg;
        char key[32];
        atomic_fetch_add(&c->ready, 1);
        child_await(&c->go, 1);
        for (int pass = 0; pass < D_PASSES; pass++) {
                for (int k = 0; k < D_KEYS; k++) {
                        if (pass == 0)
                                key_barrier(c, (uint64_t)k);
                        int len = snprintf(key, sizeof(key), "new-%03d", k);
                        int rc = thr_limiter_try(c->lim, key, (size_t)len, 1, NULL);
                        if (rc != 1)
                                child_fail(&c->eb, "kid %d: %s: %d (%s)", idx, key, rc,
                                           rc < 0 ? thr_strerror(rc) : "denied");
                        atomic_fetch_add_explicit(&c->per_key[k], 1, memory_order_relaxed);
                }
        }
}

Test(multiproc, concurrent_inserts_leave_one_live_slot_per_key)
{
        /* Rate tiny, burst large: every attempt is admitted, so each key's TAT counts them all. */
        const uint64_t B = 1000000;
        struct shm_limiter_spec s = tspec("ins", 1, 1000 * SEC, B, B);
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        struct insert_ctl *c = shared_alloc(sizeof(*c));
        c->lim = lim("ins");
        cr_assert_eq(thr_clock_advance(T.a, 5 * SEC), 0);
        for (int i = 0; i < D_KIDS; i++)
                spawn(insert_child, c, i);
        parent_await(&c->ready, D_KIDS, D_KIDS, &c->eb);
        atomic_store_explicit(&c->go, 1, memory_order_release);
        reap_all(D_KIDS, &c->eb);

        struct thr_table *tb = table_of("ins");
        static struct wkey keys[D_KEYS + 1];
        size_t busy;
        cr_assert_eq(walk_live(tb, keys, D_KEYS + 1, &busy, true), D_KEYS, "one live slot per key");
        cr_assert_eq(busy, 0);
        for (int k = 0; k < D_KEYS; k++) {
                char want[32];
                snprintf(want, sizeof(want), "new-%03d", k); /* same length: sorted by bytes */
                cr_assert_str_eq(keys[k].key, want, "the live keys are exactly the inserted ones");
        }
        const struct thr_params *p = params_of("ins");
        uint64_t now;
        thr_clock_now(T.a, &now);
        for (int k = 0; k < D_KEYS; k++) {
                uint64_t got = atomic_load(&c->per_key[k]);
                cr_assert_eq(got, D_KIDS * D_PASSES);
                cr_assert_eq(consumed(p, keys[k].state, now), got,
                             "%s: the state reflects all %lu admissions", keys[k].key,
                             (unsigned long)got);
        }
        /* Exactly one process created each key: the reader records count 500 creations. */
        const struct thr_hdr *h = shm_hdr(&T.map);
        const struct thr_reader *r = shm_at(T.map.base, h->reader_off);
        uint64_t inserts = 0;
        for (uint32_t i = 0; i < h->reader_count; i++)
                inserts += atomic_load(&r[i].inserts);
        cr_assert_eq(inserts, D_KEYS, "creations counted in reader records");
        munmap(c, sizeof(*c));
}

/*
 * The same race made certain: the parent holds the shard's insert lock while every child looks a
 * new key up (miss) and waits for that lock in the insert path (the limiter's insert_wait is long
 * enough for the test); released, each child must find the key that the first one inserted when
 * it probes again under the lock.
 */
#define G_ROUNDS 10

struct blocked_ctl {
        struct errbox eb;
        _Atomic uint64_t ready;
        _Atomic uint64_t round;
        _Atomic uint64_t trying; /* children about to try this round's key, cumulative */
        _Atomic uint64_t done;
        _Atomic uint64_t admitted[G_ROUNDS];
        thr_limiter *lim;
};

static void blocked_child(void *arg, int idx)
{
        struct blocked_ctl *c = arg;
        char key[16];
        int rc = thr_limiter_try(c->lim, "warm", 4, 1, NULL); /* registration done beforehand */
        if (rc != 1)
                child_fail(&c->eb, "kid %d: warm-up: %d", idx, rc);
        atomic_fetch_add(&c->ready, 1);
        for (uint64_t r = 1; r <= G_ROUNDS; r++) {
                child_await(&c->round, r);
                int len = snprintf(key, sizeof(key), "blk-%d", (int)r - 1);
                atomic_fetch_add(&c->trying, 1);
                rc = thr_limiter_try(c->lim, key, (size_t)len, 1, NULL);
                if (rc != 1)
                        child_fail(&c->eb, "kid %d: %s: %d", idx, key, rc);
                atomic_fetch_add(&c->admitted[r - 1], 1);
                atomic_fetch_add_explicit(&c->done, 1, memory_order_release);
        }
}

Test(multiproc, inserters_waiting_for_the_lock_find_the_key_under_it)
{
        struct shm_limiter_spec s = tspec("blk", 1, 1000 * SEC, 1000, 1000);
        s.shards = 1;
        s.lock_wait_ns = 30 * SEC; /* the children wait for as long as the parent holds it */
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        struct blocked_ctl *c = shared_alloc(sizeof(*c));
        c->lim = lim("blk");
        struct thr_table *tb = table_of("blk");
        struct shm_probe pr;
        tprobe(&T.map, tb, "blk-0", &pr); /* one shard: every key's */
        uint64_t me = tlock_me(T.a);
        for (int i = 0; i < D_KIDS; i++)
                spawn(blocked_child, c, i);
        parent_await(&c->ready, D_KIDS, D_KIDS, &c->eb);
        for (uint64_t r = 0; r < G_ROUNDS; r++) {
                uint64_t waits = atomic_load(&pr.shard->lock_waits);
                cr_assert_eq(shm_shard_lock(&T.map, &pr, me, 0), 0);
                atomic_store_explicit(&c->round, r + 1, memory_order_release);
                parent_await(&c->trying, (r + 1) * D_KIDS, D_KIDS, &c->eb);
                struct timespec t0, t;
                clock_gettime(CLOCK_MONOTONIC, &t0);
                while (atomic_load(&pr.shard->lock_waits) < waits + D_KIDS) {
                        clock_gettime(CLOCK_MONOTONIC, &t);
                        cr_assert_lt(t.tv_sec - t0.tv_sec, 10, "the children never waited");
                        sched_yield();
                }
                cr_assert_eq(atomic_load(&c->done), r * D_KIDS, "nobody got past the lock");
                shm_shard_unlock(&pr, me);
                parent_await(&c->done, (r + 1) * D_KIDS, D_KIDS, &c->eb);
        }
        reap_all(D_KIDS, &c->eb);

        static struct wkey keys[G_ROUNDS + 2];
        size_t busy;
        cr_assert_eq(walk_live(tb, keys, G_ROUNDS + 2, &busy, true), G_ROUNDS + 1,
                     "one live slot per key");
        const struct thr_params *p = params_of("blk");
        uint64_t now;
        thr_clock_now(T.a, &now);
        for (int r = 0; r < G_ROUNDS; r++) {
                char key[16];
                snprintf(key, sizeof(key), "blk-%d", r);
                struct thr_slot *sl = find_slot(tb, key);
                cr_assert_not_null(sl, "%s", key);
                cr_assert_eq(consumed(p, atomic_load(&sl->state), now), D_KIDS,
                             "%s: all %d admissions on one slot", key, D_KIDS);
        }
        munmap(c, sizeof(*c));
}

/* ---------------------------------------------------------------- (e) SIGKILL at random */

#define E_KIDS     4
#define E_KILLS    40
#define E_HOT      50
#define E_COLD_MAX 10000
#define E_BURST    100
#define E_DENSE    64 /* capacity of the "dense" limiter, filled before the children start */

struct chaos_ctl {
        struct errbox eb;
        _Atomic uint64_t stop;
        _Atomic uint64_t quota;     /* cold keys the children may create so far */
        _Atomic uint64_t next_cold; /* next cold key index to create */
        _Atomic int hunted;         /* -1, or the child that only tries new keys on "dense" */
        _Atomic uint64_t hot[E_HOT];
        _Atomic uint64_t cold[E_COLD_MAX];
        thr_limiter *lim, *dense;
        uint64_t seed;
};

/* Take the next cold key index if the quota allows, else -1. */
static int64_t claim_cold(struct chaos_ctl *c)
{
        uint64_t n = atomic_load(&c->next_cold);
        while (n < atomic_load(&c->quota) && n < E_COLD_MAX)
                if (atomic_compare_exchange_weak(&c->next_cold, &n, n + 1))
                        return (int64_t)n;
        return -1;
}

/* The hunted child's work: a new key on the full "dense" table, so every call takes the shard
 * lock and probes under it (insert path, denied by on_full = deny), without using up any
 * capacity. */
static void dense_try(struct chaos_ctl *c, int idx, uint64_t i)
{
        char key[48];
        int len = snprintf(key, sizeof(key), "d-%d-%llu", idx, (unsigned long long)i);
        int rc = thr_limiter_try(c->dense, key, (size_t)len, 1, NULL);
        if (rc != 0)
                child_fail(&c->eb, "kid %d: dense %s: %d, expected a denial (table full)", idx, key,
                           rc);
}

static void chaos_child(void *arg, int idx)
{
        struct chaos_ctl *c = arg;
        uint64_t rng = c->seed ^ ((uint64_t)getpid() << 20) ^ (uint64_t)idx;
        char key[32];
        if (nice(5) < 0) /* leave the parent the CPU it needs to stop and kill us */
                child_fail(&c->eb, "nice");
        for (uint64_t i = 0; !atomic_load_explicit(&c->stop, memory_order_relaxed); i++) {
                if (atomic_load_explicit(&c->hunted, memory_order_relaxed) == idx) {
                        dense_try(c, idx, i);
                        continue;
                }
                int64_t cold = i % 8 == 0 ? claim_cold(c) : -1;
                int len = cold >= 0 ? snprintf(key, sizeof(key), "cold-%05lld", (long long)cold)
                                    : snprintf(key, sizeof(key), "hot-%02d",
                                               (int)(rng_next(&rng) % E_HOT));
                int rc = thr_limiter_try(c->lim, key, (size_t)len, 1, NULL);
                if (rc < 0)
                        child_fail(&c->eb, "kid %d: try %s: %s", idx, key, thr_strerror(rc));
                if (rc == 1) /* after the CAS: a kill in between under-reports, never over */
                        atomic_fetch_add(cold >= 0 ? &c->cold[cold] : &c->hot[atoi(key + 4)], 1);
        }
}

/* Which shard lock of TB PID holds (the lock word names a reader record, the record a pid). */
static int held_shard(const struct thr_table *tb, pid_t pid)
{
        const struct thr_shard *sh = shm_at(T.map.base, tb->shards_off);
        const struct thr_reader *r = shm_at(T.map.base, T.map.g.reader_off);
        for (uint32_t i = 0; i < tb->nshards; i++) {
                uint64_t w = atomic_load(&sh[i].lock);
                if (!w || (w & THR_LOCK_DAEMON))
                        continue;
                uint64_t idx = (w >> 40) - 1;
                if (idx < T.map.g.reader_count && atomic_load(&r[idx].pid) == (uint64_t)pid)
                        return (int)i;
        }
        return -1;
}

struct held {
        int table; /* 0 chaos, 1 dense, -1 none */
        int shard;
};

/* Stop PID and say which shard lock it holds. It stays stopped. */
static struct held stop_and_look(struct thr_table *const tbs[2], pid_t pid)
{
        int st;
        cr_assert_eq(kill(pid, SIGSTOP), 0);
        cr_assert_eq(waitpid(pid, &st, WUNTRACED), pid);
        cr_assert(WIFSTOPPED(st), "child %d was to stop, status %#x", (int)pid, st);
        for (int t = 0; t < 2; t++) {
                int s = held_shard(tbs[t], pid);
                if (s >= 0)
                        return (struct held){t, s};
        }
        return (struct held){-1, -1};
}

/*
 * Hunt: make child IDX try only new keys on the full "dense" table, where it spends much of its
 * time holding the shard lock, and stop it at random moments until it is caught holding it.
 * Returns what it holds (possibly nothing, if not caught within the budget); it stays stopped.
 */
static struct held hunt(struct chaos_ctl *c, struct thr_table *const tbs[2], int idx, uint64_t *rng)
{
        pid_t pid = g_kids[idx];
        struct held h = {-1, -1};
        atomic_store(&c->hunted, idx);
        for (int sample = 0; sample < 500 && h.table < 0; sample++) {
                struct timespec ts = {0, (long)(rng_next(rng) % 50000) + 5000};
                nanosleep(&ts, NULL); /* a random moment */
                h = stop_and_look(tbs, pid);
                if (h.table < 0)
                        kill(pid, SIGCONT);
        }
        atomic_store(&c->hunted, -1); /* its replacement starts in the normal mode */
        return h.table >= 0 ? h : stop_and_look(tbs, pid);
}

/* Insert one new key into every shard of limiter L (table TB); each insert must return WANT. */
static void insert_every_shard(thr_limiter *l, const struct thr_table *tb, const char *prefix,
                               int want)
{
        static bool got[THR_MAX_SHARDS];
        memset(got, 0, sizeof(got));
        uint32_t filled = 0;
        for (unsigned i = 0; filled < tb->nshards; i++) {
                char key[32];
                int len = snprintf(key, sizeof(key), "%s-%u", prefix, i);
                uint32_t sh = key_shard(tb, key, (size_t)len);
                if (got[sh])
                        continue;
                int rc = thr_limiter_try(l, key, (size_t)len, 1, NULL);
                cr_assert_eq(rc, want, "insert %s into shard %u after the kills: %d (%s)", key, sh,
                             rc, rc < 0 ? thr_strerror(rc) : "");
                got[sh] = true;
                filled++;
        }
}

/* Every shard some victim died holding was repaired by the next locker. */
static uint64_t check_repairs(const struct thr_table *tb, const bool *held, const char *name)
{
        const struct thr_shard *sh = shm_at(T.map.base, tb->shards_off);
        uint64_t repairs = 0;
        for (uint32_t i = 0; i < tb->nshards; i++) {
                repairs += atomic_load(&sh[i].repairs);
                if (held[i])
                        cr_assert_geq(atomic_load(&sh[i].repairs), 1,
                                      "%s shard %u: a holder died, yet it was never repaired", name,
                                      i);
        }
        return repairs;
}

/* Kill E_KILLS children, each at a random moment or caught holding a lock; replace each. */
static int kill_loop(struct chaos_ctl *c, struct thr_table *const tbs[2],
                     bool held[2][THR_MAX_SHARDS], uint64_t *rng)
{
        int in_lock[2] = {0, 0};
        for (int kill_no = 0; kill_no < E_KILLS; kill_no++) {
                int victim = (int)(rng_next(rng) % E_KIDS);
                pid_t pid = g_kids[victim];
                struct held h;
                atomic_fetch_add(&c->quota, E_COLD_MAX / E_KILLS);
                if (kill_no % 4 == 0) {
                        h = hunt(c, tbs, victim, rng);
                } else {
                        struct timespec ts = {0, (long)(rng_next(rng) % (8 * MS)) + 200000};
                        nanosleep(&ts, NULL); /* a random moment, not a timing assumption */
                        h = stop_and_look(tbs, pid);
                }
                int st;
                cr_assert_eq(kill(pid, SIGKILL), 0);
                cr_assert_eq(waitpid(pid, &st, 0), pid);
                g_kids[victim] = 0;
                cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
                          "victim ended with status %#x: %s", st, c->eb.msg);
                if (h.table >= 0) {
                        held[h.table][h.shard] = true;
                        in_lock[h.table]++;
                }
                spawn(chaos_child, c, victim);
        }
        cr_log_info("sigkill: %d of %d kills inside a shard lock (%d chaos, %d dense)",
                    in_lock[0] + in_lock[1], E_KILLS, in_lock[0], in_lock[1]);
        return in_lock[0] + in_lock[1];
}

/* Per key: consumption read from the TAT <= B, and counted admissions <= consumption. */
static void check_consumption(struct chaos_ctl *c, const struct wkey *keys, size_t n)
{
        const struct thr_params *p = params_of("chaos");
        uint64_t now;
        thr_clock_now(T.a, &now);
        for (size_t i = 0; i < n; i++) {
                uint64_t used = consumed(p, keys[i].state, now), counted;
                cr_assert_leq(used, E_BURST, "%s consumed %lu > burst", keys[i].key,
                              (unsigned long)used);
                if (!strncmp(keys[i].key, "hot-", 4)) {
                        counted = atomic_load(&c->hot[atoi(keys[i].key + 4)]);
                } else if (!strncmp(keys[i].key, "cold-", 5)) {
                        counted = atomic_load(&c->cold[atoi(keys[i].key + 5)]);
                        cr_assert_leq(used, 1, "%s was tried once", keys[i].key);
                } else {
                        cr_assert(!strncmp(keys[i].key, "probe-", 6), "unknown key '%s'",
                                  keys[i].key);
                        counted = 1;
                }
                cr_assert_leq(counted, used, "%s: %lu admissions counted, TAT says %lu",
                              keys[i].key, (unsigned long)counted, (unsigned long)used);
        }
        for (int k = 0; k < E_HOT; k++) { /* a counted hot key must be in the table */
                char key[16];
                snprintf(key, sizeof(key), "hot-%02d", k);
                if (atomic_load(&c->hot[k]))
                        cr_assert_not_null(find_slot(table_of("chaos"), key), "%s lost", key);
        }
}

Test(multiproc, sigkill_at_random_keeps_table_sound)
{
        struct shm_limiter_spec s[2] = {tspec("chaos", 1, 1000 * SEC, E_BURST, E_BURST),
                                        tspec("dense", 1, 1000 * SEC, 1, 1)};
        s[0].capacity = 16384;
        s[0].shards = 16;
        s[1].capacity = E_DENSE;
        s[1].shards = 1;
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, s, 2);
        struct chaos_ctl *c = shared_alloc(sizeof(*c));
        c->lim = lim("chaos");
        c->dense = lim("dense");
        c->seed = seed_from_env();
        c->hunted = -1;
        uint64_t rng = c->seed;
        fprintf(stderr, "multiproc::sigkill_at_random: seed %#llx (THR_TEST_SEED to replay)\n",
                (unsigned long long)c->seed);
        struct thr_table *const tbs[2] = {table_of("chaos"), table_of("dense")};
        for (int i = 0; i < E_DENSE; i++) {
                char key[16];
                int len = snprintf(key, sizeof(key), "fill-%02d", i);
                cr_assert_eq(thr_limiter_try(c->dense, key, (size_t)len, 1, NULL), 1);
        }
        static bool held[2][THR_MAX_SHARDS];
        memset(held, 0, sizeof(held));

        for (int i = 0; i < E_KIDS; i++)
                spawn(chaos_child, c, i);
        int in_lock = kill_loop(c, tbs, held, &rng);
        atomic_store(&c->stop, 1);
        reap_all(E_KIDS, &c->eb);
        cr_assert_eq(atomic_load(&c->eb.n), 0, "child error: %s", c->eb.msg);

        /* Every shard lock is usable (and repaired where a holder died). */
        insert_every_shard(c->lim, tbs[0], "probe", 1);
        insert_every_shard(c->dense, tbs[1], "late", 0); /* full: on_full = deny */
        uint64_t repairs =
            check_repairs(tbs[0], held[0], "chaos") + check_repairs(tbs[1], held[1], "dense");

        /* No duplicates, counters agree with the walk, no slot left BUSY. */
        static struct wkey keys[E_HOT + E_COLD_MAX + THR_MAX_SHARDS];
        size_t busy;
        size_t n = walk_live(tbs[0], keys, sizeof(keys) / sizeof(keys[0]), &busy, false);
        cr_assert_eq(busy, 0, "every interrupted insert was repaired");
        check_consumption(c, keys, n);
        cr_assert_eq(walk_live(tbs[1], keys, E_DENSE, &busy, false), E_DENSE,
                     "dense keeps its keys");
        cr_assert_eq(busy, 0);

        cr_log_info("sigkill: %lu repairs, %zu live keys, %lu cold keys created",
                    (unsigned long)repairs, n, (unsigned long)atomic_load(&c->next_cold));
        cr_assert_geq(in_lock, 1, "no kill landed inside the insert path (seed %#llx)",
                      (unsigned long long)c->seed);
        munmap(c, sizeof(*c));
}

/* ---------------------------------------------------------------- (f) deaths at chosen points */

/*
 * Where in shm_table_insert() (shm/table.c) the emulated holder dies, with the shard lock held.
 * A SIGKILL cannot be aimed at one instruction, so the child performs the insert's steps itself,
 * in table.c's order (capacity_take, then insert_publish), and _exit()s at the chosen point; its
 * reader record's liveness lock goes with it, as for a SIGKILL, so the next locker finds the
 * holder gone and takes the lock over. If table.c reorders its steps, update this emulation.
 */
enum death_point {
        DIE_BUSY,      /* capacity taken, meta BUSY, key half written */
        DIE_UNCOUNTED, /* meta LIVE, shard->live not yet incremented */
};

struct repair_ctl {
        struct errbox eb;
        struct thr_table *tb; /* same address in the child: it is forked */
        enum death_point at;
        char key[32];
};

static void die_in_insert(void *arg, int idx)
{
        (void)idx;
        struct repair_ctl *c = arg;
        struct thr_table *tb = c->tb;
        size_t len = strlen(c->key);
        uint64_t h = shm_hash(shm_hdr(&T.map)->hash_key, c->key, len);
        uint32_t hi = (uint32_t)(h >> 32), shard = hi & (tb->nshards - 1);
        struct thr_slot *slots = slots_of(tb) + (uint64_t)shard * tb->shard_slots;
        uint32_t i = (uint32_t)(((uint64_t)hi * tb->shard_slots) >> 32);
        struct shm_probe p;
        tprobe(&T.map, tb, c->key, &p);
        if (shm_shard_lock(&T.map, &p, tlock_me(T.a), 0) != 0)
                child_fail(&c->eb, "lock");
        while (THR_META_STATUS(atomic_load(&slots[i].meta)) != THR_SLOT_EMPTY)
                i = (i + 1) % tb->shard_slots;
        atomic_fetch_add(&tb->live, 1); /* capacity_take */
        atomic_store(&slots[i].meta, THR_META_MAKE(THR_SLOT_BUSY, 1, (uint32_t)h));
        slots[i].key_len = (uint32_t)len;
        memcpy(slots[i].key, c->key, len / 2);
        if (c->at == DIE_BUSY)
                _exit(0);
        memcpy(slots[i].key, c->key, len);
        atomic_store(&slots[i].state, THR_TAT_FRESH);
        atomic_store(&slots[i].meta, THR_META_MAKE(THR_SLOT_LIVE, 1, (uint32_t)h));
        _exit(0); /* DIE_UNCOUNTED: before shard->live++ */
}

/*
 * One shard; "before" inserted, a holder dies at AT inserting "victim", then "after" is inserted
 * by the next locker, which must repair the shard. Returns the table.
 */
static struct thr_table *die_then_insert(enum death_point at, thr_limiter **lp)
{
        struct shm_limiter_spec s = tspec("rep", 1, SEC, 10, 10);
        s.shards = 1;
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        struct repair_ctl *c = shared_alloc(sizeof(*c));
        snprintf(c->key, sizeof(c->key), "victim");
        c->tb = table_of("rep");
        c->at = at;
        thr_limiter *l = lim("rep");
        cr_assert_eq(thr_limiter_try(l, "before", 6, 1, NULL), 1);
        spawn(die_in_insert, c, 0);
        reap_all(1, &c->eb);
        munmap(c, sizeof(*c));
        struct thr_table *tb = table_of("rep");
        const struct thr_shard *sh = shm_at(T.map.base, tb->shards_off);
        cr_assert_eq(atomic_load(&sh->repairs), 0, "nobody locked the shard yet");
        cr_assert_eq(thr_limiter_try(l, "after", 5, 1, NULL), 1, "insert after the death");
        cr_assert_eq(atomic_load(&sh->repairs), 1, "the next inserter repaired the shard");
        *lp = l;
        return tb;
}

Test(multiproc, repair_turns_a_busy_slot_dead)
{
        thr_limiter *l;
        struct thr_table *tb = die_then_insert(DIE_BUSY, &l);
        const struct thr_shard *sh = shm_at(T.map.base, tb->shards_off);
        cr_assert_eq(atomic_load(&sh->live), 2, "shard recount: the half-written key is not live");
        cr_assert_eq(atomic_load(&tb->live), 3, "the dead holder's capacity unit is still taken");
        static struct wkey keys[4];
        size_t busy;
        cr_assert_eq(walk_live(tb, keys, 4, &busy, false), 2);
        cr_assert_eq(busy, 0, "the BUSY slot was retired");
        cr_assert_null(find_slot(tb, "victim"));
        cr_assert_eq(thr_limiter_try(l, "victim", 6, 1, NULL), 1, "the key can be inserted anew");
        cr_assert_eq(walk_live(tb, keys, 4, &busy, true), 3);
}

Test(multiproc, repair_counts_a_slot_published_before_its_count)
{
        thr_limiter *l;
        struct thr_table *tb = die_then_insert(DIE_UNCOUNTED, &l);
        const struct thr_shard *sh = shm_at(T.map.base, tb->shards_off);
        cr_assert_eq(atomic_load(&sh->live), 3, "shard counter recounted");
        static struct wkey keys[4];
        size_t busy;
        cr_assert_eq(walk_live(tb, keys, 4, &busy, true), 3);
        cr_assert_eq(thr_limiter_try(l, "victim", 6, 1, NULL), 1, "the published key works");
        cr_assert_eq(walk_live(tb, keys, 4, &busy, true), 3, "and was not inserted twice");
}

/* ---------------------------------------------------------------- (g) racing new keys, killed */

/*
 * The gate for any change to how a new key gets its slot (issue 12: a lock-free claim was the
 * lever considered; the no-place hint and the daemon's batched uncount are what changed): R_KIDS
 * processes insert the SAME new keys at once (each tries the key at a shared frontier, and moves
 * the frontier on only now and then, so several are inside the insert of one key together) and
 * keys of their own, into a small table with on_full = evict, so that inserts evict for room,
 * shards run out of places (the hint is set and used) and slots retire and are reused; meanwhile
 * the parent SIGKILLs them at random moments (replacing each) and, between kills, makes every key
 * idle and runs the daemon's pass and a grace period as throttled would (trylocks only: a busy
 * shard is skipped, a dead holder's lock taken over and its shard repaired). Before each kill all
 * children are stopped and the table is scanned for a key with two live slots (the scan caught a
 * locked probe that did not look for the key: 3 runs out of 3). At the end, after
 * one last pass: no key has two live slots, no slot is BUSY, each shard's live count and the
 * table's are exactly the walk, every live key is found by a lookup, and every shard takes a new
 * key again (a stale no-place hint would refuse it).
 */
#define R_KIDS  4
#define R_KILLS 60

struct race_ctl {
        struct errbox eb;
        _Atomic uint64_t stop;
        _Atomic uint64_t frontier;
        thr_limiter *lim;
        uint64_t seed;
};

static void race_child(void *arg, int idx)
{
        struct race_ctl *c = arg;
        uint64_t rng = c->seed ^ ((uint64_t)getpid() << 20) ^ (uint64_t)idx;
        char key[32];
        for (uint64_t i = 0; !atomic_load_explicit(&c->stop, memory_order_relaxed); i++) {
                uint64_t r = rng_next(&rng);
                int len;
                if (r % 4 == 0) {
                        len = snprintf(key, sizeof(key), "own-%d-%llu", idx, (unsigned long long)i);
                } else {
                        uint64_t f = atomic_load_explicit(&c->frontier, memory_order_relaxed);
                        len = snprintf(key, sizeof(key), "race-%06llu", (unsigned long long)f);
                        if ((r >> 8) % 8 == 0)
                                atomic_compare_exchange_strong(&c->frontier, &f, f + 1);
                }
                int rc = thr_limiter_try(c->lim, key, (size_t)len, 1, NULL);
                if (rc < 0)
                        child_fail(&c->eb, "kid %d: try %s: %s", idx, key, thr_strerror(rc));
        }
}

/* With every child stopped (a stopped inserter leaves at most a BUSY slot): no key of TB has two
 * live slots. The invariant holds at every moment, not only at the end, where evictions may have
 * retired a duplicate. */
static void race_no_duplicate(const struct thr_table *tb)
{
        static struct wkey keys[4096];
        const struct thr_slot *s = slots_of(tb);
        size_t n = 0;
        for (uint64_t i = 0; i < nslots(tb); i++) {
                if (THR_META_STATUS(atomic_load(&s[i].meta)) != THR_SLOT_LIVE)
                        continue;
                cr_assert_lt(n, sizeof(keys) / sizeof(keys[0]));
                keys[n].len = s[i].key_len;
                memcpy(keys[n].key, s[i].key, s[i].key_len);
                keys[n].key[s[i].key_len] = '\0';
                n++;
        }
        qsort(keys, n, sizeof(*keys), wkey_cmp);
        for (size_t i = 1; i < n; i++)
                cr_assert_neq(wkey_cmp(&keys[i - 1], &keys[i]), 0, "two live slots for key '%s'",
                              keys[i].key);
}

/* The daemon's pass over "race" at the arena's time, then a grace period; busy shards skipped. */
static uint64_t race_pass(uint64_t done, uint32_t *cursor, bool all_shards_free)
{
        struct shm_lim_snap snap = tsnap(&T, "race");
        struct thr_hdr *h = shm_hdr(&T.map);
        struct shm_maint_args a = {.now_units = shm_now_ns(h) * snap.params.k,
                                   .ttl_units = snap.params.idle_ttl_ns * snap.params.k,
                                   .tag = shm_retire_tag(h),
                                   .done = done,
                                   .me = shm_lock_daemon(atomic_load(&h->attach_count))};
        struct shm_maint_stats st = {0};
        shm_table_maintain(&T.map, &snap, &a, cursor, UINT64_MAX, &st);
        if (all_shards_free)
                cr_assert_eq(st.busy_shards, 0, "no live process holds a shard lock");
        uint64_t gp;
        struct shm_gp_result res;
        cr_assert_eq(shm_gp_start(&T.map, &gp), 0);
        cr_assert_eq(shm_gp_scan(&T.map, gp, shm_now_ns(h), 60 * SEC, &res, NULL, NULL), 0);
        return res.done;
}

Test(multiproc, racing_new_keys_under_sigkill_and_eviction_keep_one_slot_per_key)
{
        struct shm_limiter_spec s = tspec("race", 1, 1000 * SEC, 4, 4);
        s.capacity = 2048;
        s.shards = 4;
        s.on_full = THR_FULL_EVICT;
        s.idle_ttl_ns = MS;
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        struct race_ctl *c = shared_alloc(sizeof(*c));
        c->lim = lim("race");
        c->seed = seed_from_env();
        uint64_t rng = c->seed;
        fprintf(stderr, "multiproc::racing_new_keys: seed %#llx (THR_TEST_SEED to replay)\n",
                (unsigned long long)c->seed);
        struct thr_table *tb = table_of("race");
        /* the parent's passes are a live daemon's (its lock and attach number), or the children
         * would take its shard locks over as a dead daemon's, mid-segment */
        cr_assert_eq(shm_daemon_lock(&T.map, NULL), 0);
        for (int i = 0; i < R_KIDS; i++)
                spawn(race_child, c, i);
        uint64_t done = 0;
        uint32_t cursor = 0;
        for (int kill_no = 0; kill_no < R_KILLS; kill_no++) {
                struct timespec ts = {0, (long)(rng_next(&rng) % (3 * MS)) + 200000};
                nanosleep(&ts, NULL); /* a random moment, not a timing assumption */
                int victim = (int)(rng_next(&rng) % R_KIDS);
                int st;
                for (int i = 0; i < R_KIDS; i++) { /* all stopped: look for a duplicate */
                        cr_assert_eq(kill(g_kids[i], SIGSTOP), 0);
                        cr_assert_eq(waitpid(g_kids[i], &st, WUNTRACED), g_kids[i]);
                        cr_assert(WIFSTOPPED(st), "child %d was to stop: %#x", i, st);
                }
                race_no_duplicate(tb);
                for (int i = 0; i < R_KIDS; i++)
                        if (i != victim)
                                cr_assert_eq(kill(g_kids[i], SIGCONT), 0);
                cr_assert_eq(kill(g_kids[victim], SIGKILL), 0);
                cr_assert_eq(waitpid(g_kids[victim], &st, 0), g_kids[victim]);
                g_kids[victim] = 0;
                cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
                          "victim ended with status %#x: %s", st, c->eb.msg);
                if (kill_no % 3 == 0) { /* every key idle, then the daemon's pass */
                        cr_assert_eq(thr_clock_advance(T.a, 5000 * SEC), 0);
                        done = race_pass(done, &cursor, false);
                }
                spawn(race_child, c, victim);
        }
        atomic_store(&c->stop, 1);
        reap_all(R_KIDS, &c->eb);
        cr_assert_eq(atomic_load(&c->eb.n), 0, "child error: %s", c->eb.msg);
        uint64_t frontier = atomic_load(&c->frontier);

        /* Nobody runs now: one pass repairs what dead holders left, a second frees their slots. */
        done = race_pass(done, &cursor, true);
        done = race_pass(done, &cursor, true);
        const struct thr_shard *sh = shm_at(T.map.base, tb->shards_off);
        const struct thr_slot *slots = slots_of(tb);
        for (uint32_t i = 0; i < tb->nshards; i++) {
                uint64_t walked = 0;
                for (uint32_t k = 0; k < tb->shard_slots; k++)
                        walked +=
                            THR_META_STATUS(atomic_load(
                                &slots[(uint64_t)i * tb->shard_slots + k].meta)) == THR_SLOT_LIVE;
                cr_assert_eq(
                    atomic_load(&sh[i].live), walked, "shard %u live count %llu vs walk %llu", i,
                    (unsigned long long)atomic_load(&sh[i].live), (unsigned long long)walked);
        }
        static struct wkey keys[4096];
        size_t busy;
        size_t n = walk_live(tb, keys, sizeof(keys) / sizeof(keys[0]), &busy, false);
        cr_assert_eq(busy, 0, "every interrupted insert was repaired");
        cr_assert_leq(n, 2048, "the hard cap held");
        for (size_t i = 0; i < n; i++) {
                struct thr_slot *f = find_slot(tb, keys[i].key);
                cr_assert_not_null(f, "live key %s is not found by a lookup", keys[i].key);
                cr_assert_eq(f->key_len, keys[i].len);
        }
        /* every key idle: a pass frees them all, and every shard takes a new key again */
        cr_assert_eq(thr_clock_advance(T.a, 5000 * SEC), 0);
        done = race_pass(done, &cursor, true);
        done = race_pass(done, &cursor, true);
        insert_every_shard(c->lim, tb, "probe", 1);
        n = walk_live(tb, keys, sizeof(keys) / sizeof(keys[0]), &busy, true);
        cr_assert_eq(n, tb->nshards, "only the probes are live");
        cr_log_info("racing new keys: frontier %llu, %u repairs", (unsigned long long)frontier,
                    (unsigned)shm_table_repairs(T.map.base, tb));
        munmap(c, sizeof(*c));
}
