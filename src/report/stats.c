/*
 * The counters of every kind together: the timeline's totals reader, and
 * the reset after fork.  (The host snapshot is host/host_stats.c.)
 */
#include <string.h>
#include <time.h>

#include "device_pool.h"
#include "report.h"
#include "timeline.h"

void mp_stats_reset(void)
{
    mp_host_stats_reset();
    clock_gettime(CLOCK_REALTIME, &mp_start_real);
    clock_gettime(CLOCK_MONOTONIC, &mp_start_mono);
}

void mp_stats_totals(int64_t *v)
{
    int64_t u = 0, r = 0;
    for (unsigned c = 0; c < mp_sc.count; c++) {
        u += MP_LOAD(mp_class_stats[c].inuse);
        r += MP_LOAD(mp_class_stats[c].reserved);
    }
    int64_t b = MP_LOAD(mp_bypass_stats.inuse);
    v[MP_TL_HOST_IN_USE] = u + b;
    v[MP_TL_HOST_RESERVED] = r + b;
    mp_device_totals(&v[MP_TL_DEVICE_IN_USE]);
}
