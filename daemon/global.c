/*
 * global.c - global limiters: the daemon's lease thread. A limiter with scope = global has one
 * rate R and burst B for every host that names it. Each host's throttled holds a share f (in
 * millionths) of it, leased from Redis, and runs its local buckets at f R and max(1, f B)
 * (shm_limiter_rescale): clients decide with one CAS in the arena and never talk to Redis.
 *
 * The lease (global_lease_script, one atomic Lua script per limiter and renewal, EVAL on the key
 * "{prefix:limiter}:leases", a hash of holder -> "share demand expiry_ms"):
 *   - entries past their expiry are deleted: a host that stopped renewing gives its share back
 *     lease_ttl after its last renewal;
 *   - the caller's target, with n live holders (itself included) and demands d_i (requests per
 *     second it saw: admitted plus denied, over its last interval, for the whole limiter):
 *     target = m + (10^6 - n m) d_me / sum(d), m = min_share (at most 10^6 / n); 10^6 / n when
 *     nobody has demand. Shares follow demand, an idle host keeps m, a host alone with demand
 *     gets 10^6 - (n - 1) m;
 *   - the grant is min(target, 10^6 - the others' current shares): the sum of the shares Redis
 *     records never exceeds 10^6. A host whose target fell lowers its own share at its next
 *     renewal, and only then can another take it: shares converge within two renewals of each;
 *   - learning (Doorman's): for lease_ttl after the hash is created (a new fleet, a Redis that
 *     restarted empty, or a hash that expired), a grant is also at most what the caller says it
 *     holds now ("has"), so hosts whose leases Redis forgot are re-learned before any share grows.
 * The host applies a grant at once when it is lower than the share it runs at, and a higher one
 * only once it is GL_RAISE above it (floored to GL_STEP, so never above the grant): its buckets
 * never run faster than its recorded share, and records are not republished for noise.
 *
 * The bound, with every lease current and Redis answering: at every instant the shares the hosts
 * run at sum to at most 10^6, except that a host lowers its share one reply late (a round trip
 * after Redis recorded it), when another may already hold the difference. So over any interval of
 * length t the hosts together admit at most
 *     R t + (B + H) + R (sum of the share decreases in it) x (round trip + publish)
 *         + B (sum of the share increases in it) / 10^6
 * with H the number of hosts (each bucket holds at least one request). The last term is a
 * burst's worth per share moved: a bucket that grows may admit its new room at once. Measured in
 * tests/test_global.c and bench/bench_global.c.
 *
 * When Redis cannot be reached, the lease stays good until it ends (this host's clock: the
 * lease's end is counted from before the request, so it ends here before it ends in Redis).
 * Then on_redis_down decides: keep (the last share for keep_for more, then the safe share
 * 10^6 / expected_hosts), closed (the least share, a millionth: admissions stop except each
 * key's single bucket place), open (the whole limit on this host). Keep and open can exceed R
 * across hosts (the others may take the share back): that is the availability they choose. A
 * daemon starts at the safe share (config.c), before and until its first answer. A lease that
 * could end before the thread looks again, while it renews the others (a round longer than
 * lease_ttl: many limiters, a slow Redis), is treated alike until its renewal (expire, logged).
 * What this thread cannot do: a share is a parameter record, which clients use without looking
 * at the lease. If this daemon dies or is stopped, its clients keep its last share until a
 * daemon runs again (the unit restarts it within a default lease), while Redis may give that
 * share to another host once the lease ends: the bound above assumes the daemons run.
 *
 * Threads: the lease thread reads the registry under rcu_read_lock and copies what it needs (a
 * round's Redis calls block up to [global] timeout each). It publishes records under
 * s->arena_mu after checking the arena's config_gen is the one the registry was made under, as
 * adapt.c does; a reload (main thread, under the same mutex) reads each limiter's applied share
 * (global_scale_config) so the record it publishes keeps the share. gl_lim.name and .applied are
 * changed only under arena_mu.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <urcu.h>

#include "global.h"
#include "log.h"
#include "rlink.h"
#include "supervisor.h"
#include "tsan.h"

#define GL_STEP  1000u /* shares are applied in steps of 0.1% (floored) ... */
#define GL_RAISE 5000u /* ... and raised once the grant is 0.5% above the share applied */

const char global_lease_script[] =
    "if redis.replicate_commands then redis.replicate_commands() end\n" /* TIME, Redis < 5 */
    "local key, me = KEYS[1], ARGV[1]\n"
    "local demand, has = tonumber(ARGV[2]), tonumber(ARGV[3])\n"
    "local ttl, minp = tonumber(ARGV[4]), tonumber(ARGV[5])\n"
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local born = tonumber(redis.call('HGET', key, '~born') or '')\n"
    "if not born then born = now; redis.call('HSET', key, '~born', now) end\n"
    "local learning = now < born + ttl\n"
    "local others, n, sum = 0, 1, demand\n"
    "local all = redis.call('HGETALL', key)\n"
    "for i = 1, #all, 2 do\n"
    "  local h = all[i]\n"
    "  if h ~= me and h ~= '~born' then\n"
    "    local s, d, e = string.match(all[i + 1], '^(%d+) (%d+) (%d+)$')\n"
    "    s, d, e = tonumber(s), tonumber(d), tonumber(e)\n"
    "    if not e or e <= now then redis.call('HDEL', key, h)\n"
    "    else others = others + s; sum = sum + d; n = n + 1 end\n"
    "  end\n"
    "end\n"
    "local m = minp\n"
    "if m * n > 1000000 then m = math.floor(1000000 / n) end\n"
    "local target\n"
    "if sum == 0 then target = math.floor(1000000 / n)\n"
    "else target = m + math.floor((1000000 - m * n) * demand / sum) end\n"
    "local grant = 1000000 - others\n"
    "if grant > target then grant = target end\n"
    "if grant < 0 then grant = 0 end\n"
    "if learning and grant > has then grant = has end\n"
    "redis.call('HSET', key, me, grant .. ' ' .. demand .. ' ' .. (now + ttl))\n"
    "redis.call('PEXPIRE', key, ttl * 10)\n"
    "return {grant, n, others, learning and 1 or 0, now}\n";

/* One global limiter as the lease thread keeps it. */
struct gl_lim {
        char name[THR_NAME_MAX + 1]; /* "" : a free entry (changed under arena_mu) */
        struct shm_limiter_spec spec;
        uint32_t idx;        /* directory entry */
        uint32_t applied;    /* the share its buckets run at (changed under arena_mu) */
        uint32_t state;      /* THR_GLOBAL_* */
        uint32_t hosts;      /* holders at the last answer */
        uint64_t lease_end;  /* CLOCK_MONOTONIC ns: the lease ends (this host's reckoning) */
        uint64_t sum, sum_t; /* admitted + denied, and when they were read (demand) */
        uint64_t demand;     /* requests per second over the last interval */
        bool seen, down_logged, publish_failed;
};

/* What a round needs of the registry, copied out of its read-side section. */
struct gl_snap {
        uint64_t gen;
        struct rlink_cfg lcfg;
        char prefix[64], host[64], arena[THR_NAME_MAX + 1];
        uint64_t interval_ns, ttl_ns;
        uint32_t n;
        uint32_t idx[CONFIG_MAX_LIMITERS];
        struct shm_limiter_spec spec[CONFIG_MAX_LIMITERS];
        uint32_t nlocal; /* limiters of the registry that are not global */
        uint32_t local_idx[CONFIG_MAX_LIMITERS];
};

struct global {
        pthread_t th;
        struct rlink *link;
        struct rlink_cfg lcfg;
        char host[128];
        struct gl_lim lim[CONFIG_MAX_LIMITERS];
        struct gl_snap snap;
        struct gl_lim *round[CONFIG_MAX_LIMITERS]; /* snap's limiters' entries, this round */
        uint64_t call_ns;                          /* how long the last renewal took */
        bool slow_logged; /* a lease would end before its renewal (logged once) */
};

static uint64_t mono_ns(void)
{
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Copy the registry's global limiters and [global] settings; false when there is no registry. */
static bool take_snapshot(struct supervisor *s, struct gl_snap *sn)
{
        rcu_read_lock();
        const struct registry *reg = rcu_dereference(s->reg);
        TSAN_ACQUIRE(&s->reg); /* liburcu is not instrumented: its publish order, said to TSan */
        if (!reg) {
                rcu_read_unlock();
                return false;
        }
        const struct config *c = &reg->cfg;
        sn->gen = reg->gen;
        memset(&sn->lcfg, 0, sizeof(sn->lcfg));
        snprintf(sn->lcfg.addr, sizeof(sn->lcfg.addr), "%s", c->global_redis);
        snprintf(sn->lcfg.user, sizeof(sn->lcfg.user), "%s", c->global_user);
        snprintf(sn->lcfg.password, sizeof(sn->lcfg.password), "%s", c->global_password);
        sn->lcfg.connect_timeout_ms = sn->lcfg.io_timeout_ms =
            (unsigned)(c->global_timeout_ns / 1000000);
        snprintf(sn->prefix, sizeof(sn->prefix), "%s", c->global_prefix);
        snprintf(sn->host, sizeof(sn->host), "%s", c->global_host);
        snprintf(sn->arena, sizeof(sn->arena), "%s", c->arena_name);
        sn->interval_ns = c->global_interval_ns;
        sn->ttl_ns = c->global_lease_ttl_ns;
        sn->n = sn->nlocal = 0;
        for (uint32_t i = 0; i < reg->n; i++) {
                const struct shm_limiter_spec *ls = &c->limiters[reg->spec[i]];
                if (ls->global.on) {
                        sn->idx[sn->n] = reg->idx[i];
                        sn->spec[sn->n++] = *ls;
                } else {
                        sn->local_idx[sn->nlocal++] = reg->idx[i];
                }
        }
        TSAN_RELEASE(reg); /* pairs with the acquire registry_publish makes before freeing it */
        rcu_read_unlock();
        return true;
}

static struct thr_dir_entry *dir_entry(struct supervisor *s, uint32_t idx)
{
        return (struct thr_dir_entry *)shm_at(s->map.base, s->map.g.dir_off) + idx;
}

/* The entry of limiter NAME, or NULL. */
static struct gl_lim *entry_of(struct global *g, const char *name)
{
        for (size_t i = 0; i < CONFIG_MAX_LIMITERS; i++)
                if (!strcmp(g->lim[i].name, name))
                        return &g->lim[i];
        return NULL;
}

/* The entry of the round's limiter LS (directory entry IDX), made if new at the share its
 * record was built with, starting, its lease counted from NOW; NULL if the table is full. */
static struct gl_lim *entry_for(struct supervisor *s, struct global *g,
                                const struct shm_limiter_spec *ls, uint32_t idx, uint64_t now,
                                uint64_t ttl)
{
        struct gl_lim *l = entry_of(g, ls->name);
        if (!l && (l = entry_of(g, "")) != NULL) {
                pthread_mutex_lock(&s->arena_mu);
                *l = (struct gl_lim){
                    .applied = ls->scale_ppm, .state = THR_GLOBAL_STARTING, .lease_end = now + ttl};
                snprintf(l->name, sizeof(l->name), "%s", ls->name);
                pthread_mutex_unlock(&s->arena_mu);
        }
        if (l) {
                l->spec = *ls;
                l->idx = idx;
                l->seen = true;
        }
        return l;
}

/* Demand: admitted + denied per second since the last renewal, over every reader's row. */
static void measure(struct supervisor *s, struct gl_lim *l, uint64_t now)
{
        uint64_t over, adm, den;
        sup_lim_sums(&s->map, l->idx, &over, &adm, &den);
        uint64_t sum = adm + den;
        if (l->sum_t && now > l->sum_t && sum >= l->sum)
                l->demand =
                    (uint64_t)((__uint128_t)(sum - l->sum) * 1000000000u / (now - l->sum_t));
        l->sum = sum;
        l->sum_t = now;
}

/* One renewal: 0 and *GRANT, or -1 (logged once per outage); *LINK_DOWN when Redis did not
 * answer at all (the round's other limiters are not tried), but for a cluster: there a failed
 * call says only that its key's master failed, and the others' limiters are on other masters. */
static int renew(struct global *g, const struct gl_snap *sn, struct gl_lim *l, uint32_t *grant,
                 bool *link_down)
{
        char key[THR_NAME_MAX + 80], a_dem[24], a_has[16], a_ttl[24], a_min[16], err[256];
        snprintf(key, sizeof(key), "{%s:%s}:leases", sn->prefix, l->name);
        snprintf(a_dem, sizeof(a_dem), "%" PRIu64, l->demand);
        snprintf(a_has, sizeof(a_has), "%" PRIu32, l->applied);
        snprintf(a_ttl, sizeof(a_ttl), "%" PRIu64, sn->ttl_ns / 1000000);
        snprintf(a_min, sizeof(a_min), "%" PRIu64, l->spec.global.min_share_pct * 10000);
        const char *argv[] = {g->host, a_dem, a_has, a_ttl, a_min};
        redisReply *r = rlink_eval(g->link, global_lease_script, key, 5, argv, err, sizeof(err));
        if (!r) {
                *link_down = !rlink_is_cluster(g->link);
        } else if (r->type == REDIS_REPLY_ARRAY && r->elements == 5 &&
                   r->element[0]->type == REDIS_REPLY_INTEGER &&
                   r->element[1]->type == REDIS_REPLY_INTEGER && r->element[0]->integer >= 0 &&
                   r->element[0]->integer <= THR_SCALE_ONE && r->element[1]->integer >= 1) {
                *grant = (uint32_t)r->element[0]->integer;
                l->hosts =
                    r->element[1]->integer > 0xffffff ? 0xffffff : (uint32_t)r->element[1]->integer;
                freeReplyObject(r);
                if (l->down_logged)
                        log_info("limiter '%s': Redis %s answers again; share %.1f%%", l->name,
                                 sn->lcfg.addr, *grant / 1e4);
                l->down_logged = false;
                return 0;
        } else {
                snprintf(err, sizeof(err), "unexpected reply to the lease script%s%s",
                         r->type == REDIS_REPLY_ERROR ? ": " : "",
                         r->type == REDIS_REPLY_ERROR ? r->str : "");
        }
        if (r)
                freeReplyObject(r);
        if (!l->down_logged)
                log_warn("limiter '%s': no lease from Redis %s: %s", l->name, sn->lcfg.addr, err);
        l->down_logged = true;
        return -1;
}

/* The share to run at, and the state, when no lease could be had at NOW. */
static uint32_t when_down(struct gl_lim *l, uint64_t now)
{
        uint32_t safe = (uint32_t)(THR_SCALE_ONE / l->spec.global.expected_hosts);
        if (now < l->lease_end) {
                if (l->state != THR_GLOBAL_STARTING)
                        l->state = THR_GLOBAL_HELD;
                return l->applied;
        }
        switch (l->spec.global.on_down) {
        case SHM_GLOBAL_CLOSED:
                l->state = THR_GLOBAL_CLOSED;
                return 0;
        case SHM_GLOBAL_OPEN:
                l->state = THR_GLOBAL_OPEN;
                return THR_SCALE_ONE;
        default:
                if (l->state != THR_GLOBAL_STARTING && l->state != THR_GLOBAL_SAFE &&
                    now < l->lease_end + l->spec.global.keep_ns) {
                        l->state = THR_GLOBAL_HELD;
                        return l->applied;
                }
                l->state = THR_GLOBAL_SAFE;
                return safe;
        }
}

/* The share to publish for a leased TARGET: lower at once, higher in steps (see the top); the
 * whole is a step (10^6 is a multiple of GL_STEP). */
static uint32_t choose(uint32_t applied, uint32_t target)
{
        uint32_t q = target / GL_STEP * GL_STEP;
        return target < applied || q >= applied + GL_RAISE || q == THR_SCALE_ONE ? q : applied;
}

/* Run L's buckets at SHARE: a new record, unless it is the share they run at (and the last
 * publish did not fail). */
static void publish(struct supervisor *s, const struct gl_snap *sn, struct gl_lim *l,
                    uint32_t share)
{
        if (share == l->applied && !l->publish_failed)
                return;
        char err[256] = "";
        int rc = 0;
        pthread_mutex_lock(&s->arena_mu);
        /* only under the configuration the registry was made from: a reload since then built
         * the record itself, at the share applied then (global_scale_config) */
        if (atomic_load_explicit(&shm_hdr(&s->map)->config_gen, memory_order_relaxed) == sn->gen) {
                rc = shm_limiter_rescale(&s->map, &l->spec, share, err, sizeof(err)); /* 0: 1 */
                if (rc == 0)
                        l->applied = share;
        }
        pthread_mutex_unlock(&s->arena_mu);
        if (rc < 0 && !l->publish_failed)
                log_error("limiter '%s': share %.4f%% not published: %s", l->name, share / 1e4,
                          err);
        l->publish_failed = rc < 0;
}

/*
 * For shmctl and the metrics: the share, the state and the lease's end in arena time. The end is
 * converted with the arena clock and CLOCK_MONOTONIC read together here, not with the caller's
 * reading from before its Redis call: that one made the published end later than the daemon's
 * own (lease_end) by the call's duration.
 */
static void show(struct supervisor *s, const struct gl_lim *l)
{
        struct thr_dir_entry *de = dir_entry(s, l->idx);
        uint64_t arena_now = shm_now_ns(shm_hdr(&s->map)), now = mono_ns();
        bool lease = l->state == THR_GLOBAL_LEASED || l->state == THR_GLOBAL_HELD ||
                     l->state == THR_GLOBAL_STARTING;
        uint64_t end = lease && l->lease_end > now ? arena_now + (l->lease_end - now) : 0;
        atomic_store_explicit(&de->global_share, l->applied ? l->applied : 1, memory_order_relaxed);
        atomic_store_explicit(&de->global_state, l->state | l->hosts << 8, memory_order_relaxed);
        atomic_store_explicit(&de->global_expiry_ns, end, memory_order_relaxed);
}

static void one(struct supervisor *s, struct global *g, const struct gl_snap *sn, struct gl_lim *l,
                bool *link_down)
{
        uint64_t now = mono_ns();
        bool first = l->sum_t == 0;
        measure(s, l, now);
        if (first) { /* no demand measured yet: a renewal now would report none, and a busy host
                      * (a restarted daemon's) would fall to the least share for an interval */
                show(s, l);
                return;
        }
        uint32_t grant = 0, share;
        if (!*link_down && renew(g, sn, l, &grant, link_down) == 0) {
                l->lease_end = now + sn->ttl_ns; /* counted from before the request */
                l->state = THR_GLOBAL_LEASED;
                share = choose(l->applied, grant);
        } else {
                share = when_down(l, now);
        }
        publish(s, sn, l, share);
        show(s, l);
}

/* The link for SN's [global] settings, made again when a reload changed them; the name this
 * host leases under, taken again at each round (a reload may change host_id alone). */
static void relink(struct global *g, const struct gl_snap *sn)
{
        char host[sizeof(g->host)];
        if (sn->host[0]) {
                snprintf(host, sizeof(host), "%s", sn->host);
        } else {
                char hn[64] = "";
                gethostname(hn, sizeof(hn) - 1);
                snprintf(host, sizeof(host), "%s/%s", hn[0] ? hn : "host", sn->arena);
        }
        bool same = g->link && !memcmp(&g->lcfg, &sn->lcfg, sizeof(g->lcfg));
        if (same && !strcmp(g->host, host))
                return;
        if (!same) {
                rlink_free(g->link);
                g->lcfg = sn->lcfg;
                g->link = rlink_new(&g->lcfg);
        }
        snprintf(g->host, sizeof(g->host), "%s", host);
        log_info("global limiters: leasing from Redis %s as '%s'", sn->lcfg.addr, g->host);
}

/* The round's limiters whose lease could end before the lease thread looks again (a call as
 * long as the last one, then the interval) while it renews others: a round longer than lease_ttl
 * (many limiters, a slow Redis). They follow on_redis_down until their renewal comes, as when
 * Redis cannot be reached: never the leased share past the lease. */
static void expire(struct supervisor *s, struct global *g, const struct gl_snap *sn)
{
        uint64_t now = mono_ns(), ahead = g->call_ns + sn->interval_ns;
        for (uint32_t j = 0; j < sn->n; j++) {
                struct gl_lim *l = g->round[j];
                if (!l || l->state != THR_GLOBAL_LEASED || now + ahead < l->lease_end)
                        continue;
                if (!g->slow_logged)
                        log_warn("limiter '%s': its lease would end before its renewal (a round of "
                                 "%u global limiters takes longer than lease_ttl %" PRIu64
                                 " ms: raise lease_ttl)",
                                 l->name, sn->n, sn->ttl_ns / 1000000);
                g->slow_logged = true;
                l->lease_end = now; /* ended, for when_down */
                publish(s, sn, l, when_down(l, now));
                show(s, l);
        }
}

static void round_all(struct supervisor *s, struct global *g)
{
        struct gl_snap *sn = &g->snap;
        for (size_t i = 0; i < CONFIG_MAX_LIMITERS; i++)
                g->lim[i].seen = false;
        if (sn->n) {
                relink(g, sn);
                uint64_t now = mono_ns();
                for (uint32_t i = 0; i < sn->n; i++)
                        g->round[i] = entry_for(s, g, &sn->spec[i], sn->idx[i], now, sn->ttl_ns);
                bool link_down = !g->link;
                for (uint32_t i = 0; i < sn->n && !s->stop; i++) {
                        expire(s, g, sn);
                        uint64_t t0 = mono_ns();
                        if (g->round[i])
                                one(s, g, sn, g->round[i], &link_down);
                        g->call_ns = mono_ns() - t0;
                }
        }
        pthread_mutex_lock(&s->arena_mu);
        for (size_t i = 0; i < CONFIG_MAX_LIMITERS; i++)
                if (!g->lim[i].seen)
                        g->lim[i].name[0] = '\0'; /* no longer global: forgotten */
        pthread_mutex_unlock(&s->arena_mu);
        for (uint32_t i = 0; i < sn->nlocal; i++) { /* a limiter a reload made local again */
                struct thr_dir_entry *de = dir_entry(s, sn->local_idx[i]);
                if (atomic_load_explicit(&de->global_state, memory_order_relaxed)) {
                        atomic_store_explicit(&de->global_share, 0, memory_order_relaxed);
                        atomic_store_explicit(&de->global_state, 0, memory_order_relaxed);
                        atomic_store_explicit(&de->global_expiry_ns, 0, memory_order_relaxed);
                }
        }
}

static void *global_main(void *arg)
{
        struct supervisor *s = arg;
        struct global *g = s->global;
        rcu_register_thread();
        uint64_t next = mono_ns();
        while (!s->stop) {
                uint64_t now = mono_ns();
                if (now < next) {
                        uint64_t ns = next - now < 50000000 ? next - now : 50000000;
                        struct timespec ts = {0, (long)ns};
                        nanosleep(&ts, NULL);
                        continue;
                }
                if (!take_snapshot(s, &g->snap)) {
                        next = now + 100000000;
                        continue;
                }
                round_all(s, g);
                next += g->snap.interval_ns ? g->snap.interval_ns : 100000000;
                if (next < now)
                        next = now; /* a round longer than the interval: no catching up */
        }
        rcu_unregister_thread();
        return NULL;
}

int global_start(struct supervisor *s)
{
        s->global = calloc(1, sizeof(*s->global));
        if (!s->global)
                return -ENOMEM;
        int rc = pthread_create(&s->global->th, NULL, global_main, s);
        if (rc) {
                free(s->global);
                s->global = NULL;
                return -rc;
        }
        return 0;
}

void global_stop(struct supervisor *s)
{
        if (!s->global)
                return;
        pthread_join(s->global->th, NULL);
        rlink_free(s->global->link);
        free(s->global);
        s->global = NULL;
}

void global_mark_starting(struct supervisor *s)
{
        uint64_t now = shm_now_ns(shm_hdr(&s->map));
        for (size_t i = 0; i < s->cfg.nlimiters; i++) {
                const struct shm_limiter_spec *ls = &s->cfg.limiters[i];
                int idx = shm_dir_find(&s->map, ls->name);
                if (idx < 0)
                        continue;
                struct thr_dir_entry *de = dir_entry(s, (uint32_t)idx);
                bool on = ls->global.on;
                atomic_store_explicit(&de->global_share, on ? ls->scale_ppm : 0,
                                      memory_order_relaxed);
                atomic_store_explicit(&de->global_state, on ? THR_GLOBAL_STARTING : 0,
                                      memory_order_relaxed);
                atomic_store_explicit(&de->global_expiry_ns,
                                      on ? now + s->cfg.global_lease_ttl_ns : 0,
                                      memory_order_relaxed);
        }
}

void global_scale_config(struct supervisor *s, struct config *next)
{
        if (!s->global)
                return;
        for (size_t i = 0; i < next->nlimiters; i++) {
                struct shm_limiter_spec *ls = &next->limiters[i];
                if (!ls->global.on)
                        continue;
                const struct gl_lim *l = entry_of(s->global, ls->name);
                if (l)
                        ls->scale_ppm = l->applied ? l->applied : 1;
        }
}
