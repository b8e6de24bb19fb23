/*
 * A snapshot of the counters: one walk of the live data (stats.c) that the
 * renderers (stats_write.c: JSON file, text table, summary) read.
 */
#ifndef MEMPOOL_STATS_H
#define MEMPOOL_STATS_H

#include "internal.h"

/* The stats file's schema version (docs/stats.md, docs/stats.schema.json).
 * scripts/mempool-report takes it from here (scripts/gen-report-consts.py):
 * keep it a plain number. */
#define MP_STATS_SCHEMA_VERSION 3

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

void mp_stats_snapshot(mp_snapshot_t *s);
/* Bytes in use and reserved of every kind (host, device, pinned) into
 * v[MP_TL_VALUES]: the timeline's reader, handed to it by init.c. */
void mp_stats_totals(int64_t *v);
/* Bytes in use over all host kinds, published (exact to MP_PUBLISH_BYTES
 * per class and thread). */
extern _Atomic int64_t mp_total_inuse, mp_total_inuse_peak;
extern _Atomic int64_t mp_total_reserved, mp_total_reserved_peak;

#endif
