/*
 * Internal declarations of the mempool core, grouped by the file that owns
 * them.  Nothing here is public: the library is built with hidden
 * visibility and every symbol carries the mp_ prefix.
 */
#ifndef MEMPOOL_INTERNAL_H
#define MEMPOOL_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define mp_likely(x) __builtin_expect(!!(x), 1)
#define mp_unlikely(x) __builtin_expect(!!(x), 0)
#define MP_NOINLINE __attribute__((noinline))
#define MP_COLD __attribute__((cold, noinline))

/* Relaxed counter bump by its only writer: a plain load and store on x86,
 * but a well-defined read for the stats writer in another thread. */
#define MP_BUMP(field, n)                                                      \
    atomic_store_explicit(&(field),                                            \
                          atomic_load_explicit(&(field), memory_order_relaxed) \
                              + (n),                                           \
                          memory_order_relaxed)
#define MP_LOAD(field) atomic_load_explicit(&(field), memory_order_relaxed)

/* ---- options.c ---------------------------------------------------------- */
typedef enum mp_opt_type {
    MP_OPT_bool,
    MP_OPT_size,
    MP_OPT_count,
    MP_OPT_choice,
    MP_OPT_path,
    MP_OPT_size_or_percent, /* bytes, or "N%" of something the option names */
} mp_opt_type_t;

/* A size_or_percent value holding a percentage has this bit set. */
#define MP_OPT_PERCENT (1ull << 63)

typedef enum mp_opt_id {
#define MP_OPTION(id, type, def, min, max, choices, doc) MP_OPT_##id,
#include "options.def"
#undef MP_OPTION
    MP_OPT_COUNT
} mp_opt_id_t;

typedef struct mp_option_desc {
    const char *name; /* full variable name, MEMPOOL_... */
    mp_opt_type_t type;
    const char *def, *min, *max, *choices, *doc;
} mp_option_desc_t;

#define MP_PATH_MAX 1024

extern const mp_option_desc_t mp_option_table[MP_OPT_COUNT];
/* Parsed values: numbers for bool/size/count, index into CHOICES for choice. */
extern uint64_t mp_opt_values[MP_OPT_COUNT];
extern char mp_opt_stats_path[MP_PATH_MAX];

/* A getenv-like lookup; tests pass their own. */
typedef const char *(*mp_getenv_fn)(const char *name);
/* Read every option; an invalid value logs one warning and keeps the
 * default.  Returns the number of invalid values. */
int mp_options_load(mp_getenv_fn get);
/* Parse one value of the given option into *out (no side effects).
 * Returns NULL on success, else a short reason. */
const char *mp_option_parse(mp_opt_id_t id, const char *text, uint64_t *out);
static inline uint64_t mp_opt(mp_opt_id_t id) { return mp_opt_values[id]; }

enum { MP_LOG_NONE, MP_LOG_ERROR, MP_LOG_WARN, MP_LOG_INFO, MP_LOG_DEBUG };
enum { MP_FMT_JSON, MP_FMT_TEXT, MP_FMT_NONE };
enum { MP_SC_QUARTER, MP_SC_HALF, MP_SC_POW2 };

/* ---- log.c -------------------------------------------------------------- */
/* Formats into a stack buffer and write(2)s it; never allocates. */
void mp_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The level mp_log prints at or above (set by the options at load). */
void mp_log_set_level(int level);

/* ---- size_class.c ------------------------------------------------------- */
#define MP_CLASS_MAX 128          /* hard ceiling on the number of classes */
#define MP_CLASS_NONE MP_CLASS_MAX /* "not pooled" */
#define MP_LOOKUP_MAX 4096        /* sizes up to this use the lookup table */

typedef struct mp_size_classes {
    unsigned count;                       /* classes <= max block size */
    unsigned lg_steps;                    /* log2(classes per doubling) */
    size_t max_size;                      /* size of the largest class */
    size_t size[MP_CLASS_MAX];            /* bytes of each class */
    size_t align[MP_CLASS_MAX];           /* natural alignment of each class */
    size_t realloc_max[MP_CLASS_MAX];     /* realloc stays in place up to this (0: never) */
    uint8_t lookup[MP_LOOKUP_MAX / 16 + 1]; /* (size + 15) / 16 -> class */
    uint8_t group_base[64];               /* first class above 2^lg */
} mp_size_classes_t;

extern mp_size_classes_t mp_sc;
/* Build the classes of a scheme (MP_SC_*) up to max_block bytes. */
void mp_size_classes_init(mp_size_classes_t *sc, int scheme, size_t max_block);

static inline unsigned mp_size_class_of(const mp_size_classes_t *sc, size_t size)
{
    if (mp_likely(size <= MP_LOOKUP_MAX))
        return sc->lookup[(size + 15) >> 4];
    if (size > sc->max_size)
        return MP_CLASS_NONE;
    unsigned lg = 63u - (unsigned)__builtin_clzll((unsigned long long)(size - 1));
    return sc->group_base[lg]
           + (unsigned)((size - 1 - ((size_t)1 << lg)) >> (lg - sc->lg_steps));
}

/* ---- heap.c: reserved address range + jemalloc arenas ------------------- */
/*
 * One PROT_NONE reservation holds MP_CLASS_MAX equal slots (one jemalloc
 * arena per size class, so a pointer's class is its slot number) followed
 * by the bypass area (one arena for large and over-aligned requests).
 * Extent hooks carve each arena's memory out of its own slot.
 */
typedef struct mp_heap {
    uintptr_t base;      /* start of the reservation, 0 if none */
    size_t size;         /* bytes reserved */
    size_t class_span;   /* bytes covered by the class slots */
    unsigned slot_shift; /* log2(bytes per class slot) */
    size_t carve_span;     /* the carve area at the start of slot 0: MP_CLASS_MAX stripes */
    unsigned stripe_shift; /* log2(bytes per stripe) */
    _Atomic unsigned bypass_arena;               /* 0 = jemalloc not started */
    _Atomic unsigned class_arena[MP_CLASS_MAX]; /* 0 = not created yet */
} mp_heap_t;

extern mp_heap_t mp_heap;
/* Reserve the range (halving down to 1 GiB) and open its carve area (a
 * stripe of carve_limit bytes, rounded up to a power of two, per class; 0 =
 * none); jemalloc is not started yet.  `started` runs once jemalloc has
 * started (its fork handlers registered), with the arena lock held.
 * Returns false if no memory could be reserved. */
bool mp_heap_init(size_t reserve, size_t carve_limit, void (*started)(void));
/* Start jemalloc and create the bypass arena, once; its index, or 0 if it
 * failed or this thread is inside the start (the caller uses libc). */
unsigned mp_heap_start(void);
static inline unsigned mp_heap_bypass_arena(void)
{
    unsigned a = atomic_load_explicit(&mp_heap.bypass_arena, memory_order_acquire);
    return mp_likely(a != 0) ? a : mp_heap_start();
}
bool mp_heap_started(void);
/* fork(): wait while another thread starts jemalloc. */
void mp_heap_fork_wait_start(void);
/* jemalloc arena index of a class, created on first use (starting
 * jemalloc); 0 on failure. */
unsigned mp_heap_class_arena(unsigned cls);
/* size bytes of class cls's stripe of the carve area (never jemalloc's,
 * never returned), at most budget bytes in all; NULL past that.  Thread-safe. */
void *mp_heap_carve(unsigned cls, size_t size, size_t budget);
/* Whether p (a class block) was carved. */
static inline bool mp_heap_is_carved(const void *p) { return (uintptr_t)p - mp_heap.base < mp_heap.carve_span; }
/* The class of the block at offset off < class_span from the base: in the
 * carve area by its stripe, elsewhere by its slot (a conditional move). */
static inline unsigned mp_class_of_offset(uintptr_t off)
{
    unsigned striped = (unsigned)(off >> mp_heap.stripe_shift) & (MP_CLASS_MAX - 1);
    unsigned slotted = (unsigned)(off >> mp_heap.slot_shift);
    return off < mp_heap.carve_span ? striped : slotted;
}
/* fork(): hold the arena-creation lock across it (child: same unlock). */
void mp_heap_fork_prepare(void);
void mp_heap_fork_parent(void);
/* Bytes of the range made accessible so far (for stats). */
size_t mp_heap_mapped(void);

enum { MP_PTR_CLASS, MP_PTR_BYPASS, MP_PTR_FOREIGN, MP_PTR_NULL };
static inline int mp_ptr_kind(const void *p, unsigned *cls)
{
    uintptr_t off = (uintptr_t)p - mp_heap.base;
    if (mp_likely(off < mp_heap.class_span)) {
        *cls = mp_class_of_offset(off);
        return MP_PTR_CLASS;
    }
    if (off < mp_heap.size)
        return MP_PTR_BYPASS;
    return p == NULL ? MP_PTR_NULL : MP_PTR_FOREIGN; /* includes the bootstrap buffer */
}

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

/* ---- init.c ------------------------------------------------------------- */
enum { MP_STATE_UNINIT, MP_STATE_INITIALIZING, MP_STATE_READY, MP_STATE_LIBC };
extern _Atomic int mp_state;
extern _Thread_local int mp_tls_guard; /* >0: inside the shim's own calls */
/* Returns MP_STATE_READY or MP_STATE_LIBC (shim unusable: use libc). */
int mp_init(void);
extern struct timespec mp_start_real, mp_start_mono;

/* ---- host_pool.c -------------------------------------------------------- */
/* One size class of a thread cache, in one cache line: the bin, a stack of
 * free blocks' addresses (like jemalloc's cache_bin: pushing and popping
 * never touch the often cold blocks), and the thread's counters for the
 * class (written only by that thread; relaxed so the stats can read them). */
typedef struct mp_tclass {
    void **slots;   /* cap entries; slots[count - 1] is the most recent */
    uint32_t count; /* blocks cached */
    uint32_t cap;   /* most blocks kept (0 = caching off) */
    size_t size;    /* the class's block size (a copy: keeps the hit path on this line) */
    _Atomic uint64_t hits, misses, releases, req_bytes;
    _Atomic int64_t inuse_delta; /* bytes not yet published to mp_class_stats */
} __attribute__((aligned(64))) mp_tclass_t;

typedef struct mp_tcache {
    size_t cached_limit; /* bytes; checked when a bin overflows */
    struct mp_tcache *next, *prev; /* registry of live thread caches */
    size_t map_size;               /* bytes mapped for this cache and its slots */
    mp_tclass_t cl[MP_CLASS_MAX];
} mp_tcache_t;

extern _Thread_local mp_tcache_t *mp_tls_tcache __attribute__((tls_model("initial-exec")));

/* Process-wide counters per class (slow paths, retired threads). */
typedef struct mp_class_stats {
    _Atomic uint64_t hits, misses, releases, req_bytes, trims, trim_bytes;
    _Atomic int64_t inuse, inuse_peak;       /* published bytes handed out */
    _Atomic int64_t reserved, reserved_peak; /* bytes taken from jemalloc */
} mp_class_stats_t;

typedef struct mp_bypass_stats {
    _Atomic uint64_t count, req_bytes, releases, fallbacks;
    _Atomic int64_t inuse, inuse_peak;
} mp_bypass_stats_t;

extern mp_class_stats_t mp_class_stats[MP_CLASS_MAX];
extern mp_bypass_stats_t mp_bypass_stats;
#define MP_PUBLISH_BYTES ((int64_t)16384)

void mp_host_init(void);
void *mp_host_malloc_slow(size_t size);
void mp_host_free_slow(void *p, unsigned cls);
void mp_host_publish(unsigned cls, int64_t delta);
void *mp_host_aligned(size_t align, size_t size);
/* Zeroed memory for a request above the largest class: jemalloc knows which
 * pages are fresh, so large calloc does not touch (and commit) every page. */
void *mp_host_calloc_large(size_t size);
void *mp_host_realloc(void *p, size_t size);
size_t mp_host_usable_size(const void *p);
void mp_host_free_other(void *p);
/* Return every block in the shared pools (and the caller's thread cache)
 * to jemalloc; returns bytes released. */
size_t mp_host_trim(void);
void mp_host_thread_exit(void *tc);
void mp_host_fork_prepare(void);
void mp_host_fork_parent(void);
/* Child: after the unlock (mp_host_fork_parent), take over the caches of
 * the threads that do not exist in the child (may call jemalloc). */
void mp_host_fork_child_adopt(void);
/* Zero the event counters, peaks to current levels (the child of a fork). */
void mp_host_stats_reset(void);
/* Add the live thread caches' counters; the callback runs with the registry
 * locked, once per live cache. */
void mp_host_for_each_tcache(void (*fn)(const mp_tcache_t *, void *), void *arg);
/* Cached blocks/bytes in the shared pool of one class. */
void mp_host_shared_cached(unsigned cls, uint64_t *blocks, uint64_t *bytes);

/* ---- debug.c: MEMPOOL_DEBUG checks ------------------------------------ */
/* Trailer in the last bytes of every host block in debug mode; requests
 * grow by MP_DEBUG_EXTRA so that at least 8 guard bytes precede it. */
#define MP_DEBUG_TRAILER 32
#define MP_DEBUG_EXTRA (MP_DEBUG_TRAILER + 8)
enum {
    MP_DEBUG_USE_AFTER_FREE,
    MP_DEBUG_OVERFLOW,
    MP_DEBUG_DOUBLE_FREE,
    MP_DEBUG_INVALID_FREE,
    MP_DEBUG_DEVICE_DOUBLE_HANDOUT,
    MP_DEBUG_DEVICE_DOUBLE_FREE, /* counted in every mode: such frees are always refused */
    MP_DEBUG_WRONG_POOL,         /* explicit API: release to a pool that does not own it */
    MP_DEBUG_KINDS
};
extern bool mp_debug_on; /* MEMPOOL_DEBUG, read once at init */
void mp_debug_init(void);
/* req + MP_DEBUG_EXTRA (saturating). */
size_t mp_debug_size(size_t req);
/* A block of usable bytes at p handed out for req bytes; reused: it comes
 * from our pool (poisoned at free), so the poison is checked. */
void mp_debug_alloc(void *p, size_t usable, size_t req, bool reused);
/* A block being freed: checks its trailer and guard, poisons it.  false:
 * a double or invalid free, which the caller must ignore. */
bool mp_debug_free(void *p, size_t usable);
/* What malloc_usable_size reports for a debug block: the request. */
size_t mp_debug_usable(const void *p, size_t usable);
/* Count a finding, print one "mempool: debug:" line naming the caller,
 * then abort or return (MEMPOOL_DEBUG_ACTION; then: what happens next). */
void mp_debug_finding(int kind, const char *then, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
uint64_t mp_debug_count(int kind);
/* Count a finding reported elsewhere (outside debug mode: no abort). */
void mp_debug_count_add(int kind);
const char *mp_debug_kind_name(int kind);
void mp_debug_reset(void);

/* ---- fault.c: injected jemalloc failures (tests only) ------------------ */
extern _Atomic unsigned mp_fault_je_permille; /* chance in 1000 that a jemalloc call fails */
extern _Atomic uint64_t mp_fault_je_injected;
bool mp_fault_je_hit(void);
void mp_fault_je_seed(uint64_t seed);
/* Whether the pool's next jemalloc allocation is to fail (one load when off). */
static inline bool mp_je_fails(void)
{
    return mp_unlikely(atomic_load_explicit(&mp_fault_je_permille, memory_order_relaxed) != 0)
           && mp_fault_je_hit();
}

/* ---- numa.c ------------------------------------------------------------- */
/* 0 if blocks can be placed on node; -EINVAL (no such node), -ENOTSUP
 * (no NUMA, or the kernel refuses policies to this process). */
int mp_numa_check(int node);
/* Prefer node for the pages covering [p, p + len), moving those already
 * touched.  0 or -errno. */
int mp_numa_bind(void *p, size_t len, int node);
/* Node of the page holding p (get_mempolicy), -1 if unknown. */
int mp_numa_node_of(const void *p);

/* ---- stats.c / stats_write.c -------------------------------------------- */
void mp_stats_reset(void); /* after fork, in the child */
/* Write the stats file (and the summary) now; safe to call more than once. */
void mp_stats_write_exit(void);
/* _exit()/_Exit(): the stats file of a fork() child that is alone in its
 * process (multiprocessing workers end this way); nothing otherwise. */
void mp_stats_write_at__exit(void);
/* Write the stats file now to path (NULL: the MEMPOOL_STATS_FILE template);
 * the path written goes to out.  Returns false (after one warning) on failure. */
bool mp_stats_write_now(const char *path, char *out, size_t cap);
/* Write the stats of this process as JSON or text to fd. */
void mp_stats_write_fd(int fd, int format);
/* ---- dump.c: stats written on a signal or at an interval --------------- */
/* Start the dump thread if MEMPOOL_DUMP_SIGNAL or MEMPOOL_DUMP_INTERVAL asks
 * (the preload's constructor: never from inside an allocation). */
void mp_dump_start(void);
void mp_dump_fork_child(void);
/* The program installs a handler for the dump signal: it is kept as the
 * handler ours chains to (ours stays in place).  1 if handled here, 0 if
 * the call is for the real sigaction. */
struct sigaction;
int mp_dump_sigaction(int sig, const struct sigaction *act, struct sigaction *old);
/* Why the stats are being written, for the file's "process" object. */
enum { MP_DUMP_EXIT, MP_DUMP_SIGNAL, MP_DUMP_INTERVAL, MP_DUMP_API };
/* Write the stats file as an interim dump (final: false). */
bool mp_stats_write_dump(int reason);
/* mempool_stats_dump: mp_stats_write_now, serialised with the dumps. */
bool mp_stats_write_api(const char *path, char *out, size_t cap);
void mp_stats_write_fork_child(void);

/* Setuid/setgid (AT_SECURE) processes write stats only into the directory
 * this root-owned file names (docs/security.md). */
#define MP_SETUID_CONF "/etc/mempool/setuid-stats-dir"
extern int mp_stats_secure_mode;        /* tests: 0/1 instead of getauxval(AT_SECURE) */
extern const char *mp_setuid_conf_path; /* tests: another file than MP_SETUID_CONF */
/* Expand %p %h %e %% of a template into out; false if it does not fit. */
bool mp_stats_expand_path(const char *tmpl, char *out, size_t cap);

#endif /* MEMPOOL_INTERNAL_H */
