/*
 * The exported malloc family.  Each function only forwards into the core
 * (src/); malloc and free inline the hit path from src/host/host_inline.h.
 * glibc's own entry points (__libc_malloc & co., cfree) are exported too,
 * so that no pointer made here is ever freed by a different allocator.
 */
#include <errno.h>
#include <stddef.h>

#include "host_inline.h"
#include "export.h"

MP_EXPORT void *malloc(size_t size) { return mp_malloc(size); }
MP_EXPORT void free(void *p) { mp_free(p); }
MP_EXPORT void *calloc(size_t n, size_t size) { return mp_calloc(n, size); }
MP_EXPORT void *realloc(void *p, size_t size) { return mp_realloc(p, size); }
MP_EXPORT void *reallocarray(void *p, size_t n, size_t size) { return mp_reallocarray(p, n, size); }
MP_EXPORT int posix_memalign(void **out, size_t align, size_t size)
{
    return mp_posix_memalign(out, align, size);
}
MP_EXPORT void *aligned_alloc(size_t align, size_t size) { return mp_aligned_alloc(align, size); }
MP_EXPORT void *memalign(size_t align, size_t size) { return mp_memalign(align, size); }
MP_EXPORT void *valloc(size_t size) { return mp_valloc(size); }
MP_EXPORT void *pvalloc(size_t size) { return mp_pvalloc(size); }
MP_EXPORT size_t malloc_usable_size(void *p) { return mp_usable_size(p); }
MP_EXPORT int malloc_trim(size_t pad) { return mp_malloc_trim(pad); }

/* C23: the size (and alignment) are hints; the block's class is known. */
MP_EXPORT void free_sized(void *p, size_t size)
{
    (void)size;
    mp_free(p);
}
MP_EXPORT void free_aligned_sized(void *p, size_t align, size_t size)
{
    (void)align, (void)size;
    mp_free(p);
}
MP_EXPORT void cfree(void *p) { mp_free(p); }

/* glibc's internal names, called directly by some libraries. */
MP_EXPORT void *__libc_malloc(size_t size) { return mp_malloc(size); }
MP_EXPORT void __libc_free(void *p) { mp_free(p); }
MP_EXPORT void *__libc_calloc(size_t n, size_t size) { return mp_calloc(n, size); }
MP_EXPORT void *__libc_realloc(void *p, size_t size) { return mp_realloc(p, size); }
MP_EXPORT void *__libc_memalign(size_t align, size_t size) { return mp_memalign(align, size); }
MP_EXPORT void *__libc_valloc(size_t size) { return mp_valloc(size); }
MP_EXPORT void *__libc_pvalloc(size_t size) { return mp_pvalloc(size); }
MP_EXPORT int __posix_memalign(void **out, size_t align, size_t size)
{
    return mp_posix_memalign(out, align, size);
}
