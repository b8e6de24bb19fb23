/*
 * MEMPOOL_DEBUG: checks that make misuse of pooled memory visible instead
 * of silent.  A pool hides a use-after-free (the block is still mapped and
 * soon someone else's) and an overflow (the next block is a live one), so
 * in debug mode every host block carries a trailer in its last bytes:
 *
 *   [ user bytes (req) | guard bytes 0xAB ... | tag | req | alloc pc | free pc ]
 *                                               \------- MP_DEBUG_TRAILER ------/
 *
 * Requests are enlarged by MP_DEBUG_EXTRA so the guard is at least 8 bytes.
 * A freed block is poisoned (0xDF up to the trailer) and its tag says
 * "freed": reuse checks the poison (a write after free), a second free sees
 * the tag (a double free), and a pointer whose trailer has no tag at all was
 * never handed out by malloc (an interior or foreign pointer).  The thread
 * caches are off in this mode (malloc_pools.c), so every call comes here.
 *
 * The ideas are the classic ones of debugging allocators (glibc's
 * MALLOC_CHECK_/mcheck, jemalloc's opt.junk, ASan's shadow poison), done
 * with a trailer rather than a shadow map so that it costs nothing when off.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "callsite.h"
#include "diag.h"

MP_STARTUP_DATA bool mp_debug_on;
MP_STARTUP_DATA static bool abort_on_finding;
MP_STARTUP_DATA static _Atomic uint64_t findings[MP_DEBUG_KINDS]; /* rare */

#define TAG_LIVE 0x6d706c6976652121ull  /* "mplive!!" */
#define TAG_FREED 0x6d70667265656421ull /* "mpfreed!" */
#define GUARD_BYTE 0xAB
#define POISON_BYTE 0xDF

typedef struct trailer {
    uint64_t tag; /* TAG_* xor the block's address: a copied trailer does not pass */
    uint64_t req;
    void *alloc_pc, *free_pc;
} trailer_t;

_Static_assert(sizeof(trailer_t) == MP_DEBUG_TRAILER, "trailer layout");

static const char *const kind_names[MP_DEBUG_KINDS] = {
    [MP_DEBUG_USE_AFTER_FREE] = "use_after_free",
    [MP_DEBUG_OVERFLOW] = "overflow",
    [MP_DEBUG_DOUBLE_FREE] = "double_free",
    [MP_DEBUG_INVALID_FREE] = "invalid_free",
    [MP_DEBUG_DEVICE_DOUBLE_HANDOUT] = "device_double_handout",
    [MP_DEBUG_DEVICE_DOUBLE_FREE] = "device_double_free",
    [MP_DEBUG_WRONG_POOL] = "wrong_pool_release",
};

void mp_debug_init(void)
{
    mp_debug_on = mp_opt(MP_OPT_DEBUG) && !mp_opt(MP_OPT_DISABLE);
    abort_on_finding = mp_opt(MP_OPT_DEBUG_ACTION) == 0;
}

const char *mp_debug_kind_name(int kind) { return kind_names[kind]; }

uint64_t mp_debug_count(int kind) { return atomic_load_explicit(&findings[kind], memory_order_relaxed); }

void mp_debug_count_add(int kind) { atomic_fetch_add_explicit(&findings[kind], 1, memory_order_relaxed); }

void mp_debug_reset(void)
{
    for (int k = 0; k < MP_DEBUG_KINDS; k++)
        atomic_store(&findings[k], 0);
}

/* The first frame of the program's own code that called us. */
static void *caller_pc(void)
{
    void *pc = NULL;
    return mp_callsite_stack(&pc, 1) ? pc : NULL;
}

void mp_debug_finding(int kind, const char *then, const char *fmt, ...)
{
    atomic_fetch_add_explicit(&findings[kind], 1, memory_order_relaxed);
    char what[320], at[160];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    mp_callsite_name(caller_pc(), at, sizeof(at));
    /* Findings are errors: shown unless MEMPOOL_LOG_LEVEL=none.  Outside
     * debug mode (a refused device double free) there is no abort. */
    bool stop = mp_debug_on && abort_on_finding;
    mp_log(MP_LOG_ERROR, "%s%s: %s; called from %s; %s%s", mp_debug_on ? "debug: " : "",
           kind_names[kind], what, at, stop ? "aborting (MEMPOOL_DEBUG_ACTION=abort)" : "continuing: ",
           stop ? "" : then);
    if (stop)
        abort();
}

size_t mp_debug_size(size_t req)
{
    size_t n;
    return __builtin_add_overflow(req, (size_t)MP_DEBUG_EXTRA, &n) ? SIZE_MAX : n;
}

static trailer_t *trailer_of(void *p, size_t usable)
{
    return (trailer_t *)((char *)p + usable - MP_DEBUG_TRAILER);
}

/* Index of the first byte of [p, p + n) that is not b, or n. */
static size_t first_not(const unsigned char *p, size_t n, unsigned char b)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) { /* a word at a time: poison checks cover whole blocks */
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (w != 0x0101010101010101ull * b)
            break;
    }
    while (i < n && p[i] == b)
        i++;
    return i;
}

void mp_debug_alloc(void *p, size_t usable, size_t req, bool reused)
{
    if (usable < MP_DEBUG_EXTRA || req > usable - MP_DEBUG_EXTRA)
        return; /* not enlarged (cannot happen): leave it unchecked */
    trailer_t *t = trailer_of(p, usable);
    size_t body = usable - MP_DEBUG_TRAILER;
    /* Only blocks that waited in our pools are checked: memory back from
     * jemalloc may have been purged (MADV_FREE pages read as zero). */
    if (reused && t->tag != (TAG_FREED ^ (uintptr_t)p)) {
        mp_debug_finding(MP_DEBUG_USE_AFTER_FREE, "the block is handed out again",
                         "block %p was written after it was freed: its trailer (the last %d bytes) "
                         "is overwritten; found when reusing it", p, MP_DEBUG_TRAILER);
    } else if (reused) {
        /* A block we poisoned: every byte must still be poison. */
        size_t bad = first_not(p, body, POISON_BYTE);
        if (bad < body) {
            char freed_at[160], alloc_at[160];
            mp_callsite_name(t->free_pc, freed_at, sizeof(freed_at));
            mp_callsite_name(t->alloc_pc, alloc_at, sizeof(alloc_at));
            mp_debug_finding(MP_DEBUG_USE_AFTER_FREE, "the block is handed out again",
                             "block %p (%zu bytes, allocated at %s) was written after it was freed "
                             "at %s: byte %zu is 0x%02x, not the poison 0x%02x; found when reusing it",
                             p, (size_t)t->req, alloc_at, freed_at, bad,
                             ((unsigned char *)p)[bad], POISON_BYTE);
        }
    }
    memset((char *)p + req, GUARD_BYTE, body - req);
    t->tag = TAG_LIVE ^ (uintptr_t)p;
    t->req = req;
    t->alloc_pc = caller_pc();
    t->free_pc = NULL;
}

bool mp_debug_free(void *p, size_t usable)
{
    if (usable < MP_DEBUG_EXTRA)
        return true;
    trailer_t *t = trailer_of(p, usable);
    size_t body = usable - MP_DEBUG_TRAILER;
    char a[160], b[160];
    if (t->tag == (TAG_FREED ^ (uintptr_t)p)) {
        mp_callsite_name(t->alloc_pc, a, sizeof(a));
        mp_callsite_name(t->free_pc, b, sizeof(b));
        mp_debug_finding(MP_DEBUG_DOUBLE_FREE, "this free is ignored",
                         "block %p (%zu bytes, allocated at %s) freed again; first freed at %s",
                         p, (size_t)t->req, a, b);
        return false;
    }
    if (t->tag != (TAG_LIVE ^ (uintptr_t)p) || t->req > body - 8) {
        mp_debug_finding(MP_DEBUG_INVALID_FREE, "this free is ignored",
                         "%p was not returned by malloc (an interior pointer, or its block's "
                         "end was overwritten)", p);
        return false;
    }
    size_t bad = first_not((unsigned char *)p + t->req, body - t->req, GUARD_BYTE);
    if (bad < body - t->req) {
        mp_callsite_name(t->alloc_pc, a, sizeof(a));
        mp_debug_finding(MP_DEBUG_OVERFLOW, "the block is freed",
                         "block %p of %zu bytes (allocated at %s) was written past its end: "
                         "guard byte %zu (offset %zu) is 0x%02x; found when freeing it",
                         p, (size_t)t->req, a, bad, (size_t)t->req + bad,
                         ((unsigned char *)p)[t->req + bad]);
    }
    memset(p, POISON_BYTE, body);
    t->tag = TAG_FREED ^ (uintptr_t)p;
    t->free_pc = caller_pc();
    return true;
}

size_t mp_debug_usable(const void *p, size_t usable)
{
    if (usable < MP_DEBUG_EXTRA)
        return usable;
    const trailer_t *t = trailer_of((void *)p, usable);
    return t->tag == (TAG_LIVE ^ (uintptr_t)p) ? (size_t)t->req : usable - MP_DEBUG_EXTRA;
}
