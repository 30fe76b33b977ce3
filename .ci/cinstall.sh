#!/usr/bin/env bash
# CI for the C install (issue 18): install shmport's C library into a
# temporary prefix with ffi/install.sh, then, outside the source tree,
# build and run against it
#   - the C worker example with pkg-config (libshmport.so),
#   - the same example with CMake (find_package(shmport CONFIG)), linked
#     with libshmport.so and with libshmport.a,
#   - a C++ program with CMake (the C++ wrapper's target).
# Installs cmake and pkg-config with apt-get when missing. Leaves nothing
# behind: the prefix and build directories are removed, and it fails if a
# file was left in /dev/shm. Run from anywhere: bash .ci/cinstall.sh
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
start=$SECONDS

need=()
command -v cmake >/dev/null || need+=(cmake)
command -v pkg-config >/dev/null || need+=(pkg-config)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${need[@]}"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/shmport-cinstall.XXXXXX")
finish() {
  rc=$?
  rm -rf "$tmp"
  echo "== cinstall: $((SECONDS - start)) s, exit $rc"
}
trap finish EXIT
shm_before=$(ls -A /dev/shm 2>/dev/null | sort || true)

prefix=$tmp/prefix
echo "== install into $prefix"
bash ffi/install.sh "$prefix"
lib=$prefix/lib
test -L "$lib/libshmport.so" && test -f "$lib/libshmport.a"
test -f "$prefix/include/shmport.h" && test -f "$prefix/include/shmport.hpp"
if command -v readelf >/dev/null; then
  readelf -d "$lib/libshmport.so" | grep -q 'SONAME.*libshmport\.so\.'
fi

# Everything below builds outside the source tree, from copies.
work=$tmp/work
mkdir -p "$work"
cp -r examples/c_worker "$work/c_worker"
cp -r ffi/tests/install "$work/cpp"
cd "$work"

echo "== C with pkg-config"
export PKG_CONFIG_PATH=$lib/pkgconfig
test "$(pkg-config --modversion shmport)" = "$(sed -n 's/^version = "\(.*\)"$/\1/p' "$repo/ffi/Cargo.toml" | head -n1)"
# shellcheck disable=SC2046
cc -std=c11 -Wall -Wextra -Werror c_worker/c_worker.c $(pkg-config --cflags --libs shmport) \
  -Wl,-rpath,"$(pkg-config --variable=libdir shmport)" -o c_worker_pc
./c_worker_pc 3 | tee out_pc
grep -q "c_worker: ok" out_pc

echo "== C with CMake (shared and static)"
cmake -S c_worker -B build_worker -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build_worker -j 2 >/dev/null
./build_worker/c_worker 4 | tee out_cmake
grep -q "c_worker: ok" out_cmake
./build_worker/c_worker_static 3 | tee out_static
grep -q "c_worker: ok" out_static
if command -v readelf >/dev/null && readelf -d build_worker/c_worker_static | grep -q 'libshmport'; then
  echo "c_worker_static needs libshmport.so" >&2
  exit 1
fi

echo "== C++ with CMake"
cmake -S cpp -B build_cpp -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build build_cpp -j 2 >/dev/null
./build_cpp/check_cpp

shm_after=$(ls -A /dev/shm 2>/dev/null | sort || true)
if [ "$shm_before" != "$shm_after" ]; then
  echo "files left in /dev/shm:" >&2
  diff <(echo "$shm_before") <(echo "$shm_after") >&2 || true
  exit 1
fi
echo "== cinstall passed"
