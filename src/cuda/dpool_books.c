/*
 * The device pools' books: record slabs, the block table (every block the
 * shim made, handed out or cached, one hash lookup away), segments, and
 * the driver memory behind them (mapped, never malloc'ed: the shim must not
 * allocate through itself).  Queries on the books (address ranges, IPC
 * exports) live here too.
 */
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "cuda_driver.h"
#include "dpool.h"

#define LIVE_BUCKETS 65536
#define SEG_BUCKETS 4096

dev_pool_t mp_dpools[MP_NPOOLS];
pthread_mutex_t mp_dp_claim_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t live_lock = PTHREAD_MUTEX_INITIALIZER;
static dblock_t *live[LIVE_BUCKETS];
static pthread_mutex_t seg_lock = PTHREAD_MUTEX_INITIALIZER;
static segment_t *segs[SEG_BUCKETS];
static pthread_mutex_t slab_lock = PTHREAD_MUTEX_INITIALIZER;
pthread_once_t mp_dp_once = PTHREAD_ONCE_INIT;

_Atomic bool mp_dp_inited;

void mp_dp_init(void)
{
    for (int d = 0; d < MP_NPOOLS; d++) {
        pthread_mutex_init(&mp_dpools[d].lock, NULL);
        mp_dpools[d].pinned = d >= MP_DEV_MAX && d < MP_API_BASE;
        mp_dpools[d].flags = mp_dpools[d].pinned ? (unsigned)(d - MP_DEV_MAX) : 0;
        mp_dpools[d].ordinal = -1;
        mp_dpools[d].st.device = -1;
        mp_dpools[d].scheme = -1;
        mp_dpools[d].numa = -1;
    }
    atomic_store_explicit(&mp_dp_inited, true, memory_order_release);
}

/* Pinned memory on a NUMA node: pages bound to the node first, then
 * page-locked in place (cuMemHostAlloc has no placement). */
static mp_cu_result numa_pinned_alloc(dev_pool_t *pl, void **out, size_t size)
{
    size_t len = mp_page_round(size);
    void *h = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (h == MAP_FAILED)
        return MP_CUDA_ERROR_OUT_OF_MEMORY;
    mp_cu_result r = MP_CUDA_ERROR_OUT_OF_MEMORY;
    if (mp_numa_bind(h, len, pl->numa) == 0)
        r = mp_cuda.host_register(h, len, pl->flags & (MP_CU_MEMHOSTREGISTER_PORTABLE | MP_CU_MEMHOSTREGISTER_DEVICEMAP));
    if (r != MP_CUDA_SUCCESS) {
        munmap(h, len);
        return r;
    }
    *out = h;
    return MP_CUDA_SUCCESS;
}

mp_cu_result mp_dp_raw_alloc(dev_pool_t *pl, mp_cu_ptr *p, size_t size)
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
void mp_dp_raw_free(dev_pool_t *pl, mp_cu_ptr p, size_t size)
{
    uint64_t t0 = mp_now_ns();
    if (pl->pinned && pl->numa >= 0) {
        mp_cuda.host_unregister((void *)(uintptr_t)p);
        munmap((void *)(uintptr_t)p, mp_page_round(size));
    } else if (pl->pinned) {
        mp_cuda.host_free((void *)(uintptr_t)p);
    } else {
        mp_cuda.mem_free(p);
    }
    atomic_fetch_add_explicit(&pl->wait_ns, mp_now_ns() - t0, memory_order_relaxed);
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
void *mp_dp_rec_new(void) { return slab_get(&free_recs, sizeof(dblock_t)); }
void mp_dp_rec_free(void *p) { slab_put(&free_recs, p); }
batch_t *mp_dp_batch_new(void) { return slab_get(&free_batches, sizeof(batch_t)); }
void mp_dp_batch_free(batch_t *f) { slab_put(&free_batches, f); }

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
void mp_dp_table_add(dblock_t *b)
{
    unsigned h = live_hash(b->ptr);
    b->state = MP_BLK_LIVE;
    pthread_mutex_lock(&live_lock);
    b->hnext = live[h];
    live[h] = b;
    pthread_mutex_unlock(&live_lock);
}

/* A cached block is handed out again (its pool locked: a block leaves a
 * list and becomes live in one step, so a context drop never frees a
 * record another thread is handing out). */
void mp_dp_table_mark_live(dblock_t *b)
{
    pthread_mutex_lock(&live_lock);
    bool was_live = b->state != MP_BLK_CACHED;
    b->state = MP_BLK_LIVE;
    pthread_mutex_unlock(&live_lock);
    if (mp_unlikely(mp_debug_on) && was_live)
        mp_debug_finding(MP_DEBUG_DEVICE_DOUBLE_HANDOUT, "it is handed out anyway",
                         "%s block 0x%llx (%zu bytes) handed out while it is still live",
                         mp_dpools[b->pool].pinned ? "pinned" : "device", (unsigned long long)b->ptr, b->size);
}

void mp_dp_table_cache(dblock_t *b)
{
    pthread_mutex_lock(&live_lock);
    b->state = MP_BLK_CACHED;
    pthread_mutex_unlock(&live_lock);
}

/* The block goes back to the driver: out of the table. */
void mp_dp_table_remove(dblock_t *b)
{
    unsigned h = live_hash(b->ptr);
    pthread_mutex_lock(&live_lock);
    MP_CHAIN_UNLINK(dblock_t, &live[h], b, hnext);
    pthread_mutex_unlock(&live_lock);
    b->hnext = NULL;
}

/* A free of p: the handed-out block, now on its way to the pool (1); 0 and
 * NULL if the shim never made p; -1 and NULL if it is not live (cached, or
 * being freed by another thread: a second free). */
int mp_dp_table_take(mp_cu_ptr p, dblock_t **out)
{
    pthread_mutex_lock(&live_lock);
    dblock_t *b = table_find_locked(p);
    int r = b == NULL ? 0 : b->state != MP_BLK_LIVE ? -1 : 1;
    if (r > 0)
        b->state = MP_BLK_FREEING;
    pthread_mutex_unlock(&live_lock);
    *out = r > 0 ? b : NULL;
    return r;
}

/* Undo table_take: the block stays the program's. */
void mp_dp_table_untake(dblock_t *b)
{
    pthread_mutex_lock(&live_lock);
    b->state = MP_BLK_LIVE;
    pthread_mutex_unlock(&live_lock);
}

/* A handed-out block starting at p whose context still exists (live_lock
 * held), or NULL. */
static dblock_t *live_find(mp_cu_ptr p)
{
    dblock_t *b = table_find_locked(p);
    return b && b->state == MP_BLK_LIVE && !mp_dp_orphan(b) ? b : NULL;
}

static unsigned seg_hash(mp_cu_ptr base) { return (unsigned)((base >> 16) * 2654435761u) % SEG_BUCKETS; }

segment_t *mp_dp_seg_new(mp_cu_ptr base, size_t size, size_t block, int pool)
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

void mp_dp_seg_unhash(segment_t *sg)
{
    unsigned h = seg_hash(sg->base);
    pthread_mutex_lock(&seg_lock);
    MP_CHAIN_UNLINK(segment_t, &segs[h], sg, next);
    pthread_mutex_unlock(&seg_lock);
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
    if (b && !mp_dpools[b->pool].pinned) {
        r = b->seg ? -1 : 1;
        pool = b->pool;
        if (r == 1)
            b->exported = true;
    }
    pthread_mutex_unlock(&live_lock);
    if (r == 1) {
        dev_pool_t *pl = &mp_dpools[pool];
        pthread_mutex_lock(&pl->lock);
        pl->st.ipc_exports++;
        pthread_mutex_unlock(&pl->lock);
    }
    return r;
}

int mp_dp_live_pool(mp_cu_ptr p)
{
    pthread_mutex_lock(&live_lock);
    dblock_t *b = live_find(p);
    int idx = b ? b->pool : -1;
    pthread_mutex_unlock(&live_lock);
    return idx;
}

void mp_dp_seg_free(segment_t *sg) { slab_put(&free_segs, sg); }

void mp_dp_books_forget(const bool gone[MP_NPOOLS])
{
    /* Cached orphans are in no list now (their pools pruned them under
     * their locks): their records go.  Live and in-flight orphans stay in
     * the table until the program frees them (then forwarded to the
     * driver, which reports the stale pointer). */
    pthread_mutex_lock(&live_lock);
    for (unsigned h = 0; h < LIVE_BUCKETS; h++) {
        dblock_t **pp = &live[h];
        while (*pp) {
            if ((*pp)->state == MP_BLK_CACHED && mp_dp_orphan(*pp)) {
                dblock_t *b = *pp;
                *pp = b->hnext;
                mp_dp_rec_free(b);
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

void mp_dp_books_fork_child(void)
{
    /* Locks may be held by threads that do not exist here, and every block
     * belongs to the parent's contexts: start from nothing (the records
     * are leaked, not reused). */
    memset(mp_dpools, 0, sizeof(mp_dpools));
    memset(live, 0, sizeof(live));
    memset(segs, 0, sizeof(segs));
    free_batches = free_recs = free_segs = NULL;
    pthread_mutex_init(&live_lock, NULL);
    pthread_mutex_init(&slab_lock, NULL);
    pthread_mutex_init(&seg_lock, NULL);
    pthread_mutex_init(&mp_dp_claim_lock, NULL);
    mp_dp_init();
}
