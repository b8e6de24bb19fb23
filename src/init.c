/*
 * Initialisation: once, lazily, from whichever entry point runs first
 * (often before main and before our constructor).  The initialising thread
 * sets mp_tls_guard, so its own nested allocations (dlsym, jemalloc's
 * start-up) are served from the bootstrap buffer; other threads wait.
 */
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "callsite.h"
#include "device_pool.h"
#include "internal.h"
#include "api.h"
#include "host_stats.h"
#include "timeline.h"


static const char *env_lookup(const char *name) { return secure_getenv(name); }

/* Most processes set no MEMPOOL_ option: one pass over the environment
 * spares them a getenv per option. */
static bool environ_has_options(void)
{
    for (char **e = environ; e && *e; e++)
        if (strncmp(*e, "MEMPOOL_", 8) == 0)
            return true;
    return false;
}

/* Registered first thing in init, so a fork() in another thread waits for
 * initialisation to finish instead of copying it half done. */
static void fork_wait_init(void)
{
    while (atomic_load(&mp_state) == MP_STATE_INITIALIZING && !mp_tls_guard)
        sched_yield();
}

/* MEMPOOL_LOG_TO=stats-dir: mempool.log in the stats file's directory (the
 * template may name the pid: again in a fork child). */
static void log_file_from_options(void)
{
    char path[MP_PATH_MAX + 16];
    if (mp_opt(MP_OPT_LOG_TO) != 1 || !mp_stats_expand_path(mp_opt_stats_path, path, MP_PATH_MAX)) {
        mp_log_set_file(NULL);
        return;
    }
    char *slash = strrchr(path, '/');
    strcpy(slash ? slash + 1 : path, "mempool.log");
    mp_log_set_file(path);
}

/*
 * fork(): one set of handlers, registered at initialisation.  Prepare takes
 * the API pools' locks (held while calling jemalloc), the arena lock (held
 * while creating arenas, and for the whole of jemalloc's late start: a fork
 * waits for it), the host pools' locks (never held while calling jemalloc),
 * then runs jemalloc's own prepare when it has started: jemalloc does not
 * register its handlers itself (heap.c), so their place in the order does
 * not depend on when it started.  The child resets jemalloc first, then
 * unlocks ours and adopts the caches of threads that do not exist in it.
 */
static void fork_prepare(void)
{
    mp_pools_fork_prepare(); /* the API's pools never call into the host pools with their locks held */
    mp_heap_fork_prepare();
    mp_host_fork_prepare();
    mp_heap_fork_prepare_jemalloc();
}
static void fork_parent(void)
{
    mp_heap_fork_parent_jemalloc();
    mp_host_fork_parent();
    mp_heap_fork_parent();
    mp_pools_fork_release();
}
static void fork_child(void)
{
    mp_heap_fork_child_jemalloc();
    mp_host_fork_parent(); /* unlock: the child is the thread that locked */
    mp_heap_fork_parent();
    mp_pools_fork_release();
    mp_host_fork_child_adopt();
    mp_device_fork_child();
    mp_pressure_fork_child();
    mp_stats_reset();
    mp_debug_reset();
    mp_callsite_reset();
    mp_timeline_reset();
    mp_stats_write_fork_child();
    mp_dump_fork_child();
    log_file_from_options();
}

MP_STARTUP_DATA static _Atomic pid_t init_pid;

/* This process was forked while another thread initialised the shim (before
 * the fork handlers were registered): that thread does not exist here, and
 * jemalloc may be half set up.  The child runs on libc's allocator. */
static int orphaned_init(void)
{
    int expected = MP_STATE_INITIALIZING;
    if (atomic_compare_exchange_strong(&mp_state, &expected, MP_STATE_LIBC)) {
        mp_tls_guard++;
        mp_libc_resolve();
        mp_tls_guard--;
    }
    return atomic_load(&mp_state);
}

int mp_init(void)
{
    int st = atomic_load_explicit(&mp_state, memory_order_acquire);
    if (st >= MP_STATE_READY)
        return st;
    if (mp_tls_guard)
        return MP_STATE_INITIALIZING; /* re-entered from our own init */
    int expected = MP_STATE_UNINIT;
    if (!atomic_compare_exchange_strong(&mp_state, &expected, MP_STATE_INITIALIZING)) {
        while ((st = atomic_load_explicit(&mp_state, memory_order_acquire)) == MP_STATE_INITIALIZING) {
            pid_t owner = atomic_load(&init_pid);
            if (owner != 0 && owner != getpid())
                return orphaned_init();
            sched_yield();
        }
        return st;
    }
    atomic_store(&init_pid, getpid());
    mp_tls_guard++;
    pthread_atfork(fork_wait_init, NULL, NULL);
    clock_gettime(CLOCK_REALTIME, &mp_start_real);
    clock_gettime(CLOCK_MONOTONIC, &mp_start_mono);
    mp_libc_resolve();
    mp_options_load(environ_has_options() ? env_lookup : NULL);
    log_file_from_options();
    mp_callsite_init();
    mp_debug_init();
    mp_timeline_init(mp_stats_totals, (uint64_t)mp_start_mono.tv_sec * 1000000000u
                                          + (uint64_t)mp_start_mono.tv_nsec);
    mp_size_classes_init(&mp_sc, (int)mp_opt(MP_OPT_HOST_SIZE_CLASSES),
                         (size_t)mp_opt(MP_OPT_HOST_MAX_BLOCK_SIZE));
    mp_heap_set_large_purge((size_t)mp_opt(MP_OPT_HOST_LARGE_PURGE));
    bool ok = mp_heap_init((size_t)mp_opt(MP_OPT_HOST_RESERVE), (size_t)mp_opt(MP_OPT_HOST_CARVE_LIMIT));
    mp_host_init();
    if (ok)
        pthread_atfork(fork_prepare, fork_parent, fork_child);
    mp_tls_guard--;
    atomic_store_explicit(&mp_state, ok ? MP_STATE_READY : MP_STATE_LIBC, memory_order_release);
    return ok ? MP_STATE_READY : MP_STATE_LIBC;
}
