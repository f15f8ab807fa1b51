/*
 * scale_env.c - what bench_scale measures about the machine before and around its runs, none of
 * it a backend: the cost and resolution of the clocks a limiter could read (the clock table), the
 * calibration of the work knob's busy loop, and the CPU steal time of /proc/stat.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define HAVE_TSC 1
#else
#define HAVE_TSC 0
#endif

#include "scale.h"

/* ---------------------------------------------------------------- helpers */

static double now_ns(void)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static int cmp_d(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

static double median_of(double *v, unsigned n)
{
        qsort(v, n, sizeof(*v), cmp_d);
        return n & 1 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ---------------------------------------------------------------- clock table */

#define CLOCK_READS 200000u
#define CLOCK_LOOPS 7u

static volatile uint64_t sink;

static double loop_clock(clockid_t id)
{
        struct timespec t;
        uint64_t acc = 0;
        double t0 = now_ns();
        for (unsigned i = 0; i < CLOCK_READS; i++) {
                clock_gettime(id, &t);
                acc += (uint64_t)t.tv_nsec;
        }
        double dt = now_ns() - t0;
        sink = acc;
        return dt / CLOCK_READS;
}

#if HAVE_TSC
static double loop_rdtsc(int p)
{
        uint64_t acc = 0;
        unsigned aux;
        double t0 = now_ns();
        if (p)
                for (unsigned i = 0; i < CLOCK_READS; i++)
                        acc += __rdtscp(&aux);
        else
                for (unsigned i = 0; i < CLOCK_READS; i++)
                        acc += __rdtsc();
        double dt = now_ns() - t0;
        sink = acc;
        return dt / CLOCK_READS;
}

/* ns per TSC tick: ticks counted over 20 ms of CLOCK_MONOTONIC. */
static double tsc_tick_ns(void)
{
        double t0 = now_ns();
        uint64_t c0 = __rdtsc();
        while (now_ns() - t0 < 20e6)
                ;
        uint64_t c1 = __rdtsc();
        double t1 = now_ns();
        return c1 > c0 ? (t1 - t0) / (double)(c1 - c0) : 0;
}
#endif

static double clock_cost(int which)
{
        double v[CLOCK_LOOPS];
        for (unsigned i = 0; i < CLOCK_LOOPS; i++) {
                switch (which) {
                case 0:
                        v[i] = loop_clock(CLOCK_MONOTONIC);
                        break;
                case 1:
                        v[i] = loop_clock(CLOCK_MONOTONIC_COARSE);
                        break;
#if HAVE_TSC
                default:
                        v[i] = loop_rdtsc(which == 3);
                        break;
#else
                default:
                        v[i] = 0;
                        break;
#endif
                }
        }
        return median_of(v, CLOCK_LOOPS);
}

static double res_ns(clockid_t id)
{
        struct timespec r;
        if (clock_getres(id, &r) != 0)
                return 0;
        return (double)r.tv_sec * 1e9 + (double)r.tv_nsec;
}

/* Whether the "flags" line of /proc/cpuinfo has the word FLAG (-1: no flags line). */
static int cpu_flag(const char *flag)
{
        char line[8192];
        int found = -1;
        size_t n = strlen(flag);
        FILE *f = fopen("/proc/cpuinfo", "r");
        if (!f)
                return -1;
        while (found < 0 && fgets(line, sizeof(line), f)) {
                if (strncmp(line, "flags", 5) != 0)
                        continue;
                found = 0;
                for (char *p = strstr(line, flag); p && !found; p = strstr(p + 1, flag))
                        found = (p[-1] == ' ' || p[-1] == ':') &&
                                (p[n] == ' ' || p[n] == '\n' || p[n] == '\0');
        }
        fclose(f);
        return found;
}

void clocks_measure(struct clocks *c)
{
        static const char *names[NCLOCKS] = {"CLOCK_MONOTONIC", "CLOCK_MONOTONIC_COARSE", "rdtsc",
                                             "rdtscp"};
        *c = (struct clocks){.constant_tsc = cpu_flag("constant_tsc"),
                             .nonstop_tsc = cpu_flag("nonstop_tsc")};
        for (unsigned i = 0; i < NCLOCKS; i++) {
                c->row[i].name = names[i];
                c->row[i].ok = i < 2 || HAVE_TSC;
                if (c->row[i].ok)
                        c->row[i].ns = clock_cost((int)i);
        }
        c->row[0].res_ns = res_ns(CLOCK_MONOTONIC);
        c->row[1].res_ns = res_ns(CLOCK_MONOTONIC_COARSE);
#if HAVE_TSC
        c->row[2].res_ns = c->row[3].res_ns = tsc_tick_ns();
#endif
}

/* ---------------------------------------------------------------- the work knob */

#define CAL_ITERS 1000000u
#define CAL_RUNS  7u

static double spin_ns_per_iter(void)
{
        double v[CAL_RUNS];
        for (unsigned i = 0; i < CAL_RUNS; i++) {
                double t0 = now_ns();
                sink = work_spin(CAL_ITERS);
                v[i] = (now_ns() - t0) / CAL_ITERS;
        }
        return median_of(v, CAL_RUNS);
}

/* The measured cost of one call of work_spin(ITERS): median of 7 loops of about 2 ms each. */
static double spin_call_ns(uint64_t iters)
{
        double v[CAL_RUNS];
        uint64_t calls = iters ? 2000000 / iters + 1 : 1;
        for (unsigned i = 0; i < CAL_RUNS; i++) {
                uint64_t acc = 0;
                double t0 = now_ns();
                for (uint64_t k = 0; k < calls; k++)
                        acc += work_spin(iters);
                v[i] = (now_ns() - t0) / (double)calls;
                sink = acc;
        }
        return median_of(v, CAL_RUNS);
}

void work_calibrate(const uint64_t *work_ns, unsigned n, struct work_cal *w)
{
        *w = (struct work_cal){.n = n};
        w->ns_per_iter = spin_ns_per_iter();
        for (unsigned i = 0; i < n; i++) {
                double it = w->ns_per_iter > 0 ? (double)work_ns[i] / w->ns_per_iter : 0;
                w->work_ns[i] = work_ns[i];
                w->iters[i] = work_ns[i] ? (uint64_t)(it + 0.5) : 0;
                w->measured_ns[i] = w->iters[i] ? spin_call_ns(w->iters[i]) : 0;
        }
}

/* ---------------------------------------------------------------- steal */

int steal_read(struct steal_snap *s)
{
        unsigned long long v[8] = {0};
        FILE *f = fopen("/proc/stat", "r");
        *s = (struct steal_snap){0};
        if (!f)
                return -1;
        int n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                       &v[4], &v[5], &v[6], &v[7]);
        fclose(f);
        if (n < 8)
                return -1;
        for (unsigned i = 0; i < 8; i++)
                s->total += v[i];
        s->steal = v[7];
        s->busy = s->total - v[3] - v[4]; /* all but idle and iowait */
        struct rusage me, kids;
        if (getrusage(RUSAGE_SELF, &me) == 0 && getrusage(RUSAGE_CHILDREN, &kids) == 0)
                s->own_s = (double)(me.ru_utime.tv_sec + me.ru_stime.tv_sec + kids.ru_utime.tv_sec +
                                    kids.ru_stime.tv_sec) +
                           (double)(me.ru_utime.tv_usec + me.ru_stime.tv_usec +
                                    kids.ru_utime.tv_usec + kids.ru_stime.tv_usec) *
                               1e-6;
        s->ok = 1;
        return 0;
}

double other_pct(const struct steal_snap *a, const struct steal_snap *b)
{
        long hz = sysconf(_SC_CLK_TCK);
        if (!a->ok || !b->ok || b->total <= a->total || hz <= 0)
                return -1;
        double busy = (double)(b->busy - a->busy) / (double)hz, own = b->own_s - a->own_s;
        double all = (double)(b->total - a->total) / (double)hz;
        double v = 100.0 * (busy - own) / all;
        return v < 0 ? 0 : v;
}

double steal_pct(const struct steal_snap *a, const struct steal_snap *b)
{
        if (!a->ok || !b->ok || b->total <= a->total)
                return -1;
        return 100.0 * (double)(b->steal - a->steal) / (double)(b->total - a->total);
}
