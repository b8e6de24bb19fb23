/*
 * A fake CUDA driver (libcuda.so.1) for CPU-only tests, built against the
 * real cuda.h.  "Device" memory is host memory; there are two devices with
 * a configurable capacity (CUDA_ERROR_OUT_OF_MEMORY past it) and allocation
 * cost.  It models the documented behaviour of the real driver where the
 * shim depends on it (docs/design.md lists what it still does not model):
 *
 *  - contexts: a primary context per device (reference counted by
 *    cuDevicePrimaryCtxRetain/Release, reset on the last release or by
 *    cuDevicePrimaryCtxReset; its handle stays the same across resets) and
 *    cuCtxCreate'd ones; a per-thread context stack;
 *  - streams and events belong to the context current at their creation;
 *    an event recorded on a stream of another context is refused; a reset or
 *    destroyed context invalidates its streams and events;
 *  - time: work launched with fakecuLaunchFill completes (and writes its
 *    bytes) after a delay, run by a worker thread (or the next query) in
 *    completion order; the legacy stream of a context synchronises with its
 *    blocking streams; cuStreamDestroy returns at once and the stream's
 *    queued work still runs and is still waited for;
 *  - cuMemFree waits for the allocation's context; freed addresses are
 *    handed out again (same size, last freed first), so an address that the
 *    driver has since given to someone else is observable;
 *  - cuGetProcAddress(_v2) honours the requested version (versioned
 *    variants, symbols newer than the version) and the per-thread flag
 *    (distinct _ptsz functions); every versioned function is also exported
 *    under its own name.
 *
 * Every driver entry point counts its calls (fakecuCounters).
 *
 * Environment: FAKE_CUDA_CAPACITY (bytes per device, default 1 GiB),
 * FAKE_CUDA_ALLOC_COST_US (default 0).
 */
#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "fake_cuda.h"

#define FAKE_EXPORT __attribute__((visibility("default")))
#define NDEV 2
#define DRIVER_VERSION 13000

/* Every exported driver entry point (not the fake* controls, not
 * cuGetProcAddress) counts one call; internal calls use static helpers. */
static uint64_t calls_total;
#define COUNT() __atomic_fetch_add(&calls_total, 1, __ATOMIC_RELAXED)

/* ---- time and the work queue ------------------------------------------- */

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

struct CUctx_st {
    int device;
    int primary;   /* a device's primary context */
    int destroyed; /* a created context after cuCtxDestroy (kept: handles are checked) */
    unsigned gen;  /* bumped by a reset: streams and events of older generations are gone */
    int refs;      /* primary: cuDevicePrimaryCtxRetain references */
    int active;    /* primary: retained since the last reset */
    unsigned flags;
    struct CUstream_st *legacy;
};
struct CUstream_st {
    struct CUctx_st *ctx;
    unsigned flags; /* CU_STREAM_NON_BLOCKING or 0 */
    int priority;
    int capturing;
    CUstreamCaptureMode capture_mode;
    const void *capture_thread; /* the thread that began the capture */
    int capture_invalidated;    /* a prohibited call happened during it */
    int is_legacy, per_thread;
    int destroyed; /* cuStreamDestroy'd: freed once its work is done */
    int dead;      /* its context was reset or destroyed: never freed (handle checks) */
    uint64_t busy_until;
    struct CUstream_st *next; /* all streams of all contexts */
};
struct CUevent_st {
    struct CUctx_st *ctx;
    unsigned gen;
    uint64_t done_at; /* 0: never recorded */
    struct CUevent_st *next;
};
struct CUgreenCtx_st {
    int device;
};

typedef struct op {
    uint64_t end;
    void *dst;
    int value;
    size_t bytes;
    struct op *next;
} op_t;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t work_cv = PTHREAD_COND_INITIALIZER, done_cv = PTHREAD_COND_INITIALIZER;
static op_t *queue; /* sorted by end */
static uint64_t executed_until;
static pthread_t worker;
static int worker_started;

static struct CUctx_st contexts[NDEV]; /* primary contexts */
static struct CUstream_st legacy[NDEV]; /* their legacy streams */
static struct CUstream_st *streams;     /* every stream, legacy and per-thread included */
static struct CUevent_st *events;       /* live events */

/* Per-thread context stack; per-thread default streams by context. */
#define STACK_MAX 32
static _Thread_local struct CUctx_st *ctx_stack[STACK_MAX];
static _Thread_local int ctx_depth;
#define PTS_MAX 8
static _Thread_local struct {
    struct CUctx_st *ctx;
    struct CUstream_st *s;
} pts[PTS_MAX];

static size_t capacity[NDEV], used[NDEV];
static unsigned alloc_cost_us;
static fake_cuda_counters_t counters;
static int initialised;
static int captures; /* streams being captured, all threads */
static _Thread_local char thread_marker; /* its address names the thread */
/* cuThreadExchangeStreamCaptureMode: 0 (global) unless exchanged */
static _Thread_local CUstreamCaptureMode thread_capture_mode = CU_STREAM_CAPTURE_MODE_GLOBAL;

/* Allocation records: base, size, device (-1: pinned host), flags. */
typedef struct rec {
    uintptr_t base;
    size_t size;
    int device;
    unsigned flags;
    struct CUctx_st *ctx; /* device memory: the context it belongs to */
} rec_t;
static rec_t *recs;
static size_t nrecs, caprecs;

/* Freed memory, handed out again for the same size and kind (last freed
 * first), as a real driver reuses its address space. */
typedef struct freed {
    uintptr_t base;
    size_t size;
    int host;
    struct freed *next;
} freed_t;
static freed_t *freed_list;
static size_t nfreed;
#define FREED_MAX 512

static void init_locked(void)
{
    if (initialised)
        return;
    const char *c = getenv("FAKE_CUDA_CAPACITY");
    const char *a = getenv("FAKE_CUDA_ALLOC_COST_US");
    for (int d = 0; d < NDEV; d++) {
        capacity[d] = c ? (size_t)strtoull(c, NULL, 10) : ((size_t)1 << 30);
        contexts[d].device = d;
        contexts[d].primary = 1;
        contexts[d].legacy = &legacy[d];
        legacy[d].ctx = &contexts[d];
        legacy[d].is_legacy = 1;
        legacy[d].next = streams;
        streams = &legacy[d];
    }
    alloc_cost_us = a ? (unsigned)strtoul(a, NULL, 10) : 0;
    initialised = 1;
}

static void run_op(op_t *o)
{
    if (o->dst)
        memset(o->dst, o->value, o->bytes); /* the "kernel" writes now */
    executed_until = o->end;
    free(o);
}

static void *worker_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&lock);
    for (;;) {
        while (queue == NULL)
            pthread_cond_wait(&work_cv, &lock);
        uint64_t t = now_ns();
        if (queue->end > t) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t wake = queue->end - t;
            ts.tv_sec += (time_t)(wake / 1000000000u);
            ts.tv_nsec += (long)(wake % 1000000000u);
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_mutex_unlock(&lock);
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            pthread_mutex_lock(&lock);
            continue;
        }
        op_t *o = queue;
        queue = o->next;
        run_op(o);
        pthread_cond_broadcast(&done_cv);
    }
    return NULL;
}

static void start_worker_locked(void)
{
    if (!worker_started) {
        worker_started = 1;
        pthread_create(&worker, NULL, worker_main, NULL);
        pthread_detach(worker);
    }
}

/* The current context: the top of this thread's stack; with none, device
 * 0's primary context (the real driver would return
 * CUDA_ERROR_INVALID_CONTEXT: see docs/design.md). */
static struct CUctx_st *cur_ctx(void)
{
    init_locked();
    return ctx_depth ? ctx_stack[ctx_depth - 1] : &contexts[0];
}

static int ctx_gone(const struct CUctx_st *c) { return c->destroyed; }

/* Start time of new work on s: after its own work, and for the legacy
 * stream after every blocking stream of its context (and the reverse). */
static uint64_t start_time(struct CUstream_st *s)
{
    uint64_t t = now_ns();
    if (s->busy_until > t)
        t = s->busy_until;
    struct CUstream_st *leg = s->ctx->legacy;
    if (s == leg) {
        for (struct CUstream_st *o = streams; o; o = o->next)
            if (o != s && o->ctx == s->ctx && !(o->flags & CU_STREAM_NON_BLOCKING) && o->busy_until > t)
                t = o->busy_until;
    } else if (!(s->flags & CU_STREAM_NON_BLOCKING) && leg->busy_until > t) {
        t = leg->busy_until;
    }
    return t;
}

static struct CUstream_st *per_thread_stream(struct CUctx_st *ctx)
{
    for (int i = 0; i < PTS_MAX; i++)
        if (pts[i].ctx == ctx)
            return pts[i].s;
    for (int i = 0; i < PTS_MAX; i++)
        if (pts[i].ctx == NULL) {
            struct CUstream_st *s = calloc(1, sizeof(*s));
            if (!s)
                return NULL;
            s->ctx = ctx;
            s->per_thread = 1;
            s->next = streams;
            streams = s;
            pts[i].ctx = ctx;
            pts[i].s = s;
            return s;
        }
    return NULL;
}

/* The stream behind a handle (lock held); NULL with *rc set if the handle
 * is not a live stream. */
static struct CUstream_st *resolve(CUstream h, CUresult *rc)
{
    struct CUctx_st *ctx = cur_ctx();
    *rc = CUDA_SUCCESS;
    if (h == NULL || h == CU_STREAM_LEGACY) {
        if (ctx_gone(ctx)) {
            *rc = CUDA_ERROR_CONTEXT_IS_DESTROYED;
            return NULL;
        }
        return ctx->legacy;
    }
    if (h == CU_STREAM_PER_THREAD) {
        struct CUstream_st *s = ctx_gone(ctx) ? NULL : per_thread_stream(ctx);
        if (!s)
            *rc = CUDA_ERROR_CONTEXT_IS_DESTROYED;
        return s;
    }
    for (struct CUstream_st *o = streams; o; o = o->next)
        if (o == (struct CUstream_st *)h) {
            if (o->destroyed || o->dead || o->is_legacy || o->per_thread)
                break;
            return o;
        }
    *rc = CUDA_ERROR_INVALID_HANDLE;
    return NULL;
}

/* Wait until all work that ends at or before t has run. */
static void wait_until(uint64_t t)
{
    while (executed_until < t && queue != NULL && queue->end <= t)
        pthread_cond_wait(&done_cv, &lock);
}

/* When everything queued so far in ctx is done: every stream of it, the
 * legacy and per-thread streams and destroyed streams' work included. */
static uint64_t ctx_busy_until(const struct CUctx_st *ctx)
{
    uint64_t t = 0;
    for (struct CUstream_st *o = streams; o; o = o->next)
        if (o->ctx == ctx && o->busy_until > t)
            t = o->busy_until;
    return t;
}

/* Whether this thread may not make a "potentially unsafe" call (an event
 * or stream query or synchronisation) now: it has a capture of its own not
 * begun in relaxed mode, or another thread has one in global mode.  Such
 * a call is refused with CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, counted as
 * a capture violation, and invalidates those captures (lock held). */
static int capture_prohibits(void)
{
    int hit = 0;
    if (!captures || thread_capture_mode == CU_STREAM_CAPTURE_MODE_RELAXED)
        return 0;
    for (struct CUstream_st *o = streams; o; o = o->next) {
        if (!o->capturing || o->capture_mode == CU_STREAM_CAPTURE_MODE_RELAXED)
            continue;
        if (o->capture_thread == &thread_marker || o->capture_mode == CU_STREAM_CAPTURE_MODE_GLOBAL) {
            o->capture_invalidated = 1;
            hit = 1;
        }
    }
    if (hit)
        counters.capture_violations++;
    return hit;
}

/* Work on the legacy stream would join a capture: a blocking stream of the
 * context (which the legacy stream synchronises with) is being captured. */
static int legacy_capture_conflict(const struct CUctx_st *ctx)
{
    if (!captures)
        return 0;
    for (struct CUstream_st *o = streams; o; o = o->next)
        if (o->ctx == ctx && o->capturing && !(o->flags & CU_STREAM_NON_BLOCKING))
            return 1;
    return 0;
}

static uint64_t device_busy_until(int dev)
{
    uint64_t t = 0;
    for (struct CUstream_st *o = streams; o; o = o->next)
        if (o->ctx->device == dev && o->busy_until > t)
            t = o->busy_until;
    return t;
}

/* Free destroyed streams whose work has run. */
static void sweep_streams(void)
{
    for (struct CUstream_st **pp = &streams; *pp;) {
        struct CUstream_st *s = *pp;
        if (s->destroyed && s->busy_until <= executed_until) {
            *pp = s->next;
            free(s);
        } else {
            pp = &s->next;
        }
    }
}

static rec_t *find_rec(uintptr_t p, int containing)
{
    for (size_t i = 0; i < nrecs; i++)
        if (containing ? (p >= recs[i].base && p < recs[i].base + recs[i].size) : recs[i].base == p)
            return &recs[i];
    return NULL;
}

static CUresult add_rec(uintptr_t base, size_t size, int device, unsigned flags, struct CUctx_st *ctx)
{
    if (nrecs == caprecs) {
        size_t n = caprecs ? caprecs * 2 : 64;
        rec_t *r = realloc(recs, n * sizeof(*r));
        if (!r)
            return CUDA_ERROR_OUT_OF_MEMORY;
        recs = r;
        caprecs = n;
    }
    recs[nrecs++] = (rec_t){base, size, device, flags, ctx};
    return CUDA_SUCCESS;
}

/* Memory of a record goes to the freed list (the oldest beyond FREED_MAX
 * back to the C library). */
static void release_memory(uintptr_t base, size_t size, int host)
{
    freed_t *f = malloc(sizeof(*f));
    if (!f) {
        free((void *)base);
        return;
    }
    *f = (freed_t){base, size, host, freed_list};
    freed_list = f;
    if (++nfreed > FREED_MAX) {
        freed_t **pp = &freed_list;
        while ((*pp)->next)
            pp = &(*pp)->next;
        free((void *)(*pp)->base);
        free(*pp);
        *pp = NULL;
        nfreed--;
    }
}

static void *take_memory(size_t size, int host)
{
    for (freed_t **pp = &freed_list; *pp; pp = &(*pp)->next)
        if ((*pp)->size == size && (*pp)->host == host) {
            freed_t *f = *pp;
            void *p = (void *)f->base;
            *pp = f->next;
            free(f);
            nfreed--;
            return p;
        }
    void *p = NULL;
    if (posix_memalign(&p, host ? 4096 : 256, size) != 0)
        return NULL;
    return p;
}

static void drop_rec(rec_t *r)
{
    if (r->device >= 0)
        used[r->device] -= r->size;
    release_memory(r->base, r->size, r->device < 0);
    *r = recs[--nrecs];
}

static void pay_cost(void)
{
    if (alloc_cost_us)
        usleep(alloc_cost_us);
}

/* A context's reset or destruction (lock held): its queued work finishes,
 * its memory is freed, its streams and events become invalid. */
static void reset_ctx_locked(struct CUctx_st *c)
{
    wait_until(ctx_busy_until(c));
    for (size_t i = 0; i < nrecs;) {
        if (recs[i].device >= 0 && recs[i].ctx == c)
            drop_rec(&recs[i]);
        else
            i++;
    }
    for (struct CUstream_st *o = streams; o; o = o->next)
        if (o->ctx == c && !o->is_legacy && !o->per_thread && !o->destroyed) {
            if (o->capturing) {
                o->capturing = 0;
                captures--;
            }
            o->dead = 1;
        }
    c->gen++;
}

/* ---- entry points --------------------------------------------------------- */

FAKE_EXPORT CUresult cuInit(unsigned int flags)
{
    COUNT();
    (void)flags;
    pthread_mutex_lock(&lock);
    init_locked();
    counters.init++;
    start_worker_locked();
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDriverGetVersion(int *v)
{
    COUNT();
    if (!v)
        return CUDA_ERROR_INVALID_VALUE;
    *v = DRIVER_VERSION;
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDeviceGetCount(int *n)
{
    COUNT();
    if (!n)
        return CUDA_ERROR_INVALID_VALUE;
    *n = NDEV;
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDeviceGet(CUdevice *d, int ordinal)
{
    COUNT();
    if (!d || ordinal < 0 || ordinal >= NDEV)
        return CUDA_ERROR_INVALID_DEVICE;
    *d = ordinal;
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice d)
{
    COUNT();
    if (!bytes || d < 0 || d >= NDEV)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    init_locked();
    *bytes = capacity[d];
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

/* ---- primary contexts ----------------------------------------------------- */

FAKE_EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice d)
{
    COUNT();
    if (!ctx)
        return CUDA_ERROR_INVALID_VALUE;
    if (d < 0 || d >= NDEV)
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&lock);
    init_locked();
    contexts[d].refs++;
    contexts[d].active = 1;
    *ctx = &contexts[d];
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

static CUresult primary_release(CUdevice d)
{
    if (d < 0 || d >= NDEV)
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&lock);
    init_locked();
    CUresult rc = CUDA_SUCCESS;
    if (contexts[d].refs == 0) {
        rc = CUDA_ERROR_INVALID_CONTEXT;
    } else {
        counters.primary_release++;
        if (--contexts[d].refs == 0) { /* the last reference: the context is reset */
            counters.ctx_reset++;
            reset_ctx_locked(&contexts[d]);
            contexts[d].active = 0;
        }
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

FAKE_EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d)
{
    COUNT();
    return primary_release(d);
}

/* The pre-11.0 entry point: the same here. */
FAKE_EXPORT CUresult cuDevicePrimaryCtxRelease(CUdevice d)
{
    COUNT();
    return primary_release(d);
}

/* Frees every allocation of the primary context, invalidates its streams
 * and events; references are kept, the context is inactive until used. */
static CUresult primary_reset(CUdevice d)
{
    if (d < 0 || d >= NDEV)
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&lock);
    init_locked();
    counters.ctx_reset++;
    reset_ctx_locked(&contexts[d]);
    contexts[d].active = 0;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDevicePrimaryCtxReset_v2(CUdevice d)
{
    COUNT();
    return primary_reset(d);
}

FAKE_EXPORT CUresult cuDevicePrimaryCtxReset(CUdevice d)
{
    COUNT();
    return primary_reset(d);
}

FAKE_EXPORT CUresult cuDevicePrimaryCtxGetState(CUdevice d, unsigned int *flags, int *active)
{
    COUNT();
    if (d < 0 || d >= NDEV)
        return CUDA_ERROR_INVALID_DEVICE;
    if (!flags || !active)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    init_locked();
    *flags = contexts[d].flags;
    *active = contexts[d].active;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDevicePrimaryCtxSetFlags_v2(CUdevice d, unsigned int flags)
{
    COUNT();
    if (d < 0 || d >= NDEV)
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&lock);
    init_locked();
    contexts[d].flags = flags;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

/* ---- the per-thread context stack ---------------------------------------- */

FAKE_EXPORT CUresult cuCtxPushCurrent_v2(CUcontext ctx)
{
    COUNT();
    if (ctx == NULL)
        return CUDA_ERROR_INVALID_CONTEXT;
    if (ctx_depth == STACK_MAX)
        return CUDA_ERROR_OUT_OF_MEMORY;
    ctx_stack[ctx_depth++] = ctx;
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxPopCurrent_v2(CUcontext *ctx)
{
    COUNT();
    if (ctx_depth == 0)
        return CUDA_ERROR_INVALID_CONTEXT;
    struct CUctx_st *c = ctx_stack[--ctx_depth];
    if (ctx)
        *ctx = c;
    return CUDA_SUCCESS;
}

/* Replaces the top of the stack (pushes on an empty one); NULL pops. */
FAKE_EXPORT CUresult cuCtxSetCurrent(CUcontext ctx)
{
    COUNT();
    if (ctx == NULL) {
        if (ctx_depth)
            ctx_depth--;
    } else if (ctx_depth == 0) {
        ctx_stack[ctx_depth++] = ctx;
    } else {
        ctx_stack[ctx_depth - 1] = ctx;
    }
    return CUDA_SUCCESS;
}

static uint64_t ctx_get_current_calls;

FAKE_EXPORT CUresult cuCtxGetCurrent(CUcontext *ctx)
{
    COUNT();
    __atomic_fetch_add(&ctx_get_current_calls, 1, __ATOMIC_RELAXED);
    if (!ctx)
        return CUDA_ERROR_INVALID_VALUE;
    *ctx = ctx_depth ? ctx_stack[ctx_depth - 1] : NULL;
    return CUDA_SUCCESS;
}

/* A context of its own on a device (memory not shared with the primary
 * context), pushed on the stack. */
FAKE_EXPORT CUresult cuCtxCreate_v2(CUcontext *out, unsigned int flags, CUdevice d)
{
    COUNT();
    if (!out)
        return CUDA_ERROR_INVALID_VALUE;
    if (d < 0 || d >= NDEV)
        return CUDA_ERROR_INVALID_DEVICE;
    if (ctx_depth == STACK_MAX)
        return CUDA_ERROR_OUT_OF_MEMORY;
    struct CUctx_st *c = calloc(1, sizeof(*c));
    struct CUstream_st *l = calloc(1, sizeof(*l));
    if (!c || !l) {
        free(c);
        free(l);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    c->device = d;
    c->flags = flags;
    c->legacy = l;
    l->ctx = c;
    l->is_legacy = 1;
    pthread_mutex_lock(&lock);
    init_locked();
    l->next = streams;
    streams = l;
    pthread_mutex_unlock(&lock);
    ctx_stack[ctx_depth++] = c;
    *out = c;
    return CUDA_SUCCESS;
}

/* Destroying a primary context resets it; a created one frees its own
 * allocations and is kept, marked destroyed, so that its events answer
 * CUDA_ERROR_CONTEXT_IS_DESTROYED.  It is popped if current. */
static CUresult ctx_destroy(CUcontext ctx)
{
    if (ctx == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (ctx >= &contexts[0] && ctx < &contexts[NDEV])
        return primary_reset(ctx->device);
    pthread_mutex_lock(&lock);
    if (ctx->destroyed) {
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_INVALID_CONTEXT;
    }
    reset_ctx_locked(ctx);
    ctx->destroyed = 1;
    pthread_mutex_unlock(&lock);
    if (ctx_depth && ctx_stack[ctx_depth - 1] == ctx)
        ctx_depth--;
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxDestroy_v2(CUcontext ctx)
{
    COUNT();
    return ctx_destroy(ctx);
}

FAKE_EXPORT CUresult cuCtxDestroy(CUcontext ctx)
{
    COUNT();
    return ctx_destroy(ctx);
}

FAKE_EXPORT CUresult cuCtxGetDevice(CUdevice *d)
{
    COUNT();
    if (!d)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    *d = cur_ctx()->device;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxSynchronize(void)
{
    COUNT();
    pthread_mutex_lock(&lock);
    counters.ctx_sync++;
    if (capture_prohibits()) {
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    }
    wait_until(ctx_busy_until(cur_ctx()));
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

/* A context handle the driver made: a primary one or a created one (each
 * created context owns a legacy stream in the list); lock held. */
static int ctx_known_locked(const struct CUctx_st *c)
{
    if (c >= &contexts[0] && c < &contexts[NDEV])
        return 1;
    for (const struct CUstream_st *o = streams; o; o = o->next)
        if (o->is_legacy && o->ctx == c)
            return 1;
    return 0;
}

/* CUDA 13.0's variants, handed out for "cuCtxGetDevice" and
 * "cuCtxSynchronize" at version >= 13000: they take the context (NULL:
 * the current one).  A caller with the old prototype passes garbage; the
 * real driver may crash on it, the fake answers CUDA_ERROR_INVALID_CONTEXT. */
FAKE_EXPORT CUresult cuCtxGetDevice_v2(CUdevice *d, CUcontext ctx)
{
    COUNT();
    if (!d)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    init_locked();
    struct CUctx_st *c = ctx ? ctx : cur_ctx();
    CUresult rc = !ctx_known_locked(c) ? CUDA_ERROR_INVALID_CONTEXT
                  : ctx_gone(c)        ? CUDA_ERROR_CONTEXT_IS_DESTROYED
                                       : CUDA_SUCCESS;
    if (rc == CUDA_SUCCESS)
        *d = c->device;
    pthread_mutex_unlock(&lock);
    return rc;
}

FAKE_EXPORT CUresult cuCtxSynchronize_v2(CUcontext ctx)
{
    COUNT();
    pthread_mutex_lock(&lock);
    init_locked();
    counters.ctx_sync++;
    struct CUctx_st *c = ctx ? ctx : cur_ctx();
    CUresult rc = !ctx_known_locked(c)    ? CUDA_ERROR_INVALID_CONTEXT
                  : ctx_gone(c)           ? CUDA_ERROR_CONTEXT_IS_DESTROYED
                  : capture_prohibits()   ? CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED
                                          : CUDA_SUCCESS;
    if (rc == CUDA_SUCCESS)
        wait_until(ctx_busy_until(c));
    pthread_mutex_unlock(&lock);
    return rc;
}

/* ---- memory --------------------------------------------------------------- */

/* Injected faults (fakecuSetFaults); lock held. */
static unsigned fault_alloc_permille, fault_event_permille;
static uint64_t fault_rng;

static bool fault_locked(unsigned permille)
{
    if (permille == 0)
        return false;
    fault_rng ^= fault_rng << 13, fault_rng ^= fault_rng >> 7, fault_rng ^= fault_rng << 17;
    return fault_rng % 1000 < permille;
}

FAKE_EXPORT void fakecuSetFaults(unsigned alloc_permille, unsigned event_permille, uint64_t seed)
{
    pthread_mutex_lock(&lock);
    fault_alloc_permille = alloc_permille;
    fault_event_permille = event_permille;
    fault_rng = seed | 1;
    pthread_mutex_unlock(&lock);
}

static CUresult mem_alloc(CUdeviceptr *dptr, size_t bytes)
{
    if (!dptr || bytes == 0)
        return CUDA_ERROR_INVALID_VALUE;
    pay_cost();
    pthread_mutex_lock(&lock);
    init_locked();
    if (fault_locked(fault_alloc_permille)) {
        counters.fault_alloc++;
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    counters.mem_alloc++;
    struct CUctx_st *ctx = cur_ctx();
    int d = ctx->device;
    if (used[d] + bytes > capacity[d]) {
        counters.oom++;
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    void *p = take_memory(bytes, 0);
    if (!p || add_rec((uintptr_t)p, bytes, d, 0, ctx) != CUDA_SUCCESS) {
        free(p);
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    used[d] += bytes;
    if (ctx->primary)
        ctx->active = 1;
    *dptr = (CUdeviceptr)(uintptr_t)p;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytes)
{
    COUNT();
    return mem_alloc(dptr, bytes);
}

/* The 32-bit-era entry point (cuGetProcAddress version < 3020): a 32-bit
 * pointer and size.  The fake's addresses rarely fit; then it fails with
 * CUDA_ERROR_NOT_SUPPORTED rather than truncate. */
FAKE_EXPORT CUresult cuMemAlloc(CUdeviceptr_v1 *dptr, unsigned int bytes)
{
    COUNT();
    if (!dptr)
        return CUDA_ERROR_INVALID_VALUE;
    CUdeviceptr p = 0;
    CUresult rc = mem_alloc(&p, bytes);
    if (rc != CUDA_SUCCESS)
        return rc;
    if (p > UINT32_MAX) {
        pthread_mutex_lock(&lock);
        rec_t *r = find_rec((uintptr_t)p, 0);
        if (r)
            drop_rec(r);
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_NOT_SUPPORTED;
    }
    *dptr = (CUdeviceptr_v1)p;
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pitch, size_t width, size_t height,
                                        unsigned int elem)
{
    COUNT();
    (void)elem;
    if (!pitch)
        return CUDA_ERROR_INVALID_VALUE;
    *pitch = (width + 511) & ~(size_t)511;
    return mem_alloc(dptr, *pitch * height);
}

FAKE_EXPORT CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytes, unsigned int flags)
{
    COUNT();
    (void)flags;
    return mem_alloc(dptr, bytes);
}

static CUresult mem_free(CUdeviceptr dptr)
{
    if (dptr == 0)
        return CUDA_SUCCESS;
    pthread_mutex_lock(&lock);
    counters.mem_free++;
    rec_t *r = find_rec((uintptr_t)dptr, 0);
    if (!r || r->device < 0) {
        counters.invalid_free++;
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_INVALID_VALUE;
    }
    uintptr_t base = r->base;
    wait_until(ctx_busy_until(r->ctx)); /* cuMemFree synchronises the context */
    r = find_rec(base, 0);              /* the wait let other threads in */
    if (!r) {
        counters.invalid_free++;
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_INVALID_VALUE;
    }
    drop_rec(r);
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemFree_v2(CUdeviceptr dptr)
{
    COUNT();
    return mem_free(dptr);
}

static CUresult host_alloc(void **pp, size_t bytes, unsigned int flags)
{
    if (!pp)
        return CUDA_ERROR_INVALID_VALUE;
    pay_cost();
    pthread_mutex_lock(&lock);
    init_locked();
    if (fault_locked(fault_alloc_permille)) {
        counters.fault_host_alloc++;
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    counters.host_alloc++;
    size_t n = bytes ? bytes : 1;
    void *p = take_memory(n, 1);
    if (!p || add_rec((uintptr_t)p, n, -1, flags, NULL) != CUDA_SUCCESS) {
        free(p);
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    *pp = p;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemHostAlloc(void **pp, size_t bytes, unsigned int flags)
{
    COUNT();
    return host_alloc(pp, bytes, flags);
}

FAKE_EXPORT CUresult cuMemAllocHost_v2(void **pp, size_t bytes)
{
    COUNT();
    return host_alloc(pp, bytes, 0);
}

/* Waits for every device, as the real one synchronises. */
FAKE_EXPORT CUresult cuMemFreeHost(void *p)
{
    COUNT();
    pthread_mutex_lock(&lock);
    counters.host_free++;
    rec_t *r = find_rec((uintptr_t)p, 0);
    if (!r || r->device >= 0) {
        counters.invalid_free++;
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_INVALID_VALUE;
    }
    for (int d = 0; d < NDEV; d++)
        wait_until(device_busy_until(d));
    r = find_rec((uintptr_t)p, 0);
    if (!r) {
        counters.invalid_free++;
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_INVALID_VALUE;
    }
    drop_rec(r);
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemHostGetDevicePointer_v2(CUdeviceptr *d, void *p, unsigned int flags)
{
    COUNT();
    (void)flags;
    pthread_mutex_lock(&lock);
    rec_t *r = find_rec((uintptr_t)p, 1);
    CUresult rc = CUDA_ERROR_INVALID_VALUE;
    if (d && r && r->device < 0 && (r->flags & CU_MEMHOSTALLOC_DEVICEMAP)) {
        *d = (CUdeviceptr)(uintptr_t)p; /* unified addressing: same address */
        rc = CUDA_SUCCESS;
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

FAKE_EXPORT CUresult cuMemGetInfo_v2(size_t *free_b, size_t *total)
{
    COUNT();
    pthread_mutex_lock(&lock);
    init_locked();
    counters.mem_get_info++;
    int d = cur_ctx()->device;
    if (free_b)
        *free_b = capacity[d] - used[d];
    if (total)
        *total = capacity[d];
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemGetAddressRange_v2(CUdeviceptr *base, size_t *size, CUdeviceptr p)
{
    COUNT();
    pthread_mutex_lock(&lock);
    rec_t *r = find_rec((uintptr_t)p, 1);
    CUresult rc = CUDA_ERROR_NOT_FOUND;
    if (r) {
        if (base)
            *base = (CUdeviceptr)r->base;
        if (size)
            *size = r->size;
        rc = CUDA_SUCCESS;
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

/* ---- streams -------------------------------------------------------------- */

static CUresult stream_create(CUstream *out, unsigned int flags, int priority, struct CUctx_st *ctx)
{
    if (!out || (flags & ~(unsigned)CU_STREAM_NON_BLOCKING))
        return CUDA_ERROR_INVALID_VALUE;
    struct CUstream_st *s = calloc(1, sizeof(*s));
    if (!s)
        return CUDA_ERROR_OUT_OF_MEMORY;
    s->flags = flags;
    s->priority = priority;
    pthread_mutex_lock(&lock);
    s->ctx = ctx ? ctx : cur_ctx();
    if (ctx_gone(s->ctx)) {
        pthread_mutex_unlock(&lock);
        free(s);
        return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    }
    counters.stream_create++;
    sweep_streams();
    s->next = streams;
    streams = s;
    pthread_mutex_unlock(&lock);
    *out = s;
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuStreamCreate(CUstream *out, unsigned int flags)
{
    COUNT();
    return stream_create(out, flags, 0, NULL);
}

/* Priorities are kept, not used: the fake runs work in completion order. */
FAKE_EXPORT CUresult cuStreamCreateWithPriority(CUstream *out, unsigned int flags, int priority)
{
    COUNT();
    return stream_create(out, flags, priority, NULL);
}

/* Returns at once; the work queued on the stream still runs when due, and
 * cuCtxSynchronize, the legacy stream and cuCtxRecordEvent still wait for
 * it.  The handle is invalid from now on. */
static CUresult stream_destroy(CUstream h)
{
    pthread_mutex_lock(&lock);
    init_locked();
    CUresult rc;
    struct CUstream_st *s = (h == NULL || h == CU_STREAM_LEGACY || h == CU_STREAM_PER_THREAD)
                                ? NULL
                                : resolve(h, &rc);
    if (!s) {
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_INVALID_HANDLE;
    }
    counters.stream_destroy++;
    if (s->capturing) {
        s->capturing = 0;
        captures--;
    }
    s->destroyed = 1;
    sweep_streams();
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuStreamDestroy_v2(CUstream h)
{
    COUNT();
    return stream_destroy(h);
}

FAKE_EXPORT CUresult cuStreamDestroy(CUstream h)
{
    COUNT();
    return stream_destroy(h);
}

static CUresult stream_sync(CUstream h)
{
    pthread_mutex_lock(&lock);
    counters.stream_sync++;
    CUresult rc;
    struct CUstream_st *s = resolve(h, &rc);
    if (s && capture_prohibits()) {
        s = NULL;
        rc = CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    }
    if (s)
        wait_until(s->busy_until);
    pthread_mutex_unlock(&lock);
    return rc;
}

FAKE_EXPORT CUresult cuStreamSynchronize(CUstream h)
{
    COUNT();
    return stream_sync(h);
}

FAKE_EXPORT CUresult cuStreamSynchronize_ptsz(CUstream h)
{
    COUNT();
    return stream_sync(h ? h : CU_STREAM_PER_THREAD);
}

/* Run, in the calling thread, every operation that is due: a query then
 * sees work that has finished by now as finished, whether or not the
 * worker thread has been scheduled yet (deterministic tests). */
static void run_due(void)
{
    uint64_t t = now_ns();
    while (queue && queue->end <= t) {
        op_t *o = queue;
        queue = o->next;
        run_op(o);
    }
    pthread_cond_broadcast(&done_cv);
}

static CUresult stream_query(CUstream h)
{
    pthread_mutex_lock(&lock);
    CUresult rc;
    struct CUstream_st *s = resolve(h, &rc);
    if (s && capture_prohibits()) {
        s = NULL;
        rc = CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    }
    if (s) {
        run_due();
        rc = s->busy_until <= executed_until || s->busy_until <= now_ns() ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

FAKE_EXPORT CUresult cuStreamQuery(CUstream h)
{
    COUNT();
    return stream_query(h);
}

FAKE_EXPORT CUresult cuStreamQuery_ptsz(CUstream h)
{
    COUNT();
    return stream_query(h ? h : CU_STREAM_PER_THREAD);
}

/* ---- events --------------------------------------------------------------- */

FAKE_EXPORT CUresult cuEventCreate(CUevent *out, unsigned int flags)
{
    COUNT();
    (void)flags;
    if (!out)
        return CUDA_ERROR_INVALID_VALUE;
    struct CUevent_st *e = calloc(1, sizeof(*e));
    if (!e)
        return CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_lock(&lock);
    e->ctx = cur_ctx();
    if (ctx_gone(e->ctx)) {
        pthread_mutex_unlock(&lock);
        free(e);
        return CUDA_ERROR_CONTEXT_IS_DESTROYED;
    }
    e->gen = e->ctx->gen;
    counters.event_create++;
    e->next = events;
    events = e;
    pthread_mutex_unlock(&lock);
    *out = e;
    return CUDA_SUCCESS;
}

/* The event behind a handle (lock held): INVALID_HANDLE if unknown,
 * CONTEXT_IS_DESTROYED if its context was destroyed or reset since. */
static struct CUevent_st *find_event(CUevent h, CUresult *rc)
{
    for (struct CUevent_st *e = events; e; e = e->next)
        if (e == h) {
            if (e->ctx->destroyed || e->gen != e->ctx->gen) {
                *rc = CUDA_ERROR_CONTEXT_IS_DESTROYED;
                return NULL;
            }
            *rc = CUDA_SUCCESS;
            return e;
        }
    *rc = CUDA_ERROR_INVALID_HANDLE;
    return NULL;
}

static CUresult event_record(CUevent h, CUstream sh)
{
    pthread_mutex_lock(&lock);
    init_locked();
    CUresult rc;
    struct CUevent_st *e = find_event(h, &rc);
    if (!e) {
        pthread_mutex_unlock(&lock);
        return rc == CUDA_ERROR_CONTEXT_IS_DESTROYED ? rc : CUDA_ERROR_INVALID_HANDLE;
    }
    if (fault_locked(fault_event_permille)) {
        counters.fault_event_record++;
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_LAUNCH_FAILED;
    }
    counters.event_record++;
    struct CUstream_st *s = resolve(sh, &rc);
    if (s && s->is_legacy && legacy_capture_conflict(s->ctx)) {
        counters.capture_violations++;
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_STREAM_CAPTURE_IMPLICIT;
    }
    if (s && s->ctx != e->ctx)
        rc = CUDA_ERROR_INVALID_HANDLE; /* an event of another context: nothing recorded */
    if (rc == CUDA_SUCCESS)
        e->done_at = start_time(s); /* completes when prior work does */
    pthread_mutex_unlock(&lock);
    return rc;
}

FAKE_EXPORT CUresult cuEventRecord(CUevent h, CUstream s)
{
    COUNT();
    return event_record(h, s);
}

FAKE_EXPORT CUresult cuEventRecord_ptsz(CUevent h, CUstream s)
{
    COUNT();
    return event_record(h, s ? s : CU_STREAM_PER_THREAD);
}

/* CUDA 12.5: the event completes when all work queued in the context so far
 * (every stream, destroyed streams' work, the legacy stream) is done. */
FAKE_EXPORT CUresult cuCtxRecordEvent(CUcontext hCtx, CUevent hEvent)
{
    COUNT();
    pthread_mutex_lock(&lock);
    init_locked();
    struct CUctx_st *ctx = hCtx ? hCtx : cur_ctx();
    CUresult rc;
    struct CUevent_st *e = find_event(hEvent, &rc);
    if (e && fault_locked(fault_event_permille)) { /* injected like cuEventRecord's */
        counters.fault_event_record++;
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_LAUNCH_FAILED;
    }
    if (ctx_gone(ctx)) {
        rc = CUDA_ERROR_CONTEXT_IS_DESTROYED;
    } else if (e && e->ctx != ctx) {
        rc = CUDA_ERROR_INVALID_HANDLE;
    } else if (e) {
        for (struct CUstream_st *o = streams; o; o = o->next)
            if (o->ctx == ctx && o->capturing && !o->destroyed && !o->dead) {
                counters.capture_violations++;
                rc = CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
                break;
            }
        if (rc == CUDA_SUCCESS) {
            counters.ctx_record_event++;
            uint64_t t = ctx_busy_until(ctx), n = now_ns();
            e->done_at = t > n ? t : n;
        }
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

/* Done once its time has passed and every operation due by then has run. */
static int event_done(const struct CUevent_st *e)
{
    run_due();
    return e->done_at <= now_ns() && (queue == NULL || queue->end > e->done_at);
}

FAKE_EXPORT CUresult cuEventQuery(CUevent h)
{
    COUNT();
    pthread_mutex_lock(&lock);
    CUresult rc;
    struct CUevent_st *e = find_event(h, &rc);
    if (e) {
        counters.event_query++;
        if (capture_prohibits())
            rc = CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
        else
            rc = event_done(e) ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

FAKE_EXPORT CUresult cuEventSynchronize(CUevent h)
{
    COUNT();
    pthread_mutex_lock(&lock);
    CUresult rc;
    struct CUevent_st *e = find_event(h, &rc);
    if (e && capture_prohibits()) {
        e = NULL;
        rc = CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    }
    uint64_t done_at = e ? e->done_at : 0;
    if (e) {
        counters.event_sync++;
        wait_until(done_at);
    }
    pthread_mutex_unlock(&lock);
    while (e && now_ns() < done_at)
        usleep(50);
    return rc;
}

static CUresult event_destroy(CUevent h)
{
    pthread_mutex_lock(&lock);
    for (struct CUevent_st **pp = &events; *pp; pp = &(*pp)->next)
        if (*pp == h) {
            *pp = h->next;
            pthread_mutex_unlock(&lock);
            free(h);
            return CUDA_SUCCESS;
        }
    pthread_mutex_unlock(&lock);
    return CUDA_ERROR_INVALID_HANDLE;
}

FAKE_EXPORT CUresult cuEventDestroy_v2(CUevent h)
{
    COUNT();
    return event_destroy(h);
}

FAKE_EXPORT CUresult cuEventDestroy(CUevent h)
{
    COUNT();
    return event_destroy(h);
}

FAKE_EXPORT CUresult cuGetErrorString(CUresult e, const char **s)
{
    COUNT();
    if (!s)
        return CUDA_ERROR_INVALID_VALUE;
    *s = e == CUDA_SUCCESS ? "no error"
         : e == CUDA_ERROR_OUT_OF_MEMORY ? "out of memory"
         : e == CUDA_ERROR_NOT_READY ? "device not ready"
                                      : "fake cuda error";
    return CUDA_SUCCESS;
}

/* ---- green contexts (minimal) ------------------------------------------- */

/* Any resource description is accepted.  Streams of a green context belong
 * to the device's primary context for events and cuCtxRecordEvent (the
 * fake has no cuCtxFromGreenCtx contexts). */
FAKE_EXPORT CUresult cuGreenCtxCreate(CUgreenCtx *out, CUdevResourceDesc desc, CUdevice dev, unsigned int flags)
{
    COUNT();
    (void)desc, (void)flags;
    if (!out)
        return CUDA_ERROR_INVALID_VALUE;
    if (dev < 0 || dev >= NDEV)
        return CUDA_ERROR_INVALID_DEVICE;
    struct CUgreenCtx_st *g = calloc(1, sizeof(*g));
    if (!g)
        return CUDA_ERROR_OUT_OF_MEMORY;
    g->device = dev;
    *out = g;
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuGreenCtxDestroy(CUgreenCtx g)
{
    COUNT();
    if (!g)
        return CUDA_ERROR_INVALID_HANDLE;
    free(g); /* like the real one, its streams are not destroyed */
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuGreenCtxStreamCreate(CUstream *out, CUgreenCtx g, unsigned int flags, int priority)
{
    COUNT();
    if (!g)
        return CUDA_ERROR_INVALID_HANDLE;
    if (!(flags & CU_STREAM_NON_BLOCKING))
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    init_locked();
    pthread_mutex_unlock(&lock);
    return stream_create(out, flags, priority, &contexts[g->device]);
}

/* ---- stream capture, IPC, stream-ordered allocation ---------------------- */

static CUresult begin_capture(CUstream h, CUstreamCaptureMode mode)
{
    if (mode != CU_STREAM_CAPTURE_MODE_GLOBAL && mode != CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
        && mode != CU_STREAM_CAPTURE_MODE_RELAXED)
        return CUDA_ERROR_INVALID_VALUE;
    if (h == NULL || h == CU_STREAM_LEGACY)
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    pthread_mutex_lock(&lock);
    CUresult rc;
    struct CUstream_st *s = resolve(h, &rc);
    if (s) {
        rc = CUDA_ERROR_ILLEGAL_STATE;
        if (!s->capturing) {
            s->capturing = 1;
            s->capture_mode = mode;
            s->capture_thread = &thread_marker;
            s->capture_invalidated = 0;
            captures++;
            counters.capture_begin++;
            rc = CUDA_SUCCESS;
        }
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

FAKE_EXPORT CUresult cuStreamBeginCapture_v2(CUstream h, CUstreamCaptureMode mode)
{
    COUNT();
    return begin_capture(h, mode);
}

FAKE_EXPORT CUresult cuStreamBeginCapture_v2_ptsz(CUstream h, CUstreamCaptureMode mode)
{
    COUNT();
    return begin_capture(h ? h : CU_STREAM_PER_THREAD, mode);
}

/* The CUDA 10.0 entry point (no mode): global mode. */
FAKE_EXPORT CUresult cuStreamBeginCapture(CUstream h)
{
    COUNT();
    return begin_capture(h, CU_STREAM_CAPTURE_MODE_GLOBAL);
}

FAKE_EXPORT CUresult cuStreamBeginCapture_ptsz(CUstream h)
{
    COUNT();
    return begin_capture(h ? h : CU_STREAM_PER_THREAD, CU_STREAM_CAPTURE_MODE_GLOBAL);
}

/* A thread in relaxed mode may make the calls a capture prohibits. */
FAKE_EXPORT CUresult cuThreadExchangeStreamCaptureMode(CUstreamCaptureMode *mode)
{
    COUNT();
    if (!mode || (*mode != CU_STREAM_CAPTURE_MODE_GLOBAL && *mode != CU_STREAM_CAPTURE_MODE_THREAD_LOCAL
                  && *mode != CU_STREAM_CAPTURE_MODE_RELAXED))
        return CUDA_ERROR_INVALID_VALUE;
    CUstreamCaptureMode old = thread_capture_mode;
    thread_capture_mode = *mode;
    *mode = old;
    return CUDA_SUCCESS;
}

/* CUDA 12.3: capture into an existing graph (any handle here). */
FAKE_EXPORT CUresult cuStreamBeginCaptureToGraph(CUstream h, CUgraph g, const CUgraphNode *deps,
                                                 const CUgraphEdgeData *data, size_t ndeps, CUstreamCaptureMode mode)
{
    COUNT();
    (void)deps, (void)data;
    if (!g || ndeps)
        return CUDA_ERROR_INVALID_VALUE;
    return begin_capture(h, mode);
}

FAKE_EXPORT CUresult cuStreamBeginCaptureToGraph_ptsz(CUstream h, CUgraph g, const CUgraphNode *deps,
                                                      const CUgraphEdgeData *data, size_t ndeps,
                                                      CUstreamCaptureMode mode)
{
    COUNT();
    (void)deps, (void)data;
    if (!g || ndeps)
        return CUDA_ERROR_INVALID_VALUE;
    return begin_capture(h ? h : CU_STREAM_PER_THREAD, mode);
}

/* A capture during which a prohibited call was made ends with
 * CUDA_ERROR_STREAM_CAPTURE_INVALIDATED and no graph. */
FAKE_EXPORT CUresult cuStreamEndCapture(CUstream h, CUgraph *graph)
{
    COUNT();
    pthread_mutex_lock(&lock);
    CUresult rc;
    struct CUstream_st *s = resolve(h, &rc);
    if (s) {
        rc = CUDA_ERROR_ILLEGAL_STATE;
        if (s->capturing) {
            s->capturing = 0;
            captures--;
            counters.capture_end++;
            if (s->capture_invalidated) {
                if (graph)
                    *graph = NULL;
                rc = CUDA_ERROR_STREAM_CAPTURE_INVALIDATED;
            } else {
                if (graph)
                    *graph = (CUgraph)s; /* any non-NULL handle: the fake has no graphs */
                rc = CUDA_SUCCESS;
            }
        }
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

FAKE_EXPORT CUresult cuStreamIsCapturing(CUstream h, CUstreamCaptureStatus *st)
{
    COUNT();
    if (!st)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    CUresult rc;
    struct CUstream_st *s = resolve(h, &rc);
    if (s)
        *st = s->capturing ? CU_STREAM_CAPTURE_STATUS_ACTIVE : CU_STREAM_CAPTURE_STATUS_NONE;
    pthread_mutex_unlock(&lock);
    return rc;
}

/* The handle names the allocation's base; like the real driver, only the
 * base of a device allocation can be exported. */
FAKE_EXPORT CUresult cuIpcGetMemHandle(CUipcMemHandle *h, CUdeviceptr p)
{
    COUNT();
    if (!h)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    counters.ipc_get++;
    rec_t *r = find_rec((uintptr_t)p, 0);
    CUresult rc = CUDA_ERROR_INVALID_VALUE;
    if (r && r->device >= 0) {
        memset(h, 0, sizeof(*h));
        memcpy(h->reserved, &r->base, sizeof(r->base));
        memcpy(h->reserved + sizeof(r->base), &r->size, sizeof(r->size));
        rc = CUDA_SUCCESS;
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

/* Opened in the same process (the real driver refuses that; the fake has
 * no second process): the exporter's base address. */
FAKE_EXPORT CUresult cuIpcOpenMemHandle_v2(CUdeviceptr *p, CUipcMemHandle h, unsigned int flags)
{
    COUNT();
    (void)flags;
    if (!p)
        return CUDA_ERROR_INVALID_VALUE;
    uintptr_t base;
    memcpy(&base, h.reserved, sizeof(base));
    pthread_mutex_lock(&lock);
    counters.ipc_open++;
    CUresult rc = find_rec(base, 0) ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_unlock(&lock);
    if (rc == CUDA_SUCCESS)
        *p = (CUdeviceptr)base;
    return rc;
}

FAKE_EXPORT CUresult cuIpcCloseMemHandle(CUdeviceptr p)
{
    COUNT();
    (void)p;
    return CUDA_SUCCESS;
}

/* Stream-ordered allocation, served at once from ordinary device memory
 * (the fake has no memory pools); counted apart. */
static CUresult alloc_async(CUdeviceptr *p, size_t bytes, CUstream h)
{
    pthread_mutex_lock(&lock);
    CUresult rc;
    resolve(h, &rc);
    if (rc == CUDA_SUCCESS)
        counters.alloc_async++;
    pthread_mutex_unlock(&lock);
    return rc == CUDA_SUCCESS ? mem_alloc(p, bytes) : rc;
}

FAKE_EXPORT CUresult cuMemAllocAsync(CUdeviceptr *p, size_t bytes, CUstream s)
{
    COUNT();
    return alloc_async(p, bytes, s);
}

FAKE_EXPORT CUresult cuMemAllocAsync_ptsz(CUdeviceptr *p, size_t bytes, CUstream s)
{
    COUNT();
    return alloc_async(p, bytes, s ? s : CU_STREAM_PER_THREAD);
}

static CUresult free_async(CUdeviceptr p, CUstream h)
{
    pthread_mutex_lock(&lock);
    CUresult rc;
    resolve(h, &rc);
    if (rc == CUDA_SUCCESS)
        counters.free_async++;
    pthread_mutex_unlock(&lock);
    return rc == CUDA_SUCCESS ? mem_free(p) : rc;
}

FAKE_EXPORT CUresult cuMemFreeAsync(CUdeviceptr p, CUstream s)
{
    COUNT();
    return free_async(p, s);
}

FAKE_EXPORT CUresult cuMemFreeAsync_ptsz(CUdeviceptr p, CUstream s)
{
    COUNT();
    return free_async(p, s ? s : CU_STREAM_PER_THREAD);
}

static CUresult launch_fill(CUstream h, CUdeviceptr dst, int value, size_t bytes, unsigned delay_us);

/* A memset is a fill that takes no time, in stream order. */
FAKE_EXPORT CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char value, size_t n, CUstream s)
{
    COUNT();
    pthread_mutex_lock(&lock);
    counters.memset++;
    pthread_mutex_unlock(&lock);
    return launch_fill(s, dst, value, n, 0);
}

FAKE_EXPORT CUresult cuMemsetD8Async_ptsz(CUdeviceptr dst, unsigned char value, size_t n, CUstream s)
{
    COUNT();
    pthread_mutex_lock(&lock);
    counters.memset++;
    pthread_mutex_unlock(&lock);
    return launch_fill(s ? s : CU_STREAM_PER_THREAD, dst, value, n, 0);
}

/* Page-locking of existing host memory: only bookkept (counted). */
FAKE_EXPORT CUresult cuMemHostRegister_v2(void *p, size_t bytes, unsigned int flags)
{
    COUNT();
    if (p == NULL || bytes == 0 || (flags & ~0xfu))
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    counters.host_register++;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemHostUnregister(void *p)
{
    COUNT();
    if (p == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    counters.host_unregister++;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

/* ---- test controls (also reachable through cuGetProcAddress) ----------- */

static CUresult launch_fill(CUstream h, CUdeviceptr dst, int value, size_t bytes, unsigned delay_us)
{
    op_t *o = malloc(sizeof(*o));
    if (!o)
        return CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_lock(&lock);
    init_locked();
    start_worker_locked();
    CUresult rc;
    struct CUstream_st *s = resolve(h, &rc);
    if (!s) {
        pthread_mutex_unlock(&lock);
        free(o);
        return rc;
    }
    counters.launch++;
    o->end = start_time(s) + (uint64_t)delay_us * 1000u;
    o->dst = (void *)(uintptr_t)dst;
    o->value = value;
    o->bytes = bytes;
    s->busy_until = o->end;
    op_t **pp = &queue;
    while (*pp && (*pp)->end <= o->end)
        pp = &(*pp)->next;
    o->next = *pp;
    *pp = o;
    pthread_cond_signal(&work_cv);
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult fakecuLaunchFill(CUstream h, CUdeviceptr dst, int value, size_t bytes, unsigned delay_us)
{
    return launch_fill(h, dst, value, bytes, delay_us);
}

FAKE_EXPORT void fakecuSetCapacity(int device, size_t bytes)
{
    pthread_mutex_lock(&lock);
    init_locked();
    if (device >= 0 && device < NDEV)
        capacity[device] = bytes;
    pthread_mutex_unlock(&lock);
}

FAKE_EXPORT void fakecuSetAllocCost(unsigned us) { alloc_cost_us = us; }

FAKE_EXPORT void fakecuCounters(fake_cuda_counters_t *out)
{
    pthread_mutex_lock(&lock);
    *out = counters;
    out->calls = __atomic_load_n(&calls_total, __ATOMIC_RELAXED);
    out->ctx_get_current = __atomic_load_n(&ctx_get_current_calls, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&lock);
}

FAKE_EXPORT size_t fakecuUsed(int device) { return device >= 0 && device < NDEV ? used[device] : 0; }

/* ---- cuGetProcAddress ----------------------------------------------------- */

FAKE_EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, cuuint64_t flags,
                                         CUdriverProcAddressQueryResult *status);
FAKE_EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, cuuint64_t flags);

/* One row per (name, variant): the variant is handed out for requested
 * versions from `since` up to the next variant's `since`; ptsz is the
 * per-thread-default-stream function where the real driver has one. */
typedef struct {
    const char *name;
    int since;
    void *fn, *ptsz;
} proc_t;

#define P(name, since, fn) {name, since, (void *)fn, NULL}
#define PT(name, since, fn, ptsz) {name, since, (void *)fn, (void *)ptsz}
static const proc_t procs[] = {
    P("cuInit", 2000, cuInit),
    P("cuDriverGetVersion", 2020, cuDriverGetVersion),
    P("cuDeviceGetCount", 2000, cuDeviceGetCount),
    P("cuDeviceGet", 2000, cuDeviceGet),
    P("cuDeviceTotalMem", 3020, cuDeviceTotalMem_v2),
    P("cuDevicePrimaryCtxRetain", 7000, cuDevicePrimaryCtxRetain),
    P("cuDevicePrimaryCtxRelease", 7000, cuDevicePrimaryCtxRelease),
    P("cuDevicePrimaryCtxRelease", 11000, cuDevicePrimaryCtxRelease_v2),
    P("cuDevicePrimaryCtxReset", 7000, cuDevicePrimaryCtxReset),
    P("cuDevicePrimaryCtxReset", 11000, cuDevicePrimaryCtxReset_v2),
    P("cuDevicePrimaryCtxGetState", 7000, cuDevicePrimaryCtxGetState),
    P("cuDevicePrimaryCtxSetFlags", 11000, cuDevicePrimaryCtxSetFlags_v2),
    P("cuCtxGetCurrent", 4000, cuCtxGetCurrent),
    P("cuCtxSetCurrent", 4000, cuCtxSetCurrent),
    P("cuCtxGetDevice", 2000, cuCtxGetDevice),
    P("cuCtxGetDevice", 13000, cuCtxGetDevice_v2),
    P("cuCtxPushCurrent", 4000, cuCtxPushCurrent_v2),
    P("cuCtxPopCurrent", 4000, cuCtxPopCurrent_v2),
    P("cuCtxDestroy", 2000, cuCtxDestroy),
    P("cuCtxDestroy", 4000, cuCtxDestroy_v2),
    P("cuCtxCreate", 3020, cuCtxCreate_v2),
    P("cuCtxSynchronize", 2000, cuCtxSynchronize),
    P("cuCtxSynchronize", 13000, cuCtxSynchronize_v2),
    P("cuCtxRecordEvent", 12050, cuCtxRecordEvent),
    P("cuMemAlloc", 2000, cuMemAlloc),
    P("cuMemAlloc", 3020, cuMemAlloc_v2),
    P("cuMemAllocPitch", 3020, cuMemAllocPitch_v2),
    P("cuMemAllocManaged", 6000, cuMemAllocManaged),
    P("cuMemFree", 3020, cuMemFree_v2),
    P("cuMemHostAlloc", 2020, cuMemHostAlloc),
    P("cuMemAllocHost", 3020, cuMemAllocHost_v2),
    P("cuMemFreeHost", 2000, cuMemFreeHost),
    P("cuMemHostGetDevicePointer", 3020, cuMemHostGetDevicePointer_v2),
    P("cuMemGetInfo", 3020, cuMemGetInfo_v2),
    P("cuMemGetAddressRange", 3020, cuMemGetAddressRange_v2),
    P("cuStreamCreate", 2000, cuStreamCreate),
    P("cuStreamCreateWithPriority", 5050, cuStreamCreateWithPriority),
    P("cuStreamDestroy", 2000, cuStreamDestroy),
    P("cuStreamDestroy", 4000, cuStreamDestroy_v2),
    PT("cuStreamSynchronize", 2000, cuStreamSynchronize, cuStreamSynchronize_ptsz),
    PT("cuStreamQuery", 2000, cuStreamQuery, cuStreamQuery_ptsz),
    P("cuEventCreate", 2000, cuEventCreate),
    PT("cuEventRecord", 2000, cuEventRecord, cuEventRecord_ptsz),
    P("cuEventQuery", 2000, cuEventQuery),
    P("cuEventSynchronize", 2000, cuEventSynchronize),
    P("cuEventDestroy", 2000, cuEventDestroy),
    P("cuEventDestroy", 4000, cuEventDestroy_v2),
    P("cuGetErrorString", 6000, cuGetErrorString),
    PT("cuStreamBeginCapture", 10000, cuStreamBeginCapture, cuStreamBeginCapture_ptsz),
    PT("cuStreamBeginCapture", 10010, cuStreamBeginCapture_v2, cuStreamBeginCapture_v2_ptsz),
    PT("cuStreamBeginCaptureToGraph", 12030, cuStreamBeginCaptureToGraph, cuStreamBeginCaptureToGraph_ptsz),
    P("cuStreamEndCapture", 10000, cuStreamEndCapture),
    P("cuThreadExchangeStreamCaptureMode", 10010, cuThreadExchangeStreamCaptureMode),
    P("cuStreamIsCapturing", 10000, cuStreamIsCapturing),
    P("cuIpcGetMemHandle", 4010, cuIpcGetMemHandle),
    P("cuIpcOpenMemHandle", 11000, cuIpcOpenMemHandle_v2),
    P("cuIpcCloseMemHandle", 4010, cuIpcCloseMemHandle),
    PT("cuMemAllocAsync", 11020, cuMemAllocAsync, cuMemAllocAsync_ptsz),
    PT("cuMemFreeAsync", 11020, cuMemFreeAsync, cuMemFreeAsync_ptsz),
    P("cuGetProcAddress", 11030, cuGetProcAddress),
    P("cuGetProcAddress", 12000, cuGetProcAddress_v2),
    PT("cuMemsetD8Async", 3020, cuMemsetD8Async, cuMemsetD8Async_ptsz),
    P("cuMemHostRegister", 6050, cuMemHostRegister_v2),
    P("cuMemHostUnregister", 4000, cuMemHostUnregister),
    P("cuGreenCtxCreate", 12040, cuGreenCtxCreate),
    P("cuGreenCtxDestroy", 12040, cuGreenCtxDestroy),
    P("cuGreenCtxStreamCreate", 12050, cuGreenCtxStreamCreate),
    P("fakecuLaunchFill", 0, fakecuLaunchFill),
};
#undef P
#undef PT

static CUresult lookup(const char *symbol, void **pfn, int version, cuuint64_t flags,
                       CUdriverProcAddressQueryResult *status)
{
    CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    if (!symbol || !pfn || version > DRIVER_VERSION || version < 0
        || (flags & ~(cuuint64_t)(CU_GET_PROC_ADDRESS_LEGACY_STREAM | CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM)))
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    counters.proc_address++;
    pthread_mutex_unlock(&lock);
    const proc_t *best = NULL;
    for (size_t i = 0; i < sizeof(procs) / sizeof(procs[0]); i++) {
        if (strcmp(procs[i].name, symbol) != 0)
            continue;
        st = CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT;
        if (procs[i].since <= version && (!best || procs[i].since > best->since))
            best = &procs[i];
    }
    *pfn = NULL;
    if (best) {
        st = CU_GET_PROC_ADDRESS_SUCCESS;
        *pfn = (flags & CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM) && best->ptsz ? best->ptsz : best->fn;
    }
    if (status)
        *status = st;
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, cuuint64_t flags,
                                         CUdriverProcAddressQueryResult *status)
{
    return lookup(symbol, pfn, version, flags, status);
}

/* The 11.3 entry point (no status): a symbol not found (or too new) is
 * CUDA_ERROR_NOT_FOUND. */
FAKE_EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, cuuint64_t flags)
{
    CUdriverProcAddressQueryResult st;
    CUresult rc = lookup(symbol, pfn, version, flags, &st);
    return rc == CUDA_SUCCESS && st != CU_GET_PROC_ADDRESS_SUCCESS ? CUDA_ERROR_NOT_FOUND : rc;
}
