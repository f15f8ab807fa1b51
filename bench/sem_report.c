/*
 * sem_report.c - bench_sem's report: per configuration the median (min-max) pairs per second of
 * each backend and the per-run ratios throttle / sem_open and throttle / mutex; per backend the
 * ns per pair, fairness, context switches, the most holders seen; the runs one by one; or all
 * of it as one JSON document. Statistics only: bench_sem.c measures.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include <throttle/throttle.h>

#include "sem_bench.h"

const char *sem_bname(int b, unsigned max)
{
        static const char *const names[NB] = {"throttle", "sem_open", "mutex", "peer"};
        return b == B_MUTEX && max > 1 ? "mutex+cond" : names[b];
}

struct stat3 {
        double med, lo, hi;
        bool ok;
};

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

static struct stat3 stat_of(double *v, unsigned n)
{
        if (!n)
                return (struct stat3){0};
        qsort(v, n, sizeof(double), cmp_double);
        double med = n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
        return (struct stat3){med, v[0], v[n - 1], true};
}

/* FIELD of backend B's samples of configuration K (0: pairs/s, 1: fair, 2: cs/pair), or the
 * per-run ratio of throttle's pairs/s to B's (3). Failed samples are left out. */
static struct stat3 stat_cfg(const struct results *rs, unsigned k, int b, int field, unsigned runs)
{
        double v[MAX_RUNS];
        unsigned n = 0;
        for (unsigned r = 0; r < runs; r++) {
                const struct sample *s = &rs->s[k][b][r], *t = &rs->s[k][B_THR][r];
                if (s->failed || (field == 3 && (t->failed || s->pairs_s <= 0)))
                        continue;
                v[n++] = field == 0   ? s->pairs_s
                         : field == 1 ? s->fair
                         : field == 2 ? s->cs_per_pair
                                      : t->pairs_s / s->pairs_s;
        }
        return stat_of(v, n);
}

/* ---------------------------------------------------------------- report */

/* V with 3 significant digits and k/M. */
static const char *si3(double v, char *buf, size_t n)
{
        if (v >= 999.5e3)
                snprintf(buf, n, "%.3gM", v / 1e6);
        else if (v >= 999.5)
                snprintf(buf, n, "%.3gk", v / 1e3);
        else
                snprintf(buf, n, "%.3g", v);
        return buf;
}

static void print_rate(struct stat3 s)
{
        char a[16], b[16], c[16], cell[48];
        if (!s.ok) {
                printf("  %-21s", "failed");
                return;
        }
        snprintf(cell, sizeof(cell), "%s (%s-%s)", si3(s.med, a, sizeof(a)),
                 si3(s.lo, b, sizeof(b)), si3(s.hi, c, sizeof(c)));
        printf("  %-21s", cell);
}

static void print_ratio(struct stat3 s)
{
        char cell[48];
        if (!s.ok) {
                printf("  %-17s", "-");
                return;
        }
        snprintf(cell, sizeof(cell), "%.2f (%.2f-%.2f)", s.med, s.lo, s.hi);
        printf("  %-17s", cell);
}

static void print_header(const struct run_info *ri)
{
        printf("# bench_sem: acquire+release pairs per second on one semaphore key\n# command:");
        for (int i = 0; i < ri->argc; i++)
                printf(" %s", ri->argv[i]);
        printf("\n# machine: %s, %ld cpus, kernel %s, clocksource %s, %s\n", ri->si->cpu,
               ri->si->cpus, ri->si->kernel, ri->si->clocksource, ri->si->date);
        printf("# throttle arena: %s; ttl %.0f s, acquire timeout %.0f s, %u lease records a key\n",
               ri->backing, TTL_NS / 1e9, TIMEOUT_NS / 1e9, LEASES);
        printf("# method: %u runs x %g s per configuration and backend, backends alternated "
               "within each run (first one rotating);\n#   pairs/s = pairs done by all workers / "
               "(stop - start); median (min-max) over the runs; thr/x = per-run ratio of pairs/s\n",
               ri->o->runs, ri->o->seconds);
        printf("# each worker is a forked process looping: acquire 1 unit (blocking; try: "
               "non-blocking, 1 process); holders++ / check <= max / holders--; release\n");
        printf("# throttle: thr_sem_acquire/thr_sem_release, FIFO; a dead holder's lease is "
               "reclaimed (process gone, or ttl)\n");
        printf("# peer: the same semaphore through a peer a worker (thr_peer_acquire/"
               "thr_peer_release: level rule, idempotence)\n");
        printf("# sem_open: POSIX named semaphore (sem_wait/sem_post), not FIFO; a holder that "
               "dies LEAKS its unit forever\n");
        printf("# mutex: max 1: robust process-shared pthread mutex (EOWNERDEAD -> "
               "pthread_mutex_consistent), not FIFO;\n#   mutex+cond (max 4): a count under that "
               "mutex + a process-shared condvar: the mutex is recovered, a dead holder's units "
               "leak\n\n");
}

static void print_table(const struct run_info *ri, const struct results *rs)
{
        printf("%-3s %-5s %-7s  %-21s  %-21s  %-21s  %-21s  %-17s  %-17s  %-17s\n", "max", "procs",
               "form", "throttle pairs/s", "sem_open pairs/s", "mutex pairs/s", "peer pairs/s",
               "thr/sem_open", "thr/mutex", "thr/peer");
        for (unsigned k = 0; k < NCFG; k++) {
                const struct cfg *cf = &sem_cfgs[k];
                printf("%-3u %-5u %-7s", cf->max, cf->procs, cf->try_ ? "try" : "acquire");
                for (int b = 0; b < NB; b++)
                        print_rate(stat_cfg(rs, k, b, 0, ri->o->runs));
                print_ratio(stat_cfg(rs, k, B_POSIX, 3, ri->o->runs));
                print_ratio(stat_cfg(rs, k, B_MUTEX, 3, ri->o->runs));
                print_ratio(stat_cfg(rs, k, B_PEER, 3, ri->o->runs));
                printf("\n");
        }
}

/* Backend B's runs of configuration K summed up: the most holders, the odd counts. */
static struct sample sum_runs(const struct results *rs, unsigned k, int b, unsigned runs)
{
        struct sample t = {0};
        for (unsigned r = 0; r < runs; r++) {
                const struct sample *s = &rs->s[k][b][r];
                t.max_seen = s->max_seen > t.max_seen ? s->max_seen : t.max_seen;
                t.wait_max_ns = s->wait_max_ns > t.wait_max_ns ? s->wait_max_ns : t.wait_max_ns;
                t.busy += s->busy;
                t.errors += s->errors;
                t.dead += s->dead;
                t.first_err = t.first_err ? t.first_err : s->first_err;
                t.failed |= s->failed;
        }
        return t;
}

/* Per backend: ns per pair, fairness, context switches, the most holders seen, anything odd. */
static void print_details(const struct run_info *ri, const struct results *rs)
{
        unsigned n = ri->o->runs;
        printf("\nper backend: ns/pair (1e9 / median pairs/s), fair (slowest / fastest worker's "
               "pairs, median), cs/pair (voluntary\ncontext switches per pair, median), held "
               "(most holders ever seen / max), wait ms (throttle: the longest\nlease.waited_ns "
               "of any acquire), odd (busy tries, errors, EOWNERDEAD, failed runs)\n");
        printf("%-3s %-5s %-7s %-10s %10s %6s %8s %6s %8s  %s\n", "max", "procs", "form", "backend",
               "ns/pair", "fair", "cs/pair", "held", "wait ms", "odd");
        for (unsigned k = 0; k < NCFG; k++)
                for (int b = 0; b < NB; b++) {
                        const struct cfg *cf = &sem_cfgs[k];
                        struct stat3 p = stat_cfg(rs, k, b, 0, n);
                        struct sample t = sum_runs(rs, k, b, n);
                        char wait[16] = "-";
                        if (b == B_THR && !cf->try_) /* (a peer's acquire has no lease) */
                                snprintf(wait, sizeof(wait), "%.3f", (double)t.wait_max_ns / 1e6);
                        printf("%-3u %-5u %-7s %-10s %10.1f %6.2f %8.3f %3d/%-2u %8s", cf->max,
                               cf->procs, cf->try_ ? "try" : "acquire", sem_bname(b, cf->max),
                               p.ok ? 1e9 / p.med : 0, stat_cfg(rs, k, b, 1, n).med,
                               stat_cfg(rs, k, b, 2, n).med, t.max_seen, cf->max, wait);
                        if (t.busy || t.errors || t.dead || t.failed)
                                printf("  busy %" PRIu64 " errors %" PRIu64 " (%s) dead %u%s",
                                       t.busy, t.errors,
                                       t.first_err ? thr_strerror(t.first_err) : "-", t.dead,
                                       t.failed ? " FAILED RUNS" : "");
                        printf("%s\n", t.max_seen > (int32_t)cf->max ? "  VIOLATION" : "");
                }
}

static void print_runs(const struct run_info *ri, const struct results *rs)
{
        char a[16], b[16], d[16], e[16];
        printf("\nper run, pairs/s throttle/sem_open/mutex/peer (run r starts with backend r mod "
               "%d):\n",
               NB);
        for (unsigned k = 0; k < NCFG; k++) {
                printf("  max %u, %u proc %-7s", sem_cfgs[k].max, sem_cfgs[k].procs,
                       sem_cfgs[k].try_ ? "try" : "acquire");
                for (unsigned r = 0; r < ri->o->runs; r++)
                        printf(" %s/%s/%s/%s", si3(rs->s[k][0][r].pairs_s, a, sizeof(a)),
                               si3(rs->s[k][1][r].pairs_s, b, sizeof(b)),
                               si3(rs->s[k][2][r].pairs_s, d, sizeof(d)),
                               si3(rs->s[k][B_PEER][r].pairs_s, e, sizeof(e)));
                printf("\n");
        }
        printf("\nviolations %d, hangs %d\n", rs->violations, rs->hangs);
}

static void json_stat(const char *name, struct stat3 s)
{
        printf("\"%s\":{\"median\":%.4g,\"min\":%.4g,\"max\":%.4g}", name, s.med, s.lo, s.hi);
}

static void json_backend(const struct run_info *ri, const struct results *rs, unsigned k, int b)
{
        struct sample t = sum_runs(rs, k, b, ri->o->runs);
        printf("{\"backend\":\"%s\",", sem_bname(b, sem_cfgs[k].max));
        json_stat("pairs_per_s", stat_cfg(rs, k, b, 0, ri->o->runs));
        printf(",\"samples\":[");
        for (unsigned r = 0; r < ri->o->runs; r++)
                printf("%s%.1f", r ? "," : "", rs->s[k][b][r].pairs_s);
        printf("],\"fair_median\":%.3f,\"cs_per_pair_median\":%.4f,\"wait_max_ns\":%" PRIu64
               ",\"max_held\":[",
               stat_cfg(rs, k, b, 1, ri->o->runs).med, stat_cfg(rs, k, b, 2, ri->o->runs).med,
               t.wait_max_ns);
        for (unsigned r = 0; r < ri->o->runs; r++)
                printf("%s%d", r ? "," : "", rs->s[k][b][r].max_seen);
        printf("],\"busy\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"eownerdead\":%u,\"failed\":%s}",
               t.busy, t.errors, t.dead, t.failed ? "true" : "false");
}

void sem_print_json(const struct run_info *ri, const struct results *rs)
{
        printf("{\"bench\":\"sem\",\"method\":{\"seconds\":%g,\"runs\":%u,\"ttl_ns\":%llu,"
               "\"timeout_ns\":%llu,\"leases\":%u,\"quick\":%s,\"backing_requested\":\"%s\"},",
               ri->o->seconds, ri->o->runs, TTL_NS, TIMEOUT_NS, LEASES,
               ri->o->quick ? "true" : "false", ri->o->backing_name);
        printf("\"machine\":{\"cpu\":\"%s\",\"cpus_online\":%ld,\"kernel\":\"%s\","
               "\"clocksource\":\"%s\",\"date\":\"%s\"},\"backing\":\"%s\",\"results\":[",
               ri->si->cpu, ri->si->cpus, ri->si->kernel, ri->si->clocksource, ri->si->date,
               ri->backing);
        for (unsigned k = 0; k < NCFG; k++) {
                printf("%s{\"max\":%u,\"procs\":%u,\"form\":\"%s\",\"backends\":[", k ? "," : "",
                       sem_cfgs[k].max, sem_cfgs[k].procs, sem_cfgs[k].try_ ? "try" : "acquire");
                for (int b = 0; b < NB; b++) {
                        printf("%s", b ? "," : "");
                        json_backend(ri, rs, k, b);
                }
                printf("],");
                json_stat("thr_per_sem_open", stat_cfg(rs, k, B_POSIX, 3, ri->o->runs));
                printf(",");
                json_stat("thr_per_mutex", stat_cfg(rs, k, B_MUTEX, 3, ri->o->runs));
                printf(",");
                json_stat("thr_per_peer", stat_cfg(rs, k, B_PEER, 3, ri->o->runs));
                printf("}");
        }
        printf("],\"violations\":%d,\"hangs\":%d}\n", rs->violations, rs->hangs);
}

void sem_print_text(const struct run_info *ri, const struct results *rs)
{
        print_header(ri);
        print_table(ri, rs);
        print_details(ri, rs);
        print_runs(ri, rs);
}
