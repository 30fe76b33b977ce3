/* One worker, many clients, one killed: the seed's worker process in
 * plain C, on the C port set.
 *
 *   c_worker [clients]          (default 3; at least 2)
 *
 * The program runs itself again for each role (argv[1]):
 *
 * - main starts the worker and the clients, each with a port from
 *   shmport_spawn. For each client it makes a channel and posts one end to
 *   the worker and the other to the client: from then on they talk
 *   directly. When client 0 reports that it is running, main kills it
 *   (kill -9). When the other clients have exited, main closes its port to
 *   the worker and waits for it.
 * - worker serves every client from one thread with a shmport_port_set
 *   holding its port to main and one port per client, fairly. A request
 *   is 4096 little-endian uint32 numbers, read in place from shared
 *   memory; the reply is the sum of their squares (uint64). It sees the
 *   killed client's close event (SHMPORT_PEER_DIED), keeps serving the
 *   others, and exits once every port has closed, checking that it saw
 *   one death and the other clients' orderly closes.
 * - client takes its worker port from main, sends REQUESTS requests one
 *   at a time, checks every answer, and closes.
 *
 * Build against an installed shmport (see the README, "C and C++"):
 *   cmake -S examples/c_worker -B build -DCMAKE_PREFIX_PATH=<prefix> && cmake --build build
 * or: cc c_worker.c $(pkg-config --cflags --libs shmport) -o c_worker */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "shmport.h"

#define NUMBERS 4096
#define REQUESTS 2000
#define MAX_CLIENTS 64

static void check(shmport_status st, const char *what) {
  if (st != SHMPORT_OK) {
    fprintf(stderr, "c_worker: %s: %s\n", what, shmport_status_str(st));
    exit(1);
  }
}

static bool is(shmport_message *m, const char *s) {
  const uint8_t *data;
  size_t len;
  check(shmport_message_bytes(m, &data, &len), "message bytes");
  return len == strlen(s) && memcmp(data, s, len) == 0;
}

static void post_str(shmport_port *p, const char *s, shmport_port **ports, size_t n) {
  check(shmport_port_post_with_ports(p, (const uint8_t *)s, strlen(s), ports, n), "post");
}

/* ---- worker ---- */

static int worker(void) {
  shmport_port *to_main;
  check(shmport_port_from_parent(&to_main), "adopt the port");
  shmport_port_set *set;
  check(shmport_port_set_new(&set), "port set");
  check(shmport_port_set_add(set, to_main, NULL), "add main");
  uint64_t served[MAX_CLIENTS] = {0};
  int client_of_key[MAX_CLIENTS + 1];
  int closed = 0, died = 0, clients = 0;
  shmport_status st;
  size_t key;
  shmport_port *port;
  shmport_message *msg;
  while ((st = shmport_port_set_wait(set, SHMPORT_FOREVER, &key, &port, &msg)) != SHMPORT_EMPTY) {
    if (shmport_status_is_close(st)) {
      if (port == to_main) {
        printf("worker: main closed\n");
      } else {
        int c = client_of_key[key];
        printf("worker: client %d: %s after %" PRIu64 " requests\n", c, shmport_status_str(st),
               served[c]);
        if (st == SHMPORT_PEER_DIED) died++;
        if (st == SHMPORT_CLOSED) closed++;
      }
      check(shmport_port_close(port), "close");
      continue;
    }
    check(st, "wait");
    if (port == to_main) {
      /* "client", with the client's port attached. */
      shmport_port *got[1];
      size_t n = 0;
      check(shmport_message_take_ports(msg, got, 1, &n), "take the client's port");
      if (!is(msg, "client") || n != 1 || clients >= MAX_CLIENTS) {
        fprintf(stderr, "worker: unexpected message from main\n");
        return 1;
      }
      int c = clients++;
      check(shmport_message_free(msg), "free");
      size_t k;
      check(shmport_port_set_add(set, got[0], &k), "add a client");
      client_of_key[k] = c;
      continue;
    }
    /* A request, read in place. */
    const uint8_t *data;
    size_t len;
    check(shmport_message_bytes(msg, &data, &len), "bytes");
    if (len != NUMBERS * 4) {
      fprintf(stderr, "worker: a request of %zu bytes\n", len);
      return 1;
    }
    uint64_t sum = 0;
    for (size_t i = 0; i < NUMBERS; i++) {
      uint32_t x = (uint32_t)data[4 * i] | (uint32_t)data[4 * i + 1] << 8 |
                   (uint32_t)data[4 * i + 2] << 16 | (uint32_t)data[4 * i + 3] << 24;
      sum += (uint64_t)x * x;
    }
    check(shmport_message_free(msg), "free");
    served[client_of_key[key]]++;
    st = shmport_port_post(port, (const uint8_t *)&sum, sizeof sum, SHMPORT_FOREVER);
    /* A client that died between its request and our reply: its close
     * event comes next from the set. */
    if (st != SHMPORT_OK && !shmport_status_is_close(st)) check(st, "reply");
  }
  check(shmport_port_set_free(set), "free the set");
  printf("worker: %d clients closed, %d died\n", closed, died);
  return (died == 1 && closed == clients - 1) ? 0 : 1;
}

/* ---- client ---- */

static int client(void) {
  shmport_port *to_main, *w;
  shmport_message *msg;
  check(shmport_port_from_parent(&to_main), "adopt the port");
  check(shmport_port_recv(to_main, SHMPORT_FOREVER, &msg), "the worker's port");
  size_t n = 0;
  check(shmport_message_take_ports(msg, &w, 1, &n), "take the worker's port");
  check(shmport_message_free(msg), "free");
  if (n != 1) return 1;
  uint8_t req[NUMBERS * 4];
  for (uint64_t r = 0; r < REQUESTS; r++) {
    /* Numbers r, r+1, ...: the answer has a closed form. */
    for (uint32_t i = 0; i < NUMBERS; i++) {
      uint32_t x = (uint32_t)r + i;
      req[4 * i] = (uint8_t)x;
      req[4 * i + 1] = (uint8_t)(x >> 8);
      req[4 * i + 2] = (uint8_t)(x >> 16);
      req[4 * i + 3] = (uint8_t)(x >> 24);
    }
    check(shmport_port_post(w, req, sizeof req, SHMPORT_FOREVER), "request");
    check(shmport_port_recv(w, SHMPORT_FOREVER, &msg), "answer");
    const uint8_t *data;
    size_t len;
    uint64_t got;
    check(shmport_message_bytes(msg, &data, &len), "bytes");
    if (len != sizeof got) return 1;
    memcpy(&got, data, sizeof got);
    check(shmport_message_free(msg), "free");
    /* sum of (r+i)^2 for i < N = N r^2 + 2 r S1 + S2 */
    uint64_t n_ = NUMBERS, s1 = n_ * (n_ - 1) / 2, s2 = (n_ - 1) * n_ * (2 * n_ - 1) / 6;
    uint64_t want = n_ * r * r + 2 * r * s1 + s2;
    if (got != want) {
      fprintf(stderr, "client: answer %" PRIu64 " is %" PRIu64 ", expected %" PRIu64 "\n", r,
              got, want);
      return 1;
    }
    if (r == 0) post_str(to_main, "running", NULL, 0);
  }
  check(shmport_port_close(w), "close");
  check(shmport_port_close(to_main), "close");
  return 0;
}

/* ---- main ---- */

static shmport_port *start(const char *self, const char *role, int *pid) {
  const char *argv[] = {self, role, NULL};
  shmport_port *p;
  check(shmport_spawn(self, argv, 0, &p, pid), "spawn");
  return p;
}

int main(int argc, char **argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc > 1 && strcmp(argv[1], "worker") == 0) return worker();
  if (argc > 1 && strcmp(argv[1], "client") == 0) return client();
  int clients = argc > 1 ? atoi(argv[1]) : 3;
  if (clients < 2 || clients > MAX_CLIENTS) {
    fprintf(stderr, "usage: c_worker [clients: 2..%d]\n", MAX_CLIENTS);
    return 2;
  }
  printf("shmport %s: one worker, %d clients, client 0 killed\n", shmport_version(), clients);
  int wpid, pids[MAX_CLIENTS];
  shmport_port *to_worker = start(argv[0], "worker", &wpid);
  shmport_port *to_client[MAX_CLIENTS];
  for (int i = 0; i < clients; i++) {
    to_client[i] = start(argv[0], "client", &pids[i]);
    shmport_port *a, *b;
    check(shmport_channel_new(0, &a, &b), "channel");
    post_str(to_worker, "client", &a, 1);
    post_str(to_client[i], "worker", &b, 1);
  }
  /* Client 0 says it runs: kill it mid-stream. */
  shmport_message *msg;
  check(shmport_port_recv(to_client[0], SHMPORT_FOREVER, &msg), "client 0 running");
  bool running = is(msg, "running");
  check(shmport_message_free(msg), "free");
  if (!running || kill(pids[0], SIGKILL) != 0) return 1;
  int failures = 0, status;
  for (int i = 0; i < clients; i++) {
    waitpid(pids[i], &status, 0);
    bool ok = i == 0 ? WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL
                     : WIFEXITED(status) && WEXITSTATUS(status) == 0;
    if (!ok) failures++;
    shmport_port_close(to_client[i]);
  }
  printf("main: clients done (%d killed, %d finished %d requests each)\n", 1, clients - 1,
         REQUESTS);
  check(shmport_port_close(to_worker), "close");
  waitpid(wpid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failures++;
  printf(failures ? "c_worker: FAILED\n" : "c_worker: ok\n");
  return failures ? 1 : 0;
}
