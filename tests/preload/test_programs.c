/*
 * The preload in front of real programs nobody here wrote: each command
 * runs without and with LD_PRELOAD=libmempool_preload.so, the outputs must
 * be byte-identical, the shim must print nothing on stderr, and every
 * process must leave a valid stats file, at least one with hits > 0.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"

typedef struct {
    const char *name;
    const char *cmd; /* run by /bin/sh in a fresh temporary directory */
} program_t;

#define GEN_INPUT "awk 'BEGIN{srand(1); for(i=0;i<200000;i++) print int(rand()*1e9), i}' > in.txt; "

static const program_t programs[] = {
    {"python3",
     "python3 -c 'import json,collections\n"
     "d={}\n"
     "for i in range(200000): d[\"k%d\" % i] = [str(i)] * (i % 7)\n"
     "c = collections.Counter(len(v) for v in d.values())\n"
     "s = json.dumps({k: d[k] for k in list(d)[:1000]})\n"
     "print(len(d), sorted(c.items()), len(s), hash(s) == hash(s[:]))'"},
    {"perl", "perl -e 'my %h; for (1..200000) { $h{\"k$_\"} = \"v\" x ($_ % 50) }"
             " my @k = sort keys %h; print scalar(@k), \" @k[0..5]\\n\";'"},
    {"sort", GEN_INPUT "sort -n in.txt | md5sum; sort -k2,2r in.txt | tail -3"},
    {"gzip-xz", GEN_INPUT "gzip -9 -c in.txt | gzip -d | md5sum; xz -c in.txt | xz -d | md5sum;"
                          " gzip -9 -n -c in.txt | md5sum"},
    {"git", "export GIT_AUTHOR_DATE='2026-01-01T00:00:00Z' GIT_COMMITTER_DATE='2026-01-01T00:00:00Z'"
            " HOME=$PWD GIT_CONFIG_NOSYSTEM=1; git init -q -b main repo && cd repo &&"
            " git config user.email t@example.com && git config user.name test &&"
            " seq 1 20000 > f && git add f && git commit -qm first && seq 5 20005 > f &&"
            " git commit -qam second && git log --format='%H %s' && git diff HEAD~1 --stat"},
    {"gcc", "printf '#include <stdio.h>\\nint main(void){long s=0; for(int i=0;i<1000;i++) s+=i*i;"
            " printf(\"%%ld\\\\n\", s); return 0;}\\n' > p.c && gcc -O2 -S -o - p.c && gcc -O2 -o p p.c"
            " && ./p"},
    {"cxx-workload", "\"$MP_CXX_WORKLOAD\""},
};

/* Run cmd under sh in dir, with the shim if stats_dir is set; stdout to out,
 * stderr to err.  Returns the exit status. */
static int run(const char *dir, const char *cmd, const char *stats_dir, const char *out,
               const char *err)
{
    pid_t pid = fork();
    if (pid == 0) {
        if (chdir(dir) != 0)
            _exit(126);
        freopen(out, "w", stdout);
        freopen(err, "w", stderr);
        if (stats_dir) {
            char stats[4400];
            snprintf(stats, sizeof(stats), "%s/%%e.%%p.json", stats_dir);
            setenv("LD_PRELOAD", getenv("MP_PRELOAD"), 1);
            setenv("MEMPOOL_STATS_FILE", stats, 1);
        }
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    int status = -1;
    waitpid(pid, &status, 0);
    return status;
}

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    ck_assert_msg(f != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    buf[n] = '\0';
    fclose(f);
    *len = (size_t)n;
    return buf;
}

static int shell(const char *cmd)
{
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

START_TEST(program_runs_identically)
{
    const program_t *p = &programs[_i];
    char dir[] = "/tmp/mempool-preload-XXXXXX", plain[4200], shimmed[4200], out1[4200], out2[4200],
         err1[4200], err2[4200], stats[4200], cmd[16800];
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(plain, sizeof(plain), "%s/plain", dir);
    snprintf(shimmed, sizeof(shimmed), "%s/shim", dir);
    snprintf(cmd, sizeof(cmd), "mkdir -p %s %s %s/stats", plain, shimmed, dir);
    ck_assert_int_eq(shell(cmd), 0);
    snprintf(out1, sizeof(out1), "%s/out.plain", dir);
    snprintf(out2, sizeof(out2), "%s/out.shim", dir);
    snprintf(err1, sizeof(err1), "%s/err.plain", dir);
    snprintf(err2, sizeof(err2), "%s/err.shim", dir);

    snprintf(stats, sizeof(stats), "%s/stats", dir);
    int st1 = run(plain, p->cmd, NULL, out1, err1);
    ck_assert_msg(WIFEXITED(st1) && WEXITSTATUS(st1) == 0, "%s failed without the shim (%#x)", p->name, st1);
    int st2 = run(shimmed, p->cmd, stats, out2, err2);
    ck_assert_msg(st1 == st2, "%s: status %#x without the shim, %#x with it", p->name, st1, st2);

    size_t n1, n2, ne1, ne2;
    char *a = slurp(out1, &n1), *b = slurp(out2, &n2);
    ck_assert_msg(n1 > 0, "%s printed nothing", p->name);
    ck_assert_msg(n1 == n2 && memcmp(a, b, n1) == 0, "%s: output differs under the shim", p->name);
    char *e1 = slurp(err1, &ne1), *e2 = slurp(err2, &ne2);
    ck_assert_msg(ne1 == ne2 && memcmp(e1, e2, ne1) == 0, "%s: stderr differs under the shim:\n"
                  "without:\n%s\nwith:\n%s", p->name, e1, e2);

    /* Every stats file parses; the busiest shows hits. */
    snprintf(cmd, sizeof(cmd),
             "python3 -c 'import json,glob,sys\n"
             "fs = glob.glob(sys.argv[1] + \"/stats/*.json\")\n"
             "ds = [json.load(open(f)) for f in fs]\n"
             "assert fs and all(d[\"schema\"] == \"mempool-stats\" for d in ds), fs\n"
             "h = max(d[\"kinds\"][\"host\"][\"totals\"][\"hits\"] for d in ds)\n"
             "assert h > 0, h' %s",
             dir);
    ck_assert_msg(shell(cmd) == 0, "%s: stats files missing, invalid or without hits", p->name);
    free(a), free(b), free(e1), free(e2);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    shell(cmd);
}
END_TEST

START_TEST(invalid_option_one_line)
{
    char cmd[4200];
    snprintf(cmd, sizeof(cmd),
             "out=$(MEMPOOL_STATS_FORMAT=none MEMPOOL_HOST_CACHE_LIMIT=16E LD_PRELOAD=%s sh -c 'echo hi' 2>&1);"
             " test \"$out\" = \"$(printf 'mempool: MEMPOOL_HOST_CACHE_LIMIT=16E: unknown unit (use K, M, G"
             " or T); using 64M\\nhi')\"",
             getenv("MP_PRELOAD"));
    ck_assert_int_eq(shell(cmd), 0);
}
END_TEST

START_TEST(silent_by_default)
{
    /* A stats file that cannot be written (no such directory; a path that
     * is not a regular file) says nothing at the default log level, and
     * says why at info.  (perl: sh leaves with _exit, where only a
     * fork() child writes its file, and coreutils close stderr at exit.) */
    char cmd[4200];
    snprintf(cmd, sizeof(cmd),
             "for f in /nonexistent-mempool-dir/s.json /dev/null; do"
             " out=$(MEMPOOL_STATS_FILE=$f LD_PRELOAD=%s perl -e 'print qq(hi\\n)' 2>&1) && test \"$out\" = hi"
             " || exit 1; done;"
             " out=$(MEMPOOL_LOG_LEVEL=info MEMPOOL_STATS_FILE=/nonexistent-mempool-dir/s.json"
             " LD_PRELOAD=%s perl -e 'print qq(hi\\n)' 2>&1 >/dev/null) &&"
             " test \"$out\" = 'mempool: cannot write stats file /nonexistent-mempool-dir/s.json:"
             " No such file or directory' &&"
             " MEMPOOL_LOG_LEVEL=info MEMPOOL_STATS_FILE=/dev/null LD_PRELOAD=%s perl -e 'print qq(hi\\n)' 2>&1"
             " | grep -qx 'mempool: not writing stats file /dev/null: it exists and is not a regular file'",
             getenv("MP_PRELOAD"), getenv("MP_PRELOAD"), getenv("MP_PRELOAD"));
    ck_assert_int_eq(shell(cmd), 0);
}
END_TEST

START_TEST(no_descriptor_of_its_own)
{
    /* A program started with 0, 1 and 2 closed sees the same descriptors
     * with the shim as without, after enough misses for call-site samples
     * (libunwind's pipe became fd 0 and 1 here: a stdin that should not
     * exist).  The listing is taken before the output file is opened. */
    char cmd[4200];
    snprintf(cmd, sizeof(cmd),
             "d=$(mktemp -d) && prog='import os\n"
             "x = [bytes(1000 + i %% 3000) for i in range(20000)]\n"
             "fds = \" \".join(sorted(os.listdir(\"/proc/self/fd\")))\n"
             "open(os.environ[\"OUT\"], \"w\").write(fds)' &&"
             " OUT=$d/plain python3 -c \"$prog\" 0<&- 1>&- 2>&- &&"
             " OUT=$d/shim MEMPOOL_STATS_FILE=$d/s.json LD_PRELOAD=%s python3 -c \"$prog\" 0<&- 1>&- 2>&- &&"
             " cat $d/plain && echo && cmp $d/plain $d/shim &&"
             " python3 -c 'import json,sys; c = json.load(open(sys.argv[1]))[\"call_sites\"];"
             " assert c[\"available\"] and c[\"captured\"] > 0, c' $d/s.json && rm -rf $d",
             getenv("MP_PRELOAD"));
    ck_assert_int_eq(shell(cmd), 0);
}
END_TEST

START_TEST(exports_only_the_interface)
{
    char cmd[4200];
    /* 23 C functions, 20 C++ operators, the 17 mempool_* functions, the
     * 33 CUDA hooks of src/cuda/cuda_hooks.def, sigaction/signal (the dump
     * signal), dlopen (RTLD_DEEPBIND) and _exit/_Exit (fork children's
     * stats); nothing of jemalloc or the unwinder. */
    snprintf(cmd, sizeof(cmd),
             "n=$(nm -D --defined-only %s | awk '{print $3}' | sort | wc -l);"
             " test \"$n\" -eq 98 && ! nm -D --defined-only %s | grep -q -e mallocx -e je_ -e mallctl -e _Unwind",
             getenv("MP_PRELOAD"), getenv("MP_PRELOAD"));
    ck_assert_int_eq(shell(cmd), 0);
    /* The mempool_* exports are exactly the functions mempool.h declares. */
    snprintf(cmd, sizeof(cmd),
             "test \"$(nm -D --defined-only %s | awk '{print $3}' | grep '^mempool_' | sort)\" = "
             "\"$(grep -oE '[ *]mempool_[a-z_]+\\(' %s/include/mempool.h | tr -d ' *(' | sort -u)\"",
             getenv("MP_PRELOAD"), getenv("MP_SRCDIR"));
    ck_assert_int_eq(shell(cmd), 0);
    snprintf(cmd, sizeof(cmd), "! ldd %s | grep -q -e jemalloc -e unwind -e stdc++", getenv("MP_PRELOAD"));
    ck_assert_int_eq(shell(cmd), 0);
}
END_TEST

START_TEST(cuda_exports_match_hook_table)
{
    /* Every row of src/cuda/cuda_hooks.def is exported (its wrapper exists and is
     * in exports.map), and every exported cu and cuda name is a row. */
    char cmd[4200];
    snprintf(cmd, sizeof(cmd),
             "table=$(sed -n 's/^MP_HOOK(\\([A-Za-z0-9_]*\\),.*/\\1/p' %s/src/cuda/cuda_hooks.def | sort);"
             " exported=$(nm -D --defined-only %s | awk '{print $3}' | grep -E '^(cu|dlsym$)' | sort);"
             " test -n \"$table\" && test \"$table\" = \"$exported\"",
             getenv("MP_SRCDIR"), getenv("MP_PRELOAD"));
    ck_assert_int_eq(shell(cmd), 0);
}
END_TEST

START_TEST(missing_cuda_function_is_reported)
{
    /* python3 calls cuMemAllocHost_v2 through ctypes in a process without
     * any CUDA library: the shim's export has nothing real behind it. */
    char cmd[4200];
    snprintf(cmd, sizeof(cmd),
             "d=$(mktemp -d) && out=$(MEMPOOL_STATS_FILE=$d/s.json LD_PRELOAD=%s python3 -c '"
             "import ctypes; p = ctypes.c_void_p(); print(ctypes.CDLL(None).cuMemAllocHost_v2(ctypes.byref(p), 64))' 2>&1)"
             " && test \"$out\" = \"$(printf 'mempool: cuMemAllocHost_v2 was called but no real cuMemAllocHost_v2 "
             "was found behind the shim; the call fails\\n3')\" && python3 -c 'import json,sys; "
             "h = {x[\"name\"]: x for x in json.load(open(sys.argv[1]))[\"cuda_hooks\"]}; "
             "assert h[\"cuMemAllocHost_v2\"][\"missing\"] is True' $d/s.json && rm -rf $d",
             getenv("MP_PRELOAD"));
    ck_assert_int_eq(shell(cmd), 0);
}
END_TEST

START_TEST(mempool_run_writes_stats)
{
    char cmd[4200];
    snprintf(cmd, sizeof(cmd),
             "d=$(mktemp -d) && LD_PRELOAD= %s/scripts/mempool-run --stats $d/s.json -- sort /etc/passwd"
             " > $d/out && sort /etc/passwd | cmp - $d/out && python3 -c 'import json,sys;"
             " json.load(open(sys.argv[1]))' $d/s.json && rm -rf $d",
             getenv("MP_SRCDIR"));
    ck_assert_int_eq(shell(cmd), 0);
}
END_TEST

static Suite *programs_suite(void)
{
    Suite *s = suite_create("preload");
    TCase *tc = tcase_create("programs");
    tcase_add_loop_test(tc, program_runs_identically, 0, (int)(sizeof(programs) / sizeof(programs[0])));
    tcase_set_timeout(tc, 300);
    suite_add_tcase(s, tc);
    tc = tcase_create("shim");
    tcase_add_test(tc, invalid_option_one_line);
    tcase_add_test(tc, silent_by_default);
    tcase_add_test(tc, no_descriptor_of_its_own);
    tcase_add_test(tc, exports_only_the_interface);
    tcase_add_test(tc, mempool_run_writes_stats);
    tcase_add_test(tc, cuda_exports_match_hook_table);
    tcase_add_test(tc, missing_cuda_function_is_reported);
    tcase_set_timeout(tc, 120);
    suite_add_tcase(s, tc);
    return s;
}

MP_CHECK_MAIN(programs_suite)
