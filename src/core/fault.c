/*
 * Fault injection for the tests: jemalloc "fails" (returns NULL) at random,
 * so the paths that survive a failed backing allocation run in CI.  Off
 * unless a test sets mp_fault_je_permille (nothing reads it from the
 * environment); checked only where the pools call jemalloc, never on a hit.
 */
#include "core.h"

_Atomic unsigned mp_fault_je_permille;
_Atomic uint64_t mp_fault_je_injected;
static _Atomic uint64_t rng = 0x9E3779B97F4A7C15ull;

bool mp_fault_je_hit(void)
{
    uint64_t x = atomic_load_explicit(&rng, memory_order_relaxed), y;
    do { /* xorshift64, shared: a lost race only repeats a draw */
        y = x ^ (x << 13);
        y ^= y >> 7;
        y ^= y << 17;
    } while (!atomic_compare_exchange_weak_explicit(&rng, &x, y, memory_order_relaxed, memory_order_relaxed));
    if (y % 1000 >= atomic_load_explicit(&mp_fault_je_permille, memory_order_relaxed))
        return false;
    atomic_fetch_add_explicit(&mp_fault_je_injected, 1, memory_order_relaxed);
    return true;
}

void mp_fault_je_seed(uint64_t seed) { atomic_store(&rng, seed | 1); }
