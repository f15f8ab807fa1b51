/*
 * clock.h - the clocks a limiter's decisions may read: precise, coarse, or the TSC.
 *
 * Every clock here reads arena time: ns since the arena's epoch on CLOCK_MONOTONIC (shm_now_ns).
 * The precise clock is clock_gettime(CLOCK_MONOTONIC) through the vDSO: about 20-25 ns on the
 * machines we run on, most of what the cheapest possible decision costs. Two cheaper readings:
 *
 *   coarse  clock_gettime(CLOCK_MONOTONIC_COARSE) through the vDSO: the kernel's time at its last
 *           update, no hardware read; the same value in every process. It lags CLOCK_MONOTONIC
 *           by up to about two of its resolutions (clock_getres: the tick, 1 to 10 ms): 2.0 to
 *           6.0 ms were measured at a 4 ms resolution, so L = 2 * resolution.
 *   tsc     the CPU's time-stamp counter, scaled as the vDSO scales it: each thread anchors a
 *           (CLOCK_MONOTONIC, TSC) pair, reads TSC cycles since the anchor and converts them at
 *           a rate (hdr.tsc_mult) THR_TSC_MARGIN_PPM lower than the one measured when the arena
 *           was made, so the extrapolation runs slower than CLOCK_MONOTONIC, never faster (the
 *           margin is four times the most NTP may slew CLOCK_MONOTONIC, 500 ppm). After
 *           THR_TSC_SPAN_CYCLES cycles the thread anchors again; an anchor whose two reads were
 *           further apart than hdr.tsc_gap cycles (the thread was preempted or stopped between
 *           them) is refused and read again, at most 4 times, then the precise clock answers
 *           (a stale anchor would lag by the whole stop, for a whole span). Offered only where the
 * CPU says the TSC is invariant (constant_tsc, nonstop_tsc) and the kernel trusts it across CPUs
 *           (clocksource tsc, or tsc_reliable): shm_clock_facts.
 *
 * THE BOUND. Each reading r taken at true time t (CLOCK_MONOTONIC) satisfies t - L <= r <= t:
 *   - precise: L = 0 (up to the read itself);
 *   - coarse: the tick value is the time of a tick that has passed: r <= t; L = coarse_res_ns;
 *   - tsc: the anchor's CLOCK_MONOTONIC value m0 is read BEFORE its cycle count c0 (ordered by
 *     fences), so m0 <= the true time at c0; cycles since then convert at a rate below the
 *     true one, so m0 + (c - c0) * mult / 2^32 <= true time at c. The lag is at most the
 *     anchor's read window (<= tsc_gap cycles, else refused) plus margin * span: hdr.tsc_lag_ns,
 *     about a microsecond. Should the rate ever be wrong (a kernel's tick adjusted by adjtimex, a
 *     migrated VM, a scribbled header), the next anchor, however old the last one, sees the
 *     extrapolation ahead of CLOCK_MONOTONIC (checked in 128 bits) and the process reads the
 *     precise clock from then on (shm_tsc_broken): one span (~0.4 ms) of readings at most.
 * A GCRA decision on a reading r that lags t by at most L is exactly the decision a process with
 * the precise clock makes when it read its clock L earlier and was then delayed L before its CAS,
 * which any process may be (preemption between the read and the CAS). The GCRA argument
 * (DESIGN.md section 5) already covers such a process, so no new behaviour appears; what L sets
 * is a bound on that delay. Hence: (1) in one state (TAT), a lagging reading admits a request only
 * if the true time admits it (TAT - r <= B*T - c*T implies TAT - t <= B*T - c*T): it never admits
 * what the precise clock would deny, it can only deny (delay) what the precise clock would admit;
 * (2) over any interval of d ns, a key admits at most B + (d + L) / T units: every admission
 * moves the TAT up by at least c*T, and an admission needs TAT <= r + B*T with r <= t, while the
 * first admission of the interval starts from a TAT >= its reading >= start - L. The precise
 * clock's bound is the same with L the delay of a preempted process. What a lag cannot promise
 * is the precise clock's history: a key idle until a lagging reading starts its TAT up to L
 * earlier, which a later reading may use (that is the L in (2), and no more).
 * tests/test_clock.c checks (1) and (2) with processes of different lags on a manual schedule (and
 * that a process AHEAD of true time breaks (2)), and that coarse and tsc readings are never ahead
 * of CLOCK_MONOTONIC.
 *
 * Which limiters: GCRA only (config `clock_read`, params flags THR_PARAM_CLOCK). A window's log
 * compares stamps written by one process with times read by another: a lagging stamp would end
 * its unit's window early, so windows, semaphores and budgets read the precise clock. Waits
 * (reservations, acquire) sleep on the precise clock: they are not decisions.
 *
 * THE AUTO RULE (clock_read = auto, the default): the cheapest clock whose lag L is at most
 * T / 64, where T is the limiter's emission interval: coarse if coarse_lag_ns * 64 <= T (a 4 ms
 * tick, L = 8 ms: T >= 512 ms, about 2/s or slower), else tsc if usable and tsc_lag_ns * 64 <= T
 * (L about 1.2 us: T >= 80 us, about 12 000/s or slower), else precise. At L <= T / 64 the slack
 * of (2) is under 1/64 of a unit and an admission is delayed by under 1/64 of T. The daemon
 * chooses from its own measurement (struct shm_clock_facts), never from the shared header.
 *
 * Manual-clock arenas (tests): every clock reads hdr.manual_now_ns; a test build
 * (THR_TEST_HOOKS) subtracts thr_test_clock_lag_ns from the coarse and tsc readings of this
 * process, so a test sets each process's lag.
 */
#ifndef THR_SHM_CLOCK_H
#define THR_SHM_CLOCK_H

#include <stdatomic.h>
#include <stdint.h>
#include <time.h>

#include "arena.h"
#include "layout.h"

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#define THR_HAVE_TSC 1
#else
#define THR_HAVE_TSC 0
#endif

#define THR_TSC_SPAN_CYCLES                                                                        \
        (1ull << 20)             /* re-anchor after this many cycles (~0.4 ms at 2.5 GHz)          \
                                  */
#define THR_TSC_MARGIN_PPM 2000u /* the rate is lowered by this much (NTP slews <= 500) */
#define THR_CLOCK_AUTO_DIV 64u   /* auto: a clock whose lag is at most T / 64 */

#ifdef THR_TEST_HOOKS
extern _Atomic int64_t thr_test_clock_lag_ns; /* < 0: ahead (a test of the test) */
#endif

/* A thread's TSC anchor: CLOCK_MONOTONIC ns read before the cycle count tsc0. */
struct shm_tsc_anchor {
        uint64_t tsc0;
        int64_t mono0;
};
extern __thread struct shm_tsc_anchor shm_tsc_tls __attribute__((tls_model("initial-exec")));
/* Set (once, never cleared) when a re-anchor found this process's TSC reading ahead of
 * CLOCK_MONOTONIC: it reads the precise clock from then on. */
extern _Atomic uint32_t shm_tsc_broken;

/* A process's copy of an arena's TSC calibration, checked when it opened the arena. */
struct shm_tsc_cal {
        uint64_t mult; /* ns per cycle times 2^32 (0: no TSC clock) */
        uint64_t gap;  /* widest anchor read accepted, cycles */
};

/* What this machine's clocks are: the daemon's measurement (hdr fields of the same names). */
struct shm_clock_facts {
        uint64_t tsc_mult, tsc_gap, tsc_lag_ns, coarse_lag_ns;
};

/* The manual clock, lagged for this process's coarse and tsc readings in a test build. */
static inline uint64_t shm_manual_lagged(const struct thr_hdr *h)
{
        uint64_t t = atomic_load_explicit(&h->manual_now_ns, memory_order_acquire);
#ifdef THR_TEST_HOOKS
        int64_t lag = atomic_load_explicit(&thr_test_clock_lag_ns, memory_order_relaxed);
        if (lag >= 0)
                t = t > (uint64_t)lag ? t - (uint64_t)lag : 0;
        else
                t += (uint64_t)-lag;
#endif
        return t;
}

/* CLOCK_MONOTONIC_COARSE as arena time; 0 for the tick before the arena's epoch. */
static inline uint64_t shm_now_coarse(const struct thr_hdr *h)
{
        if (h->clock_id == THR_CLOCK_MANUAL)
                return shm_manual_lagged(h);
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
        int64_t v = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec - h->epoch_ns;
        return v > 0 ? (uint64_t)v : 0;
}

/* Re-anchor this thread and return the (precise) time of the new anchor (clock.c). */
uint64_t shm_tsc_reanchor(const struct thr_hdr *h, const struct shm_tsc_cal *cal);

/*
 * The TSC clock with calibration CAL (the caller's copy, checked when it opened the arena: mult
 * nonzero and sane). Lags CLOCK_MONOTONIC by at most hdr.tsc_lag_ns.
 */
static inline uint64_t shm_now_tsc(const struct thr_hdr *h, const struct shm_tsc_cal *cal)
{
#if THR_HAVE_TSC
        if (h->clock_id == THR_CLOCK_MANUAL)
                return shm_manual_lagged(h);
        struct shm_tsc_anchor *a = &shm_tsc_tls;
        uint64_t d = __rdtsc() - a->tsc0; /* a migration backwards wraps: re-anchors */
        if (__builtin_expect(d < THR_TSC_SPAN_CYCLES, 1)) {
                int64_t v = a->mono0 - h->epoch_ns + (int64_t)((d * cal->mult) >> 32);
                return v > 0 ? (uint64_t)v : 0;
        }
        return shm_tsc_reanchor(h, cal);
#else
        (void)cal;
        return shm_now_ns(h);
#endif
}

/*
 * shm_clock_facts - this machine's clock facts for an arena of clock CLOCK_ID: for a real clock,
 * the TSC's rate (lowered by the margin), anchor window and lag, or zeros when it is not usable
 * (WHY, may be NULL, says why), and the coarse clock's lag; measured once per process (~10 ms
 * when the TSC is usable), then cached. For a manual clock, nominal values (every clock reads the
 * manual time). Thread-safe.
 */
void shm_clock_facts(uint32_t clock_id, struct shm_clock_facts *out, char *why, size_t whylen);

/* Write F into the header's clock fields (creation, and every configuration). */
void shm_clock_facts_store(struct thr_hdr *h, const struct shm_clock_facts *f);

/* A process's calibration from an arena header: zeros unless the rate is sane (0.01 to 10 ns a
 * cycle) and the gap is 1 to 2^20 cycles. */
struct shm_tsc_cal shm_tsc_cal_of(const struct thr_hdr *h);

/*
 * shm_clock_choose - the clock a GCRA limiter of emission interval T_NS reads on a machine of
 * facts F, given what its config asks (enum thr_clock_read): AUTO by the rule above; TSC where
 * there is no usable TSC falls back to PRECISE. Other kinds always get PRECISE. *LAG_NS (may be
 * NULL) gets the chosen clock's lag bound.
 */
uint32_t shm_clock_choose(const struct shm_clock_facts *f, uint32_t kind, uint32_t want,
                          double t_ns, uint64_t *lag_ns);

/* "auto", "precise", "coarse", "tsc" (or "?") */
const char *shm_clock_read_name(uint32_t how);

#endif
