# Scenario 7c (scripts/gpu-check): JAX with XLA's platform allocator, which
# allocates and frees through the driver (cuMemAlloc/cuMemFree, found by
# XLA with dlsym) on demand instead of reserving most of the GPU at start.
# Every printed figure is exact.
import os
os.environ["XLA_PYTHON_CLIENT_ALLOCATOR"] = "platform"
import jax
import jax.numpy as jnp

acc = 0
for i in range(100):
    a = jnp.arange(1 << (10 + i % 10), dtype=jnp.int32)
    acc += int(((a * 3 + i) % 1000).sum())
acc += int(jnp.ones((256, 256), jnp.float32).dot(jnp.ones((256, 256), jnp.float32)).sum())
print("ok jax", acc, jax.devices()[0].platform)
