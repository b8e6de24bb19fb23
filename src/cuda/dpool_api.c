/*
 * The device and pinned pools of the explicit API (mempool_create in
 * api_pools.c): their own configuration, the same books, fences and
 * releases as the preload's pools.
 */
#include <string.h>

#include "cuda_driver.h"
#include "dpool.h"

/* ---- pools of the explicit API (api_pools.c) ----------------------------- */

void mp_dp_copy_stats(dev_pool_t *pl, mp_device_stats_t *out);

int mp_dpool_current(void) { return mp_dp_current_pool(); }

int mp_dpool_open(const mp_dpool_cfg_t *cfg)
{
    pthread_once(&mp_dp_once, mp_dp_init);
    pthread_mutex_lock(&mp_dp_claim_lock);
    int idx = -1;
    for (int i = MP_API_BASE; i < MP_NPOOLS && idx < 0; i++)
        if (!mp_dpools[i].api)
            idx = i;
    if (idx >= 0) {
        dev_pool_t *pl = &mp_dpools[idx];
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
    pthread_mutex_unlock(&mp_dp_claim_lock);
    return idx;
}

int mp_dpool_close(int idx)
{
    if (idx < MP_API_BASE || idx >= MP_NPOOLS)
        return -1;
    dev_pool_t *pl = &mp_dpools[idx];
    pthread_mutex_lock(&mp_dp_claim_lock);
    pthread_mutex_lock(&pl->lock);
    if (pl->st.in_use != 0) {
        pthread_mutex_unlock(&pl->lock);
        pthread_mutex_unlock(&mp_dp_claim_lock);
        return -1;
    }
    trim_goal_t g;
    mp_dp_release_cached(pl, &g);
    pthread_mutex_unlock(&pl->lock);
    mp_dp_trim_finish(pl, &g);
    pthread_mutex_lock(&pl->lock);
    pthread_mutex_t keep = pl->lock;
    memset(pl, 0, sizeof(*pl));
    pl->lock = keep;
    pl->ordinal = pl->st.device = -1;
    pl->scheme = pl->numa = -1;
    pthread_mutex_unlock(&pl->lock);
    pthread_mutex_unlock(&mp_dp_claim_lock);
    return 0;
}

mp_cu_result mp_dpool_alloc(int idx, mp_cu_ptr *out, size_t size, mp_cu_stream s, bool async)
{
    if (idx < 0 || idx >= MP_NPOOLS)
        return MP_CUDA_ERROR_INVALID_VALUE;
    return mp_dp_pool_alloc(&mp_dpools[idx], idx, out, size ? size : 1, s, async);
}

int mp_dpool_free(int idx, mp_cu_ptr p, mp_cu_stream s, bool async)
{
    dblock_t *b;
    if (mp_dp_table_take(p, &b) <= 0)
        return -1;
    if (b->pool != idx) {
        mp_dp_table_untake(b);
        return -1;
    }
    mp_dp_pool_put(&mp_dpools[idx], b, s, async);
    return 0;
}

int mp_dpool_owner(mp_cu_ptr p) { return mp_dp_live_pool(p); }

size_t mp_dpool_trim(int idx, size_t target)
{
    if (idx < 0 || idx >= MP_NPOOLS || !mp_cuda.loaded)
        return 0;
    pthread_once(&mp_dp_once, mp_dp_init);
    dev_pool_t *pl = &mp_dpools[idx];
    trim_goal_t g = {(int64_t)(target > INT64_MAX ? INT64_MAX : target), INT64_MAX, target == 0, 0, NULL, NULL};
    pthread_mutex_lock(&pl->lock);
    size_t freed = atomic_load(&mp_captures) == 0 ? mp_dp_release_to(pl, &g) : 0;
    pthread_mutex_unlock(&pl->lock);
    mp_dp_trim_finish(pl, &g);
    return freed;
}

void mp_dpool_stats(int idx, mp_device_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    out->device = -1;
    if (idx >= 0 && idx < MP_NPOOLS)
        mp_dp_copy_stats(&mp_dpools[idx], out);
}

