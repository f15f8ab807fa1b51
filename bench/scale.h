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

#define MAX_SAMPLES 64 /* measured samples of one configuration over all rounds */
#define MAX_ROUNDS  16
#define MAX_WORK    4

struct stat5 {
        double med, min, max, mad;
};

struct stat5 stat_of(const double *v, unsigned n);

/* ---------------------------------------------------------------- results */

/*
 * One (scenario, backend, procs, work) configuration after all its rounds. The per-sample arrays
 * hold every round's measured samples one round after the other (nsamples in all); the r_ arrays
 * are indexed by round (rmask: the rounds that measured it), each the median of that round's
 * samples (percentiles: from that round's merged histogram). The figures the tables print are
 * medians across rounds of these (round_stat).
 */
struct result {
        const char *scenario;
        const char *backend;
        int procs;
        uint64_t work_ns;          /* other work between two decisions (--work-ns) */
        int ok;                    /* 1 measured in at least one round; 0 skipped or failed */
        char note[160];            /* why skipped, or the backing obtained (first round) */
        unsigned nsamples;         /* measured samples (warm-up excluded), all rounds */
        double mops[MAX_SAMPLES];  /* aggregate Mops/s per sample */
        double nsop[MAX_SAMPLES];  /* wall ns per op per process per sample */
        double cpuns[MAX_SAMPLES]; /* CPU ns per op (sum of workers' CPU time / ops) */
        uint64_t ops, admitted, denied, errors;
        uint32_t rmask;     /* bit r: round r measured this configuration */
        uint32_t fell_back; /* bit r: the arena of round r wanted hugetlbfs, got /dev/shm */
        double r_mops[MAX_ROUNDS], r_nsop[MAX_ROUNDS], r_cpuns[MAX_ROUNDS];
        double r_p50[MAX_ROUNDS], r_p99[MAX_ROUNDS], r_p999[MAX_ROUNDS];
        double p50, p99, p999, pmax; /* ns: medians across rounds (pmax: the largest) */
        uint64_t lat_n;
        double floor_ratio;   /* floor's Mops / this (medians across rounds); 0 when not known */
        double floor_over_ns; /* this ns/op - floor's ns/op (medians across rounds), per process */
        /* churn: per measured sample, the backend's evictions in it (counter differences from
         * its release to the moment every worker had stopped; live: at that moment) and the new
         * keys the workers' streams made */
        unsigned ev_has; /* BENCH_EV_* bits; 0: the backend reports none */
        struct bench_evictions ev[MAX_SAMPLES];
        uint64_t new_keys[MAX_SAMPLES];
};

/* Median, min and max across the measured rounds of one r_ array of R. */
struct stat5 round_stat(const struct result *r, const double *v);

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
        unsigned rounds;            /* --rounds: the whole set measured N times */
        uint64_t work_ns[MAX_WORK]; /* --work-ns levels */
        unsigned nwork;
        char cmdline[1024];
};

/* The warm-up sample's length: the sample length, at most 0.1 s. */
#define WARMUP_MAX_S 0.1

/* ---------------------------------------------------------------- the machine (scale_env.c) */

#define NCLOCKS 4 /* CLOCK_MONOTONIC, CLOCK_MONOTONIC_COARSE, rdtsc, rdtscp */

struct clocks {
        struct {
                const char *name;
                int ok;        /* 0: not on this architecture */
                double ns;     /* cost of one read: median of 7 loops of 200 000 reads */
                double res_ns; /* clock_getres; TSC: one tick (measured against the clock) */
        } row[NCLOCKS];
        int constant_tsc, nonstop_tsc; /* /proc/cpuinfo flags: 1, 0, or -1 unknown */
};

void clocks_measure(struct clocks *c);

/*
 * The work knob: ITERS steps of a dependent multiply-add chain kept in a register (no memory
 * traffic, no clock call); the same inline code is calibrated (scale_env.c) and run by workers.
 */
static inline uint64_t work_spin(uint64_t iters)
{
        uint64_t x = iters | 1;
        for (uint64_t i = 0; i < iters; i++) {
                x = x * 6364136223846793005ull + 1442695040888963407ull;
                __asm__ volatile("" : "+r"(x));
        }
        return x;
}

struct work_cal {
        unsigned n;
        double ns_per_iter; /* median of 7 runs of 1e6 steps */
        uint64_t work_ns[MAX_WORK], iters[MAX_WORK];
        double measured_ns[MAX_WORK]; /* one call of work_spin(iters), measured after */
};

void work_calibrate(const uint64_t *work_ns, unsigned n, struct work_cal *w);

/*
 * The cpu line of /proc/stat: steal ticks, busy ticks (all but idle and iowait) and all ticks
 * (user .. steal); and the CPU time of this process and its reaped children, s.
 */
struct steal_snap {
        int ok;
        uint64_t steal, busy, total;
        double own_s;
};

int steal_read(struct steal_snap *s);
/* Steal between A and B in % of all ticks; -1 when unknown. */
double steal_pct(const struct steal_snap *a, const struct steal_snap *b);
/*
 * The CPU time other processes of this machine used between A and B (busy ticks less this
 * process's and its children's CPU time), in % of all CPUs' time; -1 when unknown.
 */
double other_pct(const struct steal_snap *a, const struct steal_snap *b);

/* What the run saw besides the results, for the report's header and the JSON. */
struct run_env {
        struct clocks clk;
        struct work_cal cal;
        double steal_all;               /* % over the whole run */
        double steal_round[MAX_ROUNDS]; /* % per round */
        double other_all;               /* other processes' CPU time, % of all CPUs' time */
        double other_round[MAX_ROUNDS];
        unsigned rounds;
        double secs; /* the run's wall time */
};

/* sysinfo_read, then the cost of one clock_gettime pair into timer_ns (scale_report.c). */
void scale_sysinfo_read(struct sysinfo *si);
int opts_parse(int argc, char **argv, struct opts *o);
void opts_usage(FILE *f);

/* ---------------------------------------------------------------- reports (scale_report.c) */

void report_header(const struct opts *o, const struct sysinfo *si, const char *methods,
                   const struct run_env *e);
/* After the runs, before the tables: steal time, hugepage fallbacks, the arenas obtained. */
void report_run_notes(const struct opts *o, const struct run_env *e, const struct result *r,
                      unsigned n);
void report_table_head(unsigned rounds);
void report_row(const struct result *r);
/* Before the churn rows: what churn does, for a table of CAPACITY live keys. */
void report_churn_head(uint64_t capacity);
/* The floors side by side: the clock's share of the floor. */
void report_floors(const struct opts *o, const struct result *r, unsigned n);
/* Throttle's throughput over each other backend's (BACKS, in table order), per round. */
void report_leads(const struct opts *o, const struct result *r, unsigned n,
                  const char *const *backs, unsigned nb);
void report_wait(const struct wait_result *w, unsigned n);
void report_targets(const struct opts *o, const struct result *r, unsigned n);
/* The admitted/denied share of every measured row: the mix its throughput was measured on. */
void report_mix(const struct result *r, unsigned n);
int report_json(FILE *f, const struct opts *o, const struct sysinfo *si, const struct run_env *e,
                const struct result *r, unsigned n, const struct wait_result *w, unsigned nw);
int report_out_dir(const struct opts *o, const struct sysinfo *si, const struct run_env *e,
                   const struct result *r, unsigned n, const struct wait_result *w, unsigned nw);
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
