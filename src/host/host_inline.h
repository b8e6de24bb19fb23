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

static inline void mp_count_inuse(mp_tclass_t *c, unsigned cls, int64_t bytes)
{
    int64_t d = MP_LOAD(c->inuse_delta) + bytes;
    if (mp_unlikely(d >= MP_PUBLISH_BYTES || d <= -MP_PUBLISH_BYTES)) {
        mp_host_publish(cls, d);
        d = 0;
    }
    atomic_store_explicit(&c->inuse_delta, d, memory_order_relaxed);
}

__attribute__((always_inline)) static inline void *mp_malloc(size_t size)
{
    mp_tcache_t *tc = mp_tls_tcache;
    if (mp_likely(tc != NULL)) {
        unsigned cls = mp_size_class_of(&mp_sc, size);
        if (mp_likely(cls < MP_CLASS_MAX)) {
            mp_tclass_t *b = &tc->cl[cls];
            if (mp_likely(b->count != 0)) {
                void *p = b->slots[--b->count];
                MP_BUMP(b->hits, 1);
                MP_BUMP(b->req_bytes, size);
                mp_count_inuse(b, cls, (int64_t)b->size);
                return p;
            }
        }
    }
    return mp_host_malloc_slow(size);
}

__attribute__((always_inline)) static inline void mp_free(void *p)
{
    uintptr_t off = (uintptr_t)p - mp_heap.base;
    if (mp_likely(off < mp_heap.class_span)) {
        unsigned cls = mp_class_of_offset(off);
        mp_tcache_t *tc = mp_tls_tcache;
        if (mp_likely(tc != NULL)) {
            mp_tclass_t *b = &tc->cl[cls];
            if (mp_likely(b->count < b->cap)) {
                b->slots[b->count++] = p;
                MP_BUMP(b->releases, 1);
                mp_count_inuse(b, cls, -(int64_t)b->size);
                return;
            }
        }
        mp_host_free_slow(p, cls);
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
        unsigned cls = mp_class_of_offset(off);
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
