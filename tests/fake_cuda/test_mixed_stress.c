/*
 * Randomised stress of host, pinned and device pools together, on the fake
 * CUDA driver, with failures injected: jemalloc returning NULL, cuMemAlloc
 * and cuMemHostAlloc failing, cuEventRecord failing.  Threads allocate,
 * fill, check and free blocks of all three kinds, hand them to each other
 * through an exchange (cross-thread frees), and exit in rounds while others
 * still hold their blocks; a fork happens while they run.  Every block's
 * bytes encode its address, size and kind, so a block handed out twice,
 * moved or overwritten is caught; every failure must come back as an error
 * code (never as a bad pointer), and the books balance at the end.
 * Seeded: MEMPOOL_TEST_SEED (printed on failure); MEMPOOL_STRESS_OPS scales.
 */
#include <cuda.h>
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check_main.h"
#include "device_pool.h"
#include "fake_cuda/fake_cuda.h"
#include "host_inline.h"
#include "host_stats.h"

#define NTHREADS 6
#define ROUNDS 3
#define SLOTS 64
#define EXCHANGE 128

enum { HOST, DEVICE, PINNED };

typedef struct block {
    unsigned char *p;
    size_t size;
    int kind;
} block_t;

static unsigned long seed;
static long ops;
static _Atomic long corrupt, bad_errors, allocs[3], failures[3];
static _Atomic int stop_flag;
static pthread_mutex_t xlock = PTHREAD_MUTEX_INITIALIZER;
static block_t exchange[EXCHANGE];
static CUcontext ctx;

static struct {
    CUresult (*set_current)(CUcontext);
    void (*counters)(fake_cuda_counters_t *);
    void (*faults)(unsigned, unsigned, uint64_t);
} fk;

static uint64_t next_rand(uint64_t *s)
{
    *s ^= *s << 13, *s ^= *s >> 7, *s ^= *s << 17;
    return *s;
}

static unsigned char pattern(const block_t *b, size_t i)
{
    return (unsigned char)(((uintptr_t)b->p >> 4) ^ b->size ^ (size_t)b->kind * 77 ^ i * 31);
}

/* The first and last 64 bytes and every 509th: enough to see a block
 * shared or moved, cheap for 300 KiB ones. */
#define EACH_CHECKED(b, i) \
    for (size_t i = 0; i < (b)->size; i = (i < 64 || i + 64 >= (b)->size) ? i + 1 : i + 509)

static void fill(const block_t *b)
{
    EACH_CHECKED(b, i)
    b->p[i] = pattern(b, i);
}

static void check_and_free(block_t *b)
{
    EACH_CHECKED(b, i)
    if (b->p[i] != pattern(b, i)) {
        atomic_fetch_add(&corrupt, 1);
        break;
    }
    int r = 1;
    if (b->kind == HOST)
        mp_free(b->p);
    else if (b->kind == DEVICE)
        r = mp_device_free((CUdeviceptr)(uintptr_t)b->p);
    else
        r = mp_pinned_free(b->p);
    if (r != 1)
        atomic_fetch_add(&bad_errors, 1); /* ours, and freed once: must be taken */
    b->p = NULL;
}

static void alloc_random(uint64_t *rs, block_t *b)
{
    uint64_t r = next_rand(rs);
    b->kind = r % 10 < 6 ? HOST : r % 10 < 8 ? DEVICE : PINNED;
    size_t max = b->kind == HOST ? (r % 16 ? 4096 : 100000) : b->kind == DEVICE ? 300000 : 70000;
    b->size = 1 + (size_t)(r >> 16) % max;
    b->p = NULL;
    int rc = CUDA_SUCCESS; /* mp_cu_result and CUresult: one set of values, two enum types */
    if (b->kind == HOST) {
        b->p = mp_malloc(b->size); /* jemalloc failing: libc serves it */
        if (b->p == NULL)
            atomic_fetch_add(&bad_errors, 1);
    } else if (b->kind == DEVICE) {
        CUdeviceptr d = 0;
        rc = mp_device_alloc(&d, b->size);
        b->p = (unsigned char *)(uintptr_t)d;
    } else {
        void *h = NULL;
        rc = mp_pinned_alloc(&h, b->size, (unsigned)(r >> 40) % 2 ? CU_MEMHOSTALLOC_PORTABLE : 0);
        b->p = h;
    }
    if (rc != CUDA_SUCCESS) { /* an injected failure: an error, never a pointer */
        if (rc != CUDA_ERROR_OUT_OF_MEMORY || b->p != NULL)
            atomic_fetch_add(&bad_errors, 1);
        atomic_fetch_add(&failures[b->kind], 1);
        b->p = NULL;
        return;
    }
    if (b->p == NULL)
        return;
    atomic_fetch_add(&allocs[b->kind], 1);
    fill(b);
}

static void *worker(void *arg)
{
    uint64_t rs = seed * 7919 + (uintptr_t)arg + 1;
    fk.set_current(ctx);
    block_t mine[SLOTS] = {{0}};
    for (long i = 0; i < ops; i++) {
        uint64_t r = next_rand(&rs);
        block_t *b = &mine[r % SLOTS];
        if ((r >> 32) % 5 == 0) { /* trade with another thread */
            block_t *x = &exchange[(r >> 40) % EXCHANGE];
            pthread_mutex_lock(&xlock);
            block_t t = *x;
            *x = *b;
            *b = t;
            pthread_mutex_unlock(&xlock);
        } else if (b->p) {
            check_and_free(b);
        } else {
            alloc_random(&rs, b);
        }
    }
    for (unsigned k = 0; k < SLOTS; k++) /* exit; the exchange keeps the rest */
        if (mine[k].p)
            check_and_free(&mine[k]);
    return NULL;
}

static void start(void)
{
    setenv("MEMPOOL_HOST_RESERVE", "64G", 0);
    setenv("MEMPOOL_HOST_TCACHE_BLOCKS", "16", 1); /* spill and refill often */
    setenv("MEMPOOL_HOST_CARVE_LIMIT", "64K", 1);  /* classes reach jemalloc (and its faults) */
    setenv("MEMPOOL_DEVICE_CACHE_LIMIT", "8M", 1); /* trims to the driver too */
    const char *s = getenv("MEMPOOL_TEST_SEED");
    seed = s ? strtoul(s, NULL, 10) : (unsigned long)time(NULL);
    const char *o = getenv("MEMPOOL_STRESS_OPS");
    ops = o ? atol(o) : 20000;
    ck_assert_int_eq(mp_init(), MP_STATE_READY);
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_GLOBAL);
    ck_assert_ptr_nonnull(h);
    CUresult (*init)(unsigned);
    CUresult (*retain)(CUcontext *, CUdevice);
    *(void **)&init = dlsym(h, "cuInit");
    *(void **)&retain = dlsym(h, "cuDevicePrimaryCtxRetain");
    *(void **)&fk.set_current = dlsym(h, "cuCtxSetCurrent");
    *(void **)&fk.counters = dlsym(h, "fakecuCounters");
    *(void **)&fk.faults = dlsym(h, "fakecuSetFaults");
    ck_assert_ptr_nonnull(fk.faults);
    init(0);
    ck_assert_int_eq(retain(&ctx, 0), CUDA_SUCCESS);
    fk.set_current(ctx);
    /* Failures in 1000: jemalloc 10, cuMemAlloc/cuMemHostAlloc 20, cuEventRecord 50. */
    mp_fault_je_seed(seed);
    atomic_store(&mp_fault_je_permille, 10);
    fk.faults(20, 50, seed);
}

static int64_t device_in_use(void)
{
    int64_t n = 0;
    mp_device_stats_t st;
    for (int slot = 0; slot < MP_DEV_MAX; slot++) {
        mp_device_stats(slot, &st);
        n += st.in_use;
    }
    for (unsigned f = 0; f < 8; f++) {
        mp_pinned_stats(f, &st);
        n += st.in_use;
    }
    return n;
}

START_TEST(mixed_kinds_with_faults)
{
    start();
    for (int round = 0; round < ROUNDS; round++) {
        pthread_t t[NTHREADS];
        for (uintptr_t i = 0; i < NTHREADS; i++)
            ck_assert_int_eq(pthread_create(&t[i], NULL, worker, (void *)(i + (uintptr_t)round * NTHREADS)), 0);
        for (int i = 0; i < NTHREADS; i++)
            pthread_join(t[i], NULL);
    }
    for (unsigned x = 0; x < EXCHANGE; x++)
        if (exchange[x].p)
            check_and_free(&exchange[x]);
    fake_cuda_counters_t c;
    fk.counters(&c);
    printf("mixed stress: seed %lu, %d threads x %d rounds x %ld ops; allocations host %ld, device %ld,"
           " pinned %ld; injected: jemalloc %llu, cuMemAlloc %llu, cuMemHostAlloc %llu,"
           " cuEventRecord %llu; out-of-memory returned: device %ld, pinned %ld\n",
           seed, NTHREADS, ROUNDS, ops, (long)allocs[HOST], (long)allocs[DEVICE], (long)allocs[PINNED],
           (unsigned long long)mp_fault_je_injected, (unsigned long long)c.fault_alloc,
           (unsigned long long)c.fault_host_alloc, (unsigned long long)c.fault_event_record,
           (long)failures[DEVICE], (long)failures[PINNED]);
    ck_assert_msg(corrupt == 0, "%ld corrupted blocks (seed %lu)", (long)corrupt, seed);
    ck_assert_msg(bad_errors == 0, "%ld wrong results (seed %lu)", (long)bad_errors, seed);
    /* Each kind of fault happened, and the driver never saw a bad free. */
    ck_assert_uint_gt(mp_fault_je_injected, 0);
    ck_assert_uint_gt(c.fault_alloc + c.fault_host_alloc, 0);
    ck_assert_uint_gt(c.fault_event_record, 0);
    ck_assert_uint_eq(c.invalid_free, 0);
    mp_snapshot_t *s = malloc(sizeof(*s));
    mp_stats_snapshot(s);
    ck_assert_msg(s->total.bytes_in_use == 0, "%lld host bytes still in use (seed %lu)",
                  (long long)s->total.bytes_in_use, seed);
    free(s);
    ck_assert_msg(device_in_use() == 0, "device/pinned bytes still in use (seed %lu)", seed);
}
END_TEST

static void *busy(void *arg)
{
    uint64_t rs = seed + (uintptr_t)arg;
    fk.set_current(ctx);
    while (!atomic_load(&stop_flag)) {
        block_t b;
        alloc_random(&rs, &b);
        if (b.p)
            check_and_free(&b);
    }
    return NULL;
}

/* fork() while threads use all three pools: the child, alone with the locks
 * as the handlers left them, allocates host memory, reads every pool's
 * stats (their locks) and exits in time.  It makes no CUDA call: a forked
 * child cannot use its parent's CUDA contexts (and the fake driver, like
 * the real one, is not fork-safe). */
START_TEST(fork_while_all_kinds_allocate)
{
    start();
    pthread_t t[3];
    for (uintptr_t i = 0; i < 3; i++)
        pthread_create(&t[i], NULL, busy, (void *)i);
    int hung = 0, failed = 0;
    for (int k = 0; k < 20; k++) {
        pid_t pid = fork();
        if (pid == 0) {
            signal(SIGALRM, SIG_DFL);
            alarm(10);
            uint64_t rs = seed + 99;
            for (int i = 0; i < 300; i++) {
                block_t b = {.kind = HOST, .size = 1 + next_rand(&rs) % 70000};
                b.p = mp_malloc(b.size);
                if (b.p == NULL)
                    _exit(2);
                fill(&b);
                check_and_free(&b);
            }
            (void)device_in_use();
            _exit(corrupt == 0 && bad_errors == 0 ? 0 : 1);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        hung += WIFSIGNALED(st);
        failed += WIFEXITED(st) && WEXITSTATUS(st) != 0;
        usleep(2000);
    }
    atomic_store(&stop_flag, 1);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    ck_assert_msg(hung == 0 && failed == 0, "children: %d hung, %d failed (seed %lu)", hung, failed, seed);
    ck_assert_msg(corrupt == 0 && bad_errors == 0, "parent: corruption (seed %lu)", seed);
}
END_TEST

static Suite *mixed_suite(void)
{
    Suite *s = suite_create("mixed");
    TCase *tc = tcase_create("mixed");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, mixed_kinds_with_faults);
    tcase_add_test(tc, fork_while_all_kinds_allocate);
    suite_add_tcase(s, tc);
    return s;
}

MP_CHECK_MAIN(mixed_suite)
