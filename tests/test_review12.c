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
Test(review12, a_scribbled_record_kind_never_crashes_another_clients_insert)
{
        struct shm_limiter_spec s = tspec("g", 10, SEC, 5, 5);
        s.capacity = 48;
        s.shards = 1;
        s.idle_ttl_ns = 3600 * SEC; /* nothing is ever idle: every walked slot is tested */
        s.on_full = THR_FULL_DENY;
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        thr_limiter *l = tlim_kept(&T, "g");
        cr_assert_eq(thr_clock_advance(T.a, SEC), 0);
        struct thr_result r;
        char key[32];
        for (int i = 0; i < 48; i++) {
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
