/*
 * The few CUDA driver types and values the core uses, as the driver ABI
 * defines them (cuda.h), so that the library and the preload build
 * without the CUDA toolkit and load libcuda.so.1 only when a program uses
 * CUDA.
 */
#ifndef MEMPOOL_CUDA_ABI_H
#define MEMPOOL_CUDA_ABI_H

#include <stddef.h>
#include <stdint.h>

typedef int mp_cu_result;             /* CUresult */
typedef unsigned long long mp_cu_ptr; /* CUdeviceptr */
typedef struct mp_cu_ctx *mp_cu_context;
typedef struct mp_cu_stream *mp_cu_stream;
typedef struct mp_cu_event *mp_cu_event;

enum {
    MP_CUDA_SUCCESS = 0,
    MP_CUDA_ERROR_INVALID_VALUE = 1,
    MP_CUDA_ERROR_OUT_OF_MEMORY = 2,
    MP_CUDA_ERROR_NOT_INITIALIZED = 3,
    MP_CUDA_ERROR_DEINITIALIZED = 4,
    MP_CUDA_ERROR_INVALID_HANDLE = 400,
    MP_CUDA_ERROR_NOT_FOUND = 500,
    MP_CUDA_ERROR_NOT_READY = 600,
    MP_CUDA_ERROR_CONTEXT_IS_DESTROYED = 709,
    MP_CUDA_ERROR_STREAM_CAPTURE_INVALIDATED = 901,
    MP_CUDA_ERROR_STREAM_CAPTURE_UNJOINED = 904,
};

#define MP_CU_STREAM_NON_BLOCKING 0x1u
#define MP_CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM 0x2u

/* cuMemHostRegister flags (CU_MEMHOSTREGISTER_*): the same bits as
 * cuMemHostAlloc's CU_MEMHOSTALLOC_PORTABLE and CU_MEMHOSTALLOC_DEVICEMAP. */
#define MP_CU_MEMHOSTREGISTER_PORTABLE 0x1u
#define MP_CU_MEMHOSTREGISTER_DEVICEMAP 0x2u

#define MP_CU_EVENT_DISABLE_TIMING 0x2u
#define MP_CU_STREAM_LEGACY ((mp_cu_stream)0x1)

#endif
