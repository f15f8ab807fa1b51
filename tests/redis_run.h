/*
 * redis_run.h - real redis-server processes for tests (test_rlink): each on a free loopback port
 * (127.0.0.1, and ::1 where the host has it) in a temp directory of its own, nothing persisted
 * (--save "" --appendonly no), its output in DIR/redis.log; a 3-master Redis Cluster made with
 * redis-cli --cluster create. The servers are the test process's children and die with it
 * (PR_SET_PDEATHSIG), so a failed test leaves no server running.
 *
 * Every start waits (generously: the machine may be loaded) until the server answers PING, or
 * the cluster reports cluster_state:ok on every node; failures return -errno with the reason and
 * the server log's tail on stderr. Not thread-safe (a test's main thread).
 */
#ifndef THR_TEST_REDIS_RUN_H
#define THR_TEST_REDIS_RUN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include <hiredis/hiredis.h>

#define TREDIS_MAX_ARGS 16

struct tredis {
        pid_t pid; /* 0: not running */
        int port;
        char dir[256];                    /* its temp directory (removed by tredis_stop) */
        char sock[300];                   /* its unix socket, "" if none */
        char extra[TREDIS_MAX_ARGS][128]; /* the extra arguments, for tredis_restart */
        int nextra;
};

/* Whether redis-server and redis-cli can be run; WHY filled if not. */
bool tredis_available(char *why, size_t whylen);

/*
 * tredis_start - a redis-server with EXTRA_ARGS (NULL-terminated, NULL: none; e.g.
 * "--requirepass", "pw"). "--unixsocket" alone (no value after it) asks for a unix socket in the
 * server's directory: its path in r->sock. 0 once it answers PING, or -errno.
 */
int tredis_start(struct tredis *r, const char *const *extra_args);
/* Send SIG to the server and wait for it to exit (SIGKILL if it does not within 10 s). */
void tredis_kill(struct tredis *r, int sig);
/* Start it again (killed first if running): same port, same arguments, empty data. */
int tredis_restart(struct tredis *r);
/* Kill it and remove its directory. */
void tredis_stop(struct tredis *r);

/* A command on a fresh connection to R (no AUTH), as redisCommand's FMT; NULL if it could not
 * connect or send (reason on stderr). The caller frees the reply. */
redisReply *tredis_command(const struct tredis *r, const char *fmt, ...);

struct tredis_cluster {
        struct tredis node[3];
};

/* Three masters, cluster-enabled (node timeout 5 s), slots spread by redis-cli --cluster create
 * ... --cluster-replicas 0 --cluster-yes; 0 once every node says cluster_state:ok, or -errno. */
int tredis_cluster_start(struct tredis_cluster *c);
void tredis_cluster_stop(struct tredis_cluster *c);
/* The index of the node of C that owns SLOT (by CLUSTER NODES of node 0), or -1. */
int tredis_cluster_owner(struct tredis_cluster *c, unsigned slot);
/* Limiter names g0, g1, ... into NAMES, NAMES[i] one whose lease hash {PREFIX:NAME}:leases
 * (daemon/global.c) lives on node i (by the cluster's own CLUSTER KEYSLOT); 0 or -1. */
int tredis_cluster_spread(struct tredis_cluster *c, const char *prefix, char names[3][32]);
/* The node ID (40 hex digits) of R into ID (41 bytes); 0 or -1. */
int tredis_node_id(const struct tredis *r, char *id);

#endif
