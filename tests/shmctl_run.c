/*
 * shmctl_run.c - the harness of test_shmctl and test_shmctl_window (see shmctl_run.h): the
 * arena fixture, shmctl run on it, and a JSON syntax check of its output.
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include "shmctl_run.h"

struct shmctl_fx fx;

struct shm_limiter_spec lim_spec(const char *name, uint64_t n, uint64_t period_ns, uint64_t burst,
                                 uint64_t initial)
{
        struct shm_limiter_spec s = {.rate_n = n,
                                     .period_ns = period_ns,
                                     .burst = burst,
                                     .initial = initial,
                                     .capacity = 64};
        snprintf(s.name, sizeof(s.name), "%s", name);
        return s;
}

void make_arena(const char *name, size_t n, const struct shm_limiter_spec *lims)
{
        make_arena_readers(name, n, lims, 16);
}

void make_arena_readers(const char *name, size_t n, const struct shm_limiter_spec *lims,
                        uint32_t readers)
{
        char err[256] = "";
        struct shm_arena_spec spec = {.hugepages = SHM_HUGE_OFF,
                                      .mode = 0600,
                                      .gid = (gid_t)-1,
                                      .clock = THR_CLOCK_MANUAL,
                                      .max_limiters = 4,
                                      .max_readers = readers,
                                      .nlimiters = n,
                                      .limiters = lims};
        snprintf(spec.name, sizeof(spec.name), "%s", name);
        snprintf(fx.dir, sizeof(fx.dir), "/dev/shm/thr-shmctl-XXXXXX");
        cr_assert_not_null(mkdtemp(fx.dir), "mkdtemp: %s", strerror(errno));
        spec.dir = fx.dir;
        int rc = shm_arena_create(&spec, &fx.map, err, sizeof(err));
        cr_assert_geq(rc, 0, "shm_arena_create: %s", err);
        rc = thr_arena_open(fx.map.path, 0, &fx.arena);
        cr_assert_eq(rc, 0, "thr_arena_open: %s", thr_strerror(rc));
}

void close_client(void)
{
        if (fx.arena)
                thr_arena_close(fx.arena);
        fx.arena = NULL;
}

void fx_teardown(void)
{
        close_client();
        if (fx.map.base) {
                unlink(fx.map.path);
                shm_arena_detach(&fx.map);
        }
        if (fx.dir[0])
                rmdir(fx.dir);
}

void spend(const char *name, const char *key, size_t len, int count)
{
        thr_limiter *lim;
        cr_assert_eq(thr_limiter_open(fx.arena, name, &lim), 0);
        for (int i = 0; i < count; i++)
                cr_assert_eq(thr_limiter_try(lim, key, len, 1, NULL), 1, "try %d on %s", i, key);
        thr_limiter_close(lim);
}

int run(char *out, const char *fmt, ...)
{
        char args[512], cmd[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(args, sizeof(args), fmt, ap);
        va_end(ap);
        const char *bd = getenv("THR_TEST_BUILD_DIR");
        cr_assert_not_null(bd, "THR_TEST_BUILD_DIR is not set (run through ctest)");
        snprintf(cmd, sizeof(cmd), "'%s/daemon/shmctl' -a '%s' %s 2>&1", bd, fx.map.path, args);
        FILE *p = popen(cmd, "r");
        cr_assert_not_null(p, "popen: %s", strerror(errno));
        size_t n = fread(out, 1, OUT_MAX - 1, p);
        out[n] = '\0';
        int st = pclose(p);
        cr_assert(WIFEXITED(st), "shmctl %s did not exit normally (status %#x): %s", args, st, out);
        return WEXITSTATUS(st);
}

void assert_has(const char *out, const char *want)
{
        cr_assert_not_null(strstr(out, want), "expected \"%s\" in:\n%s", want, out);
}

const char *line_with(const char *out, const char *want, char *line, size_t len)
{
        const char *at = strstr(out, want);
        cr_assert_not_null(at, "expected a line with \"%s\" in:\n%s", want, out);
        while (at > out && at[-1] != '\n')
                at--;
        size_t n = strcspn(at, "\n");
        snprintf(line, len, "%.*s", (int)n, at);
        return line;
}

/* ---------------------------------------------------------------- a JSON syntax check */

/* Just the grammar of RFC 8259, enough to prove the output parses; *P advanced past a value. */
static bool json_value(const char **p);

static void json_ws(const char **p)
{
        while (**p == ' ' || **p == '\n' || **p == '\t' || **p == '\r')
                (*p)++;
}

static bool json_string(const char **p)
{
        if (*(*p)++ != '"')
                return false;
        while (**p != '"') {
                unsigned char ch = (unsigned char)*(*p)++;
                if (ch < 0x20) /* the end of the text included */
                        return false;
                if (ch != '\\')
                        continue;
                char e = *(*p)++;
                if (e == 'u') {
                        for (int i = 0; i < 4; i++)
                                if (!isxdigit((unsigned char)*(*p)++))
                                        return false;
                } else if (!e || !strchr("\"\\/bfnrt", e)) {
                        return false;
                }
        }
        (*p)++;
        return true;
}

static bool json_digits(const char **p)
{
        if (!isdigit((unsigned char)**p))
                return false;
        while (isdigit((unsigned char)**p))
                (*p)++;
        return true;
}

static bool json_number(const char **p)
{
        if (**p == '-')
                (*p)++;
        if (**p == '0')
                (*p)++;
        else if (!json_digits(p))
                return false;
        if (**p == '.' && ((*p)++, !json_digits(p)))
                return false;
        if (**p == 'e' || **p == 'E') {
                (*p)++;
                if (**p == '+' || **p == '-')
                        (*p)++;
                return json_digits(p);
        }
        return true;
}

/* An object (KEYED) or an array, from its opening bracket to CLOSE. */
static bool json_items(const char **p, char close, bool keyed)
{
        (*p)++;
        json_ws(p);
        if (**p == close)
                return (*p)++, true;
        for (;;) {
                json_ws(p);
                if (keyed && !json_string(p))
                        return false;
                json_ws(p);
                if (keyed && *(*p)++ != ':')
                        return false;
                if (!json_value(p))
                        return false;
                json_ws(p);
                char ch = *(*p)++;
                if (ch == close)
                        return true;
                if (ch != ',')
                        return false;
        }
}

static bool json_literal(const char **p, const char *word)
{
        size_t n = strlen(word);
        if (strncmp(*p, word, n) != 0)
                return false;
        *p += n;
        return true;
}

static bool json_value(const char **p)
{
        json_ws(p);
        switch (**p) {
        case '{':
                return json_items(p, '}', true);
        case '[':
                return json_items(p, ']', false);
        case '"':
                return json_string(p);
        case 't':
                return json_literal(p, "true");
        case 'f':
                return json_literal(p, "false");
        case 'n':
                return json_literal(p, "null");
        default:
                return json_number(p);
        }
}

bool json_ok(const char *s, const char **at)
{
        if (!json_value(at)) /* *AT may be just past the end now: read no more */
                return false;
        json_ws(at);
        return **at == '\0' && *at > s;
}

void assert_json(const char *out)
{
        const char *at = out;
        cr_assert(json_ok(out, &at), "not one JSON value (fault near offset %td):\n%s", at - out,
                  out);
}

struct thr_dir_entry *entry_of(const char *name)
{
        int idx = shm_dir_find(&fx.map, name);
        cr_assert_geq(idx, 0, "limiter %s", name);
        struct thr_dir_entry *dir = shm_at(fx.map.base, shm_hdr(&fx.map)->dir_off);
        return &dir[idx];
}

struct thr_table *table_of(const char *name)
{
        return shm_at(fx.map.base, entry_of(name)->table_off);
}

struct thr_slot *slot_of(const char *name, const char *key)
{
        struct thr_table *tb = table_of(name);
        uint64_t h = shm_hash(shm_hdr(&fx.map)->hash_key, key, strlen(key));
        struct thr_slot *s = shm_table_lookup(fx.map.base, tb, h, key, (uint32_t)strlen(key));
        cr_assert_not_null(s, "no key %s in limiter %s", key, name);
        return s;
}

struct thr_reader *reader_of(uint32_t idx)
{
        cr_assert_lt(idx, shm_hdr(&fx.map)->reader_count, "reader record %u", idx);
        return (struct thr_reader *)shm_at(fx.map.base, shm_hdr(&fx.map)->reader_off) + idx;
}

uint64_t next_rand(uint64_t *x)
{
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        return *x;
}

void expect_dataerr(const char *args)
{
        static char out[OUT_MAX];
        close_client();
        cr_assert_eq(run(out, "%s", args), EX_DATAERR, "%s", out);
        assert_has(out, "not valid");
}
