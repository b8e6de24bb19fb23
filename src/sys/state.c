/*
 * The process state every layer reads: where initialisation stands, the
 * thread guard of the shim's own nested calls, and when the process (or,
 * after fork, the child) started.  Written by init.c, the composition root;
 * defined down here so that reading them is never an upward call.
 */
#include "sys.h"

MP_STARTUP_DATA _Atomic int mp_state;
_Thread_local int mp_tls_guard __attribute__((tls_model("initial-exec")));
MP_STARTUP_DATA struct timespec mp_start_real, mp_start_mono;
