/*
 * Timeline ring (timeline.h).  The thread that finds the interval up takes
 * the sample; a compare-and-swap on the next due time lets exactly one of
 * many threads do it.  When the ring is full it keeps every other sample
 * and doubles the interval, so a long run keeps its whole history at a
 * coarser step (the fixed memory stays 56 KiB).
 */
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "timeline.h"

_Atomic uint64_t mp_tl_next = UINT64_MAX;
MP_STARTUP_DATA bool mp_timeline_host;

static pthread_mutex_t ring_lock = PTHREAD_MUTEX_INITIALIZER;
static mp_tl_sample_t ring[MP_TL_SAMPLES];
static size_t ring_n;
MP_STARTUP_DATA static uint64_t interval_ns; /* set at start, doubled when the ring fills */
/* Handed in at start: the timeline calls no pool, the pools call it. */
MP_STARTUP_DATA static mp_tl_totals_fn read_totals;
MP_STARTUP_DATA static uint64_t start_ns;
MP_STARTUP_DATA static _Atomic bool ring_used; /* mp_flag_raise: by the first sample */

uint64_t mp_timeline_now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

void mp_timeline_init(mp_tl_totals_fn totals, uint64_t start_mono_ns)
{
    read_totals = totals;
    start_ns = start_mono_ns;
    interval_ns = mp_opt(MP_OPT_TIMELINE_INTERVAL) * 1000000u;
    mp_timeline_host = interval_ns != 0 && mp_opt(MP_OPT_TIMELINE_HOST) != 0;
    /* The first tick samples at once (the start of the run). */
    atomic_store(&mp_tl_next, interval_ns ? 0 : UINT64_MAX);
}

static void take(uint64_t now, bool forced)
{
    mp_tl_sample_t s = {0};
    s.t_ns = now > start_ns ? now - start_ns : 0;
    if (read_totals)
        read_totals(s.v);
    pthread_mutex_lock(&ring_lock);
    if (ring_n == MP_TL_SAMPLES) {
        for (size_t i = 0; i < MP_TL_SAMPLES / 2; i++)
            ring[i] = ring[2 * i];
        ring_n = MP_TL_SAMPLES / 2;
        interval_ns *= 2;
    }
    ring[ring_n++] = s;
    uint64_t step = interval_ns;
    pthread_mutex_unlock(&ring_lock);
    mp_flag_raise(&ring_used);
    if (!forced)
        atomic_store(&mp_tl_next, step ? now + step : UINT64_MAX);
}

void mp_timeline_sample(uint64_t now)
{
    uint64_t next = atomic_load(&mp_tl_next);
    if (now < next || next >= UINT64_MAX - 1
        || !atomic_compare_exchange_strong(&mp_tl_next, &next, UINT64_MAX - 1))
        return; /* another thread takes this one */
    take(now, false);
}

void mp_timeline_force(void)
{
    if (!atomic_load(&ring_used))
        return;
    pthread_mutex_lock(&ring_lock);
    bool started = ring_n > 0;
    pthread_mutex_unlock(&ring_lock);
    if (started)
        take(mp_timeline_now(), true);
}

size_t mp_timeline_len(void)
{
    if (!atomic_load(&ring_used))
        return 0;
    pthread_mutex_lock(&ring_lock);
    size_t n = ring_n;
    pthread_mutex_unlock(&ring_lock);
    return n;
}

size_t mp_timeline_copy(mp_tl_sample_t *out, size_t cap, uint64_t *interval)
{
    if (!atomic_load(&ring_used)) {
        *interval = interval_ns;
        return 0;
    }
    pthread_mutex_lock(&ring_lock);
    size_t n = ring_n < cap ? ring_n : cap;
    memcpy(out, ring, n * sizeof(*out));
    *interval = interval_ns;
    pthread_mutex_unlock(&ring_lock);
    return n;
}

void mp_timeline_reset(void)
{
    pthread_mutex_init(&ring_lock, NULL); /* a thread that held it is gone */
    ring_n = 0;
    mp_timeline_init(read_totals, start_ns);
}
