#!/usr/bin/env python3
"""Check every CUDA version the shim names against the toolkit's
cudaTypedefs.h, whose PFN_<name>_v<version> typedefs are the versions at
which an entry point's signature changed (and the versions cudart asks
cuGetProcAddress at).

- src/cuda/cuda_hooks.def: a row's SINCE must be one of those versions, so
  that a request at the newest one gets the hook.
- src/cuda/cuda_driver.c: a row's version must be one of them too.

usage: check_cuda_versions.py SOURCE_ROOT CUDA_INCLUDE_DIR
"""
import re
import sys
from pathlib import Path

root, inc = Path(sys.argv[1]), Path(sys.argv[2])
typedefs = (inc / "cudaTypedefs.h").read_text()
versions = {}
for name, v in re.findall(r"\bPFN_(cu\w+?)_v(\d+)\b", typedefs):
    versions.setdefault(name, set()).add(int(v))
errors = []
hooks = (root / "src/cuda/cuda_hooks.def").read_text()
rows = re.findall(r'^MP_HOOK\((\w+),\s*\w+,\s*\d,\s*"(\w*)",\s*(\d+)\)', hooks, re.M)
for sym, proc, since in rows:
    if not proc:
        continue
    have = versions.get(proc)
    if not have:
        errors.append(f"cuda_hooks.def: {sym}: no PFN_{proc}_v* in cudaTypedefs.h")
    elif int(since) not in have:
        errors.append(f"cuda_hooks.def: {sym}: SINCE {since} is not one of {sorted(have)}")
driver = (root / "src/cuda/cuda_driver.c").read_text()
table = re.findall(r'\b(?:E|OPT)\(\w+, "(\w+)", (\d+)\)', driver)
for proc, abi in table:
    have = versions.get(proc)
    if not have:
        errors.append(f"cuda_driver.c: no PFN_{proc}_v* in cudaTypedefs.h")
    elif int(abi) not in have:
        errors.append(f"cuda_driver.c: {proc} at {abi} is not one of {sorted(have)}")
if len(rows) < 20 or len(table) < 20:
    errors.append(f"parsed only {len(rows)} hook rows and {len(table)} driver rows: the pattern is stale")
for e in errors:
    print("check_cuda_versions:", e)
print(f"{len(rows)} hook rows and {len(table)} driver-table rows checked against {inc / 'cudaTypedefs.h'}")
sys.exit(1 if errors else 0)
