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
// - Failures throw shmport::Error (with the status), except the calls that
//   return a shmport::Status for outcomes a caller handles as a matter of
//   course: a receive or post that may time out, be empty or full, or meet
//   the close event.
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
#include <utility>
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

  /// Publish the first `len` bytes (all by default). Returns the status: a
  /// close status if the peer is gone.
  Status commit(std::size_t len) {
    if (len > len_) throw Error(SHMPORT_ERR_INVALID_ARGUMENT);
    return shmport_port_commit(std::exchange(port_, nullptr), len);
  }
  Status commit() { return commit(len_); }
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
      close();
      p_ = std::exchange(o.p_, nullptr);
    }
    return *this;
  }
  Port(const Port &) = delete;
  Port &operator=(const Port &) = delete;
  ~Port() { close(); }

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
  /// Start `argv[0]` with a port; `*pid` is the child's (reap it).
  static Port spawn(const std::vector<std::string> &argv, int32_t *pid, std::size_t capacity = 0) {
    if (argv.empty()) throw Error(SHMPORT_ERR_INVALID_ARGUMENT);
    std::vector<const char *> args;
    for (const auto &a : argv) args.push_back(a.c_str());
    args.push_back(nullptr);
    shmport_port *p = nullptr;
    check(shmport_spawn(args[0], args.data(), capacity, &p, pid));
    return Port(p);
  }

  /// Does this hold a port?
  explicit operator bool() const noexcept { return p_ != nullptr; }

  /// Post bytes, waiting for room; throws on failure (Error::status() is a
  /// close status if the peer is gone).
  void post(const void *data, std::size_t len) { check(try_post(data, len, forever)); }
  void post(std::string_view s) { post(s.data(), s.size()); }
  /// Post bytes, waiting at most `timeout_ns`; the status says how it went.
  Status try_post(const void *data, std::size_t len, uint64_t timeout_ns = no_wait) noexcept {
    return shmport_port_post(p_, static_cast<const uint8_t *>(data), len, timeout_ns);
  }
  /// Post bytes with ports; on success the ports are gone from `ports`
  /// (moved to the message), on failure they are left as they were.
  void post_with_ports(std::string_view s, std::vector<Port> &ports) {
    std::vector<shmport_port *> raw;
    for (auto &p : ports) raw.push_back(p.p_);
    check(shmport_port_post_with_ports(p_, reinterpret_cast<const uint8_t *>(s.data()), s.size(),
                                       raw.data(), raw.size()));
    for (auto &p : ports) p.p_ = nullptr;
    ports.clear();
  }

  /// Receive, waiting as long as it takes; throws Error on the close event.
  Message recv() {
    Message m;
    check(recv(m, forever));
    return m;
  }
  /// Receive into `out`, waiting at most `timeout_ns`: SHMPORT_OK, or
  /// SHMPORT_EMPTY / SHMPORT_TIMEOUT, or a close status.
  Status recv(Message &out, uint64_t timeout_ns) noexcept {
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
  void set_spin(std::chrono::nanoseconds spin) {
    check(shmport_port_set_spin(p_, static_cast<uint64_t>(spin.count())));
  }
  /// SHMPORT_TRUST_VALIDATED (default) or SHMPORT_TRUST_UNTRUSTED.
  void set_trust(uint32_t trust) { check(shmport_port_set_trust(p_, trust)); }
  void set_max_message_size(size_t bytes) {
    check(shmport_port_set_max_message_size(p_, bytes));
  }

  /// Close now. SHMPORT_ERR_BUSY (and the port stays open) while messages
  /// received from it are alive.
  Status close() noexcept {
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

}  // namespace shmport

#endif  // SHMPORT_HPP
