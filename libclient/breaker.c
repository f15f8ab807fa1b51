/*
 * breaker.c - circuit breakers: thr_breaker_allow, thr_breaker_report, thr_breaker_stat. The
 * semantics, the state word and the window's buckets are at the top of shm/breaker.h; the
 * decisions are shm/breaker.c's pure functions. This file finds the key and makes the CAS.
 *
 * Why a CAS on a slot found earlier is safe. The key's slot is found (or created closed) by the
 * decision core (thr_op_locate), inside a read-side section that it then leaves. Each step here
 * enters a section of its own and first checks that the slot's meta word is still LIVE with the
 * generation found: inside the section the slot cannot be reclaimed and reused (reclaim.c), only
 * retired, and retiring starts with a CAS of the state word to THR_TAT_DEAD, which makes a CAS
 * from any breaker word fail. So a CAS that succeeds changed this key's word, never another
 * key's (no ABA through reuse). A report keeps the slot's meta word in its ticket: a key evicted
 * and created again since (another generation) ignores the report.
 *
 * Lock-free: a CAS fails only because another process changed the word (its step succeeded);
 * the step is then decided again on the new word. Nothing here waits, sleeps or takes a lock
 * except the insert of a new key (the core's, bounded by insert_wait).
 */
#include <errno.h>
#include <string.h>

#include "breaker.h"
#include "client_internal.h"
#include "kind.h"
#include "testhook.h"

/* A ticket's private words (struct thr_breaker_ticket's priv). */
struct brk_priv {
        struct thr_slot *slot; /* NULL: spent, untracked, or never handed out */
        thr_limiter *lim;
        uint64_t meta;       /* the slot's meta word when the key was found */
        uint32_t gen;        /* the breaker's period it was handed out in */
        uint32_t magic;      /* BRK_MAGIC: a ticket thr_breaker_allow filled */
        uint64_t handout_ns; /* arena time it was handed out */
        uint32_t fork;       /* the fork generation of the process it was handed out in */
        uint32_t pad;
};
#define BRK_MAGIC 0x4b524242u
static_assert(SHM_BRK_CLOSED == THR_BREAKER_CLOSED && SHM_BRK_OPEN == THR_BREAKER_OPEN &&
                  SHM_BRK_HALF_OPEN == THR_BREAKER_HALF_OPEN,
              "throttle.h's states are breaker.h's");
static_assert(SHM_BRK_OUT_SUCCESS == THR_OUTCOME_SUCCESS &&
                  SHM_BRK_OUT_FAILURE == THR_OUTCOME_FAILURE &&
                  SHM_BRK_OUT_IGNORE == THR_OUTCOME_IGNORE,
              "throttle.h's outcomes are breaker.h's");
static_assert(THR_KIND_BREAKER == THR_LIMITER_BREAKER, "throttle.h's kind is the layout's");
static_assert(sizeof(struct brk_priv) <= sizeof(((struct thr_breaker_ticket *)0)->priv),
              "a ticket's private part fits its room");

/* One step on a key: its slot, inside a section of this thread. */
struct bstep {
        thr_limiter *l;
        struct thr_reader *r;
        uint64_t outer; /* the section found open (a signal handler's call), or 0 */
        struct thr_slot *slot;
        uint64_t meta;
        struct thr_params pc;
        const struct thr_params *p;
        struct shm_brk_cfg c;
};

static int step_enter(struct bstep *o, thr_limiter *l)
{
        int rc = 0;
        o->l = l;
        o->r = thr_reader_get(l->a, &rc);
        if (!o->r)
                return rc;
        o->p = thr_breaker_record(l, &o->pc);
        if (!o->p)
                return -EBADMSG;
        shm_brk_cfg(o->p, &o->c);
        o->outer = thr_reader_enter(l->a, o->r);
        THR_HOOK(THR_HOOK_SECTION_ENTERED, o->r);
        return 0;
}

static void step_exit(struct bstep *o)
{
        thr_reader_exit(o->r, o->outer);
}

/* Whether the slot is still the key's (checked inside the section: then it cannot be reused). */
static bool step_same(const struct bstep *o)
{
        return atomic_load_explicit(&o->slot->meta, memory_order_acquire) == o->meta &&
               THR_META_STATUS(o->meta) == THR_SLOT_LIVE;
}

static _Atomic uint64_t *step_buckets(const struct bstep *o)
{
        return shm_slot_aux(o->l->a->map.base, &o->l->geo, o->slot);
}

/* ST from WORD at NOW (settled: what the next call would see), with the window's sums. */
static void fill_status(const struct bstep *o, uint64_t word, uint64_t now,
                        struct thr_breaker_status *st)
{
        struct shm_brk b;
        *st = (struct thr_breaker_status){0};
        if (shm_brk_decode(word, &b) < 0)
                return;
        shm_brk_settle(&o->c, &b, now);
        st->state = b.state;
        st->consecutive_failures = b.consec;
        st->probes_in_flight = b.inflight;
        st->half_open_successes = b.succ;
        st->retry_after_ns = shm_brk_retry_ns(&o->c, &b, now);
        if (o->slot && b.state == SHM_BRK_CLOSED && o->c.rate)
                shm_brk_window_sum(&o->c, step_buckets(o), b.gen, now, &st->window_calls,
                                   &st->window_failures);
}

/* Whether L is a live breaker: 0, -EIDRM (removed by a reload), -EOPNOTSUPP (another kind),
 * -EBADMSG (its record is corrupt). Checked before a lookup, which would create a key of another
 * kind's limiter. */
static int check_kind(thr_limiter *l)
{
        struct thr_params pc;
        if (atomic_load_explicit(&l->de->state, memory_order_acquire) != THR_DIR_LIVE)
                return -EIDRM;
        if (thr_breaker_record(l, &pc))
                return 0;
        uint64_t off = atomic_load_explicit(&l->de->params_off, memory_order_acquire);
        if (off - l->params_lo > l->params_span || off % _Alignof(struct thr_params))
                return -EBADMSG;
        const struct thr_params *p = shm_at(l->a->map.base, off);
        return atomic_load_explicit((const _Atomic uint32_t *)&p->kind, memory_order_relaxed) ==
                       THR_KIND_BREAKER
                   ? -EBADMSG
                   : -EOPNOTSUPP;
}

/* Find or create KEY; -ENOSPC with on_full = allow is a go-ahead, untracked (1). */
static int locate(thr_limiter *l, const void *key, size_t len, struct thr_slot **slot,
                  uint64_t *meta)
{
        struct thr_reservation_priv loc;
        int rc = thr_op_locate(l, key, len, &loc);
        if (rc == -ENOSPC) {
                struct thr_params pc;
                const struct thr_params *p = thr_breaker_record(l, &pc);
                return p && p->on_full == THR_FULL_ALLOW ? 1 : rc;
        }
        if (rc < 0)
                return rc;
        *slot = (struct thr_slot *)loc.slot;
        *meta = atomic_load_explicit(&(*slot)->meta, memory_order_acquire);
        return THR_META_GEN(*meta) == (uint32_t)loc.gen ? 0 : -ESTALE;
}

/* One allow on the found slot. 0 go ahead, -EAGAIN, -ESTALE (look the key up again), -EBADMSG. */
static int allow_step(struct bstep *o, struct brk_priv *pv, struct thr_breaker_ticket *t,
                      struct thr_breaker_status *st)
{
        if (!step_same(o))
                return -ESTALE;
        uint64_t word = atomic_load_explicit(&o->slot->state, memory_order_acquire);
        for (;;) {
                if (word != THR_TAT_FRESH && word >= THR_TAT_LIMIT)
                        return word == THR_TAT_DEAD || word == THR_TAT_FREE ? -ESTALE : -EBADMSG;
                uint64_t now = shm_now_ns(o->l->a->hdr), next, retry;
                uint32_t gen;
                bool probe;
                int rc = shm_brk_allow(&o->c, word, now, &next, &gen, &probe, &retry);
                if (rc == 0 && next != word) {
                        THR_HOOK(THR_HOOK_BRK_BEFORE_CAS, o->slot);
                        if (!atomic_compare_exchange_strong_explicit(&o->slot->state, &word, next,
                                                                     memory_order_acq_rel,
                                                                     memory_order_acquire))
                                continue; /* another process moved it: decide again */
                }
                if (st)
                        fill_status(o, rc == 0 ? next : word, now, st);
                if (rc < 0)
                        return rc;
                *pv = (struct brk_priv){.slot = o->slot,
                                        .lim = o->l,
                                        .meta = o->meta,
                                        .gen = gen,
                                        .magic = BRK_MAGIC,
                                        .handout_ns = now,
                                        .fork = (uint32_t)thr_forkpage->gen};
                t->probe = probe;
                return 0;
        }
}

int thr_breaker_allow(thr_limiter *l, const void *key, size_t len, struct thr_breaker_ticket *t,
                      struct thr_breaker_status *st)
{
        if (!l || !t)
                return -EINVAL;
        memset(t, 0, sizeof(*t));
        struct brk_priv *pv = (struct brk_priv *)(void *)t->priv;
        int rc = check_kind(l);
        if (rc < 0)
                return rc;
        rc = -ESTALE;
        for (int tries = 0; rc == -ESTALE && tries < 8; tries++) {
                struct bstep o = {0};
                rc = locate(l, key, len, &o.slot, &o.meta);
                if (rc == 1) { /* on_full = allow: through, unrecorded */
                        t->flags = THR_BREAKER_UNTRACKED;
                        if (st)
                                *st = (struct thr_breaker_status){.state = THR_BREAKER_CLOSED};
                        rc = 0;
                        break;
                }
                if (rc < 0)
                        continue;
                rc = step_enter(&o, l);
                if (rc < 0)
                        break;
                rc = allow_step(&o, pv, t, st);
                step_exit(&o);
        }
        if (rc == -ESTALE)
                rc = -EBADMSG; /* eight evictions in a row: a rewritten arena */
        thr_lim_count(l, rc, false);
        return rc;
}

/* One report on the ticket's slot (inside the section). SHM_BRK_OK, SHM_BRK_IGNORED, -EBADMSG. */
static int report_step(struct bstep *o, const struct brk_priv *pv, bool probe, uint32_t outcome)
{
        if (!step_same(o))
                return SHM_BRK_IGNORED; /* evicted since: its period is over */
        uint64_t word = atomic_load_explicit(&o->slot->state, memory_order_acquire);
        uint64_t now = shm_now_ns(o->l->a->hdr);
        /* The period is 6 bits: 64 transitions bring a ticket's number back. They take at least
         * 21 x min(cooldown, probe_timeout) (every 3 need a cooldown or a probe give-up), so a
         * call out longer than that cannot be told from one of a later period: its report is
         * ignored (it was counted: a hung probe returning after 64 give-ups freed the current
         * holder's place, and a closed call's failure tripped a breaker 21 cycles later) */
        uint64_t span =
            o->c.cooldown_ns < o->c.probe_timeout_ns ? o->c.cooldown_ns : o->c.probe_timeout_ns;
        uint64_t wrap = span > UINT64_MAX / 21 ? UINT64_MAX : span * 21;
        if (now >= pv->handout_ns && now - pv->handout_ns >= wrap)
                return SHM_BRK_IGNORED;
        bool counted = false;
        for (;;) {
                if (word != THR_TAT_FRESH && word >= THR_TAT_LIMIT)
                        return word == THR_TAT_DEAD || word == THR_TAT_FREE ? SHM_BRK_IGNORED
                                                                            : -EBADMSG;
                uint64_t calls = 0, fails = 0, next;
                if (o->c.rate && !counted &&
                    shm_brk_counts(&o->c, word, now, pv->gen, probe, outcome)) {
                        shm_brk_window_add(&o->c, step_buckets(o), pv->gen, now,
                                           outcome == SHM_BRK_OUT_FAILURE, &o->slot->state);
                        counted = true;
                        THR_HOOK(THR_HOOK_BRK_COUNTED, o->slot);
                        word = atomic_load_explicit(&o->slot->state, memory_order_acquire);
                        continue;
                }
                if (o->c.rate && outcome == SHM_BRK_OUT_FAILURE)
                        shm_brk_window_sum(&o->c, step_buckets(o), pv->gen, now, &calls, &fails);
                int rc =
                    shm_brk_report(&o->c, word, now, pv->gen, probe, outcome, calls, fails, &next);
                if (rc != SHM_BRK_OK || next == word)
                        return rc;
                THR_HOOK(THR_HOOK_BRK_BEFORE_CAS, o->slot);
                if (atomic_compare_exchange_strong_explicit(
                        &o->slot->state, &word, next, memory_order_acq_rel, memory_order_acquire))
                        return SHM_BRK_OK;
        }
}

int thr_breaker_report(thr_limiter *l, struct thr_breaker_ticket *t, uint32_t outcome)
{
        if (!l || !t || outcome < THR_OUTCOME_SUCCESS || outcome > THR_OUTCOME_IGNORE)
                return -EINVAL;
        struct brk_priv pv;
        memcpy(&pv, t->priv, sizeof(pv));
        if (t->flags & THR_BREAKER_UNTRACKED) {
                memset(t, 0, sizeof(*t));
                return SHM_BRK_IGNORED;
        }
        if (pv.magic != BRK_MAGIC || !pv.slot || pv.lim != l)
                return -EINVAL;
        if (pv.fork != (uint32_t)thr_forkpage->gen)
                return -EINVAL; /* handed out in another process (a fork's copy): not ours */
        bool probe = t->probe != 0;
        memset(t, 0, sizeof(*t)); /* spent: a second report is refused, never counted twice */
        struct bstep o = {0};
        int rc = step_enter(&o, l);
        if (rc < 0)
                return rc;
        o.slot = pv.slot;
        o.meta = pv.meta;
        rc = report_step(&o, &pv, probe, outcome);
        step_exit(&o);
        return rc;
}

int thr_breaker_stat(thr_limiter *l, const void *key, size_t len, struct thr_breaker_status *st)
{
        if (!l || !st)
                return -EINVAL;
        struct thr_reservation_priv loc;
        int rc = check_kind(l);
        if (rc == 0)
                rc = thr_op_find(l, key, len, &loc);
        if (rc == -ENOENT) {
                *st = (struct thr_breaker_status){.state = THR_BREAKER_CLOSED};
                return 0;
        }
        if (rc < 0)
                return rc;
        struct bstep o = {0};
        rc = step_enter(&o, l);
        if (rc < 0)
                return rc;
        o.slot = (struct thr_slot *)loc.slot;
        o.meta = atomic_load_explicit(&o.slot->meta, memory_order_acquire);
        uint64_t word = atomic_load_explicit(&o.slot->state, memory_order_acquire);
        if (THR_META_GEN(o.meta) != (uint32_t)loc.gen || !step_same(&o) ||
            (word != THR_TAT_FRESH && word >= THR_TAT_LIMIT))
                *st = (struct thr_breaker_status){.state = THR_BREAKER_CLOSED}; /* gone */
        else
                fill_status(&o, word, shm_now_ns(l->a->hdr), st);
        struct shm_brk b;
        if (shm_brk_decode(word, &b) < 0 && word < THR_TAT_LIMIT)
                rc = -EBADMSG;
        step_exit(&o);
        return rc;
}
