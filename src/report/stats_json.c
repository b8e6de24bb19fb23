/*
 * The JSON stats file (schema: docs/stats.md): process facts, options,
 * host rows, device and pinned pools, CUDA hooks and paths, the mempool.h
 * pools, call sites, timeline, debug findings.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <unistd.h>

#include "callsite.h"
#include "cuda_driver.h"
#include "cuda_hooks.h"
#include "device_pool.h"
#include "api.h"
#include "emit.h"
#include "timeline.h"

static double ratio(uint64_t a, uint64_t b) { return b ? (double)a / (double)b : 0.0; }


static void out_argv(mp_out_t *o)
{
    char buf[4096];
    size_t n = mp_read_args(buf, sizeof(buf) - 1);
    mp_out_str(o, "[");
    if (n > 0) {
        buf[n] = '\0';
        bool first = true;
        for (size_t i = 0; i < n; i += strlen(buf + i) + 1) {
            if (!first)
                mp_out_str(o, ", ");
            mp_out_json_str(o, buf + i);
            first = false;
        }
    }
    mp_out_str(o, "]");
}

/* ---- JSON ---------------------------------------------------------------- */

static void json_row(mp_out_t *o, const mp_row_t *r, const char *indent)
{
    mp_out_str(o, "{");
#define MP_J(name, doc)                \
    mp_out_str(o, "\"" #name "\": ");     \
    mp_out_u64(o, r->name);               \
    mp_out_str(o, ", ");
    MP_ROW_COUNTERS(MP_J)
#undef MP_J
#define MP_J(name, doc)                      \
    mp_out_str(o, "\"" #name "\": ");           \
    mp_out_i64(o, r->name);                     \
    mp_out_str(o, ", \"" #name "_peak\": ");    \
    mp_out_i64(o, r->name##_peak);              \
    mp_out_str(o, ", ");
    MP_ROW_LEVELS(MP_J)
#undef MP_J
    mp_out_str(o, "\"hit_rate\": ");
    mp_out_fixed(o, ratio(r->hits, r->requests), 4);
    mp_out_str(o, ", \"cached_blocks\": ");
    mp_out_u64(o, r->cached_blocks);
    mp_out_str(o, ", \"cached_bytes\": ");
    mp_out_u64(o, r->cached_bytes);
    mp_out_str(o, ", ");
    (void)indent;
}

static void json_option(mp_out_t *o, int i)
{
    const mp_option_desc_t *d = &mp_option_table[i];
    uint64_t v = mp_opt_values[i];
    mp_out_json_str(o, d->name);
    mp_out_str(o, ": ");
    switch (d->type) {
    case MP_OPT_bool:
        mp_out_str(o, v ? "true" : "false");
        break;
    case MP_OPT_size_or_percent:
        if (v & MP_OPT_PERCENT) {
            char pct[8];
            snprintf(pct, sizeof(pct), "%u%%", (unsigned)(v & 0xff));
            mp_out_json_str(o, pct);
            break;
        }
        /* fall through */
    case MP_OPT_size:
    case MP_OPT_count:
        mp_out_u64(o, v);
        break;
    case MP_OPT_choice: {
        const char *c = d->choices;
        for (uint64_t k = 0; k < v && strchr(c, '|'); k++)
            c = strchr(c, '|') + 1;
        const char *end = strchr(c, '|');
        char name[64];
        size_t len = end ? (size_t)(end - c) : strlen(c);
        if (len >= sizeof(name))
            len = sizeof(name) - 1;
        memcpy(name, c, len);
        name[len] = '\0';
        mp_out_json_str(o, name);
        break;
    }
    case MP_OPT_path:
        mp_out_json_str(o, mp_opt_stats_path);
        break;
    }
}

static void kv(mp_out_t *o, const char *key, int64_t v, bool first)
{
    mp_out_str(o, first ? "\"" : ", \"");
    mp_out_str(o, key);
    mp_out_str(o, "\": ");
    mp_out_i64(o, v);
}

/* A counter of MP_DEVICE_STATS, by its unit. */
static void json_stat_num(mp_out_t *o, const char *key, int64_t v) { kv(o, key, v, false); }

static void json_stat_ns(mp_out_t *o, const char *key, uint64_t ns)
{
    mp_out_str(o, ", \"");
    mp_out_str(o, key);
    mp_out_str(o, "\": ");
    mp_out_fixed(o, (double)ns / 1e9, 6);
}

static void json_pool(mp_out_t *o, const char *key, int64_t id, const mp_device_stats_t *st)
{
    kv(o, key, id, true);
#define MP_DS_JSON(type, field, name, unit) json_stat_##unit(o, name, st->field);
    MP_DEVICE_STATS(MP_DS_JSON)
#undef MP_DS_JSON
    mp_out_str(o, ", \"hit_rate\": ");
    mp_out_fixed(o, ratio(st->hits, st->requests), 4);
}

/* The pool's size classes that saw a request, like the host rows. */
static void json_pool_classes(mp_out_t *o, int pool)
{
    static mp_dev_class_stats_t cls[MP_DEV_CLASSES]; /* 4 KiB: not on the stack */
    mp_pool_class_stats(pool, cls);
    mp_out_str(o, ", \"size_classes\": [");
    bool first = true;
    for (int c = 0; c < MP_DEV_CLASSES; c++) {
        const mp_dev_class_stats_t *r = &cls[c];
        uint64_t requests = r->hits + r->misses;
        if (requests == 0 && r->releases == 0)
            continue;
        size_t size = mp_device_class_size(c);
        mp_out_str(o, first ? "\n          {" : ",\n          {");
        first = false;
        kv(o, "size", (int64_t)size, true);
        kv(o, "requests", (int64_t)requests, false);
        kv(o, "hits", (int64_t)r->hits, false);
        kv(o, "misses", (int64_t)r->misses, false);
        mp_out_str(o, ", \"hit_rate\": ");
        mp_out_fixed(o, ratio(r->hits, requests), 4);
        kv(o, "releases", (int64_t)r->releases, false);
        kv(o, "bytes_requested", (int64_t)r->req_bytes, false);
        kv(o, "bytes_served_from_cache", (int64_t)(r->hits * size), false);
        mp_out_str(o, "}");
    }
    mp_out_str(o, first ? "]" : "\n        ]");
}

/* Device pools (one entry per device) and pinned pools (one per flag set)
 * that saw a request. */
static void write_json_device(mp_out_t *o)
{
    /* No driver, no device or pinned request was ever served: a process
     * that never used CUDA skips the pools (their first look sets up the
     * whole device-pool table, most of an exit's cost). */
    if (!mp_cuda.loaded)
        return;
    for (int kind = 0; kind < 2; kind++) {
        bool any = false;
        for (int i = 0; i < (kind == 0 ? MP_DEV_MAX : 8); i++) {
            mp_device_stats_t st;
            if (kind == 0)
                mp_device_stats(i, &st);
            else
                mp_pinned_stats((unsigned)i, &st);
            if (st.requests == 0 && st.releases == 0)
                continue;
            if (!any)
                mp_out_str(o, kind == 0 ? ",\n    \"device\": {\"devices\": [\n        {"
                                     : ",\n    \"pinned\": {\"pools\": [\n        {");
            else
                mp_out_str(o, ",\n        {");
            any = true;
            json_pool(o, kind == 0 ? "device" : "flags", kind == 0 ? st.device : i, &st);
            if (kind == 0)
                kv(o, "context", i, false); /* pools are per context, numbered in order of first use */
            json_pool_classes(o, kind == 0 ? i : MP_DEV_MAX + i);
            mp_out_str(o, "}");
        }
        if (any)
            mp_out_str(o, "\n      ]}");
    }
}

/* CUDA hooks that were called or handed out (path: runtime, driver, loader). */
static void write_json_hooks(mp_out_t *o)
{
    static const char *paths[] = {"loader", "runtime", "driver"};
    bool first = true;
    for (int i = 0; i < MP_HOOK_COUNT; i++) {
        uint64_t calls = MP_LOAD(mp_hook_calls[i]), out = MP_LOAD(mp_hook_handed_out[i]);
        int missing = MP_LOAD(mp_hook_missing[i]);
        if (calls == 0 && out == 0 && !missing)
            continue;
        mp_out_str(o, first ? "\n    {\"name\": " : ",\n    {\"name\": ");
        first = false;
        mp_out_json_str(o, mp_hook_table[i].name);
        mp_out_str(o, ", \"path\": ");
        mp_out_json_str(o, paths[mp_hook_table[i].path]);
        kv(o, "calls", (int64_t)calls, false);
        kv(o, "handed_out", (int64_t)out, false);
        if (missing)
            mp_out_str(o, ", \"missing\": true");
        mp_out_str(o, "}");
    }
    if (!first)
        mp_out_str(o, "\n  ");
}

/* Per path (runtime exports, driver exports, handed out by dlsym or
 * cuGetProcAddress): hooks in use, their calls, and hooks that were called
 * with nothing real behind them. */
static void write_json_paths(mp_out_t *o)
{
    static const char *paths[] = {"loader", "runtime", "driver"};
    uint64_t used[3] = {0}, calls[3] = {0}, missing[3] = {0}, handed = 0, handed_calls = 0;
    for (int i = 0; i < MP_HOOK_COUNT; i++) {
        int p = mp_hook_table[i].path;
        uint64_t c = MP_LOAD(mp_hook_calls[i]), h = MP_LOAD(mp_hook_handed_out[i]);
        used[p] += c > 0;
        calls[p] += c;
        missing[p] += MP_LOAD(mp_hook_missing[i]) != 0;
        if (h) {
            handed++;
            handed_calls += c;
        }
    }
    mp_out_str(o, "{");
    for (int p = 0; p < 3; p++) {
        mp_out_str(o, p ? ", \"" : "\"");
        mp_out_str(o, paths[p]);
        mp_out_str(o, "\": {");
        kv(o, "hooks_called", (int64_t)used[p], true);
        kv(o, "calls", (int64_t)calls[p], false);
        kv(o, "hooks_missing", (int64_t)missing[p], false);
        mp_out_str(o, "}");
    }
    mp_out_str(o, ", \"proc_address\": {");
    kv(o, "hooks_handed_out", (int64_t)handed, true);
    kv(o, "calls", (int64_t)handed_calls, false);
    mp_out_str(o, "}}");
}


/* ---- call sites and timeline --------------------------------------------- */

static void json_frame(mp_out_t *o, void *pc)
{
    Dl_info di = {0};
    bool found = dladdr(pc, &di) != 0;
    mp_out_str(o, "{\"addr\": \"");
    mp_out_hex(o, (uintptr_t)pc);
    mp_out_str(o, "\", \"function\": ");
    mp_out_json_str(o, found && di.dli_sname ? di.dli_sname : "");
    mp_out_str(o, ", \"offset\": ");
    mp_out_u64(o, found && di.dli_saddr ? (uintptr_t)pc - (uintptr_t)di.dli_saddr : 0);
    mp_out_str(o, ", \"object\": ");
    mp_out_json_str(o, found && di.dli_fname ? di.dli_fname : "");
    mp_out_str(o, ", \"object_offset\": ");
    mp_out_u64(o, found ? (uintptr_t)pc - (uintptr_t)di.dli_fbase : 0);
    mp_out_str(o, "}");
}

static void write_json_sites(mp_out_t *o)
{
    static const char *const kinds[] = {"host", "device", "pinned"};
    mp_out_str(o, ",\n  \"call_sites\": {\"available\": ");
    mp_out_str(o, mp_callsite_available() ? "true" : "false");
    mp_out_str(o, ", \"sample_bytes\": ");
    mp_out_u64(o, mp_callsite_rate);
    mp_out_str(o, ", \"max_depth\": ");
    mp_out_u64(o, mp_opt(MP_OPT_CALLSITE_DEPTH));
    size_t bytes = MP_SITES * sizeof(mp_site_t);
    uint64_t captured = 0, skipped = 0;
    mp_callsite_counts(&captured, &skipped);
    /* Nothing captured, no site: the table is not read (nor its pages touched). */
    mp_site_t *v = captured == 0 ? MAP_FAILED
                                 : mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    size_t n = v == MAP_FAILED ? 0 : mp_callsite_copy(v, MP_SITES, &captured, &skipped);
    mp_out_str(o, ", \"captured\": ");
    mp_out_u64(o, captured);
    mp_out_str(o, ", \"skipped\": ");
    mp_out_u64(o, skipped);
    mp_out_str(o, ", \"sites\": [");
    mp_callsite_guard(true); /* dladdr may allocate: no sample of our own work */
    for (size_t i = 0; i < n; i++) {
        const mp_site_t *st = &v[i];
        mp_out_str(o, i ? ",\n    {\"kind\": " : "\n    {\"kind\": ");
        mp_out_json_str(o, kinds[st->kind]);
        mp_out_str(o, ", \"samples\": ");
        mp_out_u64(o, st->samples);
        mp_out_str(o, ", \"misses\": ");
        mp_out_u64(o, (uint64_t)(st->misses + 0.5));
        mp_out_str(o, ", \"bytes\": ");
        mp_out_u64(o, (uint64_t)(st->bytes + 0.5));
        mp_out_str(o, ", \"wait_s\": ");
        mp_out_fixed(o, (double)st->wait_ns / 1e9, 9);
        mp_out_str(o, ", \"size_classes\": [");
        for (unsigned c = 0; c < MP_SITE_CLASSES && st->cls[c].samples; c++) {
            mp_out_str(o, c ? ", {\"size\": " : "{\"size\": ");
            mp_out_u64(o, st->cls[c].size);
            mp_out_str(o, ", \"samples\": ");
            mp_out_u64(o, st->cls[c].samples);
            mp_out_str(o, "}");
        }
        mp_out_str(o, "],\n     \"frames\": [");
        for (unsigned f = 0; f < st->depth; f++) {
            mp_out_str(o, f ? ",\n      " : "\n      ");
            json_frame(o, st->pc[f]);
        }
        mp_out_str(o, "]}");
    }
    mp_callsite_guard(false);
    if (v != MAP_FAILED)
        munmap(v, bytes);
    mp_out_str(o, n ? "\n  ]}" : "]}");
}

static void write_json_timeline(mp_out_t *o)
{
    static const char *const keys[MP_TL_VALUES] = {"host_in_use", "host_reserved", "device_in_use",
                                                   "device_reserved", "pinned_in_use", "pinned_reserved"};
    if (mp_timeline_len() == 0)
        return; /* no mapping for a process that never sampled */
    size_t bytes = MP_TL_SAMPLES * sizeof(mp_tl_sample_t);
    mp_tl_sample_t *v = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (v == MAP_FAILED)
        return;
    uint64_t interval = 0;
    size_t n = mp_timeline_copy(v, MP_TL_SAMPLES, &interval);
    if (n > 0) {
        mp_out_str(o, ",\n  \"timeline\": {\"interval_s\": ");
        mp_out_fixed(o, (double)interval / 1e9, 3);
        mp_out_str(o, ", \"samples\": [");
        for (size_t i = 0; i < n; i++) {
            mp_out_str(o, i ? ",\n    {\"t_s\": " : "\n    {\"t_s\": ");
            mp_out_fixed(o, (double)v[i].t_ns / 1e9, 3);
            for (int k = 0; k < MP_TL_VALUES; k++) {
                mp_out_str(o, ", \"");
                mp_out_str(o, keys[k]);
                mp_out_str(o, "\": ");
                mp_out_i64(o, v[i].v[k]);
            }
            mp_out_str(o, "}");
        }
        mp_out_str(o, "\n  ]}");
    }
    munmap(v, bytes);
}

/* MEMPOOL_DEBUG findings (and refused device double frees, in any mode). */
static void write_json_debug(mp_out_t *o)
{
    mp_out_str(o, ",\n  \"debug\": {\"enabled\": ");
    mp_out_str(o, mp_debug_on ? "true" : "false");
    for (int k = 0; k < MP_DEBUG_KINDS; k++) {
        mp_out_str(o, ", \"");
        mp_out_str(o, mp_debug_kind_name(k));
        mp_out_str(o, "\": ");
        mp_out_u64(o, mp_debug_count(k));
    }
    mp_out_str(o, "}");
}

void mp_render_json(mp_out_t *o, const mp_snapshot_t *s, const mp_dump_info_t *d)
{
    char exe[MP_PATH_MAX], host[256];
    mp_read_exe(exe, sizeof(exe));
    if (gethostname(host, sizeof(host)) != 0)
        strcpy(host, "unknown");
    host[sizeof(host) - 1] = '\0';

    mp_out_str(o, "{\n  \"schema\": \"mempool-stats\",\n  \"version\": ");
    mp_out_u64(o, MP_STATS_SCHEMA_VERSION);
    mp_out_str(o, ",\n  \"process\": {\"pid\": ");
    mp_out_u64(o, (uint64_t)getpid());
    mp_out_str(o, ", \"ppid\": ");
    mp_out_u64(o, (uint64_t)getppid());
    mp_out_str(o, ", \"host\": ");
    mp_out_json_str(o, host);
    mp_out_str(o, ", \"exe\": ");
    mp_out_json_str(o, exe);
    mp_out_str(o, ", \"argv\": ");
    out_argv(o);
    mp_out_str(o, ", \"start_unix_s\": ");
    mp_out_fixed(o, (double)mp_start_real.tv_sec + (double)mp_start_real.tv_nsec / 1e9, 3);
    mp_out_str(o, ", \"duration_s\": ");
    mp_out_fixed(o, s->duration_s, 6);
    static const char *const reasons[] = {"exit", "signal", "interval", "api"};
    mp_out_str(o, ", \"final\": ");
    mp_out_str(o, d->reason == MP_DUMP_EXIT ? "true" : "false");
    mp_out_str(o, ", \"dump_reason\": ");
    mp_out_json_str(o, reasons[d->reason]);
    mp_out_str(o, ", \"dump_seq\": ");
    mp_out_u64(o, d->seq);
    mp_out_str(o, "},\n  \"options\": {");
    for (int i = 0; i < MP_OPT_COUNT; i++) {
        mp_out_str(o, i ? ",\n    " : "\n    ");
        json_option(o, i);
    }
    mp_out_str(o, "\n  },\n  \"kinds\": {\n    \"host\": {\n      \"totals\": ");
    json_row(o, &s->total, "");
    mp_out_str(o, "\"bypasses\": ");
    mp_out_u64(o, s->bypasses);
    mp_out_str(o, ", \"bypass_bytes_requested\": ");
    mp_out_u64(o, s->bypass_bytes);
    mp_out_str(o, ", \"bypass_bytes_in_use\": ");
    mp_out_i64(o, s->bypass_in_use);
    mp_out_str(o, ", \"bypass_bytes_in_use_peak\": ");
    mp_out_i64(o, s->bypass_in_use_peak);
    mp_out_str(o, ", \"libc_fallbacks\": ");
    mp_out_u64(o, s->fallbacks);
    mp_out_str(o, ", \"address_space_mapped\": ");
    mp_out_u64(o, s->mapped);
    mp_out_str(o, "},\n      \"size_classes\": [");
    bool first = true;
    for (unsigned c = 0; c < s->nrows; c++) {
        const mp_row_t *r = &s->rows[c];
        if (r->requests == 0 && r->releases == 0 && r->bytes_reserved == 0)
            continue; /* untouched class */
        mp_out_str(o, first ? "\n        " : ",\n        ");
        first = false;
        json_row(o, r, "");
        mp_out_str(o, "\"size\": ");
        mp_out_u64(o, r->size);
        mp_out_str(o, "}");
    }
    mp_out_str(o, "\n      ]\n    }");
    write_json_device(o);
    mp_out_str(o, "\n  },\n  \"cuda_hooks\": [");
    write_json_hooks(o);
    mp_out_str(o, "],\n  \"cuda_paths\": ");
    write_json_paths(o);
    mp_out_str(o, ",\n  \"pools\": [");
    mp_render_pools_json(o, "    ");
    mp_out_str(o, "\n  ]");
    write_json_sites(o);
    write_json_timeline(o);
    write_json_debug(o);
    mp_out_str(o, "\n}\n");
}

