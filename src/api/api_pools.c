/*
 * The explicit pool API of include/mempool.h: pool handles, config
 * checks, the default pools (the very pools the preload serves malloc,
 * cudaMalloc and cudaMallocHost from), errors, stats and the pressure
 * check.  The pools themselves are api_host_pool.c (custom host pools),
 * malloc_pools.c (the default host pool) and the cuda/ dpool_*.c files
 * (device and pinned pools, default and custom); the report writes them
 * (report/pools_report.c).  One file of ~760 lines: every function of
 * mempool.h here reads the pool handle and the registry, private to it.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "callsite.h"
#include "cuda_driver.h"
#include "host_inline.h"
#include "jemalloc_private.h"
#include "mempool.h"
#include "api_host_pool.h"
#include "host_stats.h"

#define API_MAGIC 0x6d706f6cu
#define API_POOLS MP_DPOOL_API_MAX

struct mempool {
    uint32_t magic;
    bool is_default;
    mempool_kind_t kind;
    unsigned flags;
    int device, numa;
    double threshold;
    char name[64];
    mp_hpool_t *host;  /* custom host pool */
    /* = host where the inline hit paths apply: a plain pool (no limit, no
     * zeroing) for acquire; for release also no monitor to wake and no
     * MEMPOOL_DEBUG (whose release check is a compare-and-swap). */
    mp_hpool_t *fast_acq, *fast_rel;
    int didx;          /* custom device/pinned pool (device_pool.c index) */
    mp_cu_context ctx; /* its device's primary context (retained) */
    _Atomic uint64_t release_errors, pressure_events;
};

static pthread_mutex_t reg_lock = PTHREAD_MUTEX_INITIALIZER;
static mempool_t *registry[API_POOLS];
static unsigned created; /* pools ever created: default names */
MP_STARTUP_DATA static _Atomic bool any_created; /* mp_flag_raise: by the first mempool_create */
static mempool_t defaults[3] = {
    {.magic = API_MAGIC, .is_default = true, .kind = MEMPOOL_KIND_HOST, .device = -1, .numa = -1,
     .name = "host-default", .didx = -1},
    {.magic = API_MAGIC, .is_default = true, .kind = MEMPOOL_KIND_PINNED, .device = 0, .numa = -1,
     .name = "pinned-default", .didx = -1},
    {.magic = API_MAGIC, .is_default = true, .kind = MEMPOOL_KIND_DEVICE, .device = 0, .numa = -1,
     .name = "device-default", .didx = -1},
};

static const char *kind_name(mempool_kind_t k)
{
    return k == MEMPOOL_KIND_HOST ? "host" : k == MEMPOOL_KIND_PINNED ? "pinned" : "device";
}

static bool valid(const mempool_t *p) { return p != NULL && p->magic == API_MAGIC; }

/* ---- CUDA context of a call ---------------------------------------------- */

/* Device 0's primary context: what the runtime would use for a thread
 * that never chose a device. */
static mp_cu_context primary0(void)
{
    static _Atomic(mp_cu_context) ctx;
    mp_cu_context c = atomic_load(&ctx);
    int dev = 0;
    if (c == NULL && mp_cuda.device_get && mp_cuda.primary_retain
        && mp_cuda.device_get(&dev, 0) == MP_CUDA_SUCCESS && mp_cuda.primary_retain(&c, dev) == MP_CUDA_SUCCESS) {
        mp_cu_context expect = NULL;
        if (!atomic_compare_exchange_strong(&ctx, &expect, c))
            c = expect; /* retained twice: harmless */
    }
    return c;
}

/* Make the pool's context current for this call; *pushed says whether to
 * pop it after.  -ENODEV when there is no driver or context. */
static int enter(const mempool_t *pool, bool *pushed)
{
    *pushed = false;
    if (!mp_cuda_load())
        return -ENODEV;
    mp_cu_context cur = NULL;
    mp_cuda.ctx_get_current(&cur);
    mp_cu_context want = pool->is_default ? (cur ? cur : primary0()) : pool->ctx;
    if (want == NULL)
        return -ENODEV;
    if (want != cur) {
        if (mp_cuda.ctx_push(want) != MP_CUDA_SUCCESS)
            return -ENODEV;
        *pushed = true;
    }
    return 0;
}

static void leave(bool pushed)
{
    mp_cu_context c = NULL;
    if (pushed)
        mp_cuda.ctx_pop(&c);
}

/* The device_pool.c index serving a default device/pinned pool now. */
static int default_index(const mempool_t *pool)
{
    return pool->kind == MEMPOOL_KIND_DEVICE ? mp_dpool_current() : MP_DEV_MAX;
}

/* ---- create / destroy ------------------------------------------------------ */

MP_PUBLIC int mempool_config_init(mempool_config_t *cfg, mempool_kind_t kind)
{
    if (cfg == NULL || (unsigned)kind > MEMPOOL_KIND_DEVICE)
        return -EINVAL;
    memset(cfg, 0, sizeof(*cfg));
    cfg->struct_size = sizeof(*cfg);
    cfg->kind = kind;
    cfg->numa_node = MEMPOOL_NUMA_ANY;
    cfg->max_block_size = (size_t)1 << 30;
    return 0;
}

static int check_config(const mempool_config_t *c)
{
    if ((unsigned)c->kind > MEMPOOL_KIND_DEVICE || (unsigned)c->size_classes > MEMPOOL_CLASSES_EXACT
        || (c->flags & ~(MEMPOOL_ZERO_ON_RELEASE | MEMPOOL_NO_STATS)) != 0)
        return -EINVAL;
    size_t amax = c->kind == MEMPOOL_KIND_HOST ? (size_t)1 << 20 : c->kind == MEMPOOL_KIND_PINNED ? 4096 : 256;
    if (c->alignment & (c->alignment - 1) || c->alignment > amax)
        return -EINVAL;
    if (!(c->pressure_threshold >= 0.0 && c->pressure_threshold < 1.0))
        return -EINVAL;
    if (c->max_block_size == 0 || (c->kind == MEMPOOL_KIND_HOST && c->size_classes != MEMPOOL_CLASSES_EXACT
                                   && c->max_block_size > ((size_t)1 << 30)))
        return -EINVAL;
    if (c->kind == MEMPOOL_KIND_PINNED && (c->host_alloc_flags & ~0x7u))
        return -EINVAL;
    if (c->numa_node != MEMPOOL_NUMA_ANY) {
        if (c->kind == MEMPOOL_KIND_DEVICE || c->numa_node < 0)
            return -EINVAL;
        if (c->kind == MEMPOOL_KIND_PINNED && (c->host_alloc_flags & 0x4u))
            return -EINVAL; /* write-combined memory cannot be registered in place */
        return mp_numa_check(c->numa_node);
    }
    return 0;
}

static int scheme_of(mempool_size_classes_t sc, int option)
{
    switch (sc) {
    case MEMPOOL_CLASSES_QUARTER: return MP_SC_QUARTER;
    case MEMPOOL_CLASSES_HALF: return MP_SC_HALF;
    case MEMPOOL_CLASSES_POW2: return MP_SC_POW2;
    case MEMPOOL_CLASSES_EXACT: return MP_HPOOL_EXACT;
    default: return option;
    }
}

/* The device side of a new pool: the ordinal's primary context and a
 * device_pool.c slot. */
static int open_cuda_pool(mempool_t *p, const mempool_config_t *c)
{
    int n = 0, dev = 0;
    if (!mp_cuda_load() || mp_cuda.device_count == NULL || mp_cuda.device_get == NULL
        || mp_cuda.primary_retain == NULL || mp_cuda.device_count(&n) != MP_CUDA_SUCCESS)
        return -ENODEV;
    if (c->device < 0 || c->device >= n || mp_cuda.device_get(&dev, c->device) != MP_CUDA_SUCCESS
        || mp_cuda.primary_retain(&p->ctx, dev) != MP_CUDA_SUCCESS)
        return -ENODEV;
    if (c->numa_node != MEMPOOL_NUMA_ANY && mp_cuda.host_register == NULL)
        return -ENOTSUP;
    mp_dpool_cfg_t d = {
        .pinned = c->kind == MEMPOOL_KIND_PINNED,
        .host_flags = c->host_alloc_flags,
        .ordinal = c->device,
        .ctx = p->ctx,
        .scheme = scheme_of(c->size_classes, -1),
        .zero = (c->flags & MEMPOOL_ZERO_ON_RELEASE) != 0,
        .numa = c->numa_node,
        .max_block = c->max_block_size,
        .cache_limit = c->cache_limit,
        .max_blocks = c->max_cached_blocks,
    };
    p->didx = mp_dpool_open(&d);
    return p->didx < 0 ? -EINVAL : 0;
}

MP_PUBLIC int mempool_create(const mempool_config_t *cfg, mempool_t **out)
{
    if (cfg == NULL || out == NULL || cfg->struct_size < offsetof(mempool_config_t, kind) + sizeof(cfg->kind))
        return -EINVAL;
    mempool_config_t c;
    mempool_config_init(&c, (unsigned)cfg->kind <= MEMPOOL_KIND_DEVICE ? cfg->kind : MEMPOOL_KIND_HOST);
    memcpy(&c, cfg, cfg->struct_size < sizeof(c) ? cfg->struct_size : sizeof(c));
    c.struct_size = sizeof(c);
    int err = check_config(&c);
    if (err == 0 && mp_init() != MP_STATE_READY)
        err = -ENOMEM;
    if (err)
        return err;
    mempool_t *p = NULL;
    pthread_mutex_lock(&reg_lock);
    int slot = -1;
    for (int i = 0; i < API_POOLS && slot < 0; i++)
        if (registry[i] == NULL)
            slot = i;
    unsigned serial = created++;
    mp_flag_raise(&any_created);
    pthread_mutex_unlock(&reg_lock);
    if (slot < 0)
        return -EINVAL; /* more than API_POOLS pools */
    /* Books come from mmap-backed pool memory, never from malloc. */
    unsigned arena = mp_heap_bypass_arena();
    p = arena ? je_mallocx(sizeof(*p), MALLOCX_ARENA(arena) | MALLOCX_TCACHE_NONE | MALLOCX_ZERO) : NULL;
    if (p == NULL)
        return -ENOMEM;
    p->kind = c.kind;
    p->flags = c.flags;
    p->device = c.kind == MEMPOOL_KIND_HOST ? -1 : c.device;
    p->numa = c.numa_node;
    p->threshold = c.pressure_threshold;
    p->didx = -1;
    if (c.name && c.name[0])
        snprintf(p->name, sizeof(p->name), "%s", c.name);
    else
        snprintf(p->name, sizeof(p->name), "%s-%u", kind_name(c.kind), serial);
    if (c.kind == MEMPOOL_KIND_HOST) {
        size_t align = c.alignment < 16 ? 16 : c.alignment;
        mp_hpool_cfg_t h = {
            .scheme = scheme_of(c.size_classes, (int)mp_opt(MP_OPT_HOST_SIZE_CLASSES)),
            .max_block = c.max_block_size,
            .align = align,
            .cache_limit = c.cache_limit,
            .max_blocks = c.max_cached_blocks,
            .numa = c.numa_node,
            .zero = (c.flags & MEMPOOL_ZERO_ON_RELEASE) != 0,
        };
        err = mp_hpool_create(&h, &p->host);
        if (err == 0 && p->host->plain) {
            p->fast_acq = p->host;
            p->fast_rel = p->threshold > 0 || mp_debug_on ? NULL : p->host;
        }
    } else {
        err = open_cuda_pool(p, &c);
    }
    if (err) {
        je_dallocx(p, MALLOCX_ARENA(mp_heap_bypass_arena()) | MALLOCX_TCACHE_NONE);
        return err;
    }
    pthread_mutex_lock(&reg_lock);
    if (registry[slot] != NULL) /* taken meanwhile: find another */
        for (slot = 0; slot < API_POOLS && registry[slot]; slot++) {
        }
    if (slot < API_POOLS)
        registry[slot] = p;
    pthread_mutex_unlock(&reg_lock);
    if (slot == API_POOLS) {
        p->magic = API_MAGIC;
        mempool_destroy(p);
        return -EINVAL;
    }
    atomic_thread_fence(memory_order_release);
    p->magic = API_MAGIC;
    *out = p;
    if (p->threshold > 0)
        mp_pressure_kick();
    return 0;
}

MP_PUBLIC int mempool_destroy(mempool_t *pool)
{
    if (!valid(pool) || pool->is_default)
        return -EINVAL;
    int err = 0;
    if (!pool->host) {
        bool pushed = false;
        if (enter(pool, &pushed) == 0) {
            err = mp_dpool_close(pool->didx) == 0 ? 0 : -EBUSY;
            leave(pushed);
        }
    }
    /* A host pool is freed under the registry lock: a refused release in
     * another thread looks the block up in every registered pool
     * (owner_name). */
    pthread_mutex_lock(&reg_lock);
    if (pool->host && err == 0)
        err = mp_hpool_destroy(pool->host);
    if (err) {
        pthread_mutex_unlock(&reg_lock);
        return err;
    }
    for (int i = 0; i < API_POOLS; i++)
        if (registry[i] == pool)
            registry[i] = NULL;
    pthread_mutex_unlock(&reg_lock);
    pool->magic = 0;
    je_dallocx(pool, MALLOCX_ARENA(mp_heap_bypass_arena()) | MALLOCX_TCACHE_NONE);
    return 0;
}

MP_PUBLIC mempool_t *mempool_default(mempool_kind_t kind)
{
    if ((unsigned)kind > MEMPOOL_KIND_DEVICE) {
        errno = EINVAL;
        return NULL;
    }
    if (mp_init() != MP_STATE_READY && kind == MEMPOOL_KIND_HOST) {
        errno = ENOMEM;
        return NULL;
    }
    if (kind != MEMPOOL_KIND_HOST && !mp_cuda_load()) {
        errno = ENODEV;
        return NULL;
    }
    return &defaults[kind];
}

/* ---- acquire / release ------------------------------------------------------ */

static MP_NOINLINE void *acquire(mempool_t *pool, size_t size, mempool_stream_t stream, bool async)
{
    if (!valid(pool) || (async && pool->kind == MEMPOOL_KIND_HOST)) {
        errno = EINVAL;
        return NULL;
    }
    void *p = NULL;
    if (pool->kind == MEMPOOL_KIND_HOST) {
        p = pool->host ? mp_hpool_acquire(pool->host, size) : mp_malloc(size ? size : 1);
        if (p == NULL)
            errno = ENOMEM;
        return p;
    }
    bool pushed = false;
    int err = enter(pool, &pushed);
    if (err) {
        errno = -err;
        return NULL;
    }
    int idx = pool->is_default ? default_index(pool) : pool->didx;
    mp_cu_ptr d = 0;
    mp_cu_result r = mp_dpool_alloc(idx, &d, size, (mp_cu_stream)(void *)stream, async);
    leave(pushed);
    if (r != MP_CUDA_SUCCESS) {
        errno = r == MP_CUDA_ERROR_OUT_OF_MEMORY ? ENOMEM : r == MP_CUDA_ERROR_INVALID_VALUE ? EINVAL : ENODEV;
        return NULL;
    }
    return (void *)(uintptr_t)d;
}

/* Everything but a plain custom host pool: out of line, so that its hit
 * path in mempool_acquire needs no stack frame. */
static MP_NOINLINE void *acquire_other(mempool_t *pool, size_t size)
{
    if (pool == &defaults[MEMPOOL_KIND_HOST]) /* the malloc pools: their hit path */
        return mp_malloc(size ? size : 1); /* sets errno like malloc */
    return acquire(pool, size, NULL, false);
}

MP_PUBLIC void *mempool_acquire(mempool_t *pool, size_t size)
{
    if (mp_likely(valid(pool) && pool->fast_acq != NULL)) /* a custom host pool: the hit path */
        return mp_hpool_acquire_(pool->fast_acq, size, true);
    return acquire_other(pool, size);
}

MP_PUBLIC void *mempool_acquire_async(mempool_t *pool, size_t size, mempool_stream_t stream)
{
    return acquire(pool, size, stream, true);
}

/* The name of the pool holding p (for the error message), or NULL. */
static const char *owner_name(const mempool_t *self, const void *p, char *buf, size_t cap)
{
    const char *found = NULL;
    int didx = self->kind == MEMPOOL_KIND_HOST ? -1 : mp_dpool_owner((mp_cu_ptr)(uintptr_t)p);
    pthread_mutex_lock(&reg_lock);
    for (int i = 0; i < API_POOLS && !found; i++) {
        mempool_t *o = registry[i];
        if (o == NULL || o == self)
            continue;
        if ((o->host && mp_hpool_holds(o->host, p)) || (didx >= 0 && o->didx == didx)) {
            snprintf(buf, cap, "%s", o->name);
            found = buf;
        }
    }
    pthread_mutex_unlock(&reg_lock);
    if (!found && didx >= 0 && didx < MP_DEV_MAX)
        found = "device-default";
    else if (!found && didx >= MP_DEV_MAX && didx < MP_DEV_MAX + 8)
        found = "pinned-default";
    else if (!found && self->kind == MEMPOOL_KIND_HOST && self->host && mp_ptr_kind(p, &(unsigned){0}) <= MP_PTR_BYPASS)
        found = "host-default";
    return found;
}

void mp_pools_fork_prepare(void)
{
    pthread_mutex_lock(&reg_lock); /* taken before the pools' locks, as mempool_create does */
    mp_hpool_fork_prepare();
}

void mp_pools_fork_release(void)
{
    mp_hpool_fork_release();
    pthread_mutex_unlock(&reg_lock);
}

int mp_api_release_error(mempool_t *pool, const void *p, bool twice)
{
    atomic_fetch_add_explicit(&pool->release_errors, 1, memory_order_relaxed);
    char buf[64];
    const char *owner = twice ? NULL : owner_name(pool, p, buf, sizeof(buf));
    if (mp_debug_on) { /* the same finding, with the call site, then MEMPOOL_DEBUG_ACTION */
        mp_debug_finding(twice ? MP_DEBUG_DOUBLE_FREE : MP_DEBUG_WRONG_POOL, "the release is ignored",
                         "mempool_release(%s, %p): %s%s", pool->name, p,
                         twice ? "released twice" : owner ? "the block belongs to pool " : "not a block "
                         "this pool handed out (released twice, or never acquired)", owner ? owner : "");
        return -EINVAL;
    }
    mp_debug_count_add(twice ? MP_DEBUG_DOUBLE_FREE : MP_DEBUG_WRONG_POOL);
    if (twice)
        mp_log(MP_LOG_ERROR, "mempool_release(%s, %p): released twice; ignored", pool->name, p);
    else if (owner)
        mp_log(MP_LOG_ERROR, "mempool_release(%s, %p): the block belongs to pool %s; ignored", pool->name, p,
               owner);
    else
        mp_log(MP_LOG_ERROR, "mempool_release(%s, %p): not a block this pool handed out (released twice, "
               "or never acquired); ignored", pool->name, p);
    return -EINVAL;
}

static int release_block(mempool_t *pool, void *ptr, mempool_stream_t stream, bool async);

/* After the block is cached: a monitor that parked meanwhile sees it. */
static MP_NOINLINE int release(mempool_t *pool, void *ptr, mempool_stream_t stream, bool async)
{
    int r = release_block(pool, ptr, stream, async);
    if (r == 0 && ptr && (pool->threshold > 0 || (pool->is_default && mp_opt(MP_OPT_PRESSURE_THRESHOLD))))
        mp_pressure_kick();
    return r;
}

static int release_block(mempool_t *pool, void *ptr, mempool_stream_t stream, bool async)
{
    if (!valid(pool) || (async && pool->kind == MEMPOOL_KIND_HOST))
        return -EINVAL;
    if (ptr == NULL)
        return 0;
    if (pool->kind == MEMPOOL_KIND_HOST) {
        if (pool->host)
            return mp_hpool_release(pool->host, ptr, pool);
        unsigned cls;
        int k = mp_ptr_kind(ptr, &cls);
        if (k != MP_PTR_CLASS && k != MP_PTR_BYPASS)
            return mp_api_release_error(pool, ptr, false);
        mp_free(ptr);
        return 0;
    }
    bool pushed = false;
    int err = enter(pool, &pushed);
    if (err)
        return err;
    mp_cu_ptr d = (mp_cu_ptr)(uintptr_t)ptr;
    int idx = pool->didx;
    if (pool->is_default) { /* any context's pool, or any pinned flag set */
        idx = mp_dpool_owner(d);
        bool mine = pool->kind == MEMPOOL_KIND_DEVICE ? idx >= 0 && idx < MP_DEV_MAX
                                                      : idx >= MP_DEV_MAX && idx < MP_DEV_MAX + 8;
        if (!mine)
            idx = -1;
    }
    int r = idx < 0 ? -1 : mp_dpool_free(idx, d, (mp_cu_stream)(void *)stream, async);
    leave(pushed);
    return r == 0 ? 0 : mp_api_release_error(pool, ptr, false);
}

/* As acquire_other. */
static MP_NOINLINE int release_other(mempool_t *pool, void *ptr)
{
    if (pool == &defaults[MEMPOOL_KIND_HOST] && mp_opt(MP_OPT_PRESSURE_THRESHOLD) == 0
        && mp_ptr_kind(ptr, &(unsigned){0}) <= MP_PTR_BYPASS) {
        mp_free(ptr); /* a block of the malloc pools, no monitor to wake */
        return 0;
    }
    return release(pool, ptr, NULL, false);
}

MP_PUBLIC int mempool_release(mempool_t *pool, void *ptr)
{
    /* A plain custom host pool without a monitor to wake: the hit path. */
    if (mp_likely(valid(pool) && pool->fast_rel != NULL)) /* ptr NULL too */
        return mp_hpool_release_(pool->fast_rel, ptr, pool, true);
    return release_other(pool, ptr);
}

MP_PUBLIC int mempool_release_async(mempool_t *pool, void *ptr, mempool_stream_t stream)
{
    return release(pool, ptr, stream, true);
}

/* ---- clear / trim -------------------------------------------------------------- */

static size_t trim_pool(mempool_t *pool, size_t target)
{
    if (pool->kind == MEMPOOL_KIND_HOST) {
        if (pool->host)
            return mp_hpool_trim(pool->host, target);
        mp_snapshot_t s; /* the default host pool has no order: all or nothing */
        mp_stats_snapshot(&s);
        return s.total.cached_bytes > target ? mp_host_trim() : 0;
    }
    bool pushed = false;
    if (enter(pool, &pushed) != 0)
        return 0;
    size_t freed = 0;
    if (!pool->is_default)
        freed = mp_dpool_trim(pool->didx, target);
    else if (pool->kind == MEMPOOL_KIND_DEVICE)
        for (int i = 0; i < MP_DEV_MAX; i++)
            freed += mp_dpool_trim(i, target);
    else
        for (int i = MP_DEV_MAX; i < MP_DEV_MAX + 8; i++)
            freed += mp_dpool_trim(i, target);
    leave(pushed);
    return freed;
}

MP_PUBLIC long long mempool_trim(mempool_t *pool, size_t target)
{
    if (!valid(pool))
        return -EINVAL;
    return (long long)trim_pool(pool, target);
}

MP_PUBLIC long long mempool_clear(mempool_t *pool) { return mempool_trim(pool, 0); }

MP_PUBLIC long long mempool_trim_all(void)
{
    if (mp_init() != MP_STATE_READY)
        return 0;
    size_t freed = mp_host_trim();
    if (mp_cuda.loaded) {
        freed += trim_pool(&defaults[MEMPOOL_KIND_DEVICE], 0);
        freed += trim_pool(&defaults[MEMPOOL_KIND_PINNED], 0);
    }
    mempool_t *list[API_POOLS];
    pthread_mutex_lock(&reg_lock);
    memcpy(list, registry, sizeof(list));
    pthread_mutex_unlock(&reg_lock);
    for (int i = 0; i < API_POOLS; i++)
        if (list[i])
            freed += trim_pool(list[i], 0);
    return (long long)freed;
}

/* ---- stats ---------------------------------------------------------------------- */

static void from_counters(mempool_stats_t *o, const mp_device_stats_t *st)
{
    o->pool_size = (uint64_t)st->cached_blocks;
    o->bytes_cached = (uint64_t)st->cached;
    o->hits = st->hits;
    o->misses = st->misses;
    o->unpooled = st->unpooled;
    o->acquired = st->hits + st->misses + st->unpooled;
    o->released = st->releases;
    o->bytes_in_use = (uint64_t)st->in_use;
    o->peak_bytes_in_use = (uint64_t)st->in_use_peak;
    o->bytes_reserved = (uint64_t)st->reserved;
    o->peak_bytes_reserved = (uint64_t)st->reserved_peak;
    o->bytes_requested = st->req_bytes;
    o->bytes_from_cache = st->hit_bytes;
    o->trims = st->trims;
}

static void add_counters(mp_device_stats_t *a, const mp_device_stats_t *b)
{
#define ADD(type, field, key, unit) a->field += b->field;
    MP_DEVICE_STATS(ADD)
#undef ADD
    a->hit_bytes += b->hit_bytes, a->cached_blocks += b->cached_blocks;
}

static void fill_stats(mempool_t *pool, mempool_stats_t *o)
{
    memset(o, 0, sizeof(*o));
    o->struct_size = sizeof(*o);
    snprintf(o->name, sizeof(o->name), "%s", pool->name);
    o->kind = pool->kind;
    o->device = pool->device;
    o->numa_node = pool->numa;
    mp_device_stats_t st;
    memset(&st, 0, sizeof(st));
    if (pool->host) {
        mp_hpool_stats(pool->host, &st);
    } else if (pool->kind == MEMPOOL_KIND_HOST) {
        mp_snapshot_t s;
        mp_stats_snapshot(&s);
        st.hits = s.total.hits;
        st.misses = s.total.misses;
        st.unpooled = s.bypasses;
        st.releases = s.total.releases;
        st.req_bytes = s.total.bytes_requested + s.bypass_bytes;
        st.hit_bytes = s.total.bytes_served_from_cache;
        st.trims = s.total.trims;
        st.in_use = s.total.bytes_in_use + s.bypass_in_use;
        st.in_use_peak = s.total.bytes_in_use_peak + s.bypass_in_use_peak;
        st.reserved = s.total.bytes_reserved + s.bypass_in_use;
        st.reserved_peak = s.total.bytes_reserved_peak + s.bypass_in_use_peak;
        st.cached = (int64_t)s.total.cached_bytes;
        st.cached_blocks = (int64_t)s.total.cached_blocks;
    } else if (!pool->is_default) {
        mp_dpool_stats(pool->didx, &st);
    } else if (mp_cuda.loaded) {
        int lo = pool->kind == MEMPOOL_KIND_DEVICE ? 0 : MP_DEV_MAX;
        int hi = pool->kind == MEMPOOL_KIND_DEVICE ? MP_DEV_MAX : MP_DEV_MAX + 8;
        for (int i = lo; i < hi; i++) {
            mp_device_stats_t one;
            mp_dpool_stats(i, &one);
            add_counters(&st, &one);
        }
    }
    from_counters(o, &st);
    uint64_t served = o->hits + o->misses;
    o->hit_rate = served ? (double)o->hits / (double)served : 0.0;
    o->pressure_events = atomic_load_explicit(&pool->pressure_events, memory_order_relaxed);
    o->release_errors = atomic_load_explicit(&pool->release_errors, memory_order_relaxed);
}

MP_PUBLIC int mempool_get_stats(mempool_t *pool, mempool_stats_t *out)
{
    if (!valid(pool) || out == NULL || out->struct_size < offsetof(mempool_stats_t, kind))
        return -EINVAL;
    mempool_stats_t s;
    fill_stats(pool, &s);
    size_t n = out->struct_size < sizeof(s) ? out->struct_size : sizeof(s);
    memcpy(out, &s, n);
    out->struct_size = n;
    return 0;
}

/* ---- what the report reads ---------------------------------------------------- */

/* Every pool to show: the defaults (when asked, and usable), then custom
 * pools without MEMPOOL_NO_STATS. */
unsigned mp_pools_list(mempool_t **list, bool with_defaults)
{
    unsigned n = 0;
    if (with_defaults) {
        list[n++] = &defaults[MEMPOOL_KIND_HOST];
        if (mp_cuda.loaded) {
            list[n++] = &defaults[MEMPOOL_KIND_PINNED];
            list[n++] = &defaults[MEMPOOL_KIND_DEVICE];
        }
    }
    if (!atomic_load(&any_created))
        return n;
    pthread_mutex_lock(&reg_lock);
    for (int i = 0; i < API_POOLS; i++)
        if (registry[i] && !(registry[i]->flags & MEMPOOL_NO_STATS))
            list[n++] = registry[i];
    pthread_mutex_unlock(&reg_lock);
    return n;
}

void mp_pool_view(mempool_t *pool, mp_pool_view_t *v)
{
    fill_stats(pool, &v->stats);
    v->kind_name = kind_name(v->stats.kind);
    v->is_default = pool->is_default;
    v->threshold = pool->threshold;
}

bool mp_pool_valid(const mempool_t *pool) { return valid(pool); }

/* ---- memory pressure ------------------------------------------------------------------- */

/* Fraction of a kind's memory in use now (for a device pool: its device,
 * with its context current); -1 when unknown. */
static double used_fraction(int kind)
{
    uint64_t avail = 0, total = 0;
    if (!mp_pressure_read(kind, &avail, &total) || total == 0)
        return -1.0;
    return 1.0 - (double)(avail < total ? avail : total) / (double)total;
}

static size_t check_pool(mempool_t *pool, double threshold)
{
    if (threshold <= 0)
        return 0;
    mempool_stats_t s;
    fill_stats(pool, &s);
    if (s.bytes_cached == 0)
        return 0;
    bool pushed = false;
    if (pool->kind == MEMPOOL_KIND_DEVICE && enter(pool, &pushed) != 0)
        return 0;
    double used = used_fraction(pool->kind);
    leave(pushed);
    if (used < 0 || used <= threshold)
        return 0;
    size_t freed = trim_pool(pool, 0);
    atomic_fetch_add_explicit(&pool->pressure_events, 1, memory_order_relaxed);
    mp_log(MP_LOG_INFO, "memory pressure (%.0f%% in use, threshold %.0f%%): pool %s released %zu bytes",
           100.0 * used, 100.0 * threshold, pool->name, freed);
    return freed;
}

static double default_threshold(void) { return (double)mp_opt(MP_OPT_PRESSURE_THRESHOLD) / 100.0; }

size_t mp_pools_pressure_check(void)
{
    mempool_t *list[API_POOLS + 3];
    unsigned n = mp_pools_list(list, default_threshold() > 0);
    size_t freed = 0;
    for (unsigned i = 0; i < n; i++)
        freed += check_pool(list[i], list[i]->is_default ? default_threshold() : list[i]->threshold);
    return freed;
}

bool mp_pools_pressure_idle(void)
{
    if (default_threshold() > 0)
        return false; /* the default host pool is freed into by free(): never idle */
    mempool_t *list[API_POOLS + 3];
    unsigned n = mp_pools_list(list, false);
    for (unsigned i = 0; i < n; i++) {
        if (list[i]->threshold <= 0)
            continue;
        mempool_stats_t s;
        fill_stats(list[i], &s);
        if (s.bytes_cached)
            return false;
    }
    return true;
}

MP_PUBLIC long long mempool_pressure_poll(void)
{
    if (mp_init() != MP_STATE_READY)
        return 0;
    return (long long)mp_pools_pressure_check();
}

/* ---- errors ---------------------------------------------------------------------------- */

MP_PUBLIC const char *mempool_strerror(int err)
{
    switch (err < 0 ? -err : err) {
    case 0: return "success";
    case EINVAL: return "invalid argument (bad config, or a pointer this pool did not hand out)";
    case ENOMEM: return "out of memory (after releasing the pool's cache and retrying)";
    case ENODEV: return "no usable CUDA driver or device";
    case ENOTSUP: return "not supported here (NUMA placement refused or unavailable)";
    case EBUSY: return "pool still has acquired blocks";
    case EIO: return "input/output error (stats could not be written)";
    default: return "unknown mempool error";
    }
}
