//! What a spawned child inherits when its descriptors are marked
//! close-on-exec one number at a time (kernels without close_range(2)'s
//! `CLOSE_RANGE_CLOEXEC`, forced here on any kernel). Alone in its test
//! binary: it changes the process's descriptor limit.

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use common::{peer, role};
use rustix::process::{Resource, getrlimit, setrlimit};
use shmport::{MessagePort, RecvError};

#[test]
fn peer_entry() {
    let Some(role) = role() else { return };
    match role.as_str() {
        "fds" => {
            let fds = common::open_fds();
            let env = std::env::var(shmport::PORT_ENV).unwrap();
            let port = MessagePort::from_parent().unwrap();
            port.post(&(fds, env)).unwrap();
            assert!(matches!(port.recv(), Err(RecvError::Closed(_))));
        }
        other => panic!("unknown role {other}"),
    }
}

/// Two inheritable descriptors the walk must reach: one numbered above
/// 65,536 (where the walk used to stop) when the limit can be raised that
/// far (root), else at the hard limit's top; and, for both, a soft limit
/// lowered below them after they were opened.
#[test]
fn the_descriptor_walk_reaches_descriptors_above_65536_and_above_the_soft_limit() {
    shmport::testing::fault::walk_descriptors_in_children(true);
    let before = getrlimit(Resource::Nofile);
    let high: i32 = 70_000;
    let mut raised = before;
    raised.current = Some(high as u64 + 1);
    raised.maximum = before.maximum.map(|m| m.max(high as u64 + 1));
    let high = match setrlimit(Resource::Nofile, raised) {
        Ok(()) => high,
        Err(e) => {
            // Not allowed to raise the hard limit: the highest number it
            // allows still lies above the soft limit set below.
            eprintln!("cannot raise RLIMIT_NOFILE ({e}); testing below the hard limit");
            let top = before.maximum.unwrap_or(1 << 20).min(1 << 20) as i32 - 1;
            let mut at_hard = before;
            at_hard.current = before.maximum;
            setrlimit(Resource::Nofile, at_hard).unwrap();
            top
        }
    };
    // An inheritable descriptor (no close-on-exec) at `high`, one at 2,000.
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
    // SAFETY: `high` and 2000 are free numbers (nothing else in this test
    // binary opens that many); dup2 makes them ours.
    let (at_high, at_2000) = unsafe {
        assert_eq!(libc::dup2(r.as_raw_fd(), high), high);
        assert_eq!(libc::dup2(w.as_raw_fd(), 2000), 2000);
        (OwnedFd::from_raw_fd(high), OwnedFd::from_raw_fd(2000))
    };
    let mut lowered = getrlimit(Resource::Nofile);
    lowered.current = Some(1024);
    setrlimit(Resource::Nofile, lowered).unwrap();

    let (child, port) = shmport::spawn(peer("fds")).unwrap();
    let child = common::Victim::new(child);
    common::assert_child_holds_only_stdio_and_its_port(&port);
    drop(port);
    child.wait_success();

    drop((at_high, at_2000, r, w));
    shmport::testing::fault::walk_descriptors_in_children(false);
    setrlimit(Resource::Nofile, before).unwrap();
}
