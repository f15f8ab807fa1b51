/*
 * sem_bench.h - what bench_sem.c measures and sem_report.c prints: the configurations, the
 * options of a run, and every measurement's sample (pairs per second, fairness, context
 * switches, the most holders seen). Only those two files use it.
 */
#ifndef THR_BENCH_SEM_H
#define THR_BENCH_SEM_H

#include <stdbool.h>
#include <stdint.h>

#include "shm.h"
#include "sysinfo.h"

#define MAX_PROCS  8
#define MAX_RUNS   101
#define LEASES     16u /* lease records per key: more than any max here */
#define TTL_NS     1000000000ull
#define TIMEOUT_NS (30ull * 1000000000ull)
#define NCFG       7

/* The backends, in the order of the table's columns. */
enum { B_THR, B_POSIX, B_MUTEX, B_PEER, NB }; /* B_PEER: throttle through a peer (thr_peer_*) */

/* One configuration: MAX units, PROCS workers, blocking acquire or uncontended try. */
struct cfg {
        unsigned max, procs;
        bool try_;
};

extern const struct cfg sem_cfgs[NCFG];

struct opts {
        double seconds;
        unsigned runs;
        enum shm_hugepages huge;
        const char *backing_name;
        bool json, quick, callgrind;
        const char *cg_run; /* internal: the backend measured inside valgrind */
        uint64_t cg_ops;
};

/* One measurement: one backend, one configuration, one run. */
struct sample {
        double pairs_s;     /* pairs done by all workers / (stop - start) */
        double fair;        /* the slowest worker's pairs / the fastest's */
        double cs_per_pair; /* voluntary context switches of all workers / pairs */
        uint64_t pairs, busy, errors;
        int32_t max_seen, first_err; /* most holders ever seen at once; the first error */
        uint32_t dead;               /* EOWNERDEAD recoveries */
        uint64_t wait_max_ns;        /* throttle: the longest wait an acquire reported */
        bool failed;                 /* setup failed or hung: no number */
};

struct results {
        struct sample s[NCFG][NB][MAX_RUNS];
        int violations, hangs;
};

/* What a run printed in its header: the command, the machine, the arena's backing. */
struct run_info {
        const struct opts *o;
        const struct sysinfo *si;
        const char *backing;
        int argc;
        char **argv;
};

/* Backend B's name as the table prints it ("mutex+cond" for the mutex when MAX > 1). */
const char *sem_bname(int b, unsigned max);

/* The method, the machine, the table, the per-backend details and the per-run lines. */
void sem_print_text(const struct run_info *ri, const struct results *r);

/* The same as one JSON document on stdout. */
void sem_print_json(const struct run_info *ri, const struct results *r);

#endif
