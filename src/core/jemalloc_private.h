/*
 * jemalloc's API under the names of the shim's private copy: the build
 * renames jemalloc's public symbols to mp_je_* (scripts/jemalloc-private.py),
 * so the process's own malloc, and any other jemalloc, are never touched.
 */
#ifndef MEMPOOL_JEMALLOC_PRIVATE_H
#define MEMPOOL_JEMALLOC_PRIVATE_H

#define JEMALLOC_NO_RENAME
#define JEMALLOC_NO_DEMANGLE
#define je_mallocx mp_je_mallocx
#define je_rallocx mp_je_rallocx
#define je_xallocx mp_je_xallocx
#define je_sallocx mp_je_sallocx
#define je_dallocx mp_je_dallocx
#define je_sdallocx mp_je_sdallocx
#define je_nallocx mp_je_nallocx
#define je_mallctl mp_je_mallctl
#define je_mallctlnametomib mp_je_mallctlnametomib
#define je_mallctlbymib mp_je_mallctlbymib
#define je_malloc_stats_print mp_je_malloc_stats_print
#define je_malloc_message mp_je_malloc_message
#define je_malloc_conf mp_je_malloc_conf
#define je_malloc_conf_2_conf_harder mp_je_malloc_conf_2_conf_harder
#define je_malloc mp_je_malloc
#define je_calloc mp_je_calloc
#define je_free mp_je_free
#define je_realloc mp_je_realloc
#define je_posix_memalign mp_je_posix_memalign
#define je_aligned_alloc mp_je_aligned_alloc
#define je_memalign mp_je_memalign
#define je_valloc mp_je_valloc
#define je_malloc_usable_size mp_je_malloc_usable_size
#include <jemalloc/jemalloc.h>

#endif
