/* The stats writer: the file is valid JSON (checked by Python's parser)
 * and its counters equal what the test did; path templates expand. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_main.h"
#include "host_inline.h"
#include "mempool.h"

static void start(void)
{
    setenv("MEMPOOL_HOST_RESERVE", "64G", 0); /* a test setup may set less */
    ck_assert_int_eq(mp_init(), MP_STATE_READY);
}

/* Run a Python expression on the parsed file d; returns its printed value. */
static void py_eval(const char *path, const char *expr, char *out, size_t cap)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd),
             "python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(%s)' %s", expr,
             path);
    FILE *f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    if (fgets(out, (int)cap, f) == NULL)
        out[0] = '\0';
    out[strcspn(out, "\n")] = '\0';
    ck_assert_int_eq(pclose(f), 0);
}

START_TEST(json_counters_match)
{
    setenv("MEMPOOL_HOST_MAX_BLOCK_SIZE", "8K", 1);
    start();
    void *a[3];
    for (int i = 0; i < 3; i++)
        a[i] = mp_malloc(40); /* class 48: 3 misses */
    for (int i = 0; i < 3; i++)
        mp_free(a[i]);
    for (int i = 0; i < 2; i++)
        a[i] = mp_malloc(33); /* 2 hits */
    void *big = mp_malloc(10000); /* bypass */
    mp_free(big);
    char path[] = "/tmp/mempool-test-stats-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    ck_assert_int_eq(mempool_stats_dump(path), 0);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(st.st_mode & 0777, 0600);

    char v[256];
    py_eval(path, "d[\"schema\"], d[\"version\"]", v, sizeof(v));
    ck_assert_str_eq(v, "mempool-stats 2");
    py_eval(path, "[(r[\"size\"], r[\"requests\"], r[\"hits\"], r[\"misses\"], r[\"releases\"]) "
                  "for r in d[\"kinds\"][\"host\"][\"size_classes\"]]",
            v, sizeof(v));
    ck_assert_str_eq(v, "[(48, 5, 2, 3, 3)]");
    py_eval(path, "[d[\"kinds\"][\"host\"][\"totals\"][k] for k in (\"requests\", "
                  "\"bypasses\", \"hit_rate\", \"bytes_requested\", \"bytes_in_use\")]",
            v, sizeof(v));
    ck_assert_str_eq(v, "[6, 1, 0.3333, 10186, 96]");
    char pid[32];
    snprintf(pid, sizeof(pid), "%d", (int)getpid());
    py_eval(path, "d[\"process\"][\"pid\"]", v, sizeof(v));
    ck_assert_str_eq(v, pid);
    py_eval(path, "d[\"options\"][\"MEMPOOL_HOST_MAX_BLOCK_SIZE\"]", v, sizeof(v));
    ck_assert_str_eq(v, "8192");
    unlink(path);
}
END_TEST

START_TEST(text_format)
{
    start();
    void *p = mp_malloc(100);
    mp_free(p);
    char path[] = "/tmp/mempool-test-text-XXXXXX";
    int fd = mkstemp(path);
    mp_stats_write_fd(fd, MP_FMT_TEXT);
    close(fd);
    FILE *f = fopen(path, "r");
    char buf[4096];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    unlink(path);
    ck_assert_ptr_nonnull(strstr(buf, "requests"));
    ck_assert_ptr_nonnull(strstr(buf, "\n     total           1           0         1    0.0%"));
}
END_TEST

START_TEST(path_template)
{
    char out[256], want[256], host[128];
    ck_assert(mp_stats_expand_path("/tmp/s.%p.%%.%q.json", out, sizeof(out)));
    snprintf(want, sizeof(want), "/tmp/s.%d.%%.%%q.json", (int)getpid());
    ck_assert_str_eq(out, want);
    gethostname(host, sizeof(host));
    ck_assert(mp_stats_expand_path("%h-%e", out, sizeof(out)));
    snprintf(want, sizeof(want), "%s-test_stats", host);
    ck_assert_str_eq(out, want);
    ck_assert(!mp_stats_expand_path("%h%h%h%h", out, 4)); /* does not fit */
}
END_TEST

START_TEST(unwritable_directory_warns)
{
    start();
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    dup2(fds[1], STDERR_FILENO);
    ck_assert_int_eq(mempool_stats_dump("/nonexistent-dir/x.json"), -EIO);
    close(fds[1]);
    close(STDERR_FILENO);
    char buf[512];
    ssize_t n = read(fds[0], buf, sizeof(buf) - 1);
    buf[n > 0 ? n : 0] = '\0';
    ck_assert_str_eq(buf, "mempool: cannot write stats file /nonexistent-dir/x.json: "
                          "No such file or directory\n");
}
END_TEST

static Suite *stats_suite(void)
{
    Suite *s = suite_create("stats");
    TCase *tc = tcase_create("write");
    tcase_add_test(tc, json_counters_match);
    tcase_add_test(tc, text_format);
    tcase_add_test(tc, path_template);
    tcase_add_test(tc, unwritable_directory_warns);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

MP_CHECK_MAIN(stats_suite)
