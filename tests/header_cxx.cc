// mempool.h compiles on its own as C++17 and its types work from C++.
#include "mempool.h"

#include <cstring>

int main()
{
    mempool_config_t cfg;
    if (mempool_config_init(&cfg, MEMPOOL_KIND_HOST) != 0)
        return 1;
    cfg.size_classes = MEMPOOL_CLASSES_EXACT;
    cfg.flags = MEMPOOL_ZERO_ON_RELEASE;
    mempool_t *pool = nullptr;
    if (mempool_create(&cfg, &pool) != 0)
        return 2;
    void *p = mempool_acquire(pool, 100);
    mempool_stats_t st{};
    st.struct_size = sizeof(st);
    if (p == nullptr || mempool_release(pool, p) != 0 || mempool_get_stats(pool, &st) != 0 || st.released != 1)
        return 3;
    mempool_stream_t stream = nullptr; // cudaStream_t converts to this
    (void)stream;
    return mempool_destroy(pool) == 0 && std::strcmp(mempool_version(), "0.2.0") == 0 ? 0 : 4;
}
