/*
 * notify.h - throttled's side of systemd's readiness protocol (sd_notify(3)), for a unit of
 * Type=notify: READY=1 once the arena is built and serving, RELOADING=1 while a reload runs,
 * STOPPING=1 when it stops, STATUS= lines for `systemctl status`.
 * Every call is a no-op when NOTIFY_SOCKET is unset (not started by systemd), and a failure to
 * notify is logged at debug level and otherwise ignored: readiness is advisory, never a reason
 * for the daemon to stop. Thread-safe (one datagram per call); each call makes syscalls when
 * NOTIFY_SOCKET is set (socket, sendmsg, close) and never sleeps.
 */
#ifndef THR_DAEMON_NOTIFY_H
#define THR_DAEMON_NOTIFY_H

/* notify_ready - READY=1, with STATUS=status when status is not NULL; also ends a reload. */
void notify_ready(const char *status);

/* notify_reloading - RELOADING=1 with MONOTONIC_USEC=<CLOCK_MONOTONIC now>, as systemd 252
 * and later expect of a reload; the daemon sends notify_ready() when the reload is done. */
void notify_reloading(void);

/* notify_status - STATUS=status: a one-line state for `systemctl status`. */
void notify_status(const char *status);

/* notify_stopping - STOPPING=1: the daemon has begun to stop. */
void notify_stopping(void);

#endif
