/*
 * compose.c - thr_compose_try: several members decided together, all or nothing. The protocol
 * (journal, marks in fixed order, one status CAS that decides, marks replaced; helpers settle a
 * stalled or dead owner's marks) and its argument are at the top of shm/compose.h.
 *
 * The members' slots are found (or created, as a try creates them) first, then the call enters
 * its thread's read-side section for the whole marking: no slot it holds a pointer to can be
 * reclaimed and reused meanwhile; a slot retired since the lookup (evicted) aborts the attempt,
 * and the next attempt looks the keys up again. Every attempt replaces every mark it made before
 * it returns or starts again, so a mark always names its owner's current call.
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client_internal.h"
#include "compose.h"
#include "testhook.h"

#define ATTEMPTS 16

struct member {
        thr_limiter *lim;
        struct thr_slot *slot;
        uint32_t gen; /* the slot's generation when found */
        uint32_t at;  /* its index in the caller's array */
        uint64_t cost;
        struct thr_mverdict v;
        bool marked;
        uint64_t prev; /* the state the decision was made on (a ticket's) */
};

/* Members in slot order (an insertion sort: at most 8; qsort cost more than the decisions). */
static void sort_by_slot(struct member *mb, size_t n)
{
        for (size_t i = 1; i < n; i++) {
                struct member x = mb[i];
                size_t j = i;
                for (; j > 0 && mb[j - 1].slot > x.slot; j--)
                        mb[j] = mb[j - 1];
                mb[j] = x;
        }
}

/* Replace each of the call's marks by its entry's next (COMMIT) or old, once (a CAS from the
 * mark: a helper may have done it already), then the journal is idle. */
static void finish(struct thr_journal *j, struct member *mb, size_t n, uint64_t mark, uint64_t seq,
                   enum thr_journal_state oc)
{
        for (size_t i = 0; i < n; i++) {
                if (!mb[i].marked)
                        continue;
                struct thr_jentry *e = &j->e[i];
                uint64_t want = mark;
                uint64_t v = oc == THR_JOURNAL_COMMIT
                                 ? atomic_load_explicit(&e->next, memory_order_relaxed)
                                 : atomic_load_explicit(&e->old, memory_order_relaxed);
                atomic_compare_exchange_strong_explicit(&mb[i].slot->state, &want, v,
                                                        memory_order_acq_rel, memory_order_relaxed);
                THR_HOOK(THR_HOOK_COMPOSE_SETTLED_ONE, e);
        }
        atomic_store_explicit(&j->status, shm_journal_status(seq, THR_JOURNAL_IDLE),
                              memory_order_release);
}

/* The status CAS from UNDECIDED to OC; the outcome that stands (a helper may have aborted). */
static enum thr_journal_state decide(struct thr_journal *j, uint64_t seq, enum thr_journal_state oc)
{
        uint64_t want = shm_journal_status(seq, THR_JOURNAL_UNDECIDED);
        if (atomic_compare_exchange_strong_explicit(&j->status, &want, shm_journal_status(seq, oc),
                                                    memory_order_acq_rel, memory_order_acquire))
                return oc;
        return (enum thr_journal_state)(want & 3);
}

/* Mark member I (entry E) from its current state. 0 marked, 1 its slot was retired or reused (look
 * again), -EBADMSG. */
static int mark_one(thr_arena *a, struct member *m, struct thr_jentry *e, uint64_t mark)
{
        const struct shm_map *map = &a->map;
        for (;;) {
                uint64_t meta = atomic_load_explicit(&m->slot->meta, memory_order_acquire);
                if (THR_META_STATUS(meta) != THR_SLOT_LIVE || THR_META_GEN(meta) != m->gen)
                        return 1;
                uint64_t st = atomic_load_explicit(&m->slot->state, memory_order_acquire);
                if (shm_is_mark(st)) {
                        int rc = shm_mark_resolve(map, m->slot, st);
                        if (rc < 0)
                                return rc;
                        continue;
                }
                if (st == THR_TAT_DEAD || st == THR_TAT_FREE)
                        return 1;
                atomic_store_explicit(&e->old, st, memory_order_relaxed);
                if (atomic_compare_exchange_strong_explicit(
                        &m->slot->state, &st, mark, memory_order_acq_rel, memory_order_acquire)) {
                        m->marked = true;
                        THR_HOOK(THR_HOOK_COMPOSE_MARKED, e);
                        return 0;
                }
        }
}

/* One attempt: 1 admitted, 0 denied, 2 again (aborted by a helper, or a slot retired), -errno. */
static int attempt(thr_arena *a, struct thr_reader *r, uint32_t idx, struct member *mb, size_t n,
                   struct thr_compose_result *res)
{
        struct thr_journal *j = &r->journal;
        uint64_t seq = (atomic_load_explicit(&j->status, memory_order_relaxed) >> 2) + 1;
        uint64_t mark = shm_mark(idx, seq);
        atomic_store_explicit(&j->n, (uint32_t)n, memory_order_relaxed);
        for (size_t i = 0; i < n; i++) {
                struct thr_jentry *e = &j->e[i];
                mb[i].marked = false;
                atomic_store_explicit(&e->slot_off,
                                      (uint64_t)((char *)mb[i].slot - (char *)a->map.base),
                                      memory_order_relaxed);
                atomic_store_explicit(&e->gen, mb[i].gen, memory_order_relaxed);
                atomic_store_explicit(&e->cost, mb[i].cost, memory_order_relaxed);
                atomic_store_explicit(&e->old, 0, memory_order_relaxed);
                atomic_store_explicit(&e->next, 0, memory_order_relaxed);
        }
        atomic_store_explicit(&j->status, shm_journal_status(seq, THR_JOURNAL_UNDECIDED),
                              memory_order_release);
        THR_HOOK(THR_HOOK_COMPOSE_JOURNALED, j);
        int rc = 0;
        for (size_t i = 0; i < n && rc == 0; i++) {
                rc = mark_one(a, &mb[i], &j->e[i], mark);
                if (rc == 0 && (atomic_load_explicit(&j->status, memory_order_acquire) & 3) !=
                                   THR_JOURNAL_UNDECIDED)
                        rc = 1; /* a helper aborted us: restore, then again */
        }
        if (rc != 0) {
                finish(j, mb, n, mark, seq, decide(j, seq, THR_JOURNAL_ABORT));
                return rc < 0 ? rc : 2;
        }
        /* every member marked: decide each on the state it had */
        bool all = true;
        for (size_t i = 0; i < n; i++) {
                uint64_t old = atomic_load_explicit(&j->e[i].old, memory_order_relaxed);
                rc = thr_member_decide(mb[i].lim, mb[i].slot, old, mb[i].cost, &mb[i].v);
                if (rc < 0) {
                        finish(j, mb, n, mark, seq, decide(j, seq, THR_JOURNAL_ABORT));
                        return rc;
                }
                mb[i].prev = old;
                atomic_store_explicit(&j->e[i].kind, mb[i].v.kind, memory_order_relaxed);
                atomic_store_explicit(&j->e[i].next, mb[i].v.next, memory_order_relaxed);
                all &= mb[i].v.ok;
        }
        if (all)
                for (size_t i = 0; i < n; i++)
                        if (mb[i].v.kind == THR_KIND_WINDOW && mb[i].cost)
                                thr_member_stage(
                                    mb[i].lim, mb[i].slot,
                                    atomic_load_explicit(&j->e[i].old, memory_order_relaxed),
                                    mb[i].cost, mb[i].v.stamp);
        enum thr_journal_state oc = decide(j, seq, all ? THR_JOURNAL_COMMIT : THR_JOURNAL_ABORT);
        THR_HOOK(THR_HOOK_COMPOSE_DECIDED, j);
        finish(j, mb, n, mark, seq, oc);
        if (all && oc != THR_JOURNAL_COMMIT)
                return 2; /* aborted by a helper before our commit: nothing consumed, again */
        res->admitted = all;
        res->denied = UINT32_MAX;
        res->retry_after_ns = 0;
        for (size_t i = 0; i < n; i++) {
                /* denied, a member that fit kept its cost: what is left is as before */
                res->remaining[mb[i].at] =
                    mb[i].v.remaining + (!all && mb[i].v.ok ? mb[i].cost : 0);
                if (mb[i].v.ok)
                        continue;
                if (mb[i].at < res->denied)
                        res->denied = mb[i].at;
                if (mb[i].v.retry_ns > res->retry_after_ns)
                        res->retry_after_ns = mb[i].v.retry_ns;
        }
        return all;
}

/* One member of a ticket (struct thr_compose_ticket's priv words). */
struct tmember {
        struct thr_slot *slot;
        thr_limiter *lim;
        uint64_t gen; /* fork generation << 32 | the slot's generation */
        uint64_t prev, next, cost;
        uint32_t kind;
        uint32_t pad;
        uint64_t stamp; /* a window member's admission time */
};
static_assert(sizeof(struct tmember) * THR_COMPOSE_MAX <=
                  sizeof(((struct thr_compose_ticket *)0)->priv),
              "a ticket's members fit its private words");

static void ticket_fill(thr_arena *a, const struct member *mb, size_t n,
                        struct thr_compose_ticket *t)
{
        struct tmember *tm = (struct tmember *)(void *)t->priv;
        t->n = (uint32_t)n;
        t->admitted_ns = shm_now_ns(a->hdr);
        for (size_t i = 0; i < n; i++)
                tm[mb[i].at] = (struct tmember){.slot = mb[i].slot,
                                                .lim = mb[i].lim,
                                                .gen = (thr_forkpage->gen << 32) | mb[i].gen,
                                                .prev = mb[i].prev,
                                                .next = mb[i].v.next,
                                                .cost = mb[i].cost,
                                                .kind = mb[i].v.kind,
                                                .stamp = mb[i].v.stamp};
}

/* A call decided (ADMITTED 1 or 0): counted in R and in each member's limiter counters (its row,
 * layout.h): admitted on every member, or denied on every member. */
static void count(thr_arena *a, struct thr_reader *r, const struct thr_member *in, size_t n,
                  int admitted)
{
        thr_count(admitted ? &r->admitted : &r->denied);
        struct thr_lcount *row = thr_reader_row(a, r);
        for (size_t i = 0; i < n; i++) {
                struct thr_lcount *lc = row + in[i].lim->dir_idx;
                thr_count(admitted ? &lc->admitted : &lc->denied);
        }
}

static int compose(const struct thr_member *in, size_t n, struct thr_compose_result *res,
                   struct thr_compose_ticket *ticket)
{
        thr_arena *a = in[0].lim->a;
        int rc = 0;
        struct thr_reader *r = thr_reader_get(a, &rc);
        if (!r)
                return rc;
        struct thr_reader *rec0 = shm_at(a->map.base, a->map.g.reader_off);
        uint32_t idx = (uint32_t)(r - rec0);
        if (atomic_load_explicit(&r->journal.status, memory_order_acquire) & 3)
                return -EBUSY; /* this thread is in a composed call already (a signal handler's
                                * call would overwrite its journal) */
        struct member mb[THR_COMPOSE_MAX];
        for (int tries = 0; tries < ATTEMPTS; tries++) {
                for (size_t i = 0; i < n; i++) {
                        struct thr_reservation_priv loc;
                        rc = thr_op_locate_plain(in[i].lim, in[i].key, in[i].len, &loc);
                        if (rc < 0)
                                return rc;
                        mb[i] = (struct member){.lim = in[i].lim,
                                                .slot = (struct thr_slot *)loc.slot,
                                                .gen = (uint32_t)loc.gen,
                                                .at = (uint32_t)i,
                                                .cost = in[i].cost};
                }
                sort_by_slot(mb, n); /* one order for every caller */
                for (size_t i = 1; i < n; i++)
                        if (mb[i].slot == mb[i - 1].slot)
                                return -EINVAL; /* the same key twice */
                uint64_t outer = thr_reader_enter(a, r);
                rc = attempt(a, r, idx, mb, n, res);
                thr_reader_exit(r, outer);
                if (rc == 1 && ticket)
                        ticket_fill(a, mb, n, ticket);
                if (rc != 2) {
                        if (rc >= 0)
                                count(a, r, in, n, rc);
                        return rc;
                }
        }
        return -EBUSY;
}

static int check(const struct thr_member *m, size_t n, const struct thr_compose_result *res)
{
        if (!m || !res || n == 0 || n > THR_COMPOSE_MAX)
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                if (!m[i].lim || !m[i].key || m[i].len == 0 || m[i].lim->a != m[0].lim->a)
                        return -EINVAL;
                if (m[i].len > THR_KEY_MAX)
                        return -ENAMETOOLONG;
        }
        return 0;
}

int thr_compose_take(const struct thr_member *m, size_t n, struct thr_compose_result *res,
                     struct thr_compose_ticket *ticket)
{
        int rc = check(m, n, res);
        if (ticket)
                memset(ticket, 0, sizeof(*ticket));
        if (rc < 0)
                return rc;
        *res = (struct thr_compose_result){.denied = UINT32_MAX};
        int old;
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
        rc = compose(m, n, res, ticket);
        pthread_setcancelstate(old, NULL);
        return rc;
}

int thr_compose_try(const struct thr_member *m, size_t n, struct thr_compose_result *res)
{
        return thr_compose_take(m, n, res, NULL);
}

/* Sleep until arena time DUE (a manual-clock arena: its time read again every 100 us). */
static void sleep_until(const struct thr_hdr *h, uint64_t due)
{
        struct timespec tick = {0, 100000};
        while (shm_now_ns(h) < due) {
                if (h->clock_id != THR_CLOCK_MANUAL) {
                        uint64_t ns = due - shm_now_ns(h);
                        if (ns > due) /* passed meanwhile */
                                return;
                        tick =
                            (struct timespec){(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
                }
                nanosleep(&tick, NULL);
        }
}

#define BUDGET_POLL_NS (10ull * 1000000)

int thr_compose_acquire(const struct thr_member *m, size_t n, uint64_t timeout_ns,
                        struct thr_compose_result *res, struct thr_compose_ticket *ticket)
{
        int rc = check(m, n, res);
        if (rc < 0)
                return rc;
        const struct thr_hdr *h = m[0].lim->a->hdr;
        uint64_t t0 = shm_now_ns(h);
        uint64_t deadline = timeout_ns > UINT64_MAX - t0 ? UINT64_MAX : t0 + timeout_ns;
        for (;;) {
                rc = thr_compose_take(m, n, res, ticket);
                if (rc != 0)
                        return rc;
                uint64_t now = shm_now_ns(h);
                uint64_t wait =
                    res->retry_after_ns == UINT64_MAX ? BUDGET_POLL_NS : res->retry_after_ns;
                if (wait == 0)
                        wait = 1000; /* decided on a clock a moment older: again at once */
                if (now >= deadline || wait > deadline - now)
                        return -ETIMEDOUT; /* the slowest member would not fit in time */
                sleep_until(h, now + wait);
        }
}

/* Give back member TM (the key's slot checked still the one the call charged), inside the
 * thread's read-side section. Returns the amount given back in the member's units, and whether
 * it was all (*FULL). A budget member's key is copied to KEY (*LEN its real length) instead: added
 * back after the section (an add may wait for the key's lock). What a slot holds is the key's
 * stored form (layout.h), which names the key to the table exactly (a long key's too), so KEY is
 * added back as that (thr_budget_add_stored): never a 44-byte key that happens to equal it. */
static uint64_t refund_one(const struct tmember *tm, bool *full, uint8_t key[THR_KEY_INLINE],
                           size_t *len)
{
        *full = false;
        *len = 0;
        struct thr_slot *s = tm->slot;
        uint64_t meta = atomic_load_explicit(&s->meta, memory_order_acquire);
        if (THR_META_STATUS(meta) != THR_SLOT_LIVE || THR_META_GEN(meta) != (uint32_t)tm->gen)
                return 0; /* evicted or reused: nothing of the call is left there */
        if (tm->kind == THR_KIND_BUDGET) {
                uint32_t kl = s->key_len;
                if (kl == 0 || kl > THR_KEY_MAX)
                        return 0;
                memcpy(key, s->key, shm_key_stored_len(kl));
                if (atomic_load_explicit(&s->meta, memory_order_acquire) != meta)
                        return 0; /* reused while copied */
                *len = kl;
                return 0;
        }
        struct thr_member_refund mr;
        if (thr_member_refund(tm->lim, s, tm->prev, tm->next, tm->cost, tm->stamp, &mr) < 0)
                return 0;
        *full = mr.full;
        return mr.given;
}

int thr_compose_refund(struct thr_compose_ticket *t, uint64_t *given)
{
        if (!t || t->n == 0 || t->n > THR_COMPOSE_MAX)
                return -EINVAL;
        struct tmember *tm = (struct tmember *)(void *)t->priv;
        for (uint32_t i = 0; i < t->n; i++)
                if (!tm[i].slot || !tm[i].lim || (tm[i].gen >> 32) != (uint32_t)thr_forkpage->gen)
                        return -EINVAL; /* not this process's (a fork child's copy) */
        thr_arena *a = tm[0].lim->a;
        int rc = 0;
        struct thr_reader *r = thr_reader_get(a, &rc);
        if (!r)
                return rc;
        int old;
        pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &old);
        int whole = 0;
        uint32_t n = t->n;
        t->n = 0; /* once */
        for (uint32_t i = 0; i < n; i++) {
                uint64_t outer = thr_reader_enter(a, r);
                bool full;
                uint8_t key[THR_KEY_INLINE];
                size_t len;
                uint64_t g = refund_one(&tm[i], &full, key, &len);
                thr_reader_exit(r, outer);
                if (len) { /* a budget: its cost added back, whatever was spent since */
                        struct thr_budget_result br;
                        if (thr_budget_add_stored(tm[i].lim, key, len, tm[i].cost, &br) == 0) {
                                g = tm[i].cost;
                                full = true;
                        }
                }
                whole += full;
                if (given)
                        given[i] = g;
        }
        pthread_setcancelstate(old, NULL);
        return whole;
}

/* ---------------------------------------------------------------- named groups */

struct thr_group {
        thr_arena *a;
        uint32_t n;
        thr_limiter *lims[THR_COMPOSE_MAX];
};

/* The groups' table the daemon published, checked against the heap, or NULL. */
static const struct thr_group_table *group_table(const thr_arena *a, uint64_t *count)
{
        uint64_t off = atomic_load_explicit(&a->hdr->groups_off, memory_order_acquire);
        const struct shm_geom *g = &a->map.g;
        if (!off || off % THR_ALIGN || off < g->heap_off || off > g->heap_end ||
            g->heap_end - off < sizeof(struct thr_group_table))
                return NULL;
        const struct thr_group_table *t = shm_at(a->map.base, off);
        uint64_t n = t->count;
        if (n > (g->heap_end - off - sizeof(*t)) / sizeof(struct thr_group_rec))
                return NULL;
        *count = n;
        return t;
}

int thr_group_open(thr_arena *a, const char *name, thr_group **out)
{
        if (!a || !name || !out)
                return -EINVAL;
        *out = NULL;
        uint64_t count = 0;
        const struct thr_group_table *t = group_table(a, &count);
        if (!t)
                return atomic_load_explicit(&a->hdr->groups_off, memory_order_acquire) ? -EBADMSG
                                                                                       : -ENOENT;
        const struct thr_group_rec *rec = NULL;
        for (uint64_t i = 0; i < count && !rec; i++)
                if (memchr(t->g[i].name, 0, sizeof(t->g[i].name)) && !strcmp(t->g[i].name, name))
                        rec = &t->g[i];
        if (!rec)
                return -ENOENT;
        struct thr_group_rec copy = *rec; /* one read: the table is immutable, but checked */
        if (copy.n == 0 || copy.n > THR_COMPOSE_MAX)
                return -EBADMSG;
        thr_group *g = calloc(1, sizeof(*g));
        if (!g)
                return -ENOMEM;
        g->a = a;
        int rc = 0;
        const struct thr_dir_entry *dir = shm_at(a->map.base, a->map.g.dir_off);
        for (uint32_t i = 0; i < copy.n && rc == 0; i++) {
                uint32_t d = copy.member[i];
                if (d >= a->map.g.dir_count) {
                        rc = -EIDRM; /* its limiter was gone when the table was written */
                        break;
                }
                char lname[THR_NAME_MAX + 1];
                memcpy(lname, dir[d].name, sizeof(lname));
                lname[THR_NAME_MAX] = 0;
                rc = thr_limiter_open(a, lname, &g->lims[i]);
                if (rc == -ENOENT)
                        rc = -EIDRM;
                if (rc == 0)
                        g->n++;
        }
        if (rc < 0) {
                thr_group_close(g);
                return rc;
        }
        *out = g;
        return 0;
}

int thr_group_size(const thr_group *g)
{
        return g ? (int)g->n : -EINVAL;
}

/* ARGS as the members of G's call (a NULL key: the first member's). */
static int group_members(const thr_group *g, const struct thr_group_arg *args, struct thr_member *m)
{
        if (!g || !args)
                return -EINVAL;
        for (uint32_t i = 0; i < g->n; i++) {
                const struct thr_group_arg *x = args[i].key ? &args[i] : &args[0];
                m[i] = (struct thr_member){
                    .lim = g->lims[i], .key = x->key, .len = x->len, .cost = args[i].cost};
        }
        return 0;
}

int thr_group_take(thr_group *g, const struct thr_group_arg *args, struct thr_compose_result *res,
                   struct thr_compose_ticket *ticket)
{
        struct thr_member m[THR_COMPOSE_MAX];
        int rc = group_members(g, args, m);
        return rc < 0 ? rc : thr_compose_take(m, g->n, res, ticket);
}

int thr_group_try(thr_group *g, const struct thr_group_arg *args, struct thr_compose_result *res)
{
        return thr_group_take(g, args, res, NULL);
}

int thr_group_acquire(thr_group *g, const struct thr_group_arg *args, uint64_t timeout_ns,
                      struct thr_compose_result *res, struct thr_compose_ticket *ticket)
{
        struct thr_member m[THR_COMPOSE_MAX];
        int rc = group_members(g, args, m);
        return rc < 0 ? rc : thr_compose_acquire(m, g->n, timeout_ns, res, ticket);
}

int thr_group_close(thr_group *g)
{
        if (!g)
                return -EINVAL;
        for (uint32_t i = 0; i < g->n; i++)
                thr_limiter_close(g->lims[i]);
        free(g);
        return 0;
}
