/*
 * The address range and its jemalloc arenas (src/core/heap.c), driven
 * directly: the carve area's stripes, the class of an offset, the late
 * start of jemalloc, class arenas that carve from their own slot.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "check_main.h"
#include "internal.h"
#include "jemalloc_private.h"

static void init_heap(size_t reserve, size_t carve)
{
    ck_assert(mp_heap_init(reserve, carve));
    ck_assert_uint_ne(mp_heap.base, 0);
    ck_assert_uint_eq(mp_heap.class_span, mp_heap.size / 2);
}

START_TEST(stripes_and_slots_name_the_class)
{
    init_heap((size_t)64 << 30, 256 << 10);
    ck_assert_uint_eq((size_t)1 << mp_heap.stripe_shift, 256 << 10);
    ck_assert_uint_eq(mp_heap.carve_span, (size_t)MP_CLASS_MAX << mp_heap.stripe_shift);
    size_t slot = (size_t)1 << mp_heap.slot_shift;
    ck_assert_uint_eq(slot * MP_CLASS_MAX, mp_heap.class_span);
    for (unsigned c = 0; c < MP_CLASS_MAX; c++) {
        uintptr_t stripe = (uintptr_t)c << mp_heap.stripe_shift;
        ck_assert_uint_eq(mp_class_of_offset(stripe), c);
        ck_assert_uint_eq(mp_class_of_offset(stripe + (1u << mp_heap.stripe_shift) - 1), c);
        if (c > 0) { /* slot 0 starts with the carve area */
            ck_assert_uint_eq(mp_class_of_offset((uintptr_t)c * slot), c);
            ck_assert_uint_eq(mp_class_of_offset((uintptr_t)(c + 1) * slot - 1), c);
        }
    }
    ck_assert_uint_eq(mp_class_of_offset(mp_heap.carve_span), 0); /* slot 0 after the stripes */
}
END_TEST

START_TEST(carving_stays_in_the_stripe_and_budget)
{
    init_heap((size_t)64 << 30, 64 << 10);
    unsigned c = 7;
    char *first = mp_heap_carve(c, 48, 1000);
    ck_assert_ptr_nonnull(first);
    ck_assert_uint_eq((uintptr_t)first, mp_heap.base + ((uintptr_t)c << mp_heap.stripe_shift));
    ck_assert(mp_heap_is_carved(first));
    memset(first, 0x5a, 48); /* accessible without any mprotect of ours */
    unsigned n = 1;
    while (mp_heap_carve(c, 48, 1000) != NULL)
        n++;
    ck_assert_uint_eq(n, 1000 / 48); /* the budget, in whole blocks */
    ck_assert_ptr_null(mp_heap_carve(c, 48, 1000));
    /* Another class has its own stripe; a budget above the stripe is capped. */
    unsigned m = 0;
    while (mp_heap_carve(c + 1, 4096, 1 << 30) != NULL)
        m++;
    ck_assert_uint_eq(m, (64u << 10) / 4096);
    ck_assert_ptr_null(mp_heap_carve(MP_CLASS_MAX, 16, 1 << 20));
    /* Runs: adjacent blocks in one step, cut short at the budget. */
    unsigned want = 15;
    char *run = mp_heap_carve_run(c + 2, 48, 1000, &want);
    ck_assert_uint_eq(want, 15);
    ck_assert_uint_eq((uintptr_t)run, mp_heap.base + ((uintptr_t)(c + 2) << mp_heap.stripe_shift));
    want = 15;
    char *rest = mp_heap_carve_run(c + 2, 48, 1000, &want);
    ck_assert_uint_eq(want, 1000 / 48 - 15);
    ck_assert_ptr_eq(rest, run + 15 * 48);
    want = 15;
    ck_assert_ptr_null(mp_heap_carve_run(c + 2, 48, 1000, &want));
    ck_assert(!mp_heap_started()); /* carving never starts jemalloc */
}
END_TEST

START_TEST(no_carve_area_when_the_limit_is_zero)
{
    init_heap((size_t)64 << 30, 0);
    ck_assert_uint_eq(mp_heap.carve_span, 0);
    ck_assert_ptr_null(mp_heap_carve(3, 16, 1 << 20));
    ck_assert_uint_eq(mp_class_of_offset(0), 0);
    ck_assert_uint_eq(mp_class_of_offset((uintptr_t)5 << mp_heap.slot_shift), 5);
}
END_TEST

START_TEST(small_reservation_shrinks_the_stripes)
{
    init_heap((size_t)1 << 30, 1 << 20); /* slots of 4 MiB: stripes of 16 KiB */
    ck_assert_uint_le(mp_heap.carve_span, ((size_t)1 << mp_heap.slot_shift) / 2);
    ck_assert_uint_eq((size_t)1 << mp_heap.stripe_shift, 16384);
}
END_TEST

START_TEST(jemalloc_starts_once_on_demand)
{
    init_heap((size_t)64 << 30, 64 << 10);
    ck_assert(!mp_heap_started());
    ck_assert_uint_eq(atomic_load(&mp_heap.bypass_arena), 0);
    unsigned a = mp_heap_bypass_arena();
    ck_assert_uint_ne(a, 0);
    ck_assert(mp_heap_started());
    ck_assert_uint_eq(mp_heap_bypass_arena(), a);
    void *p = je_mallocx(1 << 20, MALLOCX_ARENA(a) | MALLOCX_TCACHE_NONE);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(mp_ptr_kind(p, &(unsigned){0}), MP_PTR_BYPASS);
    je_dallocx(p, MALLOCX_TCACHE_NONE);
    ck_assert_uint_ge(mp_heap_mapped(), mp_heap.carve_span);
}
END_TEST

/* Pages of [p, p + len) resident now. */
static size_t resident_pages(void *p, size_t len)
{
    size_t n = len / 4096, count = 0;
    unsigned char *v = calloc(n, 1);
    ck_assert_int_eq(mincore(p, len, v), 0);
    for (size_t i = 0; i < n; i++)
        count += v[i] & 1;
    free(v);
    return count;
}

/* A freed 16 MiB block, written first: how many of its pages stay. */
static size_t resident_after_free(void)
{
    unsigned a = mp_heap_bypass_arena();
    ck_assert_uint_ne(a, 0);
    size_t len = (size_t)16 << 20;
    char *p = je_mallocx(len, MALLOCX_ARENA(a) | MALLOCX_TCACHE_NONE | MALLOCX_ALIGN(4096));
    ck_assert_ptr_nonnull(p);
    memset(p, 1, len);
    ck_assert_uint_eq(resident_pages(p, len), len / 4096);
    je_dallocx(p, MALLOCX_TCACHE_NONE);
    return resident_pages(p, len);
}

START_TEST(large_blocks_stay_resident_by_default)
{
    init_heap((size_t)64 << 30, 64 << 10);
    ck_assert_uint_eq(resident_after_free(), ((size_t)16 << 20) / 4096); /* kept for reuse */
}
END_TEST

START_TEST(large_purge_returns_them_at_once)
{
    mp_heap_set_large_purge((size_t)8 << 20); /* jemalloc's own default */
    init_heap((size_t)64 << 30, 64 << 10);
    ck_assert_uint_eq(resident_after_free(), 0);
}
END_TEST

START_TEST(class_arena_serves_from_its_slot)
{
    init_heap((size_t)64 << 30, 64 << 10);
    unsigned c = 9;
    unsigned a = mp_heap_class_arena(c); /* starts jemalloc first */
    ck_assert_uint_ne(a, 0);
    ck_assert(mp_heap_started());
    ck_assert_uint_eq(mp_heap_class_arena(c), a);
    void *p = je_mallocx(256, MALLOCX_ARENA(a) | MALLOCX_TCACHE_NONE);
    unsigned cls = MP_CLASS_NONE;
    ck_assert_int_eq(mp_ptr_kind(p, &cls), MP_PTR_CLASS);
    ck_assert_uint_eq(cls, c);
    ck_assert(!mp_heap_is_carved(p));
    je_dallocx(p, MALLOCX_TCACHE_NONE);
}
END_TEST

static void *start_racer(void *arg)
{
    (void)arg;
    return (void *)(uintptr_t)mp_heap_bypass_arena();
}

START_TEST(concurrent_starts_agree)
{
    init_heap((size_t)64 << 30, 64 << 10);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, start_racer, NULL);
    uintptr_t first = 0;
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        ck_assert_uint_ne((uintptr_t)r, 0);
        if (i == 0)
            first = (uintptr_t)r;
        ck_assert_uint_eq((uintptr_t)r, first);
    }
    /* One bypass arena, not one per racer: it is the last created. */
    unsigned narenas = 0;
    size_t sz = sizeof(narenas);
    ck_assert_int_eq(je_mallctl("arenas.narenas", &narenas, &sz, NULL, 0), 0);
    ck_assert_uint_eq(first, narenas - 1);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("heap");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, stripes_and_slots_name_the_class);
    tcase_add_test(tc, carving_stays_in_the_stripe_and_budget);
    tcase_add_test(tc, no_carve_area_when_the_limit_is_zero);
    tcase_add_test(tc, small_reservation_shrinks_the_stripes);
    tcase_add_test(tc, jemalloc_starts_once_on_demand);
    tcase_add_test(tc, class_arena_serves_from_its_slot);
    tcase_add_test(tc, concurrent_starts_agree);
    tcase_add_test(tc, large_blocks_stay_resident_by_default);
    tcase_add_test(tc, large_purge_returns_them_at_once);
    suite_add_tcase(s, tc);
    return s;
}

MP_CHECK_MAIN(suite)
