/*
 * fuzz_feedback.c - the fuzz target of the outbound feedback parsers and the backoff function
 * (libclient/feedback.c), which read what a downstream sends: any bytes as
 * "NAME\nVALUE1[\nVALUE2]", each value read in turn as that header and as each header name the
 * parsers know, and as a Retry-After value, against a fixed time. Properties checked, not only
 * crashes: a header that is refused (< 0) or not about limits (0) leaves the feedback as it was; a
 * header read (1) never raises a remaining count or a limit, nor lowers a reset, a window or a
 * retry-after, already read; a backoff delay is within its policy's bounds. Built like fuzz_config:
 * with libFuzzer (THR_FUZZ=ON) and with fuzz_driver.c.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "throttle/throttle.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define NOW_NS 1796342400000000000ll /* 2026-12-04 00:00:00 UTC */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
        (void)argc;
        (void)argv;
        return 0;
}

/* What a read may do to one dimension: the least remaining and limit, the latest reset, window. */
static void check_dim(const struct thr_feedback_dim *b, const struct thr_feedback_dim *a)
{
        if ((b->has & ~a->has) ||
            ((b->has & THR_FEEDBACK_REMAINING) && a->remaining > b->remaining) ||
            ((b->has & THR_FEEDBACK_LIMIT) && a->limit > b->limit) ||
            ((b->has & THR_FEEDBACK_RESET) && a->reset_ns < b->reset_ns) ||
            ((b->has & THR_FEEDBACK_WINDOW) && a->window_ns < b->window_ns))
                abort();
}

static void read_one(struct thr_feedback *fb, const char *name, size_t nlen, const char *v,
                     size_t vlen)
{
        struct thr_feedback before = *fb;
        int rc = thr_feedback_header(fb, name, nlen, v, vlen, NOW_NS);
        if (rc <= 0) {
                if (memcmp(&before, fb, sizeof(before)))
                        abort(); /* refused or not about limits, yet changed */
                return;
        }
        if (rc != 1 || (before.has & ~fb->has) ||
            ((before.has & THR_FEEDBACK_RETRY_AFTER) && fb->retry_after_ns < before.retry_after_ns))
                abort();
        check_dim(&before.requests, &fb->requests);
        check_dim(&before.tokens, &fb->tokens);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        static const char *const names[] = {"Retry-After",
                                            "X-RateLimit-Remaining",
                                            "X-RateLimit-Reset",
                                            "X-RateLimit-Reset-After",
                                            "X-RateLimit-Limit-Tokens",
                                            "RateLimit",
                                            "RateLimit-Policy",
                                            "RateLimit-Reset",
                                            "RateLimit-Limit"};
        /* "NAME\nVALUE1[\nVALUE2]": every name read with VALUE1, then VALUE2 on top */
        const char *p = (const char *)data;
        const char *nl = memchr(p, '\n', size);
        const char *v = nl ? nl + 1 : p;
        size_t nlen = nl ? (size_t)(nl - p) : 0, vlen = nl ? size - nlen - 1 : size;
        const char *nl2 = memchr(v, '\n', vlen);
        const char *v2 = nl2 ? nl2 + 1 : v;
        size_t v2len = nl2 ? vlen - (size_t)(v2 - v) : vlen;
        if (nl2)
                vlen = (size_t)(nl2 - v);
        struct thr_feedback fb;
        thr_feedback_init(&fb);
        read_one(&fb, p, nlen, v, vlen); /* the header as given */
        read_one(&fb, p, nlen, v2, v2len);
        for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
                read_one(&fb, names[i], strlen(names[i]), v, vlen);
                read_one(&fb, names[i], strlen(names[i]), v2, v2len);
        }
        uint64_t d = 0;
        (void)thr_retry_after_parse(v, vlen, NOW_NS, &d);

        if (size >= 32) { /* a backoff policy from the first 32 bytes */
                struct thr_backoff b = {0};
                uint64_t w[4];
                memcpy(w, data, sizeof(w));
                b.kind = (uint32_t)(w[0] % 4); /* 3: refused */
                b.jitter = (uint32_t)(w[0] >> 8) % 5;
                b.base_ns = w[1] >> (w[0] >> 16 & 63);
                b.cap_ns = w[2] >> (w[0] >> 24 & 63);
                uint32_t attempt = (uint32_t)(w[0] >> 32) & 127;
                uint64_t prev = w[3] >> (w[0] >> 40 & 63);
                int rc = thr_backoff_delay(&b, attempt, prev, w[3] ^ w[1], &d);
                uint64_t cap = b.cap_ns ? b.cap_ns : UINT64_MAX;
                if (rc == 0 && (d > cap || (b.jitter == THR_JITTER_DECORRELATED && d < b.base_ns) ||
                                (b.jitter == THR_JITTER_NONE && d < b.base_ns)))
                        abort();
                if (rc < 0 && b.kind <= THR_BACKOFF_EXPONENTIAL &&
                    b.jitter <= THR_JITTER_DECORRELATED && b.base_ns && cap >= b.base_ns)
                        abort(); /* a valid policy refused */
        }
        return 0;
}
