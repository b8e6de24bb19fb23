/*
 * For test_cuda_scenarios: a library with the static fake runtime linked
 * in whose constructor makes 100 cudaMalloc/cudaFree pairs, before the
 * program (and, in some link orders, the preloaded shim) has started.
 */
#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include "fake_cuda.h"

int scen_early_result(unsigned long long *driver_allocs);

static int fails = -1;
static unsigned long long allocs;

__attribute__((constructor)) static void early(void)
{
    fails = 0;
    for (int i = 0; i < 100; i++) {
        void *p = NULL;
        fails += cudaMalloc(&p, 65536) != cudaSuccess;
        fails += cudaFree(p) != cudaSuccess;
    }
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    void (*get)(fake_cuda_counters_t *) = NULL;
    if (h)
        *(void **)&get = dlsym(h, "fakecuCounters");
    if (get) {
        fake_cuda_counters_t c;
        get(&c);
        allocs = c.mem_alloc;
    } else {
        fails = -2;
    }
}

__attribute__((visibility("default"))) int scen_early_result(unsigned long long *driver_allocs)
{
    *driver_allocs = allocs;
    return fails;
}
