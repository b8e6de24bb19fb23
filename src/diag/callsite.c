/*
 * The call-site table (see callsite.h).  Capturing runs on a miss, outside
 * every pool lock: _Unwind_Backtrace into a stack buffer first (it may take
 * the loader's lock and, for frames registered at run time, may call
 * malloc: the thread's capture flag turns such nested misses into skipped
 * samples), then the table's spin lock for the few stores of the update.
 *
 * The unwinder is libgcc's, linked statically into the shim
 * (-static-libgcc: libgcc_eh's copy, hidden), so nothing is loaded at start
 * or inside malloc and every process can capture stacks.  Not libunwind: it
 * opens a pipe at its first backtrace (memory validation), a descriptor the
 * program would see (fd 0 when the program started with stdin closed), and
 * it costs two libraries (libunwind, liblzma) at start.
 */
#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <string.h>
#include <unwind.h>

#include "callsite.h"

MP_STARTUP_DATA uint64_t mp_callsite_rate;
_Thread_local int64_t mp_tls_sample_left __attribute__((tls_model("initial-exec")));
static _Thread_local bool tls_armed __attribute__((tls_model("initial-exec")));
static _Thread_local bool tls_capturing __attribute__((tls_model("initial-exec")));
static _Thread_local uint64_t tls_rng __attribute__((tls_model("initial-exec")));

static mp_site_t sites[MP_SITES];
/* Entries of sites in use, in the order they were filled (table_lock): a
 * copy or a fork child's reset touches those, not the table's 240 KiB
 * (60 pages) that a process with a few sites never wrote. */
static uint16_t used_at[MP_SITES];
_Static_assert(MP_SITES <= 65536, "used_at holds 16-bit indices");
static unsigned used_n;
static atomic_flag table_lock = ATOMIC_FLAG_INIT;
static _Atomic uint64_t captured, skipped;
MP_STARTUP_DATA static unsigned depth;

/* The shim's own code: frames in it are dropped from the top of a stack. */
static _Atomic int self_state; /* 0 unknown, 1 finding, 2 known */
static uintptr_t self_lo, self_hi;

void mp_callsite_init(void)
{
    mp_callsite_rate = mp_opt(MP_OPT_CALLSITE_SAMPLE);
    depth = (unsigned)mp_opt(MP_OPT_CALLSITE_DEPTH);
    if (depth > MP_SITE_DEPTH_MAX)
        depth = MP_SITE_DEPTH_MAX;
}

bool mp_callsite_available(void) { return true; /* the unwinder is linked in */ }

typedef struct walk {
    void **pc;
    int n, max;
} walk_t;

static _Unwind_Reason_Code walk_frame(struct _Unwind_Context *ctx, void *arg)
{
    walk_t *w = arg;
    uintptr_t ip = (uintptr_t)_Unwind_GetIP(ctx);
    if (ip == 0 || w->n >= w->max)
        return _URC_END_OF_STACK;
    w->pc[w->n++] = (void *)ip;
    return _URC_NO_REASON;
}

/* xorshift64*: per thread, seeded from the thread's address and the clock. */
static uint64_t rng_next(void)
{
    uint64_t x = tls_rng;
    if (x == 0)
        x = ((uintptr_t)&tls_rng * 0x9E3779B97F4A7C15ull) ^ mp_now_ns() ^ 1;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    tls_rng = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Exponentially distributed intervals with mean `rate` bytes: the sampled
 * misses are a Poisson process over the bytes missed, so no allocation
 * pattern can line up with them (jemalloc's prof_sample does the same). */
bool mp_callsite_arm(void)
{
    double u = ((double)(rng_next() >> 11) + 0.5) / 9007199254740992.0; /* (0, 1) */
    mp_tls_sample_left = (int64_t)(-mp_ln(u) * (double)mp_callsite_rate) + 1;
    bool was = tls_armed;
    tls_armed = true;
    return was;
}

static int find_self(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    uintptr_t me = (uintptr_t)arg, lo = UINTPTR_MAX, hi = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD)
            continue;
        uintptr_t a = info->dlpi_addr + ph->p_vaddr;
        lo = a < lo ? a : lo;
        hi = a + ph->p_memsz > hi ? a + ph->p_memsz : hi;
    }
    if (me < lo || me >= hi)
        return 0;
    /* Linked into the program itself (the unit tests): keep every frame. */
    if (info->dlpi_name == NULL || info->dlpi_name[0] == '\0')
        lo = hi = 0;
    self_lo = lo;
    self_hi = hi;
    return 1;
}

static bool self_known(void)
{
    int st = atomic_load_explicit(&self_state, memory_order_acquire);
    if (st == 2)
        return true;
    int expected = 0;
    if (st != 0 || !atomic_compare_exchange_strong(&self_state, &expected, 1))
        return false; /* another thread is looking: skip this sample */
    dl_iterate_phdr(find_self, (void *)(uintptr_t)mp_callsite_record);
    atomic_store_explicit(&self_state, 2, memory_order_release);
    return true;
}

static uint64_t stack_hash(int kind, void *const *pc, unsigned n)
{
    uint64_t h = 0xcbf29ce484222325ull ^ (uint64_t)kind;
    for (unsigned i = 0; i < n; i++)
        h = (h ^ (uintptr_t)pc[i]) * 0x100000001b3ull;
    return h ? h : 1;
}

static void count_class(mp_site_t *s, size_t class_size)
{
    for (unsigned i = 0; i < MP_SITE_CLASSES; i++) {
        if (s->cls[i].samples == 0)
            s->cls[i].size = class_size;
        if (s->cls[i].size == class_size) {
            s->cls[i].samples++;
            return;
        }
    }
}

/* The caller's stack without the shim's own frames, into pc (at most max);
 * tls_capturing is held by the caller. */
static unsigned capture(void **pc, unsigned max)
{
    void *raw[MP_SITE_DEPTH_MAX + 24];
    walk_t w = {raw, 0, (int)(sizeof(raw) / sizeof(raw[0]))};
    _Unwind_Backtrace(walk_frame, &w);
    int n = w.n;
    unsigned first = 0;
    while (first < (unsigned)(n > 0 ? n : 0) && (uintptr_t)raw[first] >= self_lo
           && (uintptr_t)raw[first] < self_hi)
        first++;
    unsigned d = n > 0 ? (unsigned)n - first : 0;
    d = d > max ? max : d;
    memcpy(pc, raw + first, d * sizeof(void *));
    return d;
}

unsigned mp_callsite_stack(void **pc, unsigned max)
{
    if (tls_capturing || !self_known())
        return 0;
    tls_capturing = true;
    unsigned d = capture(pc, max > MP_SITE_DEPTH_MAX ? MP_SITE_DEPTH_MAX : max);
    tls_capturing = false;
    return d;
}

void mp_callsite_name(void *pc, char *buf, size_t cap)
{
    Dl_info di = {0};
    if (pc == NULL || dladdr(pc, &di) == 0) {
        snprintf(buf, cap, "%s", pc ? "?" : "(unknown: no unwinder)");
        return;
    }
    const char *obj = di.dli_fname ? strrchr(di.dli_fname, '/') : NULL;
    obj = obj ? obj + 1 : di.dli_fname ? di.dli_fname : "?";
    if (di.dli_sname)
        snprintf(buf, cap, "%s+0x%zx (%s)", di.dli_sname, (size_t)((uintptr_t)pc - (uintptr_t)di.dli_saddr), obj);
    else
        snprintf(buf, cap, "%s+0x%zx", obj, (size_t)((uintptr_t)pc - (uintptr_t)di.dli_fbase));
}

void mp_callsite_record(int kind, size_t size, size_t class_size, uint64_t wait_ns)
{
    if (tls_capturing || !self_known()) {
        atomic_fetch_add_explicit(&skipped, 1, memory_order_relaxed);
        return;
    }
    tls_capturing = true;
    void *pc[MP_SITE_DEPTH_MAX];
    unsigned d = capture(pc, depth);
    uint64_t h = stack_hash(kind, pc, d);
    /* Host samples stand for the bytes between samples: unbiased like
     * jemalloc's (a miss of size s is sampled with 1 - exp(-s / rate)). */
    double weight = 1.0;
    if (kind == MP_SITE_HOST && mp_callsite_rate)
        weight = 1.0 / (1.0 - mp_exp(-(double)size / (double)mp_callsite_rate));
    bool stored = false;
    while (atomic_flag_test_and_set_explicit(&table_lock, memory_order_acquire))
        ;
    for (size_t i = h & (MP_SITES - 1), probes = 0; probes < MP_SITES / 4; i = (i + 1) & (MP_SITES - 1), probes++) {
        mp_site_t *s = &sites[i];
        if (s->hash == 0) {
            used_at[used_n++] = (uint16_t)i;
            s->hash = h;
            s->kind = (uint8_t)kind;
            s->depth = (uint8_t)d;
            memcpy(s->pc, pc, d * sizeof(void *));
        } else if (s->hash != h || s->kind != kind || s->depth != d || memcmp(s->pc, pc, d * sizeof(void *)) != 0) {
            continue;
        }
        s->samples++;
        s->wait_ns += wait_ns;
        s->misses += weight;
        s->bytes += weight * (double)size;
        count_class(s, class_size);
        stored = true;
        break;
    }
    atomic_flag_clear_explicit(&table_lock, memory_order_release);
    atomic_fetch_add_explicit(stored ? &captured : &skipped, 1, memory_order_relaxed);
    tls_capturing = false;
}

size_t mp_callsite_copy(mp_site_t *out, size_t cap, uint64_t *ncaptured, uint64_t *nskipped)
{
    size_t n = 0;
    while (atomic_flag_test_and_set_explicit(&table_lock, memory_order_acquire))
        ;
    for (unsigned i = 0; i < used_n && n < cap; i++)
        out[n++] = sites[used_at[i]];
    atomic_flag_clear_explicit(&table_lock, memory_order_release);
    *ncaptured = atomic_load(&captured);
    *nskipped = atomic_load(&skipped);
    return n;
}

void mp_callsite_counts(uint64_t *ncaptured, uint64_t *nskipped)
{
    *ncaptured = atomic_load(&captured);
    *nskipped = atomic_load(&skipped);
}

void mp_callsite_guard(bool on) { tls_capturing = on; }

void mp_callsite_reset(void)
{
    atomic_flag_clear(&table_lock); /* a thread that held it is gone */
    for (unsigned i = 0; i < used_n; i++)
        memset(&sites[used_at[i]], 0, sizeof(sites[0]));
    used_n = 0;
    atomic_store(&captured, 0);
    atomic_store(&skipped, 0);
    tls_capturing = false;
}
