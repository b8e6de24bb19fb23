/*
 * CUDA hooks: the table, the real functions, and rewriting lookups.
 *
 * Every CUDA program reaches the driver's allocation functions one of
 * three ways: the driver's exported cuMemAlloc_v2 (we export the same
 * names), a pointer dlsym found in libcuda.so.1, or a pointer from
 * cuGetProcAddress (how cudart, static or shared, takes every entry
 * point).  dlsym and cuGetProcAddress are interposed too: they call the
 * real function first, remember its answer, and hand out our wrapper for
 * the rows of cuda_hooks.def only, matched on name, version and flags.
 *
 * The wrapper table is the preload's constant data, passed in by its
 * dlsym and cuGetProcAddress wrappers: correct before any constructor
 * has run, and nothing here refers upward to the preload.
 */
#include <dlfcn.h>
#include <string.h>

#include "cuda_hooks.h"

const mp_hook_desc_t mp_hook_table[MP_HOOK_COUNT] = {
#define MP_HOOK(name, path, required, proc, since) {#name, proc, MP_PATH_##path, required, since},
#include "cuda_hooks.def"
#undef MP_HOOK
};

_Atomic uint64_t mp_hook_calls[MP_HOOK_COUNT];
_Atomic uint64_t mp_hook_handed_out[MP_HOOK_COUNT];
_Atomic int mp_hook_missing[MP_HOOK_COUNT];
static _Atomic(void *) real[MP_HOOK_COUNT];
static _Atomic(void *) libcuda;

void *mp_libcuda_handle(void)
{
    void *h = atomic_load_explicit(&libcuda, memory_order_acquire);
    if (h == NULL) {
        /* Whatever scope the program loaded it in (RTLD_LOCAL included):
         * never load it here, a program without CUDA stays without. */
        h = mp_real_dlopen()("libcuda.so.1", RTLD_LAZY | RTLD_NOLOAD);
        if (h != NULL)
            atomic_store_explicit(&libcuda, h, memory_order_release);
    }
    return h;
}

void *mp_hook_real(mp_hook_id_t id)
{
    void *r = atomic_load_explicit(&real[id], memory_order_acquire);
    if (r != NULL)
        return r;
    /* The driver's own definition, found through its handle: RTLD_NEXT
     * misses a libcuda.so.1 that was opened RTLD_LOCAL (a Python
     * extension's).  RTLD_NEXT stays the fallback for anything else. */
    void *h = mp_libcuda_handle();
    if (h != NULL)
        r = mp_real_dlsym()(h, mp_hook_table[id].name);
    if (r == NULL)
        r = mp_real_dlsym()(RTLD_NEXT, mp_hook_table[id].name);
    if (r != NULL) {
        atomic_store_explicit(&real[id], r, memory_order_release);
    } else if (atomic_exchange(&mp_hook_missing[id], 1) == 0) {
        /* Called, yet nothing real behind it: say so once. */
        mp_log(MP_LOG_WARN, "%s was called but no real %s was found behind the shim; "
               "the call fails", mp_hook_table[id].name, mp_hook_table[id].name);
    }
    return r;
}

static int find_name(const char *name)
{
    for (int i = 0; i < MP_HOOK_COUNT; i++)
        if (strcmp(mp_hook_table[i].name, name) == 0)
            return i;
    return -1;
}

/* The row for a cuGetProcAddress request: PROC_NAME matches, and of those
 * the one with the newest signature the requested version has. */
static int find_proc(const char *symbol, int version)
{
    int best = -1;
    for (int i = 0; i < MP_HOOK_COUNT; i++) {
        const mp_hook_desc_t *d = &mp_hook_table[i];
        if (d->proc_name[0] && version >= d->since && strcmp(d->proc_name, symbol) == 0
            && strstr(d->name, "_ptsz") == NULL && (best < 0 || d->since > mp_hook_table[best].since))
            best = i;
    }
    return best;
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

static void *hand_out(const mp_hook_fn *wrappers, int id, void *r)
{
    void *w;
    if (id < 0 || r == NULL || wrappers == NULL)
        return r;
    memcpy(&w, &wrappers[id], sizeof(w));
    if (w == NULL || r == w) /* dlsym(RTLD_DEFAULT) finds our own export */
        return r;
    atomic_store_explicit(&real[id], r, memory_order_release);
    atomic_fetch_add_explicit(&mp_hook_handed_out[id], 1, memory_order_relaxed);
    return w;
}

void *mp_cuda_dlsym(const mp_hook_fn *wrappers, void *handle, const char *name)
{
    void *r = mp_real_dlsym()(handle, name);
    int id = find_name(name);
    if (id < 0 || id == MP_HOOK_dlsym)
        return r;
    return hand_out(wrappers, id, r);
}

void *mp_cuda_proc_answer(const mp_hook_fn *wrappers, const char *symbol, void *r, int version,
                          uint64_t flags)
{
    /* An older version may have another signature (before CUDA 3.2 the
     * memory functions took 32-bit sizes, before 12.0 cuGetProcAddress
     * took 4 arguments): those get the real function untouched. */
    int id = symbol ? find_proc(symbol, version) : -1;
    if (id < 0)
        return r;
    if (flags & MP_CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM)
        id = ptsz_row(id);
    return hand_out(wrappers, id, r);
}
