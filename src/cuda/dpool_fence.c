/*
 * Freed device and pinned blocks behind fences (a fence: cuda_ctx.c).  A
 * freed block waits in its pool's pending list; a batch of them is put
 * behind one fence when an allocation needs one and the batch is full; the
 * batches are checked oldest first and the check stops at the first that
 * is not done, so a busy device costs one query per allocation.
 */
#include "cuda_driver.h"
#include "dpool.h"

/* Blocks whose fence completed become ready (pool locked), oldest batch
 * first, stopping at the first not done; never waits. */
void mp_dp_collect(dev_pool_t *pl)
{
    if (!mp_ctx_driver_enter())
        return; /* a capture began: no query now */
    while (pl->fenced) {
        batch_t *f = pl->fenced;
        uint64_t queries = 0, errors = 0;
        bool done = mp_fence_done(&f->fence, &queries, &errors);
        pl->st.fence_queries += queries;
        pl->st.fence_errors += errors;
        if (!done) {
            pl->st.fences_pending++;
            break;
        }
        pl->st.fences_completed++;
        while (f->blocks) {
            dblock_t *b = f->blocks;
            f->blocks = b->next;
            if (b->dirty && mp_cuda.memset_async
                && mp_cuda.memset_async(b->ptr, 0, b->size, NULL) == MP_CUDA_SUCCESS) {
                b->dirty = false; /* zeroed in order: one more fence covers it */
                b->next = pl->pending;
                pl->pending = b;
                pl->pending_n++;
                pl->pending_bytes += b->size;
            } else if (b->dirty) {
                b->next = pl->pending; /* cannot zero it now: try again later */
                pl->pending = b;
                pl->pending_n++;
                pl->pending_bytes += b->size;
            } else {
                b->next = pl->ready[b->cls];
                pl->ready[b->cls] = b;
            }
        }
        pl->fenced = f->next;
        if (pl->fenced == NULL)
            pl->fenced_tail = NULL;
        mp_dp_batch_free(f);
    }
    mp_ctx_driver_leave();
}

/* The contexts whose work may touch the pool's blocks: a device pool's
 * own (an API pool's, else the current one), every context for pinned
 * memory, which any device may be copying. */
static uint32_t pool_slots(const dev_pool_t *pl, int idx)
{
    if (pl->pinned)
        return mp_ctx_slots_in_use();
    if (idx < MP_DEV_MAX)
        return 1u << idx;
    int slot = mp_ctx_slot_of(pl->ctx), dev;
    if (slot < 0)
        slot = mp_ctx_current_slot(&dev);
    return slot >= 0 ? 1u << slot : 0;
}

/* Whether the pending blocks are worth a fence now: a full batch (or
 * bytes), so that one record and one query serve many reuses of device
 * memory.  Pinned memory is page-locked host memory the whole system runs
 * short of, and pools of the explicit API promise the released block at
 * the next acquire: both fence at every reuse instead. */
bool mp_dp_batch_ready(const dev_pool_t *pl)
{
    uint64_t bytes = mp_opt(MP_OPT_DEVICE_FENCE_BYTES);
    return pl->api || pl->pinned || pl->pending_n >= mp_opt(MP_OPT_DEVICE_FENCE_BATCH) || bytes == 0
           || pl->pending_bytes >= bytes;
}

/* Put the pending blocks behind one new fence (pool locked). */
void mp_dp_fence_pending(dev_pool_t *pl, int idx)
{
    if (pl->pending == NULL)
        return;
    batch_t *f = mp_dp_batch_new();
    if (f == NULL)
        return;
    mp_fence_init(&f->fence);
    bool recorded = false;
    if (mp_ctx_driver_enter()) {
        recorded = mp_fence_record(&f->fence, pool_slots(pl, idx));
        mp_ctx_driver_leave();
    }
    if (!recorded) {
        pl->st.fence_errors++; /* no fence possible now: keep the blocks pending */
        mp_dp_batch_free(f);
        return;
    }
    pl->st.fences_recorded++;
    f->blocks = pl->pending;
    pl->pending = NULL;
    pl->pending_n = 0;
    pl->pending_bytes = 0;
    if (pl->fenced_tail)
        pl->fenced_tail->next = f;
    else
        pl->fenced = f;
    pl->fenced_tail = f;
}


void mp_dp_filter_fenced(dev_pool_t *pl, mp_dp_chain_fn fn, void *arg)
{
    batch_t *prev = NULL;
    for (batch_t *f = pl->fenced, *next; f; f = next) {
        next = f->next;
        f->blocks = fn(pl, f->blocks, false, arg);
        if (f->blocks) {
            prev = f;
            continue;
        }
        if (prev) /* an emptied batch goes, its fence's events back */
            prev->next = next;
        else
            pl->fenced = next;
        if (pl->fenced_tail == f)
            pl->fenced_tail = prev;
        mp_fence_release(&f->fence);
        mp_dp_batch_free(f);
    }
}
