/*
 * arena.c - finding, attaching and validating an arena file: what every process does (creating
 * and configuring one is the daemon's, arena_build.c).
 *
 * Validation treats the arena as untrusted input: every client can write it. Each offset, count
 * and length is checked against the mapping before use, with 128-bit arithmetic where a product
 * could wrap. The daemon and shmctl call shm_arena_valid before trusting anything.
 */
#include <errno.h>
#include <fcntl.h>
#include <hugetlbfs.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "shm.h"
#include "shm_internal.h"

#define HUGE_2M (2ull << 20)

int shm_seterr(char *err, size_t errlen, int rc, const char *fmt, ...)
{
        if (err && errlen) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(err, errlen, fmt, ap);
                va_end(ap);
        }
        return rc;
}

/* ---------------------------------------------------------------- paths */

static const char *hugetlbfs_dir(void)
{
        long sizes[8];
        int n = gethugepagesizes(sizes, 8);
        for (int i = 0; i < n; i++)
                if ((uint64_t)sizes[i] == HUGE_2M)
                        return hugetlbfs_find_path_for_size(sizes[i]);
        return NULL;
}

static int join(char *out, size_t outlen, const char *dir, const char *name)
{
        int n = snprintf(out, outlen, "%s/throttle.%s", dir, name);
        return n < 0 || (size_t)n >= outlen ? -ENAMETOOLONG : 0;
}

int shm_arena_path(const char *name, const char *dir, enum shm_hugepages huge, char *out,
                   size_t outlen)
{
        if (strchr(name, '/'))
                return snprintf(out, outlen, "%s", name) >= (int)outlen ? -ENAMETOOLONG : 0;
        if (dir)
                return join(out, outlen, dir, name);
        const char *hd = huge == SHM_HUGE_OFF ? NULL : hugetlbfs_dir();
        if (!hd && huge == SHM_HUGE_REQUIRE)
                return -ENOENT;
        return join(out, outlen, hd ? hd : "/dev/shm", name);
}

int shm_arena_find(const char *name, char *out, size_t outlen)
{
        if (strchr(name, '/'))
                return shm_arena_path(name, NULL, SHM_HUGE_OFF, out, outlen);
        const char *hd = hugetlbfs_dir();
        if (hd && join(out, outlen, hd, name) == 0 && access(out, F_OK) == 0)
                return 0;
        int rc = join(out, outlen, "/dev/shm", name);
        if (rc < 0)
                return rc;
        return access(out, F_OK) == 0 ? 0 : -ENOENT;
}

/* ---------------------------------------------------------------- clock identity */

int shm_read_boot_id(uint8_t out[16])
{
        char buf[64];
        FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");
        if (!f)
                return -errno;
        char *ok = fgets(buf, sizeof(buf), f);
        fclose(f);
        if (!ok)
                return -EIO;
        int j = 0;
        for (char *c = buf; *c && j < 32; c++) {
                int v = *c >= '0' && *c <= '9'   ? *c - '0'
                        : *c >= 'a' && *c <= 'f' ? *c - 'a' + 10
                                                 : -1;
                if (v < 0)
                        continue;
                out[j / 2] = (uint8_t)(j % 2 ? out[j / 2] | v : v << 4);
                j++;
        }
        return j == 32 ? 0 : -EIO;
}

/* CLOCK_MONOTONIC offset of this process's time namespace (0 without time namespaces). */
int64_t shm_timens_mono_offset(void)
{
        FILE *f = fopen("/proc/self/timens_offsets", "re");
        if (!f)
                return 0;
        char line[128];
        int64_t off = 0;
        while (fgets(line, sizeof(line), f)) {
                long long s, ns;
                if (sscanf(line, "monotonic %lld %lld", &s, &ns) == 2)
                        off = s * 1000000000ll + ns;
        }
        fclose(f);
        return off;
}

uint64_t shm_pidns_ino(void)
{
        struct stat st;
        return stat("/proc/self/ns/pid", &st) == 0 ? (uint64_t)st.st_ino : 0;
}

int shm_arena_check_pidns(const struct thr_hdr *h, char *err, size_t errlen)
{
        uint64_t mine = shm_pidns_ino();
        if (h->pidns_ino == 0 || mine == h->pidns_ino)
                return 0;
        return shm_seterr(err, errlen, -EXDEV,
                          "arena was created in another pid namespace (%" PRIu64 ", here %" PRIu64
                          "); its insert mutexes cannot be shared across pid namespaces yet",
                          h->pidns_ino, mine);
}

int shm_arena_check_clock(const struct thr_hdr *h, char *err, size_t errlen)
{
        if (h->clock_id == THR_CLOCK_MANUAL)
                return 0;
        uint8_t boot[16];
        if (shm_read_boot_id(boot) < 0)
                return shm_seterr(err, errlen, -ESTALE, "cannot read this host's boot id");
        if (memcmp(boot, h->boot_id, 16) != 0)
                return shm_seterr(
                    err, errlen, -ESTALE,
                    "arena was created during another boot: its CLOCK_MONOTONIC times "
                    "mean nothing now");
        if (shm_timens_mono_offset() != h->timens_mono_ns)
                return shm_seterr(err, errlen, -ESTALE,
                                  "arena was created in another time namespace (CLOCK_MONOTONIC "
                                  "offset %" PRId64 " ns there, %" PRId64 " ns here)",
                                  h->timens_mono_ns, shm_timens_mono_offset());
        return 0;
}

/* ---------------------------------------------------------------- validation */

/*
 * Every check below reads each field of the arena once, into a private copy, and checks the copy:
 * a client may rewrite a field between the check and the use, so a field is never fetched again
 * after it was checked. Bounds are checked against LEN, the size of this process's mapping.
 */

static bool in_range(uint64_t off, uint64_t size, uint64_t lo, uint64_t hi)
{
        return off >= lo && off <= hi && size <= hi - off;
}

/* The heap bounds as this process may use them: from one read of the header, within LEN. */
static void heap_bounds(const void *base, size_t len, uint64_t *lo, uint64_t *hi)
{
        const struct thr_hdr *h = base;
        uint64_t off, end;
        memcpy(&off, (const char *)h + offsetof(struct thr_hdr, heap_off), sizeof(off));
        memcpy(&end, (const char *)h + offsetof(struct thr_hdr, heap_end), sizeof(end));
        *lo = off < THR_HDR_SIZE ? THR_HDR_SIZE : off;
        *hi = end > len ? len : end;
}

/* A window's record as window_make (params.c) writes it: times in ns, N within the log's bound. */
static bool window_ok(const struct thr_params *p)
{
        return p->k == 1 && p->t_units == 1 && p->rate_n >= 1 && p->rate_n <= THR_WINDOW_MAX &&
               p->burst == p->rate_n && p->initial == p->rate_n && p->bt_units == 0 &&
               p->period_ns >= 1 && p->period_ns <= THR_HORIZON_NS &&
               p->max_reserve_units <= THR_HORIZON_NS && (p->flags & ~THR_PARAM_SERIALIZE) == 0;
}

static bool sem_ok(const struct thr_params *p)
{
        return p->k == 1 && p->t_units == 1 && p->rate_n >= 1 && p->rate_n <= THR_SEM_MAX &&
               p->burst == p->rate_n && p->initial == p->rate_n && p->bt_units == 0 &&
               p->period_ns == 0 && p->max_reserve_units == 0 && p->flags == 0 && p->leases >= 1 &&
               p->leases <= THR_SEM_LEASES_MAX && p->level < THR_SEM_LEVELS;
}

static bool budget_ok(const struct thr_params *p)
{
        return p->k == 1 && p->t_units == 1 && p->burst == THR_BUDGET_MAX &&
               p->initial <= THR_BUDGET_MAX && p->rate_n == 0 && p->period_ns == 0 &&
               p->bt_units == 0 && p->max_reserve_units == 0 && p->flags == 0 && p->leases == 0 &&
               p->level == 0 && p->on_full != THR_FULL_ALLOW;
}

static bool gcra_ok(const struct thr_params *p)
{
        __uint128_t bt = (__uint128_t)p->burst * p->t_units;
        return p->k != 0 && p->k <= THR_MAX_K && p->t_units != 0 && p->burst != 0 &&
               p->initial <= p->burst && bt == p->bt_units &&
               (p->flags & ~(THR_PARAM_CLOCK_MASK | THR_PARAM_ROUNDED)) == 0 &&
               THR_PARAM_CLOCK(p->flags) != THR_CLOCK_READ_AUTO &&
               shm_params_range_ok(p->burst, p->t_units, p->max_reserve_units, p->k);
}

static int params_check(const struct thr_params *p, uint64_t off, char *err, size_t errlen)
{
        bool kind_ok = p->kind == THR_KIND_GCRA        ? gcra_ok(p)
                       : p->kind == THR_KIND_WINDOW    ? window_ok(p)
                       : p->kind == THR_KIND_SEMAPHORE ? sem_ok(p)
                       : p->kind == THR_KIND_BUDGET    ? budget_ok(p)
                       : p->kind == THR_KIND_BREAKER   ? shm_brk_params_ok(p)
                                                       : false;
        if (!kind_ok || p->size != sizeof(*p) || p->on_full > THR_FULL_EVICT ||
            p->idle_ttl_ns > THR_HORIZON_NS || p->lock_wait_ns > THR_LOCK_WAIT_MAX_NS)
                return shm_seterr(err, errlen, -EBADMSG,
                                  "parameter record at %" PRIu64 " is inconsistent", off);
        return 0;
}

/* Check the record at OFF and copy it to *OUT (when not NULL). */
static int params_get(const void *base, size_t len, uint64_t off, struct thr_params *out, char *err,
                      size_t errlen)
{
        uint64_t lo, hi;
        heap_bounds(base, len, &lo, &hi);
        if (off % 8 || !in_range(off, sizeof(struct thr_params), lo, hi))
                return shm_seterr(err, errlen, -EBADMSG,
                                  "parameter record offset %" PRIu64 " is outside the heap", off);
        struct thr_params p;
        memcpy(&p, shm_at(base, off), sizeof(p)); /* one snapshot: a writer may change it */
        int rc = params_check(&p, off, err, errlen);
        if (rc == 0 && out)
                *out = p;
        return rc;
}

int shm_params_valid(const void *base, size_t len, uint64_t off, char *err, size_t errlen)
{
        return params_get(base, len, off, NULL, err, errlen);
}

static int table_check(const struct thr_table *t, uint64_t lo, uint64_t hi, uint64_t off, char *err,
                       size_t errlen)
{
        __uint128_t nslots = (__uint128_t)t->nshards * t->shard_slots;
        __uint128_t slot_bytes = nslots * (THR_SLOT_SIZE + (__uint128_t)t->aux_stride);
        __uint128_t shard_bytes = (__uint128_t)t->nshards * sizeof(struct thr_shard);
        if (t->nshards == 0 || t->nshards > THR_MAX_SHARDS || (t->nshards & (t->nshards - 1)) ||
            t->shard_slots == 0 || t->shard_max == 0 || t->shard_max > t->shard_slots ||
            t->capacity == 0 || t->shards_off % THR_ALIGN || t->slots_off % THR_ALIGN ||
            t->aux_stride % THR_ALIGN || t->aux_stride > shm_window_stride(THR_WINDOW_MAX) ||
            slot_bytes > hi || shard_bytes > hi ||
            !in_range(t->shards_off, (uint64_t)shard_bytes, lo, hi) ||
            !in_range(t->slots_off, (uint64_t)slot_bytes, lo, hi))
                return shm_seterr(err, errlen, -EBADMSG,
                                  "table at %" PRIu64 " has an impossible geometry or offsets",
                                  off);
        return 0;
}

static int table_get(const void *base, size_t len, uint64_t off, struct thr_table *out, char *err,
                     size_t errlen)
{
        uint64_t lo, hi;
        heap_bounds(base, len, &lo, &hi);
        if (off % THR_ALIGN || !in_range(off, sizeof(struct thr_table), lo, hi))
                return shm_seterr(err, errlen, -EBADMSG,
                                  "table offset %" PRIu64 " is outside the heap", off);
        struct thr_table t;
        memcpy(&t, shm_at(base, off), sizeof(t));
        int rc = table_check(&t, lo, hi, off, err, errlen);
        if (rc == 0 && out)
                *out = t;
        return rc;
}

int shm_table_valid(const void *base, size_t len, uint64_t off, char *err, size_t errlen)
{
        return table_get(base, len, off, NULL, err, errlen);
}

/* Check a private copy H of the header against the mapping size LEN; fill *G from it. */
static int hdr_check(const struct thr_hdr *h, size_t len, struct shm_geom *g, char *err,
                     size_t errlen)
{
        if (len < THR_HDR_SIZE || h->magic != THR_MAGIC)
                return shm_seterr(err, errlen, -EBADMSG, "not a throttle arena (bad magic)");
        if (h->major != THR_LAYOUT_MAJOR)
                return shm_seterr(err, errlen, -EPROTONOSUPPORT,
                                  "arena layout version %u.%u, this program reads %u.x", h->major,
                                  h->minor, THR_LAYOUT_MAJOR);
        if (h->hdr_size != THR_HDR_SIZE || h->arena_size != len ||
            (h->clock_id != THR_CLOCK_MONOTONIC && h->clock_id != THR_CLOCK_MANUAL) ||
            (h->backing != THR_BACKING_HUGETLBFS && h->backing != THR_BACKING_SHM) ||
            memchr(h->name, 0, sizeof(h->name)) == NULL)
                return shm_seterr(err, errlen, -EBADMSG,
                                  "arena header is corrupt (sizes, clock, backing or name)");
        __uint128_t dir_end = h->dir_off + (__uint128_t)h->dir_count * THR_DIR_ENTRY_SIZE;
        __uint128_t rd_end = h->reader_off + (__uint128_t)h->reader_count * THR_READER_SIZE;
        /* the counter rows: exactly the stride their directory needs (a writer indexes a row by
         * the limiter's entry), between the readers and the heap */
        __uint128_t lc_end = h->lcount_off + (__uint128_t)h->reader_count * h->lcount_stride;
        uint64_t top = h->heap_top;
        if (h->dir_off < THR_HDR_SIZE || h->dir_off % THR_ALIGN || h->dir_count == 0 ||
            h->reader_count > THR_MAX_READERS || dir_end > h->reader_off ||
            h->reader_off % THR_ALIGN || rd_end > h->lcount_off || h->lcount_off % THR_ALIGN ||
            h->lcount_stride != THR_LCOUNT_STRIDE(h->dir_count) || lc_end > h->heap_off ||
            h->heap_off > h->heap_end || h->heap_end != len || top < h->heap_off ||
            top > h->heap_end)
                return shm_seterr(err, errlen, -EBADMSG, "arena section offsets are corrupt");
        *g = (struct shm_geom){.dir_off = h->dir_off,
                               .dir_count = h->dir_count,
                               .reader_off = h->reader_off,
                               .reader_count = h->reader_count,
                               .lcount_off = h->lcount_off,
                               .lcount_stride = h->lcount_stride,
                               .heap_off = h->heap_off,
                               .heap_end = h->heap_end,
                               .heap_top = top};
        return 0;
}

/* Copy of directory entry I (state, name, offsets: one read each) from a checked geometry. */
static void entry_copy(const void *base, const struct shm_geom *g, uint32_t i,
                       struct shm_lim_snap *s)
{
        const struct thr_dir_entry *de = (const struct thr_dir_entry *)shm_at(base, g->dir_off) + i;
        s->idx = i;
        s->state = atomic_load_explicit(&de->state, memory_order_acquire);
        memcpy(s->name, de->name, sizeof(s->name));
        s->params_off = atomic_load_explicit(&de->params_off, memory_order_acquire);
        s->table_off = de->table_off;
}

static int snap_fill(const void *base, size_t len, struct shm_lim_snap *s, char *err, size_t errlen)
{
        if (memchr(s->name, 0, sizeof(s->name)) == NULL)
                return shm_seterr(err, errlen, -EBADMSG, "limiter %u has no valid name", s->idx);
        int rc = params_get(base, len, s->params_off, &s->params, err, errlen);
        if (rc == 0)
                rc = table_get(base, len, s->table_off, &s->table, err, errlen);
        if (rc == 0 && s->params.kind == THR_KIND_WINDOW &&
            s->table.aux_stride < shm_window_stride(s->params.rate_n))
                rc = shm_seterr(err, errlen, -EBADMSG,
                                "limiter %u: a window of %" PRIu64 " units does not fit its "
                                "table's %u-byte logs",
                                s->idx, s->params.rate_n, s->table.aux_stride);
        if (rc == 0 && s->params.kind == THR_KIND_BUDGET && s->table.aux_stride < THR_BUDGET_HDR)
                rc = shm_seterr(err, errlen, -EBADMSG,
                                "limiter %u: a budget key's header does not fit its table's "
                                "%u-byte keys",
                                s->idx, s->table.aux_stride);
        if (rc == 0 && s->params.kind == THR_KIND_BREAKER && s->table.aux_stride < THR_BRK_AUX)
                rc = shm_seterr(err, errlen, -EBADMSG,
                                "limiter %u: a breaker key's window does not fit its table's "
                                "%u-byte keys",
                                s->idx, s->table.aux_stride);
        if (rc == 0 && s->params.kind == THR_KIND_SEMAPHORE &&
            s->table.aux_stride < shm_sem_stride(s->params.leases))
                rc = shm_seterr(err, errlen, -EBADMSG,
                                "limiter %u: %" PRIu64 " leases a key do not fit its table's "
                                "%u-byte keys",
                                s->idx, s->params.leases, s->table.aux_stride);
        return rc;
}

static int arena_check(const void *base, size_t len, struct shm_geom *g, char *err, size_t errlen)
{
        if (len < THR_HDR_SIZE)
                return shm_seterr(err, errlen, -EBADMSG, "file too small to be an arena");
        static_assert(sizeof(struct thr_hdr) == THR_HDR_SIZE, "header copy size");
        struct thr_hdr h;
        memcpy(&h, base, sizeof(h));
        int rc = hdr_check(&h, len, g, err, errlen);
        for (uint32_t i = 0; rc == 0 && i < g->dir_count; i++) {
                struct shm_lim_snap s;
                entry_copy(base, g, i, &s);
                if (s.state == THR_DIR_LIVE)
                        rc = snap_fill(base, len, &s, err, errlen);
        }
        return rc;
}

int shm_arena_valid(const void *base, size_t len, char *err, size_t errlen)
{
        struct shm_geom g;
        return arena_check(base, len, &g, err, errlen);
}

int shm_dir_snapshot(const struct shm_map *m, uint32_t idx, struct shm_lim_snap *out)
{
        if (idx >= m->g.dir_count)
                return -EINVAL;
        entry_copy(m->base, &m->g, idx, out);
        if (out->state != THR_DIR_LIVE && out->state != THR_DIR_RETIRED)
                return -ENOENT;
        return snap_fill(m->base, m->size, out, NULL, 0);
}

int shm_dir_find(const struct shm_map *m, const char *name)
{
        return shm_dir_find_state(m, name, THR_DIR_LIVE);
}

int shm_dir_find_state(const struct shm_map *m, const char *name, uint32_t state)
{
        for (uint32_t i = 0; i < m->g.dir_count; i++) {
                struct shm_lim_snap s;
                entry_copy(m->base, &m->g, i, &s);
                if (s.state != state || strncmp(s.name, name, sizeof(s.name)) != 0)
                        continue;
                return snap_fill(m->base, m->size, &s, NULL, 0) < 0 ? -EBADMSG : (int)i;
        }
        return -ENOENT;
}

/* ---------------------------------------------------------------- attach */

int shm_arena_attach(const char *path, bool writable, struct shm_map *out, char *err, size_t errlen)
{
        memset(out, 0, sizeof(*out));
        out->fd = -1;
        if (snprintf(out->path, sizeof(out->path), "%s", path) >= (int)sizeof(out->path))
                return shm_seterr(err, errlen, -ENAMETOOLONG, "arena path too long: %s", path);
        int fd = open(path, (writable ? O_RDWR : O_RDONLY) | O_CLOEXEC);
        if (fd < 0)
                return shm_seterr(err, errlen, -errno, "cannot open arena %s: %s", path,
                                  strerror(errno));
        struct stat st;
        if (fstat(fd, &st) < 0 || st.st_size < THR_HDR_SIZE) {
                close(fd);
                return shm_seterr(err, errlen, -EBADMSG, "%s is too small to be an arena", path);
        }
        int prot = PROT_READ | (writable ? PROT_WRITE : 0);
        void *base = mmap(NULL, (size_t)st.st_size, prot, MAP_SHARED, fd, 0);
        if (base == MAP_FAILED) {
                int e = errno;
                close(fd);
                return shm_seterr(err, errlen, -e, "cannot map arena %s: %s", path, strerror(e));
        }
        out->base = base;
        out->size = (size_t)st.st_size;
        out->fd = fd;
        out->writable = writable;
        int rc = arena_check(base, out->size, &out->g, err, errlen);
        if (rc < 0)
                shm_arena_detach(out);
        return rc;
}

void shm_arena_detach(struct shm_map *m)
{
        if (m->base)
                munmap(m->base, m->size);
        if (m->fd >= 0 && m->base)
                close(m->fd);
        m->base = NULL;
        m->fd = -1;
}

/* ---------------------------------------------------------------- daemon lock */

int shm_daemon_alive(const struct shm_map *m, pid_t *holder)
{
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
        if (fcntl(m->fd, F_OFD_GETLK, &fl) < 0)
                return -errno;
        if (fl.l_type == F_UNLCK)
                return 0;
        if (holder)
                *holder =
                    (pid_t)atomic_load_explicit(&shm_hdr(m)->daemon_pid, memory_order_relaxed);
        return 1;
}

/* ---------------------------------------------------------------- helpers for reconfiguration */

uint32_t shm_dir_entry_state(const struct shm_map *m, uint32_t i)
{
        struct shm_lim_snap s;
        entry_copy(m->base, &m->g, i, &s);
        return s.state;
}
