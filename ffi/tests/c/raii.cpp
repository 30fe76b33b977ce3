// The C++ wrapper (include/shmport.hpp): RAII ports, messages and
// reservations, moves, transfers, the close event, errors as exceptions
// (ffi/tests/c_abi.rs, cpp_wrapper). Runs itself as a child for spawn.
#include <poll.h>
#include <sys/wait.h>

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

static int child() {
  shmport::Port parent = shmport::Port::from_parent();
  for (;;) {
    shmport::Message m;
    shmport::Status s = parent.recv(m, shmport::forever);
    if (s.is_close()) break;
    shmport::check(s);
    std::string reply = "child got " + std::string(m.view());
    parent.post(reply);
  }
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 2 && std::string(argv[1]) == "child") return child();

  auto [a, b] = shmport::Port::channel();
  a.post("hello");
  {
    shmport::Message m = b.recv();
    CHECK(m.view() == "hello");
    CHECK(m.size() == 5 && std::memcmp(m.data(), "hello", 5) == 0);
    CHECK(m.fingerprint() == 0 && m.port_count() == 0);
    // A port with a live message does not close.
    CHECK(b.close() == SHMPORT_ERR_BUSY && b);
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
    CHECK(r.commit(3).ok());
  }
  { shmport::Reservation r = a2.reserve(5); }
  CHECK(b.recv().view() == "123");
  shmport::Message none;
  CHECK(b.recv(none, shmport::no_wait) == SHMPORT_EMPTY && !none);

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
  CHECK(a2.close().ok());
  shmport::Message after;
  shmport::Status s = b.recv(after, shmport::forever);
  CHECK(s == SHMPORT_CLOSED && s.is_close());
  CHECK(std::string(s.str()) == "closed by the peer");
  try {
    b.recv();
    CHECK(false);
  } catch (const shmport::Error &e) {
    CHECK(e.status().is_close());
  }

  // A child process through the wrapper, answered through poll().
  int32_t pid = 0;
  shmport::Port kid = shmport::Port::spawn({argv[0], "child"}, &pid);
  kid.set_spin(std::chrono::microseconds(50));
  kid.set_trust(SHMPORT_TRUST_UNTRUSTED);
  CHECK(kid.prepare_poll());
  kid.post("ping");
  pollfd pfd{kid.fd(), POLLIN, 0};
  CHECK(poll(&pfd, 1, 10000) == 1);
  shmport::Message reply;
  CHECK(kid.recv(reply, shmport::no_wait).ok());
  CHECK(reply.view() == "child got ping");
  reply.reset();
  CHECK(kid.close().ok());
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);

  std::printf("raii ok\n");
  return 0;
}
