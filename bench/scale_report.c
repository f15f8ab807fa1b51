/*
 * scale_report.c - what bench_scale prints and writes: the latency histogram and the sample
 * statistics, the machine, the human table, the JSON document, the plot's data files, and the
 * baseline a later run is compared against.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "scale.h"
#include "scale_churn.h"
#include "scale_keys.h"

/* ---------------------------------------------------------------- histogram */

static unsigned hist_bucket(uint64_t ns)
{
        if (ns < HIST_LINEAR)
                return (unsigned)ns;
        if ((double)ns >= HIST_MAX_NS)
                return HIST_BUCKETS - 1;
        double d = log10((double)ns / HIST_LINEAR) * HIST_PER_DEC;
        unsigned j = (unsigned)d;
        return HIST_LINEAR +
               (j < HIST_PER_DEC * HIST_DECADES ? j : HIST_PER_DEC * HIST_DECADES - 1);
}

/* What a bucket stands for: its exact value below 1 us, its upper edge above. */
static double hist_value(unsigned b)
{
        if (b < HIST_LINEAR)
                return b;
        if (b == HIST_BUCKETS - 1)
                return HIST_MAX_NS;
        return HIST_LINEAR * pow(10.0, (double)(b - HIST_LINEAR + 1) / HIST_PER_DEC);
}

void hist_add(struct hist *h, uint64_t ns)
{
        h->n[hist_bucket(ns)]++;
}

void hist_merge(struct hist *into, const struct hist *from)
{
        for (unsigned i = 0; i < HIST_BUCKETS; i++)
                into->n[i] += from->n[i];
}

uint64_t hist_count(const struct hist *h)
{
        uint64_t n = 0;
        for (unsigned i = 0; i < HIST_BUCKETS; i++)
                n += h->n[i];
        return n;
}

double hist_quantile(const struct hist *h, double q)
{
        uint64_t total = hist_count(h), seen = 0;
        uint64_t want = (uint64_t)ceil(q * (double)total);
        if (!total)
                return 0;
        for (unsigned i = 0; i < HIST_BUCKETS; i++) {
                seen += h->n[i];
                if (seen >= want && seen)
                        return hist_value(i);
        }
        return HIST_MAX_NS;
}

double hist_max(const struct hist *h)
{
        for (unsigned i = HIST_BUCKETS; i-- > 0;)
                if (h->n[i])
                        return hist_value(i);
        return 0;
}

/* ---------------------------------------------------------------- statistics */

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

static double median_sorted(const double *t, unsigned n)
{
        return n & 1 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

/* Median, min, max and MAD (median absolute deviation from the median, unscaled). */
struct stat5 stat_of(const double *v, unsigned n)
{
        double t[MAX_SAMPLES], d[MAX_SAMPLES];
        if (n == 0)
                return (struct stat5){0};
        memcpy(t, v, n * sizeof(*v));
        qsort(t, n, sizeof(*t), cmp_double);
        double med = median_sorted(t, n);
        for (unsigned i = 0; i < n; i++)
                d[i] = fabs(t[i] - med);
        qsort(d, n, sizeof(*d), cmp_double);
        return (struct stat5){.med = med, .min = t[0], .max = t[n - 1], .mad = median_sorted(d, n)};
}

struct stat5 round_stat(const struct result *r, const double *v)
{
        double t[MAX_ROUNDS];
        unsigned n = 0;
        for (unsigned k = 0; k < MAX_ROUNDS; k++)
                if (r->rmask & (1u << k))
                        t[n++] = v[k];
        return stat_of(t, n);
}

static unsigned nrounds_of(uint32_t mask)
{
        return (unsigned)__builtin_popcount(mask);
}

/* ---------------------------------------------------------------- the machine */

/* Cost of the clock_gettime pair that times 1 op in 64 (reported; not subtracted). */
static double timer_pair_ns(void)
{
        struct timespec a, b, t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        for (int i = 0; i < 100000; i++) {
                clock_gettime(CLOCK_MONOTONIC, &a);
                clock_gettime(CLOCK_MONOTONIC, &b);
        }
        clock_gettime(CLOCK_MONOTONIC, &t1);
        return ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) / 1e5;
}

void scale_sysinfo_read(struct sysinfo *si)
{
        sysinfo_read(si);
        si->timer_ns = timer_pair_ns();
}

/* ---------------------------------------------------------------- text */

static const char *yes_no(int v)
{
        return v > 0 ? "yes" : v == 0 ? "no" : "unknown";
}

static void report_clocks(const struct sysinfo *si, const struct clocks *c)
{
        printf("  clocks   cost of one read (median of 7 loops of 200000 reads) and resolution; "
               "clocksource %s;\n           /proc/cpuinfo: constant_tsc %s, nonstop_tsc %s\n",
               si->clocksource, yes_no(c->constant_tsc), yes_no(c->nonstop_tsc));
        for (unsigned i = 0; i < NCLOCKS; i++) {
                if (!c->row[i].ok) {
                        printf("           %-23s n/a (not x86)\n", c->row[i].name);
                        continue;
                }
                double res = c->row[i].res_ns;
                if (i == 1)
                        printf("           %-23s %6.1f ns  resolution %.3g ms (the tick)\n",
                               c->row[i].name, c->row[i].ns, res / 1e6);
                else if (i >= 2)
                        printf("           %-23s %6.1f ns  resolution %.3g ns (one tick; %.2f GHz "
                               "measured)\n",
                               c->row[i].name, c->row[i].ns, res, res > 0 ? 1 / res : 0);
                else
                        printf("           %-23s %6.1f ns  resolution %.3g ns\n", c->row[i].name,
                               c->row[i].ns, res);
        }
}

static void report_work_cal(const struct work_cal *w)
{
        printf("  work     between two decisions W ns of other work: W / %.3f ns steps of a "
               "dependent multiply-add\n           chain in a register (no memory, no clock), "
               "calibrated at start (median of 7 runs of 1e6\n           steps):",
               w->ns_per_iter);
        for (unsigned i = 0; i < w->n; i++)
                if (w->work_ns[i])
                        printf(" %" PRIu64 " ns = %" PRIu64 " steps (measured %.0f ns a call);",
                               w->work_ns[i], w->iters[i], w->measured_ns[i]);
        printf(" latencies time the\n           decision alone, not the work\n");
}

void report_header(const struct opts *o, const struct sysinfo *si, const char *methods,
                   const struct run_env *e)
{
        printf("bench_scale: aggregate throughput and latency across processes, next to the "
               "floor and the alternatives\n  command  %s\n%s",
               o->cmdline, methods);
        printf(
            "  method   %u round%s: the whole set (scenario x backend x procs x work) is measured "
            "once per round,\n           rounds one after the other; in each round every "
            "(scenario, backend) is set up afresh\n           (keys inserted, untimed) and the "
            "backends of a scenario run in an order rotated by the\n           round (round r "
            "starts at backend r mod n). Per configuration: fork the workers (attach\n"
            "           after fork%s), 1 warm-up sample of %.3g s (discarded) + %u samples of "
            "%.3g s, all\n           workers started together by a barrier in shared memory; "
            "each walks its own precomputed\n           key sequence (xorshift64; Zipf s=1.0 by "
            "inverse CDF), cost 1; rate 1e9/s burst 1e9 (never\n           denies) except "
            "'denied' (1/h, burst 1), '10k@100/s' (100/s a key, burst 10) and '1k@10k/s'\n"
            "           (10000/s a key, burst 10); 1 op in 64 timed by a clock_gettime pair "
            "(%.1f ns per pair\n           here, included in the latencies) into a per-worker "
            "histogram\n",
            o->rounds, o->rounds == 1 ? "" : "s", o->pin ? ", pinned round-robin to CPUs" : "",
            o->seconds < WARMUP_MAX_S ? o->seconds : WARMUP_MAX_S, o->samples, o->seconds,
            si->timer_ns);
        printf(
            "  columns  every figure is the median across rounds of that round's figure "
            "(median of its samples;\n           percentiles of its merged histogram); Mops/s "
            "(min-max) = sum over workers of ops / own\n           wall time, and the range of "
            "the round medians; ns/op = wall ns per op per process; cpu =\n           CPU ns per "
            "op; x floor = floor Mops / this Mops; +ns = this ns/op - floor's ns/op (per\n"
            "           process, medians); the floor of both is `floor` (CLOCK_MONOTONIC + "
            "CAS); work = other work\n           between two decisions, ns\n");
        printf("  verdicts met / MISSED only when met / missed in every round, else unclear "
               "(met in k of N rounds)\n");
        printf("  cpu      %s (%ld online), clocksource %s\n  kernel   %s\n  date     %s\n",
               si->cpu, si->cpus, si->clocksource, si->kernel, si->date);
        printf("  hugepages pool %ld x %ld kB, %ld free at start; --backing %s\n", si->huge_total,
               si->huge_kb, si->huge_free, o->backing);
        report_clocks(si, &e->clk);
        report_work_cal(&e->cal);
        printf("\n");
        fflush(stdout);
}

/* Steal time, hugepage fallbacks and the arenas obtained: NOTE lines right after the header. */
void report_run_notes(const struct opts *o, const struct run_env *e, const struct result *r,
                      unsigned n)
{
        int any = 0;
        if (e->steal_all < 0)
                printf("NOTE steal time unknown (no /proc/stat)");
        else
                printf("NOTE steal time %.2f%% of all CPU ticks during the run (%.0f s)",
                       e->steal_all, e->secs);
        for (unsigned k = 0; k < e->rounds && e->steal_all >= 0; k++)
                printf("%s%.2f%%", k ? ", " : "; per round ", e->steal_round[k]);
        printf("\n");
        if (e->other_all >= 0) {
                printf("NOTE other processes used %.1f%% of all CPUs' time during the run (busy "
                       "ticks of /proc/stat less\n     this run's own CPU time)",
                       e->other_all);
                for (unsigned k = 0; k < e->rounds; k++)
                        printf("%s%.1f%%", k ? ", " : "; per round ", e->other_round[k]);
                printf("%s\n", e->other_all >= 10 ? ": a SHARED machine, figures are noisy" : "");
        }
        for (unsigned i = 0; i < n; i++) {
                if (!r[i].fell_back)
                        continue;
                if (!any)
                        printf("NOTE hugepage FALLBACK: wanted hugetlbfs, got /dev/shm in "
                               "(scenario backend procs work: rounds)");
                any = 1;
                printf("\n       %s %s %d %" PRIu64 ":", r[i].scenario, r[i].backend, r[i].procs,
                       r[i].work_ns);
                for (unsigned k = 0; k < MAX_ROUNDS; k++)
                        if (r[i].fell_back & (1u << k))
                                printf(" %u", k + 1);
        }
        printf(any ? "\n" : "NOTE no hugepage fallback (--backing %s)\n", o->backing);
        printf("arenas (first round; throttle, window and the floors):\n");
        for (unsigned i = 0; i < n; i++) {
                int seen = !r[i].ok || !r[i].note[0] || strncmp(r[i].note, "run failed", 10) == 0;
                for (unsigned j = 0; j < i && !seen; j++)
                        seen = r[j].ok && !strcmp(r[j].scenario, r[i].scenario) &&
                               !strcmp(r[j].note, r[i].note);
                if (seen)
                        continue;
                printf("  %-9s %s:", r[i].scenario, r[i].note);
                for (unsigned j = i; j < n; j++) {
                        int dup = 0;
                        if (!r[j].ok || strcmp(r[j].scenario, r[i].scenario) ||
                            strcmp(r[j].note, r[i].note))
                                continue;
                        for (unsigned k = i; k < j && !dup; k++)
                                dup = r[k].ok && !strcmp(r[k].scenario, r[j].scenario) &&
                                      !strcmp(r[k].backend, r[j].backend);
                        if (!dup)
                                printf(" %s", r[j].backend);
                }
                printf("\n");
        }
        printf("\n");
}

static unsigned table_rounds = 1;

void report_table_head(unsigned rounds)
{
        table_rounds = rounds;
        printf("%-9s %-15s %5s %5s %-22s %7s %7s %7s %7s %8s %7s %7s\n", "scenario", "backend",
               "procs", "work", "Mops/s med (min-max)", "ns/op", "cpu ns", "p50", "p99", "p99.9",
               "x floor", "+ns");
        fflush(stdout);
}

/* ---------------------------------------------------------------- churn: evictions per sample */

struct ev_field {
        const char *name;
        unsigned bit;
        size_t off;
};

static const struct ev_field ev_fields[] = {
    {"evicted_idle", BENCH_EV_IDLE, offsetof(struct bench_evictions, idle)},
    {"evicted_full", BENCH_EV_FULL, offsetof(struct bench_evictions, full)},
    {"reclaimed", BENCH_EV_RECLAIMED, offsetof(struct bench_evictions, reclaimed)},
    {"insert_fail", BENCH_EV_FAIL, offsetof(struct bench_evictions, insert_fail)},
    {"live_after", BENCH_EV_LIVE, offsetof(struct bench_evictions, live)},
    {"driver_passes", BENCH_EV_PASSES, offsetof(struct bench_evictions, passes)},
    {"lock_waits", BENCH_EV_LOCK, offsetof(struct bench_evictions, lock_waits)},
    {"repairs", BENCH_EV_LOCK, offsetof(struct bench_evictions, repairs)},
};
#define NEV_FIELDS (sizeof(ev_fields) / sizeof(ev_fields[0]))

static uint64_t ev_get(const struct bench_evictions *e, const struct ev_field *f)
{
        return *(const uint64_t *)((const char *)e + f->off);
}

/* Churn rows: one line per sample list, "name a/b/c". */
static void report_evictions(const struct result *r)
{
        printf("%8s new_keys ", "");
        for (unsigned s = 0; s < r->nsamples; s++)
                printf("%s%" PRIu64, s ? "/" : "", r->new_keys[s]);
        if (!r->ev_has)
                printf("  (no eviction counters)");
        for (unsigned i = 0; i < NEV_FIELDS; i++) {
                if (!(r->ev_has & ev_fields[i].bit))
                        continue;
                printf("  %s ", ev_fields[i].name);
                for (unsigned s = 0; s < r->nsamples; s++)
                        printf("%s%" PRIu64, s ? "/" : "", ev_get(&r->ev[s], &ev_fields[i]));
        }
        if (r->ev_has & BENCH_EV_TABLE) {
                printf("  empty_after ");
                for (unsigned s = 0; s < r->nsamples; s++)
                        printf("%s%" PRIu64, s ? "/" : "", r->ev[s].empty);
                printf("  miss_probe ");
                for (unsigned s = 0; s < r->nsamples; s++)
                        printf("%s%.1f", s ? "/" : "", r->ev[s].miss_probe);
        }
        if (r->denied)
                printf("  denied %" PRIu64 " (table full)", r->denied);
        uint64_t gpf = 0;
        for (unsigned s = 0; s < r->nsamples; s++)
                gpf += r->ev[s].gp_failed;
        if (gpf)
                printf("  GRACE PERIODS FAILED %" PRIu64 " (no membarrier: nothing reclaimed)",
                       gpf);
        printf("\n");
}

void report_churn_head(uint64_t capacity)
{
        double ttl_ms = (double)CHURN_TTL_NS / 1e6;
        printf("  (churn: capacity %" PRIu64
               " live keys, idle_ttl %.0f ms, on_full = evict; per op "
               "%u%% one of %" PRIu64 " hot keys,\n   %u%% the worker's next new key, the rest one "
               "of its last %u; throttle: eviction driver every %u ms,\n   >= %u slots a pass (the "
               "whole table if a sweep would take over TTL/2), then a grace period,\n   rescanned "
               "after 1, 2, 4... ms until it completes (as throttled); nginx-hash, nginx-real, "
               "mutex-local: nginx's LRU\n"
               "   expiry with idle %.0f ms; sharded-mutex, cas-local: a 64-slot sweep of idle "
               "keys when full;\n   redis: PX expiry; floor: word = id mod %" PRIu64 ", keys WRAP, "
               "no eviction.\n   Below each row, per sample: new keys made, then the backend's "
               "counters)\n",
               capacity, ttl_ms, CHURN_HOT_PCT,
               capacity / CHURN_HOT_DIV ? capacity / CHURN_HOT_DIV : 1, CHURN_NEW_PCT, CHURN_WIN,
               DRIVER_PERIOD, DRIVER_BUDGET, ttl_ms, capacity);
        fflush(stdout);
}

void report_row(const struct result *r)
{
        if (!r->ok) {
                printf("%-9s %-15s %5d %5" PRIu64 " %s\n", r->scenario, r->backend, r->procs,
                       r->work_ns, r->note);
                fflush(stdout);
                return;
        }
        struct stat5 m = round_stat(r, r->r_mops);
        struct stat5 ns = round_stat(r, r->r_nsop);
        struct stat5 cpu = round_stat(r, r->r_cpuns);
        char mb[64], fr[16] = "-", ov[16] = "-";
        snprintf(mb, sizeof(mb), "%.3g (%.3g-%.3g)", m.med, m.min, m.max);
        if (r->floor_ratio > 0) {
                snprintf(fr, sizeof(fr), "%.2f", r->floor_ratio);
                snprintf(ov, sizeof(ov), "%+.1f", r->floor_over_ns);
        }
        printf("%-9s %-15s %5d %5" PRIu64 " %-22s %7.1f %7.1f %7.0f %7.0f %8.0f %7s %7s",
               r->scenario, r->backend, r->procs, r->work_ns, mb, ns.med, cpu.med, r->p50, r->p99,
               r->p999, fr, ov);
        if (nrounds_of(r->rmask) < table_rounds)
                printf("  (%u of %u rounds: %s)", nrounds_of(r->rmask), table_rounds, r->note);
        if (r->errors)
                printf("  errors %" PRIu64, r->errors);
        printf("\n");
        if (strcmp(r->scenario, "churn") == 0)
                report_evictions(r);
        fflush(stdout);
}

void report_wait(const struct wait_result *w, unsigned n)
{
        printf("\nwait: thr_limiter_acquire (timeout: the time left in the run), one key, burst 1. "
               "The parent takes\nthe first place (due at once: D0); returns of all workers in "
               "time order are matched with the\nplaces in order. wake = return - own place's "
               "due (T after the place before; a call that did\nnot sleep starts the chain again "
               "and counts 0); sched = k-th return - (D0 + k*T), which adds\nevery slot lost when "
               "the queue ran dry. got/s = admissions / (end - D0)\n%-6s %10s %10s %8s %10s %10s "
               "%10s %10s  %s\n",
               "procs", "rate cfg/s", "got/s", "got/cfg", "wake p50", "wake p99", "wake max",
               "sched p99", "note");
        for (unsigned i = 0; i < n; i++) {
                if (!w[i].ok) {
                        printf("%-6d %s\n", w[i].procs, w[i].note);
                        continue;
                }
                printf("%-6d %10.0f %10.1f %8.4f %8.1fus %8.1fus %8.1fus %8.1fus  %s\n", w[i].procs,
                       w[i].rate_cfg, w[i].rate_got, w[i].rate_got / w[i].rate_cfg, w[i].p50 / 1e3,
                       w[i].p99 / 1e3, w[i].pmax / 1e3, w[i].sp99 / 1e3, w[i].note);
        }
        fflush(stdout);
}

/* ---------------------------------------------------------------- JSON */

static void json_str(FILE *f, const char *s)
{
        fputc('"', f);
        for (; s && *s; s++) {
                unsigned char c = (unsigned char)*s;
                if (c == '"' || c == '\\')
                        fprintf(f, "\\%c", c);
                else if (c < 0x20)
                        fprintf(f, "\\u%04x", c);
                else
                        fputc(c, f);
        }
        fputc('"', f);
}

static void json_arr(FILE *f, const char *name, const double *v, unsigned n)
{
        struct stat5 s = stat_of(v, n);
        fprintf(f,
                "\"%s\": {\"median\": %.6g, \"min\": %.6g, \"max\": %.6g, \"mad\": %.6g, "
                "\"samples\": [",
                name, s.med, s.min, s.max, s.mad);
        for (unsigned i = 0; i < n; i++)
                fprintf(f, "%s%.6g", i ? ", " : "", v[i]);
        fprintf(f, "]}");
}

static void json_u64s(FILE *f, const char *name, const struct result *r, const uint64_t *v,
                      size_t stride)
{
        fprintf(f, "\"%s\": [", name);
        for (unsigned s = 0; s < r->nsamples; s++)
                fprintf(f, "%s%" PRIu64, s ? ", " : "",
                        *(const uint64_t *)((const char *)v + s * stride));
        fprintf(f, "]");
}

/* Churn: per-sample lists; a counter the backend does not have is absent. */
static void json_evictions(FILE *f, const struct result *r)
{
        fprintf(f, ",\n      \"churn\": {");
        json_u64s(f, "new_keys", r, r->new_keys, sizeof(r->new_keys[0]));
        for (unsigned i = 0; i < NEV_FIELDS; i++) {
                if (!(r->ev_has & ev_fields[i].bit))
                        continue;
                fprintf(f, ", ");
                json_u64s(f, ev_fields[i].name, r,
                          (const uint64_t *)((const char *)&r->ev[0] + ev_fields[i].off),
                          sizeof(r->ev[0]));
        }
        if (r->ev_has & BENCH_EV_PASSES) {
                fprintf(f, ", ");
                json_u64s(f, "gp_failed", r, &r->ev[0].gp_failed, sizeof(r->ev[0]));
        }
        if (r->ev_has & BENCH_EV_TABLE) {
                fprintf(f, ", ");
                json_u64s(f, "empty_after", r, &r->ev[0].empty, sizeof(r->ev[0]));
                fprintf(f, ", \"miss_probe_after\": [");
                for (unsigned s = 0; s < r->nsamples; s++)
                        fprintf(f, "%s%.2f", s ? ", " : "", r->ev[s].miss_probe);
                fprintf(f, "]");
        }
        fprintf(f, "}");
}

/* Per round (null where that round did not measure it), and median/min/max across rounds. */
static void json_rounds(FILE *f, const char *name, const struct result *r, const double *v,
                        unsigned rounds)
{
        struct stat5 s = round_stat(r, v);
        fprintf(f, "\"%s\": {\"median\": %.6g, \"min\": %.6g, \"max\": %.6g, \"rounds\": [", name,
                s.med, s.min, s.max);
        for (unsigned k = 0; k < rounds; k++) {
                if (r->rmask & (1u << k))
                        fprintf(f, "%s%.6g", k ? ", " : "", v[k]);
                else
                        fprintf(f, "%snull", k ? ", " : "");
        }
        fprintf(f, "]}");
}

static void json_result(FILE *f, const struct result *r, unsigned rounds)
{
        fprintf(f,
                "    {\"scenario\": \"%s\", \"backend\": \"%s\", \"procs\": %d, \"work_ns\": "
                "%" PRIu64 ", \"ok\": %s, \"note\": ",
                r->scenario, r->backend, r->procs, r->work_ns, r->ok ? "true" : "false");
        json_str(f, r->note);
        fprintf(f, ", \"hugepage_fallback_rounds\": [");
        for (unsigned k = 0, first = 1; k < MAX_ROUNDS; k++)
                if (r->fell_back & (1u << k)) {
                        fprintf(f, "%s%u", first ? "" : ", ", k + 1);
                        first = 0;
                }
        fprintf(f, "]");
        if (r->ok) {
                fprintf(f, ",\n      \"round_medians\": {");
                json_rounds(f, "mops", r, r->r_mops, rounds);
                fprintf(f, ",\n        ");
                json_rounds(f, "ns_per_op_per_proc", r, r->r_nsop, rounds);
                fprintf(f, ",\n        ");
                json_rounds(f, "cpu_ns_per_op", r, r->r_cpuns, rounds);
                fprintf(f, ",\n        ");
                json_rounds(f, "p50_ns", r, r->r_p50, rounds);
                fprintf(f, ",\n        ");
                json_rounds(f, "p99_ns", r, r->r_p99, rounds);
                fprintf(f, ",\n        ");
                json_rounds(f, "p999_ns", r, r->r_p999, rounds);
                fprintf(f, "},\n      \"floor_over_ns\": %.2f", r->floor_over_ns);
                fprintf(f, ",\n      ");
                json_arr(f, "mops", r->mops, r->nsamples);
                fprintf(f, ",\n      ");
                json_arr(f, "ns_per_op_per_proc", r->nsop, r->nsamples);
                fprintf(f, ",\n      ");
                json_arr(f, "cpu_ns_per_op", r->cpuns, r->nsamples);
                fprintf(f,
                        ",\n      \"latency_ns\": {\"p50\": %.1f, \"p99\": %.1f, \"p999\": %.1f, "
                        "\"max\": %.1f, \"timed_ops\": %" PRIu64 "}, \"ops\": %" PRIu64
                        ", \"admitted\": %" PRIu64 ", \"denied\": %" PRIu64 ", \"errors\": %" PRIu64
                        ", \"floor_ratio\": %.4f, \"latency_note\": \"p50/p99/p999: medians across "
                        "rounds of each round's; max: over all rounds\"",
                        r->p50, r->p99, r->p999, r->pmax, r->lat_n, r->ops, r->admitted, r->denied,
                        r->errors, r->floor_ratio);
                if (strcmp(r->scenario, "churn") == 0)
                        json_evictions(f, r);
        }
        fprintf(f, "}");
}

static void json_wait(FILE *f, const struct wait_result *w)
{
        fprintf(f, "    {\"procs\": %d, \"ok\": %s, \"note\": ", w->procs,
                w->ok ? "true" : "false");
        json_str(f, w->note);
        fprintf(f,
                ", \"rate_configured\": %.3f, \"rate_achieved\": %.3f, \"seconds\": %.3f, "
                "\"scheduled\": %" PRIu64 ", \"admitted\": %" PRIu64 ", \"timeouts\": %" PRIu64
                ", \"did_not_sleep\": %" PRIu64 ", \"errors\": %" PRIu64 ", \"lateness_ns\": "
                "{\"p50\": %.1f, \"p99\": %.1f, \"max\": %.1f}, \"schedule_lateness_ns\": "
                "{\"p50\": %.1f, \"p99\": %.1f, \"max\": %.1f}}",
                w->rate_cfg, w->rate_got, w->secs, w->ideal, w->admitted, w->timeouts, w->dry,
                w->errors, w->p50, w->p99, w->pmax, w->sp50, w->sp99, w->spmax);
}

static void json_env(FILE *f, const struct opts *o, const struct run_env *e)
{
        fprintf(f, "  \"clocks\": {\"constant_tsc\": %d, \"nonstop_tsc\": %d, \"rows\": [",
                e->clk.constant_tsc, e->clk.nonstop_tsc);
        for (unsigned i = 0; i < NCLOCKS; i++) {
                fprintf(f, "%s\n    {\"clock\": \"%s\", ", i ? "," : "", e->clk.row[i].name);
                if (e->clk.row[i].ok)
                        fprintf(f, "\"ns_per_read\": %.2f, \"resolution_ns\": %.4g}",
                                e->clk.row[i].ns, e->clk.row[i].res_ns);
                else
                        fprintf(f, "\"ns_per_read\": null, \"resolution_ns\": null}");
        }
        fprintf(f, "]},\n  \"work_calibration\": {\"ns_per_step\": %.4f, \"levels\": [",
                e->cal.ns_per_iter);
        for (unsigned i = 0; i < e->cal.n; i++)
                fprintf(f,
                        "%s{\"work_ns\": %" PRIu64 ", \"steps\": %" PRIu64
                        ", \"measured_ns\": %.1f}",
                        i ? ", " : "", e->cal.work_ns[i], e->cal.iters[i], e->cal.measured_ns[i]);
        fprintf(f, "]},\n  \"steal_pct\": {\"run\": %.3f, \"rounds\": [", e->steal_all);
        for (unsigned k = 0; k < e->rounds; k++)
                fprintf(f, "%s%.3f", k ? ", " : "", e->steal_round[k]);
        fprintf(f, "]},\n  \"other_processes_cpu_pct\": {\"run\": %.3f, \"rounds\": [",
                e->other_all);
        for (unsigned k = 0; k < e->rounds; k++)
                fprintf(f, "%s%.3f", k ? ", " : "", e->other_round[k]);
        fprintf(f, "]},\n  \"run_seconds\": %.1f, \"rounds\": %u,\n", e->secs, o->rounds);
}

static void json_head(FILE *f, const struct opts *o, const struct sysinfo *si)
{
        fprintf(f, "{\n  \"benchmark\": \"bench_scale\",\n  \"command\": ");
        json_str(f, o->cmdline);
        fprintf(f,
                ",\n  \"method\": {\"rounds\": %u, \"backend_order\": \"rotated by the round\", "
                "\"samples\": %u, \"warmup_samples\": 1, \"warmup_seconds\": %.4g, "
                "\"seconds\": %.4g, \"timed_one_in\": 64, \"timer_pair_ns\": %.2f, \"pin\": %s, "
                "\"quick\": %s, "
                "\"backing_requested\": \"%s\", \"churn\": {\"idle_ttl_ns\": %llu, "
                "\"hot_pct\": %u, \"new_pct\": %u, \"window\": %u, \"hot_keys\": "
                "\"capacity/%u\", \"driver_period_ms\": %u, \"driver_budget_slots\": %u}, "
                "\"wait\": {\"rate_configured\": %.3f, \"lateness\": \"return - own place's "
                "due\", \"schedule_lateness\": \"k-th return - (D0 + k*T)\"}},\n  "
                "\"machine\": {\"cpu\": ",
                o->rounds, o->samples, o->seconds < WARMUP_MAX_S ? o->seconds : WARMUP_MAX_S,
                o->seconds, si->timer_ns, o->pin ? "true" : "false", o->quick ? "true" : "false",
                o->backing, (unsigned long long)CHURN_TTL_NS, CHURN_HOT_PCT, CHURN_NEW_PCT,
                CHURN_WIN, CHURN_HOT_DIV, DRIVER_PERIOD, DRIVER_BUDGET, o->wait_rate);
        json_str(f, si->cpu);
        fprintf(f, ", \"cpus_online\": %ld, \"clocksource\": ", si->cpus);
        json_str(f, si->clocksource);
        fprintf(f, ", \"kernel\": ");
        json_str(f, si->kernel);
        fprintf(f,
                ", \"date\": \"%s\", \"hugepages\": {\"total\": %ld, \"free_at_start\": %ld, "
                "\"size_kb\": %ld}},\n",
                si->date, si->huge_total, si->huge_free, si->huge_kb);
}

int report_json(FILE *f, const struct opts *o, const struct sysinfo *si, const struct run_env *e,
                const struct result *r, unsigned n, const struct wait_result *w, unsigned nw)
{
        json_head(f, o, si);
        fprintf(f, "  \"work_ns\": [");
        for (unsigned i = 0; i < o->nwork; i++)
                fprintf(f, "%s%" PRIu64, i ? ", " : "", o->work_ns[i]);
        fprintf(f, "],\n");
        json_env(f, o, e);
        fprintf(f, "  \"results\": [\n");
        for (unsigned i = 0; i < n; i++) {
                json_result(f, &r[i], o->rounds);
                fprintf(f, "%s\n", i + 1 < n ? "," : "");
        }
        fprintf(f, "  ],\n  \"wait\": [\n");
        for (unsigned i = 0; i < nw; i++) {
                json_wait(f, &w[i]);
                fprintf(f, "%s\n", i + 1 < nw ? "," : "");
        }
        fprintf(f, "  ]\n}\n");
        return ferror(f) ? -EIO : 0;
}

/* ---------------------------------------------------------------- --out DIR: files and plot */

static int has_word(const char *list, const char *w)
{
        size_t n = strlen(w);
        for (const char *p = strstr(list, w); p; p = strstr(p + 1, w))
                if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
                        return 1;
        return 0;
}

static void add_word(char *list, size_t len, const char *w)
{
        if (!has_word(list, w))
                snprintf(list + strlen(list), len - strlen(list), "%s%s", list[0] ? " " : "", w);
}

/*
 * The plot's name of R's panel: the scenario with '/' as '_' (a file name), and "+w<ns>" for
 * work above 0, a panel of its own.
 */
static void panel_name(const struct result *r, char *out, size_t len)
{
        if (r->work_ns)
                snprintf(out, len, "%s+w%" PRIu64, r->scenario, r->work_ns);
        else
                snprintf(out, len, "%s", r->scenario);
        for (char *p = out; *p; p++)
                if (*p == '/')
                        *p = '_';
}

/* One data file per (panel, backend): procs, median, min, max Mops/s (across rounds). */
static int write_dat(const char *dir, const struct result *r, unsigned n, char *scen, char *backs,
                     size_t len)
{
        char path[512], panel[64];
        for (unsigned i = 0; i < n; i++) {
                if (!r[i].ok)
                        continue;
                panel_name(&r[i], panel, sizeof(panel));
                snprintf(path, sizeof(path), "%s/scale-%s-%s.dat", dir, panel, r[i].backend);
                FILE *f = fopen(path, "a");
                if (!f)
                        return -errno;
                struct stat5 s = round_stat(&r[i], r[i].r_mops);
                fprintf(f, "%d %.6g %.6g %.6g\n", r[i].procs, s.med, s.min, s.max);
                fclose(f);
                add_word(scen, len, panel);
                add_word(backs, len, r[i].backend);
        }
        return 0;
}

static void remove_old_dat(const char *dir, const struct result *r, unsigned n)
{
        char path[512], panel[64];
        for (unsigned i = 0; i < n; i++) {
                panel_name(&r[i], panel, sizeof(panel));
                snprintf(path, sizeof(path), "%s/scale-%s-%s.dat", dir, panel, r[i].backend);
                unlink(path);
        }
}

/* The plot script: $THR_PLOT_SCRIPT, else plot_scale.gp next to this source file. */
static void plot_script(char *out, size_t len)
{
        const char *env = getenv("THR_PLOT_SCRIPT");
        const char *slash = strrchr(__FILE__, '/');
        if (env)
                snprintf(out, len, "%s", env);
        else if (slash)
                snprintf(out, len, "%.*s/plot_scale.gp", (int)(slash - __FILE__), __FILE__);
        else
                snprintf(out, len, "plot_scale.gp");
        if (access(out, R_OK) != 0)
                fprintf(stderr, "bench_scale: plot script %s not found (set THR_PLOT_SCRIPT)\n",
                        out);
}

static int run_gnuplot(const char *dir, const char *scen, const char *backs)
{
        char cmd[4096], script[512];
        plot_script(script, sizeof(script));
        snprintf(
            cmd, sizeof(cmd),
            "gnuplot -e \"datadir='%s'; scenarios='%s'; backends='%s'; outfile='%s/scale.png'\" "
            "%s 2>%s/gnuplot.log",
            dir, scen, backs, dir, script, dir);
        return system(cmd) == 0 ? 0 : -EIO;
}

int report_out_dir(const struct opts *o, const struct sysinfo *si, const struct run_env *e,
                   const struct result *r, unsigned n, const struct wait_result *w, unsigned nw)
{
        char path[512], scen[1024] = "", backs[1024] = "";
        mkdir(o->out_dir, 0755);
        snprintf(path, sizeof(path), "%s/results.json", o->out_dir);
        FILE *f = fopen(path, "w");
        if (!f) {
                fprintf(stderr, "bench_scale: cannot write %s: %s\n", path, strerror(errno));
                return -errno;
        }
        report_json(f, o, si, e, r, n, w, nw);
        fclose(f);
        remove_old_dat(o->out_dir, r, n);
        if (write_dat(o->out_dir, r, n, scen, backs, sizeof(scen)) < 0 || !scen[0])
                return -EIO;
        int rc = run_gnuplot(o->out_dir, scen, backs);
        if (!o->json)
                printf("\n%s: results.json, scale-<scenario>[+w<work>]-<backend>.dat%s\n",
                       o->out_dir, rc == 0 ? ", scale.png" : "; gnuplot FAILED (see gnuplot.log)");
        return rc;
}

/* ---------------------------------------------------------------- baselines */

int baseline_save(const char *path, const struct result *r, unsigned n)
{
        FILE *f = fopen(path, "w");
        if (!f)
                return -errno;
        fprintf(f, "# bench_scale baseline v2: scenario backend procs work_ns nsamples Mops/s "
                   "samples (all rounds)...\n");
        for (unsigned i = 0; i < n; i++) {
                if (!r[i].ok)
                        continue;
                fprintf(f, "%s %s %d %" PRIu64 " %u", r[i].scenario, r[i].backend, r[i].procs,
                        r[i].work_ns, r[i].nsamples);
                for (unsigned s = 0; s < r[i].nsamples; s++)
                        fprintf(f, " %.6g", r[i].mops[s]);
                fprintf(f, "\n");
        }
        return fclose(f) == 0 ? 0 : -EIO;
}

struct base_row {
        char scen[32], back[32];
        int procs;
        unsigned long long work;
        unsigned n;
        double v[MAX_SAMPLES];
};

/* A row of a v2 file (with work_ns), or of a v1 file (without: work 0). */
static int base_read(FILE *f, struct base_row *b, int v2)
{
        b->work = 0;
        if (fscanf(f, " %31s %31s %d", b->scen, b->back, &b->procs) != 3 ||
            (v2 && fscanf(f, " %llu", &b->work) != 1) || fscanf(f, " %u", &b->n) != 1 ||
            b->n > MAX_SAMPLES)
                return -1;
        for (unsigned i = 0; i < b->n; i++)
                if (fscanf(f, " %lf", &b->v[i]) != 1)
                        return -1;
        return 0;
}

static const struct result *find(const struct result *r, unsigned n, const struct base_row *b)
{
        for (unsigned i = 0; i < n; i++)
                if (r[i].ok && r[i].procs == b->procs && r[i].work_ns == b->work &&
                    !strcmp(r[i].scenario, b->scen) && !strcmp(r[i].backend, b->back))
                        return &r[i];
        return NULL;
}

/*
 * change: [low est high] in % of the old median. est is the difference of the medians; low and
 * high are the extreme differences the two runs' min-max spreads allow (new min - old max, new
 * max - old min): a change is reported only when that whole interval is on one side of zero.
 */
static void base_line(const struct base_row *b, const struct result *r)
{
        struct stat5 o = stat_of(b->v, b->n), c = stat_of(r->mops, r->nsamples);
        double lo = (c.min - o.max) / o.med * 100, est = (c.med - o.med) / o.med * 100;
        double hi = (c.max - o.min) / o.med * 100;
        const char *v = lo > 0 ? "improved" : hi < 0 ? "regressed" : "no change (within noise)";
        printf("%-9s %-15s %5d %5llu %9.3g -> %-9.3g change: [%+7.2f%% %+7.2f%% %+7.2f%%]  %s\n",
               b->scen, b->back, b->procs, b->work, o.med, c.med, lo, est, hi, v);
}

void baseline_compare(const char *path, const struct result *r, unsigned n)
{
        char line[256];
        struct base_row b;
        FILE *f = fopen(path, "r");
        if (!f) {
                printf("\nbaseline %s: cannot read: %s\n", path, strerror(errno));
                return;
        }
        printf("\nagainst baseline %s (aggregate Mops/s, medians of all samples of all rounds; "
               "change relative\nto the baseline median; scenario backend procs work):\n",
               path);
        int v2 = 0;
        if (!fgets(line, sizeof(line), f) || line[0] != '#')
                rewind(f);
        else
                v2 = strstr(line, "work_ns") != NULL;
        while (base_read(f, &b, v2) == 0) {
                const struct result *c = find(r, n, &b);
                if (c && b.n)
                        base_line(&b, c);
        }
        fclose(f);
}

/* ---------------------------------------------------------------- targets (issue 4) */

static const struct result *pick(const struct result *r, unsigned n, const char *scen,
                                 const char *backend, int procs, uint64_t work)
{
        for (unsigned i = 0; i < n; i++)
                if (r[i].ok && r[i].procs == procs && r[i].work_ns == work &&
                    !strcmp(r[i].scenario, scen) && !strcmp(r[i].backend, backend))
                        return &r[i];
        return NULL;
}

/* The first of two names that was measured (a backend renamed: "nginx" or "nginx-hash"). */
static const struct result *pick2(const struct result *r, unsigned n, const char *scen,
                                  const char *b1, const char *b2, int procs, uint64_t work)
{
        const struct result *x = pick(r, n, scen, b1, procs, work);
        return x ? x : pick(r, n, scen, b2, procs, work);
}

/*
 * A ratio per round (rounds both A and B measured): NUM[k] / DEN[k] of A over B, or of B over
 * A when INV; how many rounds meet OK; their median and range.
 */
struct per_round {
        unsigned n, met;
        struct stat5 s;
};

static struct per_round ratio_rounds(const struct result *a, const double *va,
                                     const struct result *b, const double *vb, double limit,
                                     int at_most)
{
        double t[MAX_ROUNDS];
        struct per_round p = {0};
        uint32_t both = a->rmask & b->rmask;
        for (unsigned k = 0; k < MAX_ROUNDS; k++) {
                if (!(both & (1u << k)) || vb[k] <= 0)
                        continue;
                double x = va[k] / vb[k];
                t[p.n++] = x;
                p.met += at_most ? x <= limit : x >= limit;
        }
        p.s = stat_of(t, p.n);
        return p;
}

static const char *verdict(const struct per_round *p, char *buf, size_t len)
{
        if (p->met == p->n)
                return "met";
        if (p->met == 0)
                return "MISSED";
        snprintf(buf, len, "unclear (met in %u of %u rounds)", p->met, p->n);
        return buf;
}

static void target_floor(const struct result *r, unsigned n, const char *scen, double max,
                         uint64_t work)
{
        const struct result *t = pick(r, n, scen, "throttle", 1, work);
        const struct result *f = pick(r, n, scen, "floor", 1, work);
        char vb[64];
        if (!t || !f)
                return;
        struct per_round p = ratio_rounds(f, f->r_mops, t, t->r_mops, max, 1);
        if (!p.n)
                return;
        printf("  %-9s %5" PRIu64 " 1 proc: throttle at %.2fx (%.2f-%.2f) the floor (target <= "
               "%.2fx): %s\n",
               scen, work, p.s.med, p.s.min, p.s.max, max, verdict(&p, vb, sizeof(vb)));
}

/* Issue 4's targets were set against the one-lock hash-table design, now "nginx-hash"; the same
 * ratios against nginx-real (nginx as nginx runs it, issue 19) follow when it ran. */
static void target_nginx(const struct result *r, unsigned n, const char *scen, int procs,
                         uint64_t work, const char *nginx)
{
        const struct result *t = pick(r, n, scen, "throttle", procs, work);
        const struct result *g = strcmp(nginx, "nginx-hash")
                                     ? pick(r, n, scen, nginx, procs, work)
                                     : pick2(r, n, scen, "nginx-hash", "nginx", procs, work);
        char v1[64], v2[64];
        if (!t || !g)
                return;
        struct per_round x = ratio_rounds(t, t->r_mops, g, g->r_mops, 3, 0);
        struct per_round l = ratio_rounds(t, t->r_p999, g, g->r_p999, 0.1, 1);
        if (!x.n || !l.n)
                return;
        printf("  %-9s %5" PRIu64 " %d procs: %.2fx (%.2f-%.2f) %s throughput (target >= 3x): %s; "
               "p99.9 %.3gx (%.3g-%.3g) its (target <= 0.1x): %s\n",
               scen, work, procs, x.s.med, x.s.min, x.s.max, g->backend,
               verdict(&x, v1, sizeof(v1)), l.s.med, l.s.min, l.s.max, verdict(&l, v2, sizeof(v2)));
}

static void target_redis(const struct result *r, unsigned n, const char *scen, uint64_t work)
{
        const struct result *t = pick(r, n, scen, "throttle", 1, work);
        const struct result *d = pick2(r, n, scen, "redis", "redis-tcp", 1, work);
        char vb[64];
        if (!t || !d)
                return;
        struct per_round x = ratio_rounds(t, t->r_mops, d, d->r_mops, 1000, 0);
        if (!x.n)
                return;
        printf("  %-9s %5" PRIu64 " 1 proc: %.0fx (%.0f-%.0f) %s per client (target >= 1000x): "
               "%s\n",
               scen, work, x.s.med, x.s.min, x.s.max, d->backend, verdict(&x, vb, sizeof(vb)));
}

/*
 * Where this run stands against the targets of issue 4, per work level: each a ratio per round
 * (same round, same configuration); met / MISSED only when every round agrees.
 */
void report_targets(const struct opts *o, const struct result *r, unsigned n)
{
        static const char *scens[] = {"hot", "10k", "1m", "1m-zipf", "denied"};
        printf("\ntargets (issue 4), per round (median (min-max) of the rounds' ratios); met / "
               "MISSED: in every\nround; scenario, work ns:\n");
        for (unsigned w = 0; w < o->nwork; w++) {
                uint64_t work = o->work_ns[w];
                target_floor(r, n, "hot", 1.5, work);
                target_floor(r, n, "10k", 1.6, work);
                target_floor(r, n, "1m", 1.25, work);
                for (unsigned s = 0; s < sizeof(scens) / sizeof(scens[0]); s++)
                        for (unsigned p = 0; p < o->nprocs; p++)
                                if (o->procs[p] >= 2) {
                                        target_nginx(r, n, scens[s], o->procs[p], work,
                                                     "nginx-hash");
                                        target_nginx(r, n, scens[s], o->procs[p], work,
                                                     "nginx-real");
                                }
                for (unsigned s = 0; s < sizeof(scens) / sizeof(scens[0]); s++)
                        target_redis(r, n, scens[s], work);
        }
}

/* ---------------------------------------------------------------- floors and leads */

/* The scenarios of R in the order they first appear. */
static unsigned scen_list(const struct result *r, unsigned n, const char **out, unsigned max)
{
        unsigned k = 0;
        for (unsigned i = 0; i < n && k < max; i++) {
                int seen = 0;
                for (unsigned j = 0; j < k && !seen; j++)
                        seen = !strcmp(out[j], r[i].scenario);
                if (!seen)
                        out[k++] = r[i].scenario;
        }
        return k;
}

void report_floors(const struct opts *o, const struct result *r, unsigned n)
{
        const char *sc[32];
        unsigned ns = scen_list(r, n, sc, 32);
        int head = 0;
        for (unsigned i = 0; i < ns; i++)
                for (unsigned w = 0; w < o->nwork; w++)
                        for (unsigned p = 0; p < o->nprocs; p++) {
                                const struct result *f =
                                    pick(r, n, sc[i], "floor", o->procs[p], o->work_ns[w]);
                                const struct result *z =
                                    pick(r, n, sc[i], "floor-none", o->procs[p], o->work_ns[w]);
                                const struct result *c =
                                    pick(r, n, sc[i], "floor-coarse", o->procs[p], o->work_ns[w]);
                                if (!f || (!z && !c))
                                        continue;
                                if (!head)
                                        printf("\nfloors, ns per op per process (medians across "
                                               "rounds): none = load + GCRA + CAS with no clock "
                                               "(a\nper-op counter), coarse = with "
                                               "CLOCK_MONOTONIC_COARSE, floor = with "
                                               "CLOCK_MONOTONIC; clock = floor -\nnone, the "
                                               "clock's share of the floor (where none's mix "
                                               "differs, see the admission mix, it is\nnot the "
                                               "same decisions: rates below 1e9/s)\n%-9s %5s %5s "
                                               "%8s %8s %8s %8s\n",
                                               "scenario", "procs", "work", "none", "coarse",
                                               "floor", "clock");
                                head = 1;
                                double fv = round_stat(f, f->r_nsop).med;
                                double zv = z ? round_stat(z, z->r_nsop).med : -1;
                                double cv = c ? round_stat(c, c->r_nsop).med : -1;
                                printf("%-9s %5d %5" PRIu64 " %8.1f %8.1f %8.1f %8.1f\n", sc[i],
                                       o->procs[p], o->work_ns[w], zv, cv, fv, z ? fv - zv : 0.0);
                        }
}

/* A ratio in at most 4 or 5 characters: 0.123, 1.23, 12.3, 123, 1234. */
static void fmt_ratio(char *out, size_t len, double x)
{
        snprintf(out, len, x >= 1000 ? "%.0f" : "%.3g", x);
}

/* One cell: throttle's Mops over B's per round, median (min-max), and the rule's mark. */
static void lead_cell(const struct result *t, const struct result *b)
{
        char cell[96], med[16], lo[16], hi[16], mark[16];
        struct per_round p = {0};
        if (t && b)
                p = ratio_rounds(t, t->r_mops, b, b->r_mops, 1, 0);
        if (!p.n) {
                printf(" %22s", "-");
                return;
        }
        if (p.met == p.n)
                snprintf(mark, sizeof(mark), "+");
        else if (p.met == 0)
                snprintf(mark, sizeof(mark), "-");
        else
                snprintf(mark, sizeof(mark), "?%u", p.met);
        fmt_ratio(med, sizeof(med), p.s.med);
        fmt_ratio(lo, sizeof(lo), p.s.min);
        fmt_ratio(hi, sizeof(hi), p.s.max);
        if (p.n == 1)
                snprintf(cell, sizeof(cell), "%s%s", med, mark);
        else
                snprintf(cell, sizeof(cell), "%s (%s-%s)%s", med, lo, hi, mark);
        printf(" %22s", cell);
}

void report_leads(const struct opts *o, const struct result *r, unsigned n,
                  const char *const *backs, unsigned nb)
{
        const char *sc[32];
        unsigned ns = scen_list(r, n, sc, 32);
        char col[32];
        printf("\nlead of throttle: throttle's Mops/s / the backend's, per round, same "
               "configuration; median\n(min-max) of the rounds' ratios; + ahead in every round, - "
               "behind in every round, ?k ahead in k\nrounds only. Columns: procs/work ns\n%-9s "
               "%-15s",
               "scenario", "backend");
        for (unsigned w = 0; w < o->nwork; w++)
                for (unsigned p = 0; p < o->nprocs; p++) {
                        snprintf(col, sizeof(col), "p%d/w%" PRIu64, o->procs[p], o->work_ns[w]);
                        printf(" %22s", col);
                }
        printf("\n");
        for (unsigned i = 0; i < ns; i++)
                for (unsigned b = 0; b < nb; b++) {
                        int any = 0;
                        if (!strcmp(backs[b], "throttle"))
                                continue;
                        for (unsigned w = 0; w < o->nwork && !any; w++)
                                for (unsigned p = 0; p < o->nprocs && !any; p++)
                                        any = pick(r, n, sc[i], backs[b], o->procs[p],
                                                   o->work_ns[w]) != NULL;
                        if (!any)
                                continue;
                        printf("%-9s %-15s", sc[i], backs[b]);
                        for (unsigned w = 0; w < o->nwork; w++)
                                for (unsigned p = 0; p < o->nprocs; p++)
                                        lead_cell(pick(r, n, sc[i], "throttle", o->procs[p],
                                                       o->work_ns[w]),
                                                  pick(r, n, sc[i], backs[b], o->procs[p],
                                                       o->work_ns[w]));
                        printf("\n");
                }
}

/* ---------------------------------------------------------------- admission mix */

/*
 * Per (scenario, backend, work), over its process counts and rounds: the share of the measured
 * tries admitted and denied. GCRA at 1e9/s, burst 1e9 and the window at 100 per 1 us admit every
 * try; 'denied' denies every one; churn denies what a full table refuses. Printed so that the mix
 * each row was measured on is stated, not assumed.
 */
void report_mix(const struct result *r, unsigned n)
{
        printf("\nadmission mix of the measured samples (all process counts and rounds), per "
               "work level:\nadmitted%% / denied%% of tries (denied tries)\n");
        for (unsigned i = 0; i < n; i++) {
                if (!r[i].ok)
                        continue;
                int seen = 0;
                for (unsigned j = 0; j < i && !seen; j++)
                        seen = r[j].ok && !strcmp(r[j].scenario, r[i].scenario) &&
                               !strcmp(r[j].backend, r[i].backend) && r[j].work_ns == r[i].work_ns;
                if (seen)
                        continue;
                uint64_t yes = 0, no = 0, bad = 0;
                for (unsigned j = i; j < n; j++) {
                        if (!r[j].ok || strcmp(r[j].scenario, r[i].scenario) ||
                            strcmp(r[j].backend, r[i].backend) || r[j].work_ns != r[i].work_ns)
                                continue;
                        yes += r[j].admitted;
                        no += r[j].denied;
                        bad += r[j].errors;
                }
                uint64_t all = yes + no + bad;
                double d = all ? (double)all : 1;
                printf("  %-9s %-15s w%-5" PRIu64 " %7.3f%% / %7.3f%% of %" PRIu64
                       " (denied %" PRIu64 ")%s\n",
                       r[i].scenario, r[i].backend, r[i].work_ns, 100.0 * (double)yes / d,
                       100.0 * (double)no / d, all, no, bad ? "  (with errors)" : "");
        }
}
