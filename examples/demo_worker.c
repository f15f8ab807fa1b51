/*
 * demo_worker.c - one process of the demo: it shares a per-key and a host-wide limit with its
 * siblings through the arena that throttled built.
 *
 *   thr-demo-worker [-a ARENA] [-s SECONDS] [-k KEYS] [-i ID]
 *
 * For SECONDS it picks a key "user:N" (N uniform in [0, KEYS)), asks the limiter `per_key` for
 * that key and, if it admits, the limiter `host` for the key "all"; a request counts as admitted
 * only when both admit. Between attempts it sleeps 1 ms, so the demo does not burn the CPU.
 * At the end it prints, in a format scripts/demo_check.awk parses:
 *
 *   key user:N per_key P admitted A                         one line per key
 *   total admitted A per_key P attempts T elapsed_ns E start_ns S end_ns F
 *
 * P counts what `per_key` admitted (whatever `host` then said): that is what the per-key limit
 * bounds. A counts what both admitted, which is also everything `host` admitted (it is asked
 * only after `per_key` admits): what the host-wide limit bounds.
 *
 * Times come from the arena clock, which every process of the arena reads alike, so the demo can
 * take the span of all workers from min(S) to max(F).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <throttle/throttle.h>

struct opts {
        const char *arena;
        unsigned seconds;
        unsigned keys;
        unsigned id;
};

static int usage(void)
{
        fprintf(stderr, "usage: thr-demo-worker [-a ARENA] [-s SECONDS] [-k KEYS] [-i ID]\n");
        return 2;
}

static int parse(int argc, char **argv, struct opts *o)
{
        int c;
        while ((c = getopt(argc, argv, "a:s:k:i:h")) != -1) {
                switch (c) {
                case 'a':
                        o->arena = optarg;
                        break;
                case 's':
                        o->seconds = (unsigned)strtoul(optarg, NULL, 10);
                        break;
                case 'k':
                        o->keys = (unsigned)strtoul(optarg, NULL, 10);
                        break;
                case 'i':
                        o->id = (unsigned)strtoul(optarg, NULL, 10);
                        break;
                default:
                        return -1;
                }
        }
        if (optind != argc || o->seconds == 0 || o->keys == 0 || o->keys > 1000000)
                return -1;
        return 0;
}

/* xorshift64: a private PRNG, so workers do not share (or lock) libc's. */
static uint64_t next_rand(uint64_t *s)
{
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        return *s;
}

/* One attempt on key number K: 1 if both limiters admitted, 0 if not, or -errno. *PER_KEY: 1 if
 * `per_key` admitted. */
static int attempt(thr_limiter *per_key, thr_limiter *global, unsigned k, int *pk)
{
        char key[32];
        int len = snprintf(key, sizeof(key), "user:%u", k);
        int rc = thr_limiter_try(per_key, key, (size_t)len, 1, NULL);
        *pk = rc == 1;
        if (rc != 1)
                return rc;
        /*
         * The per-key token is already spent: if the host-wide limit denies now, it is lost. Taking
         * both or neither (composition, DESIGN.md section 5) is a later feature.
         */
        return thr_limiter_try(global, "all", 3, 1, NULL);
}

/* Admissions of one key: by `per_key`, and by both limiters. */
struct counts {
        uint64_t per_key, both;
};

static int run(thr_arena *a, const struct opts *o, struct counts *n)
{
        thr_limiter *per_key, *global;
        int rc = thr_limiter_open(a, "per_key", &per_key);
        if (rc < 0 || (rc = thr_limiter_open(a, "host", &global)) < 0) {
                fprintf(stderr, "thr-demo-worker: limiter: %s\n", thr_strerror(rc));
                return 1;
        }
        uint64_t seed = (((uint64_t)o->id + 1) * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid()) | 1;
        uint64_t start, now, attempts = 0;
        struct counts total = {0, 0};
        const struct timespec pause = {0, 1000000};
        thr_clock_now(a, &start);
        do {
                unsigned k = (unsigned)(next_rand(&seed) % o->keys);
                int pk = 0;
                rc = attempt(per_key, global, k, &pk);
                if (rc < 0) {
                        fprintf(stderr, "thr-demo-worker: try user:%u: %s\n", k, thr_strerror(rc));
                        return 1;
                }
                n[k].per_key += (uint64_t)pk;
                n[k].both += (uint64_t)rc;
                total.per_key += (uint64_t)pk;
                total.both += (uint64_t)rc;
                attempts++;
                nanosleep(&pause, NULL);
                thr_clock_now(a, &now);
        } while (now - start < (uint64_t)o->seconds * 1000000000ull);
        for (unsigned k = 0; k < o->keys; k++)
                printf("key user:%u per_key %" PRIu64 " admitted %" PRIu64 "\n", k, n[k].per_key,
                       n[k].both);
        printf("total admitted %" PRIu64 " per_key %" PRIu64 " attempts %" PRIu64
               " elapsed_ns %" PRIu64 " start_ns %" PRIu64 " end_ns %" PRIu64 "\n",
               total.both, total.per_key, attempts, now - start, start, now);
        thr_limiter_close(global);
        thr_limiter_close(per_key);
        return 0;
}

int main(int argc, char **argv)
{
        struct opts o = {.arena = "main", .seconds = 5, .keys = 20, .id = 0};
        if (parse(argc, argv, &o) < 0)
                return usage();
        thr_arena *a;
        int rc = thr_arena_open(o.arena, 0, &a);
        if (rc < 0) {
                fprintf(stderr, "thr-demo-worker: arena '%s': %s\n", o.arena, thr_strerror(rc));
                return 1;
        }
        struct counts *n = calloc(o.keys, sizeof(*n));
        if (!n) {
                fprintf(stderr, "thr-demo-worker: out of memory\n");
                return 1;
        }
        rc = run(a, &o, n);
        free(n);
        thr_arena_close(a);
        return rc;
}
