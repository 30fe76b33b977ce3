/* A C host whose peer is killed (ffi/tests/c_abi.rs,
 * c_host_sees_its_killed_peer_as_peer_died).
 *
 * Spawns the program given in argv[1..] (a Rust peer that posts "ready"
 * and then waits), waits for "ready" in a poll loop on the port's
 * descriptor, kills the peer with SIGKILL, and checks that the descriptor
 * reports the hang-up and that the port reports SHMPORT_PEER_DIED, after
 * the message posted before. */
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/wait.h>
#include <time.h>

#include "common.h"

int main(int argc, char **argv) {
  CHECK(argc >= 2);
  shmport_port *port = NULL;
  int pid = 0;
  OK(shmport_spawn(argv[1], (const char *const *)&argv[1], 0, &port, &pid));

  /* Wait for "ready" the way an event loop does: prepare, poll the
   * port's descriptor, receive without waiting. */
  int fd = -1;
  OK(shmport_port_fd(port, &fd));
  CHECK(fd >= 0);
  shmport_message *msg = NULL;
  shmport_status st;
  for (;;) {
    bool wait = false;
    OK(shmport_port_prepare_poll(port, &wait));
    if (wait) {
      struct pollfd pfd = {.fd = fd, .events = POLLIN};
      CHECK(poll(&pfd, 1, 10000) == 1);
    }
    st = shmport_port_recv(port, SHMPORT_NO_WAIT, &msg);
    if (st != SHMPORT_EMPTY) break;
  }
  OK(st);
  const uint8_t *data;
  size_t len;
  OK(shmport_message_bytes(msg, &data, &len));
  CHECK(len == 5 && memcmp(data, "ready", 5) == 0);
  OK(shmport_message_free(msg));
  /* Posted before the kill: still delivered. */
  OK(shmport_port_recv(port, SHMPORT_FOREVER, &msg));
  OK(shmport_message_bytes(msg, &data, &len));
  CHECK(len == 4 && memcmp(data, "last", 4) == 0);
  OK(shmport_message_free(msg));

  /* An empty receive takes in the wake-up the poll saw; then the
   * descriptor is quiet while the peer lives. */
  EXPECT(shmport_port_recv(port, SHMPORT_NO_WAIT, &msg), SHMPORT_EMPTY);
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  CHECK(poll(&pfd, 1, 0) == 0);

  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  CHECK(kill(pid, SIGKILL) == 0);
  CHECK(poll(&pfd, 1, 10000) == 1);
  CHECK(pfd.revents & POLLHUP);
  st = shmport_port_recv(port, SHMPORT_FOREVER, &msg);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  CHECK(shmport_status_is_close(st));
  printf("close: %s\n", shmport_status_str(st));
  EXPECT(st, SHMPORT_PEER_DIED);
  /* The close event stays; posting reports it too. */
  EXPECT(shmport_port_recv(port, SHMPORT_NO_WAIT, &msg), SHMPORT_PEER_DIED);
  EXPECT(shmport_port_post(port, (const uint8_t *)"x", 1, SHMPORT_FOREVER), SHMPORT_PEER_DIED);

  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  OK(shmport_port_close(port));
  printf("kill to close event: %ld us\n",
         (long)((t1.tv_sec - t0.tv_sec) * 1000000 + (t1.tv_nsec - t0.tv_nsec) / 1000));
  return 0;
}
