/*
 * arena_build.c - building a new arena and reconfiguring an attached one (daemon side).
 *
 * Only one process builds or configures an arena at a time: creation works on a private
 * temporary file, and configuration is done by the daemon holding the arena lock. Readers are
 * clients, which only ever see complete objects: a directory entry's fields are written before
 * its state is release-stored LIVE, and a parameter record is complete before params_off is
 * release-stored to point at it (clients acquire-load both). Retiring a limiter is one release
 * store of its state (RETIRED), which clients load on every call with the record offset; nothing
 * of it is freed, so a client still inside a call on it finishes on intact memory. Reviving
 * stores the new record's offset first, then LIVE, so a client that sees LIVE again uses a whole
 * record (the new one, or the kept old one).
 *
 * Replaced records. A GCRA limiter's record that a publish replaces is retired with the grace-
 * period tag of that moment and rewritten for another GCRA record only once a grace period
 * covers the tag (the pool below): clients load params_off and read the record inside their
 * read-side section (libclient/client.c), so a client that could have loaded the old offset has
 * left its section by then; a client stopped inside one holds the period, and the pool waits
 * (it grows, it never drops a record). Only offsets this daemon published are retired (the
 * directory is client-writable), and only GCRA records are reused: the other kinds' readers copy
 * their record outside a section and refuse any kind but theirs, which a reused record never
 * becomes. The daemon's own readers of records (its /metrics scrape, its clock log) take the
 * same mutex as its publishes; shmctl, read-only, may show a record being rewritten once. A
 * daemon killed at any point leaves every published record whole (a record is written before
 * params_off points at it); what its pool held is leaked, 128 bytes a record.
 */
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "shm.h"
#include "shm_internal.h"
#include "testhook.h"

#define HUGETLBFS_MAGIC_ 0x958458f6
#define HUGE_2M          (2ull << 20)

/* ---------------------------------------------------------------- sizing */

static uint64_t align_up(uint64_t v, uint64_t a)
{
        return (v + a - 1) / a * a;
}

static uint64_t limiter_bytes(const struct geometry *g)
{
        return align_up(sizeof(struct thr_params), THR_ALIGN) + align_up(g->bytes, THR_ALIGN);
}

static int size_overflow(const struct shm_arena_spec *s, char *err, size_t errlen)
{
        return shm_seterr(err, errlen, -EOVERFLOW,
                          "arena '%s': spare %" PRIu64 " bytes plus its tables exceed the largest "
                          "file size",
                          s->name, s->spare_bytes);
}

/* The arena's file size: FIXED (header, directory, readers) + HEAP, rounded up to ALIGN, or
 * -EOVERFLOW when that passes the largest file size (off_t). */
static int arena_size(const struct shm_arena_spec *s, uint64_t fixed, uint64_t heap, uint64_t align,
                      uint64_t *size, char *err, size_t errlen)
{
        uint64_t sum;
        if (__builtin_add_overflow(fixed, heap, &sum) || sum > (uint64_t)INT64_MAX - align)
                return size_overflow(s, err, errlen);
        *size = align_up(sum, align);
        return 0;
}

static int spec_check(const struct shm_arena_spec *s, uint64_t *heap, char *err, size_t errlen)
{
        if (!s->name[0] || strlen(s->name) > THR_NAME_MAX || strchr(s->name, '/'))
                return shm_seterr(err, errlen, -EINVAL, "arena name '%s' is not valid", s->name);
        if (s->nlimiters > s->max_limiters || s->max_limiters == 0 || s->max_limiters > 65536 ||
            s->max_readers == 0 || s->max_readers > THR_MAX_READERS)
                return shm_seterr(err, errlen, -EINVAL,
                                  "arena '%s': %zu limiters do not fit max_limiters %u, or "
                                  "max_readers %u is out of range",
                                  s->name, s->nlimiters, s->max_limiters, s->max_readers);
        *heap = s->spare_bytes; /* summed with overflow checks: a spare near 2^64 used to wrap */
        for (size_t i = 0; i < s->nlimiters; i++) {
                struct thr_params p;
                struct geometry g;
                int rc = shm_params_make(&s->limiters[i], 0, &p, err, errlen);
                if (rc < 0)
                        return rc;
                rc = shm_table_geometry(&s->limiters[i], &g);
                if (rc < 0)
                        return shm_seterr(err, errlen, rc,
                                          "limiter '%s': capacity %" PRIu64 " or shards %u "
                                          "cannot make a table",
                                          s->limiters[i].name, s->limiters[i].capacity,
                                          s->limiters[i].shards);
                if (__builtin_add_overflow(*heap, limiter_bytes(&g), heap))
                        return size_overflow(s, err, errlen);
        }
        return 0;
}

/* ---------------------------------------------------------------- backing */

/* A field (in kB) of the smaps entry that starts at ADDR, or -1. */
static long smaps_kb(const void *addr, const char *field)
{
        FILE *f = fopen("/proc/self/smaps", "re");
        if (!f)
                return -1;
        char line[256], want[32];
        snprintf(want, sizeof(want), "%lx-", (unsigned long)addr);
        size_t flen = strlen(field);
        bool in = false;
        long v = -1;
        while (v < 0 && fgets(line, sizeof(line), f)) {
                if (strchr(line, '-') && line[0] != ' ' && strncmp(line, want, strlen(want)) == 0)
                        in = true;
                else if (in && strncmp(line, field, flen) == 0 && line[flen] == ':')
                        v = strtol(line + flen + 1, NULL, 10);
        }
        fclose(f);
        return v;
}

static void record_backing(struct shm_map *m, struct thr_hdr *h)
{
        struct statfs fs;
        bool huge = fstatfs(m->fd, &fs) == 0 && (unsigned long)fs.f_type == HUGETLBFS_MAGIC_;
        long kps = smaps_kb(m->base, "KernelPageSize");
        h->backing = huge ? THR_BACKING_HUGETLBFS : THR_BACKING_SHM;
        h->page_size = kps > 0 ? (uint64_t)kps * 1024 : (uint64_t)sysconf(_SC_PAGESIZE);
        long pmd = huge ? 0 : smaps_kb(m->base, "ShmemPmdMapped");
        h->thp_bytes = pmd > 0 ? (uint64_t)pmd * 1024 : 0;
}

/* Fault every page in now, so a short pool fails here and not as SIGBUS in a client. */
static int prefault(void *base, size_t size, uint64_t page)
{
#ifdef MADV_POPULATE_WRITE
        if (madvise(base, size, MADV_POPULATE_WRITE) == 0)
                return 0;
        if (errno != EINVAL)
                return -errno;
#endif
        for (size_t off = 0; off < size; off += page)
                ((volatile char *)base)[off] = 0;
        return 0;
}

/* Whether this process is in group GID (its effective group or a supplementary one). */
static bool in_group(gid_t gid)
{
        if (getegid() == gid)
                return true;
        int n = getgroups(0, NULL);
        gid_t *groups = n > 0 ? calloc((size_t)n, sizeof(*groups)) : NULL;
        bool in = false;
        if (groups)
                n = getgroups(n, groups);
        for (int i = 0; groups && i < n && !in; i++)
                in = groups[i] == gid;
        free(groups);
        return in;
}

/*
 * Give FD, the arena file being built for PATH, the configured group GID ((gid_t)-1: none): 0, or
 * -errno with ERR naming the group and the cause. A process may give its file a group only if it
 * is a member of it or has CAP_CHOWN; that refusal (EPERM) is said as such, never taken for a
 * hugepage shortage (it used to end in "is the hugepage pool too small?").
 */
static int set_group(int fd, gid_t gid, const char *path, char *err, size_t errlen)
{
        if (gid == (gid_t)-1 || fchown(fd, (uid_t)-1, gid) == 0)
                return 0;
        int rc = -errno;
        char buf[1024], name[80];
        struct group gr, *res = NULL;
        if (getgrgid_r(gid, &gr, buf, sizeof(buf), &res) == 0 && res)
                snprintf(name, sizeof(name), "'%s'", res->gr_name);
        else
                snprintf(name, sizeof(name), "(no such group)");
        if (rc == -EPERM && !in_group(gid))
                return shm_seterr(err, errlen, rc,
                                  "cannot give arena %s the group %s (gid %u) of [arena] group: "
                                  "%s: this process (uid %u) is not a member of that group and "
                                  "has no CAP_CHOWN; run throttled as a member of it (or as "
                                  "root), or leave group empty",
                                  path, name, (unsigned)gid, strerror(-rc), (unsigned)geteuid());
        return shm_seterr(err, errlen, rc,
                          "cannot give arena %s the group %s (gid %u) of [arena] group: %s", path,
                          name, (unsigned)gid, strerror(-rc));
}

/* Create, size, allocate, map and fault the temporary file the arena at PATH is built in
 * (arena_tmp.c); M->path is its name, empty when it has none. */
static int map_new(const struct shm_arena_spec *s, const char *path, uint64_t size,
                   struct shm_map *m, char *err, size_t errlen)
{
        char tmp[sizeof(m->path)];
        int fd = shm_tmp_open(path, s->mode ? s->mode : 0600, (gid_t)-1, tmp, sizeof(tmp));
        if (fd < 0)
                return shm_seterr(err, errlen, fd, "cannot create a temporary file for %s: %s",
                                  path, strerror(-fd));
        int rc = set_group(fd, s->gid, path, err, errlen);
        if (rc < 0) {
                shm_tmp_discard(fd, tmp);
                return rc;
        }
        const char *step = "ftruncate";
        rc = ftruncate(fd, (off_t)size) < 0 ? -errno : 0;
        if (rc == 0) {
                step = "allocate";
                rc = -posix_fallocate(fd, 0, (off_t)size);
        }
        void *base = MAP_FAILED;
        if (rc == 0) {
                step = "mmap";
                base = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
                rc = base == MAP_FAILED ? -errno : 0;
        }
        if (rc == 0) {
                madvise(base, size, MADV_HUGEPAGE); /* a hint; smaps says what we got */
                step = "pre-fault";
                rc = prefault(base, size, 4096);
        }
        if (rc < 0) {
                if (base != MAP_FAILED)
                        munmap(base, size);
                shm_tmp_discard(fd, tmp);
                return shm_seterr(err, errlen, rc, "cannot %s %" PRIu64 " bytes for %s: %s", step,
                                  size, path, strerror(-rc));
        }
        *m = (struct shm_map){.base = base, .size = size, .fd = fd, .writable = true};
        memcpy(m->path, tmp, sizeof(m->path));
        return 0;
}

/* ---------------------------------------------------------------- contents */

static int hdr_init(struct shm_map *m, const struct shm_arena_spec *s)
{
        struct thr_hdr *h = shm_hdr(m);
        h->major = THR_LAYOUT_MAJOR;
        h->minor = THR_LAYOUT_MINOR;
        h->arena_size = m->size;
        h->hdr_size = THR_HDR_SIZE;
        snprintf(h->name, sizeof(h->name), "%s", s->name);
        h->clock_id = s->clock;
        if (shm_read_boot_id(h->boot_id) < 0 && s->clock != THR_CLOCK_MANUAL)
                return -EIO;
        h->timens_mono_ns = shm_timens_mono_offset();
        h->pidns_ino = shm_pidns_ino();
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        h->epoch_ns = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
        struct shm_clock_facts cf;
        shm_clock_facts(s->clock, &cf, NULL, 0);
        shm_clock_facts_store(h, &cf);
        if (getrandom(h->hash_key, sizeof(h->hash_key), 0) != sizeof(h->hash_key) ||
            getrandom(h->digest_key, sizeof(h->digest_key), 0) != sizeof(h->digest_key))
                return -EIO;
        h->dir_off = THR_HDR_SIZE;
        h->dir_count = s->max_limiters;
        h->reader_off =
            align_up(h->dir_off + (uint64_t)s->max_limiters * THR_DIR_ENTRY_SIZE, THR_ALIGN);
        h->reader_count = s->max_readers;
        h->lcount_off =
            align_up(h->reader_off + (uint64_t)s->max_readers * THR_READER_SIZE, THR_ALIGN);
        h->lcount_stride = THR_LCOUNT_STRIDE(s->max_limiters);
        h->heap_off = align_up(h->lcount_off + (uint64_t)s->max_readers * h->lcount_stride, 4096);
        h->heap_end = m->size;
        atomic_store_explicit(&h->heap_top, h->heap_off, memory_order_relaxed);
        m->g = (struct shm_geom){.dir_off = h->dir_off,
                                 .dir_count = h->dir_count,
                                 .reader_off = h->reader_off,
                                 .reader_count = h->reader_count,
                                 .lcount_off = h->lcount_off,
                                 .lcount_stride = h->lcount_stride,
                                 .heap_off = h->heap_off,
                                 .heap_end = h->heap_end,
                                 .heap_top = h->heap_off};
        record_backing(m, h);
        return 0;
}

/* Bump allocation from the daemon's private heap pointer (the arena's copy is informational). */
static uint64_t heap_alloc(struct shm_map *m, uint64_t size)
{
        uint64_t off = align_up(m->g.heap_top, THR_ALIGN);
        if (off > m->g.heap_end || size > m->g.heap_end - off)
                return 0;
        m->g.heap_top = off + size;
        return off;
}

/* ---------------------------------------------------------------- recycled records */

struct pool_wait {
        uint64_t off;
        uint32_t tag;
};

struct shm_params_pool {
        /* per directory entry: the GCRA record this daemon published there (0: none known). The
         * directory's own params_off is client-writable: only what the daemon itself published
         * is ever retired, so a scribbled offset can never make it reuse live memory. */
        uint64_t *published;
        uint32_t n;
        /* grown as needed, never dropped from: a reader stalled across many steps holds their
         * records back (the heap grows meanwhile), and they all come back when it moves on */
        struct pool_wait *wait;
        size_t nwait, capwait;
        uint64_t *ready;
        size_t nready, capready;
};

int shm_params_pool_init(struct shm_map *m)
{
        struct shm_params_pool *p = calloc(1, sizeof(*p));
        if (!p)
                return -ENOMEM;
        p->n = m->g.dir_count;
        p->published = calloc(p->n ? p->n : 1, sizeof(*p->published));
        if (!p->published) {
                free(p);
                return -ENOMEM;
        }
        m->pool = p;
        return 0;
}

void shm_params_pool_free(struct shm_map *m)
{
        if (!m->pool)
                return;
        free(m->pool->published);
        free(m->pool->wait);
        free(m->pool->ready);
        free(m->pool);
        m->pool = NULL;
}

/* Room for one more in *ARR (N used of *CAP, SIZE bytes each); false if out of memory. */
static bool grow(void **arr, size_t n, size_t *cap, size_t size)
{
        if (n < *cap)
                return true;
        size_t c = *cap ? *cap * 2 : 64;
        void *a = realloc(*arr, c * size);
        if (!a)
                return false;
        *arr = a;
        *cap = c;
        return true;
}

void shm_params_recycle(struct shm_map *m, uint64_t done)
{
        struct shm_params_pool *p = m->pool;
        if (!p)
                return;
        uint64_t counter = atomic_load_explicit(&shm_hdr(m)->grace_periods, memory_order_acquire);
        size_t kept = 0;
        for (size_t i = 0; i < p->nwait; i++) {
                if (shm_tag_done(p->wait[i].tag, done, counter) &&
                    grow((void **)&p->ready, p->nready, &p->capready, sizeof(*p->ready)))
                        p->ready[p->nready++] = p->wait[i].off;
                else
                        p->wait[kept++] = p->wait[i];
        }
        p->nwait = kept;
}

void shm_params_pool_counts(const struct shm_map *m, uint64_t *waiting, uint64_t *reusable)
{
        *waiting = m->pool ? m->pool->nwait : 0;
        *reusable = m->pool ? m->pool->nready : 0;
}

/* A record for PARAMS: a reusable one if it is a GCRA record and the pool has one, else heap. */
static uint64_t params_alloc(struct shm_map *m, const struct thr_params *params)
{
        struct shm_params_pool *p = m->pool;
        if (p && params->kind == THR_KIND_GCRA && p->nready)
                return p->ready[--p->nready];
        return heap_alloc(m, sizeof(struct thr_params));
}

/* Entry IDX now points at NEW (kind NEW_KIND), replacing what this daemon published there: a
 * GCRA record it published is retired with the current grace-period tag. */
static void params_replaced(struct shm_map *m, uint32_t idx, uint64_t new_off, uint32_t old_kind,
                            uint32_t new_kind)
{
        struct shm_params_pool *p = m->pool;
        if (!p || idx >= p->n)
                return;
        uint64_t old = p->published[idx];
        if (old && old != new_off && old_kind == THR_KIND_GCRA &&
            grow((void **)&p->wait, p->nwait, &p->capwait, sizeof(*p->wait)))
                p->wait[p->nwait++] = (struct pool_wait){old, shm_retire_tag(shm_hdr(m))};
        p->published[idx] = new_kind == THR_KIND_GCRA ? new_off : 0;
}

/* What configuration does to one limiter of the spec. */
struct plan {
        const struct shm_limiter_spec *spec;
        struct thr_params params;
        struct geometry geo;
        int idx;                  /* directory entry, or -1: a new limiter */
        uint32_t entry;           /* a new limiter: the free entry chosen for it when planning */
        bool changed;             /* new parameters for an existing limiter */
        bool revive;              /* idx is a retired entry configured again */
        uint64_t po, to;          /* staged record and (new limiters) table */
        struct thr_params before; /* idx >= 0: the arena's record when planned */
};

static bool params_equal(const struct thr_params *a, const struct thr_params *b)
{
        struct thr_params x = *a, y = *b;
        x.gen = y.gen = 0;
        return memcmp(&x, &y, sizeof(x)) == 0;
}

/* The clock a GCRA limiter's decisions read, chosen for this machine from this process's own
 * measurement, never from the (client-writable) header (clock.h). */
static void clock_choose(struct shm_map *m, const struct shm_limiter_spec *ls, struct thr_params *p)
{
        if (p->kind != THR_KIND_GCRA)
                return;
        struct shm_clock_facts cf;
        shm_clock_facts(shm_hdr(m)->clock_id, &cf, NULL, 0);
        double t_ns = (double)p->t_units / (double)p->k;
        uint32_t how = shm_clock_choose(&cf, THR_KIND_GCRA, ls->clock_read, t_ns, NULL);
        p->flags |= how << THR_PARAM_CLOCK_SHIFT;
}

/* Check one limiter of the spec against the arena; fill its plan. Changes nothing. An existing
 * GCRA limiter keeps the time unit its buckets count in (shm_params_in_units). */
static int plan_one(struct shm_map *m, const struct shm_limiter_spec *ls, uint64_t gen,
                    struct plan *pl, uint64_t *need, char *err, size_t errlen)
{
        pl->spec = ls;
        int rc = shm_params_make(ls, gen, &pl->params, err, errlen);
        if (rc == 0 && shm_table_geometry(ls, &pl->geo) < 0)
                rc = shm_seterr(err, errlen, -ERANGE,
                                "limiter '%s': capacity %" PRIu64 " or shards %u cannot make a "
                                "table",
                                ls->name, ls->capacity, ls->shards);
        if (rc < 0)
                return rc;
        pl->idx = shm_dir_find(m, ls->name);
        struct shm_lim_snap snap;
        if (pl->idx == -ENOENT) {
                /* removed earlier: revive it with its buckets if its table still fits */
                int r = shm_dir_find_state(m, ls->name, THR_DIR_RETIRED);
                struct thr_params p = pl->params;
                if (r >= 0 && shm_dir_snapshot(m, (uint32_t)r, &snap) == 0 &&
                    (snap.params.kind != THR_KIND_GCRA ||
                     shm_params_in_units(&p, snap.params.k, ls->name, NULL, 0) == 0) &&
                    shm_limiter_compatible(&snap, &p, &pl->geo, NULL, 0) == 0) {
                        pl->params = p;
                        clock_choose(m, ls, &pl->params);
                        pl->before = snap.params;
                        pl->idx = r;
                        pl->revive = pl->changed = true;
                        *need += align_up(sizeof(struct thr_params), THR_ALIGN);
                        return 0;
                }
                clock_choose(m, ls, &pl->params);
                pl->idx = -1;
                *need += limiter_bytes(&pl->geo);
                return 0;
        }
        if (pl->idx < 0 || shm_dir_snapshot(m, (uint32_t)pl->idx, &snap) < 0)
                return shm_seterr(err, errlen, -EBADMSG, "limiter '%s' is corrupt in the arena",
                                  ls->name);
        pl->before = snap.params;
        if (snap.params.kind == THR_KIND_GCRA)
                rc = shm_params_in_units(&pl->params, snap.params.k, ls->name, err, errlen);
        clock_choose(m, ls, &pl->params);
        if (rc == 0)
                rc = shm_limiter_compatible(&snap, &pl->params, &pl->geo, err, errlen);
        pl->changed = rc == 0 && !params_equal(&snap.params, &pl->params);
        if (pl->changed)
                *need += align_up(sizeof(struct thr_params), THR_ALIGN);
        return rc;
}

static int plan_all(struct shm_map *m, const struct shm_arena_spec *s, uint64_t gen,
                    struct plan *plans, char *err, size_t errlen)
{
        struct thr_hdr *h = shm_hdr(m);
        if (h->clock_id != s->clock)
                return shm_seterr(err, errlen, -EBUSY,
                                  "arena %s has a %s clock but the config asks for %s", m->path,
                                  h->clock_id == THR_CLOCK_MANUAL ? "manual" : "monotonic",
                                  s->clock == THR_CLOCK_MANUAL ? "manual" : "monotonic");
        uint64_t need = 0;
        uint32_t added = 0;
        for (size_t i = 0; i < s->nlimiters; i++) {
                int rc = plan_one(m, &s->limiters[i], gen, &plans[i], &need, err, errlen);
                if (rc < 0)
                        return rc;
                added += plans[i].idx < 0;
        }
        /* Each new limiter gets its entry now, so publishing never searches the directory again
         * (a client rewriting entries' states meanwhile cannot send it past the directory). */
        uint32_t e = 0;
        for (size_t i = 0; i < s->nlimiters; i++) {
                if (plans[i].idx >= 0)
                        continue;
                while (e < m->g.dir_count && shm_dir_entry_state(m, e) != THR_DIR_FREE)
                        e++;
                if (e == m->g.dir_count)
                        return shm_seterr(err, errlen, -ENOSPC,
                                          "arena %s has no free limiter entries for %u new "
                                          "limiters",
                                          m->path, added);
                plans[i].entry = e++;
        }
        uint64_t avail = m->g.heap_end - m->g.heap_top;
        if (need > avail)
                return shm_seterr(err, errlen, -ENOSPC,
                                  "arena %s has %" PRIu64 " spare bytes, the configuration needs "
                                  "%" PRIu64 " (raise [arena] spare and recreate it)",
                                  m->path, avail, need);
        return 0;
}

/* Write the new records and tables into unreferenced heap space; nothing is visible yet. */
static int stage(struct shm_map *m, struct plan *pl)
{
        if (pl->idx >= 0 && !pl->changed)
                return 0;
        pl->po = params_alloc(m, &pl->params);
        if (!pl->po)
                return -ENOSPC;
        memcpy(shm_at(m->base, pl->po), &pl->params, sizeof(pl->params));
        if (pl->idx >= 0)
                return 0;
        pl->to = heap_alloc(m, pl->geo.bytes);
        return pl->to ? shm_table_init(m->base, pl->to, pl->spec, &pl->geo) : -ENOSPC;
}

/* Make staged changes visible: release stores that pair with the clients' acquire loads. */
static void publish(struct shm_map *m, const struct plan *pl)
{
        struct thr_dir_entry *dir = shm_at(m->base, m->g.dir_off);
        if (pl->idx >= 0) {
                if (pl->changed) {
                        atomic_store_explicit(&dir[pl->idx].params_off, pl->po,
                                              memory_order_release);
                        params_replaced(m, (uint32_t)pl->idx, pl->po, pl->before.kind,
                                        pl->params.kind);
                }
                if (pl->revive)
                        atomic_store_explicit(&dir[pl->idx].state, THR_DIR_LIVE,
                                              memory_order_release);
                return;
        }
        THR_HOOK(THR_HOOK_CONFIG_STAGED, m);
        uint32_t i = pl->entry; /* chosen by plan_all, inside the directory */
        snprintf(dir[i].name, sizeof(dir[i].name), "%s", pl->spec->name);
        dir[i].table_off = pl->to;
        dir[i].table_bytes = pl->geo.bytes;
        atomic_store_explicit(&dir[i].params_off, pl->po, memory_order_relaxed);
        params_replaced(m, i, pl->po, 0, pl->params.kind);
        atomic_store_explicit(&dir[i].state, THR_DIR_LIVE, memory_order_release);
}

/* Retire every live limiter SPEC no longer names: clients get -EIDRM, the table stays. */
static void retire_missing(struct shm_map *m, const struct shm_arena_spec *s)
{
        struct thr_dir_entry *dir = shm_at(m->base, m->g.dir_off);
        for (uint32_t i = 0; i < m->g.dir_count; i++) {
                if (atomic_load_explicit(&dir[i].state, memory_order_acquire) != THR_DIR_LIVE)
                        continue;
                char name[THR_NAME_MAX + 1];
                memcpy(name, dir[i].name, sizeof(name));
                name[THR_NAME_MAX] = 0;
                bool kept = false;
                for (size_t j = 0; j < s->nlimiters && !kept; j++)
                        kept = strcmp(name, s->limiters[j].name) == 0;
                if (!kept)
                        atomic_store_explicit(&dir[i].state, THR_DIR_RETIRED, memory_order_release);
        }
}

int shm_arena_configure(struct shm_map *m, const struct shm_arena_spec *s, char *err, size_t errlen)
{
        struct thr_hdr *h = shm_hdr(m);
        uint64_t gen = atomic_load_explicit(&h->config_gen, memory_order_relaxed) + 1;
        struct plan *plans = calloc(s->nlimiters ? s->nlimiters : 1, sizeof(*plans));
        if (!plans)
                return shm_seterr(err, errlen, -ENOMEM, "out of memory");
        int rc = plan_all(m, s, gen, plans, err, errlen);
        uint64_t top = m->g.heap_top;
        size_t ready = m->pool ? m->pool->nready : 0;
        for (size_t i = 0; rc == 0 && i < s->nlimiters; i++)
                rc = stage(m, &plans[i]);
        if (rc < 0) {
                m->g.heap_top = top; /* staged space was never referenced: reuse it */
                if (m->pool)
                        m->pool->nready = ready; /* and the records taken (popped) are back */
                free(plans);
                return err && *err ? rc
                                   : shm_seterr(err, errlen, rc, "cannot stage: %s", strerror(-rc));
        }
        /* the groups' table, staged before anything is published: no room means no change */
        uint64_t goff = 0;
        if (s->ngroups) {
                goff = heap_alloc(m, sizeof(struct thr_group_table) +
                                         s->ngroups * sizeof(struct thr_group_rec));
                if (!goff) {
                        m->g.heap_top = top;
                        if (m->pool)
                                m->pool->nready = ready;
                        free(plans);
                        return shm_seterr(err, errlen, -ENOSPC,
                                          "no room in the arena for the groups' table (raise "
                                          "[arena] spare or recreate it)");
                }
        }
        for (size_t i = 0; i < s->nlimiters; i++)
                publish(m, &plans[i]);
        free(plans);
        retire_missing(m, s);
        if (goff) {
                struct thr_group_table *gt = shm_at(m->base, goff);
                memset(gt, 0, sizeof(*gt) + s->ngroups * sizeof(struct thr_group_rec));
                gt->count = s->ngroups;
                gt->gen = gen;
                for (size_t i = 0; i < s->ngroups; i++) {
                        const struct shm_group_spec *g = &s->groups[i];
                        snprintf(gt->g[i].name, sizeof(gt->g[i].name), "%s", g->name);
                        gt->g[i].n = g->n <= THR_COMPOSE_MAX ? g->n : 0;
                        for (uint32_t k = 0; k < gt->g[i].n; k++) {
                                int idx = shm_dir_find(m, g->members[k]);
                                gt->g[i].member[k] = idx < 0 ? UINT32_MAX : (uint32_t)idx;
                        }
                }
        }
        atomic_store_explicit(&h->groups_off, goff, memory_order_release);
        /* the clock fields again from this process's measurement: a client's scribble on them
         * does not outlive a reload (clock.h) */
        struct shm_clock_facts cf;
        shm_clock_facts(h->clock_id, &cf, NULL, 0);
        shm_clock_facts_store(h, &cf);
        atomic_store_explicit(&h->heap_top, m->g.heap_top, memory_order_relaxed);
        atomic_store_explicit(&h->config_gen, gen, memory_order_release);
        return 0;
}

/* The live GCRA limiter LS names: its directory index into *IDX and its snapshot, or -errno
 * with ERR. */
static int live_gcra(struct shm_map *m, const struct shm_limiter_spec *ls, int *idx,
                     struct shm_lim_snap *snap, char *err, size_t errlen)
{
        if (ls->kind != THR_KIND_GCRA && ls->kind != 0)
                return shm_seterr(err, errlen, -EINVAL, "limiter '%s' is not a GCRA limiter",
                                  ls->name);
        *idx = shm_dir_find(m, ls->name);
        if (*idx < 0 || shm_dir_snapshot(m, (uint32_t)*idx, snap) < 0 ||
            snap->state != THR_DIR_LIVE || snap->params.kind != THR_KIND_GCRA)
                return shm_seterr(err, errlen, -ENOENT,
                                  "limiter '%s' is not a live GCRA limiter in the arena", ls->name);
        return 0;
}

/* Publish P for entry IDX (LS, whose record was SNAP's) unless it is the same: 0 or -errno. */
static int publish_params(struct shm_map *m, const struct shm_limiter_spec *ls, int idx,
                          const struct shm_lim_snap *snap, const struct thr_params *p, char *err,
                          size_t errlen)
{
        struct plan pl = {.spec = ls,
                          .params = *p,
                          .idx = idx,
                          .changed = !params_equal(&snap->params, p),
                          .before = snap->params};
        if (!pl.changed)
                return 0;
        int rc = stage(m, &pl);
        if (rc < 0)
                return shm_seterr(err, errlen, rc,
                                  "no room for limiter '%s''s new record (raise [arena] spare)",
                                  ls->name);
        publish(m, &pl);
        atomic_store_explicit(&shm_hdr(m)->heap_top, m->g.heap_top, memory_order_relaxed);
        return 0;
}

int shm_limiter_rerate(struct shm_map *m, const struct shm_limiter_spec *ls, uint64_t rate_n,
                       char *err, size_t errlen)
{
        uint64_t gen = atomic_load_explicit(&shm_hdr(m)->config_gen, memory_order_relaxed);
        if (rate_n == 0 && (ls->kind == THR_KIND_GCRA || ls->kind == 0))
                return shm_seterr(err, errlen, -EINVAL, "limiter '%s': a rate of 0", ls->name);
        int idx;
        struct shm_lim_snap snap;
        int rc = live_gcra(m, ls, &idx, &snap, err, errlen);
        if (rc < 0)
                return rc;
        /* the configured record, then its interval for RATE_N in the unit the buckets count in:
         * T = ceil(P K / N) units, rounded up (never faster) when it is not whole (as a reload
         * to another unit: shm_params_in_units), so every rate between the bounds is reachable */
        struct thr_params p;
        rc = shm_params_make(ls, gen, &p, err, errlen);
        if (rc < 0)
                return rc;
        uint64_t k = snap.params.k;
        if (k == 0 || k > THR_MAX_K)
                return shm_seterr(err, errlen, -EBADMSG, "limiter '%s' is corrupt in the arena",
                                  ls->name);
        __uint128_t num = (__uint128_t)p.period_ns * k;
        __uint128_t t = num / rate_n + (num % rate_n != 0);
        __uint128_t reserve = (__uint128_t)ls->max_reserve_ns * k;
        if (t == 0 || t > UINT64_MAX || reserve > UINT64_MAX ||
            !shm_params_range_ok(p.burst, (uint64_t)t, (uint64_t)reserve, k))
                return shm_seterr(err, errlen, -ERANGE,
                                  "limiter '%s': rate %" PRIu64 " per %" PRIu64 " ns cannot be "
                                  "kept in its buckets' unit (1/%" PRIu64 " ns)",
                                  ls->name, rate_n, p.period_ns, k);
        p.rate_n = rate_n;
        p.k = k;
        p.t_units = (uint64_t)t;
        p.bt_units = p.burst * (uint64_t)t;
        p.max_reserve_units = (uint64_t)reserve;
        p.flags &= ~(THR_PARAM_ROUNDED | THR_PARAM_CLOCK_MASK);
        if (num % rate_n)
                p.flags |= THR_PARAM_ROUNDED;
        clock_choose(m, ls, &p);
        return publish_params(m, ls, idx, &snap, &p, err, errlen);
}

int shm_arena_plan(struct shm_map *m, const struct shm_arena_spec *s, struct shm_change **out,
                   size_t *n, char *err, size_t errlen)
{
        *out = NULL;
        *n = 0;
        uint64_t gen = atomic_load_explicit(&shm_hdr(m)->config_gen, memory_order_relaxed) + 1;
        struct plan *plans = calloc(s->nlimiters ? s->nlimiters : 1, sizeof(*plans));
        struct shm_change *c = calloc(s->nlimiters + m->g.dir_count + 1, sizeof(*c));
        int rc = plans && c ? plan_all(m, s, gen, plans, err, errlen)
                            : shm_seterr(err, errlen, -ENOMEM, "out of memory");
        size_t k = 0;
        for (size_t i = 0; rc == 0 && i < s->nlimiters; i++, k++) {
                const struct plan *pl = &plans[i];
                snprintf(c[k].name, sizeof(c[k].name), "%s", pl->spec->name);
                c[k].what = pl->idx < 0   ? SHM_CHANGE_ADD
                            : pl->revive  ? SHM_CHANGE_REVIVE
                            : pl->changed ? SHM_CHANGE_PARAMS
                                          : SHM_CHANGE_SAME;
                c[k].capacity = pl->geo.capacity;
                c[k].nshards = pl->geo.nshards;
                c[k].before = pl->before;
                c[k].after = pl->params;
        }
        for (uint32_t i = 0; rc == 0 && i < m->g.dir_count; i++) {
                struct shm_lim_snap snap;
                if (shm_dir_snapshot(m, i, &snap) < 0 || snap.state != THR_DIR_LIVE)
                        continue;
                bool kept = false;
                for (size_t j = 0; j < s->nlimiters && !kept; j++)
                        kept = strncmp(snap.name, s->limiters[j].name, sizeof(snap.name)) == 0;
                if (kept)
                        continue;
                snprintf(c[k].name, sizeof(c[k].name), "%s", snap.name);
                c[k].what = SHM_CHANGE_RETIRE;
                c[k].capacity = snap.table.capacity;
                c[k].nshards = snap.table.nshards;
                c[k].before = snap.params;
                k++;
        }
        free(plans);
        if (rc < 0) {
                free(c);
                return rc;
        }
        *out = c;
        *n = k;
        return 0;
}

/* Write the contents of a freshly mapped temporary file, then link it into place (arena_tmp.c). */
int shm_arena_finish(struct shm_map *m, const struct shm_arena_spec *s, const char *path, char *err,
                     size_t errlen)
{
        int rc = hdr_init(m, s);
        if (rc < 0)
                shm_seterr(err, errlen, rc, "cannot read the boot id or the random hash keys");
        if (rc == 0)
                rc = shm_arena_configure(m, s, err, errlen);
        if (rc == 0 && s->hugepages == SHM_HUGE_REQUIRE &&
            shm_hdr(m)->backing != THR_BACKING_HUGETLBFS)
                rc = shm_seterr(err, errlen, -ENOMEM, "the mapping did not get huge pages");
        if (rc == 0) {
                atomic_thread_fence(memory_order_release);
                shm_hdr(m)->magic = THR_MAGIC;
                rc = shm_tmp_publish(m->fd, m->path, path);
                if (rc < 0)
                        shm_seterr(err, errlen, rc, "cannot link the new arena to %s: %s", path,
                                   strerror(-rc));
        }
        if (rc < 0) {
                if (m->path[0])
                        unlink(m->path);
                shm_arena_detach(m);
                return rc;
        }
        snprintf(m->path, sizeof(m->path), "%s", path);
        return 0;
}

/* Whether PATH's directory is a hugetlbfs mount (then sizes are whole 2 MiB pages). */
static bool on_hugetlbfs(const char *path)
{
        char dir[256];
        snprintf(dir, sizeof(dir), "%s", path);
        char *slash = strrchr(dir, '/');
        if (slash)
                *(slash == dir ? slash + 1 : slash) = 0;
        struct statfs fs;
        return statfs(slash ? dir : ".", &fs) == 0 && (unsigned long)fs.f_type == HUGETLBFS_MAGIC_;
}

int shm_arena_create(const struct shm_arena_spec *s, struct shm_map *out, char *err, size_t errlen)
{
        uint64_t heap = 0;
        int rc = spec_check(s, &heap, err, errlen);
        if (rc < 0)
                return rc;
        char path[sizeof(out->path)];
        bool huge_ok = s->hugepages != SHM_HUGE_OFF && !s->dir;
        rc = shm_arena_path(s->name, s->dir, huge_ok ? s->hugepages : SHM_HUGE_OFF, path,
                            sizeof(path));
        if (rc == -ENOENT)
                return shm_seterr(err, errlen, rc,
                                  "hugepages = require, but no 2 MiB hugetlbfs mount was found "
                                  "(mount one with: hugeadm --create-global-mounts)");
        if (rc < 0)
                return shm_seterr(err, errlen, rc, "arena path too long");
        if (access(path, F_OK) == 0)
                return shm_seterr(err, errlen, -EEXIST, "arena %s already exists", path);
        /* header, directory, readers, counter rows (each section 64-aligned); no overflow:
         * max_readers <= 2^20 and max_limiters <= 65536 (spec_check) */
        uint64_t fixed =
            align_up(THR_HDR_SIZE + (uint64_t)s->max_limiters * THR_DIR_ENTRY_SIZE + THR_ALIGN +
                         (uint64_t)s->max_readers * THR_READER_SIZE + THR_ALIGN +
                         (uint64_t)s->max_readers * THR_LCOUNT_STRIDE(s->max_limiters),
                     4096);
        bool on_huge = on_hugetlbfs(path);
        uint64_t size = 0;
        rc = arena_size(s, fixed, heap, on_huge ? HUGE_2M : 4096, &size, err, errlen);
        if (rc < 0)
                return rc;
        rc = map_new(s, path, size, out, err, errlen);
        if (rc < 0 && on_huge && s->hugepages == SHM_HUGE_AUTO) {
                char why[256];
                snprintf(why, sizeof(why), "%s", err ? err : "");
                struct shm_arena_spec fallback = *s;
                fallback.hugepages = SHM_HUGE_OFF;
                rc = shm_arena_create(&fallback, out, err, errlen);
                if (rc >= 0 && err && errlen)
                        snprintf(err, errlen,
                                 "hugetlbfs could not hold the arena (%s); using /dev/shm", why);
                return rc < 0 ? rc : 1;
        }
        if ((rc == -ENOMEM || rc == -ENOSPC) && on_huge) { /* only these say the pool is short */
                char why[256];
                snprintf(why, sizeof(why), "%s", err ? err : "");
                return shm_seterr(err, errlen, rc,
                                  "%s (is the hugepage pool too small? it needs %" PRIu64
                                  " free 2 MiB pages: hugeadm --pool-pages-min 2MB:+N)",
                                  why, (uint64_t)(size / HUGE_2M));
        }
        if (rc < 0)
                return rc;
        return shm_arena_finish(out, s, path, err, errlen);
}

/* ---------------------------------------------------------------- table geometry */

static uint32_t pow2_floor(uint64_t v)
{
        uint32_t p = 1;
        while ((uint64_t)p * 2 <= v && p < THR_MAX_SHARDS)
                p *= 2;
        return p;
}

/*
 * Shards split the insert mutex and keep probe runs local; 512 keys a shard at capacity keeps
 * each shard's share statistically even, 64 shards are plenty for the insert rates we see.
 * Slots are 1.5x the keys a shard expects (load <= 2/3 at capacity, ~2 probes per hit: 96 bytes
 * of 64-byte slots per key of capacity), and a shard may fill to 7/8 so that uneven hashing does
 * not refuse keys below the total capacity.
 */
int shm_table_geometry(const struct shm_limiter_spec *s, struct geometry *g)
{
        if (s->capacity == 0 || s->capacity > (1ull << 32))
                return -ERANGE;
        uint32_t n = s->shards ? s->shards : pow2_floor(s->capacity / 512);
        if (!s->shards && n > 64)
                n = 64;
        if (n == 0 || (n & (n - 1)) || n > THR_MAX_SHARDS)
                return -EINVAL;
        uint64_t per = (s->capacity + n - 1) / n;
        uint64_t slots = per + per / 2 + 8;
        if (slots > UINT32_MAX)
                return -ERANGE;
        g->nshards = n;
        g->shard_slots = (uint32_t)slots;
        g->shard_max = slots * 7 / 8;
        g->capacity = s->capacity;
        g->aux_stride = s->kind == THR_KIND_WINDOW && s->rate_n <= THR_WINDOW_MAX
                            ? (uint32_t)shm_window_stride(s->rate_n)
                        : s->kind == THR_KIND_SEMAPHORE && s->leases <= THR_SEM_LEASES_MAX
                            ? (uint32_t)shm_sem_stride(s->leases)
                        : s->kind == THR_KIND_BUDGET  ? THR_BUDGET_HDR
                        : s->kind == THR_KIND_BREAKER ? THR_BRK_AUX
                                                      : 0;
        /* at most 2^32 * 1.5 slots of at most 64 + 131136 bytes: no overflow in 64 bits */
        g->bytes = sizeof(struct thr_table) + (uint64_t)n * sizeof(struct thr_shard) +
                   (uint64_t)n * slots * (THR_SLOT_SIZE + g->aux_stride);
        return 0;
}

int shm_table_init(void *base, uint64_t off, const struct shm_limiter_spec *s,
                   const struct geometry *g)
{
        struct thr_table *tb = shm_at(base, off);
        memset(tb, 0, sizeof(*tb));
        tb->nshards = g->nshards;
        tb->shard_slots = g->shard_slots;
        tb->capacity = s->capacity;
        tb->shard_max = g->shard_max;
        tb->shards_off = off + sizeof(*tb);
        tb->slots_off = tb->shards_off + (uint64_t)g->nshards * sizeof(struct thr_shard);
        tb->aux_stride = g->aux_stride;
        /* Shards (insert locks free) and slots (EMPTY) are zero from the fresh file; a reused heap
         * range is not possible. */
        return 0;
}

/* ---------------------------------------------------------------- daemon lock */

int shm_daemon_lock(struct shm_map *m, pid_t *holder)
{
        struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1};
        if (fcntl(m->fd, F_OFD_SETLK, &fl) == 0)
                return 0;
        int e = errno;
        if (e != EAGAIN && e != EACCES)
                return -e;
        if (holder)
                *holder =
                    (pid_t)atomic_load_explicit(&shm_hdr(m)->daemon_pid, memory_order_relaxed);
        return -EBUSY;
}

/*
 * Whether the limiter in snapshot S can take parameters P without losing its buckets: the table
 * cannot be resized in place, and the state words count units of 1/K ns, so K must stay the same
 * (plan_one re-expresses a GCRA record in the arena's unit before it asks).
 */
int shm_limiter_compatible(const struct shm_lim_snap *s, const struct thr_params *p,
                           const struct geometry *g, char *err, size_t errlen)
{
        if (s->params.kind != p->kind)
                return shm_seterr(err, errlen, -EBUSY,
                                  "limiter '%s': its kind cannot change in place (%s to %s); "
                                  "give the new limiter another name, or start with a new arena",
                                  s->name, shm_kind_name(s->params.kind), shm_kind_name(p->kind));
        if (p->kind == THR_KIND_WINDOW && s->params.rate_n != p->rate_n)
                return shm_seterr(err, errlen, -EBUSY,
                                  "limiter '%s': a window's limit cannot change in place (%" PRIu64
                                  " to %" PRIu64 "): every key logs its last N units in a log of "
                                  "N words; its window length can change, or start with a new "
                                  "arena",
                                  s->name, s->params.rate_n, p->rate_n);
        if (p->kind == THR_KIND_SEMAPHORE && s->params.leases != p->leases)
                return shm_seterr(err, errlen, -EBUSY,
                                  "limiter '%s': leases_per_key cannot change in place (%" PRIu64
                                  " to %" PRIu64 "): every key has room for that many lease "
                                  "records; its max can change, or start with a new arena",
                                  s->name, s->params.leases, p->leases);
        if (p->kind == THR_KIND_WINDOW && (s->params.flags ^ p->flags) & THR_PARAM_SERIALIZE)
                return shm_seterr(err, errlen, -EBUSY,
                                  "limiter '%s': serialize cannot change in place (holders and "
                                  "waiters may be in the middle of their calls); give the limiter "
                                  "another name, or start with a new arena",
                                  s->name);
        if (s->table.nshards != g->nshards || s->table.shard_slots != g->shard_slots ||
            s->table.capacity != g->capacity || s->table.aux_stride != g->aux_stride)
                return shm_seterr(err, errlen, -EBUSY,
                                  "limiter '%s': its table (capacity %" PRIu64 ", %u shards) "
                                  "cannot be resized in place; keep capacity and shards, or "
                                  "start with a new arena",
                                  s->name, s->table.capacity, s->table.nshards);
        if (s->params.k != p->k) /* a GCRA record was re-expressed in the arena's unit first */
                return shm_seterr(err, errlen, -EBUSY,
                                  "limiter '%s': its buckets count units of 1/%" PRIu64
                                  " ns, the new parameters 1/%" PRIu64 " ns",
                                  s->name, s->params.k, p->k);
        return 0;
}

int shm_limiter_rescale(struct shm_map *m, const struct shm_limiter_spec *ls, uint32_t scale_ppm,
                        char *err, size_t errlen)
{
        uint64_t gen = atomic_load_explicit(&shm_hdr(m)->config_gen, memory_order_relaxed);
        struct shm_limiter_spec sc = *ls;
        sc.scale_ppm = scale_ppm == 0 ? 1 : scale_ppm > THR_SCALE_ONE ? THR_SCALE_ONE : scale_ppm;
        int idx;
        struct shm_lim_snap snap;
        struct thr_params p;
        int rc = live_gcra(m, ls, &idx, &snap, err, errlen);
        if (rc == 0)
                rc = shm_params_make(&sc, gen, &p, err, errlen);
        if (rc == 0)
                rc = shm_params_in_units(&p, snap.params.k, ls->name, err, errlen);
        if (rc < 0)
                return rc;
        clock_choose(m, &sc, &p);
        return publish_params(m, &sc, idx, &snap, &p, err, errlen);
}
