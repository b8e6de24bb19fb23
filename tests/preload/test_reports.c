/*
 * What the report is made of, from real runs under the preload: call sites
 * (names, counts, sampling rate), dumps on a signal and at an interval
 * during heavy allocation, and the timeline.  The stats files are read
 * with python3's json module.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check_main.h"

static char dir[256];

static int shell(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void setup(void)
{
    strcpy(dir, "/tmp/mempool-reports-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    shell(cmd);
}

/* Run the app under the preload with extra environment, stats to dir/s.json;
 * then a python check of that file (d = the loaded JSON, out = stdout). */
static int run_and_check(const char *env, const char *args, const char *check)
{
    char cmd[8192];
    snprintf(cmd, sizeof(cmd),
             "cd %s && env %s MEMPOOL_STATS_FILE=%s/s.json LD_PRELOAD=%s %s %s > out 2> err"
             " && test ! -s err && python3 -c 'import json,sys\n"
             "d = json.load(open(\"s.json\"))\nout = open(\"out\").read()\n%s' || "
             "{ echo '--- stderr'; cat err; echo '--- stdout'; cat out; exit 1; }",
             dir, env, dir, getenv("MP_PRELOAD"), getenv("MP_REPORT_APP"), args, check);
    return shell(cmd);
}

START_TEST(call_sites_name_the_two_functions)
{
    /* Every miss sampled (1 byte): the counts are the program's. */
    ck_assert_int_eq(run_and_check("MEMPOOL_CALLSITE_SAMPLE=1", "sites",
        "cs = d[\"call_sites\"]\n"
        "assert d[\"version\"] == 3 and cs[\"available\"] and cs[\"skipped\"] == 0, cs\n"
        "host = [s for s in cs[\"sites\"] if s[\"kind\"] == \"host\"]\n"
        "top = sorted(host, key=lambda s: -s[\"misses\"])[:2]\n"
        "names = [s[\"frames\"][0][\"function\"] for s in top]\n"
        "assert names == [\"report_app_alpha\", \"report_app_beta\"], names\n"
        "a, b = top\n"
        "assert 290 <= a[\"misses\"] <= 300 and 90 <= b[\"misses\"] <= 100, (a, b)\n"
        /* the class of the size asked for (4000 bytes) */
        "assert max(a[\"size_classes\"], key=lambda c: c[\"samples\"])[\"size\"] == 4096, a\n"
        "assert b[\"bytes\"] == b[\"misses\"] * 9000, b\n"
        "assert a[\"frames\"][1][\"function\"] == \"main\", a[\"frames\"]\n"
        "assert a[\"frames\"][0][\"object\"].endswith(\"report_app\")\n"), 0);
}
END_TEST

START_TEST(sampling_rate_is_honoured)
{
    /* 100000 misses of 4 KiB (no caches) at one sample per 64 KiB: a miss
     * is sampled with probability 1 - exp(-4096 / 65536), 6059 expected
     * (Poisson: sd 78, the 5% tolerance is 3.9 sd), and the unbiased
     * estimate of the misses within 5% of 100000. */
    ck_assert_int_eq(run_and_check("MEMPOOL_CALLSITE_SAMPLE=64K MEMPOOL_HOST_TCACHE_BLOCKS=0 "
                                   "MEMPOOL_HOST_MAX_BLOCKS=0", "rate 100000",
        "s = [x for x in d[\"call_sites\"][\"sites\"] if x[\"kind\"] == \"host\" and "
        "x[\"frames\"] and x[\"frames\"][0][\"function\"] == \"main\"]\n"
        "n = sum(x[\"samples\"] for x in s)\nm = sum(x[\"misses\"] for x in s)\n"
        "print(n, m)\n"
        "assert abs(n - 6059) <= 0.05 * 6059, n\n"
        "assert abs(m - 100000) <= 0.05 * 100000, m\n"), 0);
}
END_TEST

START_TEST(no_host_call_sites_when_off)
{
    ck_assert_int_eq(run_and_check("MEMPOOL_CALLSITE_SAMPLE=0", "sites",
        "cs = d[\"call_sites\"]\n"
        "assert cs[\"sample_bytes\"] == 0 and cs[\"captured\"] == 0 and cs[\"sites\"] == [], cs\n"), 0);
}
END_TEST

/* SIGUSR1 every 5 ms at a program allocating in 4 threads: every dump is
 * written by the dump thread, the program's own handler still runs, its
 * data stays intact, and the last file is the final one. */
START_TEST(signal_dumps_during_heavy_allocation)
{
    char stats[300], cmd[600];
    snprintf(stats, sizeof(stats), "%s/s.json", dir);
    pid_t pid = fork();
    if (pid == 0) {
        setenv("LD_PRELOAD", getenv("MP_PRELOAD"), 1);
        setenv("MEMPOOL_STATS_FILE", stats, 1);
        setenv("MEMPOOL_DUMP_SIGNAL", "USR1", 1);
        snprintf(cmd, sizeof(cmd), "%s/out", dir);
        if (freopen(cmd, "w", stdout) == NULL)
            _exit(126);
        execl(getenv("MP_REPORT_APP"), "report_app", "churn", "1.5", (char *)NULL);
        _exit(127);
    }
    struct timespec pause = {0, 5000000};
    nanosleep(&(struct timespec){0, 200000000}, NULL); /* let it install its handler */
    int sent = 0;
    for (int i = 0; i < 200; i++, sent++) {
        if (kill(pid, SIGUSR1) != 0)
            break;
        nanosleep(&pause, NULL);
    }
    int status = 0;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d", status);
    ck_assert_int_gt(sent, 100);
    snprintf(cmd, sizeof(cmd),
             "cd %s && grep -q '^ok usr1=[1-9]' out && python3 -c 'import json\n"
             "d = json.load(open(\"s.json\"))\np = d[\"process\"]\n"
             "assert p[\"final\"] is True and p[\"dump_reason\"] == \"exit\", p\n"
             "assert p[\"dump_seq\"] >= 1, p\n"
             "assert d[\"kinds\"][\"host\"][\"totals\"][\"bytes_in_use\"] < 1 << 20\n' && test -z \"$(ls | grep tmp)\"",
             dir);
    ck_assert_int_eq(shell(cmd), 0);
}
END_TEST

START_TEST(interval_dumps_and_the_final_report)
{
    /* Dumps every second of a 2.5 s run: at least two before the exit. */
    ck_assert_int_eq(run_and_check("MEMPOOL_DUMP_INTERVAL=1", "churn 2.5",
        "p = d[\"process\"]\n"
        "assert p[\"final\"] and p[\"dump_reason\"] == \"exit\" and p[\"dump_seq\"] >= 2, p\n"
        "assert out.startswith(\"ok usr1=0\"), out\n"), 0);
}
END_TEST

/* exit() while threads still allocate, 20 times with different delays:
 * every run ends at once with status 0 and a complete, final stats file. */
START_TEST(exit_while_threads_allocate)
{
    for (int i = 0; i < 20; i++) {
        char args[64];
        snprintf(args, sizeof(args), "exit-busy %d", 1000 + i * 7919 % 90000);
        ck_assert_int_eq(run_and_check("", args,
            "assert out == \"exiting\\n\", out\n"
            "assert d[\"process\"][\"final\"] is True\n"
            "assert d[\"kinds\"][\"host\"][\"totals\"][\"requests\"] > 0\n"), 0);
    }
}
END_TEST

/* A fork() child that leaves with _exit() alone in its process writes its
 * file (multiprocessing's workers do this); a vfork() child and a child
 * with other threads do not: 1 + 3 files, each final. */
START_TEST(fork_children_leaving_with__exit)
{
    char cmd[4096];
    snprintf(cmd, sizeof(cmd),
             "cd %s && MEMPOOL_STATS_FILE=%s/f.%%p.json LD_PRELOAD=%s %s fork-exit > out 2> err"
             " && test ! -s err && test \"$(cat out)\" = ok && python3 -c 'import glob,json\n"
             "f = [json.load(open(x)) for x in glob.glob(\"f.*.json\")]\n"
             "assert len(f) == 4, len(f)\n"
             "assert all(d[\"process\"][\"final\"] for d in f)\n"
             "kids = [d for d in f if d[\"kinds\"][\"host\"][\"totals\"][\"requests\"] >= 1000]\n"
             "assert len(kids) >= 3, len(kids)' && test -z \"$(ls | grep tmp)\"",
             dir, dir, getenv("MP_PRELOAD"), getenv("MP_REPORT_APP"));
    ck_assert_int_eq(shell(cmd), 0);
}
END_TEST

START_TEST(host_timeline_when_asked)
{
    ck_assert_int_eq(run_and_check("MEMPOOL_TIMELINE_HOST=1 MEMPOOL_TIMELINE_INTERVAL=50", "churn 0.6",
        "t = d[\"timeline\"]\n"
        "ts = [s[\"t_s\"] for s in t[\"samples\"]]\n"
        "assert t[\"interval_s\"] == 0.05 and len(ts) >= 8, t\n"
        "assert ts == sorted(ts), ts\n"
        "assert max(s[\"host_reserved\"] for s in t[\"samples\"]) > 0\n"
        "assert all(s[\"host_in_use\"] <= s[\"host_reserved\"] for s in t[\"samples\"]), t\n"), 0);
    /* Off for host by default: a host-only program has no timeline. */
    ck_assert_int_eq(run_and_check("", "sites", "assert \"timeline\" not in d, d.get(\"timeline\")\n"), 0);
}
END_TEST

static Suite *reports_suite(void)
{
    Suite *s = suite_create("reports");
    TCase *tc = tcase_create("runs");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, call_sites_name_the_two_functions);
    tcase_add_test(tc, sampling_rate_is_honoured);
    tcase_add_test(tc, no_host_call_sites_when_off);
    tcase_add_test(tc, signal_dumps_during_heavy_allocation);
    tcase_add_test(tc, interval_dumps_and_the_final_report);
    tcase_add_test(tc, host_timeline_when_asked);
    tcase_add_test(tc, exit_while_threads_allocate);
    tcase_add_test(tc, fork_children_leaving_with__exit);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    return s;
}

MP_CHECK_MAIN(reports_suite)
