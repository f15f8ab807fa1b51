/*
 * shm_internal.h - helpers shared by the arena's source files, not used outside shm/.
 */
#ifndef THR_SHM_INTERNAL_H
#define THR_SHM_INTERNAL_H

#include "shm.h"

struct geometry {
        uint32_t nshards, shard_slots;
        uint64_t shard_max, bytes;
        uint64_t capacity; /* the spec's hard cap on live keys */
};

int shm_seterr(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
int shm_table_geometry(const struct shm_limiter_spec *s, struct geometry *g);
int shm_table_init(void *base, uint64_t off, const struct shm_limiter_spec *s,
                   const struct geometry *g);
int shm_read_boot_id(uint8_t out[16]);
int64_t shm_timens_mono_offset(void);
int shm_arena_finish(struct shm_map *m, const struct shm_arena_spec *s, const char *path, char *err,
                     size_t errlen);
int shm_limiter_compatible(const struct shm_lim_snap *s, const struct thr_params *p,
                           const struct geometry *g, char *err, size_t errlen);
/* State of directory entry I (< m->g.dir_count), read once. */
uint32_t shm_dir_entry_state(const struct shm_map *m, uint32_t i);

#endif
