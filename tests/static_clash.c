/*
 * static_clash.c - a program whose own functions are named like internals of libthrottle-client
 * (shm_arena_find, shm_arena_attach, thr_registry_add): linked with the static library it must
 * link (no duplicate definitions) and the library must never call them, while the API works.
 * Built and run by tests/scripts/static_symbols.sh; exits 0 when all holds.
 */
#include <errno.h>
#include <stdio.h>
#include <throttle/throttle.h>

static int mine_called;

int shm_arena_find(void);
int shm_arena_attach(void);
int thr_registry_add(void);

int shm_arena_find(void)
{
        mine_called++;
        return 42;
}

int shm_arena_attach(void)
{
        mine_called++;
        return 43;
}

int thr_registry_add(void)
{
        mine_called++;
        return 44;
}

int main(void)
{
        thr_arena *a = NULL;
        int rc = thr_arena_open("thr-static-clash-absent", 0, &a);
        if (mine_called) {
                fprintf(stderr, "FAIL: the library called this program's own functions\n");
                return 1;
        }
        if (rc != -ENOENT) {
                fprintf(stderr, "FAIL: thr_arena_open of an absent arena: %d (%s)\n", rc,
                        thr_strerror(rc));
                return 1;
        }
        if (shm_arena_find() != 42 || shm_arena_attach() != 43 || thr_registry_add() != 44) {
                fprintf(stderr, "FAIL: this program's own functions were not its own\n");
                return 1;
        }
        printf("ok: library version %d, its internals out of this program's namespace\n",
               thr_version());
        return 0;
}
