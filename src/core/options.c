/*
 * MEMPOOL_* options: the table (from options.def), parsing and loading.
 * The environment is read once, at initialisation, without allocating.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"

const mp_option_desc_t mp_option_table[MP_OPT_COUNT] = {
#define MP_OPTION(id, type, def, min, max, choices, doc) \
    {"MEMPOOL_" #id, MP_OPT_##type, def, min, max, choices, doc},
#include "options.def"
#undef MP_OPTION
};

/* Log level preset so that messages before the options are read use warn. */
uint64_t mp_opt_values[MP_OPT_COUNT] = {[MP_OPT_LOG_LEVEL] = MP_LOG_WARN};
MP_STARTUP_DATA char mp_opt_stats_path[MP_PATH_MAX];

static bool ieq(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        char x = *a, y = *b;
        if (x >= 'A' && x <= 'Z')
            x = (char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z')
            y = (char)(y - 'A' + 'a');
        if (x != y)
            return false;
    }
    return *a == *b;
}

/* Unsigned decimal with an optional binary suffix (K, M, G, T; KB/KiB too). */
static const char *parse_number(const char *s, bool allow_suffix, uint64_t *out)
{
    if (*s == '\0')
        return "empty value";
    if (*s == '-')
        return "negative value";
    uint64_t v = 0;
    const char *p = s;
    if (*p < '0' || *p > '9')
        return "not a number";
    for (; *p >= '0' && *p <= '9'; p++) {
        uint64_t d = (uint64_t)(*p - '0');
        if (v > (UINT64_MAX - d) / 10)
            return "number too large";
        v = v * 10 + d;
    }
    if (*p != '\0') {
        if (!allow_suffix)
            return "not a whole number";
        unsigned shift;
        switch (*p) {
        case 'k': case 'K': shift = 10; break;
        case 'm': case 'M': shift = 20; break;
        case 'g': case 'G': shift = 30; break;
        case 't': case 'T': shift = 40; break;
        default: return "unknown unit (use K, M, G or T)";
        }
        p++;
        if (!(*p == '\0' || ieq(p, "b") || ieq(p, "ib")))
            return "unknown unit (use K, M, G or T)";
        if (v > (UINT64_MAX >> shift))
            return "number too large";
        v <<= shift;
    }
    *out = v;
    return NULL;
}

const char *mp_option_parse(mp_opt_id_t id, const char *text, uint64_t *out)
{
    const mp_option_desc_t *d = &mp_option_table[id];
    switch (d->type) {
    case MP_OPT_bool:
        if (ieq(text, "1") || ieq(text, "true") || ieq(text, "yes") || ieq(text, "on")) {
            *out = 1;
            return NULL;
        }
        if (ieq(text, "0") || ieq(text, "false") || ieq(text, "no") || ieq(text, "off")) {
            *out = 0;
            return NULL;
        }
        return "not a boolean (use 1/0, true/false, yes/no, on/off)";
    case MP_OPT_size_or_percent: {
        size_t n = strlen(text);
        if (n > 1 && text[n - 1] == '%') {
            char num[24];
            if (n - 1 >= sizeof(num))
                return "number too large";
            memcpy(num, text, n - 1);
            num[n - 1] = '\0';
            uint64_t pct;
            const char *why = parse_number(num, false, &pct);
            if (why)
                return why;
            if (pct > 100)
                return "above 100%";
            *out = MP_OPT_PERCENT | pct;
            return NULL;
        }
    }
        /* a plain size */
        /* fall through */
    case MP_OPT_size:
    case MP_OPT_count: {
        uint64_t v, lo = 0, hi = 0;
        const char *why = parse_number(text, d->type != MP_OPT_count, &v);
        if (why)
            return why;
        parse_number(d->min, true, &lo);
        parse_number(d->max, true, &hi);
        if (v < lo)
            return "below the minimum";
        if (v > hi)
            return "above the maximum";
        *out = v;
        return NULL;
    }
    case MP_OPT_choice: {
        size_t n = strlen(text);
        uint64_t idx = 0;
        for (const char *c = d->choices; *c; idx++) {
            const char *end = strchr(c, '|');
            size_t len = end ? (size_t)(end - c) : strlen(c);
            if (len == n && strncmp(c, text, n) == 0) {
                *out = idx;
                return NULL;
            }
            if (!end)
                break;
            c = end + 1;
        }
        return "not one of the choices";
    }
    case MP_OPT_path:
        if (*text == '\0')
            return "empty value";
        if (strlen(text) >= MP_PATH_MAX)
            return "path too long";
        *out = 0;
        return NULL;
    }
    return "unknown option type";
}

int mp_options_load(mp_getenv_fn get)
{
    int bad = 0;
    /* Defaults first, so a warning printed while loading uses the default
     * log level rather than a half-read one. */
    for (int i = 0; i < MP_OPT_COUNT; i++)
        mp_option_parse((mp_opt_id_t)i, mp_option_table[i].def, &mp_opt_values[i]);
    mp_log_set_level((int)mp_opt_values[MP_OPT_LOG_LEVEL]);
    strcpy(mp_opt_stats_path, mp_option_table[MP_OPT_STATS_FILE].def);

    /* Log level before the rest, so its own value decides what is printed. */
    static const mp_opt_id_t order_first = MP_OPT_LOG_LEVEL;
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < MP_OPT_COUNT; i++) {
            if ((pass == 0) != (i == (int)order_first))
                continue;
            const mp_option_desc_t *d = &mp_option_table[i];
            const char *text = get ? get(d->name) : NULL;
            if (text == NULL)
                continue;
            uint64_t v;
            const char *why = mp_option_parse((mp_opt_id_t)i, text, &v);
            if (why) {
                bad++;
                mp_log(MP_LOG_WARN, "%s=%.64s%s: %s; using %s", d->name, text,
                       strlen(text) > 64 ? "..." : "", why, d->def);
                continue;
            }
            mp_opt_values[i] = v;
            if (d->type == MP_OPT_path)
                strcpy(mp_opt_stats_path, text);
            if (i == (int)MP_OPT_LOG_LEVEL) /* the logger sits below the options */
                mp_log_set_level((int)v);
        }
    }
    return bad;
}
