//! What the fuzz targets share: a reader over the fuzzer's bytes, makers of
//! descriptors of every kind a hostile peer could send, descriptor-leak
//! checks, and the message types typed access is fuzzed with.
//!
//! Each target reads its input as a script: a byte picks an operation, the
//! bytes after it its arguments. Every read past the end yields zeros, so
//! every input is a valid script, and the seeds written by `make_seeds`
//! (same encoding, see [`Script`]) start the fuzzer on meaningful paths.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use rkyv::{Archive, Deserialize, Serialize};
use rustix::fs::{MemfdFlags, SealFlags};
use shmport::testing::layout::{HEADER_AREA, LAYOUT_VERSION, MAGIC, RING_HEADER};

/// Reads the fuzzer's bytes; past the end, every read gives zeros.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data }
    }

    /// Bytes left.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let n = n.min(self.data.len());
        let (a, b) = self.data.split_at(n);
        self.data = b;
        a
    }

    fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let b = self.bytes(N);
        out[..b.len()].copy_from_slice(b);
        out
    }

    /// One byte.
    pub fn u8(&mut self) -> u8 {
        self.array::<1>()[0]
    }

    /// Little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    /// Little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    /// Little-endian u64.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// A length-prefixed (u16) byte string, at most `max` bytes.
    pub fn blob(&mut self, max: usize) -> &'a [u8] {
        let n = self.u16() as usize % (max + 1);
        self.bytes(n)
    }

    /// A 64-bit value a hostile peer would try: raw, small, near the top
    /// of the range, negative-as-unsigned, a forged commit word for a ring
    /// of `cap` bytes, a packed record info word, a multiple of the ring
    /// size plus or minus a little, or zero.
    pub fn hostile_u64(&mut self, cap: u64) -> u64 {
        match self.u8() % 9 {
            0 => self.u64(),
            1 => self.u8() as u64,
            2 => u64::MAX - self.u8() as u64,
            3 => (1u64 << 63).wrapping_add(self.u8() as u64),
            4 => self.u16() as u64 * 64 + 1,
            5 => shmport::testing::layout::pack_info(shmport::testing::layout::RecordInfo {
                len: match self.u8() % 4 {
                    0 => self.u32(),
                    1 => self.u16() as u32,
                    2 => (cap as u32 / 2).wrapping_sub(self.u8() as u32),
                    _ => (cap as u32)
                        .wrapping_sub(32)
                        .wrapping_add(self.u8() as u32 % 3),
                },
                kind: self.u8() % 5,
                flags: self.u8() % 3,
                nports: self.u8() as u16 % 4,
            }),
            6 => (cap * (self.u8() as u64 % 5)).wrapping_add((self.u8() as i8) as i64 as u64),
            7 => (self.u32() as i32) as i64 as u64,
            _ => 0,
        }
    }
}

/// Writes scripts in the encoding [`Reader`] reads (for `make_seeds`).
#[derive(Default)]
pub struct Script(pub Vec<u8>);

impl Script {
    /// Append a byte.
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    /// Append a u16.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Append a u32.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Append a u64.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Append bytes as they are.
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    /// Append a length-prefixed byte string.
    pub fn blob(&mut self, b: &[u8]) -> &mut Self {
        self.u16(b.len() as u16).raw(b)
    }
}

// ------------------------------------------------------------ descriptors

/// Kinds of descriptor a hostile peer can pass where a memfd or a socket is
/// expected (chosen by one byte, modulo [`FD_KINDS`]).
pub const FD_KINDS: u8 = 12;

/// A descriptor of kind `kind % FD_KINDS`, its details read from `r`, and
/// whatever must stay open for it to mean something (the other end of a
/// pipe or socket), to be dropped by the caller afterwards.
///
/// 0 an empty memfd, unsealed; 1 a memfd with bytes, sealed against size
/// changes; 2 the same also sealed against writes; 3 a memfd with bytes,
/// unsealed; 4 a segment-like memfd whose header words and seals come from
/// `r`; 5 a valid empty segment; 6 a pipe's read end; 7 a connected
/// `SOCK_SEQPACKET` socket; 8 a `SOCK_STREAM` socket; 9 `/dev/null`; 10 an
/// unlinked regular file.
pub fn make_fd(kind: u8, r: &mut Reader<'_>) -> (OwnedFd, Option<OwnedFd>) {
    match kind % FD_KINDS {
        0 => (memfd(&[], 0, SealFlags::empty()), None),
        1..=3 => {
            let content = r.blob(256);
            let size = content.len() + r.u8() as usize % 3 * 4096;
            let seals = match kind % FD_KINDS {
                1 => SealFlags::SHRINK | SealFlags::GROW,
                2 => SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE,
                _ => SealFlags::empty(),
            };
            (memfd(content, size, seals), None)
        }
        4 => {
            let magic = if r.u8().is_multiple_of(4) {
                r.u64()
            } else {
                MAGIC
            };
            let version = if r.u8().is_multiple_of(4) {
                r.u32()
            } else {
                LAYOUT_VERSION
            };
            let cap = match r.u8() % 4 {
                0 => r.u64(),
                1 => 8192,
                _ => 4096,
            };
            let size = if r.u8().is_multiple_of(4) {
                r.u16() as usize * 64
            } else {
                HEADER_AREA + 2 * 4096
            };
            let sealed = !r.u8().is_multiple_of(4);
            let head = r.hostile_u64(4096);
            let tail = r.hostile_u64(4096);
            (segment(magic, version, cap, size, sealed, head, tail), None)
        }
        5 => (
            segment(MAGIC, LAYOUT_VERSION, 4096, HEADER_AREA + 8192, true, 0, 0),
            None,
        ),
        6 => {
            let (rd, wr) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).unwrap();
            (rd, Some(wr))
        }
        7 | 8 => {
            let ty = if kind % FD_KINDS == 7 {
                rustix::net::SocketType::SEQPACKET
            } else {
                rustix::net::SocketType::STREAM
            };
            let (a, b) = rustix::net::socketpair(
                rustix::net::AddressFamily::UNIX,
                ty,
                rustix::net::SocketFlags::CLOEXEC,
                None,
            )
            .unwrap();
            // Half the time the far end is gone already (a hung-up port).
            let keep = r.u8().is_multiple_of(2);
            (a, keep.then_some(b))
        }
        11 => {
            // A pool buffer as a sender makes one: 1 to 4 blocks of 64 KiB
            // (or a size a byte chose), sealed against writes by anyone,
            // or with a seal missing.
            let blocks = 1 + r.u8() as usize % 4;
            let size = if r.u8().is_multiple_of(8) {
                r.u16() as usize
            } else {
                blocks << 16
            };
            let seals = if r.u8().is_multiple_of(8) {
                SealFlags::SHRINK | SealFlags::GROW
            } else {
                SealFlags::SHRINK | SealFlags::GROW | SealFlags::FUTURE_WRITE | SealFlags::SEAL
            };
            // Allocated in full, as a sender must, most of the time.
            let allocate = !r.u8().is_multiple_of(8);
            let content = r.blob(256);
            let fd = memfd(content, size, SealFlags::empty());
            if allocate {
                let _ =
                    rustix::fs::fallocate(&fd, rustix::fs::FallocateFlags::empty(), 0, size as u64);
            }
            rustix::fs::fcntl_add_seals(&fd, seals).unwrap();
            (fd, None)
        }
        9 => (
            rustix::fs::open(
                "/dev/null",
                rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .unwrap(),
            None,
        ),
        _ => {
            let fd = rustix::fs::open(
                std::env::temp_dir(),
                rustix::fs::OFlags::TMPFILE
                    | rustix::fs::OFlags::RDWR
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::RUSR | rustix::fs::Mode::WUSR,
            )
            .unwrap();
            rustix::io::pwrite(&fd, r.blob(64), 0).unwrap();
            (fd, None)
        }
    }
}

/// A memfd holding `content`, `size` bytes long, with `seals`.
pub fn memfd(content: &[u8], size: usize, seals: SealFlags) -> OwnedFd {
    let fd =
        rustix::fs::memfd_create("fuzz", MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    rustix::fs::ftruncate(&fd, size.max(content.len()) as u64).unwrap();
    if !content.is_empty() {
        rustix::io::pwrite(&fd, content, 0).unwrap();
    }
    if !seals.is_empty() {
        rustix::fs::fcntl_add_seals(&fd, seals).unwrap();
    }
    fd
}

/// A memfd laid out as a segment with the given header words and ring 0's
/// consumer head and producer tail (ring 1's are zero).
pub fn segment(
    magic: u64,
    version: u32,
    cap: u64,
    size: usize,
    sealed: bool,
    head: u64,
    tail: u64,
) -> OwnedFd {
    let mut h = Vec::new();
    h.extend_from_slice(&magic.to_le_bytes());
    h.extend_from_slice(&version.to_le_bytes());
    h.extend_from_slice(&(HEADER_AREA as u32).to_le_bytes());
    h.extend_from_slice(&cap.to_le_bytes());
    h.extend_from_slice(
        &(HEADER_AREA as u64)
            .wrapping_add(cap.wrapping_mul(2))
            .to_le_bytes(),
    );
    let seals = if sealed {
        SealFlags::SHRINK | SealFlags::GROW
    } else {
        SealFlags::empty()
    };
    let fd = memfd(&[], size, SealFlags::empty());
    if size >= RING_HEADER[1] {
        rustix::io::pwrite(&fd, &h, 0).unwrap();
        // Ring 0: producer tail at +0, consumer head at +128.
        rustix::io::pwrite(&fd, &tail.to_le_bytes(), RING_HEADER[0] as u64).unwrap();
        rustix::io::pwrite(&fd, &head.to_le_bytes(), RING_HEADER[0] as u64 + 128).unwrap();
    }
    if sealed {
        rustix::fs::fcntl_add_seals(&fd, seals).unwrap();
    }
    fd
}

/// Send one raw `SOCK_SEQPACKET` message (`bytes`, with `fds` as
/// `SCM_RIGHTS`) without blocking; a full socket or a hung-up peer is
/// ignored (a hostile peer does not care).
pub fn send_raw(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>]) {
    use std::mem::MaybeUninit;
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(253))];
    let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        control.push(rustix::net::SendAncillaryMessage::ScmRights(fds));
    }
    let iov = [std::io::IoSlice::new(bytes)];
    let _ = rustix::net::sendmsg(
        sock,
        &iov,
        &mut control,
        rustix::net::SendFlags::DONTWAIT | rustix::net::SendFlags::NOSIGNAL,
    );
}

/// Is descriptor number `fd` open in this process?
pub fn is_open(fd: RawFd) -> bool {
    // SAFETY: the number is only asked for its flags (F_GETFD) during this
    // call and never used as an owned descriptor; a closed number answers
    // EBADF, which is what this looks for.
    let b = unsafe { BorrowedFd::borrow_raw(fd) };
    rustix::io::fcntl_getfd(b).is_ok()
}

/// Number of descriptors open in this process.
pub fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
        .saturating_sub(1) // the directory handle itself
}

/// The raw number of a descriptor, to check later that it was closed.
pub fn raw(fd: &impl AsFd) -> RawFd {
    fd.as_fd().as_raw_fd()
}

// ------------------------------------------------------------ typed access

/// A nested value: strings, vectors, options, a box.
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub struct Node {
    pub id: u64,
    pub name: String,
    pub tags: Vec<String>,
    pub weight: Option<f64>,
    pub parent: Option<Box<Leaf>>,
    pub children: Vec<Leaf>,
}

/// What a [`Node`] holds.
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub struct Leaf {
    pub id: u32,
    pub label: Option<String>,
}

/// An enum with unit, tuple and struct variants.
#[derive(Archive, Serialize, Deserialize, Debug, PartialEq)]
#[rkyv(derive(Debug))]
pub enum Shape {
    Empty,
    Circle(f32),
    Rect { w: u32, h: u32 },
    Poly(Vec<(i16, i16)>),
    Label(String, char),
}

/// Number of types [`access_as`] tries.
pub const ACCESS_TYPES: u8 = 14;

/// A sample value of each type, serialized (for seeds and for checking
/// that valid archives are accepted).
pub fn sample_archive(which: u8) -> Vec<u8> {
    fn ser<T>(v: &T) -> Vec<u8>
    where
        T: for<'a> Serialize<
            rkyv::api::high::HighSerializer<
                rkyv::util::AlignedVec,
                rkyv::ser::allocator::ArenaHandle<'a>,
                rkyv::rancor::Error,
            >,
        >,
    {
        rkyv::to_bytes::<rkyv::rancor::Error>(v).unwrap().to_vec()
    }
    let node = Node {
        id: 7,
        name: "root-node-with-a-long-name".into(),
        tags: vec!["a".into(), "a longer tag than inline".into()],
        weight: Some(1.5),
        parent: Some(Box::new(Leaf {
            id: 1,
            label: Some("parent label, out of line".into()),
        })),
        children: vec![
            Leaf { id: 2, label: None },
            Leaf {
                id: 3,
                label: Some("c".into()),
            },
        ],
    };
    match which % ACCESS_TYPES {
        0 => ser(&0x1122_3344_5566_7788u64),
        1 => ser(&true),
        2 => ser(&'é'),
        3 => ser(&String::from("a string longer than eight bytes")),
        4 => ser(&vec![1u8, 2, 3, 4, 5]),
        5 => ser(&vec![
            String::from("x"),
            String::from("a second, longer string"),
        ]),
        6 => ser(&Some(Box::new(99u32))),
        7 => ser(&HashMap::from([
            (String::from("k"), 1u64),
            (String::from("key two"), 2),
        ])),
        8 => ser(&(1u8, 2u32, 3u64, 4.5f64)),
        9 => ser(&[1u16, 2, 3, 4, 5]),
        10 => ser(&BTreeMap::from([
            (1u32, String::from("one")),
            (2, String::from("two")),
        ])),
        11 => ser(&node),
        12 => ser(&vec![
            Shape::Empty,
            Shape::Circle(1.0),
            Shape::Rect { w: 2, h: 3 },
            Shape::Poly(vec![(1, 2), (3, 4)]),
            Shape::Label("label".into(), 'x'),
        ]),
        _ => ser(&Some(String::from("optional string, out of line"))),
    }
}

/// The fingerprint of type number `which` (as [`access_as`] numbers them).
pub fn fingerprint_of(which: u8) -> u64 {
    use shmport::fingerprint as fp;
    match which % ACCESS_TYPES {
        0 => fp::<u64>(),
        1 => fp::<bool>(),
        2 => fp::<char>(),
        3 => fp::<String>(),
        4 => fp::<Vec<u8>>(),
        5 => fp::<Vec<String>>(),
        6 => fp::<Option<Box<u32>>>(),
        7 => fp::<HashMap<String, u64>>(),
        8 => fp::<(u8, u32, u64, f64)>(),
        9 => fp::<[u16; 5]>(),
        10 => fp::<BTreeMap<u32, String>>(),
        11 => fp::<Node>(),
        12 => fp::<Vec<Shape>>(),
        _ => fp::<Option<String>>(),
    }
}

/// Read `msg` as type number `which`: validated access, then a walk over
/// every byte of the archived value (its `Debug` form) and a
/// deserialization. Returns whether the access succeeded.
pub fn access_as(msg: &shmport::Message<'_>, which: u8) -> bool {
    fn go<T>(msg: &shmport::Message<'_>) -> bool
    where
        T: shmport::Receivable,
        T::Archived: std::fmt::Debug
            + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rkyv::rancor::Error>>,
    {
        match msg.get::<T>() {
            Ok(v) => {
                let shown = format!("{v:?}");
                std::hint::black_box(shown);
                let owned = msg.deserialize::<T>();
                assert!(owned.is_ok(), "validated archive failed to deserialize");
                true
            }
            Err(_) => false,
        }
    }
    match which % ACCESS_TYPES {
        0 => go::<u64>(msg),
        1 => go::<bool>(msg),
        2 => go::<char>(msg),
        3 => go::<String>(msg),
        4 => go::<Vec<u8>>(msg),
        5 => go::<Vec<String>>(msg),
        6 => go::<Option<Box<u32>>>(msg),
        7 => go::<HashMap<String, u64>>(msg),
        8 => go::<(u8, u32, u64, f64)>(msg),
        9 => go::<[u16; 5]>(msg),
        10 => go::<BTreeMap<u32, String>>(msg),
        11 => go::<Node>(msg),
        12 => go::<Vec<Shape>>(msg),
        _ => go::<Option<String>>(msg),
    }
}
