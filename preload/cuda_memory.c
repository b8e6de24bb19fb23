/*
 * The CUDA driver entry points the shim exports (and hands out through
 * dlsym and cuGetProcAddress): device and pinned memory, memory queries,
 * IPC, context lifecycle, streams and capture go to the core
 * (src/cuda/cuda_intercept.c); the allocations the pools never serve
 * (managed, pitched, stream-ordered, virtual memory) are forwarded with one
 * retry after out of memory, the cache released first.  Types are the
 * ABI's (CUresult is an int, handles are pointers), so no CUDA header is
 * needed to build the shim.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cuda_hooks.h"
#include "export.h"

typedef void *stream_t;

/* Count the call and fetch the real function into *fn; false if none. */
static inline bool real_of(mp_hook_id_t id, void *fn)
{
    mp_hook_count(id);
    void *r = mp_hook_real(id);
    memcpy(fn, &r, sizeof(r));
    return r != NULL;
}

/* Forward to the real function of a row, retrying once after out of
 * memory with the cache released (device or pinned). */
#define FORWARD_OOM(id, pinned, params, args)                              \
    do {                                                                  \
        int(*real_) params;                                               \
        if (!real_of(MP_HOOK_##id, &real_))                               \
            return MP_CUDA_ERROR_NOT_INITIALIZED;                         \
        int rc_ = real_ args;                                             \
        return mp_cuda_retry_after_oom(rc_, pinned) ? real_ args : rc_;   \
    } while (0)

/* A stream-ordered free of a block the shim made returns it to the pool. */
#define FREE_ASYNC(id)                                                    \
    MP_EXPORT int id(mp_cu_ptr p, stream_t s)                             \
    {                                                                     \
        int ours = mp_cuda_free_async_ours(p);                            \
        if (ours) {                                                       \
            mp_hook_count(MP_HOOK_##id);                                  \
            return ours > 0 ? MP_CUDA_SUCCESS : MP_CUDA_ERROR_INVALID_VALUE; \
        }                                                                 \
        int (*real)(mp_cu_ptr, stream_t);                                 \
        return real_of(MP_HOOK_##id, &real) ? real(p, s) : MP_CUDA_ERROR_NOT_INITIALIZED; \
    }

/* ---- memory ----------------------------------------------------------------- */

MP_EXPORT int cuMemAlloc_v2(mp_cu_ptr *p, size_t n) { return mp_cuda_mem_alloc(p, n); }
MP_EXPORT int cuMemFree_v2(mp_cu_ptr p) { return mp_cuda_mem_free(p); }
MP_EXPORT int cuMemAllocHost_v2(void **p, size_t n) { return mp_cuda_host_alloc(MP_HOOK_cuMemAllocHost_v2, p, n, 0); }
MP_EXPORT int cuMemHostAlloc(void **p, size_t n, unsigned f) { return mp_cuda_host_alloc(MP_HOOK_cuMemHostAlloc, p, n, f); }
MP_EXPORT int cuMemFreeHost(void *p) { return mp_cuda_host_free(p); }
MP_EXPORT int cuMemAllocPitch_v2(mp_cu_ptr *p, size_t *pitch, size_t w, size_t h, unsigned e)
{
    FORWARD_OOM(cuMemAllocPitch_v2, false, (mp_cu_ptr *, size_t *, size_t, size_t, unsigned), (p, pitch, w, h, e));
}
MP_EXPORT int cuMemAllocManaged(mp_cu_ptr *p, size_t n, unsigned f)
{
    FORWARD_OOM(cuMemAllocManaged, false, (mp_cu_ptr *, size_t, unsigned), (p, n, f));
}
MP_EXPORT int cuMemAllocAsync(mp_cu_ptr *p, size_t n, stream_t s)
{
    FORWARD_OOM(cuMemAllocAsync, false, (mp_cu_ptr *, size_t, stream_t), (p, n, s));
}
MP_EXPORT int cuMemAllocAsync_ptsz(mp_cu_ptr *p, size_t n, stream_t s)
{
    FORWARD_OOM(cuMemAllocAsync_ptsz, false, (mp_cu_ptr *, size_t, stream_t), (p, n, s));
}
FREE_ASYNC(cuMemFreeAsync)
FREE_ASYNC(cuMemFreeAsync_ptsz)
/* cuMemCreate(handle, size, prop, flags): NCCL's and PyTorch's expandable
 * segments' physical memory. */
MP_EXPORT int cuMemCreate(void *handle, size_t n, const void *prop, unsigned long long f)
{
    FORWARD_OOM(cuMemCreate, false, (void *, size_t, const void *, unsigned long long), (handle, n, prop, f));
}
MP_EXPORT int cuMemGetInfo_v2(size_t *free_bytes, size_t *total) { return mp_cuda_mem_get_info(free_bytes, total); }
MP_EXPORT int cuMemGetAddressRange_v2(mp_cu_ptr *base, size_t *size, mp_cu_ptr p)
{
    return mp_cuda_address_range(base, size, p);
}
MP_EXPORT int cuIpcGetMemHandle(void *handle, mp_cu_ptr p) { return mp_cuda_ipc_get(handle, p); }

/* ---- contexts: what dies with them leaves the pools ------------------------- */

/* Both versions (before CUDA 11 the same functions had no _v2 suffix). */
#define PRIMARY(name, after)                                                 \
    MP_EXPORT int name(int dev)                                              \
    {                                                                        \
        int (*real)(int);                                                    \
        if (!real_of(MP_HOOK_##name, &real))                                 \
            return MP_CUDA_ERROR_NOT_INITIALIZED;                            \
        return after(real(dev), dev);                                        \
    }
PRIMARY(cuDevicePrimaryCtxReset, mp_cuda_primary_reset)
PRIMARY(cuDevicePrimaryCtxReset_v2, mp_cuda_primary_reset)
PRIMARY(cuDevicePrimaryCtxRelease, mp_cuda_primary_released)
PRIMARY(cuDevicePrimaryCtxRelease_v2, mp_cuda_primary_released)
MP_EXPORT int cuCtxDestroy_v2(mp_cu_context ctx)
{
    int (*real)(mp_cu_context);
    if (!real_of(MP_HOOK_cuCtxDestroy_v2, &real))
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    return mp_cuda_ctx_destroyed(real(ctx), ctx);
}

/* ---- streams: fenced on drivers without cuCtxRecordEvent -------------------- */

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
/* Green-context streams are non-blocking by definition. */
MP_EXPORT int cuGreenCtxStreamCreate(mp_cu_stream *s, void *green, unsigned f, int prio)
{
    int (*real)(mp_cu_stream *, void *, unsigned, int);
    if (!real_of(MP_HOOK_cuGreenCtxStreamCreate, &real))
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    return mp_cuda_stream_created(real(s, green, f, prio), s, f | MP_CU_STREAM_NON_BLOCKING);
}
MP_EXPORT int cuStreamDestroy_v2(mp_cu_stream s)
{
    int (*real)(mp_cu_stream);
    if (!real_of(MP_HOOK_cuStreamDestroy_v2, &real))
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    mp_cuda_stream_destroying(s);
    return real(s);
}

/* ---- stream capture --------------------------------------------------------- */

/* Each wrapper has the real signature (handles as opaque pointers). */
#define BEGIN_CAPTURE(name, params, args)                           \
    MP_EXPORT int name params                                       \
    {                                                               \
        int (*real) params;                                         \
        if (!real_of(MP_HOOK_##name, &real))                        \
            return MP_CUDA_ERROR_NOT_INITIALIZED;                   \
        mp_cuda_capture_begin();                                    \
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
