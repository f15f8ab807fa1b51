/*
 * rlink.h - throttled's link to Redis (a single instance or a Redis Cluster): one blocking
 * connection per node, commands routed by their key's hash slot, MOVED and ASK followed. For
 * global limiters, which lease their share of a global rate with one Lua script per limiter.
 *
 * Not thread-safe: one thread owns a link (no locking inside). Every call may block on the
 * network: each connect and each reply is bounded by the configured timeouts, and a call makes
 * at most a map refresh (up to 3 nodes asked, after a failure or a MOVED), the command and 5
 * redirections. A host name is resolved by getaddrinfo on each connect, which the connect
 * timeout does not bound (use an address literal where DNS may hang). A write to a connection
 * the server closed can raise SIGPIPE: the process ignores it (throttled does, main.c).
 */
#ifndef THR_RLINK_H
#define THR_RLINK_H

#include <stdbool.h>
#include <stddef.h>

#include <hiredis/hiredis.h>

struct rlink_cfg {
        char addr[256];              /* "host:port" (IPv4/IPv6 literal, "[v6]:port" or name) or
                                        "unix:/path/to.sock" */
        char user[64];               /* ACL user ("" : none; AUTH password alone) */
        char password[128];          /* "" : no AUTH */
        unsigned connect_timeout_ms; /* 0: 500 */
        unsigned io_timeout_ms;      /* 0: 500 */
};

struct rlink;

/* A link with CFG (copied); no I/O, the address is checked on the first call. NULL on ENOMEM. */
struct rlink *rlink_new(const struct rlink_cfg *cfg);
/* Close the link's connections and free it (NULL: nothing). */
void rlink_free(struct rlink *l);

/* Hash slot of a key, with Redis Cluster's hash-tag rule ({...}), CRC16-XMODEM mod 16384. */
unsigned rlink_slot(const char *key, size_t len);

/*
 * rlink_commandv - send ARGV (ARGC strings, LENS bytes each; LENS NULL: strlen) to the master that
 * serves argv[KEYIDX]'s slot (KEYIDX < 0: any node; the seed). Connects on first use or after an
 * error (AUTH with user/password if set); on first connect finds out whether the seed is a
 * cluster (CLUSTER SLOTS; "cluster support disabled" error => single-instance mode) and maps
 * slots to masters. Follows MOVED (update the slot's owner, refresh the map with CLUSTER SLOTS,
 * retry) and ASK (ASKING then the command on the named node, map unchanged), at most 5
 * redirections. A connection error or timeout drops the connection (next call reconnects; in
 * cluster mode the map is refreshed first, via the seed or else any known node). Returns the
 * reply (the caller frees it with freeReplyObject; an error reply other than MOVED/ASK, e.g. a
 * script error, is returned as a REDIS_REPLY_ERROR reply), or NULL with a one-line reason in ERR
 * (ERRLEN bytes; ERR may be NULL) naming the address and what failed.
 */
redisReply *rlink_commandv(struct rlink *l, int argc, const char **argv, const size_t *lens,
                           int keyidx, char *err, size_t errlen);

/* EVAL SCRIPT 1 KEY ARGV... routed by KEY (a wrapper over rlink_commandv). */
redisReply *rlink_eval(struct rlink *l, const char *script, const char *key, int argc,
                       const char **argv, char *err, size_t errlen);

bool rlink_is_cluster(const struct rlink *l);  /* known after the first successful call */
bool rlink_connected(const struct rlink *l);   /* some connection of the link is open */
const char *rlink_addr(const struct rlink *l); /* the seed address as configured */

#endif
