/*
 * log.h - throttled's log: one line per event on stderr, level from THROTTLE_LOG
 * (error|warn|info|debug|trace, default info). Thread-safe (one write(2) per line).
 */
#ifndef THR_DAEMON_LOG_H
#define THR_DAEMON_LOG_H

enum log_level { LOG_ERROR = 0, LOG_WARN, LOG_INFO, LOG_DEBUG, LOG_TRACE };

/* log_init - read THROTTLE_LOG; returns 0, or -EINVAL if it names no level (then info is used). */
int log_init(void);
void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

#endif
