/*
 * report/: the output primitives every renderer uses (emit.c) and the
 * renderers of a snapshot (stats_json.c, stats_text.c, pools_report.c),
 * private to the report layer.  Nothing here allocates.
 */
#ifndef MEMPOOL_EMIT_H
#define MEMPOOL_EMIT_H

#include "report.h"

/* Buffered output to a file descriptor; failed is set on the first error
 * (the rest is dropped).  Call mp_out_flush at the end. */
typedef struct mp_out {
    int fd;
    bool failed;
    size_t n;
    char buf[4096];
} mp_out_t;

void mp_out_flush(mp_out_t *o);
void mp_out_mem(mp_out_t *o, const char *s, size_t len);
void mp_out_str(mp_out_t *o, const char *s);
void mp_out_u64(mp_out_t *o, uint64_t v);
void mp_out_i64(mp_out_t *o, int64_t v);
/* Fixed point with `digits` decimals (no printf: it may allocate). */
void mp_out_fixed(mp_out_t *o, double v, int digits);
/* s padded with spaces to width bytes, on the right (left: true, like
 * printf's %-*s) or on the left. */
void mp_out_pad(mp_out_t *o, const char *s, size_t width, bool left);
/* "0x" and lower-case hex digits. */
void mp_out_hex(mp_out_t *o, uintptr_t v);
/* A JSON string, quoted: '"', '\\' and control bytes escaped, valid UTF-8
 * kept, every other byte b written as \udcXX (docs/stats.md: the byte can be
 * recovered, and the file stays valid JSON). */
void mp_out_json_mem(mp_out_t *o, const char *s, size_t len);
void mp_out_json_str(mp_out_t *o, const char *s);

/* ---- the renderers ------------------------------------------------------ */
/* Why and which write this is, for the JSON "process" object. */
typedef struct mp_dump_info {
    int reason;    /* MP_DUMP_*; MP_DUMP_EXIT is the final report */
    uint64_t seq;  /* dumps written before this one */
} mp_dump_info_t;

/* stats_json.c: the stats file (docs/stats.md). */
void mp_render_json(mp_out_t *o, const mp_snapshot_t *s, const mp_dump_info_t *d);
/* stats_text.c: the text table (at most max_rows size classes). */
void mp_render_text(mp_out_t *o, const mp_snapshot_t *s, unsigned max_rows);
/* pools_report.c: the "pools" array's objects (the mempool.h pools). */
void mp_render_pools_json(mp_out_t *o, const char *indent);
/* stats_file.c: facts of this process, read without allocating. */
void mp_read_exe(char *out, size_t cap);
/* The NUL-separated arguments (at most cap bytes; returns the count). */
size_t mp_read_args(char *out, size_t cap);
const char *mp_base_name(const char *path);

#endif /* MEMPOOL_EMIT_H */
