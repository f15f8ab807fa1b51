/*
 * http.c - throttled's HTTP API server: libmicrohttpd (its internal polling thread), the waits
 * and the bounds. What a request means is http_routes.c's; this file only carries it.
 *
 * Threads:
 *  - libmicrohttpd's polling thread reads requests, decides those that need no wait (a try, a
 *    stat, a spend without timeout: nanoseconds to microseconds, lock-free), and answers.
 *  - The timer thread holds the rate waits: an acquire took its place (thr_limiter_reserve) and
 *    its connection is suspended (MHD_suspend_connection) until the place is due, when it is
 *    resumed and answered. While it waits, the timer thread polls the client's socket for a
 *    hang-up (POLLRDHUP): a client that leaves gets its place given back
 *    (thr_reservation_cancel), so the key's TAT goes back. It also drops slow clients: a
 *    connection that has not completed a request within http_timeout_ms of its start (or of its
 *    last answer) is shut down, which a client sending a byte a second cannot delay.
 *  - http_waiters waiter threads run the waits that sleep in the kernel (a lease, a spend or a
 *    composed acquire with a timeout). When none is free, the request is refused at once with
 *    503 EBUSY: no request queues without a thread.
 *
 * A suspended connection is touched by one thread at a time: the polling thread until it
 * suspends it (before handing it over), then the timer or waiter thread until it resumes it
 * (MHD_resume_connection, a mutex inside libmicrohttpd: what that thread wrote is seen by the
 * polling thread that answers).
 *
 * The socket contexts (struct sock) are added and removed by libmicrohttpd's connection
 * notifications under H->mu, and the timer thread shuts a socket down only under H->mu: the
 * CLOSED notification comes before libmicrohttpd closes the descriptor, so a shutdown never hits
 * a descriptor number reused by another connection.
 */
#include <errno.h>
#include <fcntl.h>
#include <microhttpd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sysexits.h>
#include <time.h>
#include <unistd.h>

#include "http.h"
#include "listen.h"
#include "log.h"

#define HTTP_MHD_MEMORY (64u << 10) /* libmicrohttpd's memory per connection (headers) */
#define HTTP_MHD_EXTRA  16u         /* connections past the bound answered 503 before closed */
#define HTTP_TOKEN_MAX  4096

struct sock {
        struct sock *next, *prev;
        int fd;
        uint64_t deadline_ms; /* CLOCK_MONOTONIC; UINT64_MAX while a wait holds the request */
        bool over;            /* past http_max_connections: answered 503 */
};

struct conn {
        struct http *h;
        struct MHD_Connection *c;
        struct sock *sk;
        char *body;
        size_t len, cap;
        bool too_big;
        int state; /* 0 reading, 1 waiting (suspended), 2 answered by a wait */
        bool owed; /* resumed with an answer not yet sent (H->owed counts): until completed */
        struct http_out out;
        struct conn *next; /* in the timer's list, or the waiters' queue */
};

struct http {
        int fd;
        char addr[128];
        char unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
        struct MHD_Daemon *d;
        thr_arena *a;
        struct http_api *api;
        uint64_t max_conn, max_body, timeout_ms;
        pthread_mutex_t mu; /* everything below */
        pthread_cond_t cv;
        struct sock *socks;
        uint64_t nsocks;
        struct conn *timers, *queue;
        uint64_t free_waiters;
        uint64_t owed; /* connections resumed whose answer is not yet queued */
        pthread_t *waiters;
        size_t nwaiters;
        pthread_t timer;
        bool timer_running, stop;
        int wake[2];
        bool has_token;
        size_t token_len;
        char token[HTTP_TOKEN_MAX];
};

static uint64_t mono_ms(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---------------------------------------------------------------- the token */

/* Read the token file PATH into H (under H->mu); 0, or -1 after logging why not. */
static int token_read(struct http *h, const char *path)
{
        if (!*path) {
                pthread_mutex_lock(&h->mu);
                h->has_token = false;
                pthread_mutex_unlock(&h->mu);
                return 0;
        }
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0) {
                log_error("http_token_file = %s: cannot open it: %s", path, strerror(errno));
                if (fd >= 0)
                        close(fd);
                return -1;
        }
        if (!S_ISREG(st.st_mode) || (st.st_mode & 0007)) {
                log_error("http_token_file = %s: %s (chmod o-rwx it: a token others can read is "
                          "no secret)",
                          path,
                          S_ISREG(st.st_mode) ? "readable or writable by others"
                                              : "not a regular file");
                close(fd);
                return -1;
        }
        char buf[HTTP_TOKEN_MAX];
        ssize_t n = read(fd, buf, sizeof(buf));
        close(fd);
        while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
                n--;
        if (n <= 0 || (size_t)n >= sizeof(buf)) {
                log_error("http_token_file = %s: %s", path,
                          n <= 0 ? "empty (or unreadable)" : "longer than 4095 bytes");
                return -1;
        }
        pthread_mutex_lock(&h->mu);
        memcpy(h->token, buf, (size_t)n);
        h->token_len = (size_t)n;
        h->has_token = true;
        pthread_mutex_unlock(&h->mu);
        return 0;
}

/* Whether the request carries the token: compared in a time that depends on the token's length
 * only, never on where a guess first differs. */
static bool token_ok(struct http *h, struct MHD_Connection *c)
{
        const char *v = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
        pthread_mutex_lock(&h->mu);
        bool ok = !h->has_token;
        if (!ok && v && !strncasecmp(v, "Bearer ", 7)) { /* the scheme: any case (RFC 9110) */
                const char *t = v + 7;
                size_t n = strlen(t);
                unsigned diff = n != h->token_len;
                for (size_t i = 0; i < h->token_len; i++)
                        diff |= (unsigned char)h->token[i] ^ (unsigned char)(i < n ? t[i] : 0);
                ok = diff == 0;
        }
        pthread_mutex_unlock(&h->mu);
        return ok;
}

/* ---------------------------------------------------------------- answers */

static enum MHD_Result send_out(struct conn *cn, struct http_out *o)
{
        struct http *h = cn->h;
        size_t len = o->body ? strlen(o->body) : 0;
        struct MHD_Response *r =
            MHD_create_response_from_buffer(len, o->body, MHD_RESPMEM_MUST_FREE);
        if (!r)
                return MHD_NO;
        o->body = NULL; /* the response frees it */
        MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
        if (o->retry_after) {
                char ra[32];
                snprintf(ra, sizeof(ra), "%llu", (unsigned long long)o->retry_after);
                MHD_add_response_header(r, MHD_HTTP_HEADER_RETRY_AFTER, ra);
        }
        if (o->allow)
                MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, o->allow);
        if (o->status == 401)
                MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
        if (cn->too_big || (cn->sk && cn->sk->over))
                MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
        enum MHD_Result rc = MHD_queue_response(cn->c, o->status, r);
        MHD_destroy_response(r);
        pthread_mutex_lock(&h->mu);
        if (cn->sk)
                cn->sk->deadline_ms = mono_ms() + h->timeout_ms;
        pthread_mutex_unlock(&h->mu);
        return rc;
}

static enum MHD_Result send_error(struct conn *cn, unsigned status, int err, const char *msg)
{
        struct http_out o = {0};
        http_error_status(&o, status, err, msg);
        return send_out(cn, &o);
}

/* ---------------------------------------------------------------- waits */

static void wake_timer(struct http *h)
{
        char b = 1;
        if (write(h->wake[1], &b, 1) < 0 && errno != EAGAIN)
                log_warn("http: cannot wake the timer thread: %s", strerror(errno));
}

/* Hand CN (suspended) to the timer or a waiter thread; -1 if no waiter is free. */
static int hand_over(struct http *h, struct conn *cn)
{
        int rc = 0;
        /* read before the lock: once listed, the timer or a waiter may rewrite CN->out */
        bool timer = cn->out.wait == HTTP_WAIT_TIMER;
        pthread_mutex_lock(&h->mu);
        if (h->stop) {
                rc = -1;
        } else if (timer) {
                cn->next = h->timers;
                h->timers = cn;
        } else if (h->free_waiters) {
                h->free_waiters--;
                cn->next = h->queue;
                h->queue = cn;
                pthread_cond_signal(&h->cv);
        } else {
                rc = -1;
        }
        if (rc == 0 && cn->sk)
                cn->sk->deadline_ms = UINT64_MAX;
        pthread_mutex_unlock(&h->mu);
        if (rc == 0 && timer)
                wake_timer(h);
        return rc;
}

static void resume(struct conn *cn)
{
        cn->state = 2;
        cn->owed = true;
        pthread_mutex_lock(&cn->h->mu);
        cn->h->owed++;
        pthread_mutex_unlock(&cn->h->mu);
        MHD_resume_connection(cn->c);
}

/* CN's request is over (answer sent, or the connection closed): the stop need not wait. */
static void paid(struct conn *cn)
{
        if (!cn->owed)
                return;
        cn->owed = false;
        pthread_mutex_lock(&cn->h->mu);
        cn->h->owed--;
        pthread_mutex_unlock(&cn->h->mu);
}

/* Whether the client of CN (suspended) has hung up. */
static bool client_gone(void *arg)
{
        struct conn *cn = arg;
        const union MHD_ConnectionInfo *ci =
            MHD_get_connection_info(cn->c, MHD_CONNECTION_INFO_CONNECTION_FD);
        struct pollfd p = {.fd = ci ? ci->connect_fd : -1, .events = POLLRDHUP};
        return p.fd >= 0 && poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR));
}

static void *waiter_main(void *arg)
{
        struct http *h = arg;
        pthread_mutex_lock(&h->mu);
        for (;;) {
                while (!h->queue && !h->stop)
                        pthread_cond_wait(&h->cv, &h->mu);
                struct conn *cn = h->queue;
                if (!cn)
                        break;
                h->queue = cn->next;
                bool stop = h->stop;
                pthread_mutex_unlock(&h->mu);
                struct http_job *job = cn->out.job;
                if (stop) {
                        http_job_drop(job);
                        memset(&cn->out, 0, sizeof(cn->out));
                        http_error_status(&cn->out, 503, EBUSY, "the server is stopping");
                } else {
                        http_job_run(job, &cn->out, client_gone, cn);
                }
                resume(cn);
                pthread_mutex_lock(&h->mu);
                h->free_waiters++;
        }
        pthread_mutex_unlock(&h->mu);
        return NULL;
}

/* The next poll's timeout: until the earliest place is due, at most 50 ms (slow clients are
 * checked that often; a manual clock is looked at that often). */
static int timer_wait_ms(struct http *h, uint64_t now)
{
        uint64_t ms = 50;
        for (struct conn *cn = h->timers; cn; cn = cn->next) {
                uint64_t left = cn->out.due_ns > now ? (cn->out.due_ns - now) / 1000000u + 1 : 0;
                ms = left < ms ? left : ms;
        }
        return (int)ms;
}

/* Shut down the connections past their deadline (slow clients). Under H->mu. */
static void drop_slow(struct http *h)
{
        uint64_t now = mono_ms();
        for (struct sock *sk = h->socks; sk; sk = sk->next) {
                if (sk->deadline_ms <= now) {
                        shutdown(sk->fd, SHUT_RDWR);
                        sk->deadline_ms = UINT64_MAX; /* once */
                }
        }
}

/* One pass: the waits that are due or whose client left, taken off the list into *DONE. */
static void timer_pass(struct http *h, struct pollfd *fds, struct conn **polled, size_t n,
                       struct conn **done)
{
        uint64_t now = 0;
        thr_clock_now(h->a, &now);
        pthread_mutex_lock(&h->mu);
        struct conn **tail = done;
        while (*tail)
                tail = &(*tail)->next;
        for (struct conn **p = &h->timers; *p;) {
                struct conn *cn = *p;
                bool left = false;
                for (size_t i = 0; i < n; i++)
                        if (polled[i] == cn)
                                left = fds[i + 1].revents & (POLLRDHUP | POLLHUP | POLLERR);
                bool due = cn->out.due_ns <= now;
                if (!left && !due && !h->stop) {
                        p = &cn->next;
                        continue;
                }
                *p = cn->next;
                cn->out.wait = due && !left ? HTTP_WAIT_TIMER : HTTP_NOW; /* the verdict */
                cn->next = NULL; /* appended: newest first, as h->timers (cancel order) */
                *tail = cn;
                tail = &cn->next;
        }
        drop_slow(h);
        pthread_mutex_unlock(&h->mu);
}

/* Room in *FDS and *POLLED for N waits (and the wake pipe); false when out of memory. */
static bool timer_room(struct pollfd **fds, struct conn ***polled, size_t *cap, size_t n)
{
        if (n <= *cap)
                return true;
        size_t c = n * 2;
        struct pollfd *f = realloc(*fds, (c + 1) * sizeof(*f));
        if (f)
                *fds = f;
        struct conn **p = realloc(*polled, c * sizeof(*p));
        if (p)
                *polled = p;
        if (!f || !p)
                return false;
        *cap = c;
        return true;
}

static void *timer_main(void *arg)
{
        struct http *h = arg;
        size_t cap = 0;
        struct pollfd *fds = NULL;
        struct conn **polled = NULL;
        bool stop = false;
        while (!stop) {
                uint64_t now = 0;
                size_t n = 0, want = 0;
                thr_clock_now(h->a, &now);
                pthread_mutex_lock(&h->mu);
                for (struct conn *cn = h->timers; cn; cn = cn->next)
                        want++;
                /* out of memory: the waits still end when due, hang-ups are seen then */
                if (!timer_room(&fds, &polled, &cap, want < 64 ? 64 : want) && !fds) {
                        pthread_mutex_unlock(&h->mu);
                        usleep(10000);
                        continue;
                }
                fds[0] = (struct pollfd){.fd = h->wake[0], .events = POLLIN};
                for (struct conn *cn = h->timers; cn && n < cap; cn = cn->next) {
                        const union MHD_ConnectionInfo *ci =
                            MHD_get_connection_info(cn->c, MHD_CONNECTION_INFO_CONNECTION_FD);
                        polled[n] = cn;
                        fds[++n] =
                            (struct pollfd){.fd = ci ? ci->connect_fd : -1, .events = POLLRDHUP};
                }
                int ms = timer_wait_ms(h, now);
                stop = h->stop;
                pthread_mutex_unlock(&h->mu);
                if (poll(fds, n + 1, stop ? 0 : ms) > 0 && (fds[0].revents & POLLIN)) {
                        char buf[64];
                        while (read(h->wake[0], buf, sizeof(buf)) > 0)
                                ;
                }
                struct conn *done = NULL;
                timer_pass(h, fds, polled, n, &done);
                while (done) {
                        struct conn *cn = done;
                        done = cn->next;
                        http_job_timer(cn->out.job, cn->out.wait == HTTP_WAIT_TIMER, &cn->out);
                        resume(cn);
                }
        }
        free(fds);
        free(polled);
        return NULL;
}

/* ---------------------------------------------------------------- requests */

struct args {
        struct http_arg a[HTTP_MAX_ARGS];
        size_t n;
        bool over;
};

static enum MHD_Result arg_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                              const char *value)
{
        struct args *ar = cls;
        (void)kind;
        if (ar->n == HTTP_MAX_ARGS) {
                ar->over = true;
                return MHD_NO;
        }
        ar->a[ar->n++] = (struct http_arg){key, value ? value : ""};
        return MHD_YES;
}

static enum MHD_Result decide(struct conn *cn, const char *url, const char *method)
{
        struct http *h = cn->h;
        if (cn->sk && cn->sk->over)
                return send_error(cn, 503, EBUSY,
                                  "too many connections (http_max_connections): try again");
        if (cn->too_big) {
                char msg[128];
                snprintf(msg, sizeof(msg), "the body is larger than http_max_body (%llu bytes)",
                         (unsigned long long)h->max_body);
                return send_error(cn, 413, EMSGSIZE, msg);
        }
        if (!token_ok(h, cn->c))
                return send_error(cn, 401, EACCES,
                                  "missing or wrong token (Authorization: Bearer <token>)");
        struct args ar = {0};
        MHD_get_connection_values(cn->c, MHD_GET_ARGUMENT_KIND, arg_cb, &ar);
        if (ar.over)
                return send_error(cn, 400, EINVAL, "too many query arguments");
        http_api_handle(h->api, method, url, ar.a, ar.n, cn->body, cn->len, &cn->out);
        if (cn->out.wait == HTTP_NOW)
                return send_out(cn, &cn->out);
        cn->state = 1;
        MHD_suspend_connection(cn->c); /* before another thread may resume it */
        if (hand_over(h, cn) == 0)
                return MHD_YES;
        http_job_drop(cn->out.job);
        memset(&cn->out, 0, sizeof(cn->out));
        http_error_status(&cn->out, 503, EBUSY,
                          "every waiter thread is busy (http_waiters): try again");
        resume(cn);
        return MHD_YES;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls)
{
        struct http *h = cls;
        struct conn *cn = *con_cls;
        (void)version;
        if (!cn) {
                cn = calloc(1, sizeof(*cn));
                if (!cn)
                        return MHD_NO;
                cn->h = h;
                cn->c = c;
                const union MHD_ConnectionInfo *ci =
                    MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
                cn->sk = ci ? ci->socket_context : NULL;
                *con_cls = cn;
                const char *cl =
                    MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
                if (cl && strtoull(cl, NULL, 10) > h->max_body)
                        cn->too_big = true;
                return MHD_YES;
        }
        if (*upload_size) {
                size_t n = *upload_size;
                *upload_size = 0;
                if (cn->too_big || cn->len + n > h->max_body) {
                        cn->too_big = true;
                        return MHD_YES;
                }
                if (cn->len + n > cn->cap) {
                        size_t cap =
                            (cn->len + n) * 2 < h->max_body ? (cn->len + n) * 2 : h->max_body;
                        char *b = realloc(cn->body, cap);
                        if (!b)
                                return MHD_NO;
                        cn->body = b;
                        cn->cap = cap;
                }
                memcpy(cn->body + cn->len, upload, n);
                cn->len += n;
                return MHD_YES;
        }
        if (cn->state == 2)
                return send_out(cn, &cn->out);
        if (cn->state == 1)
                return MHD_YES;
        return decide(cn, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
        (void)cls;
        (void)c;
        (void)toe;
        struct conn *cn = *con_cls;
        if (!cn)
                return;
        paid(cn);
        free(cn->out.body);
        free(cn->body);
        free(cn);
        *con_cls = NULL;
}

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe)
{
        struct http *h = cls;
        if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
                struct sock *sk = calloc(1, sizeof(*sk));
                const union MHD_ConnectionInfo *ci =
                    MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
                *socket_context = sk;
                if (!sk)
                        return;
                sk->fd = ci ? ci->connect_fd : -1;
                pthread_mutex_lock(&h->mu);
                sk->deadline_ms = sk->fd >= 0 ? mono_ms() + h->timeout_ms : UINT64_MAX;
                sk->over = ++h->nsocks > h->max_conn;
                sk->next = h->socks;
                if (h->socks)
                        h->socks->prev = sk;
                h->socks = sk;
                pthread_mutex_unlock(&h->mu);
                return;
        }
        struct sock *sk = *socket_context;
        if (!sk)
                return;
        pthread_mutex_lock(&h->mu);
        h->nsocks--;
        if (sk->prev)
                sk->prev->next = sk->next;
        else
                h->socks = sk->next;
        if (sk->next)
                sk->next->prev = sk->prev;
        pthread_mutex_unlock(&h->mu);
        free(sk);
        *socket_context = NULL;
}

/* ---------------------------------------------------------------- listening */

static int listen_unix(struct http *h, const char *path, gid_t gid)
{
        struct sockaddr_un sa = {.sun_family = AF_UNIX};
        struct stat st;
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
                unlink(path); /* a socket left by a daemon that died: nobody listens on it */
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0), e = 0;
        if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(path, 0660) < 0 ||
            (gid != (gid_t)-1 && chown(path, (uid_t)-1, gid) < 0) || listen(fd, 64) < 0)
                e = errno;
        if (!e) {
                snprintf(h->unix_path, sizeof(h->unix_path), "%s", path);
                return fd;
        }
        if (fd >= 0)
                close(fd);
        log_error("http: cannot listen on unix:%s: %s", path, strerror(e));
        return e == EADDRINUSE ? -EX_UNAVAILABLE : e == EACCES ? -EX_NOPERM : -EX_CANTCREAT;
}

int http_listen(const struct config *cfg, struct http **out)
{
        *out = NULL;
        if (!cfg->http_listen[0]) {
                log_info("http: off ([daemon] http is empty)");
                return 0;
        }
        struct http *h = calloc(1, sizeof(*h));
        if (!h)
                return EX_OSERR;
        h->fd = -1;
        h->wake[0] = h->wake[1] = -1;
        pthread_mutex_init(&h->mu, NULL);
        pthread_cond_init(&h->cv, NULL);
        snprintf(h->addr, sizeof(h->addr), "%s", cfg->http_listen);
        h->max_conn = cfg->http_max_conn;
        h->max_body = cfg->http_max_body;
        h->timeout_ms = cfg->http_timeout_ms;
        if (token_read(h, cfg->http_token_file) < 0) {
                http_stop(h);
                return EX_CONFIG;
        }
        h->fd = !strncmp(h->addr, "unix:", 5) ? listen_unix(h, h->addr + 5, cfg->arena.gid)
                                              : listen_tcp("http", h->addr);
        if (h->fd < 0) {
                int rc = -h->fd;
                http_stop(h);
                return rc;
        }
        *out = h;
        return 0;
}

static int start_threads(struct http *h, const struct config *cfg)
{
        if (pipe2(h->wake, O_CLOEXEC | O_NONBLOCK) < 0)
                return -1;
        h->waiters = calloc(cfg->http_waiters, sizeof(*h->waiters));
        if (!h->waiters)
                return -1;
        for (; h->nwaiters < cfg->http_waiters; h->nwaiters++) {
                if (pthread_create(&h->waiters[h->nwaiters], NULL, waiter_main, h))
                        return -1;
                pthread_mutex_lock(&h->mu);
                h->free_waiters++;
                pthread_mutex_unlock(&h->mu);
        }
        if (pthread_create(&h->timer, NULL, timer_main, h))
                return -1;
        h->timer_running = true;
        return 0;
}

int http_serve(struct http *h, const char *path, const struct config *cfg)
{
        if (!h)
                return 0;
        int rc = thr_arena_open(path, 0, &h->a);
        if (rc < 0) {
                log_error("http: cannot open arena %s as a client: %s", path, thr_strerror(rc));
                return EX_OSERR;
        }
        h->api =
            http_api_new(h->a, (uint32_t)cfg->http_max_leases, cfg->http_max_wait_ms * 1000000u);
        if (!h->api)
                return EX_OSERR;
        http_api_set_names(h->api, cfg);
        /* signals go to the main thread only: the server's threads start with all blocked */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_BLOCK, &all, &old);
        rc = start_threads(h, cfg);
        unsigned secs = (unsigned)((h->timeout_ms + 999) / 1000);
        if (rc == 0)
                h->d = MHD_start_daemon(
                    MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG |
                        MHD_ALLOW_SUSPEND_RESUME,
                    0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, listen_mhd_log,
                    (void *)"http", MHD_OPTION_LISTEN_SOCKET, h->fd, MHD_OPTION_CONNECTION_LIMIT,
                    (unsigned)(h->max_conn + HTTP_MHD_EXTRA), MHD_OPTION_CONNECTION_TIMEOUT, secs,
                    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)HTTP_MHD_MEMORY,
                    MHD_OPTION_NOTIFY_COMPLETED, on_completed, h, MHD_OPTION_NOTIFY_CONNECTION,
                    on_connection, h, MHD_OPTION_END);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (!h->d) {
                log_error("http: cannot start the HTTP server on %s", h->addr);
                return EX_OSERR;
        }
        log_info("http: serving the HTTP API on %s%s", h->addr,
                 h->has_token ? " (a token is required)" : "");
        return 0;
}

void http_reload(struct http *h, const struct config *cfg)
{
        if (!h || !h->api)
                return;
        http_api_set_names(h->api, cfg);
        if (token_read(h, cfg->http_token_file) < 0)
                log_error("http: reload: the token file was refused; the previous token stays");
        if (strcmp(cfg->http_listen, h->addr))
                log_warn("http: reload: [daemon] http changed: the new address takes effect "
                         "when throttled restarts");
}

void http_stop(struct http *h)
{
        if (!h)
                return;
        pthread_mutex_lock(&h->mu);
        h->stop = true;
        pthread_cond_broadcast(&h->cv);
        pthread_mutex_unlock(&h->mu);
        if (h->timer_running) {
                wake_timer(h);
                pthread_join(h->timer, NULL); /* it answers its waits (503) */
        }
        /* A waiter in a kernel wait (a lease, a spend: up to http_max_wait_ms) cannot be woken:
         * give them a second, then leave them to the process's exit rather than hold the stop
         * (the arena reclaims a dead process's leases). Nothing they use is freed then. */
        struct timespec dl;
        clock_gettime(CLOCK_REALTIME, &dl);
        dl.tv_sec += 1;
        size_t stuck = 0;
        for (size_t i = 0; i < h->nwaiters; i++)
                if (pthread_timedjoin_np(h->waiters[i], NULL, &dl) != 0)
                        stuck++;
        if (stuck) {
                log_warn("http: %zu wait(s) still in the kernel at stop: left to the exit", stuck);
                return;
        }
        if (h->d) {
                /* no new connection; the answers of the waits just ended are sent (a second at
                 * most) before the connections are closed */
                MHD_quiesce_daemon(h->d);
                for (int i = 0; i < 100; i++) {
                        pthread_mutex_lock(&h->mu);
                        uint64_t owed = h->owed;
                        pthread_mutex_unlock(&h->mu);
                        if (!owed)
                                break;
                        usleep(10000);
                }
                MHD_stop_daemon(h->d);
        }
        http_api_free(h->api); /* releases the leases held for HTTP clients */
        if (h->a)
                thr_arena_close(h->a);
        if (h->fd >= 0)
                close(h->fd);
        if (h->unix_path[0])
                unlink(h->unix_path);
        for (int i = 0; i < 2; i++)
                if (h->wake[i] >= 0)
                        close(h->wake[i]);
        pthread_mutex_destroy(&h->mu);
        pthread_cond_destroy(&h->cv);
        free(h->waiters);
        free(h);
}
