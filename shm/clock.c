/*
 * clock.c - the cheap clocks' slow paths: measuring the TSC's rate when an arena is made,
 * re-anchoring a thread, choosing a limiter's clock. The argument is in clock.h.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <pthread.h>

#include "clock.h"
#include "shm.h"
#include "testhook.h"

__thread struct shm_tsc_anchor shm_tsc_tls __attribute__((tls_model("initial-exec")));
_Atomic uint32_t shm_tsc_broken;
#ifdef THR_TEST_HOOKS
_Atomic int64_t thr_test_clock_lag_ns;
#endif

static int64_t mono_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#if THR_HAVE_TSC
/* The cycle count after every earlier instruction completed and before any later one starts:
 * the kernel's rdtsc_ordered (mfence for the CPUs where lfence alone does not order; rdtscp is
 * avoided because valgrind's CPU lacks it). */
static inline uint64_t tsc_after(void)
{
        _mm_mfence();
        _mm_lfence();
        uint64_t t = __rdtsc();
        _mm_lfence();
        return t;
}

/* The cycle count before any later instruction starts. */
static inline uint64_t tsc_before(void)
{
        _mm_lfence();
        uint64_t t = __rdtsc();
        _mm_lfence();
        return t;
}
#endif

uint64_t shm_tsc_reanchor(const struct thr_hdr *h, const struct shm_tsc_cal *cal)
{
#if THR_HAVE_TSC
        if (atomic_load_explicit(&shm_tsc_broken, memory_order_relaxed) || cal->mult == 0)
                return shm_now_ns(h);
        struct shm_tsc_anchor *a = &shm_tsc_tls;
        for (int tries = 0; tries < 4; tries++) {
                uint64_t pre = tsc_after();
                int64_t mono = mono_ns();
                THR_HOOK(THR_HOOK_TSC_ANCHOR_READ, NULL);
                uint64_t post = tsc_after();
                /* the old anchor's extrapolation at PRE must not pass MONO (read after PRE): if
                 * it does, this process's TSC rate is wrong, and it reads the precise clock from
                 * now on. Any age: 128-bit product. */
                uint64_t d = pre - a->tsc0;
                if (a->tsc0 && pre > a->tsc0 &&
                    (__int128)a->mono0 + (__int128)(((unsigned __int128)d * cal->mult) >> 32) >
                        (__int128)mono) {
                        atomic_store_explicit(&shm_tsc_broken, 1, memory_order_relaxed);
                        a->tsc0 = 0;
                        break;
                }
                if (post < pre || post - pre > cal->gap)
                        continue; /* stopped between the reads: MONO is too old for POST */
                a->tsc0 = post;
                a->mono0 = mono;
                int64_t v = mono - h->epoch_ns;
                return v > 0 ? (uint64_t)v : 0;
        }
        a->tsc0 = 0; /* no anchor: the next reading tries again */
        return shm_now_ns(h);
#else
        (void)cal;
        return shm_now_ns(h);
#endif
}

/* Whether the TSC may stand in for CLOCK_MONOTONIC here; if not, WHY. */
static bool tsc_usable(char *why, size_t whylen)
{
#if THR_HAVE_TSC
        char src[64] = "";
        FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "re");
        if (f) {
                if (!fgets(src, sizeof(src), f))
                        src[0] = 0;
                fclose(f);
        }
        src[strcspn(src, "\n")] = 0;
        bool constant = false, nonstop = false, reliable = false;
        f = fopen("/proc/cpuinfo", "re");
        if (f) {
                char line[4096];
                while (fgets(line, sizeof(line), f)) {
                        if (strncmp(line, "flags", 5) != 0)
                                continue;
                        for (char *tok =
                                 strtok(strchr(line, ':') ? strchr(line, ':') + 1 : line, " \t\n");
                             tok; tok = strtok(NULL, " \t\n")) {
                                constant |= !strcmp(tok, "constant_tsc");
                                nonstop |= !strcmp(tok, "nonstop_tsc");
                                reliable |= !strcmp(tok, "tsc_reliable");
                        }
                        break;
                }
                fclose(f);
        }
        if (!constant || !nonstop) {
                snprintf(why, whylen, "the CPU does not say its TSC is invariant (%s%s)",
                         constant ? "" : "no constant_tsc ", nonstop ? "" : "no nonstop_tsc");
                return false;
        }
        if (strcmp(src, "tsc") != 0 && !reliable) {
                snprintf(why, whylen,
                         "the kernel does not trust the TSC across CPUs (clocksource %s, no "
                         "tsc_reliable)",
                         src[0] ? src : "unknown");
                return false;
        }
        return true;
#else
        snprintf(why, whylen, "no TSC on this architecture");
        return false;
#endif
}

#if THR_HAVE_TSC
/* One (CLOCK_MONOTONIC, TSC) pair: the best of 16 reads, the cycle count at the middle of the
 * narrowest window around the clock read; *GAP its width in cycles. */
static void pair(int64_t *ns, double *tsc, uint64_t *gap)
{
        *gap = UINT64_MAX;
        *ns = 0;
        *tsc = 0;
        for (int i = 0; i < 16; i++) {
                uint64_t a = tsc_before();
                int64_t m = mono_ns();
                uint64_t b = tsc_after();
                if (b > a && b - a < *gap) {
                        *gap = b - a;
                        *ns = m;
                        *tsc = (double)a + (double)(b - a) / 2;
                }
        }
}
#endif

static struct shm_clock_facts measured;
static char measured_why[160];
static pthread_once_t measured_once = PTHREAD_ONCE_INIT;

static uint64_t coarse_res(void)
{
        struct timespec res;
        uint64_t ns = clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0
                          ? (uint64_t)res.tv_sec * 1000000000 + (uint64_t)res.tv_nsec
                          : 0;
        return ns ? ns : 10000000; /* unknown: a 100 Hz tick, the coarsest common one */
}

static void measure(void)
{
        struct shm_clock_facts *f = &measured;
        f->coarse_lag_ns = 2 * coarse_res();
        if (!tsc_usable(measured_why, sizeof(measured_why)))
                return;
#if THR_HAVE_TSC
        int64_t n0, n1;
        double c0, c1;
        uint64_t g0, g1;
        pair(&n0, &c0, &g0);
        struct timespec ten = {0, 10000000};
        while (nanosleep(&ten, &ten) < 0 && errno == EINTR)
                ;
        pair(&n1, &c1, &g1);
        if (g0 == UINT64_MAX || g1 == UINT64_MAX || c1 <= c0 || n1 <= n0) {
                snprintf(measured_why, sizeof(measured_why),
                         "the TSC did not advance while CLOCK_MONOTONIC did");
                return;
        }
        double rate = (double)(n1 - n0) / (c1 - c0); /* ns per cycle */
        if (!(rate > 0.01 && rate < 10)) {
                snprintf(measured_why, sizeof(measured_why),
                         "the TSC's measured rate (%.4f ns a cycle) is implausible", rate);
                return;
        }
        double slow = rate * (1.0 - THR_TSC_MARGIN_PPM / 1e6);
        f->tsc_mult = (uint64_t)(slow * 4294967296.0); /* truncated: rounded down */
        /* an anchor may be read in up to 4 times the narrowest window seen (at least 256
         * cycles): wider ones are refused, so the lag is that window plus what the margin loses
         * over a whole span */
        uint64_t g = g0 < g1 ? g0 : g1;
        f->tsc_gap = 4 * g > 256 ? 4 * g : 256;
        double drift = (double)THR_TSC_SPAN_CYCLES * rate * THR_TSC_MARGIN_PPM / 1e6;
        f->tsc_lag_ns = (uint64_t)((double)f->tsc_gap * rate + drift) + 1; /* rounded up */
        snprintf(measured_why, sizeof(measured_why), "TSC at %.1f MHz", 1000.0 / rate);
#endif
}

void shm_clock_facts(uint32_t clock_id, struct shm_clock_facts *out, char *why, size_t whylen)
{
        if (clock_id == THR_CLOCK_MANUAL) {
                /* every clock reads the manual time: any may be chosen, with a tick's lag and a
                 * nominal 1 us TSC */
                *out = (struct shm_clock_facts){.tsc_mult = 1ull << 32,
                                                .tsc_gap = 1024,
                                                .tsc_lag_ns = 1000,
                                                .coarse_lag_ns = 2 * coarse_res()};
                if (why && whylen)
                        snprintf(why, whylen, "manual clock");
                return;
        }
        pthread_once(&measured_once, measure);
        *out = measured;
        if (why && whylen)
                snprintf(why, whylen, "%s", measured_why);
}

void shm_clock_facts_store(struct thr_hdr *h, const struct shm_clock_facts *f)
{
        atomic_store_explicit(&h->tsc_mult, f->tsc_mult, memory_order_relaxed);
        atomic_store_explicit(&h->tsc_gap, f->tsc_gap, memory_order_relaxed);
        atomic_store_explicit(&h->tsc_lag_ns, f->tsc_lag_ns, memory_order_relaxed);
        atomic_store_explicit(&h->coarse_lag_ns, f->coarse_lag_ns, memory_order_relaxed);
}

struct shm_tsc_cal shm_tsc_cal_of(const struct thr_hdr *h)
{
        uint64_t mult = atomic_load_explicit(&h->tsc_mult, memory_order_relaxed);
        uint64_t gap = atomic_load_explicit(&h->tsc_gap, memory_order_relaxed);
        if (mult > (1ull << 32) / 100 && mult < (1ull << 32) * 10 && gap >= 1 &&
            gap <= THR_TSC_SPAN_CYCLES)
                return (struct shm_tsc_cal){mult, gap};
        return (struct shm_tsc_cal){0, 0};
}

uint32_t shm_clock_choose(const struct shm_clock_facts *h, uint32_t kind, uint32_t want,
                          double t_ns, uint64_t *lag_ns)
{
        uint32_t got = THR_CLOCK_READ_PRECISE;
        bool tsc_ok = h->tsc_mult != 0 && h->tsc_lag_ns != 0;
        if (kind == THR_KIND_GCRA) {
                if (want == THR_CLOCK_READ_COARSE)
                        got = THR_CLOCK_READ_COARSE;
                else if (want == THR_CLOCK_READ_TSC && tsc_ok)
                        got = THR_CLOCK_READ_TSC;
                else if (want == THR_CLOCK_READ_AUTO) {
                        if ((double)h->coarse_lag_ns * THR_CLOCK_AUTO_DIV <= t_ns)
                                got = THR_CLOCK_READ_COARSE;
                        else if (tsc_ok && (double)h->tsc_lag_ns * THR_CLOCK_AUTO_DIV <= t_ns)
                                got = THR_CLOCK_READ_TSC;
                }
        }
        if (lag_ns)
                *lag_ns = got == THR_CLOCK_READ_COARSE ? h->coarse_lag_ns
                          : got == THR_CLOCK_READ_TSC  ? h->tsc_lag_ns
                                                       : 0;
        return got;
}

const char *shm_clock_read_name(uint32_t how)
{
        switch (how) {
        case THR_CLOCK_READ_AUTO:
                return "auto";
        case THR_CLOCK_READ_PRECISE:
                return "precise";
        case THR_CLOCK_READ_COARSE:
                return "coarse";
        case THR_CLOCK_READ_TSC:
                return "tsc";
        }
        return "?";
}
