/*
 * readers.c - what clients and the daemon share about reader records: the per-record liveness
 * lock and membarrier registration. The argument is at the top of reclaim.c.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "shm.h"

static int ofd_lock(int fd, uint32_t idx, short type, int cmd)
{
        struct flock fl = {.l_type = type,
                           .l_whence = SEEK_SET,
                           .l_start = (off_t)(THR_LOCK_READERS + idx),
                           .l_len = 1};
        if (fcntl(fd, cmd, &fl) < 0)
                return -errno;
        return cmd == F_OFD_GETLK ? fl.l_type != F_UNLCK : 0;
}

int shm_reader_lock(int fd, uint32_t idx)
{
        int rc = ofd_lock(fd, idx, F_WRLCK, F_OFD_SETLK);
        return rc == -EACCES ? -EAGAIN : rc;
}

void shm_reader_unlock(int fd, uint32_t idx)
{
        ofd_lock(fd, idx, F_UNLCK, F_OFD_SETLK);
}

int shm_reader_alive(int fd, uint32_t idx)
{
        return ofd_lock(fd, idx, F_WRLCK, F_OFD_GETLK);
}

int shm_membarrier_register(struct thr_hdr *h)
{
        if (syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0)
                return 0;
        int rc = -errno;
        atomic_store_explicit(&h->mb_fallback, 1, memory_order_relaxed);
        return rc;
}
