// Scenario 6 (scripts/gpu-check): a library built with nvcc's default
// static cudart whose constructor makes 100 cudaMalloc/cudaFree pairs
// (each block filled by cudaMemsetAsync and checked) before main, and before
// the preloaded shim's constructors in at least one link order.  No kernel:
// this constructor runs before the one nvcc emits to register this file's
// kernels, so a launch here does nothing (seen on an H200, CUDA 13.0).
#include "../scen_common.cuh"

static int early_fails = -1;

__attribute__((constructor)) static void early()
{
    early_fails = 0;
    for (int i = 0; i < 100; i++) {
        unsigned char *p = nullptr;
        if (cudaMalloc(&p, 1 << 20) != cudaSuccess) {
            early_fails++;
            continue;
        }
        if (cudaMemsetAsync(p, i & 0xff, 1 << 20, 0) != cudaSuccess) {
            early_fails++;
            continue;
        }
        check_device_bytes(p, 1 << 20, i & 0xff, "early constructor block");
        early_fails += cudaFree(p) != cudaSuccess;
    }
}

extern "C" __attribute__((visibility("default"))) int scen_early_result(void) { return early_fails; }
