/*
 * shmctl_internal.h - what shmctl.c, shmctl_sem.c (the semaphore verbs and columns),
 * shmctl_budget.c (budget keys and `budget add`), shmctl_peer.c (the readers and peers verbs) and
 * shmctl_compose.c (the groups verb, marked keys) share: the options, the context of one run, and
 * the arena readers they use. Not installed.
 */
#ifndef THR_SHMCTL_INTERNAL_H
#define THR_SHMCTL_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>

#include "shm.h"
#include "shmctl_out.h"

#define EX_NOTFOUND 1 /* no such limiter: a normal answer, not a failure of shmctl */

struct opts {
        const char *arena; /* name, or a path if it contains '/' */
        bool json;
        bool n_given;
        uint64_t nkeys; /* `keys -n`; 0: all */
        const char *limiter;
        const char *key;
        uint64_t amount; /* `budget add`: the units to add (1 to THR_BUDGET_MAX); 0 otherwise */
};

struct ctx {
        struct shm_map map; /* map.g: the section geometry checked at attach */
        struct thr_hdr hdr; /* private copy, for what status prints; never an offset or count */
        const struct opts *o;
        bool waiting;              /* a semaphore key's queued acquires are looked up */
        struct shmctl_lease *lbuf; /* `leases`: a semaphore key's records, read with its slot */
        uint32_t nl;               /* how many lbuf holds (THR_SEM_LEASES_MAX room) */
        char err[256];
};

/* shmctl.c: reading the arena (every byte untrusted: shmctl.c's comment) */
long lims_load_all(struct ctx *c, struct shmctl_lim **out);
int lim_arg(struct ctx *c, struct shmctl_lim *l);
uint64_t arena_now_ns(const struct ctx *c);
const struct thr_slot *slot_at(const struct ctx *c, const struct shmctl_lim *l, uint64_t i);
int slot_read(struct ctx *c, const struct shmctl_lim *l, const struct thr_slot *s, uint64_t now,
              struct shmctl_key *k);
int fail(struct ctx *c, int rc);

/* shmctl_sem.c: a semaphore key of slot S into K (and its leases into c->lbuf, for `leases`);
 * the units held and acquires queued over L's keys (0 or -EBADMSG); the `leases` verb. */
void sem_eval(struct ctx *c, const struct shmctl_lim *l, const struct thr_slot *s,
              struct shmctl_key *k);
int sem_totals(struct ctx *c, struct shmctl_lim *l);
int cmd_leases(struct ctx *c);

/* shmctl_budget.c: a budget key (its state word K->tat, read already, and its header in the
 * slot's aux storage AUX, which the snapshot checked to fit) into K; the AMOUNT of `budget add`
 * from S (false: not a whole number from 1 to THR_BUDGET_MAX); the `budget add` verb, the one
 * write shmctl makes (through the client library). */
void budget_eval(const struct shmctl_lim *l, const void *aux, struct shmctl_key *k);
/* shmctl_breaker.c: a breaker key (its state word K->tat, and its window's buckets in AUX, which
 * the snapshot checked to fit; NULL for none) at arena time NOW into K. */
void breaker_eval(const struct shmctl_lim *l, const void *aux, uint64_t now, struct shmctl_key *k);
bool budget_amount(const char *s, uint64_t *out);
int cmd_budget(struct ctx *c);

/* shmctl.c: the header's grace-period numbers, each read once. */
void gp_read(const struct ctx *c, struct shmctl_gp *gp);

/* shmctl_peer.c: the `readers` verb, and the `peers` verb (every live peer record, and the
 * leases naming it). */
int cmd_readers(struct ctx *c);
int cmd_peers(struct ctx *c);

/* shmctl_compose.c: the `groups` verb; the groups' count for `status` (-1: the table is not
 * valid); a key of slot S whose state word K->tat (read already) is a composed call's mark:
 * K->mark filled in (its owner's record read, bounded), its columns blanked, true (else K->mark
 * cleared, false: evaluate it by its kind). */
int cmd_groups(struct ctx *c);
long groups_count(struct ctx *c);
bool mark_eval(struct ctx *c, const struct shmctl_lim *l, const struct thr_slot *s,
               struct shmctl_key *k);

#endif
