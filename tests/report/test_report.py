#!/usr/bin/env python3
"""Tests of scripts/mempool-report and scripts/mempool-run (standard library
unittest).  Most run real programs under the preloaded shim; the hand-written
v2 fixture is used where a real run cannot produce the case (named call sites
of a known shape, fences that find the device busy).

  test_report.py          everything but the schema check
  test_report.py schema   the schema check only; exit 77 (skip) without jsonschema

Build outputs come from $MEMPOOL_BUILD (set by tests/report/meson.build).
"""
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.environ.get("MEMPOOL_SRC") or os.path.dirname(os.path.dirname(HERE))
BUILD = os.environ.get("MEMPOOL_BUILD") or os.path.join(SRC, "build")
REPORT = os.path.join(SRC, "scripts", "mempool-report")
RUN = os.path.join(SRC, "scripts", "mempool-run")
PRELOAD = os.path.join(BUILD, "libmempool_preload.so")
FAKE = os.path.join(BUILD, "tests", "fake_cuda")
CUDA_APP = os.path.join(FAKE, "cuda_app_shared")
CXX = os.path.join(BUILD, "tests", "preload", "cxx_workload")
REPORT_APP = os.path.join(BUILD, "tests", "preload", "report_app")
FIXTURES = os.path.join(HERE, "fixtures")
V1 = os.path.join(FIXTURES, "v1-cuda_app_shared.json")
V2 = os.path.join(FIXTURES, "v2-handwritten.json")
# Written by the version 2 shim for a program with one mempool.h pool:
# its "pools" peaks have the spelling version 3 renamed.
V2_POOLS = os.path.join(FIXTURES, "v2-api-pools.json")

# A Python workload with many small and mid-size objects.
PY_WORK = ("import json\n"
           "d = [{'k%d' % i: list(range(i % 50)) for i in range(j, j + 100)} for j in range(600)]\n"
           "print(sum(len(json.dumps(x)) for x in d[::10]))\n")


def clean_env(**extra):
    """The environment without the shim or MEMPOOL_* settings of the caller."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMPOOL_") and k != "LD_PRELOAD"}
    env.update(extra)
    return env


def shim_run(argv, outdir, name="%e.%p", **options):
    """Run argv under the shim; return the stats files it wrote (sorted)."""
    return shim_run_pid(argv, outdir, name, **options)[0]


def shim_run_pid(argv, outdir, name="%e.%p", **options):
    """shim_run, and the file of the process started (its children write theirs too)."""
    os.makedirs(outdir, exist_ok=True)
    env = clean_env(LD_PRELOAD=PRELOAD, LD_LIBRARY_PATH=FAKE,
                    MEMPOOL_STATS_FILE=os.path.join(outdir, name + ".json"),
                    **{f"MEMPOOL_{k}": str(v) for k, v in options.items()})
    p = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = p.communicate(timeout=240)
    if p.returncode:
        raise AssertionError(f"{argv} failed ({p.returncode}): {out}{err}")
    files = sorted(os.path.join(outdir, f) for f in os.listdir(outdir) if f.endswith(".json"))
    mine = [f for f in files if load(f)["process"]["pid"] == p.pid]
    return files, mine[0] if mine else None


def report(*args, env=None, rc=0):
    r = subprocess.run([sys.executable, REPORT, *args], env=env or clean_env(),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=240)
    if rc is not None and r.returncode != rc:
        raise AssertionError(f"mempool-report {args} exited {r.returncode}: {r.stdout}{r.stderr}")
    return r


def report_json(*args):
    return json.loads(report("--json", *args).stdout)


def load(path):
    with open(path) as f:
        return json.load(f)


def opt_size(n):
    for shift, suffix in ((40, "T"), (30, "G"), (20, "M"), (10, "K")):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift}{suffix}"
    return str(n)


def pow2_ceil(n):
    return 1 << max(0, math.ceil(n) - 1).bit_length()


def row_of(text, label):
    """The cells of the first table row whose first cell is label."""
    for line in text.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells and cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in:\n{text}")


def section(text, title):
    """Lines of one [title] section of a text report."""
    m = re.search(r"^\[" + re.escape(title) + r"\].*?(?=^\[|\Z)", text, re.M | re.S)
    if not m:
        raise AssertionError(f"no [{title}] section in:\n{text}")
    return m.group(0)


def need(*paths):
    for p in paths:
        if not os.path.exists(p):
            raise unittest.SkipTest(f"{p} not built")


class FixtureV2(unittest.TestCase):
    """The hand-written v2 file: tables, call sites, warnings, the fences rule."""

    @classmethod
    def setUpClass(cls):
        cls.out = report(V2).stdout

    def test_host_table(self):
        host = section(self.out, "host")
        self.assertEqual(row_of(host, "total")[:5], ["total", "10000", "9800", "190", "98.0%"])
        self.assertEqual(row_of(host, "4.0 KiB")[:5], ["4.0 KiB", "3990", "3850", "140", "96.5%"])
        self.assertIn("bypass: 10 requests, 1.9 MiB", host)

    def test_device_and_pinned_tables(self):
        self.assertEqual(row_of(section(self.out, "device"), "device 0")[:5],
                         ["device 0", "5000", "4000", "1000", "80.0%"])
        self.assertEqual(row_of(section(self.out, "device"), "4.0 MiB")[:5],
                         ["4.0 MiB", "2000", "1500", "500", "75.0%"])
        self.assertEqual(row_of(section(self.out, "pinned"), "pinned 0")[:5],
                         ["pinned 0", "100", "99", "1", "99.0%"])

    def test_call_sites_ranked(self):
        sites = section(self.out, "call sites")
        self.assertIn("1004 stacks captured, 3 skipped; host misses sampled every 1.0 MiB", sites)
        by = {m.group(1): m.group(2) for m in
              re.finditer(r"^top by ([a-z ]+):\n(.*?)(?=^top by|\Z)", sites, re.M | re.S)}
        self.assertEqual(set(by), {"misses", "bytes", "wait time"})
        firsts = {k: re.findall(r"^\s+\d\. .*\n\s+(\S+)", v, re.M) for k, v in by.items()}
        self.assertEqual(firsts["misses"], ["load_batch+0x2a", "alloc_workspace+0x40", "0x55d0c0a1b2c3",
                                            "stage_copy+0x10"])
        self.assertEqual(firsts["bytes"], ["load_batch+0x2a", "alloc_workspace+0x40", "stage_copy+0x10",
                                           "0x55d0c0a1b2c3"])
        self.assertEqual(firsts["wait time"][:2], ["alloc_workspace+0x40", "load_batch+0x2a"])
        # Kind, estimate marks for host, sizes, and frames with object basenames.
        self.assertIn("1. device 700 misses, 2.1 GiB, 850.000 ms waiting; sizes 4.0 MiB x500, 1.0 MiB x200", sites)
        self.assertIn("host   ~40 misses, ~160.0 KiB, 0.120 ms waiting; sizes 4.0 KiB x3", sites)
        self.assertIn("load_batch+0x2a (libtrain.so) < train_step+0x110 (libtrain.so) < main+0x99 (python3.11)",
                      sites)
        self.assertIn("0x55d0c0a1b2c3 (app) < parse_record+0x2a (python3.11)", sites)

    def test_sites_and_frames_limits(self):
        sites = section(report("--sites", "1", "--frames", "1", V2).stdout, "call sites")
        self.assertEqual(len(re.findall(r"^\s+\d\. ", sites, re.M)), 3)  # one per ranking
        self.assertIn("       load_batch+0x2a (libtrain.so)\n", sites)
        self.assertNotIn("train_step", sites)

    def test_warnings(self):
        warn = section(self.out, "warnings")
        self.assertIn("CUDA runtime path: 1 hook(s) called with no real function behind them (cudaMallocAsync)",
                      warn)
        self.assertIn("device 0: 2000 fence checks found freed blocks still in use", warn)
        self.assertIn("call sites: 3 stacks not captured", warn)

    def test_fences_rule(self):
        # Fixture only: the fake driver's kernels rarely outlive the next
        # check, so no real run reaches a high count of pending fences.
        adv = section(self.out, "advice")
        self.assertIn("device 0: 2000 fence checks (50 per 100 hits) found the device still working", adv)
        self.assertIn("MEMPOOL_DEVICE_FENCES=none", adv)
        self.assertIn("host: 98.0% hit rate: nothing to tune", adv)
        self.assertIn("pinned: 99.0% hit rate: nothing to tune", adv)

    def test_hooks_listed(self):
        self.assertIn("cudaMallocAsync (runtime): 3 calls, MISSING", self.out)
        self.assertIn("runtime: 3 hooks, 10003 calls, 1 missing", self.out)

    def test_json(self):
        j = report_json(V2)
        self.assertEqual(j["mode"], "report")
        r = j["reports"][0]
        self.assertEqual(r["data"], load(V2))
        self.assertEqual(r["view"]["kinds"]["device"]["totals"]["misses"], 1000)
        fences = [a for a in r["advice"] if a["rule"] == "fences"]
        self.assertEqual([(a["option"], a["current"], a["advised"]) for a in fences],
                         [("MEMPOOL_DEVICE_FENCES", "all", "none")])
        self.assertEqual(r["top_sites"]["misses"][0]["frames"][0]["function"], "load_batch")
        self.assertEqual([s["misses"] for s in r["top_sites"]["misses"]], [700, 300, 40, 1])
        self.assertEqual(r["top_sites"]["wait_s"][0]["frames"][0]["function"], "alloc_workspace")
        self.assertTrue(any("cudaMallocAsync" in w for w in r["warnings"]))


class FixtureV1(unittest.TestCase):
    """A real version 1 file (written by the shim before call sites existed) still loads."""

    def test_tables(self):
        out = report(V1).stdout
        d = load(V1)
        dev = d["kinds"]["device"]["devices"][0]
        self.assertEqual(row_of(section(out, "device"), "device 0")[1:4],
                         [str(dev["requests"]), str(dev["hits"]), str(dev["misses"])])
        t = d["kinds"]["host"]["totals"]
        self.assertEqual(row_of(section(out, "host"), "total")[1:4],
                         [str(t["requests"]), str(t["hits"]), str(t["misses"])])
        self.assertNotIn("[call sites]", out)
        self.assertIn("[advice]", out)

    def test_json_and_merge(self):
        j = report_json("--merge", V1, V1)  # the same process twice: one process, doubled counts
        v = j["reports"][0]["view"]
        self.assertEqual(v["processes"], 1)
        self.assertEqual(v["kinds"]["host"]["totals"]["requests"], 2 * load(V1)["kinds"]["host"]["totals"]["requests"])
        self.assertIsNone(v["call_sites"])
        self.assertEqual(v["timelines"], [])


class FixtureV2OldPoolKeys(unittest.TestCase):
    """A version 2 file spells the pools' peaks peak_bytes_in_use and
    peak_bytes_reserved; it still loads, read with version 3's names."""

    def test_text(self):
        pools = section(report(V2_POOLS).stdout, "pools: mempool.h")
        self.assertIn("staging (host): 24 acquired, hit rate 83.3%, 4 blocks / 16.0 KiB cached, "
                      "in use 0 B (peak 16.0 KiB), saved 80.0 KiB, 0 trims", pools)

    def test_json_has_the_new_keys(self):
        old = load(V2_POOLS)["pools"][0]
        self.assertEqual((old["peak_bytes_in_use"], old["peak_bytes_reserved"]), (16384, 16384))
        r = report_json(V2_POOLS)["reports"][0]
        for p in (r["data"]["pools"][0], r["view"]["api_pools"][0]):
            self.assertEqual((p["bytes_in_use_peak"], p["bytes_reserved_peak"]), (16384, 16384))
            self.assertNotIn("peak_bytes_in_use", p)
            self.assertNotIn("peak_bytes_reserved", p)

    def test_merge_with_a_version_3_file(self):
        d = load(V2_POOLS)
        d["version"] = 3
        d["process"]["pid"] += 1
        p = d["pools"][0]
        p["bytes_in_use_peak"], p["bytes_reserved_peak"] = p.pop("peak_bytes_in_use"), p.pop("peak_bytes_reserved")
        with tempfile.TemporaryDirectory() as tmp:
            new = os.path.join(tmp, "v3.json")
            with open(new, "w") as f:
                json.dump(d, f)
            v = report_json("--merge", V2_POOLS, new)["reports"][0]["view"]
        self.assertEqual([q["bytes_in_use_peak"] for q in v["api_pools"]], [16384, 16384])


class ReportConsts(unittest.TestCase):
    """mempool-report's schema version and option table are the sources' own
    (scripts/lib/report-consts.json, from src/stats.h and src/options.def)."""

    def test_fresh_file_is_not_newer_than_the_tool(self):
        need(PRELOAD, CXX)
        with tempfile.TemporaryDirectory() as tmp:
            f = shim_run([CXX], tmp)[0]
            r = report(f)
            version = load(f)["version"]
        self.assertNotIn("newer than this tool", r.stderr)
        with open(os.path.join(SRC, "scripts", "lib", "report-consts.json")) as c:
            self.assertEqual(version, json.load(c)["schema_version"])

    def test_options_of_a_fresh_file(self):
        need(PRELOAD, CXX)
        with open(os.path.join(SRC, "scripts", "lib", "report-consts.json")) as c:
            options = json.load(c)["options"]
        with tempfile.TemporaryDirectory() as tmp:
            d = load(shim_run([CXX], tmp)[0])
        # Every option the shim writes, with its default (the run sets only the stats file).
        self.assertEqual(set(d["options"]), set(options))
        for name, o in options.items():
            if name != "MEMPOOL_STATS_FILE":
                self.assertEqual(d["options"][name], o["default"], name)


INT_KEYS_SKIP = {"size", "device", "flags", "context"}


def expected_sums(files):
    """Per kind: summed totals and per-size-class sums, from the files themselves."""
    totals, classes = {}, {}

    def add(acc, row):
        for k, x in row.items():
            if isinstance(x, int) and not isinstance(x, bool) and k not in INT_KEYS_SKIP:
                acc[k] = acc.get(k, 0) + x

    for f in files:
        d = load(f)
        for kind, k in d["kinds"].items():
            rows = [k["totals"]] if "totals" in k else k.get("devices", k.get("pools", []))
            for r in rows:
                add(totals.setdefault(kind, {}), r)
            cls = k.get("size_classes", []) if "totals" in k else [c for r in rows for c in r["size_classes"]]
            for c in cls:
                add(classes.setdefault(kind, {}).setdefault(c["size"], {}), c)
    return totals, classes


class MergeForkedFamily(unittest.TestCase):
    """sh starts two CUDA programs and a Python that forks three children:
    the merged report must equal the sum of its parts."""

    FAMILY = ("{app} > /dev/null; {py} -c '{fork}'; {app} > /dev/null")
    FORK = ("import os, sys\n"
            "keep = [bytearray(500 + i) for i in range(2000)]\n"
            "for k in range(3):\n"
            "    if os.fork() == 0:\n"
            "        x = [str(i) * (k + 1) for i in range(5000 * (k + 1))]\n"
            "        sys.exit(0)\n"
            "    os.wait()\n")

    @classmethod
    def setUpClass(cls):
        need(PRELOAD, CUDA_APP)
        cls.tmp = tempfile.mkdtemp(prefix="mp-report-merge.")
        script = cls.FAMILY.format(app=CUDA_APP, py=sys.executable, fork=cls.FORK)
        cls.files = shim_run(["sh", "-c", script], os.path.join(cls.tmp, "run"))
        cls.view = report_json("--merge", os.path.join(cls.tmp, "run"))["reports"][0]["view"]

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_family_size(self):
        pids = {load(f)["process"]["pid"] for f in self.files}
        self.assertGreaterEqual(len(self.files), 6)  # 2 CUDA apps, python and 3 children (+ sh)
        self.assertEqual(self.view["processes"], len(pids))
        self.assertEqual(len(self.view["files"]), len(self.files))

    def test_totals_are_sums(self):
        totals, classes = expected_sums(self.files)
        self.assertEqual(set(self.view["kinds"]), set(totals))
        for kind, want in totals.items():
            got = self.view["kinds"][kind]["totals"]
            for k, x in want.items():
                self.assertEqual(got[k], x, f"{kind} totals {k}")
            self.assertAlmostEqual(got["hit_rate"], round(want["hits"] / want["requests"], 4), places=4)
        for kind, by_size in classes.items():
            got = {c["size"]: c for c in self.view["kinds"][kind]["size_classes"]}
            self.assertEqual(set(got), set(by_size), kind)
            for size, want in by_size.items():
                for k, x in want.items():
                    self.assertEqual(got[size][k], x, f"{kind} class {size} {k}")

    def test_device_pools_and_hosts(self):
        dev = [r for f in self.files for r in load(f)["kinds"].get("device", {}).get("devices", [])]
        merged = self.view["kinds"]["device"]["pools"]
        self.assertEqual(sum(p["requests"] for p in merged), sum(r["requests"] for r in dev))
        self.assertEqual(sum(p["ooms"] for p in merged), sum(r["ooms"] for r in dev))
        host = load(self.files[0])["process"]["host"]
        self.assertEqual(list(self.view["hosts"]), [host])
        self.assertEqual(self.view["hosts"][host]["kinds"]["host"]["totals"]["requests"],
                         self.view["kinds"]["host"]["totals"]["requests"])

    def test_spread(self):
        rates = [load(f)["kinds"]["host"]["totals"]["hit_rate"] for f in self.files
                 if load(f)["kinds"]["host"]["totals"]["requests"]]
        s = self.view["spread"]["host"]
        self.assertEqual((s["min"], s["max"], s["processes"]), (min(rates), max(rates), len(rates)))
        self.assertAlmostEqual(s["median"], statistics.median(rates), places=4)
        self.assertEqual(self.view["spread"]["device"]["processes"], 2)

    def test_text(self):
        out = report("--merge", *self.files).stdout
        n = len(self.files)
        self.assertIn(f"== merged: {n} files, {n} processes on 1 host(s)", out)
        self.assertIn("a sum of peaks, not a peak", out)
        totals, _ = expected_sums(self.files)
        self.assertEqual(row_of(section(out, "host"), "total")[1:4],
                         [str(totals["host"][k]) for k in ("requests", "hits", "misses")])
        self.assertRegex(section(out, "spread"), r"host\s+[\d.]+% / [\d.]+% / [\d.]+%\s+over \d+ processes")


class MergeCallSites(unittest.TestCase):
    """Call sites of two runs of one program merge by function and object."""

    def test_sites_merge_by_function(self):
        need(PRELOAD, REPORT_APP)
        with tempfile.TemporaryDirectory() as tmp:
            files = shim_run(["sh", "-c", f"{REPORT_APP} sites; {REPORT_APP} sites"], tmp, CALLSITE_SAMPLE=1)
            if "call_sites" not in load(files[0]):
                self.skipTest("this build writes no call sites")
            per_file = [s for f in files for s in load(f)["call_sites"]["sites"]
                        if s["frames"] and s["frames"][0]["function"] == "report_app_alpha"]
            j = report_json("--merge", tmp)["reports"][0]
            top = j["top_sites"]["misses"][0]
            self.assertEqual(top["frames"][0]["function"], "report_app_alpha")
            self.assertEqual(top["misses"], sum(s["misses"] for s in per_file))
            self.assertEqual(top["files"], len(files))
            out = report("--merge", "--frames", "1", tmp).stdout
            self.assertRegex(out, r"1\. host\s+~\d+ misses.*\n\s+report_app_alpha\+0x[0-9a-f]+ \(report_app\)")


class Interim(unittest.TestCase):
    """An interim dump is ignored once its process's final file is there."""

    def test_signal_dump_superseded(self):
        need(PRELOAD)
        with tempfile.TemporaryDirectory() as tmp:
            stats = os.path.join(tmp, "p.json")
            prog = ("import os, shutil, signal, sys, time\n"
                    f"os.kill(os.getpid(), signal.SIGUSR1)\n"
                    "for _ in range(500):\n"
                    f"    if os.path.exists({stats!r}): break\n"
                    "    time.sleep(0.01)\n"
                    f"if os.path.exists({stats!r}): shutil.copy({stats!r}, {os.path.join(tmp, 'interim.json')!r})\n")
            env = clean_env(LD_PRELOAD=PRELOAD, MEMPOOL_STATS_FILE=stats, MEMPOOL_DUMP_SIGNAL="USR1")
            r = subprocess.run([sys.executable, "-c", prog], env=env, capture_output=True, text=True, timeout=60)
            interim = os.path.join(tmp, "interim.json")
            if r.returncode == -signal.SIGUSR1 or not os.path.exists(interim):
                self.skipTest(f"this build has no MEMPOOL_DUMP_SIGNAL ({r.returncode}: {r.stderr.strip()[:200]})")
            self.assertFalse(load(interim)["process"]["final"])
            self.assertTrue(load(stats)["process"]["final"])
            j = report_json("--merge", tmp)
            self.assertEqual(j["reports"][0]["view"]["files"], [stats])
            self.assertTrue(any("interim.json" in n and "superseded" in n for n in j["ignored"]))
            # Alone, the interim dump counts (with a warning that it is one).
            os.unlink(stats)
            j = report_json("--merge", tmp)["reports"][0]
            self.assertEqual(j["view"]["files"], [interim])
            self.assertTrue(any("interim dump (signal" in w for w in j["warnings"]))


def advice_for(path, rule):
    return [a for a in report_json(path)["reports"][0]["advice"] if a["rule"] == rule]


class AdviceRealRuns(unittest.TestCase):
    """Each rule, from a real run built to trigger it."""

    def setUp(self):
        need(PRELOAD)
        self.tmp = tempfile.mkdtemp(prefix="mp-report-advice.")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def one(self, argv, **options):
        """The stats file of the process started (cxx_workload also forks a child)."""
        files, mine = shim_run_pid(argv, self.tmp, name="run.%p", **options)
        self.assertIsNotNone(mine, files)
        return mine, load(mine)

    def test_host_cache_limit(self):
        need(CXX)
        # Carved blocks are kept, never trimmed: arenas from the first miss.
        f, d = self.one([CXX], HOST_CACHE_LIMIT=0, HOST_CARVE_LIMIT=0)
        peak = d["kinds"]["host"]["totals"]["bytes_reserved_peak"]
        adv = [a for a in advice_for(f, "host_trims") if a["option"] == "MEMPOOL_HOST_CACHE_LIMIT"]
        self.assertEqual([(a["current"], a["advised"]) for a in adv], [(0, pow2_ceil(peak))])
        self.assertIn(f"raise MEMPOOL_HOST_CACHE_LIMIT from 0 to >= {opt_size(pow2_ceil(peak))}", adv[0]["text"])

    def test_host_max_blocks(self):
        need(CXX)
        f, d = self.one([CXX], HOST_MAX_BLOCKS=64, HOST_CARVE_LIMIT=0)
        hurt = [c for c in d["kinds"]["host"]["size_classes"]
                if c["trims"] and c["hit_rate"] < 0.9 and c["misses"] >= 10]
        want = pow2_ceil(max(math.ceil(c["bytes_reserved_peak"] / c["size"]) for c in hurt))
        adv = [a for a in advice_for(f, "host_trims") if a["option"] == "MEMPOOL_HOST_MAX_BLOCKS"]
        self.assertEqual([(a["current"], a["advised"]) for a in adv], [(64, want)])
        self.assertIn(f"raise MEMPOOL_HOST_MAX_BLOCKS from 64 to >= {want}", report(f).stdout)

    def test_host_trims_while_the_bound_grows(self):
        # Three rounds of 50,000 blocks of 640 B (bytearray buffers are above
        # pymalloc's 512 B): each free trims what the class's pool bound does
        # not hold yet, below both limits; the advice names the first bound.
        code = "for r in range(3):\n    x = [bytearray(600) for _ in range(50000)]\n    del x\n"
        f, _ = self.one([sys.executable, "-c", code], HOST_CARVE_LIMIT=0)
        with open(os.path.join(HERE, "..", "..", "scripts", "lib", "report-consts.json")) as c:
            first = json.load(c)["host_first_bound"]
        adv = advice_for(f, "host_trims")
        self.assertEqual([a["option"] for a in adv], [None])
        self.assertIn(f"pool bound still growing toward MEMPOOL_HOST_MAX_BLOCKS (it starts at {first} blocks",
                      adv[0]["text"])

    def test_host_bypass(self):
        f, d = self.one([sys.executable, "-c", PY_WORK], HOST_MAX_BLOCK_SIZE=16)
        t = d["kinds"]["host"]["totals"]
        want = pow2_ceil(t["bypass_bytes_requested"] / t["bypasses"])
        adv = advice_for(f, "host_bypass")
        self.assertEqual([(a["option"], a["current"], a["advised"]) for a in adv],
                         [("MEMPOOL_HOST_MAX_BLOCK_SIZE", 16, want)])
        share = f"{t['bypasses']} of {t['requests']} host requests ({100 * t['bypasses'] / t['requests']:.1f}%)"
        self.assertIn(share, adv[0]["text"])
        self.assertIn(f"raise MEMPOOL_HOST_MAX_BLOCK_SIZE from 16 to >= {opt_size(want)}", adv[0]["text"])

    def test_host_reserve(self):
        grab = ("import ctypes; c = ctypes.CDLL(None); c.malloc.restype = ctypes.c_void_p\n"
                "c.malloc.argtypes = [ctypes.c_size_t]\n"
                "ps = [c.malloc(300 << 20) for _ in range(6)]\n"
                "assert all(ps)\n")
        f, d = self.one([sys.executable, "-c", grab], HOST_RESERVE="1G")
        t = d["kinds"]["host"]["totals"]
        self.assertGreater(t["libc_fallbacks"], 0)
        want = 2 * max(1 << 30, t["address_space_mapped"])
        adv = advice_for(f, "host_reserve")
        self.assertEqual([(a["current"], a["advised"]) for a in adv], [(1 << 30, want)])
        out = report(f).stdout
        self.assertIn(f"raise MEMPOOL_HOST_RESERVE from 1G to >= {opt_size(want)}", out)
        self.assertIn(f"host: {t['libc_fallbacks']} requests served by glibc", section(out, "warnings"))

    def test_device_and_pinned_cache_limit(self):
        need(CUDA_APP)
        f, d = self.one([CUDA_APP], DEVICE_CACHE_LIMIT="4K", PINNED_CACHE_LIMIT="512K")
        dev = d["kinds"]["device"]["devices"][0]
        adv = {a["option"]: a for a in advice_for(f, "cuda_cache") if a["option"]}
        want = pow2_ceil(dev["bytes_reserved_peak"])
        self.assertEqual(adv["MEMPOOL_DEVICE_CACHE_LIMIT"]["advised"], want)
        redo = min(dev["trims"], dev["misses"])
        self.assertIn(f"up to {100 * redo / dev['misses']:.1f}% of device misses ({redo} of {dev['misses']})",
                      adv["MEMPOOL_DEVICE_CACHE_LIMIT"]["text"])
        self.assertIn(f"MEMPOOL_DEVICE_CACHE_LIMIT (4K): raise it to >= {opt_size(want)}",
                      adv["MEMPOOL_DEVICE_CACHE_LIMIT"]["text"])
        pin = d["kinds"]["pinned"]["pools"][0]
        self.assertEqual(adv["MEMPOOL_PINNED_CACHE_LIMIT"]["current"], 512 << 10)
        self.assertEqual(adv["MEMPOOL_PINNED_CACHE_LIMIT"]["advised"], pow2_ceil(pin["bytes_reserved_peak"]))

    def test_device_full(self):
        # cuda_app asks for 1 TiB once: with the default unlimited cache, an OOM.
        need(CUDA_APP)
        f, d = self.one([CUDA_APP])
        dev = d["kinds"]["device"]["devices"][0]
        self.assertGreater(dev["ooms"], 0)
        out = report(f).stdout
        pooled = sum(c["bytes_requested"] for c in dev["size_classes"])
        each = (dev["bytes_requested"] - pooled) / dev["ooms"]
        self.assertEqual(each, 1 << 40)
        self.assertIn(f"device 0: {dev['ooms']} allocations failed even after the cache was released "
                      f"({dev['oom_retries']} retries, 1.0 TiB each on average): the device memory is simply full",
                      section(out, "advice"))
        self.assertIn(f"device 0: {dev['oom_retries']} out-of-memory answers", section(out, "warnings"))
        pin = d["kinds"]["pinned"]["pools"]
        rate = sum(p["hits"] for p in pin) / sum(p["requests"] for p in pin)
        self.assertGreaterEqual(rate, 0.95)
        self.assertIn(f"pinned: {100 * rate:.1f}% hit rate: nothing to tune", out)

    def test_unpooled(self):
        need(CUDA_APP)
        f, d = self.one([CUDA_APP], DEVICE_MAX_BLOCK_SIZE=512, PINNED_MAX_BLOCK_SIZE=512)
        adv = {a["option"]: a for a in advice_for(f, "cuda_unpooled")}
        for kind, key, opt in (("device", "devices", "MEMPOOL_DEVICE_MAX_BLOCK_SIZE"),
                               ("pinned", "pools", "MEMPOOL_PINNED_MAX_BLOCK_SIZE")):
            p = d["kinds"][kind][key][0]
            self.assertGreater(p["unpooled"], 0)
            pooled = sum(c["bytes_requested"] for c in p["size_classes"])
            want = pow2_ceil(min((p["bytes_requested"] - pooled) / p["unpooled"], p["bytes_in_use_peak"]))
            self.assertEqual((adv[opt]["current"], adv[opt]["advised"]), (512, want))
            self.assertIn(f"{p['unpooled']} of {p['requests']} {kind} requests", adv[opt]["text"])
            self.assertIn(f"above {opt} (512)", adv[opt]["text"])
        # cuda_app's largest block is 128 KiB, its pinned buffers 1 MiB.
        self.assertEqual(adv["MEMPOOL_DEVICE_MAX_BLOCK_SIZE"]["advised"], 128 << 10)
        self.assertEqual(adv["MEMPOOL_PINNED_MAX_BLOCK_SIZE"]["advised"], 1 << 20)

    def test_nothing_to_tune(self):
        need(CUDA_APP)
        f, _ = self.one([CUDA_APP])
        out = report(f).stdout
        self.assertNotIn("MEMPOOL_PINNED", section(out, "advice"))
        self.assertRegex(section(out, "advice"), r"pinned: 99\.\d% hit rate: nothing to tune")


class Plots(unittest.TestCase):
    def test_pngs_written(self):
        if importlib.util.find_spec("matplotlib") is None:
            self.skipTest("matplotlib not importable by " + sys.executable)
        with tempfile.TemporaryDirectory() as tmp:
            r = report("--plot", tmp, V2)
            self.assertIn("[host]", r.stdout)
            names = sorted(os.listdir(tmp))
            self.assertEqual(names, ["v2-handwritten-hit_rate.png", "v2-handwritten-sizes.png",
                                     "v2-handwritten-timeline.png"])
            for n in names:
                with open(os.path.join(tmp, n), "rb") as f:
                    data = f.read()
                self.assertTrue(data.startswith(b"\x89PNG"), n)
                self.assertGreater(len(data), 5000, n)
            report("--merge", "--plot", tmp, V1, V2)
            self.assertIn("merged-hit_rate.png", os.listdir(tmp))

    def test_without_matplotlib(self):
        with tempfile.TemporaryDirectory() as tmp:
            os.makedirs(os.path.join(tmp, "matplotlib"))
            with open(os.path.join(tmp, "matplotlib", "__init__.py"), "w") as f:
                f.write("raise ImportError('hidden by the test')\n")
            r = report("--plot", os.path.join(tmp, "png"), V2, env=clean_env(PYTHONPATH=tmp))
            self.assertIn("[advice]", r.stdout)
            self.assertIn("--plot needs matplotlib", r.stderr)
            self.assertNotIn("Traceback", r.stderr)
            self.assertFalse(os.path.exists(os.path.join(tmp, "png")))


class WithoutJsonschema(unittest.TestCase):
    def test_check_schema_skips(self):
        with tempfile.TemporaryDirectory() as tmp:
            os.makedirs(os.path.join(tmp, "jsonschema"))
            with open(os.path.join(tmp, "jsonschema", "__init__.py"), "w") as f:
                f.write("raise ImportError('hidden by the test')\n")
            r = report("--check-schema", V2, env=clean_env(PYTHONPATH=tmp), rc=77)
            self.assertIn("--check-schema needs the Python module jsonschema", r.stderr)
            self.assertNotIn("Traceback", r.stderr)


class Compare(unittest.TestCase):
    def test_two_runs(self):
        need(PRELOAD, CXX)
        with tempfile.TemporaryDirectory() as tmp:
            # A: the directory of a run (cxx_workload and its forked child), B: one file.
            a = shim_run([CXX], os.path.join(tmp, "a"))
            b = shim_run_pid([CXX], os.path.join(tmp, "b"), HOST_CACHE_LIMIT=0)[1]
            ta = expected_sums(a)[0]["host"]
            ta["hit_rate"] = ta["hits"] / ta["requests"]
            tb = load(b)["kinds"]["host"]["totals"]
            out = report("--compare", os.path.join(tmp, "a"), b).stdout
            self.assertIn(f"A: {os.path.join(tmp, 'a')} ({len(a)} files, {len(a)} processes)", out)
            self.assertIn(f"B: {b} (1 files, 1 processes)", out)
            cells = [c for c in out.splitlines() if re.match(r"host\s+misses", c)][0].split()
            self.assertEqual(cells[2:4], [str(ta["misses"]), str(tb["misses"])])
            self.assertEqual(int(cells[4]), tb["misses"] - ta["misses"])
            hr = [c for c in out.splitlines() if re.match(r"host\s+hit rate", c)][0].split()
            # The report's own rounding (mempool-report finish(): hits / requests
            # to 4 decimals, then one): the file's hit_rate, rounded in C, or
            # an unrounded ratio can land on the other side of a .x5.
            self.assertEqual(hr[3:5], [f"{100 * round(t['hits'] / t['requests'], 4):.1f}%" for t in (ta, tb)])
            j = json.loads(report("--compare", "--json", os.path.join(tmp, "a"), b).stdout)
            self.assertEqual(j["deltas"]["host"]["trims"], {"a": ta["trims"], "b": tb["trims"],
                                                            "delta": tb["trims"] - ta["trims"]})
            self.assertEqual(j["b"]["view"]["options"]["MEMPOOL_HOST_CACHE_LIMIT"], 0)

    def test_fixtures(self):
        out = report("--compare", V1, V2).stdout
        self.assertRegex(out, r"device\s+hit rate\s+94\.\d%\s+80\.0%\s+-1[45]\.\d pp")


class MempoolRun(unittest.TestCase):
    def setUp(self):
        need(PRELOAD, CUDA_APP)
        self.tmp = tempfile.mkdtemp(prefix="mp-run.")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def run_tool(self, *args, cwd=None):
        env = clean_env(LD_LIBRARY_PATH=FAKE)
        return subprocess.run([RUN, "--preload", PRELOAD, *args], env=env, cwd=cwd or self.tmp, capture_output=True, text=True,
                              timeout=240)

    def test_out_and_report(self):
        # Relative DIR; the children run elsewhere; the command's status comes back.
        os.makedirs(os.path.join(self.tmp, "work"))
        r = self.run_tool("--out", "stats", "--report", "--", "sh", "-c",
                          f"cd / && {CUDA_APP} && cd /tmp && {CUDA_APP} > /dev/null; exit 3",
                          cwd=os.path.join(self.tmp, "work"))
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("ok mallocs=", r.stdout)  # the command's own output is untouched
        out = os.path.join(self.tmp, "work", "stats")
        files = sorted(os.listdir(out))  # the two programs' (and sh's, if it writes one)
        self.assertEqual(len([f for f in files if f.startswith("mempool.cuda_app_shared.")]), 2, files)
        self.assertIn(f"== merged: {len(files)} files, {len(files)} processes", r.stderr)
        dev = sum(load(os.path.join(out, f))["kinds"]["device"]["devices"][0]["requests"]
                  for f in files if "cuda_app" in f)
        self.assertEqual(row_of(section(r.stderr, "device"), "device 0")[1], str(dev))

    def test_report_without_out(self):
        r = self.run_tool("--report", "--", CUDA_APP)
        self.assertEqual(r.returncode, 0, r.stderr)
        m = re.search(r"mempool-run: stats files in (\S+)", r.stderr)
        self.assertIsNotNone(m, r.stderr)
        try:
            files = os.listdir(m.group(1))
            self.assertEqual(len(files), 1)
            self.assertIn(f"== {os.path.join(m.group(1), files[0])}\n", r.stderr)  # one file: its own header
            self.assertIn("[advice]", r.stderr)
        finally:
            shutil.rmtree(m.group(1), ignore_errors=True)

    def test_processes_without_a_file_are_named(self):
        # One child cannot write its file (a directory is in the way): the
        # report says which, and the program's own stderr stays clean.
        out = os.path.join(self.tmp, "o")
        os.makedirs(os.path.join(out, "blocked.json"))
        r = self.run_tool("--out", out, "--report", "--", "sh", "-c",
                          f"perl -e 'print STDERR qq(own\\n)'; MEMPOOL_STATS_FILE={out}/blocked.json perl -e 1")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stderr.startswith("own\n"), r.stderr)
        self.assertRegex(r.stderr, r"\nmempool\[\d+\]: not writing stats file " + re.escape(out)
                         + r"/blocked\.json: it exists and is not a regular file\n")
        self.assertIn("mempool-run: 1 process(es) wrote no stats file", r.stderr)
        self.assertNotIn("stats written to", r.stderr)

    def test_exec_without_report(self):
        r = self.run_tool("--out", os.path.join(self.tmp, "o"), "--", "sh", "-c", "ls / > /dev/null; exit 5")
        self.assertEqual(r.returncode, 5)
        self.assertEqual(r.stderr, "")
        self.assertIn("mempool.ls.", " ".join(os.listdir(os.path.join(self.tmp, "o"))))


class NonUtf8(unittest.TestCase):
    """Bytes that are not UTF-8 in argv, the executable's path, the working
    directory and the stats path: the file is strict UTF-8 JSON, the bytes
    come back with os.fsencode (\\udcXX escapes), and mempool-report reads
    files of older shims that hold the raw bytes, with a warning."""

    ARGS = [b"\xff", b"a\xc3\xa9b", b"\xed\xa0\x80", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"q\"\\\x01\x7f",
            b"\xe2\x82"]

    def setUp(self):
        need(PRELOAD)
        self.tmp = tempfile.mkdtemp(prefix="mp-bytes.")
        self.dir = os.path.join(os.fsencode(self.tmp), b"dir\xff\xfe")
        os.mkdir(self.dir)
        self.exe = os.path.join(self.dir, b"tr\xe9ue")
        shutil.copy(b"/bin/true", self.exe)
        env = {os.fsencode(k): os.fsencode(v) for k, v in clean_env().items()}
        env[b"LD_PRELOAD"] = os.fsencode(PRELOAD)
        env[b"MEMPOOL_STATS_FILE"] = self.dir + b"/s\xff.%e.%p.json"
        subprocess.run([self.exe, *self.ARGS], env=env, cwd=self.dir, check=True, timeout=60)
        files = [f for f in os.listdir(self.dir) if f.endswith(b".json")]
        self.assertEqual(len(files), 1, files)
        self.file = os.path.join(self.dir, files[0])
        self.assertTrue(files[0].startswith(b"s\xff.tr\xe9ue."), files[0])

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_valid_json_and_bytes_back(self):
        with open(self.file, "rb") as f:
            raw = f.read()
        doc = json.loads(raw.decode("utf-8"))  # strict: no raw bytes, no control characters
        proc = doc["process"]
        self.assertEqual([os.fsencode(a) for a in proc["argv"]], [self.exe, *self.ARGS])
        self.assertEqual(os.fsencode(proc["exe"]), os.path.realpath(self.exe))
        self.assertEqual(os.fsencode(doc["options"]["MEMPOOL_STATS_FILE"]), self.dir + b"/s\xff.%e.%p.json")
        self.assertIn(rb'"\udcff"', raw)  # the documented form of a byte that is not UTF-8
        self.assertIn("a\u00e9b", proc["argv"])  # valid UTF-8 is kept as it is
        r = report(os.fsdecode(self.file))
        self.assertNotIn("UTF-8", r.stderr)
        self.assertIn("host", r.stdout)

    def test_report_reads_raw_bytes_with_a_warning(self):
        with open(self.file, "rb") as f:
            doc = json.loads(f.read().decode("utf-8"))
        old = os.path.join(self.tmp, "old.json")
        with open(old, "wb") as f:  # what a shim before the escaping wrote
            f.write(json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogateescape"))
        with open(old, "rb") as f:
            self.assertRaises(UnicodeDecodeError, f.read().decode, "utf-8")
        r = report(old)
        self.assertIn(f"mempool-report: {old}: not valid UTF-8", r.stderr)
        self.assertIn("host", r.stdout)
        data = report_json(old)["reports"][0]["data"]
        self.assertEqual([os.fsencode(a) for a in data["process"]["argv"]], [self.exe, *self.ARGS])


class Schema(unittest.TestCase):
    """--check-schema on a fresh file, the fixtures, and a broken file."""

    @classmethod
    def setUpClass(cls):
        if importlib.util.find_spec("jsonschema") is None:
            raise unittest.SkipTest("jsonschema not importable by " + sys.executable)

    def test_fresh_file(self):
        need(PRELOAD, CUDA_APP)
        with tempfile.TemporaryDirectory() as tmp:
            f = shim_run([CUDA_APP], tmp)[0]
            r = report("--check-schema", f)
            self.assertEqual(r.stdout.strip(), f"{f}: ok (schema version {load(f)['version']})")

    def test_fixtures(self):
        r = report("--check-schema", V1, V2, V2_POOLS)
        self.assertEqual(r.stdout.splitlines(), [f"{V1}: ok (schema version 1)", f"{V2}: ok (schema version 2)",
                                                 f"{V2_POOLS}: ok (schema version 2)"])

    def test_pool_peaks_spelt_as_the_version_says(self):
        """Version 3 requires bytes_in_use_peak, versions 1 and 2 peak_bytes_in_use."""
        d = load(V2_POOLS)
        d["version"] = 3
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(d, f)
        try:
            r = report("--check-schema", f.name, rc=1)
            self.assertEqual(sorted(r.stdout.splitlines()),
                             [f"{f.name}: pools.0: 'bytes_in_use_peak' is a required property",
                              f"{f.name}: pools.0: 'bytes_reserved_peak' is a required property"])
        finally:
            os.unlink(f.name)

    def test_broken(self):
        d = load(V2)
        d["process"]["argv"] = "python3 train.py"
        del d["process"]["final"]
        d["kinds"]["device"]["devices"][0]["hit_rate"] = 1.5
        d["call_sites"]["sites"][0]["kind"] = "gpu"
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            json.dump(d, f)
        try:
            r = report("--check-schema", f.name, rc=1)
            lines = r.stdout.splitlines()
            self.assertEqual(len(lines), 4, r.stdout)
            self.assertIn(f"{f.name}: call_sites.sites.0.kind: 'gpu' is not one of", r.stdout)
            self.assertIn(f"{f.name}: kinds.device.devices.0.hit_rate: 1.5 is greater than the maximum of 1",
                          r.stdout)
            self.assertIn(f"{f.name}: process: 'final' is a required property", r.stdout)
            self.assertIn(f"{f.name}: process.argv: 'python3 train.py' is not of type 'array'", r.stdout)
        finally:
            os.unlink(f.name)


if __name__ == "__main__":
    if sys.argv[1:] == ["schema"]:
        if importlib.util.find_spec("jsonschema") is None:
            print("skipped: the Python module jsonschema is missing (apt-get install python3-jsonschema)")
            sys.exit(77)
        suite = unittest.defaultTestLoader.loadTestsFromTestCase(Schema)
    else:
        loader = unittest.defaultTestLoader
        suite = unittest.TestSuite(loader.loadTestsFromTestCase(c) for c in (
            FixtureV2, FixtureV1, FixtureV2OldPoolKeys, ReportConsts, MergeForkedFamily, MergeCallSites, Interim, AdviceRealRuns, Plots,
            WithoutJsonschema, Compare, MempoolRun, NonUtf8))
    result = unittest.TextTestRunner(verbosity=2).run(suite)
    sys.exit(0 if result.wasSuccessful() else 1)
