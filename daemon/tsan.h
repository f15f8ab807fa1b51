/*
 * tsan.h - happens-before annotations for ThreadSanitizer where liburcu orders memory in ways
 * TSan cannot see (inline-assembly atomics, membarrier(2) grace periods). No code otherwise.
 *
 * The registry (supervisor.c, maint.c): the publisher releases on &s->reg before
 * rcu_xchg_pointer and the reader acquires after rcu_dereference (the new registry's contents
 * happen before their use); a reader releases on the registry before rcu_read_unlock and the
 * publisher acquires on the old one after synchronize_rcu (every use happens before the free).
 */
#ifndef THR_DAEMON_TSAN_H
#define THR_DAEMON_TSAN_H

#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define TSAN_ACQUIRE(p) __tsan_acquire((void *)(p))
#define TSAN_RELEASE(p) __tsan_release((void *)(p))
#else
#define TSAN_ACQUIRE(p) ((void)(p))
#define TSAN_RELEASE(p) ((void)(p))
#endif

#endif
