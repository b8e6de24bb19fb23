/*
 * Writing the stats: where (the MEMPOOL_STATS_FILE template), when (exit,
 * _exit of a fork child, dumps, mempool_stats_dump: serialised, the exit
 * last), how safely (a temporary name renamed into place, so a reader never
 * sees half a report; setuid programs only into a root-owned directory).
 * The renderers are stats_json.c and stats_text.c; nothing allocates.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/auxv.h>
#include <sys/stat.h>
#include <unistd.h>

#include "callsite.h"
#include "cuda_driver.h"
#include "cuda_hooks.h"
#include "device_pool.h"
#include "api.h"
#include "emit.h"
#include "timeline.h"

MP_STARTUP_DATA static pthread_mutex_t write_lock = PTHREAD_MUTEX_INITIALIZER;
MP_STARTUP_DATA static int cur_reason = MP_DUMP_EXIT;
MP_STARTUP_DATA static uint64_t dump_seq;
MP_STARTUP_DATA static bool exiting;


/* ---- process facts (read without allocating) ----------------------------- */

/* The executable's path, read once: readlink of /proc/self/exe costs more
 * than the rest of a small report (the first reader fills the cache, later
 * ones copy it; no lock, so a fork child never waits on one). */
MP_STARTUP_DATA static char exe_cache[MP_PATH_MAX];
MP_STARTUP_DATA static _Atomic int exe_state; /* 0 empty, 1 being filled, 2 filled */

void mp_read_exe(char *out, size_t cap)
{
    if (atomic_load_explicit(&exe_state, memory_order_acquire) == 2) {
        size_t n = strnlen(exe_cache, sizeof(exe_cache) - 1);
        n = n < cap - 1 ? n : cap - 1;
        memcpy(out, exe_cache, n);
        out[n] = '\0';
        return;
    }
    char buf[MP_PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
    buf[n > 0 ? n : 0] = '\0';
    int empty = 0;
    if (n > 0 && atomic_compare_exchange_strong(&exe_state, &empty, 1)) {
        memcpy(exe_cache, buf, (size_t)n + 1);
        atomic_store_explicit(&exe_state, 2, memory_order_release);
    }
    size_t k = n > 0 ? (size_t)n : 0;
    k = k < cap - 1 ? k : cap - 1;
    memcpy(out, buf, k);
    out[k] = '\0';
}

/* The arguments as the kernel keeps them (NUL-separated, contiguous on the
 * main thread's stack): the region the constructor was shown, read in
 * place at report time, so a program that rewrites its argv (a process
 * title) is reported as /proc/self/cmdline would show it, without the
 * open/read/close of that file in every process. */
MP_STARTUP_DATA static const char *args_start;
MP_STARTUP_DATA static size_t args_len;

void mp_process_args(int argc, char **argv)
{
    if (argc <= 0 || argv == NULL || argv[0] == NULL)
        return;
    const char *end = argv[0];
    for (int i = 0; i < argc; i++) {
        if (argv[i] != end)
            return; /* not the kernel's layout: keep reading /proc/self/cmdline */
        end += strlen(argv[i]) + 1;
    }
    args_start = argv[0];
    args_len = (size_t)(end - argv[0]);
}

size_t mp_read_args(char *out, size_t cap)
{
    if (args_start != NULL) {
        size_t n = args_len < cap ? args_len : cap;
        memcpy(out, args_start, n);
        return n;
    }
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    ssize_t n = fd >= 0 ? read(fd, out, cap) : -1;
    if (fd >= 0)
        close(fd);
    return n > 0 ? (size_t)n : 0;
}

const char *mp_base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}


bool mp_stats_expand_path(const char *tmpl, char *out, size_t cap)
{
    size_t n = 0;
    char tmp[256];
    for (const char *p = tmpl; *p; p++) {
        const char *ins = NULL;
        char one[2] = {*p, '\0'};
        if (*p == '%' && p[1]) {
            p++;
            if (*p == 'p') {
                snprintf(tmp, sizeof(tmp), "%d", (int)getpid());
                ins = tmp;
            } else if (*p == 'h') {
                if (gethostname(tmp, sizeof(tmp)) != 0)
                    strcpy(tmp, "unknown");
                tmp[sizeof(tmp) - 1] = '\0';
                ins = tmp;
            } else if (*p == 'e') {
                char exe[MP_PATH_MAX];
                mp_read_exe(exe, sizeof(exe));
                const char *b = exe[0] ? mp_base_name(exe) : "unknown";
                size_t len = strlen(b) < sizeof(tmp) - 1 ? strlen(b) : sizeof(tmp) - 1;
                memcpy(tmp, b, len);
                tmp[len] = '\0';
                ins = tmp;
            } else if (*p == '%') {
                ins = "%";
            } else {
                one[0] = '%';
                p--; /* unknown: keep the % and go on with the next char */
                ins = one;
            }
        } else {
            ins = one;
        }
        size_t k = strlen(ins);
        if (n + k + 1 > cap)
            return false;
        memcpy(out + n, ins, k);
        n += k;
    }
    out[n] = '\0';
    return true;
}


/* The snapshot a report is rendered from: static storage (no mapping to
 * make and remove in every process at exit), or a mapping while another
 * thread's report holds it. */
static mp_snapshot_t report_snap;
MP_STARTUP_DATA static atomic_flag report_snap_busy = ATOMIC_FLAG_INIT;

static mp_snapshot_t *snapshot_new(void)
{
    mp_snapshot_t *s = &report_snap;
    if (atomic_flag_test_and_set(&report_snap_busy)) {
        s = mmap(NULL, sizeof(*s), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (s == MAP_FAILED)
            return NULL;
    }
    mp_stats_snapshot(s);
    return s;
}

static void snapshot_free(mp_snapshot_t *s)
{
    if (s == &report_snap)
        atomic_flag_clear(&report_snap_busy);
    else
        munmap(s, sizeof(*s));
}

static bool render(int fd, int format, unsigned max_rows)
{
    mp_snapshot_t *snap = snapshot_new();
    if (snap == NULL)
        return false;
    mp_out_t o = {.fd = fd};
    if (format == MP_FMT_JSON)
        mp_render_json(&o, snap, &(mp_dump_info_t){cur_reason, dump_seq});
    else
        mp_render_text(&o, snap, max_rows);
    mp_out_flush(&o);
    snapshot_free(snap);
    return !o.failed;
}

void mp_stats_write_fd(int fd, int format) { render(fd, format, MP_CLASS_MAX); }

/* A file that cannot be written is said at log level info only: the shim
 * is silent by default (children running as another user, a read-only
 * working directory, /dev/null as the path), and the stats file is the
 * output, not stderr. */

/* Write to path atomically: temporary file in the same directory, then
 * rename.  O_EXCL | O_NOFOLLOW: never write through a planted link; an
 * existing file of another user, or anything but a regular file, is left
 * alone (rename would replace it). */
static bool write_file(const char *path, int format)
{
    struct stat st;
    if (lstat(path, &st) == 0 && (!S_ISREG(st.st_mode) || st.st_uid != geteuid())) {
        mp_log(MP_LOG_INFO, "not writing stats file %s: it exists and is %s", path,
               S_ISREG(st.st_mode) ? "another user's file" : "not a regular file");
        return false;
    }
    char tmp[MP_PATH_MAX + 32];
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        mp_log(MP_LOG_INFO, "cannot write stats file %s: %s", path, strerror(errno));
        return false;
    }
    bool ok = render(fd, format, MP_CLASS_MAX);
    int err = errno;
    if (close(fd) != 0 && ok) {
        ok = false;
        err = errno;
    }
    if (ok && rename(tmp, path) != 0) {
        ok = false;
        err = errno;
    }
    if (!ok) {
        unlink(tmp);
        mp_log(MP_LOG_INFO, "cannot write stats file %s: %s", path, strerror(err));
    }
    return ok;
}

MP_STARTUP_DATA static _Atomic int written_pid;

/* ---- setuid and setgid programs (docs/security.md) ----------------------- */
#ifdef MP_TEST_HOOKS
int mp_stats_secure_mode = -1; /* tests: 0 or 1 instead of AT_SECURE */
const char *mp_setuid_conf_path = MP_SETUID_CONF;
#else
#define mp_stats_secure_mode (-1)
#define mp_setuid_conf_path MP_SETUID_CONF
#endif

/* A file or directory an administrator controls: root's, writable by no one else. */
static bool root_controlled(const struct stat *st)
{
    return st->st_uid == 0 && (st->st_mode & (S_IWGRP | S_IWOTH)) == 0;
}

/* In a process the kernel marks secure (setuid/setgid, capabilities), no
 * MEMPOOL_* variable is read (secure_getenv), and the stats file is written
 * only where MP_SETUID_CONF, a root-controlled file, names a root-controlled
 * directory: the invoking user chooses nothing about a file the program's
 * privileges write.  Returns false (no file) or the template to use. */
static bool secure_template(char *tmpl, size_t cap)
{
    int secure = mp_stats_secure_mode >= 0 ? mp_stats_secure_mode : getauxval(AT_SECURE) != 0;
    if (!secure) {
        snprintf(tmpl, cap, "%s", mp_opt_stats_path);
        return true;
    }
    struct stat st;
    int fd = open(mp_setuid_conf_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    char dir[MP_PATH_MAX] = "";
    ssize_t n = -1;
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && root_controlled(&st))
        n = read(fd, dir, sizeof(dir) - 1);
    if (fd >= 0)
        close(fd);
    dir[n > 0 ? n : 0] = '\0';
    dir[strcspn(dir, "\n")] = '\0';
    if (dir[0] != '/' || lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode) || !root_controlled(&st)) {
        if (n >= 0 || fd >= 0)
            mp_log(MP_LOG_INFO, "setuid/setgid process: %s does not name a directory only root "
                   "can write; no stats file", mp_setuid_conf_path);
        return false; /* no (valid) setting: silently no file, the default */
    }
    return snprintf(tmpl, cap, "%s/mempool.%%e.%%p.json", dir) < (int)cap;
}

bool mp_stats_write_now(const char *path_or_null, char *path, size_t cap)
{
    if (path_or_null != NULL) {
        if (strlen(path_or_null) >= cap)
            return false;
        strcpy(path, path_or_null);
    } else {
        char tmpl[MP_PATH_MAX + 32];
        if (!secure_template(tmpl, sizeof(tmpl)))
            return false;
        if (!mp_stats_expand_path(tmpl, path, cap)) {
            mp_log(MP_LOG_INFO, "MEMPOOL_STATS_FILE expands to a path that is too long");
            return false;
        }
    }
    int format = (int)mp_opt(MP_OPT_STATS_FORMAT);
    if (format == MP_FMT_NONE)
        format = MP_FMT_JSON; /* an explicit request still writes */
    return write_file(path, format);
}

bool mp_stats_write_dump(int reason)
{
    if (mp_opt(MP_OPT_STATS_FORMAT) == MP_FMT_NONE)
        return true;
    pthread_mutex_lock(&write_lock);
    bool ok = true;
    if (!exiting) {
        char path[MP_PATH_MAX];
        mp_timeline_force(); /* the state now, whatever the interval */
        cur_reason = reason;
        ok = mp_stats_write_now(NULL, path, sizeof(path));
        cur_reason = MP_DUMP_EXIT;
        dump_seq += ok;
    }
    pthread_mutex_unlock(&write_lock);
    return ok;
}

bool mp_stats_write_api(const char *path_or_null, char *path, size_t cap)
{
    pthread_mutex_lock(&write_lock);
    cur_reason = MP_DUMP_API;
    mp_timeline_force();
    bool ok = mp_stats_write_now(path_or_null, path, cap);
    cur_reason = MP_DUMP_EXIT;
    dump_seq += ok;
    pthread_mutex_unlock(&write_lock);
    return ok;
}

/* The pid of this process if it is a child of fork() (our handler ran in
 * it), else 0.  A vfork() child runs no handler: it sees its parent's
 * value, which is never its own pid. */
MP_STARTUP_DATA static _Atomic int forked_pid;

/* Threads of this process, from /proc (no allocation); 0 if unknown. */
static int thread_count(void)
{
    char buf[2048];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    buf[n > 0 ? n : 0] = '\0';
    const char *t = strstr(buf, "\nThreads:");
    return t ? atoi(t + 9) : 0;
}

void mp_stats_write_at__exit(void)
{
    /* Only a fork() child alone in its process: what multiprocessing's
     * workers and many servers' children are.  Never a vfork() child (it
     * shares its parent's memory), never with other threads (one could hold
     * a pool lock forever), never from inside the shim (a signal handler
     * calling _exit while this thread is in malloc). */
    if (mp_tls_guard || atomic_load(&forked_pid) != (int)getpid() || thread_count() != 1)
        return;
    /* The process is leaving anyway: a SIGTERM (a pool's terminate()) waits
     * the few milliseconds of the write, so no half-written file is left. */
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    mp_stats_write_exit();
}

void mp_stats_write_fork_child(void)
{
    atomic_store(&forked_pid, (int)getpid());
    pthread_mutex_init(&write_lock, NULL); /* the dump thread may have held it */
    atomic_flag_clear(&report_snap_busy);  /* so may a report being rendered */
    dump_seq = 0;
    exiting = false;
}

void mp_stats_write_exit(void)
{
    if (atomic_load(&mp_state) != MP_STATE_READY)
        return;
    int pid = (int)getpid();
    if (atomic_exchange(&written_pid, pid) == pid)
        return; /* this process already wrote */
    pthread_mutex_lock(&write_lock); /* a dump being written finishes first */
    exiting = true;
    if (mp_opt(MP_OPT_STATS_FORMAT) != MP_FMT_NONE) {
        char path[MP_PATH_MAX];
        mp_timeline_force();
        if (mp_stats_write_now(NULL, path, sizeof(path)))
            mp_log(MP_LOG_INFO, "stats written to %s", path);
    }
    pthread_mutex_unlock(&write_lock);
    if (mp_opt(MP_OPT_SUMMARY))
        render(STDERR_FILENO, MP_FMT_TEXT, 12);
}

