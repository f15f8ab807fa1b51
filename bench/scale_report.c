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

void report_header(const struct opts *o, const struct sysinfo *si, const char *methods)
{
        printf("bench_scale: aggregate throughput and latency across processes, next to the "
               "floor and the alternatives\n  command  %s\n%s",
               o->cmdline, methods);
        printf("  method   per (scenario, backend): set-up once (keys inserted, untimed); per "
               "process count: fork the\n           workers (attach after fork%s), 1 warm-up "
               "sample (discarded) + %u samples of %.3g s,\n           all workers started "
               "together by a barrier in shared memory; each walks its own precomputed\n"
               "           key sequence (xorshift64; Zipf s=1.0 by inverse CDF), cost 1; "
               "rate 1e9/s burst 1e9 (never\n           denies) except 'denied' (1/h, burst 1); "
               "1 op in 64 timed by a clock_gettime pair\n           (%.1f ns per pair here, "
               "included in the latencies) into a per-worker histogram\n",
               o->pin ? ", pinned round-robin to CPUs" : ", not pinned", o->samples, o->seconds,
               si->timer_ns);
        printf("  columns  Mops/s = sum over workers of ops / own wall time (median of samples, "
               "min-max, MAD);\n           ns/op = wall ns per op per process; cpu = CPU ns "
               "per op; x floor = floor Mops / this Mops\n");
        printf("  cpu      %s (%ld online), clocksource %s\n  kernel   %s\n  date     %s\n",
               si->cpu, si->cpus, si->clocksource, si->kernel, si->date);
        printf("  hugepages pool %ld x %ld kB, %ld free at start; --backing %s\n\n", si->huge_total,
               si->huge_kb, si->huge_free, o->backing);
}

void report_table_head(void)
{
        printf("%-8s %-13s %5s %-26s %7s %7s %7s %7s %8s %7s\n", "scenario", "backend", "procs",
               "Mops/s med (min-max) MAD", "ns/op", "cpu ns", "p50", "p99", "p99.9", "x floor");
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
        printf(
            "  (churn: capacity %" PRIu64 " live keys, idle_ttl %.0f ms, on_full = evict; per op "
            "%u%% one of %" PRIu64 " hot keys,\n   %u%% the worker's next new key, the rest one "
            "of its last %u; throttle: eviction driver every %u ms,\n   %u slots a pass, then "
            "a grace period (as throttled); nginx-hash, nginx-real, mutex-local: nginx's LRU\n   "
            "expiry with idle %.0f ms; sharded-mutex, cas-local: a 64-slot sweep of idle keys "
            "when full;\n   redis: PX expiry; floor: word = id mod %" PRIu64 ", keys WRAP, no "
            "eviction.\n   Below each row, per sample: new keys made, then the backend's "
            "counters)\n",
            capacity, ttl_ms, CHURN_HOT_PCT,
            capacity / CHURN_HOT_DIV ? capacity / CHURN_HOT_DIV : 1, CHURN_NEW_PCT, CHURN_WIN,
            DRIVER_PERIOD, DRIVER_BUDGET, ttl_ms, capacity);
        fflush(stdout);
}

void report_row(const struct result *r)
{
        if (!r->ok) {
                printf("%-8s %-13s %5d %s\n", r->scenario, r->backend, r->procs, r->note);
                fflush(stdout);
                return;
        }
        struct stat5 m = stat_of(r->mops, r->nsamples);
        struct stat5 ns = stat_of(r->nsop, r->nsamples);
        struct stat5 cpu = stat_of(r->cpuns, r->nsamples);
        char mb[64], fr[16] = "-";
        snprintf(mb, sizeof(mb), "%.3g (%.3g-%.3g) %.2g", m.med, m.min, m.max, m.mad);
        if (r->floor_ratio > 0)
                snprintf(fr, sizeof(fr), "%.2f", r->floor_ratio);
        printf("%-8s %-13s %5d %-26s %7.1f %7.1f %7.0f %7.0f %8.0f %7s", r->scenario, r->backend,
               r->procs, mb, ns.med, cpu.med, r->p50, r->p99, r->p999, fr);
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

static void json_result(FILE *f, const struct result *r)
{
        fprintf(f,
                "    {\"scenario\": \"%s\", \"backend\": \"%s\", \"procs\": %d, \"ok\": %s, "
                "\"note\": ",
                r->scenario, r->backend, r->procs, r->ok ? "true" : "false");
        json_str(f, r->note);
        if (r->ok) {
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
                        ", \"floor_ratio\": %.4f",
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

static void json_head(FILE *f, const struct opts *o, const struct sysinfo *si)
{
        fprintf(f, "{\n  \"benchmark\": \"bench_scale\",\n  \"command\": ");
        json_str(f, o->cmdline);
        fprintf(f,
                ",\n  \"method\": {\"samples\": %u, \"warmup_samples\": 1, \"seconds\": %.4g, "
                "\"timed_one_in\": 64, \"timer_pair_ns\": %.2f, \"pin\": %s, \"quick\": %s, "
                "\"backing_requested\": \"%s\", \"churn\": {\"idle_ttl_ns\": %llu, "
                "\"hot_pct\": %u, \"new_pct\": %u, \"window\": %u, \"hot_keys\": "
                "\"capacity/%u\", \"driver_period_ms\": %u, \"driver_budget_slots\": %u}, "
                "\"wait\": {\"rate_configured\": %.3f, \"lateness\": \"return - own place's "
                "due\", \"schedule_lateness\": \"k-th return - (D0 + k*T)\"}},\n  "
                "\"machine\": {\"cpu\": ",
                o->samples, o->seconds, si->timer_ns, o->pin ? "true" : "false",
                o->quick ? "true" : "false", o->backing, (unsigned long long)CHURN_TTL_NS,
                CHURN_HOT_PCT, CHURN_NEW_PCT, CHURN_WIN, CHURN_HOT_DIV, DRIVER_PERIOD,
                DRIVER_BUDGET, o->wait_rate);
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

int report_json(FILE *f, const struct opts *o, const struct sysinfo *si, const struct result *r,
                unsigned n, const struct wait_result *w, unsigned nw)
{
        json_head(f, o, si);
        fprintf(f, "  \"results\": [\n");
        for (unsigned i = 0; i < n; i++) {
                json_result(f, &r[i]);
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

/* One data file per (scenario, backend): procs, median, min, max Mops/s. */
static int write_dat(const char *dir, const struct result *r, unsigned n, char *scen, char *backs,
                     size_t len)
{
        char path[512];
        for (unsigned i = 0; i < n; i++) {
                if (!r[i].ok)
                        continue;
                snprintf(path, sizeof(path), "%s/scale-%s-%s.dat", dir, r[i].scenario,
                         r[i].backend);
                FILE *f = fopen(path, "a");
                if (!f)
                        return -errno;
                struct stat5 s = stat_of(r[i].mops, r[i].nsamples);
                fprintf(f, "%d %.6g %.6g %.6g\n", r[i].procs, s.med, s.min, s.max);
                fclose(f);
                add_word(scen, len, r[i].scenario);
                add_word(backs, len, r[i].backend);
        }
        return 0;
}

static void remove_old_dat(const char *dir, const struct result *r, unsigned n)
{
        char path[512];
        for (unsigned i = 0; i < n; i++) {
                snprintf(path, sizeof(path), "%s/scale-%s-%s.dat", dir, r[i].scenario,
                         r[i].backend);
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
        char cmd[2048], script[512];
        plot_script(script, sizeof(script));
        snprintf(
            cmd, sizeof(cmd),
            "gnuplot -e \"datadir='%s'; scenarios='%s'; backends='%s'; outfile='%s/scale.png'\" "
            "%s 2>%s/gnuplot.log",
            dir, scen, backs, dir, script, dir);
        return system(cmd) == 0 ? 0 : -EIO;
}

int report_out_dir(const struct opts *o, const struct sysinfo *si, const struct result *r,
                   unsigned n, const struct wait_result *w, unsigned nw)
{
        char path[512], scen[256] = "", backs[256] = "";
        mkdir(o->out_dir, 0755);
        snprintf(path, sizeof(path), "%s/results.json", o->out_dir);
        FILE *f = fopen(path, "w");
        if (!f) {
                fprintf(stderr, "bench_scale: cannot write %s: %s\n", path, strerror(errno));
                return -errno;
        }
        report_json(f, o, si, r, n, w, nw);
        fclose(f);
        remove_old_dat(o->out_dir, r, n);
        if (write_dat(o->out_dir, r, n, scen, backs, sizeof(scen)) < 0 || !scen[0])
                return -EIO;
        int rc = run_gnuplot(o->out_dir, scen, backs);
        if (!o->json)
                printf("\n%s: results.json, scale-<scenario>-<backend>.dat%s\n", o->out_dir,
                       rc == 0 ? ", scale.png" : "; gnuplot FAILED (see gnuplot.log)");
        return rc;
}

/* ---------------------------------------------------------------- baselines */

int baseline_save(const char *path, const struct result *r, unsigned n)
{
        FILE *f = fopen(path, "w");
        if (!f)
                return -errno;
        fprintf(f, "# bench_scale baseline: scenario backend procs nsamples Mops/s samples...\n");
        for (unsigned i = 0; i < n; i++) {
                if (!r[i].ok)
                        continue;
                fprintf(f, "%s %s %d %u", r[i].scenario, r[i].backend, r[i].procs, r[i].nsamples);
                for (unsigned s = 0; s < r[i].nsamples; s++)
                        fprintf(f, " %.6g", r[i].mops[s]);
                fprintf(f, "\n");
        }
        return fclose(f) == 0 ? 0 : -EIO;
}

struct base_row {
        char scen[32], back[32];
        int procs;
        unsigned n;
        double v[MAX_SAMPLES];
};

static int base_read(FILE *f, struct base_row *b)
{
        if (fscanf(f, " %31s %31s %d %u", b->scen, b->back, &b->procs, &b->n) != 4 ||
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
                if (r[i].ok && r[i].procs == b->procs && !strcmp(r[i].scenario, b->scen) &&
                    !strcmp(r[i].backend, b->back))
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
        printf("%-8s %-13s %5d %9.3g -> %-9.3g change: [%+7.2f%% %+7.2f%% %+7.2f%%]  %s\n", b->scen,
               b->back, b->procs, o.med, c.med, lo, est, hi, v);
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
        printf("\nagainst baseline %s (aggregate Mops/s, medians; change relative to the "
               "baseline median):\n",
               path);
        if (!fgets(line, sizeof(line), f) || line[0] != '#')
                rewind(f);
        while (base_read(f, &b) == 0) {
                const struct result *c = find(r, n, &b);
                if (c && b.n)
                        base_line(&b, c);
        }
        fclose(f);
}

/* ---------------------------------------------------------------- targets (issue 4) */

static const struct result *pick(const struct result *r, unsigned n, const char *scen,
                                 const char *backend, int procs)
{
        for (unsigned i = 0; i < n; i++)
                if (r[i].ok && r[i].procs == procs && !strcmp(r[i].scenario, scen) &&
                    !strcmp(r[i].backend, backend))
                        return &r[i];
        return NULL;
}

static double mops_med(const struct result *r)
{
        return stat_of(r->mops, r->nsamples).med;
}

static void target_floor(const struct result *r, unsigned n, const char *scen, double max)
{
        const struct result *t = pick(r, n, scen, "throttle", 1);
        if (!t || t->floor_ratio <= 0)
                return;
        printf("  %-8s 1 proc: throttle at %.2fx the floor (target <= %.2fx): %s\n", scen,
               t->floor_ratio, max, t->floor_ratio <= max ? "met" : "MISSED");
}

/* Issue 4's targets were set against the one-lock hash-table design, now "nginx-hash"; the same
 * ratios against nginx-real (nginx as nginx runs it, issue 19) follow when it ran. */
static void target_nginx(const struct result *r, unsigned n, const char *scen, int procs,
                         const char *nginx)
{
        const struct result *t = pick(r, n, scen, "throttle", procs);
        const struct result *g = pick(r, n, scen, nginx, procs);
        if (!t || !g || mops_med(g) <= 0 || t->p999 <= 0)
                return;
        double x = mops_med(t) / mops_med(g), lat = t->p999 / g->p999;
        printf("  %-8s %d procs: %.2fx %s throughput (target >= 3x): %s; p99.9 %.3gx "
               "%s's (target <= 0.1x): %s\n",
               scen, procs, x, nginx, x >= 3 ? "met" : "MISSED", lat, nginx,
               lat <= 0.1 ? "met" : "MISSED");
}

static void target_redis(const struct result *r, unsigned n, const char *scen)
{
        const struct result *t = pick(r, n, scen, "throttle", 1);
        const struct result *d = pick(r, n, scen, "redis-tcp", 1);
        if (!t || !d || mops_med(d) <= 0)
                return;
        double x = mops_med(t) / mops_med(d);
        printf("  %-8s 1 proc: %.0fx Redis GCRA (TCP) per client (target >= 1000x): %s\n", scen, x,
               x >= 1000 ? "met" : "MISSED");
}

/* Where this run stands against the targets of issue 4; ratios of medians, same run. */
void report_targets(const struct result *r, unsigned n, const int *procs, unsigned np)
{
        static const char *scens[] = {"hot", "10k", "1m", "1m-zipf", "denied"};
        printf("\ntargets (issue 4), ratios of medians in this run:\n");
        target_floor(r, n, "hot", 1.5);
        target_floor(r, n, "10k", 1.6);
        target_floor(r, n, "1m", 1.25);
        for (unsigned s = 0; s < sizeof(scens) / sizeof(scens[0]); s++)
                for (unsigned p = 0; p < np; p++)
                        if (procs[p] >= 2) {
                                target_nginx(r, n, scens[s], procs[p], "nginx-hash");
                                target_nginx(r, n, scens[s], procs[p], "nginx-real");
                        }
        for (unsigned s = 0; s < sizeof(scens) / sizeof(scens[0]); s++)
                target_redis(r, n, scens[s]);
}

/* ---------------------------------------------------------------- admission mix */

/*
 * Per (scenario, backend), over its process counts: the share of the measured tries admitted and
 * denied. GCRA at 1e9/s, burst 1e9 and the window at 100 per 1 us admit every try; 'denied'
 * denies every one; churn denies what a full table refuses. Printed so that the mix each row was
 * measured on is stated, not assumed.
 */
void report_mix(const struct result *r, unsigned n)
{
        printf("\nadmission mix of the measured samples (all process counts): admitted%% / "
               "denied%% of tries (denied tries)\n");
        for (unsigned i = 0; i < n; i++) {
                if (!r[i].ok)
                        continue;
                int seen = 0;
                for (unsigned j = 0; j < i && !seen; j++)
                        seen = r[j].ok && !strcmp(r[j].scenario, r[i].scenario) &&
                               !strcmp(r[j].backend, r[i].backend);
                if (seen)
                        continue;
                uint64_t yes = 0, no = 0, bad = 0;
                for (unsigned j = i; j < n; j++) {
                        if (!r[j].ok || strcmp(r[j].scenario, r[i].scenario) ||
                            strcmp(r[j].backend, r[i].backend))
                                continue;
                        yes += r[j].admitted;
                        no += r[j].denied;
                        bad += r[j].errors;
                }
                uint64_t all = yes + no + bad;
                double d = all ? (double)all : 1;
                printf("  %-8s %-13s %7.3f%% / %7.3f%% of %" PRIu64 " (denied %" PRIu64 ")%s\n",
                       r[i].scenario, r[i].backend, 100.0 * (double)yes / d, 100.0 * (double)no / d,
                       all, no, bad ? "  (with errors)" : "");
        }
}
