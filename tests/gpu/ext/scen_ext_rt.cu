// Scenario 5 (scripts/gpu-check): an extension built with -cudart shared,
// dlopen'ed with RTLD_LOCAL by a program that links no CUDA: 100
// cudaMalloc/cudaFree pairs, each block written by a kernel and checked.
#include "../scen_common.cuh"

extern "C" __attribute__((visibility("default"))) int scen_ext_run(int n)
{
    for (int i = 0; i < n; i++) {
        unsigned char *p = nullptr;
        CHECK(cudaMalloc(&p, 1 << 20));
        spin_fill<<<16, 256>>>(p, 1 << 20, i & 0xff, 0);
        CHECK(cudaGetLastError());
        check_device_bytes(p, 1 << 20, i & 0xff, "extension block");
        CHECK(cudaFree(p));
    }
    return 0;
}
