/*
 * The text table (MEMPOOL_STATS_FORMAT=text, the exit summary): one row a
 * size class, byte counts in human units.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "emit.h"



/* ---- text ---------------------------------------------------------------- */


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

static void col_u64(mp_out_t *o, uint64_t v, size_t w)
{
    char b[32];
    snprintf(b, sizeof(b), "%llu", (unsigned long long)v);
    mp_out_pad(o, b, w, false);
}

static void col_bytes(mp_out_t *o, int64_t v, size_t w)
{
    char b[32];
    fmt_bytes(b, sizeof(b), v);
    mp_out_pad(o, b, w, false);
}

static void col_rate(mp_out_t *o, uint64_t a, uint64_t b, size_t w)
{
    char buf[32];
    uint64_t permille = b ? (a * 1000 + b / 2) / b : 0;
    snprintf(buf, sizeof(buf), "%llu.%llu%%", (unsigned long long)(permille / 10),
             (unsigned long long)(permille % 10));
    mp_out_pad(o, buf, w, false);
}

static void text_row(mp_out_t *o, const char *label, const mp_row_t *r)
{
    mp_out_pad(o, label, 10, false);
    col_u64(o, r->requests, 12);
    col_u64(o, r->hits, 12);
    col_u64(o, r->misses, 10);
    col_rate(o, r->hits, r->requests, 8);
    col_bytes(o, r->bytes_in_use_peak, 12);
    col_bytes(o, r->bytes_reserved_peak, 12);
    col_bytes(o, (int64_t)r->cached_bytes, 12);
    col_u64(o, r->trims, 9);
    mp_out_str(o, "\n");
}

/* The text report; max_rows limits the size-class rows (busiest first). */
void mp_render_text(mp_out_t *o, const mp_snapshot_t *s, unsigned max_rows)
{
    char exe[MP_PATH_MAX], line[160];
    mp_read_exe(exe, sizeof(exe));
    mp_out_str(o, "mempool: ");
    mp_out_str(o, mp_base_name(exe));
    snprintf(line, sizeof(line), " (pid %d), %llu.%03llu s\n",
             (int)getpid(), (unsigned long long)s->duration_s,
             (unsigned long long)((s->duration_s - (double)(uint64_t)s->duration_s) * 1000));
    mp_out_str(o, line);
    mp_out_str(o, "      host    requests        hits    misses    hit%    in use^   reserved^"
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
    mp_out_str(o, line);
    mp_out_str(o, "  ^ = peak\n");
    uint64_t found = 0;
    for (int k = 0; k < MP_DEBUG_KINDS; k++)
        found += mp_debug_count(k);
    if (mp_debug_on || found) {
        mp_out_str(o, "  debug findings:");
        for (int k = 0; k < MP_DEBUG_KINDS; k++) {
            snprintf(line, sizeof(line), " %s %llu", mp_debug_kind_name(k),
                     (unsigned long long)mp_debug_count(k));
            mp_out_str(o, line);
        }
        mp_out_str(o, "\n");
    }
}

/* Snapshots are 15 KiB: too big for small thread stacks, and malloc is
 * what we report on, so each writer maps its own. */
