/*
 * dlsym and cuGetProcAddress(_v2): how cudart (static or shared) and every
 * other library find the CUDA driver's entry points.  Each calls the real
 * function, then lets the core swap in our wrapper for the rows of
 * src/cuda/cuda_hooks.def (src/cuda/cuda_hooks.c).
 */
#include <dlfcn.h>
#include <stdint.h>

#include "cuda_wrappers.h"
#include "export.h"

/* Every other lookup must reach glibc from our caller's frame: dlsym with
 * RTLD_NEXT resolves relative to its return address, so this is a tail
 * call (checked by tests/fake_cuda/test_cuda_preload.c). */
MP_EXPORT MP_TAIL_FN void *dlsym(void *handle, const char *name)
{
    if (mp_unlikely(handle != RTLD_NEXT && mp_cuda_name_maybe(name)))
        return mp_cuda_dlsym(mp_cuda_wrappers, handle, name);
    mp_dlsym_fn real = mp_real_dlsym();
    MP_TAIL return real(handle, name);
}

typedef int (*proc_v2_fn)(const char *, void **, int, uint64_t, int *);
typedef int (*proc_v1_fn)(const char *, void **, int, uint64_t);

MP_EXPORT int cuGetProcAddress_v2(const char *symbol, void **pfn, int version, uint64_t flags, int *status)
{
    mp_hook_count(MP_HOOK_cuGetProcAddress_v2);
    proc_v2_fn real;
    void *r = mp_hook_real(MP_HOOK_cuGetProcAddress_v2);
    if (r == NULL)
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    __builtin_memcpy(&real, &r, sizeof(r));
    int rc = real(symbol, pfn, version, flags, status);
    if (rc == MP_CUDA_SUCCESS && pfn)
        *pfn = mp_cuda_proc_answer(mp_cuda_wrappers, symbol, *pfn, version, flags);
    return rc;
}

MP_EXPORT int cuGetProcAddress(const char *symbol, void **pfn, int version, uint64_t flags)
{
    mp_hook_count(MP_HOOK_cuGetProcAddress);
    proc_v1_fn real;
    void *r = mp_hook_real(MP_HOOK_cuGetProcAddress);
    if (r == NULL)
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    __builtin_memcpy(&real, &r, sizeof(r));
    int rc = real(symbol, pfn, version, flags);
    if (rc == MP_CUDA_SUCCESS && pfn)
        *pfn = mp_cuda_proc_answer(mp_cuda_wrappers, symbol, *pfn, version, flags);
    return rc;
}
