/*
 * nginx_real.c - backend "nginx-real": nginx's limit_req shared zone as nginx itself runs it
 * (ngx_http_limit_req_module.c with ngx_shmtx.c, ngx_rbtree.c, ngx_slab.c and ngx_times.c, read
 * to learn, then written anew here), so that the scaling benchmark measures nginx's design and not
 * only its one lock (that is "nginx-hash", nginx_zone.c).
 *
 * What it models, per request, in nginx's order:
 *   - the key's crc32 (ngx_crc32_short: the IEEE CRC-32 a nibble at a time from a 16-entry
 *     table), computed before the lock;
 *   - the zone's lock, ngx_shmtx with atomics and POSIX semaphores as nginx builds it on Linux: a
 *     lock word in shared memory holding the owner's pid, taken by test-then-CAS; on a miss, when
 *     the machine has more than one CPU, 1, 2, 4 ... 1024 pause instructions (2047 in all) with a
 *     test-then-CAS after each round; then the waiter count is raised, one more try, and the
 *     process sleeps on a process-shared unnamed semaphore (sem_wait) that the unlocker posts
 *     when the count is positive; woken, it starts over. No sched_yield (nginx only yields when
 *     it has no semaphore);
 *   - the lookup, ngx_http_limit_req_lookup with one limit (account = 1): a red-black tree of
 *     nodes keyed by the crc32, equal hashes ordered by the key bytes (ngx_memn2cmp); the node
 *     found is moved to the head of the zone's LRU queue on EVERY request, admitted or denied;
 *   - nginx's leaky bucket in integers: rate in milli-requests per second, `excess` in
 *     milli-requests, `last` in ms; excess = excess - rate * ms / 1000 + 1000, clamped at 0,
 *     denied if above burst * 1000 (nothing written), else stored, with last = now if ms != 0;
 *   - a new key: ngx_http_limit_req_expire(1) first (up to two idle nodes from the LRU tail:
 *     stop at the first one touched less than the idle threshold ago or still in debt), then a
 *     128-byte chunk from the zone's slab; if the slab is full, expire(0) (the tail node by force,
 *     then up to two idle ones) and allocate again, else fail (nginx answers 500). The new node
 *     starts with excess 0 and the request is admitted. Expiry runs only on that insert path, as
 *     in nginx, not on every request;
 *   - the clock, ngx_current_msec: CLOCK_MONOTONIC in ms, cached per process. nginx refreshes it
 *     once per event-loop iteration (ngx_time_update after epoll_wait), which serves every request
 *     that iteration reads; here it is refreshed on a process's first request and then every
 *     CLOCK_EVERY (64) requests, i.e. 64 requests per loop iteration.
 * The zone is one mmap(MAP_SHARED | MAP_ANONYMOUS) made before the workers fork, as nginx's
 * master creates zones before forking (hugepages when the harness asks and the kernel has them,
 * as nginx-hash). It holds the lock, the tree's root and sentinel, the queue's sentinel and a slab
 * of 4 kB pages of 32 chunks each; a chunk holds one node (tree links, colour, queue links, last,
 * excess, up to NGR_KEY_MAX key bytes): nginx's node for a short key is 80 + len bytes, in its
 * 128-byte slab class too. The slab allocator is nginx's exact-size case reduced to one size: a
 * bitmap per page and a list of pages with free chunks.
 *
 * How its admissions relate to GCRA (backend.h: every backend's admitted counts compare). With
 * d the GCRA debt in requests after an admission, (tat - now) / T, GCRA admits iff
 * max(d - leak, 0) + 1 <= B and nginx iff max(e - leak + 1, 0) <= nginx's burst, e = excess in
 * requests. Both recurrences are the same with d = e + 1 and nginx's burst = B - 1; a new nginx
 * node (e = 0 after its first request) is a GCRA bucket after its first admission (d = 1). So
 * nginx-real runs nginx's burst = cfg->burst - 1 and rate = cfg's rate in milli-requests per
 * second, and admits what GCRA does up to nginx's rounding: time in whole ms of a clock up to 63
 * requests stale, the leak truncated to whole milli-requests, and sub-ms remainders dropped when
 * `last` moves. Rates that are not a whole number of milli-requests per second are truncated: the
 * denied scenario's 1 per hour becomes 0 (nginx's own floor is 1 r/m): it never leaks, which in a
 * run of seconds changes nothing. Setup inserts every key (nginx has no such step: keys come with
 * their first request) holding excess = -1000 mod 2^64, one request of credit, which nginx's own
 * unsigned arithmetic turns into a clamped 0 on the first request: a full GCRA bucket (d = 0).
 * Costs other than 1 are cost * 1000 milli-requests (nginx has no cost; the harness uses 1).
 *
 * What it leaves out: more than one limit per request (the NGX_AGAIN path, node->count, and the
 * second lock round in ngx_http_limit_req_account), delay= and the delayed (not rejected)
 * requests, dry_run, logging, the variable evaluation that builds the key, the master freeing a
 * dead worker's lock (ngx_shmtx_force_unlock: a worker killed holding it would hang the others
 * here; the benchmark kills nobody), nginx's free-page
 * pool shared by all slab sizes (pages here stay 128-byte pages), and the HTTP around it. The
 * idle threshold of expiry is nginx's fixed 60 s except in churn, where it is cfg->idle_ttl_ns
 * (as nginx-hash and throttle use) so that all evict the same keys. Churn's capacity is the slab:
 * cfg->keys nodes, rounded up to whole pages of 32.
 */
#include <errno.h>
#include <inttypes.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "backend.h"
#include "zone_map.h"

#define CLOCK_EVERY   64u   /* requests per refresh of the cached ms clock */
#define SHMTX_SPIN    2048u /* ngx_shmtx_create: mtx->spin */
#define CHUNK_SIZE    128u
#define PAGE_SIZE_    4096u
#define PAGE_CHUNKS   (PAGE_SIZE_ / CHUNK_SIZE) /* 32: one uint32_t bitmap per page */
#define PAGE_NONE     UINT32_MAX
#define NGR_KEY_MAX   56u
#define NGINX_IDLE_MS 60000u /* ngx_http_limit_req_expire's threshold */

/* ---------------------------------------------------------------- structures in the zone */

struct ngr_q {
        struct ngr_q *prev, *next; /* circular, with a sentinel in the zone (ngx_queue_t) */
};

struct ngr_node {
        uint64_t key; /* crc32 of the key */
        struct ngr_node *left, *right, *parent;
        uint8_t red;
        uint8_t unused;
        uint16_t len;
        struct ngr_q q;
        uint64_t last;   /* ms of the cached clock */
        uint64_t excess; /* milli-requests, unsigned as nginx's ngx_uint_t */
        char data[NGR_KEY_MAX];
};
_Static_assert(sizeof(struct ngr_node) == CHUNK_SIZE, "one node per slab chunk");

struct ngr_page {
        uint32_t used;       /* bitmap of the page's chunks */
        uint32_t prev, next; /* list of pages with a free chunk */
};

struct ngr_shmtx {
        _Atomic uint64_t lock; /* 0, or the owner's pid */
        _Atomic int64_t wait;  /* processes that are or are about to be in sem_wait */
        sem_t sem;             /* process-shared, initial 0 */
};

struct ngr_counts {
        _Atomic uint64_t expired, forced, insert_fail, live;
};

struct ngr_zone {
        struct ngr_shmtx mtx;
        struct ngr_node *root;
        struct ngr_node sentinel; /* black; its parent is scratch during deletion */
        struct ngr_q queue;       /* head: most recently used */
        /* slab */
        struct ngr_node *chunks;
        struct ngr_page *pages;
        uint32_t npages, fresh; /* pages never used yet: fresh .. npages - 1 */
        uint32_t partial;       /* first page with a free chunk, PAGE_NONE if none */
        /* limit */
        uint64_t rate;  /* milli-requests per second (ctx->rate) */
        uint64_t burst; /* milli-requests (limit->burst) */
        uint64_t max_cost;
        uint64_t idle_ms;
        int churn;
        struct ngr_counts counts;
        size_t size;
        int huge;
};

struct ngr_handle {
        struct ngr_zone *z;
        uint64_t pid; /* ngx_pid: the lock word's value while this process holds it */
        uint64_t now; /* ngx_current_msec */
        unsigned until_refresh;
};

/* ---------------------------------------------------------------- crc32, clock */

static uint32_t crc_nibble[16];

static void crc_init(void)
{
        for (uint32_t i = 0; i < 16; i++) {
                uint32_t c = i;
                for (int k = 0; k < 4; k++)
                        c = (c & 1) ? (c >> 1) ^ 0xedb88320u : c >> 1;
                crc_nibble[i] = c;
        }
}

static uint32_t crc32_nibbles(const char *p, size_t len)
{
        uint32_t crc = 0xffffffffu;
        for (size_t i = 0; i < len; i++) {
                unsigned c = (unsigned char)p[i];
                crc = crc_nibble[(crc ^ c) & 0xf] ^ (crc >> 4);
                crc = crc_nibble[(crc ^ (c >> 4)) & 0xf] ^ (crc >> 4);
        }
        return crc ^ 0xffffffffu;
}

static uint64_t monotonic_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---------------------------------------------------------------- the lock (ngx_shmtx) */

static long ncpu;

static inline void cpu_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#elif defined(__aarch64__)
        __asm__ __volatile__("yield");
#endif
}

static inline bool shmtx_try(struct ngr_shmtx *m, uint64_t pid)
{
        uint64_t zero = 0;
        return atomic_load_explicit(&m->lock, memory_order_relaxed) == 0 &&
               atomic_compare_exchange_strong(&m->lock, &zero, pid);
}

static void shmtx_lock(struct ngr_shmtx *m, uint64_t pid)
{
        for (;;) {
                if (shmtx_try(m, pid))
                        return;
                if (ncpu > 1) {
                        for (unsigned n = 1; n < SHMTX_SPIN; n <<= 1) {
                                for (unsigned i = 0; i < n; i++)
                                        cpu_pause();
                                if (shmtx_try(m, pid))
                                        return;
                        }
                }
                atomic_fetch_add(&m->wait, 1);
                if (shmtx_try(m, pid)) {
                        atomic_fetch_sub(&m->wait, 1);
                        return;
                }
                while (sem_wait(&m->sem) == -1 && errno == EINTR)
                        ;
        }
}

static void shmtx_unlock(struct ngr_shmtx *m, uint64_t pid)
{
        uint64_t mine = pid;
        if (!atomic_compare_exchange_strong(&m->lock, &mine, 0))
                return;
        int64_t w = atomic_load(&m->wait);
        do {
                if (w <= 0)
                        return;
        } while (!atomic_compare_exchange_weak(&m->wait, &w, w - 1));
        sem_post(&m->sem);
}

/* ---------------------------------------------------------------- LRU queue */

static void q_remove(struct ngr_q *x)
{
        x->prev->next = x->next;
        x->next->prev = x->prev;
}

static void q_insert_head(struct ngr_q *h, struct ngr_q *x)
{
        x->next = h->next;
        x->next->prev = x;
        x->prev = h;
        h->next = x;
}

static struct ngr_node *q_node(struct ngr_q *q)
{
        return (struct ngr_node *)((char *)q - offsetof(struct ngr_node, q));
}

/* ---------------------------------------------------------------- red-black tree */

/* Order of two keys of equal hash, as ngx_memn2cmp: bytes of the shorter, then the length. */
static int key_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
        int rc = memcmp(a, b, alen < blen ? alen : blen);
        if (rc)
                return rc;
        return alen < blen ? -1 : alen > blen;
}

static void rotate_left(struct ngr_zone *z, struct ngr_node *x)
{
        struct ngr_node *y = x->right;
        x->right = y->left;
        if (y->left != &z->sentinel)
                y->left->parent = x;
        y->parent = x->parent;
        if (x == z->root)
                z->root = y;
        else if (x == x->parent->left)
                x->parent->left = y;
        else
                x->parent->right = y;
        y->left = x;
        x->parent = y;
}

static void rotate_right(struct ngr_zone *z, struct ngr_node *x)
{
        struct ngr_node *y = x->left;
        x->left = y->right;
        if (y->right != &z->sentinel)
                y->right->parent = x;
        y->parent = x->parent;
        if (x == z->root)
                z->root = y;
        else if (x == x->parent->right)
                x->parent->right = y;
        else
                x->parent->left = y;
        y->right = x;
        x->parent = y;
}

static void tree_insert(struct ngr_zone *z, struct ngr_node *n)
{
        struct ngr_node *s = &z->sentinel;
        n->left = n->right = s;
        if (z->root == s) {
                n->parent = NULL;
                n->red = 0;
                z->root = n;
                return;
        }
        struct ngr_node *t = z->root;
        for (;;) {
                struct ngr_node **p;
                if (n->key != t->key)
                        p = n->key < t->key ? &t->left : &t->right;
                else
                        p = key_cmp(n->data, n->len, t->data, t->len) < 0 ? &t->left : &t->right;
                if (*p == s) {
                        *p = n;
                        break;
                }
                t = *p;
        }
        n->parent = t;
        n->red = 1;
        while (n != z->root && n->parent->red) {
                struct ngr_node *p = n->parent, *g = p->parent;
                if (p == g->left) {
                        struct ngr_node *u = g->right;
                        if (u->red) {
                                p->red = u->red = 0;
                                g->red = 1;
                                n = g;
                                continue;
                        }
                        if (n == p->right) {
                                n = p;
                                rotate_left(z, n);
                                p = n->parent;
                        }
                        p->red = 0;
                        g->red = 1;
                        rotate_right(z, g);
                } else {
                        struct ngr_node *u = g->left;
                        if (u->red) {
                                p->red = u->red = 0;
                                g->red = 1;
                                n = g;
                                continue;
                        }
                        if (n == p->left) {
                                n = p;
                                rotate_right(z, n);
                                p = n->parent;
                        }
                        p->red = 0;
                        g->red = 1;
                        rotate_left(z, g);
                }
        }
        z->root->red = 0;
}

/* Put V where U is in U's parent (V may be the sentinel: its parent is then scratch). */
static void transplant(struct ngr_zone *z, struct ngr_node *u, struct ngr_node *v)
{
        if (u == z->root)
                z->root = v;
        else if (u == u->parent->left)
                u->parent->left = v;
        else
                u->parent->right = v;
        v->parent = u->parent;
}

static void delete_fixup(struct ngr_zone *z, struct ngr_node *x)
{
        while (x != z->root && !x->red) {
                struct ngr_node *p = x->parent;
                if (x == p->left) {
                        struct ngr_node *w = p->right;
                        if (w->red) {
                                w->red = 0;
                                p->red = 1;
                                rotate_left(z, p);
                                w = p->right;
                        }
                        if (!w->left->red && !w->right->red) {
                                w->red = 1;
                                x = p;
                                continue;
                        }
                        if (!w->right->red) {
                                w->left->red = 0;
                                w->red = 1;
                                rotate_right(z, w);
                                w = p->right;
                        }
                        w->red = p->red;
                        p->red = 0;
                        w->right->red = 0;
                        rotate_left(z, p);
                        x = z->root;
                } else {
                        struct ngr_node *w = p->left;
                        if (w->red) {
                                w->red = 0;
                                p->red = 1;
                                rotate_right(z, p);
                                w = p->left;
                        }
                        if (!w->left->red && !w->right->red) {
                                w->red = 1;
                                x = p;
                                continue;
                        }
                        if (!w->left->red) {
                                w->right->red = 0;
                                w->red = 1;
                                rotate_left(z, w);
                                w = p->left;
                        }
                        w->red = p->red;
                        p->red = 0;
                        w->left->red = 0;
                        rotate_right(z, p);
                        x = z->root;
                }
        }
        x->red = 0;
}

static void tree_delete(struct ngr_zone *z, struct ngr_node *n)
{
        struct ngr_node *s = &z->sentinel, *x, *y = n;
        int y_red = y->red;
        if (n->left == s) {
                x = n->right;
                transplant(z, n, n->right);
        } else if (n->right == s) {
                x = n->left;
                transplant(z, n, n->left);
        } else {
                y = n->right;
                while (y->left != s)
                        y = y->left;
                y_red = y->red;
                x = y->right;
                if (y->parent == n) {
                        x->parent = y;
                } else {
                        transplant(z, y, y->right);
                        y->right = n->right;
                        y->right->parent = y;
                }
                transplant(z, n, y);
                y->left = n->left;
                y->left->parent = y;
                y->red = n->red;
        }
        if (!y_red)
                delete_fixup(z, x);
        s->red = 0;
}

/* ---------------------------------------------------------------- slab */

static void page_push(struct ngr_zone *z, uint32_t i)
{
        z->pages[i].prev = PAGE_NONE;
        z->pages[i].next = z->partial;
        if (z->partial != PAGE_NONE)
                z->pages[z->partial].prev = i;
        z->partial = i;
}

static void page_unlink(struct ngr_zone *z, uint32_t i)
{
        struct ngr_page *p = &z->pages[i];
        if (p->prev != PAGE_NONE)
                z->pages[p->prev].next = p->next;
        else
                z->partial = p->next;
        if (p->next != PAGE_NONE)
                z->pages[p->next].prev = p->prev;
}

static struct ngr_node *slab_alloc(struct ngr_zone *z)
{
        if (z->partial == PAGE_NONE) {
                if (z->fresh == z->npages)
                        return NULL;
                page_push(z, z->fresh++);
        }
        uint32_t i = z->partial;
        struct ngr_page *p = &z->pages[i];
        unsigned bit = (unsigned)__builtin_ctz(~p->used);
        p->used |= 1u << bit;
        if (p->used == UINT32_MAX)
                page_unlink(z, i);
        return &z->chunks[(size_t)i * PAGE_CHUNKS + bit];
}

static void slab_free(struct ngr_zone *z, struct ngr_node *n)
{
        size_t c = (size_t)(n - z->chunks);
        uint32_t i = (uint32_t)(c / PAGE_CHUNKS);
        struct ngr_page *p = &z->pages[i];
        if (p->used == UINT32_MAX)
                page_push(z, i);
        p->used &= ~(1u << (c % PAGE_CHUNKS));
}

/* ---------------------------------------------------------------- limit_req */

static void cnt_add(_Atomic uint64_t *c, int64_t v)
{
        atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + (uint64_t)v,
                              memory_order_relaxed); /* one writer at a time: the lock holder */
}

/* ngx_http_limit_req_expire: N = 1 up to two idle tail nodes; N = 0 the tail by force first. */
static void expire(struct ngr_zone *z, uint64_t now, unsigned n)
{
        while (n < 3) {
                if (z->queue.next == &z->queue)
                        return;
                struct ngr_node *lr = q_node(z->queue.prev);
                if (n++ != 0) {
                        int64_t ms = (int64_t)(now - lr->last);
                        ms = ms < 0 ? -ms : ms;
                        if ((uint64_t)ms < z->idle_ms)
                                return;
                        int64_t excess = (int64_t)(lr->excess - z->rate * (uint64_t)ms / 1000);
                        if (excess > 0)
                                return;
                        cnt_add(&z->counts.expired, 1);
                } else {
                        cnt_add(&z->counts.forced, 1);
                }
                q_remove(&lr->q);
                tree_delete(z, lr);
                slab_free(z, lr);
                cnt_add(&z->counts.live, -1);
        }
}

/* A new node for KEY at the head of the queue; NULL when the slab is full even after expiry. */
static struct ngr_node *node_new(struct ngr_zone *z, uint32_t hash, const char *key, size_t len,
                                 uint64_t now, bool expiring)
{
        if (expiring)
                expire(z, now, 1);
        struct ngr_node *n = slab_alloc(z);
        if (!n && expiring) {
                expire(z, now, 0);
                n = slab_alloc(z);
        }
        if (!n)
                return NULL;
        n->key = hash;
        n->len = (uint16_t)len;
        memcpy(n->data, key, len);
        tree_insert(z, n);
        q_insert_head(&z->queue, &n->q);
        cnt_add(&z->counts.live, 1);
        return n;
}

/* ngx_http_limit_req_lookup with account = 1 (one limit): 1 admitted, 0 denied, -ENOSPC. */
static int lookup(struct ngr_zone *z, uint32_t hash, const char *key, size_t len, uint64_t cost,
                  uint64_t now)
{
        struct ngr_node *n = z->root, *s = &z->sentinel;
        while (n != s) {
                if (hash != n->key) {
                        n = hash < n->key ? n->left : n->right;
                        continue;
                }
                int rc = key_cmp(key, len, n->data, n->len);
                if (rc) {
                        n = rc < 0 ? n->left : n->right;
                        continue;
                }
                q_remove(&n->q);
                q_insert_head(&z->queue, &n->q);
                int64_t ms = (int64_t)(now - n->last);
                if (ms < -60000)
                        ms = 1;
                else if (ms < 0)
                        ms = 0;
                int64_t excess = (int64_t)(n->excess - z->rate * (uint64_t)ms / 1000 + cost * 1000);
                if (excess < 0)
                        excess = 0;
                if ((uint64_t)excess > z->burst)
                        return 0;
                if (cost) {
                        n->excess = (uint64_t)excess;
                        if (ms)
                                n->last = now;
                }
                return 1;
        }
        n = node_new(z, hash, key, len, now, true);
        if (!n) {
                cnt_add(&z->counts.insert_fail, 1);
                return -ENOSPC;
        }
        n->excess = cost ? (cost - 1) * 1000 : (uint64_t)-1000;
        n->last = now;
        return 1;
}

/* ---------------------------------------------------------------- backend */

/* Every key "key:<i>", one request of credit (a full GCRA bucket, see the top). */
static int zone_fill(struct ngr_zone *z, uint64_t keys, struct bench_cfg *cfg)
{
        uint64_t now = monotonic_ms();
        char key[32];
        for (uint64_t i = 0; i < keys; i++) {
                int len = snprintf(key, sizeof(key), "key:%" PRIu64, i);
                struct ngr_node *n =
                    node_new(z, crc32_nibbles(key, (size_t)len), key, (size_t)len, now, false);
                if (!n) {
                        snprintf(cfg->err, sizeof(cfg->err), "nginx-real: slab full at %s", key);
                        return -ENOSPC;
                }
                n->excess = (uint64_t)-1000;
                n->last = now;
        }
        return 0;
}

static void *nr_setup(struct bench_cfg *cfg)
{
        crc_init();
        ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        uint64_t npages = (cfg->keys + PAGE_CHUNKS - 1) / PAGE_CHUNKS;
        size_t head = (sizeof(struct ngr_zone) + PAGE_SIZE_ - 1) & ~(size_t)(PAGE_SIZE_ - 1);
        size_t pages_at = head + npages * PAGE_SIZE_;
        size_t size = pages_at + npages * sizeof(struct ngr_page);
        int huge;
        struct ngr_zone *z = bench_zone_map(&size, cfg->backing, &huge);
        if (!z) {
                snprintf(cfg->err, sizeof(cfg->err), "nginx-real: mmap %zu bytes: %s", size,
                         strerror(errno));
                return NULL;
        }
        z->size = size;
        z->huge = huge;
        z->chunks = (struct ngr_node *)((char *)z + head);
        z->pages = (struct ngr_page *)((char *)z + pages_at);
        z->npages = (uint32_t)npages;
        z->fresh = 0;
        z->partial = PAGE_NONE;
        z->root = &z->sentinel;
        z->queue.prev = z->queue.next = &z->queue;
        unsigned __int128 r = (unsigned __int128)cfg->rate_n * 1000000000000ull / cfg->period_ns;
        z->rate = r > UINT64_MAX / 1000000 ? UINT64_MAX / 1000000 : (uint64_t)r;
        z->burst = (cfg->burst - 1) * 1000; /* nginx's burst = B - 1 (see the top) */
        z->max_cost = cfg->burst;
        z->churn = cfg->idle_ttl_ns != 0;
        z->idle_ms = z->churn ? cfg->idle_ttl_ns / 1000000 : NGINX_IDLE_MS;
        if (sem_init(&z->mtx.sem, 1, 0) != 0) {
                snprintf(cfg->err, sizeof(cfg->err), "nginx-real: sem_init: %s", strerror(errno));
                munmap(z, size);
                return NULL;
        }
        if (!z->churn && zone_fill(z, cfg->keys, cfg) < 0) {
                sem_destroy(&z->mtx.sem);
                munmap(z, size);
                return NULL;
        }
        return z;
}

static void nr_describe(const void *state, char *out, size_t len)
{
        const struct ngr_zone *z = state;
        snprintf(out, len, "%s, zone %.1f MiB, clock every %u requests",
                 z->huge ? "hugetlb" : "shm (4 kB pages)", (double)z->size / 1048576.0,
                 CLOCK_EVERY);
}

static void *nr_attach(void *state)
{
        struct ngr_handle *h = malloc(sizeof(*h));
        if (!h)
                return NULL;
        *h = (struct ngr_handle){.z = state, .pid = (uint64_t)getpid(), .until_refresh = 0};
        return h;
}

static int nr_try(void *handle, uint64_t key_index, const char *key, size_t key_len, uint64_t cost)
{
        struct ngr_handle *h = handle;
        struct ngr_zone *z = h->z;
        (void)key_index;
        if (key_len == 0)
                return -EINVAL;
        if (key_len > NGR_KEY_MAX)
                return -ENAMETOOLONG;
        if (cost > z->max_cost)
                return -ERANGE;
        if (h->until_refresh-- == 0) { /* ngx_time_update, once per event-loop iteration */
                h->now = monotonic_ms();
                h->until_refresh = CLOCK_EVERY - 1;
        }
        uint32_t hash = crc32_nibbles(key, key_len);
        shmtx_lock(&z->mtx, h->pid);
        int rc = lookup(z, hash, key, key_len, cost, h->now);
        shmtx_unlock(&z->mtx, h->pid);
        return rc;
}

static void nr_detach(void *handle)
{
        free(handle);
}

static void nr_teardown(void *state)
{
        struct ngr_zone *z = state;
        if (!z)
                return;
        sem_destroy(&z->mtx.sem);
        munmap(z, z->size);
}

static int nr_evictions(void *state, struct bench_evictions *out)
{
        const struct ngr_zone *z = state;
        if (!z->churn)
                return -ENOTSUP;
        *out = (struct bench_evictions){
            .idle = atomic_load_explicit(&z->counts.expired, memory_order_relaxed),
            .full = atomic_load_explicit(&z->counts.forced, memory_order_relaxed),
            .insert_fail = atomic_load_explicit(&z->counts.insert_fail, memory_order_relaxed),
            .live = atomic_load_explicit(&z->counts.live, memory_order_relaxed),
            .has = BENCH_EV_IDLE | BENCH_EV_FULL | BENCH_EV_FAIL | BENCH_EV_LIVE};
        return 0;
}

const struct bench_backend bench_nginx_real = {
    .name = "nginx-real",
    .what = "nginx limit_req as nginx runs it: crc32, ngx_shmtx (spin, sem), rbtree, LRU move per "
            "request, ms clock cached per 64 requests",
    .setup = nr_setup,
    .attach = nr_attach,
    .try_key = nr_try,
    .detach = nr_detach,
    .teardown = nr_teardown,
    .evictions = nr_evictions,
    .describe = nr_describe,
};
