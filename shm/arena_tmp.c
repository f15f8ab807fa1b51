/*
 * arena_tmp.c - the arena file while it is being built, and what a killed builder left behind.
 *
 * An arena is built whole, then given its name, so that no process ever opens half an arena. The
 * file it is built in must not outlive a builder that is killed (a full-size file on hugetlbfs
 * keeps its huge pages until someone removes it, which is how a pool is found exhausted "between
 * runs"). So it is, where the file system allows, an unnamed file: open(O_TMPFILE) in the arena's
 * directory, linked into place with linkat() once complete. The kernel frees it with its last
 * descriptor, however the builder dies. tmpfs has O_TMPFILE since Linux 3.11, hugetlbfs since
 * 5.5 (Debian 12's 6.1 has both); where it is missing (EOPNOTSUPP, or EISDIR from kernels that
 * do not know the flag) the file is named PATH.tmp.XXXXXXXXXXXXXXXX (16 random hex digits, not a
 * pid: builders in different pid namespaces may share a directory; O_EXCL makes a collision fail,
 * not clobber) and renamed into place without replacing anything.
 *
 * A named temporary carries its builder's liveness: the builder holds an open-file-description
 * write lock on its byte 0 from creation to rename (the kernel drops it when the builder dies),
 * so shm_arena_sweep removes exactly the temporaries whose builder is gone, holding that lock
 * itself across the unlink so no builder can be mid-way in one. A builder that finds its file
 * unlinked between its O_EXCL open and its lock (a sweep got there first) starts again with a new
 * name. After the rename the lock is dropped: byte 0 of an arena is its daemon's lock.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "shm.h"
#include "shm_internal.h"

#define TMP_TAG    ".tmp."
#define TMP_DIGITS 16

bool shm_tmp_named_only;

/* Lock (F_WRLCK) or unlock (F_UNLCK) byte 0 of FD without waiting: 0 or -errno. */
static int lock0(int fd, short type)
{
        struct flock fl = {.l_type = type, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
        return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* The directory part of PATH into DIR ("." when it has none). */
static int dir_of(const char *path, char *dir, size_t len)
{
        const char *slash = strrchr(path, '/');
        int n = !slash          ? snprintf(dir, len, ".")
                : slash == path ? snprintf(dir, len, "/")
                                : snprintf(dir, len, "%.*s", (int)(slash - path), path);
        return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* A new named temporary for PATH, locked, and still linked once locked. */
static int open_named(const char *path, mode_t mode, char *tmp, size_t tmplen)
{
        for (int tries = 0; tries < 8; tries++) {
                uint64_t r;
                if (getrandom(&r, sizeof(r), 0) != sizeof(r))
                        return -EIO;
                int n = snprintf(tmp, tmplen, "%s" TMP_TAG "%016llx", path, (unsigned long long)r);
                if (n < 0 || (size_t)n >= tmplen)
                        return -ENAMETOOLONG;
                int fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
                if (fd < 0)
                        return -errno;
                struct stat st;
                if (lock0(fd, F_WRLCK) == 0 && fstat(fd, &st) == 0 && st.st_nlink > 0)
                        return fd;
                close(fd); /* a sweep took it between our open and our lock: a new name */
        }
        return -EAGAIN;
}

int shm_tmp_open(const char *path, mode_t mode, gid_t gid, char *tmp, size_t tmplen)
{
        char dir[256];
        int fd = dir_of(path, dir, sizeof(dir));
        if (fd < 0)
                return fd;
        tmp[0] = '\0';
        fd = shm_tmp_named_only ? -1 : open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, mode);
        if (fd < 0 && !shm_tmp_named_only && errno != EOPNOTSUPP && errno != EISDIR)
                return -errno;
        if (fd < 0)
                fd = open_named(path, mode, tmp, tmplen);
        if (fd < 0)
                return fd;
        if (fchmod(fd, mode) < 0 || (gid != (gid_t)-1 && fchown(fd, (uid_t)-1, gid) < 0)) {
                int e = errno;
                shm_tmp_discard(fd, tmp);
                return -e;
        }
        return fd;
}

int shm_tmp_publish(int fd, const char *tmp, const char *path)
{
        if (tmp[0]) {
                if (renameat2(AT_FDCWD, tmp, AT_FDCWD, path, RENAME_NOREPLACE) < 0)
                        return -errno;
                lock0(fd, F_UNLCK);
                return 0;
        }
        char self[64];
        snprintf(self, sizeof(self), "/proc/self/fd/%d", fd);
        if (linkat(AT_FDCWD, self, AT_FDCWD, path, AT_SYMLINK_FOLLOW) == 0)
                return 0;
        if (errno != ENOENT)
                return -errno;
        /* no /proc: the direct form, which needs CAP_DAC_READ_SEARCH */
        return linkat(fd, "", AT_FDCWD, path, AT_EMPTY_PATH) < 0 ? -errno : 0;
}

void shm_tmp_discard(int fd, const char *tmp)
{
        if (tmp[0])
                unlink(tmp);
        close(fd);
}

/* Whether NAME is BASE.tmp. followed by exactly 16 lowercase hex digits. */
static bool tmp_name(const char *name, const char *base)
{
        size_t b = strlen(base), t = strlen(TMP_TAG);
        if (strncmp(name, base, b) || strncmp(name + b, TMP_TAG, t))
                return false;
        const char *hex = name + b + t;
        return strlen(hex) == TMP_DIGITS && strspn(hex, "0123456789abcdef") == TMP_DIGITS;
}

/* Remove entry NAME of directory DFD if it is a regular file whose builder is gone. */
static int sweep_one(int dfd, const char *dir, const char *name, shm_sweep_fn fn, void *ctx)
{
        int fd = openat(dfd, name, O_RDWR | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
                return 0;
        struct stat st;
        int removed = 0;
        if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && lock0(fd, F_WRLCK) == 0 &&
            unlinkat(dfd, name, 0) == 0) {
                removed = 1;
                if (fn) {
                        char full[512];
                        snprintf(full, sizeof(full), "%s/%s", dir, name);
                        fn(ctx, full, (uint64_t)st.st_size);
                }
        }
        close(fd); /* drops our lock: the name is gone, no builder can want it */
        return removed;
}

/* Sweep the directory of PATH for PATH's stale temporaries. Count removed, or -errno. */
static int sweep_path(const char *path, shm_sweep_fn fn, void *ctx)
{
        char dir[256];
        int rc = dir_of(path, dir, sizeof(dir));
        if (rc < 0)
                return rc;
        const char *slash = strrchr(path, '/');
        const char *base = slash ? slash + 1 : path;
        DIR *d = opendir(dir);
        if (!d)
                return errno == ENOENT ? 0 : -errno;
        int n = 0;
        for (struct dirent *e; (e = readdir(d));)
                if (tmp_name(e->d_name, base))
                        n += sweep_one(dirfd(d), dir, e->d_name, fn, ctx);
        closedir(d);
        return n;
}

int shm_arena_sweep(const struct shm_arena_spec *s, shm_sweep_fn fn, void *ctx)
{
        char huge[256], shm[256];
        int rc = shm_arena_path(s->name, s->dir,
                                s->hugepages == SHM_HUGE_OFF ? SHM_HUGE_OFF : SHM_HUGE_AUTO, huge,
                                sizeof(huge));
        if (rc < 0)
                return rc;
        int n = sweep_path(huge, fn, ctx);
        if (n < 0 || s->dir || strchr(s->name, '/'))
                return n;
        /* hugepages = auto falls back to /dev/shm when the pool is short: its builder may too */
        rc = shm_arena_path(s->name, NULL, SHM_HUGE_OFF, shm, sizeof(shm));
        if (rc < 0 || !strcmp(shm, huge))
                return rc < 0 ? rc : n;
        rc = sweep_path(shm, fn, ctx);
        return rc < 0 ? rc : n + rc;
}
