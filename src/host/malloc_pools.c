/*
 * Host pools: per-thread caches per size class (the hit path, in
 * host_inline.h), a shared pool per class behind a mutex, and jemalloc
 * arenas behind that.
 *
 *   free:  thread bin (bounded in blocks and bytes) -> half spills to the
 *          shared pool (bounded per class and in bytes) -> its oldest
 *          blocks go to jemalloc (trim)
 *   malloc: thread bin -> refill half a bin from the shared pool (hit)
 *          -> jemalloc mallocx from the class's arena (miss)
 *
 * Bins are arrays and shared pools rings of block addresses, so moving
 * blocks between them is a memcpy that never touches the (cold) blocks.
 *
 * Counters are per thread (relaxed, single writer) and folded into the
 * process-wide ones when a thread exits; bytes in use are published in
 * MP_PUBLISH_BYTES steps so that peaks are exact to within that per class
 * and thread.  Bytes reserved change only on slow paths and are exact.
 *
 * Why one file of ~1,000 lines: the thread caches, the shared pools, the
 * carve spares and the counters share the pools' private state (static
 * here) and one lock order (registry, then a class's shared pool, never
 * jemalloc under either); split, that state would become extern and the
 * order a convention across files.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

#include "callsite.h"
#include "host_inline.h"
#include "jemalloc_private.h"
#include "host_stats.h"
#include "timeline.h"

_Thread_local mp_tcache_t *mp_tls_tcache __attribute__((tls_model("initial-exec")));
mp_class_stats_t mp_class_stats[MP_CLASS_MAX];
mp_bypass_stats_t mp_bypass_stats;
_Atomic int64_t mp_total_inuse, mp_total_inuse_peak;
_Atomic int64_t mp_total_reserved, mp_total_reserved_peak;

/* A shared pool is a ring of block addresses: refills take the newest
 * (top), and what its bound cannot hold is trimmed from the oldest
 * (bottom), so the blocks a program keeps reusing stay, in the order
 * they were freed in (a spilled run is a run of neighbours when the
 * program freed neighbours), and the coldest go back to jemalloc. */
typedef struct shared_pool {
    pthread_mutex_t lock;
    void **slots;           /* shared_ring entries, mapped on first use */
    uint64_t head;          /* ring index of the oldest block (under lock) */
    uint64_t mask;          /* ring size - 1: the bound rounded up to a power of two */
    _Atomic uint64_t count; /* written under lock, peeked without */
    bool unmappable;        /* the slots could not be mapped: no pool for this class */
    uint64_t bound;         /* most blocks kept now (under lock): grows to shared_cap */
    _Atomic bool trimmed;   /* the bound trimmed blocks since it last grew */
    /* Trimmed carved blocks (under lock; a list through their first word):
     * carved memory is never returned, it serves the class's next misses. */
    void *_Atomic carve_spare;
} __attribute__((aligned(64))) shared_pool_t;

static _Atomic uint64_t shared_bytes;
MP_STARTUP_DATA static uint64_t shared_limit;
MP_STARTUP_DATA static bool pooling;  /* false: MEMPOOL_DISABLE or MEMPOOL_HOST=0 */
MP_STARTUP_DATA static bool counting; /* false: MEMPOOL_DISABLE, a bare pass-through to jemalloc */
MP_STARTUP_DATA static uint64_t carve_limit; /* MEMPOOL_HOST_CARVE_LIMIT */
MP_STARTUP_DATA static uint64_t shared_cap;  /* MEMPOOL_HOST_MAX_BLOCKS: most blocks in a class's shared pool */
MP_STARTUP_DATA static uint64_t shared_ring; /* slots mapped per pool: shared_cap rounded up to a power of two */
/* A shared pool keeps at most this many blocks until a miss follows one of
 * its trims; then its bound doubles, up to shared_cap.  A program that frees
 * its blocks once, at the end, keeps a small pool (and its slot array, 8
 * bytes a block: 50% on top of a 16 B block); a producer/consumer pair that
 * frees in bursts grows it to what a burst needs (docs/design.md).
 * scripts/gen-report-consts.py reads this line for mempool-report's advice. */
#define SHARED_FIRST_BOUND 16384

/* Thread caches of exited threads point here: no bin takes a block, so
 * every call of such a thread takes the slow path. */
static mp_tcache_t tcache_dead;
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static mp_tcache_t *registry;
MP_STARTUP_DATA static pthread_key_t tcache_key; /* created with the first cache (registry_lock) */
MP_STARTUP_DATA static bool tcache_key_made;
MP_STARTUP_DATA static _Atomic bool registry_used; /* mp_flag_raise: with the first cache */
/* Caches of exited threads, drained, kept for the next threads (under
 * registry_lock): a program that starts a thread per task would otherwise
 * pay an mmap, page faults and an munmap per thread (mimalloc-bench's
 * mleak: 50,000 short threads).  Linked through next. */
#define SPARE_TCACHES 8
static mp_tcache_t *spare_tcaches;
static unsigned spare_count;

static void total_inuse_add(int64_t delta)
{
    int64_t now = atomic_fetch_add_explicit(&mp_total_inuse, delta, memory_order_relaxed) + delta;
    mp_peak_update_atomic(&mp_total_inuse_peak, now);
}

static void total_reserved_add(int64_t delta)
{
    int64_t now = atomic_fetch_add_explicit(&mp_total_reserved, delta, memory_order_relaxed) + delta;
    mp_peak_update_atomic(&mp_total_reserved_peak, now);
}

void mp_host_publish(unsigned cls, int64_t delta)
{
    mp_class_stats_t *s = &mp_class_stats[cls];
    int64_t now = atomic_fetch_add_explicit(&s->inuse, delta, memory_order_relaxed) + delta;
    mp_peak_update_atomic(&s->inuse_peak, now);
    total_inuse_add(delta);
}

void *mp_host_publish_alloc(unsigned cls, int64_t d, void *p)
{
    mp_host_publish(cls, d);
    return p;
}

/* A slow path's change of bytes in use, counted in the thread's bin. */
static void count_inuse(mp_tclass_t *b, unsigned cls, int64_t bytes)
{
    int64_t d = b->inuse_delta + bytes;
    if (mp_publish_due(d)) {
        b->inuse_delta = 0;
        mp_host_publish(cls, d);
    } else {
        b->inuse_delta = d;
    }
}

static void reserved_add(unsigned cls, int64_t bytes)
{
    mp_class_stats_t *s = &mp_class_stats[cls];
    int64_t now = atomic_fetch_add_explicit(&s->reserved, bytes, memory_order_relaxed) + bytes;
    mp_peak_update_atomic(&s->reserved_peak, now);
    total_reserved_add(bytes);
}

static inline bool tcache_live(const mp_tcache_t *tc) { return tc != NULL && tc != &tcache_dead; }

/* Count a served request: in the thread's counters if it has a cache. */
static void count_alloc(mp_tcache_t *tc, unsigned cls, size_t req, bool hit)
{
    size_t cs = mp_sc.size[cls];
    if (tcache_live(tc)) {
        mp_tclass_t *c = &tc->cl[cls];
        if (hit) {
            c->hits++;
        } else {
            c->misses++;
        }
        c->req_bytes += req;
        count_inuse(c, cls, (int64_t)cs);
        return;
    }
    mp_class_stats_t *s = &mp_class_stats[cls];
    if (hit) {
        atomic_fetch_add_explicit(&s->hits, 1, memory_order_relaxed);
    } else {
        atomic_fetch_add_explicit(&s->misses, 1, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&s->req_bytes, req, memory_order_relaxed);
    mp_host_publish(cls, (int64_t)cs);
}

static void count_release(mp_tcache_t *tc, unsigned cls)
{
    size_t cs = mp_sc.size[cls];
    if (tcache_live(tc)) {
        tc->cl[cls].releases++;
        count_inuse(&tc->cl[cls], cls, -(int64_t)cs);
        return;
    }
    atomic_fetch_add_explicit(&mp_class_stats[cls].releases, 1, memory_order_relaxed);
    mp_host_publish(cls, -(int64_t)cs);
}

/* ---- jemalloc side --------------------------------------------------------- */

static shared_pool_t shared[MP_CLASS_MAX];

/* Return n blocks of class cls to jemalloc (a trim).  Carved blocks are not
 * jemalloc's: they wait on the class's spare list, still reserved. */
static void trim_blocks(unsigned cls, void *const *blocks, uint64_t n)
{
    size_t cs = mp_sc.size[cls];
    void *head = NULL, *tail = NULL; /* carved blocks, chained, spliced in once */
    uint64_t carved = 0;
    for (uint64_t i = 0; i < n; i++) {
        if (mp_unlikely(mp_heap_is_carved(blocks[i]))) {
            *(void **)blocks[i] = head;
            head = blocks[i];
            tail = tail ? tail : head;
            carved++;
            continue;
        }
        je_sdallocx(blocks[i], cs, 0);
    }
    if (head != NULL) {
        shared_pool_t *sp = &shared[cls];
        pthread_mutex_lock(&sp->lock);
        *(void **)tail = atomic_load_explicit(&sp->carve_spare, memory_order_relaxed);
        atomic_store_explicit(&sp->carve_spare, head, memory_order_relaxed);
        pthread_mutex_unlock(&sp->lock);
    }
    n -= carved;
    mp_class_stats_t *s = &mp_class_stats[cls];
    atomic_fetch_add_explicit(&s->trims, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->trim_bytes, n * cs, memory_order_relaxed);
    reserved_add(cls, -(int64_t)(n * cs));
}

static void bypass_inuse_add(int64_t bytes)
{
    int64_t now = atomic_fetch_add_explicit(&mp_bypass_stats.inuse, bytes, memory_order_relaxed) + bytes;
    mp_peak_update_atomic(&mp_bypass_stats.inuse_peak, now);
    total_inuse_add(bytes);
    total_reserved_add(bytes);
}

/* While pooling, bypass blocks skip jemalloc's thread cache: it would
 * otherwise hand a bypass block to a class arena request of the same size
 * (or the reverse), and a block's area is how we tell the two apart.
 * Bypass requests are large (> MEMPOOL_HOST_MAX_BLOCK_SIZE), so the extra
 * cost is small; without pooling nothing is classed and the cache is used. */
static inline int bypass_flags(unsigned arena)
{
    return MALLOCX_ARENA(arena) | (pooling ? MALLOCX_TCACHE_NONE : 0);
}

static inline bool in_heap(const void *p) { return (uintptr_t)p - mp_heap.base < mp_heap.size; }

static void *bypass_alloc(size_t size, size_t align, bool zero)
{
    if (size > PTRDIFF_MAX) { /* like glibc: no object may be that large */
        errno = ENOMEM;
        return NULL;
    }
    unsigned arena = mp_heap_bypass_arena(); /* 0: jemalloc could not start, or is starting here */
    int flags = bypass_flags(arena);
    if (align > 16)
        flags |= MALLOCX_ALIGN(align);
    if (zero)
        flags |= MALLOCX_ZERO;
    bool sampled = counting && mp_callsite_sample_host(size);
    uint64_t t0 = sampled ? mp_now_ns() : 0;
    void *p = arena == 0 || mp_je_fails() ? NULL : je_mallocx(size ? size : 1, flags);
    if (sampled && p != NULL)
        mp_callsite_record(MP_SITE_HOST, size, size, mp_now_ns() - t0);
    if (mp_unlikely(p != NULL && !in_heap(p))) {
        /* jemalloc serves a thread whose own teardown already ran from
         * arena 0, ignoring ours: such a block would not be recognised as
         * ours when freed, so it goes back and libc serves the request. */
        je_dallocx(p, MALLOCX_TCACHE_NONE);
        p = NULL;
    }
    if (mp_unlikely(p == NULL)) {
        /* Our range is full (or jemalloc failed): libc's heap still works. */
        p = mp_libc_alloc(size, align);
        if (p == NULL) {
            errno = ENOMEM;
            return NULL;
        }
        if (zero)
            memset(p, 0, size);
        atomic_fetch_add_explicit(&mp_bypass_stats.fallbacks, 1, memory_order_relaxed);
        return p;
    }
    if (!counting)
        return p;
    int64_t us = (int64_t)je_sallocx(p, 0);
    atomic_fetch_add_explicit(&mp_bypass_stats.count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&mp_bypass_stats.req_bytes, size, memory_order_relaxed);
    bypass_inuse_add(us);
    return p;
}

static void bypass_free(void *p)
{
    if (mp_unlikely(mp_debug_on) && !mp_debug_free(p, je_sallocx(p, 0)))
        return;
    if (!counting) {
        je_dallocx(p, bypass_flags(mp_heap.bypass_arena));
        return;
    }
    int64_t us = (int64_t)je_sallocx(p, 0);
    atomic_fetch_add_explicit(&mp_bypass_stats.releases, 1, memory_order_relaxed);
    bypass_inuse_add(-us);
    je_dallocx(p, bypass_flags(mp_heap.bypass_arena));
}

/* A trimmed carved block of class cls, if any. */
static void *carve_spare(unsigned cls)
{
    shared_pool_t *sp = &shared[cls];
    if (atomic_load_explicit(&sp->carve_spare, memory_order_relaxed) == NULL)
        return NULL; /* racy peek: a wrong answer only costs a new block */
    pthread_mutex_lock(&sp->lock);
    void *p = atomic_load_explicit(&sp->carve_spare, memory_order_relaxed);
    if (p != NULL)
        atomic_store_explicit(&sp->carve_spare, *(void **)p, memory_order_relaxed);
    pthread_mutex_unlock(&sp->lock);
    return p;
}

/* Blocks carved for a miss: enough for half the thread's bin, at most a
 * page's worth, so that blocks carved for different threads seldom share a
 * cache line (one block per miss interleaves them: measured 1.4-1.7x slower
 * on glibc-thread with 2 threads). */
static unsigned carve_run_length(const mp_tcache_t *tc, unsigned cls)
{
    size_t cs = mp_sc.size[cls];
    if (!tcache_live(tc) || cs >= 4096)
        return 1;
    unsigned n = tc->cl[cls].cap / 2 + 1, page = (unsigned)(4096 / cs);
    return n < page ? n : page;
}

/* A new block of class cls (a miss): carved while the class is small (a
 * run, the rest into the thread's bin), then from its jemalloc arena.
 * With zeroed, the block is known zero when *zeroed is set: carved memory
 * was never written, and jemalloc zeroes only what it reused (calloc then
 * touches no page the program has not). */
static void *class_miss(mp_tcache_t *tc, unsigned cls, bool *zeroed)
{
    size_t cs = mp_sc.size[cls];
    void *p = carve_spare(cls);
    if (p != NULL)
        return p; /* still counted as reserved */
    unsigned n = carve_run_length(tc, cls);
    if (atomic_load_explicit(&mp_heap.class_arena[cls], memory_order_relaxed) == 0
        && (p = mp_heap_carve_run(cls, cs, carve_limit, &n)) != NULL) {
        reserved_add(cls, (int64_t)(n * cs));
        if (n > 1) { /* the bin is empty: a miss comes after a failed refill */
            mp_tclass_t *b = &tc->cl[cls];
            for (unsigned i = 1; i < n; i++)
                b->slots[b->count++] = (char *)p + (size_t)(n - i) * cs;
        }
        if (zeroed)
            *zeroed = true;
        return p;
    }
    unsigned arena = mp_heap_class_arena(cls);
    int flags = MALLOCX_ARENA(arena);
    /* jemalloc offsets large blocks (>= 16 KiB) randomly within their first
     * page (cache_oblivious); asking for the class's alignment keeps them
     * page aligned, so aligned requests can be pooled too. */
    if (cs >= 16384)
        flags |= MALLOCX_ALIGN(mp_sc.align[cls]);
    if (zeroed)
        flags |= MALLOCX_ZERO;
    p = arena && !mp_je_fails() ? je_mallocx(cs, flags) : NULL;
    if (mp_unlikely(p == NULL || ((uintptr_t)p & (mp_sc.align[cls] - 1)) != 0
                    || (uintptr_t)p - mp_heap.base >= mp_heap.class_span)) {
        /* No arena (jemalloc could not start), slot exhausted, or a block
         * from elsewhere: serve it unpooled. */
        if (p)
            je_dallocx(p, MALLOCX_TCACHE_NONE);
        return NULL;
    }
    reserved_add(cls, (int64_t)cs);
    if (zeroed)
        *zeroed = true;
    return p;
}

/* ---- shared pool -------------------------------------------------------------- */

/* Copy n entries out of / into the ring from ring index pos (any value:
 * taken modulo the ring size), as at most two memcpys. */
static void ring_read(const shared_pool_t *sp, uint64_t pos, void **dst, uint64_t n)
{
    uint64_t i = pos & sp->mask, first = sp->mask + 1 - i;
    if (first > n)
        first = n;
    memcpy(dst, sp->slots + i, first * sizeof(void *));
    memcpy(dst + first, sp->slots, (n - first) * sizeof(void *));
}

static void ring_write(shared_pool_t *sp, uint64_t pos, void *const *src, uint64_t n)
{
    uint64_t i = pos & sp->mask, first = sp->mask + 1 - i;
    if (first > n)
        first = n;
    memcpy(sp->slots + i, src, first * sizeof(void *));
    memcpy(sp->slots, src + first, (n - first) * sizeof(void *));
}

static uint64_t pow2_ceil(uint64_t x)
{
    return x <= 1 ? 1 : (uint64_t)1 << (64 - __builtin_clzll(x - 1));
}

/* Take up to half a bin's capacity (what a full bin spills) from the
 * shared pool: one for the caller, the rest into its empty bin; NULL if
 * the pool is empty. */
static void *refill(mp_tcache_t *tc, unsigned cls)
{
    shared_pool_t *sp = &shared[cls];
    if (atomic_load_explicit(&sp->count, memory_order_relaxed) == 0)
        return NULL; /* racy peek: a wrong answer only costs a miss */
    mp_tclass_t *b = tcache_live(tc) ? &tc->cl[cls] : NULL;
    /* As many as a full bin spills: a refill then takes back one spilled
     * run whole, not the end of one and the start of the next. */
    uint64_t want = b && b->cap > 1 ? b->cap - b->cap / 2 : 1;
    size_t cs = mp_sc.size[cls];
    void *one = NULL;
    pthread_mutex_lock(&sp->lock);
    uint64_t count = sp->count;
    uint64_t n = count < want ? count : want;
    if (n > 0) {
        count -= n;
        one = sp->slots[(sp->head + count + n - 1) & sp->mask]; /* the most recently put: warmest */
        if (n > 1)
            ring_read(sp, sp->head + count, b->slots, n - 1);
        sp->count = count;
        atomic_fetch_sub_explicit(&shared_bytes, n * cs, memory_order_relaxed);
    }
    pthread_mutex_unlock(&sp->lock);
    if (n > 1) {
        b->count = (uint32_t)(n - 1);
    }
    return one;
}

/* A miss of class cls: if the pool's bound trimmed blocks since it last
 * grew, the program wants back what we gave jemalloc: double the bound. */
static void shared_grow_after_trim(unsigned cls)
{
    shared_pool_t *sp = &shared[cls];
    if (!atomic_load_explicit(&sp->trimmed, memory_order_relaxed))
        return;
    pthread_mutex_lock(&sp->lock);
    if (atomic_load_explicit(&sp->trimmed, memory_order_relaxed)) {
        sp->bound = sp->bound * 2 < shared_cap ? sp->bound * 2 : shared_cap;
        uint64_t ring = sp->mask + 1, grown = pow2_ceil(sp->bound);
        if (grown > ring) {
            /* The entries that wrapped to the start go after the old end,
             * where the larger ring expects them (grown >= 2 * ring). */
            uint64_t end = sp->head + sp->count;
            if (end > ring)
                memcpy(sp->slots + ring, sp->slots, (end - ring) * sizeof(void *));
            sp->mask = grown - 1;
        }
        atomic_store_explicit(&sp->trimmed, false, memory_order_relaxed);
    }
    pthread_mutex_unlock(&sp->lock);
}

/* Give n blocks to the shared pool.  Past its bound (or the byte limit of
 * all pools) the pool's oldest blocks go back to jemalloc to make room for
 * the new ones (a put never shrinks the pool), and what still does not fit
 * of the n after them.  Evictions go in steps of SHARED_EVICT_STEP, since
 * jemalloc is called without the lock held. */
#define SHARED_EVICT_STEP 256
static void shared_put(unsigned cls, void *const *blocks, uint64_t n)
{
    shared_pool_t *sp = &shared[cls];
    size_t cs = mp_sc.size[cls];
    while (n > 0) {
        void *evicted[SHARED_EVICT_STEP];
        uint64_t e = 0;
        pthread_mutex_lock(&sp->lock);
        if (sp->slots == NULL && !sp->unmappable && shared_cap > 0) {
            void *m = mmap(NULL, shared_ring * sizeof(void *), PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            if (m == MAP_FAILED)
                sp->unmappable = true; /* no pool for this class: blocks go straight back */
            else
                sp->slots = m;
            sp->bound = shared_cap < SHARED_FIRST_BOUND ? shared_cap : SHARED_FIRST_BOUND;
            sp->mask = pow2_ceil(sp->bound) - 1;
        }
        uint64_t count = sp->count, bound = sp->slots ? sp->bound : 0;
        uint64_t bytes = atomic_load_explicit(&shared_bytes, memory_order_relaxed);
        uint64_t byte_room = shared_limit > bytes ? (shared_limit - bytes) / cs : 0;
        uint64_t fits = bound < count + byte_room ? bound : count + byte_room; /* blocks it may hold */
        if (count + n > fits) {
            if (count + n > bound && bound < count + byte_room && sp->bound < shared_cap)
                atomic_store_explicit(&sp->trimmed, true, memory_order_relaxed); /* the bound, not the bytes */
            /* Over the byte limit already (other classes grew): the pool
             * keeps what it has and the new blocks go back. */
            e = fits >= count ? count + n - fits : 0;
            e = e < count ? e : count;
            e = e < SHARED_EVICT_STEP ? e : SHARED_EVICT_STEP;
            if (e) {
                ring_read(sp, sp->head, evicted, e);
                sp->head = (sp->head + e) & sp->mask;
                count -= e;
            }
        }
        uint64_t keep = fits > count ? fits - count : 0;
        keep = keep < n ? keep : n;
        if (keep) /* slots is NULL for a pool of capacity 0: no write to it */
            ring_write(sp, sp->head + count, blocks, keep);
        sp->count = count + keep;
        atomic_fetch_add_explicit(&shared_bytes, keep * cs, memory_order_relaxed);
        atomic_fetch_sub_explicit(&shared_bytes, e * cs, memory_order_relaxed);
        pthread_mutex_unlock(&sp->lock);
        blocks += keep;
        n -= keep;
        if (e)
            trim_blocks(cls, evicted, e);
        else if (n > 0) { /* nothing more to evict: the rest goes back */
            trim_blocks(cls, blocks, n);
            break;
        }
    }
}

/* Move the n oldest blocks of a bin (the bottom of its stack) out. */
static void spill(mp_tcache_t *tc, unsigned cls, uint32_t n)
{
    mp_tclass_t *b = &tc->cl[cls];
    if (n > b->count)
        n = b->count;
    if (n == 0)
        return;
    shared_put(cls, b->slots, n);
    b->count -= n;
    memmove(b->slots, b->slots + n, b->count * sizeof(void *));
}

/* ---- thread caches -------------------------------------------------------------- */

static size_t tcache_bytes(const mp_tcache_t *tc)
{
    size_t bytes = 0;
    for (unsigned c = 0; c < mp_sc.count; c++)
        bytes += tc->cl[c].count * tc->cl[c].size;
    return bytes;
}

/* A new cache: one mapping, the cache, then every bin's slots; NULL if
 * the mapping fails. */
static mp_tcache_t *tcache_map(void)
{
    uint64_t blocks = mp_opt(MP_OPT_HOST_TCACHE_BLOCKS), limit = mp_opt(MP_OPT_HOST_TCACHE_LIMIT);
    uint32_t caps[MP_CLASS_MAX];
    size_t nslots = 0;
    for (unsigned c = 0; c < mp_sc.count; c++) {
        uint64_t cap = limit / (4 * mp_sc.size[c]);
        if (cap == 0 && limit >= mp_sc.size[c])
            cap = 1;
        caps[c] = (uint32_t)(cap < blocks ? cap : blocks);
        if (mp_debug_on)
            caps[c] = 0; /* every call takes the slow path, where the checks are */
        nslots += caps[c];
    }
    size_t size = sizeof(mp_tcache_t) + nslots * sizeof(void *);
    mp_tcache_t *tc = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (tc == MAP_FAILED)
        return NULL;
    tc->map_size = size;
    void **slots = (void **)(tc + 1);
    for (unsigned c = 0; c < mp_sc.count; c++) {
        tc->cl[c].slots = slots;
        tc->cl[c].cap = caps[c];
        tc->cl[c].size = mp_sc.size[c];
        slots += caps[c];
    }
    tc->cached_limit = (size_t)limit;
    return tc;
}

static mp_tcache_t *tcache_create(void)
{
    /* While this runs, nested calls (pthread_setspecific may calloc) take
     * the direct path. */
    mp_tls_tcache = &tcache_dead;
    pthread_mutex_lock(&registry_lock);
    mp_tcache_t *tc = spare_tcaches; /* an exited thread's, if any */
    if (tc != NULL) {
        spare_tcaches = tc->next;
        spare_count--;
    }
    pthread_mutex_unlock(&registry_lock);
    if (tc == NULL && (tc = tcache_map()) == NULL)
        return &tcache_dead;
    pthread_mutex_lock(&registry_lock);
    if (!tcache_key_made) /* not at start: a process that never allocates pays nothing */
        tcache_key_made = pthread_key_create(&tcache_key, mp_host_thread_exit) == 0;
    tc->prev = NULL;
    tc->next = registry;
    if (registry)
        registry->prev = tc;
    registry = tc;
    mp_flag_raise(&registry_used);
    pthread_mutex_unlock(&registry_lock);
    if (tcache_key_made)
        pthread_setspecific(tcache_key, tc);
    mp_tls_tcache = tc;
    return tc;
}

/* Fold a cache's counters into the process-wide ones (registry locked). */
static void tcache_fold(mp_tcache_t *tc)
{
    for (unsigned c = 0; c < mp_sc.count; c++) {
        mp_tclass_t *t = &tc->cl[c];
        mp_class_stats_t *s = &mp_class_stats[c];
        atomic_fetch_add(&s->hits, t->hits);
        atomic_fetch_add(&s->misses, t->misses);
        atomic_fetch_add(&s->releases, t->releases);
        atomic_fetch_add(&s->req_bytes, t->req_bytes);
        int64_t d = t->inuse_delta;
        if (d)
            mp_host_publish(c, d);
        t->hits = t->misses = t->releases = t->req_bytes = 0;
        t->inuse_delta = 0;
    }
}

static void tcache_unlink(mp_tcache_t *tc)
{
    if (tc->prev)
        tc->prev->next = tc->next;
    else
        registry = tc->next;
    if (tc->next)
        tc->next->prev = tc->prev;
}

/* Empty every bin into the shared pool (or jemalloc). */
static void tcache_drain(mp_tcache_t *tc)
{
    for (unsigned c = 0; c < mp_sc.count; c++)
        spill(tc, c, tc->cl[c].count);
}

void mp_host_thread_exit(void *arg)
{
    mp_tcache_t *tc = arg;
    /* Frees from destructors that run after this one take the direct path. */
    mp_tls_tcache = &tcache_dead;
    if (!tcache_live(tc))
        return;
    tcache_drain(tc);
    pthread_mutex_lock(&registry_lock);
    tcache_fold(tc);
    tcache_unlink(tc);
    bool keep = spare_count < SPARE_TCACHES;
    if (keep) { /* empty and zeroed now: ready for the next thread */
        tc->next = spare_tcaches;
        spare_tcaches = tc;
        spare_count++;
    }
    pthread_mutex_unlock(&registry_lock);
    if (!keep)
        munmap(tc, tc->map_size);
}

void mp_host_init(void)
{
    pooling = !mp_opt(MP_OPT_DISABLE) && mp_opt(MP_OPT_HOST);
    if (mp_debug_on) /* realloc never stays in place: the trailer moves with the size */
        memset(mp_sc.realloc_max, 0, sizeof(mp_sc.realloc_max));
    counting = !mp_opt(MP_OPT_DISABLE);
    shared_limit = mp_opt(MP_OPT_HOST_CACHE_LIMIT);
    carve_limit = mp_opt(MP_OPT_HOST_CARVE_LIMIT);
    shared_cap = mp_opt(MP_OPT_HOST_MAX_BLOCKS);
    shared_ring = pow2_ceil(shared_cap);
    /* The shared pools' locks are zero-filled static storage, which is
     * PTHREAD_MUTEX_INITIALIZER in glibc: initialising 128 of them here
     * would touch five pages in every process at start. */
    static const pthread_mutex_t initial = PTHREAD_MUTEX_INITIALIZER, zero;
    if (memcmp(&initial, &zero, sizeof(zero)) != 0)
        for (unsigned c = 0; c < MP_CLASS_MAX; c++)
            pthread_mutex_init(&shared[c].lock, NULL);
}

/* ---- slow paths ------------------------------------------------------------------ */

/* Before initialisation completes, or when the shim could not start. */
static void *early_alloc(size_t size, size_t align, bool zero)
{
    int st = mp_init();
    if (st == MP_STATE_READY)
        return NULL; /* ready now: caller goes on */
    if (st == MP_STATE_LIBC) {
        void *p = mp_libc_alloc(size, align);
        if (p && zero)
            memset(p, 0, size);
        return p ? p : (errno = ENOMEM, NULL);
    }
    return mp_boot_alloc(size, align); /* re-entered from our own init */
}

/* Serve a request of class cls: bin, shared pool, then jemalloc.  *reused
 * says whether the block waited in our pools (debug mode checks its poison);
 * zeroed, when not NULL, is set if the block is known zero (class_miss). */
static void *class_alloc_z(unsigned cls, size_t req, size_t align, bool *reused, bool *zeroed)
{
    mp_tcache_t *tc = mp_tls_tcache;
    if (tc == NULL)
        tc = tcache_create();
    if (tcache_live(tc)) {
        mp_tclass_t *b = &tc->cl[cls];
        if (b->count != 0) {
            void *p = b->slots[--b->count];
            count_alloc(tc, cls, req, true);
            return p;
        }
    }
    void *p = refill(tc, cls);
    if (p != NULL) {
        count_alloc(tc, cls, req, true);
        *reused = true;
        return p;
    }
    shared_grow_after_trim(cls);
    bool sampled = mp_callsite_sample_host(mp_sc.size[cls]);
    uint64_t t0 = sampled ? mp_now_ns() : 0;
    p = class_miss(tc, cls, zeroed);
    if (p != NULL) {
        count_alloc(tc, cls, req, false);
        if (sampled)
            mp_callsite_record(MP_SITE_HOST, req, mp_sc.size[cls], mp_now_ns() - t0);
        return p;
    }
    if (zeroed)
        *zeroed = true;
    return bypass_alloc(mp_debug_on ? mp_debug_size(req) : req, align, zeroed != NULL);
}

static void *class_alloc(unsigned cls, size_t req, size_t align, bool *reused)
{
    return class_alloc_z(cls, req, align, reused, NULL);
}

/* Debug mode: the trailer of a block just handed out for req bytes (libc's
 * fallback memory stays unchecked). */
static void *debug_handout(void *p, size_t req, bool reused)
{
    unsigned cls;
    int kind = mp_ptr_kind(p, &cls);
    if (kind == MP_PTR_CLASS)
        mp_debug_alloc(p, mp_sc.size[cls], req, reused);
    else if (kind == MP_PTR_BYPASS)
        mp_debug_alloc(p, je_sallocx(p, 0), req, false);
    return p;
}

MP_NOINLINE void *mp_host_malloc_slow(size_t size)
{
    if (mp_unlikely(atomic_load_explicit(&mp_state, memory_order_acquire) != MP_STATE_READY)) {
        void *p = early_alloc(size, 16, false);
        if (mp_state != MP_STATE_READY || p != NULL)
            return p;
    }
    if (mp_timeline_host)
        mp_timeline_tick();
    if (mp_unlikely(mp_debug_on)) {
        size_t want = mp_debug_size(size);
        unsigned cls = mp_size_class_of(&mp_sc, want);
        bool reused = false;
        void *p = !pooling || cls == MP_CLASS_NONE ? bypass_alloc(want, 0, false)
                                                    : class_alloc(cls, size, 16, &reused);
        return debug_handout(p, size, reused);
    }
    unsigned cls = mp_size_class_of(&mp_sc, size);
    if (!pooling || cls == MP_CLASS_NONE)
        return bypass_alloc(size, 0, false);
    bool reused;
    return class_alloc(cls, size, 16, &reused);
}

void *mp_host_aligned(size_t align, size_t size)
{
    if (mp_unlikely(atomic_load_explicit(&mp_state, memory_order_acquire) != MP_STATE_READY)) {
        void *p = early_alloc(size, align, false);
        if (mp_state != MP_STATE_READY || p != NULL)
            return p;
    }
    size_t want = mp_debug_on ? mp_debug_size(size) : size;
    bool reused = false;
    void *p;
    /* The smallest class that fits and whose blocks are naturally aligned. */
    unsigned cls = mp_size_class_of(&mp_sc, want > align ? want : align);
    while (cls < mp_sc.count && mp_sc.align[cls] < align)
        cls++;
    if (!pooling || cls >= mp_sc.count) {
        p = bypass_alloc(want, align, false);
    } else {
        p = class_alloc(cls, size, align, &reused);
        if (mp_unlikely(p != NULL && ((uintptr_t)p & (align - 1)) != 0)) {
            mp_free(p); /* cannot happen with jemalloc's slab layout; be safe */
            p = bypass_alloc(want, align, false);
        }
    }
    return mp_unlikely(mp_debug_on) && p ? debug_handout(p, size, reused) : p;
}

/* calloc of a class of a page or more: a block that is known zero (fresh
 * from the carve area or zeroed by jemalloc) is not written, so a program
 * that callocs a table and uses part of it faults in only that part, as
 * with glibc. */
void *mp_host_calloc_class(unsigned cls, size_t size)
{
    if (mp_unlikely(atomic_load_explicit(&mp_state, memory_order_acquire) != MP_STATE_READY || mp_debug_on
                    || !pooling)) {
        void *p = mp_malloc(size);
        if (p != NULL)
            memset(p, 0, size);
        return p;
    }
    if (mp_timeline_host)
        mp_timeline_tick();
    bool reused = false, zeroed = false;
    void *p = class_alloc_z(cls, size, 16, &reused, &zeroed);
    if (p != NULL && !zeroed)
        memset(p, 0, size);
    return p;
}

void *mp_host_calloc_large(size_t size)
{
    if (mp_unlikely(atomic_load_explicit(&mp_state, memory_order_acquire) != MP_STATE_READY)) {
        void *p = early_alloc(size, 16, true);
        if (mp_state != MP_STATE_READY || p != NULL)
            return p;
    }
    if (mp_unlikely(mp_debug_on)) {
        void *p = bypass_alloc(mp_debug_size(size), 0, true);
        return p ? debug_handout(p, size, false) : NULL;
    }
    return bypass_alloc(size, 0, true);
}

MP_NOINLINE void mp_host_free_slow(void *p, unsigned cls)
{
    if (mp_unlikely(mp_debug_on) && !mp_debug_free(p, mp_sc.size[cls]))
        return; /* a double or invalid free: reported, ignored */
    if (mp_timeline_host)
        mp_timeline_tick();
    mp_tcache_t *tc = mp_tls_tcache;
    if (tc == NULL && pooling)
        tc = tcache_create();
    count_release(tc, cls);
    if (tcache_live(tc) && tc->cl[cls].cap > 0) {
        /* The bin is full: keep its warmer half, and if the whole cache is
         * over its byte limit, halve every bin. */
        mp_tclass_t *b = &tc->cl[cls];
        spill(tc, cls, b->count - b->cap / 2);
        if (tcache_bytes(tc) > tc->cached_limit) {
            for (unsigned c = 0; c < mp_sc.count; c++)
                spill(tc, c, (tc->cl[c].count + 1) / 2);
        }
        if (b->count < b->cap) {
            b->slots[b->count++] = p;
            return;
        }
    }
    shared_put(cls, &p, 1);
}

void mp_host_free_other(void *p)
{
    uintptr_t off = (uintptr_t)p - mp_heap.base;
    if (off < mp_heap.size) {
        bypass_free(p);
        return;
    }
    if (p == NULL || mp_is_boot(p))
        return;
    if (mp_libc.free == NULL)
        mp_init(); /* a foreign pointer freed before our first malloc */
    mp_libc_free(p);
}

void *mp_host_realloc(void *p, size_t size)
{
    unsigned cls = MP_CLASS_NONE;
    int kind = mp_ptr_kind(p, &cls);
    if (mp_debug_on && (kind == MP_PTR_CLASS || kind == MP_PTR_BYPASS)) {
        /* Never in place: the trailer moves with the size. */
    } else if (kind == MP_PTR_CLASS) {
        if (size <= mp_sc.size[cls] && size >= mp_sc.size[cls] / 2)
            return p; /* fits, and shrinking by less than half keeps it */
    } else if (kind == MP_PTR_BYPASS) {
        if (mp_size_class_of(&mp_sc, size) == MP_CLASS_NONE || !pooling) {
            /* Large to large: let jemalloc resize in place where it can.
             * xallocx never moves a block, so the result stays in our range;
             * otherwise fall through to allocate-copy-free. */
            int64_t old = (int64_t)je_sallocx(p, 0);
            size_t now = je_xallocx(p, size, 0, bypass_flags(mp_heap.bypass_arena));
            if (now >= size) {
                if (counting)
                    bypass_inuse_add((int64_t)now - old);
                atomic_fetch_add(&mp_bypass_stats.req_bytes, size);
                return p;
            }
        }
    } else if (kind == MP_PTR_FOREIGN && !mp_is_boot(p)) {
        if (mp_libc.realloc == NULL)
            mp_init();
        return mp_libc.realloc(p, size);
    }
    size_t old = mp_host_usable_size(p);
    /* A block that grows by less than half is likely to grow again (a
     * buffer appended to): give it half again its old size, so a run of
     * small reallocs moves it O(log n) times rather than once per class. */
    size_t want = size;
    if (kind == MP_PTR_CLASS && !mp_debug_on && size > old && size - old < old / 2)
        want = old + old / 2;
    void *q = mp_malloc(want);
    if (q == NULL && want != size)
        q = mp_malloc(size);
    if (q == NULL)
        return NULL; /* the old block stays valid */
    memcpy(q, p, old < size ? old : size);
    mp_free(p);
    return q;
}

size_t mp_host_usable_size(const void *p)
{
    unsigned cls;
    switch (mp_ptr_kind(p, &cls)) {
    case MP_PTR_CLASS:
        return mp_debug_on ? mp_debug_usable(p, mp_sc.size[cls]) : mp_sc.size[cls];
    case MP_PTR_BYPASS:
        return mp_debug_on ? mp_debug_usable(p, je_sallocx(p, 0)) : je_sallocx(p, 0);
    case MP_PTR_NULL:
        return 0;
    default:
        if (mp_is_boot(p))
            return mp_boot_usable_size(p);
        if (mp_libc.usable_size == NULL)
            mp_init();
        return mp_libc.usable_size ? mp_libc.usable_size((void *)p) : 0;
    }
}

size_t mp_host_trim(void)
{
    size_t freed = 0;
    mp_tcache_t *tc = mp_tls_tcache;
    if (tcache_live(tc))
        tcache_drain(tc);
    for (unsigned c = 0; c < mp_sc.count; c++) {
        shared_pool_t *sp = &shared[c];
        void *batch[256];
        for (;;) { /* in batches: jemalloc is called without our lock held */
            pthread_mutex_lock(&sp->lock);
            uint64_t count = sp->count;
            uint64_t n = count < 256 ? count : 256;
            if (n)
                ring_read(sp, sp->head + count - n, batch, n);
            sp->count = count - n;
            atomic_fetch_sub(&shared_bytes, n * mp_sc.size[c]);
            pthread_mutex_unlock(&sp->lock);
            if (n == 0)
                break;
            trim_blocks(c, batch, n);
            freed += n * mp_sc.size[c];
        }
    }
    return freed;
}

void mp_host_shared_cached(unsigned cls, uint64_t *blocks, uint64_t *bytes)
{
    /* A peek, not under the lock: a report reads 128 classes at exit, and
     * the pools of classes never used stay untouched pages. */
    shared_pool_t *sp = &shared[cls];
    *blocks = atomic_load_explicit(&sp->count, memory_order_relaxed);
    *bytes = *blocks * mp_sc.size[cls];
}

void mp_host_for_each_tcache(void (*fn)(const mp_tcache_t *, void *), void *arg)
{
    if (!atomic_load(&registry_used))
        return;
    pthread_mutex_lock(&registry_lock);
    for (mp_tcache_t *tc = registry; tc; tc = tc->next)
        fn(tc, arg);
    pthread_mutex_unlock(&registry_lock);
}

/* ---- fork: no lock is held across fork(); the child adopts the caches of
 * threads that do not exist in it. --------------------------------------------- */

void mp_host_fork_prepare(void)
{
    pthread_mutex_lock(&registry_lock);
    for (unsigned c = 0; c < MP_CLASS_MAX; c++)
        pthread_mutex_lock(&shared[c].lock);
}

void mp_host_fork_parent(void)
{
    for (unsigned c = 0; c < MP_CLASS_MAX; c++)
        pthread_mutex_unlock(&shared[c].lock);
    pthread_mutex_unlock(&registry_lock);
}

void mp_host_fork_child_adopt(void)
{
    pthread_mutex_lock(&registry_lock);
    mp_tcache_t *mine = mp_tls_tcache, *tc = registry;
    while (tc) {
        mp_tcache_t *next = tc->next;
        if (tc != mine) {
            tcache_drain(tc);
            tcache_fold(tc);
            tcache_unlink(tc);
            munmap(tc, tc->map_size);
        }
        tc = next;
    }
    pthread_mutex_unlock(&registry_lock);
}

void mp_host_stats_reset(void)
{
    for (unsigned c = 0; c < MP_CLASS_MAX; c++) {
        mp_class_stats_t *g = &mp_class_stats[c];
        g->hits = g->misses = g->releases = g->req_bytes = 0;
        g->trims = g->trim_bytes = 0;
        g->inuse_peak = MP_LOAD(g->inuse);
        g->reserved_peak = MP_LOAD(g->reserved);
    }
    mp_tcache_t *tc = mp_tls_tcache;
    if (tcache_live(tc)) {
        for (unsigned c = 0; c < MP_CLASS_MAX; c++) {
            mp_tclass_t *t = &tc->cl[c];
            t->hits = t->misses = t->releases = t->req_bytes = 0;
        }
    }
    mp_bypass_stats.count = mp_bypass_stats.req_bytes = 0;
    mp_bypass_stats.releases = mp_bypass_stats.fallbacks = 0;
    mp_bypass_stats.inuse_peak = MP_LOAD(mp_bypass_stats.inuse);
    mp_total_inuse_peak = MP_LOAD(mp_total_inuse);
    mp_total_reserved_peak = MP_LOAD(mp_total_reserved);
}
