/*
 * The CUDA entry points the shim exports: device and pinned memory, IPC,
 * stream creation and capture go to the core (src/cuda_intercept.c);
 * stream-ordered, managed and pitched allocations are forwarded to the
 * real function and counted (stream-ordered frees of pooled blocks come
 * back to the pools).  Types are the ABI's (cudaError_t and CUresult are
 * ints), so no CUDA header is needed to build the shim.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cuda_hooks.h"
#include "export.h"

typedef void *stream_t;

/* Forward to the real function of hook `id` with the given signature. */
#define FORWARD(id, ret, params, args)                  \
    do {                                                \
        mp_hook_count(MP_HOOK_##id);                    \
        ret(*real_) params;                             \
        void *r_ = mp_hook_real(MP_HOOK_##id);          \
        if (r_ == NULL)                                 \
            return MISSING;                             \
        memcpy(&real_, &r_, sizeof(r_));                \
        return real_ args;                              \
    } while (0)

/* ---- runtime ---------------------------------------------------------------- */
#define MISSING 35 /* cudaErrorInsufficientDriver */

MP_EXPORT int cudaMalloc(void **p, size_t n) { return mp_cuda_rt_malloc(p, n); }
MP_EXPORT int cudaFree(void *p) { return mp_cuda_rt_free(p); }
MP_EXPORT int cudaMallocHost(void **p, size_t n) { return mp_cuda_rt_host_alloc(MP_HOOK_cudaMallocHost, p, n, 0); }
MP_EXPORT int cudaHostAlloc(void **p, size_t n, unsigned f)
{
    return mp_cuda_rt_host_alloc(MP_HOOK_cudaHostAlloc, p, n, f);
}
MP_EXPORT int cudaFreeHost(void *p) { return mp_cuda_rt_host_free(p); }
MP_EXPORT int cudaMallocAsync(void **p, size_t n, stream_t s)
{
    FORWARD(cudaMallocAsync, int, (void **, size_t, stream_t), (p, n, s));
}
MP_EXPORT int cudaFreeAsync(void *p, stream_t s)
{
    int ours = mp_cuda_free_async_ours((mp_cu_ptr)(uintptr_t)p);
    if (ours) {
        mp_hook_count(MP_HOOK_cudaFreeAsync);
        return ours > 0 ? 0 : 1; /* 1: cudaErrorInvalidValue, a second free */
    }
    FORWARD(cudaFreeAsync, int, (void *, stream_t), (p, s));
}
MP_EXPORT int cudaMallocManaged(void **p, size_t n, unsigned f)
{
    FORWARD(cudaMallocManaged, int, (void **, size_t, unsigned), (p, n, f));
}
MP_EXPORT int cudaMallocPitch(void **p, size_t *pitch, size_t w, size_t h)
{
    FORWARD(cudaMallocPitch, int, (void **, size_t *, size_t, size_t), (p, pitch, w, h));
}

MP_EXPORT int cudaDeviceReset(void) { return mp_cuda_rt_device_reset(); }

/* ---- driver ----------------------------------------------------------------- */
#undef MISSING
#define MISSING MP_CUDA_ERROR_NOT_INITIALIZED

MP_EXPORT int cuMemAlloc_v2(mp_cu_ptr *p, size_t n) { return mp_cuda_drv_mem_alloc(p, n); }
MP_EXPORT int cuMemFree_v2(mp_cu_ptr p) { return mp_cuda_drv_mem_free(p); }
MP_EXPORT int cuMemAllocHost_v2(void **p, size_t n)
{
    return mp_cuda_drv_host_alloc(MP_HOOK_cuMemAllocHost_v2, p, n, 0);
}
MP_EXPORT int cuMemHostAlloc(void **p, size_t n, unsigned f)
{
    return mp_cuda_drv_host_alloc(MP_HOOK_cuMemHostAlloc, p, n, f);
}
MP_EXPORT int cuMemFreeHost(void *p) { return mp_cuda_drv_host_free(p); }
MP_EXPORT int cuMemAllocPitch_v2(mp_cu_ptr *p, size_t *pitch, size_t w, size_t h, unsigned e)
{
    FORWARD(cuMemAllocPitch_v2, int, (mp_cu_ptr *, size_t *, size_t, size_t, unsigned), (p, pitch, w, h, e));
}
MP_EXPORT int cuMemAllocManaged(mp_cu_ptr *p, size_t n, unsigned f)
{
    FORWARD(cuMemAllocManaged, int, (mp_cu_ptr *, size_t, unsigned), (p, n, f));
}
MP_EXPORT int cuMemAllocAsync(mp_cu_ptr *p, size_t n, stream_t s)
{
    FORWARD(cuMemAllocAsync, int, (mp_cu_ptr *, size_t, stream_t), (p, n, s));
}
MP_EXPORT int cuMemFreeAsync(mp_cu_ptr p, stream_t s)
{
    int ours = mp_cuda_free_async_ours(p);
    if (ours) {
        mp_hook_count(MP_HOOK_cuMemFreeAsync);
        return ours > 0 ? 0 : 1; /* 1: CUDA_ERROR_INVALID_VALUE, a second free */
    }
    FORWARD(cuMemFreeAsync, int, (mp_cu_ptr, stream_t), (p, s));
}
MP_EXPORT int cuMemAllocAsync_ptsz(mp_cu_ptr *p, size_t n, stream_t s)
{
    FORWARD(cuMemAllocAsync_ptsz, int, (mp_cu_ptr *, size_t, stream_t), (p, n, s));
}
MP_EXPORT int cuMemFreeAsync_ptsz(mp_cu_ptr p, stream_t s)
{
    int ours = mp_cuda_free_async_ours(p);
    if (ours) {
        mp_hook_count(MP_HOOK_cuMemFreeAsync_ptsz);
        return ours > 0 ? 0 : 1; /* 1: CUDA_ERROR_INVALID_VALUE, a second free */
    }
    FORWARD(cuMemFreeAsync_ptsz, int, (mp_cu_ptr, stream_t), (p, s));
}
MP_EXPORT int cuDevicePrimaryCtxReset_v2(int dev) { return mp_cuda_drv_primary_reset(dev); }
MP_EXPORT int cuCtxDestroy_v2(mp_cu_context ctx) { return mp_cuda_drv_ctx_destroy(ctx); }
MP_EXPORT int cuMemGetAddressRange_v2(mp_cu_ptr *base, size_t *size, mp_cu_ptr p)
{
    return mp_cuda_drv_address_range(base, size, p);
}

/* ---- streams: non-blocking ones must be fenced too -------------------------- */

/* Count the call and fetch the real function into *fn; false if none. */
static inline bool real_of(mp_hook_id_t id, void *fn)
{
    mp_hook_count(id);
    void *r = mp_hook_real(id);
    memcpy(fn, &r, sizeof(r));
    return r != NULL;
}

MP_EXPORT int cudaStreamCreateWithFlags(mp_cu_stream *s, unsigned f)
{
    int (*real)(mp_cu_stream *, unsigned);
    if (!real_of(MP_HOOK_cudaStreamCreateWithFlags, &real))
        return 35;
    return mp_cuda_stream_created(real(s, f), s, f);
}
MP_EXPORT int cudaStreamCreateWithPriority(mp_cu_stream *s, unsigned f, int prio)
{
    int (*real)(mp_cu_stream *, unsigned, int);
    if (!real_of(MP_HOOK_cudaStreamCreateWithPriority, &real))
        return 35;
    return mp_cuda_stream_created(real(s, f, prio), s, f);
}
MP_EXPORT int cudaStreamDestroy(mp_cu_stream s)
{
    int (*real)(mp_cu_stream);
    mp_cuda_stream_destroying(s);
    return real_of(MP_HOOK_cudaStreamDestroy, &real) ? real(s) : 35;
}
MP_EXPORT int cuStreamCreate(mp_cu_stream *s, unsigned f)
{
    int (*real)(mp_cu_stream *, unsigned);
    if (!real_of(MP_HOOK_cuStreamCreate, &real))
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    return mp_cuda_stream_created(real(s, f), s, f);
}
MP_EXPORT int cuStreamCreateWithPriority(mp_cu_stream *s, unsigned f, int prio)
{
    int (*real)(mp_cu_stream *, unsigned, int);
    if (!real_of(MP_HOOK_cuStreamCreateWithPriority, &real))
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    return mp_cuda_stream_created(real(s, f, prio), s, f);
}
MP_EXPORT int cuStreamDestroy_v2(mp_cu_stream s)
{
    int (*real)(mp_cu_stream);
    mp_cuda_stream_destroying(s);
    return real_of(MP_HOOK_cuStreamDestroy_v2, &real) ? real(s) : MP_CUDA_ERROR_NOT_INITIALIZED;
}

/* ---- IPC and stream capture ------------------------------------------------- */

MP_EXPORT int cuIpcGetMemHandle(void *handle, mp_cu_ptr p) { return mp_cuda_drv_ipc_get(handle, p); }

/* Each wrapper has the real signature (handles as opaque pointers). */
#define BEGIN_CAPTURE(name, params, args)                           \
    MP_EXPORT int name params                                       \
    {                                                               \
        int (*real) params;                                         \
        if (!real_of(MP_HOOK_##name, &real))                        \
            return MP_CUDA_ERROR_NOT_INITIALIZED;                   \
        return mp_cuda_capture_begun(real args);                    \
    }
#define END_CAPTURE(name)                                           \
    MP_EXPORT int name(stream_t s, void **graph)                    \
    {                                                               \
        int (*real)(stream_t, void **);                             \
        if (!real_of(MP_HOOK_##name, &real))                        \
            return MP_CUDA_ERROR_NOT_INITIALIZED;                   \
        return mp_cuda_capture_ended(real(s, graph));               \
    }

BEGIN_CAPTURE(cuStreamBeginCapture_v2, (stream_t s, int mode), (s, mode))
BEGIN_CAPTURE(cuStreamBeginCapture_v2_ptsz, (stream_t s, int mode), (s, mode))
BEGIN_CAPTURE(cuStreamBeginCaptureToGraph,
              (stream_t s, void *g, const void *deps, const void *edges, size_t n, int mode),
              (s, g, deps, edges, n, mode))
BEGIN_CAPTURE(cuStreamBeginCaptureToGraph_ptsz,
              (stream_t s, void *g, const void *deps, const void *edges, size_t n, int mode),
              (s, g, deps, edges, n, mode))
END_CAPTURE(cuStreamEndCapture)
END_CAPTURE(cuStreamEndCapture_ptsz)
