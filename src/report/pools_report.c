/*
 * The mempool.h pools in the reports: the stats file's "pools" objects and
 * mempool_write_stats (JSON or text), written through the one emitter.
 */
#include <errno.h>

#include "emit.h"

/* A "pools" object's counters: mempool_stats_t's under their own names
 * (include/mempool.h), but a counter the device and pinned pools write too
 * takes their key (MP_DEVICE_STATS): in the file, mempool_stats_t's
 * peak_bytes_in_use is bytes_in_use_peak, as everywhere else. */
#define API_POOL_COUNTERS(X)                          \
    X(pool_size, "pool_size")                         \
    X(bytes_cached, "bytes_cached")                   \
    X(acquired, "acquired")                           \
    X(released, "released")                           \
    X(hits, MP_DS_KEY(hits))                          \
    X(misses, MP_DS_KEY(misses))                      \
    X(unpooled, MP_DS_KEY(unpooled))                  \
    X(bytes_in_use, MP_DS_KEY(in_use))                \
    X(peak_bytes_in_use, MP_DS_KEY(in_use_peak))      \
    X(bytes_reserved, MP_DS_KEY(reserved))            \
    X(peak_bytes_reserved, MP_DS_KEY(reserved_peak))  \
    X(bytes_requested, MP_DS_KEY(req_bytes))          \
    X(bytes_from_cache, "bytes_from_cache")           \
    X(trims, MP_DS_KEY(trims))                        \
    X(pressure_events, "pressure_events")             \
    X(release_errors, "release_errors")

static void pool_json(mp_out_t *o, mempool_t *pool, const char *indent)
{
    mp_pool_view_t v;
    mp_pool_view(pool, &v);
    const mempool_stats_t *s = &v.stats;
    mp_out_str(o, indent);
    mp_out_str(o, "{\"name\": ");
    mp_out_json_str(o, s->name);
    mp_out_str(o, ", \"kind\": ");
    mp_out_json_str(o, v.kind_name);
    mp_out_str(o, v.is_default ? ", \"default\": true" : ", \"default\": false");
    mp_out_str(o, ", \"device\": ");
    mp_out_i64(o, s->device);
    mp_out_str(o, ", \"numa_node\": ");
    mp_out_i64(o, s->numa_node);
#define OUT_COUNTER(field, key) \
    mp_out_str(o, ", \"");      \
    mp_out_str(o, key);          \
    mp_out_str(o, "\": ");      \
    mp_out_u64(o, (uint64_t)s->field);
    API_POOL_COUNTERS(OUT_COUNTER)
#undef OUT_COUNTER
    mp_out_str(o, ", \"hit_rate\": ");
    mp_out_fixed(o, s->hit_rate, 4);
    mp_out_str(o, ", \"pressure_threshold\": ");
    mp_out_fixed(o, v.threshold, 3);
    mp_out_str(o, "}");
}

static void pool_text(mp_out_t *o, mempool_t *pool)
{
    mp_pool_view_t v;
    mp_pool_view(pool, &v);
    const mempool_stats_t *s = &v.stats;
    mp_out_pad(o, s->name, 20, true); /* as "%-20s %-6s " */
    mp_out_str(o, " ");
    mp_out_pad(o, v.kind_name, 6, true);
    mp_out_str(o, " acquired ");
    mp_out_u64(o, s->acquired);
    mp_out_str(o, " released ");
    mp_out_u64(o, s->released);
    mp_out_str(o, " hits ");
    mp_out_u64(o, s->hits);
    mp_out_str(o, " misses ");
    mp_out_u64(o, s->misses);
    mp_out_str(o, " (hit rate ");
    mp_out_fixed(o, 100.0 * s->hit_rate, 1);
    mp_out_str(o, "%) cached ");
    mp_out_u64(o, s->pool_size);
    mp_out_str(o, " blocks / ");
    mp_out_u64(o, s->bytes_cached);
    mp_out_str(o, " B, in use ");
    mp_out_u64(o, s->bytes_in_use);
    mp_out_str(o, " B (peak ");
    mp_out_u64(o, s->peak_bytes_in_use);
    mp_out_str(o, " B), saved ");
    mp_out_u64(o, s->bytes_from_cache);
    mp_out_str(o, " B\n");
}

void mp_render_pools_json(mp_out_t *o, const char *indent)
{
    mempool_t *list[MP_API_POOLS_MAX];
    unsigned n = mp_pools_list(list, false);
    for (unsigned i = 0; i < n; i++) {
        mp_out_str(o, i ? ",\n" : "\n");
        pool_json(o, list[i], indent);
    }
}

MP_PUBLIC int mempool_write_stats(mempool_t *pool, int fd, mempool_format_t format)
{
    if ((pool != NULL && !mp_pool_valid(pool)) || fd < 0 || (unsigned)format > MEMPOOL_FORMAT_TEXT)
        return -EINVAL;
    mempool_t *list[MP_API_POOLS_MAX];
    unsigned n = 1;
    if (pool)
        list[0] = pool;
    else
        n = mp_pools_list(list, true);
    mp_out_t o = {.fd = fd};
    if (format == MEMPOOL_FORMAT_JSON)
        mp_out_str(&o, "{\"pools\": [");
    for (unsigned i = 0; i < n; i++) {
        if (format == MEMPOOL_FORMAT_TEXT) {
            pool_text(&o, list[i]);
            continue;
        }
        mp_out_str(&o, i ? ",\n  " : "\n  ");
        pool_json(&o, list[i], "");
    }
    if (format == MEMPOOL_FORMAT_JSON)
        mp_out_str(&o, "\n]}\n");
    mp_out_flush(&o);
    return o.failed ? -EIO : 0;
}
