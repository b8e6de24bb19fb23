/*
 * Hands the core the address of every CUDA wrapper, by hook id, from the
 * one table.  Only addresses are taken here, so each name is declared with
 * a neutral type (their real prototypes live in cuda_loader.c and
 * cuda_memory.c).
 */
#include "cuda_hooks.h"

#define MP_HOOK(name, path, required, proc, since) void name(void);
#include "cuda_hooks.def"
#undef MP_HOOK

__attribute__((constructor)) static void mp_cuda_register(void)
{
    mp_hook_fn const w[MP_HOOK_COUNT] = {
#define MP_HOOK(name, path, required, proc, since) name,
#include "cuda_hooks.def"
#undef MP_HOOK
    };
    mp_cuda_hooks_register(w);
}
