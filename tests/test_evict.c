/*
 * test_evict.c - proves the eviction and reclamation protocol, driving the daemon's side
 * (shm_table_maintain, shm_gp_start/shm_gp_scan, shm_readers_reap) from the test: idle keys are
 * evicted exactly when their TTL has passed and never while they carry debt; an evicted key that
 * returns gets one new live slot while the old one keeps retiring; a retired slot is reused only
 * after a grace period (with its generation bumped, or trimmed at the end of its probe run); a
 * stopped reader blocks reuse and is reported stalled once and resumed once; a reader killed in a
 * section is forced offline; a live reader is never forced; under a flood of new keys the
 * on_full policies keep the table within capacity and no hot key gets more than GCRA allows, and
 * a key evicted for room comes back with its debt; a reservation is never cancelled into a slot
 * reused for another key. Two tests place a client's insert between two loads of a maintenance
 * pass (a test hook): regression tests for a reclamation race.
 *
 * All on a manual clock; children report through a shared mapping and are waited for by
 * waitpid(WUNTRACED) or by polling a flag, never by sleeping for a time.
 */
#include <criterion/criterion.h>
#include <seccomp.h>
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

#define MS   1000000ull
#define TI   (100 * MS) /* emission interval of 10/s */
#define BU   5ull       /* burst */
#define TTL  SEC
#define KIDS 4

static struct tarena T;
static thr_limiter *L;
static pid_t g_kids[KIDS];

static void teardown(void)
{
        for (int i = 0; i < KIDS; i++)
                if (g_kids[i] > 0 && kill(g_kids[i], SIGKILL) == 0)
                        waitpid(g_kids[i], NULL, 0);
        memset(g_kids, 0, sizeof(g_kids));
        thr_test_hook = NULL;
        thr_limiter_close(L);
        L = NULL;
        tarena_free(&T);
}

TestSuite(evict, .fini = teardown, .timeout = 120);

/* ---------------------------------------------------------------- fixtures */

/* Limiter "l" (the only one, L): 10/s, burst 5, one shard. Time starts at 1 s, not 0. */
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
        cr_assert_geq(at, now_ns(), "the clock only moves forward");
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

/*
 * One whole maintenance pass at the arena's time, as the daemon runs it; *TAG: the tag it
 * retires with. WATCH: FN runs right after the pass's first read of that meta word (test hook).
 */
static void *g_watch;
static void (*g_watch_fn)(void);

/* Test hook: FN runs once, right after the pass read the meta word G_WATCH. */
static void on_meta_read(enum thr_hook_point pt, void *arg)
{
        if (pt != THR_HOOK_MAINT_META_READ || arg != g_watch || !g_watch_fn)
                return;
        void (*fn)(void) = g_watch_fn;
        g_watch_fn = NULL;
        fn();
}

static struct shm_maint_stats maint_at(uint64_t done, uint32_t *tag, void *watch, void (*fn)(void))
{
        g_watch = watch;
        g_watch_fn = fn;
        thr_test_hook = watch ? on_meta_read : NULL;
        struct shm_maint_stats st = tmaint(&T, "l", done, tag);
        thr_test_hook = NULL;
        return st;
}

static struct shm_maint_stats maint(uint64_t done, uint32_t *tag)
{
        return maint_at(done, tag, NULL, NULL);
}

/* A pass's counts must be these (-1: any); the caller's line is reported. */
#define EXPECT_PASS(st, ev, rec, ret, trim) expect_pass((st), (ev), (rec), (ret), (trim), __LINE__)
static void expect_pass(struct shm_maint_stats st, int ev, int rec, int ret, int trim, int line)
{
        const int64_t want[] = {ev, rec, ret, trim};
        const uint64_t got[] = {st.evicted, st.reclaimed, st.retiring, st.trimmed};
        const char *what[] = {"evicted", "reclaimed", "retiring", "trimmed"};
        for (int i = 0; i < 4; i++)
                cr_assert(want[i] < 0 || got[i] == (uint64_t)want[i],
                          "line %d: %s %" PRIu64 ", expected %" PRId64, line, what[i], got[i],
                          want[i]);
}

/* What the grace-period scans reported. */
struct gp_log {
        int n[4]; /* by enum shm_gp_event */
        uint32_t idx;
        uint64_t owner, stalled, pid; /* the record as the report saw it */
};

static void on_gp(void *ctx, uint32_t idx, const struct thr_reader *r, enum shm_gp_event ev)
{
        struct gp_log *g = ctx;
        g->n[ev]++;
        g->idx = idx;
        g->owner = atomic_load(&r->owner);
        g->stalled = atomic_load(&r->stalled);
        g->pid = atomic_load(&r->pid);
}

/* A grace period at the arena's time, as the daemon runs one; *GP: its number. */
static struct shm_gp_result grace(uint64_t stall_ns, struct gp_log *log, uint64_t *gp)
{
        uint64_t g;
        int rc = shm_gp_start(&T.map, &g);
        cr_assert_eq(rc, 0, "shm_gp_start: %s", strerror(-rc));
        struct shm_gp_result res;
        cr_assert_eq(shm_gp_scan(&T.map, g, now_ns(), stall_ns, &res, on_gp, log), 0);
        if (gp)
                *gp = g;
        return res;
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

/* Slots with status ST (holding KEY unless NULL), by walking the table; *LAST: one of them. */
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

/* A key "PREFIX<i>" whose home slot (one shard) is HOME. */
static void key_at(uint32_t home, const char *prefix, char *buf, size_t len)
{
        struct shm_lim_snap s = snap_of();
        tkey_at(&T.map, &s.table, home, prefix, buf, len);
}

/*
 * "k" at its home slot H and M (home H too) right behind it, so that k's slot, once reclaimed,
 * stays FREE (not trimmed). Admits k at t0, M at t0 + 500 ms, and moves the clock to when k has
 * been full for the TTL (M not yet). Returns k's slot; *H its index.
 */
static struct thr_slot *k_then_m(char *m, size_t len, uint32_t *h)
{
        uint32_t n;
        struct thr_slot *base = slot0(&n);
        struct thr_result r;
        *h = home_of("k");
        key_at(*h, "m", m, len);
        uint64_t t0 = now_ns();
        cr_assert_eq(try1("k", &r), 1);
        clock_to(t0 + 500 * MS);
        cr_assert_eq(try1(m, &r), 1);
        cr_assert_eq(live_slot("k") - base, *h, "k at its home");
        cr_assert_eq(live_slot(m) - base, (*h + 1) % n, "m right behind it");
        clock_to(t0 + TI + TTL);
        return live_slot("k");
}

/* ---------------------------------------------------------------- children */

struct box {
        _Atomic int stage;
        uint32_t idx;   /* the child's reader record */
        uint64_t owner; /* its owner token */
};

enum { OFFLINE, IN_SECTION, STOP_IN_SECTION };

/*
 * A child holding a reader record of T (OFFLINE), or inside a read-side section (IN_SECTION), or
 * stopped inside one by its own SIGSTOP and leaving it when continued (STOP_IN_SECTION). It
 * reports stage 1 once there, 2 once it left after SIGCONT, then waits to be killed.
 */
static pid_t reader_child(struct box **out, int mode)
{
        struct box *bx =
            mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(bx, MAP_FAILED);
        *out = bx;
        pid_t pid = tfork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                int err = 0;
                struct thr_reader *r = thr_reader_get(T.a, &err);
                if (!r)
                        _exit(2);
                bx->idx = (uint32_t)(r - (struct thr_reader *)shm_at(T.a->map.base,
                                                                     T.a->map.g.reader_off));
                bx->owner = atomic_load(&r->owner);
                uint64_t outer = mode != OFFLINE ? thr_reader_enter(T.a, r) : 0;
                atomic_store(&bx->stage, 1);
                if (mode == STOP_IN_SECTION) {
                        raise(SIGSTOP);
                        thr_reader_exit(r, outer);
                        atomic_store(&bx->stage, 2);
                }
                for (;;)
                        pause();
        }
        for (int i = 0; i < KIDS; i++)
                if (!g_kids[i]) {
                        g_kids[i] = pid;
                        break;
                }
        return pid;
}

static void wait_stage(struct box *bx, int stage)
{
        struct timespec tick = {0, 1000000};
        for (int i = 0; i < 10000 && atomic_load(&bx->stage) < stage; i++)
                nanosleep(&tick, NULL);
        cr_assert_geq(atomic_load(&bx->stage), stage, "child reached stage %d", stage);
}

static void kill_kid(pid_t pid)
{
        cr_assert_eq(kill(pid, SIGKILL), 0);
        cr_assert_eq(waitpid(pid, NULL, 0), pid);
        for (int i = 0; i < KIDS; i++)
                if (g_kids[i] == pid)
                        g_kids[i] = 0;
}

static struct thr_reader *record(uint32_t idx)
{
        return (struct thr_reader *)shm_at(T.map.base, T.map.g.reader_off) + idx;
}

/* ---------------------------------------------------------------- idle eviction */

Test(evict, idle_key_evicted_after_ttl_only)
{
        make1(16, TTL, THR_FULL_DENY);
        struct thr_table *tb = ttable(&T, "l");
        struct thr_result r;
        uint64_t t0 = now_ns();
        cr_assert_eq(try1("k", &r), 1);
        struct thr_slot *s = live_slot("k");
        uint64_t tat = atomic_load(&s->state) / snap_of().params.k;
        cr_assert_eq(tat, t0 + TI, "one token taken from a full bucket");
        cr_assert_eq(atomic_load(&tb->live), 1);
        uint64_t before[] = {t0, tat, tat + TTL / 2, tat + TTL - 1};
        for (int i = 0; i < 4; i++) {
                clock_to(before[i]);
                EXPECT_PASS(maint(0, NULL), 0, 0, 0, 0);
                cr_assert_eq(status(s), THR_SLOT_LIVE, "not idle for the TTL yet at %d", i);
        }
        clock_to(tat + TTL);
        uint32_t tag;
        EXPECT_PASS(maint(0, &tag), 1, 0, 0, 0); /* full for exactly the TTL */
        cr_assert_eq(atomic_load(&shard0()->evicted), 1);
        cr_assert_eq(atomic_load(&shard0()->live), 0);
        cr_assert_eq(atomic_load(&tb->live), 0);
        uint64_t meta = atomic_load(&s->meta);
        cr_assert_eq(THR_META_STATUS(meta), THR_SLOT_DEAD);
        cr_assert_eq(THR_META_TAG(meta), tag, "retired with the grace period to wait for");
        cr_assert_eq(atomic_load(&s->state), THR_TAT_DEAD);
        cr_assert_eq(count(THR_SLOT_LIVE, NULL, NULL), 0);
        EXPECT_PASS(maint(0, NULL), 0, 0, 1, 0); /* evicted once, retiring */
}

Test(evict, indebted_key_never_evicted)
{
        make1(16, TTL, THR_FULL_DENY);
        struct thr_result r;
        for (uint64_t i = 0; i < BU; i++)
                cr_assert_eq(try1("k", &r), 1);
        cr_assert_eq(try1("k", &r), 0, "drained");
        struct thr_reservation rv;
        for (int i = 0; i < 10; i++)
                cr_assert_eq(thr_limiter_reserve(L, "k", 1, BU, UINT64_MAX, &rv), 0);
        struct thr_slot *s = live_slot("k");
        uint64_t tat = atomic_load(&s->state) / snap_of().params.k;
        cr_assert_eq(tat, now_ns() + 11 * BU * TI, "the burst and ten reservations of B");
        for (uint64_t t = now_ns(); t < tat + TTL; t += 250 * MS) {
                clock_to(t);
                EXPECT_PASS(maint(0, NULL), 0, 0, 0, 0);
        }
        clock_to(tat + TTL - 1);
        EXPECT_PASS(maint(0, NULL), 0, 0, 0, 0);
        cr_assert_eq(atomic_load(&s->state) / snap_of().params.k, tat, "state untouched");
        clock_to(tat + TTL);
        EXPECT_PASS(maint(0, NULL), 1, 0, 0, 0);
        cr_assert_eq(atomic_load(&s->state), THR_TAT_DEAD);
}

Test(evict, key_returning_while_retiring_gets_one_live_slot)
{
        make1(16, TTL, THR_FULL_DENY);
        struct thr_result r;
        cr_assert_eq(try1("k", &r), 1);
        struct thr_slot *old = live_slot("k"), *dead = NULL;
        clock_to(now_ns() + TI + TTL);
        EXPECT_PASS(maint(0, NULL), 1, 0, 0, 0);
        /* no grace period yet: the old slot is retiring, the key comes back as a fresh one */
        for (uint64_t i = 0; i < BU; i++) {
                cr_assert_eq(try1("k", &r), 1, "a full burst again: it left with no debt");
                cr_assert_eq(r.remaining, BU - 1 - i);
        }
        cr_assert_eq(try1("k", &r), 0);
        cr_assert_eq(r.retry_after_ns, TI);
        cr_assert_neq(live_slot("k"), old, "one live slot, a new one");
        cr_assert_eq(count(THR_SLOT_DEAD, "k", &dead), 1);
        cr_assert_eq(dead, old);
        cr_assert_eq(atomic_load(&old->state), THR_TAT_DEAD, "still retiring, not reclaimed");
        cr_assert_eq(atomic_load(&ttable(&T, "l")->live), 1);
        EXPECT_PASS(maint(0, NULL), 0, 0, 1, 0);
}

/* ---------------------------------------------------------------- reuse after grace periods */

Test(evict, slot_reused_only_after_grace_period)
{
        make1(16, TTL, THR_FULL_DENY);
        char m[32], x1[32], x2[32];
        uint32_t h, n, tag;
        struct thr_slot *base = slot0(&n), *ks = k_then_m(m, sizeof(m), &h);
        key_at(h, "x", x1, sizeof(x1));
        key_at(h, "y", x2, sizeof(x2));
        uint32_t gen = gen_of(ks);
        EXPECT_PASS(maint(0, &tag), 1, 0, 0, 0); /* k only: m is not idle for the TTL yet */
        EXPECT_PASS(maint(tag - 1, NULL), 0, 0, 1, 0);
        cr_assert_eq(atomic_load(&ks->state), THR_TAT_DEAD);
        struct thr_result r;
        cr_assert_eq(try1(x1, &r), 1);
        cr_assert_eq(live_slot(x1) - base, (h + 2) % n, "a retiring slot is never reused");

        uint64_t gp;
        struct gp_log log = {0};
        struct shm_gp_result res = grace(SEC, &log, &gp);
        cr_assert_eq(gp, tag, "the tag is the next grace period");
        cr_assert_eq(res.blocking, 0);
        cr_assert_eq(res.done, gp, "no reader in a section");
        EXPECT_PASS(maint(res.done, NULL), 0, 1, 0, 0); /* m follows: not trimmed */
        cr_assert_eq(atomic_load(&shard0()->reclaimed), 1);
        cr_assert_eq(status(ks), THR_SLOT_DEAD);
        cr_assert_eq(atomic_load(&ks->state), THR_TAT_FREE);

        cr_assert_eq(try1(x2, &r), 1);
        cr_assert_eq(live_slot(x2), ks, "the reclaimed slot is reused first");
        cr_assert_eq(gen_of(ks), gen + 1, "generation bumped");
        cr_assert_eq(count(THR_SLOT_LIVE, NULL, NULL), 3);
        cr_assert_eq(atomic_load(&ttable(&T, "l")->live), 3);
        cr_assert_eq(log.n[SHM_GP_STALLED] + log.n[SHM_GP_FORCED] + log.n[SHM_GP_RESUMED], 0);
}

Test(evict, reclaimed_slot_ending_its_run_is_trimmed)
{
        make1(16, TTL, THR_FULL_DENY);
        char x[32];
        uint32_t n, tag;
        struct thr_slot *base = slot0(&n);
        key_at(home_of("k"), "x", x, sizeof(x));
        struct thr_result r;
        cr_assert_eq(try1("k", &r), 1);
        struct thr_slot *ks = live_slot("k");
        cr_assert_eq(ks - base, home_of("k"));
        uint32_t gen = gen_of(ks);
        clock_to(now_ns() + TI + TTL);
        EXPECT_PASS(maint(0, &tag), 1, 0, 0, 0);
        struct shm_gp_result res = grace(SEC, NULL, NULL);
        cr_assert_geq(res.done, tag);
        EXPECT_PASS(maint(res.done, NULL), 0, 1, 0, 1); /* the next slot is EMPTY */
        cr_assert_eq(status(ks), THR_SLOT_EMPTY);
        cr_assert_eq(gen_of(ks), gen, "trimming keeps the generation");
        cr_assert_eq(try1(x, &r), 1);
        cr_assert_eq(live_slot(x), ks);
        cr_assert_eq(gen_of(ks), gen + 1);
}

/*
 * Regression tests for a race found here (fixed in shm/reclaim.c, reclaim()): a pass loads a
 * slot's meta, then its state, and used to store THR_TAT_FREE on "meta DEAD, state not FREE, tag
 * done" with a plain store, checking neither that the state is THR_TAT_DEAD nor that meta was
 * unchanged. A client can reuse a reclaimed (FREE) slot between those two loads: the pass sees the
 * old meta (DEAD, its old tag done) and the new key's state. (1) The new key is live: its TAT
 * becomes THR_TAT_FREE, so it is denied forever (FREE + T wraps in shm_gcra_step) and never evicted
 * (evict_idle and evict_least skip FREE). (2) The new key was also evicted at once (on_full =
 * evict): its state is THR_TAT_DEAD under a new, undone tag, and the pass frees the slot before
 * that grace period, for reuse while readers may hold it. A test hook after the pass's load of
 * the slot's meta runs the client's inserts exactly between the two loads (a hardware watchpoint
 * did this before; some hypervisors accept one and never fire it).
 */
static char g_x[32], g_z[32];
static int g_x_rc = -1, g_z_rc = -1;

static void insert_x(void)
{
        struct thr_result r;
        g_x_rc = try1(g_x, &r);
}

static void insert_x_then_z(void)
{
        struct thr_result r;
        insert_x();
        g_z_rc = try1(g_z, &r); /* the table is full: evicts x, the least indebted */
}

Test(evict, reclaim_pass_never_frees_a_live_key_reused_under_it)
{
        make1(16, TTL, THR_FULL_DENY);
        char m[32];
        uint32_t h;
        struct thr_slot *ks = k_then_m(m, sizeof(m), &h);
        key_at(h, "x", g_x, sizeof(g_x));
        EXPECT_PASS(maint(0, NULL), 1, 0, 0, 0);
        struct shm_gp_result res = grace(SEC, NULL, NULL);
        EXPECT_PASS(maint(res.done, NULL), 0, 1, 0, 0);
        cr_assert_eq(atomic_load(&ks->state), THR_TAT_FREE);
        struct shm_maint_stats st = maint_at(res.done, NULL, &ks->meta, insert_x);
        cr_assert_eq(g_x_rc, 1, "the insert ran inside the pass");
        cr_assert_eq(live_slot(g_x), ks, "it reused the reclaimed slot");
        cr_assert_neq(atomic_load(&ks->state), THR_TAT_FREE, "a live key's TAT was freed");
        EXPECT_PASS(st, 0, 0, -1, 0);
        struct thr_result r;
        cr_assert_eq(try1(g_x, &r), 1, "B - 1 tokens left");
        cr_assert_eq(r.remaining, BU - 2);
}

Test(evict, reclaim_pass_never_frees_a_slot_reused_and_retired_under_it)
{
        make1(2, TTL, THR_FULL_EVICT);
        char m[32];
        uint32_t h;
        struct thr_slot *ks = k_then_m(m, sizeof(m), &h);
        struct thr_reservation rv;
        cr_assert_eq(thr_limiter_reserve(L, m, strlen(m), BU, UINT64_MAX, &rv), 0, "m indebted");
        key_at(h, "x", g_x, sizeof(g_x));
        key_at(h, "y", g_z, sizeof(g_z));
        EXPECT_PASS(maint(0, NULL), 1, 0, 0, 0);
        struct shm_gp_result res = grace(SEC, NULL, NULL);
        EXPECT_PASS(maint(res.done, NULL), 0, 1, 0, 0);
        uint32_t gen = gen_of(ks);
        struct shm_maint_stats st = maint_at(res.done, NULL, &ks->meta, insert_x_then_z);
        cr_assert_eq(g_x_rc, 1);
        cr_assert_geq(g_z_rc, 0);
        cr_assert_eq(count(THR_SLOT_LIVE, g_x, NULL), 0, "x was evicted for z");
        uint64_t meta = atomic_load(&ks->meta);
        cr_assert_eq(THR_META_STATUS(meta), THR_SLOT_DEAD);
        cr_assert_eq(THR_META_GEN(meta), gen + 1, "x's retirement");
        cr_assert_eq(THR_META_TAG(meta), res.done + 1, "its grace period has not run");
        cr_assert_eq(atomic_load(&ks->state), THR_TAT_DEAD, "freed before its grace period");
        EXPECT_PASS(st, 0, 0, -1, 0);
}

/* ---------------------------------------------------------------- readers */

/* Admit "k", let it go idle past the TTL (evicted by the next maintain). */
static void idle_key(void)
{
        make1(16, TTL, THR_FULL_DENY);
        struct thr_result r;
        cr_assert_eq(try1("k", &r), 1);
        clock_to(now_ns() + TI + TTL);
}

Test(evict, stopped_reader_blocks_reuse_and_is_reported)
{
        idle_key();
        struct box *bx;
        pid_t kid = reader_child(&bx, STOP_IN_SECTION);
        int ws = 0;
        cr_assert_eq(waitpid(kid, &ws, WUNTRACED), kid);
        cr_assert(WIFSTOPPED(ws), "child stopped itself (status %#x)", ws);
        uint32_t tag;
        EXPECT_PASS(maint(0, &tag), 1, 0, 0, 0); /* after the child's entry */
        struct thr_reader *rec = record(bx->idx);
        cr_assert_eq(atomic_load(&rec->online), tag, "entered at grace period tag - 1");

        const uint64_t stall = 5 * SEC;
        struct gp_log log = {0};
        struct shm_gp_result res = grace(stall, &log, NULL);
        cr_assert_eq(res.readers, 2, "this thread's record and the child's");
        cr_assert_eq(res.blocking, 1);
        cr_assert_eq(res.forced, 0);
        cr_assert_eq(res.done, tag - 1, "held back to the child's snapshot");
        EXPECT_PASS(maint(res.done, NULL), 0, 0, 1, 0);

        thr_clock_advance(T.a, stall - 1);
        res = grace(stall, &log, NULL);
        cr_assert_eq(res.stalled, 0, "not blocking for stall_ns yet");
        cr_assert_eq(log.n[SHM_GP_STALLED], 0);
        thr_clock_advance(T.a, 1);
        for (int i = 0; i < 3; i++) {
                res = grace(stall, &log, NULL);
                cr_assert(res.blocking == 1 && res.stalled == 1 && res.done == tag - 1);
                cr_assert_eq(log.n[SHM_GP_STALLED], 1, "reported exactly once");
                cr_assert_eq(atomic_load(&rec->stalled), 1);
                EXPECT_PASS(maint(res.done, NULL), 0, 0, 1, 0); /* never freed early */
        }
        cr_assert_eq(log.idx, bx->idx);
        cr_assert_eq(log.pid, (uint64_t)kid);
        cr_assert_eq(log.stalled, 1);
        cr_assert_eq(atomic_load(&rec->owner), bx->owner, "alive: never forced");

        cr_assert_eq(kill(kid, SIGCONT), 0);
        wait_stage(bx, 2);
        uint64_t gp;
        res = grace(stall, &log, &gp);
        cr_assert_eq(log.n[SHM_GP_RESUMED], 1);
        cr_assert_eq(log.n[SHM_GP_STALLED], 1);
        cr_assert_eq(log.n[SHM_GP_FORCED], 0);
        cr_assert_eq(res.blocking, 0);
        cr_assert_eq(res.done, gp);
        cr_assert_geq(res.done, tag);
        cr_assert_eq(atomic_load(&rec->stalled), 0);
        EXPECT_PASS(maint(res.done, NULL), 0, 1, 0, -1);
        res = grace(stall, &log, NULL);
        cr_assert_eq(log.n[SHM_GP_RESUMED], 1, "resumed once");
}

Test(evict, reader_killed_inside_section_is_forced_offline)
{
        idle_key();
        struct thr_hdr *hdr = shm_hdr(&T.map);
        struct box *bx, *b2;
        pid_t kid = reader_child(&bx, IN_SECTION);
        wait_stage(bx, 1);
        uint32_t tag;
        EXPECT_PASS(maint(0, &tag), 1, 0, 0, 0);
        struct gp_log log = {0};
        struct shm_gp_result res = grace(SEC, &log, NULL);
        cr_assert_eq(res.blocking, 1, "alive: it blocks");
        cr_assert_eq(res.done, tag - 1);
        kill_kid(kid);

        uint64_t gp;
        res = grace(SEC, &log, &gp);
        cr_assert_eq(res.forced, 1);
        cr_assert_eq(res.blocking, 0);
        cr_assert_eq(res.done, gp);
        cr_assert_eq(log.n[SHM_GP_FORCED], 1);
        cr_assert_eq(log.idx, bx->idx);
        cr_assert_eq(log.owner, 0, "freed before the report");
        struct thr_reader *rec = record(bx->idx);
        cr_assert_eq(atomic_load(&rec->owner), 0);
        cr_assert_eq(atomic_load(&rec->online), 0);
        cr_assert_eq(atomic_load(&rec->forced_token), bx->owner);
        cr_assert_eq(atomic_load(&hdr->readers_forced), 1);
        EXPECT_PASS(maint(res.done, NULL), 0, 1, 0, -1);

        /* a dead process's offline record blocks nothing: the reaper frees it */
        kid = reader_child(&b2, OFFLINE);
        wait_stage(b2, 1);
        kill_kid(kid);
        rec = record(b2->idx);
        cr_assert_eq(atomic_load(&rec->owner), b2->owner);
        res = grace(SEC, &log, &gp);
        cr_assert_eq(res.forced, 0);
        cr_assert_eq(res.done, gp);
        cr_assert_eq(shm_readers_reap(&T.map), 1);
        cr_assert_eq(atomic_load(&rec->owner), 0);
        cr_assert_eq(atomic_load(&hdr->readers_forced), 2);
        cr_assert_eq(shm_readers_reap(&T.map), 0, "nothing left to reap");
}

Test(evict, live_reader_never_forced)
{
        make1(16, TTL, THR_FULL_DENY);
        struct thr_hdr *hdr = shm_hdr(&T.map);
        struct box *ba, *bb;
        pid_t a = reader_child(&ba, OFFLINE), b = reader_child(&bb, IN_SECTION);
        wait_stage(ba, 1);
        wait_stage(bb, 1);
        struct thr_reader *ra = record(ba->idx), *rb = record(bb->idx);
        uint64_t snap = atomic_load(&rb->online) - 1;
        struct gp_log log = {0};
        for (int i = 0; i < 5; i++) {
                cr_assert_eq(shm_readers_reap(&T.map), 0, "both alive");
                struct shm_gp_result res = grace(2 * SEC, &log, NULL);
                cr_assert_eq(res.readers, 2);
                cr_assert_eq(res.blocking, 1);
                cr_assert_eq(res.forced, 0);
                cr_assert_eq(res.done, snap);
                cr_assert_eq(atomic_load(&ra->owner), ba->owner);
                cr_assert_eq(atomic_load(&rb->owner), bb->owner);
                cr_assert_eq(atomic_load(&rb->online), snap + 1, "still in its section");
                thr_clock_advance(T.a, SEC);
        }
        cr_assert_eq(log.n[SHM_GP_FORCED], 0);
        cr_assert_eq(log.n[SHM_GP_STALLED], 1, "reported stalled instead");
        cr_assert_eq(atomic_load(&hdr->readers_forced), 0);
        kill_kid(a);
        kill_kid(b);
        cr_assert_eq(shm_readers_reap(&T.map), 2);
        cr_assert_eq(atomic_load(&ra->owner), 0);
        cr_assert_eq(atomic_load(&rb->owner), 0);
        cr_assert_eq(atomic_load(&hdr->readers_forced), 2);
}

/* ---------------------------------------------------------------- full tables */

#define CAP    64
#define HOT    8
#define FLOOD  640
#define ROUNDS 1000                  /* of 10 ms: 10 s */
#define EXTRA  (FLOOD - (CAP - HOT)) /* new keys that find the table full */

/*
 * 8 hot keys tried every 10 ms, 640 new keys once each, spread over 10 s; the daemon's pass
 * (grace period, then maintenance, no idle TTL) every 100 ms. Returns how many new keys were
 * admitted; checks what every policy must hold.
 */
static int flood(uint32_t policy)
{
        make1(CAP, 0, policy);
        struct thr_table *tb = ttable(&T, "l");
        struct thr_result r;
        char key[32];
        uint64_t first = now_ns(), hot_ok[HOT] = {0};
        int next = 0, new_ok = 0;
        for (int round = 0; round <= ROUNDS; round++) {
                for (int h = 0; h < HOT; h++) {
                        snprintf(key, sizeof(key), "hot%d", h);
                        hot_ok[h] += try1(key, &r) == 1;
                }
                for (; next < round * FLOOD / ROUNDS; next++) {
                        snprintf(key, sizeof(key), "new%d", next);
                        r.retry_after_ns = 0;
                        int rc = try1(key, &r);
                        cr_assert(rc == 0 || rc == 1, "%s: %d", key, rc);
                        new_ok += rc;
                        if (rc == 0)
                                cr_assert_eq(r.retry_after_ns, TI, "%s: one interval", key);
                }
                if (round % 10 == 0) {
                        struct shm_gp_result res = grace(SEC, NULL, NULL);
                        maint(res.done, NULL);
                        cr_assert_leq(count(THR_SLOT_LIVE, NULL, NULL), CAP);
                }
                if (round < ROUNDS)
                        thr_clock_advance(T.a, 10 * MS);
        }
        cr_assert_eq(next, FLOOD);
        uint64_t bound = BU + (now_ns() - first) / TI;
        for (int h = 0; h < HOT; h++) {
                cr_assert_leq(hot_ok[h], bound, "hot%d: never more than GCRA allows", h);
                cr_assert_eq(hot_ok[h], bound, "hot%d: never starved either", h);
        }
        cr_assert_eq(count(THR_SLOT_LIVE, NULL, NULL), CAP);
        cr_assert_eq(atomic_load(&tb->live), CAP);
        return new_ok;
}

Test(evict, full_table_deny)
{
        cr_assert_eq(flood(THR_FULL_DENY), CAP - HOT, "only the keys that fit");
        cr_assert_eq(atomic_load(&ttable(&T, "l")->insert_fail), EXTRA);
        cr_assert_eq(atomic_load(&shard0()->allowed_full), 0);
        cr_assert_eq(atomic_load(&shard0()->evicted_full), 0);
}

Test(evict, full_table_allow)
{
        cr_assert_eq(flood(THR_FULL_ALLOW), FLOOD, "all admitted, unrecorded beyond capacity");
        cr_assert_eq(atomic_load(&shard0()->allowed_full), EXTRA);
        cr_assert_eq(atomic_load(&shard0()->evicted_full), 0);
}

Test(evict, full_table_evict)
{
        cr_assert_eq(flood(THR_FULL_EVICT), FLOOD, "each new key evicts an idle one");
        cr_assert_eq(atomic_load(&shard0()->evicted_full), EXTRA);
        cr_assert_eq(atomic_load(&ttable(&T, "l")->insert_fail), 0);
        cr_assert_eq(count(THR_SLOT_LIVE, "new639", NULL), 1, "the last one is in");
        char key[32];
        for (int h = 0; h < HOT; h++) {
                snprintf(key, sizeof(key), "hot%d", h);
                cr_assert_eq(count(THR_SLOT_LIVE, key, NULL), 1, "indebted: never chosen");
        }
}

Test(evict, key_evicted_for_room_keeps_its_debt)
{
        make1(4, 0, THR_FULL_EVICT);
        struct thr_result r;
        struct thr_reservation rv;
        const char *deep[] = {"a", "b", "c"};
        for (uint64_t i = 0; i < BU; i++)
                cr_assert_eq(try1("h", &r), 1);
        for (int k = 0; k < 3; k++) {
                for (uint64_t i = 0; i < BU; i++)
                        cr_assert_eq(try1(deep[k], &r), 1);
                for (int i = 0; i < 3; i++)
                        cr_assert_eq(thr_limiter_reserve(L, deep[k], 1, BU, UINT64_MAX, &rv), 0);
        }
        uint64_t t0 = now_ns(), k = snap_of().params.k;
        uint64_t old_tat = atomic_load(&live_slot("h")->state);
        cr_assert_eq(old_tat / k, t0 + BU * TI, "h drained: the least debt of the four");
        struct thr_shard *sh = shard0();

        cr_assert_eq(try1("n", &r), 0, "n starts at the floor h left");
        cr_assert_eq(atomic_load(&sh->evicted_full), 1);
        cr_assert_eq(count(THR_SLOT_LIVE, "h", NULL), 0, "h was the victim");
        cr_assert_eq(atomic_load(&sh->floor_units), old_tat);

        /* h's old TAT lies beyond now + (B-1)T: coming back at once, it must be denied */
        cr_assert_gt(old_tat / k, t0 + (BU - 1) * TI);
        cr_assert_eq(try1("h", &r), 0, "no fresh burst after an eviction");
        cr_assert_eq(r.retry_after_ns, TI);
        cr_assert_eq(atomic_load(&sh->evicted_full), 2, "n made room for it");
        cr_assert_eq(atomic_load(&live_slot("h")->state), old_tat, "its debt, exactly");
        thr_clock_advance(T.a, TI);
        cr_assert_eq(try1("h", &r), 1, "one token per interval, as if never evicted");
        cr_assert_eq(try1("h", &r), 0);
        cr_assert_leq(count(THR_SLOT_LIVE, NULL, NULL), 4);
}

/* ---------------------------------------------------------------- reservations */

Test(evict, reservation_cancel_after_reuse_fails)
{
        make1(1, 0, THR_FULL_EVICT);
        char y[32];
        key_at(home_of("k"), "y", y, sizeof(y));
        struct thr_result r;
        struct thr_reservation rv;
        for (uint64_t i = 0; i < BU; i++)
                cr_assert_eq(try1("k", &r), 1);
        cr_assert_eq(thr_limiter_reserve(L, "k", 1, 1, SEC, &rv), 0);
        cr_assert_eq(rv.wait_ns, TI);
        cr_assert_eq(thr_reservation_cancel(&rv), 1, "same slot, not due: given back");
        cr_assert_eq(thr_limiter_reserve(L, "k", 1, 1, SEC, &rv), 0);
        struct thr_slot *ks = live_slot("k");
        uint32_t gen = gen_of(ks);
        cr_assert_eq(atomic_load(&ks->state), thr_rv_priv(&rv)->state);

        cr_assert_eq(try1("x", &r), 0, "x evicts k (capacity 1) and starts at its TAT");
        cr_assert_eq(status(ks), THR_SLOT_DEAD);
        cr_assert_eq(thr_reservation_cancel(&rv), 0, "retiring slot: kept");
        cr_assert_eq(atomic_load(&ks->state), THR_TAT_DEAD);

        struct shm_gp_result res = grace(SEC, NULL, NULL);
        EXPECT_PASS(maint(res.done, NULL), 0, 1, 0, -1);
        cr_assert_eq(try1(y, &r), 0, "y evicts x and reuses k's old slot");
        cr_assert_eq(live_slot(y), ks);
        cr_assert_eq(gen_of(ks), gen + 1);
        /* y started at the shard's floor, k's TAT: the state word alone cannot tell them apart */
        cr_assert_eq(atomic_load(&ks->state), thr_rv_priv(&rv)->state);
        cr_assert_lt(now_ns(), rv.due_ns, "not due yet: only the generation refuses");
        cr_assert_eq(thr_reservation_cancel(&rv), 0, "another key's slot: kept");
        cr_assert_eq(atomic_load(&ks->state), thr_rv_priv(&rv)->state, "y's state untouched");
        cr_assert_eq(status(ks), THR_SLOT_LIVE);
}

/* ---------------------------------------------------------------- tags and membarrier */

Test(evict, tags_are_widened_against_the_counter_never_compared_modulo_2_32)
{
        cr_assert_not(shm_tag_done(5, 0, 10), "nothing is done before a scan completed");
        cr_assert(shm_tag_done(5, 5, 10));
        cr_assert_not(shm_tag_done(6, 5, 10));
        /* a daemon restarted with the counter past 2^31: done = 0 is never enough */
        cr_assert_not(shm_tag_done(0x80000006u, 0, 0x80000005ull));
        /* across 2^32: period 2^32 + 2 (tag 2) is not done when 2^32 - 1 is */
        uint64_t c = (1ull << 32) + 1;
        cr_assert_not(shm_tag_done(2, (1ull << 32) - 1, c));
        cr_assert(shm_tag_done(2, (1ull << 32) + 2, c + 1));
        /* a reader stalled 2^31 + 1 periods back holds done there: a new tag is not done */
        uint64_t now = 100 + (1ull << 31) + 3;
        cr_assert_not(shm_tag_done((uint32_t)(now + 1), 100, now));
        /* a slot retiring longer than 2^32 periods waits another round, never less */
        cr_assert_not(shm_tag_done(7, 6, 7 + (1ull << 32)));
        cr_assert(shm_tag_done(7, 7 + (1ull << 32), 7 + (1ull << 32)));
        /* a tag no retirer could have written (beyond counter + 2) is never done */
        cr_assert_not(shm_tag_done(13, 12, 10));
}

/* Under seccomp, membarrier() answers EINVAL (as on nohz_full CPUs for the global command). */
static void gp_without_membarrier(void)
{
        scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
        if (!ctx || seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EINVAL), SCMP_SYS(membarrier), 0) ||
            seccomp_load(ctx))
                _exit(2);
        uint64_t gp;
        _exit(shm_gp_start(&T.map, &gp) == -EINVAL ? 0 : 3);
}

Test(evict, a_failing_membarrier_is_reported_in_the_header)
{
        idle_key();
        atomic_store(&shm_hdr(&T.map)->mb_fallback, 1); /* a client could not register */
        pid_t pid = tfork();
        cr_assert_geq(pid, 0);
        if (pid == 0)
                gp_without_membarrier();
        int st;
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x", st);
        cr_assert_eq(atomic_load(&shm_hdr(&T.map)->gp_error), EINVAL, "gp_error says why");
        uint64_t gp;
        cr_assert_eq(shm_gp_start(&T.map, &gp), 0, "the global membarrier works here");
        cr_assert_eq(atomic_load(&shm_hdr(&T.map)->gp_error), 0, "and the report clears");
}

/* ---------------------------------------------------------------- reach, reuse by inserters */

/* Keys KEY_<round>_<i> for I < N through try1; returns how many were admitted. */
static int insert_round(const char *prefix, int n)
{
        struct thr_result r;
        int ok = 0;
        char key[32];
        for (int i = 0; i < n; i++) {
                snprintf(key, sizeof(key), "%s%d", prefix, i);
                int rc = try1(key, &r);
                cr_assert(rc == 0 || rc == 1, "%s: %d", key, rc);
                ok += rc;
        }
        return ok;
}

/* Every key idle (past its TTL, no debt), then one pass that evicts them: DONE as given. */
static uint64_t evict_all(uint64_t done)
{
        clock_to(now_ns() + TTL + BU * TI + 1);
        return maint(done, NULL).evicted;
}

Test(evict, an_inserter_reuses_a_retired_slot_once_its_grace_period_is_done)
{
        make1(8, TTL, THR_FULL_DENY); /* one shard of 8 * 1.5 + 8 = 20 slots */
        uint32_t n;
        slot0(&n);
        cr_assert_eq(n, 20);
        struct thr_shard *sh = shard0();
        struct thr_table *tb = ttable(&T, "l");
        /* Two rounds of 8 keys, each evicted by a pass that knows of no finished period (done 0):
         * 16 slots retiring, 4 EMPTY, no grace period anywhere (the header's gp_done is 0). */
        cr_assert_eq(insert_round("a", 8), 8);
        cr_assert_eq(evict_all(0), 8);
        cr_assert_eq(insert_round("b", 8), 8);
        cr_assert_eq(evict_all(0), 8);
        cr_assert_eq(count(THR_SLOT_DEAD, NULL, NULL), 16);
        cr_assert_eq(atomic_load(&shm_hdr(&T.map)->gp_done), 0);
        /* Retiring slots are not places: only the 4 EMPTY ones take keys (every probe wraps
         * round the shard to them), the other 4 inserts find no room. */
        cr_assert_eq(insert_round("c", 8), 4, "a slot still retiring is never reused");
        cr_assert_eq(atomic_load(&tb->insert_fail), 4);
        cr_assert_eq(atomic_load(&sh->reclaimed), 0);
        cr_assert_eq(evict_all(0), 4);
        /* A grace period completes (the scan stores gp_done); no pass marks anything FREE: the
         * inserters reuse the retired slots themselves, each once. */
        struct shm_gp_result res = grace(SEC, NULL, NULL);
        cr_assert_eq(atomic_load(&shm_hdr(&T.map)->gp_done), res.done);
        cr_assert_eq(count(THR_SLOT_DEAD, NULL, NULL), 20);
        cr_assert_eq(insert_round("d", 8), 8, "room again without a maintenance pass");
        cr_assert_eq(atomic_load(&tb->insert_fail), 4);
        cr_assert_eq(atomic_load(&sh->reclaimed), 8, "each new key took a retired slot");
        struct thr_slot *s = NULL;
        cr_assert_eq(count(THR_SLOT_LIVE, "d7", &s), 1);
        cr_assert_geq(gen_of(s), 2, "its generation moved on");
        cr_assert_eq(count(THR_SLOT_DEAD, NULL, NULL), 12);
}

/* Whether shm_table_lookup (bounded by the home's reach) finds every live key where it is. */
static void assert_live_keys_reachable(void)
{
        struct shm_lim_snap sn = snap_of();
        const struct thr_table *tb = ttable(&T, "l");
        uint32_t n;
        struct thr_slot *s = slot0(&n);
        for (uint32_t i = 0; i < n; i++) {
                if (status(&s[i]) != THR_SLOT_LIVE)
                        continue;
                uint64_t h = shm_hash(shm_hdr(&T.map)->hash_key, s[i].key, s[i].key_len);
                struct thr_slot *found =
                    shm_table_lookup(T.map.base, tb, h, s[i].key, s[i].key_len);
                cr_assert_eq(found, &s[i], "slot %u (%.*s): beyond its home's reach", i,
                             (int)s[i].key_len, (const char *)s[i].key);
        }
        (void)sn;
}

Test(evict, every_live_key_lies_within_its_homes_reach_and_a_pass_lowers_it)
{
        make1(64, TTL, THR_FULL_EVICT); /* one shard of 104 slots */
        uint32_t n;
        struct thr_slot *s = slot0(&n);
        uint64_t rng = 0x9e3779b97f4a7c15ull, done = 0;
        char key[32];
        struct thr_result r;
        uint32_t raised = 0;
        for (int step = 0; step < 3000; step++) {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                snprintf(key, sizeof(key), "k%u", (unsigned)(rng % 400));
                int rc = try1(key, &r);
                cr_assert(rc == 0 || rc == 1, "%s: %d", key, rc);
                if (step % 50 == 49) { /* time passes; the daemon's pass and a grace period */
                        thr_clock_advance(T.a, (rng >> 20) % (2 * TTL));
                        maint(done, NULL);
                        done = grace(SEC, NULL, NULL).done;
                }
                for (uint32_t i = 0; i < n; i++)
                        raised += atomic_load(&s[i].reach) > 0;
                assert_live_keys_reachable();
        }
        cr_assert_gt(raised, 0, "some key was displaced from its home (the test tests something)");
        /* everything idle and evicted, the slots reclaimed: no home has a live key any more, and
         * a pass sets every reach back to 0 */
        evict_all(done);
        done = grace(SEC, NULL, NULL).done;
        maint(done, NULL);
        cr_assert_eq(count(THR_SLOT_LIVE, NULL, NULL), 0);
        for (uint32_t i = 0; i < n; i++)
                cr_assert_eq(atomic_load(&s[i].reach), 0, "slot %u: reach %u", i,
                             (unsigned)atomic_load(&s[i].reach));
}

/* The slots a pass examines: scan_budget, or enough to sweep the table in half its TTL. */
Test(evict, pass_budget_sweeps_a_table_within_half_its_ttl)
{
        struct thr_table geo = {.nshards = 4, .shard_slots = 100}; /* 400 slots */
        cr_assert_eq(shm_maint_budget(&geo, 64, 10 * MS, 0), 64, "no TTL: the budget");
        cr_assert_eq(shm_maint_budget(&geo, 1000, 10 * MS, 20 * MS), 1000, "past the table");
        cr_assert_eq(shm_maint_budget(&geo, 64, 10 * MS, 20 * MS), 400, "one pass in TTL/2");
        cr_assert_eq(shm_maint_budget(&geo, 64, 10 * MS, 30 * MS), 400, "1.5 passes: one");
        cr_assert_eq(shm_maint_budget(&geo, 64, 100 * MS, SEC), 100, "5 passes: a shard each");
        cr_assert_eq(shm_maint_budget(&geo, 64, 100 * MS, 3 * SEC), 100,
                     "15 passes: one shard, what a budget of 64 buys anyway");
        cr_assert_eq(shm_maint_budget(&geo, 64, 100 * MS, MS), 400, "a TTL under a pass");
        cr_assert_eq(shm_maint_budget(&geo, 64, 0, SEC), 400, "no period: every pass");
        cr_assert_eq(shm_maint_budget(&geo, 64, 100 * MS, 7 * 100 * MS), 200,
                     "3 passes: 2 shards each (whole shards, rounded up)");
}
