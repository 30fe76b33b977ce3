//! A second process: spawn a child with a port, adopt the port in the
//! child.

use std::ffi::{c_char, c_int};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use shmport_core::MessagePort;

use crate::boundary::{Out, builder, guard, os_str, path};
use crate::handles::{
    PortState, new_port_handle, port_state, restore, retire, shmport_port, take_out,
};
use crate::status::io;
use crate::status::shmport_status::{self, *};

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

/// Adopt the child's end of a channel from its two descriptors, in `*port`:
/// `sock`, the port's socket, and `mem`, its shared-memory segment. For a
/// child started some other way than `shmport_spawn` (its own `fork` and
/// `exec`, a process manager): the parent makes the two descriptors with
/// `shmport_port_into_fds` and tells the child their numbers (arguments, a
/// file, anything).
///
/// On success the port owns the two descriptors from then on (this call
/// closes the numbers given; the port's own copies are close-on-exec, so
/// this process's children do not inherit them). On failure nothing was
/// taken: both descriptors stay the caller's, open.
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `port` is NULL;
/// - `SHMPORT_ERR_BAD_PORT`: `sock` or `mem` is not an open descriptor, the
///   two are the same, `sock` is not a `SOCK_SEQPACKET` socket, or `mem` is
///   not a shmport segment this version can use (bad magic, another layout
///   version, bad sizes or ring state);
/// - `SHMPORT_ERR_IO`: a system call failed (`errno`; e.g. `mem` cannot be
///   mapped), or `errno` `ENOMEM` when this process holds too many handles;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `port` is NULL or valid for writing a pointer. `sock` and `mem` are not
/// used by anything else in this process after a successful call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_from_fds(
    sock: c_int,
    mem: c_int,
    port: *mut *mut shmport_port,
) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let out = unsafe { Out::new(port) }?;
        if sock == mem {
            return Err(SHMPORT_ERR_BAD_PORT);
        }
        // Copies, so that a failure leaves the caller's descriptors alone.
        let copy = |fd: c_int| -> Result<OwnedFd, shmport_status> {
            if fd < 0 {
                return Err(SHMPORT_ERR_BAD_PORT);
            }
            // SAFETY: fcntl on any number is defined: one that is not open
            // fails with EBADF.
            let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
            if copy < 0 {
                let e = std::io::Error::last_os_error();
                return Err(if e.raw_os_error() == Some(libc::EBADF) {
                    SHMPORT_ERR_BAD_PORT
                } else {
                    io(&e)
                });
            }
            // SAFETY: a new descriptor that nothing else owns.
            Ok(unsafe { OwnedFd::from_raw_fd(copy) })
        };
        let (s, m) = (copy(sock)?, copy(mem)?);
        let p = MessagePort::from_fds(s, m)?;
        let handle = new_port_handle(p)?;
        // SAFETY: the caller gave up both numbers on success; the port
        // holds its own copies.
        unsafe {
            libc::close(sock);
            libc::close(mem);
        }
        out.put(handle);
        Ok(())
    })
}

/// Take apart the child's end of a new channel into the two descriptors
/// that `shmport_port_from_fds` adopts in another process: `*sock`, the
/// port's socket, and `*mem`, its segment. Only the second port of
/// `shmport_channel_new` (`port2`) is a child's end; the handle is released
/// on success, and the descriptors are the caller's.
///
/// Both descriptors are close-on-exec. To start a program with them:
///
/// ```c
/// shmport_port *mine, *theirs;
/// int sock, mem;
/// shmport_channel_new(0, &mine, &theirs);
/// shmport_port_into_fds(theirs, &sock, &mem);
/// pid_t pid = fork();
/// if (pid == 0) {                       /* the child */
///   fcntl(sock, F_SETFD, 0);            /* let exec keep them */
///   fcntl(mem, F_SETFD, 0);
///   char a[16], b[16];
///   snprintf(a, sizeof a, "%d", sock);
///   snprintf(b, sizeof b, "%d", mem);
///   execl("./child", "child", a, b, (char *)NULL);
///   _exit(127);
/// }
/// close(sock);  /* must: while open here, the child's exit would not hang up `mine` */
/// close(mem);
/// /* the child: shmport_port_from_fds(atoi(argv[1]), atoi(argv[2]), &port) */
/// ```
///
/// Returns `SHMPORT_OK` on success, or:
/// - `SHMPORT_ERR_NULL`: `sock` or `mem` is NULL;
/// - `SHMPORT_ERR_BAD_HANDLE`: `port` is not a live port;
/// - `SHMPORT_ERR_BUSY`: messages received from it are not freed, a
///   reservation is live, or it is in a port set;
/// - `SHMPORT_ERR_INVALID_ARGUMENT`: `port` is not a child's end (it is the
///   first port of a channel, or one made by `shmport_spawn`,
///   `shmport_connect` or a listener), or it holds attachments (ports,
///   out-of-line memory) taken in ahead of their messages, or (rarely) this process is out of
///   descriptors for the segment's copy; the port stays the caller's,
///   unchanged;
/// - `SHMPORT_ERR_PANIC`: a bug in shmport (a panic, caught).
///
/// # Safety
/// `sock` and `mem` are NULL or valid for writing an `int`. No other
/// thread uses `port` during the call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn shmport_port_into_fds(
    port: *mut shmport_port,
    sock: *mut c_int,
    mem: *mut c_int,
) -> shmport_status {
    guard(|| {
        // SAFETY: the caller's contract.
        let (out_sock, out_mem) = unsafe { (Out::new(sock)?, Out::new(mem)?) };
        port_state(port)?.check_idle()?;
        // SAFETY: the port is idle, so nothing holds a reference to its
        // state; this call alone uses the handle.
        let state = unsafe { take_out(port) }?;
        match state.into_port().into_fds() {
            Ok((s, m)) => {
                // SAFETY: taken out just above.
                unsafe { retire(port) }?;
                out_sock.put(s.into_raw_fd());
                out_mem.put(m.into_raw_fd());
                Ok(())
            }
            Err(p) => {
                // SAFETY: taken out just above, in this call.
                unsafe { restore(port, PortState::new(*p)) }?;
                Err(SHMPORT_ERR_INVALID_ARGUMENT)
            }
        }
    })
}
