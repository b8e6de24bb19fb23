/*
 * Start-up and exit of the preloaded shim: initialise early (so option
 * warnings appear at start), write the stats at exit.  Our destructor runs
 * late (we are loaded first), and the pools keep working after it for the
 * destructors of other libraries.
 */
#include "callsite.h"
#include "internal.h"

__attribute__((constructor)) static void mp_preload_start(void)
{
    mp_init();
    mp_callsite_load(); /* libunwind, for the call sites */
    mp_dump_start(); /* MEMPOOL_DUMP_SIGNAL / _INTERVAL: not from inside an allocation */
}

__attribute__((destructor)) static void mp_preload_exit(void) { mp_stats_write_exit(); }
