/*
 * What the interposed CUDA allocation functions do: device memory from
 * the device pools (device_pool.c); anything the pools cannot serve (no
 * current context yet, pooling off) or do not own goes to the real
 * function, so the runtime and driver still report their own errors.
 */
#include <string.h>

#include "cuda_driver.h"
#include "cuda_hooks.h"
#include "device_pool.h"

typedef int (*rt_malloc_fn)(void **, size_t);
typedef int (*rt_free_fn)(void *);
typedef mp_cu_result (*drv_alloc_fn)(mp_cu_ptr *, size_t);
typedef mp_cu_result (*drv_free_fn)(mp_cu_ptr);

static bool device_pooling(void)
{
    return mp_init() == MP_STATE_READY && mp_opt(MP_OPT_DEVICE) && !mp_opt(MP_OPT_DISABLE);
}

int mp_cuda_rt_malloc(void **p, size_t size)
{
    mp_hook_count(MP_HOOK_cudaMalloc);
    /* During capture the runtime's own cuMemAlloc (our driver hook) counts
     * the pass-through. */
    if (p != NULL && size != 0 && device_pooling() && atomic_load(&mp_captures) == 0) {
        mp_cu_ptr d = 0;
        mp_cu_result r = mp_device_alloc(&d, size);
        if (r == MP_CUDA_SUCCESS) {
            *p = (void *)(uintptr_t)d;
            return 0; /* cudaSuccess */
        }
        /* Out of memory even after releasing the cache: let the runtime
         * fail too, so that cudaGetLastError tells the same story. */
    }
    rt_malloc_fn real;
    void *r = mp_hook_real(MP_HOOK_cudaMalloc);
    if (r == NULL)
        return 35; /* cudaErrorInsufficientDriver: no runtime behind us */
    memcpy(&real, &r, sizeof(r));
    return real(p, size);
}

int mp_cuda_rt_free(void *p)
{
    mp_hook_count(MP_HOOK_cudaFree);
    /* cudaFree(NULL) initialises the runtime: always forward it. */
    int ours = p != NULL ? mp_device_free((mp_cu_ptr)(uintptr_t)p) : 0;
    if (ours)
        return ours > 0 ? 0 : 1; /* cudaSuccess, cudaErrorInvalidValue */
    rt_free_fn real;
    void *r = mp_hook_real(MP_HOOK_cudaFree);
    if (r == NULL)
        return 35;
    memcpy(&real, &r, sizeof(r));
    return real(p);
}

mp_cu_result mp_cuda_drv_mem_alloc(mp_cu_ptr *p, size_t size)
{
    mp_hook_count(MP_HOOK_cuMemAlloc_v2);
    if (p != NULL && size != 0 && device_pooling()) {
        mp_cu_result r = mp_device_alloc(p, size);
        if (r != MP_CUDA_ERROR_NOT_INITIALIZED)
            return r;
    }
    if (!mp_cuda_load())
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    return mp_cuda.mem_alloc(p, size);
}

mp_cu_result mp_cuda_drv_mem_free(mp_cu_ptr p)
{
    mp_hook_count(MP_HOOK_cuMemFree_v2);
    int ours = p != 0 ? mp_device_free(p) : 0;
    if (ours)
        return ours > 0 ? MP_CUDA_SUCCESS : MP_CUDA_ERROR_INVALID_VALUE;
    if (!mp_cuda_load())
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    return mp_cuda.mem_free(p);
}

/* Resets free the device's memory behind our back: forget the pool, after
 * the real call (which waits for the device). */
int mp_cuda_rt_device_reset(void)
{
    mp_hook_count(MP_HOOK_cudaDeviceReset);
    int dev = mp_device_of_context(NULL);
    int (*real)(void);
    void *r = mp_hook_real(MP_HOOK_cudaDeviceReset);
    if (r == NULL)
        return 35;
    memcpy(&real, &r, sizeof(r));
    int rc = real();
    mp_device_drop(dev);
    return rc;
}

mp_cu_result mp_cuda_drv_primary_reset(int dev)
{
    mp_hook_count(MP_HOOK_cuDevicePrimaryCtxReset_v2);
    mp_cu_result (*real)(int);
    void *r = mp_hook_real(MP_HOOK_cuDevicePrimaryCtxReset_v2);
    if (r == NULL)
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    memcpy(&real, &r, sizeof(r));
    mp_cu_result rc = real(dev);
    mp_device_drop(dev);
    return rc;
}

mp_cu_result mp_cuda_drv_ctx_destroy(mp_cu_context ctx)
{
    mp_hook_count(MP_HOOK_cuCtxDestroy_v2);
    mp_cu_result (*real)(mp_cu_context);
    void *r = mp_hook_real(MP_HOOK_cuCtxDestroy_v2);
    if (r == NULL)
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    memcpy(&real, &r, sizeof(r));
    mp_cu_result rc = real(ctx);
    if (rc == MP_CUDA_SUCCESS) /* that context's pool only; its memory is gone */
        mp_device_drop_context(ctx);
    return rc;
}

int mp_cuda_stream_created(int rc, mp_cu_stream *s, unsigned flags)
{
    if (rc == 0 && s != NULL) /* cudaSuccess == CUDA_SUCCESS == 0 */
        mp_device_stream_created(*s, flags);
    return rc;
}

void mp_cuda_stream_destroying(mp_cu_stream s) { mp_device_stream_destroyed(s); }

static bool pinned_pooling(void)
{
    return mp_init() == MP_STATE_READY && mp_opt(MP_OPT_PINNED) && !mp_opt(MP_OPT_DISABLE);
}

/* cudaHostAlloc / cudaMallocHost (id tells which, flags 0 for the latter). */
int mp_cuda_rt_host_alloc(mp_hook_id_t id, void **p, size_t size, unsigned flags)
{
    mp_hook_count(id);
    if (p != NULL && pinned_pooling() && mp_pinned_alloc(p, size, flags) == MP_CUDA_SUCCESS)
        return 0;
    void *r = mp_hook_real(id);
    if (r == NULL)
        return 35;
    if (id == MP_HOOK_cudaMallocHost) {
        int (*real)(void **, size_t);
        memcpy(&real, &r, sizeof(r));
        return real(p, size);
    }
    int (*real)(void **, size_t, unsigned);
    memcpy(&real, &r, sizeof(r));
    return real(p, size, flags);
}

int mp_cuda_rt_host_free(void *p)
{
    mp_hook_count(MP_HOOK_cudaFreeHost);
    int ours = p != NULL ? mp_pinned_free(p) : 0;
    if (ours)
        return ours > 0 ? 0 : 1; /* cudaSuccess, cudaErrorInvalidValue */
    int (*real)(void *);
    void *r = mp_hook_real(MP_HOOK_cudaFreeHost);
    if (r == NULL)
        return 35;
    memcpy(&real, &r, sizeof(r));
    return real(p);
}

mp_cu_result mp_cuda_drv_host_alloc(mp_hook_id_t id, void **p, size_t size, unsigned flags)
{
    mp_hook_count(id);
    if (p != NULL && pinned_pooling()) {
        mp_cu_result r = mp_pinned_alloc(p, size, flags);
        if (r != MP_CUDA_ERROR_NOT_INITIALIZED)
            return r;
    }
    if (!mp_cuda_load())
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    return mp_cuda.host_alloc(p, size, flags); /* cuMemAllocHost == flags 0 */
}

mp_cu_result mp_cuda_drv_host_free(void *p)
{
    mp_hook_count(MP_HOOK_cuMemFreeHost);
    int ours = p != NULL ? mp_pinned_free(p) : 0;
    if (ours)
        return ours > 0 ? MP_CUDA_SUCCESS : MP_CUDA_ERROR_INVALID_VALUE;
    if (!mp_cuda_load())
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    return mp_cuda.host_free(p);
}

/* Base and size of the block the program asked for, as for an allocation
 * of its own: the start of a block from our books; an interior pointer by
 * asking the driver (which knows the segment) and narrowing its answer. */
mp_cu_result mp_cuda_drv_address_range(mp_cu_ptr *base, size_t *size, mp_cu_ptr p)
{
    mp_hook_count(MP_HOOK_cuMemGetAddressRange_v2);
    if (mp_device_range(p, base, size))
        return MP_CUDA_SUCCESS;
    mp_cu_result (*real)(mp_cu_ptr *, size_t *, mp_cu_ptr);
    void *r = mp_hook_real(MP_HOOK_cuMemGetAddressRange_v2);
    if (r == NULL)
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    memcpy(&real, &r, sizeof(r));
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
mp_cu_result mp_cuda_drv_ipc_get(void *handle, mp_cu_ptr p)
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
    void *r = mp_hook_real(MP_HOOK_cuIpcGetMemHandle);
    if (r == NULL)
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    memcpy(&real, &r, sizeof(r));
    return real(handle, p);
}

/* Stream-ordered free of a block the shim made (a program may mix
 * cudaMalloc and cudaFreeAsync): it joins the pool like any free, whose
 * fence covers every stream.  1 if it was ours. */
int mp_cuda_free_async_ours(mp_cu_ptr p) { return p != 0 ? mp_device_free(p) : 0; }

/* Stream capture: while any stream captures, the pools make no event call
 * (illegal in the default global capture mode) and pass allocations
 * through.  A capture ends with cuStreamEndCapture's success or with the
 * errors that still end it (invalidated, unjoined). */
mp_cu_result mp_cuda_capture_begun(mp_cu_result rc)
{
    if (rc == MP_CUDA_SUCCESS)
        atomic_fetch_add(&mp_captures, 1);
    return rc;
}

mp_cu_result mp_cuda_capture_ended(mp_cu_result rc)
{
    if (rc == MP_CUDA_SUCCESS || rc == 901 || rc == 904) { /* ..._INVALIDATED, ..._UNJOINED */
        int n = atomic_load(&mp_captures);
        while (n > 0 && !atomic_compare_exchange_weak(&mp_captures, &n, n - 1))
            ;
    }
    return rc;
}
