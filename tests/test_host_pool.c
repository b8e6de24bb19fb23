/* Host pools through the core's mp_* entry points: hits, misses, bypass,
 * thread-cache and shared-pool limits, trims, alignment, realloc, calloc,
 * foreign pointers, and the counters that report them. */
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "check_main.h"
#include "host_inline.h"
#include "mempool.h"
#include "host_stats.h"

extern void *__libc_malloc(size_t size); /* glibc's own allocator */

static mp_snapshot_t snap;

static const mp_row_t *row_of(size_t size)
{
    mp_stats_snapshot(&snap);
    unsigned c = mp_size_class_of(&mp_sc, size);
    ck_assert_uint_lt(c, snap.nrows);
    return &snap.rows[c];
}

static void start(void)
{
    setenv("MEMPOOL_HOST_RESERVE", "64G", 0); /* a test setup may set less */
    ck_assert_int_eq(mp_init(), MP_STATE_READY);
}

START_TEST(small_class_is_carved_then_gets_an_arena)
{
    /* MEMPOOL_HOST_CARVE_LIMIT (the suite's environment says 0): a class's
     * first blocks are carved from its stripe of the carve area, without
     * jemalloc; past the limit its arena is created. */
    setenv("MEMPOOL_HOST_CARVE_LIMIT", "32K", 1);
    start();
    unsigned c = mp_size_class_of(&mp_sc, 3000);
    size_t cs = mp_sc.size[c];
    size_t carvable = 32768 / cs;
    ck_assert_uint_ge(carvable, 2);
    void *p[64];
    ck_assert_uint_lt(carvable + 1, 64);
    for (size_t i = 0; i < carvable; i++) {
        p[i] = mp_malloc(3000);
        ck_assert_ptr_nonnull(p[i]);
        ck_assert_uint_eq(mp_class_of_offset((uintptr_t)p[i] - mp_heap.base), c); /* its stripe */
        ck_assert(mp_heap_is_carved(p[i]));
        ck_assert_uint_eq((uintptr_t)p[i] & (mp_sc.align[c] - 1), 0);
        memset(p[i], 0xab, 3000);
    }
    ck_assert_uint_eq(atomic_load(&mp_heap.class_arena[c]), 0);
    ck_assert(!mp_heap_started()); /* nothing needed jemalloc yet */
    p[carvable] = mp_malloc(3000);
    ck_assert_uint_ne(atomic_load(&mp_heap.class_arena[c]), 0);
    ck_assert(mp_heap_started());
    ck_assert_uint_eq(((uintptr_t)p[carvable] - mp_heap.base) >> mp_heap.slot_shift, c);
    ck_assert(!mp_heap_is_carved(p[carvable]));
    const mp_row_t *r = row_of(3000);
    ck_assert_uint_eq(r->misses, carvable + 1);
    ck_assert_uint_eq(r->bytes_reserved, (carvable + 1) * cs);
    mp_stats_snapshot(&snap);
    ck_assert_uint_eq(snap.bypasses, 0);
    for (size_t i = 0; i <= carvable; i++)
        mp_free(p[i]);
    ck_assert_ptr_eq(mp_malloc(3000), p[carvable]); /* pooled: a hit, the last freed first */
    r = row_of(3000);
    ck_assert_uint_eq(r->hits, 1);
    mp_free(p[carvable]);
    /* A trim gives jemalloc its one block; the carved ones stay reserved
     * and serve the next misses. */
    mp_host_trim();
    r = row_of(3000);
    ck_assert_uint_eq(r->trims, 1);
    ck_assert_uint_eq(r->bytes_reserved, carvable * cs);
    for (size_t i = 0; i < carvable; i++) {
        void *q = mp_malloc(3000);
        ck_assert(mp_heap_is_carved(q));
    }
    r = row_of(3000);
    ck_assert_uint_eq(r->misses, 2 * carvable + 1);
    ck_assert_uint_eq(r->bytes_reserved, carvable * cs);
}
END_TEST

START_TEST(jemalloc_starts_at_first_bypass)
{
    setenv("MEMPOOL_HOST_CARVE_LIMIT", "64K", 1);
    start();
    void *s = mp_malloc(100);
    ck_assert_ptr_nonnull(s);
    ck_assert(!mp_heap_started());
    ck_assert_uint_eq(atomic_load(&mp_heap.bypass_arena), 0);
    void *big = mp_malloc(1 << 20);
    ck_assert_ptr_nonnull(big);
    ck_assert(mp_heap_started());
    ck_assert_uint_ge((uintptr_t)big - mp_heap.base, mp_heap.class_span); /* the bypass half */
    ck_assert_uint_lt((uintptr_t)big - mp_heap.base, mp_heap.size);
    mp_free(big);
    mp_free(s);
}
END_TEST

START_TEST(free_then_malloc_is_a_hit)
{
    start();
    void *a = mp_malloc(100);
    ck_assert_ptr_nonnull(a);
    memset(a, 0xab, 100);
    mp_free(a);
    void *b = mp_malloc(110); /* same class (112) */
    ck_assert_ptr_eq(a, b);
    const mp_row_t *r = row_of(100);
    ck_assert_uint_eq(r->size, 112);
    ck_assert_uint_eq(r->misses, 1);
    ck_assert_uint_eq(r->hits, 1);
    ck_assert_uint_eq(r->releases, 1);
    ck_assert_uint_eq(r->bytes_requested, 210);
    ck_assert_uint_eq(r->bytes_served_from_cache, 112);
    ck_assert_int_eq(r->bytes_reserved, 112);
    ck_assert_int_eq(r->bytes_in_use, 112);
    mp_free(b);
    r = row_of(100);
    ck_assert_int_eq(r->bytes_in_use, 0);
    ck_assert_uint_eq(r->cached_blocks, 1);
}
END_TEST

START_TEST(large_requests_bypass)
{
    setenv("MEMPOOL_HOST_MAX_BLOCK_SIZE", "4K", 1);
    start();
    void *p = mp_malloc(5000);
    ck_assert_ptr_nonnull(p);
    memset(p, 1, 5000);
    ck_assert_uint_ge(mp_usable_size(p), 5000);
    mp_stats_snapshot(&snap);
    ck_assert_uint_eq(snap.bypasses, 1);
    ck_assert_uint_eq(snap.bypass_bytes, 5000);
    ck_assert_uint_eq(snap.total.hits + snap.total.misses, 0);
    ck_assert_int_ge(snap.bypass_in_use, 5000);
    mp_free(p);
    mp_stats_snapshot(&snap);
    ck_assert_int_eq(snap.bypass_in_use, 0);
    ck_assert_int_ge(snap.bypass_in_use_peak, 5000);
}
END_TEST

START_TEST(thread_cache_spills_to_shared_pool)
{
    setenv("MEMPOOL_HOST_TCACHE_BLOCKS", "4", 1);
    start();
    void *p[10];
    for (int i = 0; i < 10; i++)
        p[i] = mp_malloc(64);
    for (int i = 0; i < 10; i++)
        mp_free(p[i]);
    const mp_row_t *r = row_of(64);
    ck_assert_uint_eq(r->misses, 10);
    ck_assert_uint_eq(r->cached_blocks, 10); /* bin (<= 4) + shared pool */
    ck_assert_uint_eq(r->trims, 0);
    ck_assert_uint_le(mp_tls_tcache->cl[mp_size_class_of(&mp_sc, 64)].count, 4);
    /* All ten come back as hits, refilled from the shared pool. */
    for (int i = 0; i < 10; i++)
        p[i] = mp_malloc(64);
    r = row_of(64);
    ck_assert_uint_eq(r->hits, 10);
    ck_assert_uint_eq(r->misses, 10);
}
END_TEST

START_TEST(shared_limits_trim_to_jemalloc)
{
    setenv("MEMPOOL_HOST_TCACHE_BLOCKS", "0", 1);
    setenv("MEMPOOL_HOST_MAX_BLOCKS", "3", 1);
    start();
    void *p[8];
    for (int i = 0; i < 8; i++)
        p[i] = mp_malloc(1000);
    for (int i = 0; i < 8; i++)
        mp_free(p[i]);
    const mp_row_t *r = row_of(1000);
    ck_assert_uint_eq(r->cached_blocks, 3);
    ck_assert_uint_eq(r->trims, 5);
    ck_assert_uint_eq(r->trim_bytes, 5 * 1024);
    ck_assert_int_eq(r->bytes_reserved, 3 * 1024);
    ck_assert_int_eq(r->bytes_reserved_peak, 8 * 1024);
}
END_TEST

/* Past its bound a shared pool gives jemalloc its oldest blocks, keeps the
 * newest, and hands them back newest first (its slots are a ring: this
 * wraps it twice). */
START_TEST(shared_pool_trims_its_oldest_blocks)
{
    enum { N = 10, BOUND = 4 };
    setenv("MEMPOOL_HOST_TCACHE_BLOCKS", "0", 1);
    setenv("MEMPOOL_HOST_CARVE_LIMIT", "0", 1);
    setenv("MEMPOOL_HOST_MAX_BLOCKS", "4", 1);
    start();
    void *p[N], *q[BOUND];
    for (int i = 0; i < N; i++)
        p[i] = mp_malloc(1000);
    for (int i = 0; i < N; i++)
        mp_free(p[i]);
    const mp_row_t *r = row_of(1000);
    ck_assert_uint_eq(r->cached_blocks, BOUND);
    ck_assert_uint_eq(r->trims, N - BOUND);
    for (int i = 0; i < BOUND; i++)
        q[i] = mp_malloc(1000);
    for (int i = 0; i < BOUND; i++)
        ck_assert_ptr_eq(q[i], p[N - 1 - i]);
    r = row_of(1000);
    ck_assert_uint_eq(r->hits, BOUND);
    ck_assert_uint_eq(r->cached_blocks, 0);
    for (int i = 0; i < BOUND; i++)
        mp_free(q[i]);
}
END_TEST

/* n blocks of size bytes, then all of them freed, in order. */
static void malloc_then_free(void **p, int n, size_t size)
{
    for (int i = 0; i < n; i++)
        p[i] = mp_malloc(size);
    for (int i = 0; i < n; i++)
        mp_free(p[i]);
}

/* The bound starts at 16384 blocks and doubles, up to MEMPOOL_HOST_MAX_BLOCKS,
 * when a miss follows a trim by it. */
START_TEST(shared_bound_grows_when_trimmed_blocks_are_missed)
{
    enum { N = 20000, FIRST = 16384, CEILING = 18000 };
    setenv("MEMPOOL_HOST_TCACHE_BLOCKS", "0", 1);
    setenv("MEMPOOL_HOST_CARVE_LIMIT", "0", 1); /* jemalloc blocks: carved ones are never trimmed */
    setenv("MEMPOOL_HOST_MAX_BLOCKS", "18000", 1);
    start();
    static void *p[N];
    malloc_then_free(p, N, 32);
    const mp_row_t *r = row_of(32);
    ck_assert_uint_eq(r->cached_blocks, FIRST);
    ck_assert_uint_eq(r->trims, N - FIRST);
    /* A program that frees once and exits stops here; this one comes back
     * for the trimmed blocks: its first miss raises the bound. */
    static void *q[N];
    for (int i = 0; i < N; i++)
        q[i] = mp_malloc(32);
    for (int i = 0; i < FIRST; i++) /* the newest FIRST, newest first */
        ck_assert_ptr_eq(q[i], p[N - 1 - i]);
    memcpy(p, q, sizeof(q));
    r = row_of(32);
    ck_assert_uint_eq(r->hits, FIRST);
    ck_assert_uint_eq(r->misses, N + (N - FIRST));
    for (int i = 0; i < N; i++)
        mp_free(p[i]);
    r = row_of(32);
    ck_assert_uint_eq(r->cached_blocks, CEILING); /* 2 x 16384, capped */
    ck_assert_uint_eq(r->trims, (N - FIRST) + (N - CEILING));
}
END_TEST

START_TEST(cache_limit_in_bytes)
{
    setenv("MEMPOOL_HOST_TCACHE_BLOCKS", "0", 1);
    setenv("MEMPOOL_HOST_CACHE_LIMIT", "10K", 1);
    start();
    void *p[20];
    for (int i = 0; i < 20; i++)
        p[i] = mp_malloc(2048);
    for (int i = 0; i < 20; i++)
        mp_free(p[i]);
    const mp_row_t *r = row_of(2048);
    ck_assert_uint_eq(r->cached_bytes, 10 * 1024);
    ck_assert_uint_eq(r->trims, 15);
}
END_TEST

START_TEST(trim_returns_cached_bytes)
{
    start();
    void *p[5];
    for (int i = 0; i < 5; i++)
        p[i] = mp_malloc(256);
    for (int i = 0; i < 5; i++)
        mp_free(p[i]);
    ck_assert_int_eq(mempool_trim_all(), 5 * 256);
    const mp_row_t *r = row_of(256);
    ck_assert_uint_eq(r->cached_blocks, 0);
    ck_assert_int_eq(r->bytes_reserved, 0);
    ck_assert_uint_eq(r->trims, 5);
    ck_assert_int_eq(mempool_trim_all(), 0);
}
END_TEST

static void *free_in_thread(void *p)
{
    mp_free(p);
    return NULL;
}

START_TEST(thread_exit_returns_cache)
{
    start();
    void *p = mp_malloc(48);
    pthread_t t;
    /* The other thread frees our block into its own cache, then exits. */
    ck_assert_int_eq(pthread_create(&t, NULL, free_in_thread, p), 0);
    pthread_join(t, NULL);
    const mp_row_t *r = row_of(48);
    ck_assert_uint_eq(r->releases, 1);
    ck_assert_uint_eq(r->cached_blocks, 1); /* now in the shared pool */
    ck_assert_ptr_eq(mp_malloc(48), p);     /* and reused here */
}
END_TEST

static void *churn_in_thread(void *arg)
{
    (void)arg;
    void *b[5];
    for (int i = 0; i < 5; i++)
        b[i] = mp_malloc(80);
    for (int i = 0; i < 5; i++)
        mp_free(b[i]);
    return NULL;
}

START_TEST(exited_threads_caches_are_reused_with_clean_counters)
{
    start();
    /* Twenty threads one after another: from the second on, each takes an
     * exited thread's cache (drained, counters folded and zeroed).  A count
     * left behind would be folded twice. */
    for (int i = 0; i < 20; i++) {
        pthread_t t;
        ck_assert_int_eq(pthread_create(&t, NULL, churn_in_thread, NULL), 0);
        pthread_join(t, NULL);
    }
    const mp_row_t *r = row_of(80);
    ck_assert_uint_eq(r->hits + r->misses, 100);
    ck_assert_uint_eq(r->releases, 100);
    ck_assert_int_eq(r->bytes_in_use, 0);
    ck_assert_uint_eq(r->misses, 5); /* the first thread's; the others refill from what it left */
    ck_assert_int_eq((int64_t)(r->cached_blocks * 80), r->bytes_reserved); /* every block back, none lost */
}
END_TEST

static const size_t aligns[] = {32, 64, 128, 256, 512, 1024, 4096, 8192, 65536, 1 << 21};

START_TEST(alignment_is_exact)
{
    start();
    size_t al = aligns[_i];
    static const size_t sizes[] = {0, 1, 8, 100, 4096, 5000, 70000};
    for (int round = 0; round < 2; round++) { /* second round: from the cache */
        for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
            void *p = NULL;
            ck_assert_int_eq(mp_posix_memalign(&p, al, sizes[k]), 0);
            ck_assert_msg(((uintptr_t)p & (al - 1)) == 0, "%p not %zu-aligned", p, al);
            ck_assert_uint_ge(mp_usable_size(p), sizes[k]);
            memset(p, 0x5a, sizes[k]);
            void *q = mp_aligned_alloc(al, sizes[k]);
            ck_assert_uint_eq((uintptr_t)q & (al - 1), 0);
            void *m = mp_memalign(al, sizes[k]);
            ck_assert_uint_eq((uintptr_t)m & (al - 1), 0);
            mp_free(p);
            mp_free(q);
            mp_free(m);
        }
    }
    void *v = mp_valloc(10);
    ck_assert_uint_eq((uintptr_t)v & 4095, 0);
    void *pv = mp_pvalloc(10);
    ck_assert_uint_eq((uintptr_t)pv & 4095, 0);
    ck_assert_uint_ge(mp_usable_size(pv), 4096);
}
END_TEST

START_TEST(bad_arguments)
{
    start();
    void *p = (void *)0x1;
    ck_assert_int_eq(mp_posix_memalign(&p, 24, 10), EINVAL);
    ck_assert_int_eq(mp_posix_memalign(&p, 4, 10), EINVAL); /* < sizeof(void *) */
    ck_assert_ptr_eq(p, (void *)0x1);
    errno = 0;
    ck_assert_ptr_null(mp_aligned_alloc(48, 96));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(mp_calloc(SIZE_MAX / 2, 4));
    ck_assert_int_eq(errno, ENOMEM);
    errno = 0;
    ck_assert_ptr_null(mp_reallocarray(NULL, SIZE_MAX / 2, 4));
    ck_assert_int_eq(errno, ENOMEM);
    errno = 0;
    ck_assert_ptr_null(mp_malloc(SIZE_MAX - 100));
    ck_assert_int_eq(errno, ENOMEM);
    /* memalign rounds a non-power-of-two alignment up, like glibc. */
    void *m = mp_memalign(48, 10);
    ck_assert_uint_eq((uintptr_t)m & 63, 0);
    mp_free(NULL);
    ck_assert_uint_eq(mp_usable_size(NULL), 0);
}
END_TEST

START_TEST(realloc_keeps_contents)
{
    start();
    unsigned char *p = mp_realloc(NULL, 1);
    p[0] = 7;
    size_t sizes[] = {1, 20, 200, 3000, 40000, 100000, 1 << 21, 70000, 500, 3};
    size_t prev = 1;
    for (size_t k = 1; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        unsigned char *q = mp_realloc(p, sizes[k]);
        ck_assert_ptr_nonnull(q);
        size_t keep = prev < sizes[k] ? prev : sizes[k];
        for (size_t i = 0; i < keep; i++)
            ck_assert_uint_eq(q[i], (unsigned char)(i * 31 + 7));
        for (size_t i = 0; i < sizes[k]; i++)
            q[i] = (unsigned char)(i * 31 + 7);
        p = q;
        prev = sizes[k];
    }
    ck_assert_ptr_null(mp_realloc(p, 0)); /* frees */
}
END_TEST

START_TEST(realloc_in_place_within_class)
{
    start();
    char *p = mp_malloc(100); /* class 112 */
    ck_assert_ptr_eq(mp_realloc(p, 112), p);  /* grows within the class */
    ck_assert_ptr_eq(mp_realloc(p, 60), p);   /* shrinks by less than half */
    char *q = mp_realloc(p, 120);             /* grows a little: half again */
    ck_assert_ptr_ne(q, p);
    ck_assert_uint_eq(mp_usable_size(q), 192); /* class of 112 * 3 / 2 = 168 */
    char *r = mp_realloc(q, 20);               /* shrinks a lot: moves */
    ck_assert_ptr_ne(r, q);
    ck_assert_uint_eq(mp_usable_size(r), 32);
    mp_free(r);
}
END_TEST

START_TEST(calloc_zeroes_reused_blocks)
{
    start();
    for (size_t s = 16; s < 200000; s = s * 3 + 5) {
        unsigned char *p = mp_malloc(s);
        memset(p, 0xff, s);
        mp_free(p);
        unsigned char *q = mp_calloc(1, s);
        for (size_t i = 0; i < s; i++)
            ck_assert_uint_eq(q[i], 0);
        mp_free(q);
    }
}
END_TEST

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

START_TEST(large_calloc_touches_no_pages)
{
    start();
    long before = rss_kib();
    unsigned char *p = mp_calloc(256, 1 << 20); /* 256 MiB */
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(p[0], 0);
    ck_assert_uint_eq(p[(256u << 20) - 1], 0);
    /* Not committed page by page.  Under valgrind RSS is valgrind's own. */
    if (getenv("MEMPOOL_TEST_UNDER_VALGRIND") == NULL)
        ck_assert_int_lt(rss_kib() - before, 16 * 1024);
    mp_free(p);
}
END_TEST

/* Pages of [p, p + len) resident now. */
static size_t resident_pages(const void *p, size_t len)
{
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)4095, end = (uintptr_t)p + len;
    unsigned char v[64];
    size_t n = (end - a + 4095) / 4096, got = 0;
    ck_assert_uint_le(n, sizeof(v));
    ck_assert_int_eq(mincore((void *)a, end - a, v), 0);
    for (size_t i = 0; i < n; i++)
        got += v[i] & 1;
    return got;
}

START_TEST(pooled_calloc_writes_only_reused_blocks)
{
    start();
    size_t s = 48 << 10; /* a class of 12 pages: fresh on its first miss (carved, or a new jemalloc extent) */
    unsigned char *p = mp_calloc(1, s);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(resident_pages(p, s), 0); /* never written: glibc's calloc does the same */
    for (size_t i = 0; i < s; i += 4096)
        ck_assert_uint_eq(p[i], 0);
    memset(p, 0xa5, s);
    mp_free(p);
    unsigned char *q = mp_calloc(s / 16, 16); /* the same block, from the thread's bin */
    ck_assert_ptr_eq(q, p);
    for (size_t i = 0; i < s; i++)
        ck_assert_uint_eq(q[i], 0);
    mp_free(q);
}
END_TEST

START_TEST(foreign_pointers_go_to_libc)
{
    start();
    void *f = __libc_malloc(100); /* glibc's heap: not ours */
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_ge(mp_usable_size(f), 100);
    memset(f, 3, 100);
    f = mp_realloc(f, 200000); /* stays with glibc */
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(((unsigned char *)f)[99], 3);
    mp_free(f);
    mp_stats_snapshot(&snap);
    ck_assert_uint_eq(snap.total.releases, 0);
}
END_TEST

static pthread_key_t late_key;

/* Runs after the shim's own thread-exit destructor (keys run in creation
 * order and ours was created first): frees and allocates must still work. */
static void late_destructor(void *p)
{
    mp_free(p);
    void *q = mp_malloc(200);
    memset(q, 1, 200);
    mp_free(q);
}

static void *thread_with_late_free(void *arg)
{
    (void)arg;
    void *p = mp_malloc(100);
    memset(p, 2, 100);
    pthread_setspecific(late_key, p);
    return NULL;
}

START_TEST(frees_after_thread_cache_destroyed)
{
    start();
    mp_free(mp_malloc(1)); /* initialise: the shim's key is created first */
    ck_assert_int_eq(pthread_key_create(&late_key, late_destructor), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, thread_with_late_free, NULL), 0);
    pthread_join(t, NULL);
    mp_stats_snapshot(&snap);
    ck_assert_int_eq(snap.total.bytes_in_use, 0);
    /* Once jemalloc has torn down its own thread state it ignores our
     * arena; those requests are served by libc instead (and freed there). */
    ck_assert_uint_eq(snap.total.releases + snap.fallbacks, 3);
}
END_TEST

START_TEST(disable_passes_through)
{
    setenv("MEMPOOL_DISABLE", "1", 1);
    start();
    void *keep = mp_malloc(64);
    for (int i = 0; i < 10; i++) {
        void *p = mp_malloc(64);
        ck_assert_ptr_ne(p, keep);
        memset(p, 1, 64);
        ck_assert_uint_ge(mp_usable_size(p), 64);
        p = mp_realloc(p, 100000);
        ck_assert_uint_eq(((unsigned char *)p)[63], 1);
        mp_free(p);
    }
    mp_free(keep);
    mp_stats_snapshot(&snap);
    ck_assert_uint_eq(snap.total.requests, 0); /* nothing counted */
    ck_assert_uint_eq(snap.bypasses, 0);
    ck_assert_uint_eq(snap.fallbacks, 0);
}
END_TEST

START_TEST(host_off_counts_unpooled_calls)
{
    setenv("MEMPOOL_HOST", "0", 1);
    start();
    for (int i = 0; i < 10; i++) {
        void *p = mp_malloc(64);
        memset(p, 1, 64);
        mp_free(p);
    }
    mp_stats_snapshot(&snap);
    ck_assert_uint_eq(snap.total.hits, 0);
    ck_assert_uint_eq(snap.bypasses, 10);
    ck_assert_int_eq(snap.bypass_in_use, 0);
}
END_TEST

START_TEST(size_class_scheme_option)
{
    setenv("MEMPOOL_HOST_SIZE_CLASSES", "pow2", 1);
    start();
    void *p = mp_malloc(65);
    ck_assert_uint_eq(mp_usable_size(p), 128);
    mp_free(p);
}
END_TEST

START_TEST(inuse_peak_tracks_published_bytes)
{
    start();
    enum { N = 1000 };
    static void *p[N];
    malloc_then_free(p, N, 512);
    const mp_row_t *r = row_of(512);
    /* Exact to MP_PUBLISH_BYTES per thread and class. */
    ck_assert_int_ge(r->bytes_in_use_peak, (int64_t)N * 512 - MP_PUBLISH_BYTES);
    ck_assert_int_le(r->bytes_in_use_peak, (int64_t)N * 512);
    ck_assert_int_eq(r->bytes_reserved_peak, (int64_t)N * 512);
}
END_TEST

static Suite *host_pool_suite(void)
{
    Suite *s = suite_create("host_pool");
    TCase *tc = tcase_create("pool");
    tcase_add_test(tc, small_class_is_carved_then_gets_an_arena);
    tcase_add_test(tc, jemalloc_starts_at_first_bypass);
    tcase_add_test(tc, free_then_malloc_is_a_hit);
    tcase_add_test(tc, large_requests_bypass);
    tcase_add_test(tc, thread_cache_spills_to_shared_pool);
    tcase_add_test(tc, shared_limits_trim_to_jemalloc);
    tcase_add_test(tc, shared_pool_trims_its_oldest_blocks);
    tcase_add_test(tc, shared_bound_grows_when_trimmed_blocks_are_missed);
    tcase_add_test(tc, cache_limit_in_bytes);
    tcase_add_test(tc, trim_returns_cached_bytes);
    tcase_add_test(tc, thread_exit_returns_cache);
    tcase_add_test(tc, exited_threads_caches_are_reused_with_clean_counters);
    tcase_add_test(tc, frees_after_thread_cache_destroyed);
    tcase_add_test(tc, disable_passes_through);
    tcase_add_test(tc, host_off_counts_unpooled_calls);
    tcase_add_test(tc, size_class_scheme_option);
    tcase_add_test(tc, inuse_peak_tracks_published_bytes);
    suite_add_tcase(s, tc);
    tc = tcase_create("malloc_api");
    tcase_add_loop_test(tc, alignment_is_exact, 0, (int)(sizeof(aligns) / sizeof(aligns[0])));
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, realloc_keeps_contents);
    tcase_add_test(tc, realloc_in_place_within_class);
    tcase_add_test(tc, calloc_zeroes_reused_blocks);
    tcase_add_test(tc, foreign_pointers_go_to_libc);
    tcase_add_test(tc, large_calloc_touches_no_pages);
    tcase_add_test(tc, pooled_calloc_writes_only_reused_blocks);
    suite_add_tcase(s, tc);
    return s;
}

MP_CHECK_MAIN(host_pool_suite)
