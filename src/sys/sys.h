/*
 * sys/: the bottom layer.  Logging, the real libc and dl functions (the one
 * place that resolves a name the preload overrides), libc's allocator and the
 * bootstrap buffer, NUMA placement, libm-free maths, and the process state
 * word every entry point checks.  Calls nothing above it, except the lazy
 * mp_init() an entry point may make (docs/design.md, "Layers").
 *
 * Error convention for internal functions of every layer: 0 or a negative
 * errno value when the failure has a cause worth passing on; bool (true =
 * done) when it has none; a pointer, NULL on failure.  CUDA-facing
 * functions return CUresult.
 */
#ifndef MEMPOOL_SYS_H
#define MEMPOOL_SYS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#define mp_likely(x) __builtin_expect(!!(x), 1)
#define mp_unlikely(x) __builtin_expect(!!(x), 0)
#define MP_NOINLINE __attribute__((noinline))
#define MP_COLD __attribute__((cold, noinline))
/* A function of include/mempool.h (the build hides everything else). */
#define MP_PUBLIC __attribute__((visibility("default")))

#define MP_LOAD(field) atomic_load_explicit(&(field), memory_order_relaxed)
/* Another thread's plain counter (one its owner bumps with a plain add),
 * read without tearing: a hint while the owner runs.  Readers carry
 * no_sanitize("thread") (MP_PEEK_READER). */
#define MP_PEEK(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)
#define MP_PEEK_READER __attribute__((no_sanitize("thread")))

#define MP_PATH_MAX 1024
/* Small state set at start and read after (options, flags, the range's
 * bounds), kept together: each file's variables would otherwise sit in
 * their own page between large tables, and a short process would fault
 * in a dozen pages to set a few bytes in each.  Never for counters that
 * threads write often (they would share cache lines with hot reads). */
#define MP_STARTUP_DATA __attribute__((section(".data.mp_startup")))
/* "This structure has been used", in start-up data: raised once, so a
 * report of a process that never used the structure skips it and takes no
 * lock (a lock on a page nobody touched costs two page faults: the read
 * maps the zero page, the write copies it).  The load keeps later callers
 * from writing the shared line again. */
static inline void mp_flag_raise(_Atomic bool *flag)
{
    if (!atomic_load_explicit(flag, memory_order_relaxed))
        atomic_store(flag, true);
}

/* ---- helpers every layer uses (here once, not copied) -------------------- */
static inline size_t mp_page_round(size_t n) { return (n + 4095) & ~(size_t)4095; }
/* A peak kept by its only writer (or under its owner's lock). */
static inline void mp_peak_update(int64_t *peak, int64_t v)
{
    if (v > *peak)
        *peak = v;
}
/* A peak raised by many threads at once (relaxed: a statistic). */
static inline void mp_peak_update_atomic(_Atomic int64_t *peak, int64_t v)
{
    int64_t cur = atomic_load_explicit(peak, memory_order_relaxed);
    while (v > cur && !atomic_compare_exchange_weak_explicit(peak, &cur, v, memory_order_relaxed,
                                                             memory_order_relaxed)) {
    }
}
/* CLOCK_MONOTONIC in nanoseconds. */
static inline uint64_t mp_now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

enum { MP_LOG_NONE, MP_LOG_ERROR, MP_LOG_WARN, MP_LOG_INFO, MP_LOG_DEBUG };

/* ---- log.c -------------------------------------------------------------- */
/* Formats into a stack buffer and write(2)s it; never allocates. */
void mp_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The level mp_log prints at or above (set by the options at load). */
void mp_log_set_level(int level);
/* Append the lines to this file instead of stderr ("" or NULL: stderr);
 * set by the composition root for MEMPOOL_LOG_TO=stats-dir. */
void mp_log_set_file(const char *path);

/* ---- sys_alloc.c: the libc allocator and the bootstrap buffer ----------- */
/* glibc's own functions (foreign pointers, fallback when the heap is full). */
typedef struct mp_libc {
    void *(*malloc)(size_t);
    void (*free)(void *);
    void *(*calloc)(size_t, size_t);
    void *(*realloc)(void *, size_t);
    void *(*memalign)(size_t, size_t);
    size_t (*usable_size)(void *);
    int (*trim)(size_t);
} mp_libc_t;

extern mp_libc_t mp_libc;
void mp_libc_resolve(void);
/* Bump allocation from a static buffer while dlsym and friends run before
 * initialisation; these blocks are never reused. */
void *mp_boot_alloc(size_t size, size_t align);
bool mp_is_boot(const void *p);
size_t mp_boot_usable_size(const void *p);
void *mp_libc_alloc(size_t size, size_t align);
void mp_libc_free(void *p);
/* The mode the shim passes glibc's dlopen: RTLD_DEEPBIND dropped while
 * the shim serves the malloc family (see sys_alloc.c). */
int mp_dlopen_mode(const char *file, int mode);

/* ---- libc_real.c: the real functions behind the ones the preload exports */
typedef void *(*mp_dlopen_fn)(const char *file, int mode);
typedef void *(*mp_dlsym_fn)(void *, const char *);
/* glibc's own dlopen/dlsym behind ours: the GLIBC_2.34 version (libdl
 * merged into libc), else the older one.  NULL if neither is found. */
void *mp_glibc_next(const char *name);
mp_dlopen_fn mp_real_dlopen(void);
mp_dlsym_fn mp_real_dlsym(void);
struct sigaction;
int mp_real_sigaction(int sig, const struct sigaction *act, struct sigaction *old);

/* ---- libm_lite.c: ln, exp, round without loading libm (relative error
 * below 1e-13; NaN and infinities as libm gives them).  Thread-safe, pure. */
double mp_ln(double x);
double mp_exp(double x);
double mp_round(double x);

/* ---- numa.c ------------------------------------------------------------- */
/* 0 if blocks can be placed on node; -EINVAL (no such node), -ENOTSUP
 * (no NUMA, or the kernel refuses policies to this process). */
int mp_numa_check(int node);
/* Prefer node for the pages covering [p, p + len), moving those already
 * touched.  0 or -errno. */
int mp_numa_bind(void *p, size_t len, int node);
/* Node of the page holding p (get_mempolicy), -1 if unknown. */
int mp_numa_node_of(const void *p);

/* ---- state.c (written by init.c, the composition root) ------------------- */
enum { MP_STATE_UNINIT, MP_STATE_INITIALIZING, MP_STATE_READY, MP_STATE_LIBC };
extern _Atomic int mp_state;
extern _Thread_local int mp_tls_guard; /* >0: inside the shim's own calls */
/* init.c: initialise once, lazily, from any entry point (the one call up
 * the layers allow).  Returns MP_STATE_READY or MP_STATE_LIBC (shim
 * unusable: use libc). */
int mp_init(void);
extern struct timespec mp_start_real, mp_start_mono;

#endif /* MEMPOOL_SYS_H */
