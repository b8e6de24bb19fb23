/*
 * Giving cached device and pinned blocks back to the driver: trims, cache
 * limits, out-of-memory releases.  What goes is collected under the pool
 * lock (the books change there) and freed after it is released: the
 * driver's frees wait for the device, and no pool lock is held across a
 * call that can wait.
 */
#include "cuda_driver.h"
#include "dpool.h"

/* A free segment leaves the pool (pool locked). */
static size_t seg_release(dev_pool_t *pl, segment_t *sg, int cls, trim_goal_t *g)
{
    size_t size = sg->size;
    for (segment_t **pp = &pl->carving[cls]; *pp; pp = &(*pp)->carve_next)
        if (*pp == sg) {
            *pp = sg->carve_next;
            break;
        }
    pl->st.reserved -= (int64_t)size;
    pl->st.segments--;
    mp_dp_seg_unhash(sg);
    sg->carve_next = g->doomed_segs;
    g->doomed_segs = sg;
    return size;
}

/* Free what a release collected (pool unlocked). */
void mp_dp_trim_finish(dev_pool_t *pl, trim_goal_t *g)
{
    while (g->doomed) {
        dblock_t *b = g->doomed;
        g->doomed = b->next;
        mp_dp_raw_free(pl, b->ptr, b->size);
        mp_dp_rec_free(b);
    }
    while (g->doomed_segs) {
        segment_t *sg = g->doomed_segs;
        g->doomed_segs = sg->carve_next;
        mp_dp_raw_free(pl, sg->base, sg->size);
        mp_dp_seg_free(sg);
    }
}

bool mp_dp_goal_met(const dev_pool_t *pl, const trim_goal_t *g)
{
    return pl->st.cached <= g->bytes && pl->st.cached_blocks <= g->blocks;
}

void mp_dp_uncache(dev_pool_t *pl, dblock_t *b, bool pending)
{
    pl->st.cached -= (int64_t)b->size;
    pl->st.cached_blocks--;
    if (pending) {
        pl->pending_n--;
        pl->pending_bytes -= b->size;
    }
    if (b->ev) { /* released on a stream: its event goes back */
        mp_ctx_event_put(b->ev_slot, b->ev, b->ev_epoch, true);
        b->ev = NULL;
    }
}

/* Release the cached blocks of chain b that can go back to the driver
 * (pool locked) until the goal is met: whole-block segments always, packed
 * blocks when none of their segment's blocks is in use.  Returns the
 * blocks that stay. */
static dblock_t *release_chain(dev_pool_t *pl, dblock_t *b, bool pending, void *arg)
{
    trim_goal_t *g = arg;
    dblock_t *keep = NULL, **tail = &keep;
    while (b) {
        dblock_t *next = b->next;
        segment_t *sg = b->seg;
        if (mp_dp_goal_met(pl, g) || (sg && (sg->in_use > 0 || !g->all))) {
            *tail = b;
            tail = &b->next;
            b = next;
            continue;
        }
        mp_dp_uncache(pl, b, pending);
        pl->st.trims++;
        mp_dp_table_remove(b);
        if (sg == NULL) {
            pl->st.reserved -= (int64_t)b->size;
            pl->st.segments--;
            g->freed += b->size;
            b->next = g->doomed;
            g->doomed = b;
        } else {
            if (++sg->dropped == sg->carved)
                g->freed += seg_release(pl, sg, b->cls, g);
            mp_dp_rec_free(b);
        }
        b = next;
    }
    *tail = NULL;
    return keep;
}

/* Collect cached blocks until the goal is met, oldest first: pending and
 * fenced ones, then those released on streams, then ready ones from the
 * largest class down (pool locked; trim_finish frees them).  cuMemFree
 * waits for the device, so no block is freed under a running kernel.
 * Returns bytes to be freed. */
size_t mp_dp_release_to(dev_pool_t *pl, trim_goal_t *g)
{
    pl->pending = release_chain(pl, pl->pending, true, g);
    mp_dp_filter_fenced(pl, release_chain, g);
    for (int c = MP_DEV_CLASSES - 1; c >= 0; c--)
        pl->streamq[c] = release_chain(pl, pl->streamq[c], false, g);
    for (int c = MP_DEV_CLASSES - 1; c >= 0; c--)
        pl->ready[c] = release_chain(pl, pl->ready[c], false, g);
    /* Segments none of whose blocks is in use or cached (not carved yet). */
    if (g->all)
        for (int c = 0; c < MP_DEV_CLASSES; c++)
            for (segment_t *sg = pl->carving[c], *next; sg; sg = next) {
                next = sg->carve_next;
                if (sg->in_use == 0 && sg->dropped == sg->carved)
                    g->freed += seg_release(pl, sg, c, g);
            }
    return g->freed;
}

/* Collect every cached block that can be freed (pool locked). */
size_t mp_dp_release_cached(dev_pool_t *pl, trim_goal_t *g)
{
    *g = (trim_goal_t){0, 0, true, 0, NULL, NULL};
    return mp_dp_release_to(pl, g);
}

/* The pool of the current context, claiming a free slot for a context seen
 * for the first time; -1 (pass through) without a driver or context. */
/* Free every cached block of the pools i in [from, to) that `want`
 * selects (pool locked while collecting, unlocked while freeing). */
static size_t release_pools(int from, int to, bool (*want)(const dev_pool_t *, int, int), int arg)
{
    size_t freed = 0;
    for (int i = from; i < to; i++) {
        dev_pool_t *pl = &mp_dpools[i];
        trim_goal_t g = {0, 0, true, 0, NULL, NULL};
        pthread_mutex_lock(&pl->lock);
        if (want(pl, i, arg))
            freed += mp_dp_release_cached(pl, &g);
        pthread_mutex_unlock(&pl->lock);
        mp_dp_trim_finish(pl, &g);
    }
    return freed;
}

static bool on_device(const dev_pool_t *pl, int i, int dev)
{
    return !pl->pinned && pl->ordinal == dev && (i >= MP_DEV_MAX ? pl->api : mp_ctx_handle(i) != NULL);
}

static bool is_pinned(const dev_pool_t *pl, int i, int unused)
{
    (void)i, (void)unused;
    return pl->pinned;
}

size_t mp_device_trim(int dev)
{
    if (!mp_cuda.loaded)
        return 0;
    pthread_once(&mp_dp_once, mp_dp_init);
    return release_pools(0, MP_DEV_MAX, on_device, dev);
}

size_t mp_device_release_for_oom(bool pinned)
{
    if (!mp_cuda.loaded || atomic_load(&mp_captures) != 0)
        return 0;
    pthread_once(&mp_dp_once, mp_dp_init);
    if (pinned)
        return release_pools(MP_DEV_MAX, MP_NPOOLS, is_pinned, 0);
    int dev = mp_device_of_context(NULL);
    return dev < 0 ? 0 : release_pools(0, MP_NPOOLS, on_device, dev);
}

size_t mp_device_cached_on(int dev)
{
    if (!atomic_load_explicit(&mp_dp_inited, memory_order_acquire))
        return 0;
    size_t bytes = 0;
    for (int i = 0; i < MP_NPOOLS; i++) {
        dev_pool_t *pl = &mp_dpools[i];
        pthread_mutex_lock(&pl->lock);
        if (on_device(pl, i, dev) && pl->st.reserved > pl->st.in_use)
            bytes += (size_t)(pl->st.reserved - pl->st.in_use);
        pthread_mutex_unlock(&pl->lock);
    }
    return bytes;
}

