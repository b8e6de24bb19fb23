// Scenario 4 (scripts/gpu-check): 128 non-blocking streams (runtime,
// with priority, and green-context streams where the driver has them),
// 2000 pairs of 1 MiB, then scenario 1 with the kernel on stream #100.
#include <cuda.h>
#include "scen_common.cuh"

int main()
{
    CHECK(cudaSetDevice(0));
    CHECK(cudaFree(nullptr));
    int lo = 0, hi = 0;
    CHECK(cudaDeviceGetStreamPriorityRange(&lo, &hi));
    // Green contexts (CUDA 12.4; their streams 12.5) through the driver entry points; without
    // them the third kind is made with cudaStreamCreateWithPriority too.
    CUresult (*get_res)(CUdevice, CUdevResource *, CUdevResourceType) = nullptr;
    CUresult (*gen_desc)(CUdevResourceDesc *, CUdevResource *, unsigned) = nullptr;
    CUresult (*green_create)(CUgreenCtx *, CUdevResourceDesc, CUdevice, unsigned) = nullptr;
    CUresult (*green_stream)(CUstream *, CUgreenCtx, unsigned, int) = nullptr;
    cudaDriverEntryPointQueryResult q;
    cudaGetDriverEntryPointByVersion("cuDeviceGetDevResource", (void **)&get_res, 12040, cudaEnableDefault, &q);
    cudaGetDriverEntryPointByVersion("cuDevResourceGenerateDesc", (void **)&gen_desc, 12040, cudaEnableDefault, &q);
    cudaGetDriverEntryPointByVersion("cuGreenCtxCreate", (void **)&green_create, 12040, cudaEnableDefault, &q);
    cudaGetDriverEntryPointByVersion("cuGreenCtxStreamCreate", (void **)&green_stream, 12050, cudaEnableDefault, &q);
    cudaGetLastError();
    CUgreenCtx green = nullptr;
    CUdevResource res;
    CUdevResourceDesc desc;
    if (get_res && gen_desc && green_create && green_stream && get_res(0, &res, CU_DEV_RESOURCE_TYPE_SM) == CUDA_SUCCESS
        && gen_desc(&desc, &res, 1) == CUDA_SUCCESS && green_create(&green, desc, 0, CU_GREEN_CTX_DEFAULT_STREAM) != CUDA_SUCCESS)
        green = nullptr;
    cudaStream_t s[128];
    for (int i = 0; i < 128; i++) {
        if (i % 3 == 0)
            CHECK(cudaStreamCreateWithFlags(&s[i], cudaStreamNonBlocking));
        else if (i % 3 == 1 || !green)
            CHECK(cudaStreamCreateWithPriority(&s[i], cudaStreamNonBlocking, i % 2 ? hi : lo));
        else if (green_stream((CUstream *)&s[i], green, CU_STREAM_NON_BLOCKING, 0) != CUDA_SUCCESS) {
            std::printf("FAIL cuGreenCtxStreamCreate\n");
            return 1;
        }
    }
    for (int i = 0; i < 2000; i++) {
        void *p = nullptr;
        CHECK(cudaMalloc(&p, 1 << 20));
        CHECK(cudaFree(p));
    }
    destroyed_on(s[100], 4 << 20, "destroyed stream #100 of 128");
    std::printf("ok many_streams\n");
    return 0;
}
