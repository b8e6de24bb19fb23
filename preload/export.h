/*
 * What every file of the interposition layer shares: the attribute that
 * exports a wrapper (everything else in the shim is hidden), and the tail
 * call that glibc's caller-relative functions (dlopen, dlsym with
 * RTLD_NEXT) need, so that they see the program's frame as their caller.
 */
#ifndef MEMPOOL_PRELOAD_EXPORT_H
#define MEMPOOL_PRELOAD_EXPORT_H

#define MP_EXPORT __attribute__((visibility("default")))
/* Wrappers implement functions declared by system headers or not at all. */
#pragma GCC diagnostic ignored "-Wmissing-prototypes"

/* clang guarantees the tail call; gcc makes it at -O2 (checked by
 * tests/fake_cuda/test_cuda_preload.c and tests/compat). */
#if defined(__clang__)
#define MP_TAIL __attribute__((musttail))
#define MP_TAIL_FN
#else
#define MP_TAIL
#define MP_TAIL_FN __attribute__((optimize("O2", "optimize-sibling-calls")))
#endif

#endif
