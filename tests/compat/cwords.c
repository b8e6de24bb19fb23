/* Compiled by gcc inside scripts/compat, then run on a generated text: a
 * chained hash table of malloc'ed nodes, strdup'ed keys, a realloc-grown
 * array, qsort, and getline's own buffer. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct entry { struct entry *next; char *word; long count; };

static unsigned long hash(const char *s)
{
    unsigned long h = 5381;
    while (*s) h = h * 33 + (unsigned char)*s++;
    return h;
}

static int by_count(const void *a, const void *b)
{
    const struct entry *x = *(struct entry *const *)a, *y = *(struct entry *const *)b;
    if (x->count != y->count) return x->count < y->count ? 1 : -1;
    return strcmp(x->word, y->word);
}

int main(int argc, char **argv)
{
    FILE *f = argc > 1 ? fopen(argv[1], "r") : stdin;
    if (!f) { perror("fopen"); return 2; }
    size_t nb = 64, n = 0;
    struct entry **table = calloc(nb, sizeof *table);
    char *line = NULL;
    size_t cap = 0;
    long words = 0;
    while (getline(&line, &cap, f) > 0) {
        for (char *save = NULL, *w = strtok_r(line, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save)) {
            words++;
            struct entry *e = table[hash(w) % nb];
            while (e && strcmp(e->word, w) != 0) e = e->next;
            if (e) { e->count++; continue; }
            e = malloc(sizeof *e);
            e->word = strdup(w);
            e->count = 1;
            e->next = table[hash(w) % nb];
            table[hash(w) % nb] = e;
            if (++n > nb * 2) {  /* rehash into a table twice the size */
                size_t nb2 = nb * 2;
                struct entry **t2 = calloc(nb2, sizeof *t2);
                for (size_t i = 0; i < nb; i++)
                    for (struct entry *x = table[i], *next; x; x = next) {
                        next = x->next;
                        x->next = t2[hash(x->word) % nb2];
                        t2[hash(x->word) % nb2] = x;
                    }
                free(table);
                table = t2;
                nb = nb2;
            }
        }
    }
    free(line);
    struct entry **all = NULL;
    size_t m = 0;
    for (size_t i = 0; i < nb; i++)
        for (struct entry *x = table[i]; x; x = x->next) {
            if ((m & (m - 1)) == 0) all = realloc(all, (m ? m * 2 : 1) * sizeof *all);
            all[m++] = x;
        }
    qsort(all, m, sizeof *all, by_count);
    printf("%ld words, %zu distinct, %zu buckets\n", words, m, nb);
    for (size_t i = 0; i < m && i < 15; i++) printf("%6ld %s\n", all[i]->count, all[i]->word);
    for (size_t i = 0; i < m; i++) { free(all[i]->word); free(all[i]); }
    free(all);
    free(table);
    if (f != stdin) fclose(f);
    return 0;
}
