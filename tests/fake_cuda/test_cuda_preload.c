/*
 * The shim in front of CUDA programs on the fake driver, on all three
 * paths: the shared and the static runtime (both take the driver's entry
 * points from cuGetProcAddress, found through dlsym) and the driver API
 * (exported cuMemAlloc_v2).  Each program must behave the same with and without the
 * shim, the shim must serve most allocations from its pools (far fewer
 * driver calls), and the stats file must name the path that was used.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"

typedef struct {
    const char *exe;
    const char *hook;       /* the hook its allocations go through */
    const char *hook_field; /* "calls" or "handed_out" must be > 0 */
} app_t;

static const app_t apps[] = {
    {"cuda_app_shared", "cuMemAlloc_v2", "handed_out"},
    {"cuda_app_static", "cuMemAlloc_v2", "handed_out"},
    {"cu_app", "cuMemAlloc_v2", "calls"},
};

/* Run app; parse "ok mallocs=M driver_allocs=A ..." */
static void run_app(const char *exe, const char *stats_dir, long *mallocs, long *driver_allocs,
                    long *host_allocs)
{
    char cmd[4096], line[512] = "";
    /* Device fences every 4 frees: the programs' loops are short (the
     * default batch trades 64 blocks of rotation for fewer driver calls). */
    snprintf(cmd, sizeof(cmd), "cd /tmp && env LD_LIBRARY_PATH=%s MEMPOOL_DEVICE_FENCE_BATCH=4 %s%s%s%s %s/%s",
             getenv("MP_FAKE_DIR"),
             stats_dir ? "MEMPOOL_STATS_FILE=" : "", stats_dir ? stats_dir : "",
             stats_dir ? "/%e.%p.json LD_PRELOAD=" : "", stats_dir ? getenv("MP_PRELOAD") : "",
             getenv("MP_FAKE_DIR"), exe);
    FILE *f = popen(cmd, "r");
    ck_assert_ptr_nonnull(f);
    char *got = fgets(line, sizeof(line), f);
    int st = pclose(f);
    ck_assert_msg(got && WIFEXITED(st) && WEXITSTATUS(st) == 0 && strncmp(line, "ok ", 3) == 0,
                  "%s (%s): %s", exe, stats_dir ? "with the shim" : "alone", line);
    *host_allocs = -1; /* only the runtime programs use pinned memory */
    ck_assert_int_ge(sscanf(line, "ok mallocs=%ld driver_allocs=%ld driver_frees=%*d host_allocs=%ld",
                            mallocs, driver_allocs, host_allocs), 2);
}

START_TEST(app_pooled_through_its_path)
{
    const app_t *a = &apps[_i];
    long m1, d1, m2, d2, h1, h2;
    run_app(a->exe, NULL, &m1, &d1, &h1);
    ck_assert_int_ge(d1, m1 - 1); /* alone: every allocation reaches the driver */

    char dir[] = "/tmp/mempool-cuda-XXXXXX", cmd[8192];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    run_app(a->exe, dir, &m2, &d2, &h2);
    ck_assert_int_eq(m1, m2);
    ck_assert_msg(d2 * 3 < d1, "%s: %ld driver allocations with the shim, %ld without", a->exe, d2, d1);
    ck_assert_msg(h1 < 0 || h2 * 10 < h1, "%s: %ld pinned allocations with the shim, %ld without",
                  a->exe, h2, h1);

    snprintf(cmd, sizeof(cmd),
             "python3 -c 'import json,glob,sys\n"
             "fs = glob.glob(sys.argv[1] + \"/*.json\")\n"
             "assert len(fs) == 1, fs\n"
             "d = json.load(open(fs[0]))\n"
             "h = {x[\"name\"]: x for x in d[\"cuda_hooks\"]}\n"
             "assert h[sys.argv[2]][sys.argv[3]] > 0, h\n"
             "dev = d[\"kinds\"][\"device\"][\"devices\"][0]\n"
             "assert dev[\"hits\"] > 0 and dev[\"bytes_in_use\"] == 0, dev\n"
             "rows = dev[\"size_classes\"]\n"
             "assert rows and sum(r[\"hits\"] for r in rows) == dev[\"hits\"], rows\n"
             "assert all(r[\"size\"] >= 512 for r in rows), rows\n"
             "assert sys.argv[4] == \"cu_app\" or d[\"kinds\"][\"pinned\"][\"pools\"], d[\"kinds\"]\n"
             "p = d[\"cuda_paths\"]\n"
             "assert p[\"proc_address\"][\"hooks_handed_out\"] > 0 or sys.argv[4] != \"cuda_app_static\", p\n"
             "assert p[\"driver\"][\"calls\"] > 0 or p[\"runtime\"][\"calls\"] > 0, p\n"
             "if sys.argv[4] == \"cu_app\":\n"
             "    assert h[\"cuMemFreeAsync_ptsz\"][\"handed_out\"] == 1, h\n"
             "    assert h[\"cuStreamBeginCapture_v2\"][\"calls\"] == 1, h\n"
             "    assert dev[\"captured_pass_through\"] == 1 and dev[\"ipc_exports\"] == 1, dev\n"
             "    assert dev[\"segments\"] >= 1, dev' %s %s %s %s",
             dir, a->hook, a->hook_field, a->exe);
    ck_assert_msg(system(cmd) == 0, "%s: stats file lacks the hook or device rows", a->exe);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

static Suite *cuda_preload_suite(void)
{
    Suite *s = suite_create("cuda_preload");
    TCase *tc = tcase_create("paths");
    tcase_add_loop_test(tc, app_pooled_through_its_path, 0, (int)(sizeof(apps) / sizeof(apps[0])));
    tcase_set_timeout(tc, 60);
    suite_add_tcase(s, tc);
    return s;
}

MP_CHECK_MAIN(cuda_preload_suite)
