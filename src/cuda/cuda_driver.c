/*
 * The real CUDA driver, reached the way cudart reaches it: dlopen
 * libcuda.so.1, dlsym cuGetProcAddress_v2, every entry point through it at
 * the version of the signature we call (as cudaTypedefs.h's PFN_*_vNNNN
 * name them; cuCtxRecordEvent only from 12.5).
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

/* An entry point of the real driver with the signature it had at version
 * abi (NULL if it has none).  Never at the driver's own version: CUDA 13.0
 * gave "cuCtxGetDevice" and "cuCtxSynchronize" a context argument, which
 * a call through the old prototype leaves as register garbage. */
static void *get(const char *name, int abi)
{
    void *fn = NULL;
    int status = 0;
    int v = abi < mp_cuda.version ? abi : mp_cuda.version;
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
        int abi; /* the version whose signature mp_cuda_t declares */
        bool optional;
    } table[] = {
#define E(field, name, abi) {name, offsetof(mp_cuda_t, field), abi, false}
#define OPT(field, name, abi) {name, offsetof(mp_cuda_t, field), abi, true}
        E(init, "cuInit", 2000),
        E(mem_alloc, "cuMemAlloc", 3020),
        E(mem_free, "cuMemFree", 3020),
        E(event_create, "cuEventCreate", 2000),
        E(event_record, "cuEventRecord", 2000),
        E(event_query, "cuEventQuery", 2000),
        E(event_sync, "cuEventSynchronize", 2000),
        E(event_destroy, "cuEventDestroy", 4000),
        E(ctx_get_device, "cuCtxGetDevice", 2000),
        E(ctx_get_current, "cuCtxGetCurrent", 4000),
        E(ctx_push, "cuCtxPushCurrent", 4000),
        E(ctx_pop, "cuCtxPopCurrent", 4000),
        E(host_alloc, "cuMemHostAlloc", 2020),
        E(host_free, "cuMemFreeHost", 2000),
        E(total_mem, "cuDeviceTotalMem", 3020),
        OPT(device_count, "cuDeviceGetCount", 2000),
        OPT(device_get, "cuDeviceGet", 2000),
        OPT(primary_retain, "cuDevicePrimaryCtxRetain", 7000),
        OPT(primary_release, "cuDevicePrimaryCtxRelease", 11000),
        OPT(mem_get_info, "cuMemGetInfo", 3020),
        OPT(memset_async, "cuMemsetD8Async", 3020),
        OPT(host_register, "cuMemHostRegister", 6050),
        OPT(host_unregister, "cuMemHostUnregister", 4000),
        OPT(primary_get_state, "cuDevicePrimaryCtxGetState", 7000),
        OPT(ctx_synchronize, "cuCtxSynchronize", 2000),
        OPT(ctx_record_event, "cuCtxRecordEvent", 12050),
#undef E
#undef OPT
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        void *fn = get(table[i].name, table[i].abi);
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
