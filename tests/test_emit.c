/*
 * The one emitter of the reports (src/report/emit.c): numbers, fixed point,
 * padding, JSON strings (escapes, UTF-8 kept, other bytes as \udcXX), and
 * output larger than its buffer, read back from a file.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check_main.h"
#include "emit.h"

static char got[1 << 16];

/* Run fn on an emitter over a temporary file; the bytes written land in got. */
static size_t capture(void (*fn)(mp_out_t *))
{
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    mp_out_t o = {.fd = fileno(f)};
    fn(&o);
    mp_out_flush(&o);
    ck_assert(!o.failed);
    rewind(f);
    size_t n = fread(got, 1, sizeof(got) - 1, f);
    got[n] = '\0';
    fclose(f);
    return n;
}

static void numbers(mp_out_t *o)
{
    mp_out_u64(o, 0);
    mp_out_str(o, " ");
    mp_out_u64(o, UINT64_MAX);
    mp_out_str(o, " ");
    mp_out_i64(o, INT64_MIN);
    mp_out_str(o, " ");
    mp_out_i64(o, -42);
    mp_out_str(o, " ");
    mp_out_fixed(o, 0.61085, 4);
    mp_out_str(o, " ");
    mp_out_fixed(o, -2.5, 1);
    mp_out_str(o, " ");
    mp_out_fixed(o, 7.0, 0);
    mp_out_str(o, " ");
    mp_out_hex(o, 0xdeadbeef);
}

START_TEST(numbers_as_printf_would)
{
    capture(numbers);
    ck_assert_str_eq(got, "0 18446744073709551615 -9223372036854775808 -42 0.6109 -2.5 7 0xdeadbeef");
}
END_TEST

static void strings(mp_out_t *o)
{
    mp_out_json_str(o, "plain \"q\" back\\slash\ttab\n");
    mp_out_str(o, " ");
    mp_out_json_str(o, "caf\xc3\xa9 \xe2\x82\xac"); /* valid UTF-8 stays */
    mp_out_str(o, " ");
    mp_out_json_mem(o, "a\xff" "b\xc3", 4); /* a stray byte, a truncated sequence */
    mp_out_str(o, " ");
    mp_out_json_mem(o, "\xed\xa0\x80", 3); /* an encoded surrogate is not UTF-8 */
}

START_TEST(json_strings_always_valid)
{
    capture(strings);
    ck_assert_str_eq(got, "\"plain \\\"q\\\" back\\\\slash\\u0009tab\\u000a\" "
                          "\"caf\xc3\xa9 \xe2\x82\xac\" "
                          "\"a\\udcffb\\udcc3\" "
                          "\"\\udced\\udca0\\udc80\"");
}
END_TEST

static void padding(mp_out_t *o)
{
    mp_out_str(o, "[");
    mp_out_pad(o, "ab", 5, true);
    mp_out_str(o, "][");
    mp_out_pad(o, "ab", 5, false);
    mp_out_str(o, "][");
    mp_out_pad(o, "toolong", 3, true);
    mp_out_str(o, "]");
}

START_TEST(padding_left_and_right)
{
    capture(padding);
    ck_assert_str_eq(got, "[ab   ][   ab][toolong]");
}
END_TEST

static void large(mp_out_t *o)
{
    for (int i = 0; i < 5000; i++) { /* 10 bytes each: several buffers' worth */
        mp_out_str(o, "x");
        mp_out_u64(o, 100000000u + (uint64_t)i);
    }
}

START_TEST(output_larger_than_the_buffer)
{
    size_t n = capture(large);
    ck_assert_uint_eq(n, 5000 * 10);
    ck_assert(memcmp(got, "x100000000x100000001", 20) == 0);
    ck_assert(memcmp(got + n - 10, "x100004999", 10) == 0);
}
END_TEST

START_TEST(write_error_sets_failed)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    close(p[0]); /* nobody reads: write fails with EPIPE (SIGPIPE ignored) */
    signal(SIGPIPE, SIG_IGN);
    mp_out_t o = {.fd = p[1]};
    mp_out_str(&o, "lost");
    mp_out_flush(&o);
    ck_assert(o.failed);
    close(p[1]);
}
END_TEST

static Suite *suite(void)
{
    Suite *s = suite_create("emit");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, numbers_as_printf_would);
    tcase_add_test(tc, json_strings_always_valid);
    tcase_add_test(tc, padding_left_and_right);
    tcase_add_test(tc, output_larger_than_the_buffer);
    tcase_add_test(tc, write_error_sets_failed);
    suite_add_tcase(s, tc);
    return s;
}

MP_CHECK_MAIN(suite)
