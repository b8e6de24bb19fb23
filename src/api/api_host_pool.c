/*
 * Host pools of the explicit API.  (~700 lines in one file: the block
 * table, thread caches and shared stacks below share one pool's private
 * state and its lock-free table protocol.)
 *
 *   release: block table (lock-free lookup) -> the calling thread's cache
 *            of this pool (bounded per class) -> the shared stack of its
 *            class (pool mutex) -> jemalloc (over a limit, or trimmed)
 *   acquire: thread cache -> refill half a bin from the shared stack (hit)
 *            -> jemalloc mallocx (miss)
 *
 * Every block the pool holds has an entry in a block table whose word is
 * the block's address with its state in the low bits (live, cached in the
 * shared stack, cached in a thread's cache).  A release checks that the
 * word says live and moves it to thread-cached, so a pointer released
 * twice (from any thread), a block of another pool or a malloc pointer is
 * refused without touching the memory behind it, with no lock on the hit
 * path.  The check and the move are a load and a store (a compare-and-swap
 * under MEMPOOL_DEBUG, see mp_hpool_take).  The table never moves an
 * entry: when it fills, a larger table is put in front of it and lookups
 * walk the chain (the newest first), so readers need no lock and entries
 * can be referenced from caches and stacks.  Inserts and removals take the pool mutex.
 *
 * Counters of the hit path live in the thread caches (single writer) and
 * are summed when stats are read; the peak of bytes in use is refreshed
 * whenever a thread goes above its own previous high (exact for one
 * thread).  A clear or trim frees the shared stacks and the caller's cache
 * at once; other threads' caches are flushed at their next call (the
 * pool's stamp changes, so their next call takes the slow path).
 * Blocks come from jemalloc: the shim's bypass arena, or one arena per
 * NUMA node whose pages are bound to the node as blocks are created.
 * Books live in mmap'ed memory: the pool never calls malloc.
 */
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>
#include <sys/mman.h>

#include "jemalloc_private.h"
#include "api_host_pool.h"

static api_tls_t tls_none; /* threads without caches yet: stamp 0 never matches */
static api_tls_t tls_dead; /* exited threads: the same, and none is made */
_Thread_local api_tls_t *mp_tls_api __attribute__((tls_model("initial-exec"))) = &tls_none;
static pthread_mutex_t life_lock = PTHREAD_MUTEX_INITIALIZER; /* slots, caches' lifetime */
static mp_hpool_t *slot_pool[HPOOL_SLOTS];
static _Atomic uint64_t next_stamp = 1;
static pthread_key_t tls_key;
static pthread_once_t tls_once = PTHREAD_ONCE_INIT;

static void *map(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}


/* ---- the block table ------------------------------------------------------- */

/* A new, larger table in front (lock held); entries never move. */
static htab_t *tab_push(mp_hpool_t *hp)
{
    htab_t *t = atomic_load_explicit(&hp->tab, memory_order_relaxed);
    size_t cap = 1024;
    if (t)
        cap = t->used * 2 < t->cap ? t->cap : t->cap * 2; /* mostly tombstones: same size */
    size_t len = mp_page_round(sizeof(htab_t) + cap * sizeof(hentry_t));
    htab_t *n = map(len);
    if (n == NULL)
        return NULL;
    n->older = t;
    n->cap = cap;
    n->mask = cap - 1;
    n->map_size = len;
    atomic_store_explicit(&hp->tab, n, memory_order_release);
    return n;
}

static hentry_t *tab_add(mp_hpool_t *hp, uintptr_t p, size_t size, unsigned cls)
{
    htab_t *t = atomic_load_explicit(&hp->tab, memory_order_relaxed);
    if ((t == NULL || (t->used + t->gone + 1) * 10 > t->cap * 6) && (t = tab_push(hp)) == NULL)
        return NULL;
    size_t i = mp_hash_ptr(p, t->mask);
    uintptr_t w;
    while ((w = atomic_load_explicit(&t->e[i].w, memory_order_relaxed)) != W_EMPTY && w != W_GONE)
        i = (i + 1) & (t->cap - 1);
    if (w == W_GONE)
        t->gone--;
    t->used++;
    hentry_t *e = &t->e[i];
    e->size = size;
    e->cls = cls;
    atomic_store_explicit(&e->w, p | W_LIVE, memory_order_release);
    return e;
}

/* Lock held.  A tombstone followed by an empty slot ends no probe chain:
 * it (and the tombstones before it) become empty again. */
static void tab_remove(mp_hpool_t *hp, hentry_t *e)
{
    atomic_store_explicit(&e->w, W_GONE, memory_order_release);
    for (htab_t *t = atomic_load_explicit(&hp->tab, memory_order_relaxed); t; t = t->older) {
        if (e < t->e || e >= t->e + t->cap)
            continue;
        size_t i = (size_t)(e - t->e);
        t->used--;
        t->gone++;
        if (atomic_load_explicit(&t->e[(i + 1) & (t->cap - 1)].w, memory_order_relaxed) != W_EMPTY)
            return;
        while (atomic_load_explicit(&t->e[i].w, memory_order_relaxed) == W_GONE) {
            atomic_store_explicit(&t->e[i].w, W_EMPTY, memory_order_relaxed);
            t->gone--;
            i = (i - 1) & (t->cap - 1);
        }
        return;
    }
}

static uintptr_t entry_ptr(hentry_t *e) { return atomic_load_explicit(&e->w, memory_order_relaxed) & ~W_STATE; }

/* ---- classes ----------------------------------------------------------------- */

/* Class and block size of a request without changing the pool (the hit
 * path): MP_CLASS_NONE for unpooled requests and for exact sizes not seen
 * yet (the slow path adds them). */
static inline unsigned class_peek(mp_hpool_t *hp, size_t size, size_t *bsize)
{
    size_t a = hp->cfg.align;
    if (size > hp->cfg.max_block)
        return MP_CLASS_NONE;
    if (hp->cfg.scheme == MP_HPOOL_EXACT) {
        size_t want = (size + a - 1) & ~(a - 1);
        unsigned n = atomic_load_explicit(&hp->nexact, memory_order_acquire);
        for (unsigned c = 0; c < n; c++)
            if (hp->exact[c] == want) {
                *bsize = want;
                return c;
            }
        return MP_CLASS_NONE;
    }
    unsigned c = mp_size_class_of(&hp->sc, size);
    if (c != MP_CLASS_NONE)
        *bsize = hp->sc.size[c] < a ? a : hp->sc.size[c];
    return c;
}

/* The same, adding a new exact size (lock held). */
static unsigned class_of(mp_hpool_t *hp, size_t size, size_t *bsize)
{
    size_t a = hp->cfg.align;
    unsigned c = class_peek(hp, size, bsize);
    if (c != MP_CLASS_NONE)
        return c;
    *bsize = (size + a - 1) & ~(a - 1);
    if (size > hp->cfg.max_block || hp->cfg.scheme != MP_HPOOL_EXACT)
        return MP_CLASS_NONE;
    unsigned n = atomic_load_explicit(&hp->nexact, memory_order_relaxed);
    if (n == MP_CLASS_MAX)
        return MP_CLASS_NONE; /* too many distinct sizes: the rest are not cached */
    hp->exact[n] = *bsize;
    hp->bsize[n] = *bsize;
    atomic_store_explicit(&hp->nexact, n + 1, memory_order_release);
    return n;
}

static bool stack_push(hstack_t *s, hentry_t *e)
{
    if (s->n == s->cap) {
        uint32_t ncap = s->cap ? s->cap * 2 : 512;
        hentry_t **nv = map(ncap * sizeof(*nv));
        if (nv == NULL)
            return false;
        if (s->v) {
            memcpy(nv, s->v, s->n * sizeof(*nv));
            munmap(s->v, s->cap * sizeof(*nv));
        }
        s->v = nv;
        s->cap = ncap;
    }
    s->v[s->n++] = e;
    return true;
}

/* ---- jemalloc side ---------------------------------------------------------- */

static unsigned node_arena(int node)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static unsigned arenas[64];
    unsigned fallback = mp_heap_bypass_arena(); /* also starts jemalloc before arenas.create */
    if (node < 0 || node >= 64 || fallback == 0)
        return fallback;
    pthread_mutex_lock(&lock);
    if (arenas[node] == 0) {
        unsigned ind = 0;
        size_t sz = sizeof(ind);
        if (je_mallctl("arenas.create", &ind, &sz, NULL, 0) == 0)
            arenas[node] = ind;
    }
    unsigned a = arenas[node] ? arenas[node] : fallback;
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
    void *p = mp_je_fails() ? NULL : je_mallocx(bsize, je_flags(hp));
    if (p != NULL && hp->cfg.numa >= 0)
        mp_numa_bind(p, bsize, hp->cfg.numa); /* best effort: placement, not correctness */
    return p;
}

static void raw_free(mp_hpool_t *hp, void *p) { je_dallocx(p, je_flags(hp)); }

/* ---- the pool ----------------------------------------------------------------- */

/* Sum of a counter over the pool (lock held; live threads' as hints). */
#define SUM(hp, field) sum_of((hp), offsetof(hcount_t, field))
MP_PEEK_READER static int64_t sum_of(mp_hpool_t *hp, size_t off)
{
    _Static_assert(sizeof(uint64_t) == sizeof(int64_t), "counter size");
    int64_t s = *(int64_t *)((char *)&hp->retired + off);
    for (mp_htc_t *t = hp->tcs; t; t = t->next)
        s += MP_PEEK(*(int64_t *)((char *)&t->c + off));
    return s;
}

static void peak_refresh(mp_hpool_t *hp) { mp_peak_update(&hp->st.in_use_peak, SUM(hp, in_use)); }

/* Free cached blocks of the shared stacks, largest classes first, until
 * the goal is met (lock held).  Returns bytes freed. */
static size_t release_to(mp_hpool_t *hp, int64_t bytes, int64_t blocks)
{
    size_t freed = 0;
    unsigned n = hp->cfg.scheme == MP_HPOOL_EXACT ? atomic_load(&hp->nexact) : hp->sc.count;
    for (unsigned c = n; c-- > 0;) {
        hstack_t *s = &hp->stack[c];
        while (s->n && (hp->st.cached > bytes || hp->st.cached_blocks > blocks)) {
            hentry_t *e = s->v[--s->n];
            size_t bs = e->size;
            void *p = (void *)entry_ptr(e);
            tab_remove(hp, e);
            raw_free(hp, p);
            if (hp->limited)
                mp_hpool_lim_drop(hp, bs);
            hp->st.cached -= (int64_t)bs;
            hp->st.cached_blocks--;
            hp->st.reserved -= (int64_t)bs;
            hp->st.trims++;
            freed += bs;
        }
    }
    return freed;
}

/* Free a block the caller owns (its entry in transit), lock held. */
static void drop_block(mp_hpool_t *hp, hentry_t *e)
{
    size_t bs = e->size;
    void *p = (void *)entry_ptr(e);
    tab_remove(hp, e);
    hp->st.reserved -= (int64_t)bs;
    raw_free(hp, p);
}

/* Move a thread cache's blocks to the shared stacks (lock held). */
static void tc_flush(mp_hpool_t *hp, mp_htc_t *tc)
{
    for (unsigned c = 0; c < MP_CLASS_MAX; c++) {
        tbin_t *b = &tc->bin[c];
        while (b->n) {
            hentry_t *e = b->v[--b->n].e;
            int64_t bs = (int64_t)e->size;
            atomic_store_explicit(&e->w, entry_ptr(e) | W_CACHED, memory_order_relaxed);
            if (stack_push(&hp->stack[c], e)) {
                hp->st.cached += bs;
                hp->st.cached_blocks++;
            } else {
                if (hp->limited)
                    mp_hpool_lim_drop(hp, (size_t)bs);
                drop_block(hp, e);
            }
        }
    }
}

/* The calling thread's cache, if it missed a clear or trim, flushes; the
 * pool then trims to the goal again (lock held). */
static void tc_sync(mp_hpool_t *hp, mp_htc_t *tc)
{
    if (tc == NULL)
        return;
    uint64_t st = atomic_load_explicit(&hp->stamp, memory_order_relaxed);
    if (tc->stamp != st) {
        tc_flush(hp, tc);
        tc->stamp = st;
        release_to(hp, hp->trim_goal, INT64_MAX);
    }
    mp_tls_api->slot[hp->slot].stamp = st;
}

static void tc_unlink(mp_htc_t *tc)
{
    *tc->pprev = tc->next;
    if (tc->next)
        tc->next->pprev = tc->pprev;
}

/* Fold a cache into the pool and free it (lock held; by its thread at
 * exit, or at the pool's destruction, when no thread may use the pool). */
static void tc_retire(mp_hpool_t *hp, mp_htc_t *tc)
{
    tc_flush(hp, tc);
    hp->retired.req_bytes += tc->c.req_bytes;
    for (unsigned c = 0; c < MP_CLASS_MAX; c++) {
        hp->retired.hits += tc->bin[c].hits;
        hp->retired.hit_bytes += tc->bin[c].hits * hp->bsize[c];
    }
    hp->retired.releases += tc->c.releases;
    hp->retired.in_use += tc->c.in_use;
    tc_unlink(tc);
    munmap(tc, tc->map_size);
}

/* Thread exit: hand every cache back to its pool (if still the same pool). */
static void tls_exit(void *arg)
{
    api_tls_t *t = arg;
    mp_tls_api = &tls_dead;
    pthread_mutex_lock(&life_lock);
    for (unsigned i = 0; i < HPOOL_SLOTS; i++) {
        mp_hpool_t *hp = slot_pool[i];
        if (t->slot[i].tc == NULL || hp == NULL || hp->gen != t->gen[i])
            continue;
        pthread_mutex_lock(&hp->lock);
        tc_retire(hp, t->slot[i].tc);
        pthread_mutex_unlock(&hp->lock);
    }
    pthread_mutex_unlock(&life_lock);
    munmap(t, mp_page_round(sizeof(*t)));
}

static void tls_key_init(void)
{
    if (pthread_key_create(&tls_key, tls_exit) != 0)
        tls_key = (pthread_key_t)-1;
}

/* The calling thread's cache of this pool, created on first use; NULL when
 * it cannot have one (exited thread, no memory): the caller takes the lock.
 * A cache whose stamp is stale is returned as is: the slow paths sync it. */
static MP_NOINLINE mp_htc_t *tc_attach(mp_hpool_t *hp)
{
    api_tls_t *t = mp_tls_api;
    if (t == &tls_dead)
        return NULL;
    if (t == &tls_none) {
        pthread_once(&tls_once, tls_key_init);
        if (tls_key == (pthread_key_t)-1 || (t = map(mp_page_round(sizeof(*t)))) == NULL)
            return NULL;
        if (pthread_setspecific(tls_key, t) != 0) {
            munmap(t, mp_page_round(sizeof(*t)));
            return NULL;
        }
        mp_tls_api = t;
    }
    if (t->gen[hp->slot] == hp->gen && t->slot[hp->slot].tc)
        return t->slot[hp->slot].tc;
    size_t len = mp_page_round(sizeof(mp_htc_t));
    mp_htc_t *tc = map(len);
    if (tc == NULL)
        return NULL;
    tc->map_size = len;
    pthread_mutex_lock(&hp->lock);
    tc->stamp = atomic_load_explicit(&hp->stamp, memory_order_relaxed);
    tc->next = hp->tcs;
    tc->pprev = &hp->tcs;
    if (hp->tcs)
        hp->tcs->pprev = &tc->next;
    hp->tcs = tc;
    pthread_mutex_unlock(&hp->lock);
    t->slot[hp->slot].tc = tc;
    t->gen[hp->slot] = hp->gen;
    t->slot[hp->slot].stamp = 0; /* the first slow path call sets it */
    return tc;
}

static tbin_t *bin_of(mp_htc_t *tc, unsigned cls, size_t bs)
{
    tbin_t *b = &tc->bin[cls];
    if (b->cap == 0) { /* stays 0 for blocks over TC_BIN_BYTES */
        size_t n = TC_BIN_BYTES / bs;
        b->cap = n > TC_BIN_BLOCKS ? TC_BIN_BLOCKS : (uint32_t)n;
    }
    return b;
}

int mp_hpool_create(const mp_hpool_cfg_t *cfg, mp_hpool_t **out)
{
    size_t len = mp_page_round(sizeof(mp_hpool_t));
    mp_hpool_t *hp = map(len);
    if (hp == NULL)
        return -ENOMEM;
    pthread_mutex_init(&hp->lock, NULL);
    hp->cfg = *cfg;
    hp->map_size = len;
    hp->limited = cfg->cache_limit != 0 || cfg->max_blocks != 0;
    hp->zero = cfg->zero;
    hp->plain = !hp->limited && !hp->zero;
    hp->classed = cfg->scheme != MP_HPOOL_EXACT;
    hp->st.device = -1;
    hp->arena = cfg->numa >= 0 ? node_arena(cfg->numa) : mp_heap_bypass_arena();
    if (hp->classed) {
        mp_size_classes_init(&hp->sc, cfg->scheme, cfg->max_block);
        for (unsigned c = 0; c < hp->sc.count; c++)
            hp->bsize[c] = hp->sc.size[c] < cfg->align ? cfg->align : hp->sc.size[c];
    } else {
        mp_size_classes_init(&hp->sc, MP_SC_QUARTER, 0); /* no class: the inline path defers */
    }
    pthread_mutex_lock(&life_lock);
    unsigned s = 0;
    while (s < HPOOL_SLOTS && slot_pool[s])
        s++;
    if (s < HPOOL_SLOTS) {
        hp->slot = s;
        hp->gen = atomic_fetch_add(&next_stamp, 1);
        atomic_store(&hp->stamp, hp->gen);
        slot_pool[s] = hp;
    }
    pthread_mutex_unlock(&life_lock);
    if (s == HPOOL_SLOTS) {
        munmap(hp, len);
        return -EINVAL;
    }
    if (tab_push(hp) == NULL) { /* the lookups count on a table */
        mp_hpool_destroy(hp);
        return -ENOMEM;
    }
    *out = hp;
    return 0;
}

int mp_hpool_destroy(mp_hpool_t *hp)
{
    pthread_mutex_lock(&life_lock);
    pthread_mutex_lock(&hp->lock);
    if (SUM(hp, in_use) != 0) {
        pthread_mutex_unlock(&hp->lock);
        pthread_mutex_unlock(&life_lock);
        return -EBUSY;
    }
    while (hp->tcs)
        tc_retire(hp, hp->tcs);
    release_to(hp, 0, 0);
    slot_pool[hp->slot] = NULL;
    pthread_mutex_unlock(&hp->lock);
    pthread_mutex_unlock(&life_lock);
    for (unsigned c = 0; c < MP_CLASS_MAX; c++)
        if (hp->stack[c].v)
            munmap(hp->stack[c].v, hp->stack[c].cap * sizeof(hentry_t *));
    for (htab_t *t = atomic_load(&hp->tab), *o; t; t = o) {
        o = t->older;
        munmap(t, t->map_size);
    }
    pthread_mutex_destroy(&hp->lock);
    munmap(hp, hp->map_size);
    return 0;
}

static MP_NOINLINE void *alloc_slow(mp_hpool_t *hp, mp_htc_t *tc, size_t size)
{
    pthread_mutex_lock(&hp->lock);
    tc_sync(hp, tc);
    hcount_t *c = tc ? &tc->c : &hp->retired;
    size_t bsize = 0;
    unsigned cls = class_of(hp, size, &bsize);
    c->req_bytes += size;
    hentry_t *e = NULL;
    if (cls != MP_CLASS_NONE && hp->stack[cls].n) {
        /* Hit: a thread cache takes half a bin at once. */
        hstack_t *s = &hp->stack[cls];
        e = s->v[--s->n];
        hp->st.cached -= (int64_t)bsize;
        hp->st.cached_blocks--;
        if (tc) {
            tbin_t *b = bin_of(tc, cls, bsize);
            while (s->n && b->n < b->cap / 2) {
                hentry_t *x = s->v[--s->n];
                atomic_store_explicit(&x->w, entry_ptr(x) | W_TCACHED, memory_order_relaxed);
                b->v[b->n].e = x;
                b->v[b->n++].p = entry_ptr(x);
                hp->st.cached -= (int64_t)bsize;
                hp->st.cached_blocks--;
            }
        }
        if (hp->limited)
            mp_hpool_lim_drop(hp, bsize);
        atomic_store_explicit(&e->w, entry_ptr(e) | W_LIVE, memory_order_release);
        if (tc) {
            tc->bin[cls].hits++;
        } else {
            c->hits++;
            c->hit_bytes += bsize;
        }
    } else {
        void *p = raw_alloc(hp, bsize);
        if (p == NULL && (hp->st.cached || hp->tcs)) {
            hp->st.oom_retries++;
            if (tc)
                tc_flush(hp, tc);
            release_to(hp, 0, 0);
            p = raw_alloc(hp, bsize);
        }
        e = p ? tab_add(hp, (uintptr_t)p, bsize, cls) : NULL;
        if (e == NULL) {
            if (p)
                raw_free(hp, p);
            hp->st.ooms++;
            errno = ENOMEM;
            pthread_mutex_unlock(&hp->lock);
            return NULL;
        }
        if (cls == MP_CLASS_NONE)
            hp->st.unpooled++;
        else
            hp->st.misses++;
        hp->st.reserved += (int64_t)bsize;
        mp_peak_update(&hp->st.reserved_peak, hp->st.reserved);
    }
    c->in_use += (int64_t)bsize;
    if (tc && tc->c.in_use > tc->high)
        tc->high = tc->c.in_use;
    peak_refresh(hp);
    pthread_mutex_unlock(&hp->lock);
    return (void *)entry_ptr(e);
}

void *mp_hpool_peak(mp_hpool_t *hp, mp_htc_t *tc, void *p)
{
    tc->high = tc->c.in_use;
    pthread_mutex_lock(&hp->lock);
    peak_refresh(hp);
    pthread_mutex_unlock(&hp->lock);
    return p;
}

/* Off the inline hit path: exact-size pools' thread caches, then the
 * locked path. */
void *mp_hpool_alloc_slow(mp_hpool_t *hp, size_t size)
{
    if (size == 0)
        size = 1;
    mp_htc_t *tc = mp_hpool_tc(hp);
    if (tc == NULL)
        return alloc_slow(hp, tc_attach(hp), size);
    size_t bs = 0;
    unsigned cls = hp->classed ? MP_CLASS_NONE : class_peek(hp, size, &bs);
    if (cls != MP_CLASS_NONE && tc->bin[cls].n != 0)
        return mp_hpool_tc_pop(hp, tc, cls, size);
    return alloc_slow(hp, tc, size);
}

/* The rest of a release whose entry the caller now owns (lock taken here):
 * a full bin spills half to the shared stack; over a limit, or unpooled,
 * the block goes back to jemalloc. */
int mp_hpool_free_slow(mp_hpool_t *hp, mp_htc_t *tc, hentry_t *e)
{
    if (tc == NULL)
        tc = tc_attach(hp); /* first release of this thread, or a trim happened */
    size_t bs = e->size;
    unsigned cls = e->cls;
    bool keep = cls != MP_CLASS_NONE && (!hp->limited || mp_hpool_lim_take(hp, bs));
    if (keep && hp->zero)
        memset((void *)entry_ptr(e), 0, bs); /* the block is ours: no lock needed */
    pthread_mutex_lock(&hp->lock);
    tc_sync(hp, tc);
    hcount_t *c = tc ? &tc->c : &hp->retired;
    c->releases++;
    c->in_use -= (int64_t)bs;
    tbin_t *b = keep && tc ? bin_of(tc, cls, bs) : NULL;
    if (b && b->cap) {
        if (b->n == b->cap) { /* spill the older half */
            uint32_t half = b->cap - b->cap / 2, i = 0;
            for (; i < half; i++) {
                hentry_t *x = b->v[i].e;
                atomic_store_explicit(&x->w, entry_ptr(x) | W_CACHED, memory_order_relaxed);
                if (!stack_push(&hp->stack[cls], x))
                    break;
                hp->st.cached += (int64_t)bs;
                hp->st.cached_blocks++;
            }
            if (i < half) /* no memory for the stack: keep the rest here */
                atomic_store_explicit(&b->v[i].e->w, b->v[i].p | W_TCACHED, memory_order_relaxed);
            memmove(b->v, b->v + i, (b->n - i) * sizeof(b->v[0]));
            b->n -= i;
        }
        if (b->n < b->cap) {
            b->v[b->n].e = e;
            b->v[b->n++].p = entry_ptr(e);
            pthread_mutex_unlock(&hp->lock);
            return 0;
        }
    } else if (keep) {
        atomic_store_explicit(&e->w, entry_ptr(e) | W_CACHED, memory_order_relaxed);
        if (stack_push(&hp->stack[cls], e)) {
            hp->st.cached += (int64_t)bs;
            hp->st.cached_blocks++;
            pthread_mutex_unlock(&hp->lock);
            return 0;
        }
    }
    if (keep && hp->limited)
        mp_hpool_lim_drop(hp, bs);
    if (cls != MP_CLASS_NONE)
        hp->st.trims++; /* over a limit: freed instead of cached */
    drop_block(hp, e);
    pthread_mutex_unlock(&hp->lock);
    return 0;
}

size_t mp_hpool_trim(mp_hpool_t *hp, size_t target)
{
    mp_htc_t *tc = tc_attach(hp);
    pthread_mutex_lock(&hp->lock);
    int64_t goal = target > INT64_MAX ? INT64_MAX : (int64_t)target;
    hp->trim_goal = goal;
    /* A new stamp: other threads' caches flush at their next call. */
    uint64_t st = atomic_fetch_add(&next_stamp, 1);
    atomic_store_explicit(&hp->stamp, st, memory_order_relaxed);
    if (tc) { /* the caller's cache at once */
        tc_flush(hp, tc);
        tc->stamp = st;
        mp_tls_api->slot[hp->slot].stamp = st;
    }
    size_t freed = release_to(hp, goal, INT64_MAX);
    pthread_mutex_unlock(&hp->lock);
    return freed;
}
void mp_hpool_fork_prepare(void)
{
    pthread_mutex_lock(&life_lock);
    for (unsigned i = 0; i < HPOOL_SLOTS; i++)
        if (slot_pool[i])
            pthread_mutex_lock(&slot_pool[i]->lock);
}

void mp_hpool_fork_release(void)
{
    for (unsigned i = HPOOL_SLOTS; i-- > 0;)
        if (slot_pool[i])
            pthread_mutex_unlock(&slot_pool[i]->lock);
    pthread_mutex_unlock(&life_lock);
}

int mp_hpool_holds(mp_hpool_t *hp, const void *p)
{
    uintptr_t w = 0;
    return mp_hpool_find(hp, (uintptr_t)p, &w) != NULL && (w & ~W_STATE) != 0;
}

MP_PEEK_READER void mp_hpool_stats(mp_hpool_t *hp, mp_device_stats_t *out)
{
    pthread_mutex_lock(&hp->lock);
    *out = hp->st;
    out->req_bytes = SUM(hp, req_bytes);
    out->hits = hp->retired.hits;
    out->hit_bytes = hp->retired.hit_bytes;
    for (mp_htc_t *t = hp->tcs; t; t = t->next)
        for (unsigned c = 0; c < MP_CLASS_MAX; c++) {
            uint64_t h = MP_PEEK(t->bin[c].hits);
            out->hits += h;
            out->hit_bytes += h * hp->bsize[c];
        }
    out->releases = SUM(hp, releases);
    out->in_use = SUM(hp, in_use);
    out->requests = out->hits + out->misses + out->unpooled + out->ooms;
    int64_t held = 0; /* blocks in the table: in use or cached */
    for (htab_t *t = atomic_load_explicit(&hp->tab, memory_order_relaxed); t; t = t->older)
        held += (int64_t)t->used;
    out->cached = out->reserved - out->in_use;
    out->cached_blocks = held - (int64_t)(out->hits + out->misses + out->unpooled - out->releases);
    mp_peak_update(&out->in_use_peak, out->in_use);
    pthread_mutex_unlock(&hp->lock);
}
