/*
 * testhook.h - points where a test can run code at an exact step of a concurrent protocol.
 *
 * Races that need a precise interleaving (a slot reused between a load and a CAS, a count
 * decremented between a repair's walk and its store) are forced, not hoped for: the test sets
 * thr_test_hook and the library calls it at the named point. Only the test builds of the
 * libraries (THR_TEST_HOOKS, targets *-hooks in CMake) contain the calls; in every other build
 * THR_HOOK expands to nothing, so production code pays nothing for them.
 */
#ifndef THR_SHM_TESTHOOK_H
#define THR_SHM_TESTHOOK_H

enum thr_hook_point {
        THR_HOOK_SECTION_ENTERED = 1, /* client: a call entered its read-side section (arg: op) */
        THR_HOOK_APPLY_BEFORE_CAS,    /* client: a decision made, before its CAS (arg: slot) */
        THR_HOOK_KEY_INSERTED,        /* client: a new key published, before its first CAS */
        THR_HOOK_RETIRE_COUNTED,      /* meta LIVE -> DEAD done, the counts not yet (arg: slot) */
        THR_HOOK_EXIT_RELEASED,       /* exit(): the exiting process gave its records back */
        THR_HOOK_CONFIG_STAGED,       /* configure: records and tables staged, not yet published */
        THR_HOOK_MAINT_META_READ,     /* maintenance read a slot's meta, not yet its state (arg:
                                       * the meta word) */
        THR_HOOK_CACHE_UPDATING,      /* client: the thread's record cache is being changed */
        THR_HOOK_REGISTRY_LOCKED,     /* client: a registration holds the registry lock */
        THR_HOOK_EVICTED_FOR_ROOM,    /* on_full = evict: the victim's state CAS done, nothing
                                       * else yet (arg: the slot) */
        THR_HOOK_SEM_GRANT_FILLED,    /* a semaphore serve filled a waiter's lease, before the CAS
                                       * that tells it (arg: the waiter's reader record) */
        THR_HOOK_SEM_GEN_TAKEN,       /* a fill: the lease's generation taken (next_gen stored),
                                       * nothing of the record written yet (arg: the waiter id it
                                       * is for, cast; NULL for a lease taken at once) */
        THR_HOOK_SEM_GRANT_CASED,     /* a serve's grant: the waiter's word CASed to GRANTED, not
                                       * yet woken (arg: the waiter's reader record) */
        THR_HOOK_SEM_GRANT_WOKEN,     /* a serve's grant: the waiter woken, the serve not yet on
                                       * (arg: the waiter's reader record) */
        THR_HOOK_SEM_REGRANT_FOUND,   /* a serve found a record naming the head's wait (its granter
                                       * died before its CAS), before its own CAS (arg: the
                                       * waiter's reader record) */
        THR_HOOK_BUDGET_JOURNALED,    /* a budget grant: its journal written, nothing spent yet
                                       * (arg: the waiter's reader record) */
        THR_HOOK_BUDGET_SPENT,        /* a budget grant: the balance CASed down, the waiter not
                                       * yet told (arg: the waiter's reader record) */
        THR_HOOK_BUDGET_GRANTED,      /* a budget grant: the waiter's word CASed to GRANTED, the
                                       * journal not yet cleared (arg: its reader record) */
        THR_HOOK_COMPOSE_JOURNALED,   /* a composed call: its journal written (UNDECIDED), no
                                       * member marked yet (arg: the journal) */
        THR_HOOK_COMPOSE_MARKED,      /* a composed call marked one more member (arg: its journal
                                       * entry) */
        THR_HOOK_COMPOSE_DECIDED,     /* a composed call's status CASed to COMMIT or ABORT, no
                                       * mark replaced yet (arg: the journal) */
        THR_HOOK_COMPOSE_SETTLED_ONE, /* a composed call replaced one mark (arg: the entry) */
        THR_HOOK_COMPOSE_ABORTING,    /* a helper is about to abort an undecided call (arg: the
                                       * journal) */
        THR_HOOK_TSC_ANCHOR_READ,     /* a TSC re-anchor read CLOCK_MONOTONIC, not yet the cycle
                                       * count that goes with it (clock.c) */
        THR_HOOK_CLOCK_READ,          /* client: a call read its clock, not yet the key's
                                       * state: a key handle's call in op_begin, before its
                                       * look; the others in op_apply, after the probe; and
                                       * each retry's (arg: op) */
        THR_HOOK_RECLAIM_CHECKED,     /* maintenance found a retired slot's meta unchanged and
                                       * its period done, before its CAS DEAD -> FREE (arg: the
                                       * meta word) */
        THR_HOOK_REACH_RAISED,        /* an insert raised its home's reach, the slot not yet BUSY
                                       * (arg: the slot it will take) */
        THR_HOOK_BRK_BEFORE_CAS,      /* a breaker allow or report decided, before its CAS of the
                                       * state word (arg: the slot) */
        THR_HOOK_BRK_COUNTED,         /* a breaker report added to its window bucket, the state
                                       * word not yet read (arg: the slot) */
        THR_HOOK_EXPIRING_INLINE,     /* an insert is about to CAS an idle key it met on its probe
                                       * path from the state it read to DEAD (arg: the slot) */
        THR_HOOK_EXPIRED_INLINE,      /* that CAS done, the slot not yet retired (arg: the slot) */
        THR_HOOK_MAINT_SEGMENT,       /* maintenance holds a shard's lock for a segment, nothing
                                       * of it done yet (arg: the shard) */
};

#ifdef THR_TEST_HOOKS
extern void (*thr_test_hook)(enum thr_hook_point point, void *arg);
#define THR_HOOK(point, arg)                                                                       \
        do {                                                                                       \
                if (thr_test_hook)                                                                 \
                        thr_test_hook((point), (arg));                                             \
        } while (0)
#else
#define THR_HOOK(point, arg) ((void)0)
#endif

#endif
