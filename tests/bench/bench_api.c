/*
 * Acquire/release pair costs of include/mempool.h for scripts/bench api
 * (not a test).  Links libmempool.so (no preload).  Prints one line per
 * measurement: "<name> <ns per pair>".  Device and pinned rows need a
 * libcuda.so.1 (the fake one in CI: LD_LIBRARY_PATH=build/tests/fake_cuda).
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mempool.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Best of 5 runs of n pairs: ns per pair. */
#define MEASURE(name, n, body)                                  \
    do {                                                        \
        double best = 1e30;                                     \
        for (int run = 0; run < 5; run++) {                     \
            double t0 = now();                                  \
            for (long i = 0; i < (n); i++) {                    \
                body;                                           \
            }                                                   \
            double dt = (now() - t0) / (double)(n) * 1e9;       \
            best = dt < best ? dt : best;                       \
        }                                                       \
        printf("%s %.1f\n", name, best);                        \
        fflush(stdout);                                         \
    } while (0)

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef int (*mem_alloc_fn)(unsigned long long *, size_t);
typedef int (*mem_free_fn)(unsigned long long);
typedef int (*host_alloc_fn)(void **, size_t, unsigned);
typedef int (*host_free_fn)(void *);
typedef int (*ctx_fn)(void *);

/* "pair <malloc|default|custom> N": only N pairs of that row, no timing,
 * for counting instructions under callgrind (scripts/bench api
 * --instructions). */
static int pairs_only(const char *row, long n, size_t size)
{
    void *volatile sink;
    mempool_config_t cfg;
    mempool_config_init(&cfg, MEMPOOL_KIND_HOST);
    mempool_t *own, *def = mempool_default(MEMPOOL_KIND_HOST);
    if (mempool_create(&cfg, &own) != 0)
        return 1;
    if (strcmp(row, "malloc") == 0)
        for (long i = 0; i < n; i++) {
            sink = malloc(size);
            free(sink);
        }
    else {
        mempool_t *volatile pv = strcmp(row, "default") == 0 ? def : own;
        mempool_t *p = pv;
        for (long i = 0; i < n; i++) {
            sink = mempool_acquire(p, size);
            mempool_release(p, sink);
        }
    }
    (void)sink;
    return 0;
}

int main(int argc, char **argv)
{
    size_t size = 4096;
    if (argc == 4 && strcmp(argv[1], "pair") == 0)
        return pairs_only(argv[2], atol(argv[3]), size);
    long n = argc > 1 ? atol(argv[1]) : 2000000;
    void *volatile sink;

    MEASURE("host.malloc_free", n, {
        sink = malloc(size);
        free(sink);
    });
    mempool_t *def = mempool_default(MEMPOOL_KIND_HOST);
    MEASURE("host.api_default", n, {
        sink = mempool_acquire(def, size);
        mempool_release(def, sink);
    });
    mempool_config_t cfg;
    mempool_config_init(&cfg, MEMPOOL_KIND_HOST);
    mempool_t *own;
    if (mempool_create(&cfg, &own) != 0)
        return 1;
    MEASURE("host.api_custom", n, {
        sink = mempool_acquire(own, size);
        mempool_release(own, sink);
    });
    /* The ratio the 1.5x target is about, paired: rounds of the two pairs
     * alternate, so a slow stretch of the machine (frequency, a neighbour)
     * slows both sides of a round's ratio alike; the median of the rounds. */
    enum { ROUNDS = 41 };
    double ratio[ROUNDS];
    long rn = n / 10 > 1000 ? n / 10 : 1000;
    for (int r = 0; r < ROUNDS; r++) {
        double t0 = now();
        for (long i = 0; i < rn; i++) {
            sink = malloc(size);
            free(sink);
        }
        double t1 = now();
        for (long i = 0; i < rn; i++) {
            sink = mempool_acquire(own, size);
            mempool_release(own, sink);
        }
        double t2 = now();
        ratio[r] = (t2 - t1) / (t1 - t0);
    }
    qsort(ratio, ROUNDS, sizeof ratio[0], cmp_double);
    printf("host.api_custom_over_malloc %.3f\n", ratio[ROUNDS / 2]);
    fflush(stdout);

    void *h = dlopen("libcuda.so.1", RTLD_NOW);
    if (h == NULL)
        return 0; /* no driver: host rows only */
    int (*init)(unsigned) = (int (*)(unsigned))dlsym(h, "cuInit");
    int (*retain)(void **, int) = (int (*)(void **, int))dlsym(h, "cuDevicePrimaryCtxRetain");
    ctx_fn set_current = (ctx_fn)dlsym(h, "cuCtxSetCurrent");
    mem_alloc_fn mem_alloc = (mem_alloc_fn)dlsym(h, "cuMemAlloc_v2");
    mem_free_fn mem_free = (mem_free_fn)dlsym(h, "cuMemFree_v2");
    host_alloc_fn host_alloc = (host_alloc_fn)dlsym(h, "cuMemHostAlloc");
    host_free_fn host_free = (host_free_fn)dlsym(h, "cuMemFreeHost");
    void *ctx = NULL;
    if (!init || init(0) != 0 || retain(&ctx, 0) != 0 || set_current(ctx) != 0)
        return 0;
    long m = n / 20;
    /* A real driver's pair costs 60 us (cuMemAlloc) to 1 ms (cuMemHostAlloc)
     * on an H200: the raw rows take fewer pairs, or they run for minutes. */
    long mraw = m / 200 > 50 ? m / 200 : 50;
    size_t dsize = 1 << 20;
    unsigned long long d;
    MEASURE("device.raw_driver", mraw, {
        mem_alloc(&d, dsize);
        mem_free(d);
    });
    mempool_config_init(&cfg, MEMPOOL_KIND_DEVICE);
    mempool_t *dev;
    if (mempool_create(&cfg, &dev) != 0)
        return 1;
    MEASURE("device.api_custom", m, {
        sink = mempool_acquire(dev, dsize);
        mempool_release(dev, sink);
    });
    mempool_t *ddef = mempool_default(MEMPOOL_KIND_DEVICE);
    MEASURE("device.api_default", m, {
        sink = mempool_acquire(ddef, dsize);
        mempool_release(ddef, sink);
    });
    MEASURE("device.api_async_same_stream", m, {
        sink = mempool_acquire_async(dev, dsize, NULL);
        mempool_release_async(dev, sink, NULL);
    });
    void *hp;
    MEASURE("pinned.raw_driver", mraw, {
        host_alloc(&hp, dsize, 0);
        host_free(hp);
    });
    mempool_config_init(&cfg, MEMPOOL_KIND_PINNED);
    mempool_t *pin;
    if (mempool_create(&cfg, &pin) != 0)
        return 1;
    MEASURE("pinned.api_custom", m, {
        sink = mempool_acquire(pin, dsize);
        mempool_release(pin, sink);
    });
    (void)sink;
    return 0;
}
