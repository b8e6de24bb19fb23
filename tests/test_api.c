/* The explicit pool API (include/mempool.h) on host pools: every function
 * and error path, table-driven where there is a table; limits, zeroing,
 * alignment, exact matching, stats equal to what the test did, NUMA
 * placement, simulated memory pressure, many threads across pools.
 * Device and pinned pools: tests/fake_cuda/test_api_cuda.c. */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"
#include "host_inline.h"
#include "mempool.h"
#include "api.h"

static void start(void)
{
    setenv("MEMPOOL_HOST_RESERVE", "64G", 0);
    ck_assert_int_eq(mp_init(), MP_STATE_READY);
}

static mempool_t *make(size_t max_blocks, size_t max_block, size_t limit, size_t align, int classes,
                       unsigned flags)
{
    mempool_config_t c;
    ck_assert_int_eq(mempool_config_init(&c, MEMPOOL_KIND_HOST), 0);
    c.max_cached_blocks = max_blocks;
    if (max_block)
        c.max_block_size = max_block;
    c.cache_limit = limit;
    c.alignment = align;
    c.size_classes = (mempool_size_classes_t)classes;
    c.flags = flags;
    c.name = "test";
    mempool_t *p = NULL;
    ck_assert_int_eq(mempool_create(&c, &p), 0);
    ck_assert_ptr_nonnull(p);
    return p;
}

static mempool_stats_t stats_of(mempool_t *p)
{
    mempool_stats_t s = {.struct_size = sizeof(s)};
    ck_assert_int_eq(mempool_get_stats(p, &s), 0);
    return s;
}

/* ---- config checks ---------------------------------------------------------- */

#define EDIT(name, body) \
    static void name(mempool_config_t *c) { body; }

EDIT(bad_kind, c->kind = (mempool_kind_t)7)
EDIT(bad_classes, c->size_classes = (mempool_size_classes_t)9)
EDIT(bad_flags, c->flags = 0x80)
EDIT(align_not_pow2, c->alignment = 48)
EDIT(align_huge, c->alignment = (size_t)1 << 21)
EDIT(threshold_one, c->pressure_threshold = 1.0)
EDIT(threshold_negative, c->pressure_threshold = -0.5)
EDIT(max_block_zero, c->max_block_size = 0)
EDIT(max_block_huge, c->max_block_size = (size_t)4 << 30)
EDIT(numa_negative, c->numa_node = -7)
EDIT(numa_absent, c->numa_node = 1000)
EDIT(small_struct, c->struct_size = 4)

static const struct {
    const char *what;
    void (*edit)(mempool_config_t *);
    int err;
} config_table[] = {
    {"unknown kind", bad_kind, -EINVAL},
    {"unknown size-class scheme", bad_classes, -EINVAL},
    {"unknown flag", bad_flags, -EINVAL},
    {"alignment not a power of two", align_not_pow2, -EINVAL},
    {"alignment above 1 MiB", align_huge, -EINVAL},
    {"pressure threshold 1.0", threshold_one, -EINVAL},
    {"negative pressure threshold", threshold_negative, -EINVAL},
    {"max block size 0", max_block_zero, -EINVAL},
    {"max block size above 1 GiB with classes", max_block_huge, -EINVAL},
    {"negative NUMA node", numa_negative, -EINVAL},
    {"NUMA node the machine lacks", numa_absent, -EINVAL},
    {"struct_size without the kind", small_struct, -EINVAL},
};

START_TEST(config_errors)
{
    start();
    mempool_config_t c;
    mempool_config_init(&c, MEMPOOL_KIND_HOST);
    config_table[_i].edit(&c);
    mempool_t *p = NULL;
    int r = mempool_create(&c, &p);
    if (r != config_table[_i].err)
        ck_abort_msg("%s: got %d (%s), want %d", config_table[_i].what, r, mempool_strerror(r),
                     config_table[_i].err);
    ck_assert_ptr_null(p);
}
END_TEST

START_TEST(null_arguments)
{
    start();
    mempool_config_t c;
    mempool_t *p = NULL;
    ck_assert_int_eq(mempool_config_init(NULL, MEMPOOL_KIND_HOST), -EINVAL);
    ck_assert_int_eq(mempool_config_init(&c, (mempool_kind_t)3), -EINVAL);
    ck_assert_int_eq(mempool_create(NULL, &p), -EINVAL);
    mempool_config_init(&c, MEMPOOL_KIND_HOST);
    ck_assert_int_eq(mempool_create(&c, NULL), -EINVAL);
    errno = 0;
    ck_assert_ptr_null(mempool_acquire(NULL, 10));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(mempool_release(NULL, &c), -EINVAL);
    ck_assert_int_eq(mempool_destroy(NULL), -EINVAL);
    ck_assert_int_eq(mempool_clear(NULL), -EINVAL);
    ck_assert_int_eq(mempool_trim(NULL, 0), -EINVAL);
    mempool_stats_t s = {.struct_size = sizeof(s)};
    ck_assert_int_eq(mempool_get_stats(NULL, &s), -EINVAL);
    ck_assert_int_eq(mempool_write_stats((mempool_t *)&c, 1, MEMPOOL_FORMAT_JSON), -EINVAL); /* not a pool */
    errno = 0;
    ck_assert_ptr_null(mempool_default((mempool_kind_t)5));
    ck_assert_int_eq(errno, EINVAL);
    /* A default pool cannot be destroyed. */
    ck_assert_int_eq(mempool_destroy(mempool_default(MEMPOOL_KIND_HOST)), -EINVAL);
    /* Host pools have no stream-ordered variants. */
    p = make(0, 0, 0, 0, 0, 0);
    errno = 0;
    ck_assert_ptr_null(mempool_acquire_async(p, 10, NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(mempool_release_async(p, &c, NULL), -EINVAL);
    ck_assert_int_eq(mempool_release(p, NULL), 0); /* like free(NULL) */
    ck_assert_int_eq(mempool_destroy(p), 0);
}
END_TEST

START_TEST(strerror_names_every_code)
{
    static const int codes[] = {0, EINVAL, ENOMEM, ENODEV, ENOTSUP, EBUSY, EIO};
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        ck_assert_str_eq(mempool_strerror(codes[i]), mempool_strerror(-codes[i]));
        ck_assert_str_ne(mempool_strerror(codes[i]), mempool_strerror(12345));
    }
    ck_assert_ptr_nonnull(mempool_strerror(12345));
}
END_TEST

/* ---- acquire / release ------------------------------------------------------------ */

START_TEST(release_then_acquire_is_a_hit)
{
    start();
    mempool_t *p = make(0, 0, 0, 0, 0, 0);
    char *a = mempool_acquire(p, 1000);
    ck_assert_ptr_nonnull(a);
    memset(a, 0x5a, 1000);
    ck_assert_int_eq(mempool_release(p, a), 0);
    char *b = mempool_acquire(p, 1000);
    ck_assert_ptr_eq(a, b);
    ck_assert_int_eq(b[999], 0x5a); /* not zeroed without the flag */
    char *c = mempool_acquire(p, 900); /* same quarter class (896 < 900 <= 1024) */
    ck_assert_ptr_ne(c, b);
    ck_assert_int_eq(mempool_release(p, c), 0);
    char *d = mempool_acquire(p, 1000);
    ck_assert_ptr_eq(d, c); /* 900 and 1000 share the 1024 class */
    mempool_stats_t s = stats_of(p);
    ck_assert_uint_eq(s.acquired, 4);
    ck_assert_uint_eq(s.released, 2);
    ck_assert_uint_eq(s.hits, 2);
    ck_assert_uint_eq(s.misses, 2);
    ck_assert_uint_eq(s.bytes_requested, 1000 + 1000 + 900 + 1000);
    ck_assert_uint_eq(s.bytes_from_cache, 2048);
    ck_assert_uint_eq(s.bytes_in_use, 2048);
    ck_assert_uint_eq(s.peak_bytes_in_use, 2048);
    ck_assert_uint_eq(s.pool_size, 0);
    ck_assert(s.hit_rate > 0.49 && s.hit_rate < 0.51);
    ck_assert_str_eq(s.name, "test");
    ck_assert_int_eq(mempool_destroy(p), -EBUSY); /* two blocks still out */
    mempool_release(p, b);
    mempool_release(p, d);
    s = stats_of(p);
    ck_assert_uint_eq(s.pool_size, 2);
    ck_assert_uint_eq(s.bytes_cached, 2048);
    ck_assert_uint_eq(s.bytes_reserved, 2048);
    ck_assert_int_eq(mempool_destroy(p), 0);
}
END_TEST

START_TEST(double_and_foreign_release_are_refused)
{
    start();
    mempool_t *p = make(0, 0, 0, 0, 0, 0), *q = make(0, 0, 0, 0, 0, 0);
    char *a = mempool_acquire(p, 64);
    memset(a, 1, 64);
    ck_assert_int_eq(mempool_release(p, a), 0);
    ck_assert_int_eq(mempool_release(p, a), -EINVAL); /* twice */
    char *b = mempool_acquire(q, 64);
    ck_assert_int_eq(mempool_release(p, b), -EINVAL); /* wrong pool */
    int local = 0;
    ck_assert_int_eq(mempool_release(p, &local), -EINVAL); /* never acquired */
    ck_assert_int_eq(mempool_release(mempool_default(MEMPOOL_KIND_HOST), &local), -EINVAL);
    /* Nothing was corrupted: the cached block comes back once, the other
     * pool's block is still its own. */
    ck_assert_ptr_eq(mempool_acquire(p, 64), a);
    ck_assert_ptr_ne(mempool_acquire(p, 64), a);
    ck_assert_int_eq(mempool_release(q, b), 0);
    /* NULL is a no-op however full the pool's block table is (the hit
     * path's lookup meets entries of every state on the way). */
    void *many[300];
    for (int i = 0; i < 300; i++)
        many[i] = mempool_acquire(q, 16 + (size_t)i * 40);
    for (int i = 0; i < 300; i += 2)
        ck_assert_int_eq(mempool_release(q, many[i]), 0);
    ck_assert_int_eq(mempool_trim(q, 0) > 0, 1);
    ck_assert_int_eq(mempool_release(q, NULL), 0);
    ck_assert_int_eq(mempool_release(p, NULL), 0);
    for (int i = 1; i < 300; i += 2)
        ck_assert_int_eq(mempool_release(q, many[i]), 0);
    mempool_stats_t s = stats_of(p);
    ck_assert_uint_eq(s.release_errors, 3);
    ck_assert_uint_eq(s.released, 1);
    ck_assert_uint_eq(stats_of(q).release_errors, 0);
    ck_assert_uint_eq(stats_of(q).released, 301);
}
END_TEST

static const struct {
    size_t align;
    size_t sizes[4];
} align_table[] = {
    {0, {1, 24, 100, 5000}},   {16, {1, 24, 100, 5000}}, {64, {1, 72, 100, 5000}},
    {256, {1, 300, 4000, 70000}}, {4096, {1, 5000, 9000, 100000}}, {1 << 20, {1, 100, 4096, 3 << 20}},
};

START_TEST(alignment_of_every_block)
{
    start();
    size_t align = align_table[_i].align;
    mempool_t *p = make(0, 0, 0, align, 0, 0);
    size_t want = align ? align : 16;
    void *keep[8];
    for (int round = 0; round < 2; round++) /* misses, then hits */
        for (int k = 0; k < 4; k++) {
            void *b = mempool_acquire(p, align_table[_i].sizes[k]);
            ck_assert_ptr_nonnull(b);
            ck_assert_uint_eq((uintptr_t)b % want, 0);
            memset(b, 0xee, align_table[_i].sizes[k]);
            keep[round * 4 + k] = b;
            if (round == 0)
                ck_assert_int_eq(mempool_release(p, b), 0);
        }
    mempool_stats_t s = stats_of(p);
    ck_assert_uint_eq(s.hits, 4);
    for (int k = 4; k < 8; k++)
        mempool_release(p, keep[k]);
    ck_assert_int_eq(mempool_destroy(p), 0);
}
END_TEST

START_TEST(zero_on_release)
{
    start();
    mempool_t *p = make(0, 0, 0, 0, 0, MEMPOOL_ZERO_ON_RELEASE);
    unsigned char *a = mempool_acquire(p, 3000);
    memset(a, 0xff, 3000);
    mempool_release(p, a);
    unsigned char *b = mempool_acquire(p, 3000);
    ck_assert_ptr_eq(a, b);
    for (size_t i = 0; i < 3000; i++)
        if (b[i] != 0)
            ck_abort_msg("byte %zu is %u after zero-on-release", i, b[i]);
    mempool_release(p, b);
}
END_TEST

START_TEST(exact_matching)
{
    start();
    mempool_t *p = make(0, 0, 0, 0, MEMPOOL_CLASSES_EXACT, 0);
    void *a = mempool_acquire(p, 1000);
    mempool_release(p, a);
    void *b = mempool_acquire(p, 1010); /* another size: not reused */
    ck_assert_ptr_ne(a, b);
    void *c = mempool_acquire(p, 1000); /* the same size: reused */
    ck_assert_ptr_eq(a, c);
    mempool_stats_t s = stats_of(p);
    ck_assert_uint_eq(s.hits, 1);
    ck_assert_uint_eq(s.misses, 2);
    ck_assert_uint_eq(s.bytes_in_use, 1008 + 1024); /* rounded to 16 only */
}
END_TEST

START_TEST(pow2_classes_share_more)
{
    start();
    mempool_t *p = make(0, 0, 0, 0, MEMPOOL_CLASSES_POW2, 0);
    void *a = mempool_acquire(p, 600);
    mempool_release(p, a);
    ck_assert_ptr_eq(mempool_acquire(p, 1000), a); /* both in the 1024 class */
    mempool_stats_t s = stats_of(p);
    ck_assert_uint_eq(s.bytes_in_use, 1024);
}
END_TEST

START_TEST(limits)
{
    start();
    /* max_cached_blocks 3: the fourth release frees its block. */
    mempool_t *p = make(3, 0, 0, 0, 0, 0);
    void *b[4];
    for (int i = 0; i < 4; i++)
        b[i] = mempool_acquire(p, 512);
    for (int i = 0; i < 4; i++)
        mempool_release(p, b[i]);
    mempool_stats_t s = stats_of(p);
    ck_assert_uint_eq(s.pool_size, 3);
    ck_assert_uint_eq(s.trims, 1);
    ck_assert_uint_eq(s.bytes_reserved, 3 * 512);
    /* cache_limit 1000 bytes: one 512 block fits, not two. */
    mempool_t *q = make(0, 0, 1000, 0, 0, 0);
    for (int i = 0; i < 2; i++)
        b[i] = mempool_acquire(q, 512);
    mempool_release(q, b[0]);
    mempool_release(q, b[1]);
    s = stats_of(q);
    ck_assert_uint_eq(s.bytes_cached, 512);
    /* max_block_size 4096: larger requests are served, never cached. */
    mempool_t *r = make(0, 4096, 0, 0, 0, 0);
    void *big = mempool_acquire(r, 5000);
    ck_assert_ptr_nonnull(big);
    memset(big, 1, 5000);
    mempool_release(r, big);
    s = stats_of(r);
    ck_assert_uint_eq(s.unpooled, 1);
    ck_assert_uint_eq(s.hits + s.misses, 0);
    ck_assert_uint_eq(s.pool_size, 0);
    ck_assert_uint_eq(s.bytes_reserved, 0);
}
END_TEST

START_TEST(clear_and_trim)
{
    start();
    mempool_t *p = make(0, 0, 0, 0, 0, 0);
    void *b[6];
    size_t sizes[6] = {1024, 1024, 2048, 2048, 4096, 4096};
    for (int i = 0; i < 6; i++)
        b[i] = mempool_acquire(p, sizes[i]);
    for (int i = 0; i < 6; i++)
        mempool_release(p, b[i]);
    ck_assert_uint_eq(stats_of(p).bytes_cached, 14336);
    /* Trim to 6200: the largest blocks go first (two 4096 ones). */
    ck_assert_int_eq(mempool_trim(p, 6200), 8192);
    ck_assert_uint_eq(stats_of(p).bytes_cached, 6144);
    ck_assert_int_eq(mempool_trim(p, 6144), 0);
    ck_assert_int_eq(mempool_clear(p), 6144);
    mempool_stats_t s = stats_of(p);
    ck_assert_uint_eq(s.bytes_cached, 0);
    ck_assert_uint_eq(s.pool_size, 0);
    ck_assert_uint_eq(s.bytes_reserved, 0);
    ck_assert_uint_eq(s.trims, 6);
    ck_assert_int_eq(mempool_clear(p), 0);
    /* trim_all reaches custom pools too. */
    void *x = mempool_acquire(p, 100);
    mempool_release(p, x);
    ck_assert_int_ge(mempool_trim_all(), 112);
    ck_assert_uint_eq(stats_of(p).bytes_cached, 0);
}
END_TEST

START_TEST(default_host_pool_is_the_malloc_pool)
{
    start();
    mempool_t *d = mempool_default(MEMPOOL_KIND_HOST);
    ck_assert_ptr_nonnull(d);
    ck_assert_ptr_eq(d, mempool_default(MEMPOOL_KIND_HOST));
    mempool_stats_t before = stats_of(d);
    void *a = mempool_acquire(d, 200);
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq((uintptr_t)a % 16, 0);
    ck_assert_int_eq(mempool_release(d, a), 0);
    void *b = mp_malloc(200); /* the preload's malloc path: the same block */
    ck_assert_ptr_eq(a, b);
    mp_free(b);
    mempool_stats_t after = stats_of(d);
    ck_assert_uint_eq(after.acquired - before.acquired, 2);
    ck_assert_uint_eq(after.hits - before.hits, 1);
    ck_assert_str_eq(after.name, "host-default");
    ck_assert_int_ge(mempool_clear(d), 0);
}
END_TEST

START_TEST(no_cuda_means_enodev)
{
    start();
    void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (h == NULL)
        h = dlopen("libcuda.so.1", RTLD_NOW);
    if (h != NULL) {
        fprintf(stderr, "no_cuda_means_enodev: a CUDA driver is installed; checked in test_api_cuda\n");
        return;
    }
    errno = 0;
    ck_assert_ptr_null(mempool_default(MEMPOOL_KIND_DEVICE));
    ck_assert_int_eq(errno, ENODEV);
    mempool_config_t c;
    mempool_config_init(&c, MEMPOOL_KIND_DEVICE);
    mempool_t *p = NULL;
    ck_assert_int_eq(mempool_create(&c, &p), -ENODEV);
    mempool_config_init(&c, MEMPOOL_KIND_PINNED);
    ck_assert_int_eq(mempool_create(&c, &p), -ENODEV);
}
END_TEST

/* ---- stats output -------------------------------------------------------------------- */

static char *read_fd(int fd)
{
    static char buf[65536];
    lseek(fd, 0, SEEK_SET);
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

START_TEST(write_stats_json_and_text)
{
    start();
    mempool_config_t c;
    mempool_config_init(&c, MEMPOOL_KIND_HOST);
    c.name = "staging \"buffers\"";
    mempool_t *p = NULL;
    ck_assert_int_eq(mempool_create(&c, &p), 0);
    c.name = "hidden";
    c.flags = MEMPOOL_NO_STATS;
    mempool_t *h = NULL;
    ck_assert_int_eq(mempool_create(&c, &h), 0);
    void *a = mempool_acquire(p, 4000);
    mempool_release(p, a);
    a = mempool_acquire(p, 4000);
    char path[] = "/tmp/mempool-api-XXXXXX";
    int fd = mkstemp(path);
    unlink(path);
    ck_assert_int_eq(mempool_write_stats(p, fd, MEMPOOL_FORMAT_JSON), 0);
    char *j = read_fd(fd);
    ck_assert_ptr_nonnull(strstr(j, "\"name\": \"staging \\\"buffers\\\"\""));
    ck_assert_ptr_nonnull(strstr(j, "\"hits\": 1,"));
    ck_assert_ptr_nonnull(strstr(j, "\"misses\": 1,"));
    ck_assert_ptr_nonnull(strstr(j, "\"bytes_from_cache\": 4096,"));
    ck_assert_ptr_nonnull(strstr(j, "\"hit_rate\": 0.5000"));
    /* The peaks as everywhere in the stats file (schema version 3). */
    ck_assert_ptr_nonnull(strstr(j, "\"bytes_in_use_peak\": 4096,"));
    ck_assert_ptr_nonnull(strstr(j, "\"bytes_reserved_peak\": "));
    ck_assert_ptr_null(strstr(j, "peak_bytes"));
    ck_assert_int_eq(ftruncate(fd, 0), 0);
    lseek(fd, 0, SEEK_SET);
    ck_assert_int_eq(mempool_write_stats(NULL, fd, MEMPOOL_FORMAT_TEXT), 0);
    char *t = read_fd(fd);
    ck_assert_ptr_nonnull(strstr(t, "host-default"));
    ck_assert_ptr_nonnull(strstr(t, "staging"));
    ck_assert_ptr_null(strstr(t, "hidden")); /* MEMPOOL_NO_STATS */
    ck_assert_int_eq(mempool_write_stats(p, fd, (mempool_format_t)7), -EINVAL);
    ck_assert_int_eq(mempool_write_stats(p, -1, MEMPOOL_FORMAT_JSON), -EINVAL);
    close(fd);
    int pipefd[2];
    ck_assert_int_eq(pipe(pipefd), 0);
    close(pipefd[0]);
    signal(SIGPIPE, SIG_IGN);
    ck_assert_int_eq(mempool_write_stats(p, pipefd[1], MEMPOOL_FORMAT_JSON), -EIO);
    close(pipefd[1]);
    /* The stats file lists custom pools under "pools". */
    char file[] = "/tmp/mempool-api-file-XXXXXX";
    close(mkstemp(file));
    ck_assert_int_eq(mempool_stats_dump(file), 0);
    fd = open(file, O_RDONLY);
    j = read_fd(fd);
    close(fd);
    unlink(file);
    ck_assert_ptr_nonnull(strstr(j, "\"pools\": ["));
    ck_assert_ptr_nonnull(strstr(j, "staging"));
    ck_assert_ptr_null(strstr(j, "hidden"));
}
END_TEST

/* ---- NUMA -------------------------------------------------------------------------------- */

START_TEST(numa_placement)
{
    start();
    mempool_config_t c;
    mempool_config_init(&c, MEMPOOL_KIND_HOST);
    c.numa_node = 0;
    mempool_t *p = NULL;
    int r = mempool_create(&c, &p);
    if (r == -ENOTSUP) { /* no NUMA, or policies filtered (containers) */
        fprintf(stderr, "numa_placement: the kernel refuses memory policies here; -ENOTSUP checked\n");
        return;
    }
    ck_assert_int_eq(r, 0);
    size_t size = 256 << 10;
    char *b = mempool_acquire(p, size);
    ck_assert_ptr_nonnull(b);
    memset(b, 1, size);
    ck_assert_int_eq(mp_numa_node_of(b), 0);
    ck_assert_int_eq(mp_numa_node_of(b + size - 1), 0);
    /* move_pages with no target nodes reports where each page is. */
    void *pages[4] = {b, b + 4096, b + size / 2, b + size - 1};
    int status[4] = {-1, -1, -1, -1};
    ck_assert_int_eq(syscall(SYS_move_pages, 0, 4, pages, NULL, status, 0), 0);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(status[i], 0);
    mempool_stats_t s = stats_of(p);
    ck_assert_int_eq(s.numa_node, 0);
    mempool_release(p, b);
}
END_TEST

/* ---- memory pressure ------------------------------------------------------------------- */

/* The polling tests must not race the monitor thread (a pool with a
 * threshold starts it): their reading answers only the test's own thread,
 * the monitor gets "no reading" and trims nothing. */
static _Atomic uint64_t fake_avail = 900, fake_total = 1000;
static _Atomic bool monitor_reads;
static pthread_t test_thread;
static bool fake_reader(int kind, uint64_t *avail, uint64_t *total)
{
    (void)kind;
    if (!monitor_reads && !pthread_equal(pthread_self(), test_thread))
        return false;
    *avail = fake_avail;
    *total = fake_total;
    return true;
}

START_TEST(pressure_poll_clears_pools_over_threshold)
{
    start();
    test_thread = pthread_self();
    mp_pressure_set_reader(fake_reader);
    mempool_config_t c;
    mempool_config_init(&c, MEMPOOL_KIND_HOST);
    c.pressure_threshold = 0.8;
    mempool_t *watched = NULL, *plain = make(0, 0, 0, 0, 0, 0);
    ck_assert_int_eq(mempool_create(&c, &watched), 0);
    void *a = mempool_acquire(watched, 8192), *b = mempool_acquire(plain, 8192);
    mempool_release(watched, a);
    mempool_release(plain, b);
    fake_avail = 300; /* 70% in use: under 80% */
    ck_assert_int_eq(mempool_pressure_poll(), 0);
    ck_assert_uint_eq(stats_of(watched).bytes_cached, 8192);
    fake_avail = 100; /* 90% in use */
    ck_assert_int_eq(mempool_pressure_poll(), 8192);
    mempool_stats_t s = stats_of(watched);
    ck_assert_uint_eq(s.bytes_cached, 0);
    ck_assert_uint_eq(s.pressure_events, 1);
    ck_assert_uint_eq(stats_of(plain).bytes_cached, 8192); /* no threshold: untouched */
    ck_assert_int_eq(mempool_pressure_poll(), 0); /* nothing left to free */
    ck_assert_uint_eq(stats_of(watched).pressure_events, 1);
}
END_TEST

START_TEST(pressure_monitor_thread_trims)
{
    setenv("MEMPOOL_PRESSURE_INTERVAL", "10", 1);
    start();
    monitor_reads = true;
    mp_pressure_set_reader(fake_reader);
    fake_avail = 50; /* 95% in use */
    mempool_config_t c;
    mempool_config_init(&c, MEMPOOL_KIND_HOST);
    c.pressure_threshold = 0.5;
    mempool_t *p = NULL;
    ck_assert_int_eq(mempool_create(&c, &p), 0);
    /* 1 MiB: above what a thread cache keeps, so it waits in the shared
     * stack, where a trim from another thread frees it at once. */
    void *a = mempool_acquire(p, 1 << 20);
    mempool_release(p, a); /* wakes the parked monitor */
    for (int i = 0; i < 500 && stats_of(p).pressure_events == 0; i++)
        usleep(10000);
    mempool_stats_t s = stats_of(p);
    ck_assert_uint_ge(s.pressure_events, 1);
    ck_assert_uint_eq(s.bytes_cached, 0);
}
END_TEST

START_TEST(default_pools_follow_the_option)
{
    setenv("MEMPOOL_PRESSURE_THRESHOLD", "80", 1);
    start();
    test_thread = pthread_self();
    mp_pressure_set_reader(fake_reader);
    mempool_t *d = mempool_default(MEMPOOL_KIND_HOST);
    void *a = mempool_acquire(d, 3000);
    mempool_release(d, a);
    mp_host_trim(); /* the calling thread's cache too: then cache one block in the shared pool */
    fake_avail = 100;
    void *blocks[300];
    for (int i = 0; i < 300; i++)
        blocks[i] = mempool_acquire(d, 3000);
    for (int i = 0; i < 300; i++)
        mempool_release(d, blocks[i]);
    ck_assert_uint_gt(stats_of(d).bytes_cached, 0);
    ck_assert_int_gt(mempool_pressure_poll(), 0);
    ck_assert_uint_ge(stats_of(d).pressure_events, 1);
}
END_TEST

/* Two threads that release one block at the same instant (debug mode):
 * each round the main thread publishes a live block and a round number,
 * the racer spins on the number and says it saw it, the main thread spins
 * on that, then both release.  Two threads on two cores: no thread waits
 * for a time slice. */
static int race_rounds; /* 20000; 100 under valgrind, which runs one thread at a time */
static mempool_t *race_pool;
static void *_Atomic race_block;
static _Atomic int race_round, race_seen, race_done, race_wins;

/* Spin until *v == want; yield after a while (one core, valgrind). */
static void race_wait(_Atomic int *v, int want)
{
    for (int k = 0; atomic_load_explicit(v, memory_order_acquire) != want; k++)
        if (k > 2000)
            sched_yield();
}

static void *race_release(void *arg)
{
    (void)arg;
    for (int round = 1; round <= race_rounds; round++) {
        race_wait(&race_round, round);
        atomic_store(&race_seen, round);
        if (mempool_release(race_pool, atomic_load(&race_block)) == 0)
            atomic_fetch_add(&race_wins, 1);
        atomic_store(&race_done, round);
    }
    return NULL;
}

/* MEMPOOL_DEBUG in the core: a release to the wrong pool, a second release
 * and a second free() are findings, counted, and (continue) ignored; the
 * blocks stay usable and are handed out once. */
START_TEST(debug_mode_findings)
{
    setenv("MEMPOOL_DEBUG", "1", 1);
    setenv("MEMPOOL_DEBUG_ACTION", "continue", 1);
    setenv("MEMPOOL_LOG_LEVEL", "none", 1);
    start();
    ck_assert(mp_debug_on);
    mempool_t *a = make(0, 0, 0, 0, 0, 0), *b = make(0, 0, 0, 0, 0, 0);
    char *p = mempool_acquire(a, 100);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(mempool_release(b, p), -EINVAL);
    ck_assert_uint_eq(mp_debug_count(MP_DEBUG_WRONG_POOL), 1);
    ck_assert_int_eq(mempool_release(a, p), 0);
    ck_assert_int_eq(mempool_release(a, p), -EINVAL);
    ck_assert_uint_eq(mp_debug_count(MP_DEBUG_DOUBLE_FREE), 1);
    char *m = mp_malloc(100);
    ck_assert_uint_eq(mp_usable_size(m), 100); /* the request, not the class */
    m[100] = 1;                                 /* one past the end */
    mp_free(m);
    ck_assert_uint_eq(mp_debug_count(MP_DEBUG_OVERFLOW), 1);
    mp_free(m);
    ck_assert_uint_eq(mp_debug_count(MP_DEBUG_DOUBLE_FREE), 2);
    char *n1 = mp_malloc(100), *n2 = mp_malloc(100);
    ck_assert_ptr_eq(n1, m); /* reused once, */
    ck_assert_ptr_ne(n2, m); /* not twice */
    ck_assert_uint_eq(mp_debug_count(MP_DEBUG_USE_AFTER_FREE), 0);
    mp_free(n1);
    mp_free(n2);
    /* Simultaneous releases of one block from two threads: the
     * compare-and-swap of debug mode lets exactly one of them through. */
    race_pool = a;
    race_rounds = getenv("MEMPOOL_TEST_UNDER_VALGRIND") ? 100 : 20000;
    pthread_t racer;
    pthread_create(&racer, NULL, race_release, NULL);
    uint64_t refused = mp_debug_count(MP_DEBUG_DOUBLE_FREE);
    int wins = 0;
    for (int round = 1; round <= race_rounds; round++) {
        void *blk = mempool_acquire(a, 100);
        atomic_store(&race_block, blk);
        atomic_store(&race_wins, 0);
        atomic_store_explicit(&race_round, round, memory_order_release);
        race_wait(&race_seen, round);
        if (mempool_release(a, blk) == 0)
            atomic_fetch_add(&race_wins, 1);
        race_wait(&race_done, round);
        wins += atomic_load(&race_wins) == 1;
    }
    pthread_join(racer, NULL);
    ck_assert_int_eq(wins, race_rounds); /* exactly one release won every round */
    ck_assert_uint_eq(mp_debug_count(MP_DEBUG_DOUBLE_FREE) - refused, (uint64_t)race_rounds);
    ck_assert_uint_eq(stats_of(a).bytes_in_use, 0);
    ck_assert_int_eq(mempool_destroy(a), 0);
    ck_assert_int_eq(mempool_destroy(b), 0);
}
END_TEST

/* ---- threads ----------------------------------------------------------------------------- */

#define NPOOLS 4
#define NTHREADS 8
#define OPS 20000
static mempool_t *tpools[NPOOLS];

static void *worker(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg, seed = id * 7919u + 1;
    struct {
        unsigned char *p;
        size_t n;
        int pool;
    } held[16] = {{0}};
    for (int i = 0; i < OPS; i++) {
        int k = (int)(rand_r(&seed) % 16);
        if (held[k].p) {
            for (size_t j = 0; j < held[k].n; j += 61)
                if (held[k].p[j] != (unsigned char)id)
                    return (void *)1; /* someone else wrote our block */
            if (mempool_release(tpools[held[k].pool], held[k].p) != 0)
                return (void *)2;
            held[k].p = NULL;
        } else {
            held[k].pool = (int)(rand_r(&seed) % NPOOLS);
            held[k].n = 1 + rand_r(&seed) % 20000;
            held[k].p = mempool_acquire(tpools[held[k].pool], held[k].n);
            if (held[k].p == NULL)
                return (void *)3;
            memset(held[k].p, (int)id, held[k].n);
        }
    }
    for (int k = 0; k < 16; k++)
        if (held[k].p && mempool_release(tpools[held[k].pool], held[k].p) != 0)
            return (void *)2;
    return NULL;
}

START_TEST(threads_across_pools)
{
    start();
    tpools[0] = make(0, 0, 0, 0, 0, 0);
    tpools[1] = make(8, 0, 0, 64, MEMPOOL_CLASSES_POW2, MEMPOOL_ZERO_ON_RELEASE);
    tpools[2] = make(0, 0, 64 << 10, 0, MEMPOOL_CLASSES_EXACT, 0);
    tpools[3] = mempool_default(MEMPOOL_KIND_HOST);
    pthread_t t[NTHREADS];
    for (uintptr_t i = 0; i < NTHREADS; i++)
        pthread_create(&t[i], NULL, worker, (void *)(i + 1));
    for (int i = 0; i < NTHREADS; i++) {
        void *r;
        pthread_join(t[i], &r);
        ck_assert_ptr_null(r);
    }
    for (int i = 0; i < 3; i++) {
        mempool_stats_t s = stats_of(tpools[i]);
        ck_assert_uint_eq(s.acquired, s.released);
        ck_assert_uint_eq(s.bytes_in_use, 0);
        ck_assert_uint_eq(s.hits + s.misses + s.unpooled, s.acquired);
        ck_assert_uint_eq(s.release_errors, 0);
        ck_assert_int_eq(mempool_destroy(tpools[i]), 0);
    }
}
END_TEST

/* fork() while another thread keeps taking the pools' locks (clear takes
 * the pool mutex, creating a pool the registry's): the child must be able
 * to use, clear and create pools.  Before the pools took part in the fork
 * handlers, a child sometimes inherited a held mutex and hung. */
static _Atomic bool fork_stop;

/* A pool made and destroyed without Check's asserts (other threads, children). */
static bool make_and_destroy(void)
{
    mempool_config_t c;
    mempool_t *p = NULL;
    return mempool_config_init(&c, MEMPOOL_KIND_HOST) == 0 && mempool_create(&c, &p) == 0
           && mempool_destroy(p) == 0;
}

static void *lock_churn(void *arg)
{
    mempool_t *pool = arg;
    while (!atomic_load(&fork_stop)) {
        void *a = mempool_acquire(pool, 4096), *b = mempool_acquire(pool, 100000);
        mempool_release(pool, a);
        mempool_release(pool, b);
        mempool_clear(pool);
        make_and_destroy();
    }
    return NULL;
}

START_TEST(fork_while_pool_locks_are_taken)
{
    start();
    mempool_t *pool = make(0, 0, 0, 0, 0, 0);
    atomic_store(&fork_stop, false);
    pthread_t t;
    pthread_create(&t, NULL, lock_churn, pool);
    int hung = 0, bad = 0;
    for (int i = 0; i < 200; i++) {
        pid_t pid = fork();
        if (pid == 0) {
            signal(SIGALRM, SIG_DFL); /* not Check's handler, which kills the whole group */
            alarm(5);                 /* a deadlock ends as SIGALRM */
            void *p = mempool_acquire(pool, 4096);
            int ok = p != NULL && mempool_release(pool, p) == 0;
            mempool_clear(pool);
            ok = ok && make_and_destroy();
            _exit(ok ? 0 : 1);
        }
        int st = 0;
        waitpid(pid, &st, 0);
        hung += WIFSIGNALED(st);
        bad += WIFEXITED(st) && WEXITSTATUS(st) != 0;
    }
    atomic_store(&fork_stop, true);
    pthread_join(t, NULL);
    ck_assert_int_eq(hung, 0);
    ck_assert_int_eq(bad, 0);
    ck_assert_int_eq(mempool_destroy(pool), 0);
}
END_TEST

/* ---- thread caches ------------------------------------------------------------------- */

static mempool_t *tc_pool;
static void *tc_ptr;

static void *release_from_thread(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)mempool_release(tc_pool, tc_ptr);
}

/* The block sits in the main thread's cache; a release from another thread
 * is still refused (the entry's state is shared, not per thread). */
START_TEST(cross_thread_double_release_is_refused)
{
    start();
    tc_pool = make(0, 0, 0, 0, 0, 0);
    tc_ptr = mempool_acquire(tc_pool, 256);
    ck_assert_int_eq(mempool_release(tc_pool, tc_ptr), 0);
    pthread_t t;
    void *r;
    pthread_create(&t, NULL, release_from_thread, NULL);
    pthread_join(t, &r);
    ck_assert_int_eq((int)(intptr_t)r, -EINVAL);
    ck_assert_ptr_eq(mempool_acquire(tc_pool, 256), tc_ptr); /* handed out once ... */
    void *other = mempool_acquire(tc_pool, 256);
    ck_assert_ptr_ne(other, tc_ptr); /* ... not twice */
    /* A live block released by another thread is fine. */
    pthread_create(&t, NULL, release_from_thread, NULL);
    pthread_join(t, &r);
    ck_assert_int_eq((int)(intptr_t)r, 0);
    ck_assert_int_eq(mempool_release(tc_pool, other), 0);
    mempool_stats_t s = stats_of(tc_pool);
    ck_assert_uint_eq(s.release_errors, 1);
    ck_assert_uint_eq(s.acquired, 3);
    ck_assert_uint_eq(s.released, 3);
    ck_assert_uint_eq(s.bytes_in_use, 0);
    ck_assert_uint_eq(s.pool_size, 2);
    ck_assert_int_eq(mempool_destroy(tc_pool), 0);
}
END_TEST

static void *cache_ten_and_exit(void *arg)
{
    (void)arg;
    void *b[10];
    for (int i = 0; i < 10; i++)
        b[i] = mempool_acquire(tc_pool, 4096);
    for (int i = 0; i < 10; i++)
        mempool_release(tc_pool, b[i]);
    return NULL;
}

/* A thread's cache goes back to the pool when the thread exits. */
START_TEST(thread_exit_returns_its_cache)
{
    start();
    tc_pool = make(0, 0, 0, 0, 0, 0);
    pthread_t t;
    pthread_create(&t, NULL, cache_ten_and_exit, NULL);
    pthread_join(t, NULL);
    mempool_stats_t s = stats_of(tc_pool);
    ck_assert_uint_eq(s.pool_size, 10);
    ck_assert_uint_eq(s.bytes_cached, 10 * 4096);
    ck_assert_uint_eq(s.acquired, 10);
    ck_assert_uint_eq(s.released, 10);
    ck_assert_uint_eq(s.peak_bytes_in_use, 10 * 4096);
    ck_assert_int_eq(mempool_clear(tc_pool), 10 * 4096);
    ck_assert_uint_eq(stats_of(tc_pool).bytes_cached, 0);
    ck_assert_int_eq(mempool_destroy(tc_pool), 0);
}
END_TEST

static void *clear_from_thread(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)mempool_clear(tc_pool);
}

/* A clear from another thread cannot reach into this thread's cache; this
 * thread flushes it (and the pool trims again) at its next call. */
START_TEST(clear_reaches_other_caches_at_their_next_call)
{
    start();
    tc_pool = make(0, 0, 0, 0, 0, 0);
    void *b[4];
    for (int i = 0; i < 4; i++)
        b[i] = mempool_acquire(tc_pool, 1024);
    for (int i = 0; i < 4; i++)
        mempool_release(tc_pool, b[i]);
    pthread_t t;
    void *r;
    pthread_create(&t, NULL, clear_from_thread, NULL);
    pthread_join(t, &r);
    ck_assert_int_eq((int)(intptr_t)r, 0); /* all four were in this thread's cache */
    ck_assert_uint_eq(stats_of(tc_pool).bytes_cached, 4 * 1024);
    void *x = mempool_acquire(tc_pool, 1024); /* flushes, trims: then a miss */
    ck_assert_ptr_nonnull(x);
    mempool_stats_t s = stats_of(tc_pool);
    ck_assert_uint_eq(s.bytes_cached, 0);
    ck_assert_uint_eq(s.misses, 5);
    ck_assert_uint_eq(s.trims, 4);
    mempool_release(tc_pool, x);
}
END_TEST

static pthread_barrier_t tc_barrier;
static void *cache_then_wait(void *arg)
{
    (void)arg;
    mempool_release(tc_pool, mempool_acquire(tc_pool, 512));
    pthread_barrier_wait(&tc_barrier); /* cached in this thread */
    pthread_barrier_wait(&tc_barrier); /* the pool is destroyed and replaced meanwhile */
    mempool_release(tc_pool, mempool_acquire(tc_pool, 512)); /* the new pool */
    return NULL;
}

/* A pool destroyed while a live thread still has a cache of it: the
 * thread's next pool in the same slot and its exit see a fresh cache. */
START_TEST(destroy_while_another_thread_has_a_cache)
{
    start();
    tc_pool = make(0, 0, 0, 0, 0, 0);
    pthread_barrier_init(&tc_barrier, NULL, 2);
    pthread_t t;
    pthread_create(&t, NULL, cache_then_wait, NULL);
    pthread_barrier_wait(&tc_barrier);
    ck_assert_uint_eq(stats_of(tc_pool).bytes_cached, 512);
    ck_assert_int_eq(mempool_destroy(tc_pool), 0); /* frees the other thread's cache too */
    tc_pool = make(0, 0, 0, 0, 0, 0);
    pthread_barrier_wait(&tc_barrier);
    pthread_join(t, NULL);
    mempool_stats_t s = stats_of(tc_pool);
    ck_assert_uint_eq(s.acquired, 1);
    ck_assert_uint_eq(s.misses, 1);
    ck_assert_uint_eq(s.bytes_cached, 512);
    ck_assert_int_eq(mempool_destroy(tc_pool), 0);
    pthread_barrier_destroy(&tc_barrier);
}
END_TEST

/* Blocks acquired by one thread and released by another, through a shared
 * ring (the producer/consumer pattern of staging buffers). */
#define RING 64
static struct {
    pthread_mutex_t lock;
    unsigned char *p[RING];
    size_t n[RING];
    unsigned char tag[RING];
    int count;
} ring = {.lock = PTHREAD_MUTEX_INITIALIZER};

static void *swapper(void *arg)
{
    unsigned id = (unsigned)(uintptr_t)arg, seed = id * 104729u;
    for (int i = 0; i < OPS; i++) {
        unsigned char *q = NULL, tag = 0;
        size_t n = 0;
        pthread_mutex_lock(&ring.lock);
        if (ring.count && rand_r(&seed) % 2) {
            ring.count--;
            q = ring.p[ring.count], n = ring.n[ring.count], tag = ring.tag[ring.count];
        }
        pthread_mutex_unlock(&ring.lock);
        if (q) {
            for (size_t j = 0; j < n; j += 37)
                if (q[j] != tag)
                    return (void *)1;
            if (mempool_release(tc_pool, q) != 0)
                return (void *)2;
            continue;
        }
        n = 1 + rand_r(&seed) % 9000;
        q = mempool_acquire(tc_pool, n);
        if (q == NULL)
            return (void *)3;
        memset(q, (int)(id + (unsigned)i), n);
        pthread_mutex_lock(&ring.lock);
        bool room = ring.count < RING;
        if (room) {
            ring.p[ring.count] = q, ring.n[ring.count] = n, ring.tag[ring.count] = (unsigned char)(id + (unsigned)i);
            ring.count++;
        }
        pthread_mutex_unlock(&ring.lock);
        if (!room && mempool_release(tc_pool, q) != 0)
            return (void *)2;
    }
    return NULL;
}

START_TEST(blocks_released_by_other_threads)
{
    start();
    tc_pool = make(0, 0, 0, 0, 0, 0);
    pthread_t t[4];
    for (uintptr_t i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, swapper, (void *)(i + 1));
    for (int i = 0; i < 4; i++) {
        void *r;
        pthread_join(t[i], &r);
        ck_assert_ptr_null(r);
    }
    while (ring.count)
        ck_assert_int_eq(mempool_release(tc_pool, ring.p[--ring.count]), 0);
    mempool_stats_t s = stats_of(tc_pool);
    ck_assert_uint_eq(s.acquired, s.released);
    ck_assert_uint_eq(s.bytes_in_use, 0);
    ck_assert_uint_eq(s.release_errors, 0);
    ck_assert_uint_gt(s.hits, 0);
    ck_assert_int_eq(mempool_destroy(tc_pool), 0);
}
END_TEST

START_TEST(too_many_pools)
{
    start();
    mempool_t *p[64];
    mempool_config_t c;
    mempool_config_init(&c, MEMPOOL_KIND_HOST);
    for (int i = 0; i < 64; i++)
        ck_assert_int_eq(mempool_create(&c, &p[i]), 0);
    mempool_t *extra = NULL;
    ck_assert_int_eq(mempool_create(&c, &extra), -EINVAL);
    ck_assert_int_eq(mempool_destroy(p[10]), 0);
    ck_assert_int_eq(mempool_create(&c, &extra), 0); /* a slot was freed */
}
END_TEST

static Suite *api_suite(void)
{
    Suite *s = suite_create("api");
    TCase *tc = tcase_create("api");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, config_errors, 0, (int)(sizeof(config_table) / sizeof(config_table[0])));
    tcase_add_test(tc, null_arguments);
    tcase_add_test(tc, strerror_names_every_code);
    tcase_add_test(tc, release_then_acquire_is_a_hit);
    tcase_add_test(tc, double_and_foreign_release_are_refused);
    tcase_add_loop_test(tc, alignment_of_every_block, 0, (int)(sizeof(align_table) / sizeof(align_table[0])));
    tcase_add_test(tc, zero_on_release);
    tcase_add_test(tc, exact_matching);
    tcase_add_test(tc, pow2_classes_share_more);
    tcase_add_test(tc, limits);
    tcase_add_test(tc, clear_and_trim);
    tcase_add_test(tc, default_host_pool_is_the_malloc_pool);
    tcase_add_test(tc, no_cuda_means_enodev);
    tcase_add_test(tc, write_stats_json_and_text);
    tcase_add_test(tc, numa_placement);
    tcase_add_test(tc, pressure_poll_clears_pools_over_threshold);
    tcase_add_test(tc, pressure_monitor_thread_trims);
    tcase_add_test(tc, default_pools_follow_the_option);
    tcase_add_test(tc, too_many_pools);
    tcase_add_test(tc, debug_mode_findings);
    suite_add_tcase(s, tc);
    TCase *th = tcase_create("threads"); /* also under ASan+UBSan and TSan */
    tcase_set_timeout(th, 120);
    tcase_add_test(th, threads_across_pools);
    tcase_add_test(th, blocks_released_by_other_threads);
    tcase_add_test(th, cross_thread_double_release_is_refused);
    tcase_add_test(th, thread_exit_returns_its_cache);
    tcase_add_test(th, clear_reaches_other_caches_at_their_next_call);
    tcase_add_test(th, destroy_while_another_thread_has_a_cache);
    tcase_add_test(th, fork_while_pool_locks_are_taken);
    suite_add_tcase(s, th);
    return s;
}

MP_CHECK_MAIN(api_suite)
