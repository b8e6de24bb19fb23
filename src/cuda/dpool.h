/*
 * The device pools' shared books (src/cuda/dpool_*.c): the
 * records of blocks, segments and fenced batches, the pool table, and the
 * functions the files of the device pools call on each other.  Not part of
 * the module's interface (device_pool.h is).
 *
 * Files: dpool_alloc.c (size classes, allocation and release, the hit
 * path), dpool_fence.c (batches of freed blocks behind fences),
 * dpool_books.c (records, the block table, segments, driver memory),
 * dpool_release.c (trims and releases: collected under the pool lock,
 * freed after it), dpool_api.c (the explicit API's pools),
 * dpool_lifecycle.c (stats, context resets, fork).
 * Lock order: mp_dp_claim_lock, a pool's lock, then the block table's,
 * segment and slab locks (leaves), and cuda_ctx.c's slot locks (leaves).
 * Error convention: CUresult for what reaches the driver, 1/0/-1 (done,
 * not ours, refused) for frees, NULL for "none".
 */
#ifndef MEMPOOL_DPOOL_H
#define MEMPOOL_DPOOL_H

#include <pthread.h>

#include "cuda_ctx.h"
#include "device_pool.h"

typedef struct segment {
    mp_cu_ptr base;
    size_t size;    /* bytes taken from the driver */
    size_t block;   /* class size of its blocks */
    unsigned nblocks, carved, in_use, dropped;
    int pool;
    struct segment *next;       /* hash chain */
    struct segment *carve_next; /* the pool's segments with uncarved blocks */
} segment_t;

typedef struct dblock {
    mp_cu_ptr ptr;
    size_t size; /* class size, or the request when unpooled */
    size_t req;  /* bytes the program asked for (what address-range queries report) */
    int cls;     /* -1: unpooled */
    int pool;
    bool exported;  /* IPC handle taken: never reused */
    bool dirty;     /* zero-on-release block not zeroed yet (released during a capture) */
    segment_t *seg; /* packed: the segment it was carved from */
    uint8_t state;  /* MP_BLK_*: a free of a block not live is a second free */
    int ctx_slot;     /* the context its memory belongs to (cuda_ctx.c slot) ... */
    uint64_t ctx_gen; /* ... in this generation of the slot: else an orphan */
    mp_cu_stream stream; /* released on this stream (stream-ordered release) */
    mp_cu_event ev;      /* ... after this event: reusable by other streams once done */
    int ev_slot;         /* the context slot the event belongs to */
    uint64_t ev_epoch;   /* ... and which context that slot served then */
    struct dblock *next;  /* the pool's lists */
    struct dblock *hnext; /* the block table's chain */
} dblock_t;

typedef struct batch {
    dblock_t *blocks;
    struct batch *next; /* newer */
    mp_fence_t fence;
} batch_t;

typedef struct dev_pool {
    pthread_mutex_t lock;
    bool pinned;    /* page-locked host memory (cuMemHostAlloc) */
    unsigned flags; /* cuMemHostAlloc flags of a pinned pool */
    int ordinal;    /* device of a context pool */
    dblock_t *ready[MP_DEV_CLASSES];
    segment_t *carving[MP_DEV_CLASSES]; /* segments with blocks not yet carved */
    dblock_t *pending;
    unsigned pending_n;   /* blocks and bytes waiting for a fence */
    size_t pending_bytes;
    batch_t *fenced, *fenced_tail; /* oldest first */
    mp_device_stats_t st;
    _Atomic uint64_t wait_ns; /* in driver frees, which wait for the device */
    mp_dev_class_stats_t cls[MP_DEV_CLASSES];
    /* Pools of the explicit API (mempool_create) carry their own config. */
    bool api, exact, zero;
    int scheme;         /* MP_SC_* of the classes; -1: MEMPOOL_DEVICE_SIZE_CLASSES */
    int numa;           /* pinned: NUMA node of the pages (-1: no policy) */
    mp_cu_context ctx;  /* the context the pool's blocks live in (API pools) */
    size_t max_block;   /* larger requests are not cached */
    uint64_t cache_limit, max_blocks; /* 0: none */
    dblock_t *streamq[MP_DEV_CLASSES]; /* released on a stream, event recorded */
} dev_pool_t;

enum { MP_BLK_LIVE, MP_BLK_CACHED, MP_BLK_FREEING /* taken from the table, on its way to the pool */ };

/* A block whose context is gone (reset, destroyed): its memory with it. */
static inline bool mp_dp_orphan(const dblock_t *b) { return mp_ctx_gen(b->ctx_slot) != b->ctx_gen; }

/* Context pools 0..MP_DEV_MAX-1 (pool i serves context slot i), then
 * one pinned pool per flag combination (portable, mapped, write-combined
 * never mix), then the explicit API's pools. */
#define MP_PINNED_POOLS 8
#define MP_API_BASE (MP_DEV_MAX + MP_PINNED_POOLS)
#define MP_NPOOLS (MP_API_BASE + MP_DPOOL_API_MAX)
extern dev_pool_t mp_dpools[MP_NPOOLS];
extern pthread_mutex_t mp_dp_claim_lock;
/* The context each context pool was set up for (dpool_alloc.c). */
extern _Atomic(mp_cu_context) mp_dp_pool_owner[MP_DEV_MAX];
extern _Atomic bool mp_dp_inited;
extern pthread_once_t mp_dp_once;
void mp_dp_init(void);

/* Remove node from the singly linked hash chain at *head (linked through
 * its field `link`), if it is there. */
#define MP_CHAIN_UNLINK(type, head, node, link)          \
    do {                                                  \
        type **pp_ = (head);                              \
        while (*pp_ && *pp_ != (node))                    \
            pp_ = &(*pp_)->link;                          \
        if (*pp_)                                         \
            *pp_ = (node)->link;                          \
    } while (0)

/* ---- dpool_books.c ---------------------------------------------------- */
/* Driver memory of the pool's kind; mp_dp_raw_free waits for the device
 * (never call it with a pool locked). */
mp_cu_result mp_dp_raw_alloc(dev_pool_t *pl, mp_cu_ptr *p, size_t size);
void mp_dp_raw_free(dev_pool_t *pl, mp_cu_ptr p, size_t size);
/* Records from mapped slabs (the shim never mallocs for its books). */
void *mp_dp_rec_new(void);
void mp_dp_rec_free(void *p);
batch_t *mp_dp_batch_new(void);
void mp_dp_batch_free(batch_t *f);
/* The block table: every block the shim made, handed out or cached. */
void mp_dp_table_add(dblock_t *b);
void mp_dp_table_mark_live(dblock_t *b);
void mp_dp_table_remove(dblock_t *b);
int mp_dp_table_take(mp_cu_ptr p, dblock_t **out);
void mp_dp_table_untake(dblock_t *b);
/* A taken block joins its pool's lists (pool locked). */
void mp_dp_table_cache(dblock_t *b);
/* Free the records of orphan blocks no list or thread holds (cached ones:
 * the pools have pruned them from their lists; live ones stay until the
 * program frees them) and the segments of the pools marked gone. */
void mp_dp_books_forget(const bool gone[MP_NPOOLS]);
void mp_dp_books_fork_child(void);
segment_t *mp_dp_seg_new(mp_cu_ptr base, size_t size, size_t block, int pool);
void mp_dp_seg_unhash(segment_t *sg);
void mp_dp_seg_free(segment_t *sg);
/* The pool of a handed-out block starting at p, or -1. */
int mp_dp_live_pool(mp_cu_ptr p);

/* ---- dpool_fence.c ---------------------------------------------------- */
void mp_dp_collect(dev_pool_t *pl);
bool mp_dp_batch_ready(const dev_pool_t *pl);
void mp_dp_fence_pending(dev_pool_t *pl, int idx);
/* Run fn over the blocks of every fenced batch (pool locked): fn returns
 * the blocks that stay (pending: whether chain is the pending list). */
typedef dblock_t *(*mp_dp_chain_fn)(dev_pool_t *pl, dblock_t *chain, bool pending, void *arg);
void mp_dp_filter_fenced(dev_pool_t *pl, mp_dp_chain_fn fn, void *arg);

/* ---- dpool_release.c -------------------------------------------------- */
/* How far a release of cached blocks goes: down to these many bytes and
 * blocks.  Packed blocks go only in a full release (all = true), where
 * every block of a free segment goes together.  What is to go back to the
 * driver is collected under the pool lock and freed after it (trim_finish):
 * the driver's frees wait for the device. */
typedef struct trim_goal {
    int64_t bytes, blocks;
    bool all;
    size_t freed;          /* bytes to give back to the driver */
    dblock_t *doomed;      /* whole blocks, chained by next */
    segment_t *doomed_segs; /* chained by carve_next */
} trim_goal_t;

/* A cached block leaves the pool's books (pool locked; pending: it was on
 * the pending list). */
void mp_dp_uncache(dev_pool_t *pl, dblock_t *b, bool pending);
bool mp_dp_goal_met(const dev_pool_t *pl, const trim_goal_t *g);
size_t mp_dp_release_to(dev_pool_t *pl, trim_goal_t *g);
size_t mp_dp_release_cached(dev_pool_t *pl, trim_goal_t *g);
void mp_dp_trim_finish(dev_pool_t *pl, trim_goal_t *g);

/* ---- dpool_alloc.c ------------------------------------------------------ */
int mp_dp_current_pool(void);
mp_cu_result mp_dp_pool_alloc(dev_pool_t *pl, int idx, mp_cu_ptr *out, size_t size, mp_cu_stream s,
                              bool async);
/* Take back a block (marked in transit by mp_dp_table_take): false if it
 * was an orphan (its record freed; the caller forwards the pointer). */
bool mp_dp_pool_put(dev_pool_t *pl, dblock_t *b, mp_cu_stream s, bool async);

/* ---- dpool_lifecycle.c ------------------------------------------------ */
void mp_dp_copy_stats(dev_pool_t *pl, mp_device_stats_t *out);

#endif
