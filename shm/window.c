/*
 * window.c - the exact sliding window's decisions (the argument is at the top of window.h).
 *
 * Every function here reads a key's log with relaxed loads of whole words: what orders them with
 * the admissions that wrote them is the acquire load of the state word the caller made first, and
 * what makes a decision count is the caller's CAS on that word. A log word read here may be larger
 * than the true time of its unit (grown by an admission that did not complete), never smaller.
 * Nothing here trusts the state word to be in range: every index is taken modulo R.
 */
#include "window.h"

/* A decision's view of the ring: its words, R, and where the oldest of the last N units is. */
struct ring {
        const _Atomic uint64_t *e;
        uint64_t n, r, base; /* base: index of the 1st oldest, possibly + R (< 2 R) */
};

static inline struct ring ring_of(const struct thr_params *p, const _Atomic uint64_t *e, uint64_t u)
{
        uint64_t r = shm_window_ring(p->rate_n);
        return (struct ring){.e = e, .n = p->rate_n, .r = r, .base = u % r + THR_WINDOW_SLACK};
}

/* The logged time (+ 1, or 0) of the K-th oldest of the last N units, 1 <= K <= N. */
static inline uint64_t kth(const struct ring *g, uint64_t k)
{
        uint64_t i = g->base + k - 1; /* < 2 R */
        return atomic_load_explicit(&g->e[i >= g->r ? i - g->r : i], memory_order_relaxed);
}

/* The newest logged unit (U - 1). */
static inline uint64_t newest_of(const struct ring *g)
{
        return kth(g, g->n);
}

static inline uint64_t newest_word(const struct thr_params *p, const _Atomic uint64_t *e,
                                   uint64_t u)
{
        struct ring g = ring_of(p, e, u);
        return newest_of(&g);
}

/* Whether a unit logged as R (time + 1, or 0 for none) is out of the window (T - W, T]. */
static inline bool gone_by(uint64_t r, uint64_t w, uint64_t t)
{
        return r == 0 || (t >= w && r - 1 <= t - w);
}

/* When a unit logged as R leaves the window: its time + W (0 for none). */
static inline uint64_t leaves_at(uint64_t r, uint64_t w)
{
        return r ? r - 1 + w : 0;
}

/*
 * Units admissible at T: the largest k <= N whose k-th oldest logged unit is out of the window.
 * The log is in admission order, so the predicate only turns from true to false: a binary search,
 * log2(N) loads. (Words grown by an interrupted admission can break the order for a while; the
 * count is then off by at most those units, and no decision uses it.)
 */
static uint64_t free_units(const struct ring *g, uint64_t w, uint64_t t)
{
        uint64_t lo = 0, hi = g->n;
        while (lo < hi) {
                uint64_t mid = lo + (hi - lo + 1) / 2;
                if (gone_by(kth(g, mid), w, t))
                        lo = mid;
                else
                        hi = mid - 1;
        }
        return lo;
}

uint64_t shm_window_newest(const struct thr_params *p, const _Atomic uint64_t *e, uint64_t u)
{
        struct ring g = ring_of(p, e, u);
        uint64_t r = newest_of(&g);
        return r ? r - 1 : UINT64_MAX;
}

static void decide_try(const struct thr_params *p, const _Atomic uint64_t *e, uint64_t u,
                       uint64_t now, uint64_t cost, struct shm_win *w)
{
        uint64_t win = p->period_ns;
        struct ring g = ring_of(p, e, u);
        uint64_t newest = newest_of(&g);
        bool ahead = newest && newest - 1 > now; /* a reservation is due later: no overtaking */
        uint64_t oldest = cost ? kth(&g, cost) : 0;
        w->ok = !ahead && gone_by(oldest, win, now);
        w->stamp = now;
        w->new_state = u + cost;
        uint64_t free = ahead ? 0 : free_units(&g, win, now);
        w->remaining = !w->ok ? free : free > cost ? free - cost : 0;
        if (w->ok) {
                w->retry_ns = 0;
                w->reset_ns =
                    cost ? win : (leaves_at(newest, win) > now ? leaves_at(newest, win) - now : 0);
                return;
        }
        uint64_t due = newest ? newest - 1 : 0;
        if (leaves_at(oldest, win) > due)
                due = leaves_at(oldest, win);
        w->retry_ns = due - now; /* > 0: denied means due is later than now */
        w->reset_ns = leaves_at(newest, win) > now ? leaves_at(newest, win) - now : 0;
}

static void decide_reserve(const struct thr_params *p, const _Atomic uint64_t *e, uint64_t u,
                           uint64_t now, uint64_t cost, uint64_t max_wait, struct shm_win *w)
{
        uint64_t win = p->period_ns;
        struct ring g = ring_of(p, e, u);
        uint64_t newest = newest_of(&g);
        uint64_t due = now;
        if (newest && newest - 1 > due)
                due = newest - 1; /* behind every place taken before */
        uint64_t oldest = cost ? kth(&g, cost) : 0;
        if (leaves_at(oldest, win) > due)
                due = leaves_at(oldest, win); /* when room for COST is made */
        uint64_t wait = due - now;
        w->ok = wait <= max_wait && wait <= p->max_reserve_units;
        w->stamp = due;
        w->new_state = u + cost;
        w->retry_ns = w->ok ? 0 : wait;
        /* admissible now: nothing if a place is due later (tries do not overtake it) */
        bool ahead = (newest && newest - 1 > now) || (w->ok && wait > 0);
        uint64_t free = ahead ? 0 : free_units(&g, win, now);
        uint64_t taken = w->ok ? cost : 0;
        w->remaining = free > taken ? free - taken : 0;
        uint64_t last = w->ok && cost ? due + win : leaves_at(newest, win);
        w->reset_ns = last > now ? last - now : 0;
}

void shm_window_decide(const struct thr_params *p, const _Atomic uint64_t *e, uint64_t u,
                       uint64_t now, uint64_t cost, bool reserve, uint64_t max_wait,
                       struct shm_win *w)
{
        if (reserve)
                decide_reserve(p, e, u, now, cost, max_wait, w);
        else
                decide_try(p, e, u, now, cost, w);
}

void shm_window_stage(const struct thr_params *p, _Atomic uint64_t *e, uint64_t u, uint64_t cost,
                      uint64_t stamp)
{
        uint64_t r = shm_window_ring(p->rate_n), b = u % r;
        for (uint64_t i = 0; i < cost; i++) {
                _Atomic uint64_t *word_ = &e[b + i >= r ? b + i - r : b + i]; /* i < N < R */
                uint64_t old = atomic_load_explicit(word_, memory_order_relaxed);
                while (old < stamp + 1 &&
                       !atomic_compare_exchange_weak_explicit(
                           word_, &old, stamp + 1, memory_order_relaxed, memory_order_relaxed))
                        ;
        }
}

uint64_t shm_window_fresh(const struct thr_params *p, void *aux, uint64_t floor)
{
        _Atomic uint64_t *hdr = aux, *e = shm_window_log(aux);
        for (uint64_t i = 0; i < THR_WINDOW_HDR / 8; i++)
                atomic_store_explicit(&hdr[i], 0, memory_order_relaxed);
        for (uint64_t i = 0; i < shm_window_ring(p->rate_n); i++)
                atomic_store_explicit(&e[i], floor, memory_order_relaxed);
        return 0;
}

uint64_t shm_window_debt(const struct thr_params *p, const _Atomic uint64_t *e, uint64_t u,
                         uint64_t now)
{
        uint64_t end = leaves_at(newest_word(p, e, u), p->period_ns);
        return end > now ? end - now : 0;
}

uint64_t shm_window_floor_of(const struct thr_params *p, const _Atomic uint64_t *e, uint64_t u)
{
        return newest_word(p, e, u);
}

bool shm_window_idle(const struct thr_params *p, const _Atomic uint64_t *e, uint64_t u,
                     uint64_t now, uint64_t ttl)
{
        uint64_t end = leaves_at(newest_word(p, e, u), p->period_ns);
        return end == 0 || (now >= ttl && end <= now - ttl);
}
