/* The libm-free ln/exp/round (src/sys/libm_lite.c) against libm itself. */
#include <float.h>
#include <math.h>

#include "check_main.h"
#include "internal.h"

static void near(double got, double want, double rel)
{
    if (want == 0) {
        ck_assert_double_eq(got, want);
        return;
    }
    ck_assert_msg(fabs(got - want) <= rel * fabs(want), "got %.17g, libm %.17g", got, want);
}

START_TEST(ln_matches_libm)
{
    static const double x[] = {DBL_MIN, 1e-300, 1e-20, 1e-5, 0.1, 0.5, 0.70710678, 0.9999999,
                               1.0000001, 1.5, 2, 2.718281828, 10, 1e5, 1e20, 1e300, DBL_MAX};
    for (size_t i = 0; i < sizeof(x) / sizeof(x[0]); i++)
        near(mp_ln(x[i]), log(x[i]), 1e-13);
    ck_assert_double_eq(mp_ln(1.0), 0.0);
    /* Uniform (0, 1) draws, as call-site sampling feeds it. */
    for (int k = 1; k < 100000; k += 7)
        near(mp_ln(k / 100000.0), log(k / 100000.0), 1e-13);
    ck_assert(isinf(mp_ln(0.0)) && mp_ln(0.0) < 0);
    ck_assert(isnan(mp_ln(-1.0)));
    ck_assert(isinf(mp_ln(HUGE_VAL)));
}
END_TEST

START_TEST(exp_matches_libm)
{
    for (double x = -740; x <= 709; x += 0.37)
        near(mp_exp(x), exp(x), 1e-13);
    static const double x[] = {-1e-300, 0, 1e-300, 1e-10, -0.5, 0.5, 1, -1};
    for (size_t i = 0; i < sizeof(x) / sizeof(x[0]); i++)
        near(mp_exp(x[i]), exp(x[i]), 1e-15);
    ck_assert_double_eq(mp_exp(-800), 0.0);
    ck_assert(isinf(mp_exp(800)));
    ck_assert(isnan(mp_exp(NAN)));
}
END_TEST

START_TEST(round_matches_libm)
{
    static const double x[] = {0, 0.49999999999999994, 0.5, 1.5, 2.5, -0.5, -1.5, -2.4999,
                               1e15 + 0.5, -1e15 - 0.5, 4503599627370497.0, 1e300, -3.7};
    for (size_t i = 0; i < sizeof(x) / sizeof(x[0]); i++)
        ck_assert_double_eq(mp_round(x[i]), round(x[i]));
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("libm_lite");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, ln_matches_libm);
    tcase_add_test(tc, exp_matches_libm);
    tcase_add_test(tc, round_matches_libm);
    suite_add_tcase(s, tc);
    return s;
}

MP_CHECK_MAIN(suite)
