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

void *mp_glibc_next(const char *name)
{
    void *p = dlvsym(RTLD_NEXT, name, "GLIBC_2.34");
    return p != NULL ? p : dlvsym(RTLD_NEXT, name, "GLIBC_2.2.5");
}

/* glibc's function of that name, looked up once (a race looks it up twice,
 * with the same answer). */
static void *resolve_once(void *_Atomic *slot, const char *name)
{
    void *p = atomic_load_explicit(slot, memory_order_acquire);
    if (mp_likely(p != NULL))
        return p;
    p = mp_glibc_next(name);
    atomic_store_explicit(slot, p, memory_order_release);
    return p;
}

mp_dlopen_fn mp_real_dlopen(void)
{
    static void *_Atomic slot;
    void *p = resolve_once(&slot, "dlopen");
    mp_dlopen_fn f;
    memcpy(&f, &p, sizeof(f)); /* object to function pointer, as POSIX allows */
    return f;
}

mp_dlsym_fn mp_real_dlsym(void)
{
    MP_STARTUP_DATA static void *_Atomic slot;
    void *p = resolve_once(&slot, "dlsym");
    mp_dlsym_fn f;
    memcpy(&f, &p, sizeof(f));
    return f;
}

extern int __sigaction(int sig, const struct sigaction *act, struct sigaction *old);

int mp_real_sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    return __sigaction(sig, act, old);
}
