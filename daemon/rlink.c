/*
 * rlink.c - a small blocking Redis client for throttled's global limiters (see rlink.h), over
 * hiredis 0.14 (which knows neither clusters nor ACL users' AUTH).
 *
 * Routing. The first call connects to the seed address and asks CLUSTER SLOTS: an error saying
 * cluster support is disabled means a single instance, and every command goes to the seed;
 * otherwise the reply maps each of the 16384 slots to a master in a bounded node table (64
 * entries, each an address and a lazily opened connection), and a command goes to the owner of
 * its key's slot (the seed when the slot is unmapped or there is no key). A MOVED reply is the
 * cluster saying the map is stale: the map is refreshed and the slot given to the node MOVED
 * named (that node answered for it last, so it wins over a refresh from a node that has not
 * heard yet). An ASK reply is one key of a slot being migrated: ASKING and the command go to the
 * named node once, the map is not changed. At most 5 redirections per call.
 *
 * Failures. A connection error or timeout closes that connection and fails the call (no retry
 * inside a call: the caller's lease period is the retry loop, and a blocked call must stay
 * within its timeouts); the next call reconnects. In cluster mode it also marks the map stale:
 * the next call refreshes it first (the seed, then up to 2 known nodes, and only while one
 * node's timeouts are not spent: a silent cluster costs no timeout per node), so a slot whose
 * master moved is found, and a dead master's slots fail fast (connection refused) while the
 * others work.
 * Everything parsed from the network (CLUSTER SLOTS, redirections) is checked: slot ranges,
 * ports, address lengths. A bad CLUSTER SLOTS reply leaves the map as it was (and fails the call
 * when it is the seed's first answer); a bad redirection fails the call.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "rlink.h"

#define RL_SLOTS         16384
#define RL_NODES         64
#define RL_NONE          0xff /* slot owner: unmapped */
#define RL_REDIRECTS     5
#define RL_REFRESH_TRIES 3   /* nodes asked for CLUSTER SLOTS by one refresh */
#define RL_MS            500 /* default timeouts */

struct rnode {
        char host[256]; /* "" : free entry; for the seed, the unix path when port is 0 */
        int port;
        redisContext *c; /* NULL: not connected */
};

struct rlink {
        struct rlink_cfg cfg;
        char bad[320];               /* why cfg.addr is unusable ("" : fine) */
        struct rnode seed;           /* the configured address (its own connection) */
        bool probed;                 /* CLUSTER SLOTS answered: cluster is known */
        bool cluster;                /* slots are routed through map/node */
        bool stale;                  /* a node failed: refresh the map before the next command */
        uint8_t map[RL_SLOTS];       /* slot -> node index, or RL_NONE */
        struct rnode node[RL_NODES]; /* cluster masters (and ASK targets) */
};

/* ------------------------------------------------------------------------------ helpers */

static void fail(char *err, size_t errlen, const char *fmt, ...)
{
        if (!err || !errlen)
                return;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
}

static const char *node_name(const struct rnode *n, char *buf, size_t len)
{
        if (n->port == 0)
                snprintf(buf, len, "unix:%s", n->host);
        else if (strchr(n->host, ':'))
                snprintf(buf, len, "[%s]:%d", n->host, n->port);
        else
                snprintf(buf, len, "%s:%d", n->host, n->port);
        return buf;
}

/* A decimal number of S's LEN bytes into *V, at most MAX; false if not one. */
static bool parse_num(const char *s, size_t len, long max, long *v)
{
        long x = 0;
        if (len == 0 || len > 6)
                return false;
        for (size_t i = 0; i < len; i++) {
                if (s[i] < '0' || s[i] > '9')
                        return false;
                x = x * 10 + (s[i] - '0');
        }
        if (x > max)
                return false;
        *v = x;
        return true;
}

/*
 * "host:port", "[v6]:port" or "v6:port" (the port after the last colon, as Redis writes
 * redirections) of LEN bytes into N's host and port (1..65535). DEF: the host when S has none
 * (Redis writes ":port" for a node whose address it does not know as the peer saw it).
 */
static bool parse_hostport(const char *s, size_t len, const char *def, struct rnode *n)
{
        const char *colon = memrchr(s, ':', len);
        long port;
        if (!colon || !parse_num(colon + 1, len - (size_t)(colon + 1 - s), 65535, &port) ||
            port == 0)
                return false;
        const char *h = s;
        size_t hl = (size_t)(colon - s);
        if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') {
                h++;
                hl -= 2;
        }
        if (hl == 0 && def) {
                h = def;
                hl = strlen(def);
        }
        if (hl == 0 || hl >= sizeof(n->host) || memchr(h, '\0', hl) || memchr(h, '[', hl) ||
            memchr(h, ']', hl))
                return false;
        memcpy(n->host, h, hl);
        n->host[hl] = '\0';
        n->port = (int)port;
        return true;
}

/* The configured address into the seed, or the reason in l->bad. */
static void parse_seed(struct rlink *l)
{
        const char *a = l->cfg.addr;
        size_t len = strnlen(a, sizeof(l->cfg.addr));
        if (len == sizeof(l->cfg.addr) ||
            strnlen(l->cfg.user, sizeof(l->cfg.user)) == sizeof(l->cfg.user) ||
            strnlen(l->cfg.password, sizeof(l->cfg.password)) == sizeof(l->cfg.password)) {
                snprintf(l->bad, sizeof(l->bad), "redis: address, user or password too long");
                return;
        }
        if (strncmp(a, "unix:", 5) == 0) {
                if (len == 5 || len - 5 >= 108) /* sun_path */
                        snprintf(l->bad, sizeof(l->bad), "redis \"%s\": bad unix socket path", a);
                else
                        memcpy(l->seed.host, a + 5, len - 5 + 1);
                return;
        }
        if (!parse_hostport(a, len, NULL, &l->seed))
                snprintf(l->bad, sizeof(l->bad),
                         "redis \"%.200s\": bad address (host:port, [v6]:port or unix:/path)", a);
}

/* ------------------------------------------------------------------------- connections */

static void node_drop(struct rnode *n)
{
        if (n->c)
                redisFree(n->c);
        n->c = NULL;
}

static struct timeval ms_tv(unsigned ms, unsigned def)
{
        if (ms == 0)
                ms = def;
        return (struct timeval){.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
}

static uint64_t mono_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* One command on N's connection and its whole reply within the I/O timeout (hiredis's timeout
 * is per read: a server that trickles a reply a byte at a time would hold the call forever).
 * NULL with the connection's error set (EAGAIN: the timeout). */
static redisReply *node_command(struct rlink *l, struct rnode *n, int argc, const char **argv,
                                const size_t *lens)
{
        redisContext *c = n->c;
        unsigned ms = l->cfg.io_timeout_ms ? l->cfg.io_timeout_ms : RL_MS;
        uint64_t end = mono_ms() + ms;
        void *r = NULL;
        int done = 0;
        if (redisAppendCommandArgv(c, argc, argv, lens) != REDIS_OK)
                return NULL;
        for (;;) {
                uint64_t now = mono_ms();
                if (now >= end) {
                        c->err = REDIS_ERR_IO;
                        snprintf(c->errstr, sizeof(c->errstr), "no whole reply within %u ms", ms);
                        errno = EAGAIN;
                        return NULL;
                }
                if (redisSetTimeout(c, ms_tv((unsigned)(end - now), RL_MS)) != REDIS_OK)
                        return NULL;
                if (!done) {
                        if (redisBufferWrite(c, &done) != REDIS_OK)
                                return NULL;
                        continue;
                }
                if (redisGetReplyFromReader(c, &r) != REDIS_OK)
                        return NULL;
                if (r)
                        return r;
                if (redisBufferRead(c) != REDIS_OK)
                        return NULL;
        }
}

/* AUTH on N's fresh connection with the configured user and password; false with ERR. */
static bool node_auth(struct rlink *l, struct rnode *n, char *err, size_t errlen)
{
        char name[300];
        const char *argv[3];
        int argc = 0;
        argv[argc++] = "AUTH";
        if (l->cfg.user[0])
                argv[argc++] = l->cfg.user;
        argv[argc++] = l->cfg.password;
        redisReply *r = node_command(l, n, argc, argv, NULL);
        bool ok = r && r->type == REDIS_REPLY_STATUS;
        if (!r)
                fail(err, errlen, "redis %s: AUTH: %s", node_name(n, name, sizeof(name)),
                     n->c->errstr);
        else if (!ok)
                fail(err, errlen, "redis %s: AUTH refused: %s", node_name(n, name, sizeof(name)),
                     r->type == REDIS_REPLY_ERROR ? r->str : "not OK");
        if (r)
                freeReplyObject(r);
        return ok;
}

static bool node_connect(struct rlink *l, struct rnode *n, char *err, size_t errlen)
{
        char name[300];
        struct timeval ct = ms_tv(l->cfg.connect_timeout_ms, RL_MS);
        n->c = n->port ? redisConnectWithTimeout(n->host, n->port, ct)
                       : redisConnectUnixWithTimeout(n->host, ct);
        if (!n->c) {
                fail(err, errlen, "redis %s: connect: out of memory",
                     node_name(n, name, sizeof(name)));
                return false;
        }
        if (n->c->err) {
                fail(err, errlen, "redis %s: connect: %s", node_name(n, name, sizeof(name)),
                     n->c->errstr);
                node_drop(n);
                return false;
        }
        if (redisSetTimeout(n->c, ms_tv(l->cfg.io_timeout_ms, RL_MS)) != REDIS_OK) {
                fail(err, errlen, "redis %s: set timeout: %s", node_name(n, name, sizeof(name)),
                     n->c->errstr);
                node_drop(n);
                return false;
        }
        if (l->cfg.password[0] && !node_auth(l, n, err, errlen)) {
                node_drop(n);
                return false;
        }
        return true;
}

/* One command on N (connected first if need be; ASKING first if ASKING). NULL with ERR when the
 * connection failed: it is dropped, and in cluster mode the map marked stale. */
static redisReply *node_call(struct rlink *l, struct rnode *n, bool asking, int argc,
                             const char **argv, const size_t *lens, char *err, size_t errlen)
{
        char name[300];
        if (!n->c && !node_connect(l, n, err, errlen))
                goto failed;
        if (asking) {
                const char *asking_argv[] = {"ASKING"};
                redisReply *a = node_command(l, n, 1, asking_argv, NULL);
                bool ok = a && a->type == REDIS_REPLY_STATUS;
                if (a)
                        freeReplyObject(a);
                if (!ok) {
                        fail(err, errlen, "redis %s: ASKING: %s", node_name(n, name, sizeof(name)),
                             a ? "refused" : n->c->errstr);
                        goto drop;
                }
        }
        redisReply *r = node_command(l, n, argc, argv, lens);
        if (r)
                return r;
        if (n->c->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK))
                fail(err, errlen, "redis %s: no reply within %u ms",
                     node_name(n, name, sizeof(name)),
                     l->cfg.io_timeout_ms ? l->cfg.io_timeout_ms : RL_MS);
        else
                fail(err, errlen, "redis %s: %s", node_name(n, name, sizeof(name)), n->c->errstr);
drop:
        node_drop(n);
failed:
        if (l->cluster)
                l->stale = true;
        return NULL;
}

/* ----------------------------------------------------------------------------- the map */

/* The index of the node at HOST:PORT, added if new (a free entry reused); -1 if the table is
 * full. */
static int node_get(struct rlink *l, const struct rnode *at)
{
        int free_i = -1;
        for (int i = 0; i < RL_NODES; i++) {
                if (l->node[i].host[0] == '\0') {
                        if (free_i < 0)
                                free_i = i;
                } else if (l->node[i].port == at->port && !strcmp(l->node[i].host, at->host)) {
                        return i;
                }
        }
        if (free_i >= 0) {
                l->node[free_i] = (struct rnode){.port = at->port};
                memcpy(l->node[free_i].host, at->host, sizeof(at->host));
        }
        return free_i;
}

/* Free the nodes no slot maps to (closing their connections). */
static void nodes_gc(struct rlink *l)
{
        bool used[RL_NODES] = {false};
        for (int s = 0; s < RL_SLOTS; s++)
                if (l->map[s] != RL_NONE)
                        used[l->map[s]] = true;
        for (int i = 0; i < RL_NODES; i++)
                if (!used[i] && l->node[i].host[0]) {
                        node_drop(&l->node[i]);
                        l->node[i].host[0] = '\0';
                }
}

/* One range of CLUSTER SLOTS ([start, end, [host, port, ...], replicas...]) into MAP, asked of
 * FROM; false with ERR if malformed. A master with an unknown endpoint ("?") is left unmapped. */
static bool map_range(struct rlink *l, const redisReply *e, const struct rnode *from, uint8_t *map,
                      char *err, size_t errlen)
{
        const redisReply *m =
            e->type == REDIS_REPLY_ARRAY && e->elements >= 3 ? e->element[2] : NULL;
        if (!m || e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER || m->type != REDIS_REPLY_ARRAY ||
            m->elements < 2 || m->element[0]->type != REDIS_REPLY_STRING ||
            m->element[1]->type != REDIS_REPLY_INTEGER) {
                fail(err, errlen, "malformed range");
                return false;
        }
        long long lo = e->element[0]->integer, hi = e->element[1]->integer;
        long long port = m->element[1]->integer;
        const char *h = m->element[0]->str;
        size_t hl = m->element[0]->len;
        if (lo < 0 || hi >= RL_SLOTS || lo > hi || port < 0 || port > 65535) {
                fail(err, errlen, "bad range %lld-%lld or port %lld", lo, hi, port);
                return false;
        }
        if ((hl == 1 && h[0] == '?') || port == 0)
                return true;
        if (hl == 0 && from->port == 0)
                return true; /* asked over a unix socket: no host to assume */
        if (hl == 0) {
                h = from->host;
                hl = strlen(h);
        }
        struct rnode at = {.port = (int)port};
        if (hl >= sizeof(at.host) || memchr(h, '\0', hl)) {
                fail(err, errlen, "bad host of %zu bytes", hl);
                return false;
        }
        memcpy(at.host, h, hl);
        int i = node_get(l, &at);
        if (i < 0) {
                fail(err, errlen, "more than %d nodes", RL_NODES);
                return false;
        }
        memset(map + lo, i, (size_t)(hi - lo + 1));
        return true;
}

/* CLUSTER SLOTS of FROM into the map (and cluster mode); the map is kept if the reply is bad.
 * 1: mapped, 0: not a cluster, -1: failed with ERR. */
static int map_from(struct rlink *l, struct rnode *from, char *err, size_t errlen)
{
        char name[300], why[160] = "";
        const char *argv[2] = {"CLUSTER", "SLOTS"};
        redisReply *r = node_call(l, from, false, 2, argv, NULL, err, errlen);
        if (!r)
                return -1;
        int rc = -1;
        if (r->type == REDIS_REPLY_ERROR && strstr(r->str, "cluster support disabled")) {
                rc = 0;
        } else if (r->type == REDIS_REPLY_ERROR) {
                fail(err, errlen, "redis %s: CLUSTER SLOTS: %s",
                     node_name(from, name, sizeof(name)), r->str);
        } else if (r->type != REDIS_REPLY_ARRAY || r->elements > RL_SLOTS) {
                fail(err, errlen, "redis %s: CLUSTER SLOTS: not an array of ranges",
                     node_name(from, name, sizeof(name)));
        } else {
                uint8_t *map = malloc(RL_SLOTS);
                if (!map) {
                        fail(err, errlen, "redis: out of memory");
                        freeReplyObject(r);
                        return -1;
                }
                memset(map, RL_NONE, RL_SLOTS);
                rc = 1;
                for (size_t i = 0; i < r->elements && rc == 1; i++)
                        if (!map_range(l, r->element[i], from, map, why, sizeof(why)))
                                rc = -1;
                if (rc == 1)
                        memcpy(l->map, map, RL_SLOTS);
                else
                        fail(err, errlen, "redis %s: CLUSTER SLOTS: %s",
                             node_name(from, name, sizeof(name)), why);
                free(map);
                nodes_gc(l);
        }
        freeReplyObject(r);
        return rc;
}

/* Refresh the map from the seed, or else from known nodes in turn: at most RL_REFRESH_TRIES in
 * all, and only while the time of one node (a connect and a reply timeout) is not spent, so a
 * silent cluster does not hold the call a timeout per node. */
static bool map_refresh(struct rlink *l, char *err, size_t errlen)
{
        uint64_t end = mono_ms() + (l->cfg.connect_timeout_ms ? l->cfg.connect_timeout_ms : RL_MS) +
                       (l->cfg.io_timeout_ms ? l->cfg.io_timeout_ms : RL_MS);
        if (map_from(l, &l->seed, err, errlen) >= 0)
                goto done;
        for (int i = 0, tries = 1; i < RL_NODES && tries < RL_REFRESH_TRIES && mono_ms() < end;
             i++) {
                if (!l->node[i].host[0])
                        continue;
                tries++;
                if (map_from(l, &l->node[i], err, errlen) >= 0)
                        goto done;
        }
        return false;
done:
        l->stale = false;
        return true;
}

/* The seed's first answer to CLUSTER SLOTS: cluster or single instance. */
static bool probe(struct rlink *l, char *err, size_t errlen)
{
        int rc = map_from(l, &l->seed, err, errlen);
        if (rc < 0)
                return false;
        l->cluster = rc == 1;
        l->probed = true;
        return true;
}

/* ------------------------------------------------------------------------------ the API */

unsigned rlink_slot(const char *key, size_t len)
{
        const char *open = memchr(key, '{', len);
        if (open) {
                size_t rest = len - (size_t)(open + 1 - key);
                const char *close = memchr(open + 1, '}', rest);
                if (close && close > open + 1) {
                        key = open + 1;
                        len = (size_t)(close - key);
                }
        }
        uint16_t crc = 0;
        for (size_t i = 0; i < len; i++) {
                crc ^= (uint16_t)((unsigned char)key[i] << 8);
                for (int b = 0; b < 8; b++)
                        crc = (uint16_t)(crc & 0x8000 ? (crc << 1) ^ 0x1021 : crc << 1);
        }
        return crc % RL_SLOTS;
}

struct rlink *rlink_new(const struct rlink_cfg *cfg)
{
        struct rlink *l = calloc(1, sizeof(*l));
        if (!l)
                return NULL;
        l->cfg = *cfg;
        memset(l->map, RL_NONE, sizeof(l->map));
        parse_seed(l);
        return l;
}

void rlink_free(struct rlink *l)
{
        if (!l)
                return;
        node_drop(&l->seed);
        for (int i = 0; i < RL_NODES; i++)
                node_drop(&l->node[i]);
        free(l);
}

/* A redirection "MOVED|ASK <slot> <addr>" (E, from node FROM) into *SLOT and AT. */
static bool parse_redirect(const redisReply *e, const struct rnode *from, long *slot,
                           struct rnode *at)
{
        const char *sp1 = memchr(e->str, ' ', e->len);
        const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', e->len - (size_t)(sp1 + 1 - e->str)) : NULL;
        if (!sp2 || !parse_num(sp1 + 1, (size_t)(sp2 - sp1 - 1), RL_SLOTS - 1, slot))
                return false;
        return parse_hostport(sp2 + 1, e->len - (size_t)(sp2 + 1 - e->str),
                              from->port ? from->host : NULL, at);
}

static bool is_redirect(const redisReply *r, const char *what)
{
        size_t n = strlen(what);
        return r->type == REDIS_REPLY_ERROR && r->len > n && !strncmp(r->str, what, n) &&
               r->str[n] == ' ';
}

/* The node for SLOT (-1: none): its owner, or the seed. */
static struct rnode *route(struct rlink *l, long slot)
{
        if (!l->cluster || slot < 0 || l->map[slot] == RL_NONE)
                return &l->seed;
        return &l->node[l->map[slot]];
}

/* Send to N then follow redirections (SLOT: the key's slot, -1 if none). */
static redisReply *call_routed(struct rlink *l, struct rnode *n, int argc, const char **argv,
                               const size_t *lens, char *err, size_t errlen)
{
        char name[300];
        bool asking = false;
        for (int hop = 0;; hop++) {
                redisReply *r = node_call(l, n, asking, argc, argv, lens, err, errlen);
                bool moved = r && is_redirect(r, "MOVED"), ask = r && is_redirect(r, "ASK");
                if (!moved && !ask)
                        return r;
                long slot;
                struct rnode at;
                bool ok = parse_redirect(r, n, &slot, &at);
                if (!ok || hop == RL_REDIRECTS) {
                        fail(err, errlen, "redis %s: %s: %.*s", node_name(n, name, sizeof(name)),
                             ok ? "too many redirections" : "bad redirection", (int)r->len, r->str);
                        freeReplyObject(r);
                        return NULL;
                }
                freeReplyObject(r);
                if (moved) {
                        l->cluster = true;
                        (void)map_refresh(l, NULL, 0); /* MOVED's word wins, below */
                }
                int i = node_get(l, &at);
                if (i < 0) {
                        nodes_gc(l);
                        i = node_get(l, &at);
                }
                if (i < 0) {
                        fail(err, errlen, "redis %s: more than %d nodes", at.host, RL_NODES);
                        return NULL;
                }
                if (moved)
                        l->map[slot] = (uint8_t)i;
                n = &l->node[i];
                asking = ask;
        }
}

redisReply *rlink_commandv(struct rlink *l, int argc, const char **argv, const size_t *lens,
                           int keyidx, char *err, size_t errlen)
{
        if (l->bad[0]) {
                fail(err, errlen, "%s", l->bad);
                return NULL;
        }
        if (argc < 1 || keyidx >= argc) {
                fail(err, errlen, "redis %s: bad command (argc %d, key index %d)", l->cfg.addr,
                     argc, keyidx);
                return NULL;
        }
        if (!l->probed && !probe(l, err, errlen))
                return NULL;
        if (l->cluster && l->stale)
                (void)map_refresh(l, NULL, 0); /* failing, route by the map we have */
        size_t *own = NULL;
        if (!lens) {
                own = malloc((size_t)argc * sizeof(*own));
                if (!own) {
                        fail(err, errlen, "redis %s: out of memory", l->cfg.addr);
                        return NULL;
                }
                for (int i = 0; i < argc; i++)
                        own[i] = strlen(argv[i]);
                lens = own;
        }
        long slot = keyidx >= 0 ? (long)rlink_slot(argv[keyidx], lens[keyidx]) : -1;
        redisReply *r = call_routed(l, route(l, slot), argc, argv, lens, err, errlen);
        free(own);
        return r;
}

redisReply *rlink_eval(struct rlink *l, const char *script, const char *key, int argc,
                       const char **argv, char *err, size_t errlen)
{
        if (argc < 0) {
                fail(err, errlen, "redis %s: bad EVAL argc %d", l->cfg.addr, argc);
                return NULL;
        }
        const char **all = malloc(((size_t)argc + 4) * sizeof(*all));
        if (!all) {
                fail(err, errlen, "redis %s: out of memory", l->cfg.addr);
                return NULL;
        }
        all[0] = "EVAL";
        all[1] = script;
        all[2] = "1";
        all[3] = key;
        for (int i = 0; i < argc; i++)
                all[4 + i] = argv[i];
        redisReply *r = rlink_commandv(l, argc + 4, all, NULL, 3, err, errlen);
        free(all);
        return r;
}

bool rlink_is_cluster(const struct rlink *l)
{
        return l->cluster;
}

bool rlink_connected(const struct rlink *l)
{
        if (l->seed.c)
                return true;
        for (int i = 0; i < RL_NODES; i++)
                if (l->node[i].c)
                        return true;
        return false;
}

const char *rlink_addr(const struct rlink *l)
{
        return l->cfg.addr;
}
