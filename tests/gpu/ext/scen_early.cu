// Scenario 6 (scripts/gpu-check): a library built with nvcc's default
// static cudart whose constructor makes 100 cudaMalloc/cudaFree pairs
// (each block written by a kernel and checked) before main, and before the
// preloaded shim's constructors in at least one link order.
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
        spin_fill<<<16, 256>>>(p, 1 << 20, i & 0xff, 0);
        check_device_bytes(p, 1 << 20, i & 0xff, "early constructor block");
        early_fails += cudaFree(p) != cudaSuccess;
    }
}

extern "C" __attribute__((visibility("default"))) int scen_early_result(void) { return early_fails; }
