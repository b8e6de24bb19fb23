/* The explicit pool API on device and pinned pools, on the fake driver:
 * ordinals, hits, fenced reuse, stream-ordered reuse, zero-on-release,
 * limits, wrong-pool releases, default pools shared with the preload's
 * pools, NUMA-placed pinned pools, device memory pressure. */
#include <cuda.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_main.h"
#include "device_pool.h"
#include "fake_cuda/fake_cuda.h"
#include "mempool.h"
#include "api.h"

static struct {
    CUresult (*init)(unsigned);
    CUresult (*retain)(CUcontext *, CUdevice);
    CUresult (*set_current)(CUcontext);
    CUresult (*stream_create)(CUstream *, unsigned);
    CUresult (*ctx_sync)(void);
    CUresult (*launch)(CUstream, CUdeviceptr, int, size_t, unsigned);
    void (*counters)(fake_cuda_counters_t *);
    void (*set_capacity)(int, size_t);
} fk;

static void start(void)
{
    setenv("MEMPOOL_HOST_RESERVE", "64G", 0);
    /* The default pools (the preload's) reuse at the next allocation. */
    setenv("MEMPOOL_DEVICE_FENCE_BATCH", "1", 0);
    ck_assert_int_eq(mp_init(), MP_STATE_READY);
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    ck_assert_ptr_nonnull(h);
    *(void **)&fk.init = dlsym(h, "cuInit");
    *(void **)&fk.retain = dlsym(h, "cuDevicePrimaryCtxRetain");
    *(void **)&fk.set_current = dlsym(h, "cuCtxSetCurrent");
    *(void **)&fk.stream_create = dlsym(h, "cuStreamCreate");
    *(void **)&fk.ctx_sync = dlsym(h, "cuCtxSynchronize");
    *(void **)&fk.launch = dlsym(h, "fakecuLaunchFill");
    *(void **)&fk.counters = dlsym(h, "fakecuCounters");
    *(void **)&fk.set_capacity = dlsym(h, "fakecuSetCapacity");
    ck_assert_ptr_nonnull(fk.set_capacity);
    fk.init(0);
}

static fake_cuda_counters_t counters(void)
{
    fake_cuda_counters_t c;
    fk.counters(&c);
    return c;
}

static mempool_t *make(mempool_kind_t kind, int device, unsigned flags, size_t limit, size_t max_blocks)
{
    mempool_config_t c;
    ck_assert_int_eq(mempool_config_init(&c, kind), 0);
    c.device = device;
    c.flags = flags;
    c.cache_limit = limit;
    c.max_cached_blocks = max_blocks;
    mempool_t *p = NULL;
    ck_assert_int_eq(mempool_create(&c, &p), 0);
    return p;
}

static mempool_stats_t stats_of(mempool_t *p)
{
    mempool_stats_t s = {.struct_size = sizeof(s)};
    ck_assert_int_eq(mempool_get_stats(p, &s), 0);
    return s;
}

START_TEST(device_ordinals)
{
    start();
    mempool_config_t c;
    mempool_config_init(&c, MEMPOOL_KIND_DEVICE);
    mempool_t *p = NULL;
    static const struct {
        int device, numa;
        size_t align;
        int err;
    } table[] = {
        {0, -1, 0, 0},   {1, -1, 0, 0},         {2, -1, 0, -ENODEV}, {-1, -1, 0, -ENODEV},
        {0, 0, 0, -EINVAL}, /* NUMA on device memory */
        {0, -1, 512, -EINVAL}, /* beyond cudaMalloc's 256 bytes */
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        c.device = table[i].device;
        c.numa_node = table[i].numa;
        c.alignment = table[i].align;
        int r = mempool_create(&c, &p);
        if (r != table[i].err)
            ck_abort_msg("row %zu: got %d, want %d", i, r, table[i].err);
        if (r == 0)
            ck_assert_int_eq(mempool_destroy(p), 0);
    }
}
END_TEST

START_TEST(device_hit_after_release)
{
    start();
    mempool_t *p = make(MEMPOOL_KIND_DEVICE, 1, 0, 0, 0);
    uint64_t allocs = counters().mem_alloc;
    void *a = mempool_acquire(p, 1 << 20);
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq((uintptr_t)a % 256, 0);
    ck_assert_int_eq(mempool_release(p, a), 0);
    void *b = mempool_acquire(p, 1 << 20);
    ck_assert_ptr_eq(a, b);
    ck_assert_uint_eq(counters().mem_alloc - allocs, 1);
    mempool_stats_t s = stats_of(p);
    ck_assert_int_eq(s.device, 1);
    ck_assert_uint_eq(s.hits, 1);
    ck_assert_uint_eq(s.misses, 1);
    ck_assert_uint_eq(s.bytes_in_use, 1 << 20);
    ck_assert_int_eq(mempool_destroy(p), -EBUSY);
    ck_assert_int_eq(mempool_release(p, b), 0);
    uint64_t frees = counters().mem_free;
    ck_assert_int_eq(mempool_destroy(p), 0);
    ck_assert_uint_eq(counters().mem_free - frees, 1);
}
END_TEST

/* A kernel still writing the block at release: no plain acquire gets it
 * until the kernel is done. */
START_TEST(device_reuse_is_fenced)
{
    start();
    mempool_t *p = make(MEMPOOL_KIND_DEVICE, 0, 0, 0, 0);
    char *a = mempool_acquire(p, 4096);
    ck_assert_int_eq(fk.launch(NULL, (CUdeviceptr)(uintptr_t)a, 0x11, 4096, 80000), CUDA_SUCCESS);
    mempool_release(p, a);
    char *b = mempool_acquire(p, 4096);
    ck_assert_ptr_ne(a, b);
    usleep(150000);
    ck_assert_ptr_eq(mempool_acquire(p, 4096), a);
}
END_TEST

/* Stream order: a block released on a stream is reused at once on that
 * stream, and on another stream only after the stream's work is done. */
START_TEST(stream_ordered_reuse)
{
    start();
    mempool_t *p = make(MEMPOOL_KIND_DEVICE, 0, 0, 0, 0);
    CUcontext ctx;
    fk.retain(&ctx, 0);
    fk.set_current(ctx);
    CUstream s1, s2;
    ck_assert_int_eq(fk.stream_create(&s1, CU_STREAM_NON_BLOCKING), CUDA_SUCCESS);
    ck_assert_int_eq(fk.stream_create(&s2, CU_STREAM_NON_BLOCKING), CUDA_SUCCESS);
    char *a = mempool_acquire_async(p, 8192, (mempool_stream_t)s1);
    ck_assert_int_eq(fk.launch(s1, (CUdeviceptr)(uintptr_t)a, 0x33, 8192, 80000), CUDA_SUCCESS);
    ck_assert_int_eq(mempool_release_async(p, a, (mempool_stream_t)s1), 0);
    char *other = mempool_acquire_async(p, 8192, (mempool_stream_t)s2);
    ck_assert_ptr_ne(other, a); /* s2 is not ordered after s1's kernel */
    char *same = mempool_acquire_async(p, 8192, (mempool_stream_t)s1);
    ck_assert_ptr_eq(same, a); /* s1 is */
    ck_assert_int_eq(mempool_release_async(p, same, (mempool_stream_t)s1), 0);
    ck_assert_int_eq(mempool_release_async(p, other, (mempool_stream_t)s2), 0);
    usleep(150000); /* s1's kernel done: any stream may take it */
    char *c = mempool_acquire_async(p, 8192, (mempool_stream_t)s2);
    ck_assert_ptr_eq(c, other); /* its own stream's block first */
    char *d = mempool_acquire(p, 8192);
    ck_assert_ptr_eq(d, a);
    mempool_stats_t s = stats_of(p);
    ck_assert_uint_eq(s.hits, 3);
    ck_assert_uint_eq(s.misses, 2);
    /* Host pools have no streams. */
    ck_assert_int_eq(mempool_release_async(mempool_default(MEMPOOL_KIND_HOST), d, NULL), -EINVAL);
}
END_TEST

START_TEST(device_zero_on_release)
{
    start();
    mempool_t *p = make(MEMPOOL_KIND_DEVICE, 0, MEMPOOL_ZERO_ON_RELEASE, 0, 0);
    unsigned char *a = mempool_acquire(p, 5000);
    ck_assert_int_eq(fk.launch(NULL, (CUdeviceptr)(uintptr_t)a, 0x7f, 5000, 0), CUDA_SUCCESS);
    uint64_t memsets = counters().memset;
    mempool_release(p, a);
    ck_assert_uint_eq(counters().memset - memsets, 1);
    unsigned char *b = mempool_acquire(p, 5000);
    ck_assert_ptr_eq(a, b);
    fk.ctx_sync();
    for (size_t i = 0; i < 5000; i++)
        if (b[i] != 0)
            ck_abort_msg("device byte %zu is %u after zero-on-release", i, b[i]);
}
END_TEST

START_TEST(pinned_pool)
{
    start();
    mempool_t *p = make(MEMPOOL_KIND_PINNED, 0, MEMPOOL_ZERO_ON_RELEASE, 0, 2);
    uint64_t host_allocs = counters().host_alloc;
    unsigned char *b[3];
    for (int i = 0; i < 3; i++) {
        b[i] = mempool_acquire(p, 100000);
        ck_assert_ptr_nonnull(b[i]);
        memset(b[i], 0xcd, 100000);
    }
    ck_assert_uint_eq(counters().host_alloc - host_allocs, 3);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(mempool_release(p, b[i]), 0);
    mempool_stats_t s = stats_of(p);
    ck_assert_uint_eq(s.pool_size, 2); /* max_cached_blocks */
    ck_assert_uint_eq(s.trims, 1);
    unsigned char *c = mempool_acquire(p, 100000);
    for (size_t i = 0; i < 100000; i++)
        if (c[i] != 0)
            ck_abort_msg("pinned byte %zu is %u after zero-on-release", i, c[i]);
    /* A pinned block released to a device pool is refused, untouched. */
    mempool_t *d = make(MEMPOOL_KIND_DEVICE, 0, 0, 0, 0);
    ck_assert_int_eq(mempool_release(d, c), -EINVAL);
    ck_assert_uint_eq(stats_of(d).release_errors, 1);
    ck_assert_int_eq(mempool_release(p, c), 0);
    ck_assert_int_eq(mempool_release(p, c), -EINVAL); /* twice */
    ck_assert_int_eq(mempool_clear(p), 2 * 114688); /* the 112 KiB class */
}
END_TEST

START_TEST(pinned_numa_pool)
{
    start();
    mempool_config_t c;
    mempool_config_init(&c, MEMPOOL_KIND_PINNED);
    c.numa_node = 0;
    mempool_t *p = NULL;
    int r = mempool_create(&c, &p);
    if (r == -ENOTSUP) {
        fprintf(stderr, "pinned_numa_pool: the kernel refuses memory policies here; -ENOTSUP checked\n");
        return;
    }
    ck_assert_int_eq(r, 0);
    uint64_t reg = counters().host_register;
    char *a = mempool_acquire(p, 1 << 20);
    ck_assert_ptr_nonnull(a);
    memset(a, 1, 1 << 20);
    ck_assert_uint_eq(counters().host_register - reg, 1); /* placed, then page-locked in place */
    ck_assert_int_eq(mp_numa_node_of(a), 0);
    mempool_release(p, a);
    uint64_t unreg = counters().host_unregister;
    ck_assert_int_gt(mempool_clear(p), 0);
    ck_assert_uint_eq(counters().host_unregister - unreg, 1);
    c.host_alloc_flags = 0x4; /* write-combined cannot be registered in place */
    ck_assert_int_eq(mempool_create(&c, &p), -EINVAL);
}
END_TEST

START_TEST(device_cache_limit)
{
    start();
    mempool_t *p = make(MEMPOOL_KIND_DEVICE, 0, 0, 3 << 20, 0);
    void *b[4];
    for (int i = 0; i < 4; i++)
        b[i] = mempool_acquire(p, 1 << 20);
    for (int i = 0; i < 4; i++)
        mempool_release(p, b[i]);
    mempool_stats_t s = stats_of(p);
    ck_assert_uint_le(s.bytes_cached, 3 << 20);
    ck_assert_uint_eq(s.bytes_cached + (uint64_t)s.trims * (1 << 20), 4u << 20);
    ck_assert_int_eq(mempool_trim(p, 1 << 20), (long long)(s.bytes_cached - (1 << 20)));
    ck_assert_uint_eq(stats_of(p).bytes_cached, 1 << 20);
}
END_TEST

START_TEST(device_out_of_memory)
{
    start();
    fk.set_capacity(0, 8 << 20);
    mempool_t *p = make(MEMPOOL_KIND_DEVICE, 0, 0, 0, 0);
    void *a = mempool_acquire(p, 6 << 20);
    mempool_release(p, a);
    void *b = mempool_acquire(p, 7 << 20); /* frees the cached 6 MiB, retries */
    ck_assert_ptr_nonnull(b);
    errno = 0;
    ck_assert_ptr_null(mempool_acquire(p, 7 << 20));
    ck_assert_int_eq(errno, ENOMEM);
    mempool_release(p, b);
}
END_TEST

/* The default pools are the preload's: a block the cudaMalloc path made is
 * released through the API, and the other way round. */
START_TEST(default_pools_are_the_preload_pools)
{
    start();
    CUcontext ctx;
    fk.retain(&ctx, 0);
    fk.set_current(ctx);
    mempool_t *d = mempool_default(MEMPOOL_KIND_DEVICE), *pn = mempool_default(MEMPOOL_KIND_PINNED);
    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_nonnull(pn);
    mp_cu_ptr x = 0;
    ck_assert_int_eq(mp_device_alloc(&x, 3000), CUDA_SUCCESS);
    ck_assert_int_eq(mempool_release(d, (void *)(uintptr_t)x), 0);
    void *y = mempool_acquire(d, 3000);
    ck_assert_ptr_eq(y, (void *)(uintptr_t)x);
    ck_assert_int_eq(mp_device_free((mp_cu_ptr)(uintptr_t)y), 1);
    void *h = mempool_acquire(pn, 4096);
    ck_assert_ptr_nonnull(h);
    ck_assert_int_eq(mempool_release(d, h), -EINVAL); /* pinned to the device pool */
    ck_assert_int_eq(mempool_release(pn, h), 0);
    mempool_stats_t s = stats_of(pn);
    ck_assert_uint_eq(s.acquired, 1);
    ck_assert_str_eq(s.name, "pinned-default");
    ck_assert_int_ge(mempool_clear(d), 0);
    ck_assert_uint_eq(stats_of(d).bytes_cached, 0);
}
END_TEST

/* A thread without a current context uses device 0's primary context,
 * as the runtime would. */
START_TEST(default_device_pool_without_context)
{
    start();
    void *a = mempool_acquire(mempool_default(MEMPOOL_KIND_DEVICE), 1000);
    ck_assert_ptr_nonnull(a);
    ck_assert_int_eq(mempool_release(mempool_default(MEMPOOL_KIND_DEVICE), a), 0);
}
END_TEST

/* Answers only the test's thread: the monitor thread (started by the
 * pool's threshold) gets no reading, so it cannot trim before the poll. */
static _Atomic uint64_t dev_free = 100, dev_total = 1000;
static pthread_t test_thread;
static bool device_reader(int kind, uint64_t *avail, uint64_t *total)
{
    if (kind != MEMPOOL_KIND_DEVICE || !pthread_equal(pthread_self(), test_thread))
        return false;
    *avail = dev_free;
    *total = dev_total;
    return true;
}

START_TEST(device_pressure)
{
    start();
    test_thread = pthread_self();
    mp_pressure_set_reader(device_reader);
    mempool_config_t c;
    mempool_config_init(&c, MEMPOOL_KIND_DEVICE);
    c.pressure_threshold = 0.85;
    mempool_t *p = NULL;
    ck_assert_int_eq(mempool_create(&c, &p), 0);
    void *a = mempool_acquire(p, 1 << 20);
    mempool_release(p, a);
    dev_free = 200; /* 80% used */
    ck_assert_int_eq(mempool_pressure_poll(), 0);
    dev_free = 100; /* 90% used */
    ck_assert_int_eq(mempool_pressure_poll(), 1 << 20);
    ck_assert_uint_eq(stats_of(p).pressure_events, 1);
}
END_TEST

static Suite *api_cuda_suite(void)
{
    Suite *s = suite_create("api_cuda");
    TCase *tc = tcase_create("api_cuda");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, device_ordinals);
    tcase_add_test(tc, device_hit_after_release);
    tcase_add_test(tc, device_reuse_is_fenced);
    tcase_add_test(tc, stream_ordered_reuse);
    tcase_add_test(tc, device_zero_on_release);
    tcase_add_test(tc, pinned_pool);
    tcase_add_test(tc, pinned_numa_pool);
    tcase_add_test(tc, device_cache_limit);
    tcase_add_test(tc, device_out_of_memory);
    tcase_add_test(tc, default_pools_are_the_preload_pools);
    tcase_add_test(tc, default_device_pool_without_context);
    tcase_add_test(tc, device_pressure);
    suite_add_tcase(s, tc);
    return s;
}

MP_CHECK_MAIN(api_cuda_suite)
