/*
 * diag/: above core/.  Debug-mode checks (debug.c), call sites (callsite.h)
 * and the timeline (timeline.h); the pools push into them, they call no pool.
 */
#ifndef MEMPOOL_DIAG_H
#define MEMPOOL_DIAG_H

#include "core.h"

/* ---- debug.c: MEMPOOL_DEBUG checks ------------------------------------ */
/* Trailer in the last bytes of every host block in debug mode; requests
 * grow by MP_DEBUG_EXTRA so that at least 8 guard bytes precede it. */
#define MP_DEBUG_TRAILER 32
#define MP_DEBUG_EXTRA (MP_DEBUG_TRAILER + 8)
enum {
    MP_DEBUG_USE_AFTER_FREE,
    MP_DEBUG_OVERFLOW,
    MP_DEBUG_DOUBLE_FREE,
    MP_DEBUG_INVALID_FREE,
    MP_DEBUG_DEVICE_DOUBLE_HANDOUT,
    MP_DEBUG_DEVICE_DOUBLE_FREE, /* counted in every mode: such frees are always refused */
    MP_DEBUG_WRONG_POOL,         /* explicit API: release to a pool that does not own it */
    MP_DEBUG_KINDS
};
extern bool mp_debug_on; /* MEMPOOL_DEBUG, read once at init */
void mp_debug_init(void);
/* req + MP_DEBUG_EXTRA (saturating). */
size_t mp_debug_size(size_t req);
/* A block of usable bytes at p handed out for req bytes; reused: it comes
 * from our pool (poisoned at free), so the poison is checked. */
void mp_debug_alloc(void *p, size_t usable, size_t req, bool reused);
/* A block being freed: checks its trailer and guard, poisons it.  false:
 * a double or invalid free, which the caller must ignore. */
bool mp_debug_free(void *p, size_t usable);
/* What malloc_usable_size reports for a debug block: the request. */
size_t mp_debug_usable(const void *p, size_t usable);
/* Count a finding, print one "mempool: debug:" line naming the caller,
 * then abort or return (MEMPOOL_DEBUG_ACTION; then: what happens next). */
void mp_debug_finding(int kind, const char *then, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
uint64_t mp_debug_count(int kind);
/* Count a finding reported elsewhere (outside debug mode: no abort). */
void mp_debug_count_add(int kind);
const char *mp_debug_kind_name(int kind);
void mp_debug_reset(void);

#include "callsite.h"
#include "timeline.h"

#endif /* MEMPOOL_DIAG_H */
