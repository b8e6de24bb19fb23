/* docs/api.md "Batch staging buffers": built against an installed tree
 * with nothing but `pkg-config --cflags --libs mempool` (tests/install/check.sh). */
#include <mempool.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    mempool_config_t cfg;
    mempool_config_init(&cfg, MEMPOOL_KIND_HOST);
    cfg.name = "staging";
    cfg.alignment = 64; /* AVX-512 loads */
    cfg.max_cached_blocks = 8;
    mempool_t *pool;
    int err = mempool_create(&cfg, &pool);
    if (err) {
        fprintf(stderr, "mempool_create: %s\n", mempool_strerror(err));
        return 1;
    }
    for (int batch = 0; batch < 100; batch++) {
        float *in = mempool_acquire(pool, 1 << 20);
        if (in == NULL)
            return 1;
        memset(in, 0, 1 << 20); /* ... fill and process the batch ... */
        mempool_release(pool, in);
    }
    mempool_stats_t st = {.struct_size = sizeof(st)};
    mempool_get_stats(pool, &st);
    printf("%s: %llu acquired, %llu hits, hit rate %.2f\n", st.name, (unsigned long long)st.acquired,
           (unsigned long long)st.hits, st.hit_rate);
    mempool_destroy(pool);
    return st.hits == 99 ? 0 : 1;
}
