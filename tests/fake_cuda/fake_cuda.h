/*
 * Controls of the fake CUDA driver and runtime (tests/fake_cuda/), for
 * tests that run without a GPU.  The same names are looked up with dlsym
 * by test programs that must also run on real CUDA (they skip the checks
 * when the symbols are absent).
 */
#ifndef FAKE_CUDA_H
#define FAKE_CUDA_H

#include <cuda.h>
#include <cuda_runtime_api.h>
#include <stddef.h>
#include <stdint.h>

typedef struct fake_cuda_counters {
    uint64_t init, proc_address;
    uint64_t mem_alloc, mem_free, host_alloc, host_free, invalid_free, oom;
    uint64_t mem_get_info, ctx_sync, ctx_reset, stream_create, stream_sync;
    uint64_t event_create, event_record, event_query, event_sync, launch;
    uint64_t rt_driver_lookups; /* entry points the runtime took through cuGetProcAddress */
    uint64_t ipc_get, ipc_open, capture_begin, capture_end;
    /* Event records on the legacy stream and event queries while a stream
     * is being captured: illegal in the default (global) capture mode. */
    uint64_t capture_violations;
    uint64_t alloc_async, free_async;
    uint64_t memset, host_register, host_unregister;
    /* Failures injected by fakecuSetFaults (not counted in mem_alloc & co.). */
    uint64_t fault_alloc, fault_host_alloc, fault_event_record;
    /* Calls of every exported driver entry point (not the fake* controls,
     * not cuGetProcAddress); cuCtxRecordEvent, cuStreamDestroy and
     * cuDevicePrimaryCtxRelease calls that succeeded. */
    uint64_t calls, ctx_record_event, stream_destroy, primary_release;
    /* cuCtxGetCurrent calls (a thread-local read in the real driver). */
    uint64_t ctx_get_current;
} fake_cuda_counters_t;

/* Driver (libcuda.so.1): a "kernel" on stream h that fills bytes at dst with
 * value delay_us after the stream's earlier work; capacity, cost, counters. */
CUresult fakecuLaunchFill(CUstream h, CUdeviceptr dst, int value, size_t bytes, unsigned delay_us);
void fakecuSetCapacity(int device, size_t bytes);
void fakecuSetAllocCost(unsigned us);
/* Fail cuMemAlloc, cuMemHostAlloc and cuEventRecord/cuCtxRecordEvent at random, each with
 * the given chance in 1000 (a real device out of memory, a driver error),
 * from a seeded generator: the same seed fails the same calls. */
void fakecuSetFaults(unsigned alloc_permille, unsigned event_permille, uint64_t seed);
void fakecuCounters(fake_cuda_counters_t *out);
size_t fakecuUsed(int device);

/* Runtime (libcudart.so.13 / static archive): the same launch, and how many
 * driver entry points it took through cuGetProcAddress. */
cudaError_t fakecudaLaunchFill(cudaStream_t s, void *dst, int value, size_t bytes, unsigned delay_us);
uint64_t fakecudaDriverLookups(void);

#endif
