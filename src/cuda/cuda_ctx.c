/*
 * Contexts, events and fences.
 *
 * A fence proves that the device has finished every piece of work issued
 * before it.  With CUDA >= 12.5 one cuCtxRecordEvent per context covers all
 * of the context's work: every stream, green-context streams, streams of a
 * runtime that started before the shim, and the queued work of destroyed
 * streams; no stream registry and no limit.  Older drivers get one event
 * on the legacy stream (which orders after every blocking stream) plus one
 * on each non-blocking stream the hooks saw created, and a stream being
 * destroyed first records an event that later fences also wait for.
 *
 * Events belong to one context: each slot keeps its own spare list, and an
 * event is created with its context pushed and recorded only there.
 * Fences of one context are numbered; a completed one answers for every
 * older one of the same context, so most checks make no driver call.
 * Locks: a slot's lock is a leaf (taken under pool locks, never the other
 * way); the driver calls made under it (event create/record/query) never
 * wait for the device.
 */
#include <pthread.h>
#include <sched.h>
#include <string.h>
#include <sys/mman.h>

#include "cuda_ctx.h"
#include "cuda_driver.h"

#define SPARE_MAX 256

typedef struct retired {
    mp_cu_event ev;
    uint64_t n; /* its number among the context's retired streams, from 1 */
} retired_t;

typedef struct ctx_slot {
    pthread_mutex_t lock;
    int device;
    uint64_t seq, done_seq; /* fences recorded, newest known complete */
    uint64_t born;          /* seq when the slot's context was forgotten: older events are dead */
    bool primary;           /* the device's primary context (reset by its last release) */
    unsigned nspare;
    mp_cu_event spare[SPARE_MAX];
    mp_cu_stream *streams; /* non-blocking streams (drivers < 12.5) */
    unsigned nstreams, streams_cap;
    retired_t *retired; /* last events of destroyed streams, not yet done */
    unsigned nretired, retired_cap;
    uint64_t retired_total;
} ctx_slot_t;

_Atomic int mp_captures;
static _Atomic int in_driver; /* threads between mp_ctx_driver_enter and _leave */

bool mp_ctx_driver_enter(void)
{
    atomic_fetch_add(&in_driver, 1);
    if (atomic_load(&mp_captures) == 0)
        return true;
    atomic_fetch_sub(&in_driver, 1);
    return false;
}

void mp_ctx_driver_leave(void) { atomic_fetch_sub(&in_driver, 1); }

void mp_ctx_capture_begin(void)
{
    /* Either a fence in flight sees the capture (and stands back), or the
     * capture waits here until that fence's driver calls are done (both
     * counters sequentially consistent). */
    atomic_fetch_add(&mp_captures, 1);
    while (atomic_load(&in_driver) != 0)
        sched_yield();
}

static ctx_slot_t slots[MP_DEV_MAX];
static _Atomic(mp_cu_context) slot_ctx[MP_DEV_MAX];
/* Bumped when a slot's context is forgotten: a block made in an older
 * generation of its slot belongs to a context that is gone. */
static _Atomic uint64_t slot_gen[MP_DEV_MAX];
static pthread_mutex_t claim_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void init(void)
{
    for (int i = 0; i < MP_DEV_MAX; i++) {
        pthread_mutex_init(&slots[i].lock, NULL);
        slots[i].device = -1;
    }
}

bool mp_ctx_whole_context_fences(void) { return mp_cuda.ctx_record_event != NULL; }

/* Grow a mapped array (the shim's books never use malloc): false if no
 * memory, the array unchanged. */
static bool grow(void **arr, unsigned *cap, size_t elem)
{
    unsigned ncap = *cap ? *cap * 2 : 64;
    void *n = mmap(NULL, ncap * elem, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (n == MAP_FAILED)
        return false;
    if (*arr) {
        memcpy(n, *arr, *cap * elem);
        munmap(*arr, *cap * elem);
    }
    *arr = n;
    *cap = ncap;
    return true;
}

int mp_ctx_slot_of(mp_cu_context ctx)
{
    if (ctx == NULL)
        return -1;
    for (int i = 0; i < MP_DEV_MAX; i++)
        if (atomic_load_explicit(&slot_ctx[i], memory_order_acquire) == ctx)
            return i;
    return -1;
}

/* Whether ctx is device d's primary context: the handle a retain answers,
 * asked only while the primary context is active (the program holds a
 * reference, so the retain creates nothing and the release resets nothing). */
static bool is_primary(mp_cu_context ctx, int d)
{
    unsigned flags = 0;
    int active = 0;
    mp_cu_context p = NULL;
    if (!mp_cuda.primary_get_state || !mp_cuda.primary_retain || !mp_cuda.primary_release
        || mp_cuda.primary_get_state(d, &flags, &active) != MP_CUDA_SUCCESS || !active
        || mp_cuda.primary_retain(&p, d) != MP_CUDA_SUCCESS)
        return false;
    mp_cuda.primary_release(d);
    return p == ctx;
}

int mp_ctx_primary_slot(int dev)
{
    if (!mp_cuda.primary_get_state || !mp_cuda.primary_retain || !mp_cuda.primary_release)
        return -2; /* no way to tell which context is primary */
    for (int i = 0; i < MP_DEV_MAX; i++) {
        if (mp_ctx_handle(i) == NULL)
            continue;
        pthread_mutex_lock(&slots[i].lock);
        bool hit = slots[i].primary && slots[i].device == dev;
        pthread_mutex_unlock(&slots[i].lock);
        if (hit)
            return i;
    }
    return -1;
}

uint32_t mp_ctx_slots_of_device(int dev)
{
    uint32_t set = 0;
    for (int i = 0; i < MP_DEV_MAX; i++) {
        if (mp_ctx_handle(i) == NULL)
            continue;
        pthread_mutex_lock(&slots[i].lock);
        if (slots[i].device == dev)
            set |= 1u << i;
        pthread_mutex_unlock(&slots[i].lock);
    }
    return set;
}

uint64_t mp_ctx_gen(int slot)
{
    return slot >= 0 && slot < MP_DEV_MAX ? atomic_load_explicit(&slot_gen[slot], memory_order_acquire) : 0;
}

int mp_ctx_current_slot(int *dev)
{
    pthread_once(&once, init);
    mp_cu_context ctx = NULL;
    if (!mp_cuda_load() || mp_cuda.ctx_get_current(&ctx) != MP_CUDA_SUCCESS || ctx == NULL)
        return -1;
    int slot = mp_ctx_slot_of(ctx);
    if (slot >= 0) {
        *dev = slots[slot].device;
        return slot;
    }
    int d = -1;
    if (mp_cuda.ctx_get_device(&d) != MP_CUDA_SUCCESS || d < 0)
        return -1;
    bool primary = is_primary(ctx, d);
    pthread_mutex_lock(&claim_lock);
    slot = mp_ctx_slot_of(ctx);
    for (int i = 0; i < MP_DEV_MAX && slot < 0; i++)
        if (atomic_load_explicit(&slot_ctx[i], memory_order_relaxed) == NULL) {
            slot = i;
            pthread_mutex_lock(&slots[i].lock);
            slots[i].device = d;
            slots[i].primary = primary;
            pthread_mutex_unlock(&slots[i].lock);
            atomic_store_explicit(&slot_ctx[i], ctx, memory_order_release);
        }
    pthread_mutex_unlock(&claim_lock);
    if (slot < 0) {
        static _Atomic int said;
        if (atomic_exchange(&said, 1) == 0)
            mp_log(MP_LOG_WARN, "more than %d CUDA contexts: allocations of the others are not pooled",
                   MP_DEV_MAX);
        return -1;
    }
    *dev = d;
    return slot;
}

mp_cu_context mp_ctx_handle(int slot)
{
    return slot >= 0 && slot < MP_DEV_MAX ? atomic_load_explicit(&slot_ctx[slot], memory_order_acquire)
                                          : NULL;
}

uint32_t mp_ctx_slots_in_use(void)
{
    uint32_t set = 0;
    for (int i = 0; i < MP_DEV_MAX; i++)
        if (atomic_load_explicit(&slot_ctx[i], memory_order_acquire) != NULL)
            set |= 1u << i;
    return set;
}

void mp_ctx_forget(int slot)
{
    if (slot < 0 || slot >= MP_DEV_MAX)
        return;
    pthread_once(&once, init);
    pthread_mutex_lock(&claim_lock);
    ctx_slot_t *c = &slots[slot];
    pthread_mutex_lock(&c->lock);
    /* Its events and streams died with it; fence numbers keep counting so
     * that no old fence reads as done by a new context's. */
    c->nspare = c->nstreams = c->nretired = 0;
    c->done_seq = c->born = c->seq;
    c->device = -1;
    c->primary = false;
    atomic_fetch_add_explicit(&slot_gen[slot], 1, memory_order_acq_rel);
    atomic_store_explicit(&slot_ctx[slot], NULL, memory_order_release);
    pthread_mutex_unlock(&c->lock);
    pthread_mutex_unlock(&claim_lock);
}

/* Run f with the slot's context current (slot locked). */
static bool push_if_needed(mp_cu_context ctx, bool *pushed)
{
    mp_cu_context cur = NULL;
    *pushed = false;
    if (mp_cuda.ctx_get_current(&cur) == MP_CUDA_SUCCESS && cur == ctx)
        return true;
    if (mp_cuda.ctx_push(ctx) != MP_CUDA_SUCCESS)
        return false;
    *pushed = true;
    return true;
}

static void pop_if_pushed(bool pushed)
{
    mp_cu_context popped;
    if (pushed)
        mp_cuda.ctx_pop(&popped);
}

/* An event of the slot's context (slot locked; its context current). */
static mp_cu_event event_get_locked(ctx_slot_t *c)
{
    mp_cu_event ev = NULL;
    if (c->nspare)
        return c->spare[--c->nspare];
    if (mp_cuda.event_create(&ev, MP_CU_EVENT_DISABLE_TIMING) != MP_CUDA_SUCCESS)
        return NULL;
    return ev;
}

/* Back to the spare list; an event that failed goes away instead, so that
 * a bad handle never poisons later fences. */
static void event_put_locked(ctx_slot_t *c, mp_cu_event ev, bool healthy)
{
    if (ev == NULL)
        return;
    if (healthy && c->nspare < SPARE_MAX)
        c->spare[c->nspare++] = ev;
    else
        mp_cuda.event_destroy(ev);
}

mp_cu_event mp_ctx_event_get(int slot, uint64_t *epoch)
{
    mp_cu_context ctx = mp_ctx_handle(slot);
    if (ctx == NULL)
        return NULL;
    ctx_slot_t *c = &slots[slot];
    bool pushed;
    pthread_mutex_lock(&c->lock);
    mp_cu_event ev = NULL;
    if (push_if_needed(ctx, &pushed)) {
        ev = event_get_locked(c);
        pop_if_pushed(pushed);
    }
    *epoch = c->born;
    pthread_mutex_unlock(&c->lock);
    return ev;
}

void mp_ctx_event_put(int slot, mp_cu_event ev, uint64_t epoch, bool healthy)
{
    if (ev == NULL || mp_ctx_handle(slot) == NULL)
        return; /* its context is gone, and the event with it */
    ctx_slot_t *c = &slots[slot];
    pthread_mutex_lock(&c->lock);
    if (epoch == c->born) /* not an event of a context the slot served before */
        event_put_locked(c, ev, healthy);
    pthread_mutex_unlock(&c->lock);
}

void mp_fence_init(mp_fence_t *f)
{
    f->n = 0;
    f->cap = sizeof(f->inl) / sizeof(f->inl[0]);
    f->ev = f->inl;
}

static bool fence_add(mp_fence_t *f, mp_fence_ev_t e)
{
    if (f->n == f->cap) {
        mp_fence_ev_t *old = f->ev;
        unsigned cap = f->cap;
        if (old == f->inl) { /* first growth: copy out of the inline slots */
            f->ev = NULL;
            f->cap = 0;
            if (!grow((void **)&f->ev, &f->cap, sizeof(*f->ev))) {
                f->ev = old;
                f->cap = cap;
                return false;
            }
            memcpy(f->ev, old, cap * sizeof(*old));
        } else if (!grow((void **)&f->ev, &f->cap, sizeof(*f->ev))) {
            return false;
        }
    }
    f->ev[f->n++] = e;
    return true;
}

static void fence_free_storage(mp_fence_t *f)
{
    if (f->ev != f->inl)
        munmap(f->ev, f->cap * sizeof(*f->ev));
    mp_fence_init(f);
}

/* A fence's event back to its context's spare list, unless that context
 * has been forgotten since (the slot may serve another one now). */
static void fence_ev_put(const mp_fence_ev_t *e)
{
    if (e->ev == NULL || mp_ctx_handle(e->slot) == NULL)
        return;
    ctx_slot_t *c = &slots[e->slot];
    pthread_mutex_lock(&c->lock);
    if (e->seq > c->born)
        event_put_locked(c, e->ev, true);
    pthread_mutex_unlock(&c->lock);
}

void mp_fence_release(mp_fence_t *f)
{
    for (unsigned i = 0; i < f->n; i++)
        fence_ev_put(&f->ev[i]);
    fence_free_storage(f);
}

/* Record the slot's part of a fence (slot locked, its context current). */
static bool record_slot(ctx_slot_t *c, int slot, mp_cu_context ctx, mp_fence_t *f)
{
    uint64_t seq = c->seq + 1;
    unsigned nstreams = mp_cuda.ctx_record_event ? 0 : c->nstreams;
    for (unsigned i = 0; i <= nstreams; i++) {
        mp_cu_event ev = event_get_locked(c);
        if (ev == NULL)
            return false;
        mp_cu_result r = mp_cuda.ctx_record_event ? mp_cuda.ctx_record_event(ctx, ev)
                         : mp_cuda.event_record(ev, i == 0 ? NULL : c->streams[i - 1]);
        mp_fence_ev_t e = {ev, seq, c->retired_total, slot, false};
        if (r != MP_CUDA_SUCCESS || !fence_add(f, e)) {
            event_put_locked(c, ev, false);
            return false;
        }
    }
    c->seq = seq;
    return true;
}

bool mp_fence_record(mp_fence_t *f, uint32_t set)
{
    pthread_once(&once, init);
    for (int slot = 0; slot < MP_DEV_MAX; slot++) {
        if (!(set & (1u << slot)))
            continue;
        mp_cu_context ctx = mp_ctx_handle(slot);
        if (ctx == NULL)
            continue; /* gone, and its work with it */
        ctx_slot_t *c = &slots[slot];
        bool pushed, ok = false;
        pthread_mutex_lock(&c->lock);
        if (push_if_needed(ctx, &pushed)) {
            ok = record_slot(c, slot, ctx, f);
            pop_if_pushed(pushed);
        }
        pthread_mutex_unlock(&c->lock);
        if (!ok) {
            mp_fence_release(f);
            return false;
        }
    }
    return true;
}

/* An event query's answer: 1 done, 0 not yet, -1 an error that proves
 * nothing (a capture the shim did not see, a bad handle).  Only a context
 * that no longer exists takes its work with it. */
int mp_ctx_event_state(mp_cu_event ev, bool *healthy)
{
    mp_cu_result r = mp_cuda.event_query(ev);
    *healthy = r == MP_CUDA_SUCCESS || r == MP_CUDA_ERROR_NOT_READY;
    if (r == MP_CUDA_SUCCESS || r == MP_CUDA_ERROR_DEINITIALIZED || r == MP_CUDA_ERROR_CONTEXT_IS_DESTROYED)
        return 1;
    return r == MP_CUDA_ERROR_NOT_READY ? 0 : -1;
}

/* Whether the context's streams destroyed before a fence have finished
 * their work (slot locked); finished ones leave the list. */
static int retired_done_locked(ctx_slot_t *c, uint64_t upto, uint64_t *queries)
{
    for (unsigned i = 0; i < c->nretired;) {
        if (c->retired[i].n > upto) {
            i++;
            continue;
        }
        bool healthy;
        (*queries)++;
        int st = mp_ctx_event_state(c->retired[i].ev, &healthy);
        if (st <= 0)
            return st;
        event_put_locked(c, c->retired[i].ev, healthy);
        c->retired[i] = c->retired[--c->nretired];
    }
    return 1;
}

bool mp_fence_done(mp_fence_t *f, uint64_t *queries, uint64_t *errors)
{
    for (unsigned i = 0; i < f->n; i++) {
        mp_fence_ev_t *e = &f->ev[i];
        if (e->done)
            continue;
        if (mp_ctx_handle(e->slot) == NULL) {
            e->done = true; /* the context is gone: so is its work (and the event) */
            e->ev = NULL;
            continue;
        }
        ctx_slot_t *c = &slots[e->slot];
        pthread_mutex_lock(&c->lock);
        int st = c->done_seq >= e->seq ? 1 : -2;
        bool healthy = true;
        if (e->seq <= c->born)
            e->ev = NULL; /* recorded in a context that is gone: so is the event */
        if (st == -2) {
            (*queries)++;
            st = mp_ctx_event_state(e->ev, &healthy);
        }
        if (st == 1 && c->nretired)
            st = retired_done_locked(c, e->retired, queries);
        pthread_mutex_unlock(&c->lock);
        if (st < 0)
            (*errors)++;
        if (st <= 0)
            return false;
        e->done = true;
        if (!healthy && e->ev) {
            mp_cuda.event_destroy(e->ev);
            e->ev = NULL;
        }
    }
    /* All done: each context's newest completed fence, then the events go
     * back for the next fence. */
    for (unsigned i = 0; i < f->n; i++) {
        mp_fence_ev_t *e = &f->ev[i];
        ctx_slot_t *c = &slots[e->slot];
        pthread_mutex_lock(&c->lock);
        if (e->seq > c->done_seq && e->seq <= c->seq)
            c->done_seq = e->seq;
        pthread_mutex_unlock(&c->lock);
        fence_ev_put(e);
    }
    fence_free_storage(f);
    return true;
}

void mp_ctx_stream_created(mp_cu_stream s, unsigned flags)
{
    if (!(flags & MP_CU_STREAM_NON_BLOCKING) || s == NULL || !mp_cuda_load() || mp_ctx_whole_context_fences())
        return;
    int dev, slot = mp_ctx_current_slot(&dev);
    if (slot < 0)
        return;
    ctx_slot_t *c = &slots[slot];
    pthread_mutex_lock(&c->lock);
    if (c->nstreams < c->streams_cap || grow((void **)&c->streams, &c->streams_cap, sizeof(*c->streams)))
        c->streams[c->nstreams++] = s;
    else
        mp_log(MP_LOG_WARN, "no memory to track a non-blocking stream: blocks freed while it works "
               "may be reused early");
    pthread_mutex_unlock(&c->lock);
}

void mp_ctx_stream_destroying(mp_cu_stream s)
{
    if (s == NULL || !mp_cuda.loaded || mp_ctx_whole_context_fences())
        return;
    pthread_once(&once, init);
    for (int slot = 0; slot < MP_DEV_MAX; slot++) {
        mp_cu_context ctx = mp_ctx_handle(slot);
        if (ctx == NULL)
            continue;
        ctx_slot_t *c = &slots[slot];
        pthread_mutex_lock(&c->lock);
        for (unsigned i = 0; i < c->nstreams; i++) {
            if (c->streams[i] != s)
                continue;
            c->streams[i] = c->streams[--c->nstreams];
            /* Its queued work still runs after the destroy returns: later
             * fences wait for this last event too. */
            bool pushed;
            if (push_if_needed(ctx, &pushed)) {
                mp_cu_event ev = event_get_locked(c);
                bool ok = ev != NULL && mp_cuda.event_record(ev, s) == MP_CUDA_SUCCESS
                          && (c->nretired < c->retired_cap
                              || grow((void **)&c->retired, &c->retired_cap, sizeof(*c->retired)));
                if (ok)
                    c->retired[c->nretired++] = (retired_t){ev, ++c->retired_total};
                else
                    event_put_locked(c, ev, false);
                pop_if_pushed(pushed);
            }
            break;
        }
        pthread_mutex_unlock(&c->lock);
    }
}

void mp_ctx_fork_child(void)
{
    /* The parent's contexts do not exist here: start from nothing (the
     * mapped arrays are leaked, not reused). */
    memset(slots, 0, sizeof(slots));
    atomic_store(&in_driver, 0);
    atomic_store(&mp_captures, 0);
    for (int i = 0; i < MP_DEV_MAX; i++) {
        atomic_store(&slot_ctx[i], NULL);
        atomic_fetch_add(&slot_gen[i], 1); /* every block of the parent is an orphan here */
    }
    pthread_mutex_init(&claim_lock, NULL);
    init();
}

int mp_device_of_context(mp_cu_context ctx)
{
    if (!mp_cuda_load())
        return -1;
    int dev = -1;
    if (ctx == NULL) {
        if (mp_cuda.ctx_get_device(&dev) != MP_CUDA_SUCCESS)
            return -1;
        return dev;
    }
    mp_cu_context popped = NULL;
    if (mp_cuda.ctx_push(ctx) != MP_CUDA_SUCCESS)
        return -1;
    if (mp_cuda.ctx_get_device(&dev) != MP_CUDA_SUCCESS)
        dev = -1;
    mp_cuda.ctx_pop(&popped);
    return dev;
}
