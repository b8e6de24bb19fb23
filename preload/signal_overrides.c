/*
 * sigaction and signal, for MEMPOOL_DUMP_SIGNAL only: a handler the
 * program installs for the dump signal is chained behind ours instead of
 * replacing it (src/report/dump.c).  Every other call goes to libc unchanged.
 */
#include <signal.h>

#include "internal.h"
#include "export.h"

MP_EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    if (mp_dump_sigaction(sig, act, old))
        return 0;
    return mp_real_sigaction(sig, act, old); /* glibc's: no lookup (src/sys/libc_real.c) */
}

MP_EXPORT __sighandler_t signal(int sig, __sighandler_t handler)
{
    struct sigaction sa = {0}, old;
    sa.sa_handler = handler;
    sa.sa_flags = SA_RESTART; /* glibc's signal(): BSD semantics */
    sigemptyset(&sa.sa_mask);
    if (sigaction(sig, &sa, &old) != 0)
        return SIG_ERR;
    return old.sa_handler;
}
