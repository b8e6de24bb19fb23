/*
 * report/: above api/ (and so above every pool).  Snapshots of the
 * counters (stats.c), the stats file and summary (stats_file.c, through
 * the emitter in emit.c to stats_json.c and stats_text.c), dumps on a
 * signal or an interval (dump.c) and the public stats entry points.
 */
#ifndef MEMPOOL_REPORT_H
#define MEMPOOL_REPORT_H

#include "api.h"

/* The stats file's schema version (docs/stats.md, docs/stats.schema.json).
 * scripts/mempool-report takes it from here (scripts/gen-report-consts.py):
 * keep it a plain number. */
#define MP_STATS_SCHEMA_VERSION 3


/* ---- stats.c / stats_file.c --------------------------------------------- */
void mp_stats_reset(void); /* after fork, in the child */
/* Bytes in use and reserved of every kind (host, device, pinned) into
 * v[MP_TL_VALUES]: the timeline's reader, handed to it by init.c. */
void mp_stats_totals(int64_t *v);
/* Write the stats file (and the summary) now; safe to call more than once. */
void mp_stats_write_exit(void);
/* The arguments glibc shows a constructor (argc, argv): the report reads
 * them in place at exit instead of /proc/self/cmdline. */
void mp_process_args(int argc, char **argv);
/* _exit()/_Exit(): the stats file of a fork() child that is alone in its
 * process (multiprocessing workers end this way); nothing otherwise. */
void mp_stats_write_at__exit(void);
/* Write the stats file now to path (NULL: the MEMPOOL_STATS_FILE template);
 * the path written goes to out.  Returns false (after one warning) on failure. */
bool mp_stats_write_now(const char *path, char *out, size_t cap);
/* Write the stats of this process as JSON or text to fd. */
void mp_stats_write_fd(int fd, int format);
/* ---- dump.c: stats written on a signal or at an interval --------------- */
/* Start the dump thread if MEMPOOL_DUMP_SIGNAL or MEMPOOL_DUMP_INTERVAL asks
 * (the preload's constructor: never from inside an allocation). */
void mp_dump_start(void);
void mp_dump_fork_child(void);
/* The program installs a handler for the dump signal: it is kept as the
 * handler ours chains to (ours stays in place).  1 if handled here, 0 if
 * the call is for the real sigaction. */
struct sigaction;
int mp_dump_sigaction(int sig, const struct sigaction *act, struct sigaction *old);
/* Why the stats are being written, for the file's "process" object. */
enum { MP_DUMP_EXIT, MP_DUMP_SIGNAL, MP_DUMP_INTERVAL, MP_DUMP_API };
/* Write the stats file as an interim dump (final: false). */
bool mp_stats_write_dump(int reason);
/* mempool_stats_dump: mp_stats_write_now, serialised with the dumps. */
bool mp_stats_write_api(const char *path, char *out, size_t cap);
void mp_stats_write_fork_child(void);

/* Setuid/setgid (AT_SECURE) processes write stats only into the directory
 * this root-owned file names (docs/security.md). */
#define MP_SETUID_CONF "/etc/mempool/setuid-stats-dir"
#ifdef MP_TEST_HOOKS /* the tests' builds of the core only */
extern int mp_stats_secure_mode;        /* tests: 0/1 instead of getauxval(AT_SECURE) */
extern const char *mp_setuid_conf_path; /* tests: another file than MP_SETUID_CONF */
#endif
/* Expand %p %h %e %% of a template into out; false if it does not fit. */
bool mp_stats_expand_path(const char *tmpl, char *out, size_t cap);

#endif /* MEMPOOL_REPORT_H */
