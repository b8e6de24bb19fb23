/* The public functions of include/mempool.h. */
#include <errno.h>
#include <string.h>

#include "report.h"
#include "mempool.h"

#define MP_STR2(x) #x
#define MP_STR(x) MP_STR2(x)

MP_PUBLIC const char *mempool_version(void)
{
    return MP_STR(MEMPOOL_VERSION_MAJOR) "." MP_STR(MEMPOOL_VERSION_MINOR) "." MP_STR(
        MEMPOOL_VERSION_PATCH);
}

MP_PUBLIC int mempool_stats_dump(const char *path)
{
    if (mp_init() != MP_STATE_READY)
        return -EIO;
    if (path != NULL && strlen(path) >= MP_PATH_MAX)
        return -EINVAL;
    char written[MP_PATH_MAX];
    return mp_stats_write_api(path, written, sizeof(written)) ? 0 : -EIO;
}
