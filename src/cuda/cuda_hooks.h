/*
 * CUDA interposition bookkeeping (cuda_hooks.c): the hook table from
 * cuda_hooks.def, the real functions behind each wrapper, call counts, and
 * the rewriting of dlsym / cuGetProcAddress answers.
 */
#ifndef MEMPOOL_CUDA_HOOKS_H
#define MEMPOOL_CUDA_HOOKS_H

#include "cuda_abi.h"
#include "internal.h"

typedef enum mp_hook_id {
#define MP_HOOK(name, path, required, proc, since) MP_HOOK_##name,
#include "cuda_hooks.def"
#undef MP_HOOK
    MP_HOOK_COUNT
} mp_hook_id_t;

enum { MP_PATH_loader, MP_PATH_runtime, MP_PATH_driver };

typedef struct mp_hook_desc {
    const char *name, *proc_name;
    int path;
    int required;
    int since; /* CUDA version of the wrapped signature */
} mp_hook_desc_t;

extern const mp_hook_desc_t mp_hook_table[MP_HOOK_COUNT];
extern _Atomic uint64_t mp_hook_calls[MP_HOOK_COUNT];
/* How often each wrapper was handed out by dlsym / cuGetProcAddress. */
extern _Atomic uint64_t mp_hook_handed_out[MP_HOOK_COUNT];
/* Set when a wrapper was called but no real function could be found. */
extern _Atomic int mp_hook_missing[MP_HOOK_COUNT];

/* The preload registers its wrappers (indexed by mp_hook_id_t) at start. */
typedef void (*mp_hook_fn)(void);
void mp_cuda_hooks_register(mp_hook_fn const wrappers[MP_HOOK_COUNT]);
/* The real function behind a wrapper: the pointer dlsym/cuGetProcAddress
 * really returned, else the next definition after the shim (RTLD_NEXT). */
void *mp_hook_real(mp_hook_id_t id);
static inline void mp_hook_count(mp_hook_id_t id)
{
    atomic_fetch_add_explicit(&mp_hook_calls[id], 1, memory_order_relaxed);
}

/* glibc's dlsym, found with dlvsym (the shim exports its own dlsym). */
typedef void *(*mp_dlsym_fn)(void *, const char *);
mp_dlsym_fn mp_real_dlsym(void);
/* Names dlsym may have to rewrite: a cheap first test for the hot path. */
static inline bool mp_cuda_name_maybe(const char *name)
{
    return name && name[0] == 'c' && name[1] == 'u';
}
/* dlsym(handle, name) for a name that may be ours. */
void *mp_cuda_dlsym(void *handle, const char *name);
/* Rewrite a cuGetProcAddress / cudaGetDriverEntryPoint answer: returns the
 * pointer to hand out for symbol (our wrapper, or real unchanged).  flags:
 * the request's; bit 1 (per-thread default stream) selects the _ptsz row. */
void *mp_cuda_proc_answer(const char *symbol, void *real, int version, uint64_t flags);

/* The interposed behaviour (cuda_intercept.c). */
mp_cu_result mp_cuda_drv_ipc_get(void *handle, mp_cu_ptr p);
/* A stream-ordered free of a pooled block: 1 taken back, 0 not ours,
 * -1 a second free (refused). */
int mp_cuda_free_async_ours(mp_cu_ptr p);
mp_cu_result mp_cuda_capture_begun(mp_cu_result rc);
mp_cu_result mp_cuda_capture_ended(mp_cu_result rc);
int mp_cuda_rt_malloc(void **p, size_t size);
int mp_cuda_rt_free(void *p);
mp_cu_result mp_cuda_drv_mem_alloc(mp_cu_ptr *p, size_t size);
mp_cu_result mp_cuda_drv_mem_free(mp_cu_ptr p);
int mp_cuda_rt_device_reset(void);
mp_cu_result mp_cuda_drv_address_range(mp_cu_ptr *base, size_t *size, mp_cu_ptr p);
int mp_cuda_rt_host_alloc(mp_hook_id_t id, void **p, size_t size, unsigned flags);
int mp_cuda_rt_host_free(void *p);
mp_cu_result mp_cuda_drv_host_alloc(mp_hook_id_t id, void **p, size_t size, unsigned flags);
mp_cu_result mp_cuda_drv_host_free(void *p);
/* Stream creation/destruction: non-blocking streams join the fences. */
int mp_cuda_stream_created(int rc, mp_cu_stream *s, unsigned flags);
void mp_cuda_stream_destroying(mp_cu_stream s);
mp_cu_result mp_cuda_drv_primary_reset(int dev);
mp_cu_result mp_cuda_drv_ctx_destroy(mp_cu_context ctx);

#endif
