// Shared by the scenario programs of scripts/gpu-check (tests/gpu/scen_*.cu
// and tests/gpu/ext/): a kernel that spins on clock64 before it fills, so
// it still writes long after the host has freed its block, and checks.
#pragma once
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>
#include <cuda_runtime.h>

#define CHECK(x)                                                                   \
    do {                                                                           \
        cudaError_t e_ = (x);                                                      \
        if (e_ != cudaSuccess) {                                                   \
            std::printf("FAIL %s:%d %s: %s\n", __FILE__, __LINE__, #x,             \
                        cudaGetErrorString(e_));                                   \
            std::exit(1);                                                          \
        }                                                                          \
    } while (0)

// About 0.2-0.4 s on current GPUs before the fill starts.
static const long long SLOW_CYCLES = 400000000LL;

__global__ void spin_fill(unsigned char *p, size_t n, int value, long long cycles)
{
    long long start = clock64();
    while (clock64() - start < cycles) {
    }
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        p[i] = (unsigned char)value;
}

// Every byte of device (or mapped host) memory p must be value.
static void check_device_bytes(const void *p, size_t n, int value, const char *what)
{
    std::vector<unsigned char> host(n);
    CHECK(cudaMemcpy(host.data(), p, n, cudaMemcpyDefault));
    for (size_t i = 0; i < n; i++)
        if (host[i] != (unsigned char)value) {
            std::printf("FAIL %s: byte %zu is %#x, not %#x (a kernel wrote a block handed out again)\n", what, i,
                        host[i], value);
            std::exit(1);
        }
}

// Write value to every byte of device memory p from the host.
static void host_write(void *p, size_t n, int value)
{
    std::vector<unsigned char> host(n, (unsigned char)value);
    CHECK(cudaMemcpy(p, host.data(), n, cudaMemcpyHostToDevice));
}

// Allocate/free pairs of one size after the device is idle: a pool serves
// them from its cache (the stats file's device hits).
static void reuse_pairs(size_t n, int count)
{
    for (int i = 0; i < count; i++) {
        void *p = nullptr;
        CHECK(cudaMalloc(&p, n));
        CHECK(cudaFree(p));
    }
}

// Scenario 1 on stream s, destroyed while its kernel still writes the freed block.
static void destroyed_on(cudaStream_t s, size_t n, const char *what)
{
    unsigned char *a = nullptr, *b = nullptr;
    CHECK(cudaMalloc(&a, n));
    spin_fill<<<64, 256, 0, s>>>(a, n, 0x11, SLOW_CYCLES);
    CHECK(cudaGetLastError());
    CHECK(cudaFree(a));
    CHECK(cudaStreamDestroy(s));
    CHECK(cudaMalloc(&b, n));
    host_write(b, n, 0x22);
    CHECK(cudaDeviceSynchronize());
    check_device_bytes(b, n, 0x22, what);
    CHECK(cudaFree(b));
}
