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

#include "sys.h"

/* Set by the options (MEMPOOL_LOG_LEVEL) when they load: the logger reads
 * nothing above it, and logs at the default level before that. */
static _Atomic int log_level = MP_LOG_WARN;

void mp_log_set_level(int level) { atomic_store_explicit(&log_level, level, memory_order_relaxed); }

/* MEMPOOL_LOG_TO=stats-dir: the composition root names the file (mempool.log
 * next to the stats file); "" = stderr.  Lines are appended (O_APPEND: lines
 * of many processes do not mix). */
static char log_path[MP_PATH_MAX + 16];
MP_STARTUP_DATA static _Atomic bool log_to_file;

void mp_log_set_file(const char *path)
{
    atomic_store(&log_to_file, false);
    if (path == NULL || path[0] == '\0' || strlen(path) >= sizeof(log_path))
        return;
    strcpy(log_path, path);
    atomic_store(&log_to_file, true);
}

static void log_to_path(const char *msg, size_t n)
{
    char line[540];
    int k = snprintf(line, sizeof(line), "mempool[%d]:%.*s", (int)getpid(), (int)(n - 8), msg + 8);
    if (k <= 0)
        return;
    int fd = open(log_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
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
    if (atomic_load_explicit(&log_to_file, memory_order_relaxed)) {
        log_to_path(buf, n);
        return;
    }
    ssize_t w = write(STDERR_FILENO, buf, n);
    (void)w;
}
