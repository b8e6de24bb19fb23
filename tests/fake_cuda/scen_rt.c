/*
 * Scenario programs for test_cuda_scenarios (runtime API; built against the
 * shared fake cudart and against its static archive).  argv[1] names the
 * scenario; it prints one line, "ok key=value ..." or "FAIL why", and the
 * driver's counters.  Each must be correct without the shim; with the shim
 * the test compares the counters.
 *
 *   destroyed   a kernel still writes a freed block when its stream is
 *               destroyed; the next allocation of that size must not be it
 *   pinned      the same with a pinned buffer written by device 1, the next
 *               pinned allocation made on device 0
 *   nb_legacy   a block freed while a kernel on a non-blocking stream writes
 *               it, reallocated and written on the legacy stream
 *   nb_nb       the same, written on a second non-blocking stream
 *   many        128 streams of three kinds, 2000 pairs of 1 MiB, then
 *               "destroyed" with the kernel on stream #100
 *   oom         capacity 1 GiB (FAKE_CUDA_CAPACITY): 600 MiB malloc+free,
 *               then cudaMallocManaged 600 MiB; prints cudaMemGetInfo
 *   meminfo     600 MiB malloc+free, then cudaMemGetInfo and the driver's use
 */
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_cuda.h"
#include "scen_check.h"

#define KERNEL_US 200000 /* 200 ms: long past every host step that follows */

static fake_cuda_counters_t counters(void)
{
    fake_cuda_counters_t c;
    memset(&c, 0, sizeof(c));
    void (*get)(fake_cuda_counters_t *);
    *(void **)&get = dlsym(RTLD_DEFAULT, "fakecuCounters");
    if (!get)
        FAIL("no fakecuCounters");
    get(&c);
    return c;
}

static size_t used(int d)
{
    size_t (*get)(int);
    *(void **)&get = dlsym(RTLD_DEFAULT, "fakecuUsed");
    return get ? get(d) : 0;
}

static void check_bytes(const void *p, int value, size_t n, const char *what)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        if (b[i] != (unsigned char)value)
            FAIL("%s: byte %zu is %#x, not %#x (a kernel wrote a block handed out again)", what, i, b[i], value);
}

static void print_ok(const char *extra)
{
    fake_cuda_counters_t c = counters();
    printf("ok mem_alloc=%llu host_alloc=%llu calls=%llu event_record=%llu event_query=%llu ctx_record_event=%llu %s\n",
           (unsigned long long)c.mem_alloc, (unsigned long long)c.host_alloc, (unsigned long long)c.calls,
           (unsigned long long)c.event_record, (unsigned long long)c.event_query,
           (unsigned long long)c.ctx_record_event, extra ? extra : "");
}

/* Scenario 1 on stream s (destroyed at the end of it); then pairs of the
 * same size, which a pool serves from that block once the kernel is done. */
static void destroyed_on(cudaStream_t s, size_t n)
{
    void *a = NULL, *b = NULL;
    CK(cudaMalloc(&a, n));
    CK(fakecudaLaunchFill(s, a, 0x11, n, KERNEL_US));
    CK(cudaFree(a));
    CK(cudaStreamDestroy(s));
    CK(cudaMalloc(&b, n));
    memset(b, 0x22, n); /* "device" memory is host memory in the fake */
    CK(cudaDeviceSynchronize());
    check_bytes(b, 0x22, n, "destroyed stream");
    CK(cudaFree(b));
}

static void reuse_pairs(size_t n, int count)
{
    for (int i = 0; i < count; i++) {
        void *p = NULL;
        CK(cudaMalloc(&p, n));
        CK(cudaFree(p));
    }
}

static void scen_destroyed(void)
{
    cudaStream_t s;
    CK(cudaSetDevice(0));
    CK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    destroyed_on(s, MiB);
    reuse_pairs(MiB, 10);
    print_ok(NULL);
}

static void scen_pinned(void)
{
    cudaStream_t s1;
    void *h = NULL, *h2 = NULL;
    CK(cudaSetDevice(1));
    CK(cudaStreamCreateWithFlags(&s1, cudaStreamNonBlocking));
    CK(cudaHostAlloc(&h, MiB, cudaHostAllocDefault));
    CK(fakecudaLaunchFill(s1, h, 0x33, MiB, KERNEL_US));
    CK(cudaFreeHost(h));
    CK(cudaSetDevice(0));
    CK(cudaHostAlloc(&h2, MiB, cudaHostAllocDefault));
    memset(h2, 0x44, MiB);
    CK(cudaSetDevice(1));
    CK(cudaDeviceSynchronize());
    CK(cudaSetDevice(0));
    CK(cudaDeviceSynchronize());
    check_bytes(h2, 0x44, MiB, "pinned across devices");
    CK(cudaFreeHost(h2));
    for (int i = 0; i < 10; i++) {
        CK(cudaHostAlloc(&h, MiB, cudaHostAllocDefault));
        CK(cudaFreeHost(h));
    }
    print_ok(NULL);
}

static void scen_nb(int to_legacy)
{
    cudaStream_t nb1, nb2;
    void *a = NULL, *b = NULL;
    CK(cudaSetDevice(0));
    CK(cudaStreamCreateWithFlags(&nb1, cudaStreamNonBlocking));
    CK(cudaStreamCreateWithFlags(&nb2, cudaStreamNonBlocking));
    CK(cudaMalloc(&a, MiB));
    CK(fakecudaLaunchFill(nb1, a, 0x55, MiB, KERNEL_US));
    CK(cudaFree(a));
    CK(cudaMalloc(&b, MiB));
    CK(fakecudaLaunchFill(to_legacy ? NULL : nb2, b, 0x66, MiB, 0));
    CK(cudaStreamSynchronize(to_legacy ? NULL : nb2));
    CK(cudaDeviceSynchronize());
    check_bytes(b, 0x66, MiB, to_legacy ? "non-blocking to legacy" : "non-blocking to non-blocking");
    CK(cudaFree(b));
    reuse_pairs(MiB, 10);
    print_ok(NULL);
}

static void scen_many(void)
{
    CUresult (*create_prio)(CUstream *, unsigned, int) = NULL;
    CUresult (*green_create)(CUgreenCtx *, CUdevResourceDesc, CUdevice, unsigned) = NULL;
    CUresult (*green_stream)(CUstream *, CUgreenCtx, unsigned, int) = NULL;
    enum cudaDriverEntryPointQueryResult st;
    CK(cudaSetDevice(0));
    CK(cudaGetDriverEntryPointByVersion("cuStreamCreateWithPriority", (void **)&create_prio, 13000, 0, &st));
    CK(cudaGetDriverEntryPointByVersion("cuGreenCtxCreate", (void **)&green_create, 13000, 0, &st));
    CK(cudaGetDriverEntryPointByVersion("cuGreenCtxStreamCreate", (void **)&green_stream, 13000, 0, &st));
    if (!create_prio || !green_create || !green_stream)
        FAIL("driver entry points missing");
    CUgreenCtx g;
    CK(green_create(&g, NULL, 0, 0));
    cudaStream_t s[128];
    for (int i = 0; i < 128; i++) {
        if (i % 3 == 0)
            CK(cudaStreamCreateWithFlags(&s[i], cudaStreamNonBlocking));
        else if (i % 3 == 1)
            CK(create_prio((CUstream *)&s[i], CU_STREAM_NON_BLOCKING, -(i % 2)));
        else
            CK(green_stream((CUstream *)&s[i], g, CU_STREAM_NON_BLOCKING, 0));
    }
    size_t peak = 0;
    for (int i = 0; i < 2000; i++) {
        void *p = NULL;
        CK(cudaMalloc(&p, MiB));
        if (used(0) > peak)
            peak = used(0);
        CK(cudaFree(p));
    }
    unsigned long long during = counters().mem_alloc;
    destroyed_on(s[100], MiB);
    char extra[128];
    snprintf(extra, sizeof(extra), "loop_allocs=%llu peak_used=%zu", during, peak);
    print_ok(extra);
}

/* cudaMemGetInfo after a 600 MiB block is freed, and the driver's use then */
static void scen_meminfo(void)
{
    void *p = NULL;
    size_t f = 0, t = 0;
    CK(cudaSetDevice(0));
    CK(cudaMalloc(&p, 600 * MiB));
    CK(cudaFree(p));
    CK(cudaMemGetInfo(&f, &t));
    char extra[128];
    snprintf(extra, sizeof(extra), "free=%zu total=%zu used_at_info=%zu", f, t, used(0));
    print_ok(extra);
}

static void scen_oom(void)
{
    void *p = NULL, *m = NULL;
    size_t f = 0, t = 0;
    CK(cudaSetDevice(0));
    CK(cudaMalloc(&p, 600 * MiB));
    CK(cudaFree(p));
    CK(cudaMemGetInfo(&f, &t));
    size_t at_info = used(0);
    cudaError_t e = cudaMallocManaged(&m, 600 * MiB, cudaMemAttachGlobal);
    if (e != cudaSuccess)
        FAIL("cudaMallocManaged of 600 MiB after a free of 600 MiB: %d", (int)e);
    CK(cudaFree(m));
    char extra[128];
    snprintf(extra, sizeof(extra), "free=%zu total=%zu used_at_info=%zu", f, t, at_info);
    print_ok(extra);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        FAIL("usage: %s scenario", argv[0]);
    const char *s = argv[1];
    if (strcmp(s, "destroyed") == 0)
        scen_destroyed();
    else if (strcmp(s, "pinned") == 0)
        scen_pinned();
    else if (strcmp(s, "nb_legacy") == 0)
        scen_nb(1);
    else if (strcmp(s, "nb_nb") == 0)
        scen_nb(0);
    else if (strcmp(s, "many") == 0)
        scen_many();
    else if (strcmp(s, "oom") == 0)
        scen_oom();
    else if (strcmp(s, "meminfo") == 0)
        scen_meminfo();
    else
        FAIL("unknown scenario %s", s);
    return 0;
}
