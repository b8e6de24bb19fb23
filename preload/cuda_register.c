/*
 * The address of every CUDA wrapper, by hook id, from the one table, as
 * constant data: relocated by the dynamic loader before any constructor
 * runs, so a library that uses CUDA from its own constructor, before the
 * shim's, is pooled too.  Only addresses are taken here, so each name is
 * declared with a neutral type (their real prototypes live in
 * cuda_loader.c and cuda_memory.c).
 */
#include "cuda_hooks.h"
#include "cuda_wrappers.h"

#define MP_HOOK(name, path, required, proc, since) void name(void);
#include "cuda_hooks.def"
#undef MP_HOOK

const mp_hook_fn mp_cuda_wrappers[MP_HOOK_COUNT] = {
#define MP_HOOK(name, path, required, proc, since) name,
#include "cuda_hooks.def"
#undef MP_HOOK
};
