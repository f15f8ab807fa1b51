/*
 * feedback.c - what a downstream says about its limits, read from its response headers, and the
 * delays between retries (issue 16's pure half: nothing here touches the arena).
 *
 * Headers (thr_feedback_header(3)):
 *   Retry-After            RFC 9110 section 10.2.3: delay-seconds, or an HTTP-date in any of the
 *                          three forms a recipient must accept (IMF-fixdate, RFC 850, asctime).
 *   X-RateLimit-*          the de-facto fields: Remaining, Reset, Limit, Reset-After, each also
 *                          with the -Requests or -Tokens suffix (the tokens dimension apart). A
 *                          reset is a duration ("6m0s", "1.5s", "20ms"), a count of seconds, or,
 *                          from 1e9 (2001-09-09) on, a Unix time in seconds (GitHub's form).
 *   RateLimit-Remaining, -Reset, -Limit   the IETF draft's earlier separate fields (seconds).
 *   RateLimit, RateLimit-Policy           the IETF draft's structured fields (RFC 9651 lists):
 *                          `"name";r=REMAINING;t=SECONDS` and `"name";q=QUOTA;w=WINDOW`, and the
 *                          intermediate drafts' dictionary `limit=L, remaining=R, reset=S`.
 * Several headers fold into the most restrictive reading: the least remaining and limit, the
 * latest reset, window and retry-after. Several members of one structured field are several
 * quotas: the binding one (fewest remaining, smallest quota) is read with its own reset or
 * window. A malformed value changes nothing.
 *
 * Backoff (thr_backoff_delay(3)): constant, linear and exponential delays with none, full, equal
 * or decorrelated jitter, as Marc Brooker's "Exponential Backoff And Jitter" (AWS Architecture
 * Blog, 2015) defines them; the caller supplies the random bits, so the function is pure.
 */
#include <errno.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "throttle/throttle.h"

#define NS_PER_S 1000000000ull

/* ---------------------------------------------------------------- small scanning helpers */

struct scan {
        const char *p;
        const char *end;
};

static void skip_ows(struct scan *s)
{
        while (s->p < s->end && (*s->p == ' ' || *s->p == '\t'))
                s->p++;
}

static bool at_end(struct scan *s)
{
        skip_ows(s);
        return s->p == s->end;
}

static bool eat(struct scan *s, char c)
{
        if (s->p < s->end && *s->p == c) {
                s->p++;
                return true;
        }
        return false;
}

static int lower(int c)
{
        return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

static bool eq_nocase(const char *a, size_t alen, const char *b)
{
        size_t blen = strlen(b);
        if (alen != blen)
                return false;
        for (size_t i = 0; i < alen; i++)
                if (lower((unsigned char)a[i]) != b[i])
                        return false;
        return true;
}

/* Exactly N digits (N > 0) as a number. */
static bool digits_n(struct scan *s, int n, unsigned *out)
{
        unsigned v = 0;
        for (int i = 0; i < n; i++) {
                if (s->p == s->end || *s->p < '0' || *s->p > '9')
                        return false;
                v = v * 10 + (unsigned)(*s->p++ - '0');
        }
        *out = v;
        return true;
}

/* 1*DIGIT as a uint64; -ERANGE past UINT64_MAX, -EINVAL if no digit. */
static int digits_u64(struct scan *s, uint64_t *out)
{
        uint64_t v = 0;
        const char *start = s->p;
        while (s->p < s->end && *s->p >= '0' && *s->p <= '9') {
                unsigned d = (unsigned)(*s->p++ - '0');
                if (v > (UINT64_MAX - d) / 10)
                        return -ERANGE;
                v = v * 10 + d;
        }
        if (s->p == start)
                return -EINVAL;
        *out = v;
        return 0;
}

/* A fraction after '.', as nanoseconds of one unit of UNIT_NS (digits past ns precision are
 * checked and dropped). */
static int fraction(struct scan *s, uint64_t unit_ns, uint64_t *out)
{
        uint64_t v = 0, scale = unit_ns;
        const char *start = s->p;
        while (s->p < s->end && *s->p >= '0' && *s->p <= '9') {
                unsigned d = (unsigned)(*s->p++ - '0');
                scale /= 10;
                v += d * scale;
        }
        if (s->p == start)
                return -EINVAL;
        *out = v;
        return 0;
}

static int mul_ns(uint64_t n, uint64_t unit, uint64_t *out)
{
        if (unit && n > UINT64_MAX / unit)
                return -ERANGE;
        *out = n * unit;
        return 0;
}

static int add_ns(uint64_t a, uint64_t b, uint64_t *out)
{
        if (a > UINT64_MAX - b)
                return -ERANGE;
        *out = a + b;
        return 0;
}

/* ---------------------------------------------------------------- HTTP-date (RFC 9110 5.6.7) */

static const char *const k_days[7] = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
static const char *const k_days_long[7] = {"Monday", "Tuesday",  "Wednesday", "Thursday",
                                           "Friday", "Saturday", "Sunday"};
static const char *const k_months[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                         "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* One of NAMES[0..N) spelled exactly (the grammar is case-sensitive). */
static bool word(struct scan *s, const char *const *names, int n, int *idx)
{
        for (int i = 0; i < n; i++) {
                size_t len = strlen(names[i]);
                if ((size_t)(s->end - s->p) >= len && !memcmp(s->p, names[i], len)) {
                        s->p += len;
                        *idx = i;
                        return true;
                }
        }
        return false;
}

static bool leap(unsigned y)
{
        return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

/* Days from 1970-01-01 to Y-M-D (proleptic Gregorian; Y >= 1970 is all an HTTP-date can need
 * that is not long past). */
static int64_t days_since_epoch(unsigned y, unsigned m, unsigned d)
{
        static const unsigned before[12] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
        int64_t days = 0;
        for (unsigned yy = 1970; yy < y; yy++)
                days += leap(yy) ? 366 : 365;
        days += before[m] + (m >= 2 && leap(y)) + d - 1;
        return days;
}

static bool time_of_day(struct scan *s, unsigned *h, unsigned *mi, unsigned *se)
{
        return digits_n(s, 2, h) && eat(s, ':') && digits_n(s, 2, mi) && eat(s, ':') &&
               digits_n(s, 2, se) && *h < 24 && *mi < 60 && *se <= 60; /* 60: a leap second */
}

static bool valid_date(unsigned y, unsigned m, unsigned d)
{
        static const unsigned len[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
        return y >= 1970 && d >= 1 && d <= len[m] + (m == 1 && leap(y));
}

/*
 * An HTTP-date as Unix seconds. RFC 850's two-digit year is read as RFC 9110 says: a year that
 * would be more than 50 years after NOW_YEAR is taken 100 years earlier.
 */
static int http_date(const char *v, size_t len, unsigned now_year, int64_t *unix_s)
{
        struct scan s = {v, v + len};
        unsigned d = 0, y = 0, h = 0, mi = 0, se = 0;
        int wd, mo;
        skip_ows(&s);
        struct scan at = s;
        if (word(&s, k_days_long, 7, &wd) && eat(&s, ',')) { /* RFC 850 */
                if (!eat(&s, ' ') || !digits_n(&s, 2, &d) || !eat(&s, '-') ||
                    !word(&s, k_months, 12, &mo) || !eat(&s, '-') || !digits_n(&s, 2, &y) ||
                    !eat(&s, ' ') || !time_of_day(&s, &h, &mi, &se) || !eat(&s, ' ') ||
                    !word(&s, (const char *const[]){"GMT"}, 1, &wd))
                        return -EINVAL;
                y += now_year - now_year % 100; /* this century, then within 50 years */
                if (y > now_year + 50)
                        y -= 100;
                else if (y + 50 < now_year)
                        y += 100;
        } else if (s = at, word(&s, k_days, 7, &wd) && eat(&s, ',')) { /* IMF-fixdate */
                if (!eat(&s, ' ') || !digits_n(&s, 2, &d) || !eat(&s, ' ') ||
                    !word(&s, k_months, 12, &mo) || !eat(&s, ' ') || !digits_n(&s, 4, &y) ||
                    !eat(&s, ' ') || !time_of_day(&s, &h, &mi, &se) || !eat(&s, ' ') ||
                    !word(&s, (const char *const[]){"GMT"}, 1, &wd))
                        return -EINVAL;
        } else if (s = at, word(&s, k_days, 7, &wd) && eat(&s, ' ')) { /* asctime */
                if (!word(&s, k_months, 12, &mo) || !eat(&s, ' '))
                        return -EINVAL;
                if (eat(&s, ' ')) { /* day as " 6" */
                        if (!digits_n(&s, 1, &d))
                                return -EINVAL;
                } else if (!digits_n(&s, 2, &d)) {
                        return -EINVAL;
                }
                if (!eat(&s, ' ') || !time_of_day(&s, &h, &mi, &se) || !eat(&s, ' ') ||
                    !digits_n(&s, 4, &y))
                        return -EINVAL;
        } else {
                return -EINVAL;
        }
        if (!at_end(&s) || !valid_date(y, (unsigned)mo, d))
                return -EINVAL;
        *unix_s = days_since_epoch(y, (unsigned)mo, d) * 86400 + h * 3600 + mi * 60 + se;
        return 0;
}

/* NOW_UNIX_NS, or the real-time clock's reading when it is 0. */
static int64_t now_or_clock(int64_t now_unix_ns)
{
        if (now_unix_ns > 0)
                return now_unix_ns;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * (int64_t)NS_PER_S + ts.tv_nsec;
}

static unsigned year_of(int64_t unix_ns)
{
        time_t t = (time_t)(unix_ns / (int64_t)NS_PER_S);
        struct tm tm;
        return gmtime_r(&t, &tm) ? (unsigned)tm.tm_year + 1900 : 1970;
}

/* The delay from NOW until UNIX_S (0 if past), in ns. */
static int until(int64_t unix_s, int64_t now_unix_ns, uint64_t *delay_ns)
{
        if ((uint64_t)unix_s > UINT64_MAX / NS_PER_S / 2)
                return -ERANGE;
        int64_t at = unix_s * (int64_t)NS_PER_S;
        *delay_ns = at > now_unix_ns ? (uint64_t)(at - now_unix_ns) : 0;
        return 0;
}

int thr_retry_after_parse(const char *value, size_t len, int64_t now_unix_ns, uint64_t *delay_ns)
{
        if (!value || !delay_ns || now_unix_ns < 0)
                return -EINVAL;
        struct scan s = {value, value + len};
        skip_ows(&s);
        if (s.p < s.end && *s.p >= '0' && *s.p <= '9') { /* delay-seconds */
                uint64_t sec, ns;
                int rc = digits_u64(&s, &sec);
                if (rc < 0)
                        return rc;
                if (!at_end(&s))
                        return -EINVAL;
                if ((rc = mul_ns(sec, NS_PER_S, &ns)) < 0)
                        return rc;
                *delay_ns = ns;
                return 0;
        }
        int64_t now = now_or_clock(now_unix_ns), at;
        int rc = http_date(s.p, (size_t)(s.end - s.p), year_of(now), &at);
        return rc < 0 ? rc : until(at, now, delay_ns);
}

/* ---------------------------------------------------------------- X-RateLimit-* values */

/* A duration with units ("6m0s", "1.5s", "20ms", "100us", "5ns"; "h" too), to ns. */
static int duration_units(struct scan *s, uint64_t *out)
{
        uint64_t total = 0;
        bool any = false;
        while (s->p < s->end && *s->p >= '0' && *s->p <= '9') {
                uint64_t whole, frac = 0, unit, ns;
                int rc = digits_u64(s, &whole);
                if (rc < 0)
                        return rc;
                struct scan f = {s->p, s->p}; /* the fraction's digits, read once the unit is */
                if (eat(s, '.')) {
                        f.p = s->p;
                        while (s->p < s->end && *s->p >= '0' && *s->p <= '9')
                                s->p++;
                        f.end = s->p;
                        if (f.p == f.end)
                                return -EINVAL;
                }
                if (s->p + 2 <= s->end && !memcmp(s->p, "ms", 2))
                        unit = 1000000ull, s->p += 2;
                else if (s->p + 2 <= s->end && !memcmp(s->p, "us", 2))
                        unit = 1000ull, s->p += 2;
                else if (s->p + 2 <= s->end && !memcmp(s->p, "ns", 2))
                        unit = 1ull, s->p += 2;
                else if (eat(s, 'h'))
                        unit = 3600 * NS_PER_S;
                else if (eat(s, 'm'))
                        unit = 60 * NS_PER_S;
                else if (eat(s, 's'))
                        unit = NS_PER_S;
                else
                        return -EINVAL;
                if (f.p < f.end && (rc = fraction(&f, unit, &frac)) < 0)
                        return rc;
                if ((rc = mul_ns(whole, unit, &ns)) < 0 || (rc = add_ns(ns, frac, &ns)) < 0 ||
                    (rc = add_ns(total, ns, &total)) < 0)
                        return rc;
                any = true;
        }
        if (!any)
                return -EINVAL;
        *out = total;
        return 0;
}

/*
 * A reset: a duration with units, or seconds (a decimal fraction allowed), or from 1e9 on a Unix
 * time in seconds, read against NOW.
 */
static int reset_value(const char *v, size_t len, int64_t now_unix_ns, uint64_t *delay_ns)
{
        struct scan s = {v, v + len};
        skip_ows(&s);
        const char *start = s.p;
        uint64_t sec, frac = 0, ns;
        int rc = digits_u64(&s, &sec);
        if (rc < 0)
                return rc;
        if (eat(&s, '.') && (rc = fraction(&s, NS_PER_S, &frac)) < 0)
                return rc;
        if (s.p < s.end && *s.p != ' ' && *s.p != '\t') { /* a unit follows: a duration */
                s.p = start;
                if ((rc = duration_units(&s, &ns)) < 0)
                        return rc;
                if (!at_end(&s))
                        return -EINVAL;
                *delay_ns = ns;
                return 0;
        }
        if (!at_end(&s))
                return -EINVAL;
        if (sec >= 1000000000ull) { /* a Unix time */
                if (sec > (uint64_t)INT64_MAX / NS_PER_S)
                        return -ERANGE;
                if ((rc = until((int64_t)sec, now_or_clock(now_unix_ns), delay_ns)) < 0)
                        return rc;
                if (*delay_ns && frac) /* the fraction of the reset's second is still ahead */
                        *delay_ns += frac;
                return 0;
        }
        if ((rc = mul_ns(sec, NS_PER_S, &ns)) < 0 || (rc = add_ns(ns, frac, &ns)) < 0)
                return rc;
        *delay_ns = ns;
        return 0;
}

/* A count (remaining, limit): 1*DIGIT; RateLimit-Limit's "100, 100;w=60" gives its first. */
static int count_value(const char *v, size_t len, bool first_of_list, uint64_t *out)
{
        struct scan s = {v, v + len};
        skip_ows(&s);
        int rc = digits_u64(&s, out);
        if (rc < 0)
                return rc;
        if (first_of_list && s.p < s.end && (*s.p == ',' || *s.p == ';'))
                return 0;
        return at_end(&s) ? 0 : -EINVAL;
}

/* ---------------------------------------------------------------- IETF structured fields */

/*
 * The subset of RFC 9651 the RateLimit fields use: a list of items whose bare item is a string or
 * a token, each with parameters KEY=INTEGER (other parameter values, strings, tokens and byte
 * sequences, are skipped), or the earlier drafts' dictionary of KEY=INTEGER.
 */
struct sf_member {
        uint64_t r, t, q, w; /* RateLimit: r, t; RateLimit-Policy: q, w */
        unsigned has;        /* bits: 1 r, 2 t, 4 q, 8 w */
};

static bool sf_key_char(char c, bool first)
{
        return (c >= 'a' && c <= 'z') || c == '*' ||
               (!first && ((c >= '0' && c <= '9') || c == '_' || c == '-' || c == '.'));
}

static int sf_key(struct scan *s, char *key, size_t cap)
{
        size_t n = 0;
        if (s->p == s->end || !sf_key_char(*s->p, true))
                return -EINVAL;
        while (s->p < s->end && sf_key_char(*s->p, n == 0)) {
                if (n + 1 < cap)
                        key[n] = *s->p;
                n++;
                s->p++;
        }
        key[n + 1 < cap ? n : cap - 1] = 0;
        return 0;
}

/* Skips a bare item that is not an integer: a string, a token, a byte sequence, a boolean. */
static int sf_skip_item(struct scan *s)
{
        if (eat(s, '"')) {
                while (s->p < s->end && *s->p != '"') {
                        if (*s->p == '\\' && s->p + 1 < s->end)
                                s->p++;
                        s->p++;
                }
                return eat(s, '"') ? 0 : -EINVAL;
        }
        if (eat(s, ':')) {
                while (s->p < s->end && *s->p != ':')
                        s->p++;
                return eat(s, ':') ? 0 : -EINVAL;
        }
        if (eat(s, '?'))
                return eat(s, '0') || eat(s, '1') ? 0 : -EINVAL;
        const char *start = s->p;
        while (s->p < s->end && *s->p != ';' && *s->p != ',' && *s->p != ' ' && *s->p != '\t')
                s->p++;
        return s->p > start ? 0 : -EINVAL;
}

static void sf_set(struct sf_member *m, const char *key, uint64_t v)
{
        static const char *const names[] = {"r", "t", "q", "w"};
        /* the intermediate drafts' dictionary names the same quantities */
        static const char *const long_names[] = {"remaining", "reset", "limit", "window"};
        for (unsigned i = 0; i < 4; i++)
                if (!strcmp(key, names[i]) || !strcmp(key, long_names[i])) {
                        uint64_t *f = i == 0 ? &m->r : i == 1 ? &m->t : i == 2 ? &m->q : &m->w;
                        *f = v;
                        m->has |= 1u << i;
                }
}

static void sf_merge(struct sf_member *into, const struct sf_member *m)
{
        if (m->has & 1)
                into->r = m->r;
        if (m->has & 2)
                into->t = m->t;
        if (m->has & 4)
                into->q = m->q;
        if (m->has & 8)
                into->w = m->w;
        into->has |= m->has;
}

/* KEY=VALUE pairs after ';' (parameters) or, in a dictionary, the member itself. */
static int sf_value(struct scan *s, struct sf_member *m, const char *key)
{
        if (s->p < s->end && ((*s->p >= '0' && *s->p <= '9') || *s->p == '-')) {
                if (*s->p == '-')
                        return -EINVAL; /* no negative count or time means anything here */
                uint64_t v;
                int rc = digits_u64(s, &v);
                if (rc < 0)
                        return rc;
                if (s->p < s->end && *s->p == '.')
                        return -EINVAL; /* the fields are integers */
                sf_set(m, key, v);
                return 0;
        }
        return sf_skip_item(s);
}

static int sf_params(struct scan *s, struct sf_member *m)
{
        while (eat(s, ';')) {
                char key[64];
                skip_ows(s);
                int rc = sf_key(s, key, sizeof(key));
                if (rc < 0)
                        return rc;
                if (eat(s, '=')) {
                        if ((rc = sf_value(s, m, key)) < 0)
                                return rc;
                }
        }
        return 0;
}

/* The members of the field's list in OUT[0..*N_OUT), or of its dictionary as OUT[0] alone. */
static int sf_parse(const char *v, size_t len, struct sf_member *out, int *n_out, int cap)
{
        struct scan s = {v, v + len};
        int n = 0;
        bool dict = false;
        skip_ows(&s);
        if (s.p == s.end)
                return -EINVAL;
        for (;;) {
                struct sf_member m = {0};
                skip_ows(&s);
                if (s.p < s.end && (*s.p == '"' || (*s.p >= 'A' && *s.p <= 'Z'))) {
                        int rc = sf_skip_item(&s); /* a list member: its name */
                        if (rc < 0)
                                return rc;
                } else {
                        char key[64];
                        int rc = sf_key(&s, key, sizeof(key));
                        if (rc < 0)
                                return rc;
                        if (eat(&s, '=')) { /* a dictionary member: key=value */
                                dict = true;
                                if ((rc = sf_value(&s, &m, key)) < 0)
                                        return rc;
                        } /* else a token naming a list member */
                }
                int rc = sf_params(&s, &m);
                if (rc < 0)
                        return rc;
                if (dict && n > 0) /* a dictionary's members are one reading together */
                        sf_merge(&out[0], &m);
                else if (n < cap)
                        out[n++] = m;
                else
                        return -E2BIG;
                skip_ows(&s);
                if (s.p == s.end)
                        break;
                if (!eat(&s, ','))
                        return -EINVAL;
        }
        *n_out = n;
        return 0;
}

/* ---------------------------------------------------------------- folding into the feedback */

static void fold_min(struct thr_feedback_dim *d, unsigned bit, uint64_t *f, uint64_t v)
{
        if (!(d->has & bit) || v < *f)
                *f = v;
        d->has |= bit;
}

static void fold_max(struct thr_feedback_dim *d, unsigned bit, uint64_t *f, uint64_t v)
{
        if (!(d->has & bit) || v > *f)
                *f = v;
        d->has |= bit;
}

void thr_feedback_init(struct thr_feedback *fb)
{
        if (fb)
                memset(fb, 0, sizeof(*fb));
}

enum fb_field { F_REMAINING, F_RESET, F_LIMIT };

/* "x-ratelimit-remaining-tokens" etc.: the field and the dimension, or false. */
static bool xrl_name(const char *name, size_t len, enum fb_field *f, bool *tokens, bool *after)
{
        static const struct {
                const char *name;
                enum fb_field f;
                bool after;
        } k[] = {{"remaining", F_REMAINING, false},
                 {"reset", F_RESET, false},
                 {"reset-after", F_RESET, true},
                 {"limit", F_LIMIT, false}};
        const char *rest;
        size_t rlen;
        if (len > 12 && eq_nocase(name, 12, "x-ratelimit-"))
                rest = name + 12, rlen = len - 12;
        else if (len > 10 && eq_nocase(name, 10, "ratelimit-"))
                rest = name + 10, rlen = len - 10;
        else
                return false;
        *tokens = false;
        if (rlen > 7 && eq_nocase(rest + rlen - 7, 7, "-tokens"))
                *tokens = true, rlen -= 7;
        else if (rlen > 9 && eq_nocase(rest + rlen - 9, 9, "-requests"))
                rlen -= 9;
        for (size_t i = 0; i < sizeof(k) / sizeof(k[0]); i++)
                if (eq_nocase(rest, rlen, k[i].name)) {
                        *f = k[i].f;
                        *after = k[i].after;
                        return true;
                }
        return false;
}

int thr_feedback_header(struct thr_feedback *fb, const char *name, size_t name_len,
                        const char *value, size_t value_len, int64_t now_unix_ns)
{
        if (!fb || !name || !value || now_unix_ns < 0)
                return -EINVAL;
        int rc;
        if (eq_nocase(name, name_len, "retry-after")) {
                uint64_t d;
                if ((rc = thr_retry_after_parse(value, value_len, now_unix_ns, &d)) < 0)
                        return rc;
                if (!(fb->has & THR_FEEDBACK_RETRY_AFTER) || d > fb->retry_after_ns)
                        fb->retry_after_ns = d;
                fb->has |= THR_FEEDBACK_RETRY_AFTER;
                return 1;
        }
        bool policy = eq_nocase(name, name_len, "ratelimit-policy");
        if (policy || eq_nocase(name, name_len, "ratelimit")) {
                struct sf_member m[16];
                int n = 0;
                if ((rc = sf_parse(value, value_len, m, &n, 16)) < 0)
                        return rc;
                /*
                 * Several members are several quotas ("burst" and "daily"): the one binding now
                 * is read, the fewest remaining (RateLimit) or the smallest quota (-Policy), on a
                 * tie the later reset or the longer window, with its own reset or window. Mixing
                 * one member's remaining with another's reset would deny for a day what a burst
                 * quota ends in seconds.
                 */
                int best = -1;
                for (int i = 0; i < n; i++) {
                        if (policy ? !(m[i].has & 4) : !(m[i].has & 3))
                                continue;
                        if (m[i].t > UINT64_MAX / NS_PER_S || m[i].w > UINT64_MAX / NS_PER_S)
                                return -ERANGE;
                        uint64_t key = policy ? m[i].q : m[i].has & 1 ? m[i].r : UINT64_MAX;
                        uint64_t tie = policy ? m[i].w : m[i].t;
                        if (best < 0)
                                best = i;
                        uint64_t bkey = policy            ? m[best].q
                                        : m[best].has & 1 ? m[best].r
                                                          : UINT64_MAX;
                        uint64_t btie = policy ? m[best].w : m[best].t;
                        if (key < bkey || (key == bkey && tie > btie))
                                best = i;
                }
                if (best < 0)
                        return -EINVAL; /* no member says what this field is for */
                struct thr_feedback_dim *d = &fb->requests;
                const struct sf_member *b = &m[best];
                if (policy) {
                        fold_min(d, THR_FEEDBACK_LIMIT, &d->limit, b->q);
                        if (b->has & 8)
                                fold_max(d, THR_FEEDBACK_WINDOW, &d->window_ns, b->w * NS_PER_S);
                        return 1;
                }
                if (b->has & 1)
                        fold_min(d, THR_FEEDBACK_REMAINING, &d->remaining, b->r);
                if (b->has & 2)
                        fold_max(d, THR_FEEDBACK_RESET, &d->reset_ns, b->t * NS_PER_S);
                if (b->has & 4) /* the dictionary form's limit */
                        fold_min(d, THR_FEEDBACK_LIMIT, &d->limit, b->q);
                return 1;
        }
        enum fb_field f;
        bool tokens, after;
        if (!xrl_name(name, name_len, &f, &tokens, &after))
                return 0; /* not a header about limits */
        struct thr_feedback_dim *d = tokens ? &fb->tokens : &fb->requests;
        uint64_t v;
        bool ietf = name_len > 10 && eq_nocase(name, 10, "ratelimit-");
        switch (f) {
        case F_REMAINING:
                if ((rc = count_value(value, value_len, false, &v)) < 0)
                        return rc;
                fold_min(d, THR_FEEDBACK_REMAINING, &d->remaining, v);
                return 1;
        case F_LIMIT:
                if ((rc = count_value(value, value_len, true, &v)) < 0)
                        return rc;
                fold_min(d, THR_FEEDBACK_LIMIT, &d->limit, v);
                return 1;
        case F_RESET:
                if (after || ietf) { /* seconds from now, never a Unix time */
                        struct scan s = {value, value + value_len};
                        uint64_t sec, frac = 0;
                        skip_ows(&s);
                        if ((rc = digits_u64(&s, &sec)) < 0)
                                return rc;
                        if (eat(&s, '.') && (rc = fraction(&s, NS_PER_S, &frac)) < 0)
                                return rc;
                        if (!at_end(&s))
                                return -EINVAL;
                        if ((rc = mul_ns(sec, NS_PER_S, &v)) < 0 || (rc = add_ns(v, frac, &v)) < 0)
                                return rc;
                } else if ((rc = reset_value(value, value_len, now_unix_ns, &v)) < 0) {
                        return rc;
                }
                fold_max(d, THR_FEEDBACK_RESET, &d->reset_ns, v);
                return 1;
        }
        return 0;
}

/* ---------------------------------------------------------------- backoff */

/* A uniform value in [LO, HI] from 64 random bits (Lemire's multiply-shift, no division). */
static uint64_t uniform(uint64_t lo, uint64_t hi, uint64_t rnd)
{
        if (hi <= lo)
                return lo;
        uint64_t span = hi - lo;
        if (span == UINT64_MAX)
                return rnd;
        return lo + (uint64_t)(((unsigned __int128)rnd * (span + 1)) >> 64);
}

int thr_backoff_delay(const struct thr_backoff *b, uint32_t attempt, uint64_t prev_ns,
                      uint64_t random, uint64_t *delay_ns)
{
        if (!b || !delay_ns || b->kind > THR_BACKOFF_EXPONENTIAL ||
            b->jitter > THR_JITTER_DECORRELATED || !b->base_ns)
                return -EINVAL;
        uint64_t cap = b->cap_ns ? b->cap_ns : UINT64_MAX;
        if (cap < b->base_ns)
                return -EINVAL;
        if (b->jitter == THR_JITTER_DECORRELATED) {
                /* sleep = min(cap, random_between(base, prev * 3)), prev = base at first */
                uint64_t prev = prev_ns ? prev_ns : b->base_ns;
                uint64_t hi = prev > UINT64_MAX / 3 ? UINT64_MAX : prev * 3;
                uint64_t d = uniform(b->base_ns, hi < b->base_ns ? b->base_ns : hi, random);
                *delay_ns = d < cap ? d : cap;
                return 0;
        }
        uint64_t d;
        switch (b->kind) {
        case THR_BACKOFF_CONSTANT:
                d = b->base_ns;
                break;
        case THR_BACKOFF_LINEAR: /* base * (attempt + 1) */
                d = (uint64_t)attempt + 1 > UINT64_MAX / b->base_ns
                        ? UINT64_MAX
                        : b->base_ns * ((uint64_t)attempt + 1);
                break;
        default: /* base * 2^attempt */
                d = attempt >= 64 || b->base_ns > UINT64_MAX >> attempt ? UINT64_MAX
                                                                        : b->base_ns << attempt;
                break;
        }
        if (d > cap)
                d = cap;
        switch (b->jitter) {
        case THR_JITTER_FULL: /* random_between(0, d) */
                d = uniform(0, d, random);
                break;
        case THR_JITTER_EQUAL: /* d/2 + random_between(0, d/2) */
                d = d / 2 + uniform(0, d / 2, random);
                break;
        default:
                break;
        }
        *delay_ns = d;
        return 0;
}
