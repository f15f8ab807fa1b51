/*
 * readers.c - what clients and the daemon share about reader records: the per-record liveness
 * lock, the judgement of whether a record's owner is gone, and membarrier registration. The
 * argument is at the top of reclaim.c.
 *
 * Liveness is the record's open-file-description lock (dropped by the kernel when the last
 * descriptor of that description closes), with one hole: a child made by _Fork() or a raw clone
 * runs no fork handler, so it keeps its parent's descriptor, and the lock outlives a parent that
 * is killed. A held lock is therefore checked against the owner's pid, written in the record by
 * its owner (every process of an arena shares one pid namespace: layout.h): if that process has
 * exited, the owner is gone whoever still holds the description. A pid reused meanwhile by
 * another process makes the record look alive until that one exits too: late, never early.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/membarrier.h>
#include <poll.h>
#include <signal.h>
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

#ifndef __NR_pidfd_open
#define __NR_pidfd_open 434
#endif

int shm_pid_gone(uint64_t pid)
{
        if (pid == 0 || pid > INT_MAX)
                return 0; /* not written yet, or not a pid: cannot tell, so not gone */
        int fd = (int)syscall(__NR_pidfd_open, (pid_t)pid, 0);
        if (fd < 0) {
                if (errno == ESRCH)
                        return 1;
                /* no pidfd (kernel < 5.3, seccomp): a zombie then counts as alive */
                return kill((pid_t)pid, 0) < 0 && errno == ESRCH;
        }
        /* readable once the process has exited, zombie included */
        struct pollfd pfd = {.fd = fd, .events = POLLIN};
        int gone = poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN);
        close(fd);
        return gone;
}

int shm_reader_gone(int fd, const struct thr_reader *r, uint32_t idx)
{
        int held = shm_reader_alive(fd, idx);
        if (held < 0)
                return held;
        if (held == 0)
                return 1;
        return shm_pid_gone(atomic_load_explicit(&r->pid, memory_order_relaxed));
}

int shm_membarrier_register(struct thr_hdr *h)
{
        if (syscall(__NR_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0)
                return 0;
        int rc = -errno;
        /*
         * The flag must be seen by every grace period that could miss this process's sections:
         * store, then a full fence before any section (pairs with the fence in shm_gp_start
         * between the counter's increment and the flag's load). Either the daemon's fence comes
         * first, and this process's later sections read the new counter (and see the eviction),
         * or this one does, and the daemon reads the flag and uses the global membarrier.
         */
        atomic_store_explicit(&h->mb_fallback, 1, memory_order_relaxed);
        atomic_thread_fence(memory_order_seq_cst);
        return rc;
}
