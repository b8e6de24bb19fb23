/*
 * The real CUDA driver, reached the way cudart reaches it: dlopen
 * libcuda.so.1, dlsym cuGetProcAddress_v2, every entry point through it at
 * the driver's own version (cuCtxRecordEvent only from 12.5).
 * Loaded on first use only, so programs without CUDA never load it.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <string.h>

#include "cuda_driver.h"
#include "cuda_hooks.h"

MP_STARTUP_DATA mp_cuda_t mp_cuda;
static pthread_once_t once = PTHREAD_ONCE_INIT;

typedef mp_cu_result (*get_proc_fn)(const char *, void **, int, uint64_t, int *);
typedef mp_cu_result (*get_proc_v1_fn)(const char *, void **, int, uint64_t);

static void *real_get_proc;
static bool real_get_proc_v2;

/* An entry point of the real driver, as the driver's own version has it
 * (NULL if it has none). */
static void *get(const char *name)
{
    void *fn = NULL;
    int status = 0;
    int v = mp_cuda.version;
    mp_cu_result r;
    if (real_get_proc_v2) {
        get_proc_fn f;
        memcpy(&f, &real_get_proc, sizeof(f));
        r = f(name, &fn, v, 0, &status);
    } else {
        get_proc_v1_fn f;
        memcpy(&f, &real_get_proc, sizeof(f));
        r = f(name, &fn, v, 0);
    }
    return r == MP_CUDA_SUCCESS ? fn : NULL;
}

static void load(void)
{
    /* glibc's dlopen and dlsym: the shim's own would hand back its
     * wrappers.  The program's libcuda.so.1 if it has one loaded. */
    void *h = mp_libcuda_handle();
    if (h == NULL)
        h = mp_real_dlopen()("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    mp_dlsym_fn sym = mp_real_dlsym();
    void *gp = h ? sym(h, "cuGetProcAddress_v2") : NULL;
    real_get_proc_v2 = gp != NULL;
    if (gp == NULL && h != NULL)
        gp = sym(h, "cuGetProcAddress"); /* CUDA 11.3 .. 11.8 */
    void *dv = h ? sym(h, "cuDriverGetVersion") : NULL;
    mp_cu_result (*driver_version)(int *);
    memcpy(&driver_version, &dv, sizeof(dv));
    if (gp == NULL || dv == NULL || driver_version(&mp_cuda.version) != MP_CUDA_SUCCESS) {
        mp_log(MP_LOG_INFO, "libcuda.so.1 not usable: %s", h ? "no cuGetProcAddress" : dlerror());
        return;
    }
    real_get_proc = gp;
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
        OPT(primary_release, "cuDevicePrimaryCtxRelease"),
        OPT(mem_get_info, "cuMemGetInfo"),
        OPT(memset_async, "cuMemsetD8Async"),
        OPT(host_register, "cuMemHostRegister"),
        OPT(host_unregister, "cuMemHostUnregister"),
        OPT(primary_get_state, "cuDevicePrimaryCtxGetState"),
        OPT(ctx_synchronize, "cuCtxSynchronize"),
        OPT(ctx_record_event, "cuCtxRecordEvent"),
#undef E
#undef OPT
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        void *fn = get(table[i].name);
        if (fn == NULL) {
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
