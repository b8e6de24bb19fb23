/*
 * Call sites of misses: which code makes the pools go to jemalloc or the
 * driver.  Host misses are sampled by bytes (like jemalloc's heap
 * profiler); device and pinned misses are captured every time.  Stacks are
 * raw return addresses (libgcc's _Unwind_Backtrace), aggregated per stack
 * in a fixed table; names are looked up once, when the stats are written.
 */
#ifndef MEMPOOL_CALLSITE_H
#define MEMPOOL_CALLSITE_H

#include <time.h>

#include "core.h"

enum { MP_SITE_HOST, MP_SITE_DEVICE, MP_SITE_PINNED, MP_SITE_KINDS };

#define MP_SITE_DEPTH_MAX 16
#define MP_SITE_CLASSES 4 /* size classes listed per site (the first seen) */

typedef struct mp_site {
    uint64_t hash; /* 0: empty slot */
    uint8_t kind, depth;
    uint64_t samples, wait_ns;
    double misses, bytes; /* host: estimates (each sample stands for its share of the bytes) */
    struct {
        uint64_t size, samples;
    } cls[MP_SITE_CLASSES];
    void *pc[MP_SITE_DEPTH_MAX];
} mp_site_t;

/* Bytes between two host samples (MEMPOOL_CALLSITE_SAMPLE), 0 = off. */
extern uint64_t mp_callsite_rate;
extern _Thread_local int64_t mp_tls_sample_left __attribute__((tls_model("initial-exec")));

/* Read the options (after mp_options_load). */
void mp_callsite_init(void);
/* The countdown crossed zero: draw the next interval; true if this miss
 * is sampled (false for a thread's first crossing, which only arms it). */
bool mp_callsite_arm(void);

/* A host miss of size bytes: capture it?  Costs a subtraction when not. */
static inline bool mp_callsite_sample_host(size_t size)
{
    if (mp_likely(mp_callsite_rate == 0))
        return false;
    mp_tls_sample_left -= (int64_t)size;
    return mp_unlikely(mp_tls_sample_left <= 0) && mp_callsite_arm();
}

/* Capture the caller's stack and count it: a miss of size bytes served by
 * a block of class_size bytes, after wait_ns in the backing allocation.
 * Never allocates; a re-entrant call (signal handler, the unwinder calling
 * malloc) or a full table skips the sample. */
void mp_callsite_record(int kind, size_t size, size_t class_size, uint64_t wait_ns);
/* Device/pinned: record every miss when MEMPOOL_CALLSITE_DEVICE is on. */
static inline bool mp_callsite_device_on(void) { return mp_opt(MP_OPT_CALLSITE_DEVICE) != 0; }

/* The caller's stack, the shim's own frames dropped, into pc (at most max
 * frames, at most MP_SITE_DEPTH_MAX).  Never allocates; 0 when this thread
 * is already capturing.  (Debug findings.) */
unsigned mp_callsite_stack(void **pc, unsigned max);
/* "function+0xoff (object)" of a return address, for a message (dladdr:
 * exported names only); "(unknown: no unwinder)" for NULL. */
void mp_callsite_name(void *pc, char *buf, size_t cap);

/* A copy of the table for the writer: sites in use go to out (at most
 * cap), counters of the whole table to captured/skipped.  Returns the
 * number of sites copied. */
size_t mp_callsite_copy(mp_site_t *out, size_t cap, uint64_t *captured, uint64_t *skipped);
#define MP_SITES 1024
/* The table's counters alone (no site is stored before one is captured). */
void mp_callsite_counts(uint64_t *captured, uint64_t *skipped);

/* While set, this thread's misses are not captured (the writer's dladdr). */
void mp_callsite_guard(bool on);
/* Forget everything (the child of a fork starts its own counters). */
void mp_callsite_reset(void);
/* Whether stacks can be captured at all (always: libgcc's unwinder is linked in). */
bool mp_callsite_available(void);

#endif
