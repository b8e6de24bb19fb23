/*
 * Host allocator workloads for scripts/bench (not a test).  Uses plain
 * malloc/free, so it measures whatever allocator is in the process: glibc,
 * LD_PRELOAD=libjemalloc.so.2, or the mempool shim.  Prints one line:
 * "<workload> <seconds> <checksum> <peak RSS KiB>" (VmHWM: this process
 * only, unlike a parent's rusage, which inherits the forking process's peak).
 *
 *   churn     one thread, random frees/allocations over a live set
 *   mt-churn  the same in 4 threads
 *   prodcons  one thread allocates, another frees (cross-thread free)
 *   realloc   buffers grown a few bytes at a time with realloc
 *   pair      malloc(64) + free in a tight loop: the cost of one hit pair
 *   xfree64   64 threads in a ring, each freeing the batch the previous one
 *             allocated (cross-thread free at scale: for the RSS rows)
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static uint64_t next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static size_t random_size(uint64_t r)
{
    /* Mostly small objects, a tail up to 8 KiB: a typical C/C++/Python mix. */
    if (r % 100 < 85)
        return 16 + (r >> 8) % 240;
    if (r % 100 < 98)
        return 256 + (r >> 8) % 1800;
    return 2048 + (r >> 8) % 6144;
}

typedef struct {
    long ops;
    unsigned seed;
    uint64_t sum;
} churn_arg_t;

static void *churn(void *p)
{
    churn_arg_t *a = p;
    enum { LIVE = 20000 };
    char **slot = calloc(LIVE, sizeof(char *));
    uint64_t s = 88172645463325252ull ^ a->seed, sum = 0;
    for (long i = 0; i < a->ops; i++) {
        uint64_t r = next(&s);
        size_t k = (size_t)(r % LIVE);
        if (slot[k]) {
            sum += (unsigned char)slot[k][0];
            free(slot[k]);
            slot[k] = NULL;
        } else {
            size_t n = random_size(r >> 16);
            slot[k] = malloc(n);
            slot[k][0] = (char)n;
            slot[k][n - 1] = 1;
        }
    }
    for (size_t k = 0; k < LIVE; k++)
        free(slot[k]);
    free(slot);
    a->sum = sum;
    return NULL;
}

#define RING 4096
static _Atomic(char *) ring[RING];

static void *producer(void *p)
{
    long n = *(long *)p;
    uint64_t s = 12345;
    for (long i = 0; i < n; i++) {
        size_t sz = random_size(next(&s));
        char *b = malloc(sz);
        b[0] = (char)sz;
        _Atomic(char *) *slot = &ring[i % RING];
        char *expected = NULL;
        while (!atomic_compare_exchange_weak(slot, &expected, b))
            expected = NULL;
    }
    return NULL;
}

static uint64_t consume(long n)
{
    uint64_t sum = 0;
    for (long i = 0; i < n; i++) {
        char *b;
        while ((b = atomic_exchange(&ring[i % RING], NULL)) == NULL) {
        }
        sum += (unsigned char)b[0];
        free(b);
    }
    return sum;
}

static uint64_t grow(long rounds)
{
    uint64_t s = 777, sum = 0;
    for (long r = 0; r < rounds; r++) {
        size_t len = 0, target = 64 + next(&s) % 32768;
        char *buf = NULL;
        while (len < target) {
            size_t old = len;
            len += 1 + next(&s) % 48;
            buf = realloc(buf, len);
            memset(buf + old, (char)len, len - old);
        }
        sum += (unsigned char)buf[len / 2];
        free(buf);
    }
    return sum;
}

/* xfree64: thread i allocates a batch, hands it to thread i+1 through a
 * one-place mailbox and frees the batch thread i-1 handed it. */
enum { XF_THREADS = 64, XF_BATCH = 4000 };
typedef struct {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    char **batch; /* NULL: empty */
} mailbox_t;
static mailbox_t mailbox[XF_THREADS];
static long xf_rounds;

static void mailbox_put(mailbox_t *m, char **b)
{
    pthread_mutex_lock(&m->lock);
    while (m->batch != NULL)
        pthread_cond_wait(&m->cond, &m->lock);
    m->batch = b;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
}

static char **mailbox_take(mailbox_t *m)
{
    pthread_mutex_lock(&m->lock);
    while (m->batch == NULL)
        pthread_cond_wait(&m->cond, &m->lock);
    char **b = m->batch;
    m->batch = NULL;
    pthread_cond_broadcast(&m->cond);
    pthread_mutex_unlock(&m->lock);
    return b;
}

static void *xfree_thread(void *p)
{
    long i = (long)(intptr_t)p;
    uint64_t s = 0x9E3779B97F4A7C15ull * (uint64_t)(i + 1), sum = 0;
    for (long r = 0; r < xf_rounds; r++) {
        char **b = malloc(XF_BATCH * sizeof(char *));
        for (int k = 0; k < XF_BATCH; k++) {
            size_t sz = random_size(next(&s));
            b[k] = malloc(sz);
            b[k][0] = (char)sz;
        }
        mailbox_put(&mailbox[(i + 1) % XF_THREADS], b);
        char **got = mailbox_take(&mailbox[i]);
        for (int k = 0; k < XF_BATCH; k++) {
            sum += (unsigned char)got[k][0];
            free(got[k]);
        }
        free(got);
    }
    return (void *)(uintptr_t)sum;
}

static uint64_t xfree64(long rounds)
{
    pthread_t t[XF_THREADS];
    uint64_t sum = 0;
    xf_rounds = rounds;
    for (int i = 0; i < XF_THREADS; i++) {
        pthread_mutex_init(&mailbox[i].lock, NULL);
        pthread_cond_init(&mailbox[i].cond, NULL);
    }
    for (long i = 0; i < XF_THREADS; i++)
        pthread_create(&t[i], NULL, xfree_thread, (void *)(intptr_t)i);
    for (int i = 0; i < XF_THREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        sum += (uint64_t)(uintptr_t)r;
    }
    return sum;
}

int main(int argc, char **argv)
{
    const char *w = argc > 1 ? argv[1] : "churn";
    double scale = argc > 2 ? atof(argv[2]) : 1.0;
    uint64_t sum = 0;
    double t0 = now();
    if (strcmp(w, "churn") == 0) {
        churn_arg_t a = {(long)(20e6 * scale), 1, 0};
        churn(&a);
        sum = a.sum;
    } else if (strcmp(w, "mt-churn") == 0) {
        enum { T = 4 };
        pthread_t t[T];
        churn_arg_t a[T];
        for (int i = 0; i < T; i++) {
            a[i] = (churn_arg_t){(long)(5e6 * scale), (unsigned)i + 1, 0};
            pthread_create(&t[i], NULL, churn, &a[i]);
        }
        for (int i = 0; i < T; i++) {
            pthread_join(t[i], NULL);
            sum += a[i].sum;
        }
    } else if (strcmp(w, "prodcons") == 0) {
        long n = (long)(5e6 * scale);
        pthread_t t;
        pthread_create(&t, NULL, producer, &n);
        sum = consume(n);
        pthread_join(t, NULL);
    } else if (strcmp(w, "pair") == 0) {
        long n = (long)(50e6 * scale);
        for (long i = 0; i < n; i++) {
            char *volatile p = malloc(64);
            p[0] = (char)i;
            sum += (unsigned char)p[0];
            free(p);
        }
    } else if (strcmp(w, "xfree64") == 0) {
        sum = xfree64((long)(40 * scale));
    } else if (strcmp(w, "realloc") == 0) {
        sum = grow((long)(20000 * scale));
    } else {
        fprintf(stderr, "unknown workload %s\n", w);
        return 2;
    }
    double secs = now() - t0;
    long hwm = -1;
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmHWM: %ld kB", &hwm) == 1)
            break;
    if (f)
        fclose(f);
    printf("%s %.6f %llu %ld\n", w, secs, (unsigned long long)sum, hwm);
    return 0;
}
