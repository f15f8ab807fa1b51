/*
 * listen.c - what the daemon's two HTTP servers share (listen.h).
 */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sysexits.h>
#include <unistd.h>

#include "listen.h"
#include "log.h"

/* HOST and PORT of ADDR (HOST:PORT, or [V6]:PORT) into HOST and PORT. 0 or -EINVAL. */
static int split(const char *addr, char *host, size_t hn, char *port, size_t pn)
{
        const char *colon = strrchr(addr, ':');
        if (!colon || colon == addr || (size_t)(colon - addr) >= hn || strlen(colon) > pn)
                return -EINVAL;
        const char *h = addr;
        size_t len = (size_t)(colon - addr);
        if (h[0] == '[' && len >= 2 && h[len - 1] == ']') {
                h++;
                len -= 2;
        }
        snprintf(host, hn, "%.*s", (int)len, h);
        snprintf(port, pn, "%s", colon + 1);
        return 0;
}

int listen_tcp(const char *key, const char *addr)
{
        char host[128], port[8];
        if (split(addr, host, sizeof(host), port, sizeof(port)) < 0) {
                log_error("%s = %s: not HOST:PORT", key, addr);
                return -EX_CONFIG;
        }
        struct addrinfo hints = {.ai_family = AF_UNSPEC,
                                 .ai_socktype = SOCK_STREAM,
                                 .ai_flags = AI_PASSIVE | AI_NUMERICSERV},
                        *ai = NULL;
        int rc = getaddrinfo(host, port, &hints, &ai);
        if (rc != 0) {
                log_error("%s = %s: cannot resolve '%s': %s", key, addr, host, gai_strerror(rc));
                return -EX_CONFIG;
        }
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        int one = 1, e = 0;
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
            bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 64) < 0)
                e = errno;
        freeaddrinfo(ai);
        if (!e)
                return fd;
        if (fd >= 0)
                close(fd);
        char hint[160] = "";
        if (e == EADDRINUSE)
                snprintf(hint, sizeof(hint),
                         " (another process has that port: set [daemon] %s to another address, "
                         "or empty to serve nothing there)",
                         key);
        log_error("%s: cannot listen on %s: %s%s", key, addr, strerror(e), hint);
        return e == EADDRINUSE || e == EADDRNOTAVAIL ? -EX_UNAVAILABLE
               : e == EACCES                         ? -EX_NOPERM
                                                     : -EX_OSERR;
}

void listen_mhd_log(void *cls, const char *fmt, va_list ap)
{
        char msg[512];
        vsnprintf(msg, sizeof(msg), fmt, ap);
        size_t n = strlen(msg);
        if (n && msg[n - 1] == '\n')
                msg[n - 1] = '\0';
        log_warn("%s: %s", (const char *)cls, msg);
}
