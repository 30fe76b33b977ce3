/* Rendezvous between two threads of one C process (ffi/tests/c_abi.rs,
 * rendezvous_in_c): bind, connect, check credentials, reject, accept, talk;
 * stale listener and incoming handles. */
#include <pthread.h>
#include <unistd.h>

#include "common.h"

static const char *path;

static void *client(void *arg) {
  (void)arg;
  shmport_port *port = NULL;
  /* The first connection is rejected. */
  EXPECT(shmport_connect(path, 10000000000ull, &port), SHMPORT_ERR_REJECTED);
  CHECK(port == NULL);
  OK(shmport_connect(path, SHMPORT_FOREVER, &port));
  OK(shmport_port_post(port, (const uint8_t *)"hi host", 7, SHMPORT_FOREVER));
  shmport_message *msg = NULL;
  OK(shmport_port_recv(port, SHMPORT_FOREVER, &msg));
  const uint8_t *data;
  size_t len;
  OK(shmport_message_bytes(msg, &data, &len));
  CHECK(len == 10 && memcmp(data, "hi client", 9) == 0);
  OK(shmport_message_free(msg));
  OK(shmport_port_close(port));
  return NULL;
}

int main(int argc, char **argv) {
  CHECK(argc == 2);
  path = argv[1];
  shmport_listener *listener = NULL, *again = NULL;
  OK(shmport_listener_bind(path, &listener));
  EXPECT(shmport_listener_bind(path, &again), SHMPORT_ERR_ADDR_IN_USE);
  EXPECT(shmport_listener_bind("", &again), SHMPORT_ERR_INVALID_ARGUMENT);
  int fd = -1;
  OK(shmport_listener_fd(listener, &fd));
  CHECK(fd >= 0);
  shmport_incoming *inc = NULL;
  EXPECT(shmport_listener_accept(listener, SHMPORT_NO_WAIT, &inc), SHMPORT_EMPTY);
  EXPECT(shmport_listener_accept(listener, 1000000, &inc), SHMPORT_TIMEOUT);

  pthread_t t;
  CHECK(pthread_create(&t, NULL, client, NULL) == 0);

  OK(shmport_listener_accept(listener, SHMPORT_FOREVER, &inc));
  shmport_credentials cred;
  OK(shmport_incoming_credentials(inc, &cred));
  CHECK(cred.pid == (uint32_t)getpid() && cred.uid == (uint32_t)geteuid());
  OK(shmport_incoming_reject(inc));
  EXPECT(shmport_incoming_reject(inc), SHMPORT_ERR_BAD_HANDLE);
  EXPECT(shmport_incoming_credentials(inc, &cred), SHMPORT_ERR_BAD_HANDLE);

  shmport_port *port = NULL;
  OK(shmport_listener_accept(listener, SHMPORT_FOREVER, &inc));
  /* A capacity over the maximum is refused; the connection still waits. */
  EXPECT(shmport_incoming_accept(inc, SIZE_MAX, &port), SHMPORT_ERR_INVALID_ARGUMENT);
  CHECK(port == NULL);
  OK(shmport_incoming_accept(inc, 64 * 1024, &port));
  EXPECT(shmport_incoming_accept(inc, 0, &port), SHMPORT_ERR_BAD_HANDLE);
  shmport_message *msg = NULL;
  OK(shmport_port_recv(port, SHMPORT_FOREVER, &msg));
  const uint8_t *data;
  size_t len;
  OK(shmport_message_bytes(msg, &data, &len));
  CHECK(len == 7 && memcmp(data, "hi host", 7) == 0);
  OK(shmport_message_free(msg));
  OK(shmport_port_post(port, (const uint8_t *)"hi client", 10, SHMPORT_FOREVER));
  EXPECT(shmport_port_recv(port, SHMPORT_FOREVER, &msg), SHMPORT_CLOSED);
  CHECK(pthread_join(t, NULL) == 0);
  OK(shmport_port_close(port));

  OK(shmport_listener_close(listener));
  EXPECT(shmport_listener_close(listener), SHMPORT_ERR_BAD_HANDLE);
  EXPECT(shmport_listener_accept(listener, SHMPORT_NO_WAIT, &inc), SHMPORT_ERR_BAD_HANDLE);
  CHECK(access(path, F_OK) != 0); /* the socket file is gone */
  EXPECT(shmport_connect(path, 1000000, &port), SHMPORT_ERR_NOT_FOUND);
  printf("rendezvous ok\n");
  return 0;
}
