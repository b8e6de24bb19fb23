/*
 * CUDA interposition bookkeeping (cuda_hooks.c): the hook table from
 * cuda_hooks.def, the real functions behind each wrapper, call counts, and
 * the rewriting of dlsym / cuGetProcAddress answers.
 */
#ifndef MEMPOOL_CUDA_HOOKS_H
#define MEMPOOL_CUDA_HOOKS_H

#include "cuda_abi.h"
#include "diag.h"

typedef enum mp_hook_id {
#define MP_HOOK(name, path, required, proc, since) MP_HOOK_##name,
#include "cuda_hooks.def"
#undef MP_HOOK
    MP_HOOK_COUNT
} mp_hook_id_t;

/* runtime: no row since the runtime is reached through the driver; kept
 * for the stats file's cuda_paths. */
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

/* The preload's wrappers, indexed by mp_hook_id_t: its constant table is
 * passed to the lookup rewriters below. */
typedef void (*mp_hook_fn)(void);
/* The real function behind a wrapper: the pointer dlsym/cuGetProcAddress
 * really returned, else the definition in the loaded libcuda.so.1 (any
 * scope), else the next one after the shim (RTLD_NEXT); NULL if none (one
 * warning). */
void *mp_hook_real(mp_hook_id_t id);
static inline void mp_hook_count(mp_hook_id_t id)
{
    atomic_fetch_add_explicit(&mp_hook_calls[id], 1, memory_order_relaxed);
}

/* The handle of the libcuda.so.1 the program loaded (any scope), or NULL:
 * the driver is never loaded by this call. */
void *mp_libcuda_handle(void);
/* Names dlsym may have to rewrite: a cheap first test for the hot path. */
static inline bool mp_cuda_name_maybe(const char *name)
{
    return name && name[0] == 'c' && name[1] == 'u';
}
/* dlsym(handle, name) for a name that may be ours. */
void *mp_cuda_dlsym(const mp_hook_fn *wrappers, void *handle, const char *name);
/* Rewrite a cuGetProcAddress answer: returns the pointer to hand out for
 * symbol (our wrapper, or real unchanged), from the row that matches the
 * request's version; flags bit 1 (per-thread default stream) selects the
 * _ptsz row. */
void *mp_cuda_proc_answer(const mp_hook_fn *wrappers, const char *symbol, void *real, int version,
                          uint64_t flags);

/* ---- the interposed behaviour (cuda_intercept.c) ----------------------
 * Each takes the real function's arguments and returns its CUresult. */
mp_cu_result mp_cuda_mem_alloc(mp_cu_ptr *p, size_t size);
mp_cu_result mp_cuda_mem_free(mp_cu_ptr p);
mp_cu_result mp_cuda_host_alloc(mp_hook_id_t id, void **p, size_t size, unsigned flags);
mp_cu_result mp_cuda_host_free(void *p);
mp_cu_result mp_cuda_address_range(mp_cu_ptr *base, size_t *size, mp_cu_ptr p);
mp_cu_result mp_cuda_ipc_get(void *handle, mp_cu_ptr p);
mp_cu_result mp_cuda_mem_get_info(size_t *free_bytes, size_t *total);
/* A stream-ordered free of a pooled block: 1 taken back, 0 not ours,
 * -1 a second free (refused). */
int mp_cuda_free_async_ours(mp_cu_ptr p);
/* After an allocating call the pools do not serve failed with rc: true if
 * it ran out of memory and the cache gave something back (retry once). */
bool mp_cuda_retry_after_oom(mp_cu_result rc, bool pinned);
/* Stream capture: counted before the real call (begin), undone if it failed. */
void mp_cuda_capture_begin(void);
mp_cu_result mp_cuda_capture_begun(mp_cu_result rc);
mp_cu_result mp_cuda_capture_ended(mp_cu_result rc);
/* Stream creation/destruction (drivers without cuCtxRecordEvent). */
mp_cu_result mp_cuda_stream_created(mp_cu_result rc, mp_cu_stream *s, unsigned flags);
void mp_cuda_stream_destroying(mp_cu_stream s);
/* Context lifecycle: after the real call, forget what died with it. */
mp_cu_result mp_cuda_primary_reset(mp_cu_result rc, int dev);
mp_cu_result mp_cuda_primary_released(mp_cu_result rc, int dev);
mp_cu_result mp_cuda_ctx_destroyed(mp_cu_result rc, mp_cu_context ctx);

#endif
