/*
 * The one output path of every report (stats file, text table, summary,
 * mempool_write_stats): a fixed buffer flushed with write(2), numbers
 * formatted by hand and JSON strings escaped in one place.  Nothing here
 * allocates or calls stdio, so it is safe at exit and inside a dump while
 * other threads call malloc.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "emit.h"

void mp_out_flush(mp_out_t *o)
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

void mp_out_mem(mp_out_t *o, const char *s, size_t len)
{
    while (len > 0) {
        if (o->n == sizeof(o->buf))
            mp_out_flush(o);
        size_t k = sizeof(o->buf) - o->n;
        if (k > len)
            k = len;
        memcpy(o->buf + o->n, s, k);
        o->n += k;
        s += k;
        len -= k;
    }
}

void mp_out_str(mp_out_t *o, const char *s) { mp_out_mem(o, s, strlen(s)); }

void mp_out_u64(mp_out_t *o, uint64_t v)
{
    char tmp[24];
    int i = (int)sizeof(tmp);
    do {
        tmp[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    mp_out_mem(o, tmp + i, sizeof(tmp) - (size_t)i);
}

void mp_out_i64(mp_out_t *o, int64_t v)
{
    if (v < 0) {
        mp_out_str(o, "-");
        mp_out_u64(o, (uint64_t)0 - (uint64_t)v);
    } else {
        mp_out_u64(o, (uint64_t)v);
    }
}

/* Fixed point with `digits` decimals (no printf: it may allocate). */
void mp_out_fixed(mp_out_t *o, double v, int digits)
{
    if (v < 0) {
        mp_out_str(o, "-");
        v = -v;
    }
    uint64_t scale = 1;
    for (int i = 0; i < digits; i++)
        scale *= 10;
    uint64_t x = (uint64_t)(v * (double)scale + 0.5);
    mp_out_u64(o, x / scale);
    if (digits == 0)
        return;
    mp_out_str(o, ".");
    char tmp[20];
    uint64_t frac = x % scale;
    for (int i = digits - 1; i >= 0; i--) {
        tmp[i] = (char)('0' + frac % 10);
        frac /= 10;
    }
    mp_out_mem(o, tmp, (size_t)digits);
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

static void json_escape(mp_out_t *o, const char *str, size_t n)
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
            mp_out_mem(o, (const char *)s + i - run, run);
        run = 0;
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            mp_out_mem(o, e, 2);
        } else {
            char e[6] = {'\\', 'u', c < 0x20 ? '0' : 'd', c < 0x20 ? '0' : 'c', hex[c >> 4], hex[c & 15]};
            mp_out_mem(o, e, 6);
        }
        i++;
    }
    if (run)
        mp_out_mem(o, (const char *)s + n - run, run);
}

void mp_out_hex(mp_out_t *o, uintptr_t v)
{
    char tmp[2 + 16];
    int i = (int)sizeof(tmp);
    do {
        tmp[--i] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    tmp[--i] = 'x';
    tmp[--i] = '0';
    mp_out_mem(o, tmp + i, sizeof(tmp) - (size_t)i);
}

/* One frame, named with dladdr (exported symbols; the report can ask
 * addr2line for the rest with object and object_offset). */

void mp_out_json_mem(mp_out_t *o, const char *s, size_t len)
{
    mp_out_str(o, "\"");
    json_escape(o, s, len);
    mp_out_str(o, "\"");
}

void mp_out_json_str(mp_out_t *o, const char *s) { mp_out_json_mem(o, s, strlen(s)); }

void mp_out_pad(mp_out_t *o, const char *s, size_t width, bool left)
{
    size_t n = strlen(s);
    if (left)
        mp_out_str(o, s);
    for (; n < width; n++)
        mp_out_str(o, " ");
    if (!left)
        mp_out_str(o, s);
}
