/*
 * main.c - throttled: parse the command line, load the config, supervise the arena.
 * Signal handlers only set flags, and are installed before anything else: a SIGHUP or SIGTERM
 * that arrives while a large config is read (ExecReload=kill -HUP at the wrong moment) would
 * otherwise kill the daemon with the default action. A reload asked for during start-up runs
 * once the daemon is up; a stop asked for before the arena is touched ends it there, exit 0.
 * Exit codes come from sysexits.h.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sysexits.h>

#include "config.h"
#include "log.h"
#include "notify.h"
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
        fprintf(f, "usage: throttled [-c FILE] [--check] [--recreate]\n"
                   "  -c, --config FILE  config file (default " DEFAULT_CONFIG ")\n"
                   "      --check        validate the config and exit\n"
                   "      --recreate     replace an arena that cannot be re-attached (resets "
                   "limits)\n"
                   "      --version      print the version and the arena layout, and exit\n"
                   "  environment: THROTTLE_LOG=error|warn|info|debug|trace\n");
}

int main(int argc, char **argv)
{
        static const struct option opts[] = {
            {"config", required_argument, 0, 'c'}, {"check", no_argument, 0, 'k'},
            {"recreate", no_argument, 0, 'r'},     {"help", no_argument, 0, 'h'},
            {"version", no_argument, 0, 'V'},      {0, 0, 0, 0}};
        const char *path = DEFAULT_CONFIG;
        int check = 0, recreate = 0, c;
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
        if (optind != argc) {
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
        if (check) {
                printf("%s: ok (%zu limiters)\n", path, g_cfg.nlimiters);
                return 0;
        }
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
