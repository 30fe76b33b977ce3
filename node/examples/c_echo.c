/* A C peer for Node, in raw bytes: adopts the port of the process that
 * started it (`shmport.spawn` in Node), says hello, and answers every
 * message with its bytes reversed. Exits when the port closes.
 *
 *   cargo build --release -p shmport-ffi
 *   cc node/examples/c_echo.c -Iinclude -Ltarget/release \
 *      -Wl,-rpath,$PWD/target/release -lshmport -o target/c_echo
 *
 * Built and run by node/test/interop.test.js. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shmport.h"

int main(void) {
  shmport_port *port;
  shmport_status st = shmport_port_from_parent(&port);
  if (st != SHMPORT_OK) {
    fprintf(stderr, "c_echo: %s\n", shmport_status_str(st));
    return 1;
  }
  char hello[64];
  int n = snprintf(hello, sizeof hello, "hello from c, pid %d", (int)getpid());
  st = shmport_port_post(port, (const uint8_t *)hello, (size_t)n, SHMPORT_FOREVER);
  for (;;) {
    if (st != SHMPORT_OK) break;
    shmport_message *msg;
    st = shmport_port_recv(port, SHMPORT_FOREVER, &msg);
    if (st != SHMPORT_OK) break;
    const uint8_t *data;
    size_t len;
    st = shmport_message_bytes(msg, &data, &len);
    uint8_t *reply = malloc(len ? len : 1);
    if (st == SHMPORT_OK && reply) {
      for (size_t i = 0; i < len; i++) reply[i] = data[len - 1 - i];
    }
    shmport_message_free(msg);
    if (st == SHMPORT_OK && reply) st = shmport_port_post(port, reply, len, SHMPORT_FOREVER);
    free(reply);
  }
  shmport_port_close(port);
  /* The close event (or the peer gone on a post) is the normal end. */
  if (st == SHMPORT_CLOSED || st == SHMPORT_PEER_DIED) return 0;
  fprintf(stderr, "c_echo: %s\n", shmport_status_str(st));
  return 1;
}
