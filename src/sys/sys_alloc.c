/*
 * The libc allocator (for pointers the shim did not make, and as the last
 * fallback) and the bootstrap buffer used before the real functions are
 * resolved: dlsym itself may call calloc.
 */
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <string.h>

#include "sys.h"

MP_STARTUP_DATA mp_libc_t mp_libc;

void mp_libc_resolve(void)
{
    /* The preload exports __libc_malloc & co. itself: RTLD_NEXT skips it. */
    *(void **)&mp_libc.malloc = mp_real_dlsym()(RTLD_NEXT, "__libc_malloc");
    *(void **)&mp_libc.free = mp_real_dlsym()(RTLD_NEXT, "__libc_free");
    *(void **)&mp_libc.calloc = mp_real_dlsym()(RTLD_NEXT, "__libc_calloc");
    *(void **)&mp_libc.realloc = mp_real_dlsym()(RTLD_NEXT, "__libc_realloc");
    *(void **)&mp_libc.memalign = mp_real_dlsym()(RTLD_NEXT, "__libc_memalign");
    *(void **)&mp_libc.usable_size = mp_real_dlsym()(RTLD_NEXT, "malloc_usable_size");
    *(void **)&mp_libc.trim = mp_real_dlsym()(RTLD_NEXT, "malloc_trim");
}

/* ---- bootstrap buffer ---------------------------------------------------- */
#define BOOT_SIZE (256 * 1024)
static _Alignas(4096) unsigned char boot_buf[BOOT_SIZE];
static _Atomic size_t boot_used;

void *mp_boot_alloc(size_t size, size_t align)
{
    if (align < 16)
        align = 16;
    for (;;) {
        size_t used = atomic_load(&boot_used);
        size_t start = (used + 16 + align - 1) & ~(align - 1); /* 16-byte header */
        if (size > BOOT_SIZE || start + size > BOOT_SIZE) {
            errno = ENOMEM;
            return NULL;
        }
        if (atomic_compare_exchange_weak(&boot_used, &used, start + size)) {
            memcpy(boot_buf + start - sizeof(size_t), &size, sizeof(size_t));
            return boot_buf + start; /* static storage: already zero */
        }
    }
}

bool mp_is_boot(const void *p)
{
    return (const unsigned char *)p >= boot_buf && (const unsigned char *)p < boot_buf + BOOT_SIZE;
}

size_t mp_boot_usable_size(const void *p)
{
    size_t n;
    memcpy(&n, (const unsigned char *)p - sizeof(size_t), sizeof(size_t));
    return n;
}

void *mp_libc_alloc(size_t size, size_t align)
{
    if (align <= 16)
        return mp_libc.malloc ? mp_libc.malloc(size) : mp_boot_alloc(size, align);
    return mp_libc.memalign ? mp_libc.memalign(align, size) : mp_boot_alloc(size, align);
}

void mp_libc_free(void *p)
{
    if (p == NULL || mp_is_boot(p))
        return;
    if (mp_libc.free)
        mp_libc.free(p);
}

/* ---- dlopen(RTLD_DEEPBIND) ------------------------------------------------ */

/* A library opened with RTLD_DEEPBIND binds its malloc/free to libc's own
 * (its dependencies come before the global scope), so it would hand glibc's
 * free pointers of ours, which glibc aborts on.  While the shim serves the
 * malloc family the flag is dropped (the library then binds to the global
 * scope, i.e. to us), with one informational message per process.  This is
 * the situation ASan refuses outright ("incompatible with sanitizer
 * runtime"); dropping the flag keeps the program running instead. */
int mp_dlopen_mode(const char *file, int mode)
{
    if (!(mode & RTLD_DEEPBIND) || mp_init() != MP_STATE_READY)
        return mode; /* on libc's allocator (shim unusable), DEEPBIND is harmless */
    static _Atomic bool said;
    if (!atomic_exchange(&said, true))
        mp_log(MP_LOG_INFO, "dlopen(%s, RTLD_DEEPBIND): the flag is dropped so that the library's "
               "malloc and free are the shim's (glibc cannot free the shim's blocks)",
               file ? file : "NULL");
    return mode & ~RTLD_DEEPBIND;
}
