/*
 * Device memory pools on the CUDA driver API (first slice: the caching
 * core; interposition and stats output come next).
 *
 * Size classes: 512 B, then 4 per doubling (waste <= 25%; the quarter
 * spacing of the host pools).  Requests above MEMPOOL_DEVICE_MAX_BLOCK_SIZE
 * are served unpooled.  Each device has its own pool.
 *
 * Reuse never races the device: a freed block first joins the device's
 * pending list; the next allocation that needs a block records ONE event
 * on the legacy default stream for the whole pending batch (a shared
 * fence: recording later than the free is safe, it only waits for more
 * work) and only blocks whose fence has completed (cuEventQuery, never a
 * host sync on the way to a hit) are handed out again.  The legacy stream
 * orders after every blocking stream, so its event covers the legacy,
 * per-thread and blocking streams; non-blocking streams need their own
 * events (to come with the stream-creation hooks).
 *
 * Out of memory: free every cached block (cuMemFree waits for the work
 * still using them), retry once, and only then return
 * CUDA_ERROR_OUT_OF_MEMORY.
 */
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

#include "cuda_driver.h"
#include "device_pool.h"

#define LIVE_BUCKETS 65536

typedef struct dblock {
    mp_cu_ptr ptr;
    size_t size; /* class size, or the request when unpooled */
    size_t req;  /* bytes the program asked for (what address-range queries report) */
    int cls;     /* -1: unpooled */
    int dev;
    struct dblock *next;
} dblock_t;

#define MP_FENCE_MAX 64 /* events per fence: legacy stream + non-blocking streams */

typedef struct batch {
    dblock_t *blocks;
    struct batch *next;
    unsigned nevents;
    mp_cu_event events[MP_FENCE_MAX];
} batch_t;

typedef struct dev_pool {
    pthread_mutex_t lock;
    bool pinned;    /* page-locked host memory (cuMemHostAlloc) */
    unsigned flags; /* cuMemHostAlloc flags of a pinned pool */
    dblock_t *ready[MP_DEV_CLASSES];
    dblock_t *pending;
    batch_t *fenced;        /* newest first */
    mp_cu_event spare[256]; /* event pool */
    unsigned nspare;
    mp_cu_stream nonblocking[MP_FENCE_MAX - 1]; /* streams the legacy one does not order */
    unsigned nstreams;
    bool too_many_streams; /* then nothing is reused before cuMemFree syncs */
    mp_device_stats_t st;
    mp_dev_class_stats_t cls[MP_DEV_CLASSES];
} dev_pool_t;

/* Device pools 0..MP_DEV_MAX-1, then one pinned pool per flag combination
 * (portable, mapped, write-combined never mix). */
#define MP_PINNED_POOLS 8
static dev_pool_t pools[MP_DEV_MAX + MP_PINNED_POOLS];
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static dblock_t *live[LIVE_BUCKETS];
static pthread_mutex_t slab_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t once = PTHREAD_ONCE_INIT;



static void init(void)
{
    for (int d = 0; d < MP_DEV_MAX + MP_PINNED_POOLS; d++) {
        pthread_mutex_init(&pools[d].lock, NULL);
        pools[d].pinned = d >= MP_DEV_MAX;
        pools[d].flags = d >= MP_DEV_MAX ? (unsigned)(d - MP_DEV_MAX) : 0;
    }
}

static mp_cu_result raw_alloc(const dev_pool_t *pl, mp_cu_ptr *p, size_t size)
{
    if (!pl->pinned)
        return mp_cuda.mem_alloc(p, size);
    void *h = NULL;
    mp_cu_result r = mp_cuda.host_alloc(&h, size, pl->flags);
    *p = (mp_cu_ptr)(uintptr_t)h;
    return r;
}

/* cuMemFree and cuMemFreeHost wait for the work still using the block. */
static void raw_free(const dev_pool_t *pl, mp_cu_ptr p)
{
    if (pl->pinned)
        mp_cuda.host_free((void *)(uintptr_t)p);
    else
        mp_cuda.mem_free(p);
}

/* Fixed-size records (block and fence bookkeeping) from mmap'ed slabs:
 * the shim must not call malloc for its own books. */
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

static free_item_t *free_recs, *free_batches;
static void *rec_new(void) { return slab_get(&free_recs, sizeof(dblock_t)); }
static void rec_free(void *p) { slab_put(&free_recs, p); }
static batch_t *batch_new(void) { return slab_get(&free_batches, sizeof(batch_t)); }
static void batch_free(batch_t *f) { slab_put(&free_batches, f); }

int mp_device_class_of(size_t size, size_t *class_size)
{
    if (size <= 512) {
        *class_size = 512;
        return 0;
    }
    unsigned lg = 63u - (unsigned)__builtin_clzll((unsigned long long)(size - 1));
    size_t step = (size_t)1 << (lg - 2);
    size_t k = (size - 1 - ((size_t)1 << lg)) / step;
    *class_size = ((size_t)1 << lg) + (k + 1) * step;
    return 1 + (int)(lg - 9) * 4 + (int)k;
}

static unsigned live_hash(mp_cu_ptr p) { return (unsigned)((p >> 8) * 2654435761u) % LIVE_BUCKETS; }

static void live_add(dblock_t *b)
{
    unsigned h = live_hash(b->ptr);
    pthread_mutex_lock(&live_lock);
    b->next = live[h];
    live[h] = b;
    pthread_mutex_unlock(&live_lock);
}

static dblock_t *live_take(mp_cu_ptr p)
{
    unsigned h = live_hash(p);
    pthread_mutex_lock(&live_lock);
    dblock_t **pp = &live[h];
    while (*pp && (*pp)->ptr != p)
        pp = &(*pp)->next;
    dblock_t *b = *pp;
    if (b)
        *pp = b->next;
    pthread_mutex_unlock(&live_lock);
    if (b)
        b->next = NULL;
    return b;
}

static void max_update(int64_t *peak, int64_t v)
{
    if (v > *peak)
        *peak = v;
}

static void event_put(dev_pool_t *pl, mp_cu_event ev)
{
    if (pl->nspare < sizeof(pl->spare) / sizeof(pl->spare[0]))
        pl->spare[pl->nspare++] = ev;
    else
        mp_cuda.event_destroy(ev);
}

/* Blocks whose fence completed become ready (pool locked); never waits. */
static void collect(dev_pool_t *pl)
{
    batch_t **pp = &pl->fenced;
    while (*pp) {
        batch_t *f = *pp;
        bool done = true;
        /* An event that fails to query means its context is gone, and so
         * is the work that could race us: count it as done. */
        for (unsigned i = 0; i < f->nevents && done; i++)
            done = mp_cuda.event_query(f->events[i]) != MP_CUDA_ERROR_NOT_READY;
        if (!done) {
            pl->st.fences_pending++;
            pp = &f->next;
            continue;
        }
        while (f->blocks) {
            dblock_t *b = f->blocks;
            f->blocks = b->next;
            b->next = pl->ready[b->cls];
            pl->ready[b->cls] = b;
        }
        for (unsigned i = 0; i < f->nevents; i++)
            event_put(pl, f->events[i]);
        *pp = f->next;
        batch_free(f);
    }
}

/* Put the pending blocks behind one new fence (pool locked): an event on
 * the legacy stream (ordered after every blocking stream) and one on each
 * known non-blocking stream. */
static void fence_pending(dev_pool_t *pl, const dev_pool_t *reg)
{
    if (pl->pending == NULL || reg->too_many_streams)
        return;
    batch_t *f = batch_new();
    if (f == NULL)
        return;
    for (unsigned i = 0; i <= reg->nstreams; i++) {
        mp_cu_stream s = i == 0 ? NULL : reg->nonblocking[i - 1];
        mp_cu_event ev = NULL;
        if (pl->nspare)
            ev = pl->spare[--pl->nspare];
        else if (mp_cuda.event_create(&ev, MP_CU_EVENT_DISABLE_TIMING) != MP_CUDA_SUCCESS)
            ev = NULL;
        if (ev == NULL || mp_cuda.event_record(ev, s) != MP_CUDA_SUCCESS) {
            /* No fence possible now (e.g. during stream capture): keep the
             * blocks pending. */
            if (ev)
                event_put(pl, ev);
            for (unsigned k = 0; k < f->nevents; k++)
                event_put(pl, f->events[k]);
            batch_free(f);
            return;
        }
        f->events[f->nevents++] = ev;
    }
    pl->st.fences_recorded++;
    f->blocks = pl->pending;
    pl->pending = NULL;
    f->next = pl->fenced;
    pl->fenced = f;
}

static dblock_t *pop_ready(dev_pool_t *pl, int cls)
{
    dblock_t *b = pl->ready[cls];
    if (b)
        pl->ready[cls] = b->next;
    return b;
}

static size_t free_chain(dev_pool_t *pl, dblock_t *b)
{
    size_t freed = 0;
    while (b) {
        dblock_t *next = b->next;
        raw_free(pl, b->ptr);
        freed += b->size;
        pl->st.reserved -= (int64_t)b->size;
        pl->st.cached -= (int64_t)b->size;
        pl->st.trims++;
        rec_free(b);
        b = next;
    }
    return freed;
}

/* Free every cached block of a pool, pending and fenced ones too (pool
 * locked): cuMemFree waits for the device, so no block is freed under a
 * running kernel.  Returns bytes freed. */
static size_t release_cached(dev_pool_t *pl)
{
    size_t freed = free_chain(pl, pl->pending);
    pl->pending = NULL;
    while (pl->fenced) {
        batch_t *f = pl->fenced;
        pl->fenced = f->next;
        freed += free_chain(pl, f->blocks);
        for (unsigned i = 0; i < f->nevents; i++)
            event_put(pl, f->events[i]);
        batch_free(f);
    }
    for (int c = 0; c < MP_DEV_CLASSES; c++) {
        freed += free_chain(pl, pl->ready[c]);
        pl->ready[c] = NULL;
    }
    return freed;
}

/* The current context's device, or -1 (no driver, no context). */
static int current_device(void)
{
    pthread_once(&once, init);
    int dev = -1;
    if (!mp_cuda_load() || mp_cuda.ctx_get_device(&dev) != MP_CUDA_SUCCESS || dev < 0
        || dev >= MP_DEV_MAX)
        return -1;
    return dev;
}

/* Serve size bytes from pool pl; reg holds the streams the fences cover
 * (the current device's pool). */
static mp_cu_result pool_alloc(dev_pool_t *pl, const dev_pool_t *reg, int idx, size_t max_block,
                               mp_cu_ptr *out, size_t size)
{
    size_t csize = size;
    int cls = size > max_block ? -1 : mp_device_class_of(size, &csize);
    dblock_t *b = NULL;
    pthread_mutex_lock(&pl->lock);
    pl->st.requests++;
    pl->st.req_bytes += size;
    if (cls >= 0)
        pl->cls[cls].req_bytes += size;
    if (cls >= 0) {
        b = pop_ready(pl, cls);
        if (b == NULL && (pl->fenced || pl->pending)) {
            collect(pl);
            b = pop_ready(pl, cls);
            if (b == NULL && pl->pending) {
                fence_pending(pl, reg);
                collect(pl); /* an idle device completes it at once */
                b = pop_ready(pl, cls);
            }
        }
        if (b) {
            pl->cls[cls].hits++;
            pl->st.hits++;
            pl->st.cached -= (int64_t)b->size;
            pl->st.in_use += (int64_t)b->size;
            max_update(&pl->st.in_use_peak, pl->st.in_use);
        }
    }
    pthread_mutex_unlock(&pl->lock);

    if (b == NULL) {
        mp_cu_ptr p = 0;
        mp_cu_result r = raw_alloc(pl, &p, csize);
        if (r == MP_CUDA_ERROR_OUT_OF_MEMORY) {
            pthread_mutex_lock(&pl->lock);
            pl->st.oom_retries++;
            release_cached(pl);
            pthread_mutex_unlock(&pl->lock);
            r = raw_alloc(pl, &p, csize);
        }
        pthread_mutex_lock(&pl->lock);
        if (r != MP_CUDA_SUCCESS) {
            if (r == MP_CUDA_ERROR_OUT_OF_MEMORY)
                pl->st.ooms++;
            pthread_mutex_unlock(&pl->lock);
            return r;
        }
        b = rec_new();
        if (b == NULL) { /* no record: hand out unpooled */
            pthread_mutex_unlock(&pl->lock);
            raw_free(pl, p);
            return MP_CUDA_ERROR_OUT_OF_MEMORY;
        }
        b->ptr = p;
        b->size = csize;
        b->cls = cls;
        b->dev = idx;
        if (cls >= 0) {
            pl->st.misses++;
            pl->cls[cls].misses++;
        } else {
            pl->st.unpooled++;
        }
        pl->st.reserved += (int64_t)csize;
        max_update(&pl->st.reserved_peak, pl->st.reserved);
        pl->st.in_use += (int64_t)csize;
        max_update(&pl->st.in_use_peak, pl->st.in_use);
        pthread_mutex_unlock(&pl->lock);
    }
    b->req = size;
    live_add(b);
    *out = b->ptr;
    return MP_CUDA_SUCCESS;
}

mp_cu_result mp_device_alloc(mp_cu_ptr *out, size_t size)
{
    int dev = current_device();
    if (dev < 0)
        return MP_CUDA_ERROR_NOT_INITIALIZED; /* the caller passes it through */
    return pool_alloc(&pools[dev], &pools[dev], dev, mp_opt(MP_OPT_DEVICE_MAX_BLOCK_SIZE), out, size);
}

mp_cu_result mp_pinned_alloc(void **out, size_t size, unsigned flags)
{
    int dev = current_device(); /* fences go on this context's streams */
    if (dev < 0 || flags >= MP_PINNED_POOLS)
        return MP_CUDA_ERROR_NOT_INITIALIZED;
    int idx = MP_DEV_MAX + (int)flags;
    mp_cu_ptr p = 0;
    mp_cu_result r = pool_alloc(&pools[idx], &pools[dev], idx, mp_opt(MP_OPT_PINNED_MAX_BLOCK_SIZE), &p,
                                size ? size : 1);
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
    if (!(v & MP_OPT_PERCENT))
        return v;
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

/* Take back a block of the wanted kind; 0 if it is not ours. */
static int pool_free(mp_cu_ptr p, bool pinned)
{
    dblock_t *b = live_take(p);
    if (b == NULL)
        return 0; /* not ours: the caller forwards to the driver */
    dev_pool_t *pl = &pools[b->dev];
    if (pl->pinned != pinned) { /* cudaFreeHost of device memory, or the reverse */
        live_add(b);
        return 0; /* the real function reports the error */
    }
    pthread_mutex_lock(&pl->lock);
    pl->st.releases++;
    if (b->cls >= 0)
        pl->cls[b->cls].releases++;
    pl->st.in_use -= (int64_t)b->size;
    if (b->cls < 0) {
        pl->st.reserved -= (int64_t)b->size;
        pthread_mutex_unlock(&pl->lock);
        raw_free(pl, b->ptr); /* waits for the device, as the program expects */
        rec_free(b);
        return 1;
    }
    if (mp_opt(MP_OPT_DEVICE_FENCES) == 1) { /* none: the program vouches for it */
        b->next = pl->ready[b->cls];
        pl->ready[b->cls] = b;
    } else {
        b->next = pl->pending;
        pl->pending = b;
    }
    pl->st.cached += (int64_t)b->size;
    uint64_t limit = pinned ? mp_opt(MP_OPT_PINNED_CACHE_LIMIT) : device_cache_limit(b->dev);
    if (limit && (uint64_t)pl->st.cached > limit)
        release_cached(pl); /* the free functions wait for the device */
    pthread_mutex_unlock(&pl->lock);
    return 1;
}

int mp_device_free(mp_cu_ptr p) { return p == 0 ? 1 : pool_free(p, false); }

int mp_pinned_free(void *p) { return p == NULL ? 1 : pool_free((mp_cu_ptr)(uintptr_t)p, true); }

size_t mp_device_trim(int dev)
{
    if (dev < 0 || dev >= MP_DEV_MAX || !mp_cuda.loaded)
        return 0;
    dev_pool_t *pl = &pools[dev];
    pthread_mutex_lock(&pl->lock);
    size_t freed = release_cached(pl);
    pthread_mutex_unlock(&pl->lock);
    return freed;
}

void mp_pool_class_stats(int pool, mp_dev_class_stats_t out[MP_DEV_CLASSES])
{
    memset(out, 0, sizeof(mp_dev_class_stats_t) * MP_DEV_CLASSES);
    if (pool < 0 || pool >= MP_DEV_MAX + MP_PINNED_POOLS)
        return;
    pthread_once(&once, init);
    pthread_mutex_lock(&pools[pool].lock);
    memcpy(out, pools[pool].cls, sizeof(pools[pool].cls));
    pthread_mutex_unlock(&pools[pool].lock);
}

void mp_pinned_stats(unsigned flags, mp_device_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (flags >= MP_PINNED_POOLS)
        return;
    pthread_once(&once, init);
    dev_pool_t *pl = &pools[MP_DEV_MAX + flags];
    pthread_mutex_lock(&pl->lock);
    *out = pl->st;
    pthread_mutex_unlock(&pl->lock);
}

void mp_device_stats(int dev, mp_device_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    if (dev < 0 || dev >= MP_DEV_MAX)
        return;
    pthread_once(&once, init);
    pthread_mutex_lock(&pools[dev].lock);
    *out = pools[dev].st;
    pthread_mutex_unlock(&pools[dev].lock);
}

static void forget_chain(dblock_t *b)
{
    while (b) {
        dblock_t *next = b->next;
        rec_free(b);
        b = next;
    }
}

static void forget_pool(dev_pool_t *pl)
{
    pthread_mutex_lock(&pl->lock);
    forget_chain(pl->pending);
    pl->pending = NULL;
    while (pl->fenced) { /* its events died with the context */
        batch_t *f = pl->fenced;
        pl->fenced = f->next;
        forget_chain(f->blocks);
        batch_free(f);
    }
    for (int c = 0; c < MP_DEV_CLASSES; c++) {
        forget_chain(pl->ready[c]);
        pl->ready[c] = NULL;
    }
    pl->nspare = 0;
    pl->nstreams = 0;
    pl->too_many_streams = false;
    pl->st.reserved = pl->st.cached = pl->st.in_use = 0;
    pl->st.drops++;
    pthread_mutex_unlock(&pl->lock);
}

void mp_device_drop(int dev)
{
    if (dev < 0 || dev >= MP_DEV_MAX)
        return;
    pthread_once(&once, init);
    /* Pinned blocks may belong to the reset context too: forget them all
     * (a leak at worst, never a block that no longer exists). */
    forget_pool(&pools[dev]);
    for (int i = MP_DEV_MAX; i < MP_DEV_MAX + MP_PINNED_POOLS; i++)
        forget_pool(&pools[i]);
    /* Live blocks are invalid now: a later free of one goes to the driver,
     * which reports it. */
    pthread_mutex_lock(&live_lock);
    for (unsigned h = 0; h < LIVE_BUCKETS; h++) {
        dblock_t **pp = &live[h];
        while (*pp) {
            if ((*pp)->dev == dev || (*pp)->dev >= MP_DEV_MAX) {
                dblock_t *b = *pp;
                *pp = b->next;
                rec_free(b);
            } else {
                pp = &(*pp)->next;
            }
        }
    }
    pthread_mutex_unlock(&live_lock);
}

void mp_device_fork_child(void)
{
    /* Locks may be held by threads that do not exist here, and every block
     * belongs to the parent's contexts: start from nothing (the records
     * are leaked, not reused). */
    memset(pools, 0, sizeof(pools));
    memset(live, 0, sizeof(live));
    free_batches = NULL;
    pthread_mutex_init(&live_lock, NULL);
    pthread_mutex_init(&slab_lock, NULL);
    free_recs = NULL;
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

void mp_device_stream_created(mp_cu_stream s, unsigned flags)
{
    if (!(flags & 0x1u) || s == NULL) /* CU_STREAM_NON_BLOCKING */
        return;
    int dev = mp_device_of_context(NULL);
    if (dev < 0 || dev >= MP_DEV_MAX)
        return;
    pthread_once(&once, init);
    dev_pool_t *pl = &pools[dev];
    pthread_mutex_lock(&pl->lock);
    if (pl->nstreams < MP_FENCE_MAX - 1) {
        pl->nonblocking[pl->nstreams++] = s;
    } else if (!pl->too_many_streams) {
        pl->too_many_streams = true;
        mp_log(MP_LOG_WARN, "more than %d non-blocking streams on device %d: freed device "
               "blocks are no longer reused (only released)", MP_FENCE_MAX - 1, dev);
    }
    pthread_mutex_unlock(&pl->lock);
}

void mp_device_stream_destroyed(mp_cu_stream s)
{
    pthread_once(&once, init);
    for (int d = 0; d < MP_DEV_MAX; d++) {
        dev_pool_t *pl = &pools[d];
        pthread_mutex_lock(&pl->lock);
        for (unsigned i = 0; i < pl->nstreams; i++)
            if (pl->nonblocking[i] == s) {
                pl->nonblocking[i] = pl->nonblocking[--pl->nstreams];
                break;
            }
        pthread_mutex_unlock(&pl->lock);
    }
}

int mp_device_range(mp_cu_ptr p, mp_cu_ptr *base, size_t *size)
{
    unsigned h;
    pthread_mutex_lock(&live_lock);
    /* Only block starts are in the map; interior pointers are the driver's
     * business (it answers with the whole block, a superset). */
    h = live_hash(p);
    dblock_t *b = live[h];
    while (b && b->ptr != p)
        b = b->next;
    int found = b != NULL && b->dev < MP_DEV_MAX;
    if (found) {
        if (base)
            *base = b->ptr;
        if (size)
            *size = b->req;
    }
    pthread_mutex_unlock(&live_lock);
    return found;
}
