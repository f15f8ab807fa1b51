/*
 * testhook.c - the hook pointer of the test builds (testhook.h); compiled into *-hooks only.
 */
#include "testhook.h"

void (*thr_test_hook)(enum thr_hook_point point, void *arg);
