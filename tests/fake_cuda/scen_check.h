/* What the scenario programs (scen_rt.c, scen_drv.c) share: a failure
 * prints "FAIL why" (the one line the test reads) and exits 1. */
#ifndef SCEN_CHECK_H
#define SCEN_CHECK_H

#include <stdio.h>
#include <stdlib.h>

#define FAIL(...)                   \
    do {                            \
        printf("FAIL ");            \
        printf(__VA_ARGS__);        \
        puts("");                   \
        exit(1);                    \
    } while (0)
/* A CUDA call that must return 0 (cudaSuccess, CUDA_SUCCESS). */
#define CK(x)                                                        \
    do {                                                             \
        int e_ = (int)(x);                                           \
        if (e_ != 0)                                                 \
            FAIL("%s:%d %s returned %d", __FILE__, __LINE__, #x, e_); \
    } while (0)

#define MiB ((size_t)1 << 20)

#endif
