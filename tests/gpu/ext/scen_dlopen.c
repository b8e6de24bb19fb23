/* Scenario 5 (scripts/gpu-check): links no CUDA; dlopen()s argv[1] with
 * RTLD_LOCAL | RTLD_NOW and runs 100 pairs in it. */
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv)
{
    void *h = argc > 1 ? dlopen(argv[1], RTLD_LOCAL | RTLD_NOW) : NULL;
    int (*run)(int) = NULL;
    if (h)
        *(void **)&run = dlsym(h, "scen_ext_run");
    if (!run) {
        printf("FAIL cannot load %s: %s\n", argc > 1 ? argv[1] : "(none)", dlerror());
        return 1;
    }
    if (run(100) != 0)
        return 1;
    puts("ok rtld_local");
    return 0;
}
