/*
 * Start-up and exit cost: bench_spawn ROUNDS N PRELOAD CMD ARGS...  Each
 * round posix_spawns CMD N times in a row (waiting for each) and prints one
 * line, the median microseconds per exec of that round.  CMD gets the
 * caller's environment with LD_PRELOAD=PRELOAD ("-": none); this program
 * itself runs without it.  scripts/bench host runs it for every preload in
 * interleaved rounds.
 */
#include <string.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

extern char **environ;

static double now_us(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e6 + (double)t.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: bench_spawn ROUNDS N PRELOAD|- CMD ARGS...\n");
        return 2;
    }
    int rounds = atoi(argv[1]), n = atoi(argv[2]);
    if (rounds < 1 || n < 1)
        return 2;
    size_t ne = 0;
    while (environ[ne])
        ne++;
    double *t = malloc(sizeof(double) * (size_t)n);
    char **env = calloc(ne + 2, sizeof(char *));
    char *pre = malloc(strlen(argv[3]) + 12);
    if (t == NULL || env == NULL || pre == NULL)
        return 1;
    size_t k = 0;
    for (size_t i = 0; i < ne; i++)
        if (strncmp(environ[i], "LD_PRELOAD=", 11) != 0)
            env[k++] = environ[i];
    if (strcmp(argv[3], "-") != 0) {
        strcpy(pre, "LD_PRELOAD=");
        strcat(pre, argv[3]);
        env[k++] = pre;
    }
    for (int r = 0; r < rounds; r++) {
        for (int i = 0; i < n; i++) {
            double t0 = now_us();
            pid_t pid;
            if (posix_spawn(&pid, argv[4], NULL, NULL, argv + 4, env) != 0) {
                perror("bench_spawn: posix_spawn");
                return 1;
            }
            int st;
            if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
                fprintf(stderr, "bench_spawn: %s failed (%#x)\n", argv[4], st);
                return 1;
            }
            t[i] = now_us() - t0;
        }
        qsort(t, (size_t)n, sizeof(double), cmp);
        printf("%.1f\n", t[n / 2]);
    }
    free(t);
    free(env);
    free(pre);
    return 0;
}
