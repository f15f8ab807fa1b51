/*
 * shmctl_compose.c - shmctl and composed calls (shm/compose.h): the `groups` verb (the named
 * groups the daemon wrote for `compose = a, b`, each with its members' names), the groups' count
 * for `status`, and keys whose state word a composed call has marked, for `keys` and `get`.
 *
 * Reading. The arena is untrusted here as in shmctl.c (read its comment). The groups' table is
 * found through hdr.groups_off, read once and checked as the client library checks it (aligned,
 * inside the checked heap, its count bounded by the heap's end) before a byte of it is read; each
 * record is copied once and checked (its name terminated, 1 to THR_COMPOSE_MAX members). A
 * member is a directory index: it is bounded by the checked geometry's dir_count before the
 * entry is read, and an index out of range, or an entry free, retired or in an unknown state, is
 * shown as such, never followed further. A marked state word is THR_TAT_MARK_MIN + (reader <<
 * THR_MARK_SEQ_BITS | seq): the reader index is bounded by reader_count before the owner's
 * journal status and pid are read (once each, only printed); out of range, it is said so.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shm.h"
#include "shmctl_fmt.h"
#include "shmctl_internal.h"

/* ---------------------------------------------------------------- the groups' table */

/* The table hdr.groups_off names, checked against the heap: 1 found (*T, *COUNT), 0 none (the
 * offset is 0), -EBADMSG with c->err naming the fault. */
static int groups_table(struct ctx *c, const struct thr_group_table **t, uint64_t *count)
{
        const struct shm_geom *g = &c->map.g;
        uint64_t off = atomic_load_explicit(&shm_hdr(&c->map)->groups_off, memory_order_acquire);
        if (off == 0)
                return 0;
        if (off % THR_ALIGN || off < g->heap_off || off > g->heap_end ||
            g->heap_end - off < sizeof(struct thr_group_table)) {
                snprintf(c->err, sizeof(c->err),
                         "groups table at offset %" PRIu64 ": not an aligned offset in the heap "
                         "[%" PRIu64 ", %" PRIu64 ")",
                         off, g->heap_off, g->heap_end);
                return -EBADMSG;
        }
        const struct thr_group_table *gt = shm_at(c->map.base, off);
        uint64_t n = *(const volatile uint64_t *)&gt->count; /* read once */
        uint64_t room = (g->heap_end - off - sizeof(*gt)) / sizeof(struct thr_group_rec);
        if (n > room) {
                snprintf(c->err, sizeof(c->err),
                         "groups table at offset %" PRIu64 ": %" PRIu64
                         " groups, but the heap holds at most %" PRIu64,
                         off, n, room);
                return -EBADMSG;
        }
        *t = gt;
        *count = n;
        return 1;
}

long groups_count(struct ctx *c)
{
        const struct thr_group_table *t;
        uint64_t n = 0;
        int rc = groups_table(c, &t, &n);
        c->err[0] = '\0'; /* status shows an invalid table as such; `groups` tells why */
        return rc < 0 ? -1 : (long)n;
}

/* Member index D of a group, as the directory has it now. */
static void member_read(const struct ctx *c, uint32_t d, struct shmctl_member *m)
{
        *m = (struct shmctl_member){.idx = d, .state = SHMCTL_MEMBER_RANGE};
        if (d >= c->map.g.dir_count)
                return;
        const struct thr_dir_entry *e =
            (const struct thr_dir_entry *)shm_at(c->map.base, c->map.g.dir_off) + d;
        uint32_t st = atomic_load_explicit(&e->state, memory_order_acquire);
        memcpy(m->name, e->name, sizeof(m->name));
        if (st == THR_DIR_FREE)
                m->state = SHMCTL_MEMBER_FREE;
        else if (st != THR_DIR_LIVE && st != THR_DIR_RETIRED)
                m->state = SHMCTL_MEMBER_UNKNOWN;
        else if (!memchr(m->name, '\0', sizeof(m->name)))
                m->state = SHMCTL_MEMBER_BADNAME;
        else
                m->state = st == THR_DIR_LIVE ? SHMCTL_MEMBER_LIVE : SHMCTL_MEMBER_RETIRED;
        if (m->state != SHMCTL_MEMBER_LIVE && m->state != SHMCTL_MEMBER_RETIRED)
                m->name[0] = '\0';
}

int cmd_groups(struct ctx *c)
{
        const struct thr_group_table *t = NULL;
        uint64_t n = 0;
        int rc = groups_table(c, &t, &n);
        if (rc < 0)
                return fail(c, rc);
        struct shmctl_group *v = calloc(n ? n : 1, sizeof(*v));
        if (!v)
                return fail(c, -ENOMEM);
        uint64_t gen = t ? *(const volatile uint64_t *)&t->gen : 0;
        for (uint64_t i = 0; i < n; i++) {
                struct thr_group_rec r;
                memcpy(&r, &t->g[i], sizeof(r)); /* one read: checked, then used */
                if (!memchr(r.name, '\0', sizeof(r.name)) || r.n == 0 || r.n > THR_COMPOSE_MAX) {
                        snprintf(c->err, sizeof(c->err),
                                 "group %" PRIu64 " of the groups table: %s", i,
                                 memchr(r.name, '\0', sizeof(r.name)) ? "member count out of range"
                                                                      : "name is not terminated");
                        free(v);
                        return fail(c, -EBADMSG);
                }
                memcpy(v[i].name, r.name, sizeof(v[i].name));
                v[i].n = r.n;
                for (uint32_t k = 0; k < r.n; k++)
                        member_read(c, r.member[k], &v[i].m[k]);
        }
        shmctl_out_groups(v, (long)n, rc > 0, gen, c->o->json);
        free(v);
        return 0;
}

/* ---------------------------------------------------------------- marked keys */

bool mark_eval(struct ctx *c, const struct shmctl_lim *l, const struct thr_slot *s,
               struct shmctl_key *k)
{
        struct shmctl_mark *m = &k->mark;
        *m = (struct shmctl_mark){0};
        if (l->p.kind == THR_KIND_SEMAPHORE || !shm_is_mark(k->tat))
                return false; /* composed calls mark GCRA, window and budget keys only */
        uint64_t v = k->tat - THR_TAT_MARK_MIN;
        m->on = true;
        m->reader = (uint32_t)(v >> THR_MARK_SEQ_BITS);
        m->seq = (uint32_t)(v & SHM_MARK_SEQ_MASK);
        m->call = SHMCTL_CALL_RANGE;
        if (m->reader < c->map.g.reader_count) {
                const struct thr_reader *r =
                    (const struct thr_reader *)shm_at(c->map.base, c->map.g.reader_off) + m->reader;
                uint64_t st = atomic_load_explicit(&r->journal.status, memory_order_acquire);
                m->pid = atomic_load_explicit(&r->pid, memory_order_relaxed);
                m->call =
                    ((st >> 2) & SHM_MARK_SEQ_MASK) == m->seq ? (int)(st & 3) : SHMCTL_CALL_OTHER;
        }
        if (l->p.kind == THR_KIND_BUDGET) /* its header is not marked: still shown */
                budget_eval(l, shm_slot_aux(c->map.base, &l->t, s), k);
        k->remaining = 0;
        k->reset_ns = 0;
        k->debt_ns = UINT64_MAX; /* first in `keys`: a mark that stays is worth seeing */
        return true;
}

static const char *call_name(int call)
{
        static const char *const names[] = {"idle", "undecided", "commit", "abort"};
        return call >= 0 && call < 4 ? names[call] : call == SHMCTL_CALL_OTHER ? "other" : NULL;
}

const char *mark_text(char *buf, size_t len, const struct shmctl_mark *m)
{
        if (m->call == SHMCTL_CALL_RANGE)
                snprintf(buf, len,
                         "marked by reader %" PRIu32 " (call seq %" PRIu32
                         ", no such reader record)",
                         m->reader, m->seq);
        else if (m->call == SHMCTL_CALL_OTHER)
                snprintf(buf, len,
                         "marked by reader %" PRIu32 " (call seq %" PRIu32 ", pid %" PRIu64
                         ", its journal names another call)",
                         m->reader, m->seq, m->pid);
        else
                snprintf(buf, len,
                         "marked by reader %" PRIu32 " (call seq %" PRIu32 ", pid %" PRIu64 ", %s)",
                         m->reader, m->seq, m->pid, call_name(m->call));
        return buf;
}

void mark_cells(char cells[][CELL], int dashes, const struct shmctl_mark *m)
{
        for (int i = 0; i < dashes; i++)
                strcpy(cells[i], "-");
        mark_text(cells[dashes], CELL, m);
}

void mark_key_json(const struct shmctl_lim *l, const char *kj)
{
        if (l->p.kind == THR_KIND_WINDOW)
                printf("{%s,\"used\":null,\"limit\":%" PRIu64
                       ",\"remaining\":null,\"oldest_ns\":null,\"next_free_after_ns\":null,"
                       "\"reset_after_ns\":null,\"units\":null",
                       kj, l->p.rate_n);
        else
                printf("{%s,\"remaining\":null,\"burst\":%" PRIu64
                       ",\"reset_after_ns\":null,\"tat\":null,\"fresh\":false",
                       kj, l->p.burst);
}

void mark_json(const struct shmctl_mark *m)
{
        if (!m->on)
                return;
        printf(",\"marked\":{\"reader\":%" PRIu32 ",\"seq\":%" PRIu32 ",\"call\":", m->reader,
               m->seq);
        if (m->call == SHMCTL_CALL_RANGE)
                printf("null,\"owner_pid\":null}");
        else
                printf("\"%s\",\"owner_pid\":%" PRIu64 "}", call_name(m->call), m->pid);
}

/* ---------------------------------------------------------------- `groups` output */

static const char *member_state(const struct shmctl_member *m)
{
        static const char *const names[] = {"live",          "retired",  "free",
                                            "unknown_state", "bad_name", "out_of_range"};
        return m->state < sizeof(names) / sizeof(names[0]) ? names[m->state] : "unknown_state";
}

/* Member M for people: its name (escaped), "name (retired)", or "#D (why)". */
static int member_human(char *buf, size_t len, const struct shmctl_member *m)
{
        char esc[6 * (THR_NAME_MAX + 1)];
        static const char *const why[] = {"",
                                          "",
                                          "free entry",
                                          "entry in an unknown state",
                                          "entry's name not terminated",
                                          "no such entry"};
        if (m->state == SHMCTL_MEMBER_LIVE || m->state == SHMCTL_MEMBER_RETIRED)
                return snprintf(buf, len, "%s%s",
                                escape(esc, sizeof(esc), m->name, strlen(m->name), false),
                                m->state == SHMCTL_MEMBER_RETIRED ? " (retired)" : "");
        return snprintf(buf, len, "#%" PRIu32 " (%s)", m->idx, m->state < 6 ? why[m->state] : "?");
}

static void group_row(const void *data, long i, char cells[][CELL])
{
        const struct shmctl_group *g = (const struct shmctl_group *)data + i;
        escape(cells[0], CELL, g->name, strlen(g->name), false);
        snprintf(cells[1], CELL, "%" PRIu32, g->n);
        size_t o = 0;
        cells[2][0] = '\0';
        for (uint32_t k = 0; k < g->n && o < CELL; k++) {
                int w = snprintf(cells[2] + o, CELL - o, "%s", k ? ", " : "");
                if (w > 0 && (size_t)w < CELL - o)
                        o += (size_t)w;
                w = member_human(cells[2] + o, CELL - o, &g->m[k]);
                o = w > 0 && (size_t)w < CELL - o ? o + (size_t)w : CELL; /* full: truncated */
        }
}

static void group_json(const struct shmctl_group *g)
{
        char esc[6 * (THR_NAME_MAX + 1)];
        printf("{\"name\":\"%s\",\"members\":[",
               escape(esc, sizeof(esc), g->name, strlen(g->name), true));
        for (uint32_t k = 0; k < g->n; k++) {
                const struct shmctl_member *m = &g->m[k];
                printf("%s{\"index\":%" PRIu32 ",\"name\":", k ? "," : "", m->idx);
                if (m->name[0])
                        printf("\"%s\"", escape(esc, sizeof(esc), m->name, strlen(m->name), true));
                else
                        printf("null");
                printf(",\"state\":\"%s\"}", member_state(m));
        }
        printf("]}");
}

void shmctl_out_groups(const struct shmctl_group *v, long n, bool table, uint64_t gen, bool json)
{
        static const char *const head[] = {"GROUP", "N", "MEMBERS"};
        static const bool right[] = {false, true, false};
        static const struct cols cols = {3, head, right};
        if (json) {
                if (table)
                        printf("{\"gen\":%" PRIu64 ",\"groups\":[", gen);
                else
                        printf("{\"gen\":null,\"groups\":[");
                for (long i = 0; i < n; i++) {
                        fputs(i ? "," : "", stdout);
                        group_json(&v[i]);
                }
                printf("]}\n");
                return;
        }
        if (!table) {
                printf("no groups (the configuration names none: compose = a, b)\n");
                return;
        }
        printf("%ld group%s, configuration generation %" PRIu64 "\n", n, n == 1 ? "" : "s", gen);
        if (n > 0)
                table_print(&cols, group_row, v, n);
}
