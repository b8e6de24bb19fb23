"""scripts/bench suite: mimalloc-bench's programs under glibc, jemalloc,
tcmalloc, mimalloc and the shim, interleaved in one run.

mimalloc-bench (https://github.com/daanx/mimalloc-bench) is not part of this
project and nothing here builds it: build it as its README says and pass its
checkout with --suite DIR (the programs are looked up in DIR/out/bench, where
its build puts them, or in --suite-bin).  The benchmark list, arguments and
the in-program time of larson, xmalloc-test, rptest and glibc-thread follow
its bench.sh; a program that is missing is skipped with a line saying so.
docs/benchmarks.md says how to get the suite.
"""
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _rel(pattern, scale):
    """A parser for a program that reports its own time (as bench.sh does):
    seconds = scale / number, or the number itself when scale is None."""
    rx = re.compile(pattern, re.M)

    def parse(out):
        m = rx.search(out)
        if not m:
            return None
        v = float(m.group(1))
        return v if scale is None else (scale / v if v > 0 else None)
    return parse


def benchmarks(root, procs):
    """(name, argv, stdin file or None, own-time parser or None); argv[0] is
    the program's name in the build directory."""
    p = str(procs)
    larson = _rel(r" time: ([0-9.]+)", None)
    return [
        ("cfrac", ["cfrac", "17545186520507317056371138836327483792789528"], None, None),
        ("espresso", ["espresso", str(root / "bench/espresso/largest.espresso")], None, None),
        ("barnes", ["barnes"], root / "bench/barnes/input", None),
        ("alloc-test1", ["alloc-test", "1"], None, None),
        ("alloc-testN", ["alloc-test", str(min(procs, 16))], None, None),
        ("larsonN", ["larson", "5", "8", "1000", "5000", "100", "4141", p], None, larson),
        ("larsonN-sized", ["larson-sized", "5", "8", "1000", "5000", "100", "4141", p], None, larson),
        ("xmalloc-testN", ["xmalloc-test", "-w", p, "-t", "5", "-s", "64"], None,
         _rel(r"^rtime: ([0-9.]+)", None)),
        ("cache-thrash1", ["cache-thrash", "1", "1000", "1", "2000000", p], None, None),
        ("cache-thrashN", ["cache-thrash", p, "1000", "1", "2000000", p], None, None),
        ("cache-scratch1", ["cache-scratch", "1", "1000", "1", "2000000", p], None, None),
        ("cache-scratchN", ["cache-scratch", p, "1000", "1", "2000000", p], None, None),
        ("malloc-large", ["malloc-large"], None, None),
        ("mstressN", ["mstress", p, "50", "25"], None, None),
        ("mleak10", ["mleak", "5"], None, None),
        ("mleak100", ["mleak", "50"], None, None),
        ("rptestN", ["rptest", p, "0", "1", "2", "500", "1000", "100", "8", "16000"], None,
         _rel(r"\.\.\.([0-9]+) memory ops", 2000000.0)),
        ("glibc-simple", ["glibc-simple"], None, None),
        ("glibc-thread", ["glibc-thread", p], None, _rel(r"^([0-9.]+)", 1e9)),
        ("sh6benchN", ["sh6bench", str(2 * procs)], None, None),
        ("sh8benchN", ["sh8bench", str(2 * procs)], None, None),
    ]


def allocators(find_lib, shim):
    """(name, LD_PRELOAD or None, extra environment); a Debian package that
    is not installed drops its column with a line saying which to install."""
    out = [("glibc", None, {})]
    for name, lib, pkg in (("jemalloc", "libjemalloc.so.2", "libjemalloc2"),
                           ("tcmalloc", "libtcmalloc_minimal.so.4", "libtcmalloc-minimal4"),
                           ("mimalloc", "libmimalloc.so.2", "libmimalloc2.0")):
        path = find_lib(lib)
        if path:
            out.append((name, path, {}))
        else:
            print(f"bench suite: {lib} not found (apt-get install {pkg}); no {name} column")
    out.append(("mempool", str(shim), {}))
    return out


def run_one(binary, argv, stdin, parse, preload, extra, cwd):
    """Seconds (the program's own figure where it reports one, else wall
    time) and max RSS in bytes (wait4's ru_maxrss) of one run."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LD_PRELOAD", "MEMPOOL_"))}
    env.update(extra)
    if preload:
        env["LD_PRELOAD"] = preload
    fin = open(stdin, "rb") if stdin else subprocess.DEVNULL
    # GNU time forks the program from its own small process: a child of this
    # Python would report Python's RSS as its maximum (Linux carries the
    # high-water mark across fork and exec).
    with tempfile.TemporaryFile() as out, tempfile.NamedTemporaryFile("r") as rusage:
        t0 = time.monotonic()
        proc = subprocess.run([TIME, "-f", "%M", "-o", rusage.name, str(binary)] + argv[1:],
                              stdin=fin, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        wall = time.monotonic() - t0
        if stdin:
            fin.close()
        out.seek(0)
        text = out.read().decode(errors="replace")
        lines = rusage.read().split()
    if proc.returncode != 0 or not lines:
        return None, None, f"status {proc.returncode}: {text[-300:]!r}"
    secs = wall
    if parse:
        own = parse(text)
        if own is None:
            return None, None, f"no time in its output: {text[-300:]!r}"
        secs = own
    return secs, int(lines[-1]) * 1024, None


TIME = "/usr/bin/time"


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan")


def suite(args, find_lib, build):
    root = Path(args.suite).resolve() if args.suite else None
    bindir = Path(args.suite_bin).resolve() if args.suite_bin else (root / "out/bench" if root else None)
    if root is None or not bindir.is_dir():
        sys.exit("bench suite: name a built mimalloc-bench checkout with --suite DIR "
                 "(docs/benchmarks.md says how to get and build it)")
    shim = build / "libmempool_preload.so"
    if not Path(TIME).exists():
        sys.exit(f"bench suite: needs GNU time ({TIME}: apt-get install time)")
    if not shim.exists():
        sys.exit(f"bench suite: build first (ninja -C {build})")
    procs = args.procs or os.cpu_count()
    allocs = allocators(find_lib, shim)
    if args.mempool_env:
        name, pre, env = allocs[-1]
        env = dict(env, **dict(kv.split("=", 1) for kv in args.mempool_env))
        allocs[-1] = (name, pre, env)
    stats_dir = tempfile.mkdtemp(prefix="mempool-suite-")
    benches = []
    only = set(args.only.split(",")) if args.only else None
    for b in benchmarks(root, procs):
        if only and b[0] not in only:
            continue
        if not (bindir / b[1][0]).exists():
            print(f"bench suite: {b[0]}: no {bindir / b[1][0]}; skipped")
            continue
        benches.append(b)
    names = [a[0] for a in allocs]
    times = {(b[0], n): [] for b in benches for n in names}
    rss = {(b[0], n): [] for b in benches for n in names}
    failed = {}
    # Rounds interleave the allocators within each benchmark, so a drift of
    # the machine's speed hits all of them alike; each round starts one
    # allocator later, so none always runs straight after the same other one
    # (or first, on a cold page cache).
    for r in range(args.repeat):
        order = allocs[r % len(allocs):] + allocs[:r % len(allocs)]
        for bname, argv, stdin, parse in benches:
            for name, pre, env in order:
                if (bname, name) in failed:
                    continue
                env = dict(env)
                if name == "mempool":
                    env.setdefault("MEMPOOL_STATS_FILE", f"{stats_dir}/mempool.%e.%p.json")
                secs, peak, err = run_one(bindir / argv[0], argv, stdin, parse, pre, env, bindir)
                if err:
                    failed[(bname, name)] = err
                    print(f"bench suite: {bname} under {name} failed ({err}); no figure", file=sys.stderr)
                    continue
                times[(bname, name)].append(secs)
                rss[(bname, name)].append(peak)
            if args.verbose:
                print(f"  round {r + 1} {bname}: " + "  ".join(
                    f"{n} {times[(bname, n)][-1]:.2f}s" for n in names if times[(bname, n)]), flush=True)
    report(benches, names, times, rss, procs, args.repeat)


def _med(xs):
    return statistics.median(xs) if xs else None


def report(benches, names, times, rss, procs, repeat):
    others = [n for n in names if n != "mempool"]
    print(f"mimalloc-bench, {procs} threads, median of {repeat} rounds "
          f"(min/median/max for mempool), seconds and max RSS (MiB)")
    hdr = f"{'benchmark':15}" + "".join(f"{n:>10}" for n in names)
    hdr += f"{'mp min/med/max s':>20}{'mp/best':>9}{'best':>10}{'mp/je':>7}"
    print("time\n" + hdr)
    r_best, r_je, per_alloc = [], [], {n: [] for n in names}
    glibc_t = {}
    for bname, *_ in benches:
        med = {n: _med(times[(bname, n)]) for n in names}
        line = f"{bname:15}" + "".join(f"{med[n]:10.3f}" if med[n] else f"{'-':>10}" for n in names)
        mp = times[(bname, "mempool")]
        cands = {n: med[n] for n in others if med[n]}
        if mp and cands:
            best = min(cands, key=cands.get)
            rb = med["mempool"] / cands[best]
            r_best.append(rb)
            line += f"{min(mp):7.3f}/{med['mempool']:.3f}/{max(mp):.3f}".rjust(20)
            line += f"{rb:9.2f}{best:>10}"
            if med.get("jemalloc"):
                r_je.append(med["mempool"] / med["jemalloc"])
                line += f"{r_je[-1]:7.2f}"
        print(line)
        if med.get("glibc"):
            glibc_t[bname] = med["glibc"]
            for n in names:
                if med[n]:
                    per_alloc[n].append(med[n] / med["glibc"])
    print("time geomean vs glibc: " + "  ".join(f"{n} {geomean(per_alloc[n]):.3f}" for n in names))
    if r_best:
        print(f"mempool/best-other: geomean {geomean(r_best):.3f}, worst {max(r_best):.2f} "
              f"(target: none above 1.20); mempool/jemalloc geomean {geomean(r_je):.3f}")
    if repeat > 1:
        # How far one allocator's own rounds lie apart: a ratio between two
        # allocators inside this spread is not a difference the run can show.
        print("time spread, max/min of each allocator's rounds\n" + f"{'benchmark':15}"
              + "".join(f"{n:>10}" for n in names))
        for bname, *_ in benches:
            cells = []
            for n in names:
                xs = times[(bname, n)]
                cells.append(f"{max(xs) / min(xs):10.2f}" if len(xs) > 1 and min(xs) > 0 else f"{'-':>10}")
            print(f"{bname:15}" + "".join(cells))
    print("max RSS (MiB)\n" + f"{'benchmark':15}" + "".join(f"{n:>10}" for n in names)
          + f"{'mp min/med/max':>20}{'mp/je':>7}{'mp/best':>9}")
    rr_je = []
    for bname, *_ in benches:
        med = {n: _med(rss[(bname, n)]) for n in names}
        line = f"{bname:15}" + "".join(f"{med[n] / 2**20:10.1f}" if med[n] else f"{'-':>10}" for n in names)
        mp = rss[(bname, "mempool")]
        if mp:
            line += f"{min(mp) / 2**20:7.1f}/{med['mempool'] / 2**20:.1f}/{max(mp) / 2**20:.1f}".rjust(20)
            if med.get("jemalloc"):
                rr_je.append(med["mempool"] / med["jemalloc"])
                line += f"{rr_je[-1]:7.2f}"
            cands = [med[n] for n in others if med[n]]
            if cands:
                line += f"{med['mempool'] / min(cands):9.2f}"
        print(line)
    if rr_je:
        print(f"max RSS mempool/jemalloc: geomean {geomean(rr_je):.3f}, worst {max(rr_je):.2f} "
              f"(target: none above 1.15)")
