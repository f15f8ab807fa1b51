/*
 * scale_opts.c - the command line of bench_scale: defaults, --quick, and the exact command line
 * kept for the report's header.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "scale.h"

/*
 * Several short rounds are worth more than one long one (a noisy minute on a shared machine hits
 * one round, not every figure): 3 rounds of 3 samples of 0.12 s, after a warm-up sample of 0.1 s,
 * keep the full default run (8 scenarios, procs 1,2,8, work 0 and 1000, 11 backends) near 20
 * minutes on 2 vCPUs (16 min with 8 backends and 0.15 s samples, measured on a loaded VM).
 */
#define DEFAULT_SECONDS 0.12
#define DEFAULT_SAMPLES 3u
#define DEFAULT_ROUNDS  3u
#define DEFAULT_WORK    "0,1000"
#define QUICK_SECONDS   0.03
#define QUICK_SAMPLES   2u
#define QUICK_ROUNDS    1u
#define DEFAULT_CG_OPS  100000u
#define DEFAULT_WAIT    2000.0

void opts_usage(FILE *f)
{
        fprintf(f,
                "usage: bench_scale [--procs 1,2,8] [--seconds S] [--samples R] [--rounds N]\n"
                "         [--work-ns 0,1000] [--pin]\n"
                "         [--backends floor,floor-none,floor-coarse,floor-tsc,throttle,\n"
                "                     throttle-coarse,throttle-tsc,throttle-key,nginx-real,\n"
                "                     nginx-hash,sharded-mutex,mutex-local,cas-local,redis-tcp,\n"
                "                     redis-unix,window]\n"
                "         [--scenarios LIST] [--backing auto|hugetlbfs|shm] [--json] [--out DIR]\n"
                "         [--baseline-save FILE] [--baseline FILE] [--wait-rate N]\n"
                "         [--callgrind [--cg-ops N]] [--quick]\n"
                "  backends: redis is an old name of redis-tcp\n"
                "  scenarios: hot 10k 1m 1m-zipf denied 10k@100/s 1k@10k/s churn wait\n"
                "             (wait: throttle only)\n"
                "  defaults: 3 rounds of 3 samples of 0.12 s (warm-up 0.1 s), work 0,1000 ns\n"
                "  --quick: keys 100 (10k, 10k@100/s, 1k@10k/s), 1000 (1m, 1m-zipf; churn\n"
                "           capacity), 1 round of 2 samples of 0.03 s, procs 1,2, wait 0.2 s\n"
                "           (CI smoke)\n");
}

static int parse_procs(const char *s, struct opts *o)
{
        o->nprocs = 0;
        for (const char *p = s; *p;) {
                char *end;
                long v = strtol(p, &end, 10);
                if (end == p || v < 1 || v > 256 || o->nprocs == MAX_PROCS_LIST)
                        return -EINVAL;
                o->procs[o->nprocs++] = (int)v;
                if (*end != ',' && *end != '\0')
                        return -EINVAL;
                p = *end ? end + 1 : end;
        }
        return o->nprocs ? 0 : -EINVAL;
}

/* --work-ns: up to MAX_WORK levels in ns, each 0 .. 1e6. */
static int parse_work(const char *s, struct opts *o)
{
        o->nwork = 0;
        for (const char *p = s; *p;) {
                char *end;
                double v = strtod(p, &end);
                if (end == p || !(v >= 0 && v <= 1e6) || o->nwork == MAX_WORK)
                        return -EINVAL;
                o->work_ns[o->nwork++] = (uint64_t)v;
                if (*end != ',' && *end != '\0')
                        return -EINVAL;
                p = *end ? end + 1 : end;
        }
        return o->nwork ? 0 : -EINVAL;
}

static int parse_pos(const char *s, double lo, double hi, double *out)
{
        char *end;
        double v = strtod(s, &end);
        if (end == s || *end || !(v >= lo && v <= hi))
                return -EINVAL;
        *out = v;
        return 0;
}

/* LIST with the old name "redis" (now "redis-tcp") replaced; LIST itself if it has none. */
static const char *backend_aliases(const char *list)
{
        static char out[1024];
        size_t at = 0;
        int changed = 0;
        for (const char *p = list; *p;) {
                size_t l = strcspn(p, ",");
                int old = l == 5 && strncmp(p, "redis", 5) == 0;
                int n = snprintf(out + at, sizeof(out) - at, "%s%.*s", at ? "," : "",
                                 old ? 9 : (int)l, old ? "redis-tcp" : p);
                if (n < 0 || (size_t)n >= sizeof(out) - at)
                        return list;
                at += (size_t)n;
                changed |= old;
                p += l + (p[l] == ',');
        }
        return changed ? out : list;
}

static int parse_one(int c, const char *a, struct opts *o, double *secs, double *samples)
{
        double v;
        switch (c) {
        case 'P':
                return parse_procs(a, o);
        case 's':
                return parse_pos(a, 0.001, 600, secs);
        case 'r':
                return parse_pos(a, 1, MAX_SAMPLES, samples);
        case 'p':
                o->pin = true;
                return 0;
        case 'j':
                o->json = true;
                return 0;
        case 'q':
                o->quick = true;
                return 0;
        case 'b':
                o->backends = backend_aliases(a);
                return 0;
        case 'S':
                o->scenarios = a;
                return 0;
        case 'B':
                o->backing = a;
                return strcmp(a, "auto") && strcmp(a, "hugetlbfs") && strcmp(a, "shm") ? -EINVAL
                                                                                       : 0;
        case 'o':
                o->out_dir = a;
                return 0;
        case 'w':
                o->baseline_save = a;
                return 0;
        case 'l':
                o->baseline = a;
                return 0;
        case 'c':
                o->callgrind = true;
                return 0;
        case 'R':
                o->cg_run = a;
                return 0;
        case 'n':
                if (parse_pos(a, 1, 1e9, &v) < 0)
                        return -EINVAL;
                o->cg_ops = (uint64_t)v;
                return 0;
        case 'W':
                return parse_pos(a, 1, 1e6, &o->wait_rate);
        case 'N':
                if (parse_pos(a, 1, MAX_ROUNDS, &v) < 0)
                        return -EINVAL;
                o->rounds = (unsigned)v;
                return 0;
        case 'k':
                return parse_work(a, o);
        case 'h':
                return 1;
        default:
                return -EINVAL;
        }
}

static void keep_cmdline(int argc, char **argv, struct opts *o)
{
        size_t at = 0;
        for (int i = 0; i < argc && at < sizeof(o->cmdline); i++)
                at += (size_t)snprintf(o->cmdline + at, sizeof(o->cmdline) - at, "%s%s",
                                       i ? " " : "", argv[i]);
}

/* Returns 0, 1 for --help, -EINVAL. Explicit values win over --quick in any order. */
int opts_parse(int argc, char **argv, struct opts *o)
{
        static const struct option lo[] = {{"procs", 1, 0, 'P'},         {"seconds", 1, 0, 's'},
                                           {"samples", 1, 0, 'r'},       {"pin", 0, 0, 'p'},
                                           {"json", 0, 0, 'j'},          {"quick", 0, 0, 'q'},
                                           {"backends", 1, 0, 'b'},      {"scenarios", 1, 0, 'S'},
                                           {"backing", 1, 0, 'B'},       {"out", 1, 0, 'o'},
                                           {"baseline-save", 1, 0, 'w'}, {"baseline", 1, 0, 'l'},
                                           {"callgrind", 0, 0, 'c'},     {"cg-run", 1, 0, 'R'},
                                           {"cg-ops", 1, 0, 'n'},        {"wait-rate", 1, 0, 'W'},
                                           {"rounds", 1, 0, 'N'},        {"work-ns", 1, 0, 'k'},
                                           {"help", 0, 0, 'h'},          {NULL, 0, NULL, 0}};
        double secs = 0, samples = 0;
        int c, procs_set = 0, work_set = 0;
        *o = (struct opts){.backing = "auto", .cg_ops = DEFAULT_CG_OPS, .wait_rate = DEFAULT_WAIT};
        keep_cmdline(argc, argv, o);
        while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
                int rc = parse_one(c, optarg, o, &secs, &samples);
                procs_set |= c == 'P';
                work_set |= c == 'k';
                if (rc < 0 && optarg)
                        fprintf(stderr, "bench_scale: bad value '%s'\n", optarg);
                if (rc != 0)
                        return rc;
        }
        if (optind < argc)
                return -EINVAL;
        o->seconds = secs > 0 ? secs : o->quick ? QUICK_SECONDS : DEFAULT_SECONDS;
        o->samples = samples > 0 ? (unsigned)samples : o->quick ? QUICK_SAMPLES : DEFAULT_SAMPLES;
        if (!procs_set)
                parse_procs(o->quick ? "1,2" : "1,2,8", o);
        if (!work_set)
                parse_work(DEFAULT_WORK, o);
        if (!o->rounds)
                o->rounds = o->quick ? QUICK_ROUNDS : DEFAULT_ROUNDS;
        if (o->rounds * o->samples > MAX_SAMPLES) {
                fprintf(stderr, "bench_scale: --rounds x --samples at most %u\n", MAX_SAMPLES);
                return -EINVAL;
        }
        return 0;
}
