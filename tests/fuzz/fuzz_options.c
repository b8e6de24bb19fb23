/*
 * libFuzzer target: MEMPOOL_* option values and the stats path template,
 * the two things the shim reads from an environment it does not control.
 * Input: first byte picks the option, the rest is the value (and the
 * template).  Besides ASan/UBSan's checks it asserts what the parser
 * promises: an accepted number lies within the option's bounds, and an
 * expanded path fits its buffer.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n);

static void check(int ok, const char *what, const char *text)
{
    if (!ok) {
        fprintf(stderr, "fuzz_options: %s (input \"%.80s\")\n", what, text);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    if (n == 0)
        return 0;
    static char text[MP_PATH_MAX * 2];
    size_t len = n - 1 < sizeof(text) - 1 ? n - 1 : sizeof(text) - 1;
    memcpy(text, data + 1, len);
    text[len] = '\0';
    mp_opt_id_t id = (mp_opt_id_t)(data[0] % MP_OPT_COUNT);
    const mp_option_desc_t *d = &mp_option_table[id];
    uint64_t v = 0, lo = 0, hi = 0;
    const char *why = mp_option_parse(id, text, &v);
    if (why == NULL && (d->type == MP_OPT_size || d->type == MP_OPT_count)) {
        check(mp_option_parse(id, d->min, &lo) == NULL && mp_option_parse(id, d->max, &hi) == NULL,
              "bounds do not parse", d->name);
        check(v >= lo && v <= hi, "accepted a value out of bounds", text);
    }
    if (why == NULL && d->type == MP_OPT_bool)
        check(v <= 1, "a boolean that is neither 0 nor 1", text);
    if (why == NULL && d->type == MP_OPT_path)
        check(len > 0 && len < MP_PATH_MAX, "accepted an empty or too long path", text);
    char out[MP_PATH_MAX];
    memset(out, 'x', sizeof(out));
    if (mp_stats_expand_path(text, out, sizeof(out)))
        check(memchr(out, '\0', sizeof(out)) != NULL, "expanded path not terminated", text);
    return 0;
}
