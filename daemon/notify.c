/*
 * notify.c - sd_notify(3) messages from throttled to systemd (see notify.h). libsystemd does
 * the protocol: it reads NOTIFY_SOCKET, sends one datagram per call, and returns 0 without a
 * syscall when the variable is unset, which makes every function here a no-op outside systemd.
 * The environment is kept (unset_environment = 0): a daemon notifies many times in its life.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <systemd/sd-daemon.h>

#include "log.h"
#include "notify.h"

static void send_state(const char *state)
{
        int rc = sd_notify(0, state);
        if (rc < 0)
                log_debug("sd_notify(\"%s\") failed: %s", state, strerror(-rc));
}

void notify_ready(const char *status)
{
        char msg[512];
        if (status)
                snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%s", status);
        else
                snprintf(msg, sizeof(msg), "READY=1");
        send_state(msg);
}

void notify_reloading(void)
{
        struct timespec ts;
        char msg[128];
        clock_gettime(CLOCK_MONOTONIC, &ts);
        unsigned long long usec =
            (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000;
        snprintf(msg, sizeof(msg), "RELOADING=1\nMONOTONIC_USEC=%llu", usec);
        send_state(msg);
}

void notify_status(const char *status)
{
        char msg[512];
        snprintf(msg, sizeof(msg), "STATUS=%s", status);
        send_state(msg);
}

void notify_stopping(void)
{
        send_state("STOPPING=1");
}
