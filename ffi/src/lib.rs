//! shmport's C ABI: `libshmport.so` and `libshmport.a`, described by
//! `include/shmport.h` (generated from this crate by cbindgen; see
//! `ffi/cbindgen.toml`) and wrapped for C++ by `include/shmport.hpp`.
//!
//! Conventions (those of rustls-ffi):
//!
//! - every function returns a [`shmport_status`]; results go to output
//!   parameters, written only on success; [`shmport_status_str`] gives the
//!   text of a status;
//! - handles are opaque pointers that are never dereferenced: each names a
//!   slot in a registry, with a generation, so NULL, freed, closed,
//!   transferred and foreign handles are refused with a status
//!   ([`registry`]);
//! - each kind of handle has one release function, which accepts NULL;
//! - every entry point catches panics ([`boundary::guard`]).
//!
//! The borrow of Rust's `Message<'p>` on its port becomes a rule the
//! functions check: a port with messages or a reservation outstanding
//! cannot be closed or posted (`SHMPORT_ERR_BUSY`); a port and its messages
//! are used by one thread at a time, as a `MessagePort` is `Send` but not
//! `Sync`.

#![cfg(target_os = "linux")]
// The C names are the API: `shmport_port`, `shmport_status`, ...
#![allow(non_camel_case_types)]

mod boundary;
mod handles;
mod message;
mod port;
mod process;
mod registry;
mod rendezvous;
mod set;
mod status;

use std::ffi::c_char;

pub use handles::{shmport_message, shmport_port};
pub use rendezvous::{shmport_credentials, shmport_incoming, shmport_listener};
pub use set::shmport_port_set;
pub use status::shmport_status;

/// `timeout_ns` value: do not wait.
pub const SHMPORT_NO_WAIT: u64 = 0;

/// `timeout_ns` value: wait as long as it takes.
pub const SHMPORT_FOREVER: u64 = u64::MAX;

/// Most ports one message carries.
pub const SHMPORT_MAX_PORTS: usize = 100;

/// `shmport_port_set_trust`: messages read in place, validated (default).
pub const SHMPORT_TRUST_VALIDATED: u32 = 0;

/// `shmport_port_set_trust`: each message copied to private memory when
/// received, for a peer that may be hostile.
pub const SHMPORT_TRUST_UNTRUSTED: u32 = 1;

/// Largest message, in bytes (64 TiB): a post of more is
/// `SHMPORT_ERR_TOO_LARGE`, before anything is read or allocated.
pub const SHMPORT_MAX_MESSAGE_SIZE: usize = 70368744177664;

/// Default bytes per ring (each direction has its own).
pub const SHMPORT_DEFAULT_CAPACITY: usize = 1048576;

/// Largest ring (1 GiB): a larger `capacity` is
/// `SHMPORT_ERR_INVALID_ARGUMENT`.
pub const SHMPORT_MAX_CAPACITY: usize = 1073741824;

const _: () = {
    assert!(SHMPORT_MAX_PORTS == shmport_core::MAX_PORTS);
    assert!(SHMPORT_DEFAULT_CAPACITY == shmport_core::DEFAULT_CAPACITY);
    assert!(SHMPORT_MAX_MESSAGE_SIZE == shmport_core::MAX_MESSAGE_SIZE);
    assert!(SHMPORT_MAX_CAPACITY == shmport_core::MAX_CAPACITY);
};

/// The version of the header a program was compiled with: major.
/// `shmport_version()` gives the library's at run time; a program built
/// against 0.MINOR runs with any 0.MINOR.PATCH library (the soname is
/// `libshmport.so.0.MINOR`), against MAJOR.x (from 1.0 on) with any
/// MAJOR.y, y >= x.
pub const SHMPORT_VERSION_MAJOR: u32 = 0;
/// The header's version: minor.
pub const SHMPORT_VERSION_MINOR: u32 = 1;
/// The header's version: patch.
pub const SHMPORT_VERSION_PATCH: u32 = 0;

/// A decimal version part, at compile time.
const fn number(s: &str) -> u32 {
    let b = s.as_bytes();
    let mut n = 0;
    let mut i = 0;
    while i < b.len() {
        n = n * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    n
}

// The macros follow ffi/Cargo.toml's version.
const _: () = {
    assert!(SHMPORT_VERSION_MAJOR == number(env!("CARGO_PKG_VERSION_MAJOR")));
    assert!(SHMPORT_VERSION_MINOR == number(env!("CARGO_PKG_VERSION_MINOR")));
    assert!(SHMPORT_VERSION_PATCH == number(env!("CARGO_PKG_VERSION_PATCH")));
};

/// The library's version, e.g. "0.1.0" (static; never free it): the
/// library's at run time, where `SHMPORT_VERSION_MAJOR`, `_MINOR` and
/// `_PATCH` are the header's a program was compiled with.
#[unsafe(no_mangle)]
pub extern "C" fn shmport_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// A registry is full (a billion live handles of one kind): reported as
/// running out of memory.
fn no_memory() -> shmport_status {
    status::io(&std::io::Error::from_raw_os_error(libc::ENOMEM))
}
