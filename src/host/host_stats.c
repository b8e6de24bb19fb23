/*
 * The malloc pools' counters in one snapshot: folds the process-wide
 * counters, the live thread caches and the shared pools into rows per size
 * class and a total (read by the report and the API's default host pool).
 */
#include <stddef.h>
#include <string.h>
#include <time.h>

#include "host.h"

/* Reads the counters of threads that may be running: plain integers their
 * owners write (host.h), read whole but not ordered, so a hint; TSan would
 * call the pair a race. */
MP_PEEK_READER static void add_tcache(const mp_tcache_t *tc, void *arg)
{
    mp_snapshot_t *s = arg;
    for (unsigned c = 0; c < mp_sc.count; c++) {
        const mp_tclass_t *t = &tc->cl[c];
        mp_row_t *r = &s->rows[c];
        r->hits += MP_PEEK(t->hits);
        r->misses += MP_PEEK(t->misses);
        r->releases += MP_PEEK(t->releases);
        r->bytes_requested += MP_PEEK(t->req_bytes);
        r->cached_blocks += MP_PEEK(t->count);
    }
}

void mp_stats_snapshot(mp_snapshot_t *s)
{
    /* Zero what is filled in, not the rows of classes that do not exist:
     * the report's snapshot is static storage, left untouched past them. */
    memset(s, 0, offsetof(mp_snapshot_t, rows));
    memset(s->rows, 0, mp_sc.count * sizeof(s->rows[0]));
    s->mapped = 0;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    s->duration_s = (double)(now.tv_sec - mp_start_mono.tv_sec)
                    + (double)(now.tv_nsec - mp_start_mono.tv_nsec) / 1e9;
    s->nrows = mp_sc.count;
    for (unsigned c = 0; c < mp_sc.count; c++) {
        mp_class_stats_t *g = &mp_class_stats[c];
        mp_row_t *r = &s->rows[c];
        r->size = mp_sc.size[c];
        r->hits = MP_LOAD(g->hits);
        r->misses = MP_LOAD(g->misses);
        r->releases = MP_LOAD(g->releases);
        r->bytes_requested = MP_LOAD(g->req_bytes);
        r->trims = MP_LOAD(g->trims);
        r->trim_bytes = MP_LOAD(g->trim_bytes);
        r->bytes_reserved = MP_LOAD(g->reserved);
        r->bytes_reserved_peak = MP_LOAD(g->reserved_peak);
        r->bytes_in_use_peak = MP_LOAD(g->inuse_peak);
    }
    mp_host_for_each_tcache(add_tcache, s);
    mp_row_t *t = &s->total;
    for (unsigned c = 0; c < mp_sc.count; c++) {
        mp_row_t *r = &s->rows[c];
        uint64_t blocks = 0, bytes;
        if (r->bytes_reserved != 0) /* cached blocks are reserved ones: a class never used is not read */
            mp_host_shared_cached(c, &blocks, &bytes);
        r->cached_blocks += blocks;
        r->cached_bytes = r->cached_blocks * r->size;
        r->requests = r->hits + r->misses;
        r->bytes_served_from_cache = r->hits * r->size; /* every block of a class has its size */
        /* Exact when threads are quiet: what we hold minus what is cached. */
        r->bytes_in_use = r->bytes_reserved - (int64_t)r->cached_bytes;
        if (r->bytes_in_use < 0)
            r->bytes_in_use = 0;
        if (r->bytes_in_use_peak < r->bytes_in_use)
            r->bytes_in_use_peak = r->bytes_in_use;
#define MP_SUM(name, doc) t->name += r->name;
        MP_ROW_COUNTERS(MP_SUM)
#undef MP_SUM
        t->bytes_in_use += r->bytes_in_use;
        t->bytes_reserved += r->bytes_reserved;
        t->cached_blocks += r->cached_blocks;
        t->cached_bytes += r->cached_bytes;
    }
    s->bypasses = MP_LOAD(mp_bypass_stats.count);
    s->bypass_bytes = MP_LOAD(mp_bypass_stats.req_bytes);
    s->fallbacks = MP_LOAD(mp_bypass_stats.fallbacks);
    s->bypass_in_use = MP_LOAD(mp_bypass_stats.inuse);
    s->bypass_in_use_peak = MP_LOAD(mp_bypass_stats.inuse_peak);
    t->requests += s->bypasses;
    t->bytes_requested += s->bypass_bytes;
    t->releases += MP_LOAD(mp_bypass_stats.releases);
    t->bytes_in_use += s->bypass_in_use;
    t->bytes_reserved += s->bypass_in_use;
    t->bytes_in_use_peak = MP_LOAD(mp_total_inuse_peak);
    t->bytes_reserved_peak = MP_LOAD(mp_total_reserved_peak);
    if (t->bytes_in_use_peak < t->bytes_in_use)
        t->bytes_in_use_peak = t->bytes_in_use;
    if (t->bytes_reserved_peak < t->bytes_reserved)
        t->bytes_reserved_peak = t->bytes_reserved;
    s->mapped = mp_heap_mapped();
}
