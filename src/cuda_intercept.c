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
    if (p != NULL && size != 0 && device_pooling()) {
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
    if (p != NULL && mp_device_free((mp_cu_ptr)(uintptr_t)p))
        return 0;
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
    if (p != 0 && mp_device_free(p))
        return MP_CUDA_SUCCESS;
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
    int dev = mp_device_of_context(ctx);
    mp_cu_result (*real)(mp_cu_context);
    void *r = mp_hook_real(MP_HOOK_cuCtxDestroy_v2);
    if (r == NULL)
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    memcpy(&real, &r, sizeof(r));
    mp_cu_result rc = real(ctx);
    mp_device_drop(dev); /* pools are per device: conservative */
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
    if (p != NULL && mp_pinned_free(p))
        return 0;
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
    if (p != NULL && mp_pinned_free(p))
        return MP_CUDA_SUCCESS;
    if (!mp_cuda_load())
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    return mp_cuda.host_free(p);
}

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
    return real(base, size, p);
}
