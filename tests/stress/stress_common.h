/*
 * stress_common.h - what the multi-process stress programs share: their random numbers, forking
 * workers tied to the parent, and walking a key table for its live keys.
 */
#ifndef THR_STRESS_COMMON_H
#define THR_STRESS_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "shm.h"

/* xorshift64: the workers' and the killers' random numbers (seeded, replayable). */
static inline uint64_t stress_rng_next(uint64_t *s)
{
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        return *s;
}

/*
 * fork(), the child dying with the parent (PR_SET_PDEATHSIG), so a killed run never leaves
 * workers spinning. Returns as fork() does; a child that cannot be tied exits 99.
 */
pid_t stress_fork_tied(void);

/* A live key copied out of a slot, NUL-terminated. */
struct stress_key {
        uint32_t len;
        char key[THR_KEY_MAX + 1];
};

/*
 * Walk the NSLOTS slots at SLOTS: count them by status into COUNT[4] (enum thr_slot_status) and,
 * when KEYS is not NULL (room for NSLOTS), copy the live keys into it, sorted. Returns the number
 * of live keys.
 */
size_t stress_walk(const struct thr_slot *slots, uint64_t nslots, uint64_t count[4],
                   struct stress_key *keys);

/* Keys of sorted KEYS[0..N) that equal the one before (two live slots for one key). */
size_t stress_duplicates(const struct stress_key *keys, size_t n, void (*each)(const char *key));

#endif
