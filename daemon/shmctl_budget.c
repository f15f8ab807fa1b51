/*
 * shmctl_budget.c - shmctl and budget limiters (kind = budget, shm/budget.h): a key's balance and
 * its "no budget" state (spenders queued: the state word's flag, and the header's waiters, the
 * units they need in all and the oldest's need) for `keys` and `get`; and `budget add`, the one
 * write shmctl makes.
 *
 * Reading. The arena is untrusted here as in shmctl.c (read its comment). A key's header is the
 * first THR_BUDGET_HDR bytes of the slot's aux storage, which the snapshot's checked table copy
 * bounds (shm_dir_snapshot refuses a budget table whose stride is below THR_BUDGET_HDR); each of
 * its fields is read once and only printed: the journal's waiter index is never followed. The
 * state word is the balance unless its top bit is set: a composed call's mark (shmctl_compose.c
 * shows it as such), or else corrupt (never, for an honest word). Nothing is locked and nothing is
 * served: the header's counts are as of the key's last serve, which thr_budget_stat would make
 * first.
 *
 * Writing. `budget add LIMITER KEY AMOUNT` goes through the client library as any client would
 * (thr_arena_open, thr_limiter_open, thr_budget_add: lock-free, or under the key's shard lock
 * when spenders are queued, which it serves): it needs write access to the arena. The limiter is
 * looked up first in the read-only view, so a missing limiter or one of another kind is told
 * without opening the arena for writing.
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "shmctl_fmt.h"
#include "shmctl_internal.h"
#include "throttle/throttle.h"

/* ---------------------------------------------------------------- reading a key */

void budget_eval(const struct shmctl_lim *l, const void *aux, struct shmctl_key *k)
{
        const struct thr_budget *h = aux; /* its first THR_BUDGET_HDR bytes */
        struct shmctl_budget *b = &k->bud;
        uint64_t st = k->tat;
        *b = (struct shmctl_budget){0};
        b->valid = st == THR_TAT_FRESH || st < (1ull << 63);
        b->balance = b->valid ? shm_budget_balance(st, l->p.initial) : st & THR_BUDGET_MAX;
        b->flag = b->valid && shm_budget_queued(st);
        b->waiters = atomic_load_explicit(&h->waiters, memory_order_relaxed);
        b->need = atomic_load_explicit(&h->need, memory_order_relaxed);
        b->head_need = atomic_load_explicit(&h->head_need, memory_order_relaxed);
        b->granted = atomic_load_explicit(&h->granted, memory_order_relaxed);
        b->tickets = atomic_load_explicit(&h->next_ticket, memory_order_relaxed);
        b->journal = atomic_load_explicit(&h->j_idx, memory_order_relaxed) != 0;
        k->remaining = b->balance;
        k->reset_ns = 0;
        /* `keys` order: corrupt words, then paused keys (the most units needed first), then the
         * lowest balance first */
        if (!b->valid)
                k->debt_ns = UINT64_MAX;
        else if (b->flag || b->waiters)
                k->debt_ns = 1ull << 63 | (b->need < (1ull << 63) - 1 ? b->need : (1ull << 63) - 2);
        else
                k->debt_ns = THR_BUDGET_MAX - b->balance;
}

/* ---------------------------------------------------------------- a key's output */

static bool paused(const struct shmctl_budget *b)
{
        return b->flag || b->waiters > 0;
}

/* A budget key's row: balance, paused ("yes": spenders queued, tries refused), and for a paused
 * key the header's waiters, units needed and the oldest's need ("-" otherwise), spends granted
 * to queued spenders. */
static void budget_row(const void *data, long i, char cells[][CELL])
{
        const struct key_rows *kr = data;
        const struct shmctl_key *k = kr->v + i;
        const struct shmctl_budget *b = &k->bud;
        key_text(cells[0], CELL, k);
        if (k->mark.on) /* held by a composed call: no balance to show */
                mark_text(cells[1], CELL, &k->mark);
        else if (b->valid)
                snprintf(cells[1], CELL, "%" PRIu64, b->balance);
        else
                snprintf(cells[1], CELL, "corrupt");
        strcpy(cells[2], paused(b) ? "yes" : "no");
        if (paused(b)) {
                snprintf(cells[3], CELL, "%" PRIu32, b->waiters);
                snprintf(cells[4], CELL, "%" PRIu64, b->need);
                snprintf(cells[5], CELL, "%" PRIu64, b->head_need);
        } else {
                strcpy(cells[3], "-");
                strcpy(cells[4], "-");
                strcpy(cells[5], "-");
        }
        snprintf(cells[6], CELL, "%" PRIu64, b->granted);
}

void budget_table(const struct key_rows *kr, long shown)
{
        static const char *const head[] = {"KEY",  "BALANCE",   "PAUSED", "WAITERS",
                                           "NEED", "HEAD_NEED", "GRANTED"};
        static const bool right[] = {false, true, false, true, true, true, true};
        static const struct cols cols = {7, head, right};
        table_print(&cols, budget_row, kr, shown);
}

void budget_json(const struct shmctl_lim *l, const struct shmctl_key *k)
{
        char esc[KEY_JSON], bal[24] = "null", st[24] = "null";
        const struct shmctl_budget *b = &k->bud;
        if (b->valid && !k->mark.on)
                snprintf(bal, sizeof(bal), "%" PRIu64, b->balance);
        if (!k->mark.on)
                snprintf(st, sizeof(st), "%" PRIu64, k->tat);
        printf("{%s,\"balance\":%s,\"initial\":%" PRIu64 ",\"paused\":%s,"
               "\"waiters\":%" PRIu32 ",\"need\":%" PRIu64 ",\"head_need\":%" PRIu64
               ",\"granted\":%" PRIu64 ",\"tickets\":%" PRIu64 ",\"grant_in_progress\":%s,"
               "\"state\":%s",
               key_members(esc, sizeof(esc), k), bal, l->p.initial, paused(b) ? "true" : "false",
               b->waiters, b->need, b->head_need, b->granted, b->tickets,
               b->journal ? "true" : "false", st);
        mark_json(&k->mark);
        putchar('}');
}

/* ---------------------------------------------------------------- budget add */

bool budget_amount(const char *s, uint64_t *out)
{
        char *end;
        if (!isdigit((unsigned char)s[0])) /* no sign, no space, not empty */
                return false;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (*end || errno || v == 0 || v > THR_BUDGET_MAX)
                return false;
        *out = v;
        return true;
}

/* Why `budget add` failed with RC (from the client library, or the read-only view's checks),
 * on stderr; the exit code. KIND: the limiter's kind when known, BALANCE: as the add found it. */
static int add_fail(struct ctx *c, int rc, const char *lim, const char *key, const char *kind,
                    uint64_t balance)
{
        const char *arena = c->map.path;
        if (rc == -EACCES || rc == -EPERM) {
                fprintf(stderr,
                        "shmctl: budget add needs write access to the arena %s: %s "
                        "(nothing added)\n",
                        arena, strerror(-rc));
                return EX_NOPERM;
        }
        fprintf(stderr, "shmctl: budget add %s %s %" PRIu64 ": ", lim, key, c->o->amount);
        switch (rc) {
        case -EOPNOTSUPP:
                fprintf(stderr, "limiter %s is not a budget limiter%s%s%s; nothing added\n", lim,
                        kind ? " (kind " : "", kind ? kind : "", kind ? ")" : "");
                return EX_NOTFOUND;
        case -ENOENT:
        case -EIDRM:
                fprintf(stderr,
                        "limiter %s is not in the arena's configuration (removed by a "
                        "reload); nothing added\n",
                        lim);
                return EX_NOTFOUND;
        case -EOVERFLOW:
                fprintf(stderr,
                        "the balance (%" PRIu64 ") would pass the maximum, %llu; nothing "
                        "added\n",
                        balance, (unsigned long long)THR_BUDGET_MAX);
                return EX_UNAVAILABLE;
        case -ENOSPC:
                fprintf(stderr,
                        "no room for a new key: limiter %s's table is full of keys "
                        "holding balances; nothing added\n",
                        lim);
                return EX_UNAVAILABLE;
        case -ETIMEDOUT:
                fprintf(stderr, "the key's shard lock was held by a live process for a minute; "
                                "nothing added, try again\n");
                return EX_TEMPFAIL;
        case -EUSERS:
                fprintf(stderr, "no free reader record in the arena (raise [arena] max_readers); "
                                "nothing added\n");
                return EX_UNAVAILABLE;
        default:
                fprintf(stderr, "%s; nothing added\n", thr_strerror(rc));
                return rc == -EBADMSG ? EX_DATAERR : EX_OSERR;
        }
}

/* Add through the client library: the arena opened for writing, as by any client. */
static int budget_add(struct ctx *c, const char *lim, const char *key)
{
        thr_arena *a = NULL;
        thr_limiter *l = NULL;
        struct thr_budget_result res = {0};
        int rc = thr_arena_open(c->map.path, 0, &a);
        if (rc == 0)
                rc = thr_limiter_open(a, c->o->limiter, &l);
        if (rc == 0)
                rc = thr_budget_add(l, c->o->key, strlen(c->o->key), c->o->amount, &res);
        if (l)
                thr_limiter_close(l);
        if (a)
                thr_arena_close(a);
        if (rc < 0)
                return add_fail(c, rc, lim, key, NULL, res.balance);
        if (c->o->json) {
                char jl[6 * (THR_NAME_MAX + 1)], jk[ESC_MAX];
                printf("{\"limiter\":\"%s\",\"key\":\"%s\",\"added\":%" PRIu64
                       ",\"balance\":%" PRIu64 ",\"waiters\":%" PRIu64 "}\n",
                       escape(jl, sizeof(jl), c->o->limiter, strlen(c->o->limiter), true),
                       escape(jk, sizeof(jk), c->o->key, strlen(c->o->key), true), c->o->amount,
                       res.balance, res.waiters);
        } else {
                printf("added %" PRIu64 " to key %s of limiter %s: balance %" PRIu64 ", %" PRIu64
                       " waiter%s still queued\n",
                       c->o->amount, key, lim, res.balance, res.waiters,
                       res.waiters == 1 ? "" : "s");
        }
        return 0;
}

int cmd_budget(struct ctx *c)
{
        struct shmctl_lim l;
        char lim[6 * (THR_NAME_MAX + 1)], key[ESC_MAX];
        escape(lim, sizeof(lim), c->o->limiter, strlen(c->o->limiter), false);
        escape(key, sizeof(key), c->o->key, strlen(c->o->key), false);
        int rc = lim_arg(c, &l); /* the read-only view first: no write access needed to say no */
        if (rc != 0)
                return rc;
        if (l.p.kind != THR_KIND_BUDGET)
                return add_fail(c, -EOPNOTSUPP, lim, key, shm_kind_name(l.p.kind), 0);
        if (l.state != THR_DIR_LIVE)
                return add_fail(c, -EIDRM, lim, key, NULL, 0);
        return budget_add(c, lim, key);
}
