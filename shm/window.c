/*
 * window.c - the exact sliding window's decisions (the argument is at the top of window.h).
 *
 * Every function here reads a key's log with relaxed loads of whole words: what orders them with
 * the admissions that wrote them is the acquire load of the state word the caller made first, and
 * what makes a decision count is the caller's CAS on that word. A log word read here may be larger
 * than the true time of its unit (grown by an admission that did not complete), never smaller.
 * Nothing here trusts the state word to be in range: every index is taken modulo N.
 */
#include "window.h"

static inline uint64_t word(const _Atomic uint64_t *e, uint64_t n, uint64_t i)
{
        return atomic_load_explicit(&e[i % n], memory_order_relaxed);
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
static uint64_t free_units(const _Atomic uint64_t *e, uint64_t n, uint64_t w, uint64_t u,
                           uint64_t t)
{
        uint64_t lo = 0, hi = n;
        while (lo < hi) {
                uint64_t mid = lo + (hi - lo + 1) / 2;
                if (gone_by(word(e, n, u + mid - 1), w, t))
                        lo = mid;
                else
                        hi = mid - 1;
        }
        return lo;
}

uint64_t shm_window_newest(const struct thr_params *p, const _Atomic uint64_t *e, uint64_t u)
{
        uint64_t r = word(e, p->rate_n, u + p->rate_n - 1);
        return r ? r - 1 : UINT64_MAX;
}

static void decide_try(const struct thr_params *p, const _Atomic uint64_t *e, uint64_t u,
                       uint64_t now, uint64_t cost, struct shm_win *w)
{
        uint64_t n = p->rate_n, win = p->period_ns;
        uint64_t newest = word(e, n, u + n - 1);
        bool ahead = newest && newest - 1 > now; /* a reservation is due later: no overtaking */
        uint64_t oldest = cost ? word(e, n, u + cost - 1) : 0;
        w->ok = !ahead && gone_by(oldest, win, now);
        w->stamp = now;
        w->new_state = u + cost;
        uint64_t free = ahead ? 0 : free_units(e, n, win, u, now);
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
        uint64_t n = p->rate_n, win = p->period_ns;
        uint64_t newest = word(e, n, u + n - 1);
        uint64_t due = now;
        if (newest && newest - 1 > due)
                due = newest - 1; /* behind every place taken before */
        uint64_t oldest = cost ? word(e, n, u + cost - 1) : 0;
        if (leaves_at(oldest, win) > due)
                due = leaves_at(oldest, win); /* when room for COST is made */
        uint64_t wait = due - now;
        w->ok = wait <= max_wait && wait <= p->max_reserve_units;
        w->stamp = due;
        w->new_state = u + cost;
        w->retry_ns = w->ok ? 0 : wait;
        /* admissible now: nothing if a place is due later (tries do not overtake it) */
        bool ahead = (newest && newest - 1 > now) || (w->ok && wait > 0);
        uint64_t free = ahead ? 0 : free_units(e, n, win, u, now);
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
        uint64_t n = p->rate_n;
        for (uint64_t i = 0; i < cost; i++) {
                _Atomic uint64_t *word_ = &e[(u + i) % n];
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
        for (uint64_t i = 0; i < p->rate_n; i++)
                atomic_store_explicit(&e[i], floor, memory_order_relaxed);
        return 0;
}

uint64_t shm_window_debt(const struct thr_params *p, const _Atomic uint64_t *e, uint64_t u,
                         uint64_t now)
{
        uint64_t end = leaves_at(word(e, p->rate_n, u + p->rate_n - 1), p->period_ns);
        return end > now ? end - now : 0;
}

uint64_t shm_window_floor_of(const struct thr_params *p, const _Atomic uint64_t *e, uint64_t u)
{
        return word(e, p->rate_n, u + p->rate_n - 1);
}

bool shm_window_idle(const struct thr_params *p, const _Atomic uint64_t *e, uint64_t u,
                     uint64_t now, uint64_t ttl)
{
        uint64_t end = leaves_at(word(e, p->rate_n, u + p->rate_n - 1), p->period_ns);
        return end == 0 || (now >= ttl && end <= now - ttl);
}
