//! Channels made per request travel as kits of the channel that carries
//! them: reused once closed, with no descriptor travelling.

use shmport::{CloseReason, MessageChannel, RecvError};

/// One request over `x1` to `x2` (both here): a channel, its port posted,
/// one reply, the close event.
fn request(x1: &shmport::MessagePort, x2: &shmport::MessagePort, n: u32) {
    let (mine, theirs) = MessageChannel::new().unwrap().into_ports();
    x1.post_with_ports(&n, vec![theirs]).unwrap();
    let mut msg = x2.recv().unwrap();
    assert_eq!(*msg.get::<u32>().unwrap(), n);
    let reply = msg.take_ports().unwrap().pop().unwrap();
    drop(msg);
    reply.post(&(n * 2)).unwrap();
    drop(reply);
    assert_eq!(*mine.recv().unwrap().get::<u32>().unwrap(), n * 2);
    assert!(matches!(
        mine.recv(),
        Err(RecvError::Closed(CloseReason::Closed))
    ));
}

#[test]
fn request_channels_reuse_one_kit() {
    let (x1, x2) = MessageChannel::new().unwrap().into_ports();
    for n in 0..1000 {
        request(&x1, &x2, n);
    }
    // One kit made, idle at the sender; its far end held at the receiver.
    assert_eq!(shmport::testing::kits(&x1), (1, 0));
    assert_eq!(shmport::testing::kits(&x2), (0, 1));
}
