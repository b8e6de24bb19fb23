/* Loaded by deepbind_main.c with RTLD_DEEPBIND: its own malloc/free/realloc
 * references resolve in its local scope first, i.e. to glibc's, not to the
 * preload.  Every function here hands memory across the boundary (or takes
 * it), so the shim meets glibc pointers and glibc meets the shim's. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <string.h>
#include <stdio.h>

struct node { struct node *next; size_t len; char *text; };

/* Library allocates, the main program frees. */
char *lib_strdup(const char *s) { return strdup(s); }

char *lib_alloc(size_t n, unsigned char fill)
{
    char *p = malloc(n);
    if (p) memset(p, fill, n);
    return p;
}

void *lib_calloc(size_t n, size_t size) { return calloc(n, size); }

char *lib_format(int i)
{
    char *s = NULL;
    if (asprintf(&s, "item-%05d-%s", i, i % 2 ? "odd" : "even") < 0) return NULL;
    return s;
}

struct node *lib_make_list(int n)
{
    struct node *head = NULL;
    for (int i = 0; i < n; i++) {
        struct node *nd = malloc(sizeof *nd);
        char buf[64];
        snprintf(buf, sizeof buf, "node %d", i);
        nd->text = strdup(buf);
        nd->len = strlen(buf);
        nd->next = head;
        head = nd;
    }
    return head;
}

/* The main program allocates, the library frees or reallocates. */
unsigned long lib_sum_and_free(unsigned char *p, size_t n)
{
    unsigned long sum = 0;
    for (size_t i = 0; i < n; i++) sum = sum * 31 + p[i];
    free(p);
    return sum;
}

char *lib_grow(char *p, size_t old, size_t n)
{
    char *q = realloc(p, n);
    if (q && n > old) memset(q + old, 'g', n - old);
    return q;
}

void lib_free(void *p) { free(p); }

unsigned long lib_free_list(struct node *head)
{
    unsigned long total = 0;
    while (head) {
        struct node *next = head->next;
        total += head->len;
        free(head->text);
        free(head);
        head = next;
    }
    return total;
}
