#!/usr/bin/env python3
"""Generate scripts/lib/report-consts.json: what scripts/mempool-report
takes from the sources instead of keeping copies.

  options:         every MEMPOOL_* option of src/core/options.def (read with
                   gen-options-doc.py's parser): type, default, min, max
                   (sizes and counts as integers), choices
  schema_version:  MP_STATS_SCHEMA_VERSION of src/report/report.h, the stats file
                   version the shim writes
  host_first_bound: SHARED_FIRST_BOUND of src/host/malloc_pools.c, the blocks a
                   class's shared pool starts with (the report's advice names
                   it; with --check, docs/stats.md and options.def must name
                   the same number)

The file is checked in, so mempool-report runs from the source tree
without a build; meson installs it next to stats.schema.json
(share/mempool), where the installed mempool-report finds it.  The
report-consts test fails when it is out of date.

usage: gen-report-consts.py [--check]
"""
import importlib.util
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "scripts/lib/report-consts.json"
SIZE = re.compile(r"^(\d+)([KMGT]?)$")
SHIFT = {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}


def gen_options_doc():
    """scripts/gen-options-doc.py as a module: the one reader of options.def
    (parse) and of generated files (write_or_check)."""
    sys.dont_write_bytecode = True  # no __pycache__ in the source tree
    spec = importlib.util.spec_from_file_location("gen_options_doc", ROOT / "scripts/gen-options-doc.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def options_def_parser():
    """parse() of scripts/gen-options-doc.py."""
    return gen_options_doc().parse


def number(text: str, name: str):
    """A size or count of options.def ("64K", "4096") as an integer; None if empty."""
    if text == "":
        return None
    m = SIZE.match(text)
    if not m:
        raise ValueError(f"{name}: cannot read {text!r} as a number")
    return int(m.group(1)) << SHIFT[m.group(2)]


def option(row: dict) -> dict:
    t, d = row["type"], row["default"]
    if t == "bool":
        default = d == "1"
    elif t in ("size", "count", "size_or_percent"):
        default = number(d, row["name"])
    else:  # choice, path: as the stats file writes them, by name
        default = d
    return {"type": t, "default": default, "min": number(row["min"], row["name"]),
            "max": number(row["max"], row["name"]),
            "choices": row["choices"].split("|") if row["choices"] else None}


def schema_version() -> int:
    m = re.search(r"^#define MP_STATS_SCHEMA_VERSION (\d+)\s*$", (ROOT / "src/report/report.h").read_text(), re.M)
    if not m:
        raise ValueError("src/report/report.h: no #define MP_STATS_SCHEMA_VERSION N")
    return int(m.group(1))


def host_first_bound() -> int:
    m = re.search(r"^#define SHARED_FIRST_BOUND (\d+)\s*$", (ROOT / "src/host/malloc_pools.c").read_text(), re.M)
    if not m:
        raise ValueError("src/host/malloc_pools.c: no #define SHARED_FIRST_BOUND N")
    return int(m.group(1))


def render() -> str:
    rows = options_def_parser()((ROOT / "src/core/options.def").read_text())
    # One line per option, so a change to options.def shows as one line here.
    opts = ",\n".join(f"  {json.dumps(r['name'])}: {json.dumps(option(r))}" for r in rows)
    return ("{\n"
            ' "_generated": "from src/core/options.def, src/report/report.h and src/host/malloc_pools.c'
            ' by scripts/gen-report-consts.py; do not edit",\n'
            f' "schema_version": {schema_version()},\n'
            f' "host_first_bound": {host_first_bound()},\n'
            f' "options": {{\n{opts}\n }}\n}}\n')


def main() -> int:
    check = "--check" in sys.argv[1:]
    first = host_first_bound()
    for path, says in (("docs/stats.md", f"starts at {first} blocks"), ("src/core/options.def", f"at most {first} ")):
        if check and says not in (ROOT / path).read_text():
            print(f"gen-report-consts: {path} does not say the shared pool's first bound: \"{says}\"")
            return 1
    return gen_options_doc().write_or_check(OUT, render(), check,
                                            "src/core/options.def, src/report/report.h and src/host/malloc_pools.c",
                                            "scripts/gen-report-consts.py")


if __name__ == "__main__":
    sys.exit(main())
