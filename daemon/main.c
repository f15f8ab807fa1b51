/*
 * main.c - throttled: parse the command line, load the config, supervise the arena.
 * Signal handlers only set flags, and are installed before anything else: a SIGHUP or SIGTERM
 * that arrives while a large config is read (ExecReload=kill -HUP at the wrong moment) would
 * otherwise kill the daemon with the default action. A reload asked for during start-up runs
 * once the daemon is up; a stop asked for before the arena is touched ends it there, exit 0.
 * Exit codes come from sysexits.h.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "config.h"
#include "log.h"
#include "notify.h"
#include "reload.h"
#include "supervisor.h"

#ifndef THR_SYSCONFDIR
#define THR_SYSCONFDIR "/etc"
#endif
#define DEFAULT_CONFIG THR_SYSCONFDIR "/throttle/throttled.conf"
#ifndef THR_PROJECT_VERSION
#define THR_PROJECT_VERSION "unknown"
#endif

static struct supervisor g_sup;
static struct config g_cfg;

static void on_stop(int sig)
{
        (void)sig;
        g_sup.stop = 1;
}

static void on_hup(int sig)
{
        (void)sig;
        g_sup.reload = 1;
}

static void install_signals(void)
{
        struct sigaction sa = {0};
        sigemptyset(&sa.sa_mask);
        sa.sa_handler = on_stop; /* no SA_RESTART: the heartbeat sleep ends at once */
        sigaction(SIGTERM, &sa, NULL);
        sigaction(SIGINT, &sa, NULL);
        sa.sa_handler = on_hup;
        sigaction(SIGHUP, &sa, NULL);
        signal(SIGPIPE, SIG_IGN);
}

static void usage(FILE *f)
{
        fprintf(f, "usage: throttled [-c FILE] [--check | --reload [--pid PID] [--timeout MS] | "
                   "--recreate]\n"
                   "  -c, --config FILE  config file (default " DEFAULT_CONFIG ")\n"
                   "      --check        validate the config, and check it against the running "
                   "arena as a\n"
                   "                     reload would (what it changes, or why it is refused); "
                   "exit\n"
                   "      --reload       ask the running daemon of the config's arena to reload "
                   "and wait for\n"
                   "                     its verdict: exit 0 when applied, 78 (EX_CONFIG) when "
                   "refused\n"
                   "      --pid PID      --reload: the daemon's pid (systemd: $MAINPID); default: "
                   "the one the\n"
                   "                     arena names (checked to have the arena open)\n"
                   "      --timeout MS   --reload: how long to wait for the verdict (default "
                   "60000)\n"
                   "      --recreate     replace an arena that cannot be re-attached (resets "
                   "limits)\n"
                   "      --version      print the version and the arena layout, and exit\n"
                   "  environment: THROTTLE_LOG=error|warn|info|debug|trace\n");
}

/* A whole number in [1, MAX] from ARG, or 0 after saying what was wrong. */
static unsigned long number_arg(const char *opt, const char *arg, unsigned long max)
{
        char *end;
        errno = 0;
        unsigned long v = strtoul(arg, &end, 10);
        if (errno || end == arg || *end || v == 0 || v > max || arg[0] == '-') {
                fprintf(stderr, "throttled: %s takes a whole number from 1 to %lu (got '%s')\n",
                        opt, max, arg);
                return 0;
        }
        return v;
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {{"config", required_argument, 0, 'c'},
                                             {"check", no_argument, 0, 'k'},
                                             {"recreate", no_argument, 0, 'r'},
                                             {"reload", no_argument, 0, 'R'},
                                             {"pid", required_argument, 0, 'p'},
                                             {"timeout", required_argument, 0, 't'},
                                             {"help", no_argument, 0, 'h'},
                                             {"version", no_argument, 0, 'V'},
                                             {0, 0, 0, 0}};
        const char *path = DEFAULT_CONFIG;
        int check = 0, recreate = 0, reload = 0, c;
        unsigned long pid = 0, timeout_ms = 60000;
        install_signals();
        while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
                switch (c) {
                case 'c':
                        path = optarg;
                        break;
                case 'k':
                        check = 1;
                        break;
                case 'r':
                        recreate = 1;
                        break;
                case 'R':
                        reload = 1;
                        break;
                case 'p':
                        if (!(pid = number_arg("--pid", optarg, INT32_MAX)))
                                return EX_USAGE;
                        break;
                case 't':
                        if (!(timeout_ms = number_arg("--timeout", optarg, 3600000)))
                                return EX_USAGE;
                        break;
                case 'h':
                        usage(stdout);
                        return 0;
                case 'V':
                        printf("throttled (throttle) %s, arena layout %u.%u\n", THR_PROJECT_VERSION,
                               THR_LAYOUT_MAJOR, THR_LAYOUT_MINOR);
                        return 0;
                default:
                        usage(stderr);
                        return EX_USAGE;
                }
        }
        if (optind != argc || check + reload + recreate > 1 ||
            ((pid || timeout_ms != 60000) && !reload)) {
                usage(stderr);
                return EX_USAGE;
        }
        if (log_init() < 0)
                log_warn("THROTTLE_LOG names no level (error|warn|info|debug|trace); using info");
        static char err[8192];
        if (config_load(path, &g_cfg, err, sizeof(err)) < 0) {
                log_error("invalid config:\n%s", err);
                return EX_CONFIG;
        }
        if (check)
                return reload_check_live(&g_cfg, path);
        if (reload)
                return reload_request(&g_cfg, (pid_t)pid, (unsigned)timeout_ms);
        if (g_sup.stop) {
                log_info("stopped by a signal during start-up, before the arena was touched");
                return 0;
        }
        g_sup.config_path = path;
        int rc = supervisor_start(&g_sup, &g_cfg, recreate);
        if (rc == 0) {
                char status[128];
                snprintf(status, sizeof(status), "serving arena %s, %zu limiters", g_cfg.arena_name,
                         g_cfg.nlimiters);
                notify_ready(status); /* systemd (Type=notify): the arena exists and is kept */
                rc = supervisor_run(&g_sup);
                notify_stopping();
        }
        supervisor_stop(&g_sup);
        return rc;
}
