/*
 * fuzz_http.c - the fuzz target of throttled's HTTP API request core (http_api_handle, the code
 * behind every route, without libmicrohttpd): any bytes as one request, "METHOD PATH[?QUERY]"
 * on the first line and the body after it, decided on a manual-clock arena that holds a limiter
 * of each kind and a group. Every answer must be one JSON object with an "error" exactly when
 * the status is 400 or above, and a status of the API's. The clock moves a second per input, so
 * leases expire and buckets refill as the inputs go. The server's cap on waits is 0: no request
 * waits (a wait would be a thread or a timer the fuzzer has not got), so every answer is
 * immediate. Built like fuzz_config: with libFuzzer (THR_FUZZ=ON) and with fuzz_driver.c.
 */
#include <fcntl.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "http.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_dir[] = "/dev/shm/thr_fuzz_http.XXXXXX";
static char g_arena[300];
static thr_arena *g_a;
static struct http_api *g_api;

static const char CONF[] = "[arena]\nname = fuzzhttp\ndir = %s\nclock = manual\nhugepages = off\n"
                           "mode = 0600\nmax_limiters = 8\nmax_readers = 64\nspare = 1MiB\n\n"
                           "[lim]\nrate = 10/s\nburst = 5\ncapacity = 64\n\n"
                           "[win]\nkind = window\nlimit = 3\nwindow = 1s\ncapacity = 64\n\n"
                           "[sem]\nkind = semaphore\nmax = 3\ncapacity = 64\n\n"
                           "[bud]\nkind = budget\ninitial = 10\ncapacity = 64\n\n"
                           "[brk]\nkind = breaker\nfailures = 2\ncooldown = 2s\n"
                           "probe_timeout = 1s\ncapacity = 64\n\n"
                           "[pair]\ncompose = lim, bud\n";

static void cleanup(void)
{
        http_api_free(g_api);
        if (g_a)
                thr_arena_close(g_a);
        unlink(g_arena);
        char c[sizeof(g_dir) + 8];
        snprintf(c, sizeof(c), "%s/c", g_dir);
        unlink(c);
        rmdir(g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        static struct config cfg;
        char path[sizeof(g_dir) + 8], err[2048];
        struct shm_map map;
        (void)argc;
        (void)argv;
        log_set_level(LOG_ERROR);
        if (!mkdtemp(g_dir))
                abort();
        snprintf(path, sizeof(path), "%s/c", g_dir);
        FILE *f = fopen(path, "we");
        if (!f || fprintf(f, CONF, g_dir) < 0 || fclose(f))
                abort();
        if (config_load(path, &cfg, err, sizeof(err)) < 0) {
                fprintf(stderr, "fuzz_http: config: %s\n", err);
                abort();
        }
        if (shm_arena_create(&cfg.arena, &map, err, sizeof(err)) < 0) {
                fprintf(stderr, "fuzz_http: arena: %s\n", err);
                abort();
        }
        snprintf(g_arena, sizeof(g_arena), "%s", map.path);
        shm_arena_detach(&map);
        if (thr_arena_open(g_arena, 0, &g_a) < 0 || !(g_api = http_api_new(g_a, 16, 0)))
                abort();
        http_api_set_names(g_api, &cfg);
        atexit(cleanup);
        return 0;
}

/* The query's arguments (name=value&..., not unescaped: the core takes them as given). */
static size_t split_query(char *q, struct http_arg *args)
{
        size_t n = 0;
        for (char *s = q, *e; s && n < HTTP_MAX_ARGS; s = e) {
                e = strchr(s, '&');
                if (e)
                        *e++ = '\0';
                char *eq = strchr(s, '=');
                if (eq)
                        *eq++ = '\0';
                args[n++] = (struct http_arg){s, eq ? eq : ""};
        }
        return n;
}

static void check(const struct http_out *out)
{
        static const unsigned ok[] = {200, 201, 400, 401, 404, 405, 409,
                                      410, 413, 422, 429, 500, 503};
        bool known = false;
        for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
                known |= out->status == ok[i];
        json_t *j = out->body ? json_loads(out->body, 0, NULL) : NULL;
        if (!known || out->wait != HTTP_NOW || !json_is_object(j) ||
            (json_object_get(j, "error") != NULL) != (out->status >= 400))
                abort();
        json_decref(j);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        const uint8_t *nl = memchr(data, '\n', size);
        size_t line = nl ? (size_t)(nl - data) : size;
        if (line > 1024)
                return 0;
        char head[1025], *path, *query;
        memcpy(head, data, line);
        head[line] = '\0';
        if (strlen(head) != line || !(path = strchr(head, ' ')))
                return 0;
        *path++ = '\0';
        struct http_arg args[HTTP_MAX_ARGS];
        size_t nargs = 0;
        if ((query = strchr(path, '?'))) {
                *query++ = '\0';
                nargs = split_query(query, args);
        }
        struct http_out out;
        const char *body = nl ? (const char *)nl + 1 : "";
        http_api_handle(g_api, head, path, args, nargs, body, nl ? size - line - 1 : 0, &out);
        if (out.wait != HTTP_NOW)
                http_job_drop(out.job);
        check(&out);
        free(out.body);
        thr_clock_advance(g_a, 1000000000u);
        return 0;
}
