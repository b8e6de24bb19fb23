/* For test_cuda_scenarios: reports what the early constructor did. */
#include <stdio.h>

int scen_early_result(unsigned long long *driver_allocs);
int scen_other_ran(void);

int main(void)
{
    unsigned long long allocs = 0;
    int fails = scen_early_result(&allocs);
    if (fails != 0 || !scen_other_ran()) {
        printf("FAIL the early constructor's calls: %d failed\n", fails);
        return 1;
    }
    printf("ok mem_alloc=%llu\n", allocs);
    return 0;
}
