// shmport.hpp: a small header-only C++17 wrapper over the C API in
// shmport.h, with RAII types. Link with libshmport as for C.
//
// - shmport::Port and shmport::Message are move-only and release what they
//   hold when destroyed (shmport_port_close, shmport_message_free).
// - A Message borrows its Port, as in Rust: destroy (or reset) every
//   Message received from a port before the port itself. A Port destroyed
//   while its messages live cannot close (SHMPORT_ERR_BUSY) and stays open
//   until the process exits; Port::close() reports that status.
// - shmport::Reservation is a zero-copy post in progress: commit() it, or
//   its destructor cancels it.
// - shmport::PortSet waits on many ports at once (the C port set).
//
// One error style, by name: every call throws shmport::Error (with the
// status) when it fails, except the calls named try_*, which are noexcept
// and return a shmport::Status instead, for everything: the outcomes a
// caller handles as a matter of course (SHMPORT_EMPTY, SHMPORT_FULL,
// SHMPORT_TIMEOUT, the close event) and failures alike. So post(),
// recv(), commit() and close() throw, and try_post(), try_recv(),
// try_commit() and try_close() never do. The normal end of a stream is
// try_recv()'s close status, not an exception:
//
//   shmport::Message m;
//   shmport::Status s;
//   while ((s = port.try_recv(m, shmport::forever)).ok()) use(m);
//   if (!s.is_close()) throw shmport::Error(s);
//
// Why exceptions by default: the constructors (channel, spawn, connect,
// from_parent, from_fds, PortSet) have no other way to fail, and a call
// that should not fail (a post to a live peer, a commit) reads best without
// a status to check; the try_* calls serve the loops and event handlers
// for which empty, full, a timeout or the close are the expected outcomes.
// - Thread rule as in C: a port and its messages are used by one thread at
//   a time.
#ifndef SHMPORT_HPP
#define SHMPORT_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <iterator>
#include <vector>

#include "shmport.h"

namespace shmport {

/// `timeout_ns` values.
inline constexpr uint64_t no_wait = SHMPORT_NO_WAIT;
inline constexpr uint64_t forever = SHMPORT_FOREVER;

/// A status returned by a call: ok(), its text, and whether it is the close
/// event.
class Status {
 public:
  constexpr Status(shmport_status s) noexcept : s_(s) {}  // NOLINT: implicit on purpose
  constexpr bool ok() const noexcept { return s_ == SHMPORT_OK; }
  constexpr explicit operator bool() const noexcept { return ok(); }
  constexpr shmport_status code() const noexcept { return s_; }
  bool is_close() const noexcept { return shmport_status_is_close(s_); }
  const char *str() const noexcept { return shmport_status_str(s_); }
  friend constexpr bool operator==(Status a, Status b) noexcept { return a.s_ == b.s_; }
  friend constexpr bool operator!=(Status a, Status b) noexcept { return a.s_ != b.s_; }

 private:
  shmport_status s_;
};

/// A failed call, with its status.
class Error : public std::runtime_error {
 public:
  explicit Error(Status s) : std::runtime_error(s.str()), status_(s) {}
  Status status() const noexcept { return status_; }

 private:
  Status status_;
};

/// Throw an Error unless `s` is SHMPORT_OK.
inline void check(Status s) {
  if (!s.ok()) throw Error(s);
}

class Port;

namespace detail {
/// Enabled for contiguous containers of one-byte trivially copyable
/// elements (std::data and std::size apply).
template <class B>
using if_bytes = std::enable_if_t<
    sizeof(*std::data(std::declval<const B &>())) == 1 &&
    std::is_trivially_copyable_v<std::remove_reference_t<decltype(*std::data(
        std::declval<const B &>()))>> &&
    !std::is_convertible_v<const B &, std::string_view>>;
}  // namespace detail

/// A received message: bytes read in place, valid while the Message lives.
class Message {
 public:
  Message() noexcept = default;
  explicit Message(shmport_message *m) noexcept : m_(m) {}
  Message(Message &&o) noexcept : m_(std::exchange(o.m_, nullptr)) {}
  Message &operator=(Message &&o) noexcept {
    if (this != &o) {
      reset();
      m_ = std::exchange(o.m_, nullptr);
    }
    return *this;
  }
  Message(const Message &) = delete;
  Message &operator=(const Message &) = delete;
  ~Message() { reset(); }

  /// Does this hold a message?
  explicit operator bool() const noexcept { return m_ != nullptr; }

  /// The bytes, in place.
  const uint8_t *data() const { return bytes().first; }
  std::size_t size() const { return bytes().second; }
  /// The bytes as a string view (no copy).
  std::string_view view() const {
    auto [d, n] = bytes();
    return {reinterpret_cast<const char *>(d), n};
  }
  /// 0 for raw bytes; a type fingerprint for a typed value posted by Rust.
  uint64_t fingerprint() const {
    uint64_t f = 0;
    check(shmport_message_fingerprint(m_, &f));
    return f;
  }
  /// Ports that came with the message and were not taken yet.
  std::size_t port_count() const {
    std::size_t n = 0;
    check(shmport_message_port_count(m_, &n));
    return n;
  }
  /// Take the ports that came with the message, in order. A received port
  /// that is not valid is closed and left out (the C call's
  /// SHMPORT_ERR_BAD_PORT); the valid ones are returned all the same.
  inline std::vector<Port> take_ports();

  /// Free the message now.
  void reset() noexcept {
    if (m_ != nullptr) shmport_message_free(m_);
    m_ = nullptr;
  }
  shmport_message *get() const noexcept { return m_; }

 private:
  std::pair<const uint8_t *, std::size_t> bytes() const {
    const uint8_t *d = nullptr;
    std::size_t n = 0;
    check(shmport_message_bytes(m_, &d, &n));
    return {d, n};
  }
  shmport_message *m_ = nullptr;
};

/// A zero-copy post in progress: write data()[0..size()), then commit().
/// Destroyed without a commit, it is cancelled (the peer sees nothing).
class Reservation {
 public:
  Reservation(Reservation &&o) noexcept
      : port_(std::exchange(o.port_, nullptr)), data_(o.data_), len_(o.len_) {}
  Reservation &operator=(Reservation &&) = delete;
  Reservation(const Reservation &) = delete;
  Reservation &operator=(const Reservation &) = delete;
  ~Reservation() {
    if (port_ != nullptr) shmport_port_cancel(port_);
  }

  uint8_t *data() const noexcept { return data_; }
  std::size_t size() const noexcept { return len_; }

  /// Publish the first `len` bytes (all by default); throws Error on
  /// failure (a close status if the peer is gone). Either way the
  /// reservation is over.
  void commit(std::size_t len) { check(try_commit(len)); }
  void commit() { commit(len_); }
  /// As commit(), returning the status: SHMPORT_ERR_INVALID_ARGUMENT for
  /// `len` over size() (the reservation is kept), SHMPORT_ERR_BAD_HANDLE
  /// when it is over already, a close status if the peer is gone.
  Status try_commit(std::size_t len) noexcept {
    if (port_ == nullptr) return SHMPORT_ERR_BAD_HANDLE;
    if (len > len_) return SHMPORT_ERR_INVALID_ARGUMENT;
    return shmport_port_commit(std::exchange(port_, nullptr), len);
  }
  Status try_commit() noexcept { return try_commit(len_); }
  /// Abandon it.
  void cancel() noexcept {
    if (port_ != nullptr) shmport_port_cancel(std::exchange(port_, nullptr));
  }

 private:
  friend class Port;
  Reservation(shmport_port *p, uint8_t *d, std::size_t n) noexcept : port_(p), data_(d), len_(n) {}
  shmport_port *port_;
  uint8_t *data_;
  std::size_t len_;
};

/// One end of a channel.
class Port {
 public:
  Port() noexcept = default;
  explicit Port(shmport_port *p) noexcept : p_(p) {}
  Port(Port &&o) noexcept : p_(std::exchange(o.p_, nullptr)) {}
  Port &operator=(Port &&o) noexcept {
    if (this != &o) {
      try_close();
      p_ = std::exchange(o.p_, nullptr);
    }
    return *this;
  }
  Port(const Port &) = delete;
  Port &operator=(const Port &) = delete;
  ~Port() { try_close(); }

  /// Two entangled ports; `capacity` bytes per ring (0: the default; over
  /// SHMPORT_MAX_CAPACITY throws SHMPORT_ERR_INVALID_ARGUMENT).
  static std::pair<Port, Port> channel(std::size_t capacity = 0) {
    shmport_port *a = nullptr, *b = nullptr;
    check(shmport_channel_new(capacity, &a, &b));
    return {Port(a), Port(b)};
  }
  /// In a spawned child: the port its parent passed.
  static Port from_parent() {
    shmport_port *p = nullptr;
    check(shmport_port_from_parent(&p));
    return Port(p);
  }
  /// A port from the listener at `path`.
  static Port connect(const std::string &path, uint64_t timeout_ns = 5000000000ull) {
    shmport_port *p = nullptr;
    check(shmport_connect(path.c_str(), timeout_ns, &p));
    return Port(p);
  }
  /// Start the program `file` (found on PATH when it has no slash) with a
  /// port; `argv` is its argument list, `argv[0]` the name it sees for
  /// itself (empty: `file`). `*pid` is the child's (reap it).
  static Port spawn(const std::string &file, const std::vector<std::string> &argv, int32_t *pid,
                    std::size_t capacity = 0) {
    std::vector<const char *> args;
    for (const auto &a : argv) args.push_back(a.c_str());
    args.push_back(nullptr);
    shmport_port *p = nullptr;
    check(shmport_spawn(file.c_str(), argv.empty() ? nullptr : args.data(), capacity, &p, pid));
    return Port(p);
  }
  /// Start `argv[0]` with a port (the program and its name are the same);
  /// `*pid` is the child's (reap it).
  static Port spawn(const std::vector<std::string> &argv, int32_t *pid, std::size_t capacity = 0) {
    if (argv.empty()) throw Error(SHMPORT_ERR_INVALID_ARGUMENT);
    return spawn(argv[0], argv, pid, capacity);
  }
  /// Adopt the child's end of a channel from its two descriptors
  /// (shmport_port_from_fds: they belong to the port on success and stay
  /// the caller's when it throws).
  static Port from_fds(int sock, int mem) {
    shmport_port *p = nullptr;
    check(shmport_port_from_fds(sock, mem, &p));
    return Port(p);
  }
  /// Take apart the child's end of a new channel (the second port of
  /// channel()) into its socket and segment descriptors, for
  /// from_fds() in another process (shmport_port_into_fds has the steps).
  /// On success this Port is empty; when it throws, it is unchanged.
  std::pair<int, int> into_fds() {
    int sock = -1, mem = -1;
    check(shmport_port_into_fds(p_, &sock, &mem));
    p_ = nullptr;
    return {sock, mem};
  }

  /// Does this hold a port?
  explicit operator bool() const noexcept { return p_ != nullptr; }

  /// Post bytes, waiting for room; throws on failure (Error::status() is a
  /// close status if the peer is gone).
  void post(const void *data, std::size_t len) { check(try_post(data, len, forever)); }
  void post(std::string_view s) { post(s.data(), s.size()); }
  /// Post the bytes of any contiguous container of bytes (std::string,
  /// std::vector<uint8_t>, std::vector<std::byte>, std::array, ...).
  template <class Bytes, class = detail::if_bytes<Bytes>>
  void post(const Bytes &b) {
    post(std::data(b), std::size(b));
  }
  /// Post bytes, waiting at most `timeout_ns`; the status says how it went.
  Status try_post(const void *data, std::size_t len, uint64_t timeout_ns = no_wait) noexcept {
    return shmport_port_post(p_, static_cast<const uint8_t *>(data), len, timeout_ns);
  }
  /// Post bytes with ports; on success the ports are gone from `ports`
  /// (moved to the message), on failure (an Error) they are left as they
  /// were.
  void post_with_ports(const void *data, std::size_t len, std::vector<Port> &ports) {
    check(try_post_with_ports(data, len, ports));
  }
  void post_with_ports(std::string_view s, std::vector<Port> &ports) {
    post_with_ports(s.data(), s.size(), ports);
  }
  template <class Bytes, class = detail::if_bytes<Bytes>>
  void post_with_ports(const Bytes &b, std::vector<Port> &ports) {
    post_with_ports(std::data(b), std::size(b), ports);
  }
  /// As post_with_ports, returning the status (the ports are left as they
  /// were unless it is SHMPORT_OK).
  Status try_post_with_ports(const void *data, std::size_t len,
                             std::vector<Port> &ports) noexcept {
    shmport_port *raw[SHMPORT_MAX_PORTS];
    if (ports.size() > SHMPORT_MAX_PORTS) return SHMPORT_ERR_TOO_MANY_PORTS;
    for (std::size_t i = 0; i < ports.size(); i++) raw[i] = ports[i].p_;
    Status s = shmport_port_post_with_ports(p_, static_cast<const uint8_t *>(data), len, raw,
                                            ports.size());
    if (s.ok()) {
      for (auto &p : ports) p.p_ = nullptr;
      ports.clear();
    }
    return s;
  }

  /// Receive, waiting as long as it takes; throws Error on the close event
  /// (a loop that expects the end uses try_recv).
  Message recv() {
    Message m;
    check(try_recv(m, forever));
    return m;
  }
  /// Receive into `out`, waiting at most `timeout_ns`: SHMPORT_OK, or
  /// SHMPORT_EMPTY / SHMPORT_TIMEOUT, or a close status (the end of the
  /// stream), or a failure.
  Status try_recv(Message &out, uint64_t timeout_ns = no_wait) noexcept {
    shmport_message *m = nullptr;
    Status s = shmport_port_recv(p_, timeout_ns, &m);
    if (s.ok()) out = Message(m);
    return s;
  }

  /// Reserve `len` bytes in the ring, waiting for room; throws on failure.
  Reservation reserve(std::size_t len, uint64_t timeout_ns = forever) {
    uint8_t *d = nullptr;
    check(shmport_port_reserve(p_, len, timeout_ns, &d));
    return Reservation(p_, d, len);
  }
  std::size_t max_reservation() const {
    std::size_t n = 0;
    check(shmport_port_max_reservation(p_, &n));
    return n;
  }
  /// Bytes in each direction's ring (the capacity asked for, rounded up).
  std::size_t capacity() const {
    std::size_t n = 0;
    check(shmport_port_capacity(p_, &n));
    return n;
  }

  /// The descriptor for the host's event loop (owned by the port).
  int fd() const {
    int fd = -1;
    check(shmport_port_fd(p_, &fd));
    return fd;
  }
  /// Before the event loop waits on fd(): true to wait (the peer's next
  /// message wakes it), false when something is already there to receive.
  bool prepare_poll() {
    bool wait = false;
    check(shmport_port_prepare_poll(p_, &wait));
    return wait;
  }
  /// After a post of `len` bytes was SHMPORT_FULL, before the event loop
  /// waits on fd() for POLLIN: true to wait (the peer's next receive or its
  /// close wakes it), false to post again now. After the poll, woken or
  /// not, call end_post_poll() (shmport_port_prepare_post_poll).
  bool prepare_post_poll(std::size_t len) {
    bool wait = false;
    check(shmport_port_prepare_post_poll(p_, len, &wait));
    return wait;
  }
  void end_post_poll() { check(shmport_port_end_post_poll(p_)); }
  void set_spin(std::chrono::nanoseconds spin) {
    check(shmport_port_set_spin(p_, static_cast<uint64_t>(spin.count())));
  }
  /// SHMPORT_TRUST_VALIDATED (default) or SHMPORT_TRUST_UNTRUSTED.
  void set_trust(uint32_t trust) { check(shmport_port_set_trust(p_, trust)); }
  void set_max_message_size(size_t bytes) {
    check(shmport_port_set_max_message_size(p_, bytes));
  }
  /// Cap the large-message pool (SIZE_MAX: the default; 0: no pool).
  void set_pool_limit(size_t bytes) {
    check(shmport_port_set_pool_limit(p_, bytes));
  }

  /// Close now; throws Error with SHMPORT_ERR_BUSY (and the port stays
  /// open) while messages received from it are alive or it is in a
  /// PortSet.
  void close() { check(try_close()); }
  /// As close(), returning the status.
  Status try_close() noexcept {
    if (p_ == nullptr) return SHMPORT_OK;
    Status s = shmport_port_close(p_);
    if (s.ok()) p_ = nullptr;
    return s;
  }
  shmport_port *get() const noexcept { return p_; }
  /// Give up ownership (the caller closes the handle).
  shmport_port *release() noexcept { return std::exchange(p_, nullptr); }

 private:
  shmport_port *p_ = nullptr;
};

inline std::vector<Port> Message::take_ports() {
  std::vector<shmport_port *> raw(port_count());
  std::size_t n = 0;
  Status s = shmport_message_take_ports(m_, raw.data(), raw.size(), &n);
  std::vector<Port> ports;
  if (s.ok() || s == SHMPORT_ERR_BAD_PORT) {
    for (std::size_t i = 0; i < n; i++) ports.emplace_back(raw[i]);
    return ports;
  }
  throw Error(s);
}

/// A set of ports waited on together, fairly (shmport_port_set_*). The
/// ports stay their owners' Port objects and keep working; while in a set
/// they cannot be closed or posted in a transfer list (SHMPORT_ERR_BUSY).
class PortSet {
 public:
  /// What try_wait() found.
  struct Event {
    /// Which port (its key, and its handle: compare with Port::get()). Set
    /// with SHMPORT_OK, a close status (the set removed the port),
    /// SHMPORT_ERR_MESSAGE_REFUSED and a port's SHMPORT_ERR_IO.
    std::size_t key = 0;
    shmport_port *port = nullptr;
    /// The message, with SHMPORT_OK.
    Message message;
  };

  PortSet() { check(shmport_port_set_new(&s_)); }
  PortSet(PortSet &&o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  PortSet &operator=(PortSet &&o) noexcept {
    if (this != &o) {
      reset();
      s_ = std::exchange(o.s_, nullptr);
    }
    return *this;
  }
  PortSet(const PortSet &) = delete;
  PortSet &operator=(const PortSet &) = delete;
  ~PortSet() { reset(); }

  /// Add a port; returns its key (a small number, free again once it
  /// leaves).
  std::size_t add(Port &port) {
    std::size_t key = 0;
    check(shmport_port_set_add(s_, port.get(), &key));
    return key;
  }
  void remove(Port &port) { check(shmport_port_set_remove(s_, port.get())); }
  std::size_t size() const {
    std::size_t n = 0;
    check(shmport_port_set_len(s_, &n));
    return n;
  }
  /// Wait at most `timeout_ns` for the next port (round robin) with a
  /// message or its close event: SHMPORT_OK (out.message), a close status
  /// (the port left the set), SHMPORT_ERR_MESSAGE_REFUSED or a port's
  /// SHMPORT_ERR_IO (out.port says which; it stays), SHMPORT_EMPTY (no
  /// ports, or nothing now with no_wait), SHMPORT_TIMEOUT, or a failure
  /// of the set (out.port is then null).
  Status try_wait(Event &out, uint64_t timeout_ns = forever) noexcept {
    shmport_message *m = nullptr;
    out.message.reset();
    out.port = nullptr;
    Status s = shmport_port_set_wait(s_, timeout_ns, &out.key, &out.port, &m);
    if (s.ok()) out.message = Message(m);
    return s;
  }
  /// The descriptor for the host's event loop, and the call before
  /// waiting on it (true to wait).
  int fd() const {
    int fd = -1;
    check(shmport_port_set_fd(s_, &fd));
    return fd;
  }
  bool prepare_poll() {
    bool wait = false;
    check(shmport_port_set_prepare_poll(s_, &wait));
    return wait;
  }
  shmport_port_set *get() const noexcept { return s_; }

 private:
  void reset() noexcept {
    if (s_ != nullptr) shmport_port_set_free(s_);
    s_ = nullptr;
  }
  shmport_port_set *s_ = nullptr;
};

}  // namespace shmport

#endif  // SHMPORT_HPP
