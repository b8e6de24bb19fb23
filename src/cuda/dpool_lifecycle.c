/*
 * What happens to the device pools around them: stats snapshots, context
 * resets and destruction (the memory is gone: forget it), fork (the
 * child starts empty), and the device of a context.
 */
#include <string.h>

#include "cuda_driver.h"
#include "dpool.h"

void mp_pool_class_stats(int pool, mp_dev_class_stats_t out[MP_DEV_CLASSES])
{
    memset(out, 0, sizeof(mp_dev_class_stats_t) * MP_DEV_CLASSES);
    if (pool < 0 || pool >= MP_DEV_MAX + MP_PINNED_POOLS || !atomic_load_explicit(&mp_dp_inited, memory_order_acquire))
        return;
    pthread_mutex_lock(&mp_dpools[pool].lock);
    memcpy(out, mp_dpools[pool].cls, sizeof(mp_dpools[pool].cls));
    pthread_mutex_unlock(&mp_dpools[pool].lock);
}

void mp_dp_copy_stats(dev_pool_t *pl, mp_device_stats_t *out)
{
    if (!atomic_load_explicit(&mp_dp_inited, memory_order_acquire))
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
        mp_dp_copy_stats(&mp_dpools[MP_DEV_MAX + flags], out);
}

void mp_device_stats(int slot, mp_device_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    out->device = -1;
    if (slot >= 0 && slot < MP_DEV_MAX)
        mp_dp_copy_stats(&mp_dpools[slot], out);
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
        mp_dp_batch_free(f);
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
    pthread_once(&mp_dp_once, mp_dp_init);
    bool gone[MP_NPOOLS] = {false};
    pthread_mutex_lock(&mp_dp_claim_lock);
    for (int i = 0; i < MP_NPOOLS; i++) {
        dev_pool_t *pl = &mp_dpools[i];
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
                atomic_store(&mp_dp_pool_owner[i], NULL);
            }
        }
        pthread_mutex_unlock(&pl->lock);
    }
    for (int i = 0; i < MP_NPOOLS; i++)
        if (gone[i]) { /* after every gone context is forgotten: no dead event is kept */
            pthread_mutex_lock(&mp_dpools[i].lock);
            forget_pool(&mp_dpools[i]);
            pthread_mutex_unlock(&mp_dpools[i].lock);
        }
    pthread_mutex_unlock(&mp_dp_claim_lock);
    mp_dp_books_forget(gone);
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
    if (!atomic_load_explicit(&mp_dp_inited, memory_order_acquire))
        return; /* no CUDA call yet */
    for (int i = 0; i < MP_NPOOLS; i++) {
        dev_pool_t *pl = &mp_dpools[i];
        pthread_mutex_lock(&pl->lock);
        out[pl->pinned ? 2 : 0] += pl->st.in_use;
        out[pl->pinned ? 3 : 1] += pl->st.reserved;
        pthread_mutex_unlock(&pl->lock);
    }
}

void mp_device_fork_child(void)
{
    mp_dp_books_fork_child();
    for (int i = 0; i < MP_DEV_MAX; i++)
        atomic_store(&mp_dp_pool_owner[i], NULL);
    mp_ctx_fork_child();
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

