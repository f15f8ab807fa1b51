/*
 * global_bench.h - what bench_global.c (options, hosts, the hot path, Redis GCRA, callgrind) and
 * global_shift.c (the demand shift across three hosts) share: the options, a throttled "host"
 * started on its own arena, the report's output (stdout and the --out text file), the stop flag
 * set by SIGINT/SIGTERM. Single-threaded: the benchmark's main process.
 */
#ifndef THR_BENCH_GLOBAL_BENCH_H
#define THR_BENCH_GLOBAL_BENCH_H

#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "shm.h"

#define GB_RATE  2000 /* part 3: the global limit R (per second) ... */
#define GB_BURST 100  /* ... and its burst B */
#define GB_HOSTS 3

struct gb_opts {
        bool quick, callgrind;
        char daemon[PATH_MAX]; /* throttled */
        char out[PATH_MAX];    /* --out DIR, "" none */
        char prefix[64];       /* file names in DIR: PREFIX.{txt,dat,gp,png} */
        int rounds;            /* part 1 and 2: interleaved rounds */
        uint64_t tries;        /* part 1: tries per case and round */
        uint64_t redis_tries;  /* part 2: decisions per round */
        double phase_s;        /* part 3: seconds per phase */
        const char *cg_run;    /* internal: the fixed loop valgrind runs */
};

/* One throttled on an arena of its own, in /dev/shm, mapped read-only here for its directory. */
struct gb_host {
        char name[64], dir[64], conf[128], log[128], arena[160];
        pid_t pid; /* 0: not running */
        struct shm_map map;
};

extern volatile sig_atomic_t gb_stop; /* SIGINT or SIGTERM: wind down, clean up */

/* A report line: to stdout and to the --out text file. */
void gb_out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* fork, the child tied to this process (PR_SET_PDEATHSIG): what tests/redis_run.c forks its
 * servers with (tests/helpers.c has the test suite's own). */
pid_t tfork(void);
/* CLOCK_MONOTONIC in seconds. */
double gb_now(void);

/*
 * gb_host_start - write the config (arena NAME, [global] on 127.0.0.1:REDIS_PORT as host-IDX,
 * interval 50 ms, lease_ttl 500 ms, then LIMITERS), start throttled, wait until its limiter
 * "api" holds a lease (THR_GLOBAL_LEASED). 0, or -errno with the reason (and the log's tail on
 * stderr). gb_host_stop - SIGTERM (SIGKILL after 5 s), unmap, remove the arena and the files.
 */
int gb_host_start(struct gb_host *h, const struct gb_opts *o, int idx, int redis_port,
                  const char *limiters);
void gb_host_stop(struct gb_host *h);
/* The live directory entry of limiter NAME in H's arena, or NULL. */
const struct thr_dir_entry *gb_entry(const struct gb_host *h, const char *name);

/* Part 3: three hosts on one Redis (port REDIS_PORT, round trip RTT_S), the demand shifting
 * between them; tables through gb_out, the series and the plot into o->out. 0 or -errno. */
int gb_shift(const struct gb_opts *o, int redis_port, double rtt_s);

#endif
