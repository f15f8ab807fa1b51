/*
 * helpers.h - fixtures shared by the tests: throwaway arenas in private directories.
 */
#ifndef THR_TEST_HELPERS_H
#define THR_TEST_HELPERS_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/types.h>

#include "shm.h"
#include "throttle/throttle.h"

struct tarena {
        char dir[128];         /* private directory holding the arena file */
        char path[256];        /* arena file */
        struct shm_map map;    /* the creator's mapping (read-write) */
        thr_arena *a;          /* opened through the public API */
        thr_limiter *kept[16]; /* tlim_kept's handles, closed by tarena_free */
        int nkept;
};

/* A limiter spec with capacity 1024, shards 0, max_reserve 60 s, insert_wait 10 s. */
struct shm_limiter_spec tspec(const char *name, uint64_t rate_n, uint64_t period_ns, uint64_t burst,
                              uint64_t initial);
/* tspec for a budget limiter whose new keys start with INITIAL. */
struct shm_limiter_spec tspec_budget(const char *name, uint64_t initial);

/*
 * tarena_make - build an arena with these limiters in a fresh directory under /dev/shm (or on
 * hugetlbfs when HUGE is SHM_HUGE_REQUIRE and dir is NULL), manual or real clock, and open it
 * through thr_arena_open. Criterion-asserts on failure.
 */
void tarena_make(struct tarena *t, uint32_t clock, enum shm_hugepages huge,
                 const struct shm_limiter_spec *specs, size_t n);
void tarena_free(struct tarena *t);

/* thr_limiter_open or fail the test. tlim_kept: the handle is closed by tarena_free (so a test
 * that fails half-way leaks nothing for LeakSanitizer to report). */
thr_limiter *tlim(struct tarena *t, const char *name);
thr_limiter *tlim_kept(struct tarena *t, const char *name);

/* The key table of limiter NAME in T's arena, or fail the test. */
struct thr_table *ttable(struct tarena *t, const char *name);

/* ---------------------------------------------------------------- the daemon's side, by hand */

/* A snapshot of limiter NAME's directory entry (params, table geometry), or fail the test. */
struct shm_lim_snap tsnap(struct tarena *t, const char *name);

/*
 * tmaint - one whole maintenance pass of limiter NAME at the arena's time, as throttled runs it
 * (evictions of idle keys, reclaims of slots whose period is at most DONE, repairs, trims),
 * asserting no shard lock was busy; *TAG (if not NULL): the tag it retired with.
 * tcount - slots of NAME's table with status ST holding KEY (any key if NULL; a key of up to
 * THR_KEY_INLINE bytes); *LAST (if not NULL): one of them.
 */
struct shm_maint_stats tmaint(struct tarena *t, const char *name, uint64_t done, uint32_t *tag);
/* The arguments of a pass over limiter SN of T's arena at its time, as throttled makes them:
 * reclaims up to DONE, shard locks taken as ME. */
struct shm_maint_args tmaint_args(struct tarena *t, const struct shm_lim_snap *sn, uint64_t done,
                                  uint64_t me);
int tcount(struct tarena *t, const char *name, unsigned st, const char *key,
           struct thr_slot **last);
/* tslot_at - slot AT - 1 of limiter NAME's table (AT: 1 + an index, as a key handle remembers it);
 * tkey_hint - the slot KH remembers, 1 + its index (0: none). */
struct thr_slot *tslot_at(struct tarena *t, const char *name, uint64_t at);
uint64_t tkey_hint(struct thr_key *kh);
/* treader_of_tid - the reader record of T's arena owned by thread TID, or NULL. */
const struct thr_reader *treader_of_tid(struct tarena *t, pid_t tid);
/* tcancel_first - CALL(ARG) run by a new thread with a cancellation already pending when it calls:
 * a first call registers the thread, whose cancellation points (open, close, getrandom) the library
 * shields while it holds the registry lock, so the cancellation acts inside the call where nothing
 * is held, or at the latest just after it. The thread is joined within 5 s (one that unwound
 * holding the lock never ends) and must end cancelled. Returns its tid (for treader_of_tid). */
pid_t tcancel_first(void (*call)(void *), void *arg);
/* tgp_wait - a grace period of T's arena, started and then scanned up to TRIES times NAP_US apart
 * (as the daemon's rescans); *DONE raised to the best result seen. Returns whether it completed. */
bool tgp_wait(struct tarena *t, uint64_t *done, int tries, unsigned nap_us);

/* A hugetlbfs 2 MiB mount with at least PAGES free pages, or false with WHY filled. */
bool thugepages_available(uint64_t pages, char *why, size_t whylen);

/*
 * tfork - fork() for tests: the child gets SIGKILL when the test process dies (PR_SET_PDEATHSIG),
 * so a failed or killed test never leaves children spinning, holding ctest's pipes open.
 * tchild_tie - the same for a child made another way (raw clone): call first thing in the child
 * with the parent's pid.
 */
pid_t tfork(void);
void tchild_tie(pid_t parent);

/*
 * tpid_exited - whether process PID can no longer run user code: gone, a zombie, or inside
 * do_exit (PF_EXITING). A SIGKILLed process drops its file locks (the arena's liveness) in
 * exit_files, after its memory is released but before it becomes a zombie: for that moment
 * /proc shows it running, with PF_EXITING set.
 */
bool tpid_exited(int pid);

/* tfree_port - a loopback TCP port nobody listens on now (the kernel's choice; free again once
 * closed, so another process may take it before the caller binds it). */
int tfree_port(void);

/* Whether the test runs under a sanitizer or valgrind (seccomp and timing checks skip). */
bool tunder_instrumentation(void);

/* ---------------------------------------------------------------- a throttled under test */

#define TD_MAX   16 /* daemons one test may start, restarts included */
#define TD_READY 5  /* seconds a daemon may take to start, stop or log what is awaited */

/*
 * A real throttled run by a test: a private directory under /dev/shm holding its config, its
 * logs and (with in_dir) its arena, whose name is unique to the test process. The binary is
 * $THR_TEST_BUILD_DIR/daemon/throttled (CTest sets the variable). Everything is polled within a
 * bounded time, never assumed after a fixed sleep.
 */
struct tdaemon {
        char dir[64]; /* private directory: config, logs, and (if in_dir) the arena */
        char conf[128];
        char name[64];   /* arena name, unique */
        char arena[256]; /* arena file */
        bool in_dir;     /* arena in the private dir ([arena] dir =) or in /dev/shm */
        pid_t pid[TD_MAX];
        int nlogs;
        struct shm_map map; /* the test's own read-write mapping of the arena */
        thr_arena *a;       /* the arena through the client API */
        thr_limiter *l[2];
};

/* tdaemon_init - a fresh fixture; tdaemon_fini - SIGKILL every daemon, remove every file. */
void tdaemon_init(struct tdaemon *d);
void tdaemon_fini(struct tdaemon *d);
/* Close the client handles and the test's mapping (wait_ready makes them again). */
void tdaemon_unmap(struct tdaemon *d);

/*
 * tdaemon_config - write the config: [arena] (manual clock; in D's directory or /dev/shm),
 * [daemon] with heartbeat_ms = 20, metrics off and the lines DAEMON_KEYS (may be ""), then
 * LIMITERS (INI text). tdaemon_config_raw - the config is TEXT as given.
 */
void tdaemon_config(struct tdaemon *d, bool in_dir, const char *daemon_keys, const char *limiters);
void tdaemon_config_raw(struct tdaemon *d, const char *text);
/* The 1-based line of the config that contains NEEDLE, or fail the test. */
int tdaemon_config_line(const struct tdaemon *d, const char *needle);

/*
 * Start throttled with EXTRA (NULL or an option) on the config; returns its index I. It runs in
 * D's directory. tdaemon_start_conf: on the config file CONF instead (relative to D's directory,
 * or absolute).
 */
int tdaemon_start(struct tdaemon *d, const char *extra);
int tdaemon_start_conf(struct tdaemon *d, const char *conf, const char *extra);
/*
 * tdaemon_start_real - a daemon on the real (monotonic) clock, its arena in /dev/shm (room for 4
 * limiters, 64 reader records; heartbeat 20 ms, metrics off) with the sections LIMITERS, started
 * and ready: its index. For the examples' tests, which run programs that open the arena by name.
 * texample_line - run the shell command CMD (popen), read its first line of output into LINE,
 * its wait status into *ST; fail the test if it printed nothing.
 */
int tdaemon_start_real(struct tdaemon *d, const char *limiters);
void texample_line(const char *cmd, char *line, size_t len, int *st);

/* The whole log (stdout and stderr) of daemon I so far; valid until the next call. */
const char *tdaemon_log(const struct tdaemon *d, int i);
/* How many times WHAT occurs in the log of daemon I. */
int tdaemon_log_count(const struct tdaemon *d, int i, const char *what);
/* Wait (bounded) until the log of daemon I holds WHAT at least N times. */
void tdaemon_wait_log(const struct tdaemon *d, int i, const char *what, int n);
/*
 * Run `throttled -c CONF A1 A2 A3` (each may be NULL: the arguments end there) to its end; its
 * exit status, with its stdout and stderr in OUT (LEN bytes, NUL-terminated). It must exit.
 */
int tdaemon_run(const struct tdaemon *d, char *out, size_t len, const char *a1, const char *a2,
                const char *a3);
/* Wait (bounded) for daemon I to exit; its wait status. tdaemon_exit_code: it must exit. */
int tdaemon_wait_exit(struct tdaemon *d, int i);
int tdaemon_exit_code(struct tdaemon *d, int i);
/* SIGTERM daemon I: it must exit 0. tdaemon_kill: SIGKILL it and reap it. */
void tdaemon_stop(struct tdaemon *d, int i);
void tdaemon_kill(struct tdaemon *d, int i);
/*
 * Wait (bounded) until daemon I runs the arena: the file exists, the daemon lock is held by it,
 * and daemons attached ATTACH times in all. Maps the arena (D->map), opens it (D->a).
 */
void tdaemon_wait_ready(struct tdaemon *d, int i, uint64_t attach);
/* thr_limiter_open NAME into D->l[SLOT] (closing what was there), or fail the test. */
thr_limiter *tdaemon_lim(struct tdaemon *d, int slot, const char *name);
/* The directory entry of limiter NAME in STATE (THR_DIR_LIVE or _RETIRED), or fail. */
struct thr_dir_entry *tdaemon_entry(const struct tdaemon *d, const char *name, uint32_t state);
/* The table of live limiter NAME; the live slot of KEY in it (fail if none). */
struct thr_table *tdaemon_table(const struct tdaemon *d, const char *name);
struct thr_slot *tdaemon_slot(const struct tdaemon *d, const char *name, const char *key);

/* An adaptive limiter's controller (daemon/adapt.c): tadapt_started - NAME's live entry once
 * the daemon has started its controller (bounded wait); tadapt_wait_steps - wait (bounded) until
 * it has taken N steps; tlim_rate - the limiter's rate now (per its period). */
struct thr_dir_entry *tadapt_started(const struct tdaemon *d, const char *name);
void tadapt_wait_steps(const struct thr_dir_entry *de, uint64_t n);
uint64_t tlim_rate(thr_limiter *l);
/* Seconds since T0 (CLOCK_MONOTONIC); a 5 ms pause between two polls. */
double telapsed_s(const struct timespec *t0);
void tdoze(void);
/* Wait (polling every 5 ms, up to S seconds) until COND holds, or fail the test with WHAT; its
 * value is the seconds it waited. */
#define TWAIT_FOR(cond, s, what)                                                                   \
        ({                                                                                         \
                struct timespec t0_;                                                               \
                clock_gettime(CLOCK_MONOTONIC, &t0_);                                              \
                while (!(cond) && telapsed_s(&t0_) < (s))                                          \
                        usleep(5000);                                                              \
                cr_assert((cond), "%s (waited %.1f s)", what, telapsed_s(&t0_));                   \
                telapsed_s(&t0_);                                                                  \
        })

#define SEC 1000000000ull

/*
 * tlock_me - the shard-lock value of the calling thread in arena A (the thread registers if it
 * has not yet): what shm_shard_lock takes as ME for a client.
 * tprobe - the probe (shard, home slot, tag) of KEY in table TB of the arena mapped at M.
 */
uint64_t tlock_me(thr_arena *a);
void tprobe(const struct shm_map *m, const struct thr_table *tb, const char *key,
            struct shm_probe *p);
/* tkey_at - a key "PREFIX<i>" whose home slot in its shard of TB is HOME, into BUF. */
void tkey_at(const struct shm_map *m, const struct thr_table *tb, uint32_t home, const char *prefix,
             char *buf, size_t len);

#endif
