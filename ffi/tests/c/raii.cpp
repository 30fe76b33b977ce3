// The C++ wrapper (include/shmport.hpp): RAII ports, messages,
// reservations and port sets, moves, transfers (text and binary), the close
// event, one error style (exceptions, and statuses from the try_* calls),
// waiting for room to post (ffi/tests/c_abi.rs, cpp_wrapper). Runs itself as
// a child for spawn, under another name.
#include <poll.h>
#include <sys/wait.h>

#include <array>
#include <cstddef>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <vector>

#include "shmport.hpp"

#define CHECK(cond)                                                                 \
  do {                                                                              \
    if (!(cond)) {                                                                  \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      std::exit(1);                                                                 \
    }                                                                               \
  } while (0)

static_assert(!std::is_copy_constructible_v<shmport::Port>);
static_assert(!std::is_copy_assignable_v<shmport::Message>);
static_assert(std::is_nothrow_move_constructible_v<shmport::Port>);
static_assert(std::is_nothrow_move_constructible_v<shmport::Message>);

/* `expr` throws shmport::Error with status `want`. */
#define THROWS(expr, want)                      \
  do {                                          \
    try {                                       \
      expr;                                     \
      CHECK(!"no exception");                   \
    } catch (const shmport::Error &e) {         \
      CHECK(e.status() == (want));              \
    }                                           \
  } while (0)

static int child(const char *name) {
  shmport::Port parent = shmport::Port::from_parent();
  parent.post(std::string("name ") + name);
  for (;;) {
    shmport::Message m;
    shmport::Status s = parent.try_recv(m, shmport::forever);
    if (s.is_close()) break;
    shmport::check(s);
    std::string reply = "child got " + std::string(m.view());
    parent.post(reply);
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 2 && std::string(argv[1]) == "child") return child(argv[0]);

  auto [a, b] = shmport::Port::channel();
  a.post("hello");
  {
    shmport::Message m = b.recv();
    CHECK(m.view() == "hello");
    CHECK(m.size() == 5 && std::memcmp(m.data(), "hello", 5) == 0);
    CHECK(m.fingerprint() == 0 && m.port_count() == 0);
    // A port with a live message does not close.
    CHECK(b.try_close() == SHMPORT_ERR_BUSY && b);
    THROWS(b.close(), SHMPORT_ERR_BUSY);
    shmport::Message moved = std::move(m);
    CHECK(!m && moved);
  }  // freed here

  // Moves leave an empty port behind; using it is an Error, not a crash.
  shmport::Port a2 = std::move(a);
  CHECK(!a && a2);
  try {
    a.post("nothing");
    CHECK(false);
  } catch (const shmport::Error &e) {
    CHECK(e.status() == SHMPORT_ERR_NULL);
  }

  // Zero copy: reserve, write in place, commit; a dropped one is cancelled.
  {
    shmport::Reservation r = a2.reserve(5);
    std::memcpy(r.data(), "12345", 5);
    CHECK(r.try_commit(6) == SHMPORT_ERR_INVALID_ARGUMENT);  // kept
    r.commit(3);
    CHECK(r.try_commit() == SHMPORT_ERR_BAD_HANDLE);  // over
  }
  { shmport::Reservation r = a2.reserve(5); }
  CHECK(b.recv().view() == "123");
  shmport::Message none;
  CHECK(b.try_recv(none, shmport::no_wait) == SHMPORT_EMPTY && !none);
  CHECK(b.try_recv(none) == SHMPORT_EMPTY && !none);

  // Ports travel; handles that went with the message are gone.
  auto [c, d] = shmport::Port::channel(64 * 1024);
  CHECK(c.capacity() == 64 * 1024 && d.capacity() == 64 * 1024);
  try {
    shmport::Port::channel(SHMPORT_MAX_CAPACITY + 1);
    CHECK(false);
  } catch (const shmport::Error &e) {
    CHECK(e.status() == SHMPORT_ERR_INVALID_ARGUMENT);
  }
  std::vector<shmport::Port> ports;
  ports.push_back(std::move(c));
  a2.post_with_ports("take this", ports);
  CHECK(ports.empty());
  shmport::Port got;
  {
    shmport::Message m = b.recv();
    CHECK(m.view() == "take this" && m.port_count() == 1);
    std::vector<shmport::Port> taken = m.take_ports();
    CHECK(taken.size() == 1);
    got = std::move(taken[0]);
  }
  d.post("via the moved port");
  CHECK(got.recv().view() == "via the moved port");

  // Binary payloads with ports: pointer and length, and a byte container.
  {
    auto [e, f] = shmport::Port::channel();
    const uint8_t raw[4] = {0, 1, 0, 255};
    std::vector<shmport::Port> one;
    one.push_back(std::move(e));
    a2.post_with_ports(raw, sizeof raw, one);
    CHECK(one.empty());
    std::vector<std::byte> bytes{std::byte{0}, std::byte{0}, std::byte{7}};
    std::vector<shmport::Port> none_travel;
    a2.post_with_ports(bytes, none_travel);
    a2.post(std::array<uint8_t, 2>{0, 9});
    shmport::Message m = b.recv();
    CHECK(m.size() == 4 && std::memcmp(m.data(), raw, 4) == 0 && m.port_count() == 1);
    shmport::Port e2 = std::move(m.take_ports()[0]);
    m = b.recv();
    CHECK(m.size() == 3 && m.data()[0] == 0 && m.data()[2] == 7);
    m = b.recv();
    CHECK(m.size() == 2 && m.data()[1] == 9);
    m.reset();
    e2.post("e2");
    CHECK(f.recv().view() == "e2");
    // A refused transfer leaves the ports, and try_ says so without throwing.
    std::vector<shmport::Port> peer_of_f;
    peer_of_f.push_back(std::move(e2));
    CHECK(f.try_post_with_ports(raw, sizeof raw, peer_of_f) == SHMPORT_ERR_PEER_IN_TRANSFER);
    CHECK(peer_of_f.size() == 1 && peer_of_f[0]);
  }

  // Waiting for room: fill the ring, prepare, the peer reads, poll, post.
  {
    auto [p, q] = shmport::Port::channel(4096);
    std::array<uint8_t, 300> big{};
    shmport::Status st = SHMPORT_OK;
    while ((st = p.try_post(big.data(), big.size())).ok()) {
    }
    CHECK(st == SHMPORT_FULL);
    CHECK(p.prepare_post_poll(big.size()));
    {
      shmport::Message m;
      while (q.try_recv(m).ok()) m.reset();  // the empty receive publishes the room
    }
    pollfd room{p.fd(), POLLIN, 0};
    CHECK(poll(&room, 1, -1) == 1);
    p.end_post_poll();
    CHECK(p.try_post(big.data(), big.size()).ok());
    CHECK(!p.prepare_post_poll(big.size()));
  }

  // A port set: messages from two ports in turn, a close removes its port.
  {
    auto [x1, y1] = shmport::Port::channel();
    auto [x2, y2] = shmport::Port::channel();
    shmport::PortSet set;
    std::size_t k1 = set.add(y1), k2 = set.add(y2);
    CHECK(set.size() == 2 && k1 != k2);
    THROWS(y1.close(), SHMPORT_ERR_BUSY);
    THROWS(set.add(y1), SHMPORT_ERR_BUSY);
    x1.post("one");
    x2.post("two");
    shmport::PortSet::Event ev;
    CHECK(set.try_wait(ev, shmport::forever).ok());
    std::string first(ev.message.view());
    std::size_t first_key = ev.key;
    CHECK(set.try_wait(ev, shmport::forever).ok());
    CHECK(ev.key != first_key && ev.port == (ev.key == k1 ? y1.get() : y2.get()));
    CHECK((first == "one" && ev.message.view() == "two") ||
          (first == "two" && ev.message.view() == "one"));
    ev.message.reset();
    CHECK(set.try_wait(ev, shmport::no_wait) == SHMPORT_EMPTY);
    x2.close();
    shmport::Status closed = set.try_wait(ev, shmport::forever);
    CHECK(closed == SHMPORT_CLOSED && ev.key == k2 && ev.port == y2.get() && !ev.message);
    CHECK(set.size() == 1);
    y2.close();  // it left the set
    set.remove(y1);
    THROWS(set.remove(y1), SHMPORT_ERR_INVALID_ARGUMENT);
    CHECK(set.size() == 0 && set.try_wait(ev) == SHMPORT_EMPTY);
    CHECK(set.fd() >= 0);
  }

  // The entangled peer cannot travel; the port stays ours.
  std::vector<shmport::Port> peer;
  peer.push_back(std::move(b));
  try {
    a2.post_with_ports("no", peer);
    CHECK(false);
  } catch (const shmport::Error &e) {
    CHECK(e.status() == SHMPORT_ERR_PEER_IN_TRANSFER);
  }
  CHECK(peer.size() == 1 && peer[0]);
  b = std::move(peer[0]);

  // The close event, with its text.
  a2.close();
  shmport::Message after;
  shmport::Status s = b.try_recv(after, shmport::forever);
  CHECK(s == SHMPORT_CLOSED && s.is_close());
  CHECK(std::string(s.str()) == "closed by the peer");
  try {
    b.recv();
    CHECK(false);
  } catch (const shmport::Error &e) {
    CHECK(e.status().is_close());
  }

  // A child process through the wrapper, started as this program under
  // another name, answered through poll().
  int32_t pid = 0;
  THROWS(shmport::Port::spawn(std::vector<std::string>{}, &pid), SHMPORT_ERR_INVALID_ARGUMENT);
  shmport::Port kid = shmport::Port::spawn("/proc/self/exe", {"renamed", "child"}, &pid);
  CHECK(kid.recv().view() == "name renamed");
  kid.set_spin(std::chrono::microseconds(50));
  kid.set_trust(SHMPORT_TRUST_UNTRUSTED);
  CHECK(kid.prepare_poll());
  kid.post("ping");
  pollfd pfd{kid.fd(), POLLIN, 0};
  CHECK(poll(&pfd, 1, 10000) == 1);
  shmport::Message reply;
  CHECK(kid.try_recv(reply, shmport::no_wait).ok());
  CHECK(reply.view() == "child got ping");
  reply.reset();
  kid.close();
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);

  std::printf("raii ok\n");
  return 0;
}
