// Real-GPU check for scripts/gpu-check: blocks freed while a kernel still
// writes them must not be handed out before the kernel is done, on the
// legacy stream and on a non-blocking stream, and pooled allocation must
// keep every result bit for bit.  Built twice: nvcc's default static cudart
// (the shim sees it through cuGetProcAddress) and -cudart shared.
#include <cstdio>
#include <cstring>
#include <vector>
#include <cuda_runtime.h>

#define CHECK(x)                                                                   \
    do {                                                                           \
        cudaError_t e_ = (x);                                                      \
        if (e_ != cudaSuccess) {                                                   \
            std::printf("FAIL %s:%d %s: %s\n", __FILE__, __LINE__, #x,             \
                        cudaGetErrorString(e_));                                   \
            return 1;                                                              \
        }                                                                          \
    } while (0)

__global__ void spin_fill(unsigned char *p, size_t n, int value, long long cycles)
{
    long long start = clock64();
    while (clock64() - start < cycles) {
    }
    for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = (unsigned char)value;
}

static int reuse_case(cudaStream_t slow, cudaStream_t fast, const char *name)
{
    const size_t n = 1 << 20;
    unsigned char *a = nullptr, *b = nullptr;
    CHECK(cudaMalloc(&a, n));
    spin_fill<<<64, 256, 0, slow>>>(a, n, 0x11, 200000000LL); // ~0.1 s on current GPUs
    CHECK(cudaGetLastError());
    CHECK(cudaFree(a));
    CHECK(cudaMalloc(&b, n));
    spin_fill<<<64, 256, 0, fast>>>(b, n, 0x22, 0);
    CHECK(cudaDeviceSynchronize());
    std::vector<unsigned char> host(n);
    CHECK(cudaMemcpy(host.data(), b, n, cudaMemcpyDeviceToHost));
    for (size_t i = 0; i < n; i++)
        if (host[i] != 0x22) {
            std::printf("FAIL %s: byte %zu of the new block is %#x (a=%p b=%p)\n", name, i, host[i],
                        (void *)a, (void *)b);
            return 1;
        }
    CHECK(cudaFree(b));
    return 0;
}

int main()
{
    CHECK(cudaFree(nullptr));
    cudaStream_t nb;
    CHECK(cudaStreamCreateWithFlags(&nb, cudaStreamNonBlocking));
    if (reuse_case(nullptr, nb, "legacy stream") || reuse_case(nb, nb, "non-blocking stream"))
        return 1;
    // A training-loop-like pattern: results must match a reference bit for bit.
    unsigned long long sum = 0;
    for (int step = 0; step < 200; step++) {
        size_t n = 4096u << (step % 8);
        unsigned char *p = nullptr;
        CHECK(cudaMalloc(&p, n));
        spin_fill<<<16, 256>>>(p, n, step & 0xff, 0);
        std::vector<unsigned char> host(n);
        CHECK(cudaMemcpy(host.data(), p, n, cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < n; i += 997)
            sum += host[i];
        CHECK(cudaFree(p));
    }
    void *pinned = nullptr;
    for (int i = 0; i < 100; i++) {
        CHECK(cudaHostAlloc(&pinned, 1 << 20, i % 2 ? cudaHostAllocMapped : cudaHostAllocDefault));
        std::memset(pinned, i, 1 << 20);
        CHECK(cudaFreeHost(pinned));
    }
    CHECK(cudaStreamDestroy(nb));
    std::printf("ok checksum=%llu\n", sum);
    return 0;
}
