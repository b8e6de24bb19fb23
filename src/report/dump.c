/*
 * Stats on demand: MEMPOOL_DUMP_SIGNAL and MEMPOOL_DUMP_INTERVAL.  The
 * signal handler only posts a semaphore (async-signal-safe); a helper
 * thread, with every signal blocked, writes the file.  Allocation never
 * waits for a dump: the writer reads counters like the exit report does.
 * The exit report takes the same write lock, so it is always the last file
 * written (stats_file.c).
 */
#include <errno.h>
#include <string.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <time.h>

#include "report.h"

static sem_t wake;
MP_STARTUP_DATA static bool started;
static _Atomic bool by_signal;
static struct sigaction prev; /* the program's handler, chained to */
MP_STARTUP_DATA static int signo;
static _Atomic bool hooked; /* our handler is in place */

static void on_signal(int sig, siginfo_t *si, void *uc)
{
    int saved = errno;
    atomic_store(&by_signal, true);
    sem_post(&wake);
    errno = saved;
    /* The program's own handler still runs. */
    if ((prev.sa_flags & SA_SIGINFO) && prev.sa_sigaction != NULL)
        prev.sa_sigaction(sig, si, uc);
    else if (!(prev.sa_flags & SA_SIGINFO) && prev.sa_handler != SIG_DFL && prev.sa_handler != SIG_IGN)
        prev.sa_handler(sig);
}

static void *dump_thread(void *arg)
{
    (void)arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    uint64_t every = mp_opt(MP_OPT_DUMP_INTERVAL);
    struct timespec due;
    clock_gettime(CLOCK_MONOTONIC, &due);
    for (;;) {
        int r;
        if (every) {
            due.tv_sec += (time_t)every;
            while ((r = sem_clockwait(&wake, CLOCK_MONOTONIC, &due)) != 0 && errno == EINTR)
                ;
        } else {
            while ((r = sem_wait(&wake)) != 0 && errno == EINTR)
                ;
        }
        bool sig = atomic_exchange(&by_signal, false);
        if (r == 0 && !sig)
            continue; /* a stale post */
        if (!mp_stats_write_dump(sig ? MP_DUMP_SIGNAL : MP_DUMP_INTERVAL))
            continue; /* warned; the next dump tries again */
        if (every && sig == false) {
            struct timespec now; /* a slow write must not make dumps pile up */
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (now.tv_sec > due.tv_sec)
                due = now;
        }
    }
    return NULL;
}

static void start_thread(void)
{
    pthread_t t;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 64 << 10); /* the writer maps its big buffers */
    int err = pthread_create(&t, &a, dump_thread, NULL);
    pthread_attr_destroy(&a);
    if (err != 0) {
        mp_log(MP_LOG_WARN, "no stats dumps: cannot start the dump thread (error %d)", err);
        return;
    }
    pthread_setname_np(t, "mempool-dump");
    started = true;
}

void mp_dump_start(void)
{
    static const int sigs[] = {0, SIGUSR1, SIGUSR2};
    if (started || atomic_load(&mp_state) != MP_STATE_READY)
        return;
    signo = sigs[mp_opt(MP_OPT_DUMP_SIGNAL)];
    if (signo == 0 && mp_opt(MP_OPT_DUMP_INTERVAL) == 0)
        return;
    sem_init(&wake, 0, 0);
    start_thread();
    if (started && signo != 0) {
        struct sigaction sa = {0};
        sa.sa_sigaction = on_signal;
        sa.sa_flags = SA_SIGINFO | SA_RESTART;
        sigfillset(&sa.sa_mask);
        if (mp_real_sigaction(signo, &sa, &prev) != 0)
            mp_log(MP_LOG_WARN, "MEMPOOL_DUMP_SIGNAL: cannot install the handler (%s)", strerror(errno));
        else
            atomic_store(&hooked, true);
    }
}

int mp_dump_sigaction(int sig, const struct sigaction *act, struct sigaction *old)
{
    if (!atomic_load(&hooked) || sig != signo)
        return 0;
    /* The signal stays blocked while prev changes under the handler. */
    sigset_t one, saved;
    sigemptyset(&one);
    sigaddset(&one, signo);
    pthread_sigmask(SIG_BLOCK, &one, &saved);
    if (old)
        *old = prev;
    if (act)
        prev = *act;
    pthread_sigmask(SIG_SETMASK, &saved, NULL);
    return 1;
}

/* The thread is gone in the child; the handler is still installed. */
void mp_dump_fork_child(void)
{
    if (!started)
        return;
    started = false;
    sem_destroy(&wake);
    sem_init(&wake, 0, 0);
    atomic_store(&by_signal, false);
    start_thread();
}
