/*
 * A fake CUDA runtime (libcudart.so.13, and a static archive standing in
 * for nvcc's default static cudart), built against the real
 * cuda_runtime_api.h.  Like real cudart 12/13 it never links the driver:
 * on first use it dlopen()s libcuda.so.1, looks up cuGetProcAddress_v2,
 * cuInit and cuDriverGetVersion with dlsym, and takes every other driver
 * entry point through cuGetProcAddress_v2 at the version of its prototype, so
 * a shim that hooks dlsym and cuGetProcAddress sees exactly what it would
 * see with the real runtime.  All its work goes through those pointers:
 * cudaFree is the driver's cuMemFree (which synchronises), cudaDeviceReset
 * is cuDevicePrimaryCtxReset, and the primary context of a device is
 * retained once and made current when a thread has no current context
 * (or by cudaSetDevice).
 */
#include <cuda.h>
#include <cuda_runtime_api.h>
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "fake_cuda.h"

#define RT_EXPORT __attribute__((visibility("default")))

typedef CUresult (*proc_fn)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);

static struct {
    CUresult (*init)(unsigned);
    CUresult (*driver_version)(int *);
    CUresult (*primary_retain)(CUcontext *, CUdevice);
    CUresult (*ctx_get)(CUcontext *);
    CUresult (*stream_create_prio)(CUstream *, unsigned, int);
    CUresult (*primary_reset)(CUdevice);
    CUresult (*ctx_set)(CUcontext);
    CUresult (*ctx_sync)(CUcontext); /* 13.0's cuCtxSynchronize_v2, as cudart 13 takes it */
    CUresult (*mem_alloc)(CUdeviceptr *, size_t);
    CUresult (*mem_alloc_pitch)(CUdeviceptr *, size_t *, size_t, size_t, unsigned);
    CUresult (*mem_alloc_managed)(CUdeviceptr *, size_t, unsigned);
    CUresult (*mem_free)(CUdeviceptr);
    CUresult (*alloc_async)(CUdeviceptr *, size_t, CUstream);
    CUresult (*free_async)(CUdeviceptr, CUstream);
    CUresult (*host_alloc)(void **, size_t, unsigned);
    CUresult (*host_free)(void *);
    CUresult (*host_dev_ptr)(CUdeviceptr *, void *, unsigned);
    CUresult (*get_info)(size_t *, size_t *);
    CUresult (*addr_range)(CUdeviceptr *, size_t *, CUdeviceptr);
    CUresult (*stream_create)(CUstream *, unsigned);
    CUresult (*stream_destroy)(CUstream);
    CUresult (*stream_sync)(CUstream);
    CUresult (*event_create)(CUevent *, unsigned);
    CUresult (*event_record)(CUevent, CUstream);
    CUresult (*event_query)(CUevent);
    CUresult (*event_sync)(CUevent);
    CUresult (*event_destroy)(CUevent);
    CUresult (*launch_fill)(CUstream, CUdeviceptr, int, size_t, unsigned);
    proc_fn get_proc;
} drv;

static pthread_once_t once = PTHREAD_ONCE_INIT;
static cudaError_t load_error = cudaSuccess;
static _Thread_local int device;
static CUcontext primary[2];            /* retained once per device */
static pthread_mutex_t primary_lock = PTHREAD_MUTEX_INITIALIZER;
static _Thread_local cudaError_t last_error;
static uint64_t lookups;

/* Like cudart 13, each entry point at the version of the prototype it is
 * called through (cudaTypedefs.h's newest PFN_name_vNNNN), not at 13000:
 * on an H200 with CUDA 13.0, real cudart took "cuMemHostAlloc" and
 * "cuMemFreeHost" below 3.2, so a hook that matched only from 3020 on was
 * never handed out. */
static void get(const char *name, int version, void *slot)
{
    void *fn = NULL;
    CUdriverProcAddressQueryResult st;
    if (drv.get_proc(name, &fn, version, CU_GET_PROC_ADDRESS_DEFAULT, &st) == CUDA_SUCCESS)
        memcpy(slot, &fn, sizeof(fn));
    lookups++;
}

static void load(void)
{
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    void *gp = h ? dlsym(h, "cuGetProcAddress_v2") : NULL;
    if (!gp) {
        load_error = cudaErrorInsufficientDriver;
        return;
    }
    memcpy(&drv.get_proc, &gp, sizeof(gp));
    void *init = dlsym(h, "cuInit"), *version = dlsym(h, "cuDriverGetVersion");
    memcpy(&drv.init, &init, sizeof(init));
    memcpy(&drv.driver_version, &version, sizeof(version));
    get("cuDevicePrimaryCtxRetain", 7000, &drv.primary_retain);
    get("cuCtxGetCurrent", 4000, &drv.ctx_get);
    get("cuStreamCreateWithPriority", 5050, &drv.stream_create_prio);
    get("cuDevicePrimaryCtxReset", 11000, &drv.primary_reset);
    get("cuCtxSetCurrent", 4000, &drv.ctx_set);
    get("cuCtxSynchronize", 13000, &drv.ctx_sync);
    get("cuMemAlloc", 3020, &drv.mem_alloc);
    get("cuMemAllocPitch", 3020, &drv.mem_alloc_pitch);
    get("cuMemAllocManaged", 6000, &drv.mem_alloc_managed);
    get("cuMemFree", 3020, &drv.mem_free);
    get("cuMemAllocAsync", 11020, &drv.alloc_async);
    get("cuMemFreeAsync", 11020, &drv.free_async);
    get("cuMemHostAlloc", 2020, &drv.host_alloc);
    get("cuMemFreeHost", 2000, &drv.host_free);
    get("cuMemHostGetDevicePointer", 3020, &drv.host_dev_ptr);
    get("cuMemGetInfo", 3020, &drv.get_info);
    get("cuMemGetAddressRange", 3020, &drv.addr_range);
    get("cuStreamCreate", 2000, &drv.stream_create);
    get("cuStreamDestroy", 4000, &drv.stream_destroy);
    get("cuStreamSynchronize", 2000, &drv.stream_sync);
    get("cuEventCreate", 2000, &drv.event_create);
    get("cuEventRecord", 2000, &drv.event_record);
    get("cuEventQuery", 2000, &drv.event_query);
    get("cuEventSynchronize", 2000, &drv.event_sync);
    get("cuEventDestroy", 4000, &drv.event_destroy);
    get("fakecuLaunchFill", 0, &drv.launch_fill);
    int v = 0;
    if (!drv.init || drv.init(0) != CUDA_SUCCESS || !drv.driver_version || drv.driver_version(&v) != CUDA_SUCCESS)
        load_error = cudaErrorInitializationError;
    else if (v < 13000)
        load_error = cudaErrorInsufficientDriver;
}

static cudaError_t map(CUresult r)
{
    switch (r) {
    case CUDA_SUCCESS: return cudaSuccess;
    case CUDA_ERROR_OUT_OF_MEMORY: return cudaErrorMemoryAllocation;
    case CUDA_ERROR_NOT_READY: return cudaErrorNotReady;
    case CUDA_ERROR_INVALID_DEVICE: return cudaErrorInvalidDevice;
    case CUDA_ERROR_NOT_FOUND: return cudaErrorInvalidValue;
    case CUDA_ERROR_INVALID_HANDLE: return cudaErrorInvalidResourceHandle;
    case CUDA_ERROR_CONTEXT_IS_DESTROYED: return cudaErrorContextIsDestroyed;
    default: return cudaErrorInvalidValue;
    }
}

/* The device's primary context, retained once (lazily, as cudart does). */
static CUresult primary_of(int d, CUcontext *ctx)
{
    CUresult r = CUDA_SUCCESS;
    pthread_mutex_lock(&primary_lock);
    if (!primary[d])
        r = drv.primary_retain(&primary[d], d);
    *ctx = primary[d];
    pthread_mutex_unlock(&primary_lock);
    return r;
}

/* A thread without a current context gets its device's primary context
 * (cudaSetDevice makes it current whatever was current). */
static cudaError_t ready_for(int force)
{
    pthread_once(&once, load);
    if (load_error != cudaSuccess)
        return last_error = load_error;
    CUcontext cur = NULL, ctx = NULL;
    CUresult r = force ? CUDA_SUCCESS : drv.ctx_get(&cur);
    if (r == CUDA_SUCCESS && (force || cur == NULL)) {
        r = primary_of(device, &ctx);
        if (r == CUDA_SUCCESS)
            r = drv.ctx_set(ctx);
    }
    return r == CUDA_SUCCESS ? cudaSuccess : (last_error = map(r));
}

static cudaError_t ready(void) { return ready_for(0); }

#define CALL(expr)                                   \
    do {                                             \
        cudaError_t e_ = ready();                    \
        if (e_ != cudaSuccess)                       \
            return e_;                               \
        CUresult r_ = (expr);                        \
        if (r_ != CUDA_SUCCESS && r_ != CUDA_ERROR_NOT_READY) \
            last_error = map(r_);                    \
        return map(r_);                              \
    } while (0)

RT_EXPORT cudaError_t cudaMalloc(void **p, size_t n) { CALL(drv.mem_alloc((CUdeviceptr *)p, n)); }
RT_EXPORT cudaError_t cudaFree(void *p) { CALL(drv.mem_free((CUdeviceptr)(uintptr_t)p)); }
RT_EXPORT cudaError_t cudaMallocPitch(void **p, size_t *pitch, size_t w, size_t h)
{
    CALL(drv.mem_alloc_pitch((CUdeviceptr *)p, pitch, w, h, 4));
}
RT_EXPORT cudaError_t cudaMallocManaged(void **p, size_t n, unsigned flags)
{
    CALL(drv.mem_alloc_managed((CUdeviceptr *)p, n, flags));
}
RT_EXPORT cudaError_t cudaHostAlloc(void **p, size_t n, unsigned flags) { CALL(drv.host_alloc(p, n, flags)); }
RT_EXPORT cudaError_t cudaMallocHost(void **p, size_t n) { CALL(drv.host_alloc(p, n, 0)); }
RT_EXPORT cudaError_t cudaFreeHost(void *p) { CALL(drv.host_free(p)); }
RT_EXPORT cudaError_t cudaHostGetDevicePointer(void **d, void *p, unsigned flags)
{
    CALL(drv.host_dev_ptr((CUdeviceptr *)d, p, flags));
}
RT_EXPORT cudaError_t cudaMemGetInfo(size_t *f, size_t *t) { CALL(drv.get_info(f, t)); }
RT_EXPORT cudaError_t cudaDeviceSynchronize(void) { CALL(drv.ctx_sync(NULL)); }
RT_EXPORT cudaError_t cudaDeviceReset(void) { CALL(drv.primary_reset(device)); }
RT_EXPORT cudaError_t cudaStreamCreate(cudaStream_t *s) { CALL(drv.stream_create((CUstream *)s, 0)); }
RT_EXPORT cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags)
{
    CALL(drv.stream_create((CUstream *)s, flags));
}
RT_EXPORT cudaError_t cudaStreamCreateWithPriority(cudaStream_t *s, unsigned flags, int priority)
{
    CALL(drv.stream_create_prio((CUstream *)s, flags, priority));
}
RT_EXPORT cudaError_t cudaStreamDestroy(cudaStream_t s) { CALL(drv.stream_destroy((CUstream)s)); }
RT_EXPORT cudaError_t cudaStreamSynchronize(cudaStream_t s) { CALL(drv.stream_sync((CUstream)s)); }
RT_EXPORT cudaError_t cudaEventCreate(cudaEvent_t *e) { CALL(drv.event_create((CUevent *)e, 0)); }
RT_EXPORT cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags)
{
    CALL(drv.event_create((CUevent *)e, flags));
}
RT_EXPORT cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) { CALL(drv.event_record((CUevent)e, (CUstream)s)); }
RT_EXPORT cudaError_t cudaEventQuery(cudaEvent_t e) { CALL(drv.event_query((CUevent)e)); }
RT_EXPORT cudaError_t cudaEventSynchronize(cudaEvent_t e) { CALL(drv.event_sync((CUevent)e)); }
RT_EXPORT cudaError_t cudaEventDestroy(cudaEvent_t e) { CALL(drv.event_destroy((CUevent)e)); }

RT_EXPORT cudaError_t cudaSetDevice(int d)
{
    if (d < 0 || d > 1)
        return last_error = cudaErrorInvalidDevice;
    device = d;
    return ready_for(1);
}
RT_EXPORT cudaError_t cudaGetDevice(int *d)
{
    *d = device;
    return cudaSuccess;
}
RT_EXPORT cudaError_t cudaGetDeviceCount(int *n)
{
    *n = 2;
    return cudaSuccess;
}
RT_EXPORT cudaError_t cudaGetLastError(void)
{
    cudaError_t e = last_error;
    last_error = cudaSuccess;
    return e;
}
RT_EXPORT const char *cudaGetErrorString(cudaError_t e)
{
    return e == cudaSuccess ? "no error" : e == cudaErrorMemoryAllocation ? "out of memory" : "fake cudart error";
}

/* Stream-ordered allocation: the driver's (which serves it at once). */
RT_EXPORT cudaError_t cudaMallocAsync(void **p, size_t n, cudaStream_t s)
{
    CALL(drv.alloc_async((CUdeviceptr *)p, n, (CUstream)s));
}
RT_EXPORT cudaError_t cudaFreeAsync(void *p, cudaStream_t s)
{
    CALL(drv.free_async((CUdeviceptr)(uintptr_t)p, (CUstream)s));
}

RT_EXPORT cudaError_t cudaGetDriverEntryPointByVersion(const char *symbol, void **fn, unsigned version,
                                                       unsigned long long flags,
                                                       enum cudaDriverEntryPointQueryResult *status)
{
    cudaError_t e = ready();
    if (e != cudaSuccess)
        return e;
    CUdriverProcAddressQueryResult st;
    CUresult r = drv.get_proc(symbol, fn, (int)version, flags, &st);
    if (status)
        *status = r != CUDA_SUCCESS || st == CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND ? cudaDriverEntryPointSymbolNotFound
                  : st == CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT            ? cudaDriverEntryPointVersionNotSufficent
                                                                                : cudaDriverEntryPointSuccess;
    return map(r);
}

RT_EXPORT cudaError_t cudaGetDriverEntryPoint(const char *symbol, void **fn, unsigned long long flags,
                                              enum cudaDriverEntryPointQueryResult *status)
{
    return cudaGetDriverEntryPointByVersion(symbol, fn, 13000, flags, status);
}

/* ---- fake-only ------------------------------------------------------------ */

/* A "kernel" on stream s that fills bytes at dst with value after delay_us. */
RT_EXPORT cudaError_t fakecudaLaunchFill(cudaStream_t s, void *dst, int value, size_t bytes, unsigned delay_us)
{
    CALL(drv.launch_fill((CUstream)s, (CUdeviceptr)(uintptr_t)dst, value, bytes, delay_us));
}

RT_EXPORT uint64_t fakecudaDriverLookups(void) { return lookups; }
