/*
 * Host pools of the explicit API: their books, and the hit paths of
 * acquire and release, inlined into mempool_acquire/mempool_release
 * (api_pools.c) as host_inline.h does for malloc.  Everything off the hit
 * path is in api_host_pool.c, which explains the design.
 */
#ifndef MEMPOOL_POOL_HOST_H
#define MEMPOOL_POOL_HOST_H

#include <pthread.h>

#include "api.h"

#define HPOOL_SLOTS 64           /* pools with thread caches at once (= the API's pool limit) */
#define TC_BIN_BLOCKS 15         /* blocks per class in a thread cache (a bin is 256 bytes) ... */
#define TC_BIN_BYTES (256 << 10) /* ... and bytes: larger blocks are never thread-cached */

/* Entry word: block address | state.  Blocks are 16-byte aligned. */
enum { W_EMPTY = 0, W_LIVE = 1, W_CACHED = 2, W_TCACHED = 3, W_GONE = 4 };
#define W_STATE ((uintptr_t)15)

typedef struct hentry {
    _Atomic uintptr_t w;
    size_t size;  /* block size (class size, exact size or the request) */
    uint32_t cls; /* MP_CLASS_NONE: unpooled */
} hentry_t;

typedef struct htab {
    struct htab *older;
    size_t cap, mask, used, gone, map_size; /* mask = cap - 1 */
    hentry_t e[];
} htab_t;

typedef struct hstack {
    hentry_t **v;
    uint32_t n, cap;
} hstack_t;

/* Counters: in a thread cache plain integers written by its thread only
 * (one add to memory each on the hit path; the stats read them with
 * MP_PEEK, as the malloc thread cache's are, host.h); the pool's `retired`
 * set under the pool lock (exited threads, callers without a cache).
 * Requests, hit bytes and what is cached are derived when stats are read
 * (every block held is either in use or cached; hits are counted per
 * class), which keeps the hit path to three counter updates on acquire and
 * two on release. */
typedef struct hcount {
    uint64_t req_bytes, releases, hits, hit_bytes; /* hits: retired only */
    int64_t in_use;
} hcount_t;

/* One class of a thread cache: 256 bytes, the hit path's one or two
 * cache lines. */
typedef struct tbin {
    _Alignas(256) uint32_t n;
    uint32_t cap;              /* 0: not thread-cached, or not sized yet */
    uint64_t hits;             /* blocks this bin handed out */
    struct {
        hentry_t *e;
        uintptr_t p; /* e's block: no load of the entry on a hit */
    } v[TC_BIN_BLOCKS];
} tbin_t;

typedef struct mp_htc {
    tbin_t bin[MP_CLASS_MAX + 1]; /* bin[MP_CLASS_NONE] stays empty, cap 0: no class test on the hit path */
    hcount_t c;
    int64_t high;   /* this thread's highest in_use so far */
    uint64_t stamp; /* the pool's stamp when this cache was last flushed */
    struct mp_htc *next, **pprev; /* the pool's list, under its lock */
    size_t map_size;
} mp_htc_t;

struct mp_hpool {
    /* read by the hit path */
    unsigned slot;
    bool classed;           /* size classes (exact-size pools have sc without classes) */
    bool limited;           /* cache limit or block limit */
    bool zero;              /* zero at release */
    bool plain;             /* neither: the inline release path */
    uint64_t gen;           /* unique per pool */
    _Atomic uint64_t stamp; /* unique per pool and trim: thread caches check it */
    _Atomic(htab_t *) tab;  /* newest table */
    _Atomic int64_t lim_bytes, lim_blocks; /* all cached blocks, kept when limited */
    size_t bsize[MP_CLASS_MAX];            /* block size of each class */
    mp_size_classes_t sc;                  /* not used by exact pools */
    mp_hpool_cfg_t cfg;
    size_t exact[MP_CLASS_MAX]; /* exact pools: the size of each class */
    _Atomic unsigned nexact;
    /* under the lock */
    pthread_mutex_t lock;
    unsigned arena;
    hstack_t stack[MP_CLASS_MAX];
    mp_htc_t *tcs;
    hcount_t retired;
    int64_t trim_goal;    /* caches flushed after a trim trim to this */
    mp_device_stats_t st; /* misses, unpooled, reserved, trims, ooms; cached = shared stacks */
    size_t map_size;
};

/* Per thread: its cache of each pool slot (the pool's while gen matches;
 * usable without a flush while stamp matches). */
typedef struct api_tls {
    struct {
        uint64_t stamp;
        mp_htc_t *tc;
    } slot[HPOOL_SLOTS];
    uint64_t gen[HPOOL_SLOTS];
} api_tls_t;

/* Never NULL: a thread without caches points at an empty one whose stamps
 * (0) match no pool, so the hit path has no NULL test. */
extern _Thread_local api_tls_t *mp_tls_api __attribute__((tls_model("initial-exec")));

/* api_host_pool.c: the paths off the hit path. */
void *mp_hpool_alloc_slow(mp_hpool_t *hp, size_t size);
void *mp_hpool_peak(mp_hpool_t *hp, mp_htc_t *tc, void *p);
int mp_hpool_free_slow(mp_hpool_t *hp, mp_htc_t *tc, hentry_t *e);
/* fork(): every pool's lock is taken before and released after, in the
 * parent and the child alike, so the child never inherits a lock held by a
 * thread it does not have (the child's copies of other threads' caches
 * stay attached, unused: those blocks are the child's leak, not a hazard). */
void mp_hpool_fork_prepare(void);
void mp_hpool_fork_release(void);

/* Limits: count a block into the cache if it stays within them. */
static inline bool mp_hpool_lim_take(mp_hpool_t *hp, size_t bs)
{
    int64_t b = atomic_fetch_add(&hp->lim_bytes, (int64_t)bs) + (int64_t)bs;
    int64_t n = atomic_fetch_add(&hp->lim_blocks, 1) + 1;
    if ((hp->cfg.cache_limit && (uint64_t)b > hp->cfg.cache_limit)
        || (hp->cfg.max_blocks && (uint64_t)n > hp->cfg.max_blocks)) {
        atomic_fetch_sub(&hp->lim_bytes, (int64_t)bs);
        atomic_fetch_sub(&hp->lim_blocks, 1);
        return false;
    }
    return true;
}

static inline void mp_hpool_lim_drop(mp_hpool_t *hp, size_t bs)
{
    atomic_fetch_sub(&hp->lim_bytes, (int64_t)bs);
    atomic_fetch_sub(&hp->lim_blocks, 1);
}

static inline size_t mp_hash_ptr(uintptr_t p, size_t mask)
{
    return (size_t)((p >> 4) * 0x9E3779B97F4A7C15ull) & mask;
}

/* Lock-free: tables are never moved or freed while the pool lives, and a
 * pool has one from its creation.  *wp: the entry's word as read.  p == 0
 * "finds" an empty or removed entry (its word has no address): the callers
 * refuse it as not live. */
static inline hentry_t *mp_hpool_find(mp_hpool_t *hp, uintptr_t p, uintptr_t *wp)
{
    htab_t *t = atomic_load_explicit(&hp->tab, memory_order_acquire);
    do {
        for (size_t i = mp_hash_ptr(p, t->mask);; i = (i + 1) & t->mask) {
            uintptr_t w = atomic_load_explicit(&t->e[i].w, memory_order_acquire);
            if ((w & ~W_STATE) == p) {
                *wp = w;
                return &t->e[i];
            }
            if (w == W_EMPTY)
                break;
        }
    } while ((t = t->older) != NULL);
    return NULL;
}

/* The calling thread's cache when it can be used without a flush. */
static inline mp_htc_t *mp_hpool_tc(mp_hpool_t *hp)
{
    api_tls_t *t = mp_tls_api;
    unsigned s = hp->slot;
    if (mp_likely(t->slot[s].stamp == atomic_load_explicit(&hp->stamp, memory_order_relaxed))) {
        mp_htc_t *tc = t->slot[s].tc;
        if (tc == NULL) /* a slot's stamp is set only once it has a cache: no test on the hit path */
            __builtin_unreachable();
        return tc;
    }
    return NULL;
}

/* A hit from the thread cache's non-empty bin of class cls. */
__attribute__((always_inline)) static inline void *mp_hpool_tc_pop_(mp_hpool_t *hp, mp_htc_t *tc, unsigned cls,
                                                                   size_t size, bool plain)
{
    tbin_t *b = &tc->bin[cls];
    uint32_t n = --b->n;
    uintptr_t p = b->v[n].p;
    size_t bs = hp->bsize[cls];
    /* Only this thread moves a thread-cached entry: a store does. */
    atomic_store_explicit(&b->v[n].e->w, p | W_LIVE, memory_order_release);
    if (!plain && mp_unlikely(hp->limited))
        mp_hpool_lim_drop(hp, bs);
    b->hits++;
    tc->c.req_bytes += size;
    int64_t use = tc->c.in_use += (int64_t)bs;
    if (mp_unlikely(use > tc->high))
        return mp_hpool_peak(hp, tc, (void *)p);
    return (void *)p;
}

#define mp_hpool_tc_pop(hp, tc, cls, size) mp_hpool_tc_pop_(hp, tc, cls, size, false)

/* Acquire: a block of the size's class from the thread cache, else the
 * slow path (shared stack, jemalloc; exact-size pools).  plain: the caller
 * knows hp->plain (a constant, so the limit code is compiled out). */
__attribute__((always_inline)) static inline void *mp_hpool_acquire_(mp_hpool_t *hp, size_t size, bool plain)
{
    mp_htc_t *tc = mp_hpool_tc(hp);
    if (mp_likely(tc != NULL)) {
        unsigned cls = mp_size_class_of(&hp->sc, size);
        if (mp_likely(tc->bin[cls].n != 0)) /* bin[MP_CLASS_NONE] is always empty */
            return mp_hpool_tc_pop_(hp, tc, cls, size, plain);
    }
    return mp_hpool_alloc_slow(hp, size);
}
#define mp_hpool_acquire(hp, size) mp_hpool_acquire_(hp, size, false)

/* Moves the block's entry (word w as the lookup read it) from live to
 * thread-cached: false if it was not live (released before, from any
 * thread).  A check and a store, no read-modify-write, which is what keeps
 * the release hit near the preload's: two threads releasing the same block
 * at the same instant can both pass it (and both cache the block).  Under
 * MEMPOOL_DEBUG a compare-and-swap closes that race too, so that exactly
 * one of them wins; fast: the caller knows debug mode is off. */
static inline bool mp_hpool_take(hentry_t *e, uintptr_t p, uintptr_t w, bool fast)
{
    uintptr_t want = p | W_LIVE;
    if (!fast && mp_unlikely(mp_debug_on))
        return atomic_compare_exchange_strong(&e->w, &want, p | W_TCACHED);
    if (mp_unlikely(w != want))
        return false;
    atomic_store_explicit(&e->w, p | W_TCACHED, memory_order_relaxed);
    return true;
}

/* Release: the block's entry moves from live to thread-cached (a second
 * release is refused), then into the thread cache.  0, or
 * mp_api_release_error's -EINVAL.  fast: a plain pool, not under
 * MEMPOOL_DEBUG (constants: the caller knows). */
__attribute__((always_inline)) static inline int mp_hpool_release_(mp_hpool_t *hp, void *p, mempool_t *api, bool fast)
{
    uintptr_t w = 0;
    hentry_t *e = mp_hpool_find(hp, (uintptr_t)p, &w);
    if (mp_unlikely(e == NULL || !mp_hpool_take(e, (uintptr_t)p, w, fast)))
        return p == NULL ? 0 : mp_api_release_error(api, p, e != NULL); /* NULL: nothing to do */
    /* The entry is ours now. */
    mp_htc_t *tc = mp_hpool_tc(hp);
    unsigned cls = e->cls;
    if (mp_likely(tc != NULL)) {
        tbin_t *b = &tc->bin[cls]; /* bin[MP_CLASS_NONE] has cap 0 */
        size_t bs = e->size;
        /* Zeroing pools release through the slow path (memset is a call). */
        if (mp_likely(b->n < b->cap)
            && (fast || mp_likely(hp->plain) || (!hp->zero && mp_hpool_lim_take(hp, bs)))) {
            b->v[b->n].e = e;
            b->v[b->n].p = (uintptr_t)p;
            b->n++;
            tc->c.releases++;
            tc->c.in_use -= (int64_t)bs;
            return 0;
        }
    }
    return mp_hpool_free_slow(hp, tc, e); /* no cache yet, full bin, over a limit, unpooled */
}
#define mp_hpool_release(hp, p, api) mp_hpool_release_(hp, p, api, false)

#endif
