/*
 * sigaction and signal, for MEMPOOL_DUMP_SIGNAL only: a handler the
 * program installs for the dump signal is chained behind ours instead of
 * replacing it (src/dump.c).  Every other call goes to libc unchanged.
 */
#include <dlfcn.h>
#include <signal.h>
#include <string.h>

#include "cuda_hooks.h"
#include "internal.h"

#define MP_EXPORT __attribute__((visibility("default")))

typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);

static sigaction_fn real_sigaction(void)
{
    static _Atomic(sigaction_fn) real;
    sigaction_fn f = atomic_load_explicit(&real, memory_order_acquire);
    if (f == NULL) {
        void *p = mp_real_dlsym()(RTLD_NEXT, "sigaction");
        memcpy(&f, &p, sizeof(f)); /* object to function pointer, as POSIX allows */
        atomic_store_explicit(&real, f, memory_order_release);
    }
    return f;
}

MP_EXPORT int sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    if (mp_dump_sigaction(sig, act, old))
        return 0;
    return real_sigaction()(sig, act, old);
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
