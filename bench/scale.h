/*
 * scale.h - what bench_scale.c, scale_report.c and backend_throttle.c share beyond backend.h:
 * the latency histogram, sample statistics, the results of one measured configuration, and the
 * throttle backend's extras (the backing its arena obtained, the waiting-form run).
 */
#ifndef THR_BENCH_SCALE_H
#define THR_BENCH_SCALE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "backend.h"
#include "sysinfo.h"

/* ---------------------------------------------------------------- latency histogram */

/*
 * Buckets: 1 ns wide up to 1 us (1000 buckets), then 100 per decade (log-spaced) from 1 us to
 * 100 ms (500 buckets), then one overflow bucket. Plain counters: one histogram per worker, in
 * shared memory, written only by that worker and read by the parent after the worker finished.
 */
#define HIST_LINEAR  1000u
#define HIST_PER_DEC 100u
#define HIST_DECADES 5u
#define HIST_BUCKETS (HIST_LINEAR + HIST_PER_DEC * HIST_DECADES + 1u)
#define HIST_MAX_NS  100000000.0

struct hist {
        uint64_t n[HIST_BUCKETS];
};

void hist_add(struct hist *h, uint64_t ns);
void hist_merge(struct hist *into, const struct hist *from);
uint64_t hist_count(const struct hist *h);
/* The value below which a fraction Q of the samples fall (upper edge of its bucket), ns. */
double hist_quantile(const struct hist *h, double q);
double hist_max(const struct hist *h);

/* ---------------------------------------------------------------- sample statistics */

#define MAX_SAMPLES 64

struct stat5 {
        double med, min, max, mad;
};

struct stat5 stat_of(const double *v, unsigned n);

/* ---------------------------------------------------------------- results */

/* One (scenario, backend, procs) configuration after its samples. */
struct result {
        const char *scenario;
        const char *backend;
        int procs;
        int ok;                    /* 1 measured; 0 skipped or failed (note says why) */
        char note[160];            /* why skipped, or the backing obtained */
        unsigned nsamples;         /* measured samples (warm-up excluded) */
        double mops[MAX_SAMPLES];  /* aggregate Mops/s per sample */
        double nsop[MAX_SAMPLES];  /* wall ns per op per process per sample */
        double cpuns[MAX_SAMPLES]; /* CPU ns per op (sum of workers' CPU time / ops) */
        uint64_t ops, admitted, denied, errors;
        double p50, p99, p999, pmax; /* ns, from the merged histogram */
        uint64_t lat_n;
        double floor_ratio; /* median throughput of floor / this; 0 when not known */
        /* churn: per measured sample, the backend's evictions in it (counter differences from
         * its release to the moment every worker had stopped; live: at that moment) and the new
         * keys the workers' streams made */
        unsigned ev_has; /* BENCH_EV_* bits; 0: the backend reports none */
        struct bench_evictions ev[MAX_SAMPLES];
        uint64_t new_keys[MAX_SAMPLES];
};

/* The waiting form (throttle only, thr_limiter_acquire). */
struct wait_result {
        int procs;
        int ok;
        char note[160];
        double rate_cfg;   /* per second */
        double rate_got;   /* workers' admissions per second, over the schedule's span */
        double secs;       /* the span: from the first place (due D0) to the end of the run */
        uint64_t ideal;    /* admissions the schedule D0 + k*T holds in that span */
        uint64_t admitted; /* by the workers' acquires */
        uint64_t timeouts; /* acquires that would have ended after the run (-ETIMEDOUT) */
        uint64_t dry;      /* acquires that did not sleep (the queue had run dry) */
        uint64_t errors;
        double p50, p99, pmax;    /* wake-up lateness: return - own place's due, ns */
        double sp50, sp99, spmax; /* schedule lateness: k-th return - (D0 + k*T), ns */
};

/* ---------------------------------------------------------------- options and machine */

#define MAX_PROCS_LIST 8

struct opts {
        int procs[MAX_PROCS_LIST];
        unsigned nprocs;
        double seconds;   /* per sample */
        unsigned samples; /* measured samples, after one warm-up sample */
        bool pin, json, quick, callgrind;
        const char *backends;  /* comma list, NULL: all available */
        const char *scenarios; /* comma list, NULL: all */
        const char *backing;   /* auto, hugetlbfs, shm */
        const char *out_dir, *baseline_save, *baseline;
        const char *cg_run; /* internal: "scenario,backend" run under callgrind */
        uint64_t cg_ops;
        double wait_rate;
        char cmdline[1024];
};

/* sysinfo_read, then the cost of one clock_gettime pair into timer_ns (scale_report.c). */
void scale_sysinfo_read(struct sysinfo *si);
int opts_parse(int argc, char **argv, struct opts *o);
void opts_usage(FILE *f);

/* ---------------------------------------------------------------- reports (scale_report.c) */

void report_header(const struct opts *o, const struct sysinfo *si, const char *methods);
void report_table_head(void);
void report_row(const struct result *r);
/* Before the churn rows: what churn does, for a table of CAPACITY live keys. */
void report_churn_head(uint64_t capacity);
void report_wait(const struct wait_result *w, unsigned n);
void report_targets(const struct result *r, unsigned n, const int *procs, unsigned np);
/* The admitted/denied share of every measured row: the mix its throughput was measured on. */
void report_mix(const struct result *r, unsigned n);
int report_json(FILE *f, const struct opts *o, const struct sysinfo *si, const struct result *r,
                unsigned n, const struct wait_result *w, unsigned nw);
int report_out_dir(const struct opts *o, const struct sysinfo *si, const struct result *r,
                   unsigned n, const struct wait_result *w, unsigned nw);
int baseline_save(const char *path, const struct result *r, unsigned n);
void baseline_compare(const char *path, const struct result *r, unsigned n);

/* ---------------------------------------------------------------- throttle backend extras */

/* The backing the throttle/floor arena of STATE obtained, one line (e.g. "hugetlbfs 2048 kB"). */
void bench_throttle_describe(const void *state, char *out, size_t len);

/*
 * The waiting form: PROCS forked processes call thr_limiter_acquire on one key of a limiter of
 * RATE per second, burst 1, with a timeout that ends at the end of the run (SECS seconds), and
 * note the arena time each call returned. Fills *OUT: rate achieved, lateness behind the ideal
 * schedule.
 */
void bench_throttle_wait(const char *backing, int procs, double rate, double secs, int pin,
                         struct wait_result *out);

#endif
