/* Nothing: scripts/bench host preloads this to measure LD_PRELOAD itself. */
int mp_bench_empty(void);
int mp_bench_empty(void) { return 0; }
