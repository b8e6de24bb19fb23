/*
 * The call-site table and the timeline ring, driven directly (the core is
 * linked in; nothing is interposed).  This program's own malloc family
 * counts every call, so "the capture path never allocates" is a count.
 */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "callsite.h"
#include "check_main.h"
#include "timeline.h"

/* ---- counting allocator: every library in the process calls these ---- */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void __libc_free(void *);
static _Atomic long allocs;

void *malloc(size_t n)
{
    allocs++;
    return __libc_malloc(n);
}
void *calloc(size_t a, size_t b)
{
    allocs++;
    return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n)
{
    allocs++;
    return __libc_realloc(p, n);
}
void free(void *p) { __libc_free(p); }

static mp_site_t sites[MP_SITES];

static size_t copy(uint64_t *captured, uint64_t *skipped)
{
    return mp_callsite_copy(sites, MP_SITES, captured, skipped);
}

static const mp_site_t *site_with_samples(size_t n, uint64_t samples)
{
    for (size_t i = 0; i < n; i++)
        if (sites[i].samples == samples)
            return &sites[i];
    return NULL;
}

static void setup(void)
{
    ck_assert_int_eq(mp_init(), MP_STATE_READY);
    ck_assert(mp_callsite_available()); /* libgcc's unwinder is linked in */
}

__attribute__((noinline)) static void miss_here(int kind, size_t size)
{
    mp_callsite_record(kind, size, size, 1000);
    __asm__ volatile("" ::: "memory"); /* not a tail call: this frame stays */
}

__attribute__((noinline)) static void miss_there(int kind, size_t size)
{
    mp_callsite_record(kind, size, size * 2, 500);
    __asm__ volatile("" ::: "memory");
}

START_TEST(capture_never_allocates)
{
    /* A thread's first capture: at most one allocation, once (the
     * unwinder's set-up). */
    long before = allocs;
    miss_here(MP_SITE_HOST, 16);
    ck_assert_int_le(allocs - before, 1);
    mp_callsite_reset();
    before = allocs;
    for (volatile int i = 0; i < 2000; i++) {
        miss_here(MP_SITE_DEVICE, 4096);
        miss_there(MP_SITE_PINNED, 512);
    }
    ck_assert_int_eq(allocs - before, 0);
    uint64_t captured, skipped;
    size_t n = copy(&captured, &skipped);
    ck_assert_uint_eq(captured, 4000);
    ck_assert_uint_eq(skipped, 0);
    ck_assert_uint_eq(n, 2);
}
END_TEST

START_TEST(sites_aggregate_per_stack)
{
    /* volatile counters: an unrolled loop would call from several return
     * addresses, i.e. several stacks. */
    for (volatile int i = 0; i < 10; i++)
        miss_here(MP_SITE_DEVICE, 1 << 20);
    for (volatile int i = 0; i < 20; i++)
        miss_there(MP_SITE_DEVICE, 3000);
    uint64_t captured, skipped;
    size_t n = copy(&captured, &skipped);
    ck_assert_uint_eq(n, 2);
    const mp_site_t *a = site_with_samples(n, 10), *b = site_with_samples(n, 20);
    ck_assert_ptr_nonnull(a);
    ck_assert_ptr_nonnull(b);
    ck_assert_uint_eq(a->kind, MP_SITE_DEVICE);
    ck_assert_uint_eq(a->wait_ns, 10 * 1000);
    ck_assert_uint_eq(b->wait_ns, 20 * 500);
    ck_assert(a->misses == 10.0 && a->bytes == 10.0 * (1 << 20)); /* device: exact */
    ck_assert_uint_eq(a->cls[0].size, 1 << 20);
    ck_assert_uint_eq(a->cls[0].samples, 10);
    ck_assert_uint_eq(b->cls[0].size, 6000);
    ck_assert_uint_eq(a->depth, mp_opt(MP_OPT_CALLSITE_DEPTH));
    /* Different callers (frame 0 is in mp_callsite_record itself here:
     * the shim's frames are dropped only when it is a shared object). */
    ck_assert_int_ne(memcmp(a->pc, b->pc, sizeof(a->pc)), 0);
}
END_TEST

START_TEST(host_samples_are_weighted)
{
    /* A host sample of s bytes at rate r stands for 1 / (1 - exp(-s / r))
     * misses (the default rate: 512 KiB). */
    ck_assert_uint_eq(mp_callsite_rate, 512 << 10);
    miss_here(MP_SITE_HOST, 64 << 10);
    uint64_t captured, skipped;
    ck_assert_uint_eq(copy(&captured, &skipped), 1);
    ck_assert(sites[0].misses > 8.51 && sites[0].misses < 8.52); /* 1 / (1 - e^-0.125) = 8.5104 */
    ck_assert(sites[0].bytes > 8.51 * 65536 && sites[0].bytes < 8.52 * 65536);
}
END_TEST

START_TEST(reentrant_capture_is_skipped)
{
    mp_callsite_guard(true); /* as inside a capture, or the writer's dladdr */
    miss_here(MP_SITE_DEVICE, 4096);
    mp_callsite_guard(false);
    uint64_t captured, skipped;
    ck_assert_uint_eq(copy(&captured, &skipped), 0);
    ck_assert_uint_eq(captured, 0);
    ck_assert_uint_eq(skipped, 1);
}
END_TEST

static _Atomic long handler_calls;
static void on_prof(int sig)
{
    (void)sig;
    handler_calls++;
    miss_there(MP_SITE_PINNED, 8192);
}

/* SIGPROF (every 100 us asked; the kernel's tick decides) while this thread captures: a capture interrupted
 * by a handler that captures skips the handler's sample; none is lost or
 * counted twice, nothing crashes. */
START_TEST(signal_handler_captures)
{
    signal(SIGPROF, on_prof);
    struct itimerval it = {{0, 100}, {0, 100}};
    setitimer(ITIMER_PROF, &it, NULL);
    long calls = 0;
    uint64_t end = mp_now_ns() + 5000000000u;
    while (handler_calls < 50 && mp_now_ns() < end) {
        miss_here(MP_SITE_DEVICE, 4096);
        calls++;
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_PROF, &off, NULL);
    signal(SIGPROF, SIG_IGN);
    uint64_t captured, skipped;
    copy(&captured, &skipped);
    ck_assert_int_ge(handler_calls, 50);
    ck_assert_uint_eq(captured + skipped, (uint64_t)(calls + handler_calls));
}
END_TEST

START_TEST(reset_forgets_everything)
{
    miss_here(MP_SITE_DEVICE, 4096);
    miss_there(MP_SITE_DEVICE, 4096);
    mp_callsite_reset();
    uint64_t captured, skipped;
    ck_assert_uint_eq(copy(&captured, &skipped), 0);
    ck_assert_uint_eq(captured, 0);
    /* The same stack again is a new site: its old entry was cleared, not
     * just left out of the list. */
    miss_there(MP_SITE_PINNED, 64);
    ck_assert_uint_eq(copy(&captured, &skipped), 1);
    ck_assert_uint_eq(sites[0].samples, 1);
    ck_assert_uint_eq(sites[0].kind, MP_SITE_PINNED);
    ck_assert_uint_eq(sites[0].cls[0].size, 128);
    ck_assert_uint_eq(sites[0].cls[1].samples, 0);
}
END_TEST

START_TEST(sites_listed_in_order_first_seen)
{
    /* One call of each in the loop: one stack each (volatile: no unrolling). */
    for (volatile int i = 0; i < 6; i++) {
        if (i == 3)
            miss_here(MP_SITE_DEVICE, 4096);
        else
            miss_there(MP_SITE_HOST, 32);
    }
    uint64_t captured, skipped;
    ck_assert_uint_eq(copy(&captured, &skipped), 2);
    ck_assert_uint_eq(sites[0].samples, 5);
    ck_assert_uint_eq(sites[0].kind, MP_SITE_HOST);
    ck_assert_uint_eq(sites[1].samples, 1);
    ck_assert_uint_eq(sites[1].kind, MP_SITE_DEVICE);
}
END_TEST

/* ---- timeline ring ---------------------------------------------------------- */

static mp_tl_sample_t ring[MP_TL_SAMPLES];

START_TEST(timeline_ring_halves_when_full)
{
    /* Default interval 100 ms; 2000 samples 1 s apart: the ring halves at
     * the 1025th (512 kept, interval 200 ms) and the 1537th (400 ms). */
    uint64_t t = mp_timeline_now();
    for (int i = 0; i < 2000; i++) {
        t += 1000000000u;
        mp_timeline_sample(t);
    }
    uint64_t iv = 0;
    size_t n = mp_timeline_copy(ring, MP_TL_SAMPLES, &iv);
    ck_assert_uint_eq(n, 512 + 2000 - 1536);
    ck_assert_uint_eq(iv, 400000000u);
    for (size_t i = 1; i < n; i++)
        ck_assert_uint_gt(ring[i].t_ns, ring[i - 1].t_ns);
    /* Every other sample was dropped twice: the oldest are 4 s apart, the
     * newest 1 s. */
    ck_assert_uint_eq(ring[1].t_ns - ring[0].t_ns, 4000000000u);
    ck_assert_uint_eq(ring[n - 1].t_ns - ring[n - 2].t_ns, 1000000000u);
    /* A sample before the next due time is refused. */
    mp_timeline_sample(t + 1);
    ck_assert_uint_eq(mp_timeline_copy(ring, MP_TL_SAMPLES, &iv), n);
}
END_TEST

START_TEST(timeline_off_takes_nothing)
{
    setenv("MEMPOOL_TIMELINE_INTERVAL", "0", 1);
    ck_assert_int_eq(mp_init(), MP_STATE_READY);
    ck_assert_uint_eq(atomic_load(&mp_tl_next), UINT64_MAX);
    mp_timeline_tick();
    mp_timeline_force();
    uint64_t iv;
    ck_assert_uint_eq(mp_timeline_copy(ring, MP_TL_SAMPLES, &iv), 0);
}
END_TEST

static Suite *callsite_suite(void)
{
    Suite *s = suite_create("callsite");
    TCase *tc = tcase_create("sites");
    tcase_add_checked_fixture(tc, setup, NULL);
    tcase_add_test(tc, capture_never_allocates);
    tcase_add_test(tc, sites_aggregate_per_stack);
    tcase_add_test(tc, host_samples_are_weighted);
    tcase_add_test(tc, reentrant_capture_is_skipped);
    tcase_add_test(tc, signal_handler_captures);
    tcase_add_test(tc, reset_forgets_everything);
    tcase_add_test(tc, sites_listed_in_order_first_seen);
    tcase_add_test(tc, timeline_ring_halves_when_full);
    suite_add_tcase(s, tc);
    tc = tcase_create("timeline_off");
    tcase_add_test(tc, timeline_off_takes_nothing);
    suite_add_tcase(s, tc);
    return s;
}

MP_CHECK_MAIN(callsite_suite)
