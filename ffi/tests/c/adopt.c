/* A C parent that starts its child with its own fork and exec (not
 * shmport_spawn): the child's end travels as two descriptors
 * (shmport_port_into_fds) and is adopted with shmport_port_from_fds. Over
 * that channel, waiting for room to post: fill the ring (SHMPORT_FULL),
 * shmport_port_prepare_post_poll, poll the descriptor; the child's reading
 * wakes the poll, and so does its close. The child is driven through a
 * pipe on its stdin and answers over the port. */
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common.h"

enum { SMALL = 300 };

static uint8_t payload[4096];

/* Post SMALL-byte messages until the ring is full; how many went in. */
static size_t fill(shmport_port *port) {
  size_t n = 0;
  shmport_status st;
  while ((st = shmport_port_post(port, payload, SMALL, SHMPORT_NO_WAIT)) == SHMPORT_OK) n++;
  EXPECT(st, SHMPORT_FULL);
  return n;
}

static void wait_readable(shmport_port *port) {
  int fd;
  OK(shmport_port_fd(port, &fd));
  struct pollfd p = {.fd = fd, .events = POLLIN};
  CHECK(poll(&p, 1, -1) == 1);
  CHECK(p.revents & POLLIN);
}

static void say(int cmd, const char *line) {
  size_t len = strlen(line);
  CHECK(write(cmd, line, len) == (ssize_t)len);
}

/* The child's answer, over the port. */
static void expect_answer(shmport_port *port, const char *want) {
  shmport_message *msg;
  const uint8_t *data;
  size_t len;
  OK(shmport_port_recv(port, SHMPORT_FOREVER, &msg));
  OK(shmport_message_bytes(msg, &data, &len));
  CHECK(len == strlen(want) && memcmp(data, want, len) == 0);
  OK(shmport_message_free(msg));
}

static int is_open(int fd) { return fcntl(fd, F_GETFD) != -1; }

static int child(int sock, int mem) {
  shmport_port *port = (shmport_port *)1;
  /* Refused adoptions take nothing: the descriptors stay open. */
  EXPECT(shmport_port_from_fds(sock, mem, NULL), SHMPORT_ERR_NULL);
  EXPECT(shmport_port_from_fds(-1, mem, &port), SHMPORT_ERR_BAD_PORT);
  EXPECT(shmport_port_from_fds(sock, sock, &port), SHMPORT_ERR_BAD_PORT);
  EXPECT(shmport_port_from_fds(1000, mem, &port), SHMPORT_ERR_BAD_PORT);
  EXPECT(shmport_port_from_fds(0, mem, &port), SHMPORT_ERR_BAD_PORT); /* a pipe */
  int stream[2];
  CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, stream) == 0);
  EXPECT(shmport_port_from_fds(stream[0], mem, &port), SHMPORT_ERR_BAD_PORT);
  int other[2];
  CHECK(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, other) == 0);
  CHECK(shmport_port_from_fds(other[0], stream[1], &port) != SHMPORT_OK); /* not a segment */
  CHECK(is_open(stream[0]) && is_open(stream[1]) && is_open(other[0]));
  close(stream[0]);
  close(stream[1]);
  close(other[0]);
  close(other[1]);
  CHECK(port == (shmport_port *)1);
  CHECK(is_open(sock) && is_open(mem));

  OK(shmport_port_from_fds(sock, mem, &port));
  CHECK(!is_open(sock) && !is_open(mem)); /* the port holds its own copies */
  FILE *in = fdopen(0, "r");
  CHECK(in);
  char line[64];
  while (fgets(line, sizeof line, in)) {
    if (line[0] == 'r') {
      size_t n = (size_t)strtoull(line + 2, NULL, 10);
      for (size_t i = 0; i < n; i++) {
        shmport_message *msg;
        OK(shmport_port_recv(port, SHMPORT_FOREVER, &msg));
        OK(shmport_message_free(msg));
      }
      OK(shmport_port_post(port, (const uint8_t *)"read", 4, SHMPORT_FOREVER));
    } else if (line[0] == 'd') {
      shmport_message *msg;
      EXPECT(shmport_port_recv(port, SHMPORT_NO_WAIT, &msg), SHMPORT_EMPTY);
      OK(shmport_port_post(port, (const uint8_t *)"empty", 5, SHMPORT_FOREVER));
    } else if (line[0] == 'c') {
      OK(shmport_port_close(port));
      fclose(in);
      return 0;
    }
  }
  fprintf(stderr, "the parent's commands ended early\n");
  return 1;
}

int main(int argc, char **argv) {
  if (argc == 4 && strcmp(argv[1], "child") == 0)
    return child(atoi(argv[2]), atoi(argv[3]));
  memset(payload, 7, sizeof payload);

  shmport_port *mine, *theirs;
  OK(shmport_channel_new(4096, &mine, &theirs));
  int sock = -1, mem = -1;
  /* Only the channel's second port is a child's end; a refusal keeps it. */
  EXPECT(shmport_port_into_fds(mine, &sock, &mem), SHMPORT_ERR_INVALID_ARGUMENT);
  EXPECT(shmport_port_into_fds(theirs, NULL, &mem), SHMPORT_ERR_NULL);
  CHECK(sock == -1 && mem == -1);
  bool wait;
  EXPECT(shmport_port_prepare_post_poll(mine, SMALL, NULL), SHMPORT_ERR_NULL);
  EXPECT(shmport_port_prepare_post_poll(NULL, SMALL, &wait), SHMPORT_ERR_NULL);
  EXPECT(shmport_port_end_post_poll(NULL), SHMPORT_ERR_NULL);
  OK(shmport_port_prepare_post_poll(mine, SMALL, &wait));
  CHECK(!wait); /* an empty ring */
  OK(shmport_port_into_fds(theirs, &sock, &mem));
  EXPECT(shmport_port_close(theirs), SHMPORT_ERR_BAD_HANDLE);
  CHECK(sock >= 0 && mem >= 0 && (fcntl(sock, F_GETFD) & FD_CLOEXEC));

  int cmd[2];
  CHECK(pipe2(cmd, O_CLOEXEC) == 0);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    char a[16], b[16];
    if (dup2(cmd[0], 0) != 0 || fcntl(sock, F_SETFD, 0) != 0 || fcntl(mem, F_SETFD, 0) != 0)
      _exit(126);
    snprintf(a, sizeof a, "%d", sock);
    snprintf(b, sizeof b, "%d", mem);
    execl("/proc/self/exe", argv[0], "child", a, b, (char *)NULL);
    _exit(127);
  }
  /* The parent's copies must go: the child's exit hangs up `mine` only
   * once no other process holds its socket. */
  close(sock);
  close(mem);
  close(cmd[0]);

  /* The child reads: room, and a wake-up. */
  size_t n = fill(mine);
  CHECK(n > 0);
  OK(shmport_port_prepare_post_poll(mine, SMALL, &wait));
  CHECK(wait);
  char line[32];
  snprintf(line, sizeof line, "r %zu\n", n);
  say(cmd[1], line);
  wait_readable(mine);
  OK(shmport_port_end_post_poll(mine));
  OK(shmport_port_post(mine, payload, SMALL, SHMPORT_NO_WAIT));
  expect_answer(mine, "read");
  say(cmd[1], "r 1\n");
  expect_answer(mine, "read");
  say(cmd[1], "d\n");
  expect_answer(mine, "empty");
  OK(shmport_port_prepare_post_poll(mine, SMALL, &wait));
  CHECK(!wait); /* room is there */

  /* Full again; the child closes instead of reading. */
  fill(mine);
  OK(shmport_port_prepare_post_poll(mine, SMALL, &wait));
  CHECK(wait);
  say(cmd[1], "c\n");
  wait_readable(mine);
  OK(shmport_port_end_post_poll(mine));
  EXPECT(shmport_port_post(mine, payload, SMALL, SHMPORT_NO_WAIT), SHMPORT_CLOSED);
  OK(shmport_port_prepare_post_poll(mine, SMALL, &wait));
  CHECK(!wait); /* closed: nothing to wait for */
  shmport_message *msg;
  EXPECT(shmport_port_recv(mine, SHMPORT_FOREVER, &msg), SHMPORT_CLOSED);
  close(cmd[1]);
  int status;
  CHECK(waitpid(pid, &status, 0) == pid);
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  OK(shmport_port_close(mine));
  printf("adopt ok\n");
  return 0;
}
