/*
 * MEMPOOL_DEBUG from real runs under the preload (tests/preload/debug_app.c):
 * each misuse is found once, by the right kind, with the misusing function
 * named, counted in the stats file, and then aborts or continues as
 * MEMPOOL_DEBUG_ACTION says; a correct program's output does not change.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "check_main.h"

static char dir[256];

static int shell(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void setup(void)
{
    strcpy(dir, "/tmp/mempool-debug-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    shell(cmd);
}

/* Run debug_app ARGS under the preload with ENV; its exit status must be
 * STATUS (the shell's: 134 for SIGABRT); then python checks the files
 * (d = stats JSON or None, err = stderr lines, out = stdout). */
static int run(const char *env, const char *args, int status, const char *check)
{
    char cmd[8192];
    snprintf(cmd, sizeof(cmd),
             "cd %s && (env %s MEMPOOL_STATS_FILE=%s/s.json LD_PRELOAD=%s %s %s > out 2> err; echo $? > rc);"
             " python3 -c 'import json,os\n"
             "rc = int(open(\"rc\").read())\n"
             "assert rc == %d, rc\n"
             "d = json.load(open(\"s.json\")) if os.path.exists(\"s.json\") else None\n"
             "err = open(\"err\").read().splitlines()\nout = open(\"out\").read()\n%s' || "
             "{ echo '--- stderr'; cat err; echo '--- stdout'; cat out; exit 1; }",
             dir, env, dir, getenv("MP_PRELOAD"), getenv("MP_DEBUG_APP"), args, status, check);
    return shell(cmd);
}

/* One finding of KIND, named after FN, counted in the stats file. */
#define ONE_FINDING(kind, fn)                                                         \
    "assert len(err) == 1 and err[0].startswith(\"mempool: debug: " kind ": \"), err\n" \
    "assert \"called from \" in err[0] and \"; continuing: \" in err[0], err\n"        \
    "assert \"" fn "\" in err[0], err\n"          \
    "assert out.endswith(\"done\\n\"), out\n"                                           \
    "dbg = d[\"debug\"]\n"                                                            \
    "assert dbg[\"enabled\"] is True and dbg[\"" kind "\"] == 1, dbg\n"               \
    "assert sum(v for k, v in dbg.items() if k != \"enabled\") == 1, dbg\n"

static const struct {
    const char *arg, *check;
} misuse[] = {
    {"uaf", ONE_FINDING("use_after_free", "debug_app_write_after_free")
            "assert \"byte 10 is 0x78\" in err[0], err\n"},
    {"overflow", ONE_FINDING("overflow", "debug_app_overflow")
                 "assert \"of 100 bytes\" in err[0] and \"offset 100\" in err[0], err\n"},
    {"overflow-large", ONE_FINDING("overflow", "debug_app_overflow")
                       "assert \"of 300000 bytes\" in err[0], err\n"},
    {"double", ONE_FINDING("double_free", "debug_app_double_free")
               "assert \"first freed at debug_app_double_free\" in err[0], err\n"},
    {"interior", ONE_FINDING("invalid_free", "debug_app_interior_free")},
};

START_TEST(each_misuse_is_found_once)
{
    ck_assert_int_eq(run("MEMPOOL_DEBUG=1 MEMPOOL_DEBUG_ACTION=continue", misuse[_i].arg, 0,
                         misuse[_i].check), 0);
}
END_TEST

START_TEST(abort_is_the_default_action)
{
    /* SIGABRT: the shell reports 128 + 6; no stats file from a dead process. */
    ck_assert_int_eq(run("MEMPOOL_DEBUG=1", "double", 134,
        "err = [l for l in err if l != \"Aborted\"]\n"
        "assert len(err) == 1 and err[0].endswith(\"aborting (MEMPOOL_DEBUG_ACTION=abort)\"), err\n"
        "assert \"done\" not in out\n"), 0);
}
END_TEST

START_TEST(a_correct_program_is_unchanged)
{
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "cd %s && %s clean > plain", dir, getenv("MP_DEBUG_APP"));
    ck_assert_int_eq(shell(cmd), 0);
    ck_assert_int_eq(run("MEMPOOL_DEBUG=1", "clean", 0,
        "assert err == [], err\n"
        "assert out == open(\"plain\").read() and out.startswith(\"clean \"), out\n"
        "assert d[\"debug\"][\"enabled\"] is True\n"
        "assert sum(v for k, v in d[\"debug\"].items() if k != \"enabled\") == 0, d[\"debug\"]\n"
        "assert d[\"kinds\"][\"host\"][\"totals\"][\"requests\"] > 100000\n"), 0);
}
END_TEST

START_TEST(off_by_default)
{
    ck_assert_int_eq(run("", "clean", 0,
        "assert err == [] and d[\"debug\"][\"enabled\"] is False, (err, d[\"debug\"])\n"), 0);
}
END_TEST

static Suite *debug_suite(void)
{
    Suite *s = suite_create("debug");
    TCase *tc = tcase_create("debug");
    tcase_set_timeout(tc, 120);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_loop_test(tc, each_misuse_is_found_once, 0, (int)(sizeof(misuse) / sizeof(misuse[0])));
    tcase_add_test(tc, abort_is_the_default_action);
    tcase_add_test(tc, a_correct_program_is_unchanged);
    tcase_add_test(tc, off_by_default);
    suite_add_tcase(s, tc);
    return s;
}

MP_CHECK_MAIN(debug_suite)
