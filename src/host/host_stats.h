/*
 * A snapshot of the malloc pools' counters: one walk of the live data
 * (host_stats.c) that the renderers (report/stats_json.c, stats_text.c: JSON file, text
 * table, summary) and the API's default host pool read.
 */
#ifndef MEMPOOL_HOST_STATS_H
#define MEMPOOL_HOST_STATS_H

#include "core.h"

/* X-macro of a row's counters: name in JSON, then meaning.  Counters only
 * go up; levels (current + peak) are listed separately. */
#define MP_ROW_COUNTERS(X)                                                    \
    X(requests, "requests served (hits + misses [+ bypasses])")             \
    X(hits, "served from a cache")                                          \
    X(misses, "served by a new block (carved, or from jemalloc)")                        \
    X(releases, "blocks freed back to the pool")                            \
    X(bytes_requested, "bytes asked for")                                   \
    X(bytes_served_from_cache, "bytes of the blocks reused (memory saved)") \
    X(trims, "cached blocks returned to jemalloc (limits, malloc_trim; carved blocks stay)")    \
    X(trim_bytes, "bytes of those blocks")

#define MP_ROW_LEVELS(X)                                                      \
    X(bytes_in_use, "bytes of blocks handed out and not freed")             \
    X(bytes_reserved, "bytes the pool holds (carved or jemalloc's): in use + cached")

typedef struct mp_row {
    size_t size; /* class size; 0 for totals */
#define MP_FIELD(name, doc) uint64_t name;
    MP_ROW_COUNTERS(MP_FIELD)
#undef MP_FIELD
#define MP_LEVEL(name, doc) int64_t name, name##_peak;
    MP_ROW_LEVELS(MP_LEVEL)
#undef MP_LEVEL
    uint64_t cached_blocks, cached_bytes;
} mp_row_t;

typedef struct mp_snapshot {
    mp_row_t total;
    uint64_t bypasses, bypass_bytes, fallbacks;
    int64_t bypass_in_use, bypass_in_use_peak;
    unsigned nrows;
    mp_row_t rows[MP_CLASS_MAX];
    uint64_t mapped; /* bytes of the reservation jemalloc has been given */
    double duration_s;
} mp_snapshot_t;

/* host_stats.c: the malloc pools' counters now (racy reads of live
 * threads' counters: exact when they are quiet). */
void mp_stats_snapshot(mp_snapshot_t *s);
/* Bytes in use over all host kinds, published (exact to MP_PUBLISH_BYTES
 * per class and thread). */
extern _Atomic int64_t mp_total_inuse, mp_total_inuse_peak;
extern _Atomic int64_t mp_total_reserved, mp_total_reserved_peak;

#endif
