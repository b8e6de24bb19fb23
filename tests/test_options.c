/* Option parsing: every type, every invalid form, and the warning line. */
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "check_main.h"
#include "internal.h"

typedef struct {
    mp_opt_id_t id;
    const char *text;
    const char *why; /* NULL: valid */
    uint64_t value;
} parse_case_t;

static const parse_case_t cases[] = {
    {MP_OPT_DISABLE, "1", NULL, 1},
    {MP_OPT_DISABLE, "true", NULL, 1},
    {MP_OPT_DISABLE, "YES", NULL, 1},
    {MP_OPT_DISABLE, "on", NULL, 1},
    {MP_OPT_DISABLE, "0", NULL, 0},
    {MP_OPT_DISABLE, "off", NULL, 0},
    {MP_OPT_DISABLE, "No", NULL, 0},
    {MP_OPT_DISABLE, "2", "not a boolean (use 1/0, true/false, yes/no, on/off)", 0},
    {MP_OPT_DISABLE, "", "not a boolean (use 1/0, true/false, yes/no, on/off)", 0},
    {MP_OPT_HOST_CACHE_LIMIT, "0", NULL, 0},
    {MP_OPT_HOST_CACHE_LIMIT, "4096", NULL, 4096},
    {MP_OPT_HOST_CACHE_LIMIT, "64K", NULL, 65536},
    {MP_OPT_HOST_CACHE_LIMIT, "64k", NULL, 65536},
    {MP_OPT_HOST_CACHE_LIMIT, "3M", NULL, 3u << 20},
    {MP_OPT_HOST_CACHE_LIMIT, "2G", NULL, 2ull << 30},
    {MP_OPT_HOST_CACHE_LIMIT, "1T", NULL, 1ull << 40},
    {MP_OPT_HOST_CACHE_LIMIT, "5KiB", NULL, 5120},
    {MP_OPT_HOST_CACHE_LIMIT, "5KB", NULL, 5120},
    {MP_OPT_HOST_CACHE_LIMIT, "2T", "above the maximum", 0},
    {MP_OPT_HOST_CACHE_LIMIT, "-1", "negative value", 0},
    {MP_OPT_HOST_CACHE_LIMIT, "", "empty value", 0},
    {MP_OPT_HOST_CACHE_LIMIT, "abc", "not a number", 0},
    {MP_OPT_HOST_CACHE_LIMIT, "12Q", "unknown unit (use K, M, G or T)", 0},
    {MP_OPT_HOST_CACHE_LIMIT, "12Kx", "unknown unit (use K, M, G or T)", 0},
    {MP_OPT_HOST_CACHE_LIMIT, "16E", "unknown unit (use K, M, G or T)", 0},
    {MP_OPT_HOST_CACHE_LIMIT, "99999999999999999999", "number too large", 0},
    {MP_OPT_HOST_CACHE_LIMIT, "17179869184G", "number too large", 0},
    {MP_OPT_HOST_MAX_BLOCK_SIZE, "8", "below the minimum", 0},
    {MP_OPT_HOST_MAX_BLOCK_SIZE, "1M", NULL, 1u << 20},
    {MP_OPT_HOST_TCACHE_BLOCKS, "12", NULL, 12},
    {MP_OPT_HOST_TCACHE_BLOCKS, "12K", "not a whole number", 0},
    {MP_OPT_HOST_TCACHE_BLOCKS, "1.5", "not a whole number", 0},
    {MP_OPT_HOST_TCACHE_BLOCKS, "70000", "above the maximum", 0},
    {MP_OPT_HOST_SIZE_CLASSES, "quarter", NULL, MP_SC_QUARTER},
    {MP_OPT_HOST_SIZE_CLASSES, "half", NULL, MP_SC_HALF},
    {MP_OPT_HOST_SIZE_CLASSES, "pow2", NULL, MP_SC_POW2},
    {MP_OPT_HOST_SIZE_CLASSES, "pow", "not one of the choices", 0},
    {MP_OPT_HOST_SIZE_CLASSES, "pow22", "not one of the choices", 0},
    {MP_OPT_HOST_SIZE_CLASSES, "", "not one of the choices", 0},
    {MP_OPT_STATS_FORMAT, "text", NULL, MP_FMT_TEXT},
    {MP_OPT_STATS_FORMAT, "none", NULL, MP_FMT_NONE},
    {MP_OPT_STATS_FORMAT, "JSON", "not one of the choices", 0},
    {MP_OPT_LOG_LEVEL, "debug", NULL, MP_LOG_DEBUG},
    {MP_OPT_LOG_LEVEL, "none", NULL, MP_LOG_NONE},
    {MP_OPT_STATS_FILE, "/tmp/x.%p.json", NULL, 0},
    {MP_OPT_DEVICE_CACHE_LIMIT, "2G", NULL, 2ull << 30},
    {MP_OPT_DEVICE_CACHE_LIMIT, "50%", NULL, MP_OPT_PERCENT | 50},
    {MP_OPT_DEVICE_CACHE_LIMIT, "0%", NULL, MP_OPT_PERCENT},
    {MP_OPT_DEVICE_CACHE_LIMIT, "101%", "above 100%", 0},
    {MP_OPT_DEVICE_CACHE_LIMIT, "x%", "not a number", 0},
    {MP_OPT_DEVICE_CACHE_LIMIT, "%", "not a number", 0},
    {MP_OPT_STATS_FILE, "", "empty value", 0},
};

START_TEST(parse_table)
{
    const parse_case_t *c = &cases[_i];
    uint64_t v = 12345;
    const char *why = mp_option_parse(c->id, c->text, &v);
    if (c->why == NULL) {
        ck_assert_msg(why == NULL, "%s=%s: unexpected error %s", mp_option_table[c->id].name,
                      c->text, why);
        ck_assert_uint_eq(v, c->value);
    } else {
        ck_assert_msg(why != NULL, "%s=%s accepted", mp_option_table[c->id].name, c->text);
        ck_assert_str_eq(why, c->why);
        ck_assert_uint_eq(v, 12345); /* untouched on error */
    }
}
END_TEST

START_TEST(path_too_long)
{
    char longp[MP_PATH_MAX + 10];
    memset(longp, 'a', sizeof(longp) - 1);
    longp[sizeof(longp) - 1] = '\0';
    uint64_t v;
    ck_assert_str_eq(mp_option_parse(MP_OPT_STATS_FILE, longp, &v), "path too long");
}
END_TEST

START_TEST(defaults_parse)
{
    /* Every default in the table must itself be valid. */
    for (int i = 0; i < MP_OPT_COUNT; i++) {
        uint64_t v;
        ck_assert_msg(mp_option_parse((mp_opt_id_t)i, mp_option_table[i].def, &v) == NULL,
                      "default of %s is invalid", mp_option_table[i].name);
    }
}
END_TEST

static const char *fake_env(const char *name)
{
    if (strcmp(name, "MEMPOOL_HOST_CACHE_LIMIT") == 0)
        return "lots";
    if (strcmp(name, "MEMPOOL_HOST_TCACHE_BLOCKS") == 0)
        return "7";
    if (strcmp(name, "MEMPOOL_STATS_FILE") == 0)
        return "/tmp/s.%p";
    return NULL;
}

/* Read what fn writes to stderr. */
static size_t capture_stderr(int (*fn)(mp_getenv_fn), mp_getenv_fn arg, int *ret, char *buf,
                             size_t cap)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    int saved = dup(STDERR_FILENO);
    dup2(fds[1], STDERR_FILENO);
    *ret = fn(arg);
    dup2(saved, STDERR_FILENO);
    close(fds[1]);
    ssize_t n = read(fds[0], buf, cap - 1);
    close(fds[0]);
    buf[n > 0 ? n : 0] = '\0';
    return n > 0 ? (size_t)n : 0;
}

START_TEST(load_warns_once_and_keeps_default)
{
    char buf[1024];
    int bad = 0;
    capture_stderr(mp_options_load, fake_env, &bad, buf, sizeof(buf));
    ck_assert_int_eq(bad, 1);
    ck_assert_str_eq(buf, "mempool: MEMPOOL_HOST_CACHE_LIMIT=lots: not a number; using 64M\n");
    ck_assert_uint_eq(mp_opt(MP_OPT_HOST_CACHE_LIMIT), 64u << 20);
    ck_assert_uint_eq(mp_opt(MP_OPT_HOST_TCACHE_BLOCKS), 7);
    ck_assert_str_eq(mp_opt_stats_path, "/tmp/s.%p");
}
END_TEST

static const char *quiet_env(const char *name)
{
    if (strcmp(name, "MEMPOOL_LOG_LEVEL") == 0)
        return "none";
    if (strcmp(name, "MEMPOOL_SUMMARY") == 0)
        return "maybe";
    return NULL;
}

START_TEST(log_level_none_silences_warnings)
{
    char buf[1024];
    int bad = 0;
    capture_stderr(mp_options_load, quiet_env, &bad, buf, sizeof(buf));
    ck_assert_int_eq(bad, 1);
    ck_assert_str_eq(buf, "");
    ck_assert_uint_eq(mp_opt(MP_OPT_SUMMARY), 0);
}
END_TEST

static const char *long_env(const char *name)
{
    static char v[300];
    if (strcmp(name, "MEMPOOL_HOST_RESERVE") != 0)
        return NULL;
    memset(v, '9', sizeof(v) - 1);
    return v;
}

START_TEST(long_value_is_cut_in_warning)
{
    char buf[1024];
    int bad = 0;
    capture_stderr(mp_options_load, long_env, &bad, buf, sizeof(buf));
    ck_assert_int_eq(bad, 1);
    ck_assert_ptr_nonnull(strstr(buf, "...: number too large; using 4T\n"));
    ck_assert_int_lt((int)strlen(buf), 200);
}
END_TEST

/* ---- hostile values: every option, every bad form ---------------------- */

/* Invalid for every type (a path only when empty or too long). */
static const char *const hostile[] = {
    "-1", "-0x10", "16E", "18446744073709551616", "99999999999999999999999K", "abc", "", " ",
    "1 2", "0x", "1.5.5", "+-1", "1%%", "%", "\t", "nan", "inf", "-inf", "1e400", "\xff\xfe",
    "on off", "yes!", "USR1;rm -rf /", NULL /* the very long value */,
};
#define N_HOSTILE (sizeof(hostile) / sizeof(hostile[0]))

static char very_long[64 << 10];
static int hostile_opt, hostile_val;

static const char *hostile_value(int v) { return hostile[v] ? hostile[v] : very_long; }

static const char *hostile_env(const char *name)
{
    return strcmp(name, mp_option_table[hostile_opt].name) == 0 ? hostile_value(hostile_val) : NULL;
}

/* Whether the value is one this option must refuse. */
static bool must_refuse(int opt, const char *text)
{
    if (mp_option_table[opt].type == MP_OPT_path)
        return text[0] == '\0' || strlen(text) >= MP_PATH_MAX;
    return true;
}

/* Each value alone: refused by the parser, one warning line naming the
 * option, and the option keeps its default.  _i runs over option x value. */
START_TEST(hostile_values_get_one_warning_and_the_default)
{
    memset(very_long, '9', sizeof(very_long) - 1);
    hostile_opt = _i / (int)N_HOSTILE;
    hostile_val = _i % (int)N_HOSTILE;
    const mp_option_desc_t *d = &mp_option_table[hostile_opt];
    const char *text = hostile_value(hostile_val);
    uint64_t def, v = 77;
    ck_assert(mp_option_parse((mp_opt_id_t)hostile_opt, d->def, &def) == NULL);
    const char *why = mp_option_parse((mp_opt_id_t)hostile_opt, text, &v);
    if (!must_refuse(hostile_opt, text)) {
        ck_assert_msg(why == NULL, "%s: valid path refused: %s", d->name, why);
        return;
    }
    ck_assert_msg(why != NULL, "%s=%.40s accepted (as %llu)", d->name, text, (unsigned long long)v);
    ck_assert_uint_eq(v, 77); /* untouched */
    char buf[1024];
    int bad = 0;
    size_t n = capture_stderr(mp_options_load, hostile_env, &bad, buf, sizeof(buf));
    ck_assert_int_eq(bad, 1);
    ck_assert_msg(n > 0 && strchr(buf, '\n') == buf + n - 1, "not one line: %s", buf);
    char prefix[128];
    snprintf(prefix, sizeof(prefix), "mempool: %s=", d->name);
    ck_assert_msg(strncmp(buf, prefix, strlen(prefix)) == 0, "%s", buf);
    ck_assert_int_lt((int)n, 400); /* a long value is cut */
    if (d->type == MP_OPT_path)
        ck_assert_int_ne(mp_opt_stats_path[0], '\0');
    else
        ck_assert_uint_eq(mp_opt((mp_opt_id_t)hostile_opt), def);
}
END_TEST

static Suite *options_suite(void)
{
    Suite *s = suite_create("options");
    TCase *tc = tcase_create("parse");
    tcase_add_loop_test(tc, parse_table, 0, (int)(sizeof(cases) / sizeof(cases[0])));
    tcase_add_test(tc, path_too_long);
    tcase_add_test(tc, defaults_parse);
    suite_add_tcase(s, tc);
    tc = tcase_create("load");
    tcase_add_test(tc, load_warns_once_and_keeps_default);
    tcase_add_test(tc, log_level_none_silences_warnings);
    tcase_add_test(tc, long_value_is_cut_in_warning);
    suite_add_tcase(s, tc);
    tc = tcase_create("hostile");
    tcase_add_loop_test(tc, hostile_values_get_one_warning_and_the_default, 0, MP_OPT_COUNT * (int)N_HOSTILE);
    suite_add_tcase(s, tc);
    return s;
}

MP_CHECK_MAIN(options_suite)
