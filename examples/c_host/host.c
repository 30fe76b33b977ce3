/* A C host that serves Rust clients over shmport.
 *
 *   c_host <socket path> [clients]
 *
 * Listens on the socket path and serves the clients of this user, all at
 * once, from one poll() loop over the listener's and the ports'
 * descriptors; exits when `clients` clients (default: no limit) have come
 * and gone. Each request is one raw-bytes message:
 *
 *   "upper <text>"  -> the text in upper case, written in place in the ring
 *   "sum <n> <n>.." -> the sum, in decimal
 *   "stream <n>"    -> with one port attached: n messages "item i" on that
 *                      port, which is then closed; the reply is the count
 *   anything else   -> "error: unknown request"
 *
 * Build (see the README, "C and C++"):
 *   cargo build --release -p shmport-ffi
 *   cc examples/c_host/host.c -Iinclude -Ltarget/release \
 *      -Wl,-rpath,$PWD/target/release -lshmport -o target/c_host
 * Client: cargo run --release -p shmport-ffi --example c_host_client -- <path> */
#include <ctype.h>
#include <inttypes.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "shmport.h"

static int failed(const char *what, shmport_status st) {
  fprintf(stderr, "c_host: %s: %s\n", what, shmport_status_str(st));
  return 1;
}

/* Answer one request; a non-OK status ends the client's session. */
static shmport_status serve(shmport_port *port, shmport_message *req) {
  const uint8_t *data;
  size_t len;
  shmport_status st = shmport_message_bytes(req, &data, &len);
  if (st != SHMPORT_OK) return st;
  char text[256];
  int n;

  if (len >= 6 && memcmp(data, "upper ", 6) == 0) {
    /* Zero copy: reserve the reply in the ring and write it there. */
    uint8_t *out;
    st = shmport_port_reserve(port, len - 6, SHMPORT_FOREVER, &out);
    if (st != SHMPORT_OK) return st;
    for (size_t i = 6; i < len; i++) out[i - 6] = (uint8_t)toupper(data[i]);
    return shmport_port_commit(port, len - 6);
  }
  if (len >= 4 && memcmp(data, "sum ", 4) == 0 && len < sizeof text) {
    memcpy(text, data + 4, len - 4);
    text[len - 4] = '\0';
    long long sum = 0;
    char *p = text, *end;
    for (long long v = strtoll(p, &end, 10); end != p; v = strtoll(p, &end, 10)) {
      sum += v;
      p = end;
    }
    n = snprintf(text, sizeof text, "%lld", sum);
    return shmport_port_post(port, (const uint8_t *)text, (size_t)n, SHMPORT_FOREVER);
  }
  size_t nports = 0;
  st = shmport_message_port_count(req, &nports);
  if (st != SHMPORT_OK) return st;
  if (len > 7 && len < 20 && memcmp(data, "stream ", 7) == 0 && nports == 1) {
    memcpy(text, data + 7, len - 7);
    text[len - 7] = '\0';
    long count = strtol(text, NULL, 10);
    shmport_port *stream;
    st = shmport_message_take_ports(req, &stream, 1, &nports);
    if (st != SHMPORT_OK) return st;
    long sent = 0;
    for (; sent < count; sent++) {
      n = snprintf(text, sizeof text, "item %ld", sent);
      if (shmport_port_post(stream, (const uint8_t *)text, (size_t)n, SHMPORT_FOREVER) != SHMPORT_OK)
        break; /* the requester stopped listening */
    }
    shmport_port_close(stream); /* the requester sees the stream end */
    n = snprintf(text, sizeof text, "%ld", sent);
    return shmport_port_post(port, (const uint8_t *)text, (size_t)n, SHMPORT_FOREVER);
  }
  static const char unknown[] = "error: unknown request";
  return shmport_port_post(port, (const uint8_t *)unknown, sizeof unknown - 1, SHMPORT_FOREVER);
}

#define MAX_CLIENTS 64

struct client {
  shmport_port *port;
  uint32_t pid;
  unsigned long requests;
};

/* Serve what a client has queued, without waiting. Returns SHMPORT_EMPTY
 * when it has nothing more for now, another status when its session ended
 * (the close event, or a failure). */
static shmport_status drain(struct client *c) {
  for (;;) {
    shmport_message *req;
    shmport_status st = shmport_port_recv(c->port, SHMPORT_NO_WAIT, &req);
    if (st != SHMPORT_OK) return st;
    st = serve(c->port, req);
    shmport_message_free(req);
    if (st != SHMPORT_OK) return st;
    c->requests++;
  }
}

static void end_session(struct client *c, shmport_status why) {
  /* The close event says why the session ended. */
  printf("client pid %" PRIu32 ": %lu requests, %s\n", c->pid, c->requests,
         shmport_status_str(why));
  fflush(stdout);
  shmport_port_close(c->port);
}

int main(int argc, char **argv) {
  if (argc < 2 || argc > 3) {
    fprintf(stderr, "usage: %s <socket path> [clients]\n", argv[0]);
    return 2;
  }
  long limit = argc == 3 ? strtol(argv[2], NULL, 10) : -1;
  shmport_listener *listener;
  shmport_status st = shmport_listener_bind(argv[1], &listener);
  if (st != SHMPORT_OK) return failed("bind", st);
  int listen_fd;
  st = shmport_listener_fd(listener, &listen_fd);
  if (st != SHMPORT_OK) return failed("listener fd", st);
  printf("listening on %s\n", argv[1]);
  fflush(stdout);

  /* One poll loop serves every client at once: the listener's descriptor
   * and each port's (shmport_port_fd), after shmport_port_prepare_poll. */
  struct client clients[MAX_CLIENTS];
  int n = 0;
  long accepted = 0;
  while (limit < 0 || accepted < limit || n > 0) {
    struct pollfd fds[MAX_CLIENTS + 1];
    int nfds = 0;
    if ((limit < 0 || accepted < limit) && n < MAX_CLIENTS)
      fds[nfds++] = (struct pollfd){.fd = listen_fd, .events = POLLIN};
    int first_client = nfds;
    bool queued[MAX_CLIENTS];
    int ready = 0;
    for (int i = 0; i < n; i++) {
      bool wait = false;
      int fd = -1;
      st = shmport_port_prepare_poll(clients[i].port, &wait);
      if (st == SHMPORT_OK) st = shmport_port_fd(clients[i].port, &fd);
      if (st != SHMPORT_OK) return failed("prepare_poll", st);
      queued[i] = !wait;
      ready += !wait;
      fds[nfds++] = (struct pollfd){.fd = fd, .events = POLLIN};
    }
    /* Something already queued: look at once, do not sleep. */
    if (poll(fds, (nfds_t)nfds, ready ? 0 : -1) < 0) return failed("poll", SHMPORT_ERR_IO);

    for (int i = n - 1; i >= 0; i--) {
      if (!queued[i] && !fds[first_client + i].revents) continue;
      st = drain(&clients[i]);
      if (st != SHMPORT_EMPTY) {
        end_session(&clients[i], st);
        clients[i] = clients[--n];
      }
    }
    if (first_client == 1 && fds[0].revents) {
      shmport_incoming *incoming;
      st = shmport_listener_accept(listener, SHMPORT_NO_WAIT, &incoming);
      if (st == SHMPORT_EMPTY) continue;
      if (st != SHMPORT_OK) return failed("accept", st);
      shmport_credentials who;
      st = shmport_incoming_credentials(incoming, &who);
      if (st != SHMPORT_OK) return failed("credentials", st);
      if (who.uid != (uint32_t)geteuid()) {
        printf("rejected pid %" PRIu32 " (uid %" PRIu32 ")\n", who.pid, who.uid);
        shmport_incoming_reject(incoming);
        continue;
      }
      shmport_port *port;
      st = shmport_incoming_accept(incoming, 0, &port);
      if (st != SHMPORT_OK) {
        printf("client pid %" PRIu32 " left before it got its port\n", who.pid);
        continue;
      }
      clients[n++] = (struct client){.port = port, .pid = who.pid, .requests = 0};
      accepted++;
      printf("client pid %" PRIu32 " connected\n", who.pid);
      fflush(stdout);
    }
  }
  shmport_listener_close(listener);
  return 0;
}
