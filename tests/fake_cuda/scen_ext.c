/*
 * Extension libraries for test_cuda_scenarios, built twice: linked against
 * the fake libcudart.so (SCEN_EXT_RUNTIME) and against libcuda.so.1.  A
 * program that links no CUDA dlopen()s one with RTLD_LOCAL and calls
 * scen_ext_run: n allocate/free pairs; returns how many calls failed and
 * the driver's allocation count.
 */
#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>
#include <dlfcn.h>
#include <stdint.h>

#ifdef SCEN_EXT_RUNTIME
#include <cuda_runtime_api.h>
#endif
#include "fake_cuda.h"

int scen_ext_run(int n, unsigned long long *driver_allocs);

__attribute__((visibility("default"))) int scen_ext_run(int n, unsigned long long *driver_allocs)
{
    int fails = 0;
#ifdef SCEN_EXT_RUNTIME
    for (int i = 0; i < n; i++) {
        void *p = NULL;
        fails += cudaMalloc(&p, 65536) != cudaSuccess;
        fails += cudaFree(p) != cudaSuccess;
    }
#else
    CUcontext c;
    fails += cuInit(0) != CUDA_SUCCESS;
    fails += cuDevicePrimaryCtxRetain(&c, 0) != CUDA_SUCCESS;
    fails += cuCtxSetCurrent(c) != CUDA_SUCCESS;
    for (int i = 0; i < n; i++) {
        CUdeviceptr p = 0;
        fails += cuMemAlloc_v2(&p, 65536) != CUDA_SUCCESS;
        fails += cuMemFree_v2(p) != CUDA_SUCCESS;
    }
#endif
    /* the driver was loaded locally: ask it through its own handle */
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    void (*get)(fake_cuda_counters_t *) = NULL;
    if (h)
        *(void **)&get = dlsym(h, "fakecuCounters");
    if (!get)
        return -1;
    fake_cuda_counters_t c2;
    get(&c2);
    *driver_allocs = c2.mem_alloc;
    return fails;
}
