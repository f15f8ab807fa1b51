/*
 * shm.h - the whole arena library, for the daemon, shmctl, the tests and the benchmarks: what every
 * process uses (arena.h, table.h, readers.h, the kinds) and what only the daemon does (build.h,
 * reclaim.h). libthrottle-client includes only the former.
 */
#ifndef THR_SHM_H
#define THR_SHM_H

#include "arena.h"
#include "build.h"
#include "gcra.h"
#include "kind.h"
#include "readers.h"
#include "reclaim.h"
#include "breaker.h"
#include "budget.h"
#include "compose.h"
#include "sem.h"
#include "serial.h"
#include "table.h"
#include "window.h"

#endif
