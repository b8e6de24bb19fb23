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

/* Take the orphans (blocks of a context that is gone) out of chain b
 * (pool locked): their records go with the block table's scan.  Returns
 * the blocks that stay. */
static dblock_t *prune_chain(dev_pool_t *pl, dblock_t *b, bool pending, void *unused)
{
    (void)unused;
    dblock_t *keep = NULL, **tail = &keep;
    for (dblock_t *next; b; b = next) {
        next = b->next;
        if (!mp_dp_orphan(b)) {
            *tail = b;
            tail = &b->next;
            continue;
        }
        mp_dp_uncache(pl, b, pending);
        pl->st.reserved -= (int64_t)b->size; /* pinned and API blocks are never packed */
        pl->st.segments--;
    }
    *tail = NULL;
    return keep;
}

/* A pool that serves several contexts (pinned pools, the API's pools):
 * drop the blocks of the contexts that are gone (pool locked). */
static void prune_pool(dev_pool_t *pl)
{
    pl->pending = prune_chain(pl, pl->pending, true, NULL);
    mp_dp_filter_fenced(pl, prune_chain, NULL);
    for (int c = 0; c < MP_DEV_CLASSES; c++) {
        pl->ready[c] = prune_chain(pl, pl->ready[c], false, NULL);
        pl->streamq[c] = prune_chain(pl, pl->streamq[c], false, NULL);
    }
}

/* The contexts of the slots in `set` are gone (reset, destroyed): their
 * memory went with them.  Their context pools are emptied, every other
 * pool loses the blocks of those contexts, and the records no thread holds
 * go; a block the program still holds stays known until it is freed (then
 * forwarded to the driver, which reports it).  Safe against threads that
 * allocate and free meanwhile: a block leaves a list and becomes live
 * under its pool's lock, and a free checks the block's context generation
 * under that lock too. */
static void drop_slots(uint32_t set)
{
    pthread_once(&mp_dp_once, mp_dp_init);
    bool gone[MP_NPOOLS] = {false};
    pthread_mutex_lock(&mp_dp_claim_lock);
    for (int i = 0; i < MP_DEV_MAX; i++)
        if ((set & (1u << i)) && mp_ctx_handle(i) != NULL) {
            gone[i] = true;
            pthread_mutex_lock(&mp_dpools[i].lock); /* in index order; no other path holds two */
        }
    for (int i = 0; i < MP_DEV_MAX; i++)
        if (gone[i]) { /* first every slot: then no dead event is put back */
            mp_ctx_forget(i);
            atomic_store(&mp_dp_pool_owner[i], NULL);
        }
    for (int i = 0; i < MP_DEV_MAX; i++)
        if (gone[i]) {
            forget_pool(&mp_dpools[i]);
            pthread_mutex_unlock(&mp_dpools[i].lock);
        }
    for (int i = MP_DEV_MAX; i < MP_NPOOLS; i++) {
        pthread_mutex_lock(&mp_dpools[i].lock);
        prune_pool(&mp_dpools[i]);
        pthread_mutex_unlock(&mp_dpools[i].lock);
    }
    pthread_mutex_unlock(&mp_dp_claim_lock);
    mp_dp_books_forget(gone);
}

/* A reset (or the last release) of device dev's primary context: that
 * context only (none if the pools never served it); every context of the
 * device if the driver cannot tell which is primary (a leak of the others'
 * cache at worst). */
void mp_device_drop(int dev)
{
    if (dev < 0 || dev >= MP_DEV_MAX)
        return;
    int slot = mp_ctx_primary_slot(dev);
    if (slot >= 0)
        drop_slots(1u << slot);
    else if (slot == -2)
        drop_slots(mp_ctx_slots_of_device(dev));
}

void mp_device_drop_context(mp_cu_context ctx)
{
    int slot = mp_ctx_slot_of(ctx);
    if (slot >= 0)
        drop_slots(1u << slot);
}

void mp_device_stream_destroyed(mp_cu_stream s)
{
    if (s == NULL || !atomic_load_explicit(&mp_dp_inited, memory_order_acquire))
        return;
    /* A later stream may get the same handle: blocks released on this one
     * are reused only after their event from now on. */
    for (int i = 0; i < MP_NPOOLS; i++) {
        dev_pool_t *pl = &mp_dpools[i];
        pthread_mutex_lock(&pl->lock);
        for (int c = 0; c < MP_DEV_CLASSES; c++)
            for (dblock_t *b = pl->streamq[c]; b; b = b->next)
                if (b->stream == s)
                    b->stream = NULL;
        pthread_mutex_unlock(&pl->lock);
    }
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
