use std::os::fd::AsFd;
use std::time::Duration;

use super::*;
use crate::shm::kit::KitWords;

fn pair() -> (Arc<ArenaLink>, Arc<ArenaLink>) {
    let (a, far) = ArenaLink::create().unwrap();
    let b = ArenaLink::adopt(a.id(), far).unwrap();
    (a, b)
}

#[test]
fn a_kit_made_at_one_side_is_taken_up_at_the_other() {
    let (a, b) = pair();
    let kit = a.make_kit(4096).unwrap();
    let far = b.take_up(kit.id, kit.seg.kit_gen(), true).unwrap();
    assert_eq!(far.seg.capacity(), 4096);
    assert!(far.seg.same(&kit.seg));
    // The same number again, while in use here, is refused.
    assert!(b.take_up(kit.id, kit.seg.kit_gen(), true).is_err());
    assert!(b.broken().is_some());
}

#[test]
fn kits_fill_an_arena_then_a_new_one_is_announced() {
    let (a, b) = pair();
    let n = MIN_ARENA / segment_size(1 << 20) + 1;
    let kits: Vec<_> = (0..n).map(|_| a.make_kit(1 << 20).unwrap()).collect();
    let arenas: HashSet<u64> = kits.iter().map(|k| k.id >> 32).collect();
    assert_eq!(arenas.len(), 2);
    for k in &kits {
        b.take_up(k.id, 1, true).unwrap();
    }
    assert!(b.broken().is_none());
}

#[test]
fn a_kit_idle_at_both_ends_is_reused_at_the_next_generation() {
    let (a, b) = pair();
    let kit = a.make_kit(4096).unwrap();
    let far = b.take_up(kit.id, 1, true).unwrap();
    a.keep(kit, 1);
    assert!(a.reuse_kit(4096).is_none(), "the far end is still in use");
    b.keep(far, 1);
    let (kit, next) = a.reuse_kit(4096).unwrap();
    assert_eq!(next, 2);
    kit.seg.renew_kit(next);
    let far = b.take_up(kit.id, 2, false).unwrap();
    assert_eq!(far.side, Side::B);
}

#[test]
fn a_doorbell_wakes_its_sleeper_and_hangs_up_when_the_peer_goes() {
    let (a, b) = pair();
    let bell = b.thread_bell().unwrap();
    assert_eq!(b.thread_bell().unwrap().index, bell.index);
    a.ring(bell.word());
    b.sleep(&bell, Some(Duration::from_secs(10))).unwrap();
    assert!(!b.hung_up());
    // Nothing to wake for: the sleep times out.
    b.sleep(&bell, Some(Duration::from_millis(10))).unwrap();
    assert!(!b.hung_up());
    drop(a);
    b.sleep(&bell, Some(Duration::from_secs(10))).unwrap();
    assert!(b.hung_up());
}

#[test]
fn a_thread_that_ends_gives_its_doorbell_number_back() {
    let (a, b) = pair();
    let first = std::thread::scope(|s| s.spawn(|| b.thread_bell().unwrap().index).join().unwrap());
    let again = std::thread::scope(|s| s.spawn(|| b.thread_bell().unwrap().index).join().unwrap());
    assert_eq!(first, again);
    // The peer rings the new one (the old is replaced under its number).
    let bell = b.thread_bell().unwrap();
    a.ring(bell.word());
    b.sleep(&bell, Some(Duration::from_secs(10))).unwrap();
}

#[test]
fn garbage_on_the_socket_breaks_the_link() {
    let (a, b) = pair();
    sys::socket::send_attachment(a.sock(), b"\x09junk", &[], true, true).unwrap();
    b.take_in();
    assert!(b.broken().is_some());
}

#[test]
fn an_arena_that_is_not_sealed_breaks_the_link() {
    let (a, b) = pair();
    let fd = sys::memfd::create("x", 1 << 20).unwrap();
    Control::Arena { id: 1, fd }.send(a.sock()).unwrap();
    b.take_in();
    assert!(b.broken().is_some());
    let _ = a.sock().as_fd();
}

#[test]
fn a_kit_in_an_arena_never_announced_is_refused() {
    let (_a, b) = pair();
    assert!(b.take_up(7 << 32, 1, true).is_err());
}
