/* The C port set (ffi/tests/c_abi.rs, c_port_set_serves_processes_and_sees_a_kill).
 *
 * argv[1..]: the Rust peer program (this test binary run as a peer).
 *
 * 1. In process: misuse statuses, fairness (two busy ports alternate),
 *    timeouts, the descriptor for a host's own poll loop.
 * 2. Across processes: three Rust clients (role "set_client": N requests
 *    each, one reply per request, then close) and one that posts "ready"
 *    and is then killed with SIGKILL (role "hold"), all served from one
 *    set, one port at a time. Each client's close arrives as
 *    SHMPORT_CLOSED, the killed one's as SHMPORT_PEER_DIED; the set is
 *    empty at the end. */
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/wait.h>

#include "common.h"

#define CLIENTS 3
#define REQUESTS 200

static void post_str(shmport_port *p, const char *s) {
  OK(shmport_port_post(p, (const uint8_t *)s, strlen(s), SHMPORT_FOREVER));
}

static bool bytes_are(shmport_message *m, const char *s) {
  const uint8_t *data;
  size_t len;
  OK(shmport_message_bytes(m, &data, &len));
  return len == strlen(s) && memcmp(data, s, len) == 0;
}

static void in_process(void) {
  shmport_port_set *set = NULL;
  OK(shmport_port_set_new(&set));
  shmport_port *a, *b, *c, *d;
  OK(shmport_channel_new(0, &a, &b));
  OK(shmport_channel_new(0, &c, &d));
  size_t kb = 99, kd = 99, key = 99, len = 99;
  OK(shmport_port_set_add(set, b, &kb));
  OK(shmport_port_set_add(set, d, &kd));
  CHECK(kb == 0 && kd == 1);
  OK(shmport_port_set_len(set, &len));
  CHECK(len == 2);

  /* Misuse: a status each, nothing changed. */
  shmport_port *port = NULL;
  shmport_message *msg = NULL;
  EXPECT(shmport_port_set_new(NULL), SHMPORT_ERR_NULL);
  EXPECT(shmport_port_set_add(NULL, b, &key), SHMPORT_ERR_NULL);
  EXPECT(shmport_port_set_add(set, NULL, &key), SHMPORT_ERR_NULL);
  EXPECT(shmport_port_set_add(set, b, &key), SHMPORT_ERR_BUSY);
  EXPECT(shmport_port_set_add((shmport_port_set *)b, a, &key), SHMPORT_ERR_BAD_HANDLE);
  EXPECT(shmport_port_set_remove(set, a), SHMPORT_ERR_INVALID_ARGUMENT);
  EXPECT(shmport_port_set_wait(set, 0, NULL, &port, &msg), SHMPORT_ERR_NULL);
  EXPECT(shmport_port_set_wait(set, 0, &key, NULL, &msg), SHMPORT_ERR_NULL);
  EXPECT(shmport_port_set_wait(set, 0, &key, &port, NULL), SHMPORT_ERR_NULL);
  EXPECT(shmport_port_set_len(set, NULL), SHMPORT_ERR_NULL);
  EXPECT(shmport_port_set_fd(set, NULL), SHMPORT_ERR_NULL);
  EXPECT(shmport_port_set_prepare_poll(set, NULL), SHMPORT_ERR_NULL);
  /* A port in a set is not closed or moved: remove it first. */
  EXPECT(shmport_port_close(b), SHMPORT_ERR_BUSY);
  EXPECT(shmport_port_post_with_ports(c, NULL, 0, &b, 1), SHMPORT_ERR_BUSY);
  OK(shmport_port_set_free(NULL));

  /* Nothing yet. */
  EXPECT(shmport_port_set_wait(set, SHMPORT_NO_WAIT, &key, &port, &msg), SHMPORT_EMPTY);
  EXPECT(shmport_port_set_wait(set, 1000000, &key, &port, &msg), SHMPORT_TIMEOUT);
  CHECK(port == NULL && msg == NULL);

  /* Fair: with both ports busy, they take turns. */
  for (int i = 0; i < 10; i++) {
    post_str(a, "to b");
    post_str(c, "to d");
  }
  size_t last = 99;
  for (int i = 0; i < 20; i++) {
    OK(shmport_port_set_wait(set, SHMPORT_FOREVER, &key, &port, &msg));
    CHECK(key != last);
    CHECK((key == kb && port == b && bytes_are(msg, "to b")) ||
          (key == kd && port == d && bytes_are(msg, "to d")));
    /* The port keeps working beside the set. */
    EXPECT(shmport_port_close(port), SHMPORT_ERR_BUSY);
    OK(shmport_message_free(msg));
    last = key;
  }
  EXPECT(shmport_port_set_wait(set, SHMPORT_NO_WAIT, &key, &port, &msg), SHMPORT_EMPTY);

  /* The set's descriptor in the host's own poll loop. */
  int fd = -1;
  OK(shmport_port_set_fd(set, &fd));
  bool wait = false;
  OK(shmport_port_set_prepare_poll(set, &wait));
  CHECK(wait);
  struct pollfd pfd = {.fd = fd, .events = POLLIN};
  CHECK(poll(&pfd, 1, 0) == 0);
  post_str(c, "wake");
  CHECK(poll(&pfd, 1, 10000) == 1);
  OK(shmport_port_set_wait(set, SHMPORT_NO_WAIT, &key, &port, &msg));
  CHECK(key == kd && port == d && bytes_are(msg, "wake"));
  OK(shmport_message_free(msg));
  EXPECT(shmport_port_set_wait(set, SHMPORT_NO_WAIT, &key, &port, &msg), SHMPORT_EMPTY);
  /* Something already there: prepare says not to wait. */
  post_str(a, "here");
  OK(shmport_port_set_prepare_poll(set, &wait));
  CHECK(!wait);
  OK(shmport_port_set_wait(set, SHMPORT_NO_WAIT, &key, &port, &msg));
  CHECK(key == kb && bytes_are(msg, "here"));
  OK(shmport_message_free(msg));

  /* Removing: the key is free again, the port is unchanged. */
  post_str(a, "kept");
  OK(shmport_port_set_remove(set, b));
  EXPECT(shmport_port_set_remove(set, b), SHMPORT_ERR_INVALID_ARGUMENT);
  OK(shmport_port_set_len(set, &len));
  CHECK(len == 1);
  EXPECT(shmport_port_set_wait(set, SHMPORT_NO_WAIT, &key, &port, &msg), SHMPORT_EMPTY);
  OK(shmport_port_recv(b, SHMPORT_NO_WAIT, &msg));
  CHECK(bytes_are(msg, "kept"));
  OK(shmport_message_free(msg));
  OK(shmport_port_set_add(set, b, &key));
  CHECK(key == kb);

  /* A close event removes the port and names it. */
  post_str(c, "before the close");
  OK(shmport_port_close(c));
  OK(shmport_port_set_wait(set, SHMPORT_FOREVER, &key, &port, &msg));
  CHECK(port == d && bytes_are(msg, "before the close"));
  OK(shmport_message_free(msg));
  port = NULL;
  EXPECT(shmport_port_set_wait(set, SHMPORT_FOREVER, &key, &port, &msg), SHMPORT_CLOSED);
  CHECK(key == kd && port == d);
  OK(shmport_port_close(d));
  OK(shmport_port_set_len(set, &len));
  CHECK(len == 1);

  /* Freeing the set leaves its ports open, the caller's. */
  OK(shmport_port_set_free(set));
  EXPECT(shmport_port_set_free(set), SHMPORT_ERR_BAD_HANDLE);
  EXPECT(shmport_port_set_len(set, &len), SHMPORT_ERR_BAD_HANDLE);
  post_str(a, "after the set");
  OK(shmport_port_recv(b, SHMPORT_FOREVER, &msg));
  CHECK(bytes_are(msg, "after the set"));
  OK(shmport_message_free(msg));
  OK(shmport_port_close(a));
  OK(shmport_port_close(b));

  /* An empty set has nothing to wait for, even forever. */
  OK(shmport_port_set_new(&set));
  EXPECT(shmport_port_set_wait(set, SHMPORT_FOREVER, &key, &port, &msg), SHMPORT_EMPTY);
  OK(shmport_port_set_free(set));
}

static shmport_port *spawn_peer(char **argv, const char *role, int *pid) {
  CHECK(setenv("SHMPORT_FFI_ROLE", role, 1) == 0);
  shmport_port *port = NULL;
  OK(shmport_spawn(argv[1], (const char *const *)&argv[1], 0, &port, pid));
  return port;
}

static void across_processes(char **argv) {
  shmport_port_set *set = NULL;
  OK(shmport_port_set_new(&set));
  int pids[CLIENTS + 1];
  shmport_port *ports[CLIENTS + 1];
  for (int i = 0; i < CLIENTS; i++) {
    ports[i] = spawn_peer(argv, "set_client", &pids[i]);
    size_t key;
    OK(shmport_port_set_add(set, ports[i], &key));
    CHECK(key == (size_t)i);
  }
  shmport_port *doomed = spawn_peer(argv, "hold", &pids[CLIENTS]);
  ports[CLIENTS] = doomed;
  OK(shmport_port_set_add(set, doomed, NULL));

  int served[CLIENTS] = {0}, closed = 0, died = 0;
  shmport_status st;
  size_t key;
  shmport_port *port;
  shmport_message *msg;
  while ((st = shmport_port_set_wait(set, SHMPORT_FOREVER, &key, &port, &msg)) != SHMPORT_EMPTY) {
    if (shmport_status_is_close(st)) {
      CHECK(port == ports[key]);
      if (port == doomed) {
        EXPECT(st, SHMPORT_PEER_DIED);
        died++;
      } else {
        EXPECT(st, SHMPORT_CLOSED);
        CHECK(served[key] == REQUESTS);
        closed++;
      }
      OK(shmport_port_close(port));
      continue;
    }
    OK(st);
    CHECK(port == ports[key]);
    if (port == doomed) {
      /* "ready", then "last": kill it after the first. */
      if (bytes_are(msg, "ready")) CHECK(kill(pids[CLIENTS], SIGKILL) == 0);
      OK(shmport_message_free(msg));
      continue;
    }
    char want[32], reply[32];
    snprintf(want, sizeof want, "request %d", served[key]);
    CHECK(bytes_are(msg, want));
    OK(shmport_message_free(msg));
    snprintf(reply, sizeof reply, "reply %d", served[key]);
    post_str(port, reply);
    served[key]++;
  }
  CHECK(closed == CLIENTS && died == 1);
  OK(shmport_port_set_free(set));
  for (int i = 0; i <= CLIENTS; i++) {
    int status = 0;
    CHECK(waitpid(pids[i], &status, 0) == pids[i]);
    if (i < CLIENTS) {
      CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    } else {
      CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
    }
  }
  printf("served %d clients, %d killed\n", closed, died);
}

int main(int argc, char **argv) {
  CHECK(argc >= 2);
  in_process();
  across_processes(argv);
  printf("port set ok\n");
  return 0;
}
