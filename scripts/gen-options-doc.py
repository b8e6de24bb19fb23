#!/usr/bin/env python3
"""Generate docs/options.md from src/core/options.def, the one table of options.

usage: gen-options-doc.py [--check] [DEF] [OUT]
With --check, exit 1 (and say so) if OUT differs from what DEF generates.
parse() is also scripts/gen-report-consts.py's reader of options.def.
"""
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|([A-Za-z_][A-Za-z0-9_]*)|([(),])')


def parse(text: str):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    rows = []
    for m in re.finditer(r"MP_OPTION\s*\((.*?)\)\s*(?=MP_OPTION|\Z)", text, flags=re.S):
        args, cur = [], None
        for s, ident, punct in TOKEN.findall(m.group(1)):
            if punct == ",":
                args.append(cur)
                cur = None
            elif s or ident:
                val = s if s else ident
                cur = val if cur is None else cur + val  # adjacent literals concatenate
            elif s == "" and not ident and not punct:
                cur = "" if cur is None else cur
        args.append(cur)
        ident, typ, default, lo, hi, choices, doc = [a or "" for a in args]
        rows.append(dict(name="MEMPOOL_" + ident, type=typ, default=default,
                         min=lo, max=hi, choices=choices, doc=doc))
    return rows


def render(rows) -> str:
    out = ["# Options", "",
           "<!-- Generated from src/core/options.def by scripts/gen-options-doc.py; do not edit. -->", "",
           "Every setting is an environment variable read once when the shim starts "
           "(with `secure_getenv`, so not for setuid programs). Sizes are bytes and accept "
           "K, M, G, T suffixes (powers of 1024, `KiB`/`KB` also accepted). Booleans accept "
           "1/0, true/false, yes/no, on/off. An invalid value prints one line "
           "`mempool: MEMPOOL_X=...: <why>; using <default>` and the program runs on.", "",
           "| Variable | Type | Default | Range / choices | Meaning |",
           "|---|---|---|---|---|"]
    for r in rows:
        rng = r["choices"].replace("|", ", ") if r["choices"] else (
            f"{r['min']} … {r['max']}" if r["min"] or r["max"] else "")
        out.append(f"| `{r['name']}` | {r['type']} | `{r['default']}` | {rng} | {r['doc']} |")
    return "\n".join(out) + "\n"


def main() -> int:
    args = [a for a in sys.argv[1:] if a != "--check"]
    check = "--check" in sys.argv[1:]
    src = Path(args[0]) if args else ROOT / "src/core/options.def"
    dst = Path(args[1]) if len(args) > 1 else ROOT / "docs/options.md"
    return write_or_check(dst, render(parse(src.read_text())), check, str(src), "scripts/gen-options-doc.py")


def write_or_check(dst, text, check, sources, script):
    """Write a generated file, or (check) say whether it is up to date:
    0, or 1 with a line naming the script that regenerates it.  Shared with
    scripts/gen-report-consts.py."""
    if check:
        if not dst.exists() or dst.read_text() != text:
            print(f"{dst} is out of date: run {script}", file=sys.stderr)
            return 1
        print(f"{dst} matches {sources}")
        return 0
    dst.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
