/*
 * bench_report.h - what bench_try.c measures and bench_report.c prints: the options a run was
 * given, the per-scenario results (per-run ns/op for both sides and what their batches returned),
 * along with the two calls that print the report, with the machine (sysinfo.h), as a human table
 * or as JSON. Only the two bench_try files use it.
 */
#ifndef THR_BENCH_REPORT_H
#define THR_BENCH_REPORT_H

#include <stdbool.h>
#include <stdint.h>

#include "shm.h"
#include "sysinfo.h"

#define MAX_RUNS 101
#define SEQ_SEED 0x9e3779b97f4a7c15ull /* fixed: every run of the program uses one sequence */
#define ERR_LEN  512

/*
 * The window side (scenarios of at most WIN_MAX_KEYS keys): a third limiter of the same arena,
 * kind window, WIN_N units per WIN_W_NS ns, a log of WIN_N + 8 words a key. No key reaches WIN_N
 * tries in WIN_W_NS ns (one thread makes about 15 tries of a key a microsecond), so it never
 * denies, like the GCRA side; the report prints both sides' admitted share to show it. Above
 * WIN_MAX_KEYS its logs (8 (WIN_N + 8) + 64 bytes a slot, 1.5 slots a key) would be 1.4 GB at 1M
 * keys and push that scenario's arena off hugepages.
 */
#define WIN_N        100u
#define WIN_W_NS     1000u
#define WIN_MAX_KEYS 10000u

struct opts {
        unsigned runs;
        uint64_t ops;
        int pin; /* -1: not pinned */
        enum shm_hugepages huge;
        const char *backing_name;
        bool json;
        bool quick;
};

/* What one side's batches returned: used, so the compiler cannot drop the work. */
struct acc {
        uint64_t admitted;
        uint64_t denied;
        uint64_t errors;
        uint64_t checksum;
};

struct scenario {
        char label[24];
        uint32_t keys;
        int rc;             /* 0, or the -errno that stopped its setup */
        char err[ERR_LEN];  /* why setup failed */
        char note[ERR_LEN]; /* why the backing fell back to /dev/shm */
        bool fell_back;
        uint32_t backing;
        uint64_t page_size;
        uint64_t thp_bytes;
        uint64_t arena_size;
        uint64_t slots; /* slots per table (nshards * shard_slots) */
        double spacing; /* floor: slots between two keys' words (slots / keys) */
        double real_ns[MAX_RUNS];
        double floor_ns[MAX_RUNS];
        struct acc real_acc;
        struct acc floor_acc;
        /* the window side: measured in the same runs, against the same floor runs */
        bool window;
        char wlabel[24];
        uint64_t win_aux; /* bytes of one slot's log (aux_stride) */
        double win_ns[MAX_RUNS];
        struct acc win_acc;
};

/* The method, the machine, the backings, the table and the per-run lines, on stdout. */
void print_text(const struct opts *o, const struct sysinfo *si, const struct scenario *sc,
                unsigned n);

/* The same as one JSON object on stdout; a scenario whose setup failed says so and why. */
void print_json(const struct opts *o, const struct sysinfo *si, const struct scenario *sc,
                unsigned n);

#endif
