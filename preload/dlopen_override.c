/*
 * dlopen: only the mode changes (RTLD_DEEPBIND dropped, src/sys/sys_alloc.c).
 * glibc's dlopen searches the caller's RPATH/RUNPATH and namespace, found
 * from its return address, so the real one is reached by a tail call: the
 * program's frame, not ours, is the caller it sees.
 */
#include <dlfcn.h>

#include "internal.h"
#include "export.h"

MP_EXPORT MP_TAIL_FN void *dlopen(const char *file, int mode)
{
    if (mp_unlikely(mode & RTLD_DEEPBIND))
        mode = mp_dlopen_mode(file, mode);
    mp_dlopen_fn real = mp_real_dlopen();
    MP_TAIL return real(file, mode);
}
