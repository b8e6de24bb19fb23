/*
 * Rendering a snapshot: the JSON stats file (schema: docs/stats.md), the
 * text table and the exit summary.  Output goes through a fixed buffer to
 * write(2): nothing here allocates, so it is safe at exit while other
 * libraries still call malloc.  The file is written to a temporary name
 * and renamed, so a reader never sees half a report.
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
#include "report.h"
#include "timeline.h"


typedef struct out {
    int fd;
    bool failed;
    size_t n;
    char buf[4096];
} out_t;

/* Writes are serialised (a dump thread, the exit, mempool_stats_dump): the
 * exit report, written last, says final and how many dumps came before. */
static pthread_mutex_t write_lock = PTHREAD_MUTEX_INITIALIZER;
static int cur_reason = MP_DUMP_EXIT;
static uint64_t dump_seq;
static bool exiting;

static void out_flush(out_t *o)
{
    size_t done = 0;
    while (done < o->n && !o->failed) {
        ssize_t w = write(o->fd, o->buf + done, o->n - done);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            o->failed = true;
        else
            done += (size_t)w;
    }
    o->n = 0;
}

static void out_mem(out_t *o, const char *s, size_t len)
{
    while (len > 0) {
        if (o->n == sizeof(o->buf))
            out_flush(o);
        size_t k = sizeof(o->buf) - o->n;
        if (k > len)
            k = len;
        memcpy(o->buf + o->n, s, k);
        o->n += k;
        s += k;
        len -= k;
    }
}

static void out_str(out_t *o, const char *s) { out_mem(o, s, strlen(s)); }

static void out_u64(out_t *o, uint64_t v)
{
    char tmp[24];
    int i = (int)sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    out_mem(o, tmp + i, sizeof(tmp) - (size_t)i);
}

static void out_i64(out_t *o, int64_t v)
{
    if (v < 0) {
        out_str(o, "-");
        out_u64(o, (uint64_t)0 - (uint64_t)v);
    } else {
        out_u64(o, (uint64_t)v);
    }
}

/* Fixed point with `digits` decimals (no printf: it may allocate). */
static void out_fixed(out_t *o, double v, int digits)
{
    if (v < 0) {
        out_str(o, "-");
        v = -v;
    }
    uint64_t scale = 1;
    for (int i = 0; i < digits; i++)
        scale *= 10;
    uint64_t x = (uint64_t)(v * (double)scale + 0.5);
    out_u64(o, x / scale);
    if (digits == 0)
        return;
    out_str(o, ".");
    char tmp[20];
    uint64_t frac = x % scale;
    for (int i = digits - 1; i >= 0; i--) {
        tmp[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    out_mem(o, tmp, (size_t)digits);
}

/* Length of the valid UTF-8 sequence at s (at most n bytes), 0 if none:
 * no overlong forms, no surrogates, nothing above U+10FFFF (RFC 3629). */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf; /* range of the second byte */
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2;
    else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        lo = c == 0xe0 ? 0xa0 : 0x80;
        hi = c == 0xed ? 0x9f : 0xbf;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        lo = c == 0xf0 ? 0x90 : 0x80;
        hi = c == 0xf4 ? 0x8f : 0xbf;
    } else
        return 0;
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

void mp_json_escape(mp_emit_fn emit, void *ctx, const char *str, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    size_t run = 0; /* bytes kept as they are, not yet emitted */
    for (size_t i = 0; i < n;) {
        unsigned char c = s[i];
        size_t k = c == '"' || c == '\\' || c < 0x20 ? 0 : utf8_len(s + i, n - i);
        if (k > 0) {
            run += k;
            i += k;
            continue;
        }
        if (run)
            emit(ctx, (const char *)s + i - run, run);
        run = 0;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            emit(ctx, e, 2);
        } else {
            char e[6] = {'\\', 'u', c < 0x20 ? '0' : 'd', c < 0x20 ? '0' : 'c', hex[c >> 4], hex[c & 15]};
            emit(ctx, e, 6);
        }
        i++;
    }
    if (run)
        emit(ctx, (const char *)s + n - run, run);
}

static void emit_out(void *ctx, const char *s, size_t len) { out_mem(ctx, s, len); }

static void out_json_mem(out_t *o, const char *s, size_t len)
{
    out_str(o, "\"");
    mp_json_escape(emit_out, o, s, len);
    out_str(o, "\"");
}

static void out_json_str(out_t *o, const char *s) { out_json_mem(o, s, strlen(s)); }

static double ratio(uint64_t a, uint64_t b) { return b ? (double)a / (double)b : 0.0; }

/* ---- process facts (read without allocating) ----------------------------- */

static void read_exe(char *out, size_t cap)
{
    ssize_t n = readlink("/proc/self/exe", out, cap - 1);
    out[n > 0 ? n : 0] = '\0';
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static void out_argv(out_t *o)
{
    char buf[4096];
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : -1;
    if (fd >= 0)
        close(fd);
    out_str(o, "[");
    if (n > 0) {
        buf[n] = '\0';
        bool first = true;
        for (ssize_t i = 0; i < n; i += (ssize_t)strlen(buf + i) + 1) {
            if (!first)
                out_str(o, ", ");
            out_json_str(o, buf + i);
            first = false;
        }
    }
    out_str(o, "]");
}

bool mp_stats_expand_path(const char *tmpl, char *out, size_t cap)
{
    size_t n = 0;
    char tmp[256];
    for (const char *p = tmpl; *p; p++) {
        const char *ins = NULL;
        char one[2] = {*p, '\0'};
        if (*p == '%' && p[1]) {
            p++;
            if (*p == 'p') {
                snprintf(tmp, sizeof(tmp), "%d", (int)getpid());
                ins = tmp;
            } else if (*p == 'h') {
                if (gethostname(tmp, sizeof(tmp)) != 0)
                    strcpy(tmp, "unknown");
                tmp[sizeof(tmp) - 1] = '\0';
                ins = tmp;
            } else if (*p == 'e') {
                char exe[MP_PATH_MAX];
                read_exe(exe, sizeof(exe));
                const char *b = exe[0] ? base_name(exe) : "unknown";
                size_t len = strlen(b) < sizeof(tmp) - 1 ? strlen(b) : sizeof(tmp) - 1;
                memcpy(tmp, b, len);
                tmp[len] = '\0';
                ins = tmp;
            } else if (*p == '%') {
                ins = "%";
            } else {
                one[0] = '%';
                p--; /* unknown: keep the % and go on with the next char */
                ins = one;
            }
        } else {
            ins = one;
        }
        size_t k = strlen(ins);
        if (n + k + 1 > cap)
            return false;
        memcpy(out + n, ins, k);
        n += k;
    }
    out[n] = '\0';
    return true;
}

/* ---- JSON ---------------------------------------------------------------- */

static void json_row(out_t *o, const mp_row_t *r, const char *indent)
{
    out_str(o, "{");
#define MP_J(name, doc)                \
    out_str(o, "\"" #name "\": ");     \
    out_u64(o, r->name);               \
    out_str(o, ", ");
    MP_ROW_COUNTERS(MP_J)
#undef MP_J
#define MP_J(name, doc)                      \
    out_str(o, "\"" #name "\": ");           \
    out_i64(o, r->name);                     \
    out_str(o, ", \"" #name "_peak\": ");    \
    out_i64(o, r->name##_peak);              \
    out_str(o, ", ");
    MP_ROW_LEVELS(MP_J)
#undef MP_J
    out_str(o, "\"hit_rate\": ");
    out_fixed(o, ratio(r->hits, r->requests), 4);
    out_str(o, ", \"cached_blocks\": ");
    out_u64(o, r->cached_blocks);
    out_str(o, ", \"cached_bytes\": ");
    out_u64(o, r->cached_bytes);
    out_str(o, ", ");
    (void)indent;
}

static void json_option(out_t *o, int i)
{
    const mp_option_desc_t *d = &mp_option_table[i];
    uint64_t v = mp_opt_values[i];
    out_json_str(o, d->name);
    out_str(o, ": ");
    switch (d->type) {
    case MP_OPT_bool:
        out_str(o, v ? "true" : "false");
        break;
    case MP_OPT_size_or_percent:
        if (v & MP_OPT_PERCENT) {
            char pct[8];
            snprintf(pct, sizeof(pct), "%u%%", (unsigned)(v & 0xff));
            out_json_str(o, pct);
            break;
        }
        /* fall through */
    case MP_OPT_size:
    case MP_OPT_count:
        out_u64(o, v);
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
        out_json_str(o, name);
        break;
    }
    case MP_OPT_path:
        out_json_str(o, mp_opt_stats_path);
        break;
    }
}

static void kv(out_t *o, const char *key, int64_t v, bool first)
{
    out_str(o, first ? "\"" : ", \"");
    out_str(o, key);
    out_str(o, "\": ");
    out_i64(o, v);
}

/* A counter of MP_DEVICE_STATS, by its unit. */
static void json_stat_num(out_t *o, const char *key, int64_t v) { kv(o, key, v, false); }

static void json_stat_ns(out_t *o, const char *key, uint64_t ns)
{
    out_str(o, ", \"");
    out_str(o, key);
    out_str(o, "\": ");
    out_fixed(o, (double)ns / 1e9, 6);
}

static void json_pool(out_t *o, const char *key, int64_t id, const mp_device_stats_t *st)
{
    kv(o, key, id, true);
#define MP_DS_JSON(type, field, name, unit) json_stat_##unit(o, name, st->field);
    MP_DEVICE_STATS(MP_DS_JSON)
#undef MP_DS_JSON
    out_str(o, ", \"hit_rate\": ");
    out_fixed(o, ratio(st->hits, st->requests), 4);
}

/* The pool's size classes that saw a request, like the host rows. */
static void json_pool_classes(out_t *o, int pool)
{
    static mp_dev_class_stats_t cls[MP_DEV_CLASSES]; /* 4 KiB: not on the stack */
    mp_pool_class_stats(pool, cls);
    out_str(o, ", \"size_classes\": [");
    bool first = true;
    for (int c = 0; c < MP_DEV_CLASSES; c++) {
        const mp_dev_class_stats_t *r = &cls[c];
        uint64_t requests = r->hits + r->misses;
        if (requests == 0 && r->releases == 0)
            continue;
        size_t size = mp_device_class_size(c);
        out_str(o, first ? "\n          {" : ",\n          {");
        first = false;
        kv(o, "size", (int64_t)size, true);
        kv(o, "requests", (int64_t)requests, false);
        kv(o, "hits", (int64_t)r->hits, false);
        kv(o, "misses", (int64_t)r->misses, false);
        out_str(o, ", \"hit_rate\": ");
        out_fixed(o, ratio(r->hits, requests), 4);
        kv(o, "releases", (int64_t)r->releases, false);
        kv(o, "bytes_requested", (int64_t)r->req_bytes, false);
        kv(o, "bytes_served_from_cache", (int64_t)(r->hits * size), false);
        out_str(o, "}");
    }
    out_str(o, first ? "]" : "\n        ]");
}

/* Device pools (one entry per device) and pinned pools (one per flag set)
 * that saw a request. */
static void write_json_device(out_t *o)
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
                out_str(o, kind == 0 ? ",\n    \"device\": {\"devices\": [\n        {"
                                     : ",\n    \"pinned\": {\"pools\": [\n        {");
            else
                out_str(o, ",\n        {");
            any = true;
            json_pool(o, kind == 0 ? "device" : "flags", kind == 0 ? st.device : i, &st);
            if (kind == 0)
                kv(o, "context", i, false); /* pools are per context, numbered in order of first use */
            json_pool_classes(o, kind == 0 ? i : MP_DEV_MAX + i);
            out_str(o, "}");
        }
        if (any)
            out_str(o, "\n      ]}");
    }
}

/* CUDA hooks that were called or handed out (path: runtime, driver, loader). */
static void write_json_hooks(out_t *o)
{
    static const char *paths[] = {"loader", "runtime", "driver"};
    bool first = true;
    for (int i = 0; i < MP_HOOK_COUNT; i++) {
        uint64_t calls = MP_LOAD(mp_hook_calls[i]), out = MP_LOAD(mp_hook_handed_out[i]);
        int missing = MP_LOAD(mp_hook_missing[i]);
        if (calls == 0 && out == 0 && !missing)
            continue;
        out_str(o, first ? "\n    {\"name\": " : ",\n    {\"name\": ");
        first = false;
        out_json_str(o, mp_hook_table[i].name);
        out_str(o, ", \"path\": ");
        out_json_str(o, paths[mp_hook_table[i].path]);
        kv(o, "calls", (int64_t)calls, false);
        kv(o, "handed_out", (int64_t)out, false);
        if (missing)
            out_str(o, ", \"missing\": true");
        out_str(o, "}");
    }
    if (!first)
        out_str(o, "\n  ");
}

/* Per path (runtime exports, driver exports, handed out by dlsym or
 * cuGetProcAddress): hooks in use, their calls, and hooks that were called
 * with nothing real behind them. */
static void write_json_paths(out_t *o)
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
    out_str(o, "{");
    for (int p = 0; p < 3; p++) {
        out_str(o, p ? ", \"" : "\"");
        out_str(o, paths[p]);
        out_str(o, "\": {");
        kv(o, "hooks_called", (int64_t)used[p], true);
        kv(o, "calls", (int64_t)calls[p], false);
        kv(o, "hooks_missing", (int64_t)missing[p], false);
        out_str(o, "}");
    }
    out_str(o, ", \"proc_address\": {");
    kv(o, "hooks_handed_out", (int64_t)handed, true);
    kv(o, "calls", (int64_t)handed_calls, false);
    out_str(o, "}}");
}


/* ---- call sites and timeline --------------------------------------------- */

static void out_hex(out_t *o, uintptr_t v)
{
    char tmp[2 + 16];
    int i = (int)sizeof(tmp);
    do {
        tmp[--i] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    tmp[--i] = 'x';
    tmp[--i] = '0';
    out_mem(o, tmp + i, sizeof(tmp) - (size_t)i);
}

/* One frame, named with dladdr (exported symbols; the report can ask
 * addr2line for the rest with object and object_offset). */
static void json_frame(out_t *o, void *pc)
{
    Dl_info di = {0};
    bool found = dladdr(pc, &di) != 0;
    out_str(o, "{\"addr\": \"");
    out_hex(o, (uintptr_t)pc);
    out_str(o, "\", \"function\": ");
    out_json_str(o, found && di.dli_sname ? di.dli_sname : "");
    out_str(o, ", \"offset\": ");
    out_u64(o, found && di.dli_saddr ? (uintptr_t)pc - (uintptr_t)di.dli_saddr : 0);
    out_str(o, ", \"object\": ");
    out_json_str(o, found && di.dli_fname ? di.dli_fname : "");
    out_str(o, ", \"object_offset\": ");
    out_u64(o, found ? (uintptr_t)pc - (uintptr_t)di.dli_fbase : 0);
    out_str(o, "}");
}

static void write_json_sites(out_t *o)
{
    static const char *const kinds[] = {"host", "device", "pinned"};
    out_str(o, ",\n  \"call_sites\": {\"available\": ");
    out_str(o, mp_callsite_available() ? "true" : "false");
    out_str(o, ", \"sample_bytes\": ");
    out_u64(o, mp_callsite_rate);
    out_str(o, ", \"max_depth\": ");
    out_u64(o, mp_opt(MP_OPT_CALLSITE_DEPTH));
    size_t bytes = MP_SITES * sizeof(mp_site_t);
    uint64_t captured = 0, skipped = 0;
    mp_callsite_counts(&captured, &skipped);
    /* Nothing captured, no site: the table is not read (nor its pages touched). */
    mp_site_t *v = captured == 0 ? MAP_FAILED
                                 : mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    size_t n = v == MAP_FAILED ? 0 : mp_callsite_copy(v, MP_SITES, &captured, &skipped);
    out_str(o, ", \"captured\": ");
    out_u64(o, captured);
    out_str(o, ", \"skipped\": ");
    out_u64(o, skipped);
    out_str(o, ", \"sites\": [");
    mp_callsite_guard(true); /* dladdr may allocate: no sample of our own work */
    for (size_t i = 0; i < n; i++) {
        const mp_site_t *st = &v[i];
        out_str(o, i ? ",\n    {\"kind\": " : "\n    {\"kind\": ");
        out_json_str(o, kinds[st->kind]);
        out_str(o, ", \"samples\": ");
        out_u64(o, st->samples);
        out_str(o, ", \"misses\": ");
        out_u64(o, (uint64_t)(st->misses + 0.5));
        out_str(o, ", \"bytes\": ");
        out_u64(o, (uint64_t)(st->bytes + 0.5));
        out_str(o, ", \"wait_s\": ");
        out_fixed(o, (double)st->wait_ns / 1e9, 9);
        out_str(o, ", \"size_classes\": [");
        for (unsigned c = 0; c < MP_SITE_CLASSES && st->cls[c].samples; c++) {
            out_str(o, c ? ", {\"size\": " : "{\"size\": ");
            out_u64(o, st->cls[c].size);
            out_str(o, ", \"samples\": ");
            out_u64(o, st->cls[c].samples);
            out_str(o, "}");
        }
        out_str(o, "],\n     \"frames\": [");
        for (unsigned f = 0; f < st->depth; f++) {
            out_str(o, f ? ",\n      " : "\n      ");
            json_frame(o, st->pc[f]);
        }
        out_str(o, "]}");
    }
    mp_callsite_guard(false);
    if (v != MAP_FAILED)
        munmap(v, bytes);
    out_str(o, n ? "\n  ]}" : "]}");
}

static void write_json_timeline(out_t *o)
{
    static const char *const keys[MP_TL_VALUES] = {"host_in_use", "host_reserved", "device_in_use",
                                                   "device_reserved", "pinned_in_use", "pinned_reserved"};
    size_t bytes = MP_TL_SAMPLES * sizeof(mp_tl_sample_t);
    mp_tl_sample_t *v = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (v == MAP_FAILED)
        return;
    uint64_t interval = 0;
    size_t n = mp_timeline_copy(v, MP_TL_SAMPLES, &interval);
    if (n > 0) {
        out_str(o, ",\n  \"timeline\": {\"interval_s\": ");
        out_fixed(o, (double)interval / 1e9, 3);
        out_str(o, ", \"samples\": [");
        for (size_t i = 0; i < n; i++) {
            out_str(o, i ? ",\n    {\"t_s\": " : "\n    {\"t_s\": ");
            out_fixed(o, (double)v[i].t_ns / 1e9, 3);
            for (int k = 0; k < MP_TL_VALUES; k++) {
                out_str(o, ", \"");
                out_str(o, keys[k]);
                out_str(o, "\": ");
                out_i64(o, v[i].v[k]);
            }
            out_str(o, "}");
        }
        out_str(o, "\n  ]}");
    }
    munmap(v, bytes);
}

/* MEMPOOL_DEBUG findings (and refused device double frees, in any mode). */
static void write_json_debug(out_t *o)
{
    out_str(o, ",\n  \"debug\": {\"enabled\": ");
    out_str(o, mp_debug_on ? "true" : "false");
    for (int k = 0; k < MP_DEBUG_KINDS; k++) {
        out_str(o, ", \"");
        out_str(o, mp_debug_kind_name(k));
        out_str(o, "\": ");
        out_u64(o, mp_debug_count(k));
    }
    out_str(o, "}");
}

static void write_json(out_t *o, const mp_snapshot_t *s)
{
    char exe[MP_PATH_MAX], host[256];
    read_exe(exe, sizeof(exe));
    if (gethostname(host, sizeof(host)) != 0)
        strcpy(host, "unknown");
    host[sizeof(host) - 1] = '\0';

    out_str(o, "{\n  \"schema\": \"mempool-stats\",\n  \"version\": ");
    out_u64(o, MP_STATS_SCHEMA_VERSION);
    out_str(o, ",\n  \"process\": {\"pid\": ");
    out_u64(o, (uint64_t)getpid());
    out_str(o, ", \"ppid\": ");
    out_u64(o, (uint64_t)getppid());
    out_str(o, ", \"host\": ");
    out_json_str(o, host);
    out_str(o, ", \"exe\": ");
    out_json_str(o, exe);
    out_str(o, ", \"argv\": ");
    out_argv(o);
    out_str(o, ", \"start_unix_s\": ");
    out_fixed(o, (double)mp_start_real.tv_sec + (double)mp_start_real.tv_nsec / 1e9, 3);
    out_str(o, ", \"duration_s\": ");
    out_fixed(o, s->duration_s, 6);
    static const char *const reasons[] = {"exit", "signal", "interval", "api"};
    out_str(o, ", \"final\": ");
    out_str(o, cur_reason == MP_DUMP_EXIT ? "true" : "false");
    out_str(o, ", \"dump_reason\": ");
    out_json_str(o, reasons[cur_reason]);
    out_str(o, ", \"dump_seq\": ");
    out_u64(o, dump_seq);
    out_str(o, "},\n  \"options\": {");
    for (int i = 0; i < MP_OPT_COUNT; i++) {
        out_str(o, i ? ",\n    " : "\n    ");
        json_option(o, i);
    }
    out_str(o, "\n  },\n  \"kinds\": {\n    \"host\": {\n      \"totals\": ");
    json_row(o, &s->total, "");
    out_str(o, "\"bypasses\": ");
    out_u64(o, s->bypasses);
    out_str(o, ", \"bypass_bytes_requested\": ");
    out_u64(o, s->bypass_bytes);
    out_str(o, ", \"bypass_bytes_in_use\": ");
    out_i64(o, s->bypass_in_use);
    out_str(o, ", \"bypass_bytes_in_use_peak\": ");
    out_i64(o, s->bypass_in_use_peak);
    out_str(o, ", \"libc_fallbacks\": ");
    out_u64(o, s->fallbacks);
    out_str(o, ", \"address_space_mapped\": ");
    out_u64(o, s->mapped);
    out_str(o, "},\n      \"size_classes\": [");
    bool first = true;
    for (unsigned c = 0; c < s->nrows; c++) {
        const mp_row_t *r = &s->rows[c];
        if (r->requests == 0 && r->releases == 0 && r->bytes_reserved == 0)
            continue; /* untouched class */
        out_str(o, first ? "\n        " : ",\n        ");
        first = false;
        json_row(o, r, "");
        out_str(o, "\"size\": ");
        out_u64(o, r->size);
        out_str(o, "}");
    }
    out_str(o, "\n      ]\n    }");
    write_json_device(o);
    out_str(o, "\n  },\n  \"cuda_hooks\": [");
    write_json_hooks(o);
    out_str(o, "],\n  \"cuda_paths\": ");
    write_json_paths(o);
    out_str(o, ",\n  \"pools\": [");
    mp_pools_write_json(emit_out, o, "    ");
    out_str(o, "\n  ]");
    write_json_sites(o);
    write_json_timeline(o);
    write_json_debug(o);
    out_str(o, "\n}\n");
}

/* ---- text ---------------------------------------------------------------- */

static void out_pad(out_t *o, const char *s, size_t width)
{
    size_t n = strlen(s);
    while (n++ < width)
        out_str(o, " ");
    out_str(o, s);
}

static void fmt_bytes(char *buf, size_t cap, int64_t v)
{
    static const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double x = (double)(v < 0 ? -v : v);
    int u = 0;
    while (x >= 1024 && u < 4) {
        x /= 1024;
        u++;
    }
    if (u == 0) {
        snprintf(buf, cap, "%s%llu B", v < 0 ? "-" : "", (unsigned long long)x);
        return;
    }
    /* Integer formatting only: %f may allocate in some libcs. */
    uint64_t t = (uint64_t)(x * 10 + 0.5);
    snprintf(buf, cap, "%s%llu.%llu %s", v < 0 ? "-" : "", (unsigned long long)(t / 10),
             (unsigned long long)(t % 10), unit[u]);
}

static void col_u64(out_t *o, uint64_t v, size_t w)
{
    char b[32];
    snprintf(b, sizeof(b), "%llu", (unsigned long long)v);
    out_pad(o, b, w);
}

static void col_bytes(out_t *o, int64_t v, size_t w)
{
    char b[32];
    fmt_bytes(b, sizeof(b), v);
    out_pad(o, b, w);
}

static void col_rate(out_t *o, uint64_t a, uint64_t b, size_t w)
{
    char buf[32];
    uint64_t permille = b ? (a * 1000 + b / 2) / b : 0;
    snprintf(buf, sizeof(buf), "%llu.%llu%%", (unsigned long long)(permille / 10),
             (unsigned long long)(permille % 10));
    out_pad(o, buf, w);
}

static void text_row(out_t *o, const char *label, const mp_row_t *r)
{
    out_pad(o, label, 10);
    col_u64(o, r->requests, 12);
    col_u64(o, r->hits, 12);
    col_u64(o, r->misses, 10);
    col_rate(o, r->hits, r->requests, 8);
    col_bytes(o, r->bytes_in_use_peak, 12);
    col_bytes(o, r->bytes_reserved_peak, 12);
    col_bytes(o, (int64_t)r->cached_bytes, 12);
    col_u64(o, r->trims, 9);
    out_str(o, "\n");
}

/* The text report; max_rows limits the size-class rows (busiest first). */
static void write_text(out_t *o, const mp_snapshot_t *s, unsigned max_rows)
{
    char exe[MP_PATH_MAX], line[160];
    read_exe(exe, sizeof(exe));
    out_str(o, "mempool: ");
    out_str(o, base_name(exe));
    snprintf(line, sizeof(line), " (pid %d), %llu.%03llu s\n",
             (int)getpid(), (unsigned long long)s->duration_s,
             (unsigned long long)((s->duration_s - (double)(uint64_t)s->duration_s) * 1000));
    out_str(o, line);
    out_str(o, "      host    requests        hits    misses    hit%    in use^   reserved^"
               "      cached    trims\n");
    text_row(o, "total", &s->total);
    /* Busiest classes first: selection by requests without sorting in place. */
    bool shown[MP_CLASS_MAX] = {false};
    for (unsigned k = 0; k < max_rows; k++) {
        int best = -1;
        for (unsigned c = 0; c < s->nrows; c++)
            if (!shown[c] && s->rows[c].requests > 0
                && (best < 0 || s->rows[c].requests > s->rows[best].requests))
                best = (int)c;
        if (best < 0)
            break;
        shown[best] = true;
        char label[32];
        fmt_bytes(label, sizeof(label), (int64_t)s->rows[best].size);
        text_row(o, label, &s->rows[best]);
    }
    char a[32], b[32];
    fmt_bytes(a, sizeof(a), (int64_t)s->bypass_bytes);
    fmt_bytes(b, sizeof(b), s->bypass_in_use_peak);
    snprintf(line, sizeof(line), "  bypass (> %llu B or over-aligned): %llu requests, %s, peak %s\n",
             (unsigned long long)mp_sc.max_size, (unsigned long long)s->bypasses, a, b);
    out_str(o, line);
    out_str(o, "  ^ = peak\n");
    uint64_t found = 0;
    for (int k = 0; k < MP_DEBUG_KINDS; k++)
        found += mp_debug_count(k);
    if (mp_debug_on || found) {
        out_str(o, "  debug findings:");
        for (int k = 0; k < MP_DEBUG_KINDS; k++) {
            snprintf(line, sizeof(line), " %s %llu", mp_debug_kind_name(k),
                     (unsigned long long)mp_debug_count(k));
            out_str(o, line);
        }
        out_str(o, "\n");
    }
}

/* Snapshots are 15 KiB: too big for small thread stacks, and malloc is
 * what we report on, so each writer maps its own. */
static mp_snapshot_t *snapshot_new(void)
{
    mp_snapshot_t *s = mmap(NULL, sizeof(*s), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                            -1, 0);
    if (s == MAP_FAILED)
        return NULL;
    mp_stats_snapshot(s);
    return s;
}

static void snapshot_free(mp_snapshot_t *s) { munmap(s, sizeof(*s)); }

static bool render(int fd, int format, unsigned max_rows)
{
    mp_snapshot_t *snap = snapshot_new();
    if (snap == NULL)
        return false;
    out_t o = {.fd = fd};
    if (format == MP_FMT_JSON)
        write_json(&o, snap);
    else
        write_text(&o, snap, max_rows);
    out_flush(&o);
    snapshot_free(snap);
    return !o.failed;
}

void mp_stats_write_fd(int fd, int format) { render(fd, format, MP_CLASS_MAX); }

/* A file that cannot be written is said at log level info only: the shim
 * is silent by default (children running as another user, a read-only
 * working directory, /dev/null as the path), and the stats file is the
 * output, not stderr. */

/* Write to path atomically: temporary file in the same directory, then
 * rename.  O_EXCL | O_NOFOLLOW: never write through a planted link; an
 * existing file of another user, or anything but a regular file, is left
 * alone (rename would replace it). */
static bool write_file(const char *path, int format)
{
    struct stat st;
    if (lstat(path, &st) == 0 && (!S_ISREG(st.st_mode) || st.st_uid != geteuid())) {
        mp_log(MP_LOG_INFO, "not writing stats file %s: it exists and is %s", path,
               S_ISREG(st.st_mode) ? "another user's file" : "not a regular file");
        return false;
    }
    char tmp[MP_PATH_MAX + 32];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        mp_log(MP_LOG_INFO, "cannot write stats file %s: %s", path, strerror(errno));
        return false;
    }
    bool ok = render(fd, format, MP_CLASS_MAX);
    int err = errno;
    if (close(fd) != 0 && ok) {
        ok = false;
        err = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = false;
        err = errno;
    }
    if (!ok) {
        unlink(tmp);
        mp_log(MP_LOG_INFO, "cannot write stats file %s: %s", path, strerror(err));
    }
    return ok;
}

static _Atomic int written_pid;

/* ---- setuid and setgid programs (docs/security.md) ----------------------- */
#ifdef MP_TEST_HOOKS
int mp_stats_secure_mode = -1; /* tests: 0 or 1 instead of AT_SECURE */
const char *mp_setuid_conf_path = MP_SETUID_CONF;
#else
#define mp_stats_secure_mode (-1)
#define mp_setuid_conf_path MP_SETUID_CONF
#endif

/* A file or directory an administrator controls: root's, writable by no one else. */
static bool root_controlled(const struct stat *st)
{
    return st->st_uid == 0 && (st->st_mode & (S_IWGRP | S_IWOTH)) == 0;
}

/* In a process the kernel marks secure (setuid/setgid, capabilities), no
 * MEMPOOL_* variable is read (secure_getenv), and the stats file is written
 * only where MP_SETUID_CONF, a root-controlled file, names a root-controlled
 * directory: the invoking user chooses nothing about a file the program's
 * privileges write.  Returns false (no file) or the template to use. */
static bool secure_template(char *tmpl, size_t cap)
{
    int secure = mp_stats_secure_mode >= 0 ? mp_stats_secure_mode : getauxval(AT_SECURE) != 0;
    if (!secure) {
        snprintf(tmpl, cap, "%s", mp_opt_stats_path);
        return true;
    }
    struct stat st;
    int fd = open(mp_setuid_conf_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    char dir[MP_PATH_MAX] = "";
    ssize_t n = -1;
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && root_controlled(&st))
        n = read(fd, dir, sizeof(dir) - 1);
    if (fd >= 0)
        close(fd);
    dir[n > 0 ? n : 0] = '\0';
    dir[strcspn(dir, "\n")] = '\0';
    if (dir[0] != '/' || lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || !root_controlled(&st)) {
        if (n >= 0 || fd >= 0)
            mp_log(MP_LOG_INFO, "setuid/setgid process: %s does not name a directory only root "
                   "can write; no stats file", mp_setuid_conf_path);
        return false; /* no (valid) setting: silently no file, the default */
    }
    return snprintf(tmpl, cap, "%s/mempool.%%e.%%p.json", dir) < (int)cap;
}

bool mp_stats_write_now(const char *path_or_null, char *path, size_t cap)
{
    if (path_or_null != NULL) {
        if (strlen(path_or_null) >= cap)
            return false;
        strcpy(path, path_or_null);
    } else {
        char tmpl[MP_PATH_MAX + 32];
        if (!secure_template(tmpl, sizeof(tmpl)))
            return false;
        if (!mp_stats_expand_path(tmpl, path, cap)) {
            mp_log(MP_LOG_INFO, "MEMPOOL_STATS_FILE expands to a path that is too long");
            return false;
        }
    }
    int format = (int)mp_opt(MP_OPT_STATS_FORMAT);
    if (format == MP_FMT_NONE)
        format = MP_FMT_JSON; /* an explicit request still writes */
    return write_file(path, format);
}

bool mp_stats_write_dump(int reason)
{
    if (mp_opt(MP_OPT_STATS_FORMAT) == MP_FMT_NONE)
        return true;
    pthread_mutex_lock(&write_lock);
    bool ok = true;
    if (!exiting) {
        char path[MP_PATH_MAX];
        mp_timeline_force(); /* the state now, whatever the interval */
        cur_reason = reason;
        ok = mp_stats_write_now(NULL, path, sizeof(path));
        cur_reason = MP_DUMP_EXIT;
        dump_seq += ok;
    }
    pthread_mutex_unlock(&write_lock);
    return ok;
}

bool mp_stats_write_api(const char *path_or_null, char *path, size_t cap)
{
    pthread_mutex_lock(&write_lock);
    cur_reason = MP_DUMP_API;
    mp_timeline_force();
    bool ok = mp_stats_write_now(path_or_null, path, cap);
    cur_reason = MP_DUMP_EXIT;
    dump_seq += ok;
    pthread_mutex_unlock(&write_lock);
    return ok;
}

/* The pid of this process if it is a child of fork() (our handler ran in
 * it), else 0.  A vfork() child runs no handler: it sees its parent's
 * value, which is never its own pid. */
static _Atomic int forked_pid;

/* Threads of this process, from /proc (no allocation); 0 if unknown. */
static int thread_count(void)
{
    char buf[2048];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    const char *t = strstr(buf, "\nThreads:");
    return t ? atoi(t + 9) : 0;
}

void mp_stats_write_at__exit(void)
{
    /* Only a fork() child alone in its process: what multiprocessing's
     * workers and many servers' children are.  Never a vfork() child (it
     * shares its parent's memory), never with other threads (one could hold
     * a pool lock forever), never from inside the shim (a signal handler
     * calling _exit while this thread is in malloc). */
    if (mp_tls_guard || atomic_load(&forked_pid) != (int)getpid() || thread_count() != 1)
        return;
    /* The process is leaving anyway: a SIGTERM (a pool's terminate()) waits
     * the few milliseconds of the write, so no half-written file is left. */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    mp_stats_write_exit();
}

void mp_stats_write_fork_child(void)
{
    atomic_store(&forked_pid, (int)getpid());
    pthread_mutex_init(&write_lock, NULL); /* the dump thread may have held it */
    dump_seq = 0;
    exiting = false;
}

void mp_stats_write_exit(void)
{
    if (atomic_load(&mp_state) != MP_STATE_READY)
        return;
    int pid = (int)getpid();
    if (atomic_exchange(&written_pid, pid) == pid)
        return; /* this process already wrote */
    pthread_mutex_lock(&write_lock); /* a dump being written finishes first */
    exiting = true;
    if (mp_opt(MP_OPT_STATS_FORMAT) != MP_FMT_NONE) {
        char path[MP_PATH_MAX];
        mp_timeline_force();
        if (mp_stats_write_now(NULL, path, sizeof(path)))
            mp_log(MP_LOG_INFO, "stats written to %s", path);
    }
    pthread_mutex_unlock(&write_lock);
    if (mp_opt(MP_OPT_SUMMARY))
        render(STDERR_FILENO, MP_FMT_TEXT, 12);
}
