//! Shared by the C ABI tests and the round-trip benchmark: build the C
//! library, compile C and C++ programs against it, run this binary again as
//! a Rust peer, and the payload generator the C programs mirror
//! (`ffi/tests/c/common.h`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Environment variable naming the role a re-executed test binary plays.
pub const ROLE: &str = "SHMPORT_FFI_ROLE";

/// Where the library and the compiled programs are.
pub struct Library {
    /// `target/<profile>`: `libshmport.so` and `libshmport.a`.
    pub dir: PathBuf,
    /// The repository's `include/`.
    pub include: PathBuf,
    /// Where compiled C programs go.
    pub programs: PathBuf,
    /// The profile's directory name (`debug`, `release`).
    pub profile_dir: String,
}

/// The crate's directory (`ffi/`).
pub fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Build `libshmport.so`, `libshmport.a` and the crate's examples with the
/// profile this binary was built with (once per process), and say where
/// they are.
///
/// `cargo test` builds no library of a crate that is only a `cdylib` and a
/// `staticlib`, and no example when one test is asked for, so the tests
/// build them: cargo has released its lock by the time tests run.
pub fn library() -> &'static Library {
    library_for(None)
}

/// [`library`] with a named cargo profile (the benchmark asks for `bench`,
/// whose directory is `release`).
pub fn library_for(profile: Option<&str>) -> &'static Library {
    static LIB: OnceLock<Library> = OnceLock::new();
    LIB.get_or_init(|| {
        let exe = std::env::current_exe().expect("test binary path");
        // target/<profile>/deps/<binary>
        let dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("binary under target/<profile>/deps")
            .to_path_buf();
        let profile_dir = dir.file_name().unwrap().to_string_lossy().into_owned();
        let target_dir = dir.parent().expect("target dir").to_path_buf();
        let profile = profile.map(str::to_owned).unwrap_or_else(|| {
            if profile_dir == "debug" {
                "dev".into()
            } else {
                profile_dir.clone()
            }
        });
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "-p", "shmport-ffi", "--lib", "--examples"])
            .args(["--profile", &profile])
            .arg("--manifest-path")
            .arg(crate_dir().join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir)
            .output()
            .expect("run cargo build");
        assert!(
            out.status.success(),
            "cargo build -p shmport-ffi failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for f in ["libshmport.so", "libshmport.a"] {
            assert!(
                dir.join(f).exists(),
                "{} was not built",
                dir.join(f).display()
            );
        }
        let programs = dir.join("shmport-c-programs");
        std::fs::create_dir_all(&programs).expect("create the programs directory");
        Library {
            dir,
            include: crate_dir().join("../include"),
            programs,
            profile_dir,
        }
    })
}

/// How a C or C++ program is built.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// Warnings as errors, AddressSanitizer and UndefinedBehaviorSanitizer,
    /// linked against `libshmport.so`.
    SanitizedShared,
    /// The same, linked against `libshmport.a`.
    SanitizedStatic,
    /// Optimized, no sanitizers, linked against `libshmport.a` (for the
    /// benchmark).
    Optimized,
    /// Sanitized, with the include and link flags `pkg-config` reads from
    /// `ffi/shmport.pc` (its `libdir` pointed at this profile's directory):
    /// the one-line build a C project uses. Falls back to
    /// [`Build::SanitizedShared`] where `pkg-config` is not installed.
    PkgConfig,
}

/// The flags `pkg-config --cflags --libs shmport` gives for this tree, or
/// `None` without `pkg-config`.
pub fn pkg_config_flags() -> Option<Vec<String>> {
    let lib = library();
    let out = Command::new("pkg-config")
        .env("PKG_CONFIG_PATH", crate_dir())
        .arg(format!("--define-variable=libdir={}", lib.dir.display()))
        .args(["--cflags", "--libs", "shmport"])
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "pkg-config rejects ffi/shmport.pc: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(
        String::from_utf8(out.stdout)
            .expect("pkg-config prints text")
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
    )
}

/// Compile `sources` (paths relative to `ffi/`, or absolute) into the
/// program `name`; C++ if any source ends in `.cpp`. Returns its path.
pub fn compile(name: &str, sources: &[&str], build: Build) -> PathBuf {
    let lib = library();
    let cpp = sources.iter().any(|s| s.ends_with(".cpp"));
    let compiler = if cpp { "c++" } else { "cc" };
    let out = lib.programs.join(name);
    // Several test processes may compile the same program: write a private
    // file and rename it into place.
    let tmp = lib.programs.join(format!(".{name}.{}", std::process::id()));
    let mut cmd = Command::new(compiler);
    cmd.args(["-Wall", "-Wextra", "-Werror", "-g"]);
    cmd.arg(if cpp { "-std=c++17" } else { "-std=c11" });
    if cpp {
        cmd.arg("-Wpedantic");
    } else {
        // For clock_gettime, kill, sigaction and friends under -std=c11.
        cmd.arg("-D_GNU_SOURCE");
    }
    let pkg_config = match build {
        Build::PkgConfig => pkg_config_flags(),
        _ => None,
    };
    match build {
        Build::SanitizedShared | Build::SanitizedStatic | Build::PkgConfig => {
            cmd.args([
                "-O1",
                "-fsanitize=address,undefined",
                "-fno-sanitize-recover=all",
                "-fno-omit-frame-pointer",
            ]);
        }
        Build::Optimized => {
            cmd.args(["-O2", "-DNDEBUG"]);
        }
    }
    if pkg_config.is_none() {
        cmd.arg("-I").arg(&lib.include);
    }
    cmd.arg("-I").arg(crate_dir().join("tests/c"));
    for s in sources {
        cmd.arg(crate_dir().join(s));
    }
    cmd.arg("-o").arg(&tmp);
    match (build, &pkg_config) {
        (Build::PkgConfig, Some(flags)) => {
            cmd.args(flags);
        }
        (Build::SanitizedShared | Build::PkgConfig, _) => {
            cmd.arg("-L").arg(&lib.dir);
            cmd.arg(format!("-Wl,-rpath,{}", lib.dir.display()));
            cmd.arg("-lshmport");
        }
        (Build::SanitizedStatic | Build::Optimized, _) => {
            cmd.arg(lib.dir.join("libshmport.a"));
        }
    }
    // What a Rust static library needs from the system (rustc's
    // native-static-libs on Linux).
    cmd.args(["-lpthread", "-ldl", "-lm", "-lrt", "-lutil", "-lgcc_s"]);
    let result = cmd.output().expect("run the C compiler");
    assert!(
        result.status.success(),
        "compiling {name} failed:\n{:?}\n{}",
        cmd,
        String::from_utf8_lossy(&result.stderr)
    );
    std::fs::rename(&tmp, &out).expect("move the program into place");
    out
}

/// A command for a compiled program, with the sanitizers set to stop at
/// the first error, leak detection on, and no inherited port.
pub fn program(path: &Path) -> Command {
    let mut c = Command::new(path);
    c.env(
        "ASAN_OPTIONS",
        "detect_leaks=1:halt_on_error=1:abort_on_error=0:exitcode=86",
    )
    .env("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1")
    .env_remove("SHMPORT_PORT");
    c
}

/// Arguments that make this test binary run only `peer_entry` (the peer
/// dispatches on [`ROLE`]).
pub const PEER_ARGS: [&str; 4] = ["--exact", "peer_entry", "--nocapture", "--test-threads=1"];

/// The role this process plays, if it is a peer.
pub fn role() -> Option<String> {
    std::env::var(ROLE).ok()
}

// ----------------------------------------------- the payload generator
// Mirrors ffi/tests/c/common.h exactly.

/// splitmix64.
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Size of message `i` in direction `dir` (0: Rust to C, 1: C to Rust).
pub fn message_size(i: u64, dir: u64) -> usize {
    let x = mix64(i ^ (dir << 40));
    let (class, r) = (x % 10000, x >> 20);
    (if class < 8000 {
        r % 512
    } else if class < 9900 {
        512 + r % 7680
    } else if class < 9998 {
        8192 + r % 57344
    } else {
        600_000 + r % 100_000
    }) as usize
}

/// Message `i`'s bytes in direction `dir`.
pub fn message_fill(buf: &mut [u8], i: u64, dir: u64) {
    let mut x = mix64(i * 2 + dir) | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
}

/// FNV-1a over 8-byte words, then the tail, then the length.
pub fn checksum(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut chunks = bytes.chunks_exact(8);
    for c in &mut chunks {
        h ^= u64::from_le_bytes(c.try_into().unwrap());
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    for &b in chunks.remainder() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^ bytes.len() as u64
}
