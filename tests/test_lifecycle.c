/*
 * test_lifecycle.c - proves that processes ending or splitting in the ways a host's processes do
 * never break another process's hold on the arena: a fork child that never uses throttle and ends
 * with exit() (or closes its inherited handle) leaves its parent's reader records alone; a child
 * made by _Fork() that keeps the parent's lock descriptor does not keep a killed parent's records
 * blocking grace periods; a child in another pid or time namespace is refused at its first call;
 * exit() while another thread is inside a call never hands that thread's record to someone else;
 * a copy of a reservation handle in a fork child cannot give back its parent's place.
 *
 * Manual-clock arena; children report through a shared mapping and end with _exit() unless the
 * way they end is the point; only the test process asserts.
 */
#include <criterion/criterion.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client_internal.h"
#include "helpers.h"
#include "testhook.h"

static struct tarena T;
static thr_limiter *L;
static pid_t g_kid = -1;
static pid_t g_orphan = -1; /* a grandchild whose parent was killed: not ours to wait for */

static void setup(void)
{
        struct shm_limiter_spec s = tspec("f", 1, SEC, 1, 1);
        tarena_make(&T, THR_CLOCK_MANUAL, SHM_HUGE_OFF, &s, 1);
        L = tlim(&T, "f");
}

static void teardown(void)
{
        if (g_kid > 0) {
                kill(g_kid, SIGKILL);
                waitpid(g_kid, NULL, 0);
        }
        g_kid = -1;
        if (g_orphan > 0)
                kill(g_orphan, SIGKILL);
        g_orphan = -1;
        thr_test_hook = NULL;
        thr_limiter_close(L);
        tarena_free(&T);
}

TestSuite(lifecycle, .init = setup, .fini = teardown, .timeout = 60);

/* What a child reports. */
struct box {
        _Atomic int stage;
        _Atomic int rc;
        _Atomic int64_t pid;
        _Atomic int flag;
};

static struct box *box_new(void)
{
        struct box *b = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        cr_assert_neq(b, MAP_FAILED);
        return b;
}

static void await_stage(struct box *b, int stage)
{
        for (int i = 0; atomic_load(&b->stage) < stage; i++) {
                cr_assert_lt(i, 100000, "the child never reached stage %d", stage);
                usleep(100);
        }
}

static int reap(pid_t pid)
{
        int st = 0;
        pid_t w = waitpid(pid, &st, 0);
        cr_assert_eq(w, pid, "waitpid(%d): %d %s", (int)pid, (int)w, strerror(errno));
        if (pid == g_kid)
                g_kid = -1;
        return st;
}

/* This thread's reader record in T (registered by a first call). */
static struct thr_reader *my_record(void)
{
        int err = 0;
        struct thr_reader *r = thr_reader_get(T.a, &err);
        cr_assert_not_null(r, "%s", thr_strerror(err));
        return r;
}

/* Index of record R, a pointer into the client handle's mapping. */
static uint32_t record_idx(const struct thr_reader *r)
{
        return (uint32_t)(r -
                          (const struct thr_reader *)shm_at(T.a->map.base, T.a->map.g.reader_off));
}

/* ---------------------------------------------------------------- fork without use */

static void child_exits(bool close_first)
{
        if (close_first)
                thr_arena_close(T.a); /* a tidy child closing what it inherited */
        exit(0);                      /* not _exit: the library's exit destructor runs */
}

static void fork_child_ending_with_exit_keeps_parents_records(bool close_first)
{
        cr_assert_eq(thr_limiter_try(L, "p", 1, 1, NULL), 1);
        struct thr_reader *r = my_record();
        uint64_t owner = atomic_load(&r->owner);
        g_kid = tfork();
        cr_assert_geq(g_kid, 0);
        if (g_kid == 0)
                child_exits(close_first);
        int st = reap(g_kid);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
        cr_assert_eq(atomic_load(&r->owner), owner,
                     "the child's exit gave the parent's record away");
        cr_assert_eq(atomic_load(&r->pid), (uint64_t)getpid());
        cr_assert_eq(shm_reader_alive(T.map.fd, record_idx(r)), 1,
                     "the parent's liveness lock went with the child");
        /* and no other process can claim it: its owner word is still set */
        struct thr_result res;
        cr_assert_eq(thr_limiter_try(L, "p", 1, 0, &res), 1);
        cr_assert_eq(my_record(), r, "the parent kept its record");
}

Test(lifecycle, fork_child_ending_with_exit_keeps_parents_records)
{
        fork_child_ending_with_exit_keeps_parents_records(false);
}

Test(lifecycle, fork_child_closing_inherited_handle_keeps_parents_records)
{
        fork_child_ending_with_exit_keeps_parents_records(true);
}

/* ---------------------------------------------------------------- _Fork and a killed parent */

/*
 * The parent registers, marks itself inside a read-side section (as a process killed in the
 * middle of a call would be), makes a child with _Fork() (no fork handler: the child keeps the
 * lock descriptor) and waits to be killed.
 */
static void forking_parent(struct box *b)
{
        if (thr_limiter_try(L, "a", 1, 1, NULL) != 1)
                _exit(2);
        int err = 0;
        struct thr_reader *r = thr_reader_get(T.a, &err);
        if (!r)
                _exit(3);
        thr_reader_enter(T.a, r);
        pid_t c = _Fork();
        if (c < 0)
                _exit(4);
        if (c == 0) {
                for (;;)
                        pause(); /* the child keeps the inherited descriptor, uses nothing */
        }
        atomic_store(&b->pid, c);
        atomic_store(&b->stage, 1);
        for (;;)
                pause();
}

Test(lifecycle, parent_killed_while_a_Fork_child_holds_its_descriptor_does_not_block)
{
        struct box *b = box_new();
        g_kid = tfork();
        cr_assert_geq(g_kid, 0);
        if (g_kid == 0)
                forking_parent(b);
        await_stage(b, 1);
        pid_t parent = g_kid, child = (pid_t)atomic_load(&b->pid);
        cr_assert_eq(kill(parent, SIGKILL), 0);
        reap(parent);
        g_orphan = child; /* reparented: teardown kills it */

        uint64_t gp;
        cr_assert_eq(shm_gp_start(&T.map, &gp), 0);
        struct shm_gp_result res;
        cr_assert_eq(shm_gp_scan(&T.map, gp, 0, UINT64_MAX, &res, NULL, NULL), 0);
        cr_assert_eq(res.blocking, 0, "the dead parent's section still blocks grace periods");
        cr_assert_eq(res.forced, 1, "the dead parent's record was forced offline");
        cr_assert_eq(res.done, gp);

        /* The record is free, yet no one can take it while the child holds its lock. */
        const struct thr_reader *rec = shm_at(T.map.base, T.map.g.reader_off);
        for (uint32_t i = 0; i < T.map.g.reader_count; i++)
                cr_assert(atomic_load(&rec[i].pid) != (uint64_t)parent ||
                              atomic_load(&rec[i].owner) == 0,
                          "record %u still owned by the dead parent", i);
        munmap(b, 4096);
}

/* ---------------------------------------------------------------- namespaces */

/* In a new pid (or time) namespace: its first call must be refused. */
static void unshared_child(struct box *b, int flags)
{
        if (unshare(flags) < 0) {
                atomic_store(&b->rc, -errno);
                atomic_store(&b->stage, 9);
                _exit(0);
        }
        if (flags & CLONE_NEWTIME) {
                int fd = open("/proc/self/timens_offsets", O_WRONLY);
                if (fd < 0 || write(fd, "monotonic 1000 0", 16) != 16)
                        _exit(5);
                close(fd);
        }
        pid_t g = fork();
        if (g < 0)
                _exit(6);
        if (g == 0) {
                atomic_store(&b->rc, thr_limiter_try(L, "ns", 2, 1, NULL));
                atomic_store(&b->stage, 1);
                _exit(0);
        }
        int st;
        waitpid(g, &st, 0);
        _exit(0);
}

static void child_in_namespace_is_refused(int flags, int expect)
{
        if (flags & CLONE_NEWTIME) { /* a manual clock reads the same in every namespace */
                thr_limiter_close(L);
                tarena_free(&T);
                struct shm_limiter_spec s = tspec("f", 1, SEC, 1, 1);
                tarena_make(&T, THR_CLOCK_MONOTONIC, SHM_HUGE_OFF, &s, 1);
                L = tlim(&T, "f");
        }
        cr_assert_eq(thr_limiter_try(L, "p", 1, 1, NULL), 1); /* the parent registered */
        struct box *b = box_new();
        g_kid = tfork();
        cr_assert_geq(g_kid, 0);
        if (g_kid == 0)
                unshared_child(b, flags);
        reap(g_kid);
        if (atomic_load(&b->stage) == 9)
                cr_skip_test("unshare(%#x): %s", flags, strerror(-atomic_load(&b->rc)));
        cr_assert_eq(atomic_load(&b->stage), 1, "the grandchild ran");
        cr_assert_eq(atomic_load(&b->rc), expect, "its first call: %d (%s)", atomic_load(&b->rc),
                     thr_strerror(atomic_load(&b->rc)));
        munmap(b, 4096);
}

Test(lifecycle, child_in_another_pid_namespace_is_refused_at_its_first_call)
{
        child_in_namespace_is_refused(CLONE_NEWPID, -EXDEV);
}

Test(lifecycle, child_in_another_time_namespace_is_refused_at_its_first_call)
{
        child_in_namespace_is_refused(CLONE_NEWTIME, -ESTALE);
}

/* ---------------------------------------------------------------- exit() with a thread inside */

/*
 * A worker thread is stopped inside a call (test hook) while the main thread calls exit(). If
 * the exit gave the worker's record back, another process could claim it (the hook does, as such
 * a process would) and the worker's end of call would then clear that new owner's online word.
 */
static struct {
        struct box *b;
        pid_t worker_tid;
        _Atomic int armed, inside, proceed, done;
        struct thr_reader *wr;
} g_ex;

static void exit_hook(enum thr_hook_point pt, void *arg)
{
        (void)arg;
        if (pt == THR_HOOK_SECTION_ENTERED && gettid() == g_ex.worker_tid &&
            !atomic_exchange(&g_ex.inside, 1)) {
                while (!atomic_load(&g_ex.proceed))
                        sched_yield();
                return;
        }
        if (pt != THR_HOOK_EXIT_RELEASED)
                return;
        uint64_t zero = 0;
        if (atomic_compare_exchange_strong(&g_ex.wr->owner, &zero, 0xbad1)) {
                atomic_store(&g_ex.wr->online, 777); /* another process's section */
                atomic_store(&g_ex.b->flag, 1);      /* the worker's record was given away */
        }
        atomic_store(&g_ex.proceed, 1);
        while (!atomic_load(&g_ex.done))
                sched_yield();
        if (atomic_load(&g_ex.b->flag) && atomic_load(&g_ex.wr->online) != 777)
                atomic_store(&g_ex.b->flag, 2); /* and the worker cleared its new owner's mark */
}

static void *worker(void *arg)
{
        (void)arg;
        thr_limiter_try(L, "w", 1, 0, NULL); /* registers */
        int err = 0;
        g_ex.wr = thr_reader_get(T.a, &err);
        g_ex.worker_tid = gettid();
        atomic_store(&g_ex.b->stage, 1);
        while (!atomic_load(&g_ex.armed))
                sched_yield();
        thr_limiter_try(L, "w", 1, 0, NULL); /* stops inside, in the hook */
        atomic_store(&g_ex.done, 1);
        for (;;)
                pause();
        return NULL;
}

Test(lifecycle, exit_never_gives_away_the_record_of_a_thread_inside_a_call)
{
        g_ex.b = box_new();
        g_kid = tfork();
        cr_assert_geq(g_kid, 0);
        if (g_kid == 0) {
                thr_limiter_try(L, "m", 1, 0, NULL); /* the main thread registers too */
                pthread_t t;
                if (pthread_create(&t, NULL, worker, NULL) != 0)
                        _exit(3);
                while (atomic_load(&g_ex.b->stage) < 1)
                        sched_yield();
                thr_test_hook = exit_hook;
                atomic_store(&g_ex.armed, 1);
                while (!atomic_load(&g_ex.inside))
                        sched_yield();
                atomic_store(&g_ex.b->stage, 2);
                exit(0);
        }
        int st = reap(g_kid);
        cr_assert(WIFEXITED(st), "child status %#x", st);
        cr_assert_eq(atomic_load(&g_ex.b->stage), 2, "the worker was inside its call at exit");
        cr_assert_eq(atomic_load(&g_ex.b->flag), 0,
                     "exit() gave away the record of a thread inside a call%s",
                     atomic_load(&g_ex.b->flag) == 2 ? ", and it then cleared the new owner's mark"
                                                     : "");
        munmap(g_ex.b, 4096);
}

/* ---------------------------------------------------------------- a copied reservation */

Test(lifecycle, a_copied_reservation_cannot_give_back_its_parents_place)
{
        cr_assert_eq(thr_limiter_try(L, "r", 1, 1, NULL), 1); /* burst 1 spent: places wait */
        struct thr_reservation rv1, rv2;
        cr_assert_eq(thr_limiter_reserve(L, "r", 1, 1, 10 * SEC, &rv1), 0);
        cr_assert_gt(rv1.wait_ns, 0);
        struct box *b = box_new();
        int go[2];
        cr_assert_eq(pipe(go), 0);
        g_kid = tfork();
        cr_assert_geq(g_kid, 0);
        if (g_kid == 0) {
                char c;
                if (read(go[0], &c, 1) != 1)
                        _exit(2);
                atomic_store(&b->rc, thr_reservation_cancel(&rv1)); /* its copy of the handle */
                atomic_store(&b->stage, 1);
                _exit(0);
        }
        cr_assert_eq(thr_reservation_cancel(&rv1), 1, "the parent gives its place back");
        cr_assert_eq(thr_limiter_reserve(L, "r", 1, 1, 10 * SEC, &rv2), 0, "and takes it again");
        cr_assert_eq(thr_rv_priv(&rv2)->state, thr_rv_priv(&rv1)->state,
                     "the same pair: only the process tells them apart");
        cr_assert_eq(write(go[1], "g", 1), 1);
        reap(g_kid);
        cr_assert_eq(atomic_load(&b->stage), 1);
        cr_assert_neq(atomic_load(&b->rc), 1, "the child gave back the parent's second place");
        struct thr_result res;
        cr_assert_eq(thr_limiter_try(L, "r", 1, 0, &res), 0, "the place is still taken");
        cr_assert_eq(res.reset_after_ns, 2 * SEC, "two tokens owed: the try and the place");
        close(go[0]);
        close(go[1]);
        munmap(b, 4096);
}

/* ---------------------------------------------------------------- a child sharing the fd table */

/*
 * A raw clone(CLONE_FILES) child (no CLONE_VM) shares its parent's descriptor table. Its first
 * call used to close the "inherited" lock descriptor, which was the parent's own: the parent's
 * liveness locks vanished while it lived, and another process could take its shard lock over in
 * the middle of an insert (a key admitted twice its burst). Closing an inherited handle closed
 * the parent's arena descriptor the same way.
 */
static int clone_files_child(void *arg)
{
        (void)arg;
        thr_limiter_try(L, "x", 1, 1, NULL); /* its first call: registers */
        thr_arena_close(T.a);                /* and closes the handle it inherited */
        syscall(SYS_exit, 0);
        return 0;
}

Test(lifecycle, a_child_sharing_the_fd_table_never_closes_its_parents_descriptors)
{
        cr_assert_eq(thr_limiter_try(L, "p", 1, 1, NULL), 1);
        struct thr_reader *r = my_record();
        uint64_t me = tlock_me(T.a);
        int lockfd = T.a->lockfd, mapfd = T.a->map.fd;
        pid_t c = (pid_t)syscall(SYS_clone, CLONE_FILES | SIGCHLD, NULL, NULL, NULL, NULL);
        cr_assert_geq(c, 0);
        if (c == 0)
                clone_files_child(NULL);
        int st;
        cr_assert_eq(waitpid(c, &st, 0), c);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child status %#x", st);
        cr_assert_neq(fcntl(lockfd, F_GETFD), -1, "the child closed the parent's lock descriptor");
        cr_assert_neq(fcntl(mapfd, F_GETFD), -1, "the child closed the parent's arena descriptor");
        cr_assert_eq(shm_reader_alive(T.map.fd, record_idx(r)), 1,
                     "the parent's liveness lock went with the child");
        cr_assert_not(shm_lock_holder_gone(&T.map, me), "a live parent is judged gone");
        cr_assert_eq(thr_limiter_try(L, "p", 1, 0, NULL), 1, "the parent still decides (a peek)");
}

/* ---------------------------------------------------------------- _Fork of a threaded parent */

/*
 * A thread of the parent holds the library's registry lock (inside its first call) when the
 * parent calls _Fork(): the child inherits the lock held by a thread it does not have. Its first
 * call used to wait on it for ever.
 */
static _Atomic int g_in_registry, g_release;

static void hold_registry(enum thr_hook_point pt, void *arg)
{
        (void)arg;
        if (pt != THR_HOOK_REGISTRY_LOCKED || atomic_load(&g_release))
                return;
        atomic_store(&g_in_registry, 1);
        while (!atomic_load(&g_release))
                sched_yield();
}

static void *first_call_thread(void *arg)
{
        (void)arg;
        thr_limiter_try(L, "t", 1, 1, NULL);
        return NULL;
}

Test(lifecycle, a_Fork_child_of_a_threaded_parent_never_waits_on_the_parents_lock)
{
        thr_test_hook = hold_registry;
        pthread_t t;
        cr_assert_eq(pthread_create(&t, NULL, first_call_thread, NULL), 0);
        while (!atomic_load(&g_in_registry))
                sched_yield();
        struct box *b = box_new();
        pid_t c = _Fork();
        if (c == 0) {
                atomic_store(&g_release, 1); /* the child's own hook must not wait */
                atomic_store(&b->rc, thr_limiter_try(L, "kid", 3, 1, NULL));
                atomic_store(&b->stage, 1);
                _exit(0);
        }
        cr_assert_geq(c, 0);
        g_orphan = c;
        for (int i = 0; atomic_load(&b->stage) < 1 && i < 500; i++)
                usleep(10000);
        atomic_store(&g_release, 1);
        pthread_join(t, NULL);
        cr_assert_eq(atomic_load(&b->stage), 1, "the child's first call never returned");
        cr_assert_eq(atomic_load(&b->rc), 1);
        waitpid(c, NULL, 0);
        g_orphan = -1;
        munmap(b, 4096);
}

/* ---------------------------------------------------------------- dlclose */

/*
 * The library loaded with dlopen(), used by a second thread, closed and unloaded while that thread
 * still runs: the thread's exit runs the library's thread-exit destructor, whose code must still
 * be mapped (the library is linked -z nodelete).
 */
struct dl_args {
        int (*try_)(thr_limiter *, const void *, size_t, uint64_t, struct thr_result *);
        thr_limiter *l;
        _Atomic int stage;
};

static void *dl_worker(void *arg)
{
        struct dl_args *d = arg;
        d->try_(d->l, "dl", 2, 1, NULL); /* registers: the library's pthread key now has a value */
        atomic_store(&d->stage, 1);
        while (atomic_load(&d->stage) < 2)
                sched_yield();
        return NULL;
}

Test(lifecycle, a_thread_exiting_after_dlclose_does_not_crash)
{
        const char *bd = getenv("THR_TEST_BUILD_DIR");
        cr_assert_not_null(bd, "THR_TEST_BUILD_DIR is not set (run through ctest)");
        char so[512];
        snprintf(so, sizeof(so), "%s/libclient/libthrottle-client.so", bd);
        pid_t pid = tfork();
        cr_assert_geq(pid, 0);
        if (pid == 0) {
                void *h = dlopen(so, RTLD_NOW | RTLD_LOCAL);
                if (!h)
                        _exit(2);
                int (*open_a)(const char *, unsigned, thr_arena **) = dlsym(h, "thr_arena_open");
                int (*open_l)(thr_arena *, const char *, thr_limiter **) =
                    dlsym(h, "thr_limiter_open");
                int (*try_)(thr_limiter *, const void *, size_t, uint64_t, struct thr_result *) =
                    dlsym(h, "thr_limiter_try");
                int (*close_l)(thr_limiter *) = dlsym(h, "thr_limiter_close");
                int (*close_a)(thr_arena *) = dlsym(h, "thr_arena_close");
                thr_arena *a;
                thr_limiter *l;
                if (!open_a || !try_ || open_a(T.path, 0, &a) || open_l(a, "f", &l))
                        _exit(3);
                struct dl_args args = {try_, l, 0};
                pthread_t t;
                if (pthread_create(&t, NULL, dl_worker, &args) != 0)
                        _exit(4);
                while (atomic_load(&args.stage) < 1)
                        sched_yield();
                close_l(l);
                close_a(a);
                dlclose(h);
                atomic_store(&args.stage, 2); /* the worker exits now: its destructor runs */
                pthread_join(t, NULL);
                _exit(0);
        }
        int st;
        cr_assert_eq(waitpid(pid, &st, 0), pid);
        cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                  "a thread exiting after dlclose: status %#x (signal %d)", st,
                  WIFSIGNALED(st) ? WTERMSIG(st) : 0);
}
