/*
 * listen.h - what the daemon's two HTTP servers (metrics, the API) share: a listening TCP
 * socket, and libmicrohttpd's log lines into the daemon's log.
 */
#ifndef THROTTLE_DAEMON_LISTEN_H
#define THROTTLE_DAEMON_LISTEN_H

#include <stdarg.h>

/*
 * listen_tcp - a listening socket (close-on-exec) on ADDR, HOST:PORT or [V6]:PORT, for the
 * [daemon] key KEY ("metrics", "http"), which the log lines name. Returns its fd, or a sysexits
 * code negated after logging why not: EX_CONFIG (not HOST:PORT, unresolvable), EX_UNAVAILABLE
 * (the address is in use or not this host's), EX_NOPERM, EX_OSERR.
 */
int listen_tcp(const char *key, const char *addr);

/* listen_mhd_log - MHD_OPTION_EXTERNAL_LOGGER's function: a warning, prefixed with CLS (the
 * server's name, a string), its trailing newline dropped. */
void listen_mhd_log(void *cls, const char *fmt, va_list ap);

#endif
