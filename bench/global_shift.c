/*
 * global_shift.c - bench_global part 3: demand shifting across three hosts of one global limit.
 *
 * Three throttled (separate arenas, one Redis), one client process per host trying key "k" of
 * api (R = 2000/s, B = 100) about every 25 us while its host is busy. After one idle second,
 * four phases: host 0 busy alone, host 1 alone, all three, host 2 alone. Every 20 ms this
 * process samples each host's share (the directory entry of api in its arena, mapped read-only)
 * and the clients' admission counters (MAP_SHARED). Reported:
 *   - convergence after each shift: for each host whose share moved by more than 5 points in
 *     the phase, the time from the phase start until it reached 95% of its final value (rising)
 *     or came 95% of the way down to it (falling); final = the mean of the phase's last 0.5 s;
 *   - overshoot: over every 1 s window of samples, admitted - R x window, its maximum, where,
 *     and the bound of daemon/global.c over that window (B + H + B x share increases + R x round
 *     trip x share decreases); the same over the whole run. Share moves are summed from the
 *     samples (a move up and back within 20 ms is missed; shares move at renewals, 50 ms).
 * The samples go to PREFIX.dat, a gnuplot script to PREFIX.gp and its plot to PREFIX.png.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "global_bench.h"
#include "throttle/throttle.h"

#define SAMPLE_MS 20
#define PHASES    4
#define ONE       1000000.0

static const unsigned phase_busy[PHASES] = {1u, 2u, 7u, 4u}; /* bit h: host h busy */
static const char *const phase_name[PHASES] = {"host 0 alone", "host 1 alone", "all three",
                                               "host 2 alone"};

/* Shared with the client processes (MAP_SHARED before the forks). */
struct board {
        _Atomic int stop;
        _Atomic int busy[GB_HOSTS];
        _Atomic uint64_t admitted[GB_HOSTS], attempts[GB_HOSTS];
};

struct sample {
        double t; /* s since the idle second began */
        double share[GB_HOSTS];
        uint64_t adm[GB_HOSTS], att[GB_HOSTS];
        unsigned busy;
};

struct run {
        struct gb_host host[GB_HOSTS];
        pid_t client[GB_HOSTS];
        struct board *b;
        struct sample *s;
        int n, first[PHASES + 1]; /* samples; the first sample of each phase (and the end) */
};

#define SHIFT_LIMITERS "[api]\nrate = 2000/s\nburst = 100\nscope = global\nexpected_hosts = 3\n"

static void client_main(struct board *b, const char *arena, int h)
{
        thr_arena *a = NULL;
        thr_limiter *l = NULL;
        if (thr_arena_open(arena, 0, &a) < 0 || thr_limiter_open(a, "api", &l) < 0)
                _exit(3);
        prctl(PR_SET_TIMERSLACK, 1000UL); /* 25 us sleeps, not 75 */
        struct timespec gap = {0, 25000}, idle = {0, 2000000};
        while (!atomic_load(&b->stop)) {
                if (!atomic_load(&b->busy[h])) {
                        nanosleep(&idle, NULL);
                        continue;
                }
                struct thr_result res;
                if (thr_limiter_try(l, "k", 1, 1, &res) < 0)
                        _exit(4);
                atomic_fetch_add(&b->attempts[h], 1);
                if (res.admitted)
                        atomic_fetch_add(&b->admitted[h], 1);
                nanosleep(&gap, NULL);
        }
        thr_limiter_close(l);
        thr_arena_close(a);
        _exit(0);
}

static void run_stop(struct run *r)
{
        if (r->b)
                atomic_store(&r->b->stop, 1);
        for (int h = 0; h < GB_HOSTS; h++) {
                if (r->client[h] > 0) {
                        for (int ms = 0; ms < 2000 && waitpid(r->client[h], NULL, WNOHANG) == 0;
                             ms += 10)
                                usleep(10000);
                        if (waitpid(r->client[h], NULL, WNOHANG) == 0) {
                                kill(r->client[h], SIGKILL);
                                waitpid(r->client[h], NULL, 0);
                        }
                        r->client[h] = 0;
                }
                gb_host_stop(&r->host[h]);
        }
        if (r->b)
                munmap(r->b, sizeof(*r->b));
        free(r->s);
}

static int run_start(const struct gb_opts *o, struct run *r, int port)
{
        r->b = mmap(NULL, sizeof(*r->b), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (r->b == MAP_FAILED)
                return r->b = NULL, -errno;
        memset(r->b, 0, sizeof(*r->b));
        for (int h = 0; h < GB_HOSTS; h++) {
                int rc = gb_host_start(&r->host[h], o, h, port, SHIFT_LIMITERS);
                if (rc < 0)
                        return rc;
                r->client[h] = tfork();
                if (r->client[h] < 0)
                        return r->client[h] = 0, -errno;
                if (r->client[h] == 0)
                        client_main(r->b, r->host[h].name, h);
        }
        return 0;
}

static void take(struct run *r, double t0, unsigned busy)
{
        struct sample *s = &r->s[r->n++];
        s->t = gb_now() - t0;
        s->busy = busy;
        for (int h = 0; h < GB_HOSTS; h++) {
                const struct thr_dir_entry *e = gb_entry(&r->host[h], "api");
                s->share[h] = e ? atomic_load(&e->global_share) : 0;
                s->adm[h] = atomic_load(&r->b->admitted[h]);
                s->att[h] = atomic_load(&r->b->attempts[h]);
        }
}

/* One idle second, then the phases, a sample every 20 ms on an absolute schedule. */
static void sample_all(const struct gb_opts *o, struct run *r)
{
        int per = (int)(o->phase_s * 1000 / SAMPLE_MS + 0.5), idle = 1000 / SAMPLE_MS;
        int total = idle + PHASES * per + 1;
        r->s = calloc((size_t)total, sizeof(*r->s));
        if (!r->s)
                return;
        struct timespec next;
        clock_gettime(CLOCK_MONOTONIC, &next);
        double t0 = gb_now();
        unsigned busy = 0;
        for (int i = 0; i < total && !gb_stop; i++) {
                int p = i < idle ? -1 : (i - idle) / per;
                if (i >= idle && (i - idle) % per == 0 && p < PHASES) {
                        busy = phase_busy[p];
                        r->first[p] = i;
                        for (int h = 0; h < GB_HOSTS; h++)
                                atomic_store(&r->b->busy[h], (int)(busy >> h & 1));
                }
                take(r, t0, busy);
                next.tv_nsec += SAMPLE_MS * 1000000L;
                if (next.tv_nsec >= 1000000000L) {
                        next.tv_nsec -= 1000000000L;
                        next.tv_sec++;
                }
                clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
        }
        for (int h = 0; h < GB_HOSTS; h++)
                atomic_store(&r->b->busy[h], 0);
        r->first[PHASES] = r->n - 1;
}

static uint64_t total_adm(const struct sample *s)
{
        uint64_t n = 0;
        for (int h = 0; h < GB_HOSTS; h++)
                n += s->adm[h];
        return n;
}

/* Sums of the share increases and decreases (millionths) over samples [I, J]. */
static void moves(const struct run *r, int i, int j, double *inc, double *dec)
{
        *inc = *dec = 0;
        for (int k = i; k < j; k++)
                for (int h = 0; h < GB_HOSTS; h++) {
                        double d = r->s[k + 1].share[h] - r->s[k].share[h];
                        *inc += d > 0 ? d : 0;
                        *dec += d < 0 ? -d : 0;
                }
}

/* ---------------------------------------------------------------- the report */

static void report_convergence(const struct run *r)
{
        gb_out("\nconvergence after each shift (share in %% of R; to 95%% of the final value "
               "when rising, 95%% of the way down when falling)\n");
        gb_out("%-14s %5s %9s %9s %14s\n", "phase", "host", "start", "final", "converged in");
        for (int p = 0; p < PHASES; p++) {
                int a = r->first[p], z = r->first[p + 1];
                int last = z - 500 / SAMPLE_MS > a ? z - 500 / SAMPLE_MS : a;
                unsigned newly = phase_busy[p] & ~(p ? phase_busy[p - 1] : 0u);
                for (int h = 0; h < GB_HOSTS; h++) {
                        double fin = 0, st = r->s[a].share[h];
                        for (int k = last; k < z; k++)
                                fin += r->s[k].share[h] / (double)(z - last);
                        if (fin - st < 0.05 * ONE && st - fin < 0.05 * ONE)
                                continue;
                        int k = a;
                        if (fin > st)
                                while (k < z && r->s[k].share[h] < 0.95 * fin)
                                        k++;
                        else
                                while (k < z && r->s[k].share[h] > fin + 0.05 * (st - fin))
                                        k++;
                        char took[32];
                        if (k < z)
                                snprintf(took, sizeof(took), "%.0f ms",
                                         (r->s[k].t - r->s[a].t) * 1e3);
                        else
                                snprintf(took, sizeof(took), "not in phase");
                        gb_out("%-14s %5d %8.1f%% %8.1f%% %14s%s\n", phase_name[p], h, st / 1e4,
                               fin / 1e4, took, newly >> h & 1 ? " (newly busy)" : "");
                }
        }
}

static void report_phases(const struct run *r)
{
        gb_out("\nadmissions per phase (R t = %d/s x phase length)\n", GB_RATE);
        gb_out("%-14s %8s %8s %8s %8s %8s %10s\n", "phase", "host 0", "host 1", "host 2", "total",
               "R t", "tries");
        for (int p = 0; p < PHASES; p++) {
                const struct sample *a = &r->s[r->first[p]], *z = &r->s[r->first[p + 1]];
                uint64_t tries = 0;
                gb_out("%-14s", phase_name[p]);
                for (int h = 0; h < GB_HOSTS; h++) {
                        gb_out(" %8" PRIu64, z->adm[h] - a->adm[h]);
                        tries += z->att[h] - a->att[h];
                }
                gb_out(" %8" PRIu64 " %8.0f %10" PRIu64 "\n", total_adm(z) - total_adm(a),
                       GB_RATE * (z->t - a->t), tries);
        }
}

static void bound_line(const char *what, const struct run *r, int i, int j, double rtt)
{
        double inc, dec, t = r->s[j].t - r->s[i].t;
        moves(r, i, j, &inc, &dec);
        double adm = (double)(total_adm(&r->s[j]) - total_adm(&r->s[i]));
        double b_inc = GB_BURST * inc / ONE, r_dec = GB_RATE * rtt * dec / ONE;
        double bound = GB_RATE * t + GB_BURST + GB_HOSTS + b_inc + r_dec;
        gb_out("%s: t = %.2f s at %.2f s, admitted %.0f, R t = %.0f, excess %+.0f\n", what, t,
               r->s[i].t, adm, GB_RATE * t, adm - GB_RATE * t);
        gb_out("  bound R t + B + H + B x increases + R x rtt x decreases = %.0f + %d + %d + "
               "%.1f + %.2f = %.1f\n  (share increases %.3f, decreases %.3f of the whole; "
               "admitted/bound %.3f)\n",
               GB_RATE * t, GB_BURST, GB_HOSTS, b_inc, r_dec, bound, inc / ONE, dec / ONE,
               adm / bound);
}

static void report_overshoot(const struct run *r, double rtt)
{
        int w = 1000 / SAMPLE_MS, a = r->first[0], z = r->first[PHASES], best = a;
        double worst = -1e18;
        for (int i = a; i + w <= z; i++) {
                double x = (double)(total_adm(&r->s[i + w]) - total_adm(&r->s[i])) -
                           GB_RATE * (r->s[i + w].t - r->s[i].t);
                if (x > worst)
                        worst = x, best = i;
        }
        gb_out("\novershoot (round trip %.1f us, the PING's; B = %d, H = %d)\n", rtt * 1e6,
               GB_BURST, GB_HOSTS);
        if (best + w <= z)
                bound_line("worst 1 s window", r, best, best + w, rtt);
        bound_line("whole run", r, a, z, rtt);
}

static void write_dat(FILE *f, const struct run *r)
{
        fprintf(f, "# bench_global part 3: t(s) share0 share1 share2 (%% of R) admitted0..2 "
                   "(cumulative) rate0..2 total (admitted/s over the last 100 ms) busy(bits)\n");
        int w = 100 / SAMPLE_MS;
        for (int i = 0; i < r->n; i++) {
                const struct sample *s = &r->s[i], *p = &r->s[i >= w ? i - w : 0];
                double dt = s->t - p->t > 0 ? s->t - p->t : 1;
                fprintf(f, "%.3f %.2f %.2f %.2f", s->t, s->share[0] / 1e4, s->share[1] / 1e4,
                        s->share[2] / 1e4);
                for (int h = 0; h < GB_HOSTS; h++)
                        fprintf(f, " %" PRIu64, s->adm[h]);
                for (int h = 0; h < GB_HOSTS; h++)
                        fprintf(f, " %.0f", (double)(s->adm[h] - p->adm[h]) / dt);
                fprintf(f, " %.0f %u\n", (double)(total_adm(s) - total_adm(p)) / dt, s->busy);
        }
}

static void write_gp(FILE *f, const struct gb_opts *o, const struct run *r)
{
        fprintf(
            f,
            "# %s.gp - bench_global part 3: shares of 3 hosts (top), admissions/s per host "
            "and total\n# with R (bottom). Written by bench_global --out; run from its "
            "directory: gnuplot %s.gp\n"
            "if (!exists(\"datafile\")) datafile = \"%s.dat\"\n"
            "if (!exists(\"outfile\")) outfile = \"%s.png\"\n"
            "R = %d\nset terminal pngcairo noenhanced size 1000,800 font \",10\"\n"
            "set output outfile\nset multiplot layout 2,1 title \"bench_global: demand "
            "shift across 3 hosts (R = %d/s, B = %d; phases: %s, %s, %s, %s)\"\n"
            "set grid\nset key outside right top vertical font \",9\"\nset xlabel \"time (s)\"\n",
            o->prefix, o->prefix, o->prefix, o->prefix, GB_RATE, GB_RATE, GB_BURST, phase_name[0],
            phase_name[1], phase_name[2], phase_name[3]);
        for (int p = 0; p < PHASES; p++)
                fprintf(f, "set arrow from %.2f, graph 0 to %.2f, graph 1 nohead dt 3\n",
                        r->s[r->first[p]].t, r->s[r->first[p]].t);
        fprintf(f, "set title \"share of each host (its arena's directory entry, every 20 ms)\"\n"
                   "set ylabel \"share (%%)\"\nset yrange [0:105]\n"
                   "plot datafile u 1:2 w l lw 2 lc rgb \"#9400d3\" t \"host 0\", '' u 1:3 w l lw "
                   "2 lc rgb \"#009e73\" t \"host 1\", "
                   "'' u 1:4 w l lw 2 lc rgb \"#e69f00\" t \"host 2\"\n"
                   "set title \"admitted per second (100 ms windows)\"\n"
                   "set ylabel \"admitted/s\"\nset yrange [0:*]\n"
                   "plot datafile u 1:11 w l lw 5 lc rgb \"#c0c0c0\" t \"total\", R w l dt 2 "
                   "lw 2 lc rgb \"red\" t \"R\", datafile u 1:8 w l lw 1.5 lc rgb \"#9400d3\" t "
                   "\"host 0\", '' u "
                   "1:9 w l lw 1.5 lc rgb \"#009e73\" t \"host 1\", '' u 1:10 w l lw 1.5 lc rgb "
                   "\"#e69f00\" t \"host 2\"\n"
                   "unset multiplot\n");
}

static void write_files(const struct gb_opts *o, const struct run *r)
{
        char p[PATH_MAX + 80], cmd[2 * PATH_MAX + 200];
        snprintf(p, sizeof(p), "%s/%s.dat", o->out, o->prefix);
        FILE *f = fopen(p, "we");
        if (f) {
                write_dat(f, r);
                fclose(f);
        }
        snprintf(p, sizeof(p), "%s/%s.gp", o->out, o->prefix);
        f = fopen(p, "we");
        if (f) {
                write_gp(f, o, r);
                fclose(f);
        }
        snprintf(cmd, sizeof(cmd), "cd '%s' && gnuplot '%s.gp'", o->out, o->prefix);
        int rc = system(cmd);
        gb_out("\nfiles: %s/%s.{txt,dat,gp}%s\n", o->out, o->prefix,
               rc == 0 ? " and .png" : " (gnuplot failed: no .png)");
}

int gb_shift(const struct gb_opts *o, int redis_port, double rtt_s)
{
        struct run r = {0};
        int rc = run_start(o, &r, redis_port);
        if (rc == 0)
                sample_all(o, &r);
        if (rc == 0 && r.s && !gb_stop) {
                gb_out("\n## Part 3: demand shift across %d hosts, R = %d/s, B = %d, phases of "
                       "%.1f s after 1 s idle\n",
                       GB_HOSTS, GB_RATE, GB_BURST, o->phase_s);
                report_convergence(&r);
                report_phases(&r);
                report_overshoot(&r, rtt_s);
                if (o->out[0])
                        write_files(o, &r);
        }
        if (rc == 0 && !r.s)
                rc = -ENOMEM;
        run_stop(&r);
        return rc;
}
