/*
 * shmctl_out.c - shmctl's output formatting: limiters, reader records, keys and the arena header
 * as aligned tables or as JSON, with durations, rates and sizes in readable units (semaphore keys'
 * columns and `leases` are shmctl_out_sem.c's, `peers` shmctl_peer.c's). Names and keys
 * come from the arena, which any client can write, so every one is printed escaped: printable ASCII
 * as is and anything else as \xHH for people, or as \u00XX in JSON so that the exact bytes can be
 * recovered. Buffers are sized for the widest escaped key, so no input can overflow them.
 */
#include <assert.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shm.h"
#include "shmctl_fmt.h"
#include "clock.h"
#include "shmctl_out.h"

/* ---------------------------------------------------------------- formatting */

/*
 * Escape N bytes of S into OUT (OUTLEN bytes, 6 per input byte suffice). Human form: printable
 * ASCII as is, backslash doubled, anything else \xHH. JSON form: the string body, every byte
 * outside printable ASCII as \u00XX, so the exact bytes can be recovered (one code point <= U+00FF
 * per byte).
 */
const char *escape(char *out, size_t outlen, const void *s, size_t n, bool json)
{
        const uint8_t *b = s;
        size_t o = 0;
        for (size_t i = 0; i < n && o + 7 <= outlen; i++) {
                uint8_t ch = b[i];
                if (ch == '\\' || (json && ch == '"'))
                        o += (size_t)sprintf(out + o, "\\%c", ch);
                else if (ch >= 0x20 && ch < 0x7f)
                        out[o++] = (char)ch;
                else
                        o += (size_t)sprintf(out + o, json ? "\\u%04x" : "\\x%02x", ch);
        }
        out[o] = '\0';
        return out;
}

/* How many bytes of a key K's bytes are shown: all, or a long key's prefix (its stored form's
 * first THR_KEY_PREFIX bytes: the rest is a digest, layout.h). */
static uint32_t key_shown(const struct shmctl_key *k)
{
        return k->len > THR_KEY_INLINE ? THR_KEY_PREFIX : k->len;
}

const char *key_text(char *out, size_t outlen, const struct shmctl_key *k)
{
        escape(out, outlen, k->bytes, key_shown(k), false);
        size_t n = strlen(out);
        if (k->len > THR_KEY_INLINE && outlen - n > 3)
                memcpy(out + n, "\u2026", sizeof("\u2026")); /* the ellipsis, UTF-8 */
        return out;
}

const char *key_members(char *out, size_t outlen, const struct shmctl_key *k)
{
        char esc[ESC_MAX];
        escape(esc, sizeof(esc), k->bytes, key_shown(k), true);
        if (k->len > THR_KEY_INLINE)
                snprintf(out, outlen, "\"key\":\"%s\",\"key_truncated\":true,\"key_len\":%" PRIu32,
                         esc, k->len);
        else
                snprintf(out, outlen, "\"key\":\"%s\"", esc);
        if (k->absent) /* `get` only: a key in the table has no such member */
                snprintf(out + strlen(out), outlen - strlen(out), ",\"present\":false");
        return out;
}

/* A duration as ns, us, ms or s with up to three decimals (truncated: "1.5ms"). */
const char *fmt_dur(char *buf, size_t len, uint64_t ns)
{
        static const struct {
                uint64_t div;
                const char *unit;
        } u[] = {{1000000000, "s"}, {1000000, "ms"}, {1000, "us"}};
        for (size_t i = 0; i < sizeof(u) / sizeof(u[0]); i++) {
                if (ns < u[i].div)
                        continue;
                int n = snprintf(buf, len, "%" PRIu64 ".%03" PRIu64, ns / u[i].div,
                                 ns % u[i].div / (u[i].div / 1000));
                while (n > 0 && buf[n - 1] == '0')
                        buf[--n] = '\0';
                if (n > 0 && buf[n - 1] == '.')
                        buf[--n] = '\0';
                snprintf(buf + n, len - (size_t)n, "%s", u[i].unit);
                return buf;
        }
        snprintf(buf, len, "%" PRIu64 "ns", ns);
        return buf;
}

/* A rate N per P ns as configured: the largest unit dividing P exactly ("100/s", "5/250ms"). */
static const char *fmt_rate(char *buf, size_t len, uint64_t n, uint64_t period_ns)
{
        static const uint64_t ns[] = {
            86400000000000, 3600000000000, 60000000000, 1000000000, 1000000, 1000, 1};
        static const char *const unit[] = {"d", "h", "min", "s", "ms", "us", "ns"};
        size_t i = 0;
        while (period_ns % ns[i] != 0)
                i++;
        if (period_ns == ns[i])
                snprintf(buf, len, "%" PRIu64 "/%s", n, unit[i]);
        else
                snprintf(buf, len, "%" PRIu64 "/%" PRIu64 "%s", n, period_ns / ns[i], unit[i]);
        return buf;
}

/* Bytes: "2 MiB" when a whole number of MiB, else "N bytes". */
static const char *fmt_size(char *buf, size_t len, uint64_t b)
{
        if (b >= (1u << 20) && b % (1u << 20) == 0)
                snprintf(buf, len, "%" PRIu64 " MiB", b >> 20);
        else
                snprintf(buf, len, "%" PRIu64 " bytes", b);
        return buf;
}

/* A part of a whole as a percentage with one decimal, truncated ("2.3"); any values. */
static const char *fmt_pct(char *buf, size_t len, uint64_t part, uint64_t whole)
{
        __uint128_t pm = whole ? (__uint128_t)part * 1000 / whole : 0;
        if (pm > UINT64_MAX)
                pm = UINT64_MAX;
        snprintf(buf, len, "%" PRIu64 ".%u", (uint64_t)pm / 10, (unsigned)(pm % 10));
        return buf;
}

static const char *on_full_name(uint32_t f)
{
        return f == THR_FULL_DENY    ? "deny"
               : f == THR_FULL_ALLOW ? "allow"
               : f == THR_FULL_EVICT ? "evict"
                                     : "unknown";
}

static bool is_window(const struct shmctl_lim *l)
{
        return l->p.kind == THR_KIND_WINDOW;
}

static bool is_sem(const struct shmctl_lim *l)
{
        return l->p.kind == THR_KIND_SEMAPHORE;
}

static bool is_breaker(const struct shmctl_lim *l)
{
        return l->p.kind == THR_KIND_BREAKER;
}

static bool is_budget(const struct shmctl_lim *l)
{
        return l->p.kind == THR_KIND_BUDGET;
}

static bool is_serial(const struct shmctl_lim *l)
{
        return is_window(l) && (l->p.flags & THR_PARAM_SERIALIZE);
}

/* Bytes a key's slot takes: the slot and its aux storage (a window's log). */
static uint64_t slot_bytes(const struct shmctl_lim *l)
{
        return THR_SLOT_SIZE + (uint64_t)l->t.aux_stride;
}

const char *dir_state_name(uint32_t st)
{
        return st == THR_DIR_LIVE ? "live" : st == THR_DIR_RETIRED ? "retired" : "unknown";
}

static const char *mb_name(const struct shmctl_gp *gp)
{
        return gp->mb_fallback ? "global" : "expedited";
}

/* Columns a cell takes on a terminal: its bytes but UTF-8 continuation bytes (key_text's "\u2026"
 * is the only character above ASCII: escape() writes every other as \xHH). */
static size_t cell_width(const char *s)
{
        size_t w = 0;
        for (; *s; s++)
                w += ((unsigned char)*s & 0xc0) != 0x80;
        return w;
}

/* Print a table: column widths from a first pass over every row, then the rows, aligned. */
void table_print(const struct cols *t, row_fn fn, const void *data, long nrow)
{
        char(*cells)[CELL] = calloc(MAX_COLS, CELL); /* a row may fill columns not shown */
        size_t w[MAX_COLS];
        if (!cells)
                return;
        for (size_t c = 0; c < t->n; c++)
                w[c] = strlen(t->head[c]);
        for (long r = 0; r < nrow; r++) {
                fn(data, r, cells);
                for (size_t c = 0; c < t->n; c++)
                        w[c] = cell_width(cells[c]) > w[c] ? cell_width(cells[c]) : w[c];
        }
        for (long r = -1; r < nrow; r++) {
                if (r >= 0)
                        fn(data, r, cells);
                for (size_t c = 0; c < t->n; c++) {
                        const char *s = r < 0 ? t->head[c] : cells[c];
                        /* padding in columns, not bytes: printf's width counts bytes */
                        int pad = c + 1 < t->n || t->right[c] ? (int)(w[c] - cell_width(s)) : 0;
                        if (t->right[c])
                                printf("%*s%s", pad, "", s);
                        else
                                printf("%s%*s", s, pad, "");
                        fputs(c + 1 < t->n ? "  " : "\n", stdout);
                }
        }
        free(cells);
}

/* When T expires seen from NOW_NS: "9.5s", or "expired 1s ago" (a lease: reclaimable). */
const char *fmt_expires(char *buf, size_t len, uint64_t t, uint64_t now_ns)
{
        char d[32];
        if (t > now_ns)
                fmt_dur(buf, len, t - now_ns);
        else
                snprintf(buf, len, "expired %s ago", fmt_dur(d, sizeof(d), now_ns - t));
        return buf;
}

void expires_json(uint64_t t, uint64_t now_ns)
{
        if (t >= now_ns) /* expired from T on */
                printf("\"expires_in_ns\":%" PRIu64 ",\"expired\":%s", t - now_ns,
                       t == now_ns ? "true" : "false");
        else
                printf("\"expires_in_ns\":-%" PRIu64 ",\"expired\":true", now_ns - t);
}

/* ---------------------------------------------------------------- status */

static const char *backing_name(uint32_t b)
{
        return b == THR_BACKING_HUGETLBFS ? "hugetlbfs" : b == THR_BACKING_SHM ? "shm" : "unknown";
}

static const char *clock_name(uint32_t k)
{
        return k == THR_CLOCK_MONOTONIC ? "monotonic"
               : k == THR_CLOCK_MANUAL  ? "manual"
                                        : "unknown";
}

static void daemon_human(const struct shmctl_status *s)
{
        if (s->attaches == 0 && s->alive <= 0) {
                printf("daemon       not running (no daemon has attached yet)\n");
                return;
        }
        fputs(s->alive > 0 ? "daemon       running" : "daemon       not running", stdout);
        if (s->pid)
                printf(", pid %" PRIu64, s->pid);
        if (s->heartbeat_ns <= s->now_ns) {
                char d[32];
                printf(", last heartbeat %s ago",
                       fmt_dur(d, sizeof(d), s->now_ns - s->heartbeat_ns));
        }
        printf("\nattaches     %" PRIu64 " (%" PRIu64 " restarts)\n", s->attaches,
               s->attaches ? s->attaches - 1 : 0);
}

static void status_human(const struct thr_hdr *h, const struct shm_map *map,
                         const struct shmctl_status *s)
{
        char name[6 * (THR_NAME_MAX + 1)], sz[32], pg[32], now[32], pct[32];
        printf("arena        %s\n",
               escape(name, sizeof(name), h->name, strnlen(h->name, THR_NAME_MAX + 1), false));
        printf("path         %s\n", map->path);
        printf("layout       %u.%u, %s\n", h->major, h->minor, fmt_size(sz, sizeof(sz), map->size));
        if (h->backing == THR_BACKING_HUGETLBFS)
                printf("backing      hugetlbfs, %s pages\n",
                       fmt_size(pg, sizeof(pg), h->page_size));
        else
                printf("backing      %s, transparent huge pages: %s\n",
                       h->backing == THR_BACKING_SHM ? "/dev/shm" : "unknown",
                       fmt_size(pg, sizeof(pg), h->thp_bytes));
        printf("clock        %s, now %s\n", clock_name(h->clock_id),
               fmt_dur(now, sizeof(now), s->now_ns));
        uint64_t mult = atomic_load_explicit(&h->tsc_mult, memory_order_relaxed);
        uint64_t coarse = atomic_load_explicit(&h->coarse_lag_ns, memory_order_relaxed);
        if (mult)
                printf("cheap clocks coarse (lags <= %" PRIu64 " ns), tsc (lags <= %" PRIu64
                       " ns)\n",
                       coarse, atomic_load_explicit(&h->tsc_lag_ns, memory_order_relaxed));
        else
                printf("cheap clocks coarse (lags <= %" PRIu64 " ns); no usable tsc\n", coarse);
        printf("limiters     %ld in use of %u", s->nlim, map->g.dir_count);
        if (s->nretired)
                printf(", %ld retired", s->nretired);
        putchar('\n');
        if (s->ngroups < 0)
                printf("groups       table not valid (shmctl groups tells why)\n");
        else if (s->ngroups > 0)
                printf("groups       %ld named, for composed calls\n", s->ngroups);
        printf("readers      %u in use of %u, %" PRIu64 " forced offline (dead owners)\n",
               s->readers, map->g.reader_count, s->gp.forced);
        printf("live keys    %" PRIu64 " of %" PRIu64 " (%s%%)\n", s->live_keys, s->capacity,
               fmt_pct(pct, sizeof(pct), s->live_keys, s->capacity));
        printf("evicted      %" PRIu64 " idle, %" PRIu64 " for room; %" PRIu64 " slots reclaimed\n",
               s->ev.evicted, s->ev.evicted_full, s->ev.reclaimed);
        printf("table full   %" PRIu64 " inserts failed, %" PRIu64 " admitted unrecorded\n",
               s->insert_fail, s->ev.allowed_full);
        printf("insert locks %" PRIu64 " waits, %" PRIu64 " gave up (on_full), %" PRIu64
               " taken over from dead holders\n",
               s->ev.lock_waits, s->ev.lock_timeouts, s->ev.repairs);
        printf("grace        %" PRIu64 " periods started, last completed %" PRIu64 "\n",
               s->gp.started, s->gp.done);
        printf("membarrier   %s\n", s->gp.mb_fallback ? "global (fallback)" : "expedited");
        if (s->gp.error)
                printf("WARNING      grace periods fail: membarrier: %s; evicted slots are never "
                       "reused\n",
                       strerror((int)s->gp.error));
        daemon_human(s);
}

static void status_json(const struct thr_hdr *h, const struct shm_map *map,
                        const struct shmctl_status *s)
{
        char name[6 * (THR_NAME_MAX + 1)], path[6 * sizeof(map->path)];
        printf("{\"arena\":\"%s\",\"path\":\"%s\",\"layout_major\":%u,\"layout_minor\":%u,"
               "\"size\":%zu,",
               escape(name, sizeof(name), h->name, strnlen(h->name, THR_NAME_MAX + 1), true),
               escape(path, sizeof(path), map->path, strlen(map->path), true), h->major, h->minor,
               map->size);
        printf("\"backing\":\"%s\",\"page_size\":%" PRIu64 ",\"thp_bytes\":%" PRIu64
               ",\"clock\":\"%s\",\"now_ns\":%" PRIu64 ",",
               backing_name(h->backing), h->page_size, h->thp_bytes, clock_name(h->clock_id),
               s->now_ns);
        printf("\"coarse_lag_ns\":%" PRIu64 ",\"tsc_usable\":%s,\"tsc_lag_ns\":%" PRIu64 ",",
               atomic_load_explicit(&h->coarse_lag_ns, memory_order_relaxed),
               atomic_load_explicit(&h->tsc_mult, memory_order_relaxed) ? "true" : "false",
               atomic_load_explicit(&h->tsc_lag_ns, memory_order_relaxed));
        printf("\"limiters\":%ld,\"max_limiters\":%u,\"readers\":%u,\"max_readers\":%u,"
               "\"live_keys\":%" PRIu64 ",",
               s->nlim, map->g.dir_count, s->readers, map->g.reader_count, s->live_keys);
        printf("\"retired_limiters\":%ld,\"capacity\":%" PRIu64 ",\"evicted\":%" PRIu64
               ",\"evicted_full\":%" PRIu64 ",\"reclaimed\":%" PRIu64
               ",\"insert_failures\":%" PRIu64 ",\"allowed_full\":%" PRIu64 ",",
               s->nretired, s->capacity, s->ev.evicted, s->ev.evicted_full, s->ev.reclaimed,
               s->insert_fail, s->ev.allowed_full);
        printf("\"grace_periods\":%" PRIu64 ",\"gp_done\":%" PRIu64 ",\"readers_forced\":%" PRIu64
               ",\"membarrier\":\"%s\",\"gp_error\":%" PRIu32 ",\"lock_waits\":%" PRIu64
               ",\"lock_timeouts\":%" PRIu64 ",\"lock_takeovers\":%" PRIu64 ",",
               s->gp.started, s->gp.done, s->gp.forced, mb_name(&s->gp), s->gp.error,
               s->ev.lock_waits, s->ev.lock_timeouts, s->ev.repairs);
        printf("\"daemon\":{\"alive\":%s,\"pid\":%" PRIu64 ",\"heartbeat_age_ns\":",
               s->alive > 0 ? "true" : "false", s->pid);
        if (s->attaches && s->heartbeat_ns <= s->now_ns)
                printf("%" PRIu64, s->now_ns - s->heartbeat_ns);
        else
                printf("null");
        char ng[24] = "null"; /* groups: null when the table is not valid */
        if (s->ngroups >= 0)
                snprintf(ng, sizeof(ng), "%ld", s->ngroups);
        printf("},\"attach_count\":%" PRIu64 ",\"groups\":%s}\n", s->attaches, ng);
}

void shmctl_out_status(const struct thr_hdr *h, const struct shm_map *map,
                       const struct shmctl_status *s, bool json)
{
        if (json)
                status_json(h, map, s);
        else
                status_human(h, map, s);
}

/* ---------------------------------------------------------------- limiters */

/* The limiters table's rows, and whether it has the semaphore columns and the queue columns. */
struct lim_rows {
        const struct shmctl_lim *v;
        bool sem, queue;
};

/* Whether limiter L has something the queue columns show: an acquire found queued, or a key
 * above max (its remainder below 0: a reload lowered max). */
static bool lim_queue(const struct shmctl_lim *l)
{
        return is_sem(l) && (l->sem_queued > 0 || l->sem_min_rem < 0);
}

/* A semaphore's columns (HELD, LEASES, PENDING; with QUEUE: REMAINDER, PEND_UNITS, LONGEST) of
 * row L, "-" for the other kinds. */
static void lim_sem_cells(const struct shmctl_lim *l, bool queue, char cells[][CELL])
{
        for (int i = 0; i < (queue ? 6 : 3); i++)
                strcpy(cells[i], "-");
        if (!is_sem(l))
                return;
        snprintf(cells[0], CELL, "%" PRIu64 "/%" PRIu64, l->sem_held, l->p.rate_n);
        snprintf(cells[1], CELL, "%" PRIu64, l->p.leases);
        snprintf(cells[2], CELL, "%" PRIu64, l->sem_pending);
        if (!queue)
                return;
        snprintf(cells[3], CELL, "%" PRId64, l->sem_min_rem);
        snprintf(cells[4], CELL, "%" PRIu64, l->sem_pend_units);
        if (l->sem_queued)
                fmt_dur(cells[5], CELL, l->sem_longest_ns);
}

static void lim_row(const void *data, long i, char cells[][CELL])
{
        const struct lim_rows *lr = data;
        const struct shmctl_lim *l = lr->v + i;
        char pct[32];
        escape(cells[0], CELL, l->name, strlen(l->name), false);
        snprintf(cells[1], CELL, "%s", dir_state_name(l->state));
        snprintf(cells[2], CELL, "%s", shm_kind_name(l->p.kind));
        if (is_sem(l) || is_budget(l) || is_breaker(l)) { /* no rate: a semaphore's max is in
                                                           * HELD, a breaker's config in JSON */
                strcpy(cells[3], "-");
                strcpy(cells[4], "-");
                strcpy(cells[5], "-");
                if (is_budget(l)) /* a new key's balance */
                        snprintf(cells[5], CELL, "%" PRIu64, l->p.initial);
        } else {
                fmt_rate(cells[3], CELL, l->p.rate_n, l->p.period_ns);
                if (l->p.kind == THR_KIND_GCRA && (l->p.flags & THR_PARAM_ROUNDED) &&
                    strlen(cells[3]) + 1 < CELL) /* run at the interval rounded up: JSON has it */
                        strcat(cells[3], "~");
                snprintf(cells[4], CELL, "%" PRIu64, l->p.burst);
                snprintf(cells[5], CELL, "%" PRIu64, l->p.initial);
        }
        strcpy(cells[6], !is_window(l) ? "-" : is_serial(l) ? "yes" : "no");
        snprintf(cells[7], CELL, "%" PRIu32, l->t.nshards);
        snprintf(cells[8], CELL, "%" PRIu64 "/%" PRIu64 " %s%%", l->t.live, l->t.capacity,
                 fmt_pct(pct, sizeof(pct), l->t.live, l->t.capacity));
        snprintf(cells[9], CELL, "%" PRIu64, slot_bytes(l));
        if (l->p.idle_ttl_ns)
                fmt_dur(cells[10], CELL, l->p.idle_ttl_ns);
        else
                strcpy(cells[10], "never");
        snprintf(cells[11], CELL, "%s", on_full_name(l->p.on_full));
        snprintf(cells[12], CELL, "%" PRIu64, l->ev.evicted);
        snprintf(cells[13], CELL, "%" PRIu64, l->ev.evicted_full);
        snprintf(cells[14], CELL, "%" PRIu64, l->ev.reclaimed);
        snprintf(cells[15], CELL, "%" PRIu64, l->t.insert_fail);
        snprintf(cells[16], CELL, "%" PRIu64, l->ev.allowed_full);
        snprintf(cells[17], CELL, "%s",
                 l->p.kind == THR_KIND_GCRA ? shm_clock_read_name(THR_PARAM_CLOCK(l->p.flags))
                                            : "-");
        if (lr->sem)
                lim_sem_cells(l, lr->queue, cells + 18);
}

/* A semaphore's on_queue_full, from its record's queue word (a value the config never writes,
 * from a rewritten record, is named as such). */
static const char *queue_full_name(uint64_t q)
{
        switch (THR_SEMQ_ON_FULL(q)) {
        case THR_QUEUE_REJECT:
                return "reject";
        case THR_QUEUE_DROP_OLDEST:
                return "drop_oldest";
        case THR_QUEUE_DROP_LOWEST:
                return "drop_lowest";
        default:
                return "unknown";
        }
}

/* A global limiter's state by name (THR_GLOBAL_*; a value the daemon never writes: unknown). */
static const char *global_state_name(uint32_t st)
{
        static const char *const names[] = {"none", "starting", "leased", "held",
                                            "safe", "closed",   "open"};
        return (st & 0xff) < sizeof(names) / sizeof(names[0]) ? names[st & 0xff] : "unknown";
}

static bool is_global(const struct shmctl_lim *l)
{
        return l->p.kind == THR_KIND_GCRA && (l->gl_state & 0xff) != THR_GLOBAL_NONE;
}

/* Its lease: what the daemon leased from Redis and writes into the buckets (daemon/global.c). */
static void global_json(const struct shmctl_lim *l)
{
        uint64_t left = l->gl_expiry_ns > l->now_ns ? l->gl_expiry_ns - l->now_ns : 0;
        printf(",\"global\":{\"share_ppm\":%" PRIu32 ",\"state\":\"%s\",\"hosts\":%" PRIu32
               ",\"lease_left_ns\":%" PRIu64 "}",
               l->gl_share, global_state_name(l->gl_state), l->gl_state >> 8, left);
}

/* One line per global limiter under the table: its share, what that runs at, the lease. */
static void global_lines(const struct shmctl_lim *v, long n)
{
        for (long i = 0; i < n; i++) {
                const struct shmctl_lim *l = &v[i];
                if (!is_global(l))
                        continue;
                char name[CELL], rate[48], left[32] = "-";
                /* the interval the buckets run at: T = t_units / k ns */
                double per_s = l->p.t_units ? 1e9 * (double)l->p.k / (double)l->p.t_units : 0;
                fmt_rate(rate, sizeof(rate), l->p.rate_n, l->p.period_ns);
                if (l->gl_expiry_ns > l->now_ns)
                        fmt_dur(left, sizeof(left), l->gl_expiry_ns - l->now_ns);
                printf("global %s: share %.2f%% of %s, running at %.3f/s burst %" PRIu64
                       "; %s, %" PRIu32 " hosts at the last answer, lease ends in %s\n",
                       escape(name, sizeof(name), l->name, strlen(l->name), false),
                       l->gl_share / 1e4, rate, per_s, l->p.burst, global_state_name(l->gl_state),
                       l->gl_state >> 8, left);
        }
}

static void lim_json(const struct shmctl_lim *l)
{
        char name[CELL], rate[48] = "null", pct[32];
        if (!is_sem(l) && !is_budget(l) && !is_breaker(l)) { /* no rate (their period is 0) */
                rate[0] = '"';
                fmt_rate(rate + 1, sizeof(rate) - 2, l->p.rate_n, l->p.period_ns);
                strcat(rate, "\"");
        }
        printf("{\"name\":\"%s\",\"rate\":%s,\"rate_n\":%" PRIu64 ",\"period_ns\":%" PRIu64
               ",\"burst\":%" PRIu64 ",\"initial\":%" PRIu64 ",",
               escape(name, sizeof(name), l->name, strlen(l->name), true), rate, l->p.rate_n,
               l->p.period_ns, l->p.burst, l->p.initial);
        printf("\"kind\":\"%s\",", shm_kind_name(l->p.kind));
        if (is_breaker(l))
                breaker_lim_json(l);
        if (is_window(l))
                printf("\"limit\":%" PRIu64 ",\"window_ns\":%" PRIu64 ",", l->p.rate_n,
                       l->p.period_ns);
        if (is_sem(l))
                printf("\"max\":%" PRIu64 ",\"leases_per_key\":%" PRIu64 ",\"held\":%" PRIu64
                       ",\"pending\":%" PRIu64 ",",
                       l->p.rate_n, l->p.leases, l->sem_held, l->sem_pending);
        printf("\"serialize\":%s,\"bytes_per_slot\":%" PRIu64 ",", is_serial(l) ? "true" : "false",
               slot_bytes(l));
        printf("\"capacity\":%" PRIu64 ",\"live\":%" PRIu64 ",\"shards\":%" PRIu32
               ",\"shard_slots\":%" PRIu32 ",\"insert_failures\":%" PRIu64 ",",
               l->t.capacity, l->t.live, l->t.nshards, l->t.shard_slots, l->t.insert_fail);
        printf("\"state\":\"%s\",\"occupancy_pct\":%s,\"idle_ttl_ns\":%" PRIu64
               ",\"on_full\":\"%s\",\"evicted\":%" PRIu64 ",\"evicted_full\":%" PRIu64
               ",\"reclaimed\":%" PRIu64 ",\"allowed_full\":%" PRIu64,
               dir_state_name(l->state), fmt_pct(pct, sizeof(pct), l->t.live, l->t.capacity),
               l->p.idle_ttl_ns, on_full_name(l->p.on_full), l->ev.evicted, l->ev.evicted_full,
               l->ev.reclaimed, l->ev.allowed_full);
        if (l->p.kind == THR_KIND_GCRA) /* the clock its decisions read (shm/clock.h), and the
                                         * interval it runs at: the configured one, or that
                                         * rounded up to the buckets' time unit by a reload */
                printf(",\"clock_read\":\"%s\",\"interval_units\":%" PRIu64
                       ",\"time_unit_per_ns\":%" PRIu64 ",\"rate_rounded\":%s",
                       shm_clock_read_name(THR_PARAM_CLOCK(l->p.flags)), l->p.t_units, l->p.k,
                       l->p.flags & THR_PARAM_ROUNDED ? "true" : "false");
        if (is_sem(l)) /* last: the members above are in the order they always were */
                printf(",\"level\":%" PRIu64 ",\"min_remainder\":%" PRId64
                       ",\"queued_found\":%" PRIu32 ",\"pending_units\":%" PRIu64
                       ",\"longest_pending_ns\":%" PRIu64,
                       l->p.level, l->sem_min_rem, l->sem_queued, l->sem_pend_units,
                       l->sem_longest_ns);
        if (is_sem(l)) /* its queue (thr_sem_acquire_opts): bound, policy, share */
                printf(",\"max_waiters\":%" PRIu32 ",\"on_queue_full\":\"%s\""
                       ",\"priority_share_one_in\":%" PRIu32,
                       THR_SEMQ_MAX_WAITERS(l->p.reserved), queue_full_name(l->p.reserved),
                       THR_SEMQ_SHARE(l->p.reserved));
        if (is_global(l)) /* last, and only for global limiters */
                global_json(l);
        putchar('}');
}

void shmctl_out_limiters(const struct shmctl_lim *v, long n, bool json)
{
        static const char *const head[] = {
            "NAME",        "STATE",        "KIND",       "RATE",           "BURST",
            "INITIAL",     "SERIALIZE",    "SHARDS",     "OCCUPANCY",      "SLOT_BYTES",
            "IDLE_TTL",    "ON_FULL",      "EVICTED",    "EVICTED_FULL",   "RECLAIMED",
            "INSERT_FAIL", "ALLOWED_FULL", "CLOCK",      "HELD",           "LEASES",
            "PENDING",     "REMAINDER",    "PEND_UNITS", "LONGEST_PENDING"};
        static const bool right[] = {false, false, false, true,  true, true, false, true,
                                     true,  true,  true,  false, true, true, true,  true,
                                     true,  false, true,  true,  true, true, true,  true};
        static_assert(sizeof(head) / sizeof(head[0]) == 24 && 24 <= MAX_COLS, "limiters columns");
        struct lim_rows lr = {v, false, false};
        for (long i = 0; i < n; i++) {
                lr.sem |= is_sem(&v[i]);
                lr.queue |= lim_queue(&v[i]);
        }
        /* semaphore columns if any; queue columns if anything is queued or above max */
        const struct cols cols = {lr.queue ? 24 : lr.sem ? 21 : 18, head, right};
        if (json) {
                printf("{\"limiters\":[");
                for (long i = 0; i < n; i++) {
                        fputs(i ? "," : "", stdout);
                        lim_json(&v[i]);
                }
                printf("]}\n");
        } else {
                table_print(&cols, lim_row, &lr, n);
                global_lines(v, n);
        }
}

/* ---------------------------------------------------------------- readers */

struct reader_rows {
        const struct shmctl_reader *v;
        uint64_t now_ns;
};

/* How long reader R has blocked a grace period, into BUF: "-" when not, "?" when impossible. */
static const char *fmt_blocking(char *buf, size_t len, const struct shmctl_reader *r,
                                uint64_t now_ns)
{
        if (r->blocking_ns == 0)
                snprintf(buf, len, "-");
        else if (r->blocking_ns > now_ns)
                snprintf(buf, len, "?");
        else
                fmt_dur(buf, len, now_ns - r->blocking_ns);
        return buf;
}

static const char *alive_name(int alive)
{
        return alive > 0 ? "yes" : alive == 0 ? "dead" : "unknown";
}

static void reader_row(const void *data, long i, char cells[][CELL])
{
        const struct reader_rows *rr = data;
        const struct shmctl_reader *r = rr->v + i;
        snprintf(cells[0], CELL, "%" PRIu32, r->idx);
        snprintf(cells[1], CELL, "%" PRIu64, r->pid);
        snprintf(cells[2], CELL, "%" PRIu64, r->tid);
        if (r->online)
                snprintf(cells[3], CELL, "%" PRIu64, r->online - 1);
        else
                strcpy(cells[3], "-");
        snprintf(cells[4], CELL, "%" PRIu64, r->gp_seen);
        fmt_blocking(cells[5], CELL, r, rr->now_ns);
        strcpy(cells[6], r->stalled ? "yes" : "no");
        strcpy(cells[7], alive_name(r->alive));
        snprintf(cells[8], CELL, "%" PRIu64, r->admitted);
        snprintf(cells[9], CELL, "%" PRIu64, r->denied);
        snprintf(cells[10], CELL, "%" PRIu64, r->inserts);
        snprintf(cells[11], CELL, "%" PRIu64, r->cas_retries);
}

static void reader_json(const struct shmctl_reader *r, uint64_t now_ns)
{
        printf("{\"index\":%" PRIu32 ",\"pid\":%" PRIu64 ",\"tid\":%" PRIu64 ",\"online\":", r->idx,
               r->pid, r->tid);
        if (r->online)
                printf("%" PRIu64, r->online - 1);
        else
                printf("null");
        printf(",\"gp_seen\":%" PRIu64 ",\"blocking_ns\":", r->gp_seen);
        if (r->blocking_ns && r->blocking_ns <= now_ns)
                printf("%" PRIu64, now_ns - r->blocking_ns);
        else
                printf("null");
        printf(",\"stalled\":%s,\"alive\":%s,", r->stalled ? "true" : "false",
               r->alive > 0    ? "true"
               : r->alive == 0 ? "false"
                               : "null");
        printf("\"admitted\":%" PRIu64 ",\"denied\":%" PRIu64 ",\"inserts\":%" PRIu64
               ",\"cas_retries\":%" PRIu64 "}",
               r->admitted, r->denied, r->inserts, r->cas_retries);
}

static void readers_json(const struct shmctl_reader *v, long n, const struct shmctl_readers *s)
{
        printf("{\"now_ns\":%" PRIu64 ",\"records\":%" PRIu32 ",\"owned\":%" PRIu32
               ",\"online\":%" PRIu32 ",\"stalled\":%" PRIu32 ",\"dead\":%" PRIu32 ",",
               s->now_ns, s->records, s->owned, s->online, s->stalled, s->dead);
        printf("\"readers_forced\":%" PRIu64 ",\"grace_periods\":%" PRIu64 ",\"gp_done\":%" PRIu64
               ",\"membarrier\":\"%s\",\"readers\":[",
               s->gp.forced, s->gp.started, s->gp.done, mb_name(&s->gp));
        for (long i = 0; i < n; i++) {
                fputs(i ? "," : "", stdout);
                reader_json(&v[i], s->now_ns);
        }
        printf("]}\n");
}

void shmctl_out_readers(const struct shmctl_reader *v, long n, const struct shmctl_readers *s,
                        bool json)
{
        static const char *const head[] = {"INDEX",    "PID",      "TID",     "ONLINE",
                                           "GP_SEEN",  "BLOCKING", "STALLED", "ALIVE",
                                           "ADMITTED", "DENIED",   "INSERTS", "CAS_RETRIES"};
        static const bool right[] = {true,  true,  true, true, true, true,
                                     false, false, true, true, true, true};
        static const struct cols cols = {12, head, right};
        struct reader_rows rr = {v, s->now_ns};
        if (json) {
                readers_json(v, n, s);
                return;
        }
        if (n > 0)
                table_print(&cols, reader_row, &rr, n);
        printf("%" PRIu32 " records, %" PRIu32 " owned, %" PRIu32 " online, %" PRIu32
               " stalled, %" PRIu32 " dead\n",
               s->records, s->owned, s->online, s->stalled, s->dead);
        printf("%" PRIu64 " readers forced offline; grace periods: %" PRIu64
               " started, last completed %" PRIu64 "; membarrier %s\n",
               s->gp.forced, s->gp.started, s->gp.done,
               s->gp.mb_fallback ? "global (fallback)" : "expedited");
}

/* ---------------------------------------------------------------- keys */

/* How long a serialized key's holder has held it at NOW_NS (0 if granted after the answer's
 * time was read, or if its grant time is garbage). */
static uint64_t held_for(const struct shmctl_hold *h, uint64_t now_ns)
{
        return h->since < now_ns ? now_ns - h->since : 0;
}

/* Arena time T seen from NOW_NS: "1.5s ago", "in 200ms" (a reservation's), "-" for none. */
static const char *fmt_age(char *buf, size_t len, uint64_t t, uint64_t now_ns)
{
        char d[32];
        if (t == UINT64_MAX)
                snprintf(buf, len, "-");
        else if (t <= now_ns)
                snprintf(buf, len, "%s ago", fmt_dur(d, sizeof(d), now_ns - t));
        else
                snprintf(buf, len, "in %s", fmt_dur(d, sizeof(d), t - now_ns));
        return buf;
}

static void gcra_row(const void *data, long i, char cells[][CELL])
{
        const struct key_rows *kr = data;
        const struct shmctl_key *k = kr->v + i;
        key_text(cells[0], CELL, k);
        snprintf(cells[1], CELL, "%" PRIu64 "/%" PRIu64, k->remaining, kr->l->p.burst);
        fmt_dur(cells[2], CELL, k->reset_ns);
        if (k->mark.on) /* held by a composed call: no TAT to show */
                mark_cells(cells + 1, 2, &k->mark);
        else if (k->tat == THR_TAT_FRESH)
                strcpy(cells[3], "fresh");
        else
                snprintf(cells[3], CELL, "%" PRIu64, k->tat);
}

/* A window key's row; a serialized one's has five more cells (the table has them). */
static void window_row(const void *data, long i, char cells[][CELL])
{
        const struct key_rows *kr = data;
        const struct shmctl_key *k = kr->v + i;
        const struct shmctl_hold *h = &k->hold;
        key_text(cells[0], CELL, k);
        snprintf(cells[1], CELL, "%" PRIu64 "/%" PRIu64, k->win.used, kr->l->p.rate_n);
        fmt_age(cells[2], CELL, k->win.oldest_ns, kr->now_ns);
        if (k->win.next_free_ns)
                fmt_dur(cells[3], CELL, k->win.next_free_ns);
        else
                strcpy(cells[3], "now");
        fmt_dur(cells[4], CELL, k->reset_ns);
        snprintf(cells[5], CELL, "%" PRIu64, k->tat);
        if (k->mark.on) /* held by a composed call: its units (and so its log) unknown */
                mark_cells(cells + 1, 4, &k->mark);
        if (!is_serial(kr->l))
                return;
        if (h->held) {
                snprintf(cells[6], CELL, "%" PRIu64, h->pid);
                fmt_dur(cells[7], CELL, held_for(h, kr->now_ns));
        } else {
                strcpy(cells[6], "-");
                strcpy(cells[7], "-");
        }
        snprintf(cells[8], CELL, "%" PRIu32, h->waiters);
        snprintf(cells[9], CELL, "%" PRIu64, h->served);
        snprintf(cells[10], CELL, "%" PRIu64, h->released);
}

static void gcra_json(const struct shmctl_lim *l, const struct shmctl_key *k)
{
        char esc[KEY_JSON];
        key_members(esc, sizeof(esc), k);
        if (k->mark.on) { /* held by a composed call: no TAT, so nothing derived from one */
                mark_key_json(l, esc);
                mark_json(&k->mark);
                putchar('}');
                return;
        }
        printf("{%s,\"remaining\":%" PRIu64 ",\"burst\":%" PRIu64 ",\"reset_after_ns\":%" PRIu64
               ",",
               esc, k->remaining, l->p.burst, k->reset_ns);
        if (k->tat == THR_TAT_FRESH)
                printf("\"tat\":null,\"fresh\":true}");
        else
                printf("\"tat\":%" PRIu64 ",\"fresh\":false}", k->tat);
}

/* A serialized key's members: holder (pid 0 and held_for_ns null when none), queue, counters. */
static void hold_json(const struct shmctl_hold *h, uint64_t now_ns)
{
        printf(",\"holder_pid\":%" PRIu64 ",\"held_for_ns\":", h->held ? h->pid : 0);
        if (h->held)
                printf("%" PRIu64, held_for(h, now_ns));
        else
                printf("null");
        printf(",\"hold_cost\":%" PRIu64 ",\"waiters\":%" PRIu32 ",\"served\":%" PRIu64
               ",\"released\":%" PRIu64,
               h->cost, h->waiters, h->served, h->released);
}

static void window_json(const struct shmctl_lim *l, const struct shmctl_key *k, uint64_t now_ns)
{
        char esc[KEY_JSON];
        key_members(esc, sizeof(esc), k);
        if (k->mark.on) { /* held by a composed call: its units (and so its log) unknown */
                mark_key_json(l, esc);
        } else {
                printf("{%s,\"used\":%" PRIu64 ",\"limit\":%" PRIu64 ",\"remaining\":%" PRIu64
                       ",\"oldest_ns\":",
                       esc, k->win.used, l->p.rate_n, k->remaining);
                if (k->win.oldest_ns == UINT64_MAX)
                        printf("null");
                else
                        printf("%" PRIu64, k->win.oldest_ns);
                printf(",\"next_free_after_ns\":%" PRIu64 ",\"reset_after_ns\":%" PRIu64
                       ",\"units\":%" PRIu64,
                       k->win.next_free_ns, k->reset_ns, k->tat);
        }
        if (is_serial(l))
                hold_json(&k->hold, now_ns);
        mark_json(&k->mark);
        putchar('}');
}

/* Key K of L as a JSON object; QUEUE: a semaphore key's with the queue members. */
static void key_json(const struct shmctl_lim *l, const struct shmctl_key *k, uint64_t now_ns,
                     bool queue)
{
        if (is_window(l))
                window_json(l, k, now_ns);
        else if (is_sem(l))
                sem_json(l, k, queue);
        else if (is_budget(l))
                budget_json(l, k);
        else if (is_breaker(l))
                breaker_json(k);
        else
                gcra_json(l, k);
}

/* "limiter NAME: WHAT, arena time T, UNIT", then the keys as a table of L's kind. */
static void keys_human(const struct shmctl_lim *l, const struct shmctl_key *v, long shown,
                       uint64_t now_ns, const char *what)
{
        static const char *const ghead[] = {"KEY", "REMAINING", "RESET_AFTER", "TAT"};
        static const bool gright[] = {false, true, true, true};
        static const struct cols gcols = {4, ghead, gright};
        static const char *const whead[] = {"KEY",         "USED",   "OLDEST",  "NEXT_FREE",
                                            "RESET_AFTER", "UNITS",  "HOLDER",  "HELD_FOR",
                                            "WAITERS",     "SERVED", "RELEASED"};
        static const bool wright[] = {false, true, true, true, true, true,
                                      true,  true, true, true, true};
        const struct cols wcols = {is_serial(l) ? 11 : 6, whead, wright};
        static_assert(sizeof(whead) / sizeof(whead[0]) == 11 && 11 <= MAX_COLS, "window columns");
        char esc[CELL], now[32], unit[128];
        struct key_rows kr = {l, v, now_ns};
        if (is_window(l)) {
                char win[32];
                snprintf(unit, sizeof(unit), "window of %" PRIu64 " units per %s%s", l->p.rate_n,
                         fmt_dur(win, sizeof(win), l->p.period_ns),
                         is_serial(l) ? ", serialized" : "");
        } else if (is_budget(l)) {
                snprintf(unit, sizeof(unit), "budget, new keys start at %" PRIu64, l->p.initial);
        } else if (is_breaker(l)) {
                breaker_unit(l, unit, sizeof(unit));
        } else if (is_sem(l)) {
                int u = snprintf(unit, sizeof(unit),
                                 "semaphore of max %" PRIu64 ", %" PRIu64 " leases a key",
                                 l->p.rate_n, l->p.leases);
                if (l->p.level && u > 0 && (size_t)u < sizeof(unit)) /* level 0: the default */
                        u += snprintf(unit + u, sizeof(unit) - (size_t)u, ", level %" PRIu64,
                                      l->p.level);
                uint32_t mw = THR_SEMQ_MAX_WAITERS(l->p.reserved);
                if (mw && u > 0 && (size_t)u < sizeof(unit)) /* unbounded: the default */
                        u += snprintf(unit + u, sizeof(unit) - (size_t)u,
                                      ", queue of %" PRIu32 " (%s when full)", mw,
                                      queue_full_name(l->p.reserved));
                if (THR_SEMQ_SHARE(l->p.reserved) && u > 0 && (size_t)u < sizeof(unit))
                        snprintf(unit + u, sizeof(unit) - (size_t)u,
                                 ", 1 grant in %" PRIu32 " to the oldest",
                                 THR_SEMQ_SHARE(l->p.reserved));
        } else {
                snprintf(unit, sizeof(unit), "TAT in units of 1/%" PRIu64 " ns", l->p.k);
        }
        printf("limiter %s%s: %s, arena time %s, %s\n",
               escape(esc, sizeof(esc), l->name, strlen(l->name), false),
               l->state == THR_DIR_RETIRED ? " (retired)" : "", what,
               fmt_dur(now, sizeof(now), now_ns), unit);
        if (shown > 0 && is_sem(l))
                sem_table(&kr, shown);
        else if (shown > 0 && is_budget(l))
                budget_table(&kr, shown);
        else if (shown > 0 && is_breaker(l))
                breaker_table(&kr, shown);
        else if (shown > 0)
                table_print(is_window(l) ? &wcols : &gcols, is_window(l) ? window_row : gcra_row,
                            &kr, shown);
}

static void keys_json(const struct shmctl_lim *l, const struct shmctl_key *v, long total,
                      long shown, uint64_t now_ns)
{
        char esc[CELL];
        printf("{\"limiter\":\"%s\",\"state\":\"%s\",",
               escape(esc, sizeof(esc), l->name, strlen(l->name), true), dir_state_name(l->state));
        if (is_window(l)) /* a GCRA limiter's answer is as it was before windows */
                printf("\"kind\":\"window\",\"limit\":%" PRIu64 ",\"window_ns\":%" PRIu64
                       ",\"serialize\":%s,",
                       l->p.rate_n, l->p.period_ns, is_serial(l) ? "true" : "false");
        if (is_sem(l))
                printf("\"kind\":\"semaphore\",\"max\":%" PRIu64 ",\"leases_per_key\":%" PRIu64 ",",
                       l->p.rate_n, l->p.leases);
        if (is_budget(l))
                printf("\"kind\":\"budget\",\"initial\":%" PRIu64 ",", l->p.initial);
        if (is_breaker(l)) {
                printf("\"kind\":\"breaker\",");
                breaker_lim_json(l);
        }
        printf("\"now_ns\":%" PRIu64 ",\"units_per_ns\":%" PRIu64 ",\"live\":%ld,\"shown\":%ld,"
               "\"keys\":[",
               now_ns, l->p.k, total, shown);
        bool queue = is_sem(l) && sem_queue_shown(v, shown);
        for (long i = 0; i < shown; i++) {
                fputs(i ? "," : "", stdout);
                key_json(l, &v[i], now_ns, queue);
        }
        printf("]}\n");
}

void shmctl_out_keys(const struct shmctl_lim *l, const struct shmctl_key *v, long total, long shown,
                     uint64_t now_ns, bool json)
{
        char what[96];
        snprintf(what, sizeof(what), "%ld live keys, %ld shown, %s first", total, shown,
                 is_sem(l)       ? "most held"
                 : is_budget(l)  ? "paused, then lowest balance"
                 : is_breaker(l) ? "open, half-open, then most failing"
                                 : "most indebted");
        if (json)
                keys_json(l, v, total, shown, now_ns);
        else
                keys_human(l, v, shown, now_ns, what);
}

void shmctl_out_key(const struct shmctl_lim *l, const struct shmctl_key *k, uint64_t now_ns,
                    bool json)
{
        if (json) {
                key_json(l, k, now_ns, is_sem(l) && sem_queue_shown(k, 1));
                printf("\n");
        } else {
                keys_human(l, k, 1, now_ns,
                           k->absent ? "one key, absent (not in the table: the state its first "
                                       "call starts from)"
                                     : "one key");
        }
}
