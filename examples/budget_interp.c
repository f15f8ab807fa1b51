/*
 * budget_interp.c - budget-executor's use case: an interpreter runs untrusted scripts, each on a
 * budget (a key of a budget limiter: "script-I"), and pays every instruction's cost from it
 * before running it. When the budget runs out the script pauses (thr_budget_spend waits, FIFO,
 * in the kernel); a controller sees it paused ("no budget", thr_budget_stat) and tops it up
 * (thr_budget_add), and the script continues. At the end the remaining balances are reported.
 *
 * The scripts run in forked processes (the interpreter host is trusted; the scripts only ever
 * see the interpreter), the parent is the controller. The accounting is checked: what the
 * scripts spent plus what remains equals the initial balances plus what the controller added.
 *
 *   thr-budget-interp -a ARENA -l LIMITER [-s SCRIPTS] [-n OPS] [-q TOPUP] [-t TIMEOUT_MS]
 *
 * Prints one line: scripts S ops N spent X added A remaining R pauses P errors E balanced yes|no
 * and exits 0 when the books balance and nothing failed.
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

#define MS 1000000ull

/* The toy machine: a stack of 64-bit words; each instruction has a cost, as gas. */
enum op { PUSH, ADD, MUL, DUP, DROP, HASH, NOPS };
static const uint64_t COST[NOPS] = {
    [PUSH] = 1, [ADD] = 3, [MUL] = 5, [DUP] = 2, [DROP] = 1, [HASH] = 25};

struct report {
        uint64_t ops, spent, pauses;
        int error; /* the -errno of a spend that failed, 0 */
        int done;
};

static uint64_t next(uint64_t *s)
{
        *s ^= *s << 13;
        *s ^= *s >> 7;
        *s ^= *s << 17;
        return *s;
}

/* Run script I (OPS instructions drawn from its seed), paying each one first. */
static void run_script(thr_limiter *l, int i, uint64_t ops, uint64_t timeout_ns, struct report *out)
{
        char key[32];
        snprintf(key, sizeof(key), "script-%d", i);
        uint64_t seed = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1), stack[64], sum = 0;
        int sp = 0;
        for (uint64_t n = 0; n < ops; n++) {
                enum op o = (enum op)(next(&seed) % NOPS);
                if ((o != PUSH && sp < 2) || sp >= 63)
                        o = sp >= 63 ? DROP : PUSH; /* the interpreter keeps the stack sane */
                struct thr_budget_result r;
                int rc = thr_budget_spend(l, key, strlen(key), COST[o], timeout_ns, &r);
                if (rc < 0) {
                        out->error = rc;
                        return;
                }
                out->spent += COST[o];
                out->pauses += r.waited_ns > 0;
                switch (o) {
                case PUSH:
                        stack[sp++] = next(&seed) % 1000;
                        break;
                case ADD:
                        sp--;
                        stack[sp - 1] += stack[sp];
                        break;
                case MUL:
                        sp--;
                        stack[sp - 1] *= stack[sp];
                        break;
                case DUP:
                        stack[sp] = stack[sp - 1];
                        sp++;
                        break;
                case DROP:
                        sum += stack[--sp];
                        break;
                case HASH:
                        stack[sp - 1] =
                            (stack[sp - 1] ^ (stack[sp - 1] >> 31)) * 0xbf58476d1ce4e5b9ull;
                        break;
                case NOPS:
                        break;
                }
                out->ops++;
        }
        (void)sum;
}

int main(int argc, char **argv)
{
        const char *arena = NULL, *lim = NULL;
        int scripts = 4;
        uint64_t ops = 2000, topup = 50, timeout_ms = 10000;
        int c;
        while ((c = getopt(argc, argv, "a:l:s:n:q:t:")) != -1) {
                switch (c) {
                case 'a':
                        arena = optarg;
                        break;
                case 'l':
                        lim = optarg;
                        break;
                case 's':
                        scripts = atoi(optarg);
                        break;
                case 'n':
                        ops = strtoull(optarg, NULL, 10);
                        break;
                case 'q':
                        topup = strtoull(optarg, NULL, 10);
                        break;
                case 't':
                        timeout_ms = strtoull(optarg, NULL, 10);
                        break;
                default:
                        fprintf(stderr,
                                "usage: %s -a ARENA -l LIMITER [-s SCRIPTS] [-n OPS] "
                                "[-q TOPUP] [-t TIMEOUT_MS]\n",
                                argv[0]);
                        return 64;
                }
        }
        if (!arena || !lim || scripts < 1 || scripts > 64 || topup == 0) {
                fprintf(stderr,
                        "%s: -a ARENA and -l LIMITER are required (1 to 64 scripts, a "
                        "positive top-up)\n",
                        argv[0]);
                return 64;
        }
        struct report *rep = mmap(NULL, sizeof(*rep) * (size_t)scripts, PROT_READ | PROT_WRITE,
                                  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (rep == MAP_FAILED)
                return 71;
        memset(rep, 0, sizeof(*rep) * (size_t)scripts);
        thr_arena *a;
        thr_limiter *l;
        int rc = thr_arena_open(arena, 0, &a);
        if (rc == 0)
                rc = thr_limiter_open(a, lim, &l);
        if (rc < 0) {
                fprintf(stderr, "%s: %s/%s: %s\n", argv[0], arena, lim, thr_strerror(rc));
                return 69;
        }
        /* the books start from what each script's key holds now */
        uint64_t start = 0;
        for (int i = 0; i < scripts; i++) {
                char key[32];
                snprintf(key, sizeof(key), "script-%d", i);
                struct thr_budget_stat st;
                if ((rc = thr_budget_stat(l, key, strlen(key), &st)) < 0) {
                        fprintf(stderr, "%s: %s: %s\n", argv[0], lim, thr_strerror(rc));
                        return 69;
                }
                start += st.balance;
        }
        pid_t kids[64];
        for (int i = 0; i < scripts; i++) {
                kids[i] = fork();
                if (kids[i] == 0) {
                        run_script(l, i, ops, timeout_ms * MS, &rep[i]);
                        __atomic_store_n(&rep[i].done, 1, __ATOMIC_RELEASE);
                        _exit(0);
                }
        }
        /* the controller: a paused script gets TOPUP more */
        uint64_t added = 0;
        for (int running = scripts; running > 0;) {
                running = 0;
                for (int i = 0; i < scripts; i++) {
                        if (__atomic_load_n(&rep[i].done, __ATOMIC_ACQUIRE))
                                continue;
                        running++;
                        char key[32];
                        snprintf(key, sizeof(key), "script-%d", i);
                        struct thr_budget_stat st;
                        struct thr_budget_result r;
                        if (thr_budget_stat(l, key, strlen(key), &st) == 0 && st.waiters &&
                            thr_budget_add(l, key, strlen(key), topup, &r) == 0)
                                added += topup;
                }
                struct timespec ts = {0, 200000};
                nanosleep(&ts, NULL);
        }
        uint64_t total_ops = 0, spent = 0, pauses = 0, remaining = 0;
        int errors = 0;
        for (int i = 0; i < scripts; i++) {
                waitpid(kids[i], NULL, 0);
                total_ops += rep[i].ops;
                spent += rep[i].spent;
                pauses += rep[i].pauses;
                errors += rep[i].error != 0;
                if (rep[i].error)
                        fprintf(stderr, "script-%d: %s\n", i, thr_strerror(rep[i].error));
                char key[32];
                snprintf(key, sizeof(key), "script-%d", i);
                struct thr_budget_stat st;
                if (thr_budget_stat(l, key, strlen(key), &st) == 0)
                        remaining += st.balance;
                else
                        errors++;
        }
        int balanced = spent + remaining == start + added;
        printf("scripts %d ops %lu spent %lu added %lu remaining %lu pauses %lu errors %d balanced "
               "%s\n",
               scripts, (unsigned long)total_ops, (unsigned long)spent, (unsigned long)added,
               (unsigned long)remaining, (unsigned long)pauses, errors, balanced ? "yes" : "no");
        thr_limiter_close(l);
        thr_arena_close(a);
        return balanced && !errors ? 0 : 1;
}
