/*
 * The host hit path: malloc and free of a pooled size class served from
 * the calling thread's cache, with no lock, no atomic read-modify-write and
 * no jemalloc call.  Everything else goes to the out-of-line slow paths in
 * malloc_pools.c.  Included by the preload (and tests) so that the fast path
 * is inlined into the exported functions.
 */
#ifndef MEMPOOL_HOST_INLINE_H
#define MEMPOOL_HOST_INLINE_H

#include "host.h"

/* Bytes in use are published in MP_PUBLISH_BYTES steps: true when d has
 * reached a step either way (one add and one compare). */
static inline bool mp_publish_due(int64_t d)
{
    return (uint64_t)(d + MP_PUBLISH_BYTES - 1) > (uint64_t)(2 * MP_PUBLISH_BYTES - 2);
}

/* malloc's hit path; a miss returns miss(size), a tail call (a caller
 * that handles failure, operator new, passes its own and so keeps no
 * register or test of its own on the hit path). */
typedef void *(*mp_miss_fn)(size_t size);
__attribute__((always_inline)) static inline void *mp_malloc_or(size_t size, mp_miss_fn miss)
{
    mp_tcache_t *tc = mp_tls_tcache;
    if (mp_likely(tc != NULL)) {
        size_t cls = mp_size_class_of(&mp_sc, size); /* MP_CLASS_NONE: an empty bin */
        mp_tclass_t *b = &tc->cl[cls];
        if (mp_likely(b->count != 0)) {
            void *p = b->slots[--b->count];
            b->hits++;
            b->req_bytes += size;
            int64_t d = b->inuse_delta + (int64_t)b->size;
            if (mp_unlikely(mp_publish_due(d))) {
                b->inuse_delta = 0;
                return mp_host_publish_alloc((unsigned)cls, d, p);
            }
            b->inuse_delta = d;
            return p;
        }
    }
    return miss(size);
}

__attribute__((always_inline)) static inline void *mp_malloc(size_t size)
{
    return mp_malloc_or(size, mp_host_malloc_slow);
}

__attribute__((always_inline)) static inline void mp_free(void *p)
{
    uintptr_t off = (uintptr_t)p - mp_heap.base;
    if (mp_likely(off < mp_heap.class_span)) {
        uintptr_t cls = mp_class_of_offset(off);
        mp_tcache_t *tc = mp_tls_tcache;
        if (mp_likely(tc != NULL)) {
            mp_tclass_t *b = &tc->cl[cls];
            if (mp_likely(b->count < b->cap)) {
                b->slots[b->count++] = p;
                b->releases++;
                int64_t d = b->inuse_delta - (int64_t)b->size;
                if (mp_unlikely(mp_publish_due(d))) {
                    b->inuse_delta = 0;
                    mp_host_publish((unsigned)cls, d);
                    return;
                }
                b->inuse_delta = d;
                return;
            }
        }
        mp_host_free_slow(p, (unsigned)cls);
        return;
    }
    mp_host_free_other(p);
}

/* ---- malloc_api.c: the rest of the malloc family, with libc semantics ---- */
void *mp_calloc(size_t n, size_t size);
void *mp_realloc_slow(void *p, size_t size);

/* realloc within the block's size class (a buffer growing a few bytes at a
 * time) returns the same block without leaving the inline path. */
__attribute__((always_inline)) static inline void *mp_realloc(void *p, size_t size)
{
    uintptr_t off = (uintptr_t)p - mp_heap.base;
    if (mp_likely(off < mp_heap.class_span && size != 0)) {
        uintptr_t cls = mp_class_of_offset(off);
        if (size <= mp_sc.realloc_max[cls] && size >= mp_sc.realloc_max[cls] / 2)
            return p; /* fits, and shrinking by less than half keeps it */
    }
    return mp_realloc_slow(p, size);
}
void *mp_reallocarray(void *p, size_t n, size_t size);
int mp_posix_memalign(void **out, size_t align, size_t size);
void *mp_aligned_alloc(size_t align, size_t size);
void *mp_memalign(size_t align, size_t size);
void *mp_valloc(size_t size);
void *mp_pvalloc(size_t size);
size_t mp_usable_size(void *p);
int mp_malloc_trim(size_t pad);
/* operator new: retries through std::get_new_handler, throws std::bad_alloc. */
void *mp_cxx_new(size_t size, size_t align, bool nothrow);

#endif
