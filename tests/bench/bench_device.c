/*
 * Device and pinned allocation latency for scripts/bench device (not a
 * test).  Plain runtime API, so it builds against the fake cudart (CPU,
 * call counts only) and, with nvcc, against the real one.  Prints one line
 * per measurement: "<kind> <bytes> <ns per alloc+free pair>".
 *   malloc   cudaMalloc + cudaFree
 *   async    cudaMallocAsync + cudaFreeAsync on a stream, default pool with
 *            an unlimited release threshold (when the runtime has pools)
 *   host     cudaHostAlloc + cudaFreeHost
 */
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

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

int main(int argc, char **argv)
{
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
    void (*counters)(uint64_t *);
    *(void **)&counters = dlsym(RTLD_DEFAULT, "fakecuCounters");
    if (counters) {
        uint64_t c[32] = {0}; /* fake_cuda_counters_t: init, proc_address, mem_alloc, mem_free, host_alloc */
        counters(c);
        printf("driver_calls mem_alloc=%llu host_alloc=%llu\n", (unsigned long long)c[2],
               (unsigned long long)c[4]);
    }
    return 0;
}
