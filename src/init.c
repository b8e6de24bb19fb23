/*
 * Initialisation: once, lazily, from whichever entry point runs first
 * (often before main and before our constructor).  The initialising thread
 * sets mp_tls_guard, so its own nested allocations (dlsym, jemalloc's
 * start-up) are served from the bootstrap buffer; other threads wait.
 */
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <time.h>

#include "internal.h"

_Atomic int mp_state;
_Thread_local int mp_tls_guard __attribute__((tls_model("initial-exec")));
struct timespec mp_start_real, mp_start_mono;

static const char *env_lookup(const char *name) { return secure_getenv(name); }

static void fork_prepare(void) { mp_host_fork_prepare(); }
static void fork_parent(void) { mp_host_fork_parent(); }
static void fork_child(void)
{
    mp_host_fork_child();
    mp_stats_reset();
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
        while ((st = atomic_load_explicit(&mp_state, memory_order_acquire)) == MP_STATE_INITIALIZING)
            sched_yield();
        return st;
    }
    mp_tls_guard++;
    clock_gettime(CLOCK_REALTIME, &mp_start_real);
    clock_gettime(CLOCK_MONOTONIC, &mp_start_mono);
    mp_libc_resolve();
    mp_options_load(env_lookup);
    mp_size_classes_init(&mp_sc, (int)mp_opt(MP_OPT_HOST_SIZE_CLASSES),
                         (size_t)mp_opt(MP_OPT_HOST_MAX_BLOCK_SIZE));
    bool ok = mp_heap_init((size_t)mp_opt(MP_OPT_HOST_RESERVE));
    mp_host_init();
    mp_tls_guard--;
    atomic_store_explicit(&mp_state, ok ? MP_STATE_READY : MP_STATE_LIBC, memory_order_release);
    /* After READY: registering may allocate, which is now served normally. */
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    return ok ? MP_STATE_READY : MP_STATE_LIBC;
}
