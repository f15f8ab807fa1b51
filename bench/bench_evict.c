/*
 * bench_evict.c - what the daemon's eviction costs: the time of a full maintenance pass over a
 * table of N keys (default 1 000 000), in the three states a pass meets, and of one grace period.
 *
 *   bench_evict [--keys N] [--runs R] [--backing auto|shm|huge] [--json] [--quick]
 *
 * Method: each run builds a fresh manual-clock arena (so which keys are idle is exact, not a
 * matter of timing) holding one limiter of capacity N (idle_ttl 1 s), inserts N distinct keys
 * through the public thr_limiter_try, then times with CLOCK_MONOTONIC:
 *   scan     a whole-table shm_table_maintain when no key is idle yet (the steady state);
 *   evict    the same after the clock passed every key's TAT + idle_ttl: every key evicted
 *            (state CAS, then meta CAS, counters);
 *   gp       shm_gp_start + shm_gp_scan (membarrier and a read of every reader record);
 *   reclaim  the pass after that grace period: every slot freed, probe runs trimmed to EMPTY.
 * The daemon runs the same function with a budget (scan_budget slots per limiter per
 * maintenance_ms), so a full pass takes slots / scan_budget maintenance periods of wall time;
 * this measures the CPU it costs. Reported: median (min-max) over R runs, ms per pass and ns per
 * slot. Benchmarks report; they never assert.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shm.h"
#include "sysinfo.h"
#include "throttle/throttle.h"

enum phase { P_INSERT, P_SCAN, P_EVICT, P_GP, P_RECLAIM, NPHASES };
static const char *const phase_name[NPHASES] = {"insert", "scan", "evict", "gp", "reclaim"};

struct opts {
        uint64_t keys;
        int runs;
        enum shm_hugepages huge;
        int json;
};

struct run {
        double ms[NPHASES];
        uint64_t slots, evicted, reclaimed, trimmed;
        uint32_t backing;
};

static double now_ms(void)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

static int one_run(const struct opts *o, int i, struct run *r, char *err, size_t errlen)
{
        struct shm_limiter_spec lim = {.rate_n = 1000,
                                       .period_ns = 1000000000ull,
                                       .burst = 10,
                                       .initial = 10,
                                       .capacity = o->keys,
                                       .idle_ttl_ns = 1000000000ull,
                                       .on_full = THR_FULL_DENY};
        snprintf(lim.name, sizeof(lim.name), "evict");
        struct shm_arena_spec spec = {.hugepages = o->huge,
                                      .mode = 0600,
                                      .gid = (gid_t)-1,
                                      .clock = THR_CLOCK_MANUAL,
                                      .max_limiters = 2,
                                      .max_readers = 64,
                                      .nlimiters = 1,
                                      .limiters = &lim};
        snprintf(spec.name, sizeof(spec.name), "bench-evict.%ld.%d", (long)getpid(), i);
        struct shm_map m;
        int rc = shm_arena_create(&spec, &m, err, errlen);
        if (rc < 0)
                return rc;
        struct thr_hdr *h = shm_hdr(&m);
        r->backing = h->backing;
        thr_arena *a = NULL;
        thr_limiter *l = NULL;
        rc = thr_arena_open(m.path, 0, &a);
        if (rc == 0)
                rc = thr_limiter_open(a, "evict", &l);
        if (rc < 0) {
                snprintf(err, errlen, "open: %s", thr_strerror(rc));
                goto out;
        }
        double t0 = now_ms();
        char key[32];
        for (uint64_t k = 0; k < o->keys; k++) {
                int len = snprintf(key, sizeof(key), "user:%" PRIu64, k);
                if (thr_limiter_try(l, key, (size_t)len, 1, NULL) != 1) {
                        snprintf(err, errlen, "key %" PRIu64 " was not admitted", k);
                        rc = -EIO;
                        goto out;
                }
        }
        r->ms[P_INSERT] = now_ms() - t0;
        struct shm_lim_snap snap;
        rc = shm_dir_snapshot(&m, (uint32_t)shm_dir_find(&m, "evict"), &snap);
        if (rc < 0) {
                snprintf(err, errlen, "snapshot: %s", strerror(-rc));
                goto out;
        }
        r->slots = (uint64_t)snap.table.nshards * snap.table.shard_slots;
        uint64_t done = 0;
        for (int p = P_SCAN; p < NPHASES; p++) {
                if (p == P_EVICT)
                        atomic_store(&h->manual_now_ns, 10 * 1000000000ull);
                if (p == P_GP) {
                        struct shm_gp_result res;
                        uint64_t gp;
                        t0 = now_ms();
                        rc = shm_gp_start(&m, &gp);
                        if (rc == 0)
                                rc = shm_gp_scan(&m, gp, shm_now_ns(h), UINT64_MAX, &res, NULL,
                                                 NULL);
                        r->ms[p] = now_ms() - t0;
                        if (rc < 0) {
                                snprintf(err, errlen, "grace period: %s", strerror(-rc));
                                goto out;
                        }
                        done = res.done;
                        continue;
                }
                struct shm_maint_args ma = {.now_units = shm_now_ns(h) * snap.params.k,
                                            .ttl_units = snap.params.idle_ttl_ns * snap.params.k,
                                            .tag = shm_retire_tag(h),
                                            .done = done,
                                            .me = shm_lock_daemon(0)};
                struct shm_maint_stats st = {0};
                uint32_t cursor = 0;
                t0 = now_ms();
                shm_table_maintain(&m, &snap, &ma, &cursor, UINT64_MAX, &st);
                r->ms[p] = now_ms() - t0;
                if (p == P_EVICT)
                        r->evicted = st.evicted;
                if (p == P_RECLAIM) {
                        r->reclaimed = st.reclaimed;
                        r->trimmed = st.trimmed;
                }
        }
out:
        if (l)
                thr_limiter_close(l);
        if (a)
                thr_arena_close(a);
        unlink(m.path);
        shm_arena_detach(&m);
        return rc;
}

static int parse(int argc, char **argv, struct opts *o)
{
        static const struct option lo[] = {
            {"keys", required_argument, 0, 'k'},    {"runs", required_argument, 0, 'r'},
            {"backing", required_argument, 0, 'b'}, {"json", no_argument, 0, 'j'},
            {"quick", no_argument, 0, 'q'},         {0, 0, 0, 0}};
        *o = (struct opts){.keys = 1000000, .runs = 5, .huge = SHM_HUGE_AUTO};
        int c;
        while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
                switch (c) {
                case 'k':
                        o->keys = strtoull(optarg, NULL, 10);
                        break;
                case 'r':
                        o->runs = atoi(optarg);
                        break;
                case 'b':
                        o->huge = !strcmp(optarg, "shm")    ? SHM_HUGE_OFF
                                  : !strcmp(optarg, "huge") ? SHM_HUGE_REQUIRE
                                                            : SHM_HUGE_AUTO;
                        break;
                case 'j':
                        o->json = 1;
                        break;
                case 'q':
                        o->keys = 20000;
                        o->runs = 2;
                        break;
                default:
                        return -1;
                }
        }
        return o->keys && o->runs > 0 && o->runs <= 100 ? 0 : -1;
}

int main(int argc, char **argv)
{
        struct opts o;
        if (parse(argc, argv, &o) < 0) {
                fprintf(stderr, "usage: bench_evict [--keys N] [--runs R] [--backing "
                                "auto|shm|huge] [--json] [--quick]\n");
                return 2;
        }
        struct sysinfo si;
        sysinfo_read(&si);
        struct run runs[100];
        char err[512] = "";
        for (int i = 0; i < o.runs; i++) {
                if (one_run(&o, i, &runs[i], err, sizeof(err)) < 0) {
                        fprintf(stderr, "bench_evict: run %d: %s\n", i, err);
                        return 1;
                }
        }
        double med[NPHASES], lo[NPHASES], hi[NPHASES];
        for (int p = 0; p < NPHASES; p++) {
                double v[100];
                for (int i = 0; i < o.runs; i++)
                        v[i] = runs[i].ms[p];
                qsort(v, (size_t)o.runs, sizeof(double), cmp_double);
                med[p] = o.runs % 2 ? v[o.runs / 2] : (v[o.runs / 2 - 1] + v[o.runs / 2]) / 2;
                lo[p] = v[0];
                hi[p] = v[o.runs - 1];
        }
        const struct run *r0 = &runs[0];
        const char *backing = r0->backing == THR_BACKING_HUGETLBFS ? "hugetlbfs" : "shm";
        if (o.json) {
                printf("{\"bench\":\"evict\",\"date\":\"%s\",\"cpu\":\"%s\",\"cpus\":%ld,"
                       "\"kernel\":\"%s\",\"keys\":%" PRIu64 ",\"slots\":%" PRIu64
                       ",\"runs\":%d,\"backing\":\"%s\",\"evicted\":%" PRIu64
                       ",\"reclaimed\":%" PRIu64 ",\"phases\":{",
                       si.date, si.cpu, si.cpus, si.kernel, o.keys, r0->slots, o.runs, backing,
                       r0->evicted, r0->reclaimed);
                for (int p = 0; p < NPHASES; p++)
                        printf("%s\"%s\":{\"median_ms\":%.3f,\"min_ms\":%.3f,\"max_ms\":%.3f}",
                               p ? "," : "", phase_name[p], med[p], lo[p], hi[p]);
                printf("}}\n");
                return 0;
        }
        printf("# bench_evict: one maintenance pass over a whole table (shm_table_maintain, as "
               "the daemon runs it)\n");
        printf("# machine: %s, %ld cpus, kernel %s, clocksource %s, %s\n", si.cpu, si.cpus,
               si.kernel, si.clocksource, si.date);
        printf("# method: %d runs, each a fresh manual-clock arena, %" PRIu64 " keys in %" PRIu64
               " slots, backing %s; median (min-max) of CLOCK_MONOTONIC per phase\n",
               o.runs, o.keys, r0->slots, backing);
        printf("# every run: evicted %" PRIu64 ", reclaimed %" PRIu64 ", trimmed %" PRIu64 "\n",
               r0->evicted, r0->reclaimed, r0->trimmed);
        printf("%-8s %12s %22s %10s\n", "phase", "ms median", "(min-max)", "ns/slot");
        for (int p = 0; p < NPHASES; p++) {
                double per = p == P_GP ? 0 : med[p] * 1e6 / (double)r0->slots;
                if (p == P_INSERT)
                        per = med[p] * 1e6 / (double)o.keys;
                printf("%-8s %12.3f   (%8.3f-%8.3f) %10.1f%s\n", phase_name[p], med[p], lo[p],
                       hi[p], per, p == P_INSERT ? " per key (thr_limiter_try, new keys)" : "");
        }
        return 0;
}
