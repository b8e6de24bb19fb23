/*
 * mempool — public API.
 *
 * Link with `pkg-config --libs mempool`.  When libmempool_preload.so is
 * preloaded as well, its definitions of these functions take precedence
 * (it is first in the symbol search order), so a call always reaches the
 * pools that actually serve the process.
 *
 * Errors: functions returning int return 0 on success and a negative errno
 * value on failure; nothing here sets errno.
 * Thread safety: every function may be called from any thread at any time.
 */
#ifndef MEMPOOL_H
#define MEMPOOL_H

#ifdef __cplusplus
extern "C" {
#endif

#define MEMPOOL_VERSION_MAJOR 0
#define MEMPOOL_VERSION_MINOR 1
#define MEMPOOL_VERSION_PATCH 0

/*
 * mempool_version - the library's version as "MAJOR.MINOR.PATCH".
 * Returns a static string; never fails.
 */
const char *mempool_version(void);

/*
 * mempool_stats_dump - write the stats file now, in the same JSON schema as
 * the exit-time report (docs/stats.md).
 * @path: file to write, or NULL for the MEMPOOL_STATS_FILE template
 *        (%p pid, %h host, %e executable).  Written atomically (temporary
 *        file + rename in the same directory), mode 0600.
 * Returns 0, or -EINVAL (path too long), -EIO (the file could not be
 * written; one "mempool:" line on stderr says why).
 */
int mempool_stats_dump(const char *path);

/*
 * mempool_trim - return every block cached by the host pools (shared pools
 * and the calling thread's cache) to jemalloc.  Other threads' caches are
 * left alone (they are bounded by MEMPOOL_HOST_TCACHE_LIMIT).
 * Returns the number of bytes released (>= 0).
 */
long long mempool_trim(void);

#ifdef __cplusplus
}
#endif

#endif /* MEMPOOL_H */
