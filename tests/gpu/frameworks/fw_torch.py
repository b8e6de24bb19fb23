# Scenario 7a (scripts/gpu-check): PyTorch with its caching allocator off, as
# users run it to find leaks or share a GPU, so that every tensor is a
# cudaMalloc/cudaFree through torch's own shared cudart (which finds the
# driver with cuGetProcAddress).  Kernels on a side stream, record_stream,
# pinned host tensors copied with non_blocking, and a cuBLAS product: every
# printed figure is exact, so the run without the shim prints the same line.
# With the argument "own-pool", torch keeps its caching allocator (how most
# programs run): the same work, with the shim underneath torch's pool.
import os
import sys
if "own-pool" not in sys.argv[1:]:
    os.environ["PYTORCH_NO_CUDA_MEMORY_CACHING"] = "1"
import torch

dev = torch.device("cuda")
acc = 0
for i in range(200):
    a = torch.arange(1 << (10 + i % 12), device=dev, dtype=torch.int64)
    acc += int(((a * 3 + i) % 1000).sum().item())
side = torch.cuda.Stream()
for i in range(50):
    with torch.cuda.stream(side):
        x = torch.full((1 << 18,), i, device=dev, dtype=torch.int32) * 2
    torch.cuda.current_stream().wait_stream(side)
    x.record_stream(torch.cuda.current_stream())
    acc += int(x.sum().item())
    del x
for i in range(50):
    h = torch.full((1 << 20,), i % 251, dtype=torch.uint8).pin_memory()
    d = h.to(dev, non_blocking=True)
    acc += int(d.sum(dtype=torch.int64).item())
torch.manual_seed(0)
m = torch.randint(0, 8, (512, 512), device=dev).float()
acc += int((m @ m).double().sum().item())  # small integers: exact in fp32
torch.cuda.synchronize()
print("ok torch", acc)
