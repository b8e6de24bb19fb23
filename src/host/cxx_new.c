/*
 * C++ operator new semantics in C: on failure, call the installed
 * std::new_handler and retry; with none, throw std::bad_alloc (or return
 * NULL for the nothrow forms).  libstdc++'s functions are looked up at run
 * time, so a C program never loads libstdc++.  This file is compiled with
 * -fexceptions so that a throw unwinds through it.
 */
#include <dlfcn.h>
#include <stdlib.h>

#include "host_inline.h"

typedef void (*new_handler_t)(void);

void *mp_cxx_new(size_t size, size_t align, bool nothrow)
{
    static new_handler_t (*get_handler)(void);
    static void (*throw_bad_alloc)(void);
    for (;;) {
        void *p = align > 16 ? mp_host_aligned(align, size) : mp_malloc(size);
        if (p != NULL)
            return p;
        if (get_handler == NULL)
            *(void **)&get_handler = mp_real_dlsym()(RTLD_DEFAULT, "_ZSt15get_new_handlerv");
        new_handler_t h = get_handler ? get_handler() : NULL;
        if (h != NULL) {
            h(); /* may free memory, throw, or abort */
            continue;
        }
        if (nothrow)
            return NULL;
        if (throw_bad_alloc == NULL)
            *(void **)&throw_bad_alloc = mp_real_dlsym()(RTLD_DEFAULT, "_ZSt17__throw_bad_allocv");
        if (throw_bad_alloc != NULL)
            throw_bad_alloc();
        mp_log(MP_LOG_ERROR, "operator new(%zu) failed and std::bad_alloc is unavailable", size);
        abort();
    }
}
