/*
 * Host pools of the explicit API: one mutex per pool, a stack of cached
 * blocks per size class, and a table of every block the pool holds (live
 * or cached) keyed by address.  The table is what lets mempool_release
 * refuse a pointer released twice or to the wrong pool without touching
 * the memory behind it; limits and counters are exact under the lock.
 * Blocks come from jemalloc: the shim's bypass arena, or one arena per
 * NUMA node whose pages are bound to the node as blocks are created.
 * Books live in mmap'ed memory: the pool never calls malloc.
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

#include "jemalloc_private.h"
#include "pool.h"

enum { SLOT_EMPTY, SLOT_LIVE, SLOT_CACHED, SLOT_GONE };

typedef struct hentry {
    uintptr_t ptr;
    size_t size;   /* block size (class size, exact size or the request) */
    uint16_t cls;  /* MP_CLASS_NONE: unpooled */
    uint8_t state; /* SLOT_* */
} hentry_t;

typedef struct hstack {
    void **v;
    uint32_t n, cap;
} hstack_t;

struct mp_hpool {
    pthread_mutex_t lock;
    mp_hpool_cfg_t cfg;
    unsigned arena;
    mp_size_classes_t sc;       /* not used by exact pools */
    size_t exact[MP_CLASS_MAX]; /* exact pools: the size of each class */
    unsigned nexact;
    hstack_t stack[MP_CLASS_MAX];
    hentry_t *tab; /* open addressing, linear probing */
    size_t tcap, tused, tgone;
    mp_device_stats_t st;
    size_t map_size;
};

static void *map(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* ---- the block table ------------------------------------------------------- */

static size_t hash_ptr(uintptr_t p, size_t cap) { return (size_t)((p >> 4) * 0x9E3779B97F4A7C15ull) & (cap - 1); }

static hentry_t *tab_find(mp_hpool_t *hp, uintptr_t p)
{
    if (hp->tab == NULL)
        return NULL;
    for (size_t i = hash_ptr(p, hp->tcap);; i = (i + 1) & (hp->tcap - 1)) {
        hentry_t *e = &hp->tab[i];
        if (e->state == SLOT_EMPTY)
            return NULL;
        if (e->ptr == p && e->state != SLOT_GONE)
            return e;
    }
}

static bool tab_grow(mp_hpool_t *hp)
{
    size_t ncap = hp->tcap ? hp->tcap * 2 : 1024;
    if (hp->tused * 2 < hp->tcap) /* mostly tombstones: rehash in place size */
        ncap = hp->tcap;
    hentry_t *nt = map(ncap * sizeof(hentry_t));
    if (nt == NULL)
        return false;
    for (size_t i = 0; i < hp->tcap; i++) {
        hentry_t *e = &hp->tab[i];
        if (e->state != SLOT_LIVE && e->state != SLOT_CACHED)
            continue;
        size_t j = hash_ptr(e->ptr, ncap);
        while (nt[j].state != SLOT_EMPTY)
            j = (j + 1) & (ncap - 1);
        nt[j] = *e;
    }
    if (hp->tab)
        munmap(hp->tab, hp->tcap * sizeof(hentry_t));
    hp->tab = nt;
    hp->tcap = ncap;
    hp->tgone = 0;
    return true;
}

static hentry_t *tab_add(mp_hpool_t *hp, uintptr_t p)
{
    if ((hp->tused + hp->tgone + 1) * 10 > hp->tcap * 6 && !tab_grow(hp))
        return NULL;
    size_t i = hash_ptr(p, hp->tcap);
    while (hp->tab[i].state == SLOT_LIVE || hp->tab[i].state == SLOT_CACHED)
        i = (i + 1) & (hp->tcap - 1);
    if (hp->tab[i].state == SLOT_GONE)
        hp->tgone--;
    hp->tused++;
    hp->tab[i].ptr = p;
    return &hp->tab[i];
}

static void tab_remove(mp_hpool_t *hp, hentry_t *e)
{
    e->state = SLOT_GONE;
    hp->tused--;
    hp->tgone++;
}

/* ---- classes ----------------------------------------------------------------- */

/* Class and block size of a request; MP_CLASS_NONE when it is not cached. */
static unsigned class_of(mp_hpool_t *hp, size_t size, size_t *bsize)
{
    size_t a = hp->cfg.align;
    if (size > hp->cfg.max_block) {
        *bsize = (size + a - 1) & ~(a - 1);
        return MP_CLASS_NONE;
    }
    if (hp->cfg.scheme == MP_HPOOL_EXACT) {
        size_t want = (size + a - 1) & ~(a - 1);
        *bsize = want;
        for (unsigned c = 0; c < hp->nexact; c++)
            if (hp->exact[c] == want)
                return c;
        if (hp->nexact == MP_CLASS_MAX)
            return MP_CLASS_NONE; /* too many distinct sizes: the rest are not cached */
        hp->exact[hp->nexact] = want;
        return hp->nexact++;
    }
    unsigned c = mp_size_class_of(&hp->sc, size);
    if (c == MP_CLASS_NONE) {
        *bsize = size;
        return c;
    }
    *bsize = hp->sc.size[c] < a ? a : hp->sc.size[c];
    return c;
}

static bool stack_push(hstack_t *s, void *p)
{
    if (s->n == s->cap) {
        uint32_t ncap = s->cap ? s->cap * 2 : 512;
        void **nv = map(ncap * sizeof(void *));
        if (nv == NULL)
            return false;
        if (s->v) {
            memcpy(nv, s->v, s->n * sizeof(void *));
            munmap(s->v, s->cap * sizeof(void *));
        }
        s->v = nv;
        s->cap = ncap;
    }
    s->v[s->n++] = p;
    return true;
}

/* ---- jemalloc side ---------------------------------------------------------- */

static unsigned node_arena(int node)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static unsigned arenas[64];
    if (node < 0 || node >= 64)
        return mp_heap.bypass_arena;
    pthread_mutex_lock(&lock);
    if (arenas[node] == 0) {
        unsigned ind = 0;
        size_t sz = sizeof(ind);
        if (je_mallctl("arenas.create", &ind, &sz, NULL, 0) == 0)
            arenas[node] = ind;
    }
    unsigned a = arenas[node] ? arenas[node] : mp_heap.bypass_arena;
    pthread_mutex_unlock(&lock);
    return a;
}

static int je_flags(const mp_hpool_t *hp)
{
    int f = MALLOCX_ARENA(hp->arena) | MALLOCX_TCACHE_NONE;
    if (hp->cfg.align > 16)
        f |= MALLOCX_ALIGN(hp->cfg.align);
    return f;
}

static void *raw_alloc(mp_hpool_t *hp, size_t bsize)
{
    void *p = je_mallocx(bsize, je_flags(hp));
    if (p != NULL && hp->cfg.numa >= 0)
        mp_numa_bind(p, bsize, hp->cfg.numa); /* best effort: placement, not correctness */
    return p;
}

static void raw_free(mp_hpool_t *hp, void *p) { je_dallocx(p, je_flags(hp)); }

/* ---- the pool ----------------------------------------------------------------- */

int mp_hpool_create(const mp_hpool_cfg_t *cfg, mp_hpool_t **out)
{
    size_t len = (sizeof(mp_hpool_t) + 4095) & ~(size_t)4095;
    mp_hpool_t *hp = map(len);
    if (hp == NULL)
        return -ENOMEM;
    pthread_mutex_init(&hp->lock, NULL);
    hp->cfg = *cfg;
    hp->map_size = len;
    hp->st.device = -1;
    hp->arena = cfg->numa >= 0 ? node_arena(cfg->numa) : mp_heap.bypass_arena;
    if (cfg->scheme != MP_HPOOL_EXACT)
        mp_size_classes_init(&hp->sc, cfg->scheme, cfg->max_block);
    *out = hp;
    return 0;
}

static void max_update(int64_t *peak, int64_t v)
{
    if (v > *peak)
        *peak = v;
}

/* Free cached blocks, largest classes first, until the goal is met (lock
 * held).  Returns bytes freed. */
static size_t release_to(mp_hpool_t *hp, int64_t bytes, int64_t blocks)
{
    size_t freed = 0;
    unsigned n = hp->cfg.scheme == MP_HPOOL_EXACT ? hp->nexact : hp->sc.count;
    for (unsigned c = n; c-- > 0;) {
        hstack_t *s = &hp->stack[c];
        while (s->n && (hp->st.cached > bytes || hp->st.cached_blocks > blocks)) {
            void *p = s->v[--s->n];
            hentry_t *e = tab_find(hp, (uintptr_t)p);
            size_t bs = e ? e->size : 0;
            if (e)
                tab_remove(hp, e);
            raw_free(hp, p);
            hp->st.cached -= (int64_t)bs;
            hp->st.cached_blocks--;
            hp->st.reserved -= (int64_t)bs;
            hp->st.trims++;
            freed += bs;
        }
    }
    return freed;
}

int mp_hpool_destroy(mp_hpool_t *hp)
{
    pthread_mutex_lock(&hp->lock);
    if (hp->st.in_use != 0) {
        pthread_mutex_unlock(&hp->lock);
        return -EBUSY;
    }
    release_to(hp, 0, 0);
    for (unsigned c = 0; c < MP_CLASS_MAX; c++)
        if (hp->stack[c].v)
            munmap(hp->stack[c].v, hp->stack[c].cap * sizeof(void *));
    if (hp->tab)
        munmap(hp->tab, hp->tcap * sizeof(hentry_t));
    pthread_mutex_unlock(&hp->lock);
    pthread_mutex_destroy(&hp->lock);
    munmap(hp, hp->map_size);
    return 0;
}

void *mp_hpool_alloc(mp_hpool_t *hp, size_t size)
{
    if (size == 0)
        size = 1;
    pthread_mutex_lock(&hp->lock);
    size_t bsize = 0;
    unsigned cls = class_of(hp, size, &bsize);
    hp->st.requests++;
    hp->st.req_bytes += size;
    void *p = NULL;
    if (cls != MP_CLASS_NONE && hp->stack[cls].n) {
        p = hp->stack[cls].v[--hp->stack[cls].n];
        hentry_t *e = tab_find(hp, (uintptr_t)p);
        e->state = SLOT_LIVE;
        hp->st.hits++;
        hp->st.hit_bytes += bsize;
        hp->st.cached -= (int64_t)bsize;
        hp->st.cached_blocks--;
    } else {
        p = raw_alloc(hp, bsize);
        if (p == NULL && hp->st.cached) {
            hp->st.oom_retries++;
            release_to(hp, 0, 0);
            p = raw_alloc(hp, bsize);
        }
        hentry_t *e = p ? tab_add(hp, (uintptr_t)p) : NULL;
        if (e == NULL) {
            if (p)
                raw_free(hp, p);
            hp->st.ooms++;
            pthread_mutex_unlock(&hp->lock);
            return NULL;
        }
        e->size = bsize;
        e->cls = (uint16_t)cls;
        e->state = SLOT_LIVE;
        if (cls == MP_CLASS_NONE)
            hp->st.unpooled++;
        else
            hp->st.misses++;
        hp->st.reserved += (int64_t)bsize;
        max_update(&hp->st.reserved_peak, hp->st.reserved);
    }
    hp->st.in_use += (int64_t)bsize;
    max_update(&hp->st.in_use_peak, hp->st.in_use);
    pthread_mutex_unlock(&hp->lock);
    return p;
}

int mp_hpool_free(mp_hpool_t *hp, void *p, bool *twice)
{
    pthread_mutex_lock(&hp->lock);
    hentry_t *e = tab_find(hp, (uintptr_t)p);
    if (e == NULL || e->state != SLOT_LIVE) {
        *twice = e != NULL;
        pthread_mutex_unlock(&hp->lock);
        return -EINVAL;
    }
    size_t bs = e->size;
    hp->st.releases++;
    hp->st.in_use -= (int64_t)bs;
    bool keep = e->cls != MP_CLASS_NONE
                && (hp->cfg.cache_limit == 0 || (uint64_t)hp->st.cached + bs <= hp->cfg.cache_limit)
                && (hp->cfg.max_blocks == 0 || (uint64_t)hp->st.cached_blocks < hp->cfg.max_blocks);
    if (keep) {
        if (hp->cfg.zero)
            memset(p, 0, bs);
        keep = stack_push(&hp->stack[e->cls], p);
    }
    if (keep) {
        e->state = SLOT_CACHED;
        hp->st.cached += (int64_t)bs;
        hp->st.cached_blocks++;
    } else {
        if (e->cls != MP_CLASS_NONE)
            hp->st.trims++; /* over a limit: freed instead of cached */
        tab_remove(hp, e);
        hp->st.reserved -= (int64_t)bs;
        raw_free(hp, p);
    }
    pthread_mutex_unlock(&hp->lock);
    return 0;
}

size_t mp_hpool_trim(mp_hpool_t *hp, size_t target)
{
    pthread_mutex_lock(&hp->lock);
    size_t freed = release_to(hp, target > INT64_MAX ? INT64_MAX : (int64_t)target, INT64_MAX);
    pthread_mutex_unlock(&hp->lock);
    return freed;
}

int mp_hpool_holds(mp_hpool_t *hp, const void *p)
{
    pthread_mutex_lock(&hp->lock);
    int r = tab_find(hp, (uintptr_t)p) != NULL;
    pthread_mutex_unlock(&hp->lock);
    return r;
}

void mp_hpool_stats(mp_hpool_t *hp, mp_device_stats_t *out)
{
    pthread_mutex_lock(&hp->lock);
    *out = hp->st;
    pthread_mutex_unlock(&hp->lock);
}
