//! `include/shmport.h` is what cbindgen generates from this crate, and the
//! pkg-config file names this crate's version.
//!
//! `SHMPORT_BLESS=1 cargo test -p shmport-ffi --test header` rewrites the
//! header after a change to the C API.

use std::path::Path;

#[test]
fn committed_header_matches_the_code() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let header = crate_dir.join("../include/shmport.h");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("ffi/cbindgen.toml parses");
    let bindings = cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header");
    let mut generated = Vec::new();
    bindings.write(&mut generated);
    let generated = String::from_utf8(generated).expect("the header is UTF-8");

    if std::env::var_os("SHMPORT_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&header, &generated).expect("write include/shmport.h");
        return;
    }
    let committed = std::fs::read_to_string(&header).unwrap_or_default();
    if committed != generated {
        let first = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(generated.lines().count()));
        let show = |text: &str| {
            text.lines()
                .skip(first.saturating_sub(2))
                .take(6)
                .collect::<Vec<_>>()
                .join("\n")
        };
        panic!(
            "include/shmport.h differs from what ffi/src generates, from line {}:\n\
             --- committed\n{}\n--- generated\n{}\n\
             Run `SHMPORT_BLESS=1 cargo test -p shmport-ffi --test header` and commit the header.",
            first + 1,
            show(&committed),
            show(&generated),
        );
    }
}

#[test]
fn pkg_config_file_names_this_version() {
    let pc = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("shmport.pc"))
        .expect("ffi/shmport.pc");
    let version = pc
        .lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(str::trim);
    assert_eq!(version, Some(env!("CARGO_PKG_VERSION")));
}
