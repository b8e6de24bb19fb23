/*
 * The real CUDA driver, reached the way cudart reaches it: dlopen
 * libcuda.so.1, dlsym cuGetProcAddress_v2, every entry point through it.
 * Loaded on first use only, so programs without CUDA never load it.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <string.h>

#include "cuda_driver.h"
#include "cuda_hooks.h"

mp_cuda_t mp_cuda;
static pthread_once_t once = PTHREAD_ONCE_INIT;

typedef mp_cu_result (*get_proc_fn)(const char *, void **, int, uint64_t, int *);

static void load(void)
{
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    /* glibc's dlsym: ours would hand back our own cuGetProcAddress. */
    void *gp = h ? mp_real_dlsym()(h, "cuGetProcAddress_v2") : NULL;
    if (gp == NULL) {
        mp_log(MP_LOG_INFO, "libcuda.so.1 not usable: %s", h ? "no cuGetProcAddress_v2" : dlerror());
        return;
    }
    get_proc_fn get;
    memcpy(&get, &gp, sizeof(gp));
    static const struct {
        const char *name;
        size_t offset;
        bool optional;
    } table[] = {
#define E(field, name) {name, offsetof(mp_cuda_t, field), false}
#define OPT(field, name) {name, offsetof(mp_cuda_t, field), true}
        E(init, "cuInit"),
        E(mem_alloc, "cuMemAlloc"),
        E(mem_free, "cuMemFree"),
        E(event_create, "cuEventCreate"),
        E(event_record, "cuEventRecord"),
        E(event_query, "cuEventQuery"),
        E(event_sync, "cuEventSynchronize"),
        E(event_destroy, "cuEventDestroy"),
        E(ctx_get_device, "cuCtxGetDevice"),
        E(ctx_get_current, "cuCtxGetCurrent"),
        E(ctx_push, "cuCtxPushCurrent"),
        E(ctx_pop, "cuCtxPopCurrent"),
        E(host_alloc, "cuMemHostAlloc"),
        E(host_free, "cuMemFreeHost"),
        E(total_mem, "cuDeviceTotalMem"),
        OPT(device_count, "cuDeviceGetCount"),
        OPT(device_get, "cuDeviceGet"),
        OPT(primary_retain, "cuDevicePrimaryCtxRetain"),
        OPT(mem_get_info, "cuMemGetInfo"),
        OPT(memset_async, "cuMemsetD8Async"),
        OPT(host_register, "cuMemHostRegister"),
        OPT(host_unregister, "cuMemHostUnregister"),
#undef E
#undef OPT
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        void *fn = NULL;
        int status = 0;
        if (get(table[i].name, &fn, 12000, 0, &status) != MP_CUDA_SUCCESS || fn == NULL) {
            if (table[i].optional)
                continue;
            mp_log(MP_LOG_WARN, "CUDA driver lacks %s; device pools are off", table[i].name);
            return;
        }
        memcpy((char *)&mp_cuda + table[i].offset, &fn, sizeof(fn));
    }
    mp_cuda.loaded = mp_cuda.init(0) == MP_CUDA_SUCCESS;
}

bool mp_cuda_load(void)
{
    pthread_once(&once, load);
    return mp_cuda.loaded;
}
