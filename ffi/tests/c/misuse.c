/* Misuse of the C API gives statuses, never crashes (ffi/tests/c_abi.rs,
 * misuse_is_a_status_not_a_crash). Runs under AddressSanitizer and
 * UndefinedBehaviorSanitizer: a use after free or a bad read anywhere
 * fails the test. */
#include <stdbool.h>
#include <unistd.h>

#include "common.h"

static const uint8_t hello[] = "hello";

static void null_handles_and_outputs(void) {
  shmport_port *a = NULL, *b = NULL;
  shmport_message *msg = NULL;
  const uint8_t *data;
  size_t len;
  uint8_t *slot;
  int fd, pid;
  uint64_t fp;
  shmport_credentials cred;
  shmport_listener *l = NULL;
  shmport_incoming *inc = NULL;

  /* Release functions accept NULL. */
  OK(shmport_port_close(NULL));
  OK(shmport_message_free(NULL));
  OK(shmport_listener_close(NULL));
  OK(shmport_incoming_reject(NULL));

  /* Every other function refuses a NULL handle or output. */
  EXPECT(shmport_channel_new(0, NULL, &b), SHMPORT_ERR_NULL);
  EXPECT(shmport_channel_new(0, &a, NULL), SHMPORT_ERR_NULL);
  CHECK(a == NULL && b == NULL); /* outputs untouched on failure */
  EXPECT(shmport_port_post(NULL, hello, 5, SHMPORT_FOREVER), SHMPORT_ERR_NULL);
  EXPECT(shmport_port_post_with_ports(NULL, hello, 5, NULL, 0), SHMPORT_ERR_NULL);
  EXPECT(shmport_port_recv(NULL, SHMPORT_NO_WAIT, &msg), SHMPORT_ERR_NULL);
  EXPECT(shmport_port_reserve(NULL, 1, SHMPORT_NO_WAIT, &slot), SHMPORT_ERR_NULL);
  EXPECT(shmport_port_commit(NULL, 0), SHMPORT_ERR_NULL);
  EXPECT(shmport_port_cancel(NULL), SHMPORT_ERR_NULL);
  EXPECT(shmport_port_max_reservation(NULL, &len), SHMPORT_ERR_NULL);
  EXPECT(shmport_port_capacity(NULL, &len), SHMPORT_ERR_NULL);
  EXPECT(shmport_port_set_spin(NULL, 0), SHMPORT_ERR_NULL);
  EXPECT(shmport_port_set_trust(NULL, SHMPORT_TRUST_UNTRUSTED), SHMPORT_ERR_NULL);
  EXPECT(shmport_port_fd(NULL, &fd), SHMPORT_ERR_NULL);
  bool wait;
  EXPECT(shmport_port_prepare_poll(NULL, &wait), SHMPORT_ERR_NULL);
  EXPECT(shmport_message_bytes(NULL, &data, &len), SHMPORT_ERR_NULL);
  EXPECT(shmport_message_fingerprint(NULL, &fp), SHMPORT_ERR_NULL);
  EXPECT(shmport_message_port_count(NULL, &len), SHMPORT_ERR_NULL);
  EXPECT(shmport_message_take_ports(NULL, NULL, 0, &len), SHMPORT_ERR_NULL);
  EXPECT(shmport_spawn(NULL, NULL, 0, &a, &pid), SHMPORT_ERR_NULL);
  EXPECT(shmport_port_from_parent(NULL), SHMPORT_ERR_NULL);
  EXPECT(shmport_listener_bind(NULL, &l), SHMPORT_ERR_NULL);
  EXPECT(shmport_listener_fd(NULL, &fd), SHMPORT_ERR_NULL);
  EXPECT(shmport_listener_accept(NULL, SHMPORT_NO_WAIT, &inc), SHMPORT_ERR_NULL);
  EXPECT(shmport_incoming_credentials(NULL, &cred), SHMPORT_ERR_NULL);
  EXPECT(shmport_incoming_accept(NULL, 0, &a), SHMPORT_ERR_NULL);
  EXPECT(shmport_connect(NULL, SHMPORT_NO_WAIT, &a), SHMPORT_ERR_NULL);

  OK(shmport_channel_new(0, &a, &b));
  EXPECT(shmport_port_recv(a, SHMPORT_NO_WAIT, NULL), SHMPORT_ERR_NULL);
  EXPECT(shmport_port_fd(a, NULL), SHMPORT_ERR_NULL);
  EXPECT(shmport_port_prepare_poll(a, NULL), SHMPORT_ERR_NULL);
  OK(shmport_port_prepare_poll(b, &wait));
  CHECK(wait); /* nothing queued */
  OK(shmport_port_post(a, hello, 5, SHMPORT_FOREVER));
  OK(shmport_port_prepare_poll(b, &wait));
  CHECK(!wait); /* a message is there */
  OK(shmport_port_recv(b, SHMPORT_NO_WAIT, &msg));
  OK(shmport_message_free(msg));
  EXPECT(shmport_port_post(a, NULL, 5, SHMPORT_FOREVER), SHMPORT_ERR_NULL);
  OK(shmport_port_post(a, NULL, 0, SHMPORT_FOREVER)); /* empty message */
  OK(shmport_port_recv(b, SHMPORT_FOREVER, &msg));
  EXPECT(shmport_message_bytes(msg, NULL, &len), SHMPORT_ERR_NULL);
  OK(shmport_message_bytes(msg, &data, &len));
  CHECK(len == 0);
  OK(shmport_message_free(msg));
  EXPECT(shmport_port_post_with_ports(a, hello, 5, NULL, 1), SHMPORT_ERR_NULL);
  shmport_port *nulls[1] = {NULL};
  EXPECT(shmport_port_post_with_ports(a, hello, 5, nulls, 1), SHMPORT_ERR_NULL);
  OK(shmport_port_close(a));
  OK(shmport_port_close(b));
}

static void stale_and_foreign_handles(void) {
  shmport_port *a, *b;
  shmport_message *msg, *msg2;
  const uint8_t *data;
  size_t len;
  OK(shmport_channel_new(0, &a, &b));
  OK(shmport_port_post(a, hello, 5, SHMPORT_FOREVER));
  OK(shmport_port_post(a, hello, 5, SHMPORT_FOREVER));
  OK(shmport_port_recv(b, SHMPORT_FOREVER, &msg));
  OK(shmport_port_recv(b, SHMPORT_FOREVER, &msg2));

  /* A port with messages out cannot close: nothing happens. */
  EXPECT(shmport_port_close(b), SHMPORT_ERR_BUSY);
  OK(shmport_message_free(msg));
  /* Freeing twice, and using a freed message. */
  EXPECT(shmport_message_free(msg), SHMPORT_ERR_BAD_HANDLE);
  EXPECT(shmport_message_bytes(msg, &data, &len), SHMPORT_ERR_BAD_HANDLE);
  EXPECT(shmport_port_close(b), SHMPORT_ERR_BUSY);
  /* Its slot is reused by the next message; the old handle stays stale. */
  OK(shmport_port_post(a, hello, 5, SHMPORT_FOREVER));
  shmport_message *msg3;
  OK(shmport_port_recv(b, SHMPORT_FOREVER, &msg3));
  EXPECT(shmport_message_free(msg), SHMPORT_ERR_BAD_HANDLE);
  OK(shmport_message_bytes(msg3, &data, &len));
  CHECK(len == 5 && memcmp(data, "hello", 5) == 0);
  OK(shmport_message_free(msg3));
  OK(shmport_message_free(msg2));

  /* A handle of another kind, and values that never were handles. */
  OK(shmport_port_post(a, hello, 5, SHMPORT_FOREVER));
  OK(shmport_port_recv(b, SHMPORT_FOREVER, &msg));
  EXPECT(shmport_port_post((shmport_port *)msg, hello, 5, 0), SHMPORT_ERR_BAD_HANDLE);
  EXPECT(shmport_message_free((shmport_message *)a), SHMPORT_ERR_BAD_HANDLE);
  int local = 0;
  EXPECT(shmport_port_close((shmport_port *)&local), SHMPORT_ERR_BAD_HANDLE);
  EXPECT(shmport_port_close((shmport_port *)(uintptr_t)0x1234), SHMPORT_ERR_BAD_HANDLE);
  EXPECT(shmport_message_free((shmport_message *)(uintptr_t)UINT64_MAX), SHMPORT_ERR_BAD_HANDLE);
  OK(shmport_message_free(msg));

  /* Closing twice, posting on a closed port, and the peer's view. */
  OK(shmport_port_close(b));
  EXPECT(shmport_port_close(b), SHMPORT_ERR_BAD_HANDLE);
  EXPECT(shmport_port_post(b, hello, 5, SHMPORT_FOREVER), SHMPORT_ERR_BAD_HANDLE);
  EXPECT(shmport_port_recv(b, SHMPORT_NO_WAIT, &msg), SHMPORT_ERR_BAD_HANDLE);
  EXPECT(shmport_port_post(a, hello, 5, SHMPORT_FOREVER), SHMPORT_CLOSED);
  EXPECT(shmport_port_recv(a, SHMPORT_FOREVER, &msg), SHMPORT_CLOSED);
  CHECK(strcmp(shmport_status_str(SHMPORT_CLOSED), "closed by the peer") == 0);
  OK(shmport_port_close(a));
}

static void transfers(void) {
  shmport_port *a, *b, *c, *d;
  shmport_message *msg;
  OK(shmport_channel_new(0, &a, &b));
  OK(shmport_channel_new(0, &c, &d));

  shmport_port *self_[] = {a};
  EXPECT(shmport_port_post_with_ports(a, hello, 5, self_, 1), SHMPORT_ERR_SELF_TRANSFER);
  shmport_port *peer[] = {c, b};
  EXPECT(shmport_port_post_with_ports(a, hello, 5, peer, 2), SHMPORT_ERR_PEER_IN_TRANSFER);
  shmport_port *twice[] = {c, c};
  EXPECT(shmport_port_post_with_ports(a, hello, 5, twice, 2), SHMPORT_ERR_INVALID_ARGUMENT);
  shmport_port *many[SHMPORT_MAX_PORTS + 1];
  for (size_t i = 0; i <= SHMPORT_MAX_PORTS; i++) many[i] = c;
  EXPECT(shmport_port_post_with_ports(a, hello, 5, many, SHMPORT_MAX_PORTS + 1),
         SHMPORT_ERR_TOO_MANY_PORTS);
  /* A port with a message out cannot travel. */
  OK(shmport_port_post(d, hello, 5, SHMPORT_FOREVER));
  OK(shmport_port_recv(c, SHMPORT_FOREVER, &msg));
  shmport_port *busy[] = {c};
  EXPECT(shmport_port_post_with_ports(a, hello, 5, busy, 1), SHMPORT_ERR_BUSY);
  OK(shmport_message_free(msg));

  /* After every refusal both ports still work, and nothing was sent. */
  EXPECT(shmport_port_recv(b, SHMPORT_NO_WAIT, &msg), SHMPORT_EMPTY);
  OK(shmport_port_post(c, hello, 5, SHMPORT_FOREVER));
  OK(shmport_port_recv(d, SHMPORT_FOREVER, &msg));
  OK(shmport_message_free(msg));

  /* The transfer itself; c's handle is released, d talks to its new home. */
  shmport_port *one[] = {c};
  OK(shmport_port_post_with_ports(a, hello, 5, one, 1));
  EXPECT(shmport_port_post(c, hello, 5, SHMPORT_FOREVER), SHMPORT_ERR_BAD_HANDLE);
  shmport_port *stale[] = {c};
  EXPECT(shmport_port_post_with_ports(a, hello, 5, stale, 1), SHMPORT_ERR_BAD_HANDLE);
  OK(shmport_port_recv(b, SHMPORT_FOREVER, &msg));
  size_t count = 9;
  shmport_port *got[1] = {NULL};
  EXPECT(shmport_message_take_ports(msg, got, 0, &count), SHMPORT_ERR_INVALID_ARGUMENT);
  CHECK(count == 9);
  OK(shmport_message_take_ports(msg, got, 1, &count));
  CHECK(count == 1 && got[0] != NULL);
  OK(shmport_message_take_ports(msg, got, 1, &count));
  CHECK(count == 0);
  OK(shmport_message_free(msg));
  OK(shmport_port_post(d, (const uint8_t *)"moved", 5, SHMPORT_FOREVER));
  OK(shmport_port_recv(got[0], SHMPORT_FOREVER, &msg));
  const uint8_t *data;
  size_t len;
  OK(shmport_message_bytes(msg, &data, &len));
  CHECK(len == 5 && memcmp(data, "moved", 5) == 0);
  OK(shmport_message_free(msg));

  /* A message whose ports are never taken closes them. */
  shmport_port *e, *f;
  OK(shmport_channel_new(0, &e, &f));
  shmport_port *lost[] = {e};
  OK(shmport_port_post_with_ports(a, hello, 5, lost, 1));
  OK(shmport_port_recv(b, SHMPORT_FOREVER, &msg));
  OK(shmport_message_free(msg));
  EXPECT(shmport_port_recv(f, SHMPORT_FOREVER, &msg), SHMPORT_CLOSED);

  OK(shmport_port_close(f));
  OK(shmport_port_close(got[0]));
  OK(shmport_port_close(d));
  OK(shmport_port_close(a));
  OK(shmport_port_close(b));
}

static void reservations_and_waits(void) {
  shmport_port *a, *b;
  shmport_message *msg;
  uint8_t *slot = NULL;
  size_t max = 0;
  OK(shmport_channel_new(4096, &a, &b));
  OK(shmport_port_max_reservation(a, &max));
  CHECK(max == (size_t)64 << 20); /* the largest pool block */
  EXPECT(shmport_port_reserve(a, max + 1, SHMPORT_NO_WAIT, &slot), SHMPORT_ERR_TOO_LARGE);
  /* With the pool turned off, only what fits in the ring. */
  OK(shmport_port_set_pool_limit(a, 0));
  OK(shmport_port_max_reservation(a, &max));
  CHECK(max > 0 && max < 4096);
  EXPECT(shmport_port_reserve(a, max + 1, SHMPORT_NO_WAIT, &slot), SHMPORT_ERR_TOO_LARGE);
  OK(shmport_port_set_pool_limit(a, SIZE_MAX));
  EXPECT(shmport_port_set_pool_limit(NULL, 0), SHMPORT_ERR_NULL);
  EXPECT(shmport_port_commit(a, 0), SHMPORT_ERR_NO_RESERVATION);
  EXPECT(shmport_port_cancel(a), SHMPORT_ERR_NO_RESERVATION);

  OK(shmport_port_reserve(a, 8, SHMPORT_NO_WAIT, &slot));
  EXPECT(shmport_port_reserve(a, 8, SHMPORT_NO_WAIT, &slot), SHMPORT_ERR_RESERVED);
  EXPECT(shmport_port_post(a, hello, 5, SHMPORT_FOREVER), SHMPORT_ERR_RESERVED);
  EXPECT(shmport_port_close(a), SHMPORT_ERR_BUSY);
  EXPECT(shmport_port_commit(a, 9), SHMPORT_ERR_INVALID_ARGUMENT);
  memcpy(slot, "abcdefgh", 8);
  OK(shmport_port_commit(a, 3)); /* the first three bytes only */
  OK(shmport_port_reserve(a, 8, SHMPORT_NO_WAIT, &slot));
  OK(shmport_port_cancel(a)); /* the peer sees nothing of it */
  OK(shmport_port_recv(b, SHMPORT_FOREVER, &msg));
  const uint8_t *data;
  size_t len;
  OK(shmport_message_bytes(msg, &data, &len));
  CHECK(len == 3 && memcmp(data, "abc", 3) == 0);
  OK(shmport_message_free(msg));
  EXPECT(shmport_port_recv(b, SHMPORT_NO_WAIT, &msg), SHMPORT_EMPTY);
  EXPECT(shmport_port_recv(b, 1000000, &msg), SHMPORT_TIMEOUT);

  /* Fill the small ring: no wait is FULL, a short wait TIMEOUT. */
  uint8_t block[512] = {0};
  shmport_status st;
  int posted = 0;
  while ((st = shmport_port_post(a, block, sizeof block, SHMPORT_NO_WAIT)) == SHMPORT_OK) posted++;
  EXPECT(st, SHMPORT_FULL);
  CHECK(posted > 0);
  EXPECT(shmport_port_post(a, block, sizeof block, 1000000), SHMPORT_TIMEOUT);
  EXPECT(shmport_port_reserve(a, sizeof block, 1000000, &slot), SHMPORT_TIMEOUT);
  /* A message larger than this small ring travels out of line. */
  for (int i = 0; i < posted; i++) {
    OK(shmport_port_recv(b, SHMPORT_FOREVER, &msg));
    OK(shmport_message_free(msg));
  }
  uint8_t *big = calloc(1, 100000);
  CHECK(big != NULL);
  big[99999] = 7;
  OK(shmport_port_post(a, big, 100000, SHMPORT_FOREVER));
  OK(shmport_port_recv(b, SHMPORT_FOREVER, &msg));
  OK(shmport_message_bytes(msg, &data, &len));
  CHECK(len == 100000 && data[99999] == 7);
  OK(shmport_message_free(msg));
  /* Over the receiver's largest message size: that message is refused,
     the next one arrives. */
  EXPECT(shmport_port_set_max_message_size(NULL, 1), SHMPORT_ERR_NULL);
  OK(shmport_port_set_max_message_size(b, 99999));
  OK(shmport_port_post(a, big, 100000, SHMPORT_FOREVER));
  OK(shmport_port_post(a, big, 99999, SHMPORT_FOREVER));
  EXPECT(shmport_port_recv(b, SHMPORT_FOREVER, &msg), SHMPORT_ERR_MESSAGE_REFUSED);
  OK(shmport_port_recv(b, SHMPORT_FOREVER, &msg));
  OK(shmport_message_bytes(msg, &data, &len));
  CHECK(len == 99999);
  OK(shmport_message_free(msg));
  free(big);

  OK(shmport_port_set_spin(a, 0));
  /* An untrusting port copies each message; the bytes are the same. */
  EXPECT(shmport_port_set_trust(b, 7), SHMPORT_ERR_INVALID_ARGUMENT);
  OK(shmport_port_set_trust(b, SHMPORT_TRUST_UNTRUSTED));
  OK(shmport_port_post(a, hello, 5, SHMPORT_FOREVER));
  OK(shmport_port_recv(b, SHMPORT_FOREVER, &msg));
  OK(shmport_message_bytes(msg, &data, &len));
  CHECK(len == 5 && memcmp(data, "hello", 5) == 0);
  OK(shmport_message_free(msg));
  OK(shmport_port_close(a));
  OK(shmport_port_close(b));
}

static void opening(void) {
  shmport_port *p = NULL;
  int pid = 0;
  EXPECT(shmport_port_from_parent(&p), SHMPORT_ERR_NO_PORT);
  EXPECT(shmport_spawn("", NULL, 0, &p, &pid), SHMPORT_ERR_INVALID_ARGUMENT);
  EXPECT(shmport_spawn("/nonexistent/program", NULL, 0, &p, &pid), SHMPORT_ERR_IO);
  CHECK(p == NULL && pid == 0);
  EXPECT(shmport_connect("/nonexistent/shmport.sock", 1000000, &p), SHMPORT_ERR_NOT_FOUND);
  /* A path that is not a socket is not "nothing listens there". */
  EXPECT(shmport_connect("/", 1000000, &p), SHMPORT_ERR_NOT_A_LISTENER);
  char file[] = "/tmp/shmport-misuse-XXXXXX";
  int fd = mkstemp(file);
  CHECK(fd >= 0);
  EXPECT(shmport_connect(file, 1000000, &p), SHMPORT_ERR_NOT_A_LISTENER);
  CHECK(close(fd) == 0 && unlink(file) == 0);
  CHECK(p == NULL);
  /* A path longer than a socket address holds. */
  char long_path[200];
  memset(long_path, 'x', sizeof long_path - 1);
  long_path[0] = '/';
  long_path[sizeof long_path - 1] = '\0';
  EXPECT(shmport_connect(long_path, 1000000, &p), SHMPORT_ERR_INVALID_ARGUMENT);
  shmport_listener *l = NULL;
  EXPECT(shmport_listener_bind(long_path, &l), SHMPORT_ERR_INVALID_ARGUMENT);
  CHECK(p == NULL && l == NULL);

  CHECK(strcmp(shmport_status_str(SHMPORT_PEER_DIED), "peer died") == 0);
  CHECK(strcmp(shmport_status_str(12345), "unknown status") == 0);
  CHECK(shmport_status_is_close(SHMPORT_PROTOCOL_ERROR));
  CHECK(!shmport_status_is_close(SHMPORT_EMPTY));
  CHECK(strlen(shmport_version()) > 0);
}

/* Sizes no message can have are refused before anything is allocated or
 * read: the pointer is not even looked at. */
static void impossible_sizes(void) {
  shmport_port *a, *b;
  shmport_message *msg;
  OK(shmport_channel_new(0, &a, &b));
  EXPECT(shmport_port_post(a, hello, SIZE_MAX, SHMPORT_FOREVER), SHMPORT_ERR_TOO_LARGE);
  EXPECT(shmport_port_post(a, hello, SIZE_MAX / 2, SHMPORT_NO_WAIT), SHMPORT_ERR_TOO_LARGE);
  EXPECT(shmport_port_post(a, hello, SIZE_MAX / 2 + 1, 1000000), SHMPORT_ERR_TOO_LARGE);
  EXPECT(shmport_port_post(a, hello, SHMPORT_MAX_MESSAGE_SIZE + 1, 0), SHMPORT_ERR_TOO_LARGE);
  /* With ports: refused before they are taken; they stay the caller's. */
  shmport_port *c, *d;
  OK(shmport_channel_new(0, &c, &d));
  shmport_port *one[] = {c};
  EXPECT(shmport_port_post_with_ports(a, hello, SIZE_MAX, one, 1), SHMPORT_ERR_TOO_LARGE);
  OK(shmport_port_post(c, hello, 5, SHMPORT_FOREVER));
  OK(shmport_port_recv(d, SHMPORT_FOREVER, &msg));
  OK(shmport_message_free(msg));
  OK(shmport_port_close(c));
  OK(shmport_port_close(d));
  EXPECT(shmport_port_recv(b, SHMPORT_NO_WAIT, &msg), SHMPORT_EMPTY);
  OK(shmport_port_post(a, hello, 5, SHMPORT_FOREVER)); /* the port goes on */
  OK(shmport_port_recv(b, SHMPORT_FOREVER, &msg));
  OK(shmport_message_free(msg));
  OK(shmport_port_close(a));
  OK(shmport_port_close(b));
}

/* A ring over the maximum is refused, not clamped; the capacity a port got
 * can be read back. */
static void capacities(void) {
  shmport_port *a = NULL, *b = NULL;
  size_t cap = 0;
  int pid = 0;
  EXPECT(shmport_channel_new(SIZE_MAX, &a, &b), SHMPORT_ERR_INVALID_ARGUMENT);
  EXPECT(shmport_channel_new(SHMPORT_MAX_CAPACITY + 1, &a, &b), SHMPORT_ERR_INVALID_ARGUMENT);
  CHECK(a == NULL && b == NULL);
  EXPECT(shmport_spawn("true", NULL, SIZE_MAX, &a, &pid), SHMPORT_ERR_INVALID_ARGUMENT);
  CHECK(a == NULL && pid == 0); /* nothing was started */

  OK(shmport_channel_new(5000, &a, &b)); /* rounded up to a power of two */
  EXPECT(shmport_port_capacity(NULL, &cap), SHMPORT_ERR_NULL);
  EXPECT(shmport_port_capacity(a, NULL), SHMPORT_ERR_NULL);
  OK(shmport_port_capacity(a, &cap));
  CHECK(cap == 8192);
  OK(shmport_port_capacity(b, &cap));
  CHECK(cap == 8192);
  OK(shmport_port_close(a));
  EXPECT(shmport_port_capacity(a, &cap), SHMPORT_ERR_BAD_HANDLE);
  OK(shmport_port_close(b));
  OK(shmport_channel_new(0, &a, &b));
  OK(shmport_port_capacity(a, &cap));
  CHECK(cap == SHMPORT_DEFAULT_CAPACITY);
  OK(shmport_port_close(a));
  OK(shmport_port_close(b));
}

int main(void) {
  impossible_sizes();
  capacities();
  null_handles_and_outputs();
  stale_and_foreign_handles();
  transfers();
  reservations_and_waits();
  opening();
  printf("misuse ok\n");
  return 0;
}
