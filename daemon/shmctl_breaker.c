/*
 * shmctl_breaker.c - shmctl and circuit breakers (kind = breaker, shm/breaker.h): a key's state
 * (closed, open, half-open), its consecutive failures, its window's calls and failures, its probes
 * in flight and half-open successes, and the time until it lets a call through (an open breaker:
 * until half-open; a half-open one with every probe out: until they are given up), for `keys`
 * and `get`, in tables and --json.
 *
 * Reading. The arena is untrusted here as in shmctl.c. The state word is decoded by the same
 * total function the clients use (shm_brk_decode: every 64-bit value decodes, state 3 is shown as
 * "corrupt") and settled at the arena's time as the next call would see it, without writing. The
 * window's 8 bucket words are the slot's aux storage, which the snapshot's checked table copy
 * bounds (shm_dir_snapshot refuses a breaker table whose stride is below THR_BRK_AUX); their
 * counts are bounded by their fields. Nothing is followed and nothing is written.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "shmctl_fmt.h"
#include "shmctl_internal.h"

void breaker_eval(const struct shmctl_lim *l, const void *aux, uint64_t now, struct shmctl_key *k)
{
        struct shmctl_brk *b = &k->brk;
        struct shm_brk_cfg c;
        struct shm_brk s;
        *b = (struct shmctl_brk){0};
        shm_brk_cfg(&l->p, &c);
        b->valid =
            shm_brk_decode(k->tat, &s) == 0 && (k->tat == THR_TAT_FRESH || k->tat < THR_TAT_LIMIT);
        if (b->valid) {
                shm_brk_settle(&c, &s, now);
                b->state = s.state;
                b->consec = s.consec;
                b->inflight = s.inflight;
                b->succ = s.succ;
                b->gen = s.gen;
                b->retry_ns = shm_brk_retry_ns(&c, &s, now);
                if (s.state == SHM_BRK_CLOSED && c.rate && aux)
                        shm_brk_window_sum(&c, aux, s.gen, now, &b->calls, &b->fails);
        }
        k->remaining = 0;
        k->reset_ns = b->retry_ns;
        /* `keys` order: corrupt, then open, then half-open, then closed with the most
         * consecutive failures (and window failures) first */
        k->debt_ns = !b->valid                       ? UINT64_MAX
                     : b->state == SHM_BRK_OPEN      ? UINT64_MAX - 1
                     : b->state == SHM_BRK_HALF_OPEN ? UINT64_MAX - 2
                                                     : (uint64_t)b->consec << 32 | b->fails;
}

static void breaker_row(const void *data, long i, char cells[][CELL])
{
        const struct key_rows *kr = data;
        const struct shmctl_key *k = kr->v + i;
        const struct shmctl_brk *b = &k->brk;
        key_text(cells[0], CELL, k);
        if (!b->valid) {
                strcpy(cells[1], "corrupt");
                for (int c = 2; c < 8; c++)
                        strcpy(cells[c], "-");
                return;
        }
        strcpy(cells[1], shm_brk_state_name(b->state));
        snprintf(cells[2], CELL, "%" PRIu32, b->consec);
        snprintf(cells[3], CELL, "%" PRIu64, b->calls);
        snprintf(cells[4], CELL, "%" PRIu64, b->fails);
        snprintf(cells[5], CELL, "%" PRIu32, b->inflight);
        snprintf(cells[6], CELL, "%" PRIu32, b->succ);
        if (b->retry_ns)
                fmt_dur(cells[7], CELL, b->retry_ns);
        else
                strcpy(cells[7], "-");
}

void breaker_table(const struct key_rows *kr, long shown)
{
        static const char *const head[] = {"KEY",      "STATE",  "CONSEC_FAIL", "WIN_CALLS",
                                           "WIN_FAIL", "PROBES", "SUCCESSES",   "RETRY_AFTER"};
        static const bool right[] = {false, false, true, true, true, true, true, true};
        static const struct cols cols = {8, head, right};
        table_print(&cols, breaker_row, kr, shown);
}

void breaker_json(const struct shmctl_key *k)
{
        char esc[KEY_JSON];
        const struct shmctl_brk *b = &k->brk;
        printf("{%s,\"breaker\":\"%s\",\"consecutive_failures\":%" PRIu32
               ",\"window_calls\":%" PRIu64 ",\"window_failures\":%" PRIu64
               ",\"probes_in_flight\":%" PRIu32 ",\"half_open_successes\":%" PRIu32
               ",\"retry_after_ns\":%" PRIu64 ",\"generation\":%" PRIu32 ",\"state\":%" PRIu64 "}",
               key_members(esc, sizeof(esc), k),
               b->valid ? shm_brk_state_name(b->state) : "corrupt", b->consec, b->calls, b->fails,
               b->inflight, b->succ, b->retry_ns, b->gen, k->tat);
}

/* The limiter's configuration as `keys` heads it: "breaker: failures 5, failure_rate 50% of
 * >= 10 calls in 10s, cooldown 30s, 1 probe (timeout 30s), 1 success closes". */
void breaker_unit(const struct shmctl_lim *l, char *out, size_t len)
{
        const struct thr_params *p = &l->p;
        char w[32], cd[32], pt[32];
        fmt_dur(w, sizeof(w), p->period_ns);
        fmt_dur(cd, sizeof(cd), p->max_reserve_units);
        fmt_dur(pt, sizeof(pt), p->leases);
        snprintf(out, len,
                 "breaker: failures %" PRIu64 ", failure_rate %" PRIu64 "%% of >= %" PRIu64
                 " calls in %s, cooldown %s, %" PRIu64 " probe%s (timeout %s), %" PRIu64
                 " success%s close%s",
                 p->rate_n, p->burst, p->initial, w, cd, p->level, p->level == 1 ? "" : "s", pt,
                 p->reserved, p->reserved == 1 ? "" : "es", p->reserved == 1 ? "s" : "");
}

void breaker_lim_json(const struct shmctl_lim *l)
{
        const struct thr_params *p = &l->p;
        printf("\"failures\":%" PRIu64 ",\"failure_rate\":%" PRIu64 ",\"min_calls\":%" PRIu64
               ",\"window_ns\":%" PRIu64 ",\"cooldown_ns\":%" PRIu64 ",\"probes\":%" PRIu64
               ",\"probe_timeout_ns\":%" PRIu64 ",\"successes\":%" PRIu64 ",",
               p->rate_n, p->burst, p->initial, p->period_ns, p->max_reserve_units, p->level,
               p->leases, p->reserved);
}
