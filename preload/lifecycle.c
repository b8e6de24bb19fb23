/*
 * Start-up and exit of the preloaded shim: initialise early (so option
 * warnings appear at start), write the stats at exit.  Our destructor runs
 * late (we are loaded first), and the pools keep working after it for the
 * destructors of other libraries.
 */
#include <dlfcn.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "callsite.h"
#include "cuda_hooks.h"
#include "export.h"
#include "internal.h"

/* glibc calls constructors with (argc, argv, envp). */
__attribute__((constructor)) static void mp_preload_start(int argc, char **argv)
{
    mp_process_args(argc, argv);
    mp_init();
    mp_dump_start(); /* MEMPOOL_DUMP_SIGNAL / _INTERVAL: not from inside an allocation */
}

__attribute__((destructor)) static void mp_preload_exit(void) { mp_stats_write_exit(); }

/* _exit skips destructors: a fork() child that leaves this way (Python's
 * multiprocessing workers, servers' children) still writes its file; the
 * core decides when that is safe.  glibc's own _exit is then the syscall. */
typedef void (*exit_fn)(int);

__attribute__((noreturn)) static void leave(const char *name, int status)
{
    mp_stats_write_at__exit();
    void *r = mp_real_dlsym()(RTLD_NEXT, name);
    exit_fn real;
    __builtin_memcpy(&real, &r, sizeof(r));
    if (real)
        real(status);
    for (;;)
        syscall(SYS_exit_group, status);
}

MP_EXPORT __attribute__((noreturn)) void _exit(int status) { leave("_exit", status); }
MP_EXPORT __attribute__((noreturn)) void _Exit(int status) { leave("_Exit", status); }
