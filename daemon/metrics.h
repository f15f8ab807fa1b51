/*
 * metrics.h - throttled's Prometheus endpoint: GET /metrics on [daemon] metrics = HOST:PORT,
 * served by libmicrohttpd's own thread from the arena (never blocking a client: it only reads).
 */
#ifndef THR_DAEMON_METRICS_H
#define THR_DAEMON_METRICS_H

#include <pthread.h>
#include <stddef.h>

#include "shm.h"

struct metrics;

/*
 * metrics_listen - bind and listen on ADDR (HOST:PORT, HOST possibly [v6]; "" is off: *OUT NULL,
 * 0), before the arena is touched: a port in use stops the daemon before it creates anything.
 * Returns 0, or a sysexits code after logging the address and the cause: EX_UNAVAILABLE (address
 * in use or not on this host), EX_NOPERM (a privileged port), EX_CONFIG (the host does not
 * resolve), EX_OSERR.
 * metrics_serve - start serving MT (NULL: off, 0) from libmicrohttpd's thread, on the arena mapped
 * at M, which must stay mapped until metrics_stop; each scrape reads the parameter records under
 * MU (NULL: none), the mutex the daemon's publishes take. 0 or EX_OSERR.
 */
int metrics_listen(const char *addr, struct metrics **out);
int metrics_serve(struct metrics *mt, const struct shm_map *m, pthread_mutex_t *mu);

/* metrics_stop - close the listener and stop the server's thread (waits for a scrape in
 * progress). Safe on NULL. */
void metrics_stop(struct metrics *mt);

/*
 * metrics_render - the exposition (Prometheus text format 0.0.4) of the arena mapped at M, into
 * a malloc'ed string (*LEN bytes, NUL-terminated); NULL when out of memory. What the endpoint
 * serves; exposed for tests.
 */
char *metrics_render(const struct shm_map *m, size_t *len);

#endif
