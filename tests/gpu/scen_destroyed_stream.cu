// Scenario 1 (scripts/gpu-check): a kernel on a non-blocking stream still
// writes block a when a is freed and the stream destroyed; the next block
// of that size, written from the host, must keep every byte.
#include "scen_common.cuh"

int main()
{
    CHECK(cudaSetDevice(0));
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    destroyed_on(s, 4 << 20, "destroyed stream");
    reuse_pairs(4 << 20, 10);
    std::printf("ok destroyed_stream\n");
    return 0;
}
