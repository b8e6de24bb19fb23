// Scenario 3 (scripts/gpu-check): a block freed while a kernel on
// non-blocking stream nb1 writes it, reallocated and written on the legacy
// stream, then on a second non-blocking stream nb2: every byte must hold.
#include "scen_common.cuh"

static void reuse_on(cudaStream_t writer, cudaStream_t user, const char *what)
{
    const size_t n = 4 << 20;
    unsigned char *a = nullptr, *b = nullptr;
    CHECK(cudaMalloc(&a, n));
    spin_fill<<<64, 256, 0, writer>>>(a, n, 0x55, SLOW_CYCLES);
    CHECK(cudaGetLastError());
    CHECK(cudaFree(a));
    CHECK(cudaMalloc(&b, n));
    spin_fill<<<64, 256, 0, user>>>(b, n, 0x66, 0);
    CHECK(cudaGetLastError());
    CHECK(cudaStreamSynchronize(user));
    CHECK(cudaDeviceSynchronize());
    check_device_bytes(b, n, 0x66, what);
    CHECK(cudaFree(b));
}

int main()
{
    CHECK(cudaSetDevice(0));
    cudaStream_t nb1, nb2;
    CHECK(cudaStreamCreateWithFlags(&nb1, cudaStreamNonBlocking));
    CHECK(cudaStreamCreateWithFlags(&nb2, cudaStreamNonBlocking));
    reuse_on(nb1, nullptr, "non-blocking to legacy");
    reuse_on(nb1, nb2, "non-blocking to non-blocking");
    reuse_pairs(4 << 20, 10);
    std::printf("ok stream_to_stream\n");
    return 0;
}
