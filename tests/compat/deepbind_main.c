/* dlopen()s libdeepbind_lib.so with RTLD_DEEPBIND and passes heap memory both
 * ways: library-allocated blocks freed/realloc'ed here, blocks allocated here
 * freed/realloc'ed by the library (whose free is glibc's, not the preload's).
 * Prints one line per step (flushed) so a crash shows where it happened.
 * Usage: deepbind LIB [STEP]: only step STEP (1-8) when given, else all. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct node { struct node *next; size_t len; char *text; };

static void *sym(void *h, const char *name)
{
    void *p = dlsym(h, name);
    if (!p) { fprintf(stderr, "dlsym %s: %s\n", name, dlerror()); exit(2); }
    return p;
}
typedef char *lib_strdup_t(const char *);
typedef char *lib_alloc_t(size_t, unsigned char);
typedef void *lib_calloc_t(size_t, size_t);
typedef char *lib_format_t(int);
typedef struct node *lib_make_list_t(int);
typedef unsigned long lib_sum_and_free_t(unsigned char *, size_t);
typedef char *lib_grow_t(char *, size_t, size_t);
typedef void lib_free_t(void *);
typedef unsigned long lib_free_list_t(struct node *);

static unsigned long hash(const void *p, size_t n)
{
    const unsigned char *c = p;
    unsigned long h = 1469598103934665603UL;
    for (size_t i = 0; i < n; i++) h = (h ^ c[i]) * 1099511628211UL;
    return h;
}

static void step(const char *what, unsigned long v)
{
    printf("%-28s %lu\n", what, v);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    const char *path = argc > 1 ? argv[1] : "./libdeepbind_lib.so";
    int only = argc > 2 ? atoi(argv[2]) : 0;
#define STEP(n) if (only == 0 || only == (n))
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL | RTLD_DEEPBIND);
    if (!h) { fprintf(stderr, "dlopen: %s\n", dlerror()); return 2; }
    lib_strdup_t *lib_strdup = (lib_strdup_t *)sym(h, "lib_strdup");
    lib_alloc_t *lib_alloc = (lib_alloc_t *)sym(h, "lib_alloc");
    lib_calloc_t *lib_calloc = (lib_calloc_t *)sym(h, "lib_calloc");
    lib_format_t *lib_format = (lib_format_t *)sym(h, "lib_format");
    lib_make_list_t *lib_make_list = (lib_make_list_t *)sym(h, "lib_make_list");
    lib_sum_and_free_t *lib_sum_and_free = (lib_sum_and_free_t *)sym(h, "lib_sum_and_free");
    lib_grow_t *lib_grow = (lib_grow_t *)sym(h, "lib_grow");
    lib_free_t *lib_free = (lib_free_t *)sym(h, "lib_free");
    lib_free_list_t *lib_free_list = (lib_free_list_t *)sym(h, "lib_free_list");
    unsigned long acc;
    static const size_t sizes[] = { 8, 24, 100, 1000, 5000, 70000, 300000, 2u << 20 };

    /* 1. library strdup, main frees */
    STEP(1) {
        acc = 0;
        for (int i = 0; i < 2000; i++) {
            char buf[80];
            snprintf(buf, sizeof buf, "string number %d %.*s", i, i % 40, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
            char *s = lib_strdup(buf);
            if (strcmp(s, buf) != 0) { printf("strdup mismatch at %d\n", i); return 1; }
            acc += hash(s, strlen(s));
            free(s);
        }
        step("lib strdup / main free", acc);
    }

    /* 2. library malloc, main realloc (grow past the pool sizes) and free */
    STEP(2) {
        acc = 0;
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            size_t n = sizes[k];
            char *p = lib_alloc(n, (unsigned char)('a' + k));
            p = realloc(p, n * 3);
            memset(p + n, 'r', n * 2);
            acc += hash(p, n * 3);
            p = realloc(p, n / 2 + 1);
            acc += hash(p, n / 2 + 1);
            free(p);
        }
        step("lib malloc / main realloc", acc);
    }

    /* 3. library calloc and asprintf, main frees */
    STEP(3) {
        acc = 0;
        for (int i = 0; i < 1000; i++) {
            unsigned *z = lib_calloc((size_t)i + 1, sizeof *z);
            for (int j = 0; j <= i; j++) acc += z[j];
            z[i] = (unsigned)i;
            acc += z[i];
            free(z);
            char *s = lib_format(i);
            acc += hash(s, strlen(s));
            free(s);
        }
        step("lib calloc,asprintf / free", acc);
    }

    /* 4. main malloc, library frees */
    STEP(4) {
        acc = 0;
        for (int i = 0; i < 2000; i++) {
            size_t n = 1 + (size_t)(i * 37) % 9000;
            unsigned char *p = malloc(n);
            for (size_t j = 0; j < n; j++) p[j] = (unsigned char)(j * 7 + (size_t)i);
            acc += lib_sum_and_free(p, n);
        }
        step("main malloc / lib free", acc);
    }

    /* 5. main malloc, library realloc, main frees */
    STEP(5) {
        acc = 0;
        for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            size_t n = sizes[k];
            char *p = malloc(n);
            memset(p, 'm', n);
            p = lib_grow(p, n, n * 4);
            acc += hash(p, n * 4);
            free(p);
        }
        step("main malloc / lib realloc", acc);
    }

    /* 6. main strdup, library frees */
    STEP(6) {
        acc = 0;
        for (int i = 0; i < 2000; i++) {
            char buf[40];
            snprintf(buf, sizeof buf, "main %d", i);
            char *s = strdup(buf);
            acc += hash(s, strlen(s));
            lib_free(s);
        }
        step("main strdup / lib free", acc);
    }

    /* 7. a linked list built by the library, torn down here */
    STEP(7) {
        struct node *l = lib_make_list(5000);
        acc = 0;
        while (l) {
            struct node *next = l->next;
            acc += hash(l->text, l->len);
            free(l->text);
            free(l);
            l = next;
        }
        step("lib list / main free", acc);
    }

    /* 8. a linked list built here, torn down by the library */
    STEP(8) {
        struct node *head = NULL;
        for (int i = 0; i < 5000; i++) {
            struct node *nd = malloc(sizeof *nd);
            char buf[32];
            snprintf(buf, sizeof buf, "main node %d", i);
            nd->text = strdup(buf);
            nd->len = strlen(buf);
            nd->next = head;
            head = nd;
        }
        step("main list / lib free", lib_free_list(head));
    }

    if (dlclose(h) != 0) { fprintf(stderr, "dlclose: %s\n", dlerror()); return 1; }
    step("dlclose", 0);
    return 0;
}
