/*
 * C++ operator new/delete, every variant libstdc++ exports (plain,
 * nothrow, sized, aligned), under their Itanium-ABI names, forwarding to
 * the core.  Defined here rather than left to libstdc++ so that the
 * pointers of new/delete never meet another allocator.
 */
#include <stddef.h>

#include "host_inline.h"
#include "export.h"

typedef struct nothrow_t nothrow_t; /* std::nothrow_t: only its address is passed */

/* A miss of operator new: malloc's slow path, then new's failure rules. */
static MP_NOINLINE void *new_miss(size_t size)
{
    void *p = mp_host_malloc_slow(size);
    return mp_likely(p != NULL) ? p : mp_cxx_new(size, 0, false);
}

__attribute__((always_inline)) static inline void *new_fast(size_t size)
{
    return mp_malloc_or(size, new_miss);
}

MP_EXPORT void *_Znwm(size_t n) { return new_fast(n); }
/* The array forms are aliases, not calls: no jump on the hit path. */
MP_EXPORT void *_Znam(size_t n) __attribute__((alias("_Znwm")));
MP_EXPORT void *_ZnwmRKSt9nothrow_t(size_t n, const nothrow_t *t)
{
    (void)t;
    return mp_cxx_new(n, 0, true);
}
MP_EXPORT void *_ZnamRKSt9nothrow_t(size_t n, const nothrow_t *t)
{
    (void)t;
    return mp_cxx_new(n, 0, true);
}
MP_EXPORT void *_ZnwmSt11align_val_t(size_t n, size_t al) { return mp_cxx_new(n, al, false); }
MP_EXPORT void *_ZnamSt11align_val_t(size_t n, size_t al) { return mp_cxx_new(n, al, false); }
MP_EXPORT void *_ZnwmSt11align_val_tRKSt9nothrow_t(size_t n, size_t al, const nothrow_t *t)
{
    (void)t;
    return mp_cxx_new(n, al, true);
}
MP_EXPORT void *_ZnamSt11align_val_tRKSt9nothrow_t(size_t n, size_t al, const nothrow_t *t)
{
    (void)t;
    return mp_cxx_new(n, al, true);
}

MP_EXPORT void _ZdlPv(void *p) { mp_free(p); }
MP_EXPORT void _ZdaPv(void *p) __attribute__((alias("_ZdlPv")));
MP_EXPORT void _ZdlPvm(void *p, size_t n)
{
    (void)n;
    mp_free(p);
}
MP_EXPORT void _ZdaPvm(void *p, size_t n) __attribute__((alias("_ZdlPvm")));
MP_EXPORT void _ZdlPvRKSt9nothrow_t(void *p, const nothrow_t *t)
{
    (void)t;
    mp_free(p);
}
MP_EXPORT void _ZdaPvRKSt9nothrow_t(void *p, const nothrow_t *t)
{
    (void)t;
    mp_free(p);
}
MP_EXPORT void _ZdlPvSt11align_val_t(void *p, size_t al)
{
    (void)al;
    mp_free(p);
}
MP_EXPORT void _ZdaPvSt11align_val_t(void *p, size_t al)
{
    (void)al;
    mp_free(p);
}
MP_EXPORT void _ZdlPvmSt11align_val_t(void *p, size_t n, size_t al)
{
    (void)n, (void)al;
    mp_free(p);
}
MP_EXPORT void _ZdaPvmSt11align_val_t(void *p, size_t n, size_t al)
{
    (void)n, (void)al;
    mp_free(p);
}
MP_EXPORT void _ZdlPvSt11align_val_tRKSt9nothrow_t(void *p, size_t al, const nothrow_t *t)
{
    (void)al, (void)t;
    mp_free(p);
}
MP_EXPORT void _ZdaPvSt11align_val_tRKSt9nothrow_t(void *p, size_t al, const nothrow_t *t)
{
    (void)al, (void)t;
    mp_free(p);
}
