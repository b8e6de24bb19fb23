/* Scenario 5 (scripts/gpu-check): an extension linked against libcuda,
 * dlopen'ed with RTLD_LOCAL: 100 cuMemAlloc_v2/cuMemFree_v2 pairs, each
 * block set with cuMemsetD8 and read back. */
#include <cuda.h>
#include <stdio.h>
#include <string.h>

int scen_ext_run(int n);

__attribute__((visibility("default"))) int scen_ext_run(int n)
{
    CUcontext c;
    static unsigned char host[1 << 20];
    if (cuInit(0) || cuDevicePrimaryCtxRetain(&c, 0) || cuCtxSetCurrent(c))
        return 1;
    for (int i = 0; i < n; i++) {
        CUdeviceptr p = 0;
        if (cuMemAlloc_v2(&p, sizeof(host)) || cuMemsetD8_v2(p, (unsigned char)i, sizeof(host))
            || cuMemcpyDtoH_v2(host, p, sizeof(host)) || cuMemFree_v2(p)) {
            printf("FAIL driver call %d\n", i);
            return 1;
        }
        for (size_t k = 0; k < sizeof(host); k++)
            if (host[k] != (unsigned char)i) {
                printf("FAIL byte %zu of block %d\n", k, i);
                return 1;
            }
    }
    cuDevicePrimaryCtxRelease_v2(0);
    return 0;
}
