/*
 * Explicit pools of include/mempool.h: the host engine (api_host_pool.c), the
 * pressure monitor (pressure.c) and the registry the API keeps
 * (api_pools.c).  Device and pinned API pools live in device_pool.c.
 */
#ifndef MEMPOOL_POOL_H
#define MEMPOOL_POOL_H

#include "device_pool.h"
#include "host.h"
#include "mempool.h"

/* ---- api_host_pool.c: a host pool with its own cache, limits and counters --- */
#define MP_HPOOL_EXACT 3 /* scheme: reuse a block only for the same size */

typedef struct mp_hpool mp_hpool_t;
typedef struct mp_hpool_cfg {
    int scheme;       /* MP_SC_* or MP_HPOOL_EXACT */
    size_t max_block; /* larger requests are served, never cached */
    size_t align;     /* power of two >= 16 */
    uint64_t cache_limit, max_blocks; /* 0: no limit */
    int numa;         /* node, or -1 */
    bool zero;        /* zero at release */
} mp_hpool_cfg_t;

/* 0 or -ENOMEM. */
int mp_hpool_create(const mp_hpool_cfg_t *cfg, mp_hpool_t **out);
/* 0, or -EBUSY while blocks are acquired. */
int mp_hpool_destroy(mp_hpool_t *hp);
/* Acquire and release: inline in api_host_pool.h. */
size_t mp_hpool_trim(mp_hpool_t *hp, size_t target);
/* 1 if p is a block (live or cached) of this pool. */
int mp_hpool_holds(mp_hpool_t *hp, const void *p);
void mp_hpool_stats(mp_hpool_t *hp, mp_device_stats_t *out);

/* ---- pressure.c ---------------------------------------------------------- */
/* Memory a kind can still use: bytes available and total (host: the
 * smaller of the system and the cgroup limit; device: cuMemGetInfo of the
 * current context).  Returns false when unknown. */
typedef bool (*mp_mem_reader_fn)(int kind, uint64_t *avail, uint64_t *total);
bool mp_pressure_read(int kind, uint64_t *avail, uint64_t *total);
/* Tests: replace the readers (NULL restores them). */
void mp_pressure_set_reader(mp_mem_reader_fn fn);
/* Start the monitor thread (once; idempotent); wake it if it is parked. */
void mp_pressure_kick(void);
/* api_pools.c: one check of every monitored pool; bytes freed. */
size_t mp_pools_pressure_check(void);
/* api_pools.c: 1 if any monitored pool caches something (else the monitor parks). */
bool mp_pools_pressure_idle(void);
/* fork(): the registry lock and every pool's locks are held across it
 * (prepare), then released in the parent and the child (release). */
void mp_pools_fork_prepare(void);
void mp_pools_fork_release(void);
/* In a forked child: the monitor thread did not survive. */
void mp_pressure_fork_child(void);

/* ---- api_pools.c ------------------------------------------------------------ */
/* Count and report a refused release (one mempool: line); -EINVAL. */
int mp_api_release_error(mempool_t *pool, const void *p, bool twice);
/* The pools to report, at most MP_API_POOLS_MAX: the defaults (when
 * with_defaults, and usable), then the custom pools without MEMPOOL_NO_STATS. */
#define MP_API_POOLS_MAX (MP_DPOOL_API_MAX + 3)
unsigned mp_pools_list(mempool_t **list, bool with_defaults);
/* One pool as the report shows it. */
typedef struct mp_pool_view {
    mempool_stats_t stats;
    const char *kind_name; /* "host", "pinned", "device" */
    bool is_default;
    double threshold; /* its pressure threshold (0 = none) */
} mp_pool_view_t;
void mp_pool_view(mempool_t *pool, mp_pool_view_t *v);
/* Whether pool is a live pool handle. */
bool mp_pool_valid(const mempool_t *pool);

#endif
