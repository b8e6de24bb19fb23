/*
 * Size classes.  Classes start at 16 bytes (glibc's malloc alignment on
 * x86-64) and have 2^lg_steps classes per doubling: quarter (4) is
 * jemalloc's own spacing, so each class maps to exactly one jemalloc bin
 * and a class block is naturally aligned to the lowest set bit of its size
 * (capped at the page: jemalloc slabs are page aligned).
 */
#include <string.h>

#include "core.h"

_Alignas(4096) mp_size_classes_t mp_sc; /* one page, not two, at start */

static size_t pow2_floor(size_t x) { return (size_t)1 << (63 - __builtin_clzll(x)); }

void mp_size_classes_init(mp_size_classes_t *sc, int scheme, size_t max_block)
{
    memset(sc, 0, sizeof(*sc));
    sc->lg_steps = scheme == MP_SC_POW2 ? 0 : scheme == MP_SC_HALF ? 1 : 2;
    unsigned n = 0;
    size_t size = 16;
    while (size <= max_block && n < MP_CLASS_MAX) {
        size_t low = size & (~size + 1);
        sc->size[n] = size;
        sc->align[n] = low < 4096 ? low : 4096;
        sc->realloc_max[n] = size;
        n++;
        size_t delta = pow2_floor(size) >> sc->lg_steps;
        size += delta < 16 ? 16 : delta;
    }
    sc->count = n;
    sc->max_size = n ? sc->size[n - 1] : 0;

    /* Lookup table for small sizes: first class whose size is >= the size. */
    unsigned c = 0;
    for (size_t i = 0; i <= MP_LOOKUP_MAX / 16; i++) {
        size_t s = i * 16;
        while (c < n && sc->size[c] < s)
            c++;
        sc->lookup[i] = (uint8_t)(c < n ? c : MP_CLASS_NONE);
    }
    /* group_base[lg]: index of the first class above 2^lg. */
    for (unsigned lg = 0; lg < 64; lg++) {
        unsigned k = 0;
        while (k < n && sc->size[k] <= ((size_t)1 << lg))
            k++;
        sc->group_base[lg] = (uint8_t)k;
    }
}
