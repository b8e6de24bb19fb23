/*
 * A fake CUDA driver (libcuda.so.1) for CPU-only tests, built against the
 * real cuda.h.  "Device" memory is host memory; there are two devices with
 * a configurable capacity (CUDA_ERROR_OUT_OF_MEMORY past it) and allocation
 * cost; streams and events model time: work launched with fakecuLaunchFill
 * completes (and writes its bytes) after a delay, run by a worker thread in
 * completion order, with the legacy default stream synchronising with
 * blocking streams as the real driver does.  cuMemFree waits for the
 * device, like the real one.  Every entry point counts its calls
 * (fakecuCounters) and is reachable through cuGetProcAddress(_v2), which is
 * how cudart (and so the fake runtime) finds the driver.
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

/* ---- time and the work queue ------------------------------------------- */

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

struct CUctx_st {
    int device;
};
struct CUstream_st {
    struct CUctx_st *ctx;
    unsigned flags; /* CU_STREAM_NON_BLOCKING or 0 */
    int capturing;
    uint64_t busy_until;
    struct CUstream_st *next; /* all streams, for legacy-stream ordering */
};
struct CUevent_st {
    uint64_t done_at; /* 0: never recorded */
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

static struct CUctx_st contexts[NDEV] = {{0}, {1}};
static struct CUstream_st legacy[NDEV];
static struct CUstream_st *streams; /* created streams, all devices */
static _Thread_local struct CUstream_st per_thread[NDEV];
static _Thread_local struct CUctx_st *current, *pushed_from;

static size_t capacity[NDEV], used[NDEV];
static unsigned alloc_cost_us;
static fake_cuda_counters_t counters;
static int initialised;
static int captures; /* streams being captured, all threads */

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
        if (o->dst)
            memset(o->dst, o->value, o->bytes); /* the "kernel" writes now */
        executed_until = o->end;
        free(o);
        pthread_cond_broadcast(&done_cv);
    }
    return NULL;
}

static void init_locked(void)
{
    if (initialised)
        return;
    const char *c = getenv("FAKE_CUDA_CAPACITY");
    const char *a = getenv("FAKE_CUDA_ALLOC_COST_US");
    for (int d = 0; d < NDEV; d++) {
        capacity[d] = c ? (size_t)strtoull(c, NULL, 10) : ((size_t)1 << 30);
        legacy[d].ctx = &contexts[d];
    }
    alloc_cost_us = a ? (unsigned)strtoul(a, NULL, 10) : 0;
    initialised = 1;
}

/* Start time of new work on s: after its own work, and for the legacy
 * stream after every blocking stream of the device (and the reverse). */
static uint64_t start_time(struct CUstream_st *s)
{
    uint64_t t = now_ns();
    if (s->busy_until > t)
        t = s->busy_until;
    struct CUstream_st *leg = &legacy[s->ctx->device];
    if (s == leg) {
        for (struct CUstream_st *o = streams; o; o = o->next)
            if (o->ctx == s->ctx && !(o->flags & CU_STREAM_NON_BLOCKING) && o->busy_until > t)
                t = o->busy_until;
        if (per_thread[s->ctx->device].busy_until > t)
            t = per_thread[s->ctx->device].busy_until;
    } else if (!(s->flags & CU_STREAM_NON_BLOCKING) && leg->busy_until > t) {
        t = leg->busy_until;
    }
    return t;
}

static struct CUstream_st *resolve(CUstream h)
{
    struct CUctx_st *ctx = current ? current : &contexts[0];
    if (h == NULL || h == CU_STREAM_LEGACY)
        return &legacy[ctx->device];
    if (h == CU_STREAM_PER_THREAD) {
        per_thread[ctx->device].ctx = ctx;
        return &per_thread[ctx->device];
    }
    return (struct CUstream_st *)h;
}

/* Wait until all work that ends at or before t has run. */
static void wait_until(uint64_t t)
{
    while (executed_until < t && queue != NULL && queue->end <= t)
        pthread_cond_wait(&done_cv, &lock);
}

static uint64_t device_busy_until(int dev)
{
    uint64_t t = legacy[dev].busy_until;
    for (struct CUstream_st *o = streams; o; o = o->next)
        if (o->ctx->device == dev && o->busy_until > t)
            t = o->busy_until;
    if (per_thread[dev].busy_until > t)
        t = per_thread[dev].busy_until;
    return t;
}

static rec_t *find_rec(uintptr_t p, int containing)
{
    for (size_t i = 0; i < nrecs; i++)
        if (containing ? (p >= recs[i].base && p < recs[i].base + recs[i].size) : recs[i].base == p)
            return &recs[i];
    return NULL;
}

static CUresult add_rec(uintptr_t base, size_t size, int device, unsigned flags)
{
    if (nrecs == caprecs) {
        size_t n = caprecs ? caprecs * 2 : 64;
        rec_t *r = realloc(recs, n * sizeof(*r));
        if (!r)
            return CUDA_ERROR_OUT_OF_MEMORY;
        recs = r;
        caprecs = n;
    }
    recs[nrecs++] = (rec_t){base, size, device, flags, NULL};
    return CUDA_SUCCESS;
}

static void pay_cost(void)
{
    if (alloc_cost_us)
        usleep(alloc_cost_us);
}

/* ---- entry points --------------------------------------------------------- */

FAKE_EXPORT CUresult cuInit(unsigned int flags)
{
    (void)flags;
    pthread_mutex_lock(&lock);
    init_locked();
    counters.init++;
    if (!worker_started) {
        worker_started = 1;
        pthread_create(&worker, NULL, worker_main, NULL);
        pthread_detach(worker);
    }
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDriverGetVersion(int *v)
{
    if (!v)
        return CUDA_ERROR_INVALID_VALUE;
    *v = 13000;
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDeviceGetCount(int *n)
{
    if (!n)
        return CUDA_ERROR_INVALID_VALUE;
    *n = NDEV;
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDeviceGet(CUdevice *d, int ordinal)
{
    if (!d || ordinal < 0 || ordinal >= NDEV)
        return CUDA_ERROR_INVALID_DEVICE;
    *d = ordinal;
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice d)
{
    if (!bytes || d < 0 || d >= NDEV)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    init_locked();
    *bytes = capacity[d];
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDevicePrimaryCtxRetain(CUcontext *ctx, CUdevice d)
{
    if (!ctx || d < 0 || d >= NDEV)
        return CUDA_ERROR_INVALID_VALUE;
    *ctx = &contexts[d];
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuDevicePrimaryCtxRelease_v2(CUdevice d)
{
    return d < 0 || d >= NDEV ? CUDA_ERROR_INVALID_DEVICE : CUDA_SUCCESS;
}

/* Frees every allocation of the device, as a context reset does. */
FAKE_EXPORT CUresult cuDevicePrimaryCtxReset_v2(CUdevice d)
{
    if (d < 0 || d >= NDEV)
        return CUDA_ERROR_INVALID_DEVICE;
    pthread_mutex_lock(&lock);
    counters.ctx_reset++;
    wait_until(device_busy_until(d));
    for (size_t i = 0; i < nrecs;) {
        if (recs[i].device == d) {
            used[d] -= recs[i].size;
            free((void *)recs[i].base);
            recs[i] = recs[--nrecs];
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxPushCurrent_v2(CUcontext ctx)
{
    /* A one-deep stack is all the tests and the shim need. */
    pushed_from = current;
    current = ctx;
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxPopCurrent_v2(CUcontext *ctx)
{
    if (ctx)
        *ctx = current;
    current = pushed_from;
    pushed_from = NULL;
    return CUDA_SUCCESS;
}

/* A context of its own on a device (memory not shared with the primary
 * context), made current. */
FAKE_EXPORT CUresult cuCtxCreate_v2(CUcontext *out, unsigned int flags, CUdevice d)
{
    (void)flags;
    if (!out || d < 0 || d >= NDEV)
        return CUDA_ERROR_INVALID_VALUE;
    struct CUctx_st *c = calloc(1, sizeof(*c));
    if (!c)
        return CUDA_ERROR_OUT_OF_MEMORY;
    c->device = d;
    current = c;
    *out = c;
    return CUDA_SUCCESS;
}

/* Destroying a primary context frees its device's memory, like a reset;
 * a created one frees its own allocations. */
FAKE_EXPORT CUresult cuCtxDestroy_v2(CUcontext ctx)
{
    if (ctx == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    if (ctx >= &contexts[0] && ctx < &contexts[NDEV])
        return cuDevicePrimaryCtxReset_v2(ctx->device);
    pthread_mutex_lock(&lock);
    wait_until(device_busy_until(ctx->device));
    for (size_t i = 0; i < nrecs;) {
        if (recs[i].ctx == ctx) {
            used[recs[i].device] -= recs[i].size;
            free((void *)recs[i].base);
            recs[i] = recs[--nrecs];
        } else {
            i++;
        }
    }
    pthread_mutex_unlock(&lock);
    if (current == ctx)
        current = NULL;
    free(ctx);
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxGetCurrent(CUcontext *ctx)
{
    if (!ctx)
        return CUDA_ERROR_INVALID_VALUE;
    *ctx = current;
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxSetCurrent(CUcontext ctx)
{
    current = ctx;
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxGetDevice(CUdevice *d)
{
    if (!d)
        return CUDA_ERROR_INVALID_VALUE;
    *d = current ? current->device : 0;
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuCtxSynchronize(void)
{
    pthread_mutex_lock(&lock);
    counters.ctx_sync++;
    wait_until(device_busy_until(current ? current->device : 0));
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

static int cur_dev(void) { return current ? current->device : 0; }

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

FAKE_EXPORT CUresult cuMemAlloc_v2(CUdeviceptr *dptr, size_t bytes)
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
    int d = cur_dev();
    if (used[d] + bytes > capacity[d]) {
        counters.oom++;
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    void *p = NULL;
    if (posix_memalign(&p, 256, bytes) != 0) {
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    used[d] += bytes;
    add_rec((uintptr_t)p, bytes, d, 0);
    recs[nrecs - 1].ctx = current ? current : &contexts[d];
    *dptr = (CUdeviceptr)(uintptr_t)p;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemAllocPitch_v2(CUdeviceptr *dptr, size_t *pitch, size_t width, size_t height,
                                        unsigned int elem)
{
    (void)elem;
    if (!pitch)
        return CUDA_ERROR_INVALID_VALUE;
    *pitch = (width + 511) & ~(size_t)511;
    return cuMemAlloc_v2(dptr, *pitch * height);
}

FAKE_EXPORT CUresult cuMemAllocManaged(CUdeviceptr *dptr, size_t bytes, unsigned int flags)
{
    (void)flags;
    return cuMemAlloc_v2(dptr, bytes);
}

FAKE_EXPORT CUresult cuMemFree_v2(CUdeviceptr dptr)
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
    wait_until(device_busy_until(r->device)); /* cuMemFree synchronises */
    used[r->device] -= r->size;
    free((void *)r->base);
    *r = recs[--nrecs];
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemHostAlloc(void **pp, size_t bytes, unsigned int flags)
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
    void *p = NULL;
    if (posix_memalign(&p, 4096, bytes ? bytes : 1) != 0) {
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_OUT_OF_MEMORY;
    }
    add_rec((uintptr_t)p, bytes ? bytes : 1, -1, flags);
    *pp = p;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemAllocHost_v2(void **pp, size_t bytes) { return cuMemHostAlloc(pp, bytes, 0); }

FAKE_EXPORT CUresult cuMemFreeHost(void *p)
{
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
    free(p);
    *r = recs[--nrecs];
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemHostGetDevicePointer_v2(CUdeviceptr *d, void *p, unsigned int flags)
{
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
    pthread_mutex_lock(&lock);
    init_locked();
    counters.mem_get_info++;
    int d = cur_dev();
    if (free_b)
        *free_b = capacity[d] - used[d];
    if (total)
        *total = capacity[d];
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemGetAddressRange_v2(CUdeviceptr *base, size_t *size, CUdeviceptr p)
{
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

FAKE_EXPORT CUresult cuStreamCreate(CUstream *out, unsigned int flags)
{
    if (!out)
        return CUDA_ERROR_INVALID_VALUE;
    struct CUstream_st *s = calloc(1, sizeof(*s));
    if (!s)
        return CUDA_ERROR_OUT_OF_MEMORY;
    s->ctx = current ? current : &contexts[0];
    s->flags = flags;
    pthread_mutex_lock(&lock);
    counters.stream_create++;
    s->next = streams;
    streams = s;
    pthread_mutex_unlock(&lock);
    *out = s;
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuStreamDestroy_v2(CUstream h)
{
    struct CUstream_st *s = (struct CUstream_st *)h;
    pthread_mutex_lock(&lock);
    wait_until(s->busy_until); /* pending work still completes */
    for (struct CUstream_st **pp = &streams; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            break;
        }
    pthread_mutex_unlock(&lock);
    free(s);
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuStreamSynchronize(CUstream h)
{
    pthread_mutex_lock(&lock);
    counters.stream_sync++;
    wait_until(resolve(h)->busy_until);
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuStreamQuery(CUstream h)
{
    pthread_mutex_lock(&lock);
    CUresult rc = resolve(h)->busy_until <= executed_until || resolve(h)->busy_until <= now_ns()
                      ? CUDA_SUCCESS
                      : CUDA_ERROR_NOT_READY;
    pthread_mutex_unlock(&lock);
    return rc;
}

FAKE_EXPORT CUresult cuEventCreate(CUevent *out, unsigned int flags)
{
    (void)flags;
    if (!out)
        return CUDA_ERROR_INVALID_VALUE;
    struct CUevent_st *e = calloc(1, sizeof(*e));
    if (!e)
        return CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_lock(&lock);
    counters.event_create++;
    pthread_mutex_unlock(&lock);
    *out = e;
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuEventRecord(CUevent h, CUstream s)
{
    if (!h)
        return CUDA_ERROR_INVALID_HANDLE;
    pthread_mutex_lock(&lock);
    if (fault_locked(fault_event_permille)) {
        counters.fault_event_record++;
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_LAUNCH_FAILED;
    }
    counters.event_record++;
    if (captures && (s == NULL || s == CU_STREAM_LEGACY)) {
        counters.capture_violations++;
        pthread_mutex_unlock(&lock);
        return CUDA_ERROR_STREAM_CAPTURE_IMPLICIT;
    }
    h->done_at = start_time(resolve(s)); /* completes when prior work does */
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
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
        if (o->dst)
            memset(o->dst, o->value, o->bytes);
        executed_until = o->end;
        free(o);
    }
    pthread_cond_broadcast(&done_cv);
}

/* Done once its time has passed and every operation due by then has run. */
static int event_done(const struct CUevent_st *e)
{
    run_due();
    return e->done_at <= now_ns() && (queue == NULL || queue->end > e->done_at);
}

FAKE_EXPORT CUresult cuEventQuery(CUevent h)
{
    if (!h)
        return CUDA_ERROR_INVALID_HANDLE;
    pthread_mutex_lock(&lock);
    counters.event_query++;
    if (captures)
        counters.capture_violations++;
    CUresult rc = event_done(h) ? CUDA_SUCCESS : CUDA_ERROR_NOT_READY;
    pthread_mutex_unlock(&lock);
    return rc;
}

FAKE_EXPORT CUresult cuEventSynchronize(CUevent h)
{
    if (!h)
        return CUDA_ERROR_INVALID_HANDLE;
    pthread_mutex_lock(&lock);
    counters.event_sync++;
    wait_until(h->done_at);
    pthread_mutex_unlock(&lock);
    while (now_ns() < h->done_at)
        usleep(50);
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuEventDestroy_v2(CUevent h)
{
    free(h);
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuGetErrorString(CUresult e, const char **s)
{
    if (!s)
        return CUDA_ERROR_INVALID_VALUE;
    *s = e == CUDA_SUCCESS ? "no error"
         : e == CUDA_ERROR_OUT_OF_MEMORY ? "out of memory"
         : e == CUDA_ERROR_NOT_READY ? "device not ready"
                                      : "fake cuda error";
    return CUDA_SUCCESS;
}

/* ---- stream capture, IPC, stream-ordered allocation ---------------------- */

FAKE_EXPORT CUresult cuStreamBeginCapture_v2(CUstream h, CUstreamCaptureMode mode)
{
    (void)mode;
    if (h == NULL || h == CU_STREAM_LEGACY)
        return CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED;
    pthread_mutex_lock(&lock);
    struct CUstream_st *s = resolve(h);
    CUresult rc = CUDA_ERROR_ILLEGAL_STATE;
    if (!s->capturing) {
        s->capturing = 1;
        captures++;
        counters.capture_begin++;
        rc = CUDA_SUCCESS;
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

FAKE_EXPORT CUresult cuStreamEndCapture(CUstream h, CUgraph *graph)
{
    pthread_mutex_lock(&lock);
    struct CUstream_st *s = resolve(h);
    CUresult rc = CUDA_ERROR_ILLEGAL_STATE;
    if (s->capturing) {
        s->capturing = 0;
        captures--;
        counters.capture_end++;
        if (graph)
            *graph = (CUgraph)s; /* any non-NULL handle: the fake has no graphs */
        rc = CUDA_SUCCESS;
    }
    pthread_mutex_unlock(&lock);
    return rc;
}

FAKE_EXPORT CUresult cuStreamIsCapturing(CUstream h, CUstreamCaptureStatus *st)
{
    if (!st)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    *st = resolve(h)->capturing ? CU_STREAM_CAPTURE_STATUS_ACTIVE : CU_STREAM_CAPTURE_STATUS_NONE;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

/* The handle names the allocation's base; like the real driver, only the
 * base of a device allocation can be exported. */
FAKE_EXPORT CUresult cuIpcGetMemHandle(CUipcMemHandle *h, CUdeviceptr p)
{
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
    (void)p;
    return CUDA_SUCCESS;
}

/* Stream-ordered allocation, served at once from ordinary device memory
 * (the fake has no memory pools); counted apart. */
FAKE_EXPORT CUresult cuMemAllocAsync(CUdeviceptr *p, size_t bytes, CUstream s)
{
    (void)s;
    CUresult rc = cuMemAlloc_v2(p, bytes);
    pthread_mutex_lock(&lock);
    counters.alloc_async++;
    pthread_mutex_unlock(&lock);
    return rc;
}

FAKE_EXPORT CUresult cuMemFreeAsync(CUdeviceptr p, CUstream s)
{
    (void)s;
    pthread_mutex_lock(&lock);
    counters.free_async++;
    pthread_mutex_unlock(&lock);
    return cuMemFree_v2(p);
}

/* A memset is a fill that takes no time, in stream order. */
FAKE_EXPORT CUresult cuMemsetD8Async(CUdeviceptr dst, unsigned char value, size_t n, CUstream s)
{
    pthread_mutex_lock(&lock);
    counters.memset++;
    pthread_mutex_unlock(&lock);
    return fakecuLaunchFill(s, dst, value, n, 0);
}

/* Page-locking of existing host memory: only bookkept (counted). */
FAKE_EXPORT CUresult cuMemHostRegister_v2(void *p, size_t bytes, unsigned int flags)
{
    if (p == NULL || bytes == 0 || (flags & ~0xfu))
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    counters.host_register++;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

FAKE_EXPORT CUresult cuMemHostUnregister(void *p)
{
    if (p == NULL)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    counters.host_unregister++;
    pthread_mutex_unlock(&lock);
    return CUDA_SUCCESS;
}

/* ---- test controls (also reachable through cuGetProcAddress) ----------- */

FAKE_EXPORT CUresult fakecuLaunchFill(CUstream h, CUdeviceptr dst, int value, size_t bytes,
                                      unsigned delay_us)
{
    op_t *o = malloc(sizeof(*o));
    if (!o)
        return CUDA_ERROR_OUT_OF_MEMORY;
    pthread_mutex_lock(&lock);
    counters.launch++;
    struct CUstream_st *s = resolve(h);
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
    pthread_mutex_unlock(&lock);
}

FAKE_EXPORT size_t fakecuUsed(int device) { return device >= 0 && device < NDEV ? used[device] : 0; }

/* ---- cuGetProcAddress ----------------------------------------------------- */

typedef struct {
    const char *name;
    void *fn;
} proc_t;

#define P(name, fn) {name, (void *)fn}
static const proc_t procs[] = {
    P("cuInit", cuInit),
    P("cuDriverGetVersion", cuDriverGetVersion),
    P("cuDeviceGetCount", cuDeviceGetCount),
    P("cuDeviceGet", cuDeviceGet),
    P("cuDeviceTotalMem", cuDeviceTotalMem_v2),
    P("cuDevicePrimaryCtxRetain", cuDevicePrimaryCtxRetain),
    P("cuDevicePrimaryCtxRelease", cuDevicePrimaryCtxRelease_v2),
    P("cuDevicePrimaryCtxReset", cuDevicePrimaryCtxReset_v2),
    P("cuCtxGetCurrent", cuCtxGetCurrent),
    P("cuCtxSetCurrent", cuCtxSetCurrent),
    P("cuCtxGetDevice", cuCtxGetDevice),
    P("cuCtxPushCurrent", cuCtxPushCurrent_v2),
    P("cuCtxPopCurrent", cuCtxPopCurrent_v2),
    P("cuCtxDestroy", cuCtxDestroy_v2),
    P("cuCtxCreate", cuCtxCreate_v2),
    P("cuCtxSynchronize", cuCtxSynchronize),
    P("cuMemAlloc", cuMemAlloc_v2),
    P("cuMemAllocPitch", cuMemAllocPitch_v2),
    P("cuMemAllocManaged", cuMemAllocManaged),
    P("cuMemFree", cuMemFree_v2),
    P("cuMemHostAlloc", cuMemHostAlloc),
    P("cuMemAllocHost", cuMemAllocHost_v2),
    P("cuMemFreeHost", cuMemFreeHost),
    P("cuMemHostGetDevicePointer", cuMemHostGetDevicePointer_v2),
    P("cuMemGetInfo", cuMemGetInfo_v2),
    P("cuMemGetAddressRange", cuMemGetAddressRange_v2),
    P("cuStreamCreate", cuStreamCreate),
    P("cuStreamDestroy", cuStreamDestroy_v2),
    P("cuStreamSynchronize", cuStreamSynchronize),
    P("cuStreamQuery", cuStreamQuery),
    P("cuEventCreate", cuEventCreate),
    P("cuEventRecord", cuEventRecord),
    P("cuEventQuery", cuEventQuery),
    P("cuEventSynchronize", cuEventSynchronize),
    P("cuEventDestroy", cuEventDestroy_v2),
    P("cuGetErrorString", cuGetErrorString),
    P("cuStreamBeginCapture", cuStreamBeginCapture_v2),
    P("cuStreamEndCapture", cuStreamEndCapture),
    P("cuStreamIsCapturing", cuStreamIsCapturing),
    P("cuIpcGetMemHandle", cuIpcGetMemHandle),
    P("cuIpcOpenMemHandle", cuIpcOpenMemHandle_v2),
    P("cuIpcCloseMemHandle", cuIpcCloseMemHandle),
    P("cuMemAllocAsync", cuMemAllocAsync),
    P("cuMemFreeAsync", cuMemFreeAsync),
    P("cuGetProcAddress", NULL), /* filled in below: ourselves */
    P("cuMemsetD8Async", cuMemsetD8Async),
    P("cuMemHostRegister", cuMemHostRegister_v2),
    P("cuMemHostUnregister", cuMemHostUnregister),
    P("fakecuLaunchFill", fakecuLaunchFill),
};
#undef P

FAKE_EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, cuuint64_t flags,
                                         CUdriverProcAddressQueryResult *status);

static CUresult lookup(const char *symbol, void **pfn)
{
    if (!symbol || !pfn)
        return CUDA_ERROR_INVALID_VALUE;
    pthread_mutex_lock(&lock);
    counters.proc_address++;
    pthread_mutex_unlock(&lock);
    if (strcmp(symbol, "cuGetProcAddress") == 0) {
        *pfn = (void *)cuGetProcAddress_v2;
        return CUDA_SUCCESS;
    }
    for (size_t i = 0; i < sizeof(procs) / sizeof(procs[0]); i++)
        if (strcmp(procs[i].name, symbol) == 0 && procs[i].fn) {
            *pfn = procs[i].fn;
            return CUDA_SUCCESS;
        }
    *pfn = NULL;
    return CUDA_ERROR_NOT_FOUND;
}

FAKE_EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int version, cuuint64_t flags,
                                         CUdriverProcAddressQueryResult *status)
{
    (void)version, (void)flags; /* _ptsz variants are the same functions here */
    CUresult rc = lookup(symbol, pfn);
    if (status)
        *status = rc == CUDA_SUCCESS ? CU_GET_PROC_ADDRESS_SUCCESS : CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
    return rc;
}

FAKE_EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int version, cuuint64_t flags)
{
    (void)version, (void)flags;
    return lookup(symbol, pfn);
}
