/*
 * mempool — public API: explicit host, pinned and device memory pools.
 *
 * Link with `pkg-config --cflags --libs mempool`.  When libmempool_preload.so
 * is preloaded as well, its definitions of these functions take precedence
 * (it is first in the symbol search order), so a call always reaches the
 * pools that actually serve the process, and the default pools below are
 * the very pools that serve malloc, cudaMalloc and cudaHostAlloc.
 *
 * Errors, everywhere: functions returning int or long long return 0 (or a
 * byte count >= 0) on success and a NEGATIVE errno value on failure;
 * functions returning a pointer return NULL on failure and set errno to the
 * positive value.  The codes:
 *   EINVAL  a bad argument or config, or a pointer released to a pool that
 *           did not hand it out (another pool, malloc, released twice);
 *   ENOMEM  no memory, after the pool released its cache and retried once;
 *   ENODEV  a device or pinned pool without a usable CUDA driver, or with
 *           a device ordinal the driver does not have;
 *   ENOTSUP NUMA placement asked for on a machine (or in a container) that
 *           does not allow it, or an operation a kind does not have;
 *   EBUSY   mempool_destroy of a pool whose blocks are still acquired.
 * Every detected misuse also prints one line on stderr starting "mempool:".
 *
 * Thread safety: every function may be called from any thread at any time,
 * except that a pool must not be used by any thread during or after its
 * mempool_destroy.
 *
 * Units: sizes and byte counts are bytes; alignments are bytes (powers of two).
 */
#ifndef MEMPOOL_H
#define MEMPOOL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define MEMPOOL_VERSION_MAJOR 0
#define MEMPOOL_VERSION_MINOR 2
#define MEMPOOL_VERSION_PATCH 0

/* cudaStream_t and CUstream are both `struct CUstream_st *`: pass either.
 * NULL is the legacy default stream. */
struct CUstream_st;
typedef struct CUstream_st *mempool_stream_t;

/* A pool (opaque). */
typedef struct mempool mempool_t;

typedef enum mempool_kind {
    MEMPOOL_KIND_HOST = 0,   /* pageable host memory (jemalloc arenas) */
    MEMPOOL_KIND_PINNED = 1, /* page-locked host memory (cuMemHostAlloc) */
    MEMPOOL_KIND_DEVICE = 2, /* CUDA device memory (cuMemAlloc) */
} mempool_kind_t;

typedef enum mempool_size_classes {
    MEMPOOL_CLASSES_DEFAULT = 0, /* the kind's MEMPOOL_*_SIZE_CLASSES (quarter) */
    MEMPOOL_CLASSES_QUARTER = 1, /* 4 classes per doubling: <= 25% rounding waste */
    MEMPOOL_CLASSES_HALF = 2,    /* 2 per doubling: <= 50% waste, more reuse */
    MEMPOOL_CLASSES_POW2 = 3,    /* 1 per doubling: <= 100% waste, most reuse */
    MEMPOOL_CLASSES_EXACT = 4,   /* a block is reused only for the same size */
} mempool_size_classes_t;

#define MEMPOOL_NUMA_ANY (-1) /* no NUMA policy: the kernel's default placement */

/* Config flags. */
#define MEMPOOL_ZERO_ON_RELEASE 0x1u /* released blocks are zeroed before reuse */
#define MEMPOOL_NO_STATS 0x2u        /* leave the pool out of stats files and reports */

/*
 * Pool configuration.  Versioned by its first member: always fill it with
 * mempool_config_init(), which sets struct_size and the defaults, then
 * change the fields you need.  Later versions only append fields.
 */
typedef struct mempool_config {
    size_t struct_size;   /* sizeof(mempool_config_t), set by mempool_config_init */
    mempool_kind_t kind;
    int device;           /* device ordinal (device pools; pinned pools: the device
                             whose streams fence reuse).  Default 0. */
    int numa_node;        /* host and pinned pools: the node blocks are placed on,
                             or MEMPOOL_NUMA_ANY (default) */
    size_t max_cached_blocks; /* most blocks kept for reuse, all sizes together
                                 (the seeds' max_pool_size); 0 = no limit (default) */
    size_t max_block_size;    /* larger requests are served but never cached
                                 (max_buffer_size).  Default 1 GiB; host: at most 1 GiB */
    size_t cache_limit;       /* most bytes kept for reuse; 0 = no limit (default) */
    size_t alignment;         /* of every block: a power of two; 0 = the kind's
                                 natural one (host 16, pinned and device 256) */
    mempool_size_classes_t size_classes; /* default MEMPOOL_CLASSES_DEFAULT */
    unsigned flags;           /* MEMPOOL_ZERO_ON_RELEASE | MEMPOOL_NO_STATS */
    unsigned host_alloc_flags; /* pinned pools: cuMemHostAlloc flags (portable 1,
                                  devicemap 2, writecombined 4).  Default 0 */
    const char *name;         /* shown in stats and reports; copied, at most 63
                                 bytes kept.  NULL = "<kind>-<n>" */
    double pressure_threshold; /* 0 (default) = off.  In (0, 1): when more than
                                  this fraction of memory is in use (host and pinned:
                                  system RAM or the cgroup limit; device: the
                                  device's memory), the pressure monitor clears the
                                  pool's cache.  The seeds' cleanup_threshold. */
} mempool_config_t;

/*
 * Counters of one pool.  Versioned like the config: set struct_size to
 * sizeof(mempool_stats_t) before calling mempool_get_stats.
 */
typedef struct mempool_stats {
    size_t struct_size;
    char name[64];
    mempool_kind_t kind;
    int device;                /* ordinal (device and pinned pools), else -1 */
    int numa_node;             /* or MEMPOOL_NUMA_ANY */
    uint64_t pool_size;        /* blocks cached now (seeds: pool_size) */
    uint64_t bytes_cached;     /* bytes of those blocks (total_bytes) */
    uint64_t acquired;         /* successful acquires (total_acquired) */
    uint64_t released;         /* successful releases (total_released) */
    uint64_t hits;             /* acquires served from the cache (cache_hits) */
    uint64_t misses;           /* acquires that allocated (cache_misses) */
    uint64_t unpooled;         /* acquires above max_block_size (neither hit nor miss) */
    double hit_rate;           /* hits / (hits + misses), 0 when there were none */
    uint64_t bytes_in_use;     /* bytes of blocks acquired and not yet released */
    uint64_t peak_bytes_in_use;
    uint64_t bytes_reserved;   /* in use + cached: what the pool holds from the system */
    uint64_t peak_bytes_reserved;
    uint64_t bytes_requested;  /* sum of the sizes asked for */
    uint64_t bytes_from_cache; /* bytes of the blocks hits handed out: allocations
                                  saved (the seeds' memorySaved) */
    uint64_t trims;            /* blocks freed by limits, clear, trim and pressure */
    uint64_t pressure_events;  /* times the pressure monitor cleared this pool */
    uint64_t release_errors;   /* releases refused (foreign pointer, twice) */
} mempool_stats_t;

typedef enum mempool_format {
    MEMPOOL_FORMAT_JSON = 0, /* the "pools" objects of docs/stats.md */
    MEMPOOL_FORMAT_TEXT = 1, /* one line per pool, for people */
} mempool_format_t;

/* The library's version as "MAJOR.MINOR.PATCH".  Static string; never fails. */
const char *mempool_version(void);

/*
 * mempool_config_init - fill *cfg with struct_size and the defaults of kind.
 * Returns 0, or -EINVAL (cfg NULL or kind unknown).
 */
int mempool_config_init(mempool_config_t *cfg, mempool_kind_t kind);

/*
 * mempool_create - a new pool with its own cache, limits and counters.
 * @cfg: from mempool_config_init (a struct_size smaller than this header's
 *       is accepted: missing fields take their defaults).
 * @out: receives the pool.
 * Returns 0; -EINVAL (bad field: alignment not a power of two or > 1 MiB,
 * threshold outside [0, 1), unknown kind/classes/flags, numa_node not a
 * node of this machine, NUMA node on a device pool, more than 64 pools);
 * -ENODEV (device/pinned without CUDA, or a bad ordinal); -ENOTSUP (NUMA
 * placement refused by the kernel); -ENOMEM.
 * Host blocks come from a jemalloc arena (one per NUMA node, bound with
 * mbind(MPOL_PREFERRED)); device and pinned blocks from the CUDA caching
 * allocator of the preload (docs/design.md), fenced the same way.
 */
int mempool_create(const mempool_config_t *cfg, mempool_t **out);

/*
 * mempool_destroy - free the pool's cached blocks and the pool.
 * Returns 0; -EINVAL (NULL, a default pool, not a pool); -EBUSY when blocks
 * are still acquired (the pool stays usable: release them and call again).
 */
int mempool_destroy(mempool_t *pool);

/*
 * mempool_default - the process-wide pool of a kind (the singleton the
 * seeds call get_memory_pool()).  Host: the size-class pools behind malloc;
 * device: the pool of the calling thread's current CUDA context (there must
 * be one: cudaSetDevice or cuCtxSetCurrent first); pinned: the pool of
 * cudaMallocHost.  With the preload these are the pools it serves the
 * program from.  The handle is valid for the life of the process.
 * Returns NULL with errno EINVAL (unknown kind) or ENODEV (no CUDA driver).
 */
mempool_t *mempool_default(mempool_kind_t kind);

/*
 * mempool_acquire - a block of at least size bytes, aligned to the pool's
 * alignment (host default pool: 16 bytes, like malloc).  A cached block of
 * the same size class is reused (a hit), else one is allocated (a miss);
 * device and pinned blocks are reused only once the device work issued
 * before their release has completed.  The contents are undefined unless
 * the pool zeroes on release.  size 0 is served as 1 byte.
 * Returns the block, or NULL with errno EINVAL (NULL pool), ENOMEM (after
 * releasing the cache and retrying once), ENODEV (the device's context is
 * gone).  Device blocks are device pointers (CUdeviceptr values).
 */
void *mempool_acquire(mempool_t *pool, size_t size);

/*
 * mempool_release - give a block back to the pool it came from.  It is
 * cached for reuse (zeroed first with MEMPOOL_ZERO_ON_RELEASE) unless the
 * pool's limits are reached, then freed.  ptr NULL is a no-op (returns 0).
 * Device and pinned blocks may still be used by work queued on the device:
 * the pool fences them (legacy stream and blocking streams; for a
 * non-blocking stream use mempool_release_async).
 * Returns 0, or -EINVAL for a pointer this pool does not hold: released
 * twice, from another pool, or never acquired (the block is left alone;
 * custom pools always detect this, the default host pool only with the
 * preload's debug checks).  One case needs MEMPOOL_DEBUG=1 even in custom
 * pools: two threads releasing the same block at the same instant (without
 * it the hit path checks and sets the block's state with a load and a
 * store, not a compare-and-swap: both releases can pass, and the block is
 * then handed out twice, like a double free() under a malloc).
 */
int mempool_release(mempool_t *pool, void *ptr);

/*
 * mempool_acquire_async / mempool_release_async - stream-ordered variants
 * for device and pinned pools (the model of cudaMallocAsync): a block
 * released on a stream is reused at once by an acquire on the same stream
 * (stream order makes that safe), and by other streams once the work the
 * stream had queued at release time has completed (an event).
 * Errors as mempool_acquire / mempool_release, plus EINVAL (-EINVAL) for a
 * host pool.
 */
void *mempool_acquire_async(mempool_t *pool, size_t size, mempool_stream_t stream);
int mempool_release_async(mempool_t *pool, void *ptr, mempool_stream_t stream);

/*
 * mempool_clear - free every cached block of the pool (seeds: clear()).
 * Device and pinned blocks are freed with cuMemFree/cuMemFreeHost, which
 * wait for the device.  Host pools: the shared stacks and the calling
 * thread's cache now; another thread's cache (at most 15 blocks and
 * 256 KiB per size class for a custom pool) is flushed at that thread's
 * next call on the pool, or when it exits, and the pool then trims to the
 * same target again.  Blocks over 256 KiB are never thread-cached.
 * Returns the bytes freed now (>= 0), or -EINVAL.
 */
long long mempool_clear(mempool_t *pool);

/*
 * mempool_trim - free cached blocks, least recently released first, until
 * at most target bytes stay cached.  mempool_trim(pool, 0) == mempool_clear.
 * Returns the bytes freed (>= 0), or -EINVAL.
 */
long long mempool_trim(mempool_t *pool, size_t target);

/*
 * mempool_get_stats - copy the pool's counters into *out.
 * out->struct_size must be set (to sizeof(mempool_stats_t) of the caller's
 * header); only that many bytes are written.
 * Returns 0, or -EINVAL (NULL, struct_size too small to hold name).
 */
int mempool_get_stats(mempool_t *pool, mempool_stats_t *out);

/*
 * mempool_write_stats - write the stats of one pool (or of every pool,
 * default ones included, when pool is NULL) to the file descriptor fd.
 * JSON: an object {"pools": [...]} with one object per pool, keys as in
 * mempool_stats_t (docs/stats.md).  Text: one line per pool.
 * Returns 0, -EINVAL, or -EIO (write failed).
 */
int mempool_write_stats(mempool_t *pool, int fd, mempool_format_t format);

/*
 * mempool_pressure_poll - run one pressure check now, as the monitor thread
 * does on its timer: every pool (default pools with
 * MEMPOOL_PRESSURE_THRESHOLD) whose threshold is exceeded is cleared.
 * Returns the bytes freed (>= 0).
 */
long long mempool_pressure_poll(void);

/*
 * mempool_strerror - a static description of a code returned by this API
 * (negative or positive errno value).  Never NULL.
 */
const char *mempool_strerror(int err);

/*
 * mempool_stats_dump - write the stats file now, in the same JSON schema as
 * the exit-time report (docs/stats.md).
 * @path: file to write, or NULL for the MEMPOOL_STATS_FILE template
 *        (%p pid, %h host, %e executable).  Written atomically (temporary
 *        file + rename in the same directory), mode 0600.
 * Returns 0, or -EINVAL (path too long), -EIO (the file could not be
 * written; one "mempool:" line on stderr says why).
 */
int mempool_stats_dump(const char *path);

/*
 * mempool_trim_all - clear every pool: the host size-class pools (shared
 * pools and the calling thread's cache), every device and pinned pool, and
 * every custom pool.  Returns the bytes freed (>= 0).
 */
long long mempool_trim_all(void);

#ifdef __cplusplus
}
#endif

#endif /* MEMPOOL_H */
