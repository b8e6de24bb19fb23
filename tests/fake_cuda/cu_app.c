/*
 * A CUDA program for the preload tests that calls the driver API directly
 * (linked against libcuda.so.1, as XLA and other frameworks do).  Also
 * checks that dlsym(RTLD_NEXT, ...) still answers relative to its caller
 * when the shim's dlsym is in front of glibc's.
 */
#include <cuda.h>
#include <dlfcn.h>
#include <stdint.h>
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
    /* Stream capture: a free before it leaves a block waiting for its
     * fence; an allocation during capture must not record or query events
     * (illegal in global mode) and a free during it must not either. */
    CUstream s;
    CUdeviceptr r = 0, t = 0;
    if (cuStreamCreate(&s, CU_STREAM_NON_BLOCKING) || cuMemAlloc_v2(&r, 4096) || cuMemFree_v2(r)
        || cuStreamBeginCapture_v2(s, CU_STREAM_CAPTURE_MODE_GLOBAL) || cuMemAlloc_v2(&t, 4096)
        || cuMemFree_v2(t)) {
        puts("capture sequence failed");
        return 1;
    }
    CUgraph g;
    fake_cuda_counters_t c;
    fakecuCounters(&c);
    if (cuStreamEndCapture(s, &g) || c.capture_violations) {
        printf("%llu illegal calls during stream capture\n", (unsigned long long)c.capture_violations);
        return 1;
    }
    /* IPC of a large block: the handle opens to the same bytes. */
    CUdeviceptr big = 0, opened = 0;
    CUipcMemHandle h;
    if (cuMemAlloc_v2(&big, 4 << 20)) {
        puts("4 MiB allocation failed");
        return 1;
    }
    ((unsigned char *)(uintptr_t)big)[12345] = 0xab;
    if (cuIpcGetMemHandle(&h, big) || cuIpcOpenMemHandle_v2(&opened, h, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS)
        || ((unsigned char *)(uintptr_t)opened)[12345] != 0xab) {
        puts("IPC handle of a 4 MiB block does not open to its bytes");
        return 1;
    }
    cuMemFree_v2(big);
    /* The per-thread-stream entry point, as nvcc --default-stream
     * per-thread code gets it; freeing a cuMemAlloc block with it. */
    CUresult (*free_async)(CUdeviceptr, CUstream) = NULL;
    CUdriverProcAddressQueryResult st;
    if (cuGetProcAddress_v2("cuMemFreeAsync", (void **)&free_async, 12000,
                            CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, &st)
        || !free_async || cuMemAlloc_v2(&r, 1000) || free_async(r, CU_STREAM_PER_THREAD)) {
        puts("cuMemFreeAsync (per-thread) of a cuMemAlloc block failed");
        return 1;
    }
    fakecuCounters(&c);
    printf("ok mallocs=%d driver_allocs=%llu driver_frees=%llu\n", N + 1, (unsigned long long)c.mem_alloc,
           (unsigned long long)c.mem_free);
    return 0;
}
