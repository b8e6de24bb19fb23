/*
 * A CUDA program for the preload tests that calls the driver API directly
 * (linked against libcuda.so.1, as XLA and other frameworks do).  Also
 * checks that dlsym(RTLD_NEXT, ...) still answers relative to its caller
 * when the shim's dlsym is in front of glibc's.
 */
#include <cuda.h>
#include <dlfcn.h>
#include <stdio.h>

#include "fake_cuda.h"

#define N 300

int main(void)
{
    /* From the executable, "next" starts with the preloaded shim: the same
     * malloc RTLD_DEFAULT finds.  A dlsym that is not a tail call would
     * answer for the shim's own position (glibc's malloc) instead. */
    if (dlsym(RTLD_NEXT, "malloc") != dlsym(RTLD_DEFAULT, "malloc")) {
        puts("dlsym(RTLD_NEXT) answered for the wrong caller");
        return 1;
    }
    CUcontext ctx;
    if (cuInit(0) || cuDevicePrimaryCtxRetain(&ctx, 0) || cuCtxSetCurrent(ctx)) {
        puts("driver init failed");
        return 1;
    }
    for (int i = 0; i < N; i++) {
        CUdeviceptr p = 0;
        if (cuMemAlloc_v2(&p, 1000 + (size_t)(i % 3) * 100000) != CUDA_SUCCESS || cuMemFree_v2(p) != CUDA_SUCCESS) {
            printf("alloc/free %d failed\n", i);
            return 1;
        }
    }
    CUdeviceptr q = 0, base = 0;
    size_t size = 0;
    if (cuMemAlloc_v2(&q, 1000) || cuMemGetAddressRange_v2(&base, &size, q) || base != q || size != 1000) {
        printf("address range of a 1000-byte block: base %#llx size %zu\n", (unsigned long long)base, size);
        return 1;
    }
    cuMemFree_v2(q);
    if (cuMemFree_v2((CUdeviceptr)0x1234) != CUDA_ERROR_INVALID_VALUE) {
        puts("freeing a foreign pointer did not reach the driver");
        return 1;
    }
    fake_cuda_counters_t c;
    fakecuCounters(&c);
    printf("ok mallocs=%d driver_allocs=%llu driver_frees=%llu\n", N + 1, (unsigned long long)c.mem_alloc,
           (unsigned long long)c.mem_free);
    return 0;
}
