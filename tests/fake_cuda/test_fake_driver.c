/* The fake driver's strict behaviour, called directly (linked against the
 * fake libcuda.so.1): contexts and their streams and events, the context
 * stack, primary-context references and resets, cuStreamDestroy with work
 * queued, cuCtxRecordEvent, address reuse, cuGetProcAddress versions and
 * flags, green-context streams, the call counters.  No timings are
 * asserted: work is given delays far longer than the checks between. */
#define __CUDA_API_VERSION_INTERNAL 1
#include <cuda.h>
#include <dlfcn.h>
#include <pthread.h>
#include <string.h>

#include "check_main.h"
#include "fake_cuda/fake_cuda.h"

static fake_cuda_counters_t counters(void)
{
    fake_cuda_counters_t c;
    fakecuCounters(&c);
    return c;
}

static CUcontext primary(int d)
{
    CUcontext c = NULL;
    ck_assert_int_eq(cuInit(0), CUDA_SUCCESS);
    ck_assert_int_eq(cuDevicePrimaryCtxRetain(&c, d), CUDA_SUCCESS);
    ck_assert_ptr_nonnull(c);
    return c;
}

START_TEST(stream_destroy_returns_at_once_and_work_still_runs)
{
    CUcontext c = primary(0);
    ck_assert_int_eq(cuCtxSetCurrent(c), CUDA_SUCCESS);
    CUdeviceptr p = 0;
    ck_assert_int_eq(cuMemAlloc_v2(&p, 4096), CUDA_SUCCESS);
    memset((void *)(uintptr_t)p, 0, 4096);
    CUstream s;
    ck_assert_int_eq(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING), CUDA_SUCCESS);
    ck_assert_int_eq(fakecuLaunchFill(s, p, 0x5a, 4096, 2000000), CUDA_SUCCESS); /* 2 s */
    ck_assert_int_eq(cuStreamDestroy_v2(s), CUDA_SUCCESS);
    ck_assert_uint_eq(((unsigned char *)(uintptr_t)p)[0], 0); /* did not wait */
    ck_assert_uint_eq(counters().stream_destroy, 1);
    ck_assert_int_eq(cuStreamQuery(s), CUDA_ERROR_INVALID_HANDLE);
    ck_assert_int_eq(cuStreamDestroy_v2(s), CUDA_ERROR_INVALID_HANDLE);
    /* the legacy stream (blocking: no) and a context event still wait for it */
    CUevent e;
    ck_assert_int_eq(cuEventCreate(&e, 0), CUDA_SUCCESS);
    ck_assert_int_eq(cuCtxRecordEvent(NULL, e), CUDA_SUCCESS);
    ck_assert_int_eq(cuEventQuery(e), CUDA_ERROR_NOT_READY);
    ck_assert_int_eq(cuCtxSynchronize(), CUDA_SUCCESS);
    ck_assert_uint_eq(((unsigned char *)(uintptr_t)p)[4095], 0x5a);
    ck_assert_int_eq(cuEventQuery(e), CUDA_SUCCESS);
    ck_assert_uint_eq(counters().ctx_record_event, 1);
}
END_TEST

START_TEST(events_belong_to_their_context)
{
    CUcontext c0 = primary(0), c1 = primary(1);
    ck_assert_int_eq(cuCtxSetCurrent(c0), CUDA_SUCCESS);
    CUevent e0;
    CUstream s0;
    ck_assert_int_eq(cuEventCreate(&e0, 0), CUDA_SUCCESS);
    ck_assert_int_eq(cuStreamCreate(&s0, CU_STREAM_NON_BLOCKING), CUDA_SUCCESS);
    ck_assert_int_eq(cuCtxSetCurrent(c1), CUDA_SUCCESS);
    CUstream s1;
    ck_assert_int_eq(cuStreamCreate(&s1, CU_STREAM_NON_BLOCKING), CUDA_SUCCESS);
    uint64_t before = counters().event_record;
    ck_assert_int_eq(cuEventRecord(e0, s1), CUDA_ERROR_INVALID_HANDLE);
    ck_assert_int_eq(cuEventRecord(e0, NULL), CUDA_ERROR_INVALID_HANDLE); /* c1's legacy stream */
    ck_assert_int_eq(cuCtxRecordEvent(NULL, e0), CUDA_ERROR_INVALID_HANDLE);
    ck_assert_int_eq(cuEventRecord(e0, s0), CUDA_SUCCESS); /* from any context */
    ck_assert_uint_eq(counters().event_record, before + 3);
    ck_assert_int_eq(cuCtxRecordEvent(c0, e0), CUDA_SUCCESS);
    ck_assert_int_eq(cuEventQuery(e0), CUDA_SUCCESS);
    ck_assert_int_eq(cuEventSynchronize(e0), CUDA_SUCCESS);
    ck_assert_int_eq(cuEventQuery((CUevent)(uintptr_t)0x1000), CUDA_ERROR_INVALID_HANDLE);
    /* a created context's events after its destruction */
    CUcontext mine;
    ck_assert_int_eq(cuCtxCreate_v2(&mine, 0, 0), CUDA_SUCCESS);
    CUevent em;
    ck_assert_int_eq(cuEventCreate(&em, 0), CUDA_SUCCESS);
    ck_assert_int_eq(cuCtxDestroy_v2(mine), CUDA_SUCCESS);
    ck_assert_int_eq(cuEventQuery(em), CUDA_ERROR_CONTEXT_IS_DESTROYED);
    /* a reset primary context's events and streams */
    ck_assert_int_eq(cuDevicePrimaryCtxReset_v2(0), CUDA_SUCCESS);
    ck_assert_int_eq(cuEventQuery(e0), CUDA_ERROR_CONTEXT_IS_DESTROYED);
    ck_assert_int_eq(cuStreamQuery(s0), CUDA_ERROR_INVALID_HANDLE);
}
END_TEST

START_TEST(ctx_record_event_refused_while_capturing)
{
    CUcontext c = primary(0);
    ck_assert_int_eq(cuCtxSetCurrent(c), CUDA_SUCCESS);
    CUstream s;
    CUevent e;
    ck_assert_int_eq(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING), CUDA_SUCCESS);
    ck_assert_int_eq(cuEventCreate(&e, 0), CUDA_SUCCESS);
    ck_assert_int_eq(cuStreamBeginCapture_v2(s, CU_STREAM_CAPTURE_MODE_RELAXED), CUDA_SUCCESS);
    ck_assert_int_eq(cuCtxRecordEvent(c, e), CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
    ck_assert_uint_eq(counters().capture_violations, 1);
    ck_assert_uint_eq(counters().ctx_record_event, 0);
    CUgraph g;
    ck_assert_int_eq(cuStreamEndCapture(s, &g), CUDA_SUCCESS);
    ck_assert_int_eq(cuCtxRecordEvent(c, e), CUDA_SUCCESS);
}
END_TEST

static CUstream capture_stream;
static CUresult capture_rc;
static void *begin_global(void *arg)
{
    CUgraph g = (CUgraph)arg;
    capture_rc = cuStreamBeginCaptureToGraph(capture_stream, g, NULL, NULL, 0, CU_STREAM_CAPTURE_MODE_GLOBAL);
    return NULL;
}

START_TEST(queries_prohibited_during_capture)
{
    CUcontext c = primary(0);
    ck_assert_int_eq(cuCtxSetCurrent(c), CUDA_SUCCESS);
    CUevent e;
    CUstream s;
    CUgraph g = NULL;
    ck_assert_int_eq(cuEventCreate(&e, 0), CUDA_SUCCESS);
    ck_assert_int_eq(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING), CUDA_SUCCESS);
    ck_assert_int_eq(cuEventRecord(e, s), CUDA_SUCCESS);
    /* relaxed: allowed */
    ck_assert_int_eq(cuStreamBeginCapture_v2(s, CU_STREAM_CAPTURE_MODE_RELAXED), CUDA_SUCCESS);
    ck_assert_int_eq(cuEventQuery(e), CUDA_SUCCESS);
    ck_assert_int_eq(cuStreamEndCapture(s, &g), CUDA_SUCCESS);
    ck_assert_ptr_nonnull(g);
    /* thread-local on this thread: refused, the capture invalidated */
    ck_assert_int_eq(cuStreamBeginCapture_v2(s, CU_STREAM_CAPTURE_MODE_THREAD_LOCAL), CUDA_SUCCESS);
    ck_assert_int_eq(cuEventQuery(e), CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
    ck_assert_int_eq(cuEventSynchronize(e), CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
    ck_assert_uint_eq(counters().capture_violations, 2);
    ck_assert_int_eq(cuStreamEndCapture(s, &g), CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
    ck_assert_ptr_null(g);
    /* global, begun by another thread through cuStreamBeginCaptureToGraph */
    capture_stream = s;
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, begin_global, (void *)(uintptr_t)0x1000), 0);
    pthread_join(t, NULL);
    ck_assert_int_eq(capture_rc, CUDA_SUCCESS);
    ck_assert_int_eq(cuEventQuery(e), CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
    ck_assert_int_eq(cuStreamEndCapture(s, &g), CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
    ck_assert_int_eq(cuEventQuery(e), CUDA_SUCCESS);
    ck_assert_uint_eq(counters().capture_violations, 3);
    /* a thread that exchanged its mode for relaxed may query */
    ck_assert_int_eq(pthread_create(&t, NULL, begin_global, (void *)(uintptr_t)0x1000), 0);
    pthread_join(t, NULL);
    CUstreamCaptureMode m = CU_STREAM_CAPTURE_MODE_RELAXED;
    ck_assert_int_eq(cuThreadExchangeStreamCaptureMode(&m), CUDA_SUCCESS);
    ck_assert_int_eq(m, CU_STREAM_CAPTURE_MODE_GLOBAL);
    ck_assert_int_eq(cuEventQuery(e), CUDA_SUCCESS);
    ck_assert_int_eq(cuStreamEndCapture(s, &g), CUDA_SUCCESS);
    ck_assert_uint_eq(counters().capture_violations, 3);
}
END_TEST

START_TEST(context_stack)
{
    CUcontext c0 = primary(0), c1 = primary(1), got = (CUcontext)1;
    ck_assert_int_eq(cuCtxGetCurrent(&got), CUDA_SUCCESS);
    ck_assert_ptr_null(got);
    ck_assert_int_eq(cuCtxPopCurrent_v2(&got), CUDA_ERROR_INVALID_CONTEXT);
    ck_assert_int_eq(cuCtxPushCurrent_v2(c0), CUDA_SUCCESS);
    ck_assert_int_eq(cuCtxPushCurrent_v2(c1), CUDA_SUCCESS);
    ck_assert_int_eq(cuCtxPushCurrent_v2(c1), CUDA_SUCCESS);
    CUdevice d = -1;
    ck_assert_int_eq(cuCtxGetDevice(&d), CUDA_SUCCESS);
    ck_assert_int_eq(d, 1);
    ck_assert_int_eq(cuCtxSetCurrent(c0), CUDA_SUCCESS); /* replaces the top */
    ck_assert_int_eq(cuCtxPopCurrent_v2(&got), CUDA_SUCCESS);
    ck_assert_ptr_eq(got, c0);
    ck_assert_int_eq(cuCtxPopCurrent_v2(&got), CUDA_SUCCESS);
    ck_assert_ptr_eq(got, c1);
    ck_assert_int_eq(cuCtxGetCurrent(&got), CUDA_SUCCESS);
    ck_assert_ptr_eq(got, c0);
    ck_assert_int_eq(cuCtxPopCurrent_v2(&got), CUDA_SUCCESS);
    ck_assert_int_eq(cuCtxGetCurrent(&got), CUDA_SUCCESS);
    ck_assert_ptr_null(got);
}
END_TEST

START_TEST(primary_context_references_and_reset)
{
    unsigned flags = 1;
    int active = 1;
    ck_assert_int_eq(cuInit(0), CUDA_SUCCESS);
    ck_assert_int_eq(cuDevicePrimaryCtxGetState(0, &flags, &active), CUDA_SUCCESS);
    ck_assert_int_eq(active, 0);
    ck_assert_uint_eq(flags, 0);
    ck_assert_int_eq(cuDevicePrimaryCtxRelease_v2(0), CUDA_ERROR_INVALID_CONTEXT);
    CUcontext a = primary(0), b = primary(0);
    ck_assert_ptr_eq(a, b);
    ck_assert_int_eq(cuDevicePrimaryCtxGetState(0, &flags, &active), CUDA_SUCCESS);
    ck_assert_int_eq(active, 1);
    ck_assert_int_eq(cuCtxSetCurrent(a), CUDA_SUCCESS);
    CUdeviceptr p = 0, q = 0, r = 0;
    ck_assert_int_eq(cuMemAlloc_v2(&p, 12345), CUDA_SUCCESS);
    ck_assert_int_eq(cuDevicePrimaryCtxRelease_v2(0), CUDA_SUCCESS); /* one reference left */
    ck_assert_uint_eq(fakecuUsed(0), 12345);
    ck_assert_int_eq(cuDevicePrimaryCtxRelease_v2(0), CUDA_SUCCESS); /* the last: reset */
    ck_assert_uint_eq(fakecuUsed(0), 0);
    ck_assert_uint_eq(counters().primary_release, 2);
    ck_assert_int_eq(cuDevicePrimaryCtxGetState(0, &flags, &active), CUDA_SUCCESS);
    ck_assert_int_eq(active, 0);
    ck_assert_int_eq(cuMemFree_v2(p), CUDA_ERROR_INVALID_VALUE);
    CUcontext again = primary(0);
    ck_assert_ptr_eq(again, a); /* the same handle across resets */
    /* the freed address is handed out again for the same size */
    ck_assert_int_eq(cuMemAlloc_v2(&q, 12345), CUDA_SUCCESS);
    ck_assert_uint_eq(q, p);
    ck_assert_int_eq(cuMemAlloc_v2(&r, 12345), CUDA_SUCCESS);
    ck_assert_uint_ne(r, q);
    ck_assert_int_eq(cuMemFree_v2(q), CUDA_SUCCESS);
    ck_assert_int_eq(cuMemFree_v2(r), CUDA_SUCCESS);
    ck_assert_int_eq(cuMemFree_v2(r), CUDA_ERROR_INVALID_VALUE);
}
END_TEST

typedef CUresult (*gp_v2_t)(const char *, void **, int, cuuint64_t, CUdriverProcAddressQueryResult *);
typedef CUresult (*gp_v1_t)(const char *, void **, int, cuuint64_t);

START_TEST(get_proc_address_versions_and_flags)
{
    void *fn = (void *)1;
    CUdriverProcAddressQueryResult st = 99;
    struct {
        const char *name;
        int version;
        const char *expect; /* exported name of the answer, NULL: none */
        CUdriverProcAddressQueryResult st;
    } rows[] = {
        {"cuMemAlloc", 3000, "cuMemAlloc", CU_GET_PROC_ADDRESS_SUCCESS},
        {"cuMemAlloc", 3020, "cuMemAlloc_v2", CU_GET_PROC_ADDRESS_SUCCESS},
        {"cuStreamDestroy", 3020, "cuStreamDestroy", CU_GET_PROC_ADDRESS_SUCCESS},
        {"cuStreamDestroy", 4000, "cuStreamDestroy_v2", CU_GET_PROC_ADDRESS_SUCCESS},
        {"cuCtxDestroy", 3020, "cuCtxDestroy", CU_GET_PROC_ADDRESS_SUCCESS},
        {"cuCtxDestroy", 4000, "cuCtxDestroy_v2", CU_GET_PROC_ADDRESS_SUCCESS},
        {"cuDevicePrimaryCtxRelease", 10020, "cuDevicePrimaryCtxRelease", CU_GET_PROC_ADDRESS_SUCCESS},
        {"cuDevicePrimaryCtxRelease", 11000, "cuDevicePrimaryCtxRelease_v2", CU_GET_PROC_ADDRESS_SUCCESS},
        {"cuDevicePrimaryCtxReset", 10020, "cuDevicePrimaryCtxReset", CU_GET_PROC_ADDRESS_SUCCESS},
        {"cuDevicePrimaryCtxReset", 11000, "cuDevicePrimaryCtxReset_v2", CU_GET_PROC_ADDRESS_SUCCESS},
        {"cuGetProcAddress", 11080, "cuGetProcAddress", CU_GET_PROC_ADDRESS_SUCCESS},
        {"cuGetProcAddress", 12000, "cuGetProcAddress_v2", CU_GET_PROC_ADDRESS_SUCCESS},
        {"cuStreamBeginCapture", 10000, "cuStreamBeginCapture", CU_GET_PROC_ADDRESS_SUCCESS},
        {"cuStreamBeginCapture", 10010, "cuStreamBeginCapture_v2", CU_GET_PROC_ADDRESS_SUCCESS},
        {"cuStreamBeginCapture", 9020, NULL, CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT},
        {"cuCtxRecordEvent", 12040, NULL, CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT},
        {"cuCtxRecordEvent", 12050, "cuCtxRecordEvent", CU_GET_PROC_ADDRESS_SUCCESS},
        {"cuGreenCtxStreamCreate", 12040, NULL, CU_GET_PROC_ADDRESS_VERSION_NOT_SUFFICIENT},
        {"cuGreenCtxStreamCreate", 12050, "cuGreenCtxStreamCreate", CU_GET_PROC_ADDRESS_SUCCESS},
        {"cuCtxGetDevice", 12090, "cuCtxGetDevice", CU_GET_PROC_ADDRESS_SUCCESS},
        {"cuCtxGetDevice", 13000, "cuCtxGetDevice_v2", CU_GET_PROC_ADDRESS_SUCCESS},
        {"cuCtxSynchronize", 12090, "cuCtxSynchronize", CU_GET_PROC_ADDRESS_SUCCESS},
        {"cuCtxSynchronize", 13000, "cuCtxSynchronize_v2", CU_GET_PROC_ADDRESS_SUCCESS},
        {"cuNoSuchThing", 13000, NULL, CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        ck_assert_int_eq(cuGetProcAddress_v2(rows[i].name, &fn, rows[i].version, 0, &st), CUDA_SUCCESS);
        ck_assert_msg(st == rows[i].st, "%s@%d: status %d", rows[i].name, rows[i].version, (int)st);
        void *want = rows[i].expect ? dlsym(RTLD_DEFAULT, rows[i].expect) : NULL;
        ck_assert_msg(!rows[i].expect || want, "%s not exported", rows[i].expect);
        ck_assert_msg(fn == want, "%s@%d: not %s", rows[i].name, rows[i].version,
                      rows[i].expect ? rows[i].expect : "NULL");
    }
    ck_assert_ptr_ne(dlsym(RTLD_DEFAULT, "cuMemAlloc"), dlsym(RTLD_DEFAULT, "cuMemAlloc_v2"));
    ck_assert_int_eq(cuGetProcAddress_v2("cuMemAlloc", &fn, 13010, 0, &st), CUDA_ERROR_INVALID_VALUE);
    /* the 4-argument entry point has no status: NOT_FOUND */
    ck_assert_int_eq(cuGetProcAddress("cuNoSuchThing", &fn, 12000, 0), CUDA_ERROR_NOT_FOUND);
    ck_assert_int_eq(cuGetProcAddress("cuMemFree", &fn, 12000, 0), CUDA_SUCCESS);
    ck_assert_ptr_eq(fn, dlsym(RTLD_DEFAULT, "cuMemFree_v2"));
    /* per-thread variants */
    const char *ptsz[][2] = {
        {"cuMemAllocAsync", "cuMemAllocAsync_ptsz"},   {"cuMemFreeAsync", "cuMemFreeAsync_ptsz"},
        {"cuStreamBeginCapture", "cuStreamBeginCapture_v2_ptsz"}, {"cuEventRecord", "cuEventRecord_ptsz"},
        {"cuMemsetD8Async", "cuMemsetD8Async_ptsz"},   {"cuStreamQuery", "cuStreamQuery_ptsz"},
        {"cuStreamSynchronize", "cuStreamSynchronize_ptsz"},
    };
    for (size_t i = 0; i < sizeof(ptsz) / sizeof(ptsz[0]); i++) {
        void *def = NULL, *pt = NULL, *leg = NULL;
        ck_assert_int_eq(cuGetProcAddress_v2(ptsz[i][0], &def, 13000, CU_GET_PROC_ADDRESS_DEFAULT, &st), CUDA_SUCCESS);
        ck_assert_int_eq(cuGetProcAddress_v2(ptsz[i][0], &leg, 13000, CU_GET_PROC_ADDRESS_LEGACY_STREAM, &st), CUDA_SUCCESS);
        ck_assert_int_eq(cuGetProcAddress_v2(ptsz[i][0], &pt, 13000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, &st),
                         CUDA_SUCCESS);
        ck_assert_ptr_nonnull(def);
        ck_assert_ptr_eq(def, leg);
        ck_assert_ptr_ne(pt, def);
        ck_assert_ptr_eq(pt, dlsym(RTLD_DEFAULT, ptsz[i][1]));
    }
    void *alloc = NULL;
    ck_assert_int_eq(cuGetProcAddress_v2("cuMemAlloc", &alloc, 13000, CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM, &st),
                     CUDA_SUCCESS);
    ck_assert_ptr_eq(alloc, dlsym(RTLD_DEFAULT, "cuMemAlloc_v2")); /* no _ptsz: the base */
}
END_TEST

START_TEST(ptsz_functions_use_the_per_thread_stream)
{
    CUcontext c = primary(0);
    ck_assert_int_eq(cuCtxSetCurrent(c), CUDA_SUCCESS);
    CUdeviceptr p = 0;
    ck_assert_int_eq(cuMemAlloc_v2(&p, 256), CUDA_SUCCESS);
    CUstream nb;
    ck_assert_int_eq(cuStreamCreate(&nb, CU_STREAM_NON_BLOCKING), CUDA_SUCCESS);
    /* long work on the per-thread stream: NULL on the _ptsz query means it */
    ck_assert_int_eq(fakecuLaunchFill(CU_STREAM_PER_THREAD, p, 1, 256, 2000000), CUDA_SUCCESS);
    ck_assert_int_eq(cuStreamQuery_ptsz(NULL), CUDA_ERROR_NOT_READY);
    ck_assert_int_eq(cuStreamQuery(nb), CUDA_SUCCESS);
    CUevent e;
    ck_assert_int_eq(cuEventCreate(&e, 0), CUDA_SUCCESS);
    ck_assert_int_eq(cuEventRecord_ptsz(e, NULL), CUDA_SUCCESS);
    ck_assert_int_eq(cuEventQuery(e), CUDA_ERROR_NOT_READY);
    ck_assert_int_eq(cuStreamSynchronize_ptsz(NULL), CUDA_SUCCESS);
    ck_assert_uint_eq(((unsigned char *)(uintptr_t)p)[255], 1);
    ck_assert_int_eq(cuEventQuery(e), CUDA_SUCCESS);
}
END_TEST

START_TEST(green_context_streams)
{
    CUcontext c0 = primary(0);
    ck_assert_int_eq(cuCtxSetCurrent(c0), CUDA_SUCCESS);
    CUgreenCtx g;
    ck_assert_int_eq(cuGreenCtxCreate(&g, NULL, 0, 0), CUDA_SUCCESS);
    CUstream s;
    ck_assert_int_eq(cuGreenCtxStreamCreate(&s, g, 0, 0), CUDA_ERROR_INVALID_VALUE);
    ck_assert_int_eq(cuGreenCtxStreamCreate(&s, g, CU_STREAM_NON_BLOCKING, -1), CUDA_SUCCESS);
    CUevent e;
    ck_assert_int_eq(cuEventCreate(&e, 0), CUDA_SUCCESS);
    ck_assert_int_eq(cuEventRecord(e, s), CUDA_SUCCESS); /* the primary context's */
    CUstream sp;
    ck_assert_int_eq(cuStreamCreateWithPriority(&sp, CU_STREAM_NON_BLOCKING, -2), CUDA_SUCCESS);
    ck_assert_int_eq(cuStreamDestroy_v2(sp), CUDA_SUCCESS);
    ck_assert_int_eq(cuStreamDestroy_v2(s), CUDA_SUCCESS);
    ck_assert_int_eq(cuGreenCtxDestroy(g), CUDA_SUCCESS);
}
END_TEST

START_TEST(calls_are_counted)
{
    uint64_t c0 = counters().calls;
    void *fn;
    CUdriverProcAddressQueryResult st;
    ck_assert_int_eq(cuGetProcAddress_v2("cuInit", &fn, 13000, 0, &st), CUDA_SUCCESS); /* not counted */
    fakecuSetAllocCost(0);                                                           /* not counted */
    ck_assert_int_eq(cuInit(0), CUDA_SUCCESS);
    CUcontext c = primary(0); /* cuInit + retain */
    ck_assert_int_eq(cuCtxSetCurrent(c), CUDA_SUCCESS);
    CUdeviceptr p;
    ck_assert_int_eq(cuMemAllocManaged(&p, 100, CU_MEM_ATTACH_GLOBAL), CUDA_SUCCESS); /* one call, not two */
    ck_assert_int_eq(cuMemFree_v2(p), CUDA_SUCCESS);
    ck_assert_uint_eq(counters().calls, c0 + 6);
}
END_TEST

static Suite *fake_driver_suite(void)
{
    Suite *s = suite_create("fake_driver");
    TCase *tc = tcase_create("strict");
    tcase_add_test(tc, stream_destroy_returns_at_once_and_work_still_runs);
    tcase_add_test(tc, events_belong_to_their_context);
    tcase_add_test(tc, ctx_record_event_refused_while_capturing);
    tcase_add_test(tc, queries_prohibited_during_capture);
    tcase_add_test(tc, context_stack);
    tcase_add_test(tc, primary_context_references_and_reset);
    tcase_add_test(tc, get_proc_address_versions_and_flags);
    tcase_add_test(tc, ptsz_functions_use_the_per_thread_stream);
    tcase_add_test(tc, green_context_streams);
    tcase_add_test(tc, calls_are_counted);
    tcase_set_timeout(tc, 30);
    suite_add_tcase(s, tc);
    return s;
}

MP_CHECK_MAIN(fake_driver_suite)
