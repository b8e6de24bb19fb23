/* The stats writer: the file is valid JSON (checked by Python's parser)
 * and its counters equal what the test did; path templates expand. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_main.h"
#include "host_inline.h"
#include "internal.h"
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
    ck_assert_str_eq(v, "mempool-stats 3");
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

/* Read what the shim writes on stderr while fn runs, at log level info
 * (where a stats file that cannot be written is said: the default, warn,
 * is silent about it). */
static void capture_stderr_at(int level, void (*fn)(void *), void *arg, char *buf, size_t cap)
{
    uint64_t old = mp_opt_values[MP_OPT_LOG_LEVEL];
    mp_log_set_level(level); /* the logger's own copy of MEMPOOL_LOG_LEVEL */
    int fds[2], saved = dup(STDERR_FILENO);
    ck_assert_int_eq(pipe(fds), 0);
    dup2(fds[1], STDERR_FILENO);
    close(fds[1]);
    fn(arg);
    dup2(saved, STDERR_FILENO);
    close(saved);
    ssize_t n = read(fds[0], buf, cap - 1);
    buf[n > 0 ? n : 0] = '\0';
    close(fds[0]);
    mp_log_set_level((int)old);
}

static void capture_stderr(void (*fn)(void *), void *arg, char *buf, size_t cap)
{
    capture_stderr_at(MP_LOG_INFO, fn, arg, buf, cap);
}

static void dump_nonexistent(void *arg)
{
    (void)arg;
    ck_assert_int_eq(mempool_stats_dump("/nonexistent-dir/x.json"), -EIO);
}

START_TEST(unwritable_directory_is_said_at_info)
{
    start();
    char buf[512];
    capture_stderr_at(MP_LOG_WARN, dump_nonexistent, NULL, buf, sizeof(buf));
    ck_assert_str_eq(buf, ""); /* the default level: silent */
    capture_stderr(dump_nonexistent, NULL, buf, sizeof(buf));
    ck_assert_str_eq(buf, "mempool: cannot write stats file /nonexistent-dir/x.json: "
                          "No such file or directory\n");
}
END_TEST

static bool wrote;
static char written[MP_PATH_MAX];
static void write_default(void *arg)
{
    (void)arg;
    wrote = mp_stats_write_now(NULL, written, sizeof(written));
}

static void put(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    ck_assert_int_eq(chmod(path, mode), 0);
}

/* setuid/setgid: no MEMPOOL_* applies, and without the administrator's
 * setting no file is written at all (quietly: that is the default). */
START_TEST(secure_process_writes_no_file_by_default)
{
    start();
    char dir[] = "/tmp/mempool-secure-XXXXXX", err[512];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ck_assert_int_eq(chdir(dir), 0);
    mp_stats_secure_mode = 1;
    mp_setuid_conf_path = "/nonexistent/setuid-stats-dir";
    capture_stderr(write_default, NULL, err, sizeof(err));
    ck_assert(!wrote);
    ck_assert_str_eq(err, "");
    ck_assert_int_eq(rmdir(dir), 0); /* still empty */
}
END_TEST

/* The setting names a directory only root can write: files go there; a
 * setting or directory others can write is refused with one warning.
 * (Ownership by root: only checkable when the tests run as root.) */
START_TEST(secure_process_writes_where_root_says)
{
    if (geteuid() != 0)
        return;
    start();
    char dir[] = "/tmp/mempool-secure-XXXXXX", conf[64], line[80], err[512];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ck_assert_int_eq(chmod(dir, 0755), 0);
    snprintf(conf, sizeof(conf), "%s.conf", dir);
    snprintf(line, sizeof(line), "%s\n", dir);
    put(conf, line, 0644);
    mp_stats_secure_mode = 1;
    mp_setuid_conf_path = conf;
    capture_stderr(write_default, NULL, err, sizeof(err));
    ck_assert(wrote);
    ck_assert_str_eq(err, "");
    ck_assert_int_eq(strncmp(written, dir, strlen(dir)), 0);
    ck_assert_int_eq(unlink(written), 0);
    ck_assert_int_eq(chmod(conf, 0666), 0); /* anyone could point it elsewhere */
    capture_stderr(write_default, NULL, err, sizeof(err));
    ck_assert(!wrote);
    ck_assert_ptr_nonnull(strstr(err, "does not name a directory only root can write"));
    ck_assert_int_eq(chmod(conf, 0644), 0);
    ck_assert_int_eq(chmod(dir, 0777), 0); /* anyone could plant files there */
    capture_stderr(write_default, NULL, err, sizeof(err));
    ck_assert(!wrote);
    mp_stats_secure_mode = 0; /* an ordinary process: the template as usual */
    mp_setuid_conf_path = "/nonexistent";
    unlink(conf);
    ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

static void dump_to(void *path) { wrote = mempool_stats_dump(path) == 0; }

/* An existing file of another user, or a link, is never replaced. */
START_TEST(foreign_file_is_left_alone)
{
    if (geteuid() != 0)
        return;
    start();
    char dir[] = "/tmp/mempool-foreign-XXXXXX", path[64], link_path[64], err[512], buf[16] = "";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/theirs.json", dir);
    put(path, "theirs", 0644);
    ck_assert_int_eq(chown(path, 65534, 65534), 0);
    capture_stderr(dump_to, path, err, sizeof(err));
    ck_assert(!wrote);
    ck_assert_ptr_nonnull(strstr(err, "it exists and is another user's file"));
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(fgets(buf, sizeof(buf), f));
    fclose(f);
    ck_assert_str_eq(buf, "theirs");
    snprintf(link_path, sizeof(link_path), "%s/link.json", dir);
    ck_assert_int_eq(symlink(path, link_path), 0);
    capture_stderr(dump_to, link_path, err, sizeof(err));
    ck_assert(!wrote);
    ck_assert_ptr_nonnull(strstr(err, "not a regular file"));
    unlink(link_path);
    unlink(path);
    ck_assert_int_eq(rmdir(dir), 0); /* no temporary file left */
}
END_TEST

/* A full disk (RLIMIT_FSIZE stands in: writes fail with EFBIG) and a
 * read-only place: one warning each, no temporary file left, and the file
 * that was there before is untouched. */
START_TEST(full_or_read_only_target_warns)
{
    start();
    char dir[] = "/tmp/mempool-full-XXXXXX", path[64], err[512], buf[16] = "";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/s.json", dir);
    put(path, "before", 0600);
    signal(SIGXFSZ, SIG_IGN);
    struct rlimit small = {1024, 1024}, saved;
    getrlimit(RLIMIT_FSIZE, &saved);
    ck_assert_int_eq(setrlimit(RLIMIT_FSIZE, &small), 0);
    capture_stderr(dump_to, path, err, sizeof(err));
    setrlimit(RLIMIT_FSIZE, &saved);
    ck_assert(!wrote);
    char want[160];
    snprintf(want, sizeof(want), "mempool: cannot write stats file %s: File too large\n", path);
    ck_assert_str_eq(err, want);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(fgets(buf, sizeof(buf), f));
    fclose(f);
    ck_assert_str_eq(buf, "before");
    ck_assert_int_eq(unlink(path), 0);
    ck_assert_int_eq(rmdir(dir), 0); /* the temporary file is gone too */
    /* procfs takes no new files, not even from root. */
    capture_stderr(dump_to, "/proc/mempool-stats.json", err, sizeof(err));
    ck_assert(!wrote);
    ck_assert_int_eq(strncmp(err, "mempool: cannot write stats file /proc/mempool-stats.json: ", 59), 0);
    char *nl = strchr(err, '\n'); /* exactly one line */
    ck_assert(nl != NULL && nl[1] == '\0');
}
END_TEST

static Suite *stats_suite(void)
{
    Suite *s = suite_create("stats");
    TCase *tc = tcase_create("write");
    tcase_add_test(tc, json_counters_match);
    tcase_add_test(tc, text_format);
    tcase_add_test(tc, path_template);
    tcase_add_test(tc, unwritable_directory_is_said_at_info);
    tcase_add_test(tc, secure_process_writes_no_file_by_default);
    tcase_add_test(tc, secure_process_writes_where_root_says);
    tcase_add_test(tc, foreign_file_is_left_alone);
    tcase_add_test(tc, full_or_read_only_target_warns);
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

MP_CHECK_MAIN(stats_suite)
