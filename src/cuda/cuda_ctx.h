/*
 * The CUDA contexts the pools have met, their event pools and the fences
 * that tell when freed memory is no longer used by the device (cuda_ctx.c).
 *
 * Error convention: functions that can fail return bool (false: nothing
 * was done, the caller keeps its blocks pending); slot lookups return -1.
 */
#ifndef MEMPOOL_CUDA_CTX_H
#define MEMPOOL_CUDA_CTX_H

#include <stdbool.h>
#include <stdint.h>

#include "cuda_abi.h"

#define MP_DEV_MAX 16 /* context slots: one context pool each */

/* One event of a fence: recorded in context `slot` as its fence number
 * `seq` (a context's fences complete in order, so a later completed one
 * answers for it without a query). */
typedef struct mp_fence_ev {
    mp_cu_event ev;
    uint64_t seq;
    uint64_t retired; /* streams of the context destroyed before the fence */
    int slot;
    bool done;
} mp_fence_ev_t;

/* All the events one fence needs: one per context with cuCtxRecordEvent
 * (CUDA >= 12.5), else one per context for its legacy stream plus one per
 * non-blocking stream.  Lives inside a batch; mp_fence_init before use. */
typedef struct mp_fence {
    unsigned n, cap;
    mp_fence_ev_t *ev; /* inl, or a mapping when more are needed */
    mp_fence_ev_t inl[2];
} mp_fence_t;

/* Slot of the current context, claiming a free one for a context seen for
 * the first time; its device in *dev.  -1: no driver, no context, or all
 * MP_DEV_MAX slots taken (one warning). */
int mp_ctx_current_slot(int *dev);
/* Slot of ctx if it has one, else -1 (never claims). */
int mp_ctx_slot_of(mp_cu_context ctx);
/* Slot of device dev's primary context, if the pools have met it; -1 if
 * they have not, -2 if the driver cannot tell which context is primary. */
int mp_ctx_primary_slot(int dev);
/* The slots of device dev's contexts, as a bit set. */
uint32_t mp_ctx_slots_of_device(int dev);
/* The slot's generation: it changes when the slot's context is forgotten,
 * so a block tagged with an older one belongs to a context that is gone. */
uint64_t mp_ctx_gen(int slot);
mp_cu_context mp_ctx_handle(int slot);
/* Slots in use, as a bit set (for pinned blocks, fenced in every one). */
uint32_t mp_ctx_slots_in_use(void);
/* The context is gone (reset, destroyed): forget it, its events, streams
 * and fences' state; the slot may serve a new context. */
void mp_ctx_forget(int slot);

void mp_fence_init(mp_fence_t *f);
/* Record one fence in each context of the set: false if one failed (the
 * events already recorded are given back). */
bool mp_fence_record(mp_fence_t *f, uint32_t slots);
/* Whether every event of the fence has completed: queries stop at the
 * first not done.  Done fences give their events back.  Only
 * CUDA_ERROR_NOT_READY-free success, or a context that no longer exists,
 * counts as done; any other error does not (counted in *errors). */
bool mp_fence_done(mp_fence_t *f, uint64_t *queries, uint64_t *errors);
/* Give the events back without waiting (their blocks are being freed to
 * the driver, which waits by itself). */
void mp_fence_release(mp_fence_t *f);

/* An event of the slot's context (for stream-ordered releases), or NULL;
 * *epoch says which context the slot served then.  Put it back when its
 * block is taken (it goes to the spare list only if the slot still serves
 * that context and the event is healthy). */
mp_cu_event mp_ctx_event_get(int slot, uint64_t *epoch);
void mp_ctx_event_put(int slot, mp_cu_event ev, uint64_t epoch, bool healthy);
/* An event query's answer: 1 done, 0 not yet, -1 an error that proves
 * nothing (a capture the shim did not see, a bad handle); *healthy false
 * if the event answered with an error (never reuse it).  Only a context
 * that no longer exists takes its work with it (done). */
int mp_ctx_event_state(mp_cu_event ev, bool *healthy);

/* Stream hooks.  Only drivers without cuCtxRecordEvent need to know the
 * streams: non-blocking ones are not ordered by the legacy stream, and a
 * destroyed stream's queued work still runs, so its last event is kept
 * until it completes. */
void mp_ctx_stream_created(mp_cu_stream s, unsigned flags);
void mp_ctx_stream_destroying(mp_cu_stream s);
/* Whether fences cover a whole context with one event. */
bool mp_ctx_whole_context_fences(void);

/* Streams being captured into a graph, all threads (kept by the capture
 * hooks): while non-zero no event is recorded or queried and allocations
 * pass through. */
extern _Atomic int mp_captures;
/* Around every event and stream call the pools make: false (make none) if
 * a capture is active.  mp_ctx_capture_begin counts a capture before the
 * real begin and waits for the calls already in flight, so no pool call
 * ever lands inside a capture that began in another thread. */
bool mp_ctx_driver_enter(void);
void mp_ctx_driver_leave(void);
void mp_ctx_capture_begin(void);

/* Device of a context (current context if ctx is NULL); -1 if unknown. */
int mp_device_of_context(mp_cu_context ctx);

/* In a forked child: no context of the parent exists here. */
void mp_ctx_fork_child(void);

#endif
