/*
 * readers.h - what clients and the daemon share about reader records: their liveness lock, the
 * judgement of whether an owner is gone, membarrier registration. The argument is at the top of
 * reclaim.c and readers.c.
 */
#ifndef THR_SHM_READERS_H
#define THR_SHM_READERS_H

#include "arena.h"

/*
 * Reader liveness: record IDX is held by an open-file-description write lock on byte
 * THR_LOCK_READERS + IDX of the arena file. shm_reader_lock takes it on FD (0, -EAGAIN when held
 * elsewhere, -errno); shm_reader_unlock drops it; shm_reader_alive tests it (1 held, 0 free,
 * -errno; works on a read-only descriptor).
 */
int shm_reader_lock(int fd, uint32_t idx);
void shm_reader_unlock(int fd, uint32_t idx);
int shm_reader_alive(int fd, uint32_t idx);

/*
 * shm_reader_gone - whether the owner of record R (index IDX, owner word set) is gone: its
 * liveness lock is free, or it is held only by a descriptor that outlived the process whose pid
 * the record carries (a _Fork child's copy: readers.c). 1 gone, 0 alive or unknown, -errno.
 * shm_pid_gone - whether process PID (in this pid namespace) has exited, zombie included:
 * 1 gone, 0 alive or not a pid.
 */
int shm_reader_gone(int fd, const struct thr_reader *r, uint32_t idx);
int shm_pid_gone(uint64_t pid);

/*
 * shm_membarrier_register - a client process registers for MEMBARRIER_CMD_GLOBAL_EXPEDITED; when
 * it cannot, it sets the header's mb_fallback so the daemon uses MEMBARRIER_CMD_GLOBAL.
 * Returns 0 or -errno (the fallback was set).
 */
int shm_membarrier_register(struct thr_hdr *h);

#endif
