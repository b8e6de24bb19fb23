/*
 * The shim's address range and its jemalloc arenas.
 *
 * jemalloc cannot tell whether it owns a pointer, so the shim gives every
 * arena it creates (arenas.create) extent hooks that carve memory out of a
 * range reserved up front.  Ownership is then one subtraction and compare,
 * and, because each size class has its own arena in its own slot, the size
 * class of a freed block is a shift: free() needs no jemalloc lookup.
 * Memory is reserved PROT_NONE (no commit charge) and made accessible when
 * jemalloc asks for an extent; jemalloc keeps extents (dalloc opts out) and
 * returns their pages to the OS through the purge hooks.
 *
 * jemalloc itself starts late: reserving the range costs one mmap, and a
 * process whose classes stay small never starts it (MEMPOOL_HOST_CARVE_LIMIT:
 * their first blocks are carved from the carve area, a stripe per class at
 * the start of the range), so /bin/true or a shell command does not pay
 * jemalloc's start-up (~0.5 ms: its configuration reads, arena 0, the page
 * faults of its metadata).  The first request that needs jemalloc (a
 * bypass, a class past its carve limit, an API pool) starts it.  The stripes
 * sit side by side so that a short process touching 40 classes touches a few
 * page-table pages, not 40 slots 16 GiB apart (measured: ~0.7 ms more per
 * exec when spread).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include "core.h"
#include "jemalloc_private.h"

/* Read by every malloc and free: a cache line of its own, never written after init. */
MP_STARTUP_DATA _Alignas(64) mp_heap_t mp_heap;

#define MAX_ARENAS 4096
/* Bump pointer of each slot: MP_CLASS_MAX class slots, then the bypass area. */
typedef struct slot {
    _Atomic uintptr_t next;
    uintptr_t end;
} slot_t;
/* Both written at start: one struct keeps them on one page (one page
 * fault, not two) in whatever order a compiler lays out statics. */
static struct {
    slot_t slots[MP_CLASS_MAX + 1];
    _Atomic size_t mapped_bytes;
} slot_books;
static int16_t slot_of_arena[MAX_ARENAS]; /* slot + 1; 0: not ours (no memset at start) */
MP_STARTUP_DATA static unsigned arenas_seen; /* entries of slot_of_arena ever set (arena_lock) */
static pthread_mutex_t arena_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic(uintptr_t) carve_used[MP_CLASS_MAX]; /* bytes carved from each stripe (zero at start: nothing to write) */

static void *hook_alloc(extent_hooks_t *h, void *new_addr, size_t size, size_t alignment,
                        bool *zero, bool *commit, unsigned arena_ind)
{
    (void)h;
    if (arena_ind >= MAX_ARENAS || slot_of_arena[arena_ind] == 0)
        return NULL;
    slot_t *s = &slot_books.slots[slot_of_arena[arena_ind] - 1];
    if (alignment < 4096)
        alignment = 4096;
    uintptr_t cur = atomic_load(&s->next), start;
    do {
        start = (cur + alignment - 1) & ~(uintptr_t)(alignment - 1);
        if (start < cur || start + size < start || start + size > s->end)
            return NULL; /* slot exhausted: the caller falls back */
        if (new_addr != NULL && (uintptr_t)new_addr != start)
            return NULL; /* in-place growth only at the bump pointer */
    } while (!atomic_compare_exchange_weak(&s->next, &cur, start + size));
    if (mprotect((void *)start, size, PROT_READ | PROT_WRITE) != 0)
        return NULL; /* the range stays consumed; jemalloc retries elsewhere */
    atomic_fetch_add(&slot_books.mapped_bytes, size);
    *zero = true; /* never touched before */
    *commit = true;
    return (void *)start;
}

void *mp_heap_carve_run(unsigned cls, size_t size, size_t budget, unsigned *count)
{
    if (cls >= MP_CLASS_MAX || mp_heap.carve_span == 0 || *count == 0)
        return NULL;
    size_t stripe = (size_t)1 << mp_heap.stripe_shift;
    uintptr_t end = budget < stripe ? budget : stripe;
    uintptr_t cur = atomic_load_explicit(&carve_used[cls], memory_order_relaxed);
    unsigned n;
    do {
        if (cur + size > end)
            return NULL; /* the class has outgrown its stripe */
        uintptr_t fit = (end - cur) / size;
        n = fit < *count ? (unsigned)fit : *count;
    } while (!atomic_compare_exchange_weak_explicit(&carve_used[cls], &cur, cur + n * size, memory_order_relaxed,
                                                    memory_order_relaxed));
    *count = n;
    return (void *)(mp_heap.base + ((uintptr_t)cls << mp_heap.stripe_shift) + cur);
}

void *mp_heap_carve(unsigned cls, size_t size, size_t budget)
{
    unsigned one = 1;
    return mp_heap_carve_run(cls, size, budget, &one);
}

/* Keep the extent (jemalloc retains and reuses it). */
static bool hook_dalloc(extent_hooks_t *h, void *a, size_t s, bool c, unsigned i)
{
    (void)h, (void)a, (void)s, (void)c, (void)i;
    return true;
}

static void hook_destroy(extent_hooks_t *h, void *a, size_t s, bool c, unsigned i)
{
    (void)h, (void)c, (void)i;
    madvise(a, s, MADV_DONTNEED);
}

static bool hook_commit(extent_hooks_t *h, void *a, size_t s, size_t off, size_t len, unsigned i)
{
    (void)h, (void)s, (void)i;
    return mprotect((char *)a + off, len, PROT_READ | PROT_WRITE) != 0;
}

static bool hook_purge_lazy(extent_hooks_t *h, void *a, size_t s, size_t off, size_t len, unsigned i)
{
    (void)h, (void)s, (void)i;
    return madvise((char *)a + off, len, MADV_FREE) != 0;
}

static bool hook_purge_forced(extent_hooks_t *h, void *a, size_t s, size_t off, size_t len,
                              unsigned i)
{
    (void)h, (void)s, (void)i;
    return madvise((char *)a + off, len, MADV_DONTNEED) != 0;
}

static bool hook_split(extent_hooks_t *h, void *a, size_t s, size_t sa, size_t sb, bool c, unsigned i)
{
    (void)h, (void)a, (void)s, (void)sa, (void)sb, (void)c, (void)i;
    return false;
}

static bool hook_merge(extent_hooks_t *h, void *a, size_t sa, void *b, size_t sb, bool c, unsigned i)
{
    (void)h, (void)a, (void)sa, (void)b, (void)sb, (void)c, (void)i;
    return false; /* both halves come from the same slot */
}

static extent_hooks_t hooks = {
    hook_alloc, hook_dalloc, hook_destroy, hook_commit, NULL,
    hook_purge_lazy, hook_purge_forced, hook_split, hook_merge,
};

/* Create an arena whose memory comes from slot `slot`; 0 on failure. */
static unsigned create_arena(int slot)
{
    unsigned ind = 0;
    size_t sz = sizeof(ind);
    extent_hooks_t *hp = &hooks;
    /* The arena's own metadata is carved by the hooks too, so the slot must
     * be known before arenas.create returns: claim the next index first. */
    unsigned narenas = 0;
    size_t nsz = sizeof(narenas);
    if (je_mallctl("arenas.narenas", &narenas, &nsz, NULL, 0) != 0 || narenas >= MAX_ARENAS)
        return 0;
    slot_of_arena[narenas] = (int16_t)(slot + 1);
    if (arenas_seen <= narenas)
        arenas_seen = narenas + 1;
    if (je_mallctl("arenas.create", &ind, &sz, &hp, sizeof(hp)) != 0 || ind >= MAX_ARENAS) {
        slot_of_arena[narenas] = 0;
        return 0;
    }
    if (ind != narenas) { /* someone else created an arena meanwhile */
        slot_of_arena[narenas] = 0;
        slot_of_arena[ind] = (int16_t)(slot + 1);
        if (arenas_seen <= ind)
            arenas_seen = ind + 1;
    }
    return ind;
}

bool mp_heap_init(size_t reserve, size_t carve_limit)
{
    if (mp_heap.size != 0) { /* a second init (tests); the first touches no page here */
        for (unsigned i = 0; i < arenas_seen; i++)
            slot_of_arena[i] = 0;
        for (unsigned i = 0; i < MP_CLASS_MAX; i++)
            atomic_store(&carve_used[i], 0);
    }
    void *p = MAP_FAILED;
    /* Power of two, so that class slots are a shift apart. */
    size_t want = (size_t)1 << (63 - __builtin_clzll(reserve));
    for (; want >= ((size_t)1 << 30); want >>= 1) {
        p = mmap(NULL, want, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p != MAP_FAILED)
            break;
    }
    if (p == MAP_FAILED) {
        mp_log(MP_LOG_INFO, "cannot reserve address space (%s); the shim passes every call to libc",
               strerror(errno));
        return false;
    }
    if (want < reserve)
        mp_log(MP_LOG_INFO, "reserved %zu GiB of address space (asked %zu GiB)", want >> 30,
               reserve >> 30);
    uintptr_t base = (uintptr_t)p;
    /* Half the range for MP_CLASS_MAX class slots, half for the bypass area. */
    size_t slot = want / 2 / MP_CLASS_MAX;
    /* The carve area: the first bytes of slot 0, one stripe per class, made
     * accessible at once (one mprotect; pages are committed as touched). */
    size_t carve = carve_limit ? carve_limit : 0, stripe = 4096;
    while (stripe < carve)
        stripe <<= 1;
    while (carve && stripe * MP_CLASS_MAX > slot / 2)
        stripe >>= 1; /* a small reservation: smaller stripes */
    size_t carve_span = carve ? stripe * MP_CLASS_MAX : 0;
    if (carve_span && mprotect(p, carve_span, PROT_READ | PROT_WRITE) != 0)
        carve_span = 0;
    for (unsigned i = 0; i < MP_CLASS_MAX; i++) {
        /* Start each slot a different number of pages in: slots are a power
         * of two apart, and the busy first pages of every class would
         * otherwise share the same TLB sets. */
        slot_books.slots[i].next = base + i * slot + (i == 0 ? carve_span : 0) + ((i * 67u) % 512u) * 4096u;
        slot_books.slots[i].end = base + (i + 1) * slot;
    }
    slot_books.slots[MP_CLASS_MAX].next = base + want / 2;
    slot_books.slots[MP_CLASS_MAX].end = base + want;
    mp_heap.slot_shift = (unsigned)__builtin_ctzll(slot);
    mp_heap.stripe_shift = (unsigned)__builtin_ctzll(stripe);
    mp_heap.carve_span = carve_span;
    atomic_fetch_add(&slot_books.mapped_bytes, carve_span);
    mp_heap.class_span = want / 2;
    mp_heap.size = want;
    mp_heap.base = base; /* last: from now on pointers are recognised */
    return true;
}

/* ---- starting jemalloc ------------------------------------------------------ */

/* jemalloc's compiled-in options (read once, as it starts; MALLOC_CONF in
 * the environment still applies on top). */
#define JE_CONF_DEFAULT "oversize_threshold:0"
static char je_conf[64] = JE_CONF_DEFAULT;
const char *je_malloc_conf = je_conf;

void mp_heap_set_large_purge(size_t bytes)
{
    /* 0 disables jemalloc's eager purge of freed extents of this size.  The
     * default needs no formatting: snprintf's first call at start costs a
     * few page faults in libc. */
    if (bytes == 0)
        memcpy(je_conf, JE_CONF_DEFAULT, sizeof(JE_CONF_DEFAULT));
    else
        snprintf(je_conf, sizeof(je_conf), "oversize_threshold:%zu", bytes);
}

enum { JE_OFF, JE_ON, JE_FAILED };
static _Atomic int je_state;
static _Thread_local bool starting_here __attribute__((tls_model("initial-exec")));

/* jemalloc's fork handlers (global in its archive).  It would register them
 * with pthread_atfork as it starts, in the middle of a running process and
 * so in an order that depends on when; the build sends that call here
 * instead (scripts/jemalloc-private.py) and mp_heap_fork_* call them, in the
 * order init.c's handlers fix once at start. */
void je_jemalloc_prefork(void);
void je_jemalloc_postfork_parent(void);
void je_jemalloc_postfork_child(void);
int mp_je_pthread_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void));
int mp_je_pthread_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void))
{
    (void)prepare, (void)parent, (void)child;
    return 0;
}

/* The whole start holds the arena lock, which fork's prepare takes before
 * calling into jemalloc: a fork waits for a start in progress, and a child
 * never sees a half-started jemalloc. */
unsigned mp_heap_start(void)
{
    unsigned a = atomic_load_explicit(&mp_heap.bypass_arena, memory_order_acquire);
    if (a != 0 || starting_here || atomic_load(&je_state) == JE_FAILED)
        return a; /* 0 when nested inside the start (the caller falls back to libc) */
    pthread_mutex_lock(&arena_lock);
    a = atomic_load(&mp_heap.bypass_arena);
    if (a == 0 && atomic_load(&je_state) == JE_OFF) {
        starting_here = true;
        a = create_arena(MP_CLASS_MAX); /* jemalloc's own start-up happens here */
        atomic_store_explicit(&mp_heap.bypass_arena, a, memory_order_release);
        atomic_store(&je_state, a != 0 ? JE_ON : JE_FAILED);
        starting_here = false;
        if (a == 0)
            mp_log(MP_LOG_INFO, "cannot start jemalloc; large blocks come from libc");
    }
    pthread_mutex_unlock(&arena_lock);
    return a;
}

bool mp_heap_started(void) { return atomic_load(&je_state) == JE_ON; }

unsigned mp_heap_class_arena(unsigned cls)
{
    unsigned a = atomic_load_explicit(&mp_heap.class_arena[cls], memory_order_acquire);
    if (mp_likely(a != 0))
        return a;
    if (mp_heap_bypass_arena() == 0)
        return 0;
    pthread_mutex_lock(&arena_lock);
    a = atomic_load(&mp_heap.class_arena[cls]);
    if (a == 0) {
        a = create_arena((int)cls);
        atomic_store_explicit(&mp_heap.class_arena[cls], a, memory_order_release);
    }
    pthread_mutex_unlock(&arena_lock);
    return a;
}

size_t mp_heap_mapped(void) { return atomic_load(&slot_books.mapped_bytes); }

static bool je_forking; /* jemalloc's prefork ran for this fork */

void mp_heap_fork_prepare(void) { pthread_mutex_lock(&arena_lock); }
void mp_heap_fork_parent(void) { pthread_mutex_unlock(&arena_lock); }

void mp_heap_fork_prepare_jemalloc(void)
{
    je_forking = atomic_load(&je_state) == JE_ON; /* stable: the arena lock is held */
    if (je_forking)
        je_jemalloc_prefork();
}

void mp_heap_fork_parent_jemalloc(void)
{
    if (je_forking)
        je_jemalloc_postfork_parent();
}

void mp_heap_fork_child_jemalloc(void)
{
    if (je_forking)
        je_jemalloc_postfork_child();
}
