/*
 * shm_internal.h - helpers shared by the arena's source files, not used outside shm/.
 */
#ifndef THR_SHM_INTERNAL_H
#define THR_SHM_INTERNAL_H

#include "shm.h"

struct geometry {
        uint32_t nshards, shard_slots;
        uint64_t shard_max, bytes;
        uint64_t capacity;   /* the spec's hard cap on live keys */
        uint32_t aux_stride; /* per-slot storage (a window's log), or 0 */
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

/*
 * arena_tmp.c: the file an arena is built in, before it has its name. shm_tmp_open - an unnamed
 * file (O_TMPFILE) in PATH's directory, or where the file system has none a named one, PATH.tmp.
 * and 16 hex digits, in TMP (TMPLEN bytes; TMP is "" for an unnamed file), locked as its
 * builder's. Mode MODE, group GID ((gid_t)-1: unchanged). Returns the descriptor or -errno.
 * shm_tmp_publish - give the complete file FD the name PATH, never replacing a file there
 * (-EEXIST). shm_tmp_discard - close FD and remove the named file TMP if it has one.
 * shm_tmp_named_only - tests: take the named path, as on a file system without O_TMPFILE.
 */
int shm_tmp_open(const char *path, mode_t mode, gid_t gid, char *tmp, size_t tmplen);
int shm_tmp_publish(int fd, const char *tmp, const char *path);
void shm_tmp_discard(int fd, const char *tmp);
extern bool shm_tmp_named_only;
int shm_limiter_compatible(const struct shm_lim_snap *s, const struct thr_params *p,
                           const struct geometry *g, char *err, size_t errlen);
/* State of directory entry I (< m->g.dir_count), read once. */
uint32_t shm_dir_entry_state(const struct shm_map *m, uint32_t i);

#endif
