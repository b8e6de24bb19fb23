/* Scenario 6 (scripts/gpu-check): reports what the early constructor did. */
#include <stdio.h>

int scen_early_result(void);
int scen_other_ran(void);

int main(void)
{
    int fails = scen_early_result();
    if (fails != 0 || !scen_other_ran()) {
        printf("FAIL early constructor: %d calls failed\n", fails);
        return 1;
    }
    puts("ok early_constructor");
    return 0;
}
