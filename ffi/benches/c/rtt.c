/* Round trip of 64-byte messages between two C processes through the C
 * API, both sides busy-spinning (ffi/benches/rtt.rs runs it beside the
 * same measurement in Rust).
 *
 *   rtt <round trips>   spawns itself as the echo, prints "ns_per_rtt <x>"
 *   rtt echo            the echo: sends back every message until closed
 *
 * With SHMPORT_RTT_ECHO set, the echo is that program (run with the
 * argument "echo") instead: the bench pairs a C main with a Rust echo. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "shmport.h"

/* Spin this long before sleeping: both sides stay on their cores. */
#define SPIN_NS 1000000000ull
#define WARMUP 10000

static void die(const char *what, shmport_status st) {
  fprintf(stderr, "rtt: %s: %s\n", what, shmport_status_str(st));
  exit(1);
}

#define TRY(call)                              \
  do {                                         \
    shmport_status st_ = (call);               \
    if (st_ != SHMPORT_OK) die(#call, st_);    \
  } while (0)

static int echo(void) {
  shmport_port *port;
  TRY(shmport_port_from_parent(&port));
  TRY(shmport_port_set_spin(port, SPIN_NS));
  for (;;) {
    shmport_message *msg;
    shmport_status st = shmport_port_recv(port, SHMPORT_FOREVER, &msg);
    if (shmport_status_is_close(st)) break;
    if (st != SHMPORT_OK) die("recv", st);
    const uint8_t *data;
    size_t len;
    TRY(shmport_message_bytes(msg, &data, &len));
    TRY(shmport_port_post(port, data, len, SHMPORT_FOREVER));
    TRY(shmport_message_free(msg));
  }
  TRY(shmport_port_close(port));
  return 0;
}

static void round_trips(shmport_port *port, long n) {
  static uint8_t block[64];
  for (long i = 0; i < n; i++) {
    block[0] = (uint8_t)i;
    TRY(shmport_port_post(port, block, sizeof block, SHMPORT_FOREVER));
    shmport_message *msg;
    TRY(shmport_port_recv(port, SHMPORT_FOREVER, &msg));
    const uint8_t *data;
    size_t len;
    TRY(shmport_message_bytes(msg, &data, &len));
    if (len != sizeof block || data[0] != (uint8_t)i) {
      fprintf(stderr, "rtt: wrong echo\n");
      exit(1);
    }
    TRY(shmport_message_free(msg));
  }
}

int main(int argc, char **argv) {
  if (argc == 2 && strcmp(argv[1], "echo") == 0) return echo();
  if (argc != 2) {
    fprintf(stderr, "usage: %s <round trips> | echo\n", argv[0]);
    return 2;
  }
  long n = strtol(argv[1], NULL, 10);
  const char *echo_program = getenv("SHMPORT_RTT_ECHO");
  if (echo_program == NULL) echo_program = argv[0];
  const char *child_argv[] = {echo_program, "echo", NULL};
  shmport_port *port;
  int pid;
  TRY(shmport_spawn(echo_program, child_argv, 0, &port, &pid));
  TRY(shmport_port_set_spin(port, SPIN_NS));
  round_trips(port, WARMUP);
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  round_trips(port, n);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  TRY(shmport_port_close(port));
  int status;
  if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    fprintf(stderr, "rtt: the echo failed\n");
    return 1;
  }
  double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
  printf("ns_per_rtt %.1f\n", ns / (double)n);
  return 0;
}
