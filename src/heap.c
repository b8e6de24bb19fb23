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
 */
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/mman.h>

#include "internal.h"
#include "jemalloc_private.h"

mp_heap_t mp_heap;

#define MAX_ARENAS 4096
/* Bump pointer of each slot: MP_CLASS_MAX class slots, then the bypass area. */
typedef struct slot {
    _Atomic uintptr_t next;
    uintptr_t end;
} slot_t;
static slot_t slots[MP_CLASS_MAX + 1];
static int16_t slot_of_arena[MAX_ARENAS]; /* -1: not ours */
static pthread_mutex_t arena_lock = PTHREAD_MUTEX_INITIALIZER;
static _Atomic size_t mapped_bytes;

static void *hook_alloc(extent_hooks_t *h, void *new_addr, size_t size, size_t alignment,
                        bool *zero, bool *commit, unsigned arena_ind)
{
    (void)h;
    if (arena_ind >= MAX_ARENAS || slot_of_arena[arena_ind] < 0)
        return NULL;
    slot_t *s = &slots[slot_of_arena[arena_ind]];
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
    atomic_fetch_add(&mapped_bytes, size);
    *zero = true; /* never touched before */
    *commit = true;
    return (void *)start;
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
    slot_of_arena[narenas] = (int16_t)slot;
    if (je_mallctl("arenas.create", &ind, &sz, &hp, sizeof(hp)) != 0 || ind >= MAX_ARENAS) {
        slot_of_arena[narenas] = -1;
        return 0;
    }
    if (ind != narenas) { /* someone else created an arena meanwhile */
        slot_of_arena[narenas] = -1;
        slot_of_arena[ind] = (int16_t)slot;
    }
    return ind;
}

bool mp_heap_init(size_t reserve)
{
    memset(slot_of_arena, 0xff, sizeof(slot_of_arena));
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
    for (unsigned i = 0; i < MP_CLASS_MAX; i++) {
        /* Start each slot a different number of pages in: slots are a power
         * of two apart, and the busy first pages of every class would
         * otherwise share the same TLB sets. */
        slots[i].next = base + i * slot + ((i * 67u) % 512u) * 4096u;
        slots[i].end = base + (i + 1) * slot;
    }
    slots[MP_CLASS_MAX].next = base + want / 2;
    slots[MP_CLASS_MAX].end = base + want;
    mp_heap.slot_shift = (unsigned)__builtin_ctzll(slot);

    unsigned bypass = create_arena(MP_CLASS_MAX);
    if (bypass == 0) {
        munmap(p, want);
        mp_log(MP_LOG_INFO, "cannot create a jemalloc arena; the shim passes every call to libc");
        return false;
    }
    mp_heap.bypass_arena = bypass;
    mp_heap.class_span = want / 2;
    mp_heap.size = want;
    mp_heap.base = base; /* last: from now on pointers are recognised */
    return true;
}

/* Misses of each class before its arena exists (MEMPOOL_HOST_COLD_MISSES). */
static _Atomic uint64_t cold_misses[MP_CLASS_MAX];

unsigned mp_heap_class_arena(unsigned cls)
{
    unsigned a = atomic_load_explicit(&mp_heap.class_arena[cls], memory_order_acquire);
    if (mp_likely(a != 0))
        return a;
    /* A cold class: the caller serves it from the bypass arena (never in
     * debug mode, whose checks need the class's blocks). */
    if (!mp_debug_on
        && atomic_fetch_add_explicit(&cold_misses[cls], 1, memory_order_relaxed) < mp_opt(MP_OPT_HOST_COLD_MISSES))
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

size_t mp_heap_mapped(void) { return atomic_load(&mapped_bytes); }

void mp_heap_fork_prepare(void) { pthread_mutex_lock(&arena_lock); }
void mp_heap_fork_parent(void) { pthread_mutex_unlock(&arena_lock); }
