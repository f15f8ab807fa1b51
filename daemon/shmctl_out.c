/*
 * shmctl_out.c - shmctl's output formatting: limiters, keys and the arena header as aligned tables
 * or as JSON, with durations, rates and sizes in readable units. Names and keys come from the
 * arena, which any client can write, so every one is printed escaped: printable ASCII as is and
 * anything else as \xHH for people, or as \u00XX in JSON so that the exact bytes can be recovered.
 * Buffers are sized for the widest escaped key, so no input can overflow them.
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shm.h"
#include "shmctl_out.h"

#define ESC_MAX  (6 * THR_KEY_MAX + 1) /* a key escaped as JSON \u00XX, the widest form */
#define CELL     ESC_MAX
#define MAX_COLS 8

/* ---------------------------------------------------------------- types */

/* A table's columns, and the function that formats row I of its data into CELLS. */
struct cols {
        size_t n;
        const char *const *head;
        const bool *right; /* right-aligned (numbers) */
};
typedef void (*row_fn)(const void *data, long i, char cells[][CELL]);

/* ---------------------------------------------------------------- formatting */

/*
 * Escape N bytes of S into OUT (OUTLEN bytes, 6 per input byte suffice). Human form: printable
 * ASCII as is, backslash doubled, anything else \xHH. JSON form: the string body, every byte
 * outside printable ASCII as \u00XX, so the exact bytes can be recovered (one code point <= U+00FF
 * per byte).
 */
static const char *escape(char *out, size_t outlen, const void *s, size_t n, bool json)
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

/* A duration as ns, us, ms or s with up to three decimals (truncated: "1.5ms"). */
static const char *fmt_dur(char *buf, size_t len, uint64_t ns)
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

/* Print a table: column widths from a first pass over every row, then the rows, aligned. */
static void table_print(const struct cols *t, row_fn fn, const void *data, long nrow)
{
        char(*cells)[CELL] = calloc(t->n, CELL);
        size_t w[MAX_COLS];
        if (!cells)
                return;
        for (size_t c = 0; c < t->n; c++)
                w[c] = strlen(t->head[c]);
        for (long r = 0; r < nrow; r++) {
                fn(data, r, cells);
                for (size_t c = 0; c < t->n; c++)
                        w[c] = strlen(cells[c]) > w[c] ? strlen(cells[c]) : w[c];
        }
        for (long r = -1; r < nrow; r++) {
                if (r >= 0)
                        fn(data, r, cells);
                for (size_t c = 0; c < t->n; c++)
                        printf(t->right[c] ? "%*s%s" : "%-*s%s",
                               c + 1 < t->n || t->right[c] ? (int)w[c] : 0,
                               r < 0 ? t->head[c] : cells[c], c + 1 < t->n ? "  " : "\n");
        }
        free(cells);
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
        char name[6 * (THR_NAME_MAX + 1)], sz[32], pg[32], now[32];
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
        printf("limiters     %ld in use of %u\n", s->nlim, h->dir_count);
        printf("readers      %u in use of %u\n", s->readers, h->reader_count);
        printf("live keys    %" PRIu64 "\n", s->live_keys);
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
        printf("\"limiters\":%ld,\"max_limiters\":%u,\"readers\":%u,\"max_readers\":%u,"
               "\"live_keys\":%" PRIu64 ",",
               s->nlim, h->dir_count, s->readers, h->reader_count, s->live_keys);
        printf("\"daemon\":{\"alive\":%s,\"pid\":%" PRIu64 ",\"heartbeat_age_ns\":",
               s->alive > 0 ? "true" : "false", s->pid);
        if (s->attaches && s->heartbeat_ns <= s->now_ns)
                printf("%" PRIu64, s->now_ns - s->heartbeat_ns);
        else
                printf("null");
        printf("},\"attach_count\":%" PRIu64 "}\n", s->attaches);
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

static void lim_row(const void *data, long i, char cells[][CELL])
{
        const struct shmctl_lim *l = (const struct shmctl_lim *)data + i;
        escape(cells[0], CELL, l->name, strlen(l->name), false);
        fmt_rate(cells[1], CELL, l->p.rate_n, l->p.period_ns);
        snprintf(cells[2], CELL, "%" PRIu64, l->p.burst);
        snprintf(cells[3], CELL, "%" PRIu64, l->p.initial);
        snprintf(cells[4], CELL, "%" PRIu64, l->t.capacity);
        snprintf(cells[5], CELL, "%" PRIu64, l->t.live);
        snprintf(cells[6], CELL, "%" PRIu32, l->t.nshards);
        snprintf(cells[7], CELL, "%" PRIu64, l->t.insert_fail);
}

static void lim_json(const struct shmctl_lim *l)
{
        char name[CELL], rate[48];
        printf("{\"name\":\"%s\",\"rate\":\"%s\",\"rate_n\":%" PRIu64 ",\"period_ns\":%" PRIu64
               ",\"burst\":%" PRIu64 ",\"initial\":%" PRIu64 ",",
               escape(name, sizeof(name), l->name, strlen(l->name), true),
               fmt_rate(rate, sizeof(rate), l->p.rate_n, l->p.period_ns), l->p.rate_n,
               l->p.period_ns, l->p.burst, l->p.initial);
        printf("\"capacity\":%" PRIu64 ",\"live\":%" PRIu64 ",\"shards\":%" PRIu32
               ",\"shard_slots\":%" PRIu32 ",\"insert_failures\":%" PRIu64 "}",
               l->t.capacity, l->t.live, l->t.nshards, l->t.shard_slots, l->t.insert_fail);
}

void shmctl_out_limiters(const struct shmctl_lim *v, long n, bool json)
{
        static const char *const head[] = {"NAME",     "RATE", "BURST",  "INITIAL",
                                           "CAPACITY", "LIVE", "SHARDS", "INSERT_FAIL"};
        static const bool right[] = {false, true, true, true, true, true, true, true};
        static const struct cols cols = {8, head, right};
        if (json) {
                printf("{\"limiters\":[");
                for (long i = 0; i < n; i++) {
                        fputs(i ? "," : "", stdout);
                        lim_json(&v[i]);
                }
                printf("]}\n");
        } else {
                table_print(&cols, lim_row, v, n);
        }
}

/* ---------------------------------------------------------------- keys */

struct key_rows {
        const struct shmctl_lim *l;
        const struct shmctl_key *v;
};

static void key_row(const void *data, long i, char cells[][CELL])
{
        const struct key_rows *kr = data;
        const struct shmctl_key *k = kr->v + i;
        escape(cells[0], CELL, k->bytes, k->len, false);
        snprintf(cells[1], CELL, "%" PRIu64 "/%" PRIu64, k->remaining, kr->l->p.burst);
        fmt_dur(cells[2], CELL, k->reset_ns);
        if (k->tat == THR_TAT_FRESH)
                strcpy(cells[3], "fresh");
        else
                snprintf(cells[3], CELL, "%" PRIu64, k->tat);
}

static void key_json(const struct shmctl_lim *l, const struct shmctl_key *k)
{
        char esc[ESC_MAX];
        printf("{\"key\":\"%s\",\"remaining\":%" PRIu64 ",\"burst\":%" PRIu64
               ",\"reset_after_ns\":%" PRIu64 ",",
               escape(esc, sizeof(esc), k->bytes, k->len, true), k->remaining, l->p.burst,
               k->reset_ns);
        if (k->tat == THR_TAT_FRESH)
                printf("\"tat\":null,\"fresh\":true}");
        else
                printf("\"tat\":%" PRIu64 ",\"fresh\":false}", k->tat);
}

/* "limiter NAME: WHAT, arena time T, TAT in units of 1/K ns", then the keys as a table. */
static void keys_human(const struct shmctl_lim *l, const struct shmctl_key *v, long shown,
                       uint64_t now_ns, const char *what)
{
        static const char *const head[] = {"KEY", "REMAINING", "RESET_AFTER", "TAT"};
        static const bool right[] = {false, true, true, true};
        static const struct cols cols = {4, head, right};
        char esc[CELL], now[32];
        struct key_rows kr = {l, v};
        printf("limiter %s: %s, arena time %s, TAT in units of 1/%" PRIu64 " ns\n",
               escape(esc, sizeof(esc), l->name, strlen(l->name), false), what,
               fmt_dur(now, sizeof(now), now_ns), l->p.k);
        if (shown > 0)
                table_print(&cols, key_row, &kr, shown);
}

static void keys_json(const struct shmctl_lim *l, const struct shmctl_key *v, long total,
                      long shown, uint64_t now_ns)
{
        char esc[CELL];
        printf("{\"limiter\":\"%s\",\"now_ns\":%" PRIu64 ",\"units_per_ns\":%" PRIu64
               ",\"live\":%ld,\"shown\":%ld,\"keys\":[",
               escape(esc, sizeof(esc), l->name, strlen(l->name), true), now_ns, l->p.k, total,
               shown);
        for (long i = 0; i < shown; i++) {
                fputs(i ? "," : "", stdout);
                key_json(l, &v[i]);
        }
        printf("]}\n");
}

void shmctl_out_keys(const struct shmctl_lim *l, const struct shmctl_key *v, long total, long shown,
                     uint64_t now_ns, bool json)
{
        char what[96];
        snprintf(what, sizeof(what), "%ld live keys, %ld shown, most indebted first", total, shown);
        if (json)
                keys_json(l, v, total, shown, now_ns);
        else
                keys_human(l, v, shown, now_ns, what);
}

void shmctl_out_key(const struct shmctl_lim *l, const struct shmctl_key *k, uint64_t now_ns,
                    bool json)
{
        if (json) {
                key_json(l, k);
                printf("\n");
        } else {
                keys_human(l, k, 1, now_ns, "one key");
        }
}
