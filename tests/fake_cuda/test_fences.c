/*
 * Fences, the block table and the driver-call budget of the device pools,
 * on the fake driver (core linked directly, nothing interposed):
 * - a steady cudaMalloc+cudaFree loop makes at most 0.05 driver calls per
 *   pair (one fence per batch, checked oldest first);
 * - behind busy device work, each allocation makes O(1) event queries;
 * - a free of a pointer the shim never made is one lookup among 50,000
 *   cached blocks, and a second free is still refused;
 * - a trim waiting in the driver's free holds no pool lock;
 * - an allocation the pools do not serve gets the cache back on OOM;
 * - cuMemGetInfo counts the cache as free (raw numbers on request);
 * - a destroyed stream's queued work is still waited for;
 * and what a review found: a primary reset leaves created contexts' pools
 * alone, a context destroyed while other threads use pinned memory never
 * hands a block out twice, the per-thread stream handle is no "same
 * stream", an allocation that runs out gets every pool's cache of the
 * device back (the cache cuMemGetInfo counts as free).
 */
#include <cuda.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_main.h"
#include "cuda_hooks.h"
#include "device_pool.h"
#include "fake_cuda.h"

static struct {
    CUresult (*init)(unsigned);
    CUresult (*retain)(CUcontext *, CUdevice);
    CUresult (*set_current)(CUcontext);
    CUresult (*stream_create)(CUstream *, unsigned);
    CUresult (*stream_destroy)(CUstream);
    CUresult (*launch)(CUstream, CUdeviceptr, int, size_t, unsigned);
    CUresult (*managed)(CUdeviceptr *, size_t, unsigned);
    CUresult (*ctx_create)(CUcontext *, unsigned, CUdevice);
    CUresult (*ctx_destroy)(CUcontext);
    CUresult (*primary_reset)(CUdevice);
    CUresult (*mem_free)(CUdeviceptr);
    void (*counters)(fake_cuda_counters_t *);
    void (*set_capacity)(int, size_t);
} fk;

static void *fake(void *h, const char *name)
{
    void *f = dlsym(h, name);
    ck_assert_msg(f != NULL, "fake driver lacks %s", name);
    return f;
}

static void start(void)
{
    setenv("MEMPOOL_HOST_RESERVE", "64G", 0);
    setenv("MEMPOOL_DEVICE_PACK_MAX_SIZE", "0", 0);
    ck_assert_int_eq(mp_init(), MP_STATE_READY);
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    ck_assert_ptr_nonnull(h);
    *(void **)&fk.init = fake(h, "cuInit");
    *(void **)&fk.retain = fake(h, "cuDevicePrimaryCtxRetain");
    *(void **)&fk.set_current = fake(h, "cuCtxSetCurrent");
    *(void **)&fk.stream_create = fake(h, "cuStreamCreate");
    *(void **)&fk.stream_destroy = fake(h, "cuStreamDestroy_v2");
    *(void **)&fk.launch = fake(h, "fakecuLaunchFill");
    *(void **)&fk.managed = fake(h, "cuMemAllocManaged");
    *(void **)&fk.ctx_create = fake(h, "cuCtxCreate_v2");
    *(void **)&fk.ctx_destroy = fake(h, "cuCtxDestroy_v2");
    *(void **)&fk.primary_reset = fake(h, "cuDevicePrimaryCtxReset_v2");
    *(void **)&fk.mem_free = fake(h, "cuMemFree_v2");
    *(void **)&fk.counters = fake(h, "fakecuCounters");
    *(void **)&fk.set_capacity = fake(h, "fakecuSetCapacity");
    fk.init(0);
    CUcontext ctx;
    ck_assert_int_eq(fk.retain(&ctx, 0), CUDA_SUCCESS);
    ck_assert_int_eq(fk.set_current(ctx), CUDA_SUCCESS);
}

static fake_cuda_counters_t counters(void)
{
    fake_cuda_counters_t c;
    fk.counters(&c);
    return c;
}

/* Calls the device pools make: allocations, frees, events. */
static uint64_t pool_calls(void)
{
    fake_cuda_counters_t c = counters();
    return c.mem_alloc + c.mem_free + c.event_create + c.event_record + c.event_query + c.event_sync
           + c.ctx_sync;
}

START_TEST(steady_loop_amortises_fences)
{
    start(); /* default batch: 64 blocks or 64 MiB */
    CUdeviceptr p = 0;
    for (int i = 0; i < 300; i++) { /* warm-up: the batch fills */
        ck_assert_int_eq(mp_device_alloc(&p, 1 << 20), CUDA_SUCCESS);
        ck_assert_int_eq(mp_device_free(p), 1);
    }
    uint64_t c0 = pool_calls(), allocs0 = counters().mem_alloc;
    for (int i = 0; i < 4000; i++) {
        ck_assert_int_eq(mp_device_alloc(&p, 1 << 20), CUDA_SUCCESS);
        ck_assert_int_eq(mp_device_free(p), 1);
    }
    uint64_t calls = pool_calls() - c0;
    ck_assert_msg(calls * 20 <= 4000, "%llu driver calls for 4000 pairs", (unsigned long long)calls);
    ck_assert_uint_eq(counters().mem_alloc, allocs0); /* all hits */
    ck_assert_uint_le(allocs0, 65);                   /* one batch of blocks in rotation */
}
END_TEST

START_TEST(batch_of_one_fences_every_reuse)
{
    setenv("MEMPOOL_DEVICE_FENCE_BATCH", "1", 1);
    start();
    CUdeviceptr p = 0, first = 0;
    for (int i = 0; i < 100; i++) {
        ck_assert_int_eq(mp_device_alloc(&p, 1 << 20), CUDA_SUCCESS);
        if (i == 0)
            first = p;
        ck_assert_uint_eq(p, first);
        ck_assert_int_eq(mp_device_free(p), 1);
    }
    ck_assert_uint_eq(counters().mem_alloc, 1);
}
END_TEST

/* Behind 400 ms of queued work every allocation misses: each makes one
 * query of the oldest fence, not one per outstanding batch. */
START_TEST(busy_device_costs_constant_queries)
{
    setenv("MEMPOOL_DEVICE_FENCE_BATCH", "4", 1);
    start();
    CUdeviceptr p = 0;
    ck_assert_int_eq(fk.launch(NULL, 0, 0, 0, 400000), CUDA_SUCCESS);
    uint64_t q0 = counters().event_query;
    for (int i = 0; i < 400; i++) {
        ck_assert_int_eq(mp_device_alloc(&p, 64 << 10), CUDA_SUCCESS);
        ck_assert_int_eq(mp_device_free(p), 1);
    }
    uint64_t q = counters().event_query - q0;
    ck_assert_msg(q <= 2 * 400, "%llu queries for 400 allocations", (unsigned long long)q);
    mp_device_stats_t s;
    mp_device_stats(0, &s);
    ck_assert_uint_ge(s.fences_recorded, 400 / 4 - 1); /* a fence per batch, none completed yet */
}
END_TEST

START_TEST(foreign_free_is_one_lookup)
{
    start();
    enum { N = 50000 };
    static CUdeviceptr p[N];
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(mp_device_alloc(&p[i], 512), CUDA_SUCCESS);
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(mp_device_free(p[i]), 1);
    mp_device_stats_t s;
    mp_device_stats(0, &s);
    ck_assert_int_eq(s.cached_blocks, N);
    /* A managed pointer the shim never made: not ours, forwarded. */
    CUdeviceptr m = 0;
    ck_assert_int_eq(fk.managed(&m, 4096, CU_MEM_ATTACH_GLOBAL), CUDA_SUCCESS);
    ck_assert_int_eq(mp_device_free(m), 0);
    ck_assert_int_eq(fk.mem_free(m), CUDA_SUCCESS);
    /* Cached blocks are still known: a second free is refused. */
    ck_assert_int_eq(mp_device_free(p[N / 2]), -1);
    ck_assert_int_eq(mp_device_free(p[N - 1]), -1);
}
END_TEST

static _Atomic int trim_done;

static void *trim_thread(void *arg)
{
    (void)arg;
    CUcontext ctx;
    fk.retain(&ctx, 0);
    fk.set_current(ctx);
    mp_device_trim(0); /* cuMemFree waits for the 300 ms kernel */
    atomic_store(&trim_done, 1);
    return NULL;
}

/* A trim blocked in the driver's free (the device is busy) holds no pool
 * lock: another thread allocates from the same pool meanwhile. */
START_TEST(trim_holds_no_lock_across_driver_frees)
{
    setenv("MEMPOOL_DEVICE_FENCE_BATCH", "1", 1);
    start();
    CUdeviceptr a = 0, b = 0;
    ck_assert_int_eq(mp_device_alloc(&a, 1 << 20), CUDA_SUCCESS);
    ck_assert_int_eq(mp_device_free(a), 1);
    ck_assert_int_eq(fk.launch(NULL, 0, 0, 0, 300000), CUDA_SUCCESS);
    pthread_t t;
    pthread_create(&t, NULL, trim_thread, NULL);
    usleep(50000); /* the trim is inside cuMemFree now */
    ck_assert_int_eq(mp_device_alloc(&b, 2 << 20), CUDA_SUCCESS);
    ck_assert_int_eq(atomic_load(&trim_done), 0); /* served while the trim still waits */
    pthread_join(t, NULL);
    ck_assert_int_eq(mp_device_free(b), 1);
}
END_TEST

/* 600 MiB cached on a 1 GiB device: a managed allocation of 600 MiB fails
 * in the driver, gets the cache back, and succeeds on the retry. */
START_TEST(unpooled_allocation_gets_the_cache_on_oom)
{
    start();
    fk.set_capacity(0, (size_t)1 << 30);
    CUdeviceptr a = 0, m = 0;
    ck_assert_int_eq(mp_device_alloc(&a, (size_t)600 << 20), CUDA_SUCCESS);
    ck_assert_int_eq(mp_device_free(a), 1);
    CUresult rc = fk.managed(&m, (size_t)600 << 20, CU_MEM_ATTACH_GLOBAL);
    ck_assert_int_eq(rc, CUDA_ERROR_OUT_OF_MEMORY);
    ck_assert(mp_cuda_retry_after_oom(rc, false));
    ck_assert_int_eq(fk.managed(&m, (size_t)600 << 20, CU_MEM_ATTACH_GLOBAL), CUDA_SUCCESS);
    ck_assert(!mp_cuda_retry_after_oom(CUDA_ERROR_INVALID_VALUE, false));
    ck_assert_int_eq(fk.mem_free(m), CUDA_SUCCESS);
}
END_TEST

START_TEST(mem_get_info_counts_the_cache_as_free)
{
    start();
    fk.set_capacity(0, (size_t)1 << 30);
    size_t before = 0, total = 0, after = 0;
    ck_assert_int_eq(mp_cuda_mem_get_info(&before, &total), CUDA_SUCCESS);
    CUdeviceptr a = 0;
    ck_assert_int_eq(mp_device_alloc(&a, (size_t)256 << 20), CUDA_SUCCESS);
    ck_assert_int_eq(mp_cuda_mem_get_info(&after, &total), CUDA_SUCCESS);
    ck_assert_uint_eq(after, before - ((size_t)256 << 20)); /* in use: not free */
    ck_assert_int_eq(mp_device_free(a), 1);
    ck_assert_int_eq(mp_cuda_mem_get_info(&after, &total), CUDA_SUCCESS);
    ck_assert_uint_eq(after, before); /* cached: free for the program */
    ck_assert_uint_eq(total, (size_t)1 << 30);
}
END_TEST

START_TEST(mem_get_info_raw_on_request)
{
    setenv("MEMPOOL_DEVICE_MEMINFO", "raw", 1);
    start();
    fk.set_capacity(0, (size_t)1 << 30);
    size_t before = 0, total = 0, raw = 0;
    ck_assert_int_eq(mp_cuda_mem_get_info(&before, &total), CUDA_SUCCESS);
    CUdeviceptr a = 0;
    ck_assert_int_eq(mp_device_alloc(&a, (size_t)256 << 20), CUDA_SUCCESS);
    ck_assert_int_eq(mp_device_free(a), 1);
    ck_assert_int_eq(mp_cuda_mem_get_info(&raw, &total), CUDA_SUCCESS);
    ck_assert_uint_eq(raw, before - ((size_t)256 << 20)); /* the driver's view: the cache is used */
}
END_TEST

/* A kernel on a non-blocking stream writes A; A is freed, the stream
 * destroyed (its work keeps running), and A must not come back before the
 * kernel is done. */
START_TEST(destroyed_stream_work_is_waited_for)
{
    setenv("MEMPOOL_DEVICE_FENCE_BATCH", "1", 1);
    start();
    CUstream s;
    ck_assert_int_eq(fk.stream_create(&s, CU_STREAM_NON_BLOCKING), CUDA_SUCCESS);
    mp_ctx_stream_created((mp_cu_stream)s, CU_STREAM_NON_BLOCKING); /* as the hooks do */
    CUdeviceptr a = 0, b = 0;
    ck_assert_int_eq(mp_device_alloc(&a, 128 << 10), CUDA_SUCCESS);
    ck_assert_int_eq(fk.launch(s, a, 0x11, 128 << 10, 150000), CUDA_SUCCESS);
    ck_assert_int_eq(mp_device_free(a), 1);
    mp_ctx_stream_destroying((mp_cu_stream)s);
    ck_assert_int_eq(fk.stream_destroy(s), CUDA_SUCCESS);
    ck_assert_int_eq(mp_device_alloc(&b, 128 << 10), CUDA_SUCCESS);
    memset((void *)(uintptr_t)b, 0x22, 128 << 10);
    usleep(250000);
    const unsigned char *q = (const unsigned char *)(uintptr_t)b;
    for (size_t i = 0; i < (128 << 10); i++)
        ck_assert_uint_eq(q[i], 0x22);
}
END_TEST

/* A reset of the primary context leaves a created context's pool alone:
 * its cached blocks stay reusable, a free of its live block stays ours. */
START_TEST(primary_reset_spares_created_contexts)
{
    setenv("MEMPOOL_DEVICE_FENCE_BATCH", "1", 1);
    start();
    CUdeviceptr p = 0, q = 0, r = 0;
    ck_assert_int_eq(mp_device_alloc(&p, 4096), CUDA_SUCCESS); /* the primary context's pool */
    CUcontext c;
    ck_assert_int_eq(fk.ctx_create(&c, 0, 0), CUDA_SUCCESS); /* pushed: current */
    ck_assert_int_eq(mp_device_alloc(&q, 4096), CUDA_SUCCESS);
    ck_assert_int_eq(mp_device_alloc(&r, 4096), CUDA_SUCCESS);
    ck_assert_int_eq(mp_device_free(r), 1);
    ck_assert_int_eq(fk.primary_reset(0), CUDA_SUCCESS);
    mp_device_drop(0); /* as the reset hook does */
    ck_assert_int_eq(mp_device_free(q), 1);  /* still the created context's block */
    CUdeviceptr again = 0;
    ck_assert_int_eq(mp_device_alloc(&again, 4096), CUDA_SUCCESS);
    ck_assert(again == q || again == r);     /* its cache survived */
    ck_assert_int_eq(mp_device_free(p), 0);  /* the primary's block died with it: the driver's */
    ck_assert_int_eq(fk.ctx_destroy(c), CUDA_SUCCESS);
}
END_TEST

static _Atomic int stop_workers;
static _Atomic unsigned long twice, failures;

static void *pinned_worker(void *arg)
{
    CUcontext ctx = arg;
    fk.set_current(ctx);
    enum { HELD = 8 };
    void *held[HELD] = {0};
    unsigned seed = 1;
    while (!atomic_load(&stop_workers)) {
        int i = (int)(rand_r(&seed) % HELD);
        if (held[i]) {
            if (mp_pinned_free(held[i]) != 1)
                atomic_fetch_add(&failures, 1);
            held[i] = NULL;
            continue;
        }
        void *p = NULL;
        if (mp_pinned_alloc(&p, 4096, 0) != CUDA_SUCCESS) {
            atomic_fetch_add(&failures, 1);
            continue;
        }
        for (int j = 0; j < HELD; j++)
            if (held[j] == p)
                atomic_fetch_add(&twice, 1);
        held[i] = p;
    }
    for (int i = 0; i < HELD; i++)
        if (held[i])
            mp_pinned_free(held[i]);
    return NULL;
}

/* Contexts created and destroyed on device 1 while two threads churn
 * pinned memory in device 0's primary context: no block is handed out
 * while held, no free fails. */
START_TEST(context_drop_races_pinned_users)
{
    setenv("MEMPOOL_DEVICE_FENCE_BATCH", "1", 1);
    start();
    CUcontext prim;
    ck_assert_int_eq(fk.retain(&prim, 0), CUDA_SUCCESS);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&t[i], NULL, pinned_worker, prim);
    for (int i = 0; i < 300; i++) {
        CUcontext c;
        ck_assert_int_eq(fk.ctx_create(&c, 0, 1), CUDA_SUCCESS);
        void *p = NULL; /* a pinned block of the doomed context (a class the workers do not use:
                         * a miss, made in that context, since earlier ones died with theirs) */
        ck_assert_int_eq(mp_pinned_alloc(&p, 1 << 20, 0), CUDA_SUCCESS);
        ck_assert_int_eq(fk.ctx_destroy(c), CUDA_SUCCESS);
        mp_device_drop_context((mp_cu_context)c); /* as the destroy hook does */
        ck_assert_int_eq(mp_pinned_free(p), 0); /* died with its context: the driver's */
        fk.set_current(prim);
    }
    atomic_store(&stop_workers, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    ck_assert_uint_eq(atomic_load(&twice), 0);
    ck_assert_uint_eq(atomic_load(&failures), 0);
}
END_TEST

/* Released on the per-thread stream by one thread: another thread's
 * per-thread stream is another stream, so the block needs its event. */
static mp_cu_ptr released_block;

static void *acquire_per_thread(void *arg)
{
    int *idx = arg;
    CUcontext ctx;
    fk.retain(&ctx, 0);
    fk.set_current(ctx);
    mp_cu_ptr p = 0;
    ck_assert_int_eq(mp_dpool_alloc(*idx, &p, 4096, (mp_cu_stream)CU_STREAM_PER_THREAD, true), CUDA_SUCCESS);
    ck_assert_uint_ne(p, released_block);
    return NULL;
}

START_TEST(per_thread_stream_is_no_same_stream)
{
    start();
    mp_dpool_cfg_t cfg = {.ordinal = 0, .scheme = -1, .numa = -1};
    fk.retain((CUcontext *)&cfg.ctx, 0);
    int idx = mp_dpool_open(&cfg);
    ck_assert_int_ge(idx, 0);
    mp_cu_ptr a = 0;
    ck_assert_int_eq(mp_dpool_alloc(idx, &a, 4096, (mp_cu_stream)CU_STREAM_PER_THREAD, true), CUDA_SUCCESS);
    ck_assert_int_eq(fk.launch(CU_STREAM_PER_THREAD, a, 0x11, 4096, 300000), CUDA_SUCCESS);
    ck_assert_int_eq(mp_dpool_free(idx, a, (mp_cu_stream)CU_STREAM_PER_THREAD, true), 0);
    released_block = a;
    pthread_t t;
    pthread_create(&t, NULL, acquire_per_thread, &idx);
    pthread_join(t, NULL);
}
END_TEST

/* An API pool caches 40 MiB of a 64 MiB device, which cuMemGetInfo counts
 * as free: a 48 MiB allocation of the context pool gets it back. */
START_TEST(oom_releases_every_pool_of_the_device)
{
    start();
    fk.set_capacity(0, (size_t)64 << 20);
    mp_dpool_cfg_t cfg = {.ordinal = 0, .scheme = -1, .numa = -1};
    fk.retain((CUcontext *)&cfg.ctx, 0);
    int idx = mp_dpool_open(&cfg);
    ck_assert_int_ge(idx, 0);
    mp_cu_ptr a = 0, d = 0;
    ck_assert_int_eq(mp_dpool_alloc(idx, &a, (size_t)40 << 20, NULL, false), CUDA_SUCCESS);
    ck_assert_int_eq(mp_dpool_free(idx, a, NULL, false), 0);
    size_t free_b = 0, total = 0;
    ck_assert_int_eq(mp_cuda_mem_get_info(&free_b, &total), CUDA_SUCCESS);
    ck_assert_uint_eq(free_b, total);
    ck_assert_int_eq(mp_device_alloc(&d, (size_t)48 << 20), CUDA_SUCCESS);
    ck_assert_int_eq(mp_device_free(d), 1);
}
END_TEST

static Suite *fences_suite(void)
{
    Suite *s = suite_create("fences");
    TCase *tc = tcase_create("fences");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, steady_loop_amortises_fences);
    tcase_add_test(tc, batch_of_one_fences_every_reuse);
    tcase_add_test(tc, busy_device_costs_constant_queries);
    tcase_add_test(tc, foreign_free_is_one_lookup);
    tcase_add_test(tc, unpooled_allocation_gets_the_cache_on_oom);
    tcase_add_test(tc, mem_get_info_counts_the_cache_as_free);
    tcase_add_test(tc, mem_get_info_raw_on_request);
    tcase_add_test(tc, primary_reset_spares_created_contexts);
    tcase_add_test(tc, oom_releases_every_pool_of_the_device);
    tcase_add_test(tc, destroyed_stream_work_is_waited_for);
    suite_add_tcase(s, tc);
    /* Threads only (the sanitizer builds run it under TSan). */
    TCase *th = tcase_create("threads");
    tcase_set_timeout(th, 60);
    tcase_add_test(th, trim_holds_no_lock_across_driver_frees);
    tcase_add_test(th, context_drop_races_pinned_users);
    tcase_add_test(th, per_thread_stream_is_no_same_stream);
    suite_add_tcase(s, th);
    return s;
}

MP_CHECK_MAIN(fences_suite)
