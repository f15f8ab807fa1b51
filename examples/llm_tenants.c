/*
 * llm_tenants.c - throttle-net's multi-dimensional limits: an LLM gateway where each tenant may
 * make 60 requests a minute, send 10 000 input tokens a minute and receive 20 000 output tokens a
 * minute, inside a host-wide ceiling on requests. One named group of the daemon's config decides
 * all four at once, all or nothing: a request denied by its input tokens consumes none of its
 * tenant's requests, output tokens or the host's ceiling.
 *
 *   [llm_requests]  rate = 60/min                      (per tenant)
 *   [llm_input]     kind = window, limit = 10000, window = 1min   (per tenant)
 *   [llm_output]    rate = 20000/min                   (per tenant)
 *   [llm_host]      rate = 100/s                       (key "host": the whole host)
 *   [llm]           compose = llm_requests, llm_input, llm_output, llm_host
 *
 *   thr-llm-tenants -a ARENA [-g GROUP] [-t TENANTS] [-d SECONDS]
 *
 * Forks TENANTS processes that send requests as fast as they can for SECONDS, each with random
 * input and output token counts, through thr_group_try. Every admitted request is logged; at the
 * end each tenant's totals are checked against the limits (over a run shorter than a minute: at
 * most burst + elapsed / T of each GCRA limit, at most the window's limit of input tokens) and the
 * host's against its ceiling. Prints one line:
 *   tenants T requests N admitted A denied D by_member R/I/O/H violations V
 * and exits 0 when V is 0.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <throttle/throttle.h>

#define MAXT 16

struct tally {
        uint64_t requests, admitted, denied, by[4];
        uint64_t in_tokens, out_tokens; /* admitted */
        int error;
};

static double mono(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void tenant(const char *arena, const char *group, int t, double secs, struct tally *out)
{
        thr_arena *a;
        thr_group *g;
        int rc = thr_arena_open(arena, 0, &a);
        if (rc == 0)
                rc = thr_group_open(a, group, &g);
        if (rc < 0) {
                out->error = rc;
                return;
        }
        char key[32];
        snprintf(key, sizeof(key), "tenant-%d", t);
        uint64_t seed = 0x9e3779b97f4a7c15ull * (uint64_t)(t + 1);
        double end = mono() + secs;
        while (mono() < end) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                uint64_t in = 100 + seed % 1900, outk = 50 + (seed >> 20) % 450;
                struct thr_group_arg args[4] = {{key, strlen(key), 1},
                                                {NULL, 0, in}, /* the tenant's key */
                                                {NULL, 0, outk},
                                                {"host", 4, 1}};
                struct thr_compose_result r;
                rc = thr_group_try(g, args, &r);
                out->requests++;
                if (rc == 1) {
                        out->admitted++;
                        out->in_tokens += in;
                        out->out_tokens += outk;
                } else if (rc == 0) {
                        out->denied++;
                        if (r.denied < 4)
                                out->by[r.denied]++;
                        /* a real gateway answers 429 with Retry-After; here, a short pause */
                        struct timespec ts = {0, 200000};
                        nanosleep(&ts, NULL);
                } else if (rc != -EBUSY) {
                        out->error = rc;
                        break;
                }
        }
        thr_group_close(g);
        thr_arena_close(a);
}

int main(int argc, char **argv)
{
        const char *arena = NULL, *group = "llm";
        int tenants = 3;
        double secs = 2;
        int c;
        while ((c = getopt(argc, argv, "a:g:t:d:")) != -1) {
                switch (c) {
                case 'a':
                        arena = optarg;
                        break;
                case 'g':
                        group = optarg;
                        break;
                case 't':
                        tenants = atoi(optarg);
                        break;
                case 'd':
                        secs = atof(optarg);
                        break;
                default:
                        fprintf(stderr, "usage: %s -a ARENA [-g GROUP] [-t TENANTS] [-d SECONDS]\n",
                                argv[0]);
                        return 64;
                }
        }
        if (!arena || tenants < 1 || tenants > MAXT || secs <= 0 || secs > 50) {
                fprintf(stderr, "%s: -a ARENA is required; 1 to %d tenants, 0 to 50 seconds\n",
                        argv[0], MAXT);
                return 64;
        }
        struct tally *tl = mmap(NULL, sizeof(*tl) * MAXT, PROT_READ | PROT_WRITE,
                                MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (tl == MAP_FAILED)
                return 71;
        memset(tl, 0, sizeof(*tl) * MAXT);
        double t0 = mono();
        pid_t kids[MAXT];
        for (int t = 0; t < tenants; t++) {
                kids[t] = fork();
                if (kids[t] == 0) {
                        tenant(arena, group, t, secs, &tl[t]);
                        _exit(0);
                }
        }
        for (int t = 0; t < tenants; t++)
                waitpid(kids[t], NULL, 0);
        double elapsed = mono() - t0;
        uint64_t req = 0, adm = 0, den = 0, by[4] = {0}, violations = 0;
        for (int t = 0; t < tenants; t++) {
                if (tl[t].error) {
                        fprintf(stderr, "tenant-%d: %s\n", t, thr_strerror(tl[t].error));
                        violations++;
                }
                req += tl[t].requests;
                adm += tl[t].admitted;
                den += tl[t].denied;
                for (int i = 0; i < 4; i++)
                        by[i] += tl[t].by[i];
                /* GCRA: at most burst + elapsed / T; the window: its limit within a minute */
                if ((double)tl[t].admitted > 60 + elapsed / 1.0 + 1)
                        violations++, fprintf(stderr, "tenant-%d: %lu requests\n", t,
                                              (unsigned long)tl[t].admitted);
                if (tl[t].in_tokens > 10000)
                        violations++, fprintf(stderr, "tenant-%d: %lu input tokens\n", t,
                                              (unsigned long)tl[t].in_tokens);
                if ((double)tl[t].out_tokens > 20000 + elapsed * 20000 / 60 + 1)
                        violations++, fprintf(stderr, "tenant-%d: %lu output tokens\n", t,
                                              (unsigned long)tl[t].out_tokens);
        }
        if ((double)adm > 100 + elapsed * 100 + 1)
                violations++, fprintf(stderr, "host: %lu requests\n", (unsigned long)adm);
        printf("tenants %d requests %lu admitted %lu denied %lu by_member %lu/%lu/%lu/%lu "
               "violations %lu\n",
               tenants, (unsigned long)req, (unsigned long)adm, (unsigned long)den,
               (unsigned long)by[0], (unsigned long)by[1], (unsigned long)by[2],
               (unsigned long)by[3], (unsigned long)violations);
        return violations ? 1 : 0;
}
