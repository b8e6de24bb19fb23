/* Device memory pools on the CUDA driver API (device_pool.c). */
#ifndef MEMPOOL_DEVICE_POOL_H
#define MEMPOOL_DEVICE_POOL_H

#include "cuda_abi.h"
#include "internal.h"

#define MP_DEV_MAX 16
#define MP_DEV_CLASSES (1 + 4 * 31) /* 512 B .. 2^40 B */

typedef struct mp_device_stats {
    uint64_t requests, hits, misses, unpooled, releases, req_bytes, trims;
    uint64_t fences_recorded, fences_pending, oom_retries, ooms, drops;
    int64_t in_use, in_use_peak, reserved, reserved_peak, cached;
} mp_device_stats_t;

/* Size class of a device request: index, and the class size in *class_size
 * (512 B, then 4 classes per doubling). */
int mp_device_class_of(size_t size, size_t *class_size);
/* Allocate on the current context's device: a cached block whose fence has
 * completed, else cuMemAlloc (after releasing the cache once on OOM).
 * Returns the driver's CUresult; MP_CUDA_ERROR_NOT_INITIALIZED when there is
 * no usable driver or context (the caller passes the request through). */
mp_cu_result mp_device_alloc(mp_cu_ptr *out, size_t size);
/* 1 if p was ours (now cached or freed), 0 if the driver should free it. */
int mp_device_free(mp_cu_ptr p);
/* Pinned (page-locked) host memory, one pool per cuMemHostAlloc flag set
 * (portable 1, mapped 2, write-combined 4: never mixed); fenced like
 * device blocks, since async copies may still use a freed buffer. */
mp_cu_result mp_pinned_alloc(void **out, size_t size, unsigned flags);
int mp_pinned_free(void *p);
/* cuMemGetAddressRange for the start of a pooled block: its base and the
 * size the program asked for (not the class size).  1 if answered. */
int mp_device_range(mp_cu_ptr p, mp_cu_ptr *base, size_t *size);
void mp_pinned_stats(unsigned flags, mp_device_stats_t *out);
/* Free every cached block of a device; returns bytes freed. */
size_t mp_device_trim(int dev);
void mp_device_stats(int dev, mp_device_stats_t *out);

/* One size class of a pool, for the stats file's rows. */
typedef struct mp_dev_class_stats {
    uint64_t hits, misses, releases, req_bytes;
} mp_dev_class_stats_t;
/* Pool index: a device ordinal, or MP_DEV_MAX + flags for a pinned pool.
 * Copies MP_DEV_CLASSES rows. */
void mp_pool_class_stats(int pool, mp_dev_class_stats_t out[MP_DEV_CLASSES]);
/* The device's memory is gone (context reset or destroyed): forget its
 * cached and live blocks without freeing them. */
void mp_device_drop(int dev);
/* Non-blocking streams are not ordered by the legacy stream: fences record
 * an event on each (learnt from the stream-creation hooks). */
void mp_device_stream_created(mp_cu_stream s, unsigned flags);
void mp_device_stream_destroyed(mp_cu_stream s);
/* In a forked child: the parent's device pointers are never reused. */
void mp_device_fork_child(void);
/* Device of a context (current context if ctx is NULL); -1 if unknown. */
int mp_device_of_context(mp_cu_context ctx);

#endif
