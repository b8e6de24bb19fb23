/* For test_cuda_scenarios: a second library with a constructor, linked
 * before or after the early-constructor library. */
int scen_other_ran(void);

static int ran;

__attribute__((constructor)) static void other(void) { ran = 1; }

__attribute__((visibility("default"))) int scen_other_ran(void) { return ran; }
