/*
 * test_shmctl_compose.c - proves that shmctl knows composed calls (shm/compose.h): `groups`
 * lists each named group the daemon wrote (config `compose = a, b`) with its members' names, a
 * retired member, a free entry or an index past the directory shown as such; `status` counts the
 * groups; a GCRA, window or budget key whose state word a composed call has marked shows in
 * `keys` and `get` as "marked by reader R (call seq S, ...)", in text and JSON, never as a huge
 * TAT, window count or balance; and a forged groups table (an offset outside the heap or
 * misaligned, a count past the heap's end, a record with a bad member count or name, garbage)
 * never crashes shmctl: `groups` exits 65 and says why, `status` says the table is not valid.
 *
 * Arenas are built with the shm API (the groups written by shm_arena_configure, as the daemon
 * writes them), then written through the test's own mapping; one test runs the real daemon on a
 * config with `[llm] compose = llm_requests, llm_input, host`. shmctl's runs and the output
 * checks are shmctl_run.h's.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "helpers.h"
#include "shm.h"
#include "shmctl_run.h"
#include "throttle/throttle.h"

TestSuite(shmctl_compose, .fini = fx_teardown, .timeout = 120);

static char out[OUT_MAX];

static struct shm_limiter_spec win_spec(const char *name, uint64_t n, uint64_t w)
{
        struct shm_limiter_spec s = lim_spec(name, n, w, 0, 0);
        s.kind = THR_KIND_WINDOW;
        return s;
}

static struct shm_limiter_spec budget_spec(const char *name, uint64_t initial)
{
        struct shm_limiter_spec s = lim_spec(name, 0, 0, 0, initial);
        s.kind = THR_KIND_BUDGET;
        return s;
}

static struct shm_group_spec group(const char *name, uint32_t n, const char *const *members)
{
        struct shm_group_spec g = {.n = n};
        snprintf(g.name, sizeof(g.name), "%s", name);
        for (uint32_t i = 0; i < n; i++)
                snprintf(g.members[i], sizeof(g.members[i]), "%s", members[i]);
        return g;
}

/* make_arena_readers with groups: limiters gcra (g), window (w), budget (b); 16 readers. */
static void make_composed(size_t ngroups, const struct shm_group_spec *groups)
{
        struct shm_limiter_spec lims[] = {lim_spec("g", 10, S, 10, 10), win_spec("w", 5, S),
                                          budget_spec("b", 1000)};
        char err[256] = "";
        struct shm_arena_spec spec = {.hugepages = SHM_HUGE_OFF,
                                      .mode = 0600,
                                      .gid = (gid_t)-1,
                                      .clock = THR_CLOCK_MANUAL,
                                      .max_limiters = 4, /* entry 3 stays free */
                                      .max_readers = 16,
                                      .spare_bytes = 1 << 16,
                                      .nlimiters = 3,
                                      .limiters = lims,
                                      .ngroups = ngroups,
                                      .groups = groups};
        snprintf(spec.name, sizeof(spec.name), "composed");
        snprintf(fx.dir, sizeof(fx.dir), "/dev/shm/thr-shmctl-XXXXXX");
        cr_assert_not_null(mkdtemp(fx.dir), "mkdtemp: %s", strerror(errno));
        spec.dir = fx.dir;
        int rc = shm_arena_create(&spec, &fx.map, err, sizeof(err));
        cr_assert_geq(rc, 0, "shm_arena_create: %s", err);
        rc = thr_arena_open(fx.map.path, 0, &fx.arena);
        cr_assert_eq(rc, 0, "thr_arena_open: %s", thr_strerror(rc));
}

/* The usual two groups: "all" = g, w, b and "pair" = b, g. */
static void make_two_groups(void)
{
        static const char *const all[] = {"g", "w", "b"}, *const pair[] = {"b", "g"};
        struct shm_group_spec gs[] = {group("all", 3, all), group("pair", 2, pair)};
        make_composed(2, gs);
}

static _Atomic uint64_t *groups_off(void)
{
        return &shm_hdr(&fx.map)->groups_off;
}

static struct thr_group_table *gtable(void)
{
        uint64_t off = atomic_load(groups_off());
        cr_assert_neq(off, 0, "the arena has a groups table");
        return shm_at(fx.map.base, off);
}

/* ---------------------------------------------------------------- groups */

Test(shmctl_compose, groups_lists_each_group_and_its_members)
{
        make_two_groups();
        uint64_t gen = gtable()->gen;
        cr_assert_eq(run(out, "groups"), 0, "%s", out);
        char want[128], line[512];
        snprintf(want, sizeof(want), "2 groups, configuration generation %" PRIu64 "\n", gen);
        assert_has(out, want);
        line_with(out, "all ", line, sizeof(line));
        cr_assert_str_eq(line, "all    3  g, w, b", "%s", out);
        line_with(out, "pair", line, sizeof(line));
        cr_assert_str_eq(line, "pair   2  b, g", "%s", out);
        assert_has(out, "GROUP  N  MEMBERS\n");

        cr_assert_eq(run(out, "--json groups"), 0, "%s", out);
        assert_json(out);
        snprintf(want, sizeof(want), "{\"gen\":%" PRIu64 ",\"groups\":[", gen);
        assert_has(out, want);
        assert_has(out, "{\"name\":\"all\",\"members\":[{\"index\":0,\"name\":\"g\",\"state\":"
                        "\"live\"},{\"index\":1,\"name\":\"w\",\"state\":\"live\"},{\"index\":2,"
                        "\"name\":\"b\",\"state\":\"live\"}]},");
        assert_has(out, "{\"name\":\"pair\",\"members\":[{\"index\":2,\"name\":\"b\",\"state\":"
                        "\"live\"},{\"index\":0,\"name\":\"g\",\"state\":\"live\"}]}]}\n");

        cr_assert_eq(run(out, "status"), 0, "%s", out);
        assert_has(out, "groups       2 named, for composed calls\n");
        cr_assert_eq(run(out, "--json status"), 0, "%s", out);
        assert_json(out);
        assert_has(out, ",\"groups\":2}\n");
}

Test(shmctl_compose, an_arena_without_groups_says_so)
{
        make_composed(0, NULL);
        cr_assert_eq(run(out, "groups"), 0, "%s", out);
        cr_assert_str_eq(out, "no groups (the configuration names none: compose = a, b)\n");
        cr_assert_eq(run(out, "--json groups"), 0, "%s", out);
        cr_assert_str_eq(out, "{\"gen\":null,\"groups\":[]}\n");
        cr_assert_eq(run(out, "status"), 0, "%s", out);
        cr_assert_null(strstr(out, "groups"), "no groups line when there are none:\n%s", out);
        cr_assert_eq(run(out, "--json status"), 0, "%s", out);
        assert_has(out, ",\"groups\":0}\n");
}

Test(shmctl_compose, a_retired_free_or_out_of_range_member_is_shown_as_such)
{
        make_two_groups();
        close_client();
        atomic_store(&entry_of("w")->state, THR_DIR_RETIRED); /* removed by a reload */
        struct thr_group_table *t = gtable();
        t->g[1].member[0] = 3;    /* a free directory entry (max_limiters 4, 3 used) */
        t->g[1].member[1] = 1000; /* past the directory */
        cr_assert_eq(run(out, "groups"), 0, "%s", out);
        char line[512];
        line_with(out, "all ", line, sizeof(line));
        cr_assert_str_eq(line, "all    3  g, w (retired), b", "%s", out);
        line_with(out, "pair", line, sizeof(line));
        cr_assert_str_eq(line, "pair   2  #3 (free entry), #1000 (no such entry)", "%s", out);

        cr_assert_eq(run(out, "--json groups"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "{\"index\":1,\"name\":\"w\",\"state\":\"retired\"}");
        assert_has(out, "{\"index\":3,\"name\":null,\"state\":\"free\"}");
        assert_has(out, "{\"index\":1000,\"name\":null,\"state\":\"out_of_range\"}");

        t->g[1].member[0] = UINT32_MAX; /* what the daemon writes for a member it did not find */
        atomic_store(&entry_of("g")->state, 7); /* an entry in no known state */
        cr_assert_eq(run(out, "groups"), 0, "%s", out);
        line_with(out, "pair", line, sizeof(line));
        cr_assert_str_eq(line, "pair   2  #4294967295 (no such entry), #1000 (no such entry)", "%s",
                         out);
        line_with(out, "all ", line, sizeof(line));
        cr_assert_str_eq(line, "all    3  #0 (entry in an unknown state), w (retired), b", "%s",
                         out);
}

/* `groups` must refuse the forged table (exit 65, saying why), and `status` still answer. */
static void expect_bad_table(const char *why)
{
        cr_assert_eq(run(out, "groups"), EX_DATAERR, "%s", out);
        assert_has(out, "not valid");
        assert_has(out, why);
        cr_assert_eq(run(out, "--json groups"), EX_DATAERR, "%s", out);
        cr_assert_eq(run(out, "status"), 0, "%s", out);
        assert_has(out, "groups       table not valid (shmctl groups tells why)\n");
        cr_assert_eq(run(out, "--json status"), 0, "%s", out);
        assert_json(out);
        assert_has(out, ",\"groups\":null}\n");
}

Test(shmctl_compose, a_forged_table_offset_or_count_is_refused)
{
        make_two_groups();
        close_client();
        uint64_t good = atomic_load(groups_off());
        const struct thr_hdr *h = shm_hdr(&fx.map);
        uint64_t bad[] = {64, /* in the header */
                          h->dir_off,  h->heap_off - THR_ALIGN, good + 8,
                          h->heap_end, h->heap_end + 4096,      (uint64_t)fx.map.size - THR_ALIGN,
                          UINT64_MAX,  UINT64_MAX - 63};
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
                atomic_store(groups_off(), bad[i]);
                expect_bad_table("groups table at offset");
        }
        atomic_store(groups_off(), good);
        struct thr_group_table *t = gtable();
        uint64_t room = (h->heap_end - good - sizeof(*t)) / sizeof(struct thr_group_rec);
        uint64_t counts[] = {room + 1, 1ull << 40, UINT64_MAX, UINT64_MAX / 128 + 1};
        for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
                t->count = counts[i];
                expect_bad_table("but the heap holds at most");
        }
        /* the most the heap holds is read, not refused: every record past the two is zero */
        t->count = room;
        cr_assert_eq(run(out, "groups"), EX_DATAERR, "%s", out);
        assert_has(out, "group 2 of the groups table: member count out of range");
        t->count = 2;
        cr_assert_eq(run(out, "groups"), 0, "%s", out);
}

Test(shmctl_compose, a_forged_group_record_is_refused)
{
        make_two_groups();
        close_client();
        struct thr_group_table *t = gtable();
        uint32_t counts[] = {0, THR_COMPOSE_MAX + 1, UINT32_MAX};
        for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
                t->g[1].n = counts[i];
                cr_assert_eq(run(out, "groups"), EX_DATAERR, "%s", out);
                assert_has(out, "group 1 of the groups table: member count out of range");
        }
        t->g[1].n = THR_COMPOSE_MAX; /* the most: its members (zero: entry 0) all shown */
        for (uint32_t k = 2; k < THR_COMPOSE_MAX; k++)
                t->g[1].member[k] = k;
        cr_assert_eq(run(out, "groups"), 0, "%s", out);
        assert_has(out, "pair   8  b, g, b, #3 (free entry), #4 (no such entry), #5 (no such");
        memset(t->g[0].name, 'x', sizeof(t->g[0].name)); /* not terminated */
        cr_assert_eq(run(out, "groups"), EX_DATAERR, "%s", out);
        assert_has(out, "group 0 of the groups table: name is not terminated");
}

Test(shmctl_compose, a_garbage_groups_table_never_crashes_shmctl)
{
        make_two_groups();
        close_client();
        struct thr_group_table *t = gtable();
        uint64_t x = 0x9e3779b97f4a7c15ull;
        for (int round = 0; round < 40; round++) {
                uint64_t *w = (uint64_t *)t;
                for (size_t i = 0; i < (sizeof(*t) + 2 * sizeof(t->g[0])) / 8; i++)
                        w[i] = next_rand(&x);
                t->count = round % 2 ? next_rand(&x) % 3 : t->count; /* sometimes plausible */
                for (int g = 0; g < 2; g++) {
                        t->g[g].name[THR_NAME_MAX] = round % 3 ? '\0' : t->g[g].name[0];
                        if (round % 4)
                                t->g[g].n = (uint32_t)(next_rand(&x) % 10);
                }
                int rc = run(out, "%sgroups", round % 2 ? "--json " : "");
                cr_assert(rc == 0 || rc == EX_DATAERR, "round %d: exit %d:\n%s", round, rc, out);
                if (rc == 0 && round % 2)
                        assert_json(out);
                cr_assert_eq(run(out, "status"), 0, "round %d:\n%s", round, out);
        }
}

/* ---------------------------------------------------------------- marked keys */

/* Reader record IDX's journal naming call SEQ in state ST, and the owner's pid. */
static void journal(uint32_t idx, uint64_t seq, enum thr_journal_state st, uint64_t pid)
{
        struct thr_reader *r = reader_of(idx);
        atomic_store(&r->journal.status, shm_journal_status(seq, st));
        atomic_store(&r->pid, pid);
}

/* Keys k1 and k2 in each of g, w and b (k1 used a little). */
static void make_keys(void)
{
        make_two_groups();
        spend("g", "k1", 2, 3);
        spend("g", "k2", 2, 1);
        spend("w", "k1", 2, 2);
        spend("w", "k2", 2, 1);
        thr_limiter *b;
        cr_assert_eq(thr_limiter_open(fx.arena, "b", &b), 0);
        cr_assert_eq(thr_budget_try(b, "k1", 2, 100, NULL), 0);
        cr_assert_eq(thr_budget_try(b, "k2", 2, 1, NULL), 0);
        thr_limiter_close(b);
        close_client();
}

/* The mark of reader R's call SEQ into KEY of limiter LIM. */
static void mark(const char *lim, const char *key, uint32_t r, uint64_t seq)
{
        atomic_store(&slot_of(lim, key)->state, shm_mark(r, seq));
}

/* No mark value shows as a number: neither the mark nor anything a state would give. */
static void assert_no_mark_numbers(const char *o)
{
        char v[32];
        snprintf(v, sizeof(v), "%" PRIu64, (uint64_t)THR_TAT_MARK_MIN >> 8); /* its digits */
        v[6] = '\0';
        cr_assert_null(strstr(o, v), "a mark's value shown as a number:\n%s", o);
}

Test(shmctl_compose, a_marked_gcra_key_shows_as_marked)
{
        make_keys();
        journal(3, 7, THR_JOURNAL_UNDECIDED, 4242);
        mark("g", "k1", 3, 7);
        cr_assert_eq(run(out, "keys g"), 0, "%s", out);
        char line[512];
        line_with(out, "k1", line, sizeof(line));
        cr_assert_str_eq(line,
                         "k1           -            -  marked by reader 3 (call seq 7, pid 4242, "
                         "undecided)",
                         "%s", out);
        line_with(out, "k2", line, sizeof(line));
        cr_assert_not_null(strstr(line, "9/10"), "the other key is as before: %s", out);
        cr_assert_lt(strstr(out, "k1") - out, strstr(out, "k2") - out, "marked first:\n%s", out);
        assert_no_mark_numbers(out);

        cr_assert_eq(run(out, "--json get g k1"), 0, "%s", out);
        assert_json(out);
        cr_assert_str_eq(out, "{\"key\":\"k1\",\"remaining\":null,\"burst\":10,\"reset_after_ns\":"
                              "null,\"tat\":null,\"fresh\":false,\"marked\":{\"reader\":3,\"seq\":"
                              "7,\"call\":\"undecided\",\"owner_pid\":4242}}\n");
        cr_assert_eq(run(out, "--json keys g"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "\"marked\":{\"reader\":3,\"seq\":7,");
        cr_assert_null(strstr(strstr(out, "\"k2\""), "marked"), "k2 is not marked:\n%s", out);

        /* the call decided; its journal names another call; a reader out of range */
        journal(3, 7, THR_JOURNAL_COMMIT, 4242);
        cr_assert_eq(run(out, "get g k1"), 0, "%s", out);
        assert_has(out, "marked by reader 3 (call seq 7, pid 4242, commit)");
        journal(3, 7, THR_JOURNAL_ABORT, 4242);
        cr_assert_eq(run(out, "get g k1"), 0, "%s", out);
        assert_has(out, "marked by reader 3 (call seq 7, pid 4242, abort)");
        journal(3, 8, THR_JOURNAL_UNDECIDED, 4242);
        cr_assert_eq(run(out, "get g k1"), 0, "%s", out);
        assert_has(out,
                   "marked by reader 3 (call seq 7, pid 4242, its journal names another call)");
        cr_assert_eq(run(out, "--json get g k1"), 0, "%s", out);
        assert_has(out, "\"call\":\"other\",\"owner_pid\":4242}}");
        journal(3, 7 + (1ull << 32), THR_JOURNAL_UNDECIDED, 4242); /* the low 32 bits name it */
        cr_assert_eq(run(out, "get g k1"), 0, "%s", out);
        assert_has(out, "(call seq 7, pid 4242, undecided)");
        mark("g", "k1", 16, 1); /* 16 reader records: 0 to 15 */
        cr_assert_eq(run(out, "get g k1"), 0, "%s", out);
        assert_has(out, "marked by reader 16 (call seq 1, no such reader record)");
        cr_assert_eq(run(out, "--json get g k1"), 0, "%s", out);
        assert_has(out, "\"marked\":{\"reader\":16,\"seq\":1,\"call\":null,\"owner_pid\":null}}");
}

Test(shmctl_compose, the_mark_range_s_ends)
{
        make_keys();
        struct thr_slot *s = slot_of("g", "k1");
        atomic_store(&s->state, THR_TAT_MARK_MAX); /* reader 2^20 - 1, seq 2^32 - 1 */
        cr_assert_eq(run(out, "get g k1"), 0, "%s", out);
        assert_has(out, "marked by reader 1048575 (call seq 4294967295, no such reader record)");
        atomic_store(&s->state, THR_TAT_MARK_MIN); /* reader 0, seq 0 */
        cr_assert_eq(run(out, "get g k1"), 0, "%s", out);
        assert_has(out, "marked by reader 0 (call seq 0, pid ");
        atomic_store(&s->state, THR_TAT_LIMIT); /* the largest TAT: a number, not a mark */
        cr_assert_eq(run(out, "--json get g k1"), 0, "%s", out);
        cr_assert_null(strstr(out, "marked"), "%s", out);
        char want[64];
        snprintf(want, sizeof(want), "\"tat\":%" PRIu64 ",", (uint64_t)THR_TAT_LIMIT);
        assert_has(out, want);
        atomic_store(&s->state, THR_TAT_MARK_MAX + 1); /* FREE: not a mark either */
        cr_assert_eq(run(out, "get g k1"), 0, "%s", out);
        cr_assert_null(strstr(out, "marked"), "%s", out);
}

Test(shmctl_compose, a_marked_window_key_shows_as_marked)
{
        make_keys();
        journal(5, 12, THR_JOURNAL_UNDECIDED, 77);
        mark("w", "k1", 5, 12);
        cr_assert_eq(run(out, "keys w"), 0, "%s", out);
        char line[512];
        line_with(out, "k1", line, sizeof(line));
        cr_assert_not_null(strstr(line, "k1      -        -          -            -  marked by "
                                        "reader 5 (call seq 12, pid 77, undecided)"),
                           "%s", out);
        line_with(out, "k2", line, sizeof(line));
        cr_assert_not_null(strstr(line, "1/5"), "the other key is as before: %s", out);
        assert_no_mark_numbers(out);
        cr_assert_eq(run(out, "--json get w k1"), 0, "%s", out);
        assert_json(out);
        cr_assert_str_eq(out, "{\"key\":\"k1\",\"used\":null,\"limit\":5,\"remaining\":null,"
                              "\"oldest_ns\":null,\"next_free_after_ns\":null,\"reset_after_ns\":"
                              "null,\"units\":null,\"marked\":{\"reader\":5,\"seq\":12,\"call\":"
                              "\"undecided\",\"owner_pid\":77}}\n");
        cr_assert_eq(run(out, "--json keys w"), 0, "%s", out);
        assert_json(out);
}

Test(shmctl_compose, a_marked_budget_key_shows_as_marked)
{
        make_keys();
        journal(2, 3, THR_JOURNAL_COMMIT, 99);
        mark("b", "k1", 2, 3);
        cr_assert_eq(run(out, "keys b"), 0, "%s", out);
        char line[512];
        line_with(out, "k1", line, sizeof(line));
        cr_assert_not_null(strstr(line, "marked by reader 2 (call seq 3, pid 99, commit)"), "%s",
                           out);
        cr_assert_null(strstr(out, "corrupt"), "a mark is not a corrupt word:\n%s", out);
        line_with(out, "k2", line, sizeof(line));
        cr_assert_not_null(strstr(line, "999"), "the other key is as before: %s", out);
        assert_no_mark_numbers(out);
        cr_assert_eq(run(out, "--json get b k1"), 0, "%s", out);
        assert_json(out);
        cr_assert_str_eq(out, "{\"key\":\"k1\",\"balance\":null,\"initial\":1000,\"paused\":false,"
                              "\"waiters\":0,\"need\":0,\"head_need\":0,\"granted\":0,\"tickets\":"
                              "0,\"grant_in_progress\":false,\"state\":null,\"marked\":{\"reader\""
                              ":2,\"seq\":3,\"call\":\"commit\",\"owner_pid\":99}}\n");
        cr_assert_eq(run(out, "--json get b k2"), 0, "%s", out);
        assert_has(out, "\"state\":999}\n");
        /* a top-bit word that is no mark is still corrupt */
        atomic_store(&slot_of("b", "k1")->state, 1ull << 63);
        cr_assert_eq(run(out, "get b k1"), 0, "%s", out);
        assert_has(out, "corrupt");
}

/* ---------------------------------------------------------------- the real daemon */

static struct tdaemon D;

static void dsetup(void)
{
        tdaemon_init(&D);
}

static void dteardown(void)
{
        tdaemon_fini(&D);
}

Test(shmctl_compose, groups_the_daemon_wrote, .init = dsetup, .fini = dteardown)
{
        char text[2048];
        snprintf(D.arena, sizeof(D.arena), "%s/throttle.%s", D.dir, D.name);
        D.in_dir = true;
        snprintf(text, sizeof(text),
                 "[arena]\nname = %s\ndir = %s\nclock = manual\nhugepages = off\nmode = 0600\n"
                 "max_limiters = 8\nmax_readers = 64\nspare = 1MiB\n\n"
                 "[daemon]\nheartbeat_ms = 20\nmaintenance_ms = 20\nmetrics =\n\n"
                 "[llm_requests]\nrate = 60/min\n\n"
                 "[llm_input]\nkind = window\nlimit = 10000\nwindow = 1min\ncapacity = 16\n\n"
                 "[host]\nkind = budget\ninitial = 1000000\n\n"
                 "[llm]\ncompose = llm_requests, llm_input, host\n",
                 D.name, D.dir);
        tdaemon_config_raw(&D, text);
        int d = tdaemon_start(&D, NULL);
        tdaemon_wait_ready(&D, d, 1);
        snprintf(fx.map.path, sizeof(fx.map.path), "%s", D.arena); /* run() runs shmctl on it */
        cr_assert_eq(run(out, "groups"), 0, "%s", out);
        char line[512];
        line_with(out, "llm ", line, sizeof(line));
        cr_assert_str_eq(line, "llm    3  llm_requests, llm_input, host", "%s", out);
        cr_assert_eq(run(out, "--json groups"), 0, "%s", out);
        assert_json(out);
        assert_has(out, "{\"name\":\"llm\",\"members\":[{\"index\":0,\"name\":\"llm_requests\","
                        "\"state\":\"live\"},{\"index\":1,\"name\":\"llm_input\",\"state\":"
                        "\"live\"},{\"index\":2,\"name\":\"host\",\"state\":\"live\"}]}]}\n");
        cr_assert_eq(run(out, "status"), 0, "%s", out);
        assert_has(out, "groups       1 named, for composed calls\n");

        /* a composed call: its keys show as ever once it is done */
        thr_group *g;
        cr_assert_eq(thr_group_open(D.a, "llm", &g), 0);
        struct thr_group_arg args[] = {{"tenant-a", 8, 1}, {NULL, 0, 400}, {"host", 4, 4000}};
        struct thr_compose_result r;
        cr_assert_eq(thr_group_try(g, args, &r), 1);
        thr_group_close(g);
        cr_assert_eq(run(out, "get host host"), 0, "%s", out);
        cr_assert_null(strstr(out, "marked"), "%s", out);
        assert_has(out, "996000");
        tdaemon_stop(&D, d);
        fx.map.path[0] = '\0';
}
