/*
 * Randomised multi-threaded stress of the core (also built with ASan+UBSan
 * and with TSan): threads allocate, fill, check and free blocks of mixed
 * sizes and alignments, pass blocks to each other (cross-thread frees),
 * exit while others still hold their blocks, and fork while the pools are
 * busy.  A block's contents encode its address and size, so any block
 * handed out twice or moved is caught.  Seeded: MEMPOOL_TEST_SEED, printed
 * on failure; MEMPOOL_STRESS_OPS scales the run.
 */
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check_main.h"
#include "host_inline.h"
#include "host_stats.h"

#define SLOTS 512
#define EXCHANGE 256
#define NTHREADS 6

static unsigned long seed;
static long ops_per_thread;
static _Atomic(void *) exchange[EXCHANGE];
static _Atomic long corrupt;
static _Atomic int stop_flag;

static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

typedef struct { size_t size; } hdr_t;

static unsigned char pattern(const void *p, size_t i) { return (unsigned char)(((uintptr_t)p >> 4) * 131 + i); }

static void fill(unsigned char *p, size_t size)
{
    memcpy(p, &size, sizeof(size));
    size_t n = size < 256 ? size : 256;
    for (size_t i = sizeof(size); i < n; i++)
        p[i] = pattern(p, i);
    if (size >= 264)
        for (size_t i = size - 8; i < size; i++)
            p[i] = pattern(p, i);
}

static void check_and_free(unsigned char *p)
{
    size_t size;
    memcpy(&size, p, sizeof(size));
    bool ok = mp_usable_size(p) >= size;
    size_t n = size < 256 ? size : 256;
    for (size_t i = sizeof(size); i < n && ok; i++)
        ok = p[i] == pattern(p, i);
    if (size >= 264)
        for (size_t i = size - 8; i < size && ok; i++)
            ok = p[i] == pattern(p, i);
    if (!ok)
        atomic_fetch_add(&corrupt, 1);
    mp_free(p);
}

static unsigned char *alloc_random(uint64_t *rs)
{
    uint64_t r = next_rand(rs);
    size_t size;
    switch (r % 20) {
    case 0: size = 65536 + r % 200000; break;     /* bypass */
    case 1: case 2: case 3: size = 4096 + r % 60000; break;
    default: size = 8 + (r >> 8) % 600; break;
    }
    unsigned char *p;
    if ((r >> 40) % 10 == 0) {
        size_t al = (size_t)16 << ((r >> 44) % 9); /* 16 .. 4096 */
        void *q = NULL;
        if (mp_posix_memalign(&q, al, size) != 0)
            return NULL;
        if (((uintptr_t)q & (al - 1)) != 0)
            atomic_fetch_add(&corrupt, 1);
        p = q;
    } else if ((r >> 40) % 10 == 1) {
        p = mp_calloc(1, size);
        for (size_t i = 0; i < size && i < 64; i++)
            if (p[i] != 0)
                atomic_fetch_add(&corrupt, 1);
    } else {
        p = mp_malloc(size);
    }
    if (p)
        fill(p, size);
    return p;
}

static void *worker(void *arg)
{
    uint64_t rs = seed * 7919 + (uintptr_t)arg + 1;
    unsigned char *mine[SLOTS] = {NULL};
    for (long i = 0; i < ops_per_thread; i++) {
        uint64_t r = next_rand(&rs);
        unsigned k = (unsigned)(r % SLOTS);
        switch ((r >> 32) % 8) {
        case 0: { /* trade with another thread */
            unsigned x = (unsigned)((r >> 16) % EXCHANGE);
            void *got = atomic_exchange(&exchange[x], mine[k]);
            mine[k] = got;
            break;
        }
        case 1: /* realloc, contents must follow */
            if (mine[k]) {
                size_t size;
                memcpy(&size, mine[k], sizeof(size));
                size_t ns = 8 + (r >> 12) % (size < 2000 ? 4000 : 100000);
                unsigned char *q = mp_realloc(mine[k], ns);
                if (q) {
                    size_t keep = size < ns ? size : ns;
                    for (size_t j = sizeof(size); j < keep && j < 256; j++)
                        if (q[j] != pattern(mine[k], j) && q != mine[k])
                            atomic_fetch_add(&corrupt, 1);
                    fill(q, ns);
                    mine[k] = q;
                }
            }
            break;
        default:
            if (mine[k]) {
                check_and_free(mine[k]);
                mine[k] = NULL;
            } else {
                mine[k] = alloc_random(&rs);
            }
        }
    }
    /* Exit with half the blocks still in the exchange for others to free. */
    for (unsigned k = 0; k < SLOTS; k++)
        if (mine[k])
            check_and_free(mine[k]);
    return NULL;
}

static void setup(void)
{
    setenv("MEMPOOL_HOST_RESERVE", "64G", 0); /* a test setup may set less */
    setenv("MEMPOOL_HOST_TCACHE_BLOCKS", "32", 1); /* spill and refill often */
    const char *s = getenv("MEMPOOL_TEST_SEED");
    seed = s ? strtoul(s, NULL, 10) : (unsigned long)time(NULL);
    const char *o = getenv("MEMPOOL_STRESS_OPS");
    ops_per_thread = o ? atol(o) : 200000;
    /* Initialise here: a fork() racing the very first malloc is another
     * case (the child falls back to libc) with its own counters. */
    ck_assert_int_eq(mp_init(), MP_STATE_READY);
}

START_TEST(threads_cross_free_and_exit)
{
    setup();
    for (int round = 0; round < 3; round++) {
        pthread_t t[NTHREADS];
        for (uintptr_t i = 0; i < NTHREADS; i++)
            ck_assert_int_eq(pthread_create(&t[i], NULL, worker, (void *)(i + round * NTHREADS)), 0);
        for (int i = 0; i < NTHREADS; i++)
            pthread_join(t[i], NULL);
    }
    for (unsigned x = 0; x < EXCHANGE; x++) {
        void *p = atomic_exchange(&exchange[x], NULL);
        if (p)
            check_and_free(p);
    }
    ck_assert_msg(corrupt == 0, "%ld corrupted blocks (seed %lu)", (long)corrupt, seed);
    mp_snapshot_t *s = malloc(sizeof(*s));
    mp_stats_snapshot(s);
    /* Everything was freed: nothing may remain in use. */
    ck_assert_msg(s->total.bytes_in_use == 0, "%lld bytes still in use (seed %lu)",
                  (long long)s->total.bytes_in_use, seed);
    ck_assert_uint_eq(s->total.releases, s->total.requests);
    ck_assert_uint_gt(s->total.hits, 0);
    free(s);
}
END_TEST

static void *busy(void *arg)
{
    uint64_t rs = seed + (uintptr_t)arg;
    while (!atomic_load(&stop_flag)) {
        unsigned char *p = alloc_random(&rs);
        if (p)
            check_and_free(p);
    }
    return NULL;
}

START_TEST(fork_while_threads_allocate)
{
    setup();
    pthread_t t[3];
    for (uintptr_t i = 0; i < 3; i++)
        pthread_create(&t[i], NULL, busy, (void *)i);
    for (int k = 0; k < 20; k++) {
        pid_t pid = fork();
        ck_assert_int_ge(pid, 0);
        if (pid == 0) {
            alarm(20); /* a deadlock in the child fails the test */
            uint64_t rs = seed + 99;
            for (int i = 0; i < 20000; i++) {
                unsigned char *p = alloc_random(&rs);
                if (p)
                    check_and_free(p);
            }
            mp_snapshot_t s;
            mp_stats_snapshot(&s);
            /* The child's stats are its own: only this loop's requests. */
            _exit(corrupt == 0 && s.total.requests <= 20000 && s.total.requests > 0 ? 0 : 3);
        }
        int status = 0;
        ck_assert_int_eq(waitpid(pid, &status, 0), pid);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
                      "child %d: status %#x (seed %lu)", k, status, seed);
    }
    atomic_store(&stop_flag, 1);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    ck_assert_msg(corrupt == 0, "corruption (seed %lu)", seed);
}
END_TEST

static Suite *stress_suite(void)
{
    Suite *s = suite_create("stress");
    TCase *tc = tcase_create("threads");
    tcase_add_test(tc, threads_cross_free_and_exit);
    tcase_add_test(tc, fork_while_threads_allocate);
    tcase_set_timeout(tc, 600);
    suite_add_tcase(s, tc);
    return s;
}

MP_CHECK_MAIN(stress_suite)
