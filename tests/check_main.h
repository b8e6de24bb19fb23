/* Shared main() for the Check suites: run every case of one suite with
 * CK_ENV (CK_RUN_SUITE / CK_RUN_CASE pick a subset), fork mode, so each
 * case gets a fresh, uninitialised shim. */
#ifndef MEMPOOL_CHECK_MAIN_H
#define MEMPOOL_CHECK_MAIN_H
#include <check.h>
#include <stdlib.h>

#define MP_CHECK_MAIN(make_suite)                                  \
    int main(void)                                                 \
    {                                                              \
        SRunner *sr = srunner_create(make_suite());                \
        srunner_run_all(sr, CK_ENV);                               \
        int failed = srunner_ntests_failed(sr);                    \
        srunner_free(sr);                                          \
        return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;          \
    }
#endif
