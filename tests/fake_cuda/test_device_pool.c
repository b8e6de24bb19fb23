/* Device pools on the fake driver: hits after an idle free, no reuse while
 * a kernel that was running at free time still runs (legacy, blocking and
 * per-thread streams), OOM release-and-retry, limits, unpooled sizes, two
 * devices, foreign pointers. */
#include <cuda.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"
#include "cuda_driver.h"
#include "cuda_hooks.h"
#include "device_pool.h"
#include "fake_cuda/fake_cuda.h"

static struct {
    CUresult (*init)(unsigned);
    CUresult (*retain)(CUcontext *, CUdevice);
    CUresult (*set_current)(CUcontext);
    CUresult (*stream_create)(CUstream *, unsigned);
    CUresult (*launch)(CUstream, CUdeviceptr, int, size_t, unsigned);
    void (*counters)(fake_cuda_counters_t *);
    void (*set_capacity)(int, size_t);
    size_t (*used)(int);
} fk;

static void use_device(int d)
{
    CUcontext ctx;
    ck_assert_int_eq(fk.retain(&ctx, d), CUDA_SUCCESS);
    ck_assert_int_eq(fk.set_current(ctx), CUDA_SUCCESS);
}

static void start(void)
{
    setenv("MEMPOOL_HOST_RESERVE", "64G", 0);
    /* Byte-exact checks below assume one driver allocation per block; the
     * packing tests turn segments on. */
    setenv("MEMPOOL_DEVICE_PACK_MAX_SIZE", "0", 0);
    /* Reuse checks below expect the freed block at the next allocation: a
     * fence at every reuse; the batching cases set their own. */
    setenv("MEMPOOL_DEVICE_FENCE_BATCH", "1", 0);
    ck_assert_int_eq(mp_init(), MP_STATE_READY);
    /* global: the interposed functions find the real ones with RTLD_NEXT */
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    ck_assert_ptr_nonnull(h);
    *(void **)&fk.init = dlsym(h, "cuInit");
    *(void **)&fk.retain = dlsym(h, "cuDevicePrimaryCtxRetain");
    *(void **)&fk.set_current = dlsym(h, "cuCtxSetCurrent");
    *(void **)&fk.stream_create = dlsym(h, "cuStreamCreate");
    *(void **)&fk.launch = dlsym(h, "fakecuLaunchFill");
    *(void **)&fk.counters = dlsym(h, "fakecuCounters");
    *(void **)&fk.set_capacity = dlsym(h, "fakecuSetCapacity");
    *(void **)&fk.used = dlsym(h, "fakecuUsed");
    ck_assert_ptr_nonnull(fk.used);
    fk.init(0);
    use_device(0);
}

static fake_cuda_counters_t counters(void)
{
    fake_cuda_counters_t c;
    fk.counters(&c);
    return c;
}

/* Stats of the (primary context's) pool of device dev. */
static mp_device_stats_t stats(int dev)
{
    mp_device_stats_t s;
    for (int slot = 0; slot < MP_DEV_MAX; slot++) {
        mp_device_stats(slot, &s);
        if (s.device == dev)
            return s;
    }
    memset(&s, 0, sizeof(s));
    return s;
}

START_TEST(class_sizes)
{
    size_t cs;
    ck_assert_int_eq(mp_device_class_of(1, &cs), 0);
    ck_assert_uint_eq(cs, 512);
    ck_assert_int_eq(mp_device_class_of(513, &cs), 1);
    ck_assert_uint_eq(cs, 640);
    ck_assert_int_eq(mp_device_class_of(1024, &cs), 4);
    ck_assert_uint_eq(cs, 1024);
    int prev = 0;
    for (size_t s = 1; s < ((size_t)1 << 34); s = s * 17 / 16 + 1) {
        int c = mp_device_class_of(s, &cs);
        ck_assert_uint_ge(cs, s);
        ck_assert(s <= 512 || (cs - s) * 4 <= s); /* waste < 25% */
        ck_assert_int_ge(c, prev);
        ck_assert_int_lt(c, MP_DEV_CLASSES);
        prev = c;
    }
}
END_TEST

/* The driver table holds each entry point with the signature it is called
 * through, not the driver version's: at 13000 "cuCtxGetDevice" and
 * "cuCtxSynchronize" take a context (the fake hands out their _v2, as
 * CUDA 13.0 does). */
START_TEST(driver_entry_points_have_the_called_signatures)
{
    start();
    ck_assert(mp_cuda_load());
    ck_assert_int_eq(mp_cuda.version, 13000);
    void *h = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_NOLOAD);
    ck_assert_ptr_nonnull(h);
    ck_assert_ptr_eq((void *)mp_cuda.ctx_get_device, dlsym(h, "cuCtxGetDevice"));
    ck_assert_ptr_eq((void *)mp_cuda.ctx_synchronize, dlsym(h, "cuCtxSynchronize"));
    ck_assert_ptr_eq((void *)mp_cuda.mem_alloc, dlsym(h, "cuMemAlloc_v2"));
    ck_assert_ptr_eq((void *)mp_cuda.primary_release, dlsym(h, "cuDevicePrimaryCtxRelease_v2"));
    int dev = -1;
    ck_assert_int_eq(mp_cuda.ctx_get_device(&dev), CUDA_SUCCESS);
    ck_assert_int_eq(dev, 0);
    dlclose(h);
}
END_TEST

START_TEST(idle_free_then_alloc_is_a_hit)
{
    start();
    CUdeviceptr a = 0, b = 0;
    ck_assert_int_eq(mp_device_alloc(&a, 1000), CUDA_SUCCESS);
    ck_assert_int_eq(mp_device_free(a), 1);
    ck_assert_int_eq(mp_device_alloc(&b, 900), CUDA_SUCCESS); /* same 1 KiB class */
    ck_assert_uint_eq(a, b);
    ck_assert_uint_eq(counters().mem_alloc, 1);
    ck_assert_uint_eq(counters().mem_free, 0);
    mp_device_stats_t s = stats(0);
    ck_assert_uint_eq(s.hits, 1);
    ck_assert_uint_eq(s.misses, 1);
    ck_assert_uint_eq(s.fences_recorded, 1);
    ck_assert_int_eq(s.in_use, 1024);
    ck_assert_int_eq(s.reserved, 1024);
}
END_TEST

/* A kernel writes A for 80 ms; A is freed at once: the next allocation must
 * not get A until the kernel is done, or the kernel would overwrite it. */
static void reuse_waits_on(CUstream stream)
{
    CUdeviceptr a = 0, b = 0, c = 0;
    ck_assert_int_eq(mp_device_alloc(&a, 4096), CUDA_SUCCESS);
    ck_assert_int_eq(fk.launch(stream, a, 0x11, 4096, 80000), CUDA_SUCCESS);
    ck_assert_int_eq(mp_device_free(a), 1);
    ck_assert_int_eq(mp_device_alloc(&b, 4096), CUDA_SUCCESS);
    ck_assert_uint_ne(a, b);
    memset((void *)(uintptr_t)b, 0x22, 4096);
    usleep(150000);
    ck_assert_uint_eq(((unsigned char *)(uintptr_t)b)[0], 0x22); /* untouched */
    ck_assert_uint_eq(((unsigned char *)(uintptr_t)a)[4095], 0x11);
    ck_assert_int_eq(mp_device_alloc(&c, 4096), CUDA_SUCCESS);
    ck_assert_uint_eq(c, a); /* fence done: reused */
    ck_assert_uint_ge(stats(0).fences_pending, 1);
}

START_TEST(reuse_waits_for_legacy_stream)
{
    start();
    reuse_waits_on(NULL);
}
END_TEST

START_TEST(reuse_waits_for_nonblocking_stream)
{
    start();
    CUstream s;
    ck_assert_int_eq(fk.stream_create(&s, CU_STREAM_NON_BLOCKING), CUDA_SUCCESS);
    mp_ctx_stream_created((mp_cu_stream)s, CU_STREAM_NON_BLOCKING); /* as the hooks do */
    reuse_waits_on(s);
    ck_assert_uint_ge(stats(0).fences_recorded, 1);
}
END_TEST

START_TEST(reuse_waits_for_blocking_stream)
{
    start();
    CUstream s;
    ck_assert_int_eq(fk.stream_create(&s, 0), CUDA_SUCCESS);
    reuse_waits_on(s);
}
END_TEST

START_TEST(reuse_waits_for_per_thread_stream)
{
    start();
    reuse_waits_on(CU_STREAM_PER_THREAD);
}
END_TEST

START_TEST(oom_releases_cache_and_retries)
{
    start();
    fk.set_capacity(0, 1 << 20);
    CUdeviceptr a = 0, b = 0;
    ck_assert_int_eq(mp_device_alloc(&a, 600 << 10), CUDA_SUCCESS); /* class 640 KiB */
    ck_assert_int_eq(mp_device_free(a), 1);                          /* cached */
    ck_assert_int_eq(mp_device_alloc(&b, 700 << 10), CUDA_SUCCESS); /* 768 KiB: OOM, release, retry */
    mp_device_stats_t s = stats(0);
    ck_assert_uint_eq(s.oom_retries, 1);
    ck_assert_uint_eq(s.ooms, 0);
    ck_assert_uint_eq(s.trims, 1);
    ck_assert_uint_eq(fk.used(0), 768 << 10);
    CUdeviceptr c = 0;
    ck_assert_int_eq(mp_device_alloc(&c, 2 << 20), CUDA_ERROR_OUT_OF_MEMORY);
    ck_assert_uint_eq(stats(0).ooms, 1);
}
END_TEST

START_TEST(cache_limit_and_unpooled)
{
    setenv("MEMPOOL_DEVICE_CACHE_LIMIT", "4096", 1);
    setenv("MEMPOOL_DEVICE_MAX_BLOCK_SIZE", "1M", 1);
    start();
    CUdeviceptr a = 0, b = 0, big = 0;
    ck_assert_int_eq(mp_device_alloc(&a, 4096), CUDA_SUCCESS);
    ck_assert_int_eq(mp_device_alloc(&b, 4096), CUDA_SUCCESS);
    ck_assert_int_eq(mp_device_free(a), 1);
    ck_assert_int_eq(mp_device_free(b), 1); /* over the limit: cache released */
    ck_assert_uint_eq(stats(0).trims, 2);
    ck_assert_uint_eq(fk.used(0), 0);
    ck_assert_int_eq(mp_device_alloc(&big, 2 << 20), CUDA_SUCCESS);
    ck_assert_uint_eq(stats(0).unpooled, 1);
    ck_assert_int_eq(mp_device_free(big), 1);
    ck_assert_uint_eq(fk.used(0), 0); /* freed at once */
}
END_TEST

START_TEST(two_devices_and_foreign_pointers)
{
    start();
    use_device(1);
    CUdeviceptr a = 0;
    ck_assert_int_eq(mp_device_alloc(&a, 5000), CUDA_SUCCESS);
    ck_assert_uint_eq(fk.used(1), 5120);
    ck_assert_uint_eq(fk.used(0), 0);
    ck_assert_uint_eq(stats(1).misses, 1);
    ck_assert_uint_eq(stats(0).misses, 0);
    use_device(0);
    ck_assert_int_eq(mp_device_free(a), 1); /* freed from another device's context */
    ck_assert_int_eq(stats(1).in_use, 0);
    ck_assert_int_eq(mp_device_free((CUdeviceptr)0x1234), 0);
    ck_assert_int_eq(mp_device_free(0), 1);
    ck_assert_uint_eq(mp_device_trim(1), 5120);
    ck_assert_uint_eq(fk.used(1), 0);
}
END_TEST

START_TEST(reset_forgets_the_pool)
{
    start();
    CUdeviceptr a = 0, b = 0, c = 0;
    ck_assert_int_eq(mp_device_alloc(&a, 4096), CUDA_SUCCESS);
    ck_assert_int_eq(mp_device_alloc(&b, 4096), CUDA_SUCCESS);
    ck_assert_int_eq(mp_device_free(a), 1); /* cached */
    CUresult (*reset)(CUdevice);
    *(void **)&reset = dlsym(dlopen("libcuda.so.1", RTLD_NOW), "cuDevicePrimaryCtxReset_v2");
    ck_assert_int_eq(reset(0), CUDA_SUCCESS); /* the driver frees a and b */
    mp_device_drop(0);
    ck_assert_uint_eq(stats(0).drops, 1);
    ck_assert_int_eq(mp_device_free(b), 0); /* stale: now the driver's business */
    uint64_t before = counters().mem_alloc;
    ck_assert_int_eq(mp_device_alloc(&c, 4096), CUDA_SUCCESS);
    ck_assert_uint_eq(counters().mem_alloc, before + 1); /* not a's old memory */
    ck_assert_uint_eq(fk.used(0), 4096);
}
END_TEST

START_TEST(forked_child_starts_empty)
{
    start();
    CUdeviceptr a = 0;
    ck_assert_int_eq(mp_device_alloc(&a, 4096), CUDA_SUCCESS);
    ck_assert_int_eq(mp_device_free(a), 1); /* cached in the parent */
    pid_t pid = fork();
    if (pid == 0) {
        CUdeviceptr b = 0;
        int ok = mp_device_alloc(&b, 4096) == CUDA_SUCCESS && b != a && stats(0).requests == 1
                 && mp_device_free(a) == 0;
        _exit(ok ? 0 : 1);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CUdeviceptr c = 0;
    ck_assert_int_eq(mp_device_alloc(&c, 4096), CUDA_SUCCESS);
    ck_assert_uint_eq(c, a); /* the parent still reuses its own */
}
END_TEST

START_TEST(pinned_flags_never_mix)
{
    start();
    void *m = NULL, *u = NULL, *m2 = NULL;
    ck_assert_int_eq(mp_pinned_alloc(&m, 5000, CU_MEMHOSTALLOC_DEVICEMAP), CUDA_SUCCESS);
    ck_assert_int_eq(mp_pinned_free(m), 1);
    ck_assert_int_eq(mp_pinned_alloc(&u, 5000, 0), CUDA_SUCCESS); /* unmapped: not m */
    ck_assert_ptr_ne(u, m);
    ck_assert_int_eq(mp_pinned_alloc(&m2, 5000, CU_MEMHOSTALLOC_DEVICEMAP), CUDA_SUCCESS);
    ck_assert_ptr_eq(m2, m); /* same flags: reused */
    CUresult (*devptr)(CUdeviceptr *, void *, unsigned);
    *(void **)&devptr = dlsym(dlopen("libcuda.so.1", RTLD_NOW), "cuMemHostGetDevicePointer_v2");
    CUdeviceptr d = 0;
    ck_assert_int_eq(devptr(&d, m2, 0), CUDA_SUCCESS); /* still a mapped allocation */
    ck_assert_int_eq(devptr(&d, u, 0), CUDA_ERROR_INVALID_VALUE);
    ck_assert_uint_eq(counters().host_alloc, 2);
    mp_device_stats_t st;
    mp_pinned_stats(CU_MEMHOSTALLOC_DEVICEMAP, &st);
    ck_assert_uint_eq(st.hits, 1);
    ck_assert_int_eq(mp_device_free((CUdeviceptr)(uintptr_t)u), 0); /* pinned is not device memory */
    ck_assert_int_eq(mp_pinned_free(u), 1);
}
END_TEST

START_TEST(pinned_reuse_waits_for_copies)
{
    start();
    void *a = NULL, *b = NULL;
    ck_assert_int_eq(mp_pinned_alloc(&a, 8192, 0), CUDA_SUCCESS);
    /* an async "copy" into the pinned buffer, still running at free time */
    ck_assert_int_eq(fk.launch(NULL, (CUdeviceptr)(uintptr_t)a, 0x77, 8192, 60000), CUDA_SUCCESS);
    ck_assert_int_eq(mp_pinned_free(a), 1);
    ck_assert_int_eq(mp_pinned_alloc(&b, 8192, 0), CUDA_SUCCESS);
    ck_assert_ptr_ne(a, b);
}
END_TEST

START_TEST(cache_limit_as_percentage)
{
    setenv("MEMPOOL_DEVICE_CACHE_LIMIT", "1%", 1);
    start();
    fk.set_capacity(0, 1 << 20); /* 1% = 10485 bytes */
    CUdeviceptr a[4];
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(mp_device_alloc(&a[i], 4096), CUDA_SUCCESS);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(mp_device_free(a[i]), 1);
    ck_assert_uint_eq(stats(0).trims, 0); /* 8 KiB cached: under the limit */
    ck_assert_int_eq(mp_device_free(a[2]), 1);
    ck_assert_uint_eq(stats(0).trims, 3); /* 12 KiB: over, released */
}
END_TEST

START_TEST(fences_none_reuses_at_once)
{
    setenv("MEMPOOL_DEVICE_FENCES", "none", 1);
    start();
    CUdeviceptr a = 0, b = 0;
    ck_assert_int_eq(mp_device_alloc(&a, 4096), CUDA_SUCCESS);
    ck_assert_int_eq(fk.launch(NULL, a, 0x11, 4096, 50000), CUDA_SUCCESS);
    ck_assert_int_eq(mp_device_free(a), 1);
    ck_assert_int_eq(mp_device_alloc(&b, 4096), CUDA_SUCCESS);
    ck_assert_uint_eq(a, b); /* the program said it needs no fence */
    ck_assert_uint_eq(stats(0).fences_recorded, 0);
    ck_assert_uint_eq(counters().event_record, 0);
}
END_TEST

static void *fake_fn(const char *name)
{
    void *f = dlsym(dlopen("libcuda.so.1", RTLD_NOW), name);
    ck_assert_ptr_nonnull(f);
    return f;
}

/* Small blocks share 2 MiB segments: one cuMemAlloc for many requests;
 * queries still answer with the program's block. */
/* cudaMalloc guarantees 256-byte alignment: packed blocks of classes that
 * are not multiples of 256 (640, 896, 1280 ...) keep it too. */
START_TEST(packed_blocks_are_256_aligned)
{
    setenv("MEMPOOL_DEVICE_PACK_MAX_SIZE", "256K", 1);
    start();
    for (size_t size = 513; size <= 8192; size += 127)
        for (int i = 0; i < 5; i++) {
            CUdeviceptr p = 0;
            ck_assert_int_eq(mp_device_alloc(&p, size), CUDA_SUCCESS);
            if (p % 256 != 0)
                ck_abort_msg("%zu-byte block %d at %#llx", size, i, (unsigned long long)p);
        }
}
END_TEST

START_TEST(small_blocks_share_a_segment)
{
    setenv("MEMPOOL_DEVICE_PACK_MAX_SIZE", "256K", 1);
    start();
    CUdeviceptr p[100];
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(mp_device_alloc(&p[i], 1000), CUDA_SUCCESS);
    ck_assert_uint_eq(counters().mem_alloc, 1);
    for (int i = 1; i < 100; i++)
        ck_assert_uint_eq(p[i], p[0] + (CUdeviceptr)i * 1024);
    mp_device_stats_t s = stats(0);
    ck_assert_int_eq(s.segments, 1);
    ck_assert_int_eq(s.reserved, 2 << 20);
    ck_assert_int_eq(s.in_use, 100 * 1024);

    CUdeviceptr base = 0;
    size_t size = 0;
    ck_assert_int_eq(mp_cuda_address_range(&base, &size, p[5]), CUDA_SUCCESS);
    ck_assert_uint_eq(base, p[5]);
    ck_assert_uint_eq(size, 1000);
    ck_assert_int_eq(mp_cuda_address_range(&base, &size, p[7] + 999), CUDA_SUCCESS); /* interior */
    ck_assert_uint_eq(base, p[7]);
    ck_assert_uint_eq(size, 1000);
    ck_assert_int_eq(mp_device_free(p[9]), 1);
    ck_assert_int_eq(mp_cuda_address_range(&base, &size, p[9] + 8), CUDA_ERROR_NOT_FOUND);
    ck_assert_int_eq(mp_cuda_address_range(&base, &size, p[99] + 1024 * 3), CUDA_ERROR_NOT_FOUND);

    /* A segment goes back to the driver only when none of its blocks is in use. */
    for (int i = 0; i < 99; i++)
        if (i != 9)
            ck_assert_int_eq(mp_device_free(p[i]), 1);
    ck_assert_uint_eq(mp_device_trim(0), 0);
    ck_assert_uint_eq(fk.used(0), 2 << 20);
    ck_assert_int_eq(mp_device_free(p[99]), 1);
    ck_assert_uint_eq(mp_device_trim(0), 2 << 20);
    ck_assert_uint_eq(fk.used(0), 0);
    s = stats(0);
    ck_assert_int_eq(s.segments, 0);
    ck_assert_int_eq(s.reserved, 0);
    ck_assert_int_eq(s.cached, 0);
    ck_assert_uint_eq(counters().mem_free, 1);
}
END_TEST

/* Packed blocks of a freed segment are reused; large classes stay whole
 * allocations, and every segment is at most MEMPOOL_DEVICE_SEGMENT_SIZE. */
START_TEST(segment_size_and_pack_limit)
{
    setenv("MEMPOOL_DEVICE_PACK_MAX_SIZE", "64K", 1);
    setenv("MEMPOOL_DEVICE_SEGMENT_SIZE", "256K", 1);
    start();
    CUdeviceptr a[5], big = 0;
    for (int i = 0; i < 5; i++) /* 64 KiB blocks: 4 per segment */
        ck_assert_int_eq(mp_device_alloc(&a[i], 64 << 10), CUDA_SUCCESS);
    ck_assert_uint_eq(counters().mem_alloc, 2);
    ck_assert_uint_eq(fk.used(0), 512 << 10);
    ck_assert_int_eq(mp_device_alloc(&big, 80 << 10), CUDA_SUCCESS); /* class 80 KiB: its own */
    ck_assert_uint_eq(fk.used(0), (512 + 80) << 10);
    ck_assert_int_eq(stats(0).segments, 3);
    ck_assert_int_eq(stats(0).segments_peak, 3);
}
END_TEST

/* An exported block opens to the same bytes and is never handed out again
 * (another process may map it); a packed block cannot be exported. */
START_TEST(ipc_exports_whole_blocks_only)
{
    setenv("MEMPOOL_DEVICE_PACK_MAX_SIZE", "256K", 1);
    start();
    CUresult (*open_h)(CUdeviceptr *, CUipcMemHandle, unsigned) = fake_fn("cuIpcOpenMemHandle_v2");
    CUdeviceptr a = 0, small = 0, opened = 0, b = 0;
    ck_assert_int_eq(mp_device_alloc(&a, 1 << 20), CUDA_SUCCESS);
    memset((void *)(uintptr_t)a, 0x5a, 1 << 20);
    CUipcMemHandle h;
    ck_assert_int_eq(mp_cuda_ipc_get(&h, a), CUDA_SUCCESS);
    ck_assert_int_eq(open_h(&opened, h, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS), CUDA_SUCCESS);
    ck_assert_uint_eq(opened, a);
    ck_assert_uint_eq(((unsigned char *)(uintptr_t)opened)[(1 << 20) - 1], 0x5a);
    ck_assert_uint_eq(stats(0).ipc_exports, 1);
    uint64_t frees = counters().mem_free;
    ck_assert_int_eq(mp_device_free(a), 1);
    ck_assert_uint_eq(counters().mem_free, frees + 1); /* not cached */
    ck_assert_int_eq(mp_device_alloc(&b, 1 << 20), CUDA_SUCCESS);
    ck_assert_uint_eq(stats(0).hits, 0);

    ck_assert_int_eq(mp_device_alloc(&small, 4096), CUDA_SUCCESS);
    ck_assert_int_eq(mp_cuda_ipc_get(&h, small), CUDA_ERROR_INVALID_VALUE);
    ck_assert_uint_eq(counters().ipc_get, 1); /* refused before the driver */
}
END_TEST

/* While a stream is captured: no event call (illegal in global capture
 * mode), allocations pass through, frees wait; afterwards reuse resumes. */
START_TEST(stream_capture_passes_through)
{
    start();
    CUresult (*begin)(CUstream, CUstreamCaptureMode) = fake_fn("cuStreamBeginCapture_v2");
    CUresult (*end)(CUstream, CUgraph *) = fake_fn("cuStreamEndCapture");
    CUstream s;
    ck_assert_int_eq(fk.stream_create(&s, CU_STREAM_NON_BLOCKING), CUDA_SUCCESS);
    mp_ctx_stream_created((mp_cu_stream)s, CU_STREAM_NON_BLOCKING);
    CUdeviceptr a = 0, b = 0, c = 0;
    ck_assert_int_eq(mp_device_alloc(&a, 4096), CUDA_SUCCESS);
    ck_assert_int_eq(mp_device_alloc(&b, 4096), CUDA_SUCCESS);
    ck_assert_int_eq(mp_device_free(a), 1);
    mp_cuda_capture_begin(); /* as the hooks do: counted before the real call */
    ck_assert_int_eq(mp_cuda_capture_begun(begin(s, CU_STREAM_CAPTURE_MODE_GLOBAL)), CUDA_SUCCESS);
    ck_assert_int_eq(mp_device_alloc(&c, 4096), CUDA_ERROR_NOT_INITIALIZED); /* caller passes through */
    ck_assert_int_eq(mp_device_free(b), 1);
    void *pin = NULL;
    ck_assert_int_eq(mp_pinned_alloc(&pin, 4096, 0), CUDA_ERROR_NOT_INITIALIZED);
    CUgraph g = NULL;
    ck_assert_int_eq(mp_cuda_capture_ended(end(s, &g)), CUDA_SUCCESS);
    ck_assert_uint_eq(counters().capture_violations, 0);
    ck_assert_uint_eq(stats(0).captured, 1);
    ck_assert_int_eq(mp_device_alloc(&c, 4096), CUDA_SUCCESS);
    ck_assert(c == a || c == b); /* reuse again */
    ck_assert_uint_eq(stats(0).hits, 1);
    ck_assert_int_eq(mp_cuda_capture_ended(end(s, &g)), CUDA_ERROR_ILLEGAL_STATE); /* not capturing */
    ck_assert_int_eq(mp_captures, 0);
}
END_TEST

/* cudaFreeAsync / cuMemFreeAsync of a pooled block: back to the pool, never
 * to the driver (which would free memory the pool still lists). */
START_TEST(async_free_of_a_pooled_block)
{
    start();
    CUdeviceptr a = 0, b = 0;
    ck_assert_int_eq(mp_device_alloc(&a, 8192), CUDA_SUCCESS);
    ck_assert_int_eq(mp_cuda_free_async_ours(a), 1);
    ck_assert_int_eq(mp_cuda_free_async_ours((CUdeviceptr)0x4321), 0);
    ck_assert_int_eq(mp_cuda_free_async_ours(0), 0);
    ck_assert_int_eq(mp_device_alloc(&b, 8192), CUDA_SUCCESS);
    ck_assert_uint_eq(a, b);
    ck_assert_uint_eq(counters().mem_free, 0);
}
END_TEST

/* A second free of a block the pool holds is refused (never forwarded: the
 * driver would free memory the pool still hands out), in every mode; the
 * block stays whole and is handed out once.  Pinned blocks the same. */
START_TEST(second_free_is_refused)
{
    start();
    CUdeviceptr a = 0, b = 0, c = 0;
    ck_assert_int_eq(mp_device_alloc(&a, 8192), CUDA_SUCCESS);
    ck_assert_int_eq(mp_device_free(a), 1);
    ck_assert_int_eq(mp_device_free(a), -1);               /* pending fence */
    ck_assert_int_eq(mp_cuda_free_async_ours(a), -1);      /* stream-ordered, too */
    ck_assert_int_eq(mp_device_alloc(&b, 8192), CUDA_SUCCESS);
    ck_assert_uint_eq(b, a);
    ck_assert_int_eq(mp_device_alloc(&c, 8192), CUDA_SUCCESS);
    ck_assert_uint_ne(c, a); /* handed out once only */
    ck_assert_int_eq(mp_device_free(b), 1);
    ck_assert_int_eq(mp_device_alloc(&b, 8192), CUDA_SUCCESS); /* fence done: ready list */
    ck_assert_int_eq(mp_device_free(b), 1);
    ck_assert_int_eq(mp_device_free(b), -1);
    ck_assert_uint_eq(counters().mem_free, 0);
    ck_assert_uint_eq(counters().invalid_free, 0);
    ck_assert_uint_eq(mp_debug_count(MP_DEBUG_DEVICE_DOUBLE_FREE), 3);
    void *h = NULL;
    ck_assert_int_eq(mp_pinned_alloc(&h, 4096, 0), CUDA_SUCCESS);
    ck_assert_int_eq(mp_pinned_free(h), 1);
    ck_assert_int_eq(mp_pinned_free(h), -1);
    ck_assert_uint_eq(counters().host_free, 0);
    /* A pointer nobody holds still goes to the driver. */
    ck_assert_int_eq(mp_device_free((CUdeviceptr)0x4321), 0);
}
END_TEST


/* Memory of one context is not used by another on the same device; the
 * destruction of a context drops its pool only. */
START_TEST(pools_are_per_context)
{
    start();
    CUresult (*create)(CUcontext *, unsigned, CUdevice) = fake_fn("cuCtxCreate_v2");
    CUresult (*destroy)(CUcontext) = fake_fn("cuCtxDestroy_v2");
    CUdeviceptr a = 0, b = 0, c = 0;
    ck_assert_int_eq(mp_device_alloc(&a, 4096), CUDA_SUCCESS);
    ck_assert_int_eq(mp_device_free(a), 1);
    CUcontext mine;
    ck_assert_int_eq(create(&mine, 0, 0), CUDA_SUCCESS);
    ck_assert_int_eq(mp_device_alloc(&b, 4096), CUDA_SUCCESS);
    ck_assert_uint_ne(a, b);
    ck_assert_uint_eq(counters().mem_alloc, 2);
    mp_device_stats_t s;
    mp_device_stats(1, &s);
    ck_assert_int_eq(s.device, 0);
    ck_assert_uint_eq(s.misses, 1);
    ck_assert_int_eq(destroy(mine), CUDA_SUCCESS);
    mp_device_drop_context((mp_cu_context)mine);
    ck_assert_int_eq(mp_device_free(b), 0); /* gone with its context */
    use_device(0);
    ck_assert_int_eq(mp_device_alloc(&c, 4096), CUDA_SUCCESS);
    ck_assert_uint_eq(c, a); /* the primary context's pool is intact */
}
END_TEST

START_TEST(size_class_schemes)
{
    size_t cs;
    setenv("MEMPOOL_DEVICE_SIZE_CLASSES", "half", 1);
    ck_assert_int_eq(mp_init(), MP_STATE_READY);
    int c = mp_device_class_of(600, &cs);
    ck_assert_uint_eq(cs, 768);
    ck_assert_uint_eq(mp_device_class_size(c), 768);
    c = mp_device_class_of(800, &cs);
    ck_assert_uint_eq(cs, 1024);
    ck_assert_uint_eq(mp_device_class_size(c), 1024);
}
END_TEST

START_TEST(size_class_pow2)
{
    size_t cs;
    setenv("MEMPOOL_DEVICE_SIZE_CLASSES", "pow2", 1);
    ck_assert_int_eq(mp_init(), MP_STATE_READY);
    int c = mp_device_class_of(600, &cs);
    ck_assert_uint_eq(cs, 1024);
    ck_assert_uint_eq(mp_device_class_size(c), 1024);
    mp_device_class_of((3u << 20) + 1, &cs);
    ck_assert_uint_eq(cs, 4u << 20);
}
END_TEST

/* Threads allocating and freeing packed and whole blocks at once: no block
 * is ever handed to two holders (each writes its id and checks it before
 * freeing), and the books balance at the end. */
#define MT_THREADS 4
#define MT_ROUNDS 3000

static void *mt_worker(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg, seed = id * 7919u + 1;
    CUdeviceptr held[8] = {0};
    size_t sizes[8] = {0};
    use_device(0);
    for (int r = 0; r < MT_ROUNDS; r++) {
        int k = (int)(rand_r(&seed) % 8);
        if (held[k]) {
            unsigned char *m = (unsigned char *)(uintptr_t)held[k];
            if (m[0] != id || m[sizes[k] - 1] != id)
                return (void *)1;
            if (mp_device_free(held[k]) != 1)
                return (void *)2;
            held[k] = 0;
        } else {
            sizes[k] = 1 + rand_r(&seed) % (r % 5 == 0 ? (600u << 10) : 8192u);
            if (mp_device_alloc(&held[k], sizes[k]) != CUDA_SUCCESS)
                return (void *)3;
            unsigned char *m = (unsigned char *)(uintptr_t)held[k];
            m[0] = m[sizes[k] - 1] = (unsigned char)id;
        }
    }
    for (int k = 0; k < 8; k++)
        if (held[k] && mp_device_free(held[k]) != 1)
            return (void *)2;
    return NULL;
}

START_TEST(threads_never_share_a_block)
{
    setenv("MEMPOOL_DEVICE_PACK_MAX_SIZE", "256K", 1);
    start();
    pthread_t t[MT_THREADS];
    for (unsigned i = 0; i < MT_THREADS; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, mt_worker, (void *)(uintptr_t)(i + 1)), 0);
    for (int i = 0; i < MT_THREADS; i++) {
        void *rc = NULL;
        pthread_join(t[i], &rc);
        ck_assert_ptr_null(rc);
    }
    mp_device_stats_t s = stats(0);
    ck_assert_int_eq(s.in_use, 0);
    ck_assert_uint_eq(s.requests, s.releases);
    ck_assert_uint_eq(s.hits + s.misses, s.requests);
    mp_device_trim(0);
    s = stats(0);
    ck_assert_int_eq(s.reserved, 0);
    ck_assert_int_eq(s.segments, 0);
    ck_assert_uint_eq(fk.used(0), 0);
}
END_TEST

static Suite *device_suite(void)
{
    Suite *s = suite_create("device_pool");
    TCase *tc = tcase_create("pool");
    tcase_add_test(tc, class_sizes);
    tcase_add_test(tc, driver_entry_points_have_the_called_signatures);
    tcase_add_test(tc, idle_free_then_alloc_is_a_hit);
    tcase_add_test(tc, reuse_waits_for_legacy_stream);
    tcase_add_test(tc, reuse_waits_for_blocking_stream);
    tcase_add_test(tc, reuse_waits_for_per_thread_stream);
    tcase_add_test(tc, reuse_waits_for_nonblocking_stream);
    tcase_add_test(tc, oom_releases_cache_and_retries);
    tcase_add_test(tc, cache_limit_and_unpooled);
    tcase_add_test(tc, two_devices_and_foreign_pointers);
    tcase_add_test(tc, reset_forgets_the_pool);
    tcase_add_test(tc, forked_child_starts_empty);
    tcase_add_test(tc, pinned_flags_never_mix);
    tcase_add_test(tc, fences_none_reuses_at_once);
    tcase_add_test(tc, cache_limit_as_percentage);
    tcase_add_test(tc, pinned_reuse_waits_for_copies);
    tcase_add_test(tc, small_blocks_share_a_segment);
    tcase_add_test(tc, packed_blocks_are_256_aligned);
    tcase_add_test(tc, segment_size_and_pack_limit);
    tcase_add_test(tc, ipc_exports_whole_blocks_only);
    tcase_add_test(tc, stream_capture_passes_through);
    tcase_add_test(tc, async_free_of_a_pooled_block);
    tcase_add_test(tc, second_free_is_refused);
    tcase_add_test(tc, pools_are_per_context);
    tcase_add_test(tc, size_class_schemes);
    tcase_add_test(tc, size_class_pow2);
    suite_add_tcase(s, tc);
    /* Alone in its case so the TSan build can run just it: the others
     * read memory the fake's "kernels" write, ordered by time, not locks. */
    TCase *mt = tcase_create("threads");
    tcase_add_test(mt, threads_never_share_a_block);
    tcase_set_timeout(mt, 120);
    suite_add_tcase(s, mt);
    return s;
}

MP_CHECK_MAIN(device_suite)
