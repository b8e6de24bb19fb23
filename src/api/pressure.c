/*
 * The memory-pressure monitor: a thread, started by the first pool that
 * asks for it (a config's pressure_threshold, or MEMPOOL_PRESSURE_THRESHOLD
 * for the default pools), that checks every MEMPOOL_PRESSURE_INTERVAL ms
 * how much memory is in use and clears the cache of each pool over its
 * threshold (api_pools.c).  When no monitored pool caches anything it parks
 * on a condition variable (no wake-ups while idle) until a release wakes
 * it; with default pools monitored, whose frees it cannot see, it backs off
 * instead, doubling the interval up to 64 times while nothing is cached.
 *
 * Host memory available: MemAvailable of /proc/meminfo, capped by the
 * cgroup's limit (v2 memory.max - memory.current, or v1
 * memory.limit_in_bytes - memory.usage_in_bytes): in a container the
 * cgroup limit is what the OOM killer enforces.  Device: cuMemGetInfo.
 */
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cuda_driver.h"
#include "mempool.h"
#include "api.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static _Atomic bool started, parked;
static _Atomic unsigned kicks; /* bumped by every kick: a kick between the
                                * idle check and the wait is not lost */
static _Atomic(mp_mem_reader_fn) reader_override;

/* Read a small file into buf (no stdio: no allocation). */
static bool read_small(const char *path, char *buf, size_t cap)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return false;
    ssize_t n = read(fd, buf, cap - 1);
    close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    return true;
}

static bool meminfo_field(const char *text, const char *key, uint64_t *out)
{
    const char *p = strstr(text, key);
    if (p == NULL)
        return false;
    *out = strtoull(p + strlen(key), NULL, 10) * 1024; /* kB */
    return true;
}

/* Bytes a cgroup lets the process still use, and its limit; false when
 * there is no limit. */
static bool cgroup_room(uint64_t *room, uint64_t *limit)
{
    char buf[512], path[600], val[64];
    if (read_small("/proc/self/cgroup", buf, sizeof(buf))) {
        char *v2 = strstr(buf, "0::");
        if (v2) {
            char *end = strchr(v2, '\n');
            if (end)
                *end = '\0';
            const char *dir = v2 + 3;
            snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.max", dir);
            if (read_small(path, val, sizeof(val)) && strncmp(val, "max", 3) != 0) {
                *limit = strtoull(val, NULL, 10);
                snprintf(path, sizeof(path), "/sys/fs/cgroup%s/memory.current", dir);
                if (read_small(path, val, sizeof(val))) {
                    uint64_t cur = strtoull(val, NULL, 10);
                    *room = cur < *limit ? *limit - cur : 0;
                    return true;
                }
            }
        }
    }
    if (read_small("/sys/fs/cgroup/memory/memory.limit_in_bytes", val, sizeof(val))) {
        *limit = strtoull(val, NULL, 10);
        uint64_t cur = 0;
        if (*limit < (1ull << 60) && read_small("/sys/fs/cgroup/memory/memory.usage_in_bytes", val, sizeof(val))) {
            cur = strtoull(val, NULL, 10);
            *room = cur < *limit ? *limit - cur : 0;
            return true;
        }
    }
    return false;
}

static bool read_host(uint64_t *avail, uint64_t *total)
{
    char buf[4096];
    if (!read_small("/proc/meminfo", buf, sizeof(buf)) || !meminfo_field(buf, "MemTotal:", total)
        || !meminfo_field(buf, "MemAvailable:", avail))
        return false;
    uint64_t room, limit;
    if (cgroup_room(&room, &limit) && limit < *total) {
        *total = limit;
        *avail = room < *avail ? room : *avail;
    }
    return true;
}

bool mp_pressure_read(int kind, uint64_t *avail, uint64_t *total)
{
    mp_mem_reader_fn fn = atomic_load(&reader_override);
    if (fn)
        return fn(kind, avail, total);
    if (kind != MEMPOOL_KIND_DEVICE)
        return read_host(avail, total);
    size_t f = 0, t = 0;
    if (!mp_cuda.loaded || mp_cuda.mem_get_info == NULL || mp_cuda.mem_get_info(&f, &t) != MP_CUDA_SUCCESS)
        return false;
    *avail = f;
    *total = t;
    return true;
}

void mp_pressure_set_reader(mp_mem_reader_fn fn) { atomic_store(&reader_override, fn); }

static void *monitor(void *arg)
{
    (void)arg;
    unsigned backoff = 1;
    pthread_mutex_lock(&lock);
    for (;;) {
        for (;;) {
            unsigned seen = atomic_load(&kicks);
            if (!mp_pools_pressure_idle())
                break;
            atomic_store(&parked, true);
            while (atomic_load(&kicks) == seen)
                pthread_cond_wait(&wake, &lock);
            atomic_store(&parked, false);
        }
        pthread_mutex_unlock(&lock);
        mp_pools_pressure_check();
        mempool_stats_t s = {.struct_size = sizeof(s)};
        mempool_t *host = mempool_default(MEMPOOL_KIND_HOST);
        bool idle = host && mempool_get_stats(host, &s) == 0 && s.bytes_cached == 0;
        backoff = idle ? (backoff < 64 ? backoff * 2 : 64) : 1;
        uint64_t ms = mp_opt(MP_OPT_PRESSURE_INTERVAL) * backoff;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += (time_t)(ms / 1000);
        until.tv_nsec += (long)(ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_mutex_lock(&lock);
        pthread_cond_timedwait(&wake, &lock, &until);
    }
    return NULL;
}

void mp_pressure_kick(void)
{
    atomic_fetch_add(&kicks, 1);
    if (atomic_load_explicit(&started, memory_order_acquire)) {
        if (atomic_load(&parked)) {
            pthread_mutex_lock(&lock);
            pthread_cond_signal(&wake);
            pthread_mutex_unlock(&lock);
        }
        return;
    }
    pthread_mutex_lock(&lock);
    if (!atomic_load(&started)) {
        /* All signals blocked: the program's handlers never run on it. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 256 * 1024);
        if (pthread_create(&t, &attr, monitor, NULL) == 0)
            atomic_store(&started, true);
        else
            mp_log(MP_LOG_WARN, "could not start the memory-pressure monitor; pools are not trimmed under pressure");
        pthread_attr_destroy(&attr);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
    }
    pthread_mutex_unlock(&lock);
}

void mp_pressure_fork_child(void)
{
    pthread_mutex_init(&lock, NULL);
    pthread_cond_init(&wake, NULL);
    atomic_store(&started, false);
    atomic_store(&parked, false);
}
