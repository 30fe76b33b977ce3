/* A port passed on through a C process (ffi/tests/c_abi.rs,
 * c_process_passes_a_port_on).
 *
 * `forward`: spawned by the Rust test. Receives a message carrying a port,
 * spawns itself as `echo`, and posts the port on to it; then waits for the
 * echo's report and prints it.
 * `echo`: takes the port, answers every message on it with "echo:" and the
 * bytes, until the far end closes; reports the count to its parent. */
#include <sys/wait.h>

#include "common.h"

static int echo(void) {
  shmport_port *parent = NULL, *far = NULL;
  OK(shmport_port_from_parent(&parent));
  EXPECT(shmport_port_from_parent(&far), SHMPORT_ERR_ALREADY_ADOPTED);
  shmport_message *msg = NULL;
  OK(shmport_port_recv(parent, SHMPORT_FOREVER, &msg));
  size_t count = 0;
  OK(shmport_message_port_count(msg, &count));
  CHECK(count == 1);
  OK(shmport_message_take_ports(msg, &far, 1, &count));
  CHECK(count == 1);
  OK(shmport_message_free(msg));

  char reply[4096];
  unsigned long echoed = 0;
  shmport_status st;
  while ((st = shmport_port_recv(far, SHMPORT_FOREVER, &msg)) == SHMPORT_OK) {
    const uint8_t *data;
    size_t len;
    OK(shmport_message_bytes(msg, &data, &len));
    CHECK(len + 5 <= sizeof reply);
    memcpy(reply, "echo:", 5);
    memcpy(reply + 5, data, len);
    OK(shmport_message_free(msg));
    OK(shmport_port_post(far, (const uint8_t *)reply, len + 5, SHMPORT_FOREVER));
    echoed++;
  }
  EXPECT(st, SHMPORT_CLOSED);
  int n = snprintf(reply, sizeof reply, "echo done n=%lu", echoed);
  OK(shmport_port_post(parent, (const uint8_t *)reply, (size_t)n, SHMPORT_FOREVER));
  OK(shmport_port_close(far));
  OK(shmport_port_close(parent));
  return 0;
}

static int forward(const char *self) {
  shmport_port *rust = NULL, *carried = NULL, *echo_port = NULL;
  OK(shmport_port_from_parent(&rust));
  shmport_message *msg = NULL;
  OK(shmport_port_recv(rust, SHMPORT_FOREVER, &msg));
  const uint8_t *data;
  size_t len, count = 0;
  OK(shmport_message_bytes(msg, &data, &len));
  CHECK(len == 12 && memcmp(data, "port for you", 12) == 0);
  OK(shmport_message_take_ports(msg, &carried, 1, &count));
  CHECK(count == 1 && carried != NULL);
  OK(shmport_message_free(msg));

  const char *child_argv[] = {self, "echo", NULL};
  int pid = 0;
  OK(shmport_spawn(self, child_argv, 0, &echo_port, &pid));
  CHECK(pid > 0);
  static const char text[] = "echo on this";
  OK(shmport_port_post_with_ports(echo_port, (const uint8_t *)text, sizeof text - 1,
                                  &carried, 1));
  /* The port went with the message: its handle is released. */
  EXPECT(shmport_port_close(carried), SHMPORT_ERR_BAD_HANDLE);
  OK(shmport_port_post(rust, (const uint8_t *)"forwarded", 9, SHMPORT_FOREVER));

  OK(shmport_port_recv(echo_port, SHMPORT_FOREVER, &msg));
  OK(shmport_message_bytes(msg, &data, &len));
  printf("%.*s\n", (int)len, (const char *)data);
  OK(shmport_message_free(msg));
  EXPECT(shmport_port_recv(echo_port, SHMPORT_FOREVER, &msg), SHMPORT_CLOSED);
  int status = 0;
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  OK(shmport_port_close(echo_port));
  OK(shmport_port_close(rust));
  return 0;
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "echo") == 0) return echo();
  if (argc == 2 && strcmp(argv[1], "forward") == 0) return forward(argv[0]);
  fprintf(stderr, "usage: %s forward|echo\n", argv[0]);
  return 2;
}
