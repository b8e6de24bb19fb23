/*
 * Scenario programs for test_cuda_scenarios that call the driver API
 * directly (linked against libcuda.so.1).  argv[1] names the scenario; it
 * prints "ok key=value ..." or "FAIL why".
 *
 *   primary     a block freed (and cached by a pool) before the last
 *               cuDevicePrimaryCtxRelease_v2 resets the context; two new
 *               allocations of that size afterwards must be live in the
 *               driver and distinct
 *   capture     a block freed while a kernel writes it; another thread then
 *               begins a global-mode capture through CUDA 10.0's cuStreamBeginCapture
 *               (not hooked by the shim; event queries then fail with
 *               CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
 *               the next allocation of that size must not be the block
 *   oom_pitch, oom_async, oom_host
 *               capacity 1 GiB: 600 MiB cuMemAlloc+cuMemFree, then 600 MiB by
 *               cuMemAllocPitch / cuMemAllocAsync / cuMemHostAlloc
 *   procaddr    cuGetProcAddress_v2 answers by version and flags
 */
#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_cuda.h"
#include "scen_check.h"

#define CAPTURE_BLOCK ((size_t)65536)

static void print_ok(const char *extra)
{
    fake_cuda_counters_t c;
    fakecuCounters(&c);
    printf("ok mem_alloc=%llu host_alloc=%llu calls=%llu event_record=%llu event_query=%llu ctx_record_event=%llu %s\n",
           (unsigned long long)c.mem_alloc, (unsigned long long)c.host_alloc, (unsigned long long)c.calls,
           (unsigned long long)c.event_record, (unsigned long long)c.event_query,
           (unsigned long long)c.ctx_record_event, extra ? extra : "");
}

static void use_primary(int d)
{
    CUcontext c;
    CK(cuDevicePrimaryCtxRetain(&c, d));
    CK(cuCtxSetCurrent(c));
}

static void scen_primary(void)
{
    CUdeviceptr p = 0, x = 0, y = 0, base = 0;
    size_t size = 0;
    CK(cuInit(0));
    use_primary(0);
    CK(cuMemAlloc_v2(&p, MiB));
    CK(cuMemFree_v2(p));
    CK(cuDevicePrimaryCtxRelease_v2(0)); /* the last reference: the context is reset */
    use_primary(0);
    CK(cuMemAlloc_v2(&x, MiB));
    CK(cuMemAlloc_v2(&y, MiB));
    if (x == y)
        FAIL("the same address %#llx handed out twice after the reset", (unsigned long long)x);
    if (cuMemGetAddressRange_v2(&base, &size, x) != CUDA_SUCCESS)
        FAIL("first block after the reset (%#llx) is not live in the driver", (unsigned long long)x);
    if (cuMemGetAddressRange_v2(&base, &size, y) != CUDA_SUCCESS)
        FAIL("second block after the reset (%#llx) is not live in the driver", (unsigned long long)y);
    CK(cuMemFree_v2(x));
    CK(cuMemFree_v2(y));
    print_ok(NULL);
}

static CUstream capture_stream;
static pthread_barrier_t barrier;
static CUresult begin_rc, end_rc;

static void *capturer(void *arg)
{
    (void)arg;
    CUcontext c;
    cuDevicePrimaryCtxRetain(&c, 0);
    cuCtxSetCurrent(c);
    /* CUDA 10.0's entry point (global mode), as old code still reaches it */
    begin_rc = cuStreamBeginCapture(capture_stream);
    pthread_barrier_wait(&barrier);
    pthread_barrier_wait(&barrier);
    CUgraph g;
    end_rc = cuStreamEndCapture(capture_stream, &g);
    return NULL;
}

static void scen_capture(void)
{
    CUstream s1;
    CUdeviceptr a = 0, b = 0;
    CK(cuInit(0));
    use_primary(0);
    CK(cuStreamCreate(&s1, CU_STREAM_NON_BLOCKING));
    CK(cuStreamCreate(&capture_stream, CU_STREAM_NON_BLOCKING));
    CK(cuMemAlloc_v2(&a, CAPTURE_BLOCK));
    CK(fakecuLaunchFill(s1, a, 0x77, CAPTURE_BLOCK, 300000));
    CK(cuMemFree_v2(a));
    pthread_t t;
    pthread_barrier_init(&barrier, NULL, 2);
    CK(pthread_create(&t, NULL, capturer, NULL));
    pthread_barrier_wait(&barrier);
    CK(begin_rc);
    CK(cuMemAlloc_v2(&b, CAPTURE_BLOCK)); /* a pool's fence query fails here: not "done" */
    memset((void *)(uintptr_t)b, 0x88, CAPTURE_BLOCK);
    pthread_barrier_wait(&barrier);
    pthread_join(t, NULL);
    CK(cuCtxSynchronize());
    const unsigned char *bytes = (const unsigned char *)(uintptr_t)b;
    for (size_t i = 0; i < CAPTURE_BLOCK; i++)
        if (bytes[i] != 0x88)
            FAIL("byte %zu of the block allocated during the capture is %#x: the freed block was handed out "
                 "while its kernel still ran", i, bytes[i]);
    CK(cuMemFree_v2(b));
    fake_cuda_counters_t c;
    fakecuCounters(&c);
    char extra[96];
    snprintf(extra, sizeof(extra), "end_capture=%d capture_violations=%llu", (int)end_rc,
             (unsigned long long)c.capture_violations);
    print_ok(extra);
}

static void scen_oom(const char *how)
{
    CUdeviceptr p = 0, q = 0;
    CK(cuInit(0));
    use_primary(0);
    CK(cuMemAlloc_v2(&p, 600 * MiB));
    CK(cuMemFree_v2(p));
    if (strcmp(how, "oom_pitch") == 0) {
        size_t pitch = 0;
        CUresult r = cuMemAllocPitch_v2(&q, &pitch, MiB, 600, 4);
        if (r != CUDA_SUCCESS)
            FAIL("cuMemAllocPitch of 600 MiB after a free of 600 MiB: %d", (int)r);
        CK(cuMemFree_v2(q));
    } else if (strcmp(how, "oom_async") == 0) {
        CUstream s;
        CK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
        CUresult r = cuMemAllocAsync(&q, 600 * MiB, s);
        if (r != CUDA_SUCCESS)
            FAIL("cuMemAllocAsync of 600 MiB after a free of 600 MiB: %d", (int)r);
        CK(cuMemFreeAsync(q, s));
        CK(cuStreamSynchronize(s));
    } else {
        void *h = NULL;
        CUresult r = cuMemHostAlloc(&h, 600 * MiB, 0);
        if (r != CUDA_SUCCESS)
            FAIL("cuMemHostAlloc of 600 MiB after a free of 600 MiB: %d", (int)r);
        CK(cuMemFreeHost(h));
    }
    size_t f = 0, t = 0;
    CK(cuMemGetInfo_v2(&f, &t));
    char extra[96];
    snprintf(extra, sizeof(extra), "free=%zu total=%zu", f, t);
    print_ok(extra);
}

typedef CUresult (*gp4_t)(const char *, void **, int, cuuint64_t);
typedef CUresult (*gp5_t)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);

static void scen_procaddr(void)
{
    void *fn = NULL, *f = NULL;
    CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    CK(cuInit(0));
    use_primary(0);
    /* before 12.0, "cuGetProcAddress" is the 4-argument function */
    CK(cuGetProcAddress_v2("cuGetProcAddress", &fn, 11080, 0, &st));
    if (!fn || st != CU_GET_PROC_ADDRESS_SUCCESS)
        FAIL("cuGetProcAddress@11080: %p status %d", fn, (int)st);
    gp4_t gp4;
    memcpy(&gp4, &fn, sizeof(fn));
    CK(gp4("cuMemFree", &f, 11080, 0));
    if (!f)
        FAIL("the 4-argument cuGetProcAddress found no cuMemFree");
    CK(cuGetProcAddress_v2("cuGetProcAddress", &fn, 12000, 0, &st));
    gp5_t gp5;
    memcpy(&gp5, &fn, sizeof(fn));
    st = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    f = NULL;
    if (!fn || gp5("cuMemFree", &f, 12000, 0, &st) != CUDA_SUCCESS || !f || st != CU_GET_PROC_ADDRESS_SUCCESS)
        FAIL("the 5-argument cuGetProcAddress@12000 did not answer for cuMemFree");
    /* the 32-bit-era cuMemAlloc is not the pool's cuMemAlloc_v2 */
    CK(cuGetProcAddress_v2("cuMemAlloc", &fn, 3000, 0, &st));
    if (!fn || fn == dlsym(RTLD_DEFAULT, "cuMemAlloc_v2"))
        FAIL("cuMemAlloc@3000 is %p, cuMemAlloc_v2 is %p", fn, dlsym(RTLD_DEFAULT, "cuMemAlloc_v2"));
    void *def = NULL, *pt = NULL;
    CK(cuGetProcAddress_v2("cuMemAllocAsync", &def, 12000, CU_GET_PROC_ADDRESS_DEFAULT, &st));
    CK(cuGetProcAddress_v2("cuMemAllocAsync", &pt, 12000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, &st));
    if (!def || !pt || def == pt)
        FAIL("cuMemAllocAsync default %p, per-thread %p: not two functions", def, pt);
    fn = (void *)1;
    CUresult r = cuGetProcAddress_v2("cuNoSuchFunction", &fn, 12000, 0, &st);
    if (r != CUDA_SUCCESS || fn != NULL || st != CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND)
        FAIL("unknown name: rc %d fn %p status %d", (int)r, fn, (int)st);
    print_ok(NULL);
}

int main(int argc, char **argv)
{
    if (argc < 2)
        FAIL("usage: %s scenario", argv[0]);
    const char *s = argv[1];
    if (strcmp(s, "primary") == 0)
        scen_primary();
    else if (strcmp(s, "capture") == 0)
        scen_capture();
    else if (strncmp(s, "oom_", 4) == 0)
        scen_oom(s);
    else if (strcmp(s, "procaddr") == 0)
        scen_procaddr();
    else
        FAIL("unknown scenario %s", s);
    return 0;
}
