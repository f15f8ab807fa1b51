/*
 * shmctl_out_sem.c - shmctl's output for semaphore limiters: a key's row and JSON object (for
 * `keys` and `get`) and the `leases` answer. Only formats what shmctl_sem.c read; every name and
 * key is printed escaped (shmctl_out.c's comment), every number is only printed.
 *
 * The queue columns (remainder, units pending, longest pending) come after a key's other columns
 * and members, and only in an answer where some key shown has an acquire queued or more units held
 * than max: without either they would say max - held, 0 and "-", which HELD already tells, and the
 * table keeps the columns it always had. A peer's lease shows its holder as "peer #IDX" (the peer's
 * reader record, `shmctl peers`) and its expiry as its peer's; the LEVEL column comes only in an
 * answer with a peer's lease, for the same reason.
 */
#include <assert.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "shm.h"
#include "shmctl_fmt.h"
#include "shmctl_out.h"

/* ---------------------------------------------------------------- a semaphore key */

/* The amounts a semaphore key's queued acquires ask for, oldest first ("30,1,2"; ",..." when
 * more were found than kept; "-" for none). */
static const char *fmt_waiting(char *buf, size_t len, const struct shmctl_sem *m)
{
        size_t o = 0;
        buf[0] = '\0';
        for (uint32_t i = 0; i < m->nshown && o + 8 < len; i++)
                o += (size_t)snprintf(buf + o, len - o, "%s%" PRIu64, i ? "," : "",
                                      m->wait[i].ticket & 0xffff);
        if (m->nwait > m->nshown && o + 5 < len)
                snprintf(buf + o, len - o, ",...");
        if (!m->nshown)
                snprintf(buf, len, "-");
        return buf;
}

bool sem_queue_shown(const struct shmctl_key *v, long n)
{
        for (long i = 0; i < n; i++)
                if (v[i].sem.pend_waiters > 0 || v[i].sem.remainder < 0)
                        return true;
        return false;
}

/* A semaphore key's row: held of max, lease records in use, queued acquires (the header's
 * count, then the amounts found), the key's lease counters; then, when the table has them, the
 * queue columns: remainder, units pending, longest pending ("-": none found queued). */
static void sem_row(const void *data, long i, char cells[][CELL])
{
        const struct key_rows *kr = data;
        const struct shmctl_key *k = kr->v + i;
        const struct shmctl_sem *m = &k->sem;
        key_text(cells[0], CELL, k);
        snprintf(cells[1], CELL, "%" PRIu64 "/%" PRIu64, m->held, kr->l->p.rate_n);
        snprintf(cells[2], CELL, "%" PRIu32 "/%" PRIu64, m->leases, kr->l->p.leases);
        snprintf(cells[3], CELL, "%" PRIu32, m->waiters);
        fmt_waiting(cells[4], CELL, m);
        snprintf(cells[5], CELL, "%" PRIu64, m->granted);
        snprintf(cells[6], CELL, "%" PRIu64, m->released);
        snprintf(cells[7], CELL, "%" PRIu64, m->expired);
        snprintf(cells[8], CELL, "%" PRIu64, m->reclaimed);
        snprintf(cells[9], CELL, "%" PRId64, m->remainder);
        snprintf(cells[10], CELL, "%" PRIu64, m->pend_units);
        if (m->pend_waiters)
                fmt_dur(cells[11], CELL, m->pend_longest_ns);
        else
                strcpy(cells[11], "-");
}

void sem_table(const struct key_rows *kr, long shown)
{
        static const char *const head[] = {
            "KEY",      "HELD",    "LEASES",    "PENDING",   "WAITING",    "GRANTED",
            "RELEASED", "EXPIRED", "RECLAIMED", "REMAINDER", "PEND_UNITS", "LONGEST_PENDING"};
        static const bool right[] = {false, true, true, true, false, true,
                                     true,  true, true, true, true,  true};
        static_assert(sizeof(head) / sizeof(head[0]) == 12 && 12 <= MAX_COLS, "semaphore columns");
        const struct cols cols = {sem_queue_shown(kr->v, shown) ? 12 : 9, head, right};
        table_print(&cols, sem_row, kr, shown);
}

/* A semaphore key's queued acquires found, oldest first, as a JSON array. */
static void waiting_json(const struct shmctl_sem *m)
{
        printf("\"waiting\":[");
        for (uint32_t i = 0; i < m->nshown; i++)
                printf("%s{\"amount\":%" PRIu64 ",\"pid\":%" PRIu64 ",\"tid\":%" PRIu64 "}",
                       i ? "," : "", m->wait[i].ticket & 0xffff, m->wait[i].pid, m->wait[i].tid);
        printf("],\"waiting_found\":%" PRIu32, m->nwait);
}

/* A semaphore key's members, after its key and before its closing brace. */
static void sem_members(const struct shmctl_lim *l, const struct shmctl_sem *m)
{
        printf("\"held\":%" PRIu64 ",\"max\":%" PRIu64 ",\"leases\":%" PRIu32
               ",\"leases_per_key\":%" PRIu64 ",\"pending\":%" PRIu32 ",",
               m->held, l->p.rate_n, m->leases, l->p.leases, m->waiters);
        waiting_json(m);
}

void sem_json(const struct shmctl_lim *l, const struct shmctl_key *k, bool queue)
{
        char esc[KEY_JSON];
        const struct shmctl_sem *m = &k->sem;
        printf("{%s,", key_members(esc, sizeof(esc), k));
        sem_members(l, m);
        printf(",\"remaining\":%" PRIu64 ",\"granted\":%" PRIu64 ",\"released\":%" PRIu64
               ",\"expired\":%" PRIu64 ",\"reclaimed\":%" PRIu64 ",\"changed_ns\":%" PRIu64,
               k->remaining, m->granted, m->released, m->expired, m->reclaimed, k->tat);
        if (queue)
                printf(",\"remainder\":%" PRId64 ",\"queued_found\":%" PRIu32
                       ",\"pending_units\":%" PRIu64 ",\"longest_pending_ns\":%" PRIu64,
                       m->remainder, m->pend_waiters, m->pend_units, m->pend_longest_ns);
        putchar('}');
}

/* ---------------------------------------------------------------- leases */

/* The rows of the leases table, and whether it has the LEVEL column (a peer's lease is listed). */
struct lease_rows {
        const struct shmctl_leases *a;
        bool peers;
};

static bool is_peer(const struct shmctl_lease *e)
{
        return (e->flags & THR_LEASE_PEER) != 0;
}

/* How long ago a lease was acquired: "?" when after the answer's time (garbage: an honest one
 * was acquired before the time was read). */
static const char *fmt_lease_age(char *buf, size_t len, const struct shmctl_lease *e,
                                 uint64_t now_ns)
{
        if (e->acquired_ns > now_ns)
                snprintf(buf, len, "?");
        else
                fmt_dur(buf, len, now_ns - e->acquired_ns);
        return buf;
}

/* When a lease expires: "9.5s", "expired 1s ago" (reclaimable: the next serve clears it), or a
 * peer's lease whose peer is dead (its word 0, or its record reused): "peer gone". */
static const char *fmt_lease_expires(char *buf, size_t len, const struct shmctl_lease *e,
                                     uint64_t now_ns)
{
        if (is_peer(e) && e->expires_ns == 0)
                snprintf(buf, len, "peer gone");
        else
                fmt_expires(buf, len, e->expires_ns, now_ns);
        return buf;
}

static void lease_row(const void *data, long i, char cells[][CELL])
{
        const struct lease_rows *lr = data;
        const struct shmctl_leases *a = lr->a;
        const struct shmctl_lease *e = a->v + i;
        const struct shmctl_semkey *k = a->keys + e->key;
        const struct shmctl_lim *l = a->lims + k->lim;
        int c = 6;
        escape(cells[0], CELL, l->name, strlen(l->name), false);
        key_text(cells[1], CELL, &k->k);
        snprintf(cells[2], CELL, "%" PRIu32, e->amount);
        snprintf(cells[3], CELL, "%" PRIu64, e->pid);
        snprintf(cells[4], CELL, "%" PRIu64, e->tid);
        snprintf(cells[5], CELL, is_peer(e) ? "peer #%" PRIu32 : "%" PRIu32, e->holder_idx);
        if (lr->peers) {
                if (is_peer(e))
                        snprintf(cells[c++], CELL, "%" PRIu32, e->level);
                else
                        strcpy(cells[c++], "-");
        }
        fmt_lease_age(cells[c++], CELL, e, a->now_ns);
        fmt_lease_expires(cells[c++], CELL, e, a->now_ns);
        snprintf(cells[c], CELL, "%" PRIu64, e->gen);
}

static void lease_key_row(const void *data, long i, char cells[][CELL])
{
        const struct shmctl_leases *a = data;
        const struct shmctl_semkey *k = a->keys + i;
        const struct shmctl_lim *l = a->lims + k->lim;
        escape(cells[0], CELL, l->name, strlen(l->name), false);
        key_text(cells[1], CELL, &k->k);
        snprintf(cells[2], CELL, "%" PRIu64 "/%" PRIu64, k->k.sem.held, l->p.rate_n);
        snprintf(cells[3], CELL, "%" PRIu32 "/%" PRIu64, k->k.sem.leases, l->p.leases);
        snprintf(cells[4], CELL, "%" PRIu32, k->k.sem.waiters);
        fmt_waiting(cells[5], CELL, &k->k.sem);
}

/* The acquires queued over A's keys (their headers' counts). */
static uint64_t leases_pending(const struct shmctl_leases *a)
{
        uint64_t n = 0;
        for (long i = 0; i < a->nkeys; i++)
                n += a->keys[i].k.sem.waiters;
        return n;
}

/* The leases table: with the LEVEL column after HOLDER when a peer's lease is listed. */
static void leases_table(const struct shmctl_leases *a)
{
        static const char *const head[] = {"LIMITER", "KEY", "AMOUNT",     "PID", "TID",
                                           "HOLDER",  "AGE", "EXPIRES_IN", "GEN"};
        static const char *const phead[] = {"LIMITER", "KEY",   "AMOUNT", "PID",        "TID",
                                            "HOLDER",  "LEVEL", "AGE",    "EXPIRES_IN", "GEN"};
        static const bool right[] = {false, false, true, true, true, true, true, true, true, true};
        struct lease_rows lr = {a, false};
        for (long i = 0; i < a->n; i++)
                lr.peers |= is_peer(&a->v[i]);
        const struct cols cols = {lr.peers ? 10 : 9, lr.peers ? phead : head, right};
        table_print(&cols, lease_row, &lr, a->n);
}

static void leases_human(const struct shmctl_leases *a)
{
        static const char *const khead[] = {"LIMITER", "KEY",     "HELD",
                                            "LEASES",  "PENDING", "WAITING"};
        static const bool kright[] = {false, false, true, true, true, false};
        static const struct cols kcols = {6, khead, kright};
        char now[32];
        if (a->nlim == 0) {
                printf("no semaphore limiters\n");
                return;
        }
        printf("arena time %s: %ld semaphore limiter%s, %ld lease%s on %ld key%s, %" PRIu64
               " pending\n",
               fmt_dur(now, sizeof(now), a->now_ns), a->nlim, a->nlim == 1 ? "" : "s", a->n,
               a->n == 1 ? "" : "s", a->nkeys, a->nkeys == 1 ? "" : "s", leases_pending(a));
        if (a->n > 0)
                leases_table(a);
        if (a->nkeys > 0) {
                if (a->n > 0)
                        putchar('\n');
                table_print(&kcols, lease_key_row, a, a->nkeys);
        }
}

/* A lease as a JSON object; "peer" and "level" (null for a process's lease, which keeps no
 * level of its holder's) follow holder_idx: new members, added before the times so that every
 * member a consumer knew keeps its order. */
static void lease_json(const struct shmctl_leases *a, const struct shmctl_lease *e)
{
        const struct shmctl_semkey *k = a->keys + e->key;
        char name[CELL], esc[KEY_JSON], level[16] = "null";
        if (is_peer(e))
                snprintf(level, sizeof(level), "%" PRIu32, e->level);
        printf("{\"limiter\":\"%s\",%s,\"index\":%" PRIu32 ",\"gen\":%" PRIu64
               ",\"amount\":%" PRIu32 ",\"pid\":%" PRIu64 ",\"tid\":%" PRIu64
               ",\"holder_idx\":%" PRIu32 ",\"peer\":%s,\"level\":%s,",
               escape(name, sizeof(name), a->lims[k->lim].name, strlen(a->lims[k->lim].name), true),
               key_members(esc, sizeof(esc), &k->k), e->idx, e->gen, e->amount, e->pid, e->tid,
               e->holder_idx, is_peer(e) ? "true" : "false", level);
        printf("\"acquired_ns\":%" PRIu64 ",\"expires_ns\":%" PRIu64 ",\"age_ns\":", e->acquired_ns,
               e->expires_ns);
        if (e->acquired_ns <= a->now_ns)
                printf("%" PRIu64, a->now_ns - e->acquired_ns);
        else
                printf("null");
        putchar(',');
        expires_json(e->expires_ns, a->now_ns);
        putchar('}');
}

static void leases_json(const struct shmctl_leases *a)
{
        char name[CELL], esc[KEY_JSON];
        printf("{\"now_ns\":%" PRIu64 ",\"pending\":%" PRIu64 ",\"limiters\":[", a->now_ns,
               leases_pending(a));
        for (long i = 0; i < a->nlim; i++)
                printf("%s{\"name\":\"%s\",\"state\":\"%s\",\"max\":%" PRIu64
                       ",\"leases_per_key\":%" PRIu64 "}",
                       i ? "," : "",
                       escape(name, sizeof(name), a->lims[i].name, strlen(a->lims[i].name), true),
                       dir_state_name(a->lims[i].state), a->lims[i].p.rate_n, a->lims[i].p.leases);
        printf("],\"leases\":[");
        for (long i = 0; i < a->n; i++) {
                fputs(i ? "," : "", stdout);
                lease_json(a, &a->v[i]);
        }
        printf("],\"keys\":[");
        for (long i = 0; i < a->nkeys; i++) {
                const struct shmctl_semkey *k = a->keys + i;
                const struct shmctl_lim *l = a->lims + k->lim;
                printf("%s{\"limiter\":\"%s\",%s,", i ? "," : "",
                       escape(name, sizeof(name), l->name, strlen(l->name), true),
                       key_members(esc, sizeof(esc), &k->k));
                sem_members(l, &k->k.sem);
                putchar('}');
        }
        printf("]}\n");
}

void shmctl_out_leases(const struct shmctl_leases *a, bool json)
{
        if (json)
                leases_json(a);
        else
                leases_human(a);
}
