/*
 * The timeline: bytes in use and reserved per kind, sampled at an interval
 * by whichever thread allocates when the interval is up (no timer, no
 * thread: an idle process is never woken), kept in a bounded ring.
 */
#ifndef MEMPOOL_TIMELINE_H
#define MEMPOOL_TIMELINE_H

#include "core.h"

enum { MP_TL_HOST_IN_USE, MP_TL_HOST_RESERVED, MP_TL_DEVICE_IN_USE, MP_TL_DEVICE_RESERVED,
       MP_TL_PINNED_IN_USE, MP_TL_PINNED_RESERVED, MP_TL_VALUES };
#define MP_TL_SAMPLES 1024

typedef struct mp_tl_sample {
    uint64_t t_ns; /* since the shim started */
    int64_t v[MP_TL_VALUES];
} mp_tl_sample_t;

/* Monotonic nanoseconds of the next sample; UINT64_MAX when off. */
extern _Atomic uint64_t mp_tl_next;
/* Reads bytes in use and reserved of every kind into v[MP_TL_VALUES]. */
typedef void (*mp_tl_totals_fn)(int64_t *v);
/* At start: the reader of the pools' totals (the timeline sits below the
 * pools and calls none of them) and the start time samples count from. */
void mp_timeline_init(mp_tl_totals_fn totals, uint64_t start_mono_ns);
void mp_timeline_sample(uint64_t now_ns);
/* A sample now, if the timeline has started (the stats writer's last point). */
void mp_timeline_force(void);
uint64_t mp_timeline_now(void);

/* Called by the device/pinned paths (and the host slow paths when
 * MEMPOOL_TIMELINE_HOST is set): a load and a compare unless due. */
static inline void mp_timeline_tick(void)
{
    uint64_t next = atomic_load_explicit(&mp_tl_next, memory_order_relaxed);
    if (mp_unlikely(next != UINT64_MAX)) {
        uint64_t now = mp_timeline_now();
        if (now >= next)
            mp_timeline_sample(now);
    }
}
extern bool mp_timeline_host;

/* Samples held now. */
size_t mp_timeline_len(void);
/* Copy the ring out (oldest first); returns the count, the interval in ns. */
size_t mp_timeline_copy(mp_tl_sample_t *out, size_t cap, uint64_t *interval_ns);
void mp_timeline_reset(void);

#endif
