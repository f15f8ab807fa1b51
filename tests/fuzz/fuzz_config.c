/*
 * fuzz_config.c - the fuzz target of throttled's config path: any bytes as a config file, read
 * by config_load exactly as --check and a SIGHUP reload read it, and the fault list logged the
 * way both log it (log.c composes one prefixed line per fault into a fixed buffer: issue 18's
 * stack overflow was there). A config that loads must also hold the invariants the arena code
 * relies on. Built two ways: with libFuzzer (clang -fsanitize=fuzzer, THR_FUZZ=ON), and with
 * fuzz_driver.c, a plain main() that mutates seed files, for compilers without libFuzzer.
 *
 * The file is written to "c" in a private directory, and loaded with that directory as the
 * working directory, so the fault lines ("c:12: ...") are as short as a config's can be: short
 * lines are what bring the most of them into one log message.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "log.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char g_dir[] = "/tmp/thr_fuzz_config.XXXXXX";
static int g_dirfd = -1, g_cwdfd = -1;

static void remove_dir(void)
{
        char c[sizeof(g_dir) + 2];
        snprintf(c, sizeof(c), "%s/c", g_dir);
        unlink(c);
        rmdir(g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        (void)argc;
        (void)argv;
        if (!mkdtemp(g_dir) || (g_dirfd = open(g_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0 ||
            (g_cwdfd = open(".", O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
                perror("fuzz_config: private directory");
                abort();
        }
        atexit(remove_dir);
        log_set_level(LOG_INFO);
        return 0;
}

/* What the arena code assumes of a config that loaded. */
static void check_invariants(const struct config *cfg)
{
        const struct shm_arena_spec *a = &cfg->arena;
        char why[320];
        if (cfg->nlimiters > CONFIG_MAX_LIMITERS || a->nlimiters != cfg->nlimiters ||
            a->nlimiters > a->max_limiters || a->limiters != cfg->limiters ||
            a->spare_bytes > CONFIG_SPARE_MAX || !memchr(a->name, 0, sizeof(a->name)))
                abort();
        for (size_t i = 0; i < cfg->nlimiters; i++) {
                struct thr_params p;
                const struct shm_limiter_spec *l = &cfg->limiters[i];
                if (l->burst == 0 || l->initial > l->burst ||
                    shm_params_make(l, 1, &p, why, sizeof(why)) < 0)
                        abort();
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static struct config cfg;
        static char err[8192];
        int fd = openat(g_dirfd, "c", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || write(fd, data, size) != (ssize_t)size) {
                perror("fuzz_config: writing c");
                abort();
        }
        close(fd);
        /* in the private directory only for the load: the caller's relative paths stay valid */
        int rc = fchdir(g_dirfd);
        if (rc == 0) {
                rc = config_load("c", &cfg, err, sizeof(err));
                if (fchdir(g_cwdfd) < 0)
                        abort();
        }
        if (rc == 0) {
                check_invariants(&cfg);
                return 0;
        }
        if (!memchr(err, 0, sizeof(err)))
                abort();
        log_error("invalid config:\n%s", err);                      /* throttled --check */
        log_error("reload refused, running config kept:\n%s", err); /* SIGHUP */
        log_info("%s", err);
        return 0;
}
