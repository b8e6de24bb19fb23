/*
 * core/: above sys/.  The MEMPOOL_* options (options.def), the size classes,
 * the shim's address range and its private jemalloc (heap.c), and the
 * fault-injection hook of the tests' builds (fault.c, MP_TEST_HOOKS).
 */
#ifndef MEMPOOL_CORE_H
#define MEMPOOL_CORE_H

#include "sys.h"

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

enum { MP_FMT_JSON, MP_FMT_TEXT, MP_FMT_NONE };
enum { MP_SC_QUARTER, MP_SC_HALF, MP_SC_POW2 };

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
 * none); jemalloc is not started yet.  Returns false if no memory could be
 * reserved. */
bool mp_heap_init(size_t reserve, size_t carve_limit);
/* Start jemalloc and create the bypass arena, once; its index, or 0 if it
 * failed or this thread is inside the start (the caller uses libc). */
unsigned mp_heap_start(void);
static inline unsigned mp_heap_bypass_arena(void)
{
    unsigned a = atomic_load_explicit(&mp_heap.bypass_arena, memory_order_acquire);
    return mp_likely(a != 0) ? a : mp_heap_start();
}
bool mp_heap_started(void);
/* jemalloc arena index of a class, created on first use (starting
 * jemalloc); 0 on failure. */
unsigned mp_heap_class_arena(unsigned cls);
/* Freed jemalloc extents of at least bytes are purged at once (0: never;
 * MEMPOOL_HOST_LARGE_PURGE).  Takes effect only before jemalloc starts. */
void mp_heap_set_large_purge(size_t bytes);
/* size bytes of class cls's stripe of the carve area (never jemalloc's,
 * never returned), at most budget bytes in all; NULL past that.  Thread-safe. */
void *mp_heap_carve(unsigned cls, size_t size, size_t budget);
/* The same for a run of up to *count adjacent blocks (one atomic step);
 * *count is set to the blocks carved.  A thread that takes its blocks in
 * runs does not share cache lines with another thread's blocks. */
void *mp_heap_carve_run(unsigned cls, size_t size, size_t budget, unsigned *count);
/* Whether p (a class block) was carved. */
static inline bool mp_heap_is_carved(const void *p) { return (uintptr_t)p - mp_heap.base < mp_heap.carve_span; }
/* The class of the block at offset off < class_span from the base: in the
 * carve area by its stripe, elsewhere by its slot (a conditional move). */
static inline uintptr_t mp_class_of_offset(uintptr_t off)
{
    uintptr_t striped = (off >> mp_heap.stripe_shift) & (MP_CLASS_MAX - 1);
    uintptr_t slotted = off >> mp_heap.slot_shift;
    return off < mp_heap.carve_span ? striped : slotted;
}
/* fork(): hold the arena-creation lock across it (child: same unlock), and,
 * called last in prepare and first after it, jemalloc's own handlers when
 * it has started (it does not register them itself). */
void mp_heap_fork_prepare(void);
void mp_heap_fork_parent(void);
void mp_heap_fork_prepare_jemalloc(void);
void mp_heap_fork_parent_jemalloc(void);
void mp_heap_fork_child_jemalloc(void);
/* Bytes of the range made accessible so far (for stats). */
size_t mp_heap_mapped(void);

enum { MP_PTR_CLASS, MP_PTR_BYPASS, MP_PTR_FOREIGN, MP_PTR_NULL };
static inline int mp_ptr_kind(const void *p, unsigned *cls)
{
    uintptr_t off = (uintptr_t)p - mp_heap.base;
    if (mp_likely(off < mp_heap.class_span)) {
        *cls = (unsigned)mp_class_of_offset(off);
        return MP_PTR_CLASS;
    }
    if (off < mp_heap.size)
        return MP_PTR_BYPASS;
    return p == NULL ? MP_PTR_NULL : MP_PTR_FOREIGN; /* includes the bootstrap buffer */
}

/* ---- fault.c: injected jemalloc failures ---------------------------------
 * Test hooks (MP_TEST_HOOKS): compiled only into the tests' builds of the
 * core (tests/meson.build), never into the shipped libraries, where a
 * jemalloc allocation never "fails" on purpose. */
#ifdef MP_TEST_HOOKS
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
#else
static inline bool mp_je_fails(void) { return false; }
#endif

#endif /* MEMPOOL_CORE_H */
