/* The fake CUDA itself: the runtime reaches the driver through
 * cuGetProcAddress_v2, memory runs out at the set capacity, work completes
 * after its delay, cudaFree waits for the device, the legacy stream orders
 * with blocking streams and not with non-blocking ones.  Built twice: with
 * the shared fake runtime and with its static archive. */
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <string.h>
#include <time.h>

#include "check_main.h"
#include "fake_cuda/fake_cuda.h"


static void *driver_sym(const char *name)
{
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    ck_assert_ptr_nonnull(h);
    void *f = dlsym(h, name);
    ck_assert_ptr_nonnull(f);
    return f;
}

static fake_cuda_counters_t counters(void)
{
    void (*get)(fake_cuda_counters_t *);
    *(void **)&get = driver_sym("fakecuCounters");
    fake_cuda_counters_t c;
    get(&c);
    return c;
}

static double ms_since(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

START_TEST(runtime_goes_through_get_proc_address)
{
    void *p = NULL;
    ck_assert_int_eq(cudaMalloc(&p, 1000), cudaSuccess);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_ge(fakecudaDriverLookups(), 20);
    fake_cuda_counters_t c = counters();
    ck_assert_uint_ge(c.proc_address, 20);
    ck_assert_uint_eq(c.mem_alloc, 1);
    ck_assert_int_eq(cudaFree(p), cudaSuccess);
    ck_assert_uint_eq(counters().mem_free, 1);
    ck_assert_int_eq(cudaFree((void *)0x1234), cudaErrorInvalidValue);
    ck_assert_uint_eq(counters().invalid_free, 1);
}
END_TEST

START_TEST(out_of_memory_at_capacity)
{
    void *p = NULL;
    ck_assert_int_eq(cudaFree(NULL), cudaSuccess); /* loads the driver */
    void (*set)(int, size_t);
    *(void **)&set = driver_sym("fakecuSetCapacity");
    set(0, 1 << 20);
    ck_assert_int_eq(cudaMalloc(&p, 600 << 10), cudaSuccess);
    void *q = NULL;
    ck_assert_int_eq(cudaMalloc(&q, 600 << 10), cudaErrorMemoryAllocation);
    size_t f = 0, t = 0;
    ck_assert_int_eq(cudaMemGetInfo(&f, &t), cudaSuccess);
    ck_assert_uint_eq(t, 1 << 20);
    ck_assert_uint_eq(f, (1 << 20) - (600 << 10));
    ck_assert_int_eq(cudaFree(p), cudaSuccess);
    ck_assert_int_eq(cudaMalloc(&q, 600 << 10), cudaSuccess);
    ck_assert_uint_eq(counters().oom, 1);
}
END_TEST

START_TEST(work_completes_after_delay)
{
    unsigned char *b = NULL;
    ck_assert_int_eq(cudaMalloc((void **)&b, 4096), cudaSuccess);
    memset(b, 0, 4096);
    cudaEvent_t e;
    ck_assert_int_eq(cudaEventCreate(&e), cudaSuccess);
    ck_assert_int_eq(fakecudaLaunchFill(NULL, b, 0xaa, 4096, 50000), cudaSuccess);
    ck_assert_int_eq(cudaEventRecord(e, NULL), cudaSuccess);
    ck_assert_int_eq(cudaEventQuery(e), cudaErrorNotReady);
    ck_assert_uint_eq(b[0], 0);
    ck_assert_int_eq(cudaEventSynchronize(e), cudaSuccess);
    ck_assert_uint_eq(b[0], 0xaa);
    ck_assert_uint_eq(b[4095], 0xaa);
    ck_assert_int_eq(cudaEventQuery(e), cudaSuccess);
}
END_TEST

START_TEST(free_waits_for_the_device)
{
    unsigned char *b = NULL;
    ck_assert_int_eq(cudaMalloc((void **)&b, 4096), cudaSuccess);
    cudaStream_t s;
    ck_assert_int_eq(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), cudaSuccess);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    ck_assert_int_eq(fakecudaLaunchFill(s, b, 1, 4096, 40000), cudaSuccess);
    ck_assert_int_eq(cudaFree(b), cudaSuccess);
    ck_assert(ms_since(&t0) >= 39.0);
}
END_TEST

START_TEST(legacy_stream_orders_with_blocking_streams_only)
{
    unsigned char *b = NULL;
    ck_assert_int_eq(cudaMalloc((void **)&b, 64), cudaSuccess);
    cudaStream_t blocking, nonblocking;
    ck_assert_int_eq(cudaStreamCreate(&blocking), cudaSuccess);
    ck_assert_int_eq(cudaStreamCreateWithFlags(&nonblocking, cudaStreamNonBlocking), cudaSuccess);
    ck_assert_int_eq(fakecudaLaunchFill(NULL, b, 1, 64, 60000), cudaSuccess); /* legacy */
    cudaEvent_t eb, en, ep;
    cudaEventCreate(&eb);
    cudaEventCreate(&en);
    cudaEventCreate(&ep);
    ck_assert_int_eq(cudaEventRecord(eb, blocking), cudaSuccess);
    ck_assert_int_eq(cudaEventRecord(en, nonblocking), cudaSuccess);
    ck_assert_int_eq(cudaEventRecord(ep, cudaStreamPerThread), cudaSuccess);
    ck_assert_int_eq(cudaEventQuery(en), cudaSuccess);   /* independent */
    ck_assert_int_eq(cudaEventQuery(eb), cudaErrorNotReady); /* waits for legacy */
    ck_assert_int_eq(cudaEventQuery(ep), cudaErrorNotReady); /* per-thread: blocking */
    ck_assert_int_eq(cudaEventSynchronize(eb), cudaSuccess);
    ck_assert_uint_eq(b[0], 1);
}
END_TEST

START_TEST(two_devices_and_queries)
{
    void *p0 = NULL, *p1 = NULL;
    ck_assert_int_eq(cudaSetDevice(1), cudaSuccess);
    ck_assert_int_eq(cudaMalloc(&p1, 1 << 20), cudaSuccess);
    size_t (*used)(int);
    *(void **)&used = driver_sym("fakecuUsed");
    ck_assert_uint_eq(used(1), 1 << 20);
    ck_assert_uint_eq(used(0), 0);
    ck_assert_int_eq(cudaSetDevice(0), cudaSuccess);
    ck_assert_int_eq(cudaMalloc(&p0, 1000), cudaSuccess);
    ck_assert_uint_eq(used(0), 1000);
    ck_assert_int_eq(cudaSetDevice(5), cudaErrorInvalidDevice);

    CUresult (*range)(CUdeviceptr *, size_t *, CUdeviceptr);
    enum cudaDriverEntryPointQueryResult st;
    ck_assert_int_eq(cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", (void **)&range, 13000, 0, &st), cudaSuccess);
    ck_assert_int_eq(st, cudaDriverEntryPointSuccess);
    CUdeviceptr base = 0;
    size_t size = 0;
    ck_assert_int_eq(range(&base, &size, (CUdeviceptr)(uintptr_t)p1 + 100), CUDA_SUCCESS);
    ck_assert_uint_eq(base, (CUdeviceptr)(uintptr_t)p1);
    ck_assert_uint_eq(size, 1 << 20);

    void *h = NULL, *d = NULL;
    ck_assert_int_eq(cudaHostAlloc(&h, 8192, cudaHostAllocMapped), cudaSuccess);
    ck_assert_int_eq(cudaHostGetDevicePointer(&d, h, 0), cudaSuccess);
    ck_assert_ptr_eq(d, h);
    void *h2 = NULL;
    ck_assert_int_eq(cudaMallocHost(&h2, 100), cudaSuccess);
    ck_assert_int_eq(cudaHostGetDevicePointer(&d, h2, 0), cudaErrorInvalidValue);
    ck_assert_int_eq(cudaFreeHost(h), cudaSuccess);
    ck_assert_int_eq(cudaFreeHost(h2), cudaSuccess);
    ck_assert_uint_eq(counters().host_alloc, 2);

    ck_assert_int_eq(cudaSetDevice(1), cudaSuccess);
    ck_assert_int_eq(cudaDeviceReset(), cudaSuccess); /* frees device 1's memory */
    ck_assert_uint_eq(used(1), 0);
    ck_assert_uint_eq(used(0), 1000);
}
END_TEST

static Suite *fake_suite(void)
{
    Suite *s = suite_create("fake_cuda");
    TCase *tc = tcase_create("fake");
    tcase_add_test(tc, runtime_goes_through_get_proc_address);
    tcase_add_test(tc, out_of_memory_at_capacity);
    tcase_add_test(tc, work_completes_after_delay);
    tcase_add_test(tc, free_waits_for_the_device);
    tcase_add_test(tc, legacy_stream_orders_with_blocking_streams_only);
    tcase_add_test(tc, two_devices_and_queries);
    suite_add_tcase(s, tc);
    return s;
}

MP_CHECK_MAIN(fake_suite)
