/* The real CUDA driver's entry points the device pools use (cuda_driver.c). */
#ifndef MEMPOOL_CUDA_DRIVER_H
#define MEMPOOL_CUDA_DRIVER_H

#include <stdbool.h>

#include "cuda_abi.h"
#include "cuda_hooks.h"
#include "diag.h"

typedef struct mp_cuda {
    bool loaded;
    int version; /* cuDriverGetVersion: 1000 * major + 10 * minor */
    mp_cu_result (*init)(unsigned);
    mp_cu_result (*mem_alloc)(mp_cu_ptr *, size_t);
    mp_cu_result (*mem_free)(mp_cu_ptr);
    mp_cu_result (*event_create)(mp_cu_event *, unsigned);
    mp_cu_result (*event_record)(mp_cu_event, mp_cu_stream);
    mp_cu_result (*event_query)(mp_cu_event);
    mp_cu_result (*event_sync)(mp_cu_event);
    mp_cu_result (*event_destroy)(mp_cu_event);
    mp_cu_result (*ctx_get_device)(int *);
    mp_cu_result (*ctx_get_current)(mp_cu_context *);
    mp_cu_result (*ctx_push)(mp_cu_context);
    mp_cu_result (*ctx_pop)(mp_cu_context *);
    mp_cu_result (*host_alloc)(void **, size_t, unsigned);
    mp_cu_result (*host_free)(void *);
    mp_cu_result (*total_mem)(size_t *, int);
    /* Optional (NULL if the driver lacks them). */
    mp_cu_result (*device_count)(int *);
    mp_cu_result (*device_get)(int *, int);
    mp_cu_result (*primary_retain)(mp_cu_context *, int);
    mp_cu_result (*primary_release)(int);
    mp_cu_result (*primary_get_state)(int, unsigned *, int *);
    mp_cu_result (*mem_get_info)(size_t *, size_t *);
    mp_cu_result (*memset_async)(mp_cu_ptr, unsigned char, size_t, mp_cu_stream);
    mp_cu_result (*host_register)(void *, size_t, unsigned);
    mp_cu_result (*host_unregister)(void *);
    mp_cu_result (*ctx_synchronize)(void);
    /* CUDA >= 12.5: one event that covers all of a context's work. */
    mp_cu_result (*ctx_record_event)(mp_cu_context, mp_cu_event);
} mp_cuda_t;

extern mp_cuda_t mp_cuda;
/* Load the driver once; false if there is none (or it lacks an entry point). */
bool mp_cuda_load(void);

#endif
