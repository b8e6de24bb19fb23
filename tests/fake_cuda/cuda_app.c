/*
 * A CUDA program for the preload tests, runtime API only (built against the
 * shared fake cudart and against its static archive, i.e. nvcc's default).
 * It allocates and frees in a loop with "kernels" running, and checks that
 * a block freed while a kernel still writes it is not handed out again
 * before the kernel is done.  Prints the driver's allocation counts.
 */
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

#include "fake_cuda.h"

#define N 200
#define FAIL(...) do { printf(__VA_ARGS__); puts(""); return 1; } while (0)

int main(void)
{
    if (cudaFree(NULL) != cudaSuccess)
        FAIL("cudaFree(NULL) failed");
    for (int i = 0; i < N; i++) {
        void *p = NULL;
        size_t n = 4096 * (size_t)(1 + i % 4);
        if (cudaMalloc(&p, n) != cudaSuccess)
            FAIL("cudaMalloc %d failed", i);
        if (fakecudaLaunchFill(NULL, p, i & 0xff, n, 0) != cudaSuccess)
            FAIL("launch failed");
        if (cudaFree(p) != cudaSuccess)
            FAIL("cudaFree %d failed", i);
        if (i % 50 == 49) /* a training step's end */
            cudaDeviceSynchronize();
    }
    /* A kernel writes b1 for 30 ms; b1 is freed at once; b2 must not be
     * b1's memory, or the kernel's late write would land in b2. */
    unsigned char *b1 = NULL, *b2 = NULL;
    if (cudaMalloc((void **)&b1, 65536) || fakecudaLaunchFill(NULL, b1, 0x33, 65536, 30000) ||
        cudaFree(b1) || cudaMalloc((void **)&b2, 65536))
        FAIL("integrity setup failed");
    memset(b2, 0x44, 65536);
    cudaDeviceSynchronize();
    for (int i = 0; i < 65536; i++)
        if (b2[i] != 0x44)
            FAIL("corrupted: byte %d of a reused block is %#x", i, b2[i]);
    cudaFree(b2);
    /* The same on a non-blocking stream, which the legacy stream does not
     * order: the shim learns of it when it is created. */
    cudaStream_t nb; /* a size class of its own: no older block to hand out instead */
    if (cudaStreamCreateWithFlags(&nb, cudaStreamNonBlocking) || cudaMalloc((void **)&b1, 131072) ||
        fakecudaLaunchFill(nb, b1, 0x55, 131072, 30000) || cudaFree(b1) || cudaMalloc((void **)&b2, 131072))
        FAIL("non-blocking setup failed");
    memset(b2, 0x66, 131072);
    cudaStreamSynchronize(nb);
    for (int i = 0; i < 131072; i++)
        if (b2[i] != 0x66)
            FAIL("corrupted by a non-blocking stream: byte %d is %#x", i, b2[i]);
    cudaFree(b2);
    cudaStreamDestroy(nb);
    void *big = NULL; /* out of memory still reports cudaErrorMemoryAllocation */
    if (cudaMalloc(&big, (size_t)1 << 40) != cudaErrorMemoryAllocation)
        FAIL("huge cudaMalloc did not fail with cudaErrorMemoryAllocation");
    if (cudaGetLastError() != cudaErrorMemoryAllocation)
        FAIL("cudaGetLastError does not report the failed cudaMalloc");
    /* Pinned staging buffers, allocated and freed every step. */
    for (int i = 0; i < N; i++) {
        void *h = NULL;
        if (cudaHostAlloc(&h, 1 << 20, i % 2 ? cudaHostAllocMapped : cudaHostAllocDefault) != cudaSuccess)
            FAIL("cudaHostAlloc %d failed", i);
        memset(h, i, 1 << 20);
        void *d = NULL;
        if ((i % 2 == 1) != (cudaHostGetDevicePointer(&d, h, 0) == cudaSuccess))
            FAIL("pinned flags mixed up at %d", i);
        cudaGetLastError(); /* the expected failure of the unmapped case */
        if (cudaFreeHost(h) != cudaSuccess)
            FAIL("cudaFreeHost %d failed", i);
    }
    /* A reset frees every allocation: the pool must not hand one out again. */
    if (cudaDeviceReset() != cudaSuccess)
        FAIL("cudaDeviceReset failed");
    void *fresh = NULL;
    size_t (*used)(int);
    *(void **)&used = dlsym(RTLD_DEFAULT, "fakecuUsed");
    if (cudaMalloc(&fresh, 4096) != cudaSuccess || (used && used(0) < 4096))
        FAIL("allocation after cudaDeviceReset did not reach the driver");
    cudaFree(fresh);
    void (*counters)(fake_cuda_counters_t *);
    *(void **)&counters = dlsym(RTLD_DEFAULT, "fakecuCounters");
    fake_cuda_counters_t c = {0};
    if (counters)
        counters(&c);
    printf("ok mallocs=%d driver_allocs=%llu driver_frees=%llu host_allocs=%llu\n", N + 6,
           (unsigned long long)c.mem_alloc, (unsigned long long)c.mem_free,
           (unsigned long long)c.host_alloc);
    return 0;
}
