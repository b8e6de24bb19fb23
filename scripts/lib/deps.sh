# Sourced by scripts/test and scripts/demo: make sure the Debian packages the
# build and tests need are present.  As root, install what is missing;
# otherwise print the exact apt-get line and stop.
# scripts/compat's CPython tests need the test package of Debian's python3
# (libpython3.X-testsuite, X its version), its MPI case openmpi-bin and mpi4py.
mempool_py_version=$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo 3.11)
MEMPOOL_APT_PACKAGES=(meson ninja-build pkg-config gcc g++ python3 libjemalloc-dev libjemalloc2
                      check binutils gawk perl git gzip xz-utils valgrind
                      python3-jsonschema python3-matplotlib clang sqlite3 bzip2 make
                      "libpython$mempool_py_version-testsuite" openmpi-bin python3-mpi4py)

mempool_ensure_deps() {
  local missing=() p
  for p in "${MEMPOOL_APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -eq 0 ]; then
    echo "Installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "Missing packages. Run:" >&2
    echo "  sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
}

# Configure (once) and build into $1; extra meson options may follow.
# werror is off in meson.build's defaults (distributions build with their own
# flags and newer compilers); the project's own builds keep it on.
mempool_build() {
  local dir=$1
  shift
  if [ ! -f "$dir/build.ninja" ]; then
    meson setup "$dir" --buildtype=debugoptimized -Dwerror=true "$@" >/dev/null
  else
    meson configure "$dir" -Dwerror=true >/dev/null
  fi
  ninja -C "$dir" >/dev/null
}
