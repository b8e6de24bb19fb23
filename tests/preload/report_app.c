/*
 * A program for the report tests (run under the preload):
 *   report_app sites   misses from two known functions, 300 and 100 blocks
 *   report_app rate N  N malloc/free pairs of 4096 bytes (every one a miss
 *                      when the caches are set to 0)
 *   report_app churn S allocate and check contents in 4 threads for S
 *                      seconds; counts the SIGUSR1s its own handler sees
 * Built with -rdynamic so that dladdr names its functions.
 */
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))

static void *volatile keep[400];

void report_app_alpha(void);
void report_app_beta(void);

NOINLINE void report_app_alpha(void)
{
    for (int i = 0; i < 300; i++)
        keep[i] = malloc(4000);
}

NOINLINE void report_app_beta(void)
{
    for (int i = 0; i < 100; i++)
        keep[300 + i] = malloc(9000);
}

static volatile sig_atomic_t usr1_seen;
static void on_usr1(int sig)
{
    (void)sig;
    usr1_seen++;
}

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double churn_until;

static void *churn(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    unsigned char *slot[64] = {0};
    size_t len[64] = {0};
    long bad = 0;
    while (now() < churn_until) {
        for (int k = 0; k < 1000; k++) {
            unsigned i = (unsigned)rand_r(&seed) % 64;
            if (slot[i]) {
                for (size_t j = 0; j < len[i]; j += 97)
                    bad += slot[i][j] != (unsigned char)(i + len[i]);
                free(slot[i]);
            }
            len[i] = 16 + (size_t)rand_r(&seed) % 20000;
            slot[i] = malloc(len[i]);
            memset(slot[i], (int)(i + len[i]) & 0xff, len[i]);
        }
    }
    for (int i = 0; i < 64; i++)
        free(slot[i]);
    return (void *)bad;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "sites";
    if (strcmp(mode, "sites") == 0) {
        report_app_alpha();
        report_app_beta();
        for (int i = 0; i < 400; i++)
            free(keep[i]);
        puts("ok");
        return 0;
    }
    if (strcmp(mode, "rate") == 0) {
        long n = argc > 2 ? atol(argv[2]) : 100000;
        for (long i = 0; i < n; i++) {
            keep[0] = malloc(4096);
            free(keep[0]);
        }
        puts("ok");
        return 0;
    }
    if (strcmp(mode, "churn") == 0) {
        signal(SIGUSR1, on_usr1);
        churn_until = now() + (argc > 2 ? atof(argv[2]) : 1.0);
        pthread_t t[4];
        for (int i = 0; i < 4; i++)
            pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(i + 1));
        long bad = 0;
        for (int i = 0; i < 4; i++) {
            void *r;
            pthread_join(t[i], &r);
            bad += (long)r;
        }
        printf("%s usr1=%d\n", bad ? "CORRUPT" : "ok", (int)usr1_seen);
        return bad != 0;
    }
    if (strcmp(mode, "fork-exit") == 0) {
        /* 3 fork() children leave with _exit (a file each), a vfork()
         * child with _exit (no file: it shares our memory), and a fork()
         * child with a second thread leaves with _exit (no file). */
        for (int i = 0; i < 3; i++)
            if (fork() == 0) {
                for (int k = 0; k < 1000; k++)
                    free(malloc(64 + (size_t)k));
                _exit(0);
            }
        pid_t v = vfork();
        if (v == 0)
            _exit(0);
        if (fork() == 0) {
            pthread_t t;
            churn_until = now() + 0.2;
            pthread_create(&t, NULL, churn, (void *)1);
            usleep(1000);
            _exit(0);
        }
        while (wait(NULL) > 0)
            ;
        puts("ok");
        return 0;
    }
    if (strcmp(mode, "exit-busy") == 0) {
        /* exit() while 4 threads are still allocating: the stats are
         * written and the process ends, with no crash and no hang. */
        churn_until = now() + 3600;
        pthread_t t[4];
        for (int i = 0; i < 4; i++)
            pthread_create(&t[i], NULL, churn, (void *)(uintptr_t)(i + 1));
        usleep(argc > 2 ? (useconds_t)atoi(argv[2]) : 50000);
        puts("exiting");
        fflush(stdout);
        exit(0);
    }
    return 2;
}
