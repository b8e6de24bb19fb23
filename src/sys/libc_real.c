/*
 * The one place that resolves the real functions the preload overrides
 * (dlopen, dlsym, sigaction): the rest of src/ calls these, never the names
 * themselves, which in libmempool_preload.so would reach the shim's own
 * exports (and in libmempool.so glibc's: the same source would behave two
 * ways).  Each is found without calling an overridden name: dlvsym for the
 * dl functions, glibc's public __sigaction alias for sigaction (no lookup
 * at all: safe in a signal handler and before initialisation).
 */
#include <dlfcn.h>
#include <signal.h>
#include <string.h>

#include "sys.h"

static _Atomic(mp_dlopen_fn) real_dlopen;
static _Atomic(mp_dlsym_fn) real_dlsym;

void *mp_glibc_next(const char *name)
{
    void *p = dlvsym(RTLD_NEXT, name, "GLIBC_2.34");
    return p != NULL ? p : dlvsym(RTLD_NEXT, name, "GLIBC_2.2.5");
}

mp_dlopen_fn mp_real_dlopen(void)
{
    mp_dlopen_fn f = atomic_load_explicit(&real_dlopen, memory_order_acquire);
    if (mp_likely(f != NULL))
        return f;
    void *p = mp_glibc_next("dlopen");
    memcpy(&f, &p, sizeof(f));
    atomic_store_explicit(&real_dlopen, f, memory_order_release);
    return f;
}

mp_dlsym_fn mp_real_dlsym(void)
{
    mp_dlsym_fn f = atomic_load_explicit(&real_dlsym, memory_order_acquire);
    if (mp_likely(f != NULL))
        return f;
    void *p = mp_glibc_next("dlsym");
    memcpy(&f, &p, sizeof(f));
    atomic_store_explicit(&real_dlsym, f, memory_order_release);
    return f;
}

extern int __sigaction(int sig, const struct sigaction *act, struct sigaction *old);

int mp_real_sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    return __sigaction(sig, act, old);
}
