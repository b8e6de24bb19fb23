"""One framework's tensor alloc+free pair of 1 MiB on the GPU, ns per pair
(median of 5 rounds), for scripts/bench device.

usage: bench_frameworks.py torch|cupy on|off PAIRS
"on" keeps the framework's own caching pool, "off" turns it off (every
tensor is then a cudaMalloc/cudaFree, which the shim serves from its cache).
bench_frameworks.py torch train STEPS: us per training step of a small MLP
(torch's own pool on), the whole program as a user runs it.
"""
import os
import statistics
import sys
import time

fw, pool, pairs = sys.argv[1], sys.argv[2], int(sys.argv[3])
if fw == "torch" and pool == "train":
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(1024, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 1024)).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randn(256, 1024, device="cuda")

    def step():
        loss = model(x).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(20):
        step()
    torch.cuda.synchronize()
    rounds = []
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(pairs):
            step()
        torch.cuda.synchronize()
        rounds.append((time.perf_counter_ns() - t0) / pairs)
    print(f"{statistics.median(rounds):.0f}")
    sys.exit(0)
if fw == "torch":
    if pool == "off":
        os.environ["PYTORCH_NO_CUDA_MEMORY_CACHING"] = "1"  # read at the first allocation
    import torch

    def pair():
        torch.empty(1 << 20, dtype=torch.uint8, device="cuda")

    sync = torch.cuda.synchronize
elif fw == "cupy":
    import cupy as cp

    if pool == "off":
        cp.cuda.set_allocator(None)

    def pair():
        cp.empty(1 << 20, dtype=cp.uint8)

    sync = cp.cuda.Device().synchronize
else:
    sys.exit(f"bench_frameworks: unknown framework {fw}")
for _ in range(pairs // 10 + 10):  # warm: context, kernels, caches
    pair()
sync()
rounds = []
for _ in range(5):
    t0 = time.perf_counter_ns()
    for _ in range(pairs):
        pair()
    sync()
    rounds.append((time.perf_counter_ns() - t0) / pairs)
print(f"{statistics.median(rounds):.0f}")
