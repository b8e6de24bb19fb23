/*
 * Misuse on purpose, one kind per argument, for MEMPOOL_DEBUG's tests
 * (tests/preload/test_debug.c).  Each misuse sits in its own exported
 * function so the finding's call site has a name to check.  "clean" is a
 * correct workload whose checksum must not change under debug mode.
 */
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline, used))
#pragma GCC diagnostic ignored "-Wmissing-prototypes"
/* The bugs below are the point: keep the compiler from judging them. */
#pragma GCC diagnostic ignored "-Wpragmas"
#pragma GCC diagnostic ignored "-Wunknown-warning-option"
#pragma GCC diagnostic ignored "-Wuse-after-free"
#pragma GCC diagnostic ignored "-Wfree-nonheap-object"

static void *volatile keep; /* defeats malloc/free elision */

NOINLINE void debug_app_write_after_free(void)
{
    char *p = malloc(100);
    keep = p;
    free(p);
    ((volatile char *)keep)[10] = 'x'; /* the bug */
    keep = malloc(100);                /* reuses the block: found here */
    free(keep);
}

NOINLINE void debug_app_overflow(size_t n)
{
    char *p = malloc(n);
    keep = p;
    ((volatile char *)keep)[n] = 'x'; /* one past the end */
    free(p);                          /* found here */
}

NOINLINE void debug_app_double_free(void)
{
    void *p = malloc(100);
    keep = p;
    free(p);
    free(keep); /* found here */
}

NOINLINE void debug_app_interior_free(void)
{
    char *p = malloc(100);
    keep = p;
    free((char *)keep + 16); /* found here */
    free(p);
}

static uint64_t clean(void)
{
    uint64_t sum = 0;
    void *live[512] = {0};
    uint64_t x = 42;
    for (int i = 0; i < 200000; i++) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        unsigned k = (unsigned)(x % 512);
        if (live[k]) {
            unsigned char *q = live[k];
            sum += q[0] + q[malloc_usable_size(q) - 1];
            free(q);
            live[k] = NULL;
            continue;
        }
        size_t n = 1 + (size_t)(x >> 20) % (i % 97 == 0 ? 300000 : 2000);
        unsigned char *p;
        switch (i % 5) {
        case 0: p = calloc(1, n); break;
        case 1: p = aligned_alloc(64, (n + 63) & ~(size_t)63); break;
        case 2: p = realloc(malloc(n / 2 + 1), n); break;
        default: p = malloc(n); break;
        }
        if (p == NULL)
            return 0;
        size_t u = malloc_usable_size(p);
        if (u < n)
            return 1; /* usable size must cover the request */
        memset(p, (int)(k & 0xff), u); /* the whole usable size is the program's */
        live[k] = p;
    }
    for (unsigned k = 0; k < 512; k++)
        free(live[k]);
    return sum;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "uaf"))
            debug_app_write_after_free();
        else if (!strcmp(a, "overflow"))
            debug_app_overflow(100);
        else if (!strcmp(a, "overflow-large"))
            debug_app_overflow(300000);
        else if (!strcmp(a, "double"))
            debug_app_double_free();
        else if (!strcmp(a, "interior"))
            debug_app_interior_free();
        else if (!strcmp(a, "clean"))
            printf("clean %llu\n", (unsigned long long)clean());
        else
            return 2;
    }
    puts("done");
    return 0;
}
