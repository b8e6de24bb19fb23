/* Size classes: every size maps to the smallest class that holds it. */
#include "check_main.h"
#include "internal.h"

static const size_t quarter_first[] = {16, 32, 48, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320};
static const size_t half_first[] = {16, 32, 48, 64, 96, 128, 192, 256, 384, 512};
static const size_t pow2_first[] = {16, 32, 64, 128, 256, 512, 1024};

START_TEST(first_classes)
{
    static const struct {
        int scheme;
        const size_t *sizes;
        size_t n;
    } t[] = {
        {MP_SC_QUARTER, quarter_first, sizeof(quarter_first) / sizeof(size_t)},
        {MP_SC_HALF, half_first, sizeof(half_first) / sizeof(size_t)},
        {MP_SC_POW2, pow2_first, sizeof(pow2_first) / sizeof(size_t)},
    };
    mp_size_classes_t sc;
    mp_size_classes_init(&sc, t[_i].scheme, 1 << 20);
    for (size_t k = 0; k < t[_i].n; k++)
        ck_assert_uint_eq(sc.size[k], t[_i].sizes[k]);
}
END_TEST

START_TEST(every_size_maps_to_smallest_fit)
{
    static const int schemes[] = {MP_SC_QUARTER, MP_SC_HALF, MP_SC_POW2};
    static const size_t maxes[] = {16, 100, 4096, 65536, 1 << 20, 64 << 20};
    mp_size_classes_t sc;
    for (size_t m = 0; m < sizeof(maxes) / sizeof(maxes[0]); m++) {
        mp_size_classes_init(&sc, schemes[_i], maxes[m]);
        ck_assert_uint_ge(sc.count, 1);
        ck_assert_uint_le(sc.max_size, maxes[m]);
        for (unsigned c = 1; c < sc.count; c++) {
            ck_assert_uint_gt(sc.size[c], sc.size[c - 1]);
            ck_assert_uint_eq(sc.size[c] % 16, 0);
            /* Natural alignment: lowest set bit, capped at the page. */
            size_t low = sc.size[c] & (~sc.size[c] + 1);
            ck_assert_uint_eq(sc.align[c], low < 4096 ? low : 4096);
        }
        size_t step = 1;
        for (size_t s = 0; s <= sc.max_size + 4096; s += step) {
            unsigned c = mp_size_class_of(&sc, s);
            if (s > sc.max_size) {
                ck_assert_uint_eq(c, MP_CLASS_NONE);
            } else {
                ck_assert_uint_lt(c, sc.count);
                ck_assert_uint_ge(sc.size[c], s);
                if (c > 0)
                    ck_assert_uint_lt(sc.size[c - 1], s);
            }
            /* Dense near class boundaries, sparse elsewhere, for speed. */
            step = s < 70000 ? 1 : 97;
        }
    }
}
END_TEST

START_TEST(quarter_waste_bounded)
{
    mp_size_classes_t sc;
    mp_size_classes_init(&sc, MP_SC_QUARTER, 64 << 20);
    ck_assert_uint_le(sc.count, MP_CLASS_MAX);
    ck_assert_uint_eq(sc.max_size, 64u << 20);
    for (size_t s = 65; s < (64u << 20); s = s * 9 / 8 + 1) {
        unsigned c = mp_size_class_of(&sc, s);
        ck_assert_uint_le((sc.size[c] - s) * 100, 25 * s); /* < 25% internal waste */
    }
}
END_TEST

static Suite *size_class_suite(void)
{
    Suite *s = suite_create("size_class");
    TCase *tc = tcase_create("classes");
    tcase_add_loop_test(tc, first_classes, 0, 3);
    tcase_add_loop_test(tc, every_size_maps_to_smallest_fit, 0, 3);
    tcase_add_test(tc, quarter_waste_bounded);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

MP_CHECK_MAIN(size_class_suite)
