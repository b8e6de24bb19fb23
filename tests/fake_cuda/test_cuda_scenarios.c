/*
 * Scenarios of the CUDA side of the shim on the strict fake driver: each
 * runs a small program (scen_rt, scen_drv, scen_dlopen, scen_early_*)
 * alone, where it must be correct and every allocation reaches the driver,
 * and under LD_PRELOAD=the shim with MEMPOOL_DEVICE_FENCE_BATCH=1 (every
 * free eligible for the next allocation's fence), where it must still be
 * correct byte for byte and the driver must see far fewer allocations
 * (the fake's counters, printed by the program, are the evidence).
 *
 * Written against the contract of the rewritten CUDA side (per-context
 * device pools, fences that prove earlier work done); several fail on the
 * shim that predates it.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "check_main.h"

#define GiB (1024.0 * 1024 * 1024)

/* Run "prog args" (in MP_FAKE_DIR) alone or with the shim, extra env
 * "K=V ..." first; the first line of its output goes to line. */
static void run(char *line, size_t n, int shim, const char *env, const char *fmt, ...)
{
    char args[1024], cmd[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    const char *dir = getenv("MP_FAKE_DIR");
    snprintf(cmd, sizeof(cmd),
             "cd /tmp && env LD_LIBRARY_PATH=%s MEMPOOL_STATS_FORMAT=none %s%s %s %s/%s", dir,
             shim ? "MEMPOOL_DEVICE_FENCE_BATCH=1 LD_PRELOAD=" : "", shim ? getenv("MP_PRELOAD") : "",
             env ? env : "", dir, args);
    FILE *f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    line[0] = '\0';
    char *got = fgets(line, (int)n, f);
    char rest[256];
    while (fgets(rest, sizeof(rest), f)) {
    }
    int st = pclose(f);
    line[strcspn(line, "\n")] = '\0';
    ck_assert_msg(got && WIFEXITED(st) && WEXITSTATUS(st) == 0 && strncmp(line, "ok", 2) == 0,
                  "%s (%s): %s [status %#x]", args, shim ? "with the shim" : "alone",
                  line[0] ? line : "(no output)", st);
}

static double val(const char *line, const char *key)
{
    char k[64];
    snprintf(k, sizeof(k), " %s=", key);
    const char *p = strstr(line, k);
    ck_assert_msg(p != NULL, "no %s in: %s", key, line);
    return strtod(p + strlen(k), NULL);
}

/* Alone: exactly `alone` driver allocations of kind `key`; with the shim:
 * the same bytes, at most `most` allocations. */
static void pooled(const char *prog, const char *key, double alone, double most, const char *env)
{
    char a[512], s[512];
    run(a, sizeof(a), 0, env, "%s", prog);
    ck_assert_msg(val(a, key) == alone, "%s alone: %s (expected %s=%.0f)", prog, a, key, alone);
    run(s, sizeof(s), 1, env, "%s", prog);
    ck_assert_msg(val(s, key) <= most, "%s with the shim: %s (expected %s <= %.0f: no reuse)", prog, s, key, most);
}

/* 1. a stream destroyed while its kernel still writes a freed block */
START_TEST(destroyed_stream_shared) { pooled("scen_rt_shared destroyed", "mem_alloc", 12, 3, NULL); }
END_TEST
START_TEST(destroyed_stream_static) { pooled("scen_rt_static destroyed", "mem_alloc", 12, 3, NULL); }
END_TEST

/* 2. a pinned buffer written by device 1, reallocated on device 0 */
START_TEST(pinned_across_contexts) { pooled("scen_rt_shared pinned", "host_alloc", 12, 3, NULL); }
END_TEST

/* 3. reuse across streams that do not order each other */
START_TEST(nonblocking_to_legacy) { pooled("scen_rt_shared nb_legacy", "mem_alloc", 12, 3, NULL); }
END_TEST
START_TEST(nonblocking_to_nonblocking) { pooled("scen_rt_shared nb_nb", "mem_alloc", 12, 3, NULL); }
END_TEST

/* 4. 128 streams of three kinds, 2000 pairs of 1 MiB */
START_TEST(many_streams)
{
    char a[512], s[512];
    run(a, sizeof(a), 0, NULL, "scen_rt_shared many");
    ck_assert_msg(val(a, "loop_allocs") == 2000, "alone: %s", a);
    run(s, sizeof(s), 1, NULL, "scen_rt_shared many");
    ck_assert_msg(val(s, "loop_allocs") < 100, "with the shim, 2000 pairs of 1 MiB on 128 streams: %s", s);
    ck_assert_msg(val(s, "peak_used") < 256.0 * 1024 * 1024, "with the shim, memory not bounded: %s", s);
}
END_TEST

/* 5. extensions dlopen'ed RTLD_LOCAL by a program without CUDA */
START_TEST(rtld_local_runtime)
{
    pooled("scen_dlopen libscen_ext_rt.so", "mem_alloc", 100, 10, NULL);
}
END_TEST
START_TEST(rtld_local_driver)
{
    pooled("scen_dlopen libscen_ext_drv.so", "mem_alloc", 100, 10, NULL);
}
END_TEST

/* 6. a constructor (static runtime) that allocates before main */
START_TEST(early_constructor_first) { pooled("scen_early_first", "mem_alloc", 100, 10, NULL); }
END_TEST
START_TEST(early_constructor_last) { pooled("scen_early_last", "mem_alloc", 100, 10, NULL); }
END_TEST

/* 7. a cached block outlives the primary context's reset */
START_TEST(primary_release)
{
    char a[512], s[512];
    run(a, sizeof(a), 0, NULL, "scen_drv primary");
    run(s, sizeof(s), 1, NULL, "scen_drv primary");
}
END_TEST

/* 8. fence queries fail (a capture the shim did not see) */
START_TEST(capture_query_error)
{
    char a[512], s[512];
    run(a, sizeof(a), 0, NULL, "scen_drv capture");
    ck_assert_msg(val(a, "end_capture") == 0, "alone, the capture was invalidated: %s", a);
    run(s, sizeof(s), 1, NULL, "scen_drv capture");
}
END_TEST

/* 9. kinds the pool does not serve still get the cached memory */
#define CAP "FAKE_CUDA_CAPACITY=1073741824"
static const char *const oom_progs[] = {"scen_rt_shared oom", "scen_drv oom_pitch", "scen_drv oom_async",
                                        "scen_drv oom_host"};
START_TEST(oom_unpooled_kinds)
{
    char a[512], s[512];
    run(a, sizeof(a), 0, CAP, "%s", oom_progs[_i]);
    run(s, sizeof(s), 1, CAP, "%s", oom_progs[_i]);
}
END_TEST

START_TEST(meminfo_counts_the_cache_as_free)
{
    char a[512], s[512], r[512];
    run(a, sizeof(a), 0, CAP, "scen_rt_shared meminfo");
    ck_assert_msg(val(a, "free") == GiB && val(a, "total") == GiB, "alone: %s", a);
    run(s, sizeof(s), 1, CAP, "scen_rt_shared meminfo");
    ck_assert_msg(val(s, "free") >= GiB - 16.0 * 1024 * 1024 && val(s, "total") == GiB,
                  "with the shim, cudaMemGetInfo after freeing 600 MiB: %s", s);
    run(r, sizeof(r), 1, CAP " MEMPOOL_DEVICE_MEMINFO=raw", "scen_rt_shared meminfo");
    ck_assert_msg(val(r, "free") == GiB - val(r, "used_at_info"),
                  "with MEMPOOL_DEVICE_MEMINFO=raw, not the driver's numbers: %s", r);
}
END_TEST

/* 10. cuGetProcAddress answers by version and flags through the shim */
START_TEST(get_proc_address_honoured)
{
    char a[512], s[512];
    run(a, sizeof(a), 0, NULL, "scen_drv procaddr");
    run(s, sizeof(s), 1, NULL, "scen_drv procaddr");
}
END_TEST

static Suite *scenarios_suite(void)
{
    Suite *s = suite_create("cuda_scenarios");
    struct {
        const char *name;
        const TTest *tests[3];
    } cases[] = {
        {"destroyed_stream", {destroyed_stream_shared, destroyed_stream_static}},
        {"pinned_across_contexts", {pinned_across_contexts}},
        {"stream_to_stream", {nonblocking_to_legacy, nonblocking_to_nonblocking}},
        {"many_streams", {many_streams}},
        {"rtld_local", {rtld_local_runtime, rtld_local_driver}},
        {"early_constructor", {early_constructor_first, early_constructor_last}},
        {"primary_release", {primary_release}},
        {"capture", {capture_query_error}},
        {"meminfo", {meminfo_counts_the_cache_as_free}},
        {"proc_address", {get_proc_address_honoured}},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        TCase *tc = tcase_create(cases[i].name);
        for (int j = 0; j < 3 && cases[i].tests[j]; j++)
            tcase_add_test(tc, cases[i].tests[j]);
        tcase_set_timeout(tc, 120);
        suite_add_tcase(s, tc);
    }
    TCase *oom = tcase_create("oom");
    tcase_add_loop_test(oom, oom_unpooled_kinds, 0, (int)(sizeof(oom_progs) / sizeof(oom_progs[0])));
    tcase_set_timeout(oom, 120);
    suite_add_tcase(s, oom);
    return s;
}

MP_CHECK_MAIN(scenarios_suite)
