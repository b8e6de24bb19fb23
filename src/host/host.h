/*
 * host/: above diag/.  The malloc pools: per-thread caches, shared pools per
 * size class, jemalloc behind them (malloc_pools.c; the hit path inline in
 * host_inline.h), and the rest of the malloc family (malloc_api.c,
 * cxx_new.c).
 */
#ifndef MEMPOOL_HOST_H
#define MEMPOOL_HOST_H

#include "diag.h"

/* ---- malloc_pools.c -------------------------------------------------------- */
/* One size class of a thread cache, in one cache line: the bin, a stack of
 * free blocks' addresses (like jemalloc's cache_bin: pushing and popping
 * never touch the often cold blocks), and the thread's counters for the
 * class.  The counters are plain integers written only by the owning
 * thread, so each update on the hit path is one add to memory (relaxed
 * atomics cost a load, an add and a store each under gcc); the stats read
 * a live thread's counters as a hint with MP_PEEK, as jemalloc's
 * tcache_stats_merge reads other threads' cache_bin counters. */
typedef struct mp_tclass {
    void **slots;   /* cap entries; slots[count - 1] is the most recent */
    uint32_t count; /* blocks cached */
    uint32_t cap;   /* most blocks kept (0 = caching off) */
    size_t size;    /* the class's block size (a copy: keeps the hit path on this line) */
    uint64_t hits, misses, releases, req_bytes;
    int64_t inuse_delta; /* bytes not yet published to mp_class_stats */
} __attribute__((aligned(64))) mp_tclass_t;

typedef struct mp_tcache {
    size_t cached_limit; /* bytes; checked when a bin overflows */
    struct mp_tcache *next, *prev; /* registry of live thread caches */
    size_t map_size;               /* bytes mapped for this cache and its slots */
    /* cl[MP_CLASS_NONE] (and every class past mp_sc.count) stays empty with
     * cap 0, so the hit path needs no test of the class it looked up. */
    mp_tclass_t cl[MP_CLASS_MAX + 1];
} mp_tcache_t;

extern _Thread_local mp_tcache_t *mp_tls_tcache __attribute__((tls_model("initial-exec")));

/* Process-wide counters per class (slow paths, retired threads). */
typedef struct mp_class_stats {
    _Atomic uint64_t hits, misses, releases, req_bytes, trims, trim_bytes;
    _Atomic int64_t inuse, inuse_peak;       /* published bytes handed out */
    _Atomic int64_t reserved, reserved_peak; /* bytes taken from jemalloc */
} mp_class_stats_t;

typedef struct mp_bypass_stats {
    _Atomic uint64_t count, req_bytes, releases, fallbacks;
    _Atomic int64_t inuse, inuse_peak;
} mp_bypass_stats_t;

extern mp_class_stats_t mp_class_stats[MP_CLASS_MAX];
extern mp_bypass_stats_t mp_bypass_stats;
#define MP_PUBLISH_BYTES ((int64_t)16384)

void mp_host_init(void);
void *mp_host_malloc_slow(size_t size);
void mp_host_free_slow(void *p, unsigned cls);
void mp_host_publish(unsigned cls, int64_t delta);
/* malloc's hit path when its bin's inuse_delta reached a step: publish d
 * (the caller has zeroed the delta) and return p; called in tail position
 * (the hit path saves no registers).  free's calls mp_host_publish. */
void *mp_host_publish_alloc(unsigned cls, int64_t d, void *p);
void *mp_host_aligned(size_t align, size_t size);
/* Zeroed memory for a request above the largest class: jemalloc knows which
 * pages are fresh, so large calloc does not touch (and commit) every page. */
void *mp_host_calloc_large(size_t size);
/* calloc of size bytes (at least MP_CALLOC_FRESH) of class cls: zeroes only
 * a block that may hold old data. */
#define MP_CALLOC_FRESH 4096
void *mp_host_calloc_class(unsigned cls, size_t size);
void *mp_host_realloc(void *p, size_t size);
size_t mp_host_usable_size(const void *p);
void mp_host_free_other(void *p);
/* Return every block in the shared pools (and the caller's thread cache)
 * to jemalloc; returns bytes released. */
size_t mp_host_trim(void);
void mp_host_thread_exit(void *tc);
void mp_host_fork_prepare(void);
void mp_host_fork_parent(void);
/* Child: after the unlock (mp_host_fork_parent), take over the caches of
 * the threads that do not exist in the child (may call jemalloc). */
void mp_host_fork_child_adopt(void);
/* Zero the event counters, peaks to current levels (the child of a fork). */
void mp_host_stats_reset(void);
/* Add the live thread caches' counters; the callback runs with the registry
 * locked, once per live cache. */
void mp_host_for_each_tcache(void (*fn)(const mp_tcache_t *, void *), void *arg);
/* Cached blocks/bytes in the shared pool of one class. */
void mp_host_shared_cached(unsigned cls, uint64_t *blocks, uint64_t *bytes);

#include "host_stats.h"

#endif /* MEMPOOL_HOST_H */
