/* The C side of the 100,000-message exchange with a Rust process
 * (ffi/tests/c_abi.rs, exchange_with_rust_both_ways).
 *
 * Spawned by the Rust test with a port. For each message i it receives
 * (alternating blocking, timed and non-blocking receives), it checks the
 * bytes against the generator, then answers with message i of its own
 * direction (alternating a copying post and a reservation written in
 * place). Prints the running checksums of both directions at the end, after
 * the close event. */
#include <sched.h>

#include "common.h"

int main(int argc, char **argv) {
  CHECK(argc == 2);
  uint64_t n = strtoull(argv[1], NULL, 10);
  shmport_port *port = NULL;
  OK(shmport_port_from_parent(&port));
  size_t max_reservation = 0;
  OK(shmport_port_max_reservation(port, &max_reservation));

  uint8_t *expected = malloc(1 << 20);
  CHECK(expected != NULL);
  uint64_t sum_in = 0, sum_out = 0, bytes_in = 0, out_of_line = 0;
  for (uint64_t i = 0; i < n; i++) {
    shmport_message *msg = NULL;
    switch (i % 3) {
      case 0:
        OK(shmport_port_recv(port, SHMPORT_FOREVER, &msg));
        break;
      case 1: {
        shmport_status st;
        while ((st = shmport_port_recv(port, 1000000000ull, &msg)) == SHMPORT_TIMEOUT) {
        }
        OK(st);
        break;
      }
      default: {
        shmport_status st;
        while ((st = shmport_port_recv(port, SHMPORT_NO_WAIT, &msg)) == SHMPORT_EMPTY) {
          sched_yield();
        }
        OK(st);
      }
    }
    const uint8_t *data = NULL;
    size_t len = 0;
    OK(shmport_message_bytes(msg, &data, &len));
    size_t want = message_size(i, 0);
    if (len != want) {
      fprintf(stderr, "message %llu: %zu bytes, expected %zu\n", (unsigned long long)i, len, want);
      return 1;
    }
    message_fill(expected, len, i, 0);
    if (len > 0 && memcmp(data, expected, len) != 0) {
      fprintf(stderr, "message %llu: bytes differ\n", (unsigned long long)i);
      return 1;
    }
    uint64_t fingerprint = 1;
    OK(shmport_message_fingerprint(msg, &fingerprint));
    CHECK(fingerprint == 0);
    sum_in ^= checksum(data, len) + i;
    bytes_in += len;
    out_of_line += len > max_reservation;
    OK(shmport_message_free(msg));

    size_t out_len = message_size(i, 1);
    if (i % 2 == 1 && out_len <= max_reservation) {
      uint8_t *slot = NULL;
      OK(shmport_port_reserve(port, out_len, SHMPORT_FOREVER, &slot));
      message_fill(slot, out_len, i, 1);
      sum_out ^= checksum(slot, out_len) + i;
      OK(shmport_port_commit(port, out_len));
    } else {
      message_fill(expected, out_len, i, 1);
      sum_out ^= checksum(expected, out_len) + i;
      OK(shmport_port_post(port, expected, out_len, SHMPORT_FOREVER));
    }
  }
  /* The Rust side closes after the last reply: the close event. */
  shmport_message *msg = NULL;
  EXPECT(shmport_port_recv(port, SHMPORT_FOREVER, &msg), SHMPORT_CLOSED);
  CHECK(msg == NULL);
  OK(shmport_port_close(port));
  free(expected);
  printf("exchange ok: %llu messages each way, %llu bytes in, %llu out of line, "
         "in %016llx out %016llx\n",
         (unsigned long long)n, (unsigned long long)bytes_in, (unsigned long long)out_of_line,
         (unsigned long long)sum_in, (unsigned long long)sum_out);
  return 0;
}
