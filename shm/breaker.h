/*
 * breaker.h - circuit breakers (kind = breaker): per key, closed / open / half-open, shared by
 * every process of the host, decided lock-free on the slot's state word.
 *
 * Semantics (the reference the tests' model is written from; throttled.conf(5) says the same).
 *   closed     every call goes ahead. A reported failure adds one to the consecutive failures
 *              (a success sets them to 0) and to the sliding window. The breaker trips (-> open)
 *              when the consecutive failures reach `failures` (0: rule off), or when the window
 *              holds at least `min_calls` reported calls of which at least `failure_rate` percent
 *              failed (0: rule off).
 *   open       every call is refused, with the time left until half-open: it becomes half-open
 *              `cooldown` after it opened (lazily: the next call or report sees it).
 *   half-open  at most `probes` calls at once go ahead as probes, across all processes; others are
 *              refused. A probe's success counts; `successes` of them close the breaker (window
 *              and consecutive failures start empty). A probe's failure opens it again (a new
 *              cooldown). A probe reported IGNORE gives its place back. Probes not reported
 *              `probe_timeout` after the last probe was handed out are given up (their places
 *              freed, their late reports ignored): THE bound for a probe holder that died. No
 *              liveness check is needed and a live probe is never given up before its own
 *              probe_timeout has passed.
 *   Reports are counted only for the period (generation) the ticket was handed out in: every
 *   transition starts a new one, so a late report from a closed period that tripped, or from a
 *   probe given up, changes nothing (thr_breaker_report returns 1, "ignored"). The period number
 *   has 6 bits: 64 transitions bring it round, and they take at least 21 x min(cooldown,
 *   probe_timeout) (every three need a cooldown or a give-up), so the client ignores a report of
 *   a call handed out that long ago or longer (its ticket keeps the hand-out time), and refuses a
 *   ticket handed out in another process (a fork's copy).
 *
 * Times are kept in the state word in units of 2^20 ns (1.05 ms), rounded up: the breaker opens
 * "at" ceil(now / U) * U, so a cooldown or a probe_timeout is never early and at most U late.
 *
 * The state word (bits):
 *   63..62  state: 0 closed, 1 open, 2 half-open (3 is never written: a word with its top twelve
 *           bits set, the table's reserved values, is never a breaker's)
 *   61..22  time, units of 2^20 ns: closed, the last report (a success rewrites it only when it
 *           is idle_ttl / 8 old, and never with idle_ttl 0, so a hot key's successes do not all
 *           write; a failure always does)
 *           or the close; open, when it opened; half-open, when the last probe was handed out
 *   21..16  generation (6 bits, wraps): bumped by every transition and every give-up of probes
 *   15..8   consecutive failures, saturating at 255
 *    7..4   half-open successes so far (successes <= 15)
 *    3..0   probes in flight (probes <= 15)
 * Every change is one CAS from the exact word read, so a process killed at any instruction has
 * made its change or not; a breaker never needs repair. A closed breaker's go-ahead writes nothing
 * (one load). The lazy transitions (open -> half-open, probes given up) are written only by the
 * CAS of the call that acts on them.
 *
 * The sliding window: the slot's aux storage holds 8 bucket words, one per slice of
 * ceil(window / 8) ns; slice i of arena time lands in bucket i mod 8. A word is
 *   63..58 generation (the closed period that counted it) | 57..40 slice (low 18 bits) |
 *   39..20 calls | 19..0 failures (each saturating at 2^20 - 1: at saturation neither moves)
 * and changes only by CAS; a word whose slice or generation is not the current one is taken as
 * empty and reset by the CAS that first adds to it, provided the state word is still in the
 * report's period when that CAS is tried (a report stalled across a trip and a close would
 * otherwise reset the next period's bucket). The window's sum is over the current slice
 * and the 7 before it (so it spans between 7/8 and 8/8 of `window`). A report adds to its bucket
 * before its CAS of the state word, which then judges the rate on the sum; a bucket counted by a
 * report whose CAS then finds the period over is simply of an old generation. Two reports of one
 * slice never lose each other's counts (CAS); a process whose clock read lags by 7 slices could
 * reset a current bucket: the rate is approximate at that scale, never the state word.
 *
 * Untrusted words. Every decoding is total: a state word of state 3 is -EBADMSG to a client and
 * "corrupt" to shmctl; probes in flight above `probes` only refuse new probes until reports or the
 * give-up free them; bucket counts are bounded by their fields (a sum of 8 is below 2^24) and
 * failures are clamped to calls. Nothing here indexes memory by a value read from the arena.
 *
 * Eviction (kind.c): a closed key with no consecutive failures and no report for idle_ttl (its
 * time field at least max(idle_ttl, window) + idle_ttl / 8 old: the lag a success may leave it
 * at) holds nothing a new key would not, its window's failures having aged out too: the daemon
 * may evict it. on_full = evict may choose a closed key without consecutive failures whose window
 * is empty of failures (time field window + idle_ttl / 8 old). Any other key (open, half-open,
 * failing) is pinned. A call still out when its key is evicted (one lasting idle_ttl) has its
 * report ignored.
 */
#ifndef THR_SHM_BREAKER_H
#define THR_SHM_BREAKER_H

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>

#include "layout.h"

#define SHM_BRK_CLOSED    0u
#define SHM_BRK_OPEN      1u
#define SHM_BRK_HALF_OPEN 2u

#define SHM_BRK_OK      0 /* report: counted */
#define SHM_BRK_IGNORED 1 /* report: its period is over (or not a probe in half-open) */

#define SHM_BRK_OUT_SUCCESS 1u
#define SHM_BRK_OUT_FAILURE 2u
#define SHM_BRK_OUT_IGNORE  3u

/* One breaker state word, decoded. */
struct shm_brk {
        uint32_t state, gen, consec, succ, inflight;
        uint64_t t_ns; /* the time field, in ns (a multiple of 2^20) */
};

/* A breaker limiter's configuration, out of its parameter record (THR_KIND_BREAKER in layout.h
 * says which field holds which). */
struct shm_brk_cfg {
        uint32_t failures, rate, probes, successes;
        uint64_t min_calls, window_ns, cooldown_ns, probe_timeout_ns;
        uint64_t idle_ttl_ns; /* closed: a report rewrites the time field when it is this / 8 old */
};

static inline void shm_brk_cfg(const struct thr_params *p, struct shm_brk_cfg *c)
{
        *c = (struct shm_brk_cfg){.failures = (uint32_t)p->rate_n,
                                  .rate = (uint32_t)p->burst,
                                  .probes = (uint32_t)p->level,
                                  .successes = (uint32_t)p->reserved,
                                  .min_calls = p->initial,
                                  .window_ns = p->period_ns,
                                  .cooldown_ns = p->max_reserve_units,
                                  .probe_timeout_ns = p->leases,
                                  .idle_ttl_ns = p->idle_ttl_ns};
}

/* Whether P is a consistent breaker record (arena.c, the client's params_pin). */
bool shm_brk_params_ok(const struct thr_params *p);

/* Decode WORD (THR_TAT_FRESH: a new key, closed). -EBADMSG: state 3 or a table value. */
int shm_brk_decode(uint64_t word, struct shm_brk *b);
uint64_t shm_brk_encode(const struct shm_brk *b);

/* B as it stands at NOW: open past its cooldown is half-open (a new generation); probes in
 * flight past probe_timeout are given up (a new generation). Returns whether B changed. */
bool shm_brk_settle(const struct shm_brk_cfg *c, struct shm_brk *b, uint64_t now);

/* Time left at NOW until B (settled) lets a call through: 0 closed or a probe place free; open:
 * until half-open; half-open full: until its probes are given up (at the latest). */
uint64_t shm_brk_retry_ns(const struct shm_brk_cfg *c, const struct shm_brk *b, uint64_t now);

/*
 * shm_brk_allow - the decision for a call at NOW on WORD: 0 go ahead (*NEXT the word to CAS in,
 * equal to WORD when nothing changes; *GEN the period; *PROBE whether it is a probe), -EAGAIN
 * refused (*RETRY_NS as shm_brk_retry_ns), -EBADMSG. Pure.
 */
int shm_brk_allow(const struct shm_brk_cfg *c, uint64_t word, uint64_t now, uint64_t *next,
                  uint32_t *gen, bool *probe, uint64_t *retry_ns);

/*
 * shm_brk_report - the word after OUTCOME of a call handed out in period GEN (a probe or not) is
 * reported at NOW on WORD, the window holding CALLS calls and FAILS failures (this one included;
 * read only when a closed breaker's failure needs the rate rule). SHM_BRK_OK (*NEXT), or
 * SHM_BRK_IGNORED (*NEXT = WORD), or -EBADMSG. Pure.
 */
int shm_brk_report(const struct shm_brk_cfg *c, uint64_t word, uint64_t now, uint32_t gen,
                   bool probe, uint32_t outcome, uint64_t calls, uint64_t fails, uint64_t *next);

/* Whether a report of OUTCOME for period GEN counts in the window: the breaker closed in GEN. */
bool shm_brk_counts(const struct shm_brk_cfg *c, uint64_t word, uint64_t now, uint32_t gen,
                    bool probe, uint32_t outcome);

/* The window's buckets (aux storage of the slot: 8 words). */
#define SHM_BRK_BUCKETS 8u
#define SHM_BRK_AUX     64u /* bytes of a key's aux storage */
/* Add a call (FAILED or not) of period GEN at NOW to its bucket, unless the state word STATE
 * (NULL: not checked) has moved to another period by the CAS. */
void shm_brk_window_add(const struct shm_brk_cfg *c, _Atomic uint64_t *bk, uint32_t gen,
                        uint64_t now, bool failed, const _Atomic uint64_t *state);
void shm_brk_window_sum(const struct shm_brk_cfg *c, const _Atomic uint64_t *bk, uint32_t gen,
                        uint64_t now, uint64_t *calls, uint64_t *fails);

/* kind.c's questions. */
bool shm_brk_pinned(const struct thr_params *p, uint64_t word, uint64_t now);
bool shm_brk_idle(const struct thr_params *p, uint64_t word, uint64_t now, uint64_t ttl);

static inline const char *shm_brk_state_name(uint32_t s)
{
        return s == SHM_BRK_CLOSED ? "closed" : s == SHM_BRK_OPEN ? "open" : "half-open";
}

#endif
