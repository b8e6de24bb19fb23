/* The preload's table of CUDA wrappers (cuda_register.c), handed to the
 * core's lookup rewriters by the dlsym and cuGetProcAddress wrappers. */
#ifndef MEMPOOL_PRELOAD_CUDA_WRAPPERS_H
#define MEMPOOL_PRELOAD_CUDA_WRAPPERS_H

#include "cuda_hooks.h"

extern const mp_hook_fn mp_cuda_wrappers[MP_HOOK_COUNT];

#endif
