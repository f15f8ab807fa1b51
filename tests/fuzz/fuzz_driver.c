/*
 * fuzz_driver.c - runs the config fuzz target (fuzz_config.c) without libFuzzer: a bounded run
 * over files generated from seeds, for builds whose compiler has no -fsanitize=fuzzer (gcc).
 * Under ASan+UBSan (THR_SANITIZE=ON) it is the "ASan harness over generated files".
 *
 *   fuzz_config_gen [--seconds S] [--runs N] [--seed X] [--dict FILE] SEED_FILE_OR_DIR...
 *
 * Each run takes a seed file and applies 1 to 8 mutations: flip a byte, insert a dictionary token
 * or a random byte, drop, duplicate or splice in a line (from any seed), insert a run of short
 * lines. The input of the run in progress is kept in "fuzz-current.conf" in the starting
 * directory, so a crash leaves its reproducer there. The log the target writes goes to
 * /dev/null; a sanitizer report still reaches the original stderr (the target's writes do not).
 * Exits 0 after S seconds or N runs; a crash or sanitizer report ends it non-zero.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
void __sanitizer_set_report_fd(void *fd) __attribute__((weak));

#define MAX_SEEDS  64
#define MAX_TOKENS 256
#define INPUT_MAX  16384

struct buf {
        char *p;
        size_t n;
};

static struct buf seeds[MAX_SEEDS], tokens[MAX_TOKENS];
static int nseeds, ntokens;
static uint64_t rng;

static uint64_t next(void)
{
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        return rng;
}

static size_t below(size_t n)
{
        return n ? (size_t)(next() % n) : 0;
}

static int read_file(const char *path, struct buf *b)
{
        FILE *f = fopen(path, "re");
        if (!f)
                return -errno;
        b->p = malloc(INPUT_MAX);
        b->n = b->p ? fread(b->p, 1, INPUT_MAX, f) : 0;
        fclose(f);
        return b->p ? 0 : -ENOMEM;
}

static void add_seeds(const char *path)
{
        struct stat st;
        if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
                DIR *d = opendir(path);
                struct dirent *e;
                while (d && (e = readdir(d)) && nseeds < MAX_SEEDS) {
                        char p[1024];
                        if (e->d_name[0] == '.')
                                continue;
                        snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
                        if (read_file(p, &seeds[nseeds]) == 0)
                                nseeds++;
                }
                if (d)
                        closedir(d);
        } else if (nseeds < MAX_SEEDS && read_file(path, &seeds[nseeds]) == 0) {
                nseeds++;
        }
}

/* libFuzzer dictionary lines: name="token", with the escapes \\ \" and \xHH. */
static void load_dict(const char *path)
{
        FILE *f = fopen(path, "re");
        char line[512];
        while (f && fgets(line, sizeof(line), f) && ntokens < MAX_TOKENS) {
                char *q = strchr(line, '"'), *e = strrchr(line, '"');
                if (line[0] == '#' || !q || e <= q)
                        continue;
                struct buf *t = &tokens[ntokens++];
                t->p = malloc((size_t)(e - q));
                t->n = 0;
                for (char *c = q + 1; c < e; c++) {
                        unsigned hex;
                        if (*c == '\\' && c + 3 < e && c[1] == 'x' &&
                            sscanf(c + 2, "%2x", &hex) == 1) {
                                t->p[t->n++] = (char)hex;
                                c += 3;
                                continue;
                        }
                        if (*c == '\\' && c + 1 < e)
                                c++;
                        t->p[t->n++] = *c;
                }
        }
        if (f)
                fclose(f);
}

static void insert(struct buf *b, size_t at, const char *s, size_t n)
{
        if (b->n + n > INPUT_MAX)
                return;
        memmove(b->p + at + n, b->p + at, b->n - at);
        memcpy(b->p + at, s, n);
        b->n += n;
}

/* Start and length of a random line of B. */
static size_t pick_line(const struct buf *b, size_t *len)
{
        size_t at = below(b->n);
        while (at > 0 && b->p[at - 1] != '\n')
                at--;
        size_t end = at;
        while (end < b->n && b->p[end] != '\n')
                end++;
        *len = end - at + (end < b->n);
        return at;
}

static void mutate(struct buf *b)
{
        char tmp[INPUT_MAX];
        size_t len, at;
        switch (next() % 7) {
        case 0:
                if (b->n)
                        b->p[below(b->n)] ^= (char)(1u << below(8));
                break;
        case 1:
                if (ntokens) {
                        const struct buf *t = &tokens[below((size_t)ntokens)];
                        insert(b, below(b->n + 1), t->p, t->n);
                }
                break;
        case 2:
                tmp[0] = (char)next();
                insert(b, below(b->n + 1), tmp, 1);
                break;
        case 3:
                at = pick_line(b, &len);
                memmove(b->p + at, b->p + at + len, b->n - at - len);
                b->n -= len;
                break;
        case 4:
                at = pick_line(b, &len);
                memcpy(tmp, b->p + at, len);
                insert(b, below(b->n + 1), tmp, len);
                break;
        case 5: {
                const struct buf *o = &seeds[below((size_t)nseeds)];
                at = pick_line(o, &len);
                memcpy(tmp, o->p + at, len);
                insert(b, below(b->n + 1), tmp, len);
                break;
        }
        default: /* many short lines: many faults, short ones */
                len = 0;
                for (size_t i = 0, k = 1 + below(80); i < k; i++)
                        len += (size_t)snprintf(tmp + len, sizeof(tmp) - len, "%.*s=1\n",
                                                (int)(1 + below(6)), "kkkkkk");
                insert(b, below(b->n + 1), tmp, len);
                break;
        }
}

static double now_s(void)
{
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int usage(void)
{
        fprintf(stderr, "usage: fuzz_config_gen [--seconds S] [--runs N] [--seed X] "
                        "[--dict FILE] SEED_FILE_OR_DIR...\n");
        return 2;
}

int main(int argc, char **argv)
{
        double seconds = 10;
        uint64_t runs = UINT64_MAX;
        rng = (uint64_t)time(NULL) * 0x9e3779b97f4a7c15ull | 1;
        int i = 1;
        for (; i + 1 < argc && !strncmp(argv[i], "--", 2); i += 2) {
                if (!strcmp(argv[i], "--seconds"))
                        seconds = atof(argv[i + 1]);
                else if (!strcmp(argv[i], "--runs"))
                        runs = strtoull(argv[i + 1], NULL, 10);
                else if (!strcmp(argv[i], "--seed"))
                        rng = strtoull(argv[i + 1], NULL, 0) | 1;
                else if (!strcmp(argv[i], "--dict"))
                        load_dict(argv[i + 1]);
                else
                        return usage();
        }
        for (; i < argc; i++)
                add_seeds(argv[i]);
        if (nseeds == 0)
                return usage();
        char keep[1024];
        if (!getcwd(keep, sizeof(keep) - 32))
                return 1;
        strcat(keep, "/fuzz-current.conf");
        printf("fuzz_config_gen: %d seeds, %d tokens, seed %#" PRIx64 ", up to %.0f s; the input "
               "in progress is kept in %s\n",
               nseeds, ntokens, rng, seconds, keep);
        fflush(stdout);
        LLVMFuzzerInitialize(&argc, &argv);
        int err = dup(STDERR_FILENO), null = open("/dev/null", O_WRONLY | O_CLOEXEC);
        if (__sanitizer_set_report_fd)
                __sanitizer_set_report_fd((void *)(intptr_t)err);
        dup2(null, STDERR_FILENO);
        double t0 = now_s();
        uint64_t n = 0;
        struct buf b = {malloc(INPUT_MAX), 0};
        for (; n < runs && now_s() - t0 < seconds; n++) {
                const struct buf *s = &seeds[below((size_t)nseeds)];
                memcpy(b.p, s->p, s->n);
                b.n = s->n;
                for (size_t m = 0, k = 1 + below(8); m < k; m++)
                        mutate(&b);
                FILE *f = fopen(keep, "we");
                if (f) {
                        fwrite(b.p, 1, b.n, f);
                        fclose(f);
                }
                LLVMFuzzerTestOneInput((const uint8_t *)b.p, b.n);
        }
        unlink(keep);
        free(b.p);
        dup2(err, STDERR_FILENO);
        printf("fuzz_config_gen: %" PRIu64 " inputs in %.1f s, no crash\n", n, now_s() - t0);
        return 0;
}
