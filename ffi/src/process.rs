//! A second process: spawn a child with a port, adopt the port in the
//! child.

use std::ffi::c_char;
use std::os::unix::process::CommandExt;
use std::process::Command;

use shmport_core::MessagePort;

use crate::boundary::{Out, builder, guard, os_str, path};
use crate::handles::{new_port_handle, shmport_port};
use crate::status::{io, shmport_status};

/// Start the program `file` with a new channel's other port passed to it;
/// `*port` is this process's end, `*pid` the child's process id.
///
/// `file` is found on `PATH` when it has no slash. `argv` is the child's
/// argument list, NULL-terminated; `argv[0]` is the name it sees for
/// itself. `argv` may be NULL (then the child gets `file` as `argv[0]`).
/// The child inherits this process's environment and standard streams, and
/// no other descriptor but the port's two; it adopts its port with
/// `shmport_port_from_parent`. `capacity` as for `shmport_channel_new`.
///
/// The child is not waited for: reap it with `waitpid(*pid, ...)`. If it
/// dies, `*port` receives `SHMPORT_PEER_DIED` after its last message.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `file`, `port` or `pid` is NULL;
/// - `SHMPORT_ERR_INVALID_ARGUMENT`: `file` is empty, or `capacity` over
///   `SHMPORT_MAX_CAPACITY` (nothing is started);
/// - `SHMPORT_ERR_IO`: the program could not be started or the channel made
///   (`errno`, e.g. `ENOENT`), or `errno` `ENOMEM` when this process holds too
///   many handles;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `file` and every `argv[i]` are NULL or NUL-terminated strings; `argv` is
/// NULL or a NULL-terminated array; `port` and `pid` are NULL or valid for
/// writing.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_spawn(
    file: *const c_char,
    argv: *const *const c_char,
    capacity: usize,
    port: *mut *mut shmport_port,
    pid: *mut i32,
) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let (out_port, out_pid, file) = unsafe { (Out::new(port)?, Out::new(pid)?, path(file)?) };
        let mut cmd = Command::new(file);
        if !argv.is_null() {
            for i in 0.. {
                // SAFETY: `argv` is a NULL-terminated array and no NULL was
                // met before index `i`.
                let arg = unsafe { *argv.add(i) };
                if arg.is_null() {
                    break;
                }
                // SAFETY: a NUL-terminated string (the contract).
                let arg = unsafe { os_str(arg) }?;
                if i == 0 {
                    cmd.arg0(arg);
                } else {
                    cmd.arg(arg);
                }
            }
        }
        let (child, p) = builder(capacity)?.spawn(cmd).map_err(|e| io(&e))?;
        let child_pid = child.id() as i32;
        // Not waited for: the caller reaps it. Dropping `Child` neither
        // kills nor waits.
        drop(child);
        out_port.put(new_port_handle(p)?);
        out_pid.put(child_pid);
        Ok(())
    })
}

/// In a child started by `shmport_spawn` (from C or from Rust's
/// `shmport::spawn`): adopt the port the parent passed, in `*port`.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `port` is NULL;
/// - `SHMPORT_ERR_NO_PORT`: this process was given no port;
/// - `SHMPORT_ERR_ALREADY_ADOPTED`: it was adopted already;
/// - `SHMPORT_ERR_BAD_PORT`: its descriptors or segment are not valid;
/// - `SHMPORT_ERR_IO`: a system call failed (`errno`), or `errno` `ENOMEM` when
///   this process holds too many handles;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `port` is NULL or valid for writing a pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_from_parent(port: *mut *mut shmport_port) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(port) }?;
        let p = MessagePort::from_parent()?;
        out.put(new_port_handle(p)?);
        Ok(())
    })
}
