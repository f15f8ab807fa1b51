/*
 * shmctl_peer.c - the verbs that walk the reader records: `readers` (every record in use), and
 * `peers`: every live peer (peer.h: a reader record whose peer_expires word is not 0), with its
 * expiry, the lock levels it holds or waits for, its acquires pending, and the leases and units
 * it holds over the keys of every semaphore limiter.
 *
 * The arena is untrusted here as in shmctl.c (read its comment). The reader records are scanned
 * up to the count checked at attach; each field is read once and only printed (the levels word
 * is only tested bit by bit). The leases are read as `leases` reads them (shmctl_sem.c: every
 * slot of each checked table copy, leases_per_key records from the checked snapshot, each record
 * read like a seqlock), and a lease counts for a peer only if it is flagged a peer's, its holder
 * index is the index of a peer found here and its holder token that peer's owner word: an index
 * read from a lease is looked up among the peers found, never followed into the arena. A record
 * reused between the two scans has another owner: its old leases count for nobody.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shmctl_fmt.h"
#include "shmctl_internal.h"

/* ---------------------------------------------------------------- readers */

/*
 * Record IDX into *R if it is owned: 1, or 0 (free, or given back while it was read). Each field
 * is read once. Its owner takes the liveness lock before setting the owner word and drops it
 * after clearing it, so a free lock means a dead owner only if the owner word is unchanged after
 * the lock was tested; otherwise the record was given back (or claimed anew) meanwhile.
 */
static int reader_read(const struct ctx *c, uint32_t idx, struct shmctl_reader *r)
{
        const struct thr_reader *rec =
            (const struct thr_reader *)shm_at(c->map.base, c->map.g.reader_off) + idx;
        uint64_t owner = atomic_load_explicit(&rec->owner, memory_order_acquire);
        if (owner == 0)
                return 0;
        /* acquire: the counters are then the pid's owner's, zeroed at its claim (reader.c) */
        uint64_t pid = atomic_load_explicit(&rec->pid, memory_order_acquire);
        *r = (struct shmctl_reader){
            .idx = idx,
            .pid = pid,
            .tid = atomic_load_explicit(&rec->tid, memory_order_relaxed),
            .online = atomic_load_explicit(&rec->online, memory_order_relaxed),
            .gp_seen = atomic_load_explicit(&rec->gp_seen, memory_order_relaxed),
            .blocking_ns = atomic_load_explicit(&rec->blocking_ns, memory_order_relaxed),
            .stalled = atomic_load_explicit(&rec->stalled, memory_order_relaxed) != 0,
            .admitted = atomic_load_explicit(&rec->admitted, memory_order_relaxed),
            .denied = atomic_load_explicit(&rec->denied, memory_order_relaxed),
            .inserts = atomic_load_explicit(&rec->inserts, memory_order_relaxed),
            .cas_retries = atomic_load_explicit(&rec->cas_retries, memory_order_relaxed)};
        r->alive = shm_reader_alive(c->map.fd, idx);
        if (r->alive == 0 && atomic_load_explicit(&rec->owner, memory_order_acquire) != owner)
                return 0;
        return 1;
}

/* Every owned reader record into *OUT (caller frees), and the totals into S. Count or -errno. */
static long readers_collect(struct ctx *c, struct shmctl_reader **out, struct shmctl_readers *s)
{
        uint32_t n = c->map.g.reader_count;
        struct shmctl_reader *v = calloc(n ? n : 1, sizeof(*v));
        long k = 0;
        if (!v)
                return -ENOMEM;
        *s = (struct shmctl_readers){.records = n};
        gp_read(c, &s->gp);
        for (uint32_t i = 0; i < n; i++) {
                if (!reader_read(c, i, &v[k]))
                        continue;
                s->online += v[k].online != 0;
                s->stalled += v[k].stalled;
                s->dead += v[k].alive == 0;
                k++;
        }
        s->owned = (uint32_t)k;
        s->now_ns = arena_now_ns(c); /* after the records: blocking_ns <= now */
        *out = v;
        return k;
}

int cmd_readers(struct ctx *c)
{
        struct shmctl_reader *v;
        struct shmctl_readers s;
        long n = readers_collect(c, &v, &s);
        if (n < 0)
                return fail(c, (int)n);
        shmctl_out_readers(v, n, &s, c->o->json);
        free(v);
        return 0;
}

/* ---------------------------------------------------------------- peers: reading */

/* One live peer, each field read once, and what its leases add up to. */
struct peer_row {
        uint32_t idx;
        int alive;      /* its liveness lock: 1 held, 0 free (its process is gone), -errno */
        uint64_t owner; /* its owner token: what its leases name (never printed) */
        uint64_t pid;
        uint64_t expires_ns; /* its word: its leases expire then (<= now: expired, not yet void) */
        uint64_t levels;     /* bit L: it holds or waits for a lock at level L */
        uint32_t pending;    /* its acquires pending, as its process wrote it */
        uint64_t leases, units;
};

/* The `peers` answer: the peers in index order, and the arena time after they were read. */
struct peer_acc {
        struct peer_row *v;
        long n;
        uint64_t now_ns;
};

/*
 * Record IDX into *P if it is a live peer (owned, its expiry word not 0): 1, or 0. A record
 * whose owner changed while it was read was given back (or claimed anew) meanwhile: skipped,
 * as `readers` skips it.
 */
static int peer_read(const struct ctx *c, uint32_t idx, struct peer_row *p)
{
        const struct thr_reader *r =
            (const struct thr_reader *)shm_at(c->map.base, c->map.g.reader_off) + idx;
        uint64_t owner = atomic_load_explicit(&r->owner, memory_order_acquire);
        if (owner == 0)
                return 0;
        uint64_t e = atomic_load_explicit(&r->peer_expires, memory_order_acquire);
        if (e == 0)
                return 0;
        *p = (struct peer_row){
            .idx = idx,
            .owner = owner,
            .pid = atomic_load_explicit(&r->pid, memory_order_relaxed),
            .expires_ns = e,
            .levels = atomic_load_explicit(&r->peer_levels, memory_order_relaxed),
            .pending = atomic_load_explicit(&r->peer_pending, memory_order_relaxed)};
        p->alive = shm_reader_alive(c->map.fd, idx);
        return atomic_load_explicit(&r->owner, memory_order_acquire) == owner;
}

/* Every live peer into A, in index order. 0 or -ENOMEM. */
static int peers_find(struct ctx *c, struct peer_acc *a)
{
        uint32_t n = c->map.g.reader_count;
        a->v = calloc(n ? n : 1, sizeof(*a->v));
        if (!a->v)
                return -ENOMEM;
        for (uint32_t i = 0; i < n; i++)
                a->n += peer_read(c, i, &a->v[a->n]);
        a->now_ns =
            arena_now_ns(c); /* after the records: each expiry is judged at the time shown */
        return 0;
}

static int row_cmp(const void *key, const void *row)
{
        uint32_t i = *(const uint32_t *)key, j = ((const struct peer_row *)row)->idx;
        return i < j ? -1 : i > j;
}

/* Lease E counted for the peer of A it names, if any (holder index and token both). */
static void peer_count(struct peer_acc *a, const struct shmctl_lease *e)
{
        if (!(e->flags & THR_LEASE_PEER))
                return;
        struct peer_row *p = bsearch(&e->holder_idx, a->v, (size_t)a->n, sizeof(*a->v), row_cmp);
        if (!p || p->owner != e->holder)
                return;
        p->leases++;
        p->units += e->amount;
}

/* The leases of L's keys counted for A's peers: each slot read as `leases` reads it, its lease
 * records into c->lbuf. 0 or -EBADMSG. */
static int peers_count_lim(struct ctx *c, struct peer_acc *a, const struct shmctl_lim *l)
{
        uint64_t nslots = (uint64_t)l->t.nshards * l->t.shard_slots;
        struct shmctl_key k;
        for (uint64_t i = 0; i < nslots; i++) {
                c->nl = 0;
                int rc = slot_read(c, l, slot_at(c, l, i), 0, &k);
                if (rc < 0)
                        return rc;
                for (uint32_t j = 0; rc > 0 && j < c->nl; j++)
                        peer_count(a, &c->lbuf[j]);
        }
        return 0;
}

/* The leases of every semaphore limiter (live or retired: a retired table keeps its leases)
 * counted for A's peers. 0 or -errno. */
static int peers_count(struct ctx *c, struct peer_acc *a)
{
        struct shmctl_lim *lims;
        long nlim = lims_load_all(c, &lims);
        if (nlim < 0)
                return (int)nlim;
        int rc = 0;
        c->lbuf = calloc(THR_SEM_LEASES_MAX, sizeof(*c->lbuf));
        if (!c->lbuf)
                rc = -ENOMEM;
        for (long i = 0; rc == 0 && a->n > 0 && i < nlim; i++)
                if (lims[i].p.kind == THR_KIND_SEMAPHORE)
                        rc = peers_count_lim(c, a, &lims[i]);
        free(c->lbuf);
        c->lbuf = NULL;
        free(lims);
        return rc;
}

/* ---------------------------------------------------------------- peers: output */

/* The levels of word W, highest first (the order a peer takes them): "2,0"; "-" for none. */
static const char *fmt_levels(char *buf, size_t len, uint64_t w)
{
        size_t o = 0;
        buf[0] = '\0';
        for (int l = 63; l >= 0 && o + 4 < len; l--)
                if (w >> l & 1)
                        o += (size_t)snprintf(buf + o, len - o, "%s%d", o ? "," : "", l);
        if (!w)
                snprintf(buf, len, "-");
        return buf;
}

static const char *alive_str(int alive)
{
        return alive > 0 ? "yes" : alive == 0 ? "dead" : "unknown";
}

static void peer_row_cells(const void *data, long i, char cells[][CELL])
{
        const struct peer_acc *a = data;
        const struct peer_row *p = a->v + i;
        snprintf(cells[0], CELL, "%" PRIu32, p->idx);
        snprintf(cells[1], CELL, "%" PRIu64, p->pid);
        strcpy(cells[2], alive_str(p->alive));
        fmt_expires(cells[3], CELL, p->expires_ns, a->now_ns);
        fmt_levels(cells[4], CELL, p->levels);
        snprintf(cells[5], CELL, "%" PRIu32, p->pending);
        snprintf(cells[6], CELL, "%" PRIu64, p->leases);
        snprintf(cells[7], CELL, "%" PRIu64, p->units);
}

static void peers_human(const struct peer_acc *a)
{
        static const char *const head[] = {"INDEX",  "PID",     "ALIVE",  "EXPIRES_IN",
                                           "LEVELS", "PENDING", "LEASES", "UNITS"};
        static const bool right[] = {true, true, false, true, false, true, true, true};
        static const struct cols cols = {8, head, right};
        uint64_t leases = 0, units = 0;
        char now[32];
        for (long i = 0; i < a->n; i++) {
                leases += a->v[i].leases;
                units += a->v[i].units;
        }
        printf("arena time %s: %ld peer%s, %" PRIu64 " lease%s of %" PRIu64 " unit%s\n",
               fmt_dur(now, sizeof(now), a->now_ns), a->n, a->n == 1 ? "" : "s", leases,
               leases == 1 ? "" : "s", units, units == 1 ? "" : "s");
        if (a->n > 0)
                table_print(&cols, peer_row_cells, a, a->n);
}

static void peer_json(const struct peer_row *p, uint64_t now_ns)
{
        printf("{\"index\":%" PRIu32 ",\"pid\":%" PRIu64 ",\"alive\":%s,\"expires_ns\":%" PRIu64
               ",",
               p->idx, p->pid,
               p->alive > 0    ? "true"
               : p->alive == 0 ? "false"
                               : "null",
               p->expires_ns);
        expires_json(p->expires_ns, now_ns);
        printf(",\"levels\":[");
        for (int l = 63, first = 1; l >= 0; l--)
                if (p->levels >> l & 1) {
                        printf("%s%d", first ? "" : ",", l);
                        first = 0;
                }
        printf("],\"pending\":%" PRIu32 ",\"leases\":%" PRIu64 ",\"units\":%" PRIu64 "}",
               p->pending, p->leases, p->units);
}

static void peers_json(const struct peer_acc *a)
{
        printf("{\"now_ns\":%" PRIu64 ",\"peers\":[", a->now_ns);
        for (long i = 0; i < a->n; i++) {
                fputs(i ? "," : "", stdout);
                peer_json(&a->v[i], a->now_ns);
        }
        printf("]}\n");
}

int cmd_peers(struct ctx *c)
{
        struct peer_acc a = {0};
        int rc = peers_find(c, &a);
        if (rc == 0)
                rc = peers_count(c, &a);
        if (rc == 0 && c->o->json)
                peers_json(&a);
        else if (rc == 0)
                peers_human(&a);
        free(a.v);
        return rc < 0 ? fail(c, rc) : 0;
}
