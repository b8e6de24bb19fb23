/*
 * For test_cuda_scenarios: a program that links no CUDA, dlopen()s the
 * extension argv[1] with RTLD_LOCAL | RTLD_NOW and runs 100 allocate/free
 * pairs in it.
 */
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    if (argc < 2) {
        puts("FAIL usage: scen_dlopen extension.so");
        return 1;
    }
    void *h = dlopen(argv[1], RTLD_LOCAL | RTLD_NOW);
    if (!h) {
        printf("FAIL dlopen: %s\n", dlerror());
        return 1;
    }
    int (*run)(int, unsigned long long *);
    *(void **)&run = dlsym(h, "scen_ext_run");
    if (!run) {
        puts("FAIL no scen_ext_run");
        return 1;
    }
    unsigned long long allocs = 0;
    int fails = run(100, &allocs);
    if (fails != 0) {
        printf("FAIL %d calls failed\n", fails);
        return 1;
    }
    printf("ok mem_alloc=%llu\n", allocs);
    return 0;
}
