#!/usr/bin/env bash
# Install shmport's C library into PREFIX:
#
#   ffi/install.sh PREFIX            (e.g. /usr/local, $HOME/.local, /opt/shmport)
#
#   PREFIX/include/shmport.h, shmport.hpp
#   PREFIX/lib/libshmport.so.X.Y.Z   soname libshmport.so.X (X.Y for 0.Y.Z),
#                                    with the libshmport.so.X and libshmport.so links
#   PREFIX/lib/libshmport.a
#   PREFIX/lib/pkgconfig/shmport.pc
#   PREFIX/lib/cmake/shmport/        find_package(shmport CONFIG): shmport::shmport
#                                    (shared), shmport::shmport_static, shmport::shmport_cpp
#
# LIBDIR (default "lib") names the library directory under PREFIX, e.g.
# LIBDIR=lib/x86_64-linux-gnu. DESTDIR is honoured as usual (staged
# installs: the files record PREFIX, are written under DESTDIR/PREFIX).
# Builds with `cargo rustc --release`, into the target directory cargo uses
# here (CARGO_TARGET_DIR included).
#
# A script and not cargo-c: cargo-c would have to be installed first (cargo
# install cargo-c compiles a few hundred crates), and it writes no CMake
# package; this is `cargo rustc` plus file copies, with nothing to install.
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
  echo "usage: $0 PREFIX" >&2
  exit 2
fi
case "$1" in
  /*) prefix=${1%/} ;;
  *) prefix=$(cd "$(dirname "$1")" 2>/dev/null && pwd)/$(basename "$1") || {
       echo "install.sh: the parent of $1 does not exist" >&2
       exit 2
     } ;;
esac
libdir_rel=${LIBDIR:-lib}
dest=${DESTDIR:-}

ffi=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$ffi")
cargo=${CARGO:-cargo}

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ffi/Cargo.toml" | head -n1)
major=${version%%.*}
rest=${version#*.}
minor=${rest%%.*}
# The ABI's version in the soname: the major version, or 0.minor while the
# major is 0 (cargo's compatibility rule: 0.1 and 0.2 are incompatible).
if [ "$major" = 0 ]; then abi="0.$minor"; else abi=$major; fi
soname=libshmport.so.$abi

target_dir=$("$cargo" metadata --format-version 1 --no-deps --manifest-path "$root/Cargo.toml" |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target_dir" ] || { echo "install.sh: no target directory from cargo metadata" >&2; exit 1; }

# The soname is given to this crate's link only (`cargo rustc`), so nothing
# else is rebuilt.
"$cargo" rustc --release --lib --manifest-path "$ffi/Cargo.toml" -- \
  -C link-arg=-Wl,-soname,"$soname"
built=$target_dir/release

inc=$dest$prefix/include
lib=$dest$prefix/$libdir_rel
cm=$lib/cmake/shmport
pc=$lib/pkgconfig
install -d "$inc" "$lib" "$cm" "$pc"
install -m 644 "$root/include/shmport.h" "$root/include/shmport.hpp" "$inc/"
install -m 755 "$built/libshmport.so" "$lib/libshmport.so.$version"
ln -sfn "libshmport.so.$version" "$lib/$soname"
ln -sfn "$soname" "$lib/libshmport.so"
install -m 644 "$built/libshmport.a" "$lib/libshmport.a"

# What a program linking libshmport.a needs besides it (rustc
# --print native-static-libs, less libc).
private="-lgcc_s -lutil -lrt -lpthread -lm -ldl"

cat >"$pc/shmport.pc" <<EOF
prefix=$prefix
includedir=\${prefix}/include
libdir=\${prefix}/$libdir_rel

Name: shmport
Description: MessagePort-style channels between Linux processes over shared memory
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -lshmport
Libs.private: $private
EOF

# Relocatable: the package finds its prefix from where it is.
up=$(echo "$libdir_rel/cmake/shmport" | sed 's|[^/][^/]*|..|g')
cat >"$cm/shmportConfig.cmake" <<EOF
# shmport's CMake package (written by ffi/install.sh).
#
#   find_package(shmport CONFIG REQUIRED)
#   target_link_libraries(app PRIVATE shmport::shmport)         # C, libshmport.so
#   target_link_libraries(app PRIVATE shmport::shmport_static)  # C, libshmport.a
#   target_link_libraries(app PRIVATE shmport::shmport_cpp)     # C++17 wrapper shmport.hpp
include(CMakeFindDependencyMacro)
find_dependency(Threads)

get_filename_component(_shmport_prefix "\${CMAKE_CURRENT_LIST_DIR}/$up" ABSOLUTE)
set(shmport_INCLUDE_DIR "\${_shmport_prefix}/include")

if(NOT TARGET shmport::shmport)
  add_library(shmport::shmport SHARED IMPORTED)
  set_target_properties(shmport::shmport PROPERTIES
    IMPORTED_LOCATION "\${_shmport_prefix}/$libdir_rel/libshmport.so.$version"
    IMPORTED_SONAME "$soname"
    INTERFACE_INCLUDE_DIRECTORIES "\${shmport_INCLUDE_DIR}")

  add_library(shmport::shmport_static STATIC IMPORTED)
  set_target_properties(shmport::shmport_static PROPERTIES
    IMPORTED_LOCATION "\${_shmport_prefix}/$libdir_rel/libshmport.a"
    IMPORTED_LINK_INTERFACE_LANGUAGES "C"
    INTERFACE_INCLUDE_DIRECTORIES "\${shmport_INCLUDE_DIR}"
    INTERFACE_LINK_LIBRARIES "Threads::Threads;gcc_s;util;rt;m;\${CMAKE_DL_LIBS}")

  add_library(shmport::shmport_cpp INTERFACE IMPORTED)
  set_target_properties(shmport::shmport_cpp PROPERTIES
    INTERFACE_LINK_LIBRARIES "shmport::shmport"
    INTERFACE_COMPILE_FEATURES "cxx_std_17")
endif()

set(shmport_FOUND TRUE)
unset(_shmport_prefix)
EOF

cat >"$cm/shmportConfigVersion.cmake" <<EOF
# Compatible: the same major version (the same minor while it is 0), and
# at least the version asked for.
set(PACKAGE_VERSION "$version")
if(PACKAGE_FIND_VERSION)
  if(PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION
     OR NOT PACKAGE_FIND_VERSION_MAJOR EQUAL $major
     OR ($major EQUAL 0 AND NOT PACKAGE_FIND_VERSION_MINOR EQUAL $minor))
    set(PACKAGE_VERSION_COMPATIBLE FALSE)
  else()
    set(PACKAGE_VERSION_COMPATIBLE TRUE)
    if(PACKAGE_FIND_VERSION VERSION_EQUAL PACKAGE_VERSION)
      set(PACKAGE_VERSION_EXACT TRUE)
    endif()
  endif()
else()
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
endif()
if(NOT CMAKE_SIZEOF_VOID_P EQUAL 8)
  set(PACKAGE_VERSION "\${PACKAGE_VERSION} (64-bit only)")
  set(PACKAGE_VERSION_UNSUITABLE TRUE)
endif()
EOF

echo "installed shmport $version ($soname) into $dest$prefix"
