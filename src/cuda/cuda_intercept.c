/*
 * What the interposed CUDA driver functions do: device memory from the
 * device pools (device_pool.h); anything the pools cannot serve (no
 * current context yet, pooling off) or do not own goes to the real
 * function, so the driver still reports its own errors.  Allocations the
 * pools never serve get one retry after an out-of-memory failure, with the
 * cache released first: the cache never starves the program.
 */
#include <string.h>

#include "cuda_ctx.h"
#include "cuda_driver.h"
#include "cuda_hooks.h"
#include "device_pool.h"

static bool device_pooling(void)
{
    return mp_init() == MP_STATE_READY && mp_opt(MP_OPT_DEVICE) && !mp_opt(MP_OPT_DISABLE);
}

static bool pinned_pooling(void)
{
    return mp_init() == MP_STATE_READY && mp_opt(MP_OPT_PINNED) && !mp_opt(MP_OPT_DISABLE);
}

/* The real function of a row, as a typed pointer in *fn; false if none. */
static bool real_fn(mp_hook_id_t id, void *fn)
{
    void *r = mp_hook_real(id);
    memcpy(fn, &r, sizeof(r));
    return r != NULL;
}

bool mp_cuda_retry_after_oom(mp_cu_result rc, bool pinned)
{
    return rc == MP_CUDA_ERROR_OUT_OF_MEMORY && mp_device_release_for_oom(pinned) > 0;
}

mp_cu_result mp_cuda_mem_alloc(mp_cu_ptr *p, size_t size)
{
    mp_hook_count(MP_HOOK_cuMemAlloc_v2);
    if (p != NULL && size != 0 && device_pooling()) {
        mp_cu_result r = mp_device_alloc(p, size);
        if (r != MP_CUDA_ERROR_NOT_INITIALIZED)
            return r;
    }
    mp_cu_result (*real)(mp_cu_ptr *, size_t);
    if (!real_fn(MP_HOOK_cuMemAlloc_v2, &real))
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    mp_cu_result rc = real(p, size);
    return mp_cuda_retry_after_oom(rc, false) ? real(p, size) : rc;
}

mp_cu_result mp_cuda_mem_free(mp_cu_ptr p)
{
    mp_hook_count(MP_HOOK_cuMemFree_v2);
    int ours = p != 0 ? mp_device_free(p) : 0;
    if (ours)
        return ours > 0 ? MP_CUDA_SUCCESS : MP_CUDA_ERROR_INVALID_VALUE;
    mp_cu_result (*real)(mp_cu_ptr);
    if (!real_fn(MP_HOOK_cuMemFree_v2, &real))
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    return real(p);
}

/* cuMemHostAlloc and cuMemAllocHost_v2 (flags 0). */
mp_cu_result mp_cuda_host_alloc(mp_hook_id_t id, void **p, size_t size, unsigned flags)
{
    mp_hook_count(id);
    if (p != NULL && pinned_pooling()) {
        mp_cu_result r = mp_pinned_alloc(p, size, flags);
        if (r != MP_CUDA_ERROR_NOT_INITIALIZED)
            return r;
    }
    mp_cu_result rc;
    if (id == MP_HOOK_cuMemAllocHost_v2) {
        mp_cu_result (*real)(void **, size_t);
        if (!real_fn(id, &real))
            return MP_CUDA_ERROR_NOT_INITIALIZED;
        rc = real(p, size);
        return mp_cuda_retry_after_oom(rc, true) ? real(p, size) : rc;
    }
    mp_cu_result (*real)(void **, size_t, unsigned);
    if (!real_fn(id, &real))
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    rc = real(p, size, flags);
    return mp_cuda_retry_after_oom(rc, true) ? real(p, size, flags) : rc;
}

mp_cu_result mp_cuda_host_free(void *p)
{
    mp_hook_count(MP_HOOK_cuMemFreeHost);
    int ours = p != NULL ? mp_pinned_free(p) : 0;
    if (ours)
        return ours > 0 ? MP_CUDA_SUCCESS : MP_CUDA_ERROR_INVALID_VALUE;
    mp_cu_result (*real)(void *);
    if (!real_fn(MP_HOOK_cuMemFreeHost, &real))
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    return real(p);
}

/* Free memory as the program can use it: the driver's free bytes plus what
 * the shim holds cached on the device (MEMPOOL_DEVICE_MEMINFO=raw: the
 * driver's numbers).  Programs that size themselves from it (vLLM,
 * TensorFlow, RMM arenas) would otherwise shrink. */
mp_cu_result mp_cuda_mem_get_info(size_t *free_bytes, size_t *total)
{
    mp_hook_count(MP_HOOK_cuMemGetInfo_v2);
    mp_cu_result (*real)(size_t *, size_t *);
    if (!real_fn(MP_HOOK_cuMemGetInfo_v2, &real))
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    if (free_bytes == NULL || total == NULL)
        return real(free_bytes, total); /* the driver's own answer to a bad argument */
    size_t t = 0;
    mp_cu_result rc = real(free_bytes, &t);
    *total = t;
    if (rc == MP_CUDA_SUCCESS && mp_opt(MP_OPT_DEVICE_MEMINFO) == 0) {
        int dev = mp_cuda.loaded ? mp_device_of_context(NULL) : -1;
        size_t cached = dev >= 0 ? mp_device_cached_on(dev) : 0;
        *free_bytes = t && *free_bytes + cached > t ? t : *free_bytes + cached;
    }
    return rc;
}

/* Base and size of the block the program asked for, as for an allocation
 * of its own: the start of a block from our books; an interior pointer by
 * asking the driver (which knows the segment) and narrowing its answer. */
mp_cu_result mp_cuda_address_range(mp_cu_ptr *base, size_t *size, mp_cu_ptr p)
{
    mp_hook_count(MP_HOOK_cuMemGetAddressRange_v2);
    if (mp_device_range(p, base, size))
        return MP_CUDA_SUCCESS;
    mp_cu_result (*real)(mp_cu_ptr *, size_t *, mp_cu_ptr);
    if (!real_fn(MP_HOOK_cuMemGetAddressRange_v2, &real))
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    mp_cu_ptr b = 0;
    size_t n = 0;
    mp_cu_result rc = real(&b, &n, p);
    if (rc == MP_CUDA_SUCCESS) {
        int ours = mp_device_refine_range(p, &b, &n);
        if (ours < 0)
            return MP_CUDA_ERROR_NOT_FOUND;
        if (base)
            *base = b;
        if (size)
            *size = n;
    }
    return rc;
}

/* IPC: a block that is a whole driver allocation exports as itself (and
 * is never reused, since another process may map it); a packed block has
 * no handle of its own, so the export is refused rather than naming the
 * wrong bytes. */
mp_cu_result mp_cuda_ipc_get(void *handle, mp_cu_ptr p)
{
    mp_hook_count(MP_HOOK_cuIpcGetMemHandle);
    if (mp_device_ipc_export(p) < 0) {
        static _Atomic int said;
        if (atomic_exchange(&said, 1) == 0)
            mp_log(MP_LOG_ERROR, "cuIpcGetMemHandle on a block packed into a shared segment: "
                   "refused (CUDA_ERROR_INVALID_VALUE); run with MEMPOOL_DEVICE_PACK_MAX_SIZE=0 "
                   "to export small blocks");
        return MP_CUDA_ERROR_INVALID_VALUE;
    }
    mp_cu_result (*real)(void *, mp_cu_ptr);
    if (!real_fn(MP_HOOK_cuIpcGetMemHandle, &real))
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    return real(handle, p);
}

/* Stream-ordered free of a block the shim made (a program may mix
 * cudaMalloc and cudaFreeAsync): it joins the pool like any free, whose
 * fence covers every stream.  1 if it was ours. */
int mp_cuda_free_async_ours(mp_cu_ptr p) { return p != 0 ? mp_device_free(p) : 0; }

/* Stream capture: while any stream captures, the pools make no event call
 * (illegal in the default global capture mode) and pass allocations
 * through.  The count goes up before the real begin, so that no fence
 * races a capture starting in another thread, and down again if the begin
 * failed; a capture ends with cuStreamEndCapture's success or with the
 * errors that still end it (invalidated, unjoined). */
void mp_cuda_capture_begin(void) { mp_ctx_capture_begin(); }

static void capture_done(void)
{
    int n = atomic_load(&mp_captures);
    while (n > 0 && !atomic_compare_exchange_weak(&mp_captures, &n, n - 1))
        ;
}

mp_cu_result mp_cuda_capture_begun(mp_cu_result rc)
{
    if (rc != MP_CUDA_SUCCESS)
        capture_done();
    return rc;
}

mp_cu_result mp_cuda_capture_ended(mp_cu_result rc)
{
    if (rc == MP_CUDA_SUCCESS || rc == MP_CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
        || rc == MP_CUDA_ERROR_STREAM_CAPTURE_UNJOINED)
        capture_done();
    return rc;
}

mp_cu_result mp_cuda_stream_created(mp_cu_result rc, mp_cu_stream *s, unsigned flags)
{
    if (rc == MP_CUDA_SUCCESS && s != NULL && mp_init() == MP_STATE_READY)
        mp_ctx_stream_created(*s, flags);
    return rc;
}

void mp_cuda_stream_destroying(mp_cu_stream s)
{
    mp_ctx_stream_destroying(s);
    mp_device_stream_destroyed(s);
}

/* Resets free the device's memory behind our back: forget the pools, after
 * the real call (which waits for the device). */
mp_cu_result mp_cuda_primary_reset(mp_cu_result rc, int dev)
{
    if (rc == MP_CUDA_SUCCESS)
        mp_device_drop(dev);
    return rc;
}

/* The last release of a primary context resets it: then (the driver says
 * it is inactive) its memory is gone as after a reset. */
mp_cu_result mp_cuda_primary_released(mp_cu_result rc, int dev)
{
    unsigned flags = 0;
    int active = 1;
    if (rc == MP_CUDA_SUCCESS && mp_cuda.loaded && mp_cuda.primary_get_state
        && mp_cuda.primary_get_state(dev, &flags, &active) == MP_CUDA_SUCCESS && !active)
        mp_device_drop(dev);
    return rc;
}

mp_cu_result mp_cuda_ctx_destroyed(mp_cu_result rc, mp_cu_context ctx)
{
    if (rc == MP_CUDA_SUCCESS) /* that context's pool only; its memory is gone */
        mp_device_drop_context(ctx);
    return rc;
}
