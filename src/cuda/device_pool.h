/* Device memory pools on the CUDA driver API: the interface of src/cuda/dpool_*.c
 * (their shared books: dpool.h). */
#ifndef MEMPOOL_DEVICE_POOL_H
#define MEMPOOL_DEVICE_POOL_H

#include <stdbool.h>

#include "cuda_abi.h"
#include "cuda_ctx.h"
#include "diag.h"
#define MP_DEV_CLASSES (1 + 4 * 31) /* 512 B .. 2^40 B */

/* A device or pinned pool's counters (mempool.h's pools use them too),
 * each listed once: X(TYPE, FIELD, KEY, UNIT).  FIELD is the member of
 * mp_device_stats_t, KEY its name in the stats file (docs/stats.md, device
 * and pinned pools), in the file's order; UNIT says how stats_json.c
 * writes it: num as it is, ns as seconds.  The file's keys come from this
 * list only, and report/pools_report.c takes the keys its "pools" objects share with
 * it from here (MP_DS_KEY), so a counter has one spelling in the file. */
#define MP_DEVICE_STATS(X)                                                                     \
    X(uint64_t, requests, "requests", num)                                                     \
    X(uint64_t, hits, "hits", num)                                                             \
    X(uint64_t, misses, "misses", num)                                                         \
    X(uint64_t, unpooled, "unpooled", num) /* above the maximum block size */                  \
    X(uint64_t, releases, "releases", num)                                                     \
    X(uint64_t, req_bytes, "bytes_requested", num)                                             \
    X(int64_t, in_use, "bytes_in_use", num)                                                    \
    X(int64_t, in_use_peak, "bytes_in_use_peak", num)                                          \
    X(int64_t, reserved, "bytes_reserved", num)                                                \
    X(int64_t, reserved_peak, "bytes_reserved_peak", num)                                      \
    X(int64_t, cached, "cached_bytes", num)                                                    \
    X(int64_t, segments, "segments", num) /* driver allocations held */                        \
    X(int64_t, segments_peak, "segments_peak", num)                                            \
    X(uint64_t, trims, "trims", num)                                                           \
    X(uint64_t, fences_recorded, "fences_recorded", num)                                       \
    X(uint64_t, fences_completed, "fences_completed", num)                                     \
    X(uint64_t, fences_pending, "fences_pending", num)                                         \
    X(uint64_t, fence_queries, "fence_queries", num) /* event queries the fences made */       \
    X(uint64_t, fence_errors, "fence_errors", num) /* not recorded, or answered an error */    \
    X(uint64_t, wait_ns, "wait_s", ns) /* in driver frees (trims, OOM releases, unpooled) */   \
    X(uint64_t, captured, "captured_pass_through", num) /* passed through during capture */    \
    X(uint64_t, ipc_exports, "ipc_exports", num) /* exported with cuIpcGetMemHandle */         \
    X(uint64_t, oom_retries, "oom_retries", num)                                               \
    X(uint64_t, ooms, "ooms", num)                                                             \
    X(uint64_t, drops, "context_drops", num)

typedef struct mp_device_stats {
    int device; /* ordinal of a context pool's device (-1: slot unused) */
#define MP_DS_FIELD(type, field, key, unit) type field;
    MP_DEVICE_STATS(MP_DS_FIELD)
#undef MP_DS_FIELD
    /* Not in the device and pinned pools' part of the file (mempool.h's
     * stats only: bytes_from_cache, pool_size). */
    uint64_t hit_bytes;    /* bytes of the blocks hits handed out */
    int64_t cached_blocks; /* blocks cached */
} mp_device_stats_t;

/* The stats file's key of a counter of MP_DEVICE_STATS, by its field:
 * MP_DS_KEY(in_use_peak) is "bytes_in_use_peak". */
#define MP_DS_KEY_FN(type, field, key, unit) \
    static inline const char *mp_ds_key_##field(void) { return key; }
MP_DEVICE_STATS(MP_DS_KEY_FN)
#undef MP_DS_KEY_FN
#define MP_DS_KEY(field) mp_ds_key_##field()


/* Size class of a device request: index, and the class size in *class_size
 * (512 B, then 4, 2 or 1 classes per doubling: MEMPOOL_DEVICE_SIZE_CLASSES;
 * indices are those of the quarter scheme in every case). */
int mp_device_class_of(size_t size, size_t *class_size);
size_t mp_device_class_size(int cls);
/* Allocate on the current context's device: a cached block whose fence has
 * completed, else cuMemAlloc (after releasing the cache once on OOM).
 * Returns the driver's CUresult; MP_CUDA_ERROR_NOT_INITIALIZED when there is
 * no usable driver or context (the caller passes the request through). */
mp_cu_result mp_device_alloc(mp_cu_ptr *out, size_t size);
/* 1 if p was ours (now cached or freed), 0 if the driver should free it,
 * -1 if it is a block the pool already holds (a second free: refused with
 * one message; the caller returns an invalid-value error). */
int mp_device_free(mp_cu_ptr p);
/* Pinned (page-locked) host memory, one pool per cuMemHostAlloc flag set
 * (portable 1, mapped 2, write-combined 4: never mixed); fenced like
 * device blocks, since async copies may still use a freed buffer. */
mp_cu_result mp_pinned_alloc(void **out, size_t size, unsigned flags);
int mp_pinned_free(void *p);
/* cuMemGetAddressRange for the start of a pooled block: its base and the
 * size the program asked for (not the class size).  1 if answered. */
int mp_device_range(mp_cu_ptr p, mp_cu_ptr *base, size_t *size);
/* The driver answered *base (and a size) for a pointer p inside one of our
 * segments or blocks: 1 and the program's block in *base and *size, -1 if p
 * lies in a block the program does not hold (not found), 0 if not ours. */
int mp_device_refine_range(mp_cu_ptr p, mp_cu_ptr *base, size_t *size);
/* cuIpcGetMemHandle on p: 1 for a whole-allocation block of ours (now
 * marked exported: freed to the driver, never reused), -1 for a packed
 * block (no handle can name it), 0 if not ours. */
int mp_device_ipc_export(mp_cu_ptr p);
void mp_pinned_stats(unsigned flags, mp_device_stats_t *out);
/* Free every cached block of a device's pools (segments whose blocks are
 * all free); returns bytes given back to the driver. */
size_t mp_device_trim(int dev);
/* Stats of context pool `slot` (0 .. MP_DEV_MAX-1, in order of first use). */
void mp_device_stats(int slot, mp_device_stats_t *out);

/* One size class of a pool, for the stats file's rows. */
typedef struct mp_dev_class_stats {
    uint64_t hits, misses, releases, req_bytes;
} mp_dev_class_stats_t;
/* Pool index: a device ordinal, or MP_DEV_MAX + flags for a pinned pool.
 * Copies MP_DEV_CLASSES rows. */
void mp_pool_class_stats(int pool, mp_dev_class_stats_t out[MP_DEV_CLASSES]);
/* Device dev's primary context was reset (or released for the last time):
 * its memory is gone, so its pool and its blocks in the other pools are
 * forgotten without being freed. */
void mp_device_drop(int dev);
/* cuCtxDestroy: the same for that context. */
void mp_device_drop_context(mp_cu_context ctx);
/* cuStreamDestroy: a later stream may get the same handle, so blocks
 * released on s are no longer reused on a stream of that handle at once. */
void mp_device_stream_destroyed(mp_cu_stream s);
/* An allocation the pools do not serve ran out of memory: free the
 * cached blocks of the current device (pinned: of the pinned pools) so
 * that the caller can retry once.  Returns bytes given back. */
size_t mp_device_release_for_oom(bool pinned);
/* Bytes the pools hold on device dev that the program is not using
 * (reserved minus in use): free memory as far as the program is concerned. */
size_t mp_device_cached_on(int dev);
/* In a forked child: the parent's device pointers are never reused. */
void mp_device_fork_child(void);
/* Bytes in use and reserved, device pools then pinned pools (the timeline). */
void mp_device_totals(int64_t out[4]);

/* ---- pools of the explicit API (mempool_create; api_pools.c) -------------
 * A pool index names any pool: context pools (mp_dpool_current), pinned
 * pools (MP_DEV_MAX + flags) and API pools (mp_dpool_open). */
#define MP_DPOOL_API_MAX 64
#define MP_DPOOL_EXACT 3 /* scheme: reuse a block only for the same size */

typedef struct mp_dpool_cfg {
    bool pinned;
    unsigned host_flags; /* pinned: cuMemHostAlloc flags */
    int ordinal;
    mp_cu_context ctx;   /* the context its memory lives in (pushed by the caller) */
    int scheme;          /* MP_SC_*, MP_DPOOL_EXACT, or -1 for the option's */
    bool zero;           /* zero blocks before reuse */
    int numa;            /* pinned: NUMA node, or -1 */
    size_t max_block;    /* 0: the kind's option */
    uint64_t cache_limit, max_blocks; /* 0: no limit */
} mp_dpool_cfg_t;

/* The current context's pool index, or -1 (no driver or context). */
int mp_dpool_current(void);
/* A new API pool; -1 if all MP_DPOOL_API_MAX are in use. */
int mp_dpool_open(const mp_dpool_cfg_t *cfg);
/* Free its cache and the slot: 0, or -1 while blocks are in use. */
int mp_dpool_close(int idx);
/* Allocate from pool idx (the caller has made its context current);
 * s/async: stream-ordered (a block released on s is reused at once). */
mp_cu_result mp_dpool_alloc(int idx, mp_cu_ptr *out, size_t size, mp_cu_stream s, bool async);
/* Release p to pool idx: 0, or -1 if p is not a live block of that pool. */
int mp_dpool_free(int idx, mp_cu_ptr p, mp_cu_stream s, bool async);
/* Pool index of a live block, or -1. */
int mp_dpool_owner(mp_cu_ptr p);
/* Free cached blocks until at most target bytes stay cached (0: all,
 * packed segments included).  Returns bytes freed. */
size_t mp_dpool_trim(int idx, size_t target);
void mp_dpool_stats(int idx, mp_device_stats_t *out);

#endif
