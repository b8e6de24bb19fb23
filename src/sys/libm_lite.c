/*
 * ln, exp and round without libm.  libm is not otherwise loaded by small
 * programs (/bin/true, shells), and loading it costs each process start
 * about 60 µs; the shim needs these three only for call-site sampling
 * (exponential intervals, sample weights) and jemalloc only for heap
 * profiling (its references are renamed here by scripts/jemalloc-private.py).
 * frexp, ldexp and modf are in libc proper.  Relative error below 1e-13 over the
 * whole double range, checked against libm by tests/test_libm_lite.c.
 */
#include <math.h>
#include <stdint.h>

#include "sys.h"

#define LN2 0.69314718055994530942
#define SQRT_HALF 0.70710678118654752440

double mp_ln(double x)
{
    if (!(x > 0))
        return x == 0 ? -HUGE_VAL : NAN;
    if (x == HUGE_VAL)
        return x;
    int e;
    double m = frexp(x, &e); /* x = m * 2^e, m in [0.5, 1) */
    if (m < SQRT_HALF) {
        m *= 2;
        e--;
    }
    /* ln(m) = 2 atanh(s), s = (m - 1) / (m + 1), |s| <= 0.172: the series'
     * terms shrink by s^2 <= 0.0295 each, 11 terms reach 1e-17. */
    double s = (m - 1) / (m + 1), s2 = s * s, term = s, sum = 0;
    for (int k = 1; k <= 23; k += 2) {
        sum += term / k;
        term *= s2;
    }
    return 2 * sum + e * LN2;
}

double mp_exp(double x)
{
    if (x != x)
        return x;
    if (x > 709.8)
        return HUGE_VAL;
    if (x < -745.2)
        return 0;
    /* x = k ln2 + r, |r| <= ln2 / 2: Taylor terms of r shrink fast. */
    double k = x / LN2;
    k = k < 0 ? (double)(int64_t)(k - 0.5) : (double)(int64_t)(k + 0.5);
    double r = x - k * LN2, term = 1, sum = 1;
    for (int i = 1; i <= 17; i++) {
        term *= r / i;
        sum += term;
    }
    return ldexp(sum, (int)k);
}

double mp_round(double x)
{
    double ip, frac = modf(x, &ip);
    if (frac >= 0.5)
        return ip + 1;
    if (frac <= -0.5)
        return ip - 1;
    return ip;
}
