//! What one run measures: the transports, the payload sizes, how many
//! iterations, and how each row is paired with a shmport row.

use std::time::Duration;

use shmport::DEFAULT_CAPACITY;

/// Payload sizes, in bytes: 64 B, 4 KiB, 64 KiB, 1 MiB, 4 MiB.
pub const SIZES: [usize; 5] = [64, 4 << 10, 64 << 10, 1 << 20, 4 << 20];

/// How a receiver waits for the next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Polls in a loop on its core (no system call while waiting).
    BusyPoll,
    /// Sleeps in the kernel until woken.
    Sleep,
}

impl Wait {
    pub fn label(self) -> &'static str {
        match self {
            Wait::BusyPoll => "busy-poll",
            Wait::Sleep => "sleep",
        }
    }
}

/// The transport families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// shmport, raw bytes (`post_bytes`, `Message::bytes`).
    ShmRaw,
    /// shmport, a typed rkyv message (`post`, `Message::get`).
    ShmTyped,
    /// A `SOCK_STREAM` Unix domain socket pair.
    Uds,
    /// Two pipes.
    Pipe,
    /// ipc-channel byte channels.
    IpcChannel,
    /// iceoryx2 publish-subscribe, `[u8]` slices.
    Iceoryx2,
}

/// shmport's ring size for a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ring {
    /// Large enough that the payload travels inline: at least the default,
    /// and four payloads.
    Inline,
    /// The default ring (1 MiB): payloads above 512 KiB go into the
    /// sender's pool of reused blocks.
    Default,
}

impl Ring {
    pub fn capacity(self, size: usize) -> usize {
        match self {
            Ring::Inline => DEFAULT_CAPACITY.max(4 * size).next_power_of_two(),
            Ring::Default => DEFAULT_CAPACITY,
        }
    }
}

/// One transport variant: a family, a wait path and, for shmport, a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transport {
    pub kind: Kind,
    pub wait: Wait,
    pub ring: Ring,
}

impl Transport {
    const fn new(kind: Kind, wait: Wait) -> Transport {
        Transport {
            kind,
            wait,
            ring: Ring::Inline,
        }
    }

    /// The name in tables and files (the wait path is a column of its own).
    pub fn name(self) -> &'static str {
        match (self.kind, self.ring, self.wait) {
            (Kind::ShmRaw, Ring::Inline, _) => "shmport raw",
            (Kind::ShmRaw, Ring::Default, _) => "shmport raw, 1 MiB ring",
            (Kind::ShmTyped, _, _) => "shmport typed",
            (Kind::Uds, _, _) => "unix socket",
            (Kind::Pipe, _, _) => "pipe",
            (Kind::IpcChannel, _, _) => "ipc-channel",
            (Kind::Iceoryx2, _, Wait::BusyPoll) => "iceoryx2",
            (Kind::Iceoryx2, _, Wait::Sleep) => "iceoryx2 + event",
        }
    }

    pub fn is_shmport(self) -> bool {
        matches!(self.kind, Kind::ShmRaw | Kind::ShmTyped)
    }

    /// Does this variant run for payloads of `size` bytes? The default-ring
    /// rows exist only where the default ring sends the payload to the pool.
    pub fn runs_at(self, size: usize) -> bool {
        self.ring == Ring::Inline || size > DEFAULT_CAPACITY / 4
    }

    /// The shmport row this row's ratio is taken against: the raw spin path
    /// for busy-polling rows, the raw block path for sleeping rows.
    pub fn reference(self) -> Transport {
        Transport::new(Kind::ShmRaw, self.wait)
    }

    /// Encode for a peer's command line.
    pub fn code(self) -> String {
        let kind = match self.kind {
            Kind::ShmRaw => "shm-raw",
            Kind::ShmTyped => "shm-typed",
            Kind::Uds => "uds",
            Kind::Pipe => "pipe",
            Kind::IpcChannel => "ipc-channel",
            Kind::Iceoryx2 => "iceoryx2",
        };
        let wait = match self.wait {
            Wait::BusyPoll => "spin",
            Wait::Sleep => "block",
        };
        let ring = match self.ring {
            Ring::Inline => "inline",
            Ring::Default => "default",
        };
        format!("{kind}/{wait}/{ring}")
    }

    pub fn parse(code: &str) -> Option<Transport> {
        let mut parts = code.split('/');
        let kind = match parts.next()? {
            "shm-raw" => Kind::ShmRaw,
            "shm-typed" => Kind::ShmTyped,
            "uds" => Kind::Uds,
            "pipe" => Kind::Pipe,
            "ipc-channel" => Kind::IpcChannel,
            "iceoryx2" => Kind::Iceoryx2,
            _ => return None,
        };
        let wait = match parts.next()? {
            "spin" => Wait::BusyPoll,
            "block" => Wait::Sleep,
            _ => return None,
        };
        let ring = match parts.next()? {
            "inline" => Ring::Inline,
            "default" => Ring::Default,
            _ => return None,
        };
        Some(Transport { kind, wait, ring })
    }
}

/// Every variant, in table order: busy-polling rows first, then sleeping
/// rows. Sockets, pipes and ipc-channel have no busy-poll path of their own
/// (they block in `read`/`recvmsg`), so they appear only as sleepers.
pub const TRANSPORTS: [Transport; 10] = [
    Transport::new(Kind::ShmRaw, Wait::BusyPoll),
    Transport::new(Kind::ShmTyped, Wait::BusyPoll),
    Transport {
        kind: Kind::ShmRaw,
        wait: Wait::BusyPoll,
        ring: Ring::Default,
    },
    Transport::new(Kind::Iceoryx2, Wait::BusyPoll),
    Transport::new(Kind::ShmRaw, Wait::Sleep),
    Transport::new(Kind::ShmTyped, Wait::Sleep),
    Transport::new(Kind::Uds, Wait::Sleep),
    Transport::new(Kind::Pipe, Wait::Sleep),
    Transport::new(Kind::IpcChannel, Wait::Sleep),
    Transport::new(Kind::Iceoryx2, Wait::Sleep),
];

/// iceoryx2's subscriber queue, in messages: about as many as shmport's
/// ring holds for the same payload, between 4 and 1024.
pub fn iceoryx2_queue(size: usize) -> usize {
    (Ring::Inline.capacity(size) / (size + 64)).clamp(4, 1024)
}

/// How much to measure.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    /// Quick mode: few iterations, every byte of every message checked.
    pub quick: bool,
    /// Warm-up before each case: the same workload for this long (at least
    /// a few iterations), for every transport.
    pub warmup: Duration,
    /// Rounds: each round runs every case once, in the same order, with a
    /// fresh pair of processes; a case's figures pool its rounds. Rounds
    /// spread each transport's measurements over the whole run, so that a
    /// change in the machine's conditions (a shared host, vCPUs moved)
    /// falls on all transports alike.
    pub rounds: usize,
    /// Set-ups measured per transport and round (after two unmeasured ones).
    pub setups: usize,
}

impl Counts {
    pub fn new(quick: bool) -> Counts {
        if quick {
            Counts {
                quick,
                warmup: Duration::from_millis(10),
                rounds: 1,
                setups: 20,
            }
        } else {
            Counts {
                quick,
                warmup: Duration::from_millis(200),
                rounds: 7,
                setups: 30,
            }
        }
    }

    /// Round trips per round.
    pub fn rtt_iters(&self, size: usize) -> usize {
        match (self.quick, size) {
            (true, ..=4096) => 2000,
            (true, ..=65536) => 1000,
            (true, ..=1_048_576) => 100,
            (true, _) => 40,
            (false, ..=4096) => 3000,
            (false, ..=65536) => 1500,
            (false, ..=1_048_576) => 150,
            (false, _) => 50,
        }
    }

    /// Messages per one-way repetition (one batch, acked at its end; one
    /// repetition per round).
    pub fn oneway_msgs(&self, size: usize) -> usize {
        match (self.quick, size) {
            (true, ..=64) => 5000,
            (true, ..=4096) => 2000,
            (true, ..=65536) => 1000,
            (true, ..=1_048_576) => 100,
            (true, _) => 40,
            (false, ..=64) => 200_000,
            (false, ..=4096) => 50_000,
            (false, ..=65536) => 4000,
            (false, ..=1_048_576) => 256,
            (false, _) => 64,
        }
    }
}

/// "64 B", "4 KiB", "1 MiB".
pub fn size_label(size: usize) -> String {
    if size >= 1 << 20 && size.is_multiple_of(1 << 20) {
        format!("{} MiB", size >> 20)
    } else if size >= 1 << 10 && size.is_multiple_of(1 << 10) {
        format!("{} KiB", size >> 10)
    } else {
        format!("{size} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for t in TRANSPORTS {
            assert_eq!(Transport::parse(&t.code()), Some(t));
        }
    }

    #[test]
    fn rings_fit_the_payload_inline() {
        for size in SIZES {
            let cap = Ring::Inline.capacity(size);
            assert!(cap / 2 > size + 64, "{size} in {cap}");
        }
        assert_eq!(Ring::Inline.capacity(64), DEFAULT_CAPACITY);
        assert_eq!(Ring::Inline.capacity(4 << 20), 16 << 20);
        assert_eq!(size_label(64 << 10), "64 KiB");
    }
}
