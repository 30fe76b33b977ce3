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

mod pools {
    use super::*;
    use crate::shm::layout::{POOL_REF, PoolRef};
    use crate::shm::pool::{BufferInfo, unkey};
    use crate::shm::ring::process_barriers;
    use crate::shm::ring::{Kind, Producer, RecordMeta};
    use crate::shm::segment::SegmentRing;

    /// A block of `link`'s pool of this side, its buffer announced.
    fn lent_block(link: &ArenaLink) -> u64 {
        let (queue, pool) = link.pool_out().unwrap();
        let mut p = pool.lock().unwrap();
        let block = match p.lend(16).unwrap() {
            Some(b) => b,
            None => {
                assert!(p.grow(16).unwrap());
                p.lend(16).unwrap().unwrap()
            }
        };
        if let Some((info, fd)) = p.take_announcement(block.key) {
            link.announce_pool_buffer(queue, info, fd).unwrap();
        }
        block.key
    }

    fn in_flight(link: &ArenaLink) -> usize {
        let (_, pool) = link.pool_out().unwrap();
        let mut p = pool.lock().unwrap();
        p.take_back().unwrap();
        p.in_flight_of(16)
    }

    /// Commit a record naming block `key` on ring `ring` of `seg`, then
    /// close the producer (its last position published).
    fn post_pooled(seg: &Arc<Segment>, ring: usize, key: u64) {
        let mut p = Producer::new(SegmentRing::new(seg.clone(), ring), process_barriers()).unwrap();
        let slot = p.reserve(POOL_REF).unwrap().unwrap();
        let (buffer, block) = unkey(key);
        // SAFETY: the slot holds POOL_REF bytes, 32-byte aligned, this
        // producer's until the commit; the reference is only atomics.
        let r = unsafe { slot.payload.cast::<PoolRef>().as_ref() };
        r.buffer
            .store(buffer, core::sync::atomic::Ordering::Relaxed);
        r.block.store(block, core::sync::atomic::Ordering::Relaxed);
        r.len.store(100, core::sync::atomic::Ordering::Relaxed);
        let meta = RecordMeta {
            kind: Kind::Raw,
            out_of_line: false,
            pool: true,
            announce: false,
            kits: false,
            nports: 0,
            fingerprint: 0,
        };
        p.commit(slot, POOL_REF, meta);
        let _ = p.close();
    }

    #[test]
    fn a_block_crosses_the_link_and_comes_back() {
        let (a, b) = pair();
        let key = lent_block(&a);
        let reader = b.pool_in().expect("the announcement was taken in");
        let (buffer, block) = unkey(key);
        reader.lock().unwrap().resolve(buffer, block, 100).unwrap();
        reader.lock().unwrap().release(key).unwrap();
        assert_eq!(in_flight(&a), 0);
        assert!(a.broken().is_none() && b.broken().is_none());
    }

    #[test]
    fn blocks_of_records_never_read_come_back_when_their_kit_is_settled() {
        let (a, b) = pair();
        let kit = a.make_kit(4096).unwrap();
        let far = b.take_up(kit.id, 1, true).unwrap();
        // Each side posts a pooled record the other never reads.
        let (a_out, _) = kit.side.rings();
        let (b_out, _) = far.side.rings();
        post_pooled(&kit.seg, a_out, lent_block(&a));
        post_pooled(&far.seg, b_out, lent_block(&b));
        assert_eq!((in_flight(&a), in_flight(&b)), (1, 1));
        b.keep(far, 1);
        // The maker settles the kit as its end goes idle after the far one.
        a.keep(kit, 1);
        assert_eq!((in_flight(&a), in_flight(&b)), (0, 0));
        let (kit, next) = a.reuse_kit(4096).expect("settled, so reusable");
        assert_eq!(next, 2);
        assert!(kit.seg.kit_drained());
        assert!(a.broken().is_none() && b.broken().is_none());
    }

    #[test]
    fn a_pool_buffer_with_a_channels_id_breaks_the_link() {
        let (a, b) = pair();
        let (queue, _) = a.pool_out().unwrap();
        let fd = sys::memfd::create("x", 1 << 16).unwrap();
        let info = BufferInfo {
            id: 3,
            log2: 16,
            blocks: 1,
        };
        a.announce_pool_buffer(queue, info, fd).unwrap();
        b.take_in();
        assert!(b.broken().is_some());
    }

    #[test]
    fn a_pool_queue_outside_the_peers_arenas_breaks_the_link() {
        let (a, b) = pair();
        let fd = sys::memfd::create("x", 1 << 16).unwrap();
        let info = BufferInfo {
            id: crate::shm::pool::LINK_POOL_IDS,
            log2: 16,
            blocks: 1,
        };
        a.announce_pool_buffer(9 << 32, info, fd).unwrap();
        b.take_in();
        assert!(b.broken().is_some());
    }
}
