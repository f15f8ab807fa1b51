/*
 * http_compose.c - the HTTP API's composed calls and named groups (doc/http-api.md): POST
 * /v1/compose/try|acquire and /v1/groups/{name}/try|acquire, all members or none
 * (thr_compose_try(3), thr_group_try(3)). A try is decided at once; an acquire with a timeout
 * is a job for a waiter thread (it sleeps until the slowest member would fit).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http_internal.h"

static const char *const F_COMPOSE[] = {"members", "timeout_ms", NULL};
static const char *const F_GROUP[] = {"args", "timeout_ms", NULL};

static void compose_answer(struct http_out *out, int rc, const struct thr_compose_result *res,
                           size_t n)
{
        if (rc < 0 && rc != -ETIMEDOUT) {
                http_error(out, -rc, NULL);
                return;
        }
        json_t *rem = json_array();
        for (size_t i = 0; i < n; i++)
                json_array_append_new(rem, http_ju(res->remaining[i]));
        json_t *o = json_pack("{s:b,s:I,s:o,s:o}", "admitted", rc > 0, "denied",
                              rc > 0 ? (json_int_t)-1 : (json_int_t)res->denied, "retry_after_ns",
                              http_ju(res->retry_after_ns), "remaining", rem);
        if (rc == -ETIMEDOUT) {
                http_error_with(out, ETIMEDOUT, "not admitted within the timeout", o);
                return;
        }
        http_ok(out, 200, o);
        if (rc == 0)
                out->retry_after = (res->retry_after_ns + 999999999u) / 1000000000u;
}

/* The members of a composed call or a group's arguments into J: 0, or -1 answered. */
static int members(struct route *rt, struct http_job *j, const char *field, bool group)
{
        json_t *arr = json_object_get(rt->r.o, field), *m;
        static const char *const fm[] = {"limiter", "key", "cost", NULL};
        static const char *const fa[] = {"key", "cost", NULL};
        char msg[160];
        if (!json_is_array(arr) || json_array_size(arr) < 1 ||
            json_array_size(arr) > THR_COMPOSE_MAX_MEMBERS) {
                snprintf(msg, sizeof(msg), "field '%s': expected an array of 1 to %d objects",
                         field, THR_COMPOSE_MAX_MEMBERS);
                http_error(rt->r.out, EINVAL, msg);
                return -1;
        }
        size_t i;
        json_array_foreach(arr, i, m)
        {
                struct http_req sub = {.o = m, .out = rt->r.out};
                if (!json_is_object(m)) {
                        snprintf(msg, sizeof(msg), "%s[%zu]: expected an object", field, i);
                        http_error(rt->r.out, EINVAL, msg);
                        return -1;
                }
                if (http_fields(&sub, group ? fa : fm) < 0 ||
                    http_u64(&sub, "cost", false, 1, UINT64_MAX >> 1, &j->costs[i]) < 0)
                        return -1;
                j->nokey[i] = group && !json_object_get(m, "key");
                if (!j->nokey[i] && http_key(&sub, m, "key", j->keys[i], &j->lens[i]) < 0)
                        return -1;
                if (group)
                        continue;
                json_t *l = json_object_get(m, "limiter");
                struct route one = *rt;
                one.name = json_string_value(l);
                if (!json_is_string(l)) {
                        snprintf(msg, sizeof(msg), "%s[%zu]: field 'limiter': expected a string",
                                 field, i);
                        http_error(rt->r.out, EINVAL, msg);
                        return -1;
                }
                if (http_limiter(&one, &j->lims[i]) < 0)
                        return -1;
        }
        j->n = json_array_size(arr);
        return 0;
}

static int compose_call(struct http_job *j, bool wait, struct thr_compose_result *res)
{
        struct thr_member mem[THR_COMPOSE_MAX_MEMBERS];
        for (size_t i = 0; i < j->n; i++)
                mem[i] = (struct thr_member){j->lims[i], j->keys[i], j->lens[i], j->costs[i]};
        return wait ? thr_compose_acquire(mem, j->n, j->timeout_ns, res, NULL)
                    : thr_compose_try(mem, j->n, res);
}

static int group_call(struct http_job *j, bool wait, struct thr_compose_result *res)
{
        struct thr_group_arg args[THR_COMPOSE_MAX_MEMBERS];
        for (size_t i = 0; i < j->n; i++)
                args[i] = (struct thr_group_arg){j->nokey[i] ? NULL : j->keys[i], j->lens[i],
                                                 j->costs[i]};
        return wait ? thr_group_acquire(j->grp, args, j->timeout_ns, res, NULL)
                    : thr_group_try(j->grp, args, res);
}

void http_compose_post(struct route *rt, bool group, bool wait)
{
        struct http_job *j = calloc(1, sizeof(*j));
        uint64_t timeout = 0;
        if (!j) {
                http_error(rt->r.out, ENOMEM, NULL);
                return;
        }
        int rc = http_fields(&rt->r, group ? F_GROUP : F_COMPOSE);
        if (rc == 0)
                rc = http_ms(&rt->r, "timeout_ms", false, wait ? UINT64_MAX : 0, &timeout);
        if (rc == 0 && group && (rc = http_grp_get(rt->api, rt->name, &j->grp)) < 0) {
                char msg[160];
                snprintf(msg, sizeof(msg), "no group '%.64s'", rt->name);
                http_error(rt->r.out, -rc, rc == -ENOENT ? msg : NULL);
        }
        if (rc == 0)
                rc = members(rt, j, group ? "args" : "members", group);
        if (rc == 0 && group && (size_t)thr_group_size(j->grp) != j->n) {
                char msg[160];
                snprintf(msg, sizeof(msg), "group '%.64s' has %d members: 'args' needs as many",
                         rt->name, thr_group_size(j->grp));
                http_error(rt->r.out, EINVAL, msg);
                rc = -1;
        }
        if (rc < 0) {
                free(j);
                return;
        }
        j->api = rt->api;
        j->kind = group ? JOB_GROUP : JOB_COMPOSE;
        j->timeout_ns = http_cap(rt->api, timeout);
        if (wait && j->timeout_ns) {
                rt->r.out->wait = HTTP_WAIT_THREAD;
                rt->r.out->job = j;
                return;
        }
        struct thr_compose_result res = {0};
        rc = group ? group_call(j, wait, &res) : compose_call(j, wait, &res);
        if (rc == -EIDRM && group && http_grp_again(rt->api, rt->name, j->grp, &j->grp) == 0)
                rc = group_call(j, wait, &res);
        compose_answer(rt->r.out, rc, &res, j->n);
        free(j);
}

void http_compose_run(struct http_job *j, struct http_out *out)
{
        struct thr_compose_result res = {0};
        int rc = j->kind == JOB_GROUP ? group_call(j, true, &res) : compose_call(j, true, &res);
        compose_answer(out, rc, &res, j->n);
}
