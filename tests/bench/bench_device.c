/*
 * Device and pinned allocation latency for scripts/bench device (not a
 * test).  Plain runtime API, so it builds against the fake cudart (CPU,
 * call counts only) and, with nvcc, against the real one.  Prints one line
 * per measurement: "<kind> <bytes> <ns per alloc+free pair>".
 *   malloc   cudaMalloc + cudaFree
 *   async    cudaMallocAsync + cudaFreeAsync on a stream, default pool with
 *            an unlimited release threshold (when the runtime has pools)
 *   host     cudaHostAlloc + cudaFreeHost
 * "bench_device calls STREAMS PAIRS BUSY_MS" instead runs one loop of
 * cudaMalloc+cudaFree of 1 MiB with STREAMS non-blocking streams alive
 * (behind BUSY_MS of queued device work on the fake) and prints
 * "calls <driver calls per pair> <ns per pair> <event queries per pair>
 * <cuCtxGetCurrent calls per pair>" from the fake driver's counters (zeros
 * on a real GPU; the first figure leaves cuCtxGetCurrent out).
 * "bench_device foreign CACHED PAIRS" prints "foreign <ns>": the best of 5
 * rounds of cudaMallocManaged+cudaFree pairs with CACHED freed 512-byte
 * blocks in the pools (a free of memory the shim did not make).
 */
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fake_cuda.h"


static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e9 + (double)t.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median of rounds of `reps` pairs, after one warm-up pair. */
#define MEASURE(label, bytes, reps, alloc_stmt, free_stmt)                   \
    do {                                                                     \
        double t_[9];                                                        \
        void *p_ = NULL;                                                     \
        alloc_stmt;                                                          \
        free_stmt;                                                           \
        for (int r_ = 0; r_ < 9; r_++) {                                     \
            double t0_ = now_ns();                                           \
            for (int i_ = 0; i_ < (reps); i_++) {                            \
                if (alloc_stmt != cudaSuccess) {                             \
                    printf("%s %zu failed\n", label, (size_t)(bytes));       \
                    return 1;                                                \
                }                                                            \
                free_stmt;                                                   \
            }                                                                \
            t_[r_] = (now_ns() - t0_) / (reps);                              \
        }                                                                    \
        qsort(t_, 9, sizeof(double), cmp);                                   \
        printf("%s %zu %.0f\n", label, (size_t)(bytes), t_[4]);              \
    } while (0)

/* The fake driver's counters (fake_cuda.h): every driver call, event
 * queries; zeros where the driver is real. */
static void fake_counts(uint64_t *calls, uint64_t *queries, uint64_t *get_current)
{
    void (*counters)(fake_cuda_counters_t *);
    *(void **)&counters = dlsym(RTLD_DEFAULT, "fakecuCounters");
    *calls = *queries = *get_current = 0;
    if (counters) {
        fake_cuda_counters_t c;
        memset(&c, 0, sizeof(c));
        counters(&c);
        *queries = c.event_query;
        *get_current = c.ctx_get_current;
        *calls = c.calls - c.ctx_get_current;
    }
}

static int calls_mode(int nstreams, int pairs, int busy_ms)
{
    if (cudaFree(NULL) != cudaSuccess) {
        puts("no CUDA device");
        return 2;
    }
    for (int i = 0; i < nstreams; i++) {
        cudaStream_t s;
        if (cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) != cudaSuccess)
            return 1;
    }
    const size_t n = busy_ms ? 256 << 10 : 1 << 20;
    void *p = NULL;
    for (int i = 0; i < 200; i++) { /* warm-up: the pools reach their steady state */
        if (cudaMalloc(&p, n) != cudaSuccess)
            return 1;
        cudaFree(p);
    }
    if (busy_ms) {
        cudaError_t (*fill)(cudaStream_t, void *, int, size_t, unsigned);
        *(void **)&fill = dlsym(RTLD_DEFAULT, "fakecudaLaunchFill");
        if (fill == NULL || fill(0, NULL, 0, 0, (unsigned)busy_ms * 1000u) != cudaSuccess) {
            puts("calls 0 0 0 0"); /* needs the fake's timed work */
            return 0;
        }
    }
    uint64_t c0, q0, g0, c1, q1, g1;
    fake_counts(&c0, &q0, &g0);
    double t0 = now_ns();
    for (int i = 0; i < pairs; i++) {
        if (cudaMalloc(&p, n) != cudaSuccess)
            return 1;
        cudaFree(p);
    }
    double t = (now_ns() - t0) / pairs;
    fake_counts(&c1, &q1, &g1);
    printf("calls %.4f %.0f %.4f %.4f\n", (double)(c1 - c0) / pairs, t, (double)(q1 - q0) / pairs,
           (double)(g1 - g0) / pairs);
    return 0;
}

/* A free of memory the shim did not make, with `cached` blocks in its
 * pools: cudaMallocManaged + cudaFree pairs, ns per pair. */
static int foreign_mode(int cached, int pairs)
{
    if (cudaFree(NULL) != cudaSuccess) {
        puts("no CUDA device");
        return 2;
    }
    void **held = (void **)calloc((size_t)cached, sizeof(void *)); /* also built as CUDA C++ */
    for (int i = 0; i < cached; i++)
        if (held == NULL || cudaMalloc(&held[i], 512) != cudaSuccess)
            return 1;
    for (int i = 0; i < cached; i++)
        cudaFree(held[i]);
    free(held);
    double best = 1e30;
    for (int r = 0; r < 5; r++) {
        double t0 = now_ns();
        for (int i = 0; i < pairs; i++) {
            void *m = NULL;
            if (cudaMallocManaged(&m, 4096, cudaMemAttachGlobal) != cudaSuccess)
                return 1;
            cudaFree(m);
        }
        double t = (now_ns() - t0) / pairs;
        best = t < best ? t : best;
    }
    printf("foreign %.0f\n", best);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc > 4 && strcmp(argv[1], "calls") == 0)
        return calls_mode(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]));
    if (argc > 3 && strcmp(argv[1], "foreign") == 0)
        return foreign_mode(atoi(argv[2]), atoi(argv[3]));
    int reps = argc > 1 ? atoi(argv[1]) : 20;
    if (cudaFree(NULL) != cudaSuccess) {
        puts("no CUDA device");
        return 2;
    }
    cudaStream_t s;
    cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    /* Stream-ordered pools appeared in CUDA 11.2; looked up so the fake needn't have them. */
    cudaError_t (*get_pool)(cudaMemPool_t *, int);
    cudaError_t (*set_attr)(cudaMemPool_t, enum cudaMemPoolAttr, void *);
    *(void **)&get_pool = dlsym(RTLD_DEFAULT, "cudaDeviceGetDefaultMemPool");
    *(void **)&set_attr = dlsym(RTLD_DEFAULT, "cudaMemPoolSetAttribute");
    int have_async = 0;
    if (get_pool && set_attr) {
        cudaMemPool_t pool;
        uint64_t unlimited = UINT64_MAX;
        have_async = get_pool(&pool, 0) == cudaSuccess
                     && set_attr(pool, cudaMemPoolAttrReleaseThreshold, &unlimited) == cudaSuccess;
    }
    static const size_t sizes[] = {512, 2048, 8192, 32768, 131072, 524288, 1 << 20, 2 << 20,
                                   8 << 20, 32 << 20, 128 << 20, 256 << 20};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        size_t n = sizes[k];
        int r = n >= ((size_t)64 << 20) ? (reps + 3) / 4 : reps;
        MEASURE("malloc", n, r, cudaMalloc(&p_, n), cudaFree(p_));
        if (have_async)
            MEASURE("async", n, r, cudaMallocAsync(&p_, n, s), cudaFreeAsync(p_, s));
    }
    for (size_t n = 4096; n <= ((size_t)64 << 20); n *= 4)
        MEASURE("host", n, (reps + 3) / 4, cudaHostAlloc(&p_, n, cudaHostAllocDefault), cudaFreeHost(p_));
    cudaStreamSynchronize(s);
    cudaStreamDestroy(s);
    /* On the fake driver: how many calls reached it. */
    void (*counters)(fake_cuda_counters_t *);
    *(void **)&counters = dlsym(RTLD_DEFAULT, "fakecuCounters");
    if (counters) {
        fake_cuda_counters_t c;
        counters(&c);
        printf("driver_calls mem_alloc=%llu host_alloc=%llu\n", (unsigned long long)c.mem_alloc,
               (unsigned long long)c.host_alloc);
    }
    return 0;
}
