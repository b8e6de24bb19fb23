/*
 * Device memory pools on the CUDA driver API: one pool per CUDA context
 * (memory of one context is not usable from another), plus pinned host
 * pools keyed by cuMemHostAlloc flags.
 *
 * Size classes: 512 B, then 4, 2 or 1 per doubling (MEMPOOL_DEVICE_SIZE_
 * CLASSES; waste <= 25% by default, the quarter spacing of the host pools).
 * Requests above MEMPOOL_DEVICE_MAX_BLOCK_SIZE are served unpooled.
 *
 * Segments: blocks of a class up to MEMPOOL_DEVICE_PACK_MAX_SIZE are
 * carved from 2 MiB segments (one class per segment, a slab: no per-block
 * headers on the device, no split/coalesce bookkeeping on the hit path);
 * larger blocks are each their own segment (one cuMemAlloc), so that
 * address-range and IPC queries on them are the driver's own truthful
 * answers.  A segment goes back to the driver when none of its blocks is
 * in use (trim, cache limit, out of memory): that is the coalescing step.
 * The 2 MiB small-segment size follows PyTorch's CUDACachingAllocator.
 *
 * Reuse never races the device: a freed block first joins the pool's
 * pending list.  When an allocation finds no ready block and the pending
 * list holds MEMPOOL_DEVICE_FENCE_BATCH blocks or MEMPOOL_DEVICE_FENCE_BYTES
 * bytes, ONE fence (cuda_ctx.c: one cuCtxRecordEvent per context) is
 * recorded for the whole batch (recording later than the free is safe, it
 * only waits for more work); below that the allocation gets a new block.
 * Fenced batches are checked oldest first and the check stops at the
 * first not done (cuEventQuery, never a host sync on the way to a hit), so
 * a busy device costs one query per allocation, and a steady loop one
 * record and one query per batch.  Device blocks are fenced in their own
 * context, pinned blocks in every context the process uses.  While any
 * stream is being captured into a graph no event is recorded or queried:
 * allocations pass through to the driver and frees wait in the pending list.
 *
 * Every block the shim made, handed out or cached, is in one hash table
 * (its state says which): a free is one lookup, whether the pointer is
 * ours, a second free, or the driver's.  No pool lock is held across a
 * driver call that can wait for the device: trims collect what to free
 * under the lock and free it after.
 *
 * Out of memory: free every cached block (cuMemFree waits for the work
 * still using them), retry once, and only then return
 * CUDA_ERROR_OUT_OF_MEMORY.
 */
#include <string.h>

#include "callsite.h"
#include "cuda_driver.h"
#include "dpool.h"
#include "timeline.h"

static int class_of_scheme(size_t size, int scheme, size_t *class_size)
{
    if (size <= 512) {
        *class_size = 512;
        return 0;
    }
    unsigned lg = 63u - (unsigned)__builtin_clzll((unsigned long long)(size - 1));
    size_t step = (size_t)1 << (lg - 2);
    size_t k = (size - 1 - ((size_t)1 << lg)) / step;
    switch (scheme) { /* half and pow2: subsets of quarter */
    case 1:
        k = k <= 1 ? 1 : 3;
        break;
    case 2:
        k = 3;
        break;
    }
    *class_size = ((size_t)1 << lg) + (k + 1) * step;
    return 1 + (int)(lg - 9) * 4 + (int)k;
}

int mp_device_class_of(size_t size, size_t *class_size)
{
    return class_of_scheme(size, (int)mp_opt(MP_OPT_DEVICE_SIZE_CLASSES), class_size);
}

/* The class of a request in pool pl.  Exact pools list blocks by their
 * quarter class but reuse a block only for the same size (rounded to
 * 256 bytes, cudaMalloc's alignment). */
static int pool_class_of(const dev_pool_t *pl, size_t size, size_t *class_size)
{
    if (pl->exact) {
        int cls = class_of_scheme(size, MP_SC_QUARTER, class_size);
        *class_size = size <= 512 ? 512 : (size + 255) & ~(size_t)255;
        return cls;
    }
    return class_of_scheme(size, pl->scheme >= 0 ? pl->scheme : (int)mp_opt(MP_OPT_DEVICE_SIZE_CLASSES),
                           class_size);
}

size_t mp_device_class_size(int cls)
{
    if (cls <= 0)
        return 512;
    unsigned lg = 9 + (unsigned)(cls - 1) / 4, k = (unsigned)(cls - 1) % 4;
    return ((size_t)1 << lg) + (k + 1) * ((size_t)1 << (lg - 2));
}

/* A ready block of class cls (of size csize in an exact pool). */
static dblock_t *pop_ready(dev_pool_t *pl, int cls, size_t csize)
{
    dblock_t **pp = &pl->ready[cls];
    if (pl->exact)
        while (*pp && (*pp)->size != csize)
            pp = &(*pp)->next;
    dblock_t *b = *pp;
    if (b)
        *pp = b->next;
    return b;
}

/* A block released on a stream: one released on stream s itself (same_stream:
 * stream order makes it safe at once), or one whose release event has
 * completed.  Never waits. */
static dblock_t *pop_stream(dev_pool_t *pl, int cls, size_t csize, mp_cu_stream s, bool same_stream)
{
    for (dblock_t **pp = &pl->streamq[cls]; *pp; pp = &(*pp)->next) {
        dblock_t *b = *pp;
        if (pl->exact && b->size != csize)
            continue;
        bool healthy = true;
        /* The same stream orders the reuse after the release; any other
         * needs the release's event done (an error proves nothing). */
        if (same_stream) {
            /* Only a real stream handle names one stream: NULL and the
             * legacy handle mean each context's legacy stream, the
             * per-thread handle each thread's own. */
            if (b->stream != s || (uintptr_t)s <= 2) /* NULL, CU_STREAM_LEGACY, CU_STREAM_PER_THREAD */
                continue;
        } else {
            if (!mp_ctx_driver_enter())
                return NULL; /* a capture began: no query now */
            int st = mp_ctx_event_state(b->ev, &healthy);
            mp_ctx_driver_leave();
            if (st != 1)
                continue;
        }
        *pp = b->next;
        mp_ctx_event_put(b->ev_slot, b->ev, b->ev_epoch, healthy);
        b->ev = NULL;
        b->stream = NULL;
        return b;
    }
    return NULL;
}

_Atomic(mp_cu_context) mp_dp_pool_owner[MP_DEV_MAX];

int mp_dp_current_pool(void)
{
    pthread_once(&mp_dp_once, mp_dp_init);
    int dev = -1, slot = mp_ctx_current_slot(&dev);
    if (slot < 0)
        return -1;
    mp_cu_context ctx = mp_ctx_handle(slot);
    if (mp_unlikely(atomic_load_explicit(&mp_dp_pool_owner[slot], memory_order_acquire) != ctx)) {
        pthread_mutex_lock(&mp_dpools[slot].lock);
        mp_dpools[slot].ordinal = dev;
        mp_dpools[slot].st.device = dev;
        pthread_mutex_unlock(&mp_dpools[slot].lock);
        atomic_store_explicit(&mp_dp_pool_owner[slot], ctx, memory_order_release);
    }
    return slot;
}

/* A block for class cls carved from the pool's current segment (pool
 * locked); NULL when it has none left. */
static dblock_t *carve(dev_pool_t *pl, int cls, int idx)
{
    segment_t *sg = pl->carving[cls];
    if (sg == NULL)
        return NULL;
    dblock_t *b = mp_dp_rec_new();
    if (b == NULL)
        return NULL;
    b->ptr = sg->base + (mp_cu_ptr)sg->carved * sg->block;
    b->size = sg->block;
    b->cls = cls;
    b->pool = idx;
    b->seg = sg;
    if (++sg->carved == sg->nblocks)
        pl->carving[cls] = sg->carve_next;
    return b;
}

/* A cached block for a request (pool locked), without waiting: on a
 * stream-ordered request one released on the same stream, else a ready
 * one, after collecting completed fences (and fencing the pending blocks
 * when nothing is ready), else one released on a stream whose event has
 * completed.  While a graph is captured no event is recorded or queried. */
static dblock_t *take_cached(dev_pool_t *pl, int idx, int cls, size_t csize, mp_cu_stream s, bool async,
                             bool quiet)
{
    dblock_t *b = NULL;
    if (async && (b = pop_stream(pl, cls, csize, s, true)) != NULL)
        return b;
    if ((b = pop_ready(pl, cls, csize)) != NULL || quiet)
        return b;
    if (pl->fenced) {
        mp_dp_collect(pl);
        if ((b = pop_ready(pl, cls, csize)) != NULL)
            return b;
    }
    if (pl->pending && mp_dp_batch_ready(pl)) {
        mp_dp_fence_pending(pl, idx);
        mp_dp_collect(pl); /* an idle device completes it at once */
        if ((b = pop_ready(pl, cls, csize)) != NULL)
            return b;
    }
    return pl->streamq[cls] ? pop_stream(pl, cls, csize, s, false) : NULL;
}

/* Serve size bytes from pool pl; reg holds the streams the fences cover
 * (the current context's pool).  s/async: a stream-ordered request. */
mp_cu_result mp_dp_pool_alloc(dev_pool_t *pl, int idx, mp_cu_ptr *out, size_t size, mp_cu_stream s,
                               bool async)
{
    size_t csize = size;
    size_t max_block = pl->max_block ? pl->max_block
                       : mp_opt(pl->pinned ? MP_OPT_PINNED_MAX_BLOCK_SIZE : MP_OPT_DEVICE_MAX_BLOCK_SIZE);
    int cls = size > max_block ? -1 : pool_class_of(pl, size, &csize);
    size_t seg_size = mp_opt(MP_OPT_DEVICE_SEGMENT_SIZE);
    /* Packed blocks are laid out at a stride of 256 bytes (cudaMalloc's
     * alignment guarantee), whatever the class size. */
    size_t stride = (csize + 255) & ~(size_t)255;
    bool packed = !pl->pinned && !pl->api && cls >= 0 && csize <= mp_opt(MP_OPT_DEVICE_PACK_MAX_SIZE)
                  && stride * 2 <= seg_size;
    bool hit = false;
    uint64_t wait_ns = 0;
    dblock_t *b = NULL;
    /* The context a new block's memory belongs to, and its generation now:
     * if the context goes while we allocate, the block is an orphan. */
    int dev, tag_slot = idx < MP_DEV_MAX ? idx : mp_ctx_current_slot(&dev);
    uint64_t tag_gen = mp_ctx_gen(tag_slot);
    mp_timeline_tick();
    pthread_mutex_lock(&pl->lock);
    /* Read under the lock: a capture that began before is seen. */
    bool quiet = atomic_load_explicit(&mp_captures, memory_order_acquire) != 0;
    pl->st.requests++;
    pl->st.req_bytes += size;
    if (cls >= 0) {
        pl->cls[cls].req_bytes += size;
        b = take_cached(pl, idx, cls, csize, s, async, quiet);
        if (b) {
            hit = true;
            mp_dp_table_mark_live(b); /* under the pool lock: see mp_dp_table_mark_live */
            pl->cls[cls].hits++;
            pl->st.hits++;
            pl->st.hit_bytes += b->size;
            pl->st.cached -= (int64_t)b->size;
            pl->st.cached_blocks--;
        } else if (packed && (b = carve(pl, cls, idx)) != NULL) {
            pl->cls[cls].misses++;
            pl->st.misses++;
        }
        if (b) {
            if (b->seg)
                b->seg->in_use++;
            pl->st.in_use += (int64_t)b->size;
            mp_peak_update(&pl->st.in_use_peak, pl->st.in_use);
        }
    }
    pthread_mutex_unlock(&pl->lock);

    if (b == NULL) {
        size_t want = packed ? seg_size : csize;
        mp_cu_ptr p = 0;
        uint64_t t0 = mp_now_ns();
        mp_cu_result r = mp_dp_raw_alloc(pl, &p, want);
        if (r == MP_CUDA_ERROR_OUT_OF_MEMORY) {
            trim_goal_t g;
            pthread_mutex_lock(&pl->lock);
            pl->st.oom_retries++;
            mp_dp_release_cached(pl, &g);
            pthread_mutex_unlock(&pl->lock);
            mp_dp_trim_finish(pl, &g);
            r = mp_dp_raw_alloc(pl, &p, want);
            /* cuMemGetInfo counts every pool's cache of the device as free:
             * so does an allocation that still runs out. */
            if (r == MP_CUDA_ERROR_OUT_OF_MEMORY && mp_device_release_for_oom(pl->pinned) > 0)
                r = mp_dp_raw_alloc(pl, &p, want);
        }
        wait_ns = mp_now_ns() - t0;
        pthread_mutex_lock(&pl->lock);
        if (r != MP_CUDA_SUCCESS) {
            if (r == MP_CUDA_ERROR_OUT_OF_MEMORY)
                pl->st.ooms++;
            pthread_mutex_unlock(&pl->lock);
            return r;
        }
        pl->st.segments++;
        mp_peak_update(&pl->st.segments_peak, pl->st.segments);
        pl->st.reserved += (int64_t)want;
        mp_peak_update(&pl->st.reserved_peak, pl->st.reserved);
        if (packed) {
            segment_t *sg = mp_dp_seg_new(p, want, stride, idx);
            if (sg != NULL) {
                sg->carve_next = pl->carving[cls];
                pl->carving[cls] = sg;
                b = carve(pl, cls, idx);
                if (b == NULL) { /* no record: the segment goes with its memory */
                    pl->carving[cls] = sg->carve_next;
                    mp_dp_seg_unhash(sg);
                    mp_dp_seg_free(sg);
                }
            }
        } else {
            b = mp_dp_rec_new();
            if (b != NULL) {
                b->ptr = p;
                b->size = csize;
                b->cls = cls;
                b->pool = idx;
            }
        }
        if (b == NULL) { /* no record: give the memory back */
            pl->st.segments--;
            pl->st.reserved -= (int64_t)want;
            pthread_mutex_unlock(&pl->lock);
            mp_dp_raw_free(pl, p, want);
            return MP_CUDA_ERROR_OUT_OF_MEMORY;
        }
        if (b->seg)
            b->seg->in_use++;
        if (cls >= 0) {
            pl->st.misses++;
            pl->cls[cls].misses++;
        } else {
            pl->st.unpooled++;
        }
        pl->st.in_use += (int64_t)b->size;
        mp_peak_update(&pl->st.in_use_peak, pl->st.in_use);
        pthread_mutex_unlock(&pl->lock);
    }
    /* Zero before reuse: pinned blocks here, once their fence says no
     * copy still reads them (device blocks were zeroed in stream order at
     * release). */
    if (hit && pl->zero && pl->pinned)
        memset((void *)(uintptr_t)b->ptr, 0, b->size);
    b->req = size;
    b->exported = false;
    if (!hit) {
        b->ctx_slot = tag_slot;
        b->ctx_gen = tag_gen;
        mp_dp_table_add(b);
    }
    *out = b->ptr;
    if (!hit && mp_callsite_device_on()) /* a miss: where from, and how long it waited */
        mp_callsite_record(pl->pinned ? MP_SITE_PINNED : MP_SITE_DEVICE, size, b->size, wait_ns);
    return MP_CUDA_SUCCESS;
}

static bool capturing(dev_pool_t *pl)
{
    if (atomic_load_explicit(&mp_captures, memory_order_acquire) == 0)
        return false;
    pthread_mutex_lock(&pl->lock);
    pl->st.captured++;
    pthread_mutex_unlock(&pl->lock);
    return true;
}

mp_cu_result mp_device_alloc(mp_cu_ptr *out, size_t size)
{
    int idx = mp_dp_current_pool();
    if (idx < 0 || capturing(&mp_dpools[idx]))
        return MP_CUDA_ERROR_NOT_INITIALIZED; /* the caller passes it through */
    return mp_dp_pool_alloc(&mp_dpools[idx], idx, out, size, NULL, false);
}

mp_cu_result mp_pinned_alloc(void **out, size_t size, unsigned flags)
{
    int reg = mp_dp_current_pool(); /* a context to allocate in */
    if (reg < 0 || flags >= MP_PINNED_POOLS)
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    int idx = MP_DEV_MAX + (int)flags;
    if (capturing(&mp_dpools[idx]))
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    mp_cu_ptr p = 0;
    mp_cu_result r = mp_dp_pool_alloc(&mp_dpools[idx], idx, &p, size ? size : 1, NULL, false);
    if (r == MP_CUDA_SUCCESS)
        *out = (void *)(uintptr_t)p;
    return r;
}

/* MEMPOOL_DEVICE_CACHE_LIMIT in bytes for a device (a percentage is of
 * the device's memory, asked once). */
static uint64_t device_cache_limit(int dev)
{
    static _Atomic uint64_t resolved[MP_DEV_MAX];
    uint64_t v = mp_opt(MP_OPT_DEVICE_CACHE_LIMIT);
    if (!(v & MP_OPT_PERCENT) || dev < 0 || dev >= MP_DEV_MAX)
        return v & MP_OPT_PERCENT ? 0 : v;
    uint64_t r = atomic_load_explicit(&resolved[dev], memory_order_relaxed);
    if (r == 0) {
        size_t total = 0;
        if (mp_cuda.total_mem(&total, dev) != MP_CUDA_SUCCESS || total == 0)
            return 0; /* unknown: no limit */
        r = (uint64_t)total / 100 * (v & 0xff);
        if (r == 0)
            r = 1; /* 0%: keep nothing */
        atomic_store_explicit(&resolved[dev], r, memory_order_relaxed);
    }
    return r;
}

/* MEMPOOL_DEVICE_FREE_SYNC: wait for the block's context as the driver's
 * own free would (no pool lock held). */
static void sync_context_of(int pool)
{
    mp_cu_context ctx = pool < MP_DEV_MAX ? mp_ctx_handle(pool) : mp_dpools[pool].ctx, cur = NULL, popped;
    if (ctx == NULL || mp_cuda.ctx_synchronize == NULL)
        return;
    bool push = mp_cuda.ctx_get_current(&cur) != MP_CUDA_SUCCESS || cur != ctx;
    if (push && mp_cuda.ctx_push(ctx) != MP_CUDA_SUCCESS)
        return;
    uint64_t t0 = mp_now_ns();
    mp_cuda.ctx_synchronize();
    atomic_fetch_add_explicit(&mp_dpools[pool].wait_ns, mp_now_ns() - t0, memory_order_relaxed);
    if (push)
        mp_cuda.ctx_pop(&popped);
}

/* Take back block b (marked cached in the table) into its pool: cached
 * for reuse behind a fence, or freed when unpooled, exported or over a
 * limit. */
bool mp_dp_pool_put(dev_pool_t *pl, dblock_t *b, mp_cu_stream s, bool async)
{
    trim_goal_t g = {0, 0, false, 0, NULL, NULL};
    mp_timeline_tick();
    pthread_mutex_lock(&pl->lock);
    if (mp_unlikely(mp_dp_orphan(b))) {
        /* Its context is gone, and the memory with it: the record goes, the
         * pointer to the driver (which reports it, as without the shim).  A
         * context pool was emptied whole when its context went; the other
         * pools still count the block. */
        if (b->pool >= MP_DEV_MAX)
            pl->st.in_use -= (int64_t)b->size;
        pthread_mutex_unlock(&pl->lock);
        mp_dp_table_remove(b);
        mp_dp_rec_free(b);
        return false;
    }
    /* No stream call while a capture is active, nor once one has begun
     * (mp_ctx_driver_enter, left at the end; a shared counter, so only for
     * the releases that make stream calls: zeroing, stream order). */
    bool stream_calls = (pl->zero && !pl->pinned) || async;
    bool in_driver = stream_calls && mp_ctx_driver_enter();
    bool quiet = stream_calls ? !in_driver : atomic_load_explicit(&mp_captures, memory_order_acquire) != 0;
    pl->st.releases++;
    if (b->cls >= 0)
        pl->cls[b->cls].releases++;
    pl->st.in_use -= (int64_t)b->size;
    if (b->seg)
        b->seg->in_use--;
    if (b->cls < 0 || b->exported) {
        /* Unpooled, or shared with another process by IPC (which may still
         * read it): back to the driver, which waits for the device. */
        pl->st.reserved -= (int64_t)b->size;
        pl->st.segments--;
        pthread_mutex_unlock(&pl->lock);
        if (in_driver)
            mp_ctx_driver_leave();
        mp_dp_table_remove(b);
        mp_dp_raw_free(pl, b->ptr, b->size);
        mp_dp_rec_free(b);
        return true;
    }
    /* Zero-on-release device blocks: a memset in stream order after the
     * program's work, covered by the fence (during a capture: later, in
     * collect, since no stream may be used now). */
    if (pl->zero && !pl->pinned) {
        b->dirty = quiet || mp_cuda.memset_async == NULL
                   || mp_cuda.memset_async(b->ptr, 0, b->size, async ? s : NULL) != MP_CUDA_SUCCESS;
    }
    mp_cu_event ev = NULL;
    int dev, slot = -1;
    uint64_t epoch = 0;
    if (async && !quiet && !b->dirty && (slot = mp_ctx_current_slot(&dev)) >= 0
        && (ev = mp_ctx_event_get(slot, &epoch)) != NULL && mp_cuda.event_record(ev, s) != MP_CUDA_SUCCESS) {
        mp_cuda.event_destroy(ev); /* a failed event is not reused */
        ev = NULL;
    }
    if (ev) { /* stream-ordered: at once for s, after ev for the others */
        b->stream = s;
        b->ev = ev;
        b->ev_slot = slot;
        b->ev_epoch = epoch;
        b->next = pl->streamq[b->cls];
        pl->streamq[b->cls] = b;
    } else if (mp_opt(MP_OPT_DEVICE_FENCES) == 1 && !b->dirty) { /* none: the program vouches */
        b->next = pl->ready[b->cls];
        pl->ready[b->cls] = b;
    } else {
        b->next = pl->pending;
        pl->pending = b;
        pl->pending_n++;
        pl->pending_bytes += b->size;
    }
    mp_dp_table_cache(b);
    pl->st.cached += (int64_t)b->size;
    pl->st.cached_blocks++;
    /* No driver call while a graph is being captured: trim later. */
    if (!quiet) {
        if (pl->api) {
            g.bytes = pl->cache_limit ? (int64_t)pl->cache_limit : INT64_MAX;
            g.blocks = pl->max_blocks ? (int64_t)pl->max_blocks : INT64_MAX;
            if (!mp_dp_goal_met(pl, &g))
                mp_dp_release_to(pl, &g);
        } else {
            uint64_t limit = pl->pinned ? mp_opt(MP_OPT_PINNED_CACHE_LIMIT) : device_cache_limit(pl->ordinal);
            if (limit && (uint64_t)pl->st.cached > limit)
                mp_dp_release_cached(pl, &g);
        }
    }
    pthread_mutex_unlock(&pl->lock);
    if (in_driver)
        mp_ctx_driver_leave();
    mp_dp_trim_finish(pl, &g); /* the free functions wait for the device */
    return true;
}

/* Take back a block of the wanted kind: 1 done, 0 not ours, -1 refused (a
 * block the pool already holds: forwarding it would let the driver free
 * memory the pool still hands out).  One table lookup either way. */
static int pool_free(mp_cu_ptr p, bool pinned)
{
    dblock_t *b;
    int r = mp_dp_table_take(p, &b);
    if (r == 0)
        return 0; /* not ours: the caller forwards to the driver */
    if (r < 0) {
        mp_debug_finding(MP_DEBUG_DEVICE_DOUBLE_FREE, "the free fails with an invalid-value error",
                         "%s 0x%llx freed twice (the pool already holds it); refused",
                         pinned ? "pinned block" : "device block", (unsigned long long)p);
        return -1;
    }
    dev_pool_t *pl = &mp_dpools[b->pool];
    if (pl->pinned != pinned) { /* cudaFreeHost of device memory, or the reverse */
        mp_dp_table_untake(b);
        return 0; /* the real function reports the error */
    }
    if (mp_unlikely(mp_opt(MP_OPT_DEVICE_FREE_SYNC)) && !pinned)
        sync_context_of(b->pool);
    return mp_dp_pool_put(pl, b, NULL, false) ? 1 : 0; /* an orphan goes to the driver */
}

int mp_device_free(mp_cu_ptr p) { return p == 0 ? 1 : pool_free(p, false); }

int mp_pinned_free(void *p) { return p == NULL ? 1 : pool_free((mp_cu_ptr)(uintptr_t)p, true); }

