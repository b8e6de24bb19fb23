/*
 * Messages on stderr, one line each, prefixed "mempool:".  Formatted into a
 * stack buffer and written with write(2): no stdio, no allocation, usable
 * from inside malloc and at exit.
 */
#include <stdarg.h>
#include <stdio.h>
#include <unistd.h>

#include "internal.h"

/* Set by the options (MEMPOOL_LOG_LEVEL) when they load: the logger reads
 * nothing above it, and logs at the default level before that. */
static _Atomic int log_level = MP_LOG_WARN;

void mp_log_set_level(int level) { atomic_store_explicit(&log_level, level, memory_order_relaxed); }

void mp_log(int level, const char *fmt, ...)
{
    if (level > atomic_load_explicit(&log_level, memory_order_relaxed))
        return;
    char buf[512];
    size_t n = 9;
    __builtin_memcpy(buf, "mempool: ", n);
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf + n, sizeof(buf) - n - 1, fmt, ap);
    va_end(ap);
    if (k < 0)
        return;
    n += (size_t)k < sizeof(buf) - n - 1 ? (size_t)k : sizeof(buf) - n - 2;
    buf[n++] = '\n';
    ssize_t w = write(STDERR_FILENO, buf, n);
    (void)w;
}
