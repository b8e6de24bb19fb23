/*
 * CUDA hooks: the table, the real functions, and rewriting lookups.
 *
 * Binaries reach CUDA's allocation functions three ways: the runtime's
 * exported cudaMalloc (we export the same names), the driver's exported
 * cuMemAlloc_v2 (likewise), and, for statically linked cudart (nvcc's
 * default), pointers from cuGetProcAddress, itself found with dlsym on
 * libcuda.so.1.  So dlsym and cuGetProcAddress are interposed too: they
 * call the real function first, remember its answer, and hand out our
 * wrapper for the memory functions only.
 */
#include <dlfcn.h>
#include <string.h>

#include "cuda_driver.h"
#include "cuda_hooks.h"

const mp_hook_desc_t mp_hook_table[MP_HOOK_COUNT] = {
#define MP_HOOK(name, path, required, proc, since) {#name, proc, MP_PATH_##path, required, since},
#include "cuda_hooks.def"
#undef MP_HOOK
};

_Atomic uint64_t mp_hook_calls[MP_HOOK_COUNT];
_Atomic uint64_t mp_hook_handed_out[MP_HOOK_COUNT];
_Atomic int mp_hook_missing[MP_HOOK_COUNT];
static void *wrappers[MP_HOOK_COUNT]; /* as data pointers, the way dlsym returns them */
static _Atomic(void *) real[MP_HOOK_COUNT];
static _Atomic(mp_dlsym_fn) real_dlsym;

void mp_cuda_hooks_register(mp_hook_fn const w[MP_HOOK_COUNT])
{
    for (int i = 0; i < MP_HOOK_COUNT; i++)
        memcpy(&wrappers[i], &w[i], sizeof(void *));
}

mp_dlsym_fn mp_real_dlsym(void)
{
    mp_dlsym_fn f = atomic_load_explicit(&real_dlsym, memory_order_acquire);
    if (f == NULL) {
        void *p = mp_glibc_next("dlsym");
        memcpy(&f, &p, sizeof(p));
        atomic_store_explicit(&real_dlsym, f, memory_order_release);
    }
    return f;
}

void *mp_hook_real(mp_hook_id_t id)
{
    void *r = atomic_load_explicit(&real[id], memory_order_acquire);
    if (r == NULL) {
        r = mp_real_dlsym()(RTLD_NEXT, mp_hook_table[id].name);
        if (r != NULL) {
            atomic_store_explicit(&real[id], r, memory_order_release);
        } else if (atomic_exchange(&mp_hook_missing[id], 1) == 0) {
            /* Called, yet nothing real behind it: say so once. */
            mp_log(MP_LOG_WARN, "%s was called but no real %s was found behind the shim; "
                   "the call fails", mp_hook_table[id].name, mp_hook_table[id].name);
        }
    }
    return r;
}

static int find(const char *name, bool by_proc_name)
{
    for (int i = 0; i < MP_HOOK_COUNT; i++) {
        const char *n = by_proc_name ? mp_hook_table[i].proc_name : mp_hook_table[i].name;
        if (n[0] && strcmp(n, name) == 0)
            return i;
    }
    return -1;
}

/* The row handed out for a per-thread-stream request of row id: its _ptsz
 * sibling (kept apart: each has its own real function), or id itself when
 * the function takes no stream. */
static int ptsz_row(int id)
{
    size_t n = strlen(mp_hook_table[id].name);
    for (int i = 0; i < MP_HOOK_COUNT; i++)
        if (strncmp(mp_hook_table[i].name, mp_hook_table[id].name, n) == 0
            && strcmp(mp_hook_table[i].name + n, "_ptsz") == 0)
            return i;
    return id;
}

static void *hand_out(int id, void *r)
{
    if (id < 0 || r == NULL || wrappers[id] == NULL || r == wrappers[id])
        return r;
    atomic_store_explicit(&real[id], r, memory_order_release);
    atomic_fetch_add_explicit(&mp_hook_handed_out[id], 1, memory_order_relaxed);
    return wrappers[id];
}

void *mp_cuda_dlsym(void *handle, const char *name)
{
    void *r = mp_real_dlsym()(handle, name);
    int id = find(name, false);
    if (id < 0 || id == MP_HOOK_dlsym)
        return r;
    return hand_out(id, r);
}

void *mp_cuda_proc_answer(const char *symbol, void *r, int version, uint64_t flags)
{
    int id = symbol ? find(symbol, true) : -1;
    /* An older version may have another signature (before CUDA 3.2 the
     * memory functions took 32-bit sizes): leave those. */
    if (id < 0 || version < mp_hook_table[id].since)
        return r;
    if (flags & 2u) /* CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM */
        id = ptsz_row(id);
    return hand_out(id, r);
}
