/*
 * stress_common.c - see stress_common.h.
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "stress_common.h"

pid_t stress_fork_tied(void)
{
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid == 0 && (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent))
                _exit(99);
        return pid;
}

static int key_cmp(const void *a, const void *b)
{
        const struct stress_key *x = a, *y = b;
        if (x->len != y->len)
                return x->len < y->len ? -1 : 1;
        return memcmp(x->key, y->key, x->len);
}

size_t stress_walk(const struct thr_slot *slots, uint64_t nslots, uint64_t count[4],
                   struct stress_key *keys)
{
        size_t live = 0;
        memset(count, 0, 4 * sizeof(count[0]));
        for (uint64_t i = 0; i < nslots; i++) {
                unsigned st =
                    THR_META_STATUS(atomic_load_explicit(&slots[i].meta, memory_order_acquire));
                count[st]++;
                if (st != THR_SLOT_LIVE)
                        continue;
                if (keys) {
                        struct stress_key *k = &keys[live];
                        /* the stored form (layout.h): the key itself, for these short keys */
                        k->len =
                            slots[i].key_len <= THR_KEY_INLINE ? slots[i].key_len : THR_KEY_INLINE;
                        memcpy(k->key, slots[i].key, k->len);
                        k->key[k->len] = 0;
                }
                live++;
        }
        if (keys)
                qsort(keys, live, sizeof(*keys), key_cmp);
        return live;
}

size_t stress_duplicates(const struct stress_key *keys, size_t n, void (*each)(const char *key))
{
        size_t dups = 0;
        for (size_t i = 1; i < n; i++) {
                if (key_cmp(&keys[i - 1], &keys[i]) != 0)
                        continue;
                if (each)
                        each(keys[i].key);
                dups++;
        }
        return dups;
}
