/*
 * bench_report.c - the report of bench_try: the method (what each side does, how runs alternate,
 * the seed), the machine it ran on (CPU, kernel, date, clocksource, hugepage pool), where each
 * scenario's arena landed (and a loud note when hugetlbfs fell back to /dev/shm), the table of
 * medians and ratios, the raw per-run numbers, and the same as JSON for --json. It only reads
 * what bench_try.c measured; nothing here is timed. The window side's rows come after every GCRA
 * row, in the same columns (its ns/op in the real column, against the same floor runs), so the
 * GCRA rows read as they did before it existed.
 */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_report.h"

struct summary {
        double med;
        double min;
        double max;
};

/* ---------------------------------------------------------------- statistics */

static int cmp_double(const void *a, const void *b)
{
        double x = *(const double *)a, y = *(const double *)b;
        return (x > y) - (x < y);
}

static struct summary summarize(const double *v, unsigned n)
{
        double t[MAX_RUNS];
        memcpy(t, v, n * sizeof(*v));
        qsort(t, n, sizeof(*t), cmp_double);
        double med = n & 1 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
        return (struct summary){.med = med, .min = t[0], .max = t[n - 1]};
}

/* Per run, NUM / DEN (two sides timed in the same run): their median, min and max. */
static struct summary ratios_of(const double *num, const double *den, unsigned n, double *out)
{
        for (unsigned r = 0; r < n; r++)
                out[r] = num[r] / den[r];
        return summarize(out, n);
}

static struct summary pair_ratios(const struct scenario *sc, unsigned n, double *out)
{
        return ratios_of(sc->real_ns, sc->floor_ns, n, out);
}

/* ---------------------------------------------------------------- text report */

static const char *backing_name(const struct scenario *sc)
{
        if (sc->backing == THR_BACKING_HUGETLBFS)
                return "hugetlbfs";
        return sc->thp_bytes ? "shm+thp" : "shm";
}

static void print_method(const struct opts *o, const struct sysinfo *si)
{
        char pin[32] = "not pinned";
        if (o->pin >= 0)
                snprintf(pin, sizeof(pin), "pinned to CPU %d", o->pin);
        printf("bench_try: ns per thr_limiter_try, next to a CAS floor measured in the same run\n"
               "  real     thr_limiter_try(lim, \"key:<i>\", len, cost 1, &res): the public path, "
               "keys already inserted\n"
               "  floor    clock read + CAS of max(old, now) + 1 on one 64-bit word per key, "
               "direct-indexed (no hash,\n"
               "           no key compare), words spread over the slots of an identical table "
               "in the same arena\n"
               "  clock    both: arena clock THR_CLOCK_MONOTONIC (clock_gettime via vDSO; "
               "clocksource %s)\n",
               si->clocksource);
        printf("  method   per scenario: insert every key and one untimed pass per side, then %u "
               "runs per side of\n"
               "           %" PRIu64 " ops, alternating (real first in even runs, floor first in "
               "odd), each batch timed\n"
               "           with clock_gettime(CLOCK_MONOTONIC); keys drawn by xorshift64 "
               "(seed %#" PRIx64 "), same\n"
               "           sequence for both sides; rate 1e9/s, burst 1e9 (never denies); "
               "one process, one thread, %s\n",
               o->runs, o->ops, (uint64_t)SEQ_SEED, pin);
        printf("  cpu      %s (%ld online)\n  kernel   %s\n  date     %s\n", si->cpu, si->cpus,
               si->kernel, si->date);
        printf("  hugepages pool %ld x %ld kB, %ld free at start; --backing %s\n", si->huge_total,
               si->huge_kb, si->huge_free, o->backing_name);
}

/* Sizes the way a person reads them: KiB below a MiB. */
static const char *fmt_bytes(uint64_t b, char *buf, size_t len)
{
        if (b < 1048576)
                snprintf(buf, len, "%.0f KiB", (double)b / 1024.0);
        else
                snprintf(buf, len, "%.1f MiB", (double)b / 1048576.0);
        return buf;
}

/* A fallback changes what the numbers mean (4 KiB pages, more TLB misses), so it is loud. */
static void print_fallback(const struct sysinfo *si, const struct scenario *sc)
{
        char b[32];
        uint64_t huge = si->huge_kb > 0 ? (uint64_t)si->huge_kb * 1024 : 2097152;
        printf("NOTE: %s: hugetlbfs could not hold its %s arena, so it FELL BACK to /dev/shm:\n"
               "      %s\n"
               "      It needs %" PRIu64 " free %" PRIu64 " kB hugepages (%ld were free at start); "
               "to measure it on\n"
               "      hugepages, raise the pool as root, e.g. echo 256 > "
               "/proc/sys/vm/nr_hugepages\n",
               sc->label, fmt_bytes(sc->arena_size, b, sizeof(b)), sc->note,
               (sc->arena_size + huge - 1) / huge, huge / 1024, si->huge_free);
}

static void print_backing(const struct sysinfo *si, const struct scenario *sc, unsigned n)
{
        char b[32];
        printf("  backing\n");
        for (unsigned i = 0; i < n; i++) {
                if (sc[i].rc < 0)
                        continue;
                printf("    %-9s %-9s page %" PRIu64 " kB, THP %" PRIu64 " kB, arena %s, "
                       "%" PRIu64 " slots/table, floor spacing %.2f\n",
                       sc[i].label, backing_name(&sc[i]), sc[i].page_size / 1024,
                       sc[i].thp_bytes / 1024, fmt_bytes(sc[i].arena_size, b, sizeof(b)),
                       sc[i].slots, sc[i].spacing);
        }
        for (unsigned i = 0; i < n; i++)
                if (sc[i].rc == 0 && sc[i].fell_back)
                        print_fallback(si, &sc[i]);
}

/* One row: LABEL's side (ns per run in SIDE) against the scenario's floor runs. */
static void print_row_of(const struct opts *o, const struct scenario *sc, const char *label,
                         const double *side)
{
        double pr[MAX_RUNS];
        struct summary r = summarize(side, o->runs);
        struct summary f = summarize(sc->floor_ns, o->runs);
        struct summary p = ratios_of(side, sc->floor_ns, o->runs, pr);
        char rs[48], fs[48];
        snprintf(rs, sizeof(rs), "%.1f (%.1f-%.1f)", r.med, r.min, r.max);
        snprintf(fs, sizeof(fs), "%.1f (%.1f-%.1f)", f.med, f.min, f.max);
        printf("%-13s %-9" PRIu32 " %-10s %-23s %-23s %5.2f   %.2f (%.2f-%.2f)\n", label, sc->keys,
               backing_name(sc), rs, fs, r.med / f.med, p.med, p.min, p.max);
}

static void print_row(const struct opts *o, const struct scenario *sc)
{
        print_row_of(o, sc, sc->label, sc->real_ns);
}

static void print_runs(const struct opts *o, const struct scenario *sc)
{
        printf("  %-9s", sc->label);
        for (unsigned r = 0; r < o->runs; r++)
                printf(" %.1f/%.1f", sc->real_ns[r], sc->floor_ns[r]);
        printf("\n  %-9s real: admitted %" PRIu64 " denied %" PRIu64 " errors %" PRIu64
               " checksum %" PRIu64 "; floor: ops %" PRIu64 " checksum %" PRIu64 "\n",
               "", sc->real_acc.admitted, sc->real_acc.denied, sc->real_acc.errors,
               sc->real_acc.checksum, sc->floor_acc.admitted, sc->floor_acc.checksum);
}

static void print_window_runs(const struct opts *o, const struct scenario *sc)
{
        printf("  %-9s", sc->wlabel);
        for (unsigned r = 0; r < o->runs; r++)
                printf(" %.1f/%.1f", sc->win_ns[r], sc->floor_ns[r]);
        printf("\n  %-9s window: admitted %" PRIu64 " denied %" PRIu64 " errors %" PRIu64
               " checksum %" PRIu64 " (floor: the runs of %s above)\n",
               "", sc->win_acc.admitted, sc->win_acc.denied, sc->win_acc.errors,
               sc->win_acc.checksum, sc->label);
}

/* Admitted share of a side's tries, in %: the mix its ns/op was measured on. */
static double admitted_pct(const struct acc *a)
{
        uint64_t n = a->admitted + a->denied + a->errors;
        return n ? 100.0 * (double)a->admitted / (double)n : 0;
}

/* What the window rows are, their admit/deny mix next to GCRA's, and window / GCRA per run. */
static void print_window_notes(const struct opts *o, const struct scenario *sc, unsigned n)
{
        double pr[MAX_RUNS];
        unsigned have = 0;
        for (unsigned i = 0; i < n; i++)
                have += sc[i].rc == 0 && sc[i].window;
        if (!have)
                return;
        printf(
            "\nwindow rows: real column = thr_limiter_try(win, \"key:<i>\", len, cost 1, &res) "
            "on a third limiter of the\n  same arena, kind window, %u units per %u ns (a key's "
            "log is %u + 8 words): %u tries of one key\n  never fit in %u ns, so it never denies, "
            "like the GCRA side (rate 1e9/s, burst 1e9); same keys,\n  same op records; "
            "timed in the same runs (real, floor, window in even runs; window, floor,\n  real "
            "in odd ones); floor column and ratios: the same floor runs as the GCRA row of its "
            "scenario.\n",
            WIN_N, WIN_W_NS, WIN_N, WIN_N, WIN_W_NS);
        for (unsigned i = 0; i < n; i++) {
                if (sc[i].rc != 0 || !sc[i].window)
                        continue;
                struct summary w = summarize(sc[i].win_ns, o->runs);
                struct summary g = summarize(sc[i].real_ns, o->runs);
                struct summary p = ratios_of(sc[i].win_ns, sc[i].real_ns, o->runs, pr);
                char b[32];
                printf("  %-13s log %" PRIu64 " B a slot (%s); admitted: window %.2f%%, GCRA "
                       "%.2f%%; window / GCRA %.2f, pair median %.2f (%.2f-%.2f)\n",
                       sc[i].wlabel, sc[i].win_aux,
                       fmt_bytes(sc[i].win_aux * sc[i].slots, b, sizeof(b)),
                       admitted_pct(&sc[i].win_acc), admitted_pct(&sc[i].real_acc), w.med / g.med,
                       p.med, p.min, p.max);
        }
        for (unsigned i = 0; i < n; i++) {
                char b[32];
                uint64_t aux = (8 * WIN_N + 64 + 63) / 64 * 64;
                if (sc[i].rc == 0 && !sc[i].window)
                        printf("  %-13s no window side: above %u keys its logs (%" PRIu64
                               " B a slot) would take %s\n",
                               sc[i].label, WIN_MAX_KEYS, aux,
                               fmt_bytes(aux * sc[i].slots, b, sizeof(b)));
        }
}

void print_text(const struct opts *o, const struct sysinfo *si, const struct scenario *sc,
                unsigned n)
{
        print_method(o, si);
        print_backing(si, sc, n);
        printf("\n%-13s %-9s %-10s %-23s %-23s %-7s %s\n", "scenario", "keys", "backing",
               "real ns/op (min-max)", "floor ns/op (min-max)", "ratio",
               "pair ratio median (min-max)");
        for (unsigned i = 0; i < n; i++) {
                if (sc[i].rc == 0)
                        print_row(o, &sc[i]);
                else
                        printf("%-13s %-9" PRIu32 " SETUP FAILED: %s\n", sc[i].label, sc[i].keys,
                               sc[i].err);
        }
        for (unsigned i = 0; i < n; i++)
                if (sc[i].rc == 0 && sc[i].window)
                        print_row_of(o, &sc[i], sc[i].wlabel, sc[i].win_ns);
        print_window_notes(o, sc, n);
        printf("\nper run, real/floor ns/op (run order alternates), and what the batches "
               "returned:\n");
        for (unsigned i = 0; i < n; i++)
                if (sc[i].rc == 0)
                        print_runs(o, &sc[i]);
        for (unsigned i = 0; i < n; i++)
                if (sc[i].rc == 0 && sc[i].window)
                        print_window_runs(o, &sc[i]);
}

/* ---------------------------------------------------------------- JSON report */

static void json_str(const char *s)
{
        putchar('"');
        for (; *s; s++) {
                unsigned char c = (unsigned char)*s;
                if (c == '"' || c == '\\')
                        printf("\\%c", c);
                else if (c < 0x20)
                        printf("\\u%04x", c);
                else
                        putchar(c);
        }
        putchar('"');
}

static void json_side(const char *name, const double *v, unsigned n, const struct acc *a)
{
        struct summary s = summarize(v, n);
        printf("\"%s\": {\"median_ns\": %.3f, \"min_ns\": %.3f, \"max_ns\": %.3f, \"runs_ns\": [",
               name, s.med, s.min, s.max);
        for (unsigned r = 0; r < n; r++)
                printf("%s%.3f", r ? ", " : "", v[r]);
        printf("], \"admitted\": %" PRIu64 ", \"denied\": %" PRIu64 ", \"errors\": %" PRIu64
               ", \"checksum\": %" PRIu64 "}",
               a->admitted, a->denied, a->errors, a->checksum);
}

/* The window side, measured in the same runs: its own ratios to the floor and to GCRA. */
static void json_window(const struct opts *o, const struct scenario *sc)
{
        double pr[MAX_RUNS];
        printf(",\n      \"window\": {\"label\": ");
        json_str(sc->wlabel);
        printf(", \"limit\": %u, \"window_ns\": %u, \"log_bytes_per_slot\": %" PRIu64 ", ", WIN_N,
               WIN_W_NS, sc->win_aux);
        json_side("side", sc->win_ns, o->runs, &sc->win_acc);
        struct summary w = summarize(sc->win_ns, o->runs);
        struct summary p = ratios_of(sc->win_ns, sc->floor_ns, o->runs, pr);
        printf(",\n        \"ratio_of_medians\": %.4f, \"pair_ratio\": {\"median\": %.4f, "
               "\"min\": %.4f, \"max\": %.4f, \"runs\": [",
               w.med / summarize(sc->floor_ns, o->runs).med, p.med, p.min, p.max);
        for (unsigned r = 0; r < o->runs; r++)
                printf("%s%.4f", r ? ", " : "", pr[r]);
        p = ratios_of(sc->win_ns, sc->real_ns, o->runs, pr);
        printf("]},\n        \"vs_real_ratio_of_medians\": %.4f, \"vs_real_pair_ratio\": "
               "{\"median\": %.4f, \"min\": %.4f, \"max\": %.4f, \"runs\": [",
               w.med / summarize(sc->real_ns, o->runs).med, p.med, p.min, p.max);
        for (unsigned r = 0; r < o->runs; r++)
                printf("%s%.4f", r ? ", " : "", pr[r]);
        printf("]}}");
}

static void json_scenario(const struct opts *o, const struct scenario *sc)
{
        double pr[MAX_RUNS];
        printf("    {\"scenario\": ");
        json_str(sc->label);
        printf(", \"keys\": %" PRIu32 ", \"ok\": %s, \"error\": ", sc->keys,
               sc->rc == 0 ? "true" : "false");
        json_str(sc->rc == 0 ? "" : sc->err);
        if (sc->rc != 0) {
                printf("}");
                return;
        }
        printf(", \"backing\": \"%s\", \"fell_back\": %s, \"fallback_reason\": ", backing_name(sc),
               sc->fell_back ? "true" : "false");
        json_str(sc->note);
        printf(", \"page_size\": %" PRIu64 ", \"thp_bytes\": %" PRIu64 ", \"arena_bytes\": %" PRIu64
               ", \"slots_per_table\": %" PRIu64 ", \"floor_spacing\": %.3f,\n      ",
               sc->page_size, sc->thp_bytes, sc->arena_size, sc->slots, sc->spacing);
        json_side("real", sc->real_ns, o->runs, &sc->real_acc);
        printf(",\n      ");
        json_side("floor", sc->floor_ns, o->runs, &sc->floor_acc);
        struct summary p = pair_ratios(sc, o->runs, pr);
        printf(",\n      \"ratio_of_medians\": %.4f, \"pair_ratio\": {\"median\": %.4f, "
               "\"min\": %.4f, \"max\": %.4f, \"runs\": [",
               summarize(sc->real_ns, o->runs).med / summarize(sc->floor_ns, o->runs).med, p.med,
               p.min, p.max);
        for (unsigned r = 0; r < o->runs; r++)
                printf("%s%.4f", r ? ", " : "", pr[r]);
        printf("]}");
        if (sc->window)
                json_window(o, sc);
        printf("}");
}

void print_json(const struct opts *o, const struct sysinfo *si, const struct scenario *sc,
                unsigned n)
{
        printf("{\n  \"benchmark\": \"bench_try\",\n  \"measures\": \"ns per thr_limiter_try "
               "(real) next to a clock read + CAS on one direct-indexed word per key (floor)\",\n");
        printf("  \"runs\": %u, \"ops_per_run\": %" PRIu64 ", \"seed\": %" PRIu64
               ", \"clock\": \"CLOCK_MONOTONIC\", \"clocksource\": ",
               o->runs, o->ops, (uint64_t)SEQ_SEED);
        json_str(si->clocksource);
        printf(",\n  \"backing_requested\": \"%s\", \"pin\": %d, \"quick\": %s,\n  \"cpu\": ",
               o->backing_name, o->pin, o->quick ? "true" : "false");
        json_str(si->cpu);
        printf(", \"cpus_online\": %ld, \"kernel\": ", si->cpus);
        json_str(si->kernel);
        printf(", \"date\": \"%s\",\n  \"hugepages\": {\"total\": %ld, \"free_at_start\": %ld, "
               "\"size_kb\": %ld},\n  \"scenarios\": [\n",
               si->date, si->huge_total, si->huge_free, si->huge_kb);
        for (unsigned i = 0; i < n; i++) {
                json_scenario(o, &sc[i]);
                printf("%s\n", i + 1 < n ? "," : "");
        }
        printf("  ]\n}\n");
}
