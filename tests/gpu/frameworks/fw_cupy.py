# Scenario 7b (scripts/gpu-check): CuPy with its device and pinned pools off
# (set_allocator(None), set_pinned_memory_allocator(None)), so that every
# array is a cudaMalloc/cudaFree and every pinned buffer a
# cudaHostAlloc/cudaFreeHost through CuPy's runtime bindings.  Work on a
# non-blocking stream; every printed figure is exact.
import cupy as cp
import numpy as np

cp.cuda.set_allocator(None)
cp.cuda.set_pinned_memory_allocator(None)
acc = 0
for i in range(200):
    a = cp.arange(1 << (10 + i % 12), dtype=cp.int64)
    acc += int(((a * 3 + i) % 1000).sum())
with cp.cuda.Stream(non_blocking=True):
    for i in range(50):
        acc += int((cp.full(1 << 18, i, dtype=cp.int32) * 2).sum())
for i in range(50):
    mem = cp.cuda.alloc_pinned_memory(1 << 20)
    h = np.frombuffer(mem, np.uint8, 1 << 20)
    h[:] = i % 251
    acc += int(cp.asarray(h).sum(dtype=cp.int64))
cp.cuda.Device().synchronize()
print("ok cupy", acc)
