/*
 * The malloc family beyond malloc/free, with glibc's semantics (errno,
 * alignment rules, realloc(p, 0) frees), on top of the host pools.
 */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "host_inline.h"

void *mp_calloc(size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    unsigned cls = mp_size_class_of(&mp_sc, total);
    if (cls == MP_CLASS_NONE)
        return mp_host_calloc_large(total);
    if (total >= MP_CALLOC_FRESH)
        return mp_host_calloc_class(cls, total);
    void *p = mp_malloc(total);
    if (p != NULL)
        memset(p, 0, total);
    return p;
}

void *mp_realloc_slow(void *p, size_t size)
{
    if (p == NULL)
        return mp_malloc(size);
    if (size == 0) { /* glibc: frees and returns NULL */
        mp_free(p);
        return NULL;
    }
    return mp_host_realloc(p, size);
}

void *mp_reallocarray(void *p, size_t n, size_t size)
{
    size_t total;
    if (__builtin_mul_overflow(n, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return mp_realloc(p, total);
}

static bool pow2(size_t x) { return x != 0 && (x & (x - 1)) == 0; }

int mp_posix_memalign(void **out, size_t align, size_t size)
{
    if (!pow2(align) || align % sizeof(void *) != 0)
        return EINVAL;
    int saved = errno;
    void *p = mp_host_aligned(align, size);
    errno = saved; /* posix_memalign reports through its return value only */
    if (p == NULL)
        return ENOMEM;
    *out = p;
    return 0;
}

void *mp_aligned_alloc(size_t align, size_t size)
{
    if (!pow2(align)) { /* glibc >= 2.38 and C17 DR 460: reject */
        errno = EINVAL;
        return NULL;
    }
    return mp_host_aligned(align, size);
}

void *mp_memalign(size_t align, size_t size)
{
    if (align <= 16)
        return mp_malloc(size);
    if (!pow2(align)) { /* glibc rounds up to a power of two */
        if (align > ((size_t)1 << 62)) {
            errno = EINVAL;
            return NULL;
        }
        align = (size_t)1 << (64 - __builtin_clzll(align));
    }
    return mp_host_aligned(align, size);
}

void *mp_valloc(size_t size) { return mp_host_aligned((size_t)sysconf(_SC_PAGESIZE), size); }

void *mp_pvalloc(size_t size)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE), rounded;
    if (__builtin_add_overflow(size, page - 1, &rounded)) {
        errno = ENOMEM;
        return NULL;
    }
    rounded &= ~(page - 1);
    return mp_host_aligned(page, rounded ? rounded : page);
}

size_t mp_usable_size(void *p) { return mp_host_usable_size(p); }

int mp_malloc_trim(size_t pad)
{
    size_t freed = mp_host_trim();
    int libc = mp_libc.trim ? mp_libc.trim(pad) : 0;
    return freed > 0 || libc;
}
