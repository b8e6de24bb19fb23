/*
 * Messages on stderr, one line each, prefixed "mempool:".  Formatted into a
 * stack buffer and written with write(2): no stdio, no allocation, usable
 * from inside malloc and at exit.
 */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* Set by the options (MEMPOOL_LOG_LEVEL) when they load: the logger reads
 * nothing above it, and logs at the default level before that. */
static _Atomic int log_level = MP_LOG_WARN;

void mp_log_set_level(int level) { atomic_store_explicit(&log_level, level, memory_order_relaxed); }

/* MEMPOOL_LOG_TO=stats-dir: one line appended to mempool.log next to the
 * stats file (O_APPEND: lines of many processes do not mix). */
static void log_to_stats_dir(const char *msg, size_t n)
{
    char path[MP_PATH_MAX + 16], line[540];
    if (!mp_stats_expand_path(mp_opt_stats_path, path, MP_PATH_MAX))
        return;
    char *slash = strrchr(path, '/');
    if (slash)
        strcpy(slash + 1, "mempool.log");
    else
        strcpy(path, "mempool.log");
    int k = snprintf(line, sizeof(line), "mempool[%d]:%.*s", (int)getpid(), (int)(n - 8), msg + 8);
    if (k <= 0)
        return;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return;
    ssize_t w = write(fd, line, (size_t)k < sizeof(line) ? (size_t)k : sizeof(line) - 1);
    (void)w;
    close(fd);
}

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
    if (mp_opt_values[MP_OPT_LOG_TO] == 1) {
        log_to_stats_dir(buf, n);
        return;
    }
    ssize_t w = write(STDERR_FILENO, buf, n);
    (void)w;
}
