/* mempool.h compiles on its own in C11 and links against libmempool.so. */
#include "mempool.h"

#include <stdio.h>
#include <string.h>

int main(void)
{
    const char *v = mempool_version();
    printf("%s\n", v);
    return strcmp(v, "0.2.0") == 0 && mempool_trim_all() >= 0 ? 0 : 1;
}
