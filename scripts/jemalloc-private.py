#!/usr/bin/env python3
"""Build step: copy a jemalloc static archive with its public symbols renamed.

Debian's libjemalloc_pic.a defines malloc, free, mallocx, the C++ operators...
under their plain names.  Linked into the shim as-is they would clash with the
shim's own malloc family, so every global symbol jemalloc defines outside its
internal je_ namespace gets the prefix mp_je_ (definitions and references alike,
objcopy --redefine-syms).  The shim then calls mp_je_mallocx() etc. and exports
none of them (hidden by the version script).  jemalloc's three libm calls (log,
exp, round: heap profiling only) go to the shim's libm-free ones
(src/sys/libm_lite.c), so the shim does not load libm at every process start.
jemalloc's pthread_atfork call goes to the shim (src/core/heap.c), which runs
jemalloc's fork handlers from its own, in a fixed order, whenever jemalloc
starts.  jemalloc's constructor (.init_array of jemalloc.o: malloc_init at load) is
dropped: the shim starts jemalloc at its first use (src/core/heap.c), and a
process that never needs it does not pay its start-up.

usage: jemalloc-private.py NM OBJCOPY IN.a OUT.a
"""
import subprocess
import sys


LIBM = {"log": "mp_ln", "exp": "mp_exp", "round": "mp_round"}
# jemalloc registers its fork handlers with pthread_atfork when it starts;
# the shim calls them itself, in its own handlers' order (src/core/heap.c).
REDIRECT = {**LIBM, "pthread_atfork": "mp_je_pthread_atfork"}


def main() -> int:
    nm, objcopy, src, dst = sys.argv[1:5]
    out = subprocess.run([nm, "-g", "--defined-only", src], check=True,
                         capture_output=True, text=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        name = parts[2]
        if name.startswith(("je_", "DW.ref.", "_GLOBAL_")):
            continue
        names.add(name)
    if "mallocx" not in names:
        print(f"{src}: no mallocx symbol; is this a jemalloc archive?", file=sys.stderr)
        return 1
    mapfile = dst + ".syms"
    with open(mapfile, "w") as f:
        for name in sorted(names):
            f.write(f"{name} mp_je_{name}\n")
        for name, ours in REDIRECT.items():
            f.write(f"{name} {ours}\n")
    subprocess.run([objcopy, f"--redefine-syms={mapfile}", "--remove-section=.init_array",
                    "--remove-section=.rela.init_array", src, dst], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
