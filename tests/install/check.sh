#!/bin/sh
# meson install into a scratch tree, then build and run tests/install/example.c
# with only pkg-config's flags (prefix moved into the scratch tree).
set -eu
build=$1 src=$2
dest=$(mktemp -d)
trap 'rm -rf "$dest"' EXIT
meson install -C "$build" --destdir "$dest" --no-rebuild --quiet >/dev/null
pc=$(find "$dest" -name mempool.pc | head -n1)
test -n "$pc" || { echo "mempool.pc not installed"; exit 1; }
export PKG_CONFIG_PATH=$(dirname "$pc")
prefix=$(pkg-config --variable=prefix mempool)
pc_args="--define-variable=prefix=$dest$prefix"
flags=$(pkg-config $pc_args --cflags --libs mempool)
echo "pkg-config: $flags"
libdir=$(pkg-config $pc_args --variable=libdir mempool)
${CC:-cc} -std=c11 -Wall -Wextra -Werror -o "$dest/example" "$src/tests/install/example.c" $flags
LD_LIBRARY_PATH=$libdir MEMPOOL_STATS_FORMAT=none "$dest/example"
# The installed mempool-report finds its data (report-consts.json, the
# schema) in share/mempool, not in the source tree.
report=$(find "$dest" -name mempool-report -type f | head -n1)
test -n "$report" || { echo "mempool-report not installed"; exit 1; }
python3 "$report" "$src/tests/report/fixtures/v2-api-pools.json" | grep -q "peak 16.0 KiB" \
  || { echo "installed mempool-report failed"; exit 1; }
