// Scenario 2 (scripts/gpu-check): a kernel on device 1 (device 0 if there
// is one device) still writes a pinned buffer when it is freed; the next
// pinned buffer of that size, allocated with device 0 current and written
// by the host, must keep every byte.
#include "scen_common.cuh"

int main()
{
    int n = 0;
    CHECK(cudaGetDeviceCount(&n));
    int other = n > 1 ? 1 : 0;
    const size_t size = 4 << 20;
    const unsigned flags = cudaHostAllocPortable | cudaHostAllocMapped;
    CHECK(cudaSetDevice(other));
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    unsigned char *h = nullptr, *d = nullptr, *h2 = nullptr;
    CHECK(cudaHostAlloc(&h, size, flags));
    CHECK(cudaHostGetDevicePointer(&d, h, 0));
    spin_fill<<<64, 256, 0, s>>>(d, size, 0x33, SLOW_CYCLES);
    CHECK(cudaGetLastError());
    CHECK(cudaFreeHost(h));
    CHECK(cudaSetDevice(0));
    CHECK(cudaHostAlloc(&h2, size, flags));
    std::memset(h2, 0x44, size);
    CHECK(cudaSetDevice(other));
    CHECK(cudaDeviceSynchronize());
    CHECK(cudaSetDevice(0));
    CHECK(cudaDeviceSynchronize());
    for (size_t i = 0; i < size; i++)
        if (h2[i] != 0x44) {
            std::printf("FAIL pinned across contexts: byte %zu is %#x\n", i, h2[i]);
            return 1;
        }
    CHECK(cudaFreeHost(h2));
    for (int i = 0; i < 10; i++) {
        CHECK(cudaHostAlloc(&h, size, flags));
        CHECK(cudaFreeHost(h));
    }
    std::printf("ok pinned_contexts\n");
    return 0;
}
