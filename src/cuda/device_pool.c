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
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "cuda_ctx.h"
#include "cuda_driver.h"
#include "callsite.h"
#include "device_pool.h"
#include "timeline.h"

#define LIVE_BUCKETS 65536
#define SEG_BUCKETS 4096

typedef struct segment {
    mp_cu_ptr base;
    size_t size;    /* bytes taken from the driver */
    size_t block;   /* class size of its blocks */
    unsigned nblocks, carved, in_use, dropped;
    int pool;
    struct segment *next;       /* hash chain */
    struct segment *carve_next; /* the pool's segments with uncarved blocks */
} segment_t;

typedef struct dblock {
    mp_cu_ptr ptr;
    size_t size; /* class size, or the request when unpooled */
    size_t req;  /* bytes the program asked for (what address-range queries report) */
    int cls;     /* -1: unpooled */
    int pool;
    bool exported;  /* IPC handle taken: never reused */
    bool dirty;     /* zero-on-release block not zeroed yet (released during a capture) */
    segment_t *seg; /* packed: the segment it was carved from */
    bool cached;    /* in the pool (not the program's): a free of it is a second free */
    mp_cu_stream stream; /* released on this stream (stream-ordered release) */
    mp_cu_event ev;      /* ... after this event: reusable by other streams once done */
    int ev_slot;         /* the context slot the event belongs to */
    struct dblock *next;  /* the pool's lists */
    struct dblock *hnext; /* the block table's chain */
} dblock_t;

typedef struct batch {
    dblock_t *blocks;
    struct batch *next; /* newer */
    mp_fence_t fence;
} batch_t;

typedef struct dev_pool {
    pthread_mutex_t lock;
    bool pinned;    /* page-locked host memory (cuMemHostAlloc) */
    unsigned flags; /* cuMemHostAlloc flags of a pinned pool */
    int ordinal;    /* device of a context pool */
    dblock_t *ready[MP_DEV_CLASSES];
    segment_t *carving[MP_DEV_CLASSES]; /* segments with blocks not yet carved */
    dblock_t *pending;
    unsigned pending_n;   /* blocks and bytes waiting for a fence */
    size_t pending_bytes;
    batch_t *fenced, *fenced_tail; /* oldest first */
    mp_device_stats_t st;
    _Atomic uint64_t wait_ns; /* in driver frees, which wait for the device */
    mp_dev_class_stats_t cls[MP_DEV_CLASSES];
    /* Pools of the explicit API (mempool_create) carry their own config. */
    bool api, exact, zero;
    int scheme;         /* MP_SC_* of the classes; -1: MEMPOOL_DEVICE_SIZE_CLASSES */
    int numa;           /* pinned: NUMA node of the pages (-1: no policy) */
    mp_cu_context ctx;  /* the context the pool's blocks live in (API pools) */
    size_t max_block;   /* larger requests are not cached */
    uint64_t cache_limit, max_blocks; /* 0: none */
    dblock_t *streamq[MP_DEV_CLASSES]; /* released on a stream, event recorded */
} dev_pool_t;

/* Context pools 0..MP_DEV_MAX-1 (pool i serves context slot i), then
 * one pinned pool per flag combination (portable, mapped, write-combined
 * never mix). */
#define MP_PINNED_POOLS 8
#define MP_API_BASE (MP_DEV_MAX + MP_PINNED_POOLS)
#define MP_NPOOLS (MP_API_BASE + MP_DPOOL_API_MAX)
static dev_pool_t pools[MP_NPOOLS];
static pthread_mutex_t claim_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static dblock_t *live[LIVE_BUCKETS];
static pthread_mutex_t seg_lock = PTHREAD_MUTEX_INITIALIZER;
static segment_t *segs[SEG_BUCKETS];
static pthread_mutex_t slab_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;
_Atomic int mp_captures;

static _Atomic bool inited;

static void init(void)
{
    for (int d = 0; d < MP_NPOOLS; d++) {
        pthread_mutex_init(&pools[d].lock, NULL);
        pools[d].pinned = d >= MP_DEV_MAX && d < MP_API_BASE;
        pools[d].flags = pools[d].pinned ? (unsigned)(d - MP_DEV_MAX) : 0;
        pools[d].ordinal = -1;
        pools[d].st.device = -1;
        pools[d].scheme = -1;
        pools[d].numa = -1;
    }
    atomic_store_explicit(&inited, true, memory_order_release);
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void max_update(int64_t *peak, int64_t v)
{
    if (v > *peak)
        *peak = v;
}

static size_t page_round(size_t n) { return (n + 4095) & ~(size_t)4095; }

/* Pinned memory on a NUMA node: pages bound to the node first, then
 * page-locked in place (cuMemHostAlloc has no placement). */
static mp_cu_result numa_pinned_alloc(dev_pool_t *pl, void **out, size_t size)
{
    size_t len = page_round(size);
    void *h = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (h == MAP_FAILED)
        return MP_CUDA_ERROR_OUT_OF_MEMORY;
    mp_cu_result r = MP_CUDA_ERROR_OUT_OF_MEMORY;
    if (mp_numa_bind(h, len, pl->numa) == 0)
        r = mp_cuda.host_register(h, len, pl->flags & 0x3u); /* portable, devicemap */
    if (r != MP_CUDA_SUCCESS) {
        munmap(h, len);
        return r;
    }
    *out = h;
    return MP_CUDA_SUCCESS;
}

static mp_cu_result raw_alloc(dev_pool_t *pl, mp_cu_ptr *p, size_t size)
{
    mp_cu_result r;
    if (!pl->pinned) {
        r = mp_cuda.mem_alloc(p, size);
    } else {
        void *h = NULL;
        if (pl->numa >= 0)
            r = numa_pinned_alloc(pl, &h, size);
        else
            r = mp_cuda.host_alloc(&h, size, pl->flags);
        *p = (mp_cu_ptr)(uintptr_t)h;
    }
    return r;
}

/* cuMemFree and cuMemFreeHost wait for the work still using the block:
 * the time is counted (pool locked or not: the caller owns the block). */
static void raw_free(dev_pool_t *pl, mp_cu_ptr p, size_t size)
{
    uint64_t t0 = now_ns();
    if (pl->pinned && pl->numa >= 0) {
        mp_cuda.host_unregister((void *)(uintptr_t)p);
        munmap((void *)(uintptr_t)p, page_round(size));
    } else if (pl->pinned) {
        mp_cuda.host_free((void *)(uintptr_t)p);
    } else {
        mp_cuda.mem_free(p);
    }
    atomic_fetch_add_explicit(&pl->wait_ns, now_ns() - t0, memory_order_relaxed);
}

/* Fixed-size records (block, segment and fence bookkeeping) from mmap'ed
 * slabs: the shim must not call malloc for its own books. */
typedef struct free_item {
    struct free_item *next;
} free_item_t;

static void *slab_get(free_item_t **list, size_t size)
{
    pthread_mutex_lock(&slab_lock);
    if (*list == NULL) {
        size_t n = 65536 / size;
        char *slab = mmap(NULL, n * size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (slab == MAP_FAILED) {
            pthread_mutex_unlock(&slab_lock);
            return NULL;
        }
        for (size_t i = 0; i < n; i++) {
            free_item_t *it = (free_item_t *)(slab + i * size);
            it->next = *list;
            *list = it;
        }
    }
    free_item_t *it = *list;
    *list = it->next;
    pthread_mutex_unlock(&slab_lock);
    memset(it, 0, size);
    return it;
}

static void slab_put(free_item_t **list, void *p)
{
    free_item_t *it = p;
    pthread_mutex_lock(&slab_lock);
    it->next = *list;
    *list = it;
    pthread_mutex_unlock(&slab_lock);
}

static free_item_t *free_recs, *free_batches, *free_segs;
static void *rec_new(void) { return slab_get(&free_recs, sizeof(dblock_t)); }
static void rec_free(void *p) { slab_put(&free_recs, p); }
static batch_t *batch_new(void) { return slab_get(&free_batches, sizeof(batch_t)); }
static void batch_free(batch_t *f) { slab_put(&free_batches, f); }

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

static unsigned live_hash(mp_cu_ptr p) { return (unsigned)((p >> 8) * 2654435761u) % LIVE_BUCKETS; }

/* The block table: every block the shim made, handed out or cached. */
static dblock_t *table_find_locked(mp_cu_ptr p)
{
    dblock_t *b = live[live_hash(p)];
    while (b && b->ptr != p)
        b = b->hnext;
    return b;
}

/* A new block record joins the table, handed out. */
static void table_add(dblock_t *b)
{
    unsigned h = live_hash(b->ptr);
    b->cached = false;
    pthread_mutex_lock(&live_lock);
    b->hnext = live[h];
    live[h] = b;
    pthread_mutex_unlock(&live_lock);
}

/* A cached block is handed out again. */
static void table_mark_live(dblock_t *b)
{
    pthread_mutex_lock(&live_lock);
    bool was_live = !b->cached;
    b->cached = false;
    pthread_mutex_unlock(&live_lock);
    if (mp_unlikely(mp_debug_on) && was_live)
        mp_debug_finding(MP_DEBUG_DEVICE_DOUBLE_HANDOUT, "it is handed out anyway",
                         "%s block 0x%llx (%zu bytes) handed out while it is still live",
                         pools[b->pool].pinned ? "pinned" : "device", (unsigned long long)b->ptr, b->size);
}

/* The block goes back to the driver: out of the table. */
static void table_remove(dblock_t *b)
{
    unsigned h = live_hash(b->ptr);
    pthread_mutex_lock(&live_lock);
    dblock_t **pp = &live[h];
    while (*pp && *pp != b)
        pp = &(*pp)->hnext;
    if (*pp)
        *pp = b->hnext;
    pthread_mutex_unlock(&live_lock);
    b->hnext = NULL;
}

/* A free of p: the handed-out block, now marked cached (1); 0 and NULL if
 * the shim never made p; -1 and NULL if the pool already holds it. */
static int table_take(mp_cu_ptr p, dblock_t **out)
{
    pthread_mutex_lock(&live_lock);
    dblock_t *b = table_find_locked(p);
    int r = b == NULL ? 0 : b->cached ? -1 : 1;
    if (r > 0)
        b->cached = true;
    pthread_mutex_unlock(&live_lock);
    *out = r > 0 ? b : NULL;
    return r;
}

/* Undo table_take: the block stays the program's. */
static void table_untake(dblock_t *b)
{
    pthread_mutex_lock(&live_lock);
    b->cached = false;
    pthread_mutex_unlock(&live_lock);
}

/* A handed-out block starting at p (live_lock held), or NULL. */
static dblock_t *live_find(mp_cu_ptr p)
{
    dblock_t *b = table_find_locked(p);
    return b && !b->cached ? b : NULL;
}

static unsigned seg_hash(mp_cu_ptr base) { return (unsigned)((base >> 16) * 2654435761u) % SEG_BUCKETS; }

static segment_t *seg_new(mp_cu_ptr base, size_t size, size_t block, int pool)
{
    segment_t *sg = slab_get(&free_segs, sizeof(segment_t));
    if (sg == NULL)
        return NULL;
    sg->base = base;
    sg->size = size;
    sg->block = block;
    sg->nblocks = (unsigned)(size / block);
    sg->pool = pool;
    unsigned h = seg_hash(base);
    pthread_mutex_lock(&seg_lock);
    sg->next = segs[h];
    segs[h] = sg;
    pthread_mutex_unlock(&seg_lock);
    return sg;
}

static void seg_unhash(segment_t *sg)
{
    unsigned h = seg_hash(sg->base);
    pthread_mutex_lock(&seg_lock);
    segment_t **pp = &segs[h];
    while (*pp && *pp != sg)
        pp = &(*pp)->next;
    if (*pp)
        *pp = sg->next;
    pthread_mutex_unlock(&seg_lock);
}

/* Blocks whose fence completed become ready (pool locked), oldest batch
 * first, stopping at the first not done; never waits. */
static void collect(dev_pool_t *pl)
{
    while (pl->fenced) {
        batch_t *f = pl->fenced;
        uint64_t queries = 0, errors = 0;
        bool done = mp_fence_done(&f->fence, &queries, &errors);
        pl->st.fence_queries += queries;
        pl->st.fence_errors += errors;
        if (!done) {
            pl->st.fences_pending++;
            return;
        }
        pl->st.fences_completed++;
        while (f->blocks) {
            dblock_t *b = f->blocks;
            f->blocks = b->next;
            if (b->dirty && mp_cuda.memset_async
                && mp_cuda.memset_async(b->ptr, 0, b->size, NULL) == MP_CUDA_SUCCESS) {
                b->dirty = false; /* zeroed in order: one more fence covers it */
                b->next = pl->pending;
                pl->pending = b;
                pl->pending_n++;
                pl->pending_bytes += b->size;
            } else if (b->dirty) {
                b->next = pl->pending; /* cannot zero it now: try again later */
                pl->pending = b;
                pl->pending_n++;
                pl->pending_bytes += b->size;
            } else {
                b->next = pl->ready[b->cls];
                pl->ready[b->cls] = b;
            }
        }
        pl->fenced = f->next;
        if (pl->fenced == NULL)
            pl->fenced_tail = NULL;
        batch_free(f);
    }
}

/* The contexts whose work may touch the pool's blocks: a device pool's
 * own (an API pool's, else the current one), every context for pinned
 * memory, which any device may be copying. */
static uint32_t pool_slots(const dev_pool_t *pl, int idx)
{
    if (pl->pinned)
        return mp_ctx_slots_in_use();
    if (idx < MP_DEV_MAX)
        return 1u << idx;
    int slot = mp_ctx_slot_of(pl->ctx), dev;
    if (slot < 0)
        slot = mp_ctx_current_slot(&dev);
    return slot >= 0 ? 1u << slot : 0;
}

/* Whether the pending blocks are worth a fence now: a full batch (or
 * bytes), so that one record and one query serve many reuses of device
 * memory.  Pinned memory is page-locked host memory the whole system runs
 * short of, and pools of the explicit API promise the released block at
 * the next acquire: both fence at every reuse instead. */
static bool batch_ready(const dev_pool_t *pl)
{
    uint64_t bytes = mp_opt(MP_OPT_DEVICE_FENCE_BYTES);
    return pl->api || pl->pinned || pl->pending_n >= mp_opt(MP_OPT_DEVICE_FENCE_BATCH) || bytes == 0
           || pl->pending_bytes >= bytes;
}

/* Put the pending blocks behind one new fence (pool locked). */
static void fence_pending(dev_pool_t *pl, int idx)
{
    if (pl->pending == NULL)
        return;
    batch_t *f = batch_new();
    if (f == NULL)
        return;
    mp_fence_init(&f->fence);
    if (!mp_fence_record(&f->fence, pool_slots(pl, idx))) {
        pl->st.fence_errors++; /* no fence possible now: keep the blocks pending */
        batch_free(f);
        return;
    }
    pl->st.fences_recorded++;
    f->blocks = pl->pending;
    pl->pending = NULL;
    pl->pending_n = 0;
    pl->pending_bytes = 0;
    if (pl->fenced_tail)
        pl->fenced_tail->next = f;
    else
        pl->fenced = f;
    pl->fenced_tail = f;
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
        if (same_stream ? b->stream != s : mp_cuda.event_query(b->ev) == MP_CUDA_ERROR_NOT_READY)
            continue;
        *pp = b->next;
        mp_ctx_event_put(b->ev_slot, b->ev);
        b->ev = NULL;
        b->stream = NULL;
        return b;
    }
    return NULL;
}

/* How far a release of cached blocks goes: down to these many bytes and
 * blocks.  Packed blocks go only in a full release (all = true), where
 * every block of a free segment goes together.  What is to go back to the
 * driver is collected under the pool lock and freed after it (trim_finish):
 * the driver's frees wait for the device. */
typedef struct trim_goal {
    int64_t bytes, blocks;
    bool all;
    size_t freed;          /* bytes to give back to the driver */
    dblock_t *doomed;      /* whole blocks, chained by next */
    segment_t *doomed_segs; /* chained by carve_next */
} trim_goal_t;

/* A free segment leaves the pool (pool locked). */
static size_t seg_release(dev_pool_t *pl, segment_t *sg, int cls, trim_goal_t *g)
{
    size_t size = sg->size;
    for (segment_t **pp = &pl->carving[cls]; *pp; pp = &(*pp)->carve_next)
        if (*pp == sg) {
            *pp = sg->carve_next;
            break;
        }
    pl->st.reserved -= (int64_t)size;
    pl->st.segments--;
    seg_unhash(sg);
    sg->carve_next = g->doomed_segs;
    g->doomed_segs = sg;
    return size;
}

/* Free what a release collected (pool unlocked). */
static void trim_finish(dev_pool_t *pl, trim_goal_t *g)
{
    while (g->doomed) {
        dblock_t *b = g->doomed;
        g->doomed = b->next;
        raw_free(pl, b->ptr, b->size);
        rec_free(b);
    }
    while (g->doomed_segs) {
        segment_t *sg = g->doomed_segs;
        g->doomed_segs = sg->carve_next;
        raw_free(pl, sg->base, sg->size);
        slab_put(&free_segs, sg);
    }
}

static bool goal_met(const dev_pool_t *pl, const trim_goal_t *g)
{
    return pl->st.cached <= g->bytes && pl->st.cached_blocks <= g->blocks;
}

/* Release the cached blocks of chain b that can go back to the driver
 * (pool locked) until the goal is met: whole-block segments always, packed
 * blocks when none of their segment's blocks is in use.  Returns the
 * blocks that stay. */
static dblock_t *release_chain(dev_pool_t *pl, dblock_t *b, trim_goal_t *g, bool pending)
{
    dblock_t *keep = NULL, **tail = &keep;
    while (b) {
        dblock_t *next = b->next;
        segment_t *sg = b->seg;
        if (goal_met(pl, g) || (sg && (sg->in_use > 0 || !g->all))) {
            *tail = b;
            tail = &b->next;
            b = next;
            continue;
        }
        pl->st.cached -= (int64_t)b->size;
        pl->st.cached_blocks--;
        pl->st.trims++;
        if (pending) {
            pl->pending_n--;
            pl->pending_bytes -= b->size;
        }
        if (b->ev) {
            mp_ctx_event_put(b->ev_slot, b->ev);
            b->ev = NULL;
        }
        table_remove(b);
        if (sg == NULL) {
            pl->st.reserved -= (int64_t)b->size;
            pl->st.segments--;
            g->freed += b->size;
            b->next = g->doomed;
            g->doomed = b;
        } else {
            if (++sg->dropped == sg->carved)
                g->freed += seg_release(pl, sg, b->cls, g);
            rec_free(b);
        }
        b = next;
    }
    *tail = NULL;
    return keep;
}

/* Collect cached blocks until the goal is met, oldest first: pending and
 * fenced ones, then those released on streams, then ready ones from the
 * largest class down (pool locked; trim_finish frees them).  cuMemFree
 * waits for the device, so no block is freed under a running kernel.
 * Returns bytes to be freed. */
static size_t release_to(dev_pool_t *pl, trim_goal_t *g)
{
    pl->pending = release_chain(pl, pl->pending, g, true);
    batch_t *prev = NULL;
    for (batch_t *f = pl->fenced, *next; f; f = next) {
        next = f->next;
        f->blocks = release_chain(pl, f->blocks, g, false);
        if (f->blocks) {
            prev = f;
            continue;
        }
        if (prev)
            prev->next = next;
        else
            pl->fenced = next;
        if (pl->fenced_tail == f)
            pl->fenced_tail = prev;
        mp_fence_release(&f->fence);
        batch_free(f);
    }
    for (int c = MP_DEV_CLASSES - 1; c >= 0; c--)
        pl->streamq[c] = release_chain(pl, pl->streamq[c], g, false);
    for (int c = MP_DEV_CLASSES - 1; c >= 0; c--)
        pl->ready[c] = release_chain(pl, pl->ready[c], g, false);
    /* Segments none of whose blocks is in use or cached (not carved yet). */
    if (g->all)
        for (int c = 0; c < MP_DEV_CLASSES; c++)
            for (segment_t *sg = pl->carving[c], *next; sg; sg = next) {
                next = sg->carve_next;
                if (sg->in_use == 0 && sg->dropped == sg->carved)
                    g->freed += seg_release(pl, sg, c, g);
            }
    return g->freed;
}

/* Collect every cached block that can be freed (pool locked). */
static size_t release_cached(dev_pool_t *pl, trim_goal_t *g)
{
    *g = (trim_goal_t){0, 0, true, 0, NULL, NULL};
    return release_to(pl, g);
}

/* The pool of the current context, claiming a free slot for a context seen
 * for the first time; -1 (pass through) without a driver or context. */
static _Atomic(mp_cu_context) pool_owner[MP_DEV_MAX]; /* the context each pool was set up for */

static int current_pool(void)
{
    pthread_once(&once, init);
    int dev = -1, slot = mp_ctx_current_slot(&dev);
    if (slot < 0)
        return -1;
    mp_cu_context ctx = mp_ctx_handle(slot);
    if (mp_unlikely(atomic_load_explicit(&pool_owner[slot], memory_order_acquire) != ctx)) {
        pthread_mutex_lock(&pools[slot].lock);
        pools[slot].ordinal = dev;
        pools[slot].st.device = dev;
        pthread_mutex_unlock(&pools[slot].lock);
        atomic_store_explicit(&pool_owner[slot], ctx, memory_order_release);
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
    dblock_t *b = rec_new();
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
        collect(pl);
        if ((b = pop_ready(pl, cls, csize)) != NULL)
            return b;
    }
    if (pl->pending && batch_ready(pl)) {
        fence_pending(pl, idx);
        collect(pl); /* an idle device completes it at once */
        if ((b = pop_ready(pl, cls, csize)) != NULL)
            return b;
    }
    return pl->streamq[cls] ? pop_stream(pl, cls, csize, s, false) : NULL;
}

/* Serve size bytes from pool pl; reg holds the streams the fences cover
 * (the current context's pool).  s/async: a stream-ordered request. */
static mp_cu_result pool_alloc(dev_pool_t *pl, int idx, mp_cu_ptr *out, size_t size, mp_cu_stream s,
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
    bool quiet = atomic_load_explicit(&mp_captures, memory_order_acquire) != 0;
    bool hit = false;
    uint64_t wait_ns = 0;
    dblock_t *b = NULL;
    mp_timeline_tick();
    pthread_mutex_lock(&pl->lock);
    pl->st.requests++;
    pl->st.req_bytes += size;
    if (cls >= 0) {
        pl->cls[cls].req_bytes += size;
        b = take_cached(pl, idx, cls, csize, s, async, quiet);
        if (b) {
            hit = true;
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
            max_update(&pl->st.in_use_peak, pl->st.in_use);
        }
    }
    pthread_mutex_unlock(&pl->lock);

    if (b == NULL) {
        size_t want = packed ? seg_size : csize;
        mp_cu_ptr p = 0;
        uint64_t t0 = now_ns();
        mp_cu_result r = raw_alloc(pl, &p, want);
        if (r == MP_CUDA_ERROR_OUT_OF_MEMORY) {
            trim_goal_t g;
            pthread_mutex_lock(&pl->lock);
            pl->st.oom_retries++;
            release_cached(pl, &g);
            pthread_mutex_unlock(&pl->lock);
            trim_finish(pl, &g);
            r = raw_alloc(pl, &p, want);
        }
        wait_ns = now_ns() - t0;
        pthread_mutex_lock(&pl->lock);
        if (r != MP_CUDA_SUCCESS) {
            if (r == MP_CUDA_ERROR_OUT_OF_MEMORY)
                pl->st.ooms++;
            pthread_mutex_unlock(&pl->lock);
            return r;
        }
        pl->st.segments++;
        max_update(&pl->st.segments_peak, pl->st.segments);
        pl->st.reserved += (int64_t)want;
        max_update(&pl->st.reserved_peak, pl->st.reserved);
        if (packed) {
            segment_t *sg = seg_new(p, want, stride, idx);
            if (sg != NULL) {
                sg->carve_next = pl->carving[cls];
                pl->carving[cls] = sg;
                b = carve(pl, cls, idx);
            }
        } else {
            b = rec_new();
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
            raw_free(pl, p, want);
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
        max_update(&pl->st.in_use_peak, pl->st.in_use);
        pthread_mutex_unlock(&pl->lock);
    }
    /* Zero before reuse: pinned blocks here, once their fence says no
     * copy still reads them (device blocks were zeroed in stream order at
     * release). */
    if (hit && pl->zero && pl->pinned)
        memset((void *)(uintptr_t)b->ptr, 0, b->size);
    b->req = size;
    b->exported = false;
    if (hit)
        table_mark_live(b);
    else
        table_add(b);
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
    int idx = current_pool();
    if (idx < 0 || capturing(&pools[idx]))
        return MP_CUDA_ERROR_NOT_INITIALIZED; /* the caller passes it through */
    return pool_alloc(&pools[idx], idx, out, size, NULL, false);
}

mp_cu_result mp_pinned_alloc(void **out, size_t size, unsigned flags)
{
    int reg = current_pool(); /* a context to allocate in */
    if (reg < 0 || flags >= MP_PINNED_POOLS)
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    int idx = MP_DEV_MAX + (int)flags;
    if (capturing(&pools[idx]))
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    mp_cu_ptr p = 0;
    mp_cu_result r = pool_alloc(&pools[idx], idx, &p, size ? size : 1, NULL, false);
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
    mp_cu_context ctx = pool < MP_DEV_MAX ? mp_ctx_handle(pool) : pools[pool].ctx, cur = NULL, popped;
    if (ctx == NULL || mp_cuda.ctx_synchronize == NULL)
        return;
    bool push = mp_cuda.ctx_get_current(&cur) != MP_CUDA_SUCCESS || cur != ctx;
    if (push && mp_cuda.ctx_push(ctx) != MP_CUDA_SUCCESS)
        return;
    uint64_t t0 = now_ns();
    mp_cuda.ctx_synchronize();
    atomic_fetch_add_explicit(&pools[pool].wait_ns, now_ns() - t0, memory_order_relaxed);
    if (push)
        mp_cuda.ctx_pop(&popped);
}

/* Take back block b (marked cached in the table) into its pool: cached
 * for reuse behind a fence, or freed when unpooled, exported or over a
 * limit. */
static void pool_put(dev_pool_t *pl, dblock_t *b, mp_cu_stream s, bool async)
{
    trim_goal_t g = {0, 0, false, 0, NULL, NULL};
    mp_timeline_tick();
    bool quiet = atomic_load_explicit(&mp_captures, memory_order_acquire) != 0;
    pthread_mutex_lock(&pl->lock);
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
        table_remove(b);
        raw_free(pl, b->ptr, b->size);
        rec_free(b);
        return;
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
    if (async && !quiet && !b->dirty && (slot = mp_ctx_current_slot(&dev)) >= 0
        && (ev = mp_ctx_event_get(slot)) != NULL && mp_cuda.event_record(ev, s) != MP_CUDA_SUCCESS) {
        mp_cuda.event_destroy(ev); /* a failed event is not reused */
        ev = NULL;
    }
    if (ev) { /* stream-ordered: at once for s, after ev for the others */
        b->stream = s;
        b->ev = ev;
        b->ev_slot = slot;
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
    pl->st.cached += (int64_t)b->size;
    pl->st.cached_blocks++;
    /* No driver call while a graph is being captured: trim later. */
    if (!quiet) {
        if (pl->api) {
            g.bytes = pl->cache_limit ? (int64_t)pl->cache_limit : INT64_MAX;
            g.blocks = pl->max_blocks ? (int64_t)pl->max_blocks : INT64_MAX;
            if (!goal_met(pl, &g))
                release_to(pl, &g);
        } else {
            uint64_t limit = pl->pinned ? mp_opt(MP_OPT_PINNED_CACHE_LIMIT) : device_cache_limit(pl->ordinal);
            if (limit && (uint64_t)pl->st.cached > limit)
                release_cached(pl, &g);
        }
    }
    pthread_mutex_unlock(&pl->lock);
    trim_finish(pl, &g); /* the free functions wait for the device */
}

/* Take back a block of the wanted kind: 1 done, 0 not ours, -1 refused (a
 * block the pool already holds: forwarding it would let the driver free
 * memory the pool still hands out).  One table lookup either way. */
static int pool_free(mp_cu_ptr p, bool pinned)
{
    dblock_t *b;
    int r = table_take(p, &b);
    if (r == 0)
        return 0; /* not ours: the caller forwards to the driver */
    if (r < 0) {
        mp_debug_finding(MP_DEBUG_DEVICE_DOUBLE_FREE, "the free fails with an invalid-value error",
                         "%s 0x%llx freed twice (the pool already holds it); refused",
                         pinned ? "pinned block" : "device block", (unsigned long long)p);
        return -1;
    }
    dev_pool_t *pl = &pools[b->pool];
    if (pl->pinned != pinned) { /* cudaFreeHost of device memory, or the reverse */
        table_untake(b);
        return 0; /* the real function reports the error */
    }
    if (mp_unlikely(mp_opt(MP_OPT_DEVICE_FREE_SYNC)) && !pinned)
        sync_context_of(b->pool);
    pool_put(pl, b, NULL, false);
    return 1;
}

int mp_device_free(mp_cu_ptr p) { return p == 0 ? 1 : pool_free(p, false); }

int mp_pinned_free(void *p) { return p == NULL ? 1 : pool_free((mp_cu_ptr)(uintptr_t)p, true); }

/* ---- pools of the explicit API (pool_api.c) ----------------------------- */

static void copy_stats(dev_pool_t *pl, mp_device_stats_t *out);

int mp_dpool_current(void) { return current_pool(); }

int mp_dpool_open(const mp_dpool_cfg_t *cfg)
{
    pthread_once(&once, init);
    pthread_mutex_lock(&claim_lock);
    int idx = -1;
    for (int i = MP_API_BASE; i < MP_NPOOLS && idx < 0; i++)
        if (!pools[i].api)
            idx = i;
    if (idx >= 0) {
        dev_pool_t *pl = &pools[idx];
        pthread_mutex_lock(&pl->lock);
        pl->api = true;
        pl->pinned = cfg->pinned;
        pl->flags = cfg->host_flags;
        pl->ordinal = cfg->ordinal;
        pl->st.device = cfg->ordinal;
        pl->ctx = cfg->ctx;
        pl->exact = cfg->scheme == MP_DPOOL_EXACT;
        pl->scheme = pl->exact ? -1 : cfg->scheme;
        pl->zero = cfg->zero;
        pl->numa = cfg->numa;
        pl->max_block = cfg->max_block;
        pl->cache_limit = cfg->cache_limit;
        pl->max_blocks = cfg->max_blocks;
        pthread_mutex_unlock(&pl->lock);
    }
    pthread_mutex_unlock(&claim_lock);
    return idx;
}

int mp_dpool_close(int idx)
{
    if (idx < MP_API_BASE || idx >= MP_NPOOLS)
        return -1;
    dev_pool_t *pl = &pools[idx];
    pthread_mutex_lock(&claim_lock);
    pthread_mutex_lock(&pl->lock);
    if (pl->st.in_use != 0) {
        pthread_mutex_unlock(&pl->lock);
        pthread_mutex_unlock(&claim_lock);
        return -1;
    }
    trim_goal_t g;
    release_cached(pl, &g);
    pthread_mutex_unlock(&pl->lock);
    trim_finish(pl, &g);
    pthread_mutex_lock(&pl->lock);
    pthread_mutex_t keep = pl->lock;
    memset(pl, 0, sizeof(*pl));
    pl->lock = keep;
    pl->ordinal = pl->st.device = -1;
    pl->scheme = pl->numa = -1;
    pthread_mutex_unlock(&pl->lock);
    pthread_mutex_unlock(&claim_lock);
    return 0;
}

mp_cu_result mp_dpool_alloc(int idx, mp_cu_ptr *out, size_t size, mp_cu_stream s, bool async)
{
    if (idx < 0 || idx >= MP_NPOOLS)
        return MP_CUDA_ERROR_INVALID_VALUE;
    return pool_alloc(&pools[idx], idx, out, size ? size : 1, s, async);
}

int mp_dpool_free(int idx, mp_cu_ptr p, mp_cu_stream s, bool async)
{
    dblock_t *b;
    if (table_take(p, &b) <= 0)
        return -1;
    if (b->pool != idx) {
        table_untake(b);
        return -1;
    }
    pool_put(&pools[idx], b, s, async);
    return 0;
}

int mp_dpool_owner(mp_cu_ptr p)
{
    pthread_mutex_lock(&live_lock);
    dblock_t *b = live_find(p);
    int idx = b ? b->pool : -1;
    pthread_mutex_unlock(&live_lock);
    return idx;
}

size_t mp_dpool_trim(int idx, size_t target)
{
    if (idx < 0 || idx >= MP_NPOOLS || !mp_cuda.loaded)
        return 0;
    pthread_once(&once, init);
    dev_pool_t *pl = &pools[idx];
    trim_goal_t g = {(int64_t)(target > INT64_MAX ? INT64_MAX : target), INT64_MAX, target == 0, 0, NULL, NULL};
    pthread_mutex_lock(&pl->lock);
    size_t freed = atomic_load(&mp_captures) == 0 ? release_to(pl, &g) : 0;
    pthread_mutex_unlock(&pl->lock);
    trim_finish(pl, &g);
    return freed;
}

void mp_dpool_stats(int idx, mp_device_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    out->device = -1;
    if (idx >= 0 && idx < MP_NPOOLS)
        copy_stats(&pools[idx], out);
}

/* Free every cached block of the pools i in [from, to) that `want`
 * selects (pool locked while collecting, unlocked while freeing). */
static size_t release_pools(int from, int to, bool (*want)(const dev_pool_t *, int, int), int arg)
{
    size_t freed = 0;
    for (int i = from; i < to; i++) {
        dev_pool_t *pl = &pools[i];
        trim_goal_t g = {0, 0, true, 0, NULL, NULL};
        pthread_mutex_lock(&pl->lock);
        if (want(pl, i, arg))
            freed += release_cached(pl, &g);
        pthread_mutex_unlock(&pl->lock);
        trim_finish(pl, &g);
    }
    return freed;
}

static bool on_device(const dev_pool_t *pl, int i, int dev)
{
    return !pl->pinned && pl->ordinal == dev && (i >= MP_DEV_MAX ? pl->api : mp_ctx_handle(i) != NULL);
}

static bool is_pinned(const dev_pool_t *pl, int i, int unused)
{
    (void)i, (void)unused;
    return pl->pinned;
}

size_t mp_device_trim(int dev)
{
    if (!mp_cuda.loaded)
        return 0;
    pthread_once(&once, init);
    return release_pools(0, MP_DEV_MAX, on_device, dev);
}

size_t mp_device_release_for_oom(bool pinned)
{
    if (!mp_cuda.loaded || atomic_load(&mp_captures) != 0)
        return 0;
    pthread_once(&once, init);
    if (pinned)
        return release_pools(MP_DEV_MAX, MP_NPOOLS, is_pinned, 0);
    int dev = mp_device_of_context(NULL);
    return dev < 0 ? 0 : release_pools(0, MP_NPOOLS, on_device, dev);
}

size_t mp_device_cached_on(int dev)
{
    if (!atomic_load_explicit(&inited, memory_order_acquire))
        return 0;
    size_t bytes = 0;
    for (int i = 0; i < MP_NPOOLS; i++) {
        dev_pool_t *pl = &pools[i];
        pthread_mutex_lock(&pl->lock);
        if (on_device(pl, i, dev) && pl->st.reserved > pl->st.in_use)
            bytes += (size_t)(pl->st.reserved - pl->st.in_use);
        pthread_mutex_unlock(&pl->lock);
    }
    return bytes;
}

void mp_pool_class_stats(int pool, mp_dev_class_stats_t out[MP_DEV_CLASSES])
{
    memset(out, 0, sizeof(mp_dev_class_stats_t) * MP_DEV_CLASSES);
    if (pool < 0 || pool >= MP_DEV_MAX + MP_PINNED_POOLS || !atomic_load_explicit(&inited, memory_order_acquire))
        return;
    pthread_mutex_lock(&pools[pool].lock);
    memcpy(out, pools[pool].cls, sizeof(pools[pool].cls));
    pthread_mutex_unlock(&pools[pool].lock);
}

static void copy_stats(dev_pool_t *pl, mp_device_stats_t *out)
{
    if (!atomic_load_explicit(&inited, memory_order_acquire))
        return; /* no CUDA call yet: nothing to read (and nothing to set up) */
    pthread_mutex_lock(&pl->lock);
    *out = pl->st;
    out->wait_ns = atomic_load_explicit(&pl->wait_ns, memory_order_relaxed);
    pthread_mutex_unlock(&pl->lock);
}

void mp_pinned_stats(unsigned flags, mp_device_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (flags < MP_PINNED_POOLS)
        copy_stats(&pools[MP_DEV_MAX + flags], out);
}

void mp_device_stats(int slot, mp_device_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    out->device = -1;
    if (slot >= 0 && slot < MP_DEV_MAX)
        copy_stats(&pools[slot], out);
}

/* The memory behind a pool is gone: forget its lists (pool locked; the
 * records go with the block table's scan in drop). */
static void forget_pool(dev_pool_t *pl)
{
    pl->pending = NULL;
    pl->pending_n = 0;
    pl->pending_bytes = 0;
    while (pl->fenced) {
        batch_t *f = pl->fenced;
        pl->fenced = f->next;
        mp_fence_release(&f->fence); /* events of live contexts go back */
        batch_free(f);
    }
    pl->fenced_tail = NULL;
    for (int c = 0; c < MP_DEV_CLASSES; c++) {
        pl->ready[c] = pl->streamq[c] = NULL;
        pl->carving[c] = NULL;
    }
    pl->st.reserved = pl->st.cached = pl->st.in_use = pl->st.segments = pl->st.cached_blocks = 0;
    pl->st.drops++;
}

/* Forget the pools whose slot matches (ctx, or every context of device
 * dev when ctx is NULL), their segments and live blocks; pinned pools too,
 * since pinned blocks may belong to the gone context (a leak at worst,
 * never a block that no longer exists). */
static void drop(int dev, mp_cu_context ctx)
{
    pthread_once(&once, init);
    bool gone[MP_NPOOLS] = {false};
    pthread_mutex_lock(&claim_lock);
    for (int i = 0; i < MP_NPOOLS; i++) {
        dev_pool_t *pl = &pools[i];
        pthread_mutex_lock(&pl->lock);
        if (pl->api) { /* its context, or every pool of the device */
            gone[i] = ctx ? pl->ctx == ctx : pl->ordinal == dev;
        } else if (i >= MP_DEV_MAX) {
            gone[i] = i < MP_API_BASE;
        } else {
            mp_cu_context c = mp_ctx_handle(i);
            gone[i] = c != NULL && (ctx ? c == ctx : pl->ordinal == dev);
            if (gone[i]) { /* the slot may serve a new context */
                mp_ctx_forget(i);
                atomic_store(&pool_owner[i], NULL);
            }
        }
        pthread_mutex_unlock(&pl->lock);
    }
    for (int i = 0; i < MP_NPOOLS; i++)
        if (gone[i]) { /* after every gone context is forgotten: no dead event is kept */
            pthread_mutex_lock(&pools[i].lock);
            forget_pool(&pools[i]);
            pthread_mutex_unlock(&pools[i].lock);
        }
    pthread_mutex_unlock(&claim_lock);
    /* Live blocks are invalid now: a later free of one goes to the driver,
     * which reports it.  Segments of the gone pools are forgotten with them. */
    pthread_mutex_lock(&live_lock);
    for (unsigned h = 0; h < LIVE_BUCKETS; h++) {
        dblock_t **pp = &live[h];
        while (*pp) {
            if (gone[(*pp)->pool]) {
                dblock_t *b = *pp;
                *pp = b->hnext;
                rec_free(b);
            } else {
                pp = &(*pp)->hnext;
            }
        }
    }
    pthread_mutex_unlock(&live_lock);
    /* And the segment records of the gone pools. */
    pthread_mutex_lock(&seg_lock);
    for (unsigned h = 0; h < SEG_BUCKETS; h++) {
        segment_t **pp = &segs[h];
        while (*pp) {
            segment_t *sg = *pp;
            if (gone[sg->pool]) {
                *pp = sg->next;
                slab_put(&free_segs, sg);
            } else {
                pp = &sg->next;
            }
        }
    }
    pthread_mutex_unlock(&seg_lock);
}

void mp_device_drop(int dev)
{
    if (dev >= 0 && dev < MP_DEV_MAX)
        drop(dev, NULL);
}

void mp_device_drop_context(mp_cu_context ctx)
{
    if (ctx != NULL)
        drop(-1, ctx);
}

void mp_device_totals(int64_t out[4])
{
    memset(out, 0, 4 * sizeof(out[0]));
    if (!atomic_load_explicit(&inited, memory_order_acquire))
        return; /* no CUDA call yet */
    for (int i = 0; i < MP_NPOOLS; i++) {
        dev_pool_t *pl = &pools[i];
        pthread_mutex_lock(&pl->lock);
        out[pl->pinned ? 2 : 0] += pl->st.in_use;
        out[pl->pinned ? 3 : 1] += pl->st.reserved;
        pthread_mutex_unlock(&pl->lock);
    }
}

void mp_device_fork_child(void)
{
    /* Locks may be held by threads that do not exist here, and every block
     * belongs to the parent's contexts: start from nothing (the records
     * are leaked, not reused). */
    memset(pools, 0, sizeof(pools));
    memset(live, 0, sizeof(live));
    memset(segs, 0, sizeof(segs));
    for (int i = 0; i < MP_DEV_MAX; i++)
        atomic_store(&pool_owner[i], NULL);
    mp_ctx_fork_child();
    atomic_store(&mp_captures, 0);
    free_batches = free_recs = free_segs = NULL;
    pthread_mutex_init(&live_lock, NULL);
    pthread_mutex_init(&slab_lock, NULL);
    pthread_mutex_init(&seg_lock, NULL);
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

int mp_device_range(mp_cu_ptr p, mp_cu_ptr *base, size_t *size)
{
    pthread_mutex_lock(&live_lock);
    dblock_t *b = live_find(p);
    int found = b != NULL && b->pool < MP_DEV_MAX;
    if (found) {
        if (base)
            *base = b->ptr;
        if (size)
            *size = b->req;
    }
    pthread_mutex_unlock(&live_lock);
    return found;
}

int mp_device_refine_range(mp_cu_ptr p, mp_cu_ptr *base, size_t *size)
{
    mp_cu_ptr start = *base;
    pthread_mutex_lock(&seg_lock);
    segment_t *sg = segs[seg_hash(start)];
    while (sg && sg->base != start)
        sg = sg->next;
    if (sg) /* packed: the block p lies in */
        start = sg->base + (p - sg->base) / sg->block * sg->block;
    pthread_mutex_unlock(&seg_lock);
    pthread_mutex_lock(&live_lock);
    dblock_t *b = live_find(start);
    int r = 0;
    if (b && p < b->ptr + b->req) {
        *base = b->ptr;
        *size = b->req;
        r = 1;
    } else if (sg || b) {
        r = -1; /* inside a block of ours that the program does not hold */
    }
    pthread_mutex_unlock(&live_lock);
    return r;
}

int mp_device_ipc_export(mp_cu_ptr p)
{
    pthread_mutex_lock(&live_lock);
    dblock_t *b = live_find(p);
    int r = 0, pool = 0;
    if (b && !pools[b->pool].pinned) {
        r = b->seg ? -1 : 1;
        pool = b->pool;
        if (r == 1)
            b->exported = true;
    }
    pthread_mutex_unlock(&live_lock);
    if (r == 1) {
        dev_pool_t *pl = &pools[pool];
        pthread_mutex_lock(&pl->lock);
        pl->st.ipc_exports++;
        pthread_mutex_unlock(&pl->lock);
    }
    return r;
}
