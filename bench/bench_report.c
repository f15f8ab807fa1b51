/*
 * bench_report.c - the report of bench_try: the method (what each side does, how runs alternate,
 * the seed), the machine it ran on (CPU, kernel, date, clocksource, hugepage pool), where each
 * scenario's arena landed (and a loud note when hugetlbfs fell back to /dev/shm), the table of
 * medians and ratios, the raw per-run numbers, and the same as JSON for --json. It only reads
 * what bench_try.c measured; nothing here is timed.
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

static struct summary pair_ratios(const struct scenario *sc, unsigned n, double *out)
{
        for (unsigned r = 0; r < n; r++)
                out[r] = sc->real_ns[r] / sc->floor_ns[r];
        return summarize(out, n);
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

static void print_row(const struct opts *o, const struct scenario *sc)
{
        double pr[MAX_RUNS];
        struct summary r = summarize(sc->real_ns, o->runs);
        struct summary f = summarize(sc->floor_ns, o->runs);
        struct summary p = pair_ratios(sc, o->runs, pr);
        char rs[48], fs[48];
        snprintf(rs, sizeof(rs), "%.1f (%.1f-%.1f)", r.med, r.min, r.max);
        snprintf(fs, sizeof(fs), "%.1f (%.1f-%.1f)", f.med, f.min, f.max);
        printf("%-13s %-9" PRIu32 " %-10s %-23s %-23s %5.2f   %.2f (%.2f-%.2f)\n", sc->label,
               sc->keys, backing_name(sc), rs, fs, r.med / f.med, p.med, p.min, p.max);
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
        printf("\nper run, real/floor ns/op (run order alternates), and what the batches "
               "returned:\n");
        for (unsigned i = 0; i < n; i++)
                if (sc[i].rc == 0)
                        print_runs(o, &sc[i]);
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
        printf("]}}");
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
